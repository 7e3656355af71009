//! `shmlock agent PATH`: a scriptable process for the demo and the multi-process tests.
//!
//! It reads one command per line on stdin and answers one line on stdout, so a driver
//! synchronises with it by waiting for the answer — no sleeps. Answers start with `ok` or
//! `err <kind>`; times are `CLOCK_BOOTTIME` nanoseconds, comparable across processes.
//!
//! | command | answer |
//! |---|---|
//! | `open [LEASE_MS]` | `ok <open-state> <member-index> <pid>` |
//! | `try_claim` | `ok <generation>` |
//! | `claim <TIMEOUT_MS>` | `ok <generation> <boottime-ns-when-claimed>` |
//! | `heartbeat` | `ok` |
//! | `heartbeat_loop <INTERVAL_MS>` | `ok` (a thread heartbeats until the writer is released) |
//! | `is_current` | `ok true` / `ok false` |
//! | `release` | `ok` |
//! | `attach` / `detach` | `ok <readers-held-by-this-agent>` |
//! | `snapshot` | `ok owner=<pid or -> alive=<bool> generation=<g> readers=<n> members=<n> dead=<n>` |
//! | `reap` | `ok <members-reaped> <readers-cleared>` |
//! | `now` | `ok <boottime-ns>` |
//! | `exit` | (exits 0) |

use std::io::{BufRead, Write};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use shmlock::{Error, Options, ReaderGuard, ShmLock, WriterGuard};

/// Nanoseconds of CLOCK_BOOTTIME, the clock the library's heartbeats use.
pub fn boottime_ns() -> u64 {
    let ts = nix::time::clock_gettime(nix::time::ClockId::CLOCK_BOOTTIME)
        .expect("CLOCK_BOOTTIME exists on Linux");
    ts.tv_sec() as u64 * 1_000_000_000 + ts.tv_nsec() as u64
}

fn error_kind(e: &Error) -> &'static str {
    match e {
        Error::WriterBusy { .. } => "busy",
        Error::Deposed { .. } => "deposed",
        Error::AlreadyWriter => "already_writer",
        Error::TooManyProcesses { .. } => "too_many_processes",
        Error::Corrupt { .. } => "corrupt",
        Error::IncompatibleVersion { .. } => "incompatible_version",
        Error::UnsupportedFilesystem { .. } => "unsupported_filesystem",
        Error::NotARegularFile { .. } => "not_a_regular_file",
        Error::ForkedHandle => "forked_handle",
        Error::Io { .. } => "io",
        _ => "other",
    }
}

struct State {
    path: PathBuf,
    lock: Option<ShmLock>,
    writer: Option<Arc<WriterGuard>>,
    heartbeating: Arc<AtomicBool>,
    readers: Vec<ReaderGuard>,
}

impl State {
    fn lock(&self) -> Result<&ShmLock, String> {
        self.lock.as_ref().ok_or_else(|| "err not_open".to_string())
    }

    fn run(&mut self, line: &str) -> Result<String, String> {
        let mut words = line.split_whitespace();
        let cmd = words.next().unwrap_or("");
        let arg = |w: Option<&str>| -> Result<u64, String> {
            w.and_then(|a| a.parse().ok())
                .ok_or_else(|| format!("err usage {cmd} needs a number"))
        };
        let fail = |e: Error| format!("err {} {}", error_kind(&e), e);
        match cmd {
            "open" => {
                let mut options = Options::new();
                if let Some(ms) = words.next() {
                    options = options.lease(Duration::from_millis(arg(Some(ms))?));
                }
                let lock = ShmLock::open_with(&self.path, &options).map_err(fail)?;
                let answer = format!(
                    "ok {:?} {} {}",
                    lock.open_state(),
                    lock.member_index(),
                    std::process::id()
                );
                self.lock = Some(lock);
                Ok(answer)
            }
            "try_claim" | "claim" => {
                let lock = self.lock()?;
                let guard = if cmd == "claim" {
                    let ms = arg(words.next())?;
                    lock.claim_writer(Duration::from_millis(ms))
                } else {
                    lock.try_claim_writer()
                }
                .map_err(fail)?;
                let at = boottime_ns();
                let answer = format!("ok {} {at}", guard.generation());
                self.writer = Some(Arc::new(guard));
                Ok(answer)
            }
            "heartbeat" => {
                let w = self.writer.as_ref().ok_or("err no_writer")?;
                w.heartbeat().map_err(fail)?;
                Ok("ok".into())
            }
            "heartbeat_loop" => {
                let w = Arc::clone(self.writer.as_ref().ok_or("err no_writer")?);
                let interval = Duration::from_millis(arg(words.next())?);
                let running = Arc::clone(&self.heartbeating);
                running.store(true, Ordering::SeqCst);
                std::thread::spawn(move || {
                    while running.load(Ordering::SeqCst) && w.heartbeat().is_ok() {
                        std::thread::sleep(interval);
                    }
                });
                Ok("ok".into())
            }
            "is_current" => {
                let w = self.writer.as_ref().ok_or("err no_writer")?;
                Ok(format!("ok {}", w.is_current()))
            }
            "release" => {
                self.heartbeating.store(false, Ordering::SeqCst);
                let w = self.writer.take().ok_or("err no_writer")?;
                match Arc::try_unwrap(w) {
                    Ok(guard) => guard.release().map_err(fail)?,
                    // The heartbeat thread still holds it: it stops within one interval
                    // and the last clone's drop releases.
                    Err(shared) => {
                        if !shared.is_current() {
                            return Err(fail(Error::Deposed {
                                generation: shared.generation(),
                            }));
                        }
                    }
                }
                Ok("ok".into())
            }
            "attach" => {
                let guard = self.lock()?.attach_reader().map_err(fail)?;
                self.readers.push(guard);
                Ok(format!("ok {}", self.readers.len()))
            }
            "detach" => {
                let guard = self.readers.pop().ok_or("err no_reader")?;
                guard.detach().map_err(fail)?;
                Ok(format!("ok {}", self.readers.len()))
            }
            "snapshot" => {
                let s = self.lock()?.snapshot();
                let (owner, alive) = match &s.owner {
                    Some(o) => (o.pid.to_string(), o.alive),
                    None => ("-".into(), false),
                };
                Ok(format!(
                    "ok owner={owner} alive={alive} generation={} readers={} members={} dead={}",
                    s.generation,
                    s.reader_count,
                    s.members.len(),
                    s.dead_members().count()
                ))
            }
            "reap" => {
                let report = self.lock()?.reap().map_err(fail)?;
                Ok(format!(
                    "ok {} {}",
                    report.members.len(),
                    report.readers_cleared()
                ))
            }
            "now" => Ok(format!("ok {}", boottime_ns())),
            "exit" => std::process::exit(0),
            _ => Err(format!("err usage unknown command {cmd:?}")),
        }
    }
}

/// Serve commands from stdin until `exit` or end of input.
pub fn run(path: PathBuf) -> i32 {
    let mut state = State {
        path,
        lock: None,
        writer: None,
        heartbeating: Arc::new(AtomicBool::new(false)),
        readers: Vec::new(),
    };
    let stdin = std::io::stdin();
    let mut stdout = std::io::stdout();
    for line in stdin.lock().lines() {
        let Ok(line) = line else { break };
        let answer = state.run(line.trim()).unwrap_or_else(|e| e);
        if writeln!(stdout, "{answer}")
            .and_then(|_| stdout.flush())
            .is_err()
        {
            break;
        }
    }
    0
}
