//! The loom platform for shmlock's models: the world the protocol runs in under loom.
//!
//! The models in `tests/models.rs` drive the library's own protocol code
//! (`shmlock::protocol`, `shmlock::page`) — there is no copy of it here. What this crate
//! supplies is everything the protocol takes from the world, through the platform seam
//! (`shmlock::platform`):
//!
//! * **The page**: a heap [`Page`] of [`StepWord`]s. A `StepWord` *is* a
//!   `loom::sync::atomic::AtomicU64` (every operation goes to shmlock's own `Word` impl for
//!   it, the one the `loom` feature adds) plus two pieces of instrumentation: it counts the
//!   calling process's side-effecting steps, so a process can die at a chosen step, and it
//!   logs every value written to the words a model watches (the owner word always; others
//!   with [`World::log_writes_to`]), so models can check a word's whole history.
//! * **The kernel's OFD lock table**: [`World`] holds one loom mutex over the member byte
//!   locks and the dead-man-switch byte, which is what the kernel's per-inode lock list is.
//!   Each modelled process is a [`Process`] and owns the locks it takes.
//! * **A process's threads**: [`Process::thread`] gives another loom thread of the same
//!   process: the same pid, member locks, `protocol::Local` (pin slots and heartbeat stamps,
//!   [`PIN_SLOTS`] slots) and process-local waiter counts (a loom mutex).
//! * **Process death**: [`Process::run`] runs a process's script; with a [`CrashPoint`] the
//!   process stops just before its n-th side-effecting step (a store, CAS, fetch-add/sub/or/
//!   and or lock operation) and its locks are released, as the kernel does at exit. A crash
//!   point beyond the end of the script means "dies right after its last step".
//!   [`for_each_crash_point`] runs a model once per crash point until the point lies past
//!   the script's end in every explored interleaving. [`Process::kill`] is a death between
//!   two steps.
//! * **The clock**: a loom atomic the test sets ([`World::set_clock`]); `now()` reads it.
//! * **Waiting**: `wait` is a futex: under the lock-table mutex it compares its word and
//!   queues itself, then blocks until a `wake_all` on that word takes it off the queue;
//!   `wake_all` returns how many it took off (the protocol repairs dead sleepers' bits when
//!   that is 0). [`World::no_more_wake_ups`] turns a sleeper nobody will wake into a
//!   "lost wake-up" failure.
//! * **Death watchers**: a process made with [`Process::watching_deaths`] answers
//!   `watch_member` as `sys` does: a new thread of the process (one per member identity)
//!   blocks until the member's lock is free, then calls `protocol::wake_after_death`.
//!   Other processes' `watch_member` does nothing (the seam allows it: waiters then poll).
//! * **Mutations**: `mutant()` answers with the [`Mutant`] the model was built with, which is
//!   how a model is run against a deliberately broken protocol without editing a file.

use std::cell::RefCell;
use std::sync::atomic::Ordering::{self, SeqCst};
use std::time::Duration;

use loom::sync::atomic::AtomicU64 as LoomU64;
use loom::sync::{Arc, Condvar, Mutex};

use shmlock::page::{owner_generation, owner_slot, OwnerSlot, Page, MEMBER_CAPACITY};
use shmlock::platform::{LoomPair, Mutant, Platform, WaitKind, Word, WordPair};
use shmlock::protocol::members::{self, Identity, Reaped, Registration};
use shmlock::protocol::{self, Local};

pub use shmlock;

/// Generation seed every modelled page starts from (what `initialise` gets from the clock).
pub const SEED: u64 = 1000;

/// A loom `AtomicU64` that counts the calling process's steps and logs owner-word writes.
pub struct StepWord(LoomU64);

impl Word for StepWord {
    type Pair = StepPair;

    fn new(value: u64) -> Self {
        StepWord(<LoomU64 as Word>::new(value))
    }

    fn load(&self, order: Ordering) -> u64 {
        Word::load(&self.0, order)
    }

    fn store(&self, value: u64, order: Ordering) {
        step();
        Word::store(&self.0, value, order);
        self.log_write(value);
    }

    fn compare_exchange(
        &self,
        current: u64,
        new: u64,
        success: Ordering,
        failure: Ordering,
    ) -> Result<u64, u64> {
        step();
        let result = Word::compare_exchange(&self.0, current, new, success, failure);
        if result.is_ok() {
            self.log_write(new);
        }
        result
    }

