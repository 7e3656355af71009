//! The async waits (feature `tokio`) against another process: a thousand tasks on a
//! two-worker runtime wait for a publish, a release, a detach or a death that happens in a
//! child process, and the process keeps one bridge thread per wait kind, not one per task.
//!
//! The other process is this test binary itself, re-run with [`PEER_ENV`] naming the lock
//! file and a filter selecting only [`peer_process`]; it obeys one command per line on its
//! standard input and answers each on its standard output, so every step is a handshake,
//! never a sleep. Times cross the processes as `CLOCK_MONOTONIC` nanoseconds.

// Unix only for now: its timing uses CLOCK_MONOTONIC through nix and its peer dies by
// SIGKILL; on Windows the tokio feature is compile-checked (.ci/run) and the waits it
// bridges are tested by tests/processes.rs.
#![cfg(unix)]

use std::future::{poll_fn, Future};
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::pin::pin;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use shmlock::{Error, ShmLock, Takeover, WriterGuard};
use tokio::runtime::Runtime;

/// Tasks per wait.
const TASKS: usize = 1000;
/// Every wait and every answer comes well within this, or the test fails.
const BOUND: Duration = Duration::from_secs(30);
/// Names the lock file in the peer process (and makes it one).
const PEER_ENV: &str = "SHMLOCK_ASYNC_PEER";
/// Prefix of the peer's answers (the harness prints its own lines too).
const ANSWER: &str = "peer: ";

/// Not a test of its own: the peer process's side. Does nothing unless [`PEER_ENV`] is set.
#[test]
fn peer_process() {
    let Ok(path) = std::env::var(PEER_ENV) else {
        return;
    };
    let lock = ShmLock::open(&path).unwrap();
    let mut writer: Option<WriterGuard> = None;
    let mut reader = None;
    // Written straight to the descriptor, past the harness's capture of `println!`.
    let mut out = std::io::stdout();
    for line in std::io::stdin().lock().lines() {
        let line = line.unwrap();
        let mut words = line.split_whitespace();
        let answer = match (words.next(), words.next()) {
            (Some("claim"), _) => {
                let guard = lock.try_claim_writer().unwrap();
                let generation = guard.generation();
                writer = Some(guard);
                format!("claimed {generation}")
            }
            (Some("publish"), Some(version)) => {
                let at = monotonic_ns();
                writer
                    .as_ref()
                    .unwrap()
                    .publish(version.parse().unwrap())
                    .unwrap();
                format!("published {at}")
            }
            (Some("release"), _) => {
                let at = monotonic_ns();
                writer.take().unwrap().release().unwrap();
                format!("released {at}")
            }
            (Some("attach"), _) => {
                let guard = lock.attach_reader().unwrap();
                let version = guard.version();
                reader = Some(guard);
                format!("attached {version}")
            }
            (Some("detach"), _) => {
                let at = monotonic_ns();
                drop(reader.take().unwrap());
                format!("detached {at}")
            }
            _ => panic!("unknown command {line:?}"),
        };
        writeln!(out, "{ANSWER}{answer}").unwrap();
        out.flush().unwrap();
    }
}

/// The peer process, seen from the test.
struct Peer {
    child: Child,
    commands: ChildStdin,
    answers: mpsc::Receiver<String>,
}

impl Peer {
    fn spawn(path: &Path) -> Peer {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args(["peer_process", "--exact", "--nocapture", "--test-threads=1"])
            .env(PEER_ENV, path)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let commands = child.stdin.take().unwrap();
        let stdout = BufReader::new(child.stdout.take().unwrap());
        let (send, answers) = mpsc::channel();
        std::thread::spawn(move || {
            for line in stdout.lines().map_while(|l| l.ok()) {
                // The harness's "test peer_process ... " may precede the first answer.
                if let Some((_, answer)) = line.split_once(ANSWER) {
                    if send.send(answer.to_owned()).is_err() {
                        return;
                    }
                }
            }
        });
        Peer {
            child,
            commands,
            answers,
        }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Send `command`; return the number in the peer's answer.
    fn ask(&mut self, command: &str) -> u64 {
        writeln!(self.commands, "{command}").unwrap();
        self.commands.flush().unwrap();
        let answer = self
            .answers
            .recv_timeout(BOUND)
            .unwrap_or_else(|e| panic!("the peer did not answer {command:?}: {e}"));
        answer
            .rsplit(' ')
            .next()
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("the peer answered {command:?} with {answer:?}"))
    }

