//! `shmlock`: inspect, watch, reap and demonstrate shmlock lock files.
//!
//! Exit codes: 0 success, 1 an error (printed as a sentence naming the path), 2 a usage
//! error (clap's). Output goes to stdout, errors to stderr; colour only on a terminal and
//! never with `NO_COLOR` set.

mod agent;
mod demo;
mod driver;
mod json;
mod reap;
mod render;
mod watch;

use std::io::{self, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use render::Paint;

#[derive(Parser)]
#[command(
    name = "shmlock",
    version,
    about = "Inspect, watch, reap and demonstrate shmlock lock files (<data>-shm)",
    after_help = "PATH is a lock file (app.db-shm) or the data file beside it (app.db).\n\
                  Exit status: 0 ok, 1 error, 2 usage error. Colour only on a terminal; NO_COLOR turns it off.\n\n\
                  Examples:\n  shmlock demo\n  shmlock inspect app.db\n  shmlock inspect --json app.db-shm\n  \
                  shmlock watch app.db --interval 200\n  shmlock reap app.db"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Show the writer, members and readers of a lock file. Read-only: creates, registers
    /// and writes nothing.
    Inspect {
        /// The lock file, or the data file beside it.
        path: PathBuf,
        /// Print one JSON object (schema in README.md) instead of the table.
        #[arg(long)]
        json: bool,
    },
    /// Show the inspect view refreshed in place, highlighting takeovers and members coming
    /// and going (Ctrl-C quits). Not on a terminal: one snapshot per interval, appended.
    Watch {
        /// The lock file, or the data file beside it.
        path: PathBuf,
        /// Refresh interval in milliseconds.
        #[arg(long, short, value_name = "MS", default_value_t = 500,
              value_parser = clap::value_parser!(u64).range(10..=3_600_000))]
        interval: u64,
        /// Stop after this many snapshots (default: until Ctrl-C).
        #[arg(long, short = 'n', value_name = "N",
              value_parser = clap::value_parser!(u64).range(1..))]
        count: Option<u64>,
    },
    /// Clear dead members (and a dead writer) from a lock file and say what was cleared.
    /// Live members are never touched.
    Reap {
        /// The lock file, or the data file beside it.
        path: PathBuf,
    },
    /// Run a multi-process demonstration: a writer, three readers, a crash, a takeover.
    Demo {
        /// Directory for the demo's files, kept afterwards (default: a fresh temporary
        /// directory, removed afterwards).
        #[arg(long)]
        dir: Option<PathBuf>,
    },
    /// A scriptable process for tests and the demo (commands on stdin).
    #[command(hide = true)]
    Agent { path: PathBuf },
}

/// Why a command failed.
#[derive(Debug)]
pub enum Failure {
    /// A sentence for the user (it names the path).
    Message(String),
    /// Writing our own output failed (a closed pipe is not an error: `| head` is fine).
    Output(io::Error),
}

impl From<io::Error> for Failure {
    fn from(e: io::Error) -> Failure {
        Failure::Output(e)
    }
}

impl From<String> for Failure {
    fn from(message: String) -> Failure {
        Failure::Message(message)
    }
}

impl From<shmlock::Error> for Failure {
    fn from(e: shmlock::Error) -> Failure {
        Failure::Message(e.to_string())
    }
}

/// The file a command works on, and how the user named it.
#[derive(Clone, Debug)]
pub struct Target {
    /// The path as given on the command line.
    pub given: PathBuf,
    /// The lock file.
    pub lock: PathBuf,
    /// The data file, when the user named that and the lock file is beside it.
    pub data: Option<PathBuf>,
}

/// Whether the file at `path` starts like a shmlock page (ours, in any state or version).
fn carries_our_magic(path: &Path) -> bool {
    let mut prefix = Vec::with_capacity(64);
    let read = std::fs::File::open(path).and_then(|f| f.take(64).read_to_end(&mut prefix));
    match read {
        Ok(_) => !matches!(
            shmlock::page::classify_prefix(&prefix),
            Err(shmlock::page::Invalid::NotOurs)
        ),
        // Unreadable: let the command itself report why.
        Err(_) => true,
    }
}

