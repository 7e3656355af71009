//! The portable multi-process tests: real processes on every platform, Windows (under wine
//! in CI: `.ci/wine-test`) included. The test binary re-executes itself for its child
//! processes (`current_exe()`, the role in [`ROLE_ENV`], filter `child_entry --exact`; the
//! entry returns at once when the variable is absent), and a hard kill is
//! `Child::kill` (SIGKILL on Unix, TerminateProcess on Windows), so nothing here needs
//! fork, signals or a second binary.
//!
//! A child says what it did on stdout, one line per step, and lives until its stdin
//! closes (a clean exit) or it is killed. Every child is killed and reaped when its test
//! ends, passing or not; at most 6 run at once.
//!
//! With `--nocapture`, `a_killed_owner_is_taken_over` and `a_publish_wakes_another_process`
//! print their figures (takeover after kill, publish → waiter).

use std::io::{BufRead, BufReader, Read, Write};
use std::path::Path;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{channel, Receiver};
use std::time::{Duration, Instant, SystemTime};

use shmlock::{CorruptReason, Error, OpenState, Options, ShmLock, Takeover};

/// The child's role and its arguments, space-separated.
const ROLE_ENV: &str = "SHMLOCK_PROCESSES_ROLE";
/// The lock file the child opens.
const PATH_ENV: &str = "SHMLOCK_PROCESSES_PATH";
/// How long any one step of a test may take before it fails (wine starts processes slowly).
const STEP: Duration = Duration::from_secs(30);

fn unix_ns() -> u128 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_nanos()
}

/// The child processes' side: runs only when [`ROLE_ENV`] is set.
#[test]
fn child_entry() {
    let Ok(role) = std::env::var(ROLE_ENV) else {
        return;
    };
    let words: Vec<&str> = role.split(' ').collect();
    let path = std::env::var_os(PATH_ENV).unwrap();
    let say = |line: String| {
        let mut out = std::io::stdout().lock();
        writeln!(out, "{line}").unwrap();
        out.flush().unwrap();
    };
    if words[0] == "sleep" {
        // A process that holds nothing of ours: it marks itself alive and lives until the
        // test's stop file appears (at most a minute).
        let stop = Path::new(&path).with_extension("stop");
        std::fs::write(Path::new(&path).with_extension("alive"), b"").unwrap();
        let deadline = Instant::now() + Duration::from_secs(60);
        while !stop.exists() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        return;
    }
    let lock = ShmLock::open(&path).unwrap();
    // Guards live until stdin closes (or the process is killed).
    let mut keep_writer = None;
    let mut keep_readers = Vec::new();
    match words[0] {
        "own" => {
            let writer = lock.try_claim_writer().unwrap();
            say(format!("owned {}", writer.generation()));
            keep_writer = Some(writer);
        }
        "own_then_spawn" => {
            let writer = lock.try_claim_writer().unwrap();
            // A child started while this process owns the role (as a server starts
            // helpers): it must inherit none of the lock file's handles or descriptors. Not
            // waited for: this process is killed first; the child ends on the stop file.
            #[allow(clippy::zombie_processes)]
            Command::new(std::env::current_exe().unwrap())
                .args(["child_entry", "--exact", "--test-threads", "1"])
                .env(ROLE_ENV, "sleep")
                .env(PATH_ENV, &path)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .spawn()
                .unwrap();
            let alive = Path::new(&path).with_extension("alive");
            let deadline = Instant::now() + STEP;
            while !alive.exists() {
                assert!(Instant::now() < deadline, "the sleeper did not start");
                std::thread::sleep(Duration::from_millis(5));
            }
            say(format!("owned {}", writer.generation()));
            keep_writer = Some(writer);
        }
        "read" => {
            let count: usize = words[1].parse().unwrap();
            for _ in 0..count {
                keep_readers.push(lock.attach_reader().unwrap());
            }
            say(format!("attached {}", keep_readers[0].version()));
        }
        "open" => {
            keep_readers.push(lock.attach_reader().unwrap());
            say(format!("opened {:?}", lock.open_state()));
        }
        "wait" => {
            let rounds: u64 = words[1].parse().unwrap();
            say("waiting".into());
            let mut seen = 0;
            while seen < rounds {
                seen = lock.wait_published(seen, STEP).unwrap();
                say(format!("woke {seen} {}", unix_ns()));
            }
        }
        other => panic!("unknown role {other}"),
    }
    let _ = std::io::stdin().read_to_end(&mut Vec::new());
    drop(keep_readers);
    drop(keep_writer);
}

/// A child process running `role`, its stdout read line by line.
struct Kid {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: Receiver<String>,
}

