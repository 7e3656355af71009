//! `shmlock inspect --json` and `shmlock reap --json`: one object each, documented field
//! by field in README.md ("Command-line tool").
//!
//! The schemas are stable: fields may be added (and `schema` bumped only if one changes
//! meaning or goes away). Ages and leases are integers in the unit their name ends with;
//! the page records process start in whole seconds.
//!
//! Inspect schema 2 (format 2 of the page) added `published`, `oldest_pinned`,
//! `waiting_for_publish`, `waiting_for_readers`, `owner.lease_ms`, `members[].oldest_pin`
//! and `members[].declared_lease_ms`, and dropped `members[].registered_age_s` (the page
//! no longer records registration times).

use std::time::{Duration, SystemTime};

use serde::Serialize;
use shmlock::{PageOrigin, Snapshot};

use crate::Target;

/// Bumped only when a field changes meaning or is removed.
pub const SCHEMA: u32 = 2;

/// `reap --json`'s schema, bumped on the same rule.
pub const REAP_SCHEMA: u32 = 1;

#[derive(Serialize)]
pub struct Inspect {
    pub schema: u32,
    pub path: String,
    pub data_path: Option<String>,
    pub format_version: u32,
    pub supported_version: u32,
    pub origin: &'static str,
    pub created_unix_ms: u64,
    pub generation: u64,
    pub published: u64,
    pub oldest_pinned: Option<u64>,
    pub owner: Option<Owner>,
    pub takeovers: u64,
    pub waiting_claimants: u64,
    pub waiting_for_publish: u64,
    pub waiting_for_readers: u64,
    pub reader_count: u64,
    pub live_members: usize,
    pub dead_members: usize,
    pub members: Vec<Member>,
}

#[derive(Serialize)]
pub struct Owner {
    pub member: Option<usize>,
    pub pid: u32,
    pub alive: bool,
    pub generation: u64,
    pub heartbeat_age_us: Option<u64>,
    pub lease_ms: Option<u64>,
}

#[derive(Serialize)]
pub struct Member {
    pub index: usize,
    pub pid: u32,
    pub token: u32,
    pub alive: bool,
    pub is_owner: bool,
    pub readers: u64,
    pub oldest_pin: Option<u64>,
    pub process_age_s: u64,
    pub heartbeat_age_us: Option<u64>,
    pub declared_lease_ms: Option<u64>,
}

fn micros(d: Duration) -> u64 {
    d.as_micros().min(u64::MAX as u128) as u64
}

fn millis(d: Duration) -> u64 {
    d.as_millis().min(u64::MAX as u128) as u64
}

fn lossy(path: &std::path::Path) -> String {
    path.to_string_lossy().into_owned()
}

impl Inspect {
    pub fn new(target: &Target, s: &Snapshot) -> Inspect {
        let owner_index = s.owner.as_ref().and_then(|o| o.index);
        Inspect {
            schema: SCHEMA,
            path: lossy(&target.lock),
            data_path: target.data.as_deref().map(lossy),
            format_version: s.format_version,
            supported_version: s.supported_version,
            origin: match s.origin {
                PageOrigin::Created => "created",
                PageOrigin::Healed => "healed",
                _ => "other",
            },
            created_unix_ms: s
                .created_at
                .duration_since(SystemTime::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis().min(u64::MAX as u128) as u64),
            generation: s.generation,
            published: s.published,
            oldest_pinned: s.oldest_pinned,
            owner: s.owner.as_ref().map(|o| Owner {
                member: o.index,
                pid: o.pid,
                alive: o.alive,
                generation: o.generation,
                heartbeat_age_us: o.heartbeat_age.map(micros),
                lease_ms: o.lease.map(millis),
            }),
            takeovers: s.takeovers,
            waiting_claimants: s.waiting_claimants,
            waiting_for_publish: s.waiting_for_publish,
            waiting_for_readers: s.waiting_for_readers,
            reader_count: s.reader_count,
            live_members: s.live_members().count(),
            dead_members: s.dead_members().count(),
            members: s
                .members
                .iter()
                .map(|m| Member {
                    index: m.index,
                    pid: m.pid,
                    token: m.token,
                    alive: m.alive,
                    is_owner: owner_index == Some(m.index),
                    readers: m.readers,
                    oldest_pin: m.oldest_pin,
                    process_age_s: m.process_age.as_secs(),
                    heartbeat_age_us: m.heartbeat_age.map(micros),
                    declared_lease_ms: m.declared_lease.map(millis),
                })
                .collect(),
        }
    }
}

/// `shmlock reap --json`.
#[derive(Serialize)]
pub struct Reap {
    pub schema: u32,
    pub path: String,
    pub data_path: Option<String>,
    pub healed: bool,
    pub cleared: Vec<Cleared>,
    pub readers_cleared: u64,
    pub owner_freed: Option<u64>,
    pub live_members: u64,
    pub owner: Option<ReapOwner>,
    pub reader_count: u64,
}

/// One member the reap cleared.
#[derive(Serialize)]
pub struct Cleared {
    pub index: usize,
    pub pid: u32,
    pub readers: u64,
    pub owned_generation: Option<u64>,
}

/// The writer after the reap.
#[derive(Serialize)]
pub struct ReapOwner {
    pub pid: u32,
    pub alive: bool,
    pub generation: u64,
}

impl Reap {
    pub fn new(target: &Target, healed: bool, cleared: Vec<Cleared>, after: &Snapshot) -> Reap {
        Reap {
            schema: REAP_SCHEMA,
            path: lossy(&target.lock),
            data_path: target.data.as_deref().map(lossy),
            healed,
            readers_cleared: cleared.iter().map(|c| c.readers).sum(),
            owner_freed: cleared.iter().find_map(|c| c.owned_generation),
            cleared,
            live_members: after.live_members().filter(|m| !m.is_self).count() as u64,
            owner: after.owner.as_ref().map(|o| ReapOwner {
                pid: o.pid,
                alive: o.alive,
                generation: o.generation,
            }),
            reader_count: after.reader_count,
        }
    }
}
