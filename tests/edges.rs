//! The edges of format 2 (issue 14): the fork hook, environments that hide facts, values
//! at their limits, paths. Each test is named after the failure it pins and runs real
//! processes: the test binary re-executes itself (`current_exe()`, role in [`ROLE_ENV`],
//! filter `edges_worker_entry --exact`), so no other binary is needed.
//!
//! Forked children that must outlive their parent (pre-fork workers) block reading their
//! standard input, a pipe whose only writer is the harness: they exit when the harness
//! drops it, and are killed by pid as well.

// Unix only: fork, a hidden /proc (mount namespaces), pid reuse and Unix symlinks and modes;
// the paths and limits that apply to Windows run in tests/processes.rs, under wine too.
#![cfg(unix)]

use std::io::{BufRead, BufReader};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use nix::libc;
use shmlock::{Error, ErrorKind, OpenState, Options, ShmLock};

const ROLE_ENV: &str = "SHMLOCK_EDGES_ROLE";
const DIR_ENV: &str = "SHMLOCK_EDGES_DIR";
const COUNT_ENV: &str = "SHMLOCK_EDGES_COUNT";

/// Byte offset of the owner word in the page (FORMAT.md, format 3: the low half of the
/// 16-byte owner/published word, on a little-endian host).
const OWNER_OFFSET: u64 = if cfg!(target_endian = "little") {
    128
} else {
    136
};

// ---------------------------------------------------------------------------------------
// Worker side.

/// Not a test of its own: the entry point of the worker processes.
#[test]
fn edges_worker_entry() {
    let Ok(role) = std::env::var(ROLE_ENV) else {
        return;
    };
    let dir = PathBuf::from(std::env::var(DIR_ENV).unwrap());
    let count: usize = std::env::var(COUNT_ENV)
        .ok()
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    match role.as_str() {
        "forker" => forker(&dir, count),
        "emfile" => fork_at_the_descriptor_limit(&dir),
        "many" => fork_with_many_files(&dir, count),
        "registry" => fork_while_the_registry_is_contended(&dir, count),
        other => panic!("unknown role {other}"),
    }
}

/// One line on standard output in one `write(2)` (atomic on a pipe; no lock of std's).
fn say(line: &str) {
    // The marker finds the line behind the test harness's own unterminated output.
    let bytes = format!("\nedges: {line}\n");
    // SAFETY: writes an owned buffer to descriptor 1; no memory is retained.
    unsafe { libc::write(1, bytes.as_ptr().cast(), bytes.len()) };
}

/// A forked child that lives on: report, then block until the harness closes our stdin.
fn live_on_as_child() -> ! {
    say(&format!("child {}", std::process::id()));
    let mut byte = 0u8;
    // SAFETY: reads into a one-byte stack buffer; `_exit` skips the parent's destructors.
    unsafe {
        while libc::read(0, (&mut byte as *mut u8).cast(), 1) > 0 {}
        libc::_exit(0)
    }
}

/// Fork; the child runs `in_child` (its read methods) while the parent waits, then lives
/// on. Takes two descriptors (a pipe) for the wait.
fn fork_child(in_child: impl FnOnce()) {
    let mut pipe = [0; 2];
    // SAFETY: pipe2 writes two descriptors into the local array.
    assert_eq!(
        unsafe { libc::pipe2(pipe.as_mut_ptr(), libc::O_CLOEXEC) },
        0
    );
    // SAFETY: the child runs the library's read methods (glibc's malloc is fork-safe, and
    // the library takes no lock another thread may have held at fork in them), writes to
    // its stdout and a pipe, and blocks on its stdin, then `_exit`s. The pipe calls use
    // our own descriptors and a one-byte local buffer.
    unsafe {
        match libc::fork() {
            0 => {
                in_child();
                libc::write(pipe[1], b"r".as_ptr().cast(), 1);
                live_on_as_child()
            }
            pid if pid > 0 => {
                // Before waiting: the harness kills it even if it hangs.
                say(&format!("forked {pid}"));
                libc::close(pipe[1]);
                let mut byte = 0u8;
                libc::read(pipe[0], (&mut byte as *mut u8).cast(), 1);
                libc::close(pipe[0]);
            }
            _ => panic!("fork failed: {}", std::io::Error::last_os_error()),
        }
    }
}