    fn fetch_add(&self, value: u64, order: Ordering) -> u64 {
        step();
        let before = Word::fetch_add(&self.0, value, order);
        self.log_write(before.wrapping_add(value));
        before
    }

    fn seq_cst_order_point() {
        <LoomU64 as Word>::seq_cst_order_point()
    }

    fn fetch_or(&self, value: u64, order: Ordering) -> u64 {
        step();
        let before = Word::fetch_or(&self.0, value, order);
        self.log_write(before | value);
        before
    }

    fn fetch_and(&self, value: u64, order: Ordering) -> u64 {
        step();
        let before = Word::fetch_and(&self.0, value, order);
        self.log_write(before & value);
        before
    }
}

impl StepWord {
    /// Record `value` if this word is one the model logs (the owner word always; others
    /// the model chose with [`World::log_writes_to`]). Loom runs one thread at a time, so
    /// the log is the order in which the writes ran. That is the word's modification order
    /// as long as every write that races with another is a read-modify-write (a CAS reads
    /// the latest value), which is how the protocol writes the owner word and `published`.
    /// A plain store (only the `ClaimWithoutCas` and `ReleaseWithoutOwnerCheck` mutants
    /// make one concurrently) may be placed earlier in loom's modification order than the
    /// log says; the log then shows the order a sequentially consistent machine would have
    /// run them in.
    fn log_write(&self, value: u64) {
        log_write_at(self as *const StepWord as usize, value);
    }
}

/// The page's 16-byte word (the owner word and `published`): shmlock's loom pair (a loom
/// mutex over two halves: loom has no 128-bit atomics, see `platform::LoomPair`) that counts
/// the calling process's steps as [`StepWord`] does and logs each change of a half: the
/// owner half always (as [`OWNER`]), the published half once a model asks
/// ([`World::log_published_writes`]). A write that leaves a half as it was (a publish's
/// owner half, a claim's published half) is not logged for that half.
pub struct StepPair(LoomPair);

impl StepPair {
    fn log_halves(&self, before: (u64, u64), after: (u64, u64), always_owner: bool) {
        let me = self as *const StepPair as usize;
        if always_owner || before.0 != after.0 {
            log_write_at(me, after.0);
        }
        if before.1 != after.1 {
            log_write_at(me + 1, after.1);
        }
    }
}

impl WordPair for StepPair {
    fn new(owner: u64, published: u64) -> Self {
        StepPair(LoomPair::new(owner, published))
    }
    fn load_owner(&self, order: Ordering) -> u64 {
        self.0.load_owner(order)
    }
    fn load_published(&self, order: Ordering) -> u64 {
        self.0.load_published(order)
    }
    fn store(&self, owner: u64, published: u64, order: Ordering) {
        step();
        self.0.store(owner, published, order);
        // A store replaces both halves; log the owner half always (as a plain store to
        // the owner word was), the published half when a model logs it.
        self.log_halves((owner, !published), (owner, published), true);
    }
    fn compare_exchange(
        &self,
        current: (u64, u64),
        new: (u64, u64),
        success: Ordering,
        failure: Ordering,
    ) -> Result<(u64, u64), (u64, u64)> {
        step();
        let result = self.0.compare_exchange(current, new, success, failure);
        if result.is_ok() {
            self.log_halves(current, new, false);
        }
        result
    }
    fn is_lock_free() -> bool {
        true
    }
}

/// Record `value` as written at `address` if a model logs that address (see
/// [`StepWord::log_write`]).
fn log_write_at(address: usize, value: u64) {
    WRITE_LOG.with(|log| {
        let mut log = log.borrow_mut();
        if let Some(&(_, word)) = log.words.iter().find(|(a, _)| *a == address) {
            let by = current_pid();
            log.writes.push(LoggedWrite { word, by, value });
        }
    });
}

/// One value written to the owner word, and which process wrote it (0: the model's setup).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OwnerWrite {
    /// The writing process's pid.
    pub by: u32,
    /// The value written.
    pub value: u64,
}

/// One entry of the write log: a value written to a logged word, or a mark a model made
/// ([`World::mark`]) to place one of its own events in the same order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LoggedWrite {
    /// The logged word's name (or the mark's).
    pub word: &'static str,
    /// The writing process's pid (0: the model's setup).
    pub by: u32,
    /// The value written (or the mark's value).
    pub value: u64,
}

