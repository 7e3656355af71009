//! `shmlock`: inspect, reap and demonstrate shmlock lock files.

mod agent;
mod demo;
mod driver;
mod render;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "shmlock",
    version,
    about = "Inspect, reap and demonstrate shmlock lock files (<data>-shm)"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Show a lock file's writer, members and readers (read-only: creates, registers and
    /// writes nothing). Accepts the data file's path too.
    Inspect {
        /// The lock file, or the data file beside it.
        path: PathBuf,
    },
    /// Clear dead members (and a dead writer) from a lock file and say what was cleared.
    Reap {
        /// The lock file, or the data file beside it.
        path: PathBuf,
    },
    /// Run a multi-process demonstration: a writer, three readers, a crash, a takeover.
    Demo {
        /// Directory for the demo's files (default: a fresh temporary directory).
        #[arg(long)]
        dir: Option<PathBuf>,
    },
    /// A scriptable process for tests and the demo (commands on stdin).
    #[command(hide = true)]
    Agent { path: PathBuf },
}

/// The lock file for a path the user gave: itself if it is one (or does not exist and is
/// not a data file), else the `-shm` beside it.
fn lock_path(path: &Path) -> PathBuf {
    let shm = shmlock::shm_path_for(path);
    let looks_like_data = !path.to_string_lossy().ends_with("-shm");
    if looks_like_data && shm.exists() {
        shm
    } else {
        path.to_path_buf()
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Inspect { path } => inspect(&lock_path(&path)),
        Command::Reap { path } => reap(&lock_path(&path)),
        Command::Demo { dir } => demo::run(dir),
        Command::Agent { path } => return ExitCode::from(agent::run(path) as u8),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("shmlock: {message}");
            ExitCode::from(1)
        }
    }
}

fn inspect(path: &Path) -> Result<(), String> {
    match shmlock::inspect(path).map_err(|e| e.to_string())? {
        None => Err(format!(
            "{}: no lock file there (nothing has opened it yet)",
            path.display()
        )),
        Some(s) => {
            println!("{} (format v{})", path.display(), s.format_version);
            print!("{}", render::snapshot(&s));
            Ok(())
        }
    }
}

fn reap(path: &Path) -> Result<(), String> {
    let options = shmlock::Options::new().create(false);
    let lock = shmlock::ShmLock::open_with(path, &options).map_err(|e| e.to_string())?;
    let report = lock.reap().map_err(|e| e.to_string())?;
    if report.members.is_empty() {
        println!("{}: nothing to reap", path.display());
    }
    for m in &report.members {
        println!(
            "reaped member {} (pid {}, {} reader(s){})",
            m.index,
            m.pid,
            m.readers,
            m.owned_generation
                .map(|g| format!(", writer of generation {g}"))
                .unwrap_or_default()
        );
    }
    Ok(())
}