/// The end of a worker: no destructor runs (other threads are mid-operation).
fn exit_now() -> ! {
    say("done");
    // SAFETY: `_exit` ends the process at once; the kernel releases everything it held.
    unsafe { libc::_exit(0) }
}

/// Forks while other threads open, attach, claim and wait, on files opened and closed
/// over and over (so each open runs the whole open sequence).
fn forker(dir: &Path, forks: usize) {
    let held = ShmLock::open(dir.join("held")).unwrap();
    let writer = held.try_claim_writer().unwrap();
    writer.publish(5).unwrap();
    let _pinned = held.attach_reader().unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let mut threads = Vec::new();
    for k in 0..3 {
        let path = dir.join(format!("open-{k}"));
        let stop = Arc::clone(&stop);
        threads.push(std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let lock = ShmLock::open(&path).unwrap();
                let reader = lock.attach_reader().unwrap();
                drop(reader);
                drop(lock);
            }
        }));
    }
    {
        let path = dir.join("claim");
        let stop = Arc::clone(&stop);
        threads.push(std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let lock = ShmLock::open(&path).unwrap();
                let writer = lock.claim_writer(Duration::from_millis(5)).unwrap();
                writer.publish(lock.published() + 1).unwrap();
                writer.release().unwrap();
            }
        }));
    }
    {
        let path = dir.join("wait");
        let stop = Arc::clone(&stop);
        threads.push(std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let lock = ShmLock::open(&path).unwrap();
                let writer = lock.try_claim_writer().unwrap();
                let next = lock.published() + 1;
                writer.publish(next).unwrap();
                let reader = lock.attach_reader().unwrap();
                let short = Duration::from_micros(300);
                assert!(writer.wait_readers_past(next + 1, short).is_err());
                assert!(lock.wait_published(next, short).is_err());
                drop(reader);
            }
        }));
    }
    {
        let held = held.clone();
        let stop = Arc::clone(&stop);
        threads.push(std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                drop(held.attach_reader().unwrap());
            }
        }));
    }
    for _ in 0..forks {
        std::thread::sleep(Duration::from_millis(2)); // pacing, not synchronisation
        fork_child(|| {
            // Every read method of a handle, in the child: none may hang or crash, and
            // none may be more optimistic than the parent's state (it pins 5).
            let oldest = held.oldest_pinned();
            if oldest.is_none_or(|v| v > 5) || held.published() < 5 {
                say(&format!("wrong child read: oldest {oldest:?}"));
            }
            let _ = held.snapshot();
        });
    }
    drop(writer);
    exit_now()
}

/// Fork with every descriptor slot taken: the child cannot open anything.
fn fork_at_the_descriptor_limit(dir: &Path) {
    let lock = ShmLock::open(dir.join("limit")).unwrap();
    let writer = lock.try_claim_writer().unwrap();
    let _reader = lock.attach_reader().unwrap();
    // SAFETY: plain system calls on integers and a local struct.
    unsafe {
        let mut limit: libc::rlimit = std::mem::zeroed();
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit);
        limit.rlim_cur = 64.min(limit.rlim_max);
        assert_eq!(libc::setrlimit(libc::RLIMIT_NOFILE, &limit), 0);
        let mut last = -1;
        loop {
            match libc::dup(2) {
                fd if fd >= 0 => last = fd,
                _ => break,
            }
        }
        assert_eq!(
            std::io::Error::last_os_error().raw_os_error(),
            Some(libc::EMFILE)
        );
        // Room for the pipe `fork_child` makes, and no more.
        libc::close(last);
        libc::close(last - 1);
    }
    fork_child(|| {});
    drop(writer);
    exit_now()
}

/// Forks while four threads take the process-wide registry over and over (each open of a
/// file the process has open looks it up there).
fn fork_while_the_registry_is_contended(dir: &Path, forks: usize) {
    let path = dir.join("registry");
    let lock = ShmLock::open(&path).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    for _ in 0..4 {
        let path = path.clone();
        let stop = Arc::clone(&stop);
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                drop(ShmLock::open(&path).unwrap());
            }
        });
    }
    for _ in 0..forks {
        fork_child(|| {
            // The child opens the file again (as it must), through the registry the hook
            // handed over.
            drop(ShmLock::open(&path).unwrap());
        });
    }
    drop(lock);
    exit_now()
}

