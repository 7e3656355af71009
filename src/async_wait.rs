//! Async forms of the waits (feature `tokio`): [`ShmLock::claim_writer_async`],
//! [`ShmLock::wait_published_async`] and [`WriterGuard::wait_readers_past_async`].
//!
//! # The bridge
//!
//! A futex cannot wake a task, and a thread per waiting task (or `spawn_blocking`) would
//! cost a thread each. So each process keeps, per lock file and per [`WaitKind`], at most
//! one **bridge**: a thread that sleeps in the page on the kind's sequence word, exactly as
//! a blocking sleeper does, on behalf of every task of the process waiting as that kind.
//! A task registers its [`Waker`] with the bridge, looks at the state it waits for without
//! blocking (`try_claim`, `published() > after`, `oldest_pinned()`), and returns
//! `Pending` if it must wait. Whenever the sequence word changes the bridge wakes every
//! registered task and they all look again. Deadlines are `tokio::time` sleeps in the
//! tasks; the bridge knows nothing of them.
//!
//! While at least one task is registered the bridge is **active**: it holds one entry of
//! the process's waiter count of its kind (`wait::enter`), so the member's waiter bit is
//! set and every waker in any process bumps the sequence word and issues `FUTEX_WAKE`.
//! The registration that makes the bridge active enters (sets the bit) and loads the
//! sequence word as the bridge's baseline, both before that task's first look; the
//! deregistration that leaves no task registered leaves (clears the bit), so a publish or
//! release with no async waiter costs loads only, as before. The thread itself is spawned
//! on the first activation and, once inactive, lingers for [`IDLE_LINGER`] for the next
//! activation before it exits.
//!
//! # Argument of correctness (no lost wake-up)
//!
//! The handshake of `wait.rs` with the bridge standing in for the sleeper: a task's
//! registration happens under the bridge's lock, with the bridge active, **before** the
//! task's look; the bridge loads the sequence word and only then takes its lock to copy
//! the registered wakers. Suppose a task `T`'s look misses a change made by a waker `W` in
//! any process. The bit was set before `T`'s look (by `T`'s own activation or an earlier
//! one still in force), so — the single total order of SeqCst accesses — `W` reads it set
//! after its change and bumps the sequence word after `T`'s look. Now either
//!
//! * the bridge's copy of the wakers was taken after `T` registered: the bridge wakes `T`
//!   in that round (or a later one), and `T` looks again; or
//! * the copy was taken before `T` registered: then the bridge's load of the sequence word
//!   that preceded the copy was before `T`'s registration, so before the bump; the baseline
//!   the bridge next sleeps on (that load, or the baseline loaded by a later activation,
//!   which was before `T`'s look too) differs from the bumped word. Its futex compare fails
//!   at once, or the `FUTEX_WAKE` reaches it, and after it the bridge sees a word different
//!   from its baseline and wakes every registered task, `T` among them.
//!
//! A task stays registered from its first `Pending` until its future completes or is
//! dropped, so each of its looks after a wake-up is again preceded by its registration.
//! Waking is `Waker::wake`: a task woken while it is being polled is polled again.
//!
//! # Deaths, leases and the bounded slice
//!
//! A death wakes nobody by itself. As the blocking waits do, a claim task that finds the
//! role busy asks the platform to watch the owner (`Platform::watch_member`), and a
//! readers-past task the member holding the oldest pin; the watcher's wake-up bumps the
//! sequence word. The bridge sleeps at most the blocking waits' slice
//! (`writer::MAX_WAIT_SLICE` for claims, `snapshots::MAX_WAIT_SLICE` for the snapshot
//! waits); a slice that ends with no change wakes **one** registered task (in turn), which
//! looks again: that is how a lease expiry, or a death no watcher reported, is noticed —
//! one look per slice, however many tasks wait, never a poll per task. A claim task that
//! wins by taking over (the owner died unreported, or its lease expired) wakes the other
//! claim tasks of its process, which then learn that their process holds the role.
//!
//! # Semantics
//!
//! Each async form answers as its blocking form does, including `Err(AlreadyWriter)` for a
//! claim task whose own process came to hold the role while it waited, and its errors on
//! time-out (`ClaimTimeout` for a claim, `Timeout` for the snapshot waits: both of kind
//! `ErrorKind::Timeout`). Like the blocking
//! `claim_writer`, a claim task times an owner that declared a lease but has not
//! heartbeaten since its claim from when the task first saw it own.