/// Find the lock file for a path the user gave:
/// - a name ending in `-shm` is the lock file;
/// - else, when `<path>-shm` exists, that is it (the user named the data file);
/// - else a file that carries the shmlock magic is a lock file with another name;
/// - else it is a data file whose lock file does not exist yet.
fn resolve(given: &Path) -> Result<Target, Failure> {
    let direct = Target {
        given: given.to_path_buf(),
        lock: given.to_path_buf(),
        data: None,
    };
    if given.as_os_str().as_bytes().ends_with(b"-shm") {
        return Ok(direct);
    }
    let shm = shmlock::shm_path_for(given);
    let beside = Target {
        given: given.to_path_buf(),
        lock: shm.clone(),
        data: Some(given.to_path_buf()),
    };
    if std::fs::symlink_metadata(&shm).is_ok() {
        return Ok(beside);
    }
    match std::fs::symlink_metadata(given) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Err(Failure::Message(format!(
            "{}: no such file, and no lock file {} beside it; check the path",
            given.display(),
            shm.display()
        ))),
        Ok(meta) if meta.is_file() && !carries_our_magic(given) => Ok(beside),
        // Directories, symlinks, unreadable files: the library says what is wrong.
        _ => Ok(direct),
    }
}

/// The sentence for a lock file that `shmlock::inspect` found missing or empty.
fn no_lock_file(target: &Target) -> Failure {
    let lock = target.lock.display();
    Failure::Message(match (&target.data, target.lock.exists()) {
        (Some(data), false) => format!(
            "{data}: has no lock file beside it yet ({lock} does not exist: no process has opened {data} with shmlock)",
            data = data.display()
        ),
        (None, false) => format!("{lock}: no such lock file; check the path"),
        (_, true) => format!(
            "{lock}: the lock file is empty: no process has initialised it yet"
        ),
    })
}

/// `shmlock::inspect`, with errors a person can act on. `Ok(None)`: no lock file (yet).
pub fn sample(target: &Target) -> Result<Option<shmlock::Snapshot>, Failure> {
    match shmlock::inspect(&target.lock) {
        Ok(s) => Ok(s),
        Err(shmlock::Error::Io { path, source, .. })
            if source.kind() == io::ErrorKind::PermissionDenied =>
        {
            Err(Failure::Message(format!(
                "{}: permission denied: run shmlock as a user who can read it",
                path.display()
            )))
        }
        Err(e) => Err(e.into()),
    }
}

fn inspect(target: &Target, as_json: bool) -> Result<(), Failure> {
    let snapshot = sample(target)?.ok_or_else(|| no_lock_file(target))?;
    let mut out = io::stdout().lock();
    if as_json {
        let object = json::Inspect::new(target, &snapshot);
        serde_json::to_writer_pretty(&mut out, &object).map_err(io::Error::from)?;
        writeln!(out)?;
    } else {
        out.write_all(render::view_text(target, &snapshot, &Paint::stdout()).as_bytes())?;
    }
    out.flush()?;
    Ok(())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Inspect { path, json } => resolve(&path).and_then(|t| inspect(&t, json)),
        Command::Watch {
            path,
            interval,
            count,
        } => resolve(&path)
            .and_then(|t| watch::run(&t, std::time::Duration::from_millis(interval), count)),
        Command::Reap { path } => resolve(&path).and_then(|t| reap::run(&t)),
        Command::Demo { dir } => demo::run(dir),
        Command::Agent { path } => return ExitCode::from(agent::run(path) as u8),
    };
    let message = match result {
        Ok(()) => return ExitCode::SUCCESS,
        Err(Failure::Output(e)) if e.kind() == io::ErrorKind::BrokenPipe => {
            return ExitCode::SUCCESS
        }
        Err(Failure::Output(e)) => format!("cannot write the output: {e}"),
        Err(Failure::Message(m)) => m,
    };
    let paint = Paint::stderr();
    let _ = writeln!(io::stderr(), "{} {message}", paint.red("shmlock:"));
    ExitCode::from(1)
}
