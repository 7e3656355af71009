//! The keep-alive pattern: the code that owns the writer role keeps its `WriterGuard`; a
//! background thread keeps the lease alive through a `HeartbeatHandle`, which can heartbeat
//! and check `is_current` but cannot release the role or publish.
//!
//! ```sh
//! cargo run --example keepalive -- /tmp/app.db
//! ```
//!
//! It claims with a 500 ms lease, writes (here: publishes) a few versions while the
//! keep-alive thread heartbeats every 100 ms, then releases; the keep-alive thread sees
//! `Deposed` on its next heartbeat and stops by itself. Suspend it with Ctrl-Z during the
//! writes and a second copy takes over after the lease; `fg`, and both the writer and the
//! keep-alive thread are told they were deposed.

use std::process::ExitCode;
use std::thread;
use std::time::Duration;

use shmlock::{Error, Options, ShmLock};

fn main() -> ExitCode {
    let data = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "/tmp/shmlock-keepalive.db".into());
    match run(&data) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("keepalive: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(data: &str) -> Result<(), Box<dyn std::error::Error>> {
    let lease = Duration::from_millis(500);
    // The pretend database exists first; the lock file belongs to it.
    std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .open(data)
        .map_err(|e| format!("{data}: cannot create it: {e}"))?;
    shmlock::set_provisioning_enabled(true); // this example may create the lock file
    let lock = ShmLock::provision_with(data, &Options::new().lease(lease))?;
    let writer = lock.claim_writer(Duration::from_secs(30))?;
    println!("writer: generation {}", writer.generation());

    // The keep-alive thread gets a handle, not the guard: it cannot release the role.
    let keepalive = writer.heartbeat_handle();
    let beats = thread::spawn(move || {
        let mut count = 0u64;
        loop {
            match keepalive.heartbeat() {
                Ok(()) => count += 1,
                Err(Error::Deposed { generation }) => {
                    println!(
                        "keep-alive: generation {generation} is over after {count} heartbeats"
                    );
                    return;
                }
                Err(e) => {
                    eprintln!("keep-alive: {e}");
                    return;
                }
            }
            thread::sleep(lease / 5);
        }
    });

    // The owning code writes; each write checks the claim (a deposed writer must stop).
    let first = lock.published() + 1;
    for version in first..first + 5 {
        thread::sleep(Duration::from_millis(150)); // the "work" of one write
        match writer.publish(version) {
            Ok(()) => println!("writer: published version {version}"),
            Err(e @ Error::Deposed { .. }) => {
                println!("writer: {e}");
                break;
            }
            Err(e) => return Err(e.into()),
        }
    }
    // Releasing ends the claim: the keep-alive thread's next heartbeat answers Deposed.
    let _ = writer.release();
    beats.join().expect("keep-alive thread");
    Ok(())
}