#[derive(Default)]
struct WriteLog {
    /// Addresses of the logged words, with their names.
    words: Vec<(usize, &'static str)>,
    writes: Vec<LoggedWrite>,
}

std::thread_local! {
    // One loom execution runs all its modelled threads on one OS thread, one at a time, so
    // an OS-thread-local is "per execution". Observation only: the protocol never reads it.
    static WRITE_LOG: RefCell<WriteLog> = RefCell::new(WriteLog::default());
}

/// The calling loom thread's process: who it is and where it is to die.
struct ProcessContext {
    pid: u32,
    crash: Option<CrashPoint>,
    steps: usize,
}

loom::thread_local! {
    static CONTEXT: RefCell<Option<ProcessContext>> = RefCell::new(None);
}

fn current_pid() -> u32 {
    CONTEXT.with(|c| c.borrow().as_ref().map_or(0, |c| c.pid))
}

/// The panic payload that stops a process at its crash point.
struct Crashed;

/// Count one side-effecting step of the calling process; die here if it is the chosen one.
fn step() {
    let die = CONTEXT.with(|c| {
        let mut c = c.borrow_mut();
        let Some(c) = c.as_mut() else { return false };
        if let Some(crash) = &c.crash {
            if c.steps == crash.step {
                crash.reached.store(true, SeqCst);
                return true;
            }
        }
        c.steps += 1;
        false
    });
    if die {
        std::panic::panic_any(Crashed);
    }
}

/// Where a process dies: just before its `step`-th side-effecting step (counted from 0).
#[derive(Clone, Debug)]
pub struct CrashPoint {
    /// Steps the process completes before it dies.
    pub step: usize,
    reached: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

/// Most crash points a model may have; a model with more is a mistake.
const MAX_CRASH_POINTS: usize = 64;

/// Run `model` once per crash point 0, 1, 2 … until a run in which no explored
/// interleaving reached the crash point before the script ended (that last run is the
/// process dying right after its last step). Returns the number of runs.
pub fn for_each_crash_point(mut model: impl FnMut(CrashPoint)) -> usize {
    for step in 0..MAX_CRASH_POINTS {
        let reached = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        model(CrashPoint {
            step,
            reached: reached.clone(),
        });
        if !reached.load(SeqCst) {
            return step + 1;
        }
    }
    panic!("more than {MAX_CRASH_POINTS} crash points: the script is too long for a model");
}

/// The only crash point of a model run with `LOOM_CRASH_POINT` set, or `None`.
pub fn crash_point_from_env() -> Option<usize> {
    std::env::var("LOOM_CRASH_POINT")
        .ok()
        .map(|v| v.parse().expect("LOOM_CRASH_POINT must be a step number"))
}

/// Run `model` once per crash point in `steps` (for scripts too long to crash at every
/// step), or only at the one named by `LOOM_CRASH_POINT`.
pub fn chosen_crash_points(steps: &[usize], mut model: impl FnMut(CrashPoint)) {
    let steps = crash_point_from_env().map_or(steps.to_vec(), |step| vec![step]);
    for step in steps {
        model(CrashPoint {
            step,
            reached: Default::default(),
        });
    }
}

/// Like [`for_each_crash_point`], or only the crash point named by `LOOM_CRASH_POINT`.
pub fn crash_points(model: impl FnMut(CrashPoint)) -> usize {
    match crash_point_from_env() {
        Some(step) => {
            let mut model = model;
            model(CrashPoint {
                step,
                reached: Default::default(),
            });
            1
        }
        None => for_each_crash_point(model),
    }
}

/// The kernel's lock table for the lock file (who holds each member byte, and the
/// dead-man-switch byte: one exclusive holder, or a set of shared holders), and the
/// kernel's futex queue.
struct LockTable {
    members: [u32; MEMBER_CAPACITY],
    switch_exclusive: u32,
    /// Bit `pid` set: process `pid` holds the switch shared.
    switch_shared: u64,
    /// Threads asleep in [`Platform::wait`]: the address of the word each sleeps on, and
    /// its ticket. A wake-up takes a sleeper off this queue, as `FUTEX_WAKE` does.
    sleepers: Vec<(usize, u64)>,
    next_ticket: u64,
    /// Death watchers started by [`Platform::watch_member`]: the member each watches, and
    /// whether it has done its work (or was shut down).
    watchers: Vec<(usize, bool)>,
    /// Set by [`World::shut_down_watchers`]: watchers of members that never died stop.
    shut_down: bool,
    /// Set by [`World::no_more_wake_ups`]: nothing but a death watcher will wake a sleeper
    /// any more.
    no_more_wake_ups: bool,
}

impl LockTable {
    /// Whether a death watcher still owes a wake-up: it watches a member that has died and
    /// has not yet woken the sleepers.
    fn watcher_owes_wake_up(&self) -> bool {
        self.watchers
            .iter()
            .any(|&(index, done)| !done && self.members[index] == 0)
    }
}

/// The boot every modelled page was initialised in (`Header`'s boot record).
pub const BOOT: u64 = 1;

/// Everything shared by the modelled processes of one execution.
pub struct World {
    /// The page, on the heap.
    pub page: Box<Page<StepWord>>,
    locks: Mutex<LockTable>,
    /// Signalled whenever a lock is let go (unlock, downgrade, death): what a blocked
    /// `F_OFD_SETLKW` (the production death watcher, a waiting opener) wakes on.
    released: Condvar,
    /// What `wait` sleeps on and `wake_all` signals: the futex of the production platform.
    /// `wait` compares its word and queues itself under `locks`, and `wake_all` dequeues
    /// under it, so a wake-up after the compare cannot be lost — as with `FUTEX_WAIT`'s
    /// atomic compare-and-sleep.
    woken: Condvar,
    clock: LoomU64,
    mutant: Option<Mutant>,
    /// The death watchers' threads, joined by [`World::shut_down_watchers`].
    watcher_threads: std::sync::Mutex<Vec<loom::thread::JoinHandle<()>>>,
}

impl World {
    /// A zeroed page (a fresh file that nobody has initialised yet).
    pub fn fresh(mutant: Option<Mutant>) -> Arc<World> {
        let world = Arc::new(World {
            page: Box::new(Page::zeroed()),
            locks: Mutex::new(LockTable {
                members: [0; MEMBER_CAPACITY],
                switch_exclusive: 0,
                switch_shared: 0,
                sleepers: Vec::new(),
                next_ticket: 0,
                watchers: Vec::new(),
                shut_down: false,
                no_more_wake_ups: false,
            }),
            released: Condvar::new(),
            woken: Condvar::new(),
            clock: LoomU64::new(0),
            mutant,
            watcher_threads: Default::default(),
        });
        WRITE_LOG.with(|log| {
            *log.borrow_mut() = WriteLog {
                words: vec![(world.page.pair() as *const StepPair as usize, OWNER)],
                writes: Vec::new(),
            }
        });
        world
    }

