//! `shmlock`: inspect, watch, reap and demonstrate shmlock lock files.
//!
//! Exit codes: 0 success, 1 an error (printed as a sentence naming the path), 2 a usage
//! error (clap's). Output goes to stdout, errors to stderr; `--color auto` (the default)
//! colours only on a terminal and never with `NO_COLOR` set.
//!
//! A closed output pipe (`shmlock demo | head -1`) ends the command quietly with status 0:
//! the reader asked for no more, which is not a failure of ours (the Rust runtime ignores
//! SIGPIPE, so every write returns `EPIPE` and no write may panic: all output goes through
//! `write!` and `?`, never `print!`). Any other output error (`> /dev/full`) is one
//! sentence on stderr and status 1.
//!
//! `shmlock agent PATH` is an internal, scriptable process for the demo and the tests. It
//! is dispatched before the command line is parsed, so it appears nowhere: not in
//! `--help`, not in `help`, not in clap's "a similar subcommand exists" tips.

mod agent;
mod demo;
mod driver;
mod errors;
mod json;
mod reap;
mod render;
// `watch` drives the terminal with termios and signals: Unix only (on Windows it says so).
#[cfg(unix)]
mod term;
#[cfg(unix)]
mod watch;

use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use render::{ColorChoice, Paint};

#[derive(Parser)]
#[command(
    name = "shmlock",
    version,
    about = "Inspect, watch, reap and demonstrate shmlock lock files (<data>-shm)",
    after_help = "PATH is a lock file (app.db-shm) or the data file beside it (app.db).\n\
                  Exit status: 0 ok (also when a pipe reader such as `head` stops early), 1 error, 2 usage error.\n\
                  Colour: --color auto (default) colours only on a terminal, and not with NO_COLOR set.\n\n\
                  Examples:\n  shmlock demo\n  shmlock inspect app.db\n  shmlock inspect --json app.db-shm\n  \
                  shmlock watch app.db --interval 200\n  shmlock reap --json app.db"
)]
struct Cli {
    /// When to colour the output: auto (the default: on a terminal, unless NO_COLOR is
    /// set), always (the flag wins over NO_COLOR), never.
    #[arg(long, global = true, value_enum, value_name = "WHEN", default_value_t = ColorChoice::Auto,
          hide_possible_values = true, hide_default_value = true)]
    color: ColorChoice,
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
    /// Show the inspect view refreshed in place, fitted to the terminal, highlighting what
    /// changed (q or Ctrl-C quits). Not on a terminal: one snapshot per interval, appended.
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
        /// Print one JSON object (schema in README.md) instead of sentences.
        #[arg(long)]
        json: bool,
    },
    /// Run a multi-process demonstration: a writer, readers, a crash and a takeover, and a
    /// reader that holds back reclamation until it dies.
    Demo {
        /// Directory for the demo's files, kept afterwards (default: a fresh temporary
        /// directory, removed afterwards).
        #[arg(long)]
        dir: Option<PathBuf>,
    },
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
        Failure::Message(errors::operator_message(&e))
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

/// Find the lock file for a path the user gave, by the library's rule
/// ([`shmlock::resolve_lock_path`], which `shmlock::inspect` applies too): a lock file names
/// itself; a data file (or a path whose `-shm` exists) names `<path>-shm`; anything else
/// names itself, so that the library says what is wrong with it. So the CLI and the library
/// agree on every path. A path that does not exist, with no lock file beside it, is an
/// error here (the library answers "no lock file").
fn resolve(given: &Path) -> Result<Target, Failure> {
    let lock = shmlock::resolve_lock_path(given);
    let data = (lock != given).then(|| given.to_path_buf());
    if data.is_some()
        && std::fs::symlink_metadata(given).is_err()
        && std::fs::symlink_metadata(&lock).is_err()
    {
        return Err(Failure::Message(format!(
            "{}: no such file, and no lock file {} beside it; check the path",
            given.display(),
            lock.display()
        )));
    }
    Ok(Target {
        given: given.to_path_buf(),
        lock,
        data,
    })
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
        // On a terminal, fit its width (the member table drops columns rather than wrap).
        let width = std::io::IsTerminal::is_terminal(&std::io::stdout())
            .then(terminal_columns)
            .flatten();
        let text = render::view_text(target, &snapshot, &Paint::stdout(), width);
        out.write_all(text.as_bytes())?;
    }
    out.flush()?;
    Ok(())
}

/// The width of the terminal on stdout.
#[cfg(unix)]
fn terminal_columns() -> Option<usize> {
    term::size(std::os::fd::AsFd::as_fd(&std::io::stdout())).map(|(columns, _)| columns)
}

/// Unknown on Windows (the terminal code is Unix-only): the table is not fitted.
#[cfg(not(unix))]
fn terminal_columns() -> Option<usize> {
    None
}

fn main() -> ExitCode {
    // The internal agent, before clap knows of it (see the module docs).
    let mut args = std::env::args_os();
    if args.nth(1).is_some_and(|a| a == "agent") {
        let Some(path) = args.next() else {
            let _ = writeln!(io::stderr(), "shmlock: agent needs a lock file path");
            return ExitCode::from(2);
        };
        return ExitCode::from(agent::run(PathBuf::from(path)) as u8);
    }
    let cli = Cli::parse();
    render::set_color_choice(cli.color);
    let result = match cli.command {
        Command::Inspect { path, json } => resolve(&path).and_then(|t| inspect(&t, json)),
        Command::Watch {
            path,
            interval,
            count,
        } => resolve(&path).and_then(|t| watch(&t, interval, count)),
        Command::Reap { path, json } => resolve(&path).and_then(|t| reap::run(&t, json)),
        Command::Demo { dir } => demo::run(dir),
    };
    let message = match result {
        Ok(()) => return ExitCode::SUCCESS,
        Err(Failure::Output(e)) if closed_pipe(&e) => return ExitCode::SUCCESS,
        Err(Failure::Output(e)) => format!("cannot write the output: {}", output_cause(&e)),
        Err(Failure::Message(m)) => m,
    };
    let paint = Paint::stderr();
    let _ = writeln!(io::stderr(), "{} {message}", paint.red("shmlock:"));
    ExitCode::from(1)
}

#[cfg(unix)]
fn watch(target: &Target, interval: u64, count: Option<u64>) -> Result<(), Failure> {
    watch::run(target, std::time::Duration::from_millis(interval), count)
}

/// `watch` is Unix-only for now: it drives the terminal through termios and SIGWINCH.
#[cfg(not(unix))]
fn watch(_: &Target, _: u64, _: Option<u64>) -> Result<(), Failure> {
    Err(Failure::Message(
        "`shmlock watch` runs on Linux and macOS only (it drives the terminal with termios); \
         on Windows, run `shmlock inspect` (or `inspect --json`) in a loop"
            .to_string(),
    ))
}

/// Whether the reader of our output went away (`| head`): EPIPE, or on Windows
/// `ERROR_NO_DATA` (232) / `ERROR_PIPE_NOT_CONNECTED` (233).
fn closed_pipe(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::BrokenPipe
        || (cfg!(windows) && matches!(e.raw_os_error(), Some(232 | 233)))
}

/// Why our output could not be written, in words ("no space left on device").
fn output_cause(e: &io::Error) -> String {
    let text = e.to_string();
    let text = text
        .find(" (os error")
        .map_or(text.as_str(), |at| &text[..at]);
    let mut chars = text.chars();
    chars
        .next()
        .map(|c| c.to_lowercase().chain(chars).collect())
        .unwrap_or_default()
}
