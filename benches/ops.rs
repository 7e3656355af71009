//! Micro-benchmarks of shmlock's operations, each group with its anchors side by side:
//!
//! * `floor`: the raw atomics on a mapped page that the operation cannot beat;
//! * `seed_pwrite`: the seed design, one `pwrite` of a 64-byte header per operation;
//! * `flock_rmw`: `flock(LOCK_EX)` + `pread` + `pwrite` + `flock(LOCK_UN)` per operation;
//! * `robust_mutex`: a robust process-shared pthread mutex in a mapped page guarding a
//!   counter (lock, update, unlock per operation);
//! * `lmdb_*`: LMDB's reader slot (`mdb_txn_begin(MDB_RDONLY)` + `mdb_txn_abort`, with
//!   `MDB_NOTLS`), its writer mutex, its reader-table sweep, its environment open.
//!
//! An attach+detach or a claim+release is two operations for every anchor.
//!
//! `open_existing` is measured three ways: in this process with nobody else having the file
//! open (the "alone" path: exclusive dead-man switch, recovery check, downgrade); in this
//! process while a child holds it (the "joined" path); and in a fresh process, cold: the
//! bench re-executes itself, the child times its first `ShmLock::open` with a monotonic
//! clock and reports it, and criterion sums the children's times (`iter_custom`) — so the
//! process start is not counted, the child's first-touch page faults and the library's
//! one-time set-up are.
//!
//! Run: `cargo bench --bench ops` (criterion's flags apply, e.g. `-- --measurement-time 2`).

mod common;

use std::hint::black_box;
use std::path::Path;
use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering::{AcqRel, Acquire, Relaxed, Release, SeqCst};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{FlockCounter, Lmdb, MappedPage, RobustMutex, RoleChild, SeedHeader};
use criterion::{BenchmarkGroup, Criterion};
use shmlock::ShmLock;

type Group<'a> = BenchmarkGroup<'a, criterion::measurement::WallTime>;

/// The per-group anchors, each in its own file under one scratch directory.
struct Anchors {
    page: MappedPage,
    seed: SeedHeader,
    flock: FlockCounter,
    mutex: RobustMutex,
}

impl Anchors {
    fn new(dir: &Path) -> Anchors {
        Anchors {
            page: MappedPage::open(&dir.join("floor.page")),
            seed: SeedHeader::open(&dir.join("seed.hdr")),
            flock: FlockCounter::open(&dir.join("flock.ctr")),
            mutex: RobustMutex::open(&dir.join("mutex.page"), true),
        }
    }
}