    /// A page initialised by `Page::initialise` with generation seed [`SEED`] in boot
    /// [`BOOT`], as the first opener leaves it.
    pub fn initialised(mutant: Option<Mutant>) -> Arc<World> {
        let world = World::fresh(mutant);
        let setup = Process::new(&world, 0);
        world
            .page
            .initialise(&setup, 1, SEED, shmlock::page::ORIGIN_CREATED, BOOT);
        // The history starts at the seed (initialise zeroes the word on its way there).
        let seeded = world.page.pair().load_owner(SeqCst);
        WRITE_LOG.with(|log| {
            log.borrow_mut().writes = vec![LoggedWrite {
                word: OWNER,
                by: 0,
                value: seeded,
            }]
        });
        world
    }

    /// Set the modelled monotonic clock.
    pub fn set_clock(&self, now: u64) {
        self.clock.store(now, SeqCst);
    }

    /// Log every write to `word` (a word of this world's page) under `name`, from now on.
    pub fn log_writes_to(&self, word: &StepWord, name: &'static str) {
        WRITE_LOG.with(|log| {
            log.borrow_mut()
                .words
                .push((word as *const StepWord as usize, name))
        });
    }

    /// Log every change of the published half of the page's owner/published pair under
    /// `name`, from now on.
    pub fn log_published_writes(&self, name: &'static str) {
        let address = self.page.pair() as *const StepPair as usize + 1;
        WRITE_LOG.with(|log| log.borrow_mut().words.push((address, name)));
    }