impl Kid {
    fn spawn(role: &str, path: &Path) -> Kid {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args([
                "child_entry",
                "--exact",
                "--nocapture",
                "--test-threads",
                "1",
            ])
            .env(ROLE_ENV, role)
            .env(PATH_ENV, path)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (send, lines) = channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if send.send(line).is_err() {
                    break;
                }
            }
        });
        Kid {
            stdin: child.stdin.take(),
            child,
            lines,
        }
    }

    /// The words after `word` in the child's next line that has it (libtest's own lines are
    /// skipped; its `test child_entry ... ` has no newline before the child's first line).
    fn expect(&self, word: &str) -> Vec<String> {
        let deadline = Instant::now() + STEP;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = self
                .lines
                .recv_timeout(left)
                .unwrap_or_else(|e| panic!("no `{word}` line from the child: {e}"));
            let mut words = line.split(' ').skip_while(|w| *w != word);
            if words.next().is_some() {
                return words.map(str::to_string).collect();
            }
        }
    }

    /// Hard-kill the child and reap it.
    fn kill(&mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    /// Close its stdin (it drops its guards and exits) and reap it.
    fn finish(&mut self) {
        self.stdin.take();
        let status = self.child.wait().unwrap();
        assert!(status.success(), "child failed: {status}");
    }
}

impl Drop for Kid {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Poll `f` until it returns `Some` or [`STEP`] passes (for what the system does after a
/// process is gone: Windows drops a dead process's locks "in a time that depends on
/// system resources").
fn eventually<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + STEP;
    loop {
        if let Some(done) = f() {
            return done;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(2));
    }
}

#[test]
fn a_killed_owner_is_taken_over() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("own-shm");
    let mut owner = Kid::spawn("own", &path);
    let generation: u64 = owner.expect("owned")[0].parse().unwrap();
    let lock = ShmLock::open(&path).unwrap();
    assert!(matches!(
        lock.try_claim_writer(),
        Err(Error::WriterBusy { .. })
    ));
    let killed = Instant::now();
    owner.kill();
    // A claim that waits: woken by its death watcher when the owner's lock is dropped.
    let writer = lock.claim_writer(STEP).unwrap();
    let took = killed.elapsed();
    assert!(writer.generation() > generation);
    match writer.takeover() {
        Some(Takeover::Dead {
            generation: dead, ..
        }) => assert_eq!(dead, generation),
        other => panic!("expected the dead owner's takeover, got {other:?}"),
    }
    println!("figure: takeover after kill (kill() and reap to claim_writer's return): {took:?}");
}

#[test]
fn a_killed_owners_child_keeps_none_of_its_locks() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("spawn-shm");
    let mut owner = Kid::spawn("own_then_spawn", &path);
    let generation: u64 = owner.expect("owned")[0].parse().unwrap();
    let lock = ShmLock::open(&path).unwrap();
    assert!(matches!(
        lock.try_claim_writer(),
        Err(Error::WriterBusy { .. })
    ));
    owner.kill();
    // The owner's child still runs; the role is free all the same.
    let writer = lock.claim_writer(STEP).unwrap();
    assert!(writer.generation() > generation);
    assert_eq!(
        lock.snapshot().live_members().count(),
        1,
        "the child holds no member entry"
    );
    assert!(path.with_extension("alive").exists(), "the child is alive");
    std::fs::write(path.with_extension("stop"), b"").unwrap();
}

#[test]
fn reader_counts_are_exact_after_kills() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("readers-shm");
    let lock = ShmLock::open(&path).unwrap();
    let mut kids: Vec<Kid> = (0..3).map(|_| Kid::spawn("read 2", &path)).collect();
    for kid in &kids {
        kid.expect("attached");
    }
    let own = lock.attach_reader().unwrap();
    assert_eq!(lock.snapshot().reader_count, 7);
    kids[0].kill();
    let count = eventually("the killed reader's count to go", || {
        let n = lock.snapshot().reader_count;
        (n != 7).then_some(n)
    });
    assert_eq!(
        count, 5,
        "exactly the killed process's 2 readers stop counting"
    );
    kids[2].kill();
    let count = eventually("the second killed reader's count to go", || {
        let n = lock.snapshot().reader_count;
        (n != 5).then_some(n)
    });
    assert_eq!(count, 3);
    kids[1].finish();
    assert_eq!(
        lock.snapshot().reader_count,
        1,
        "a clean exit detaches at once"
    );
    drop(own);
    assert_eq!(lock.snapshot().reader_count, 0);
    let report = lock.reap().unwrap();
    assert_eq!(
        report.members.len(),
        2,
        "the two killed processes are reaped"
    );
    assert_eq!(report.readers_cleared(), 4);
}

#[test]
fn a_killed_readers_pins_are_released() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("pins-shm");
    let lock = ShmLock::open(&path).unwrap();
    let writer = lock.try_claim_writer().unwrap();
    writer.publish(1).unwrap();
    let mut reader = Kid::spawn("read 1", &path);
    assert_eq!(reader.expect("attached"), ["1"]);
    writer.publish(2).unwrap();
    assert_eq!(lock.oldest_pinned(), Some(1));
    assert!(matches!(
        writer.wait_readers_past(2, Duration::from_millis(50)),
        Err(Error::Timeout { .. })
    ));
    reader.kill();
    // Woken by the death watcher (or the next slice) once the reader's lock is dropped.
    writer.wait_readers_past(2, STEP).unwrap();
    assert_eq!(lock.oldest_pinned(), None);
}