    /// SIGKILL the peer; the `CLOCK_MONOTONIC` time just before.
    fn kill(&mut self) -> u64 {
        let at = monotonic_ns();
        self.child.kill().unwrap();
        self.child.wait().unwrap();
        at
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn monotonic_ns() -> u64 {
    let t = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC).unwrap();
    t.tv_sec() as u64 * 1_000_000_000 + t.tv_nsec() as u64
}

/// The runtime of every test here: two worker threads.
fn runtime() -> Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_time()
        .build()
        .unwrap()
}

/// Counts the tasks that have returned `Pending` once (so are registered with their
/// bridge) and how often all of them were polled.
struct Census {
    pending: AtomicUsize,
    polls: AtomicUsize,
    all_pending: tokio::sync::Notify,
    tasks: usize,
}

impl Census {
    fn new(tasks: usize) -> Arc<Census> {
        Arc::new(Census {
            pending: AtomicUsize::new(0),
            polls: AtomicUsize::new(0),
            all_pending: tokio::sync::Notify::new(),
            tasks,
        })
    }

    /// `wait`, counted; returns its output and the `CLOCK_MONOTONIC` time it completed.
    async fn count<F: Future>(self: Arc<Self>, wait: F) -> (F::Output, u64) {
        let mut wait = pin!(wait);
        let mut counted = false;
        let output = poll_fn(|cx| {
            self.polls.fetch_add(1, Ordering::Relaxed);
            let poll = wait.as_mut().poll(cx);
            if poll.is_pending() && !counted {
                counted = true;
                if self.pending.fetch_add(1, Ordering::SeqCst) + 1 == self.tasks {
                    self.all_pending.notify_one();
                }
            }
            poll
        })
        .await;
        (output, monotonic_ns())
    }

    /// Block until every task is registered and waiting.
    fn wait_all_pending(&self, rt: &Runtime) {
        rt.block_on(async {
            tokio::time::timeout(BOUND, self.all_pending.notified())
                .await
                .unwrap_or_else(|_| {
                    panic!(
                        "only {} of {} tasks got to wait",
                        self.pending.load(Ordering::SeqCst),
                        self.tasks
                    )
                })
        });
    }
}

/// Join every task; the outputs and the wake-up latencies after `since` (ns).
fn join_all<T: Send + 'static>(
    rt: &Runtime,
    tasks: Vec<tokio::task::JoinHandle<(T, u64)>>,
    since: u64,
) -> (Vec<T>, Vec<Duration>) {
    rt.block_on(async {
        tokio::time::timeout(BOUND, async {
            let mut outputs = Vec::with_capacity(tasks.len());
            let mut latencies = Vec::with_capacity(tasks.len());
            for task in tasks {
                let (output, done) = task.await.unwrap();
                outputs.push(output);
                latencies.push(Duration::from_nanos(done.saturating_sub(since)));
            }
            (outputs, latencies)
        })
        .await
        .expect("every task finished")
    })
}

/// p50 and max.
fn spread(latencies: &mut [Duration]) -> (Duration, Duration) {
    latencies.sort();
    (
        latencies[latencies.len() / 2],
        latencies[latencies.len() - 1],
    )
}

/// The tests here run one at a time, so that the threads counted and the latencies
/// measured are one test's (a bridge of an earlier test may linger idle for a second).
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn one_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    ONE_AT_A_TIME
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Threads of this process now, and how many of them are named `name`.
fn threads(name: &str) -> (usize, usize) {
    let names = thread_names();
    let named = names.iter().filter(|n| *n == name).count();
    (names.len(), named)
}

/// The names of this process's threads (`/proc/self/task/*/comm`), sorted.
fn thread_names() -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir("/proc/self/task")
        .unwrap()
        .map(|task| {
            let comm = std::fs::read_to_string(task.unwrap().path().join("comm"));
            comm.unwrap_or_default().trim_end().to_owned()
        })
        .collect();
    names.sort();
    names
}