/// More lock files in one process than the old fixed tables held (256).
fn fork_with_many_files(dir: &Path, count: usize) {
    let mut held = Vec::new();
    for i in 0..count {
        let lock = ShmLock::open(dir.join(format!("many-{i}"))).unwrap();
        let writer = lock.try_claim_writer().unwrap();
        held.push((lock, writer));
    }
    fork_child(|| {});
    exit_now()
}

// ---------------------------------------------------------------------------------------
// Harness side.

/// A worker process, its stdout's lines, and the pids of its forked children.
struct Worker {
    process: Child,
    /// Held by the harness only: the workers' children block reading it.
    stdin: Option<ChildStdin>,
    lines: mpsc::Receiver<String>,
    /// Children that reported after their reads.
    children: Vec<i32>,
    /// Every child forked (killed on drop, even one that hung before reporting).
    forked: Vec<i32>,
    /// The worker's (and its children's) standard error: a file, so that a hung child
    /// cannot hold the test's own output open.
    stderr: PathBuf,
}

impl Worker {
    fn start(role: &str, dir: &Path, count: usize) -> Worker {
        let stderr = dir.join(format!("{role}.stderr"));
        let mut process = Command::new(std::env::current_exe().unwrap())
            .args([
                "edges_worker_entry",
                "--exact",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(ROLE_ENV, role)
            .env(DIR_ENV, dir)
            .env(COUNT_ENV, count.to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&stderr).unwrap())
            .spawn()
            .unwrap();
        let stdout = process.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Worker {
            stdin: process.stdin.take(),
            process,
            lines,
            children: Vec::new(),
            forked: Vec::new(),
            stderr,
        }
    }

    /// Read lines until the worker said "done" and `children` children reported;
    /// returns the other lines. Panics after a minute.
    fn finish(&mut self, children: usize) -> Vec<String> {
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut done = false;
        let mut other = Vec::new();
        while !done || self.children.len() < children {
            let left = deadline.saturating_duration_since(Instant::now());
            let Ok(line) = self.lines.recv_timeout(left) else {
                panic!(
                    "worker silent: done {done}, {} of {children} children reported ({} forked), lines {other:?}; stderr: {}",
                    self.children.len(),
                    self.forked.len(),
                    std::fs::read_to_string(&self.stderr).unwrap_or_default()
                )
            };
            let Some((_, line)) = line.split_once("edges: ") else {
                continue;
            };
            if line == "done" {
                done = true;
            } else if let Some(pid) = line.strip_prefix("child ") {
                self.children.push(pid.parse().unwrap());
            } else if let Some(pid) = line.strip_prefix("forked ") {
                self.forked.push(pid.parse().unwrap());
            } else {
                other.push(line.to_string());
            }
        }
        let status = self.process.wait().unwrap();
        assert!(
            status.success(),
            "worker failed: {status:?}; stderr: {}",
            std::fs::read_to_string(&self.stderr).unwrap_or_default()
        );
        other
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        drop(self.stdin.take());
        for &pid in self.children.iter().chain(&self.forked) {
            // SAFETY: kill on a pid we were told is a child of our worker.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
        let _ = self.process.kill();
        let _ = self.process.wait();
    }
}

/// What is wrong with `path` once every process that opened it is dead (its forked
/// children alive): someone still holds its dead-man switch, a member, or the role.
fn leaks(path: &Path) -> Vec<String> {
    if !path.exists() {
        return Vec::new();
    }
    let name = path.file_name().unwrap().to_string_lossy().into_owned();
    let mut found = Vec::new();
    let lock = match ShmLock::open(path) {
        Ok(lock) => lock,
        Err(e) => return vec![format!("{name}: open: {e}")],
    };
    if lock.open_state() == OpenState::Joined {
        found.push(format!(
            "{name}: a dead process's description is still open"
        ));
    }
    let snapshot = lock.snapshot();
    let others = snapshot
        .live_members()
        .filter(|m| m.index != lock.member_index())
        .count();
    if others > 0 {
        found.push(format!("{name}: {others} dead member(s) still look alive"));
    }
    if let Err(e) = lock.try_claim_writer() {
        found.push(format!("{name}: claim: {e}"));
    }
    found
}

#[test]
fn a_fork_during_open_attach_claim_and_wait_leaks_no_lock() {
    let dir = tempfile::tempdir().unwrap();
    const FORKS: usize = 40;
    for round in 0..3 {
        let round_dir = dir.path().join(format!("round-{round}"));
        std::fs::create_dir(&round_dir).unwrap();
        let mut worker = Worker::start("forker", &round_dir, FORKS);
        let said = worker.finish(FORKS);
        let mut found = Vec::new();
        for name in ["held", "open-0", "open-1", "open-2", "claim", "wait"] {
            found.extend(leaks(&round_dir.join(name)));
        }
        assert!(
            found.is_empty(),
            "round {round}: forked children kept their dead parent's locks: {found:?}"
        );
        assert!(
            said.is_empty(),
            "round {round}: the children read: {said:?}"
        );
    }
}

#[test]
fn a_fork_while_the_registry_is_contended_never_hangs_the_child() {
    let dir = tempfile::tempdir().unwrap();
    const FORKS: usize = 300;
    let mut worker = Worker::start("registry", dir.path(), FORKS);
    assert!(worker.finish(FORKS).is_empty());
}

#[test]
fn a_fork_at_the_descriptor_limit_leaks_no_lock() {
    let dir = tempfile::tempdir().unwrap();
    let mut worker = Worker::start("emfile", dir.path(), 0);
    assert!(worker.finish(1).is_empty());
    let found = leaks(&dir.path().join("limit"));
    assert!(found.is_empty(), "{found:?}");
}

#[test]
fn a_fork_with_more_than_256_lock_files_leaks_no_lock() {
    let dir = tempfile::tempdir().unwrap();
    const FILES: usize = 300;
    let mut worker = Worker::start("many", dir.path(), FILES);
    assert!(worker.finish(1).is_empty());
    let found: Vec<String> = (0..FILES)
        .flat_map(|i| leaks(&dir.path().join(format!("many-{i}"))))
        .collect();
    assert!(
        found.is_empty(),
        "{} of {FILES} files leaked: {:?}",
        found.len(),
        &found[..found.len().min(5)]
    );
}

// ---------------------------------------------------------------------------------------
// Values at their limits.

/// Attach on another thread, bounded: `None` if it did not return within 10 s.
fn attach_bounded(lock: &ShmLock) -> Option<shmlock::Result<u64>> {
    let lock = lock.clone();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(lock.attach_reader().map(|r| {
            let version = r.version();
            std::mem::forget(r); // the page under it is not ours any more
            version
        }));
    });
    rx.recv_timeout(Duration::from_secs(10)).ok()
}

