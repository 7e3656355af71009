//! Failover latency, over many trials, with LMDB's writer recovery as the anchor:
//!
//! * `shmlock kill`: time from the `kill(SIGKILL)` of the owner process to the moment a
//!   claimant that was already asleep in `claim_writer(timeout)` holds the writer role;
//! * `shmlock handoff`: from the owner's `release()` (clock read just before it, in the
//!   owner) to the waiting claimant's successful claim;
//! * `shmlock lease`: the owner stamps a heartbeat (clock read just before it) and is
//!   SIGSTOPped; a claimant with a 50 ms lease waits; reported is the time beyond the
//!   lease: claim − (heartbeat + 50 ms);
//! * `lmdb kill`: the owner holds an LMDB write transaction (its robust writer mutex) and
//!   is SIGKILLed; a second process's `mdb_txn_begin` blocked on that mutex recovers it
//!   through `EOWNERDEAD` — measured exactly like `shmlock kill`;
//! * `lmdb handoff`: the owner aborts its write transaction; the blocked writer proceeds;
//! * `OFD lock kill`: the floor under `shmlock kill`: a thread blocked in `F_OFD_SETLKW` on
//!   a byte the owner holds, from the owner's SIGKILL to the lock being granted.
//!
//! The owner is a child process (this binary re-executed); the claimant is a thread of the
//! bench process. Before the kill or release the bench waits until the claimant is asleep
//! (shmlock: the page's waiting-claimant count; LMDB: no such count) and then 2 ms more in
//! both cases. Times are `CLOCK_BOOTTIME`, comparable across processes.
//!
//! **publish → a reader in another process** (`--wakeup-trials`), three ways, trials
//! interleaved:
//!
//! * `shmlock publish → wait_published`: a child sleeps in `wait_published(last, 10 s)`;
//!   the bench waits until the page shows a reader waiting, then 2 ms plus a random
//!   0–1 ms, reads the clock and calls `publish`;
//! * `poll every 1 ms`: a second child loops `sleep(1 ms)`, `published()` — what SQLite's
//!   readers effectively do (they look at the `-shm` header's change counter when they
//!   next start a read); it sees the same publish, whose random delay spreads it over the
//!   poll period;
//! * `futex floor`: a child `FUTEX_WAIT`s on a word of a mapped page; the bench stores the
//!   new value and `FUTEX_WAKE`s it: the least a cross-process wake-up costs.
//!
//! Latency = the child's clock when it sees the version − the bench's just before it
//! published.
//!
//! ```text
//! cargo bench --bench failover -- [--trials 200] [--lease-trials 200] [--wakeup-trials 300]
//!                                 [--csv FILE]
//! ```

mod common;

use std::path::Path;
use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering::{Acquire, Release};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::{Lmdb, MappedPage, Percentiles, RoleChild};
use nix::sys::signal::Signal;
use shmlock::{Options, ShmLock, Takeover};

const LEASE: Duration = Duration::from_millis(50);
const SETTLE: Duration = Duration::from_millis(2);
const CLAIM_TIMEOUT: Duration = Duration::from_secs(10);
const POLL: Duration = Duration::from_millis(1);
const WAIT: Duration = Duration::from_secs(10);

fn owner(kind: &str, path: &Path) {
    let mut lines = std::io::stdin().lines();
    match kind {
        "shmlock" => {
            let lock = ShmLock::open(path).expect("open");
            let guard = lock.claim_writer(CLAIM_TIMEOUT).expect("claim");
            common::tell_parent("ready");
            let mut guard = Some(guard);
            while let Some(Ok(line)) = lines.next() {
                let t = common::boottime_ns();
                match line.as_str() {
                    "release" => guard.take().expect("held").release().expect("release"),
                    "heartbeat" => guard.as_ref().expect("held").heartbeat().expect("beat"),
                    other => panic!("unknown owner command {other}"),
                }
                common::tell_parent(&t.to_string());
            }
        }
        "lmdb" => {
            let env = Lmdb::open(path);
            let txn = env.begin_write();
            common::tell_parent("ready");
            let mut txn = Some(txn);
            while let Some(Ok(line)) = lines.next() {
                assert_eq!(line, "release", "unknown owner command");
                let t = common::boottime_ns();
                drop(txn.take());
                common::tell_parent(&t.to_string());
            }
        }
        "ofd" => {
            let file = ofd_file(path);
            assert!(ofd_lock(&file, false), "the OFD lock is free");
            common::tell_parent("ready");
            common::wait_for_stdin_eof();
        }
        other => panic!("unknown owner kind {other}"),
    }
}

