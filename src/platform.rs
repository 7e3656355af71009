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
    /// The 16-byte word of the same world that holds the owner word and `published`
    /// together (see [`WordPair`]).
    type Pair: WordPair;

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
    ($ty:ty, $pair:ty, $order_point:block) => {
        impl Word for $ty {
            type Pair = $pair;

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

impl_word!(std::sync::atomic::AtomicU64, AtomicPair, {});
#[cfg(feature = "loom")]
impl_word!(loom::sync::atomic::AtomicU64, LoomPair, {
    loom::sync::atomic::fence(Ordering::SeqCst)
});

/// Two 64-bit halves changed together by one 16-byte compare-and-swap: the owner word and
/// `published` (page format 3, see `protocol/snapshots.rs` for why). Each half can also be
/// loaded alone (a plain 64-bit atomic load: the hot paths read one half and never pay for
/// a 16-byte access).
pub trait WordPair: Send + Sync {
    /// A pair holding `owner` and `published`.
    fn new(owner: u64, published: u64) -> Self;
    /// Load the owner half (one 64-bit atomic load).
    fn load_owner(&self, order: Ordering) -> u64;
    /// Load the `published` half (one 64-bit atomic load).
    fn load_published(&self, order: Ordering) -> u64;
    /// Load both halves, as a guess for [`WordPair::compare_exchange`]'s expected value (not
    /// necessarily one instant's pair: production loads the two halves separately, since a
    /// 16-byte load is a locked write on x86_64 without AVX; the CAS that follows checks
    /// them together).
    fn load_both(&self, order: Ordering) -> (u64, u64) {
        (self.load_owner(order), self.load_published(order))
    }
    /// Store both halves at once (only an opener that is alone, or a model's setup).
    fn store(&self, owner: u64, published: u64, order: Ordering);
    /// Compare both halves with `current` and, when equal, write `new`, as one atomic
    /// step (strong). The halves are `(owner, published)`; the result is the pair seen.
    fn compare_exchange(
        &self,
        current: (u64, u64),
        new: (u64, u64),
        success: Ordering,
        failure: Ordering,
    ) -> Result<(u64, u64), (u64, u64)>;
    /// Whether this machine changes the pair with a lock-free instruction, so that it is
    /// atomic across processes: a lock-based emulation (a spin lock in this process's
    /// memory) would not exclude another process. Production refuses to open a page when
    /// this is `false`.
    fn is_lock_free() -> bool;
}

/// The production pair: `portable_atomic::AtomicU128` (`cmpxchg16b` on x86_64, `casp` or
/// `ldxp`/`stxp` on aarch64), viewed in place over the mapping. The owner is the value's
/// low 64 bits and `published` its high 64 bits, so on a little-endian machine the owner
/// is the first 8 bytes and `published` the next 8 (FORMAT.md's offsets); a big-endian
/// machine stores the halves the other way round, so each half is located by
/// `AtomicPair::half` rather than by assuming an order.
#[repr(C, align(16))]
pub struct AtomicPair(portable_atomic::AtomicU128);

const OWNER_HALF: usize = if cfg!(target_endian = "little") { 0 } else { 1 };

impl AtomicPair {
    #[inline(always)]
    fn pack(owner: u64, published: u64) -> u128 {
        owner as u128 | (published as u128) << 64
    }

    #[inline(always)]
    fn unpack(value: u128) -> (u64, u64) {
        (value as u64, (value >> 64) as u64)
    }

    /// Half `index` (0: owner, 1: published) as a 64-bit atomic.
    #[inline(always)]
    fn half(&self, index: usize) -> &std::sync::atomic::AtomicU64 {
        let position = if index == 0 {
            OWNER_HALF
        } else {
            1 - OWNER_HALF
        };
        // SAFETY: the pair is 16 bytes, 16-aligned, so each half is an 8-aligned u64 inside
        // it that lives as long as `&self`. Every access to the pair's memory, here and in
        // every process, is atomic: 16-byte CAS/loads/stores through portable-atomic (which
        // `is_lock_free` guarantees are single instructions — `lock cmpxchg16b`, `casp`,
        // `ldxp/stxp`), and 8-byte loads of one half here. Rust's memory model does not
        // define mixed-size atomic accesses; the hardware does: on x86_64 a locked
        // instruction is atomic with respect to every access to its cache line and an
        // aligned 8-byte load is single-copy atomic, and on aarch64 each 64-bit half of a
        // `casp`/`stxp` is written single-copy atomically. So a half load returns a value
        // some 16-byte write left in that half, which is all the protocol assumes (it uses
        // half loads only where it would accept any value the half held at some instant).
        // Only loads go through the half: no 8-byte write ever races a 16-byte one.
        unsafe {
            std::sync::atomic::AtomicU64::from_ptr(self.0.as_ptr().cast::<u64>().add(position))
        }
    }
}

impl WordPair for AtomicPair {
    #[inline]
    fn new(owner: u64, published: u64) -> Self {
        AtomicPair(portable_atomic::AtomicU128::new(Self::pack(
            owner, published,
        )))
    }
    #[inline(always)]
    fn load_owner(&self, order: Ordering) -> u64 {
        self.half(0).load(order)
    }
    #[inline(always)]
    fn load_published(&self, order: Ordering) -> u64 {
        self.half(1).load(order)
    }
    #[inline]
    fn store(&self, owner: u64, published: u64, order: Ordering) {
        self.0.store(Self::pack(owner, published), order)
    }
    #[inline(always)]
    fn compare_exchange(
        &self,
        current: (u64, u64),
        new: (u64, u64),
        success: Ordering,
        failure: Ordering,
    ) -> Result<(u64, u64), (u64, u64)> {
        self.0
            .compare_exchange(
                Self::pack(current.0, current.1),
                Self::pack(new.0, new.1),
                success,
                failure,
            )
            .map(Self::unpack)
            .map_err(Self::unpack)
    }
    #[inline]
    fn is_lock_free() -> bool {
        portable_atomic::AtomicU128::is_lock_free()
    }
}

/// The loom pair. Loom has no 128-bit atomics, so the pair is a loom `AtomicUsize` holding
/// the index of its current value in an append-only table of the values ever written (each
/// write appends one). Loads and stores of the pair are loom loads and stores of the index,
/// with the protocol's orderings, so loom explores the same interleavings and weak-memory
/// outcomes as for a 64-bit word. A 16-byte compare-and-swap is one loom CAS of the index,
/// expecting the newest entry that holds the expected value, to a new entry; when the
/// index it meets names the same value under another entry (the value was written twice),
/// it tries again from there, so it fails only when the pair's value differs, as a strong
/// CAS does.
#[cfg(feature = "loom")]
pub struct LoomPair {
    index: loom::sync::atomic::AtomicUsize,
    // Not a loom object: loom runs one modelled thread at a time, and only the index
    // carries ordering; the table is what the index points into.
    values: std::sync::Mutex<Vec<(u64, u64)>>,
}

#[cfg(feature = "loom")]
impl LoomPair {
    fn value(&self, index: usize) -> (u64, u64) {
        self.values.lock().expect("not poisoned")[index]
    }

    fn append(&self, value: (u64, u64)) -> usize {
        let mut values = self.values.lock().expect("not poisoned");
        values.push(value);
        values.len() - 1
    }
}

#[cfg(feature = "loom")]
impl WordPair for LoomPair {
    fn new(owner: u64, published: u64) -> Self {
        LoomPair {
            index: loom::sync::atomic::AtomicUsize::new(0),
            values: std::sync::Mutex::new(vec![(owner, published)]),
        }
    }
    fn load_owner(&self, order: Ordering) -> u64 {
        self.value(self.index.load(order)).0
    }
    fn load_published(&self, order: Ordering) -> u64 {
        self.value(self.index.load(order)).1
    }
    fn load_both(&self, order: Ordering) -> (u64, u64) {
        self.value(self.index.load(order))
    }
    fn store(&self, owner: u64, published: u64, order: Ordering) {
        let index = self.append((owner, published));
        self.index.store(index, order);
    }
    fn compare_exchange(
        &self,
        current: (u64, u64),
        new: (u64, u64),
        success: Ordering,
        failure: Ordering,
    ) -> Result<(u64, u64), (u64, u64)> {
        // The newest entry holding the expected value is the index to expect (none: no
        // index can match, and the CAS only reads the actual one).
        let mut expect = {
            let values = self.values.lock().expect("not poisoned");
            values
                .iter()
                .rposition(|&v| v == current)
                .unwrap_or(usize::MAX)
        };
        let next = self.append(new);
        loop {
            match self.index.compare_exchange(expect, next, success, failure) {
                Ok(_) => return Ok(current),
                // The same value under another index (written twice): a strong CAS
                // compares values, so try again from that index.
                Err(actual) if self.value(actual) == current => expect = actual,
                Err(actual) => return Err(self.value(actual)),
            }
        }
    }
    fn is_lock_free() -> bool {
        true
    }
}

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
    /// An attach that finds its member's word solo clears the bit without recording the
    /// solo guard's pin in the process's slots, so a later detach's rescan misses it.
    AdoptWithoutRecording,
    /// A detach that raises its member's oldest pin stores the new word instead of a CAS
    /// from the word it scanned under (hiding a racing attach).
    RaiseWithoutCas,
    /// The publish fence of page format 2: a publish checks the owner word, then changes
    /// `published` with a compare-and-swap that compares only 16 bits of the claim's
    /// generation (format 2's tag), so a deposed writer's publish lands after a successor's
    /// claim whose generation agrees with its own in those bits.
    FenceTagOf16Bits,
    /// A waiter sets its bit only after its look at the state it waits on.
    WaitBitAfterLook,
    /// Format 2's declaration without its process-local claim lock: a claim stores its
    /// lease in its member entry (a plain store before its CAS) and judges read it there,
    /// so a losing attempt of the same process can overwrite the winner's declaration.
    LeaseDeclaredInEntry,
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

    /// Whether member `index`, whose identity word the caller read as `identity`, is alive,
    /// for a reader of pins (`oldest_pinned`): like [`Platform::member_locked`], but a
    /// platform may answer from what it already knows — a death watcher of this process
    /// standing on that incarnation (not yet woken by its death) — instead of asking the
    /// kernel. It may say "alive" for an instant after the death (until the watcher runs):
    /// counting a dead member's pins only holds more back, never less. A platform that
    /// asks the kernel may also start a watcher so that later calls need not.
    #[inline]
    fn member_alive(&self, index: usize, identity: u64) -> bool {
        let _ = identity;
        self.member_locked(index)
    }

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

    /// Whether the protocol should commit the deliberate bug `mutant` (models only).
    #[inline(always)]
    fn mutant(&self, mutant: Mutant) -> bool {
        let _ = mutant;
        false
    }
}

#[cfg(test)]
mod tests {
    use super::{AtomicPair, WordPair};
    use std::sync::atomic::Ordering::SeqCst;

    #[test]
    fn the_pair_compares_and_swaps_both_halves_together() {
        assert!(AtomicPair::is_lock_free(), "this machine has a 16-byte CAS");
        let pair = AtomicPair::new(1, 2);
        assert_eq!(
            pair.compare_exchange((1, 3), (5, 6), SeqCst, SeqCst),
            Err((1, 2))
        );
        assert_eq!(
            pair.compare_exchange((0, 2), (5, 6), SeqCst, SeqCst),
            Err((1, 2))
        );
        assert_eq!(
            pair.compare_exchange((1, 2), (5, 6), SeqCst, SeqCst),
            Ok((1, 2))
        );
        assert_eq!(
            (pair.load_owner(SeqCst), pair.load_published(SeqCst)),
            (5, 6)
        );
        assert_eq!(pair.load_both(SeqCst), (5, 6));
        let high = u64::MAX - 1;
        assert_eq!(
            pair.compare_exchange((5, 6), (high, 7), SeqCst, SeqCst),
            Ok((5, 6))
        );
        assert_eq!(
            (pair.load_owner(SeqCst), pair.load_published(SeqCst)),
            (high, 7)
        );
        pair.store(8, high, SeqCst);
        assert_eq!(pair.load_both(SeqCst), (8, high));
    }
}
