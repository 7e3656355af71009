//! Async readers and an async writer on one lock file (feature `tokio`):
//!
//! ```sh
//! cargo run --features tokio --example async_reader -- /tmp/app.db
//! ```
//!
//! A hundred reader tasks follow the published version with `wait_published_async`,
//! attaching a reader for each version they read; a writer task claims the role with
//! `claim_writer_async`, publishes ten versions, and before each it waits with
//! `wait_readers_past_async` until no reader pins a version it is about to reclaim. Start
//! a second one beside it: its writer task waits for the first to release the role (or
//! die), while its readers follow the first one's versions. The waiting tasks cost no
//! thread each: the process has one `shmlock-publish`, `shmlock-claim` and `shmlock-pins`
//! thread while they wait (`ls /proc/PID/task`).

use std::process::ExitCode;
use std::time::Duration;

use shmlock::{Error, ShmLock};

const READERS: usize = 100;
const VERSIONS: u64 = 10;

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> ExitCode {
    let data = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "/tmp/shmlock-example.db".into());
    match run(&data).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("async_reader: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run(data: &str) -> Result<(), Box<dyn std::error::Error>> {
    if !std::path::Path::new(data).exists() {
        std::fs::write(data, b"")?;
    }
    shmlock::set_provisioning_enabled(true);
    let lock = ShmLock::provision(data)?;
    println!(
        "pid {}: opened {}",
        std::process::id(),
        lock.path().display()
    );

    let from = lock.published();
    let readers: Vec<_> = (0..READERS)
        .map(|task| tokio::spawn(follow(lock.clone(), task, from)))
        .collect();

    let writer = lock.claim_writer_async(Duration::from_secs(60)).await?;
    println!("writer: claimed generation {}", writer.generation());
    let first = lock.published() + 1;
    for version in first..first + VERSIONS {
        // Versions below `version - 1` are reclaimed once no reader pins them.
        writer
            .wait_readers_past_async(version - 1, Duration::from_secs(10))
            .await?;
        writer.publish(version)?;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    writer.release()?;

    for reader in readers {
        reader.await??;
    }
    Ok(())
}

/// Read every version published after `seen` until a second passes without one.
async fn follow(lock: ShmLock, task: usize, mut seen: u64) -> Result<(), Error> {
    loop {
        match lock
            .wait_published_async(seen, Duration::from_secs(1))
            .await
        {
            Ok(version) => {
                let reader = lock.attach_reader()?; // pins what we read
                if task == 0 {
                    println!("readers: version {version} (pinned {})", reader.version());
                }
                seen = version;
            }
            Err(Error::Timeout { .. }) => return Ok(()),
            Err(e) => return Err(e),
        }
    }
}