fn ofd_file(path: &Path) -> std::fs::File {
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .expect("open the OFD lock file")
}

/// An exclusive OFD lock on byte 0 (`wait`: `F_OFD_SETLKW`). `false` if it is held.
fn ofd_lock(file: &std::fs::File, wait: bool) -> bool {
    use std::os::fd::AsRawFd;
    // SAFETY: `flock` is a plain C struct; all-zero is valid.
    let mut fl: libc::flock = unsafe { std::mem::zeroed() };
    fl.l_type = libc::F_WRLCK as libc::c_short;
    fl.l_whence = libc::SEEK_SET as libc::c_short;
    fl.l_len = 1;
    let cmd = if wait {
        libc::F_OFD_SETLKW
    } else {
        libc::F_OFD_SETLK
    };
    loop {
        // SAFETY: a valid descriptor and a valid `flock`.
        if unsafe { libc::fcntl(file.as_raw_fd(), cmd, &fl) } == 0 {
            return true;
        }
        match std::io::Error::last_os_error().raw_os_error() {
            Some(libc::EINTR) => continue,
            Some(libc::EAGAIN) | Some(libc::EACCES) => return false,
            e => panic!("F_OFD_SETLK: {e:?}"),
        }
    }
}

/// The floor of any liveness taken from kernel file locks: from the owner's SIGKILL to a
/// blocked `F_OFD_SETLKW` on its byte being granted (the kernel drops a dead process's
/// file locks only when it closes its files, after tearing down its address space).
fn ofd_trial(path: &Path) -> i64 {
    let owner = spawn_owner("ofd", path);
    let file = ofd_file(path);
    std::thread::scope(|s| {
        let (started_tx, started_rx) = mpsc::channel();
        let file = &file;
        let claimant = s.spawn(move || {
            started_tx.send(()).expect("send");
            assert!(ofd_lock(file, true));
            common::boottime_ns()
        });
        started_rx.recv().expect("claimant started");
        std::thread::sleep(SETTLE);
        let killed_at = common::boottime_ns();
        owner.signal(Signal::SIGKILL);
        let granted_at = claimant.join().expect("claimant thread");
        owner.reap();
        granted_at as i64 - killed_at as i64
    })
}

/// How the owner lets go.
#[derive(Clone, Copy, PartialEq)]
enum Ending {
    Kill,
    Release,
    /// SIGSTOP after a heartbeat; the claimant uses a lease.
    Stop,
}

fn spawn_owner(kind: &str, path: &Path) -> RoleChild {
    let mut child = RoleChild::spawn("owner", &[kind, path.to_str().expect("utf-8 path")]);
    assert_eq!(child.line(), "ready");
    child
}