    /// Put a mark of the model's own into the write log (what the calling process has just
    /// seen or done), so it can be ordered against the logged writes.
    pub fn mark(&self, name: &'static str, value: u64) {
        let by = current_pid();
        WRITE_LOG.with(|log| {
            log.borrow_mut().writes.push(LoggedWrite {
                word: name,
                by,
                value,
            })
        });
    }

    /// Every logged write and mark so far, in the order they ran.
    pub fn write_log(&self) -> Vec<LoggedWrite> {
        WRITE_LOG.with(|log| log.borrow().writes.clone())
    }

    /// Every value written to the owner word so far, in modification order.
    pub fn owner_writes(&self) -> Vec<OwnerWrite> {
        self.write_log()
            .into_iter()
            .filter(|w| w.word == OWNER)
            .map(|w| OwnerWrite {
                by: w.by,
                value: w.value,
            })
            .collect()
    }

    /// Block until nobody holds member `index`'s lock, as the production death watcher
    /// does (a blocking shared lock on the member's byte). Blocking rather than polling
    /// keeps the models free of spin loops.
    pub fn wait_until_member_unlocked(&self, index: usize) {
        let mut table = self.locks.lock().unwrap();
        while table.members[index] != 0 {
            table = self.released.wait(table).unwrap();
        }
    }

    /// Block until nobody holds the dead-man switch exclusively, as a blocking shared
    /// lock would (the open sequence waits while another opener initialises).
    pub fn wait_until_switch_not_exclusive(&self) {
        let mut table = self.locks.lock().unwrap();
        while table.switch_exclusive != 0 {
            table = self.released.wait(table).unwrap();
        }
    }

    /// Declare that no process will wake a sleeper any more (every release, publish,
    /// detach and death of the model has happened; death watchers still do their work). A
    /// process that then finds itself asleep in [`Platform::wait`], not woken, while no
    /// death watcher owes a wake-up, was missed: the model panics with "lost wake-up"
    /// (production would sleep out its bounded slice instead).
    pub fn no_more_wake_ups(&self) {
        self.locks.lock().unwrap().no_more_wake_ups = true;
        self.woken.notify_all();
    }

    /// Stop the death watchers whose member never died, and join every watcher thread
    /// (a model calls this once its sleepers have returned).
    pub fn shut_down_watchers(&self) {
        self.locks.lock().unwrap().shut_down = true;
        self.released.notify_all();
        let threads = std::mem::take(&mut *self.watcher_threads.lock().unwrap());
        for thread in threads {
            thread.join().expect("a death watcher");
        }
    }

    /// Who holds member `index`'s lock (0: nobody).
    pub fn member_holder(&self, index: usize) -> u32 {
        self.locks.lock().unwrap().members[index]
    }
}

/// The name of the owner word in the write log.
pub const OWNER: &str = "owner";

/// Pin slots each modelled process keeps (`Local::new`; the adopted slot is one of them):
/// enough for the versions a model pins at once, few enough to keep the state small.
pub const PIN_SLOTS: usize = 3;

/// What the threads of one modelled process share: its protocol-local state and its
/// process-local lock.
struct ProcessState {
    local: Local<StepWord>,
    /// Sleepers of each `WaitKind` in this process, under a process-local lock.
    waiters: Mutex<[u32; 3]>,
    /// Whether `watch_member` starts a death watcher (otherwise waiters only poll, which
    /// the platform seam allows).
    watches_deaths: bool,
    /// Member identities this process already watches (one watcher per identity).
    watched: std::sync::Mutex<Vec<u64>>,
}

/// One modelled process, as seen from one of its threads: the protocol's platform.
/// [`Process::thread`] gives another thread of the same process.
pub struct Process {
    world: Arc<World>,
    /// Its pid (display only for the protocol; the lock table's holder id here).
    pub pid: u32,
    state: Arc<ProcessState>,
}

/// What one run of a process's script came to.
#[derive(Debug)]
pub struct Ran<R> {
    /// The script's result, unless the process died before it finished.
    pub result: Option<R>,
    /// Whether the process is dead now (it had a crash point).
    pub died: bool,
    /// Side-effecting steps the process completed.
    pub steps: usize,
}

impl Process {
    /// The platform of process `pid` (1..=63; 0 is the model's own setup), whose waits
    /// only poll (no death watcher).
    pub fn new(world: &Arc<World>, pid: u32) -> Process {
        Process::with(world, pid, false)
    }