fn attach_detach(c: &mut Criterion, dir: &Path) {
    let lock = ShmLock::open(dir.join("attach-shm")).expect("open");
    // Something published, as in an engine (attach pins it).
    lock.try_claim_writer()
        .expect("claim")
        .publish(1)
        .expect("publish");
    let mut a = Anchors::new(dir);
    let lmdb = Lmdb::open(&dir.join("lmdb-attach"));
    let lmdb_tls = Lmdb::open_tls(&dir.join("lmdb-attach-tls"));
    let mut lmdb_read = lmdb_tls.read_txn();
    let replica_page = MappedPage::open(&dir.join("replica.page"));
    let replica = PinReplica::new(&replica_page);
    let mut g = c.benchmark_group("attach_detach");
    g.bench_function("shmlock", |b| {
        b.iter(|| drop(black_box(lock.attach_reader().expect("attach"))))
    });
    // The borrowing guard: the same pin, no reference count.
    g.bench_function("shmlock_ref", |b| {
        b.iter(|| drop(black_box(lock.attach_reader_ref().expect("attach"))))
    });
    // The reader count of the design: one word on a line of our own.
    let word = a.page.word(64 * 3);
    g.bench_function("floor", |b| {
        b.iter(|| {
            black_box(word.fetch_add(1, AcqRel));
            black_box(word.fetch_sub(1, Release));
        })
    });
    // Ablation: the library's atomic operations replayed without the library, adding one
    // ingredient at a time (see `PinReplica`).
    g.bench_function("replica_member_word", |b| {
        b.iter(|| {
            replica.detach(
                replica.attach(Ingredients::MEMBER_WORD),
                Ingredients::MEMBER_WORD,
            )
        })
    });
    g.bench_function("replica_plus_published", |b| {
        b.iter(|| {
            replica.detach(
                replica.attach(Ingredients::PUBLISHED),
                Ingredients::PUBLISHED,
            )
        })
    });
    g.bench_function("replica_plus_local_slot", |b| {
        b.iter(|| {
            replica.detach(
                replica.attach(Ingredients::LOCAL_SLOT),
                Ingredients::LOCAL_SLOT,
            )
        })
    });
    // The same without the Arc, and with the local pin kept in a slot only this thread
    // writes (a plain store, no CAS): the atomic operations of the design change
    // BENCHMARKS.md proposes.
    g.bench_function("replica_thread_slot", |b| {
        b.iter(|| {
            replica.detach(
                replica.attach(Ingredients::THREAD_SLOT),
                Ingredients::THREAD_SLOT,
            )
        })
    });
    g.bench_function("replica_plus_arc", |b| {
        b.iter(|| replica.detach(replica.attach(Ingredients::ALL), Ingredients::ALL))
    });
    bench_anchor_pairs(&mut g, &mut a);
    // LMDB's reader pin, three ways: with MDB_NOTLS (a slot claimed under the reader mutex
    // per transaction), with its default per-thread slot (begin stamps the txnid), and
    // with a kept transaction (renew + reset: no allocation, LMDB at its cheapest).
    g.bench_function("lmdb_reader_slot", |b| b.iter(|| lmdb.reader_slot()));
    g.bench_function("lmdb_begin_abort_tls", |b| {
        b.iter(|| lmdb_tls.reader_slot())
    });
    g.bench_function("lmdb_renew_reset", |b| b.iter(|| lmdb_read.renew_reset()));
    g.finish();
}

/// Which of the library's ingredients of attach+detach a [`PinReplica`] replays.
#[derive(Clone, Copy)]
struct Ingredients {
    /// The two loads of `published` (before and after the pin) and the detach's look at
    /// the pin-waiter bitmap (two words).
    published: bool,
    /// The process-local pin slot: its CAS on attach and on detach, and the loads before.
    local_slot: bool,
    /// The guard's `Arc` clone on attach and drop on detach.
    arc: bool,
    /// The local pin in a slot of the calling thread's own: a plain load and store instead
    /// of the shared local slot's CAS.
    thread_slot: bool,
}

impl Ingredients {
    const MEMBER_WORD: Ingredients = Ingredients {
        published: false,
        local_slot: false,
        arc: false,
        thread_slot: false,
    };
    const THREAD_SLOT: Ingredients = Ingredients {
        thread_slot: true,
        ..Ingredients::PUBLISHED
    };
    const PUBLISHED: Ingredients = Ingredients {
        published: true,
        ..Ingredients::MEMBER_WORD
    };
    const LOCAL_SLOT: Ingredients = Ingredients {
        local_slot: true,
        ..Ingredients::PUBLISHED
    };
    const ALL: Ingredients = Ingredients {
        arc: true,
        ..Ingredients::LOCAL_SLOT
    };
}

/// The atomic operations of `attach_reader()` + drop in the steady state (one guard at a
/// time, `published` unchanged), with the library's orderings, on a mapped page without the
/// library: `published` and the pin-waiter bitmap on a line every process reads, the
/// member's pin word (`readers << 48 | oldest`) on a line of its own, the pin slot and its
/// `used` count in process memory, and an `Arc` standing for the guard's handle.
struct PinReplica<'a> {
    published: &'a AtomicU64,
    pin_waiters: [&'a AtomicU64; 2],
    pins: &'a AtomicU64,
    used: AtomicU64,
    slot: Box<AtomicU64>,
    handle: Arc<u64>,
}

