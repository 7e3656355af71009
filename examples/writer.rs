//! A writer process. Run it in two terminals, and a `reader` in a third:
//!
//! ```sh
//! cargo run --example writer -- /tmp/app.db     # terminal 1: claims the writer role
//! cargo run --example writer -- /tmp/app.db     # terminal 2: waits for it
//! cargo run --example reader -- /tmp/app.db     # terminal 3: reads
//! shmlock watch /tmp/app.db                     # terminal 4: watches
//! ```
//!
//! Then end the first writer with Ctrl-C (it dies without releasing, like a crash): the
//! second takes over at once with the next generation. Or suspend it with Ctrl-Z: after the
//! 3-second lease the second takes over, and when you `fg` the first it finds itself
//! deposed and stops writing.
//!
//! Each write appends a line stamped with the writer's generation, its fencing token, and
//! publishes the write's number as the new version (readers print the version they pin).
//!
//! Given a lock file (`/tmp/app.db-shm`) instead of the data file, it refuses
//! (`Error::DataPathIsLockFile`) and writes nothing anywhere. Piped into `head`, it ends
//! quietly (status 0) when `head` stops reading; any other output error ends it with
//! status 1.

use std::io::Write;
use std::process::ExitCode;
use std::time::Duration;

use shmlock::{Error, Options, ShmLock, Takeover};

/// Prints the library's log records (takeovers, recoveries, reaps) to stderr; an engine
/// would route them into its own logs through the `log` facade instead.
struct StderrLog;

impl log::Log for StderrLog {
    fn enabled(&self, metadata: &log::Metadata) -> bool {
        metadata.level() <= log::Level::Info
    }
    fn log(&self, record: &log::Record) {
        if self.enabled(record.metadata()) {
            let line = format!("  [shmlock {}] {}", record.level(), record.args());
            let _ = writeln!(std::io::stderr(), "{line}");
        }
    }
    fn flush(&self) {}
}

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
            let _ = writeln!(std::io::stderr(), "writer: cannot write the output: {e}");
            ExitCode::FAILURE
        }
        Err(e) => {
            let _ = writeln!(std::io::stderr(), "writer: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The lock file beside `data`, opened once with `options`, creating an empty data file if
/// there is none. The library decides what is a lock file: `provision_with` refuses one as
/// a data path (`DataPathIsLockFile`) before anything is created, so this never creates
/// `app.db-shm-shm` nor writes into a lock file.
fn provision(data: &str, options: &Options) -> Result<ShmLock, Box<dyn std::error::Error>> {
    if shmlock::is_lock_file(data) {
        return Err(Error::DataPathIsLockFile { path: data.into() }.into());
    }
    // The pretend database: an engine creates its data file before its lock file.
    std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .open(data)
        .map_err(|e| format!("{data}: cannot create it: {e}"))?;
    // This example may create the lock file (as SHMLOCK_PROVISION=1 would allow).
    shmlock::set_provisioning_enabled(true);
    Ok(ShmLock::provision_with(data, options)?)
}

fn run(data: &str) -> Result<(), Box<dyn std::error::Error>> {
    let _ = log::set_logger(&StderrLog).map(|()| log::set_max_level(log::LevelFilter::Info));
    // This handle declares a lease with its claims: "depose me if I am silent for longer
    // than 3 s" (a suspended or hung writer). A dead one is taken over at once, lease or
    // not.
    let options = Options::new().lease(Duration::from_secs(3));
    let lock = provision(data, &options)?;
    // The pretend database, checked above to be a data file and not a lock file.
    let mut file = std::fs::OpenOptions::new()
        .append(true)
        .open(data)
        .map_err(|e| format!("{data}: cannot open it: {e}"))?;
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

    let writer = loop {
        match lock.claim_writer(Duration::from_secs(2)) {
            Ok(w) => break w,
            Err(Error::ClaimTimeout {
                pid, generation, ..
            }) => writeln!(
                out,
                "waiting: pid {pid} holds the writer role (generation {generation})"
            )?,
            Err(e) => return Err(e.into()),
        }
    };
    let generation = writer.generation();
    let how = match writer.takeover() {
        None => "claimed the writer role".to_string(),
        Some(Takeover::Dead { pid, .. }) => format!("took over from pid {pid}, which had died"),
        Some(Takeover::LeaseExpired { pid, .. }) => {
            format!("took over from pid {pid}, silent for longer than the lease it declared")
        }
        Some(Takeover::Invalid { .. }) => "took over a damaged owner word".to_string(),
        Some(_) => "took over".to_string(),
    };
    writeln!(out, "{how}: generation {generation}")?;

    // Versions only grow, across takeovers too: carry on from the latest published.
    let first = lock.published() + 1;
    for n in first.. {
        // Check we still own the role before each write: a deposed writer must stop.
        if let Err(e) = writer.heartbeat() {
            writeln!(out, "stopping: {e}")?;
            return Ok(());
        }
        writeln!(file, "generation {generation}: write {n}")
            .map_err(|e| format!("{data}: cannot append to it: {e}"))?;
        writer.publish(n)?;
        writeln!(
            out,
            "wrote and published #{n} under generation {generation}"
        )?;
        std::thread::sleep(Duration::from_millis(500));
    }
    Ok(())
}