    /// The platform of process `pid` whose `watch_member` starts a death watcher: a thread
    /// that blocks until the member's lock is free and then calls
    /// `protocol::wake_after_death`, as the production platform's does.
    pub fn watching_deaths(world: &Arc<World>, pid: u32) -> Process {
        Process::with(world, pid, true)
    }

    fn with(world: &Arc<World>, pid: u32, watches_deaths: bool) -> Process {
        assert!(pid < 64, "pids are bits of the switch's holder set");
        Process {
            world: world.clone(),
            pid,
            state: Arc::new(ProcessState {
                local: Local::new(PIN_SLOTS),
                waiters: Mutex::new([0; 3]),
                watches_deaths,
                watched: Default::default(),
            }),
        }
    }

    /// Another thread of this process: the same pid, locks, pin slots and stamps.
    pub fn thread(&self) -> Process {
        Process {
            world: self.world.clone(),
            pid: self.pid,
            state: self.state.clone(),
        }
    }

    /// The shared world.
    pub fn world(&self) -> &World {
        &self.world
    }

    /// The page.
    pub fn page(&self) -> &Page<StepWord> {
        &self.world.page
    }

    /// Register this process (reaping dead members first), as an opener does; returns the
    /// registration and the dead members it reaped on the way.
    pub fn register(&self) -> (Registration, Vec<Reaped>) {
        let who = Identity {
            pid: self.pid,
            process_start_secs: 0,
        };
        members::register(self.page(), self, who).expect("the model never fills the member table")
    }

    /// The process dies now: the kernel releases its locks.
    pub fn kill(&self) {
        self.die();
    }

    /// Run `script` as this process on the current loom thread. With `crash`, the process
    /// dies at that point (or right after the script, if the point lies beyond its end):
    /// the script stops and the kernel releases every lock the process held.
    pub fn run<R>(&self, crash: Option<CrashPoint>, script: impl FnOnce(&Process) -> R) -> Ran<R> {
        silence_crash_panics();
        let mortal = crash.is_some();
        CONTEXT.with(|c| {
            *c.borrow_mut() = Some(ProcessContext {
                pid: self.pid,
                crash,
                steps: 0,
            })
        });
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| script(self)));
        let steps = CONTEXT.with(|c| c.borrow_mut().take().map_or(0, |c| c.steps));
        let result = match outcome {
            Ok(result) => Some(result),
            Err(payload) if payload.is::<Crashed>() => None,
            Err(payload) => std::panic::resume_unwind(payload),
        };
        if mortal {
            self.die();
        }
        Ran {
            result,
            died: mortal,
            steps,
        }
    }

    /// The kernel drops every lock of a process that exits.
    fn die(&self) {
        let mut table = self.world.locks.lock().unwrap();
        for holder in table.members.iter_mut() {
            if *holder == self.pid {
                *holder = 0;
            }
        }
        if table.switch_exclusive == self.pid {
            table.switch_exclusive = 0;
        }
        table.switch_shared &= !(1 << self.pid);
        drop(table);
        self.world.released.notify_all();
    }

    /// Try to take the dead-man switch exclusively (`F_OFD_SETLK`, `F_WRLCK`): only when
    /// no other process holds it at all. A holder of a shared lock may upgrade.
    pub fn try_lock_switch_exclusive(&self) -> bool {
        step();
        let mut table = self.world.locks.lock().unwrap();
        let others_shared = table.switch_shared & !(1 << self.pid);
        if others_shared != 0 || (table.switch_exclusive != 0 && table.switch_exclusive != self.pid)
        {
            return false;
        }
        table.switch_shared &= !(1 << self.pid);
        table.switch_exclusive = self.pid;
        true
    }

    /// Try to take the dead-man switch shared (`F_RDLCK`): only when nobody else holds it
    /// exclusively. The exclusive holder itself converts (downgrades) to shared.
    pub fn try_lock_switch_shared(&self) -> bool {
        step();
        let mut table = self.world.locks.lock().unwrap();
        if table.switch_exclusive != 0 && table.switch_exclusive != self.pid {
            return false;
        }
        let downgraded = table.switch_exclusive == self.pid;
        table.switch_exclusive = 0;
        table.switch_shared |= 1 << self.pid;
        drop(table);
        if downgraded {
            self.world.released.notify_all();
        }
        true
    }

