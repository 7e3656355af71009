//! A reader process: attaches a reader for each read of the data file, and prints who
//! writes it. Run it beside `writer` (see examples/writer.rs):
//!
//! ```sh
//! cargo run --example reader -- /tmp/app.db
//! ```
//!
//! Each second it attaches, reads the data file's last line, and holds the read for
//! 700 ms before detaching, so `shmlock inspect /tmp/app.db` usually sees it attached. End
//! it with Ctrl-C: its reader vanishes from the count at once (the kernel drops its lock),
//! and its member entry is reaped by the next opener or `shmlock reap`.
//!
//! Given a lock file (`/tmp/app.db-shm`) instead of the data file, it refuses
//! (`Error::DataPathIsLockFile`) and touches nothing. Piped into `head`, it ends quietly
//! (status 0) when `head` stops reading; any other output error ends it with status 1.

use std::io::Write;
use std::process::ExitCode;
use std::time::Duration;

use shmlock::ShmLock;

fn main() -> ExitCode {
    let data = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "/tmp/shmlock-example.db".into());
    match run(&data) {
        Ok(()) => ExitCode::SUCCESS,
        // `| head` stopped reading: not a failure.
        Err(e)
            if e.downcast_ref::<std::io::Error>()
                .is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe) =>
        {
            ExitCode::SUCCESS
        }
        // Every other bare I/O error here is from writing our output (`> /dev/full`).
        Err(e) if e.is::<std::io::Error>() => {
            let _ = writeln!(std::io::stderr(), "reader: cannot write the output: {e}");
            ExitCode::FAILURE
        }
        Err(e) => {
            let _ = writeln!(std::io::stderr(), "reader: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(data: &str) -> Result<(), Box<dyn std::error::Error>> {
    // provision() opens the lock file beside the data file; it may create a missing one
    // only with provisioning enabled (here, or SHMLOCK_PROVISION=1 in the environment).
    shmlock::set_provisioning_enabled(true);
    let lock = ShmLock::provision(data)?;
    // Never `println!`: it panics when the output is closed.
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "pid {}: opened {} ({:?}, member {})",
        std::process::id(),
        lock.path().display(),
        lock.open_state(),
        lock.member_index()
    )?;
    loop {
        let reader = lock.attach_reader()?;
        let contents = std::fs::read_to_string(data).unwrap_or_default();
        let last = contents.lines().last().unwrap_or("(empty)");
        let snapshot = lock.snapshot();
        let writer = match &snapshot.owner {
            Some(o) if o.alive => format!("pid {} (generation {})", o.pid, o.generation),
            Some(o) => format!("pid {} DEAD (generation {})", o.pid, o.generation),
            None => "none".to_string(),
        };
        writeln!(
            out,
            "version {} | readers attached: {} | writer: {writer} | last write: {last}",
            reader.version(),
            snapshot.reader_count
        )?;
        std::thread::sleep(Duration::from_millis(700));
        drop(reader); // detaches
        std::thread::sleep(Duration::from_millis(300));
    }
}
