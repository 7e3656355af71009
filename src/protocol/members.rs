//! Members: registration, reaping, readers.
//!
//! # Argument of correctness
//!
//! A member entry is *alive* exactly while some process holds its kernel lock; the
//! kernel drops the lock when that process dies, whatever its pid namespace. Everything
//! that rewrites an entry does so holding that lock:
//!
//! * **Registration** takes a free entry's lock (non-blocking). If the entry still has an
//!   identity, its previous holder is dead, so the registrant reaps it first — which
//!   includes freeing an owner word that names the entry — and only then publishes its own
//!   identity (Release). So an owner word naming a dead incarnation is never read as naming
//!   the new one: by the time the new incarnation exists, no owner word names its index.
//! * **Reaping** takes the lock of an entry whose identity is non-zero. Only one process
//!   can hold it, so only one reaps; reaping stores zeros (idempotent), so a reaper that dies
//!   half-way leaves work the next reaper redoes, never a double subtraction. A live
//!   member's lock cannot be taken, so a live member is never reaped (invariant 5).
//! * **Readers** are counted per member, in the member's own pin word, by its own process
//!   (see `snapshots.rs`): attach/detach touch no word another live process writes. The
//!   file's reader count is the sum over live members, so a dead member's readers and pins
//!   vanish the moment it dies and are cleared from the page exactly once, by whoever
//!   reaps it.
//! * **Waiter bits** of a member (one per kind of sleep, see `wait.rs`) are cleared with
//!   the rest of its entry, under its lock, so a process killed in its sleep stops costing
//!   wakers a system call.
//!
//! Within one process every lock operation goes through one open file description, and
//! OFD locks do not conflict with themselves: the platform keeps an in-process flag per
//! entry so that two threads of one process never both "take" the same entry.

use std::sync::atomic::Ordering::{Acquire, Relaxed, Release};

use crate::page::{
    identity_pid, identity_word, lease_start_word, member_allocation_order, owner_generation,
    owner_slot, owner_word, pins_readers, OwnerSlot, Page, LEASE_NONE_MS, MAX_READERS_PER_MEMBER,
    MEMBER_CAPACITY,
};
use crate::platform::{Mutant, Platform, WaitKind, Word};
use crate::protocol::{wait, writer};

/// Display-only facts a process records about itself when it registers.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Identity {
    /// The process id as this process sees it (display only; nothing trusts it).
    pub pid: u32,
    /// Process start time, whole seconds of `CLOCK_BOOTTIME`.
    pub process_start_secs: u32,
}

/// A successful registration.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Registration {
    /// The member index taken.
    pub index: usize,
    /// The identity word published for it.
    pub identity: u64,
}

/// One dead member cleared from the page.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Reaped {
    /// Its member index.
    pub index: usize,
    /// Its pid, as it recorded it (display only).
    pub pid: u32,
    /// Readers it still had attached when it died.
    pub readers: u64,
    /// The generation it owned the writer role with, if it did.
    pub owned_generation: Option<u64>,
}

/// Every member entry is taken by a live process.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Full;

/// Clear entry `index`, whose lock the caller holds and whose previous holder is therefore
/// dead (or never existed). Frees an owner word that names it, zeroes its readers, and
/// clears its identity last. Returns what was cleared, or `None` when the entry was free.
pub fn clear_held_entry<P: Platform>(
    page: &Page<P::Word>,
    plat: &P,
    index: usize,
) -> Option<Reaped> {
    let member = &page.members[index];
    let identity = member.identity.load(Acquire);
    let owned_generation = if plat.mutant(Mutant::RegisterWithoutClearingOwner) {
        None
    } else {
        free_owner_if_named(page, index)
    };
    wait::clear_member_bits(page, index);
    // Its process is dead (we hold its lock): nobody else writes its pin word.
    let pins = member.pins.load(Acquire);
    member.pins.store(0, Release);
    let readers = pins_readers(pins).min(MAX_READERS_PER_MEMBER);
    if readers > 0 {
        // Its pins no longer hold anything back: a writer waiting for readers looks again.
        wait::notify(page, plat, WaitKind::Pins);
    }
    if identity == 0 && owned_generation.is_none() {
        return None;
    }
    member.identity.store(0, Release);
    Some(Reaped {
        index,
        pid: identity_pid(identity),
        readers,
        owned_generation,
    })
}

