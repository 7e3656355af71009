//! `shmlock reap PATH [--json]`: clear dead members (and a dead writer), and say what was
//! cleared (as sentences, or one JSON object).
//!
//! Opening the file may itself clear dead state (an opener that finds itself alone
//! recovers the page; registering in a dead member's entry reaps it), so what was cleared
//! is the dead state seen before the open that is gone after `reap()`, plus what `reap()`
//! reports.

use std::collections::BTreeMap;
use std::io::Write;

use shmlock::{OpenState, Options, ShmLock, Snapshot};

use crate::json;
use crate::render::{count, Paint};
use crate::{sample, Failure, Target};

/// One cleared member, as the report prints it.
struct Cleared {
    pid: u32,
    readers: u64,
    owned_generation: Option<u64>,
}

pub fn run(target: &Target, as_json: bool) -> Result<(), Failure> {
    // Read-only first: a missing, empty or damaged file is reported, never created or
    // rewritten by a reap.
    let before = sample(target)?.ok_or_else(|| crate::no_lock_file(target))?;
    let lock = ShmLock::open_with(&target.lock, &Options::new().create(false))?;
    let report = lock.reap()?;
    let after = lock.snapshot();

    let mut cleared: BTreeMap<usize, Cleared> = BTreeMap::new();
    for m in &report.members {
        cleared.insert(
            m.index,
            Cleared {
                pid: m.pid,
                readers: m.readers,
                owned_generation: m.owned_generation,
            },
        );
    }
    let dead_owner = before
        .owner
        .as_ref()
        .filter(|o| !o.alive)
        .and_then(|o| o.index.map(|i| (i, o.generation)));
    for m in before.dead_members() {
        let still_there = after
            .members
            .iter()
            .any(|a| a.index == m.index && a.token == m.token);
        if !still_there {
            cleared.entry(m.index).or_insert(Cleared {
                pid: m.pid,
                readers: m.readers,
                owned_generation: dead_owner.filter(|(i, _)| *i == m.index).map(|(_, g)| g),
            });
        }
    }

    let healed = lock.open_state() == OpenState::HealedCorruptHeader;
    let mut out = std::io::stdout().lock();
    if as_json {
        let cleared = cleared
            .into_iter()
            .map(|(index, c)| json::Cleared {
                index,
                pid: c.pid,
                readers: c.readers,
                owned_generation: c.owned_generation,
            })
            .collect();
        let object = json::Reap::new(target, healed, cleared, &after);
        serde_json::to_writer_pretty(&mut out, &object).map_err(std::io::Error::from)?;
        writeln!(out)?;
        out.flush()?;
        return Ok(());
    }
    let paint = Paint::stdout();
    let path = target.lock.display();
    if healed {
        writeln!(
            out,
            "{path}: the page was damaged and has been rewritten (generations restarted from the clock)"
        )?;
    }
    let others_alive = after.live_members().filter(|m| !m.is_self).count() as u64;
    if cleared.is_empty() {
        writeln!(
            out,
            "{path}: nothing to reap ({}, none dead)",
            count(others_alive, "live member")
        )?;
    } else {
        let readers: u64 = cleared.values().map(|c| c.readers).sum();
        writeln!(
            out,
            "{path}: cleared {} ({} with {})",
            paint.bold(&count(cleared.len() as u64, "dead member")),
            count(readers, "reader"),
            if cleared.len() == 1 { "it" } else { "them" }
        )?;
        for (index, c) in &cleared {
            let role = match c.owned_generation {
                Some(g) => format!(", held the writer role (generation {g}): the role is free"),
                None => String::new(),
            };
            writeln!(
                out,
                "  member {index:<3} pid {:<8} {}{role}",
                c.pid,
                count(c.readers, "reader")
            )?;
        }
        writeln!(
            out,
            "{} {}: {} and {} attached",
            count(others_alive, "live member"),
            if others_alive == 1 {
                "remains"
            } else {
                "remain"
            },
            writer_summary(&after),
            count(after.reader_count, "reader")
        )?;
    }
    out.flush()?;
    Ok(())
}

fn writer_summary(s: &Snapshot) -> String {
    match &s.owner {
        Some(o) if o.alive => format!("writer pid {} (generation {})", o.pid, o.generation),
        Some(_) => "a dead writer (the next claim takes over)".into(),
        None => "no writer".into(),
    }
}
