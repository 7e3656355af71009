//! `shmlock agent PATH`: a scriptable process for the demo and the multi-process tests.
//!
//! It reads one command per line on stdin and answers one line on stdout, so a driver
//! synchronises with it by waiting for the answer — no sleeps. Answers start with `ok` or
//! `err <kind>`; times are `CLOCK_BOOTTIME` nanoseconds, comparable across processes.
//!
//! | command | answer |
//! |---|---|
//! | `open [LEASE_MS] [lease=MS] [floor=F]` | `ok <open-state> <member-index> <pid>` (the lease is declared with this handle's claims; claims get generations above F) |
//! | `provision [lease=MS]` | as `open`, through `ShmLock::provision_with` with provisioning on: PATH is the data file |
//! | `try_claim` | `ok <generation>` |
//! | `claim <TIMEOUT_MS>` | `ok <generation> <boottime-ns-when-claimed>` |
//! | `spawn_claim <TIMEOUT_MS>` | `ok` (a thread runs `claim`; the agent keeps serving commands) |
//! | `claim_result` | what `claim` answers, once the spawned claim returns |
//! | `heartbeat` | `ok` |
//! | `heartbeat_loop <INTERVAL_MS>` | `ok` (a thread heartbeats until the writer is released) |
//! | `heartbeat_forever <INTERVAL_MS>` | `ok <loop-id>` (a thread heartbeats the current guard until the process ends, deposed or not, counting outcomes) |
//! | `beats <LOOP_ID>` | `ok ok=<n> deposed=<n> other=<n>` |
//! | `is_current` | `ok true` / `ok false` |
//! | `release` | `ok` |
//! | `publish <V>` | `ok` |
//! | `published` | `ok <version>` |
//! | `wait_published <AFTER> <TIMEOUT_MS>` | `ok <version>` / `err timeout …` |
//! | `oldest` | `ok <version>` / `ok none` |
//! | `wait_readers_past <V> <TIMEOUT_MS>` | `ok` / `err timeout …` (through the current writer guard) |
//! | `attach` | `ok <readers-held-by-this-agent> <pinned-version>` |
//! | `detach` | `ok <readers-held-by-this-agent>` (the latest attached) |
//! | `detach_version <V>` | `ok <readers-held-by-this-agent>` (one guard pinning V) |
//! | `snapshot` | `ok owner=<pid or -> alive=<bool> generation=<g> readers=<n> members=<n> dead=<n> waiting=<n> published=<v> oldest=<v or ->` |
//! | `reap` | `ok <members-reaped> <readers-cleared>` |
//! | `now` | `ok <boottime-ns>` |
//! | `fork_child` | `ok <pid>` (a child forked without exec that sleeps in `pause()` until killed) |
//! | `kill_child <PID>` | `ok` (SIGKILLs and reaps a child from `fork_child`) |
//! | `watchers` | `ok <n>`: death-watcher threads the library logged starting in this process |
//! | `exit` | (exits 0) |
//!
//! Reliability-test commands (tests/torture.rs, tests/reliability.rs, tests/security.rs):
//!
//! | command | answer |
//! |---|---|
//! | `close` | `ok` (drops the writer, every reader and the handle) |
//! | `inspect` | `ok none` / `ok owner=<pid or -> alive=<bool> generation=<g> readers=<n> members=<n>` |
//! | `race_arm <GATE> <PATH>` | `ok` (a thread waits for a shared lock on GATE's byte 0, then opens PATH) |
//! | `race_result` | `ok <open-state>` (the armed open's outcome; the handle is kept) |
//! | `churn <SEED> <WITNESS> [LEASE_MS]` | `ok` (a thread runs random operations, logging to WITNESS, its claims declaring the lease; see [`torture`]) |
//! | `pause` | `ok open=<0/1> readers=<n> writer=<generation or 0> ops=<n> awaiting=<generation or 0>` (churn parked between operations) |
//! | `resume` | `ok` |

use std::io::{BufRead, Write};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use shmlock::{Error, Options, ReaderGuard, ShmLock, WriterGuard};

/// Nanoseconds of CLOCK_BOOTTIME, the clock the library's heartbeats use.
#[cfg(unix)]
pub fn boottime_ns() -> u64 {
    #[cfg(target_os = "linux")]
    let clock = nix::time::ClockId::CLOCK_BOOTTIME;
    #[cfg(not(target_os = "linux"))]
    let clock = nix::time::ClockId::CLOCK_MONOTONIC;
    let ts = nix::time::clock_gettime(clock).expect("the boot clock exists");
    ts.tv_sec() as u64 * 1_000_000_000 + ts.tv_nsec() as u64
}