    /// The body of a death watcher of member `index` (the `watcher`-th): block until the
    /// member's lock is free (its holder died) or the model shuts watchers down; after a
    /// death, wake every sleeper as the production watcher does.
    fn watch(&self, index: usize, watcher: usize) {
        let died = {
            let mut table = self.world.locks.lock().unwrap();
            while table.members[index] != 0 && !table.shut_down {
                table = self.world.released.wait(table).unwrap();
            }
            table.members[index] == 0
        };
        if died {
            protocol::wake_after_death(self.page(), self);
        }
        self.world.locks.lock().unwrap().watchers[watcher].1 = true;
        self.world.woken.notify_all();
    }
}

impl Platform for Process {
    type Word = StepWord;

    fn try_lock_member(&self, index: usize) -> bool {
        assert_ne!(
            self.pid, 0,
            "pid 0 marks a free lock; it only sets the page up"
        );
        step();
        let mut table = self.world.locks.lock().unwrap();
        // A second take by the holder fails too: the production platform keeps a per-process
        // flag so that two threads of one process never both "take" an entry.
        if table.members[index] != 0 {
            return false;
        }
        table.members[index] = self.pid;
        true
    }

    fn unlock_member(&self, index: usize) {
        step();
        let mut table = self.world.locks.lock().unwrap();
        if table.members[index] == self.pid {
            table.members[index] = 0;
        }
        drop(table);
        self.world.released.notify_all();
    }

    fn member_locked(&self, index: usize) -> bool {
        self.world.locks.lock().unwrap().members[index] != 0
    }

    fn now(&self) -> u64 {
        self.world.clock.load(SeqCst)
    }

    /// `FUTEX_WAIT` with no timeout: returns at once if `word` no longer holds `expected`,
    /// otherwise queues the thread and blocks until a `wake_all` on the word takes it off
    /// the queue. A sleeper nobody wakes is reported as "lost wake-up" once the model
    /// declares [`World::no_more_wake_ups`] and no death watcher owes one (production
    /// would sleep out its bounded slice).
    fn wait(&self, word: &StepWord, expected: u64, _timeout: Duration) {
        let address = word as *const StepWord as usize;
        let mut table = self.world.locks.lock().unwrap();
        if word.load(SeqCst) != expected {
            return;
        }
        let ticket = table.next_ticket;
        table.next_ticket += 1;
        table.sleepers.push((address, ticket));
        while table.sleepers.iter().any(|&(_, t)| t == ticket) {
            assert!(
                !table.no_more_wake_ups || table.watcher_owes_wake_up(),
                "lost wake-up: asleep on an unchanged word after every wake-up was sent"
            );
            table = self.world.woken.wait(table).unwrap();
        }
    }

    /// `FUTEX_WAKE` of every sleeper on `word`: returns how many it took off the queue.
    fn wake_all(&self, word: &StepWord) -> usize {
        let address = word as *const StepWord as usize;
        let mut table = self.world.locks.lock().unwrap();
        let before = table.sleepers.len();
        table.sleepers.retain(|&(a, _)| a != address);
        let woken = before - table.sleepers.len();
        drop(table);
        self.world.woken.notify_all();
        woken
    }

    /// Starts a death watcher (one per member identity) when the process was built with
    /// [`Process::watching_deaths`]; otherwise waiters only poll, as the seam allows.
    fn watch_member(&self, index: usize, identity: u64) {
        if !self.state.watches_deaths || identity == 0 {
            return;
        }
        {
            let mut watched = self.state.watched.lock().unwrap();
            if watched.contains(&identity) {
                return;
            }
            watched.push(identity);
        }
        let watcher = {
            let mut table = self.world.locks.lock().unwrap();
            table.watchers.push((index, false));
            table.watchers.len() - 1
        };
        let thread = self.thread();
        let handle = spawn(move || {
            thread.run(None, |p| p.watch(index, watcher));
        });
        self.world.watcher_threads.lock().unwrap().push(handle);
    }

    fn local(&self) -> &Local<StepWord> {
        &self.state.local
    }