/// One shmlock trial: nanoseconds from the owner's end to the claimant's claim (for
/// `Stop`: beyond heartbeat + lease; may be negative if the claim came early).
fn shmlock_trial(lock: &ShmLock, leased: &ShmLock, path: &Path, ending: Ending) -> i64 {
    let mut owner = spawn_owner("shmlock", path);
    let mut heartbeat_at = 0;
    if ending == Ending::Stop {
        owner.send("heartbeat");
        heartbeat_at = owner.line().parse::<u64>().expect("ns");
        owner.signal(Signal::SIGSTOP);
    }
    let claimant = if ending == Ending::Stop { leased } else { lock }.clone();
    let (tx, rx) = mpsc::channel();
    let thread = std::thread::spawn(move || {
        let guard = claimant.claim_writer(CLAIM_TIMEOUT).expect("claim");
        let at = common::boottime_ns();
        tx.send((at, guard.takeover())).expect("send");
        guard.release().expect("release");
    });
    if ending != Ending::Stop {
        let deadline = Instant::now() + Duration::from_secs(5);
        while lock.snapshot().waiting_claimants == 0 {
            assert!(Instant::now() < deadline, "the claimant never waited");
            std::thread::sleep(Duration::from_micros(20));
        }
        std::thread::sleep(SETTLE);
    }
    let ended_at = match ending {
        Ending::Kill => {
            let t = common::boottime_ns();
            owner.signal(Signal::SIGKILL);
            t
        }
        Ending::Release => {
            owner.send("release");
            owner.line().parse::<u64>().expect("ns")
        }
        Ending::Stop => heartbeat_at + LEASE.as_nanos() as u64,
    };
    let (claimed_at, takeover) = rx.recv().expect("claimant result");
    thread.join().expect("claimant thread");
    match (ending, takeover) {
        (Ending::Kill, Some(Takeover::Dead { .. }))
        | (Ending::Release, None)
        | (Ending::Stop, Some(Takeover::LeaseExpired { .. })) => {}
        (_, other) => panic!("unexpected takeover {other:?}"),
    }
    match ending {
        Ending::Kill => owner.reap(),
        Ending::Release => owner.finish(Duration::from_secs(5)),
        Ending::Stop => {
            owner.signal(Signal::SIGKILL);
            owner.reap();
        }
    }
    claimed_at as i64 - ended_at as i64
}

/// One LMDB trial: nanoseconds from the owner's kill or abort to the blocked writer's
/// `mdb_txn_begin` returning.
fn lmdb_trial(env: &Lmdb, dir: &Path, ending: Ending) -> i64 {
    let mut owner = spawn_owner("lmdb", dir);
    std::thread::scope(|s| {
        let (started_tx, started_rx) = mpsc::channel();
        let claimant = s.spawn(move || {
            started_tx.send(()).expect("send");
            let txn = env.begin_write();
            let at = common::boottime_ns();
            drop(txn);
            at
        });
        started_rx.recv().expect("claimant started");
        std::thread::sleep(SETTLE);
        let ended_at = match ending {
            Ending::Kill => {
                let t = common::boottime_ns();
                owner.signal(Signal::SIGKILL);
                t
            }
            Ending::Release => {
                owner.send("release");
                owner.line().parse::<u64>().expect("ns")
            }
            Ending::Stop => unreachable!("LMDB has no lease"),
        };
        let claimed_at = claimant.join().expect("claimant thread");
        claimed_at as i64 - ended_at as i64
    })
}

// ---------------------------------------------------------------------------------------
// publish → a reader in another process.

/// A reader that reports every newer version it sees, with the clock when it saw it.
fn waiter(kind: &str, path: &Path) {
    let mut last = 0;
    let report = |v: u64| common::tell_parent(&format!("{v} {}", common::boottime_ns()));
    match kind {
        "shmlock" => {
            let lock = ShmLock::open(path).expect("open");
            common::tell_parent("ready");
            loop {
                let v = lock.wait_published(last, WAIT).expect("a publish");
                report(v);
                last = v;
            }
        }
        "poll" => {
            let lock = ShmLock::open(path).expect("open");
            common::tell_parent("ready");
            loop {
                std::thread::sleep(POLL);
                let v = lock.published();
                if v > last {
                    report(v);
                    last = v;
                }
            }
        }
        "futex" => {
            let page = MappedPage::open(path);
            let word = page.word(0);
            common::tell_parent("ready");
            loop {
                let v = word.load(Acquire);
                if v > last {
                    report(v);
                    last = v;
                } else {
                    futex_wait(word, v);
                }
            }
        }
        other => panic!("unknown waiter kind {other}"),
    }
}

