//! Sleeping in the page: per-member waiter bitmaps and the sequence words sleepers wait on.
//!
//! # Argument of correctness
//!
//! Each kind of sleep ([`WaitKind`]) has a bitmap with one bit per member and a sequence
//! word. A sleeper sets its member's bit ([`enter`]) *before* it first looks at the state
//! it waits for, and reads the sequence word before each look; a waker changes that state,
//! then reads the bitmap, and only if a bit is set bumps the sequence word and wakes the
//! sleepers ([`wake`]) — all SeqCst. If the sleeper's look missed the change, its bit was
//! set before the waker's read (the single total order of SeqCst accesses), so the waker
//! bumps the sequence word: before the sleeper's futex compares it (the sleep returns at
//! once) or after (the wake-up reaches it). With nobody waiting a waker costs loads only,
//! and no system call.
//!
//! Several threads of one process share their member's bit: a process-local count under a
//! process-local lock (the waiting path only) sets the bit on the first entry and clears it
//! on the last exit, so the bit is set for as long as any of them is between the two.
//!
//! A process killed in its sleep leaves its bit set. A reaper clears every bit of the
//! member it reaps ([`clear_member_bits`], under the member's lock); and a waker whose
//! wake-up reached nobody looks for set bits of dead members and reaps them, so a dead
//! sleeper costs at most one futile wake-up (issue: a SIGKILLed waiting claimant used to
//! make every later release pay a shared-line write and a `FUTEX_WAKE`).

use std::sync::atomic::Ordering::SeqCst;

use crate::page::{member_bit, Page, BITMAP_WORDS, MEMBER_CAPACITY};
use crate::platform::{Mutant, Platform, WaitKind, Word};
use crate::protocol::members;

/// The bitmap of members with a sleeper of `kind`.
#[inline]
pub fn bits<W: Word>(page: &Page<W>, kind: WaitKind) -> &[W; BITMAP_WORDS] {
    match kind {
        WaitKind::Claim => &page.writer.claim_waiters,
        WaitKind::Publish => &page.wait.publish_waiters,
        WaitKind::Pins => &page.snapshot.pin_waiters,
    }
}

/// The sequence word sleepers of `kind` wait on.
#[inline]
pub fn seq<W: Word>(page: &Page<W>, kind: WaitKind) -> &W {
    match kind {
        WaitKind::Claim => &page.writer.wake_seq,
        WaitKind::Publish => &page.wait.publish_seq,
        WaitKind::Pins => &page.wait.pin_seq,
    }
}

/// Count the calling thread of member `me` as a sleeper of `kind` (sets the member's bit
/// when it is the process's first). Call before the first look at the awaited state.
pub fn enter<P: Platform>(page: &Page<P::Word>, plat: &P, kind: WaitKind, me: usize) {
    let (word, mask) = member_bit(me);
    let bitmap = bits(page, kind);
    plat.with_local_waiters(kind, &mut |count| {
        if *count == 0 {
            bitmap[word].fetch_or(mask, SeqCst);
        }
        *count += 1;
    });
    // Our bit, then our looks; a waker: its change, then its read of the bits.
    P::Word::seq_cst_order_point();
}

/// Undo [`enter`] (clears the member's bit when the process's last sleeper of `kind` leaves).
pub fn leave<P: Platform>(page: &Page<P::Word>, plat: &P, kind: WaitKind, me: usize) {
    let (word, mask) = member_bit(me);
    let bitmap = bits(page, kind);
    plat.with_local_waiters(kind, &mut |count| {
        *count = count.saturating_sub(1);
        if *count == 0 {
            bitmap[word].fetch_and(!mask, SeqCst);
        }
    });
}

/// Sleep as a waiter of `kind` (member `me`) until `look` answers `Ok`, or until `deadline`
/// ([`Platform::now`] nanoseconds) passes; then the last look's `Err` reason. `look`
/// answers `Err((why, longest))`: not yet, and sleep at most `longest` ns before the next
/// look. Each sleep is also bounded by `max_slice`, so nothing waits on a death nobody
/// reported for longer than that. The member's bit is set before the first look and the
/// sequence word read before each (see the module docs): a change after a look wakes the
/// sleep that follows it.
pub fn sleep_until<P: Platform, T, E>(
    page: &Page<P::Word>,
    plat: &P,
    kind: WaitKind,
    me: usize,
    deadline: u64,
    max_slice: std::time::Duration,
    mut look: impl FnMut() -> Result<T, (E, u64)>,
) -> Result<T, E> {
    let late = bit_after_look(plat, kind);
    if !late {
        enter(page, plat, kind, me);
    }
    let sequence = seq(page, kind);
    let result = loop {
        let seen = sequence.load(SeqCst);
        let (why, longest) = match look() {
            Ok(done) => break Ok(done),
            Err(not_yet) => not_yet,
        };
        let now = plat.now();
        if now >= deadline {
            break Err(why);
        }
        let slice = (deadline - now)
            .min(max_slice.as_nanos() as u64)
            .min(longest.max(1));
        if late {
            enter(page, plat, kind, me);
        }
        plat.wait(sequence, seen, std::time::Duration::from_nanos(slice));
        if late {
            leave(page, plat, kind, me);
        }
    };
    if !late {
        leave(page, plat, kind, me);
    }
    result
}