const PIN_VERSION_BITS: u32 = 48;
const PIN_NONE: u64 = (1 << PIN_VERSION_BITS) - 1;

impl<'a> PinReplica<'a> {
    fn new(page: &'a MappedPage) -> PinReplica<'a> {
        let published = page.word(64 * 2);
        published.store(1, Release);
        PinReplica {
            published,
            pin_waiters: [page.word(64 * 2 + 8), page.word(64 * 2 + 16)],
            pins: page.word(64 * 5),
            used: AtomicU64::new(1),
            slot: Box::new(AtomicU64::new(0)),
            handle: Arc::new(0),
        }
    }

    #[inline]
    fn published(&self, with: Ingredients) -> u64 {
        if with.published {
            self.published.load(SeqCst) & PIN_NONE
        } else {
            1
        }
    }

    /// Attach: read `published`, pin it in the local slot, make the pin visible in the
    /// member's word, re-read `published`, clone the handle.
    #[inline]
    fn attach(&self, with: Ingredients) -> (u64, Option<Arc<u64>>) {
        let version = self.published(with);
        if with.local_slot {
            black_box(self.used.load(Acquire));
            let free = self.slot.load(Acquire);
            assert_eq!(free >> PIN_VERSION_BITS, 0);
            let word = self.slot.load(Acquire);
            self.slot
                .compare_exchange(word, 1 << PIN_VERSION_BITS | version, Release, Relaxed)
                .expect("the slot is ours");
        }
        if with.thread_slot {
            let word = self.slot.load(Relaxed);
            self.slot
                .store((word + (1 << PIN_VERSION_BITS)) | version, Release);
        }
        let mut word = self.pins.load(Acquire);
        loop {
            let readers = word >> PIN_VERSION_BITS;
            let oldest = if readers == 0 {
                PIN_NONE
            } else {
                word & PIN_NONE
            };
            let new = (readers + 1) << PIN_VERSION_BITS | oldest.min(version);
            match self.pins.compare_exchange(word, new, SeqCst, Acquire) {
                Ok(_) => break,
                Err(now) => word = now,
            }
        }
        assert_eq!(self.published(with), version);
        (version, with.arc.then(|| Arc::clone(&self.handle)))
    }

    /// Detach: drop the local pin, lower the member's reader count (raising its oldest),
    /// look for waiting writers, drop the handle.
    #[inline]
    fn detach(&self, (version, handle): (u64, Option<Arc<u64>>), with: Ingredients) {
        if with.local_slot {
            black_box(self.used.load(Acquire));
            let word = self.slot.load(Acquire);
            assert_eq!(word & PIN_NONE, version);
            self.slot
                .compare_exchange(word, word - (1 << PIN_VERSION_BITS), Release, Relaxed)
                .expect("the slot is ours");
        }
        if with.thread_slot {
            let word = self.slot.load(Relaxed);
            assert_eq!(word & PIN_NONE, version);
            self.slot.store(word - (1 << PIN_VERSION_BITS), Release);
        }
        let mut word = self.pins.load(Acquire);
        loop {
            let left = (word >> PIN_VERSION_BITS) - 1;
            let new = left << PIN_VERSION_BITS | if left == 0 { PIN_NONE } else { word & PIN_NONE };
            match self.pins.compare_exchange(word, new, SeqCst, Acquire) {
                Ok(_) => break,
                Err(now) => word = now,
            }
        }
        if with.published && self.pin_waiters.iter().any(|w| w.load(SeqCst) != 0) {
            unreachable!("nobody waits in this bench");
        }
        drop(black_box(handle));
    }
}

fn publish(c: &mut Criterion, dir: &Path) {
    let lock = ShmLock::open(dir.join("publish-shm")).expect("open");
    let writer = lock.try_claim_writer().expect("claim");
    let a = Anchors::new(dir);
    let mut g = c.benchmark_group("publish");
    let mut version = lock.published();
    g.bench_function("shmlock", |b| {
        b.iter(|| {
            version += 1;
            writer.publish(version).expect("publish")
        })
    });
    // What a publish must do at least: store the version, check the owner word.
    let published = a.page.word(64 * 4);
    let owner = a.page.word(64 * 2);
    let waiters = [a.page.word(64 * 4 + 8), a.page.word(64 * 4 + 16)];
    owner.store(7, Relaxed);
    let mut floor_version = 0u64;
    g.bench_function("floor", |b| {
        b.iter(|| {
            floor_version += 1;
            published.store(black_box(floor_version), Release);
            black_box(owner.load(Acquire) == 7)
        })
    });
    // The same with the SeqCst store a handshake with the readers' re-read needs (`xchg`).
    g.bench_function("floor_seqcst", |b| {
        b.iter(|| {
            floor_version += 1;
            published.store(black_box(floor_version), SeqCst);
            black_box(owner.load(SeqCst) == 7)
        })
    });
    // The library's atomic operations without the library: load the word, check the
    // owner, CAS the new version in, look at the publish-waiter bitmap (two words).
    g.bench_function("replica_cas", |b| {
        b.iter(|| {
            floor_version += 1;
            let word = published.load(SeqCst);
            assert!(owner.load(SeqCst) == 7 && word < floor_version);
            published
                .compare_exchange(word, floor_version, SeqCst, SeqCst)
                .expect("one publisher");
            black_box(waiters.iter().any(|w| w.load(SeqCst) != 0))
        })
    });
    g.bench_function("robust_mutex", |b| {
        b.iter(|| {
            floor_version += 1;
            a.mutex.lock();
            a.mutex.counter().store(floor_version, Relaxed);
            a.mutex.unlock();
        })
    });
    g.finish();
    drop(writer);
}

/// The two-operation anchors (seed, flock, robust mutex) for a paired operation.
fn bench_anchor_pairs(g: &mut Group<'_>, a: &mut Anchors) {
    g.bench_function("seed_pwrite", |b| {
        b.iter(|| {
            a.seed.write(2, 1);
            a.seed.write(2, u64::MAX);
        })
    });
    g.bench_function("flock_rmw", |b| {
        b.iter(|| {
            a.flock.update(1);
            a.flock.update(-1);
        })
    });
    g.bench_function("robust_mutex", |b| {
        b.iter(|| {
            a.mutex.update(1);
            a.mutex.update(-1);
        })
    });
}

fn heartbeat(c: &mut Criterion, dir: &Path) {
    let lock = ShmLock::open(dir.join("heartbeat-shm")).expect("open");
    let writer = lock.try_claim_writer().expect("claim");
    let mut a = Anchors::new(dir);
    let mut g = c.benchmark_group("heartbeat");
    g.bench_function("shmlock", |b| {
        b.iter(|| writer.heartbeat().expect("heartbeat"))
    });
    // What a heartbeat must do at least: read the clock, stamp it, check the owner word.
    let stamp = a.page.word(64 * 4);
    let owner = a.page.word(64 * 2);
    owner.store(7, Relaxed);
    g.bench_function("floor", |b| {
        b.iter(|| {
            stamp.store(black_box(11), Release);
            black_box(owner.load(Acquire) == 7)
        })
    });
    g.bench_function("floor_with_clock", |b| {
        b.iter(|| {
            stamp.store(common::boottime_ns(), Release);
            black_box(owner.load(Acquire) == 7)
        })
    });
    // Every anchor's heartbeat stamps the clock too: that is what a heartbeat is.
    g.bench_function("seed_pwrite", |b| {
        b.iter(|| a.seed.set(3, common::boottime_ns()))
    });
    g.bench_function("flock_rmw", |b| {
        b.iter(|| a.flock.update(common::boottime_ns() as i64))
    });
    g.bench_function("robust_mutex", |b| {
        b.iter(|| {
            let now = common::boottime_ns();
            a.mutex.lock();
            a.mutex.counter().store(now, Relaxed);
            a.mutex.unlock();
        })
    });
    g.finish();
    drop(writer);
}

fn claim_release(c: &mut Criterion, dir: &Path) {
    let lock = ShmLock::open(dir.join("claim-shm")).expect("open");
    let mut a = Anchors::new(dir);
    let lmdb = Lmdb::open(&dir.join("lmdb-claim"));
    let mut g = c.benchmark_group("claim_release");
    g.bench_function("shmlock", |b| {
        b.iter(|| {
            lock.try_claim_writer()
                .expect("claim")
                .release()
                .expect("release")
        })
    });
    // The borrowing guard: the same claim, no reference count.
    g.bench_function("shmlock_ref", |b| {
        b.iter(|| {
            lock.try_claim_writer_ref()
                .expect("claim")
                .release()
                .expect("release")
        })
    });
    let owner = a.page.word(64 * 2);
    g.bench_function("floor", |b| {
        b.iter(|| {
            black_box(owner.compare_exchange(0, black_box(0x105), AcqRel, Relaxed)).ok();
            owner.store(0, Release);
        })
    });
    bench_anchor_pairs(&mut g, &mut a);
    // The robust mutex as the writer lock itself.
    g.bench_function("robust_mutex_trylock", |b| {
        b.iter(|| {
            assert!(a.mutex.try_lock());
            a.mutex.unlock();
        })
    });
    // LMDB's writer claim: its writer mutex plus a write transaction's set-up.
    g.bench_function("lmdb_write_txn", |b| b.iter(|| drop(lmdb.begin_write())));
    g.finish();
}

fn snapshot(c: &mut Criterion, dir: &Path) {
    let lock = ShmLock::open(dir.join("snapshot-shm")).expect("open");
    let _reader = lock.attach_reader().expect("attach");
    let mut a = Anchors::new(dir);
    let lmdb = Lmdb::open(&dir.join("lmdb-snapshot"));
    let mut g = c.benchmark_group("snapshot");
    g.bench_function("shmlock", |b| b.iter(|| black_box(lock.snapshot())));
    // Reading every word of a page: the floor of any in-page status read.
    g.bench_function("floor", |b| {
        b.iter(|| {
            (0..512)
                .map(|i| a.page.word(i * 8).load(Acquire))
                .fold(0u64, u64::wrapping_add)
        })
    });
    g.bench_function("seed_pread", |b| b.iter(|| black_box(a.seed.read())));
    g.bench_function("flock_read", |b| b.iter(|| black_box(a.flock.read())));
    // A consistent read of the shared state under the mutex: the counter alone (the least
    // it can be), and the whole page (what a status of every member needs).
    g.bench_function("robust_mutex_counter", |b| {
        b.iter(|| {
            a.mutex.lock();
            black_box(a.mutex.counter().load(Relaxed));
            a.mutex.unlock();
        })
    });
    g.bench_function("robust_mutex_page", |b| {
        b.iter(|| {
            a.mutex.lock();
            let sum = (0..512)
                .map(|i| a.page.word(i * 8).load(Relaxed))
                .fold(0u64, u64::wrapping_add);
            a.mutex.unlock();
            black_box(sum)
        })
    });
    g.bench_function("lmdb_reader_check", |b| {
        b.iter(|| black_box(lmdb.reader_check()))
    });
    g.finish();
    a.seed.write(0, 0);
}

fn open_existing(c: &mut Criterion, dir: &Path) {
    let shm = dir.join("open-shm");
    drop(ShmLock::open(&shm).expect("create"));
    let floor_path = dir.join("open.page");
    drop(MappedPage::open(&floor_path));
    let seed_path = dir.join("open.hdr");
    SeedHeader::open(&seed_path).write(0, 1);
    let lmdb_dir = dir.join("lmdb-open");
    drop(Lmdb::open(&lmdb_dir));

    let mut g = c.benchmark_group("open_existing");
    g.bench_function("shmlock_alone", |b| {
        b.iter(|| drop(black_box(ShmLock::open(&shm).expect("open"))))
    });
    {
        let holder = hold(&shm);
        g.bench_function("shmlock_joined", |b| {
            b.iter(|| drop(black_box(ShmLock::open(&shm).expect("open"))))
        });
        g.bench_function("shmlock_fresh_process_joined", |b| {
            b.iter_custom(|iters| fresh_process_opens("shmlock", &shm, iters))
        });
        holder.finish(Duration::from_secs(5));
    }
    g.bench_function("shmlock_fresh_process_alone", |b| {
        b.iter_custom(|iters| fresh_process_opens("shmlock", &shm, iters))
    });
    g.bench_function("floor_open_mmap", |b| {
        b.iter(|| drop(black_box(MappedPage::open(&floor_path))))
    });
    g.bench_function("floor_open_mmap_fresh_process", |b| {
        b.iter_custom(|iters| fresh_process_opens("floor", &floor_path, iters))
    });
    g.bench_function("seed_open_pread", |b| {
        b.iter(|| black_box(SeedHeader::open(&seed_path).read()))
    });
    g.bench_function("lmdb_env_open", |b| {
        b.iter(|| drop(black_box(Lmdb::open(&lmdb_dir))))
    });
    g.bench_function("lmdb_env_open_fresh_process", |b| {
        b.iter_custom(|iters| fresh_process_opens("lmdb", &lmdb_dir, iters))
    });
    g.finish();
}

/// A child that keeps `shm` open until its stdin closes.
fn hold(shm: &Path) -> RoleChild {
    let mut child = RoleChild::spawn("hold", &[shm.to_str().expect("utf-8 path")]);
    assert_eq!(child.line(), "ready");
    child
}

/// Sum over `iters` fresh processes of the time each took for its first open of `what`.
fn fresh_process_opens(what: &str, path: &Path, iters: u64) -> Duration {
    let path = path.to_str().expect("utf-8 path");
    (0..iters)
        .map(|_| {
            let mut child = RoleChild::spawn("open-once", &[what, path]);
            let ns: u64 = child.line().parse().expect("nanoseconds");
            child.finish(Duration::from_secs(5));
            Duration::from_nanos(ns)
        })
        .sum()
}

fn child_main(role: &str) {
    match role {
        "hold" => {
            let _lock = ShmLock::open(common::arg_path(1)).expect("open");
            common::tell_parent("ready");
            common::wait_for_stdin_eof();
        }
        "open-once" => {
            let what = common::arg(1);
            let path = common::arg_path(2);
            let start = Instant::now();
            let elapsed = match what.as_str() {
                "shmlock" => {
                    let lock = ShmLock::open(&path).expect("open");
                    let t = start.elapsed();
                    drop(lock);
                    t
                }
                "floor" => {
                    let page = MappedPage::open(&path);
                    black_box(page.word(0).load(Acquire));
                    start.elapsed()
                }
                "lmdb" => {
                    let env = Lmdb::open(&path);
                    let t = start.elapsed();
                    drop(env);
                    t
                }
                other => panic!("unknown open-once kind {other}"),
            };
            common::tell_parent(&elapsed.as_nanos().to_string());
        }
        other => panic!("unknown child role {other}"),
    }
}

fn main() {
    if let Some(role) = common::role() {
        child_main(&role);
        return;
    }
    let dir = common::scratch_dir("ops");
    let mut c = Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .sample_size(30)
        .configure_from_args();
    attach_detach(&mut c, dir.path());
    publish(&mut c, dir.path());
    heartbeat(&mut c, dir.path());
    claim_release(&mut c, dir.path());
    snapshot(&mut c, dir.path());
    open_existing(&mut c, dir.path());
    c.final_summary();
}