/// `FUTEX_WAIT` (shared, not private: the word is in a `MAP_SHARED` page) while the low 32
/// bits of `word` are `expected`'s.
fn futex_wait(word: &AtomicU64, expected: u64) {
    let timeout = libc::timespec {
        tv_sec: WAIT.as_secs() as libc::time_t,
        tv_nsec: 0,
    };
    // SAFETY: `word` is a live, aligned word; the kernel reads its first 4 bytes (the low
    // half on this little-endian target); `timeout` outlives the call.
    unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            libc::FUTEX_WAIT,
            expected as u32,
            &timeout as *const libc::timespec,
        )
    };
}

/// `FUTEX_WAKE` every waiter on `word`.
fn futex_wake(word: &AtomicU64) {
    // SAFETY: as in `futex_wait`; FUTEX_WAKE only reads the address.
    unsafe { libc::syscall(libc::SYS_futex, word.as_ptr(), libc::FUTEX_WAKE, i32::MAX) };
}

/// A small xorshift generator for the random part of the settle delay.
struct Jitter(u64);

impl Jitter {
    fn next_below(&mut self, bound_ns: u64) -> Duration {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        Duration::from_nanos(self.0 % bound_ns)
    }
}

struct Waiter {
    child: RoleChild,
}

impl Waiter {
    fn spawn(kind: &str, path: &Path) -> Waiter {
        let mut child = RoleChild::spawn("waiter", &[kind, path.to_str().expect("utf-8 path")]);
        assert_eq!(child.line(), "ready");
        Waiter { child }
    }

    /// The version the child saw and when (ns of `CLOCK_BOOTTIME`).
    fn seen(&mut self) -> (u64, u64) {
        let line = self.child.line();
        let (v, t) = line.split_once(' ').expect("version and time");
        (v.parse().expect("version"), t.parse().expect("ns"))
    }
}

fn wakeup(dir: &Path, trials: usize) -> [Row; 3] {
    let shm = dir.join("wakeup-shm");
    let lock = ShmLock::open(&shm).expect("open");
    let writer = lock.try_claim_writer().expect("claim");
    let floor_path = dir.join("wakeup.page");
    let floor_page = MappedPage::open(&floor_path);
    let floor_word = floor_page.word(0);
    let mut shmlock_waiter = Waiter::spawn("shmlock", &shm);
    let mut poll_waiter = Waiter::spawn("poll", &shm);
    let mut futex_waiter = Waiter::spawn("futex", &floor_path);
    let mut jitter = Jitter(common::boottime_ns() | 1);
    let (mut shm_lat, mut poll_lat, mut futex_lat) = (vec![], vec![], vec![]);
    let mut version = 0;
    for _ in 0..trials {
        // shmlock: the waiter is asleep (its bit is set before it looks), then publish.
        version += 1;
        let deadline = Instant::now() + Duration::from_secs(5);
        while lock.snapshot().waiting_for_publish == 0 {
            assert!(Instant::now() < deadline, "the waiter never waited");
            std::thread::sleep(Duration::from_micros(20));
        }
        std::thread::sleep(SETTLE + jitter.next_below(1_000_000));
        let t = common::boottime_ns();
        writer.publish(version).expect("publish");
        // The poller sees the same publish.
        let (v, woke) = shmlock_waiter.seen();
        assert_eq!(v, version);
        shm_lat.push(woke as i64 - t as i64);
        let (v, seen) = poll_waiter.seen();
        assert_eq!(v, version);
        poll_lat.push(seen as i64 - t as i64);

        // The floor: a raw futex on a shared page.
        std::thread::sleep(SETTLE + jitter.next_below(1_000_000));
        let t = common::boottime_ns();
        floor_word.store(version, Release);
        futex_wake(floor_word);
        let (v, woke) = futex_waiter.seen();
        assert_eq!(v, version);
        futex_lat.push(woke as i64 - t as i64);
    }
    drop(writer);
    for w in [shmlock_waiter, poll_waiter, futex_waiter] {
        drop(w.child);
    }
    [
        Row {
            name: "shmlock publish → wait_published wakes",
            samples: shm_lat,
        },
        Row {
            name: "poll every 1 ms: publish → published() sees it",
            samples: poll_lat,
        },
        Row {
            name: "futex floor: store + FUTEX_WAKE → FUTEX_WAIT returns",
            samples: futex_lat,
        },
    ]
}