    fn with_local_waiters(&self, kind: WaitKind, f: &mut dyn FnMut(&mut u32)) {
        f(&mut self.state.waiters.lock().unwrap()[kind.index()]);
    }

    fn mutant(&self, mutant: Mutant) -> bool {
        self.world.mutant == Some(mutant)
    }
}

/// Print nothing for the panics that stop a crashing process; print every other panic.
fn silence_crash_panics() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if !info.payload().is::<Crashed>() {
                default(info);
            }
        }));
    });
}

/// Check the owner word's modification order: every claim (a write naming a member) raises
/// the generation by exactly one over the value it replaced, and every free keeps it. So
/// generations strictly increase with claims and never repeat (invariant 2).
pub fn assert_owner_history_sound(writes: &[OwnerWrite]) {
    for pair in writes.windows(2) {
        let (before, after) = (pair[0].value, pair[1].value);
        let (old, new) = (owner_generation(before), owner_generation(after));
        match owner_slot(after) {
            OwnerSlot::Free => assert_eq!(
                new, old,
                "freeing the owner word changed the generation: {writes:x?}"
            ),
            _ => assert_eq!(
                new,
                old + 1,
                "a claim did not raise the generation by exactly one: {writes:x?}"
            ),
        }
    }
}

/// Stack for every modelled thread: building a page and unwinding a crash need more than
/// loom's default coroutine stack (32 KiB) in an unoptimised build.
const STACK_SIZE: usize = 1 << 20;

/// Spawn a loom thread (a modelled process, usually) with a stack big enough for the model.
pub fn spawn<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> loom::thread::JoinHandle<T> {
    loom::thread::Builder::new()
        .stack_size(STACK_SIZE)
        .spawn(f)
        .expect("loom spawns")
}

/// Check `model` under loom with `preemption_bound` (see [`builder`]). The model runs on
/// a spawned thread because loom's main coroutine stack is too small to build a page on.
pub fn check(preemption_bound: usize, model: impl Fn() + Sync + Send + 'static) {
    let model = std::sync::Arc::new(model);
    let executions = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counted = executions.clone();
    let start = std::time::Instant::now();
    builder(preemption_bound).check(move || {
        counted.fetch_add(1, SeqCst);
        let model = model.clone();
        spawn(move || model()).join().expect("the model's thread");
    });
    progress(&format!(
        "{} executions in {:.1?}",
        executions.load(SeqCst),
        start.elapsed()
    ));
}

/// Say on the real standard error (not the one libtest captures) which model run just
/// finished and what it cost, so a long suite shows its progress as it goes.
pub fn progress(what: &str) {
    use std::io::Write;
    let thread = std::thread::current();
    let name = thread.name().unwrap_or("loom model");
    let _ = writeln!(std::io::stderr().lock(), "[loom] {name}: {what}");
}

/// Check that only the owner named by the owner word ever frees it: every write that frees
/// the word was made by the process whose member the previous value named (`index_of`
/// maps a pid to its member index). Holds in models where nobody dies, so nobody reaps.
pub fn assert_only_owners_free(writes: &[OwnerWrite], index_of: impl Fn(u32) -> Option<usize>) {
    for pair in writes.windows(2) {
        if owner_slot(pair[1].value) != OwnerSlot::Free {
            continue;
        }
        let freed = owner_slot(pair[0].value);
        let by = pair[1].by;
        assert!(
            matches!(freed, OwnerSlot::Member(i) if Some(i) == index_of(by)),
            "process {by} freed an owner word it did not own ({:x} named {freed:?}): {writes:x?}",
            pair[0].value
        );
    }
}

/// A loom model builder with the bound a model chose, unless `LOOM_MAX_PREEMPTIONS` is
/// set (then that bound applies, for deeper local runs). Setup runs about a thousand
/// single-threaded loom operations (the page has 512 words), so the branch limit is raised
/// unless `LOOM_MAX_BRANCHES` says otherwise.
pub fn builder(preemption_bound: usize) -> loom::model::Builder {
    let mut builder = loom::model::Builder::new();
    if std::env::var_os("LOOM_MAX_PREEMPTIONS").is_none() {
        builder.preemption_bound = Some(preemption_bound);
    }
    if std::env::var_os("LOOM_MAX_BRANCHES").is_none() {
        builder.max_branches = 50_000;
    }
    builder
}