#[test]
fn attach_fails_instead_of_spinning_when_published_falls_below_the_pins() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("spin-shm");
    let lock = ShmLock::open(&path).unwrap();
    let writer = lock.try_claim_writer().unwrap();
    // One pin per local slot (64), each on its own version.
    let mut readers = Vec::new();
    for version in 1..=64 {
        writer.publish(version).unwrap();
        readers.push(lock.attach_reader().unwrap());
    }
    // Another process truncates the file under its live handles and sizes it back: a
    // page of zeros, `published` 0, below every pin.
    for args in [["-s", "0"], ["-s", "4096"]] {
        let status = Command::new("truncate")
            .args(args)
            .arg(&path)
            .status()
            .unwrap();
        assert!(status.success());
    }
    match attach_bounded(&lock) {
        None => panic!("attach_reader spun for 10 s"),
        Some(Ok(version)) => panic!("attached at {version} under pins of 1..=64"),
        Some(Err(e)) => {
            assert_eq!(e.kind(), ErrorKind::PublishedBelowPins, "{e}");
            assert!(
                matches!(
                    e,
                    Error::PublishedBelowPins {
                        published: 0,
                        pinned: 1,
                        ..
                    }
                ),
                "{e:?}"
            );
            assert!(e.to_string().contains("truncated"), "{e}");
        }
    }
    drop(readers);
    drop(writer);
}