/// If the owner word names member `index`, free it (keeping the generation). Only called
/// with `index`'s lock held, i.e. when that member is dead.
fn free_owner_if_named<W: Word>(page: &Page<W>, index: usize) -> Option<u64> {
    let mut word = writer::load_owner(page);
    while owner_slot(word) == OwnerSlot::Member(index) {
        let free = owner_word(owner_generation(word), None);
        match writer::swap_owner(page, word, free) {
            Ok(()) => return Some(owner_generation(word)),
            Err(now) => word = now,
        }
    }
    None
}

/// Reap member `index` if it is dead: take its lock (which succeeds only if its holder
/// died), clear it, and let the lock go. `None` when it is alive, free, or someone else is
/// reaping it right now.
pub fn reap_member<P: Platform>(page: &Page<P::Word>, plat: &P, index: usize) -> Option<Reaped> {
    if page.members[index].identity.load(Acquire) == 0 {
        return None;
    }
    if plat.mutant(Mutant::ReapWithoutLock) {
        if plat.member_locked(index) {
            return None;
        }
        return clear_held_entry(page, plat, index);
    }
    if !plat.try_lock_member(index) {
        return None;
    }
    let reaped = clear_held_entry(page, plat, index);
    plat.unlock_member(index);
    reaped
}

/// Reap every dead member except `skip` (the caller's own entry, whose lock it holds).
pub fn reap_all<P: Platform>(page: &Page<P::Word>, plat: &P, skip: Option<usize>) -> Vec<Reaped> {
    (0..MEMBER_CAPACITY)
        .filter(|&i| Some(i) != skip)
        .filter_map(|i| reap_member(page, plat, i))
        .collect()
}

/// Register the calling process: reap dead members, then take a free entry's lock and
/// publish a fresh identity in it. The entry's lock stays held for the member's life.
pub fn register<P: Platform>(
    page: &Page<P::Word>,
    plat: &P,
    who: Identity,
) -> Result<(Registration, Vec<Reaped>), Full> {
    let mut reaped = reap_all(page, plat, None);
    for index in member_allocation_order() {
        let member = &page.members[index];
        if member.identity.load(Acquire) != 0 || !plat.try_lock_member(index) {
            continue;
        }
        // The lock is ours: whoever had this entry is dead (or it was free).
        reaped.extend(clear_held_entry(page, plat, index));
        let now = plat.now();
        let incarnation = page.writer.next_incarnation.fetch_add(1, Relaxed);
        let identity = identity_word(who.pid, incarnation, index);
        member.lease_start.store(
            lease_start_word(LEASE_NONE_MS, who.process_start_secs),
            Relaxed,
        );
        member.heartbeat.store(now, Relaxed);
        member.pins.store(0, Relaxed);
        member.identity.store(identity, Release);
        return Ok((Registration { index, identity }, reaped));
    }
    Err(Full)
}

/// Unregister: clear our own entry and let its lock go. The caller has released the writer
/// role and detached every reader first.
pub fn unregister<P: Platform>(page: &Page<P::Word>, plat: &P, reg: Registration) {
    let member = &page.members[reg.index];
    if member.identity.load(Acquire) == reg.identity {
        wait::clear_member_bits(page, reg.index);
        member.pins.store(0, Relaxed);
        member.identity.store(0, Release);
    }
    plat.unlock_member(reg.index);
}

/// Sum of the readers of live members: the file's reader count (the snapshot computes it
/// with the rest; the models and tests ask for it alone).
#[cfg_attr(not(any(test, feature = "loom")), allow(dead_code))]
pub fn reader_count<P: Platform>(page: &Page<P::Word>, plat: &P) -> u64 {
    (0..MEMBER_CAPACITY)
        .filter_map(|i| {
            let readers = pins_readers(page.members[i].pins.load(Acquire));
            (readers > 0 && plat.member_locked(i)).then_some(readers)
        })
        .fold(0, u64::saturating_add)
}
