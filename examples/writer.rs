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
//! Each write appends a line stamped with the writer's generation, its fencing token.

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
            eprintln!("  [shmlock {}] {}", record.level(), record.args());
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
        Err(e) => {
            eprintln!("writer: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(data: &str) -> Result<(), Box<dyn std::error::Error>> {
    let _ = log::set_logger(&StderrLog).map(|()| log::set_max_level(log::LevelFilter::Info));
    // The pretend database: created if missing.
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(data)
        .map_err(|e| format!("{data}: cannot open it: {e}"))?;

    // A lease lets this writer depose one that stopped heartbeating (suspended, hung) for
    // longer than 3 s; a dead one is taken over at once, lease or not.
    let options = Options::new().lease(Duration::from_secs(3));
    let lock = ShmLock::open_with(shmlock::shm_path_for(data), &options)?;
    println!(
        "pid {}: opened {} ({:?}, member {})",
        std::process::id(),
        lock.path().display(),
        lock.open_state(),
        lock.member_index()
    );

    let writer = loop {
        match lock.claim_writer(Duration::from_secs(2)) {
            Ok(w) => break w,
            Err(Error::WriterBusy { pid, generation }) => {
                println!("waiting: pid {pid} holds the writer role (generation {generation})")
            }
            Err(e) => return Err(e.into()),
        }
    };
    let generation = writer.generation();
    match writer.takeover() {
        None => println!("claimed the writer role: generation {generation}"),
        Some(Takeover::Dead { pid, .. }) => {
            println!("took over from pid {pid}, which had died: generation {generation}")
        }
        Some(Takeover::LeaseExpired { pid, .. }) => println!(
            "took over from pid {pid}, silent for longer than the lease: generation {generation}"
        ),
        Some(Takeover::Invalid { .. }) => {
            println!("took over a damaged owner word: generation {generation}")
        }
        Some(other) => println!("took over ({other:?}): generation {generation}"),
    }

    for n in 1.. {
        // Check we still own the role before each write: a deposed writer must stop.
        if let Err(e) = writer.heartbeat() {
            println!("stopping: {e}");
            return Ok(());
        }
        writeln!(file, "generation {generation}: write {n}")?;
        println!("wrote #{n} under generation {generation}");
        std::thread::sleep(Duration::from_millis(500));
    }
    Ok(())
}