#[test]
fn a_generation_floor_without_headroom_is_refused_and_the_file_stays_claimable() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("floor-shm");
    for floor in [
        (1 << 56) - 1,
        (1 << 56) - 65_536,
        shmlock::MAX_GENERATION_FLOOR + 1,
    ] {
        let e = ShmLock::open_with(&path, &Options::new().generation_floor(floor)).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::GenerationFloorTooHigh, "{e}");
        assert!(
            matches!(e, Error::GenerationFloorTooHigh { floor: f, .. } if f == floor),
            "{e:?}"
        );
    }
    assert!(!path.exists(), "a refused open created the file");
    // The highest floor accepted leaves the file claimable, in this process and in
    // others, before and after a clean reopen.
    let floor = shmlock::MAX_GENERATION_FLOOR;
    let lock = ShmLock::open_with(&path, &Options::new().generation_floor(floor)).unwrap();
    let writer = lock.try_claim_writer().unwrap();
    assert!(writer.generation() > floor);
    writer.release().unwrap();
    drop(lock);
    let worker_claims = |what: &str| {
        let out = Command::new(std::env::current_exe().unwrap())
            .args(["claim_worker_entry", "--exact", "--nocapture"])
            .env("SHMLOCK_EDGES_CLAIM", &path)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success() && text.contains("claimed "),
            "{what}: {text}{}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    worker_claims("another process");
    worker_claims("a second process after a clean reopen");
}

/// Not a test of its own: claims the file named by `SHMLOCK_EDGES_CLAIM` and says so.
#[test]
fn claim_worker_entry() {
    let Some(path) = std::env::var_os("SHMLOCK_EDGES_CLAIM") else {
        return;
    };
    let lock = ShmLock::open(&path).unwrap();
    for _ in 0..3 {
        let writer = lock.try_claim_writer().unwrap();
        say(&format!("claimed {}", writer.generation()));
    }
}

#[test]
fn an_exhausted_generation_counter_has_its_own_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("exhausted-shm");
    let lock = ShmLock::open(&path).unwrap();
    // A hostile write (another program) sets the owner word to the top generation.
    let top: u64 = ((1 << 56) - 1) << 8;
    let file = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
    file.write_all_at(&top.to_ne_bytes(), OWNER_OFFSET).unwrap();
    let e = lock.try_claim_writer().unwrap_err();
    assert_eq!(e.kind(), ErrorKind::GenerationExhausted, "{e}");
    assert!(
        matches!(e, Error::GenerationExhausted { generation, .. } if generation == (1 << 56) - 1),
        "{e:?}"
    );
    let text = e.to_string();
    assert!(
        text.contains("exhausted") && text.contains("generation_floor"),
        "{text}"
    );
}

// ---------------------------------------------------------------------------------------
// Fork: what a child reads.

#[test]
fn a_forked_child_reads_the_real_page_never_a_page_of_zeros() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("child-reads-shm");
    let lock = ShmLock::open(&path).unwrap();
    let writer = lock.try_claim_writer().unwrap();
    writer.publish(5).unwrap();
    let reader = lock.attach_reader().unwrap();
    writer.publish(6).unwrap();
    // SAFETY: the child calls the handle's read methods (open, pread and allocate:
    // glibc's malloc is fork-safe; no lock of the library is taken), then `_exit`s.
    match unsafe { libc::fork() } {
        0 => {
            let mut code = 0;
            if lock.published() != 6 {
                code |= 1;
            }
            if lock.oldest_pinned() != Some(5) {
                code |= 2;
            }
            let snapshot = lock.snapshot();
            if snapshot.reader_count != 1
                || snapshot.oldest_pinned != Some(5)
                || snapshot.published != 6
            {
                code |= 4;
            }
            if writer.is_current() || writer.heartbeat_handle().is_current() {
                code |= 8;
            }
            // Once the file cannot be read, the answers are the most pessimistic ones.
            let _ = std::fs::remove_file(&path);
            if lock.oldest_pinned() != Some(0) || lock.snapshot().oldest_pinned != Some(0) {
                code |= 16;
            }
            // SAFETY: ends the child without running the parent's destructors.
            unsafe { libc::_exit(code) }
        }
        child if child > 0 => {
            let mut status = 0;
            // SAFETY: waits for our own child, writing into a local.
            assert_eq!(unsafe { libc::waitpid(child, &mut status, 0) }, child);
            assert!(libc::WIFEXITED(status));
            assert_eq!(
                libc::WEXITSTATUS(status),
                0,
                "child read failures (bits: 1 published, 2 oldest_pinned, 4 snapshot, 8 is_current, 16 fallback)"
            );
        }
        _ => panic!("fork failed"),
    }
    drop(reader);
    assert!(writer.is_current());
}

