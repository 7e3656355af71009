//! The seam between the protocol and the world.
//!
//! The protocol in [`crate::protocol`] is written once, generic over [`Platform`]. In
//! production the platform is the operating system (`sys::OsPlatform`): the page is the
//! shared mapping viewed as [`std::sync::atomic::AtomicU64`] words, member liveness is the
//! kernel's OFD byte-lock table, the clock is `CLOCK_BOOTTIME`, and waiting is a futex on
//! the shared page. Under the `loom` feature, `loom-tests/` supplies a platform whose page
//! is a heap page of `loom` atomics and whose lock table is a model of the kernel's, so
//! the models exercise this very code — there is no second copy of the protocol.

use std::sync::atomic::Ordering;
use std::time::Duration;

/// A 64-bit atomic word, the only kind of field the page holds.
///
/// Implemented for [`std::sync::atomic::AtomicU64`] (production, viewed in place over the
/// mapping) and, with the `loom` feature, for `loom::sync::atomic::AtomicU64` (models).
pub trait Word: Send + Sync {
    /// A word holding `value`.
    fn new(value: u64) -> Self;
    /// Atomic load.
    fn load(&self, order: Ordering) -> u64;
    /// Atomic store.
    fn store(&self, value: u64, order: Ordering);
    /// Atomic compare-and-exchange (strong).
    fn compare_exchange(
        &self,
        current: u64,
        new: u64,
        success: Ordering,
        failure: Ordering,
    ) -> Result<u64, u64>;
    /// Atomic wrapping add; returns the previous value.
    fn fetch_add(&self, value: u64, order: Ordering) -> u64;
    /// Atomic bitwise or; returns the previous value.
    fn fetch_or(&self, value: u64, order: Ordering) -> u64;
    /// Atomic bitwise and; returns the previous value.
    fn fetch_and(&self, value: u64, order: Ordering) -> u64;

    /// Where the protocol relies on the single total order of `SeqCst` accesses (the
    /// handshake between a waiting claimant and a release: each writes one word, then
    /// reads the other's), it calls this between the two. For real atomics it does
    /// nothing: `SeqCst` accesses already give that order. Loom models `SeqCst` accesses
    /// as acquire/release only (a documented loom limitation) but models `SeqCst` fences
    /// exactly, so its word issues one here, and the models check the handshake under the
    /// semantics production actually has.
    #[inline(always)]
    fn seq_cst_order_point() {}
}

macro_rules! impl_word {
    ($ty:ty, $order_point:block) => {
        impl Word for $ty {
            #[inline]
            fn new(value: u64) -> Self {
                <$ty>::new(value)
            }
            #[inline]
            fn load(&self, order: Ordering) -> u64 {
                <$ty>::load(self, order)
            }
            #[inline]
            fn store(&self, value: u64, order: Ordering) {
                <$ty>::store(self, value, order)
            }
            #[inline]
            fn compare_exchange(
                &self,
                current: u64,
                new: u64,
                success: Ordering,
                failure: Ordering,
            ) -> Result<u64, u64> {
                <$ty>::compare_exchange(self, current, new, success, failure)
            }
            #[inline]
            fn fetch_add(&self, value: u64, order: Ordering) -> u64 {
                <$ty>::fetch_add(self, value, order)
            }
            #[inline]
            fn fetch_or(&self, value: u64, order: Ordering) -> u64 {
                <$ty>::fetch_or(self, value, order)
            }
            #[inline]
            fn fetch_and(&self, value: u64, order: Ordering) -> u64 {
                <$ty>::fetch_and(self, value, order)
            }
            #[inline(always)]
            fn seq_cst_order_point() $order_point
        }
    };
}

impl_word!(std::sync::atomic::AtomicU64, {});
#[cfg(feature = "loom")]
impl_word!(loom::sync::atomic::AtomicU64, {
    loom::sync::atomic::fence(Ordering::SeqCst)
});