/// The threads while the tasks wait: the harness's, the runtime's two workers, the
/// bridge, and those earlier tests left lingering; far fewer than one per task. Of those
/// named as the bridge, `before` existed (idle, from earlier tests) before the tasks began
/// to wait: at most one more may.
fn assert_no_thread_per_task(all: usize, bridges: usize, before: usize) {
    assert!(bridges >= 1, "no bridge thread while tasks wait");
    assert!(
        bridges <= before + 1,
        "{bridges} bridge threads ({before} before the tasks waited)"
    );
    assert!(all < TASKS / 10, "{all} threads for {TASKS} waiting tasks");
}

fn lock_file() -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("async-shm");
    (dir, path)
}

#[test]
fn publish_in_another_process_wakes_a_thousand_tasks() {
    let _serial = one_at_a_time();
    let (_dir, path) = lock_file();
    let lock = ShmLock::open(&path).unwrap();
    let mut peer = Peer::spawn(&path);
    peer.ask("claim");
    let rt = runtime();
    let census = Census::new(TASKS);
    let (_, before) = threads("shmlock-publish");
    let waiting_since = Instant::now();
    let tasks: Vec<_> = (0..TASKS)
        .map(|_| {
            let lock = lock.clone();
            rt.spawn(
                Arc::clone(&census).count(async move { lock.wait_published_async(0, BOUND).await }),
            )
        })
        .collect();
    census.wait_all_pending(&rt);
    assert_eq!(
        lock.snapshot().waiting_for_publish,
        1,
        "our waiter bit is set"
    );
    let (all_threads, bridges) = threads("shmlock-publish");
    let names = thread_names();
    // A quiet spell: nothing changes, so nobody is polled but one task per slice.
    std::thread::sleep(Duration::from_millis(200));
    let quiet = waiting_since.elapsed();
    let polls = census.polls.load(Ordering::SeqCst);
    let published_at = peer.ask("publish 7");
    let (outputs, mut latencies) = join_all(&rt, tasks, published_at);
    for output in outputs {
        assert_eq!(output.unwrap(), 7);
    }
    let (p50, max) = spread(&mut latencies);
    eprintln!(
        "publish → {TASKS} tasks woken: p50 {p50:?}, max {max:?}; {all_threads} threads in the \
         process while they waited ({bridges} bridge): {names:?}; {polls} polls in the first \
         {quiet:?}"
    );
    assert_no_thread_per_task(all_threads, bridges, before);
    // One poll to wait, then at most one probe per 50 ms slice (and a few spurious).
    let slices = (quiet.as_millis() / 50) as usize;
    assert!(polls <= TASKS + slices + 16, "{polls} polls: busy polling");
    assert_eq!(lock.snapshot().waiting_for_publish, 0, "the bit is cleared");
}

#[test]
fn release_in_another_process_hands_the_role_to_one_of_a_thousand_tasks() {
    let _serial = one_at_a_time();
    let (_dir, path) = lock_file();
    let lock = ShmLock::open(&path).unwrap();
    let mut peer = Peer::spawn(&path);
    let rt = runtime();
    for round in 0..3 {
        let peer_generation = peer.ask("claim");
        let census = Census::new(TASKS);
        let (_, before) = threads("shmlock-claim");
        let tasks: Vec<_> = (0..TASKS)
            .map(|_| {
                let lock = lock.clone();
                rt.spawn(
                    Arc::clone(&census).count(async move { lock.claim_writer_async(BOUND).await }),
                )
            })
            .collect();
        census.wait_all_pending(&rt);
        assert_eq!(lock.snapshot().waiting_claimants, 1);
        let (all_threads, bridges) = threads("shmlock-claim");
        let released_at = peer.ask("release");
        let (outputs, mut latencies) = join_all(&rt, tasks, released_at);
        // Exactly one task wins the role from the other process; every other one learns
        // that its own process holds it now (as the blocking `claim_writer` answers).
        let mut winners = Vec::new();
        for output in outputs {
            match output {
                Ok(guard) => winners.push(guard),
                Err(Error::AlreadyWriter) => {}
                Err(e) => panic!("round {round}: {e}"),
            }
        }
        assert_eq!(winners.len(), 1, "round {round}: one winner");
        let winner = winners.pop().unwrap();
        assert_eq!(winner.generation(), peer_generation + 1);
        assert_eq!(winner.takeover(), None);
        let (p50, max) = spread(&mut latencies);
        eprintln!(
            "round {round}: release → {TASKS} claim tasks answered: p50 {p50:?}, max {max:?}; \
             {all_threads} threads while they waited ({bridges} bridge)"
        );
        assert_no_thread_per_task(all_threads, bridges, before);
        winner.release().unwrap();
        assert_eq!(lock.snapshot().waiting_claimants, 0);
    }
}