// ---------------------------------------------------------------------------------------
// Paths.

#[test]
fn open_never_turns_an_existing_empty_file_into_a_lock_file() {
    let dir = tempfile::tempdir().unwrap();
    let empty = dir.path().join("empty.db");
    std::fs::write(&empty, b"").unwrap();
    // Another process opens it (as a lock file, by mistake).
    let out = Command::new(std::env::current_exe().unwrap())
        .args(["claim_worker_entry", "--exact", "--nocapture"])
        .env("SHMLOCK_EDGES_CLAIM", &empty)
        .output()
        .unwrap();
    assert!(
        !out.status.success(),
        "the open of an empty data file succeeded"
    );
    let e = ShmLock::open(&empty).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Corrupt, "{e}");
    assert_eq!(
        std::fs::metadata(&empty).unwrap().len(),
        0,
        "the empty data file was written"
    );
    // So it is still a data file: provision opens its lock file beside it.
    shmlock::set_provisioning_enabled(true);
    let lock = ShmLock::provision(&empty).unwrap();
    assert_eq!(lock.open_state(), OpenState::Created);
}

/// Not a test of its own: opens the file named by `SHMLOCK_EDGES_RACE` as soon as the
/// byte on stdin arrives, and says how it found it.
#[test]
fn race_worker_entry() {
    let Some(path) = std::env::var_os("SHMLOCK_EDGES_RACE") else {
        return;
    };
    let mut byte = [0u8];
    std::io::Read::read_exact(&mut std::io::stdin(), &mut byte).unwrap();
    match ShmLock::open(&path) {
        Ok(lock) => {
            let _writer = lock.try_claim_writer();
            say(&format!("opened {:?}", lock.open_state()));
        }
        Err(e) => say(&format!("refused {e}")),
    }
}

#[test]
fn concurrent_creators_all_join_one_file() {
    for round in 0..5 {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("race-shm");
        let mut workers: Vec<Child> = (0..6)
            .map(|_| {
                Command::new(std::env::current_exe().unwrap())
                    .args(["race_worker_entry", "--exact", "--nocapture"])
                    .env("SHMLOCK_EDGES_RACE", &path)
                    .stdin(Stdio::piped())
                    .stdout(Stdio::piped())
                    .spawn()
                    .unwrap()
            })
            .collect();
        for worker in &mut workers {
            use std::io::Write;
            worker.stdin.take().unwrap().write_all(b"g").unwrap();
        }
        let mut created = 0;
        for worker in workers {
            let out = worker.wait_with_output().unwrap();
            let text = String::from_utf8_lossy(&out.stdout).into_owned();
            assert!(
                out.status.success() && text.contains("edges: opened"),
                "round {round}: {text}"
            );
            created += usize::from(text.contains("opened Created"));
        }
        assert!(created <= 1, "round {round}: {created} creators");
        let leftovers: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .filter(|n| n != "race-shm")
            .collect();
        assert!(leftovers.is_empty(), "round {round}: {leftovers:?}");
    }
}

/// Not a test of its own: provisions the data path named by `SHMLOCK_EDGES_PROVISION` and
/// tries to claim: says "claimed", or the error, and the lock file's path.
#[test]
fn provision_worker_entry() {
    let Some(data) = std::env::var_os("SHMLOCK_EDGES_PROVISION") else {
        return;
    };
    shmlock::set_provisioning_enabled(true);
    let lock = ShmLock::provision(&data).unwrap();
    match lock.try_claim_writer() {
        Ok(_) => say(&format!("claimed {}", lock.path().display())),
        Err(e) => say(&format!("refused {:?} {}", e.kind(), lock.path().display())),
    }
}

