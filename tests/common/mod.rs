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

/// A one-line executable that runs the agent through `prefix` (a wrapper such as
/// `unshare …` that execs its command, so the agent keeps the wrapper's pid):
/// `Agent::spawn(wrapper, path)` then runs `prefix shmlock agent path`.
pub fn wrapper(dir: &Path, name: &str, prefix: &str) -> std::path::PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.join(name);
    std::fs::write(
        &path,
        format!(
            "#!/bin/sh\nexec {prefix} {} \"$@\"\n",
            env!("CARGO_BIN_EXE_shmlock")
        ),
    )
    .unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}

/// The thread ids of `pid`'s threads named `name` (its `/proc/PID/task/*/comm`), now.
pub fn threads_named(pid: u32, name: &str) -> Vec<u32> {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return Vec::new();
    };
    tasks
        .filter_map(|task| {
            let task = task.ok()?;
            let comm = std::fs::read_to_string(task.path().join("comm")).ok()?;
            (comm.trim_end() == name)
                .then(|| task.file_name().to_str()?.parse().ok())
                .flatten()
        })
        .collect()
}

/// The words of an agent's answer after `ok`, parsed as `key=value` fields.
pub fn field(words: &[String], key: &str) -> String {
    words
        .iter()
        .find_map(|w| w.strip_prefix(key)?.strip_prefix('='))
        .unwrap_or_else(|| panic!("no {key}= in {words:?}"))
        .to_string()
}
