//! Shared by the multi-process tests: the agent driver and a bounded condition wait.
#![allow(dead_code)]

#[path = "../../cli/src/driver.rs"]
pub mod driver;

use std::path::Path;
use std::time::{Duration, Instant};

pub use driver::Agent;

/// Start an agent on `path` and open it (with an optional lease in ms); returns the agent
/// and its open state's name.
pub fn open_agent(path: &Path, lease_ms: Option<u64>) -> (Agent, String) {
    let mut agent =
        Agent::spawn(Path::new(env!("CARGO_BIN_EXE_shmlock")), path).expect("spawn shmlock agent");
    let cmd = match lease_ms {
        Some(ms) => format!("open {ms}"),
        None => "open".to_string(),
    };
    let words = agent.ok(&cmd);
    (agent, words[0].clone())
}

/// Wait until `cond` holds, re-checking it (a condition, not a guess at a duration);
/// panics with `what` after `limit`.
pub fn wait_until(what: &str, limit: Duration, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(start.elapsed() < limit, "timed out waiting until {what}");
        std::thread::sleep(Duration::from_micros(200));
    }
}