#[test]
fn a_data_file_reached_through_a_symlink_has_one_lock_file_and_one_writer() {
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path().canonicalize().unwrap();
    let data = base.join("d.db");
    std::fs::write(&data, b"data").unwrap();
    std::fs::create_dir(base.join("sub")).unwrap();
    std::os::unix::fs::symlink(&data, base.join("link.db")).unwrap();
    std::os::unix::fs::symlink("../link.db", base.join("sub/rel.db")).unwrap();
    shmlock::set_provisioning_enabled(true);
    let lock = ShmLock::provision(&data).unwrap();
    let _writer = lock.try_claim_writer().unwrap();
    for via in [
        base.join("link.db"),
        base.join("sub/rel.db"),
        base.join("sub/../link.db"),
    ] {
        let out = Command::new(std::env::current_exe().unwrap())
            .args(["provision_worker_entry", "--exact", "--nocapture"])
            .env("SHMLOCK_EDGES_PROVISION", &via)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let expected = format!("edges: refused WriterBusy {}", lock.path().display());
        assert!(
            text.contains(&expected),
            "{}: two writers of one data file (or another lock file): {text}",
            via.display()
        );
    }
    assert!(!base.join("link.db-shm").exists());
    assert!(!base.join("sub/rel.db-shm").exists());
}

// ---------------------------------------------------------------------------------------
// The environment lies: a hidden /proc in a time namespace.