struct Row {
    name: &'static str,
    samples: Vec<i64>,
}

/// `(trials, lease_trials, wakeup_trials, csv)`.
fn parse_args() -> (usize, usize, usize, Option<String>) {
    let (mut trials, mut lease_trials, mut wakeup_trials, mut csv) = (200, 200, 300, None);
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        let mut value = || it.next().unwrap_or_else(|| panic!("{a} needs a value"));
        match a.as_str() {
            "--trials" => trials = value().parse().expect("--trials N"),
            "--lease-trials" => lease_trials = value().parse().expect("--lease-trials N"),
            "--wakeup-trials" => wakeup_trials = value().parse().expect("--wakeup-trials N"),
            "--csv" => csv = Some(value()),
            _ => {}
        }
    }
    (trials, lease_trials, wakeup_trials, csv)
}

fn main() {
    if let Some(role) = common::role() {
        match role.as_str() {
            "owner" => owner(&common::arg(1), &common::arg_path(2)),
            "waiter" => waiter(&common::arg(1), &common::arg_path(2)),
            other => panic!("unknown child role {other}"),
        }
        return;
    }
    let (trials, lease_trials, wakeup_trials, csv) = parse_args();
    let dir = common::scratch_dir("failover");
    let path = dir.path().join("failover-shm");
    let lock = ShmLock::open(&path).expect("open");
    let leased = ShmLock::open_with(&path, &Options::new().lease(LEASE)).expect("open");
    let lmdb_dir = dir.path().join("lmdb");
    let env = Lmdb::open(&lmdb_dir);
    let ofd_path = dir.path().join("ofd.lock");

    let mut rows = [
        Row {
            name: "shmlock kill → claim",
            samples: vec![],
        },
        Row {
            name: "lmdb kill → writer (EOWNERDEAD)",
            samples: vec![],
        },
        Row {
            name: "OFD lock kill → granted (floor of kernel-lock liveness)",
            samples: vec![],
        },
        Row {
            name: "shmlock release → claim (handoff)",
            samples: vec![],
        },
        Row {
            name: "lmdb abort → writer (handoff)",
            samples: vec![],
        },
        Row {
            name: "shmlock lease 50 ms, SIGSTOP: beyond lease",
            samples: vec![],
        },
    ];
    // Interleaved, so that the anchors see the same background noise.
    for _ in 0..trials {
        rows[0]
            .samples
            .push(shmlock_trial(&lock, &leased, &path, Ending::Kill));
        rows[1]
            .samples
            .push(lmdb_trial(&env, &lmdb_dir, Ending::Kill));
        rows[2].samples.push(ofd_trial(&ofd_path));
        rows[3]
            .samples
            .push(shmlock_trial(&lock, &leased, &path, Ending::Release));
        rows[4]
            .samples
            .push(lmdb_trial(&env, &lmdb_dir, Ending::Release));
    }
    for _ in 0..lease_trials {
        rows[5]
            .samples
            .push(shmlock_trial(&lock, &leased, &path, Ending::Stop));
    }
    let mut rows = Vec::from(rows);
    if wakeup_trials > 0 {
        rows.extend(wakeup(dir.path(), wakeup_trials));
    }

    println!("# shmlock failover latency (µs)");
    println!("# machine: {}", common::machine_description());
    println!("| scenario | trials | p50 | p99 | max |");
    println!("|---|---:|---:|---:|---:|");
    let mut out = String::from("scenario,trial,ns\n");
    for row in &rows {
        if row.samples.is_empty() {
            continue;
        }
        for (i, ns) in row.samples.iter().enumerate() {
            out += &format!("{},{i},{ns}\n", row.name);
        }
        let p = Percentiles::new(row.samples.iter().map(|&ns| ns as f64 / 1e3).collect());
        println!(
            "| {} | {} | {:.1} | {:.1} | {:.1} |",
            row.name,
            p.len(),
            p.median(),
            p.at(0.99),
            p.max()
        );
    }
    if let Some(path) = csv {
        std::fs::write(&path, out).expect("write the CSV");
        println!("# wrote {path}");
    }
}
