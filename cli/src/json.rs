//! `shmlock inspect --json`: one object, documented in README.md ("Command-line tool").
//!
//! The schema is stable: fields may be added (and `schema` bumped only if one changes
//! meaning or goes away). Ages are integers in the unit their name ends with; the page
//! records registration and process start in whole seconds.

use std::time::{Duration, SystemTime};

use serde::Serialize;
use shmlock::{PageOrigin, Snapshot};

use crate::Target;

/// Bumped only when a field changes meaning or is removed.
pub const SCHEMA: u32 = 1;

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
    pub owner: Option<Owner>,
    pub takeovers: u64,
    pub waiting_claimants: u64,
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
}

fn micros(d: Duration) -> u64 {
    d.as_micros().min(u64::MAX as u128) as u64
}

impl Inspect {
    pub fn new(target: &Target, s: &Snapshot) -> Inspect {
        let owner_index = s.owner.as_ref().and_then(|o| o.index);
        Inspect {
            schema: SCHEMA,
            path: target.lock.to_string_lossy().into_owned(),
            data_path: target
                .data
                .as_ref()
                .map(|d| d.to_string_lossy().into_owned()),
            format_version: s.format_version,
            supported_version: s.supported_version,
            origin: match s.origin {
                PageOrigin::Created => "created",
                PageOrigin::Healed => "healed",
            },
            created_unix_ms: s
                .created_at
                .duration_since(SystemTime::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis().min(u64::MAX as u128) as u64),
            generation: s.generation,
            owner: s.owner.as_ref().map(|o| Owner {
                member: o.index,
                pid: o.pid,
                alive: o.alive,
                generation: o.generation,
                heartbeat_age_us: o.heartbeat_age.map(micros),
            }),
            takeovers: s.takeovers,
            waiting_claimants: s.waiting_claimants,
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
                })
                .collect(),
        }
    }
}