/// The command prefix that runs a process with `/proc` hidden (an empty tmpfs over it) in
/// a time namespace whose boot clock is 10^6 s ahead; `None` (with the reason) where this
/// host cannot (unprivileged, or no time namespaces).
fn hidden_proc_prefix() -> Option<String> {
    let probe = Command::new("unshare")
        .args(["--mount", "--time", "--boottime", "1000000", "sh", "-c"])
        .arg("mount -t tmpfs none /proc && test ! -e /proc/self")
        .output();
    match probe {
        Ok(out) if out.status.success() => {
            Some("unshare --mount --time --boottime 1000000 sh -c 'mount -t tmpfs none /proc && exec \"$0\" \"$@\"'".into())
        }
        Ok(out) => {
            println!(
                "skipped: `unshare --mount --time` with a tmpfs over /proc is not available here: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
            None
        }
        Err(e) => {
            println!("skipped: no unshare: {e}");
            None
        }
    }
}

/// Run this test binary's `entry` with `/proc` hidden, `env` set; its `edges:` lines.
fn run_with_hidden_proc(prefix: &str, entry: &str, env: (&str, &Path)) -> String {
    let exe = std::env::current_exe().unwrap();
    let out = Command::new("sh")
        .arg("-c")
        .arg(format!("{prefix} \"$@\""))
        .arg("sh")
        .arg(&exe)
        .args([entry, "--exact", "--nocapture"])
        .env(env.0, env.1)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    text.lines()
        .filter_map(|l| l.split_once("edges: ").map(|(_, rest)| rest.to_string()))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Not a test of its own: with a lease, waits for the role held by a healthy owner.
#[test]
fn hidden_proc_claim_worker_entry() {
    let Some(path) = std::env::var_os("SHMLOCK_EDGES_HIDDEN_CLAIM") else {
        return;
    };
    let options = Options::new().lease(Duration::from_millis(200));
    let lock = ShmLock::open_with(&path, &options).unwrap();
    match lock.claim_writer(Duration::from_millis(600)) {
        Ok(writer) => say(&format!("claimed {:?}", writer.takeover())),
        Err(e) => say(&format!("refused {:?}", e.kind())),
    }
}

/// Not a test of its own: opens the file and says how it found it.
#[test]
fn hidden_proc_open_worker_entry() {
    let Some(path) = std::env::var_os("SHMLOCK_EDGES_HIDDEN_OPEN") else {
        return;
    };
    let options = Options::new().lease(Duration::from_millis(200));
    let lock = ShmLock::open_with(&path, &options).unwrap();
    let writer = lock.try_claim_writer().unwrap();
    let declared = lock.snapshot().owner.and_then(|owner| owner.lease);
    say(&format!(
        "open {:?} lease {declared:?} {}",
        lock.open_state(),
        writer.generation()
    ));
}

#[test]
fn a_hidden_proc_in_a_time_namespace_neither_judges_nor_declares_a_lease() {
    let Some(prefix) = hidden_proc_prefix() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("lease-shm");
    let options = Options::new().lease(Duration::from_millis(200));
    let lock = ShmLock::open_with(&path, &options).unwrap();
    let writer = lock.try_claim_writer().unwrap();
    let keepalive = writer.heartbeat_handle();
    let beating = Arc::new(AtomicBool::new(true));
    let beats = {
        let beating = Arc::clone(&beating);
        std::thread::spawn(move || {
            while beating.load(Ordering::Relaxed) {
                keepalive.heartbeat().unwrap();
                std::thread::sleep(Duration::from_millis(20));
            }
        })
    };
    let said = run_with_hidden_proc(
        &prefix,
        "hidden_proc_claim_worker_entry",
        ("SHMLOCK_EDGES_HIDDEN_CLAIM", &path),
    );
    beating.store(false, Ordering::Relaxed);
    beats.join().unwrap();
    assert!(
        said == "refused Timeout" || said == "refused WriterBusy",
        "a claimant whose clock offset is unknown deposed a healthy owner: {said}"
    );
    assert!(writer.is_current());
    writer.release().unwrap();
    drop(lock);
}

#[test]
fn a_hidden_boot_id_counts_as_a_new_boot() {
    let Some(prefix) = hidden_proc_prefix() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("boot-shm");
    let open = || {
        run_with_hidden_proc(
            &prefix,
            "hidden_proc_open_worker_entry",
            ("SHMLOCK_EDGES_HIDDEN_OPEN", &path),
        )
    };
    let first = open();
    assert!(first.starts_with("open Created "), "{first}");
    // Its clock offset is unknown too: its claim declared no lease.
    assert!(first.contains("lease None"), "{first}");
    let first_generation: u64 = first.rsplit(' ').next().unwrap().parse().unwrap();
    // The same (unknown) boot, for all this process can tell: it must count as a new one.
    let second = open();
    assert!(
        second.starts_with("open RecoveredAfterReboot "),
        "an unreadable boot_id was taken for the same boot: {second}"
    );
    let second_generation: u64 = second.rsplit(' ').next().unwrap().parse().unwrap();
    assert!(second_generation >= first_generation + (1 << 32));
}

#[test]
fn values_at_their_limits_get_typed_errors_and_never_wrap() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("limits-shm");
    // Leases and timeouts at their extremes: no overflow, no panic.
    for lease in [Duration::ZERO, Duration::from_nanos(1), Duration::MAX] {
        let lock = ShmLock::open_with(&path, &Options::new().lease(lease)).unwrap();
        let writer = lock.claim_writer(Duration::MAX).unwrap();
        writer.heartbeat().unwrap();
        writer.release().unwrap();
    }
    let lock = ShmLock::open(&path).unwrap();
    assert!(matches!(
        lock.wait_published(0, Duration::ZERO),
        Err(Error::Timeout { .. })
    ));
    // Versions at the top: the largest publishes, one more is refused, nothing wraps.
    let writer = lock.try_claim_writer().unwrap();
    writer.publish(shmlock::MAX_VERSION).unwrap();
    let e = writer.publish(shmlock::MAX_VERSION + 1).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::VersionTooLarge, "{e}");
    assert_eq!(
        writer.publish(u64::MAX).unwrap_err().kind(),
        ErrorKind::VersionTooLarge
    );
    assert_eq!(lock.published(), shmlock::MAX_VERSION);
    // A new claim re-tags the top version without changing it.
    writer.release().unwrap();
    let writer = lock.try_claim_writer().unwrap();
    assert_eq!(lock.published(), shmlock::MAX_VERSION);
    assert_eq!(
        writer.publish(shmlock::MAX_VERSION).unwrap_err().kind(),
        ErrorKind::VersionNotIncreasing
    );
    // Every reader count a member can hold, then a typed error.
    let mut readers = Vec::new();
    let refused = loop {
        match lock.attach_reader() {
            Ok(reader) => readers.push(reader),
            Err(e) => break e,
        }
        assert!(readers.len() <= 70_000, "no reader limit");
    };
    assert!(
        matches!(refused, Error::TooManyReaders { limit } if limit == readers.len() as u64),
        "{refused:?} after {}",
        readers.len()
    );
    assert_eq!(lock.snapshot().reader_count, readers.len() as u64);
    assert_eq!(lock.oldest_pinned(), Some(shmlock::MAX_VERSION));
    drop(readers);
    assert_eq!(lock.snapshot().reader_count, 0);
    assert_eq!(lock.oldest_pinned(), None);
}