/// Whether the waiting path of `kind` must set its bit only after looking (a mutant).
#[inline]
pub fn bit_after_look<P: Platform>(plat: &P, kind: WaitKind) -> bool {
    match kind {
        WaitKind::Claim => plat.mutant(Mutant::WaiterCountedAfterLook),
        WaitKind::Publish | WaitKind::Pins => plat.mutant(Mutant::WaitBitAfterLook),
    }
}

/// Whether any member has a sleeper of `kind` (loads only).
#[inline]
pub fn anyone_waits<W: Word>(page: &Page<W>, kind: WaitKind) -> bool {
    bits(page, kind).iter().any(|w| w.load(SeqCst) != 0)
}

/// Wake the sleepers of `kind`, after a change they may wait for. Costs loads only when
/// nobody waits.
#[inline]
pub fn wake<P: Platform>(page: &Page<P::Word>, plat: &P, kind: WaitKind) {
    P::Word::seq_cst_order_point();
    if anyone_waits(page, kind) {
        wake_sleepers(page, plat, kind);
    }
}

#[cold]
fn wake_sleepers<P: Platform>(page: &Page<P::Word>, plat: &P, kind: WaitKind) {
    if notify_sleepers(page, plat, kind) == 0 {
        // Nobody was asleep: the bits belong to sleepers between their bit and their
        // sleep (they re-check), or to dead processes — reap those.
        reap_dead_sleepers(page, plat, kind);
    }
}

/// Bump `kind`'s sequence word and wake its sleepers; how many were woken.
#[cold]
fn notify_sleepers<P: Platform>(page: &Page<P::Word>, plat: &P, kind: WaitKind) -> usize {
    let seq = seq(page, kind);
    seq.fetch_add(1, SeqCst);
    plat.wake_all(seq)
}

/// [`wake`] without the repair of dead sleepers' bits: for a reaper, which must not start
/// another round of reaping from inside one (a page whose bits and pins are all set —
/// damage, or a hostile writer — would otherwise recurse without bound).
#[inline]
pub fn notify<P: Platform>(page: &Page<P::Word>, plat: &P, kind: WaitKind) {
    P::Word::seq_cst_order_point();
    if anyone_waits(page, kind) {
        notify_sleepers(page, plat, kind);
    }
}

/// Reap members whose bit of `kind` is set but whose process has died.
fn reap_dead_sleepers<P: Platform>(page: &Page<P::Word>, plat: &P, kind: WaitKind) {
    for (w, word) in bits(page, kind).iter().enumerate() {
        let mut set = word.load(SeqCst);
        while set != 0 {
            let index = w * 64 + set.trailing_zeros() as usize;
            set &= set - 1;
            if index < MEMBER_CAPACITY && !plat.member_locked(index) && plat.try_lock_member(index)
            {
                // Its lock was free: its process is dead (or the entry was free).
                members::clear_held_entry(page, plat, index);
                plat.unlock_member(index);
            }
        }
    }
}

/// Clear every waiter bit of member `index` (whose lock the caller holds).
pub fn clear_member_bits<W: Word>(page: &Page<W>, index: usize) {
    let (word, mask) = member_bit(index);
    for kind in [WaitKind::Claim, WaitKind::Publish, WaitKind::Pins] {
        if bits(page, kind)[word].load(SeqCst) & mask != 0 {
            bits(page, kind)[word].fetch_and(!mask, SeqCst);
        }
    }
}

/// Wake every kind of sleeper: a member died, which may free the writer role or raise
/// the oldest pin.
pub fn wake_all_kinds<P: Platform>(page: &Page<P::Word>, plat: &P) {
    for kind in [WaitKind::Claim, WaitKind::Publish, WaitKind::Pins] {
        wake(page, plat, kind);
    }
}