#[test]
fn a_publish_wakes_another_process() {
    const ROUNDS: u64 = 20;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("publish-shm");
    let lock = ShmLock::open(&path).unwrap();
    let writer = lock.try_claim_writer().unwrap();
    let mut waiter = Kid::spawn(&format!("wait {ROUNDS}"), &path);
    waiter.expect("waiting");
    let mut delays = Vec::new();
    for version in 1..=ROUNDS {
        // Publish only while the other process is asleep in the page.
        eventually("the waiter to sleep", || {
            (lock.snapshot().waiting_for_publish == 1).then_some(())
        });
        let before = unix_ns();
        writer.publish(version).unwrap();
        let woke = waiter.expect("woke");
        assert_eq!(woke[0], version.to_string());
        let at: u128 = woke[1].parse().unwrap();
        delays.push(Duration::from_nanos(at.saturating_sub(before) as u64));
    }
    waiter.finish();
    delays.sort();
    println!(
        "figure: publish -> waiter in another process, {ROUNDS} rounds: median {:?}, max {:?}",
        delays[delays.len() / 2],
        delays[delays.len() - 1]
    );
    // Far below the wait's timeout: the publish woke it, nothing timed out.
    assert!(delays[delays.len() - 1] < Duration::from_secs(5));
}

#[test]
fn a_file_that_is_not_a_lock_file_is_refused_and_unchanged() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("app.db");
    let data: Vec<u8> = (0..10_000u32).map(|i| (i * 7 % 251) as u8).collect();
    std::fs::write(&path, &data).unwrap();
    // Another process holds it open the whole time, as an engine would.
    let _held = std::fs::File::open(&path).unwrap();
    match ShmLock::open(&path) {
        Err(Error::Corrupt {
            reason: CorruptReason::NotALockFile { len },
            ..
        }) => assert_eq!(len, 10_000),
        other => panic!("expected NotALockFile, got {other:?}"),
    }
    // inspect reads the lock file beside a data file, and creates none.
    assert!(!matches!(shmlock::inspect(&path), Ok(Some(_))));
    assert!(!shmlock::shm_path_for(&path).exists());
    assert!(!shmlock::is_lock_file(&path));
    assert_eq!(std::fs::read(&path).unwrap(), data, "the file is unchanged");
}

#[test]
fn racing_openers_make_one_page() {
    const OPENERS: usize = 6;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("race-shm");
    let mut kids: Vec<Kid> = (0..OPENERS).map(|_| Kid::spawn("open", &path)).collect();
    let states: Vec<String> = kids.iter().map(|k| k.expect("opened")[0].clone()).collect();
    let created = states.iter().filter(|s| *s == "Created").count();
    assert_eq!(
        created, 1,
        "exactly one opener initialised the page: {states:?}"
    );
    assert!(
        states.iter().all(|s| s == "Created" || s == "Joined"),
        "{states:?}"
    );
    let lock = ShmLock::open_with(&path, &Options::new()).unwrap();
    assert_eq!(lock.open_state(), OpenState::Joined);
    let snapshot = lock.snapshot();
    assert_eq!(snapshot.reader_count, OPENERS as u64);
    assert_eq!(snapshot.live_members().count(), OPENERS + 1);
    for kid in &mut kids {
        kid.finish();
    }
    let snapshot = lock.snapshot();
    assert_eq!(snapshot.reader_count, 0);
    assert_eq!(snapshot.live_members().count(), 1);
    assert_eq!(
        snapshot.dead_members().count(),
        0,
        "clean exits leave no dead members"
    );
}

#[test]
fn a_directory_or_a_symlink_at_the_path_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let sub = dir.path().join("dir-shm");
    std::fs::create_dir(&sub).unwrap();
    assert!(
        matches!(ShmLock::open(&sub), Err(Error::NotARegularFile { .. })),
        "{:?}",
        ShmLock::open(&sub).err()
    );
    // A symlink to a real lock file: refused, not followed (O_NOFOLLOW on Unix,
    // FILE_FLAG_OPEN_REPARSE_POINT on Windows), and the target is left as it was.
    let target = dir.path().join("real-shm");
    drop(ShmLock::open(&target).unwrap());
    let before = std::fs::read(&target).unwrap();
    let link = dir.path().join("link-shm");
    #[cfg(unix)]
    let made = std::os::unix::fs::symlink(&target, &link);
    #[cfg(windows)]
    let made = std::os::windows::fs::symlink_file(&target, &link);
    if let Err(e) = made {
        // Windows lets only administrators or developer mode create symlinks.
        println!("skipped the symlink half: cannot create a symlink here ({e})");
        return;
    }
    if !std::fs::symlink_metadata(&link).is_ok_and(|m| m.file_type().is_symlink()) {
        // Wine 8 makes a copy for CreateSymbolicLinkW: nothing to refuse.
        println!("skipped the symlink half: this system made no symbolic link");
        return;
    }
    match ShmLock::open(&link) {
        Err(Error::NotARegularFile { .. }) => {}
        other => panic!("a symlink must be refused, got {:?}", other.map(|_| ())),
    }
    assert_eq!(std::fs::read(&target).unwrap(), before);
}
