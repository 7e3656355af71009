//! Human output: snapshots as aligned tables with relative ages.

use std::time::Duration;

use shmlock::Snapshot;

/// "3 ms", "1.2 s", "5 min", "2 h", "3 d".
pub fn age(d: Duration) -> String {
    let us = d.as_micros();
    match us {
        0..=999 => format!("{us} µs"),
        1_000..=999_999 => format!("{} ms", us / 1_000),
        1_000_000..=59_999_999 => format!("{:.1} s", d.as_secs_f64()),
        _ => {
            let s = d.as_secs();
            match s {
                0..=3599 => format!("{} min", s / 60),
                3600..=86_399 => format!("{} h", s / 3600),
                _ => format!("{} d", s / 86_400),
            }
        }
    }
}

/// The owner line and the member table.
pub fn snapshot(s: &Snapshot) -> String {
    let mut out = String::new();
    let owner = match &s.owner {
        None => "none".to_string(),
        Some(o) if o.index.is_none() => "damaged owner word (next claim takes over)".to_string(),
        Some(o) => format!(
            "pid {} ({}, heartbeat {} ago, held {})",
            o.pid,
            if o.alive { "alive" } else { "DEAD" },
            age(o.heartbeat_age),
            age(o.held_for)
        ),
    };
    out.push_str(&format!(
        "  writer      {owner}\n  generation  {}\n  readers     {}   takeovers {}   waiting claimants {}\n",
        s.generation, s.reader_count, s.takeovers, s.waiting_claimants
    ));
    out.push_str(&format!(
        "  {:<6} {:>8}  {:<5}  {:>7}  {:>10}  {:>10}\n",
        "MEMBER", "PID", "ALIVE", "READERS", "REGISTERED", "HEARTBEAT"
    ));
    for m in &s.members {
        out.push_str(&format!(
            "  {:<6} {:>8}  {:<5}  {:>7}  {:>10}  {:>10}{}\n",
            m.index,
            m.pid,
            if m.alive { "yes" } else { "DEAD" },
            m.readers,
            format!("{} ago", age(m.registered_age)),
            format!("{} ago", age(m.heartbeat_age)),
            if m.is_self { "  (this process)" } else { "" }
        ));
    }
    let dead = s.dead_members().count();
    if dead > 0 {
        out.push_str(&format!(
            "  {dead} dead member(s) wait to be reaped (`shmlock reap`, or any new opener)\n"
        ));
    }
    out
}