#[test]
fn owner_death_in_another_process_wakes_claim_tasks() {
    let _serial = one_at_a_time();
    let (_dir, path) = lock_file();
    let lock = ShmLock::open(&path).unwrap();
    let mut peer = Peer::spawn(&path);
    let peer_generation = peer.ask("claim");
    let peer_pid = peer.pid();
    let rt = runtime();
    let census = Census::new(TASKS);
    let tasks: Vec<_> = (0..TASKS)
        .map(|_| {
            let lock = lock.clone();
            rt.spawn(Arc::clone(&census).count(async move { lock.claim_writer_async(BOUND).await }))
        })
        .collect();
    census.wait_all_pending(&rt);
    let killed_at = peer.kill();
    let (outputs, mut latencies) = join_all(&rt, tasks, killed_at);
    let mut winners: Vec<_> = outputs
        .into_iter()
        .filter_map(|output| match output {
            Ok(guard) => Some(guard),
            Err(Error::AlreadyWriter) => None,
            Err(e) => panic!("{e}"),
        })
        .collect();
    assert_eq!(winners.len(), 1);
    let winner = winners.pop().unwrap();
    assert_eq!(
        winner.takeover(),
        Some(Takeover::Dead {
            pid: peer_pid,
            generation: peer_generation
        })
    );
    let (p50, max) = spread(&mut latencies);
    eprintln!("SIGKILL of the owner → {TASKS} claim tasks answered: p50 {p50:?}, max {max:?}");
}

#[test]
fn detach_in_another_process_wakes_tasks_waiting_for_readers_past() {
    let _serial = one_at_a_time();
    let (_dir, path) = lock_file();
    let lock = ShmLock::open(&path).unwrap();
    let writer = Arc::new(lock.try_claim_writer().unwrap());
    writer.publish(1).unwrap();
    let mut peer = Peer::spawn(&path);
    assert_eq!(peer.ask("attach"), 1);
    writer.publish(2).unwrap();
    let rt = runtime();
    let census = Census::new(TASKS);
    let (_, before) = threads("shmlock-pins");
    let tasks: Vec<_> = (0..TASKS)
        .map(|_| {
            let writer = Arc::clone(&writer);
            rt.spawn(
                Arc::clone(&census)
                    .count(async move { writer.wait_readers_past_async(2, BOUND).await }),
            )
        })
        .collect();
    census.wait_all_pending(&rt);
    let (all_threads, bridges) = threads("shmlock-pins");
    let detached_at = peer.ask("detach");
    let (outputs, mut latencies) = join_all(&rt, tasks, detached_at);
    for output in outputs {
        output.unwrap();
    }
    let (p50, max) = spread(&mut latencies);
    eprintln!(
        "detach → {TASKS} readers-past tasks woken: p50 {p50:?}, max {max:?}; {all_threads} threads"
    );
    assert_no_thread_per_task(all_threads, bridges, before);

    // A reader that dies instead of detaching wakes them too (a death watcher).
    assert_eq!(peer.ask("attach"), 2);
    writer.publish(3).unwrap();
    let census = Census::new(TASKS);
    let tasks: Vec<_> = (0..TASKS)
        .map(|_| {
            let writer = Arc::clone(&writer);
            rt.spawn(
                Arc::clone(&census)
                    .count(async move { writer.wait_readers_past_async(3, BOUND).await }),
            )
        })
        .collect();
    census.wait_all_pending(&rt);
    let killed_at = peer.kill();
    let (outputs, mut latencies) = join_all(&rt, tasks, killed_at);
    for output in outputs {
        output.unwrap();
    }
    let (p50, max) = spread(&mut latencies);
    eprintln!("SIGKILL of the reader → {TASKS} readers-past tasks woken: p50 {p50:?}, max {max:?}");
}

