//! The fenced log example (`examples/fenced_log.rs`) under kills and pauses: writer
//! processes SIGKILLed while they own the role, or SIGSTOPped past their lease and resumed
//! deposed (so they append records under a stale generation); readers check every read.
//! The example's own checks decide: nothing published is lost, no deposed writer's
//! unpublished tail survives its successor's cut, every stale record is rejected.
//!
//! Processes: the test binary re-executes itself (role in `FENCED_LOG_ROLE`, filter
//! `fenced_log_worker_entry --exact`); at most 4 workers run at once, all die with the
//! harness (`PR_SET_PDEATHSIG`) and are reaped.

// Unix only: its pauses are SIGSTOP/SIGCONT and its workers die with the harness by
// PR_SET_PDEATHSIG; kills and takeovers run portably in tests/processes.rs, under wine too.
#![cfg(unix)]

#[path = "../examples/fenced_log.rs"]
#[allow(dead_code)]
mod fenced_log;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

const ROLE_ENV: &str = "FENCED_LOG_ROLE";

/// The entry of every worker process; returns at once in a normal test run.
#[test]
fn fenced_log_worker_entry() {
    let Ok(role) = std::env::var(ROLE_ENV) else {
        return;
    };
    nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL).unwrap();
    let env = |name: &str| std::env::var(name).unwrap_or_else(|_| panic!("{name} is not set"));
    if nix::unistd::getppid().as_raw().to_string() != env("FENCED_LOG_PARENT") {
        return; // the harness died before we asked to die with it
    }
    let data = env("FENCED_LOG_DATA");
    let witness = env("FENCED_LOG_WITNESS");
    let (data, witness) = (Path::new(&data), Path::new(&witness));
    let result = match role.as_str() {
        "writer" => fenced_log::run_writer(data, witness),
        _ => fenced_log::run_reader(data, witness),
    };
    if let Err(e) = result {
        std::fs::write(witness.with_extension("error"), e.to_string()).unwrap();
    }
}

#[test]
fn fenced_log_survives_kills_and_rejects_a_deposed_writers_records() {
    let dir = tempfile::tempdir().unwrap();
    let exe = std::env::current_exe().unwrap();
    let report = fenced_log::torture(
        dir.path(),
        Duration::from_secs(2),
        &|role, data, witness| {
            let mut command = Command::new(&exe);
            command
                .args(["fenced_log_worker_entry", "--exact", "--test-threads=1"])
                .env(ROLE_ENV, role)
                .env("FENCED_LOG_DATA", data)
                .env("FENCED_LOG_WITNESS", witness)
                .env("FENCED_LOG_PARENT", std::process::id().to_string());
            command
        },
    )
    .unwrap_or_else(|e| panic!("{e}"));
    println!("{report:?}");
    let worker_error = dir.path().join("witness.error");
    assert!(
        !worker_error.exists(),
        "a worker failed: {}",
        std::fs::read_to_string(&worker_error).unwrap_or_default()
    );
    assert!(report.kills >= 3, "{report:?}");
    assert!(report.pauses >= 3, "{report:?}");
    assert!(report.claims > report.kills + report.pauses, "{report:?}");
    // Paused writers resumed deposed and appended under their old generation: readers
    // saw those records in the published range and rejected them.
    assert!(report.rejected > 0, "{report:?}");
    assert!(report.records > 0, "{report:?}");
}