/// A deliberate bug the protocol can be told to commit, so that the loom models can show
/// they catch it (see `loom-tests/README.md`). Production platforms never select one; the
/// check compiles to `false`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Mutant {
    /// Claim a free or dead owner word with a load and a plain store instead of a CAS.
    ClaimWithoutCas,
    /// Release clears the owner word without checking that it still names us.
    ReleaseWithoutOwnerCheck,
    /// Publish the magic before the rest of line 0 is written.
    MagicPublishedFirst,
    /// Reap a member without taking its kernel lock first (decide death by a probe alone).
    ReapWithoutLock,
    /// Register into an entry without clearing an owner word that names it.
    RegisterWithoutClearingOwner,
    /// Heartbeat and `is_current` skip the owner-word check.
    HeartbeatWithoutOwnerCheck,
    /// Do not bump the generation when claiming.
    ClaimWithoutGenerationBump,
    /// A waiting claimant counts itself in `waiters` only after its look at the owner word
    /// (just before it sleeps), so a release in between skips the wake-up.
    WaiterCountedAfterLook,
    /// Heartbeat stores its stamp before checking the owner word (and without a CAS), so a
    /// deposed guard can refresh a successor claimed by the same process.
    HeartbeatStoresFirst,
    /// A claimant judges a live owner by its own lease instead of the owner's declared one.
    ClaimantChoosesLease,
    /// Attach makes its pin visible but does not re-read `published` afterwards.
    PinWithoutRecheck,
    /// A detach that raises its member's oldest pin stores the new word instead of a CAS
    /// from the word it scanned under (hiding a racing attach).
    RaiseWithoutCas,
    /// A claim does not tag the published version with its generation, so a deposed
    /// writer's publish can land after its successor's claim.
    ClaimWithoutRetag,
    /// A waiter sets its bit only after its look at the state it waits on.
    WaitBitAfterLook,
    /// Claim attempts of one process are not serialised, so a losing attempt's
    /// declaration can overwrite the winner's in their shared member entry.
    ClaimsNotSerialised,
}

/// What a sleeper in the page waits for; each kind has a bitmap of waiting members and a
/// sequence word to sleep on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum WaitKind {
    /// A claimant waiting for the writer role.
    Claim,
    /// A reader waiting for a newer published version.
    Publish,
    /// A writer waiting for readers to move past a version.
    Pins,
}

impl WaitKind {
    /// Index of the kind in per-kind arrays.
    pub const fn index(self) -> usize {
        match self {
            WaitKind::Claim => 0,
            WaitKind::Publish => 1,
            WaitKind::Pins => 2,
        }
    }
}

/// What the protocol needs from the world besides the page itself.
///
/// Member `i`'s liveness is a kernel lock on one byte per member entry. A process that
/// holds its member's lock is alive; the kernel drops the lock when the process dies.
pub trait Platform {
    /// The atomic word the page is made of.
    type Word: Word;

    /// Take member `index`'s lock exclusively, without blocking. `true` when taken: then
    /// nobody else holds it, so the entry's previous holder (if any) is dead.
    fn try_lock_member(&self, index: usize) -> bool;
    /// Drop a lock taken with [`Platform::try_lock_member`].
    fn unlock_member(&self, index: usize);
    /// Whether member `index`'s lock is held by a live process (this one included),
    /// without taking it.
    fn member_locked(&self, index: usize) -> bool;

    /// Monotonic nanoseconds on a clock shared by every process on the host and not
    /// stepped by wall-clock changes (`CLOCK_BOOTTIME` in production).
    fn now(&self) -> u64;

    /// Block until `word` no longer holds `expected` (compared on its low 32 bits in
    /// production), a wake-up, or `timeout`. Spurious returns are allowed.
    fn wait(&self, word: &Self::Word, expected: u64, timeout: Duration);
    /// Wake every waiter blocked in [`Platform::wait`] on `word`; returns how many were
    /// woken (a platform that cannot tell returns 1).
    fn wake_all(&self, word: &Self::Word) -> usize;
    /// Arrange for sleepers in the page to be woken promptly when member `index`'s
    /// holder, whose identity word is `identity`, dies (the platform calls
    /// `protocol::wake_after_death` then). At most one watch per member identity per
    /// process. Optional: a platform that cannot only makes waiters poll.
    fn watch_member(&self, index: usize, identity: u64) {
        let _ = (index, identity);
    }

    /// This process's state of the protocol for this page (its reader pins).
    fn local(&self) -> &crate::protocol::Local<Self::Word>;

    /// Run `f` on this process's count of threads waiting as `kind`, under a
    /// process-local lock (the waiting path only).
    fn with_local_waiters(&self, kind: WaitKind, f: &mut dyn FnMut(&mut u32));

    /// Run one claim attempt with this process's other claim attempts on the page
    /// excluded (a process-local lock). Threads of one process share its member entry, so
    /// a losing attempt must not write its declaration over the winner's. Other processes
    /// are never excluded: across processes a claim stays one compare-and-swap.
    fn serialise_claim(&self, attempt: &mut dyn FnMut());

    /// Whether the protocol should commit the deliberate bug `mutant` (models only).
    #[inline(always)]
    fn mutant(&self, mutant: Mutant) -> bool {
        let _ = mutant;
        false
    }
}