use std::future::{poll_fn, Future};
use std::pin::pin;
use std::sync::atomic::Ordering::{Acquire, SeqCst};
use std::sync::{Arc, Weak};
use std::task::{Poll, Waker};
use std::time::Duration;

use parking_lot::{Condvar, Mutex, MutexGuard};

use crate::error::{Error, Result};
use crate::handle::{self, Inner, ShmLock, WriterGuard};
use crate::page::{owner_slot, OwnerSlot};
use crate::platform::{Platform, WaitKind};
use crate::protocol::{snapshots, wait, writer};
use crate::sys;

/// How long an inactive bridge thread waits for the next task before it exits.
const IDLE_LINGER: Duration = Duration::from_secs(1);

impl ShmLock {
    /// [`claim_writer`](ShmLock::claim_writer) without blocking the thread: waits up to
    /// `timeout` for the owner to release the role, die, or (with a lease it declared)
    /// stop heartbeating.
    ///
    /// However many tasks wait, the process has at most one thread asleep in the page for
    /// them, named `shmlock-claim` (`shmlock-publish` and `shmlock-pins` for the other
    /// async waits); it wakes them all on a release or the owner's death, and exits a
    /// second after the last of them is done. Feature `tokio`.
    ///
    /// # Panics
    ///
    /// When it must wait, outside a Tokio runtime with its time driver enabled.
    ///
    /// # Errors
    ///
    /// As [`claim_writer`](ShmLock::claim_writer): [`Error::ClaimTimeout`] (kind
    /// [`Timeout`](crate::ErrorKind::Timeout), naming the owner) when `timeout` passes;
    /// [`Error::AlreadyWriter`] if this process holds the role (or comes to hold it while
    /// this task waits); [`Error::ForkedHandle`]; [`Error::Corrupt`].
    ///
    /// ```
    /// use std::time::Duration;
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> shmlock::Result<()> {
    /// # let dir = tempfile::tempdir().unwrap();
    /// let lock = shmlock::ShmLock::open(dir.path().join("app.db-shm"))?;
    /// let writer = lock.claim_writer_async(Duration::from_secs(1)).await?;
    /// println!("writing with fencing token {}", writer.generation());
    /// # Ok(()) }
    /// ```
    pub async fn claim_writer_async(&self, timeout: Duration) -> Result<WriterGuard> {
        let inner = &self.inner;
        let mut won = None;
        // The owner this task has seen own, and since when: judges an owner that has not
        // heartbeaten since its claim by its declared lease, as the blocking wait does.
        // (A mutex only to keep the future `Send`: one task polls it at a time.)
        let watched = Mutex::new(None::<writer::Watched>);
        let guard = wait_until(
            inner,
            WaitKind::Claim,
            timeout,
            || {
                let seen_so_far = *watched.lock(); // (the guard must not outlive this line)
                match self.claim_watching(seen_so_far) {
                    Err(busy @ Error::WriterBusy { .. }) => {
                        let word = writer::load_owner(inner.mapping.page());
                        let mut seen = watched.lock();
                        if seen.is_none_or(|w| w.word != word) {
                            let since = inner.mapping.platform().now();
                            *seen = Some(writer::Watched { word, since });
                        }
                        watch_owner(inner);
                        Look::NotYet(busy)
                    }
                    done => Look::Done(done),
                }
            },
            |busy| handle::claim_timed_out(busy, timeout),
            &mut won,
        )
        .await?;
        if guard.takeover().is_some() {
            // Nobody else was told that the role changed hands: tell the process's other
            // claim tasks, so they answer `AlreadyWriter` now rather than one per slice.
            if let Some(bridge) = won {
                bridge.wake_all_tasks();
            }
        }
        Ok(guard)
    }

    /// [`wait_published`](ShmLock::wait_published) without blocking the thread: the first
    /// published version above `after`, at once if one already is; `Err(Timeout)` after
    /// `timeout`. A publish in any process wakes every task waiting on it (through one
    /// thread per process, as for [`claim_writer_async`](ShmLock::claim_writer_async)).
    /// Feature `tokio`.
    ///
    /// # Panics
    ///
    /// When it must wait, outside a Tokio runtime with its time driver enabled.
    ///
    /// # Errors
    ///
    /// [`Error::Timeout`] when `timeout` passes with no version above `after` published;
    /// [`Error::ForkedHandle`] in a forked child.
    ///
    /// ```
    /// use std::time::Duration;
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> shmlock::Result<()> {
    /// # let dir = tempfile::tempdir().unwrap();
    /// let lock = shmlock::ShmLock::open(dir.path().join("app.db-shm"))?;
    /// let short = Duration::from_millis(1);
    /// assert!(matches!(
    ///     lock.wait_published_async(0, short).await,
    ///     Err(shmlock::Error::Timeout { .. })
    /// ));
    /// lock.try_claim_writer()?.publish(3)?;
    /// assert_eq!(lock.wait_published_async(0, Duration::from_secs(1)).await?, 3);
    /// # Ok(()) }
    /// ```
    pub async fn wait_published_async(&self, after: u64, timeout: Duration) -> Result<u64> {
        let page = self.inner.mapping.page();
        wait_until(
            &self.inner,
            WaitKind::Publish,
            timeout,
            || match snapshots::published(page) {
                published if published > after => Look::Done(Ok(published)),
                _ => Look::NotYet(()),
            },
            |()| handle::publish_timeout(after, timeout),
            &mut None,
        )
        .await
    }
}

impl WriterGuard {
    /// [`wait_readers_past`](WriterGuard::wait_readers_past) without blocking the thread:
    /// returns once no live reader, in any process, pins a version below `version`;
    /// `Err(Timeout)` after `timeout`. Woken by the detach, or the death, of the readers
    /// that held it back (through one thread per process, as for
    /// [`ShmLock::claim_writer_async`]). Feature `tokio`.
    ///
    /// # Panics
    ///
    /// When it must wait, outside a Tokio runtime with its time driver enabled.
    ///
    /// # Errors
    ///
    /// [`Error::Timeout`] when `timeout` passes while a live reader still pins a version
    /// below `version` (it names the oldest pin); [`Error::ForkedHandle`] in a forked
    /// child.
    ///
    /// ```
    /// use std::time::Duration;
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> shmlock::Result<()> {
    /// # let dir = tempfile::tempdir().unwrap();
    /// let lock = shmlock::ShmLock::open(dir.path().join("app.db-shm"))?;
    /// let writer = lock.try_claim_writer()?;
    /// writer.publish(1)?;
    /// let reader = lock.attach_reader()?; // pins 1
    /// writer.publish(2)?;
    /// let detach = async move {
    ///     tokio::task::yield_now().await;
    ///     drop(reader);
    /// };
    /// let (waited, ()) = tokio::join!(writer.wait_readers_past_async(2, Duration::from_secs(5)), detach);
    /// waited?; // version 1 may be reclaimed now
    /// # Ok(()) }
    /// ```
    pub async fn wait_readers_past_async(&self, version: u64, timeout: Duration) -> Result<()> {
        let inner = &self.inner;
        let page = inner.mapping.page();
        wait_until(
            inner,
            WaitKind::Pins,
            timeout,
            || {
                let plat = inner.mapping.platform();
                match snapshots::readers_past_or_watch(page, &plat, inner.index(), version) {
                    Ok(()) => Look::Done(Ok(())),
                    Err(oldest) => Look::NotYet(oldest),
                }
            },
            |oldest| handle::readers_timeout(version, oldest, timeout),
            &mut None,
        )
        .await
    }
}

/// Ask the platform to wake claim sleepers when the current owner dies.
fn watch_owner(inner: &Inner) {
    let page = inner.mapping.page();
    if let OwnerSlot::Member(owner) = owner_slot(writer::load_owner(page)) {
        let identity = page.members[owner].identity.load(Acquire);
        inner.mapping.platform().watch_member(owner, identity);
    }
}

/// One look at the awaited state.
enum Look<T, P> {
    /// The wait is over, with this answer.
    Done(T),
    /// Not yet; what to report if the time runs out now.
    NotYet(P),
}

/// The shape every async wait shares: look; if not yet, register with the kind's bridge
/// and look again after each wake-up until the answer comes or `timeout` passes
/// (`timed_out` makes the error then). `bridge` receives the bridge the task registered
/// with, if it had to.
async fn wait_until<T, P>(
    inner: &Arc<Inner>,
    kind: WaitKind,
    timeout: Duration,
    mut look: impl FnMut() -> Look<Result<T>, P>,
    timed_out: impl Fn(P) -> Error,
    bridge: &mut Option<Arc<Bridge>>,
) -> Result<T> {
    inner.check_fork()?;
    let start = tokio::time::Instant::now();
    // As tokio's own `sleep` does with a duration past what its clock can hold.
    let deadline = start
        .checked_add(timeout)
        .unwrap_or_else(|| start + Duration::from_secs(86400 * 365 * 30));
    match look() {
        Look::Done(answer) => return answer,
        Look::NotYet(last) if timeout.is_zero() => return Err(timed_out(last)),
        Look::NotYet(_) => {}
    }
    let mut registration = Registration {
        bridge: Bridge::of(inner, kind),
        slot: None,
    };
    let mut expiry = pin!(tokio::time::sleep_until(deadline));
    let answer = poll_fn(|cx| {
        // Registered before the look: see the module docs.
        if let Err(e) = registration.register(inner, cx.waker()) {
            return Poll::Ready(Err(e));
        }
        match look() {
            Look::Done(answer) => Poll::Ready(answer),
            Look::NotYet(last) => match expiry.as_mut().poll(cx) {
                Poll::Ready(()) => Poll::Ready(Err(timed_out(last))),
                Poll::Pending => Poll::Pending,
            },
        }
    })
    .await;
    *bridge = Some(Arc::clone(&registration.bridge));
    answer
}

/// One process's sleeper in the page for all its tasks waiting as one kind on one file.
struct Bridge {
    kind: WaitKind,
    /// The process's membership of the file (the key; not kept alive by the bridge).
    member: Weak<Inner>,
    /// The fork epoch the bridge belongs to: a forked child has no bridge thread.
    fork_epoch: u64,
    state: Mutex<BridgeState>,
    /// Signalled when an inactive bridge becomes active.
    resume: Condvar,
}

struct BridgeState {
    /// Registered tasks' wakers; `None` marks a free slot (listed in `free`).
    tasks: Vec<Option<Waker>>,
    free: Vec<usize>,
    registered: usize,
    /// While tasks are registered: the membership whose waiter bit the bridge holds.
    active: Option<Arc<Inner>>,
    /// The sequence word's value the bridge last acted on (or an activation loaded).
    seen: u64,
    /// Whether a bridge thread exists (running or lingering).
    thread: bool,
    /// The slot to wake next when a slice ends without a change.
    next_probe: usize,
}

/// Every bridge of this process.
static BRIDGES: Mutex<Vec<Arc<Bridge>>> = Mutex::new(Vec::new());

impl Bridge {
    /// The bridge of `kind` for the membership `inner` (made on first use).
    fn of(inner: &Arc<Inner>, kind: WaitKind) -> Arc<Bridge> {
        let epoch = sys::fork_epoch();
        let mut bridges = BRIDGES.lock();
        bridges.retain(|b| b.member.strong_count() > 0 && b.fork_epoch == epoch);
        // A live `Weak` pointing at `inner` is `inner`: no other live allocation shares it.
        if let Some(bridge) = bridges
            .iter()
            .find(|b| b.kind == kind && std::ptr::eq(b.member.as_ptr(), Arc::as_ptr(inner)))
        {
            return Arc::clone(bridge);
        }
        let bridge = Arc::new(Bridge {
            kind,
            member: Arc::downgrade(inner),
            fork_epoch: epoch,
            state: Mutex::new(BridgeState {
                tasks: Vec::new(),
                free: Vec::new(),
                registered: 0,
                active: None,
                seen: 0,
                thread: false,
                next_probe: 0,
            }),
            resume: Condvar::new(),
        });
        bridges.push(Arc::clone(&bridge));
        bridge
    }

    /// The longest sleep between looks: the blocking waits' slice for this kind.
    fn slice(&self) -> Duration {
        match self.kind {
            WaitKind::Claim => writer::MAX_WAIT_SLICE,
            WaitKind::Publish | WaitKind::Pins => snapshots::MAX_WAIT_SLICE,
        }
    }

    fn thread_name(&self) -> &'static str {
        match self.kind {
            WaitKind::Claim => "shmlock-claim",
            WaitKind::Publish => "shmlock-publish",
            WaitKind::Pins => "shmlock-pins",
        }
    }

    /// Make the bridge active for `inner`: set the waiter bit, load the baseline, and get
    /// a thread sleeping on it. Called under the lock, before the registering task looks.
    fn activate(self: &Arc<Self>, st: &mut BridgeState, inner: &Arc<Inner>) -> Result<()> {
        let page = inner.mapping.page();
        let plat = inner.mapping.platform();
        wait::enter(page, &plat, self.kind, inner.index());
        st.seen = wait::seq(page, self.kind).load(SeqCst);
        st.active = Some(Arc::clone(inner));
        if st.thread {
            self.resume.notify_one();
            return Ok(());
        }
        let bridge = Arc::clone(self);
        match std::thread::Builder::new()
            .name(self.thread_name().into())
            .stack_size(64 * 1024)
            .spawn(move || bridge.run())
        {
            Ok(_) => {
                st.thread = true;
                Ok(())
            }
            Err(e) => {
                wait::leave(page, &plat, self.kind, inner.index());
                st.active = None;
                Err(Error::io(
                    "spawn the thread that sleeps for async waits",
                    &inner.mapping.path,
                    e,
                ))
            }
        }
    }

    /// The bridge thread: sleep on the sequence word while active, wake the tasks after
    /// each change (one of them after a quiet slice), linger while inactive.
    fn run(self: Arc<Self>) {
        let slice = self.slice();
        let mut st = self.state.lock();
        loop {
            let Some(inner) = &st.active else {
                let quiet = self.resume.wait_for(&mut st, IDLE_LINGER).timed_out();
                if quiet && st.active.is_none() {
                    st.thread = false;
                    return;
                }
                continue;
            };
            // The mapping only (not the membership): a handle dropped meanwhile unregisters
            // at once, and the page stays mapped while this thread sleeps on it.
            let mapping = Arc::clone(&inner.mapping);
            let seen = st.seen;
            let seq = wait::seq(mapping.page(), self.kind);
            let now = MutexGuard::unlocked(&mut st, || {
                mapping.platform().wait(seq, seen, slice);
                seq.load(SeqCst)
            });
            if st.active.is_none() {
                continue;
            }
            // `now` was loaded before this copy of the wakers (see the module docs).
            let wake: Vec<Waker> = if now != st.seen {
                st.seen = now;
                st.tasks.iter().flatten().cloned().collect()
            } else {
                st.probe().into_iter().collect()
            };
            MutexGuard::unlocked(&mut st, || wake.into_iter().for_each(Waker::wake));
        }
    }

    /// Wake every registered task (in-process only: no system call).
    fn wake_all_tasks(&self) {
        let wake: Vec<Waker> = self.state.lock().tasks.iter().flatten().cloned().collect();
        wake.into_iter().for_each(Waker::wake);
    }
}

impl BridgeState {
    /// The next registered task in turn, to look once after a quiet slice.
    fn probe(&mut self) -> Option<Waker> {
        let n = self.tasks.len();
        (0..n)
            .map(|i| (self.next_probe + i) % n)
            .find(|&slot| self.tasks[slot].is_some())
            .map(|slot| {
                self.next_probe = slot + 1;
                self.tasks[slot].clone().expect("found registered")
            })
    }
}

/// A task's place in a bridge, from its first wait until it completes or is dropped.
struct Registration {
    bridge: Arc<Bridge>,
    slot: Option<usize>,
}

impl Registration {
    /// Register (or refresh) the task's waker; activates the bridge for the first task.
    fn register(&mut self, inner: &Arc<Inner>, waker: &Waker) -> Result<()> {
        let mut st = self.bridge.state.lock();
        if let Some(slot) = self.slot {
            match &mut st.tasks[slot] {
                Some(registered) if registered.will_wake(waker) => {}
                other => *other = Some(waker.clone()),
            }
            return Ok(());
        }
        if st.active.is_none() {
            self.bridge.activate(&mut st, inner)?;
        }
        let slot = match st.free.pop() {
            Some(slot) => {
                st.tasks[slot] = Some(waker.clone());
                slot
            }
            None => {
                st.tasks.push(Some(waker.clone()));
                st.tasks.len() - 1
            }
        };
        st.registered += 1;
        self.slot = Some(slot);
        Ok(())
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        let Some(slot) = self.slot.take() else {
            return;
        };
        let mut st = self.bridge.state.lock();
        st.tasks[slot] = None;
        st.free.push(slot);
        st.registered -= 1;
        if st.registered > 0 {
            return;
        }
        // The last task left: clear the bit now, so that wakers in other processes go
        // back to loads only; the thread notices within a slice and lingers.
        let Some(inner) = st.active.take() else {
            return;
        };
        wait::leave(
            inner.mapping.page(),
            &inner.mapping.platform(),
            self.bridge.kind,
            inner.index(),
        );
        drop(st);
        drop(inner);
    }
}