/// Nanoseconds since boot (GetTickCount64), the clock the library's heartbeats use.
#[cfg(windows)]
pub fn boottime_ns() -> u64 {
    // SAFETY: no preconditions.
    let ms = unsafe { windows_sys::Win32::System::SystemInformation::GetTickCount64() };
    ms * 1_000_000
}

fn error_kind(e: &Error) -> &'static str {
    match e {
        Error::WriterBusy { .. } => "busy",
        Error::Deposed { .. } => "deposed",
        Error::AlreadyWriter => "already_writer",
        Error::VersionNotIncreasing { .. } => "version_not_increasing",
        Error::VersionTooLarge { .. } => "version_too_large",
        Error::Timeout { .. } | Error::ClaimTimeout { .. } => "timeout",
        Error::ProvisioningDisabled { .. } => "provisioning_disabled",
        Error::ProvisionNotPermitted { .. } => "provision_not_permitted",
        Error::NoDataFile { .. } => "no_data_file",
        Error::DataPathIsLockFile { .. } => "data_path_is_lock_file",
        Error::TooManyReaders { .. } => "too_many_readers",
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

/// Counts the library's log records that say a death watcher started (`watchers`). The
/// agent prints no log: its stdout is the command channel, and the tests read stderr.
struct WatcherCounter;

static WATCHERS_STARTED: AtomicU64 = AtomicU64::new(0);

impl log::Log for WatcherCounter {
    fn enabled(&self, metadata: &log::Metadata) -> bool {
        metadata.target().starts_with("shmlock")
    }

    fn log(&self, record: &log::Record) {
        if record.target() == "shmlock::watch"
            || record.args().to_string().contains("death watcher")
        {
            WATCHERS_STARTED.fetch_add(1, Ordering::SeqCst);
        }
    }

    fn flush(&self) {}
}

/// Outcomes of one `heartbeat_forever` loop.
#[derive(Default)]
struct Beats {
    ok: AtomicU64,
    deposed: AtomicU64,
    other: AtomicU64,
}

struct State {
    path: PathBuf,
    lock: Option<ShmLock>,
    writer: Option<Arc<WriterGuard>>,
    /// Earlier guards of this process (deposed, usually) that a loop may still use.
    old_writers: Vec<Arc<WriterGuard>>,
    heartbeating: Arc<AtomicBool>,
    heartbeat_thread: Option<JoinHandle<()>>,
    beat_loops: Vec<Arc<Beats>>,
    spawned_claim: Option<JoinHandle<Result<(WriterGuard, u64), String>>>,
    readers: Vec<ReaderGuard>,
    #[cfg(unix)]
    children: Vec<nix::unistd::Pid>,
    #[cfg(unix)]
    reliability: torture::Commands,
}

fn fail(e: Error) -> String {
    format!("err {} {}", error_kind(&e), e)
}

impl State {
    fn lock(&self) -> Result<&ShmLock, String> {
        self.lock.as_ref().ok_or_else(|| "err not_open".to_string())
    }

    fn writer(&self) -> Result<&Arc<WriterGuard>, String> {
        self.writer
            .as_ref()
            .ok_or_else(|| "err no_writer".to_string())
    }

    /// Keep `guard` as the current writer; an earlier one stays alive for its loops.
    fn set_writer(&mut self, guard: WriterGuard) {
        if let Some(old) = self.writer.replace(Arc::new(guard)) {
            self.old_writers.push(old);
        }
    }

    fn run(&mut self, line: &str) -> Result<String, String> {
        let mut words = line.split_whitespace();
        let cmd = words.next().unwrap_or("");
        let arg = |w: Option<&str>| -> Result<u64, String> {
            w.and_then(|a| a.parse().ok())
                .ok_or_else(|| format!("err usage {cmd} needs a number"))
        };
        match cmd {
            "open" | "provision" => {
                let mut options = Options::new();
                for word in words {
                    let (key, value) = word.split_once('=').unwrap_or(("lease", word));
                    let value = arg(Some(value))?;
                    options = match key {
                        "lease" => options.lease(Duration::from_millis(value)),
                        "floor" => options.generation_floor(value),
                        _ => return Err(format!("err usage open: unknown option {key:?}")),
                    };
                }
                let lock = if cmd == "provision" {
                    shmlock::set_provisioning_enabled(true);
                    ShmLock::provision_with(&self.path, &options)
                } else {
                    ShmLock::open_with(&self.path, &options)
                }
                .map_err(fail)?;
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
                self.set_writer(guard);
                Ok(answer)
            }
            "spawn_claim" => {
                let lock = self.lock()?.clone();
                let timeout = Duration::from_millis(arg(words.next())?);
                if self.spawned_claim.is_some() {
                    return Err("err usage a spawned claim is pending".into());
                }
                self.spawned_claim = Some(std::thread::spawn(move || {
                    let guard = lock.claim_writer(timeout).map_err(fail)?;
                    Ok((guard, boottime_ns()))
                }));
                Ok("ok".into())
            }
            "claim_result" => {
                let claim = self.spawned_claim.take().ok_or("err no_spawned_claim")?;
                let (guard, at) = claim
                    .join()
                    .map_err(|_| "err other the claim panicked".to_string())??;
                let answer = format!("ok {} {at}", guard.generation());
                self.set_writer(guard);
                Ok(answer)
            }
            "heartbeat" => {
                self.writer()?.heartbeat().map_err(fail)?;
                Ok("ok".into())
            }
            "heartbeat_loop" => {
                let w = Arc::clone(self.writer()?);
                let interval = Duration::from_millis(arg(words.next())?);
                let running = Arc::clone(&self.heartbeating);
                running.store(true, Ordering::SeqCst);
                self.heartbeat_thread = Some(std::thread::spawn(move || {
                    while running.load(Ordering::SeqCst) && w.heartbeat().is_ok() {
                        std::thread::sleep(interval);
                    }
                }));
                Ok("ok".into())
            }
            "heartbeat_forever" => {
                let w = Arc::clone(self.writer()?);
                let interval = Duration::from_millis(arg(words.next())?);
                let beats = Arc::new(Beats::default());
                let counts = Arc::clone(&beats);
                std::thread::spawn(move || loop {
                    match w.heartbeat() {
                        Ok(()) => &counts.ok,
                        Err(Error::Deposed { .. }) => &counts.deposed,
                        Err(_) => &counts.other,
                    }
                    .fetch_add(1, Ordering::SeqCst);
                    std::thread::sleep(interval);
                });
                self.beat_loops.push(beats);
                Ok(format!("ok {}", self.beat_loops.len() - 1))
            }
            "beats" => {
                let id = arg(words.next())? as usize;
                let b = self.beat_loops.get(id).ok_or("err no_such_loop")?;
                Ok(format!(
                    "ok ok={} deposed={} other={}",
                    b.ok.load(Ordering::SeqCst),
                    b.deposed.load(Ordering::SeqCst),
                    b.other.load(Ordering::SeqCst)
                ))
            }
            "is_current" => Ok(format!("ok {}", self.writer()?.is_current())),
            "release" => {
                self.heartbeating.store(false, Ordering::SeqCst);
                // The heartbeat thread stops within one interval: the release answered
                // below has happened when the answer is read.
                if let Some(beating) = self.heartbeat_thread.take() {
                    let _ = beating.join();
                }
                let w = self.writer.take().ok_or("err no_writer")?;
                match Arc::try_unwrap(w) {
                    Ok(guard) => guard.release().map_err(fail)?,
                    // A `heartbeat_forever` loop still holds it: the role stays held
                    // until the process ends.
                    Err(shared) => {
                        return Err(if shared.is_current() {
                            "err other a heartbeat_forever loop holds this guard".to_string()
                        } else {
                            fail(Error::Deposed {
                                generation: shared.generation(),
                            })
                        });
                    }
                }
                Ok("ok".into())
            }
            "publish" => {
                let version = arg(words.next())?;
                self.writer()?.publish(version).map_err(fail)?;
                Ok("ok".into())
            }
            "published" => Ok(format!("ok {}", self.lock()?.published())),
            "wait_published" => {
                let after = arg(words.next())?;
                let timeout = Duration::from_millis(arg(words.next())?);
                let version = self.lock()?.wait_published(after, timeout).map_err(fail)?;
                Ok(format!("ok {version}"))
            }
            "oldest" => Ok(match self.lock()?.oldest_pinned() {
                Some(v) => format!("ok {v}"),
                None => "ok none".into(),
            }),
            "wait_readers_past" => {
                let version = arg(words.next())?;
                let timeout = Duration::from_millis(arg(words.next())?);
                self.writer()?
                    .wait_readers_past(version, timeout)
                    .map_err(fail)?;
                Ok("ok".into())
            }
            "attach" => {
                let guard = self.lock()?.attach_reader().map_err(fail)?;
                let version = guard.version();
                self.readers.push(guard);
                Ok(format!("ok {} {version}", self.readers.len()))
            }
            "detach" => {
                let guard = self.readers.pop().ok_or("err no_reader")?;
                guard.detach().map_err(fail)?;
                Ok(format!("ok {}", self.readers.len()))
            }
            "detach_version" => {
                let version = arg(words.next())?;
                let at = self
                    .readers
                    .iter()
                    .position(|g| g.version() == version)
                    .ok_or("err no_reader")?;
                self.readers.remove(at).detach().map_err(fail)?;
                Ok(format!("ok {}", self.readers.len()))
            }
            "snapshot" => {
                let s = self.lock()?.snapshot();
                let (owner, alive) = match &s.owner {
                    Some(o) => (o.pid.to_string(), o.alive),
                    None => ("-".into(), false),
                };
                Ok(format!(
                    "ok owner={owner} alive={alive} generation={} readers={} members={} dead={} waiting={} published={} oldest={}",
                    s.generation,
                    s.reader_count,
                    s.members.len(),
                    s.dead_members().count(),
                    s.waiting_claimants,
                    s.published,
                    s.oldest_pinned.map_or("-".to_string(), |v| v.to_string())
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
            #[cfg(unix)]
            "fork_child" => {
                let child = fork_sleeper().map_err(|e| format!("err io fork: {e}"))?;
                self.children.push(child);
                Ok(format!("ok {child}"))
            }
            #[cfg(unix)]
            "kill_child" => {
                let pid = nix::unistd::Pid::from_raw(arg(words.next())? as i32);
                let at = self
                    .children
                    .iter()
                    .position(|&c| c == pid)
                    .ok_or("err no_such_child")?;
                self.children.remove(at);
                let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
                nix::sys::wait::waitpid(pid, None).map_err(|e| format!("err io waitpid: {e}"))?;
                Ok("ok".into())
            }
            "close" => {
                self.heartbeating.store(false, Ordering::SeqCst);
                if let Some(beating) = self.heartbeat_thread.take() {
                    let _ = beating.join();
                }
                self.writer = None;
                self.readers.clear();
                self.lock = None;
                Ok("ok".into())
            }
            "inspect" => Ok(match shmlock::inspect(&self.path).map_err(fail)? {
                None => "ok none".into(),
                Some(s) => {
                    let (owner, alive) = match &s.owner {
                        Some(o) => (o.pid.to_string(), o.alive),
                        None => ("-".into(), false),
                    };
                    format!(
                        "ok owner={owner} alive={alive} generation={} readers={} members={}",
                        s.generation,
                        s.reader_count,
                        s.members.len()
                    )
                }
            }),
            "watchers" => Ok(format!("ok {}", WATCHERS_STARTED.load(Ordering::SeqCst))),
            "exit" => std::process::exit(0),
            #[cfg(unix)]
            _ => torture::run(self, cmd, words),
            // The reliability commands (fork, POSIX-lock witnesses) are Unix-only.
            #[cfg(not(unix))]
            _ => Err(format!("err unknown_command {cmd}")),
        }
    }
}

#[cfg(unix)]
/// Fork a child that runs no Rust after the fork: it points its standard streams at
/// /dev/null (so the driver's pipes see end-of-file when the agent dies) and sleeps in
/// `pause()` until it is killed — a pre-fork worker that never execs. Returns once the
/// child has run its fork hooks (the library's included): it says so through a pipe.
fn fork_sleeper() -> nix::Result<nix::unistd::Pid> {
    use nix::libc;
    use std::os::fd::AsRawFd;
    let (ready_read, ready_write) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
    // SAFETY: the child calls only async-signal-safe functions (write, open, dup2, close,
    // pause) with valid descriptors, a one-byte buffer and a NUL-terminated literal, and
    // never returns from the loop. The fork hooks (the library's too) ran before `fork`
    // returned in the child, so its one byte says they are done.
    match unsafe { nix::unistd::fork() }? {
        nix::unistd::ForkResult::Child => unsafe {
            let null = libc::open(c"/dev/null".as_ptr(), libc::O_RDWR);
            if null >= 0 {
                libc::dup2(null, 0);
                libc::dup2(null, 1);
                libc::dup2(null, 2);
                libc::close(null);
            }
            libc::write(ready_write.as_raw_fd(), b"r".as_ptr().cast(), 1);
            libc::close(ready_write.as_raw_fd());
            libc::close(ready_read.as_raw_fd());
            loop {
                libc::pause();
            }
        },
        nix::unistd::ForkResult::Parent { child } => {
            drop(ready_write);
            let mut byte = [0u8; 1];
            loop {
                match nix::unistd::read(&ready_read, &mut byte) {
                    Err(nix::errno::Errno::EINTR) => continue,
                    Ok(1) => return Ok(child),
                    Ok(_) => return Err(nix::errno::Errno::EPIPE),
                    Err(e) => return Err(e),
                }
            }
        }
    }
}

/// Serve commands from stdin until `exit` or end of input.
pub fn run(path: PathBuf) -> i32 {
    // A demo that handles its own signals blocks them before it starts us, and the mask is
    // inherited: an agent dies of Ctrl-C and SIGTERM as any process does.
    #[cfg(unix)]
    let _ = nix::sys::signal::SigSet::all().thread_unblock();
    if log::set_logger(&WatcherCounter).is_ok() {
        log::set_max_level(log::LevelFilter::Debug);
    }
    let mut state = State {
        path,
        lock: None,
        writer: None,
        old_writers: Vec::new(),
        heartbeating: Arc::new(AtomicBool::new(false)),
        heartbeat_thread: None,
        beat_loops: Vec::new(),
        spawned_claim: None,
        readers: Vec::new(),
        #[cfg(unix)]
        children: Vec::new(),
        #[cfg(unix)]
        reliability: torture::Commands::default(),
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
    #[cfg(unix)]
    for child in state.children.drain(..) {
        let _ = nix::sys::signal::kill(child, nix::sys::signal::Signal::SIGKILL);
        let _ = nix::sys::wait::waitpid(child, None);
    }
    0
}

/// Commands for the reliability tests: a churning worker for the crash torture, an armed
/// open for the open race, `close` and `inspect`.
///
/// # The churn worker and its witness
///
/// `churn SEED WITNESS` starts a thread that runs random operations forever (open,
/// attach, detach, try_claim, claim with a short timeout, heartbeat, release, reap,
/// snapshot, close), from a seeded xorshift generator, until the process is killed. It
/// reports what it sees to the WITNESS file, in fixed 128-byte records appended with one
/// `write(2)` each (`O_APPEND`, so records never interleave or straddle a page of the
/// file):
///
/// * `OPEN <state> <pid>` after each open;
/// * `BEGIN <generation> <pid>` after a claim, and `END <generation> <pid>` before its
///   release — written while holding a POSIX write lock on byte 0 of the WITNESS file, which
///   the worker takes (non-blocking) right after the claim returns and drops right before it
///   calls `release`. It holds that lock exactly while it believes it owns the writer role;
/// * `LEASE <generation> <pid> <old-generation> <old-pid>` right after a claim that took
///   the role from a live owner whose declared lease had expired (`churn SEED WITNESS
///   LEASE_MS` declares one): that owner may still believe it owns until it next looks;
/// * `OVERLAP <generation> <pid> <holder-pid>` when the witness lock was held by someone
///   else right after a claim; the worker then waits for the lock (between operations, so
///   it can still be paused) and says `BEGIN` once it has it. The checker accepts this only
///   when the holder is an owner a `LEASE` record deposed, and nothing else;
/// * `DEPOSED <generation> <pid> …` when a heartbeat, `is_current`, a snapshot or release
///   shows the claim was deposed: the worker then drops the witness lock and the guard
///   (whose release must fail). The checker accepts it only for a claim a `LEASE` record
///   deposed; `ERROR <pid> <message>` for any other unexpected outcome.
///
/// The witness uses nothing of the library: a kernel lock on another file and a log. It is
/// a POSIX (`F_SETLK`) lock, not an OFD lock, on purpose: when a process dies the kernel
/// drops its POSIX locks while it closes the descriptor table (`filp_close`), strictly
/// before the final `fput` of the lock file that drops the process's OFD member lock. So a
/// claimant that legitimately took over a dead owner never finds the dead owner's witness
/// lock still held.
#[cfg(unix)]
mod torture {
    use std::fs::{File, OpenOptions};
    use std::io::Write;
    use std::os::fd::AsFd;
    use std::path::PathBuf;
    use std::str::SplitWhitespace;
    use std::sync::{mpsc, Arc};
    use std::thread::JoinHandle;
    use std::time::Duration;

    use nix::errno::Errno;
    use nix::fcntl::{fcntl, FcntlArg};
    use nix::libc;
    use parking_lot::{Condvar, Mutex};
    use shmlock::{Error, Options, ReaderGuard, ShmLock, Takeover, WriterGuard};

    use super::{error_kind, State};

    /// Size of one witness record, newline included.
    pub const RECORD: usize = 128;

    #[derive(Default)]
    pub struct Commands {
        race: Option<JoinHandle<Result<ShmLock, String>>>,
        churn: Option<Arc<Control>>,
    }

    #[derive(Default)]
    struct Control {
        state: Mutex<Pause>,
        changed: Condvar,
    }

    #[derive(Default)]
    struct Pause {
        wanted: bool,
        parked: bool,
        report: String,
    }

    fn fail(e: Error) -> String {
        format!("err {} {}", error_kind(&e), e)
    }

    fn path_arg(w: Option<&str>, cmd: &str) -> Result<PathBuf, String> {
        w.map(PathBuf::from)
            .ok_or_else(|| format!("err usage {cmd} needs a path"))
    }

    pub fn run(state: &mut State, cmd: &str, mut words: SplitWhitespace) -> Result<String, String> {
        match cmd {
            "race_arm" => {
                let gate = path_arg(words.next(), cmd)?;
                let path = path_arg(words.next(), cmd)?;
                let (armed, is_armed) = mpsc::channel();
                state.reliability.race = Some(std::thread::spawn(move || {
                    let gate = File::open(&gate).map_err(|e| format!("err io gate: {e}"))?;
                    let _ = armed.send(());
                    posix_or_ofd_lock(&gate, libc::F_RDLCK, Wait::OfdBlocking)
                        .map_err(|e| format!("err io gate lock: {e}"))?;
                    ShmLock::open(&path).map_err(fail)
                }));
                is_armed
                    .recv_timeout(Duration::from_secs(60))
                    .map_err(|_| "err io the armed thread did not start".to_string())?;
                Ok("ok".into())
            }
            "race_result" => {
                let race = state.reliability.race.take().ok_or("err not_armed")?;
                let lock = race
                    .join()
                    .map_err(|_| "err other the armed open panicked".to_string())??;
                let answer = format!("ok {:?}", lock.open_state());
                state.lock = Some(lock);
                Ok(answer)
            }
            "churn" => {
                let seed: u64 = words
                    .next()
                    .and_then(|w| w.parse().ok())
                    .ok_or("err usage churn needs a seed")?;
                let witness = path_arg(words.next(), cmd)?;
                let lease = match words.next() {
                    Some(ms) => Some(Duration::from_millis(
                        ms.parse().map_err(|_| "err usage churn's lease is in ms")?,
                    )),
                    None => None,
                };
                let witness = OpenOptions::new()
                    .append(true)
                    .open(&witness)
                    .map_err(|e| format!("err io witness: {e}"))?;
                let control = Arc::new(Control::default());
                let path = state.path.clone();
                let theirs = Arc::clone(&control);
                std::thread::spawn(move || churn(path, lease, seed, witness, theirs));
                state.reliability.churn = Some(control);
                Ok("ok".into())
            }
            "pause" => {
                let control = state.reliability.churn.as_ref().ok_or("err not_churning")?;
                let mut pause = control.state.lock();
                pause.wanted = true;
                control.changed.notify_all();
                while !pause.parked {
                    control.changed.wait(&mut pause);
                }
                Ok(pause.report.clone())
            }
            "resume" => {
                let control = state.reliability.churn.as_ref().ok_or("err not_churning")?;
                control.state.lock().wanted = false;
                control.changed.notify_all();
                Ok("ok".into())
            }
            _ => Err(format!("err usage unknown command {cmd:?}")),
        }
    }

    enum Wait {
        PosixTry,
        OfdBlocking,
    }

    /// Lock (or unlock, with `F_UNLCK`) byte 0 of `file`. `Ok(false)`: held by another.
    fn posix_or_ofd_lock(file: &File, l_type: libc::c_int, wait: Wait) -> nix::Result<bool> {
        // SAFETY: `flock` is a plain C struct of integers; all-zero is a valid value.
        let mut f: libc::flock = unsafe { std::mem::zeroed() };
        f.l_type = l_type as libc::c_short;
        f.l_whence = libc::SEEK_SET as libc::c_short;
        f.l_start = 0;
        f.l_len = 1;
        loop {
            let result = match wait {
                Wait::PosixTry => fcntl(file.as_fd(), FcntlArg::F_SETLK(&f)),
                Wait::OfdBlocking => fcntl(file.as_fd(), FcntlArg::F_OFD_SETLKW(&f)),
            };
            return match result {
                Ok(_) => Ok(true),
                Err(Errno::EAGAIN) | Err(Errno::EACCES) => Ok(false),
                Err(Errno::EINTR) => continue,
                Err(e) => Err(e),
            };
        }
    }

    /// The pid holding a POSIX lock on byte 0 of `file` (0: none, or unknown).
    fn posix_holder(file: &File) -> i32 {
        // SAFETY: as in `posix_or_ofd_lock`.
        let mut f: libc::flock = unsafe { std::mem::zeroed() };
        f.l_type = libc::F_WRLCK as libc::c_short;
        f.l_whence = libc::SEEK_SET as libc::c_short;
        f.l_len = 1;
        match fcntl(file.as_fd(), FcntlArg::F_GETLK(&mut f)) {
            Ok(_) if f.l_type != libc::F_UNLCK as libc::c_short => f.l_pid,
            _ => 0,
        }
    }

    struct Worker {
        path: PathBuf,
        /// The lease its claims declare (`churn SEED WITNESS LEASE_MS`).
        lease: Option<Duration>,
        rng: u64,
        pid: u32,
        ops: u64,
        witness: File,
        lock: Option<ShmLock>,
        writer: Option<WriterGuard>,
        /// A claim that took the role while another process still holds the witness lock
        /// (a lease takeover whose victim has not noticed yet): it waits for the lock,
        /// doing nothing else, before it says `BEGIN`.
        awaiting: Option<WriterGuard>,
        readers: Vec<ReaderGuard>,
    }

    fn churn(
        path: PathBuf,
        lease: Option<Duration>,
        seed: u64,
        witness: File,
        control: Arc<Control>,
    ) {
        let mut w = Worker {
            path,
            lease,
            rng: seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1,
            pid: std::process::id(),
            ops: 0,
            witness,
            lock: None,
            writer: None,
            awaiting: None,
            readers: Vec::new(),
        };
        loop {
            {
                let mut pause = control.state.lock();
                if pause.wanted {
                    pause.report = format!(
                        "ok open={} readers={} writer={} ops={} awaiting={}",
                        w.lock.is_some() as u8,
                        w.readers.len(),
                        w.writer.as_ref().map_or(0, |g| g.generation()),
                        w.ops,
                        w.awaiting.as_ref().map_or(0, |g| g.generation()),
                    );
                    pause.parked = true;
                    control.changed.notify_all();
                    while pause.wanted {
                        control.changed.wait(&mut pause);
                    }
                    pause.parked = false;
                }
            }
            w.step();
            w.ops += 1;
            // Pace the churn so that several churners share a small machine with the
            // test that kills them; a kill may land in this pause too.
            if w.next() % 8 == 0 {
                std::thread::sleep(Duration::from_micros(w.next() % 200));
            }
        }
    }

    impl Worker {
        fn next(&mut self) -> u64 {
            // xorshift64*
            self.rng ^= self.rng >> 12;
            self.rng ^= self.rng << 25;
            self.rng ^= self.rng >> 27;
            self.rng.wrapping_mul(0x2545_f491_4f6c_dd1d)
        }

        fn record(&mut self, text: &str) {
            let mut buf = text.as_bytes()[..text.len().min(RECORD - 1)].to_vec();
            for b in &mut buf {
                if *b == b'\n' {
                    *b = b' ';
                }
            }
            buf.resize(RECORD - 1, b' ');
            buf.push(b'\n');
            if let Err(e) = self.witness.write_all(&buf) {
                eprintln!("agent {}: cannot write the witness log: {e}", self.pid);
                std::process::exit(3);
            }
        }

        fn error(&mut self, what: &str, e: impl std::fmt::Display) {
            let text = format!("ERROR {} {what}: {e}", self.pid);
            self.record(&text);
        }

        fn step(&mut self) {
            if self.awaiting.is_some() {
                self.await_witness();
                return;
            }
            let Some(lock) = self.lock.clone() else {
                let mut options = Options::new();
                if let Some(lease) = self.lease {
                    options = options.lease(lease);
                }
                match ShmLock::open_with(&self.path, &options) {
                    Ok(lock) => {
                        let text = format!("OPEN {:?} {}", lock.open_state(), self.pid);
                        self.record(&text);
                        self.lock = Some(lock);
                    }
                    Err(e) => self.error("open", e),
                }
                return;
            };
            match self.next() % 100 {
                0..=19 if self.readers.len() < 4 => match lock.attach_reader() {
                    Ok(g) => self.readers.push(g),
                    Err(e) => self.error("attach", e),
                },
                0..=37 => {
                    if let Some(g) = self.readers.pop() {
                        if let Err(e) = g.detach() {
                            self.error("detach", e);
                        }
                    }
                }
                38..=57 if self.writer.is_none() => {
                    let claimed = if self.next() % 2 == 0 {
                        lock.try_claim_writer()
                    } else {
                        lock.claim_writer(Duration::from_micros(self.next() % 3000))
                    };
                    match claimed {
                        Ok(guard) => self.begin(guard),
                        Err(Error::WriterBusy { .. } | Error::ClaimTimeout { .. }) => {}
                        Err(e) => self.error("claim", e),
                    }
                }
                38..=72 => {
                    if let Some(g) = &self.writer {
                        let beat = g.heartbeat();
                        let current = g.is_current();
                        if beat.is_err() || !current {
                            self.deposed(&format!("heartbeat={beat:?} current={current}"));
                        }
                    }
                }
                73..=75 => self.end(),
                76..=87 => {}
                88..=91 => {
                    if let Err(e) = lock.reap() {
                        self.error("reap", e);
                    }
                }
                92..=95 => {
                    let s = lock.snapshot();
                    if let Some(g) = &self.writer {
                        let ok = s
                            .owner
                            .as_ref()
                            .is_some_and(|o| o.alive && o.generation == g.generation());
                        // Once the page names another owner this claim can never be
                        // current again: deposed (by a lease), unless it still says so.
                        if !ok && g.is_current() {
                            let text = format!("ERROR {} snapshot owner {:?}", self.pid, s.owner);
                            self.record(&text);
                        } else if !ok {
                            self.deposed("snapshot names another owner");
                        }
                    }
                    if s.reader_count < self.readers.len() as u64 {
                        let text = format!(
                            "ERROR {} snapshot reader_count {} < own {}",
                            self.pid,
                            s.reader_count,
                            self.readers.len()
                        );
                        self.record(&text);
                    }
                }
                _ => {
                    self.end();
                    self.readers.clear();
                    self.lock = None;
                }
            }
        }

        /// Just claimed: take the witness lock, then say so. A lease takeover says so
        /// first (`LEASE new-generation pid old-generation old-pid`). The lock must be free,
        /// unless a process deposed by a lease has not noticed yet: then say whom it waits
        /// for (`OVERLAP generation pid holder`, which the checker accepts only for a
        /// holder named by a `LEASE` record) and wait for the lock, parkable, before
        /// `BEGIN`.
        fn begin(&mut self, guard: WriterGuard) {
            let generation = guard.generation();
            if let Some(Takeover::LeaseExpired {
                pid,
                generation: old,
                ..
            }) = guard.takeover()
            {
                let text = format!("LEASE {generation} {} {old} {pid}", self.pid);
                self.record(&text);
            }
            match posix_or_ofd_lock(&self.witness, libc::F_WRLCK, Wait::PosixTry) {
                Ok(true) => self.began(guard),
                Ok(false) => {
                    let holder = posix_holder(&self.witness);
                    let text = format!("OVERLAP {generation} {} {holder}", self.pid);
                    self.record(&text);
                    self.awaiting = Some(guard);
                }
                Err(e) => {
                    self.error("witness lock", e);
                    self.began(guard);
                }
            }
        }

        /// Holding the witness lock: say `BEGIN`, and own.
        fn began(&mut self, guard: WriterGuard) {
            let text = format!("BEGIN {} {}", guard.generation(), self.pid);
            self.record(&text);
            self.writer = Some(guard);
        }

        /// Waiting for the witness lock after a claim: take it if it is free now. A claim
        /// deposed meanwhile gives the lock (and the role) back without owning.
        fn await_witness(&mut self) {
            match posix_or_ofd_lock(&self.witness, libc::F_WRLCK, Wait::PosixTry) {
                Ok(true) => {
                    let guard = self.awaiting.take().expect("awaiting");
                    if guard.is_current() {
                        self.began(guard);
                    } else {
                        let text = format!(
                            "DEPOSED {} {} before it began",
                            guard.generation(),
                            self.pid
                        );
                        self.record(&text);
                        self.unlock_witness();
                        if guard.release().is_ok() {
                            self.error("release", "a deposed claim released");
                        }
                    }
                }
                Ok(false) => std::thread::sleep(Duration::from_micros(100)),
                Err(e) => self.error("witness lock", e),
            }
        }

        /// The owning claim learnt it was deposed: say so, stop believing it owns (drop the
        /// witness lock), and check its release changes nothing.
        fn deposed(&mut self, how: &str) {
            let Some(guard) = self.writer.take() else {
                return;
            };
            let text = format!("DEPOSED {} {} {how}", guard.generation(), self.pid);
            self.record(&text);
            self.unlock_witness();
            if guard.release().is_ok() {
                self.error("release", "a deposed claim released");
            }
        }

        fn unlock_witness(&mut self) {
            if let Err(e) = posix_or_ofd_lock(&self.witness, libc::F_UNLCK, Wait::PosixTry) {
                self.error("witness unlock", e);
            }
        }

        /// About to release: say so, drop the witness lock, then release.
        fn end(&mut self) {
            let Some(guard) = self.writer.take() else {
                return;
            };
            let generation = guard.generation();
            let text = format!("END {generation} {}", self.pid);
            self.record(&text);
            self.unlock_witness();
            if let Err(e) = guard.release() {
                let text = format!("DEPOSED {generation} {} release: {e}", self.pid);
                self.record(&text);
            }
        }
    }
}