#[test]
fn async_waits_time_out_with_the_errors_of_their_blocking_forms() {
    let _serial = one_at_a_time();
    let (_dir, path) = lock_file();
    let lock = ShmLock::open(&path).unwrap();
    let mut peer = Peer::spawn(&path);
    let peer_generation = peer.ask("claim");
    let rt = runtime();
    let short = Duration::from_millis(30);
    rt.block_on(async {
        let started = Instant::now();
        match lock.claim_writer_async(short).await {
            Err(Error::ClaimTimeout {
                pid,
                generation,
                waited,
            }) => {
                assert_eq!((pid, generation), (peer.pid(), peer_generation));
                assert_eq!(waited, short);
            }
            other => panic!("{other:?}"),
        }
        assert!(started.elapsed() >= short);
        assert!(matches!(
            lock.claim_writer_async(Duration::ZERO).await,
            Err(Error::ClaimTimeout { .. })
        ));
        let started = Instant::now();
        assert!(matches!(
            lock.wait_published_async(0, short).await,
            Err(Error::Timeout { waited, .. }) if waited == short
        ));
        assert!(started.elapsed() >= short);
    });
    peer.ask("publish 5");
    assert_eq!(
        rt.block_on(lock.wait_published_async(4, Duration::ZERO))
            .unwrap(),
        5
    );
    peer.ask("attach");
    peer.ask("release");
    let writer = lock.try_claim_writer().unwrap();
    writer.publish(6).unwrap();
    assert!(matches!(
        rt.block_on(writer.wait_readers_past_async(6, short)),
        Err(Error::Timeout { .. })
    ));

    // A thousand tasks time out together, and afterwards nothing is left waiting.
    let census = Census::new(TASKS);
    let tasks: Vec<_> = (0..TASKS)
        .map(|_| {
            let lock = lock.clone();
            rt.spawn(Arc::clone(&census).count(async move {
                lock.wait_published_async(6, Duration::from_millis(100))
                    .await
            }))
        })
        .collect();
    census.wait_all_pending(&rt);
    let (outputs, _) = join_all(&rt, tasks, 0);
    for output in outputs {
        assert!(matches!(output, Err(Error::Timeout { .. })), "{output:?}");
    }
    assert_eq!(lock.snapshot().waiting_for_publish, 0, "the bit is cleared");

    // A cancelled wait leaves nothing registered either.
    rt.block_on(async {
        let cancelled = tokio::time::timeout(short, lock.wait_published_async(6, BOUND)).await;
        assert!(cancelled.is_err());
    });
    assert_eq!(lock.snapshot().waiting_for_publish, 0);
}

/// Not a test of its own: waits (async, then blocking) for its own readers, then reports how
/// many death watchers this process runs. Does nothing unless `SHMLOCK_ASYNC_OWN_WATCH` is
/// set.
#[test]
fn own_member_wait_process() {
    let Some(path) = std::env::var_os("SHMLOCK_ASYNC_OWN_WATCH") else {
        return;
    };
    let lock = ShmLock::open(&path).unwrap();
    let writer = lock.try_claim_writer().unwrap();
    writer.publish(1).unwrap();
    let reader = lock.attach_reader().unwrap();
    writer.publish(2).unwrap();
    let short = Duration::from_millis(20);
    let waited = runtime().block_on(writer.wait_readers_past_async(2, short));
    assert!(matches!(waited, Err(Error::Timeout { .. })), "{waited:?}");
    let blocking = writer.wait_readers_past(2, short);
    assert!(
        matches!(blocking, Err(Error::Timeout { .. })),
        "{blocking:?}"
    );
    let watchers = thread_names()
        .iter()
        .filter(|name| name.as_str() == "shmlock-watch")
        .count();
    let line = format!("\n{ANSWER}watchers {watchers}\n");
    // Straight to the descriptor, past the harness's capture of `println!`.
    std::io::Write::write_all(&mut std::io::stdout().lock(), line.as_bytes()).unwrap();
    drop(reader);
}

/// Issue 14, item 9: the async form watched its own member (the blocking form did not),
/// holding a watcher thread until the member unregistered. Both decide in one place now.
#[test]
fn the_async_wait_for_readers_starts_no_watcher_on_its_own_member() {
    let (_dir, path) = lock_file();
    let out = Command::new(std::env::current_exe().unwrap())
        .args(["own_member_wait_process", "--exact", "--nocapture"])
        .env("SHMLOCK_ASYNC_OWN_WATCH", &path)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains(&format!("{ANSWER}watchers 0")),
        "a wait for this process's own readers started a death watcher on its own member: {text}"
    );
}
