//! The writer role: claim, heartbeat, release, and waiting for a claim.
//!
//! # Argument of correctness
//!
//! The owner word is `generation << 8 | slot`, the low half of a 16-byte word whose high
//! half is `published` (page format 3: see `snapshots.rs` for the fence this gives). Every
//! claim is one 16-byte compare-and-swap from the word it observed to `(next, me)`, leaving
//! `published` as it was, where `next` is the observed generation + 1 (or,
//! with a generation floor `f`, at least `f + 1`), so
//!
//! * **at most one owner** (invariant 1): of claimants that observed the same word,
//!   exactly one CAS succeeds; the others observe a changed word and start over;
//! * **generations strictly increase and never repeat** (invariant 2): each success
//!   writes a generation above the observed one into the same word it takes ownership in,
//!   and the generation is never lowered — release and reaping keep it, only the slot is
//!   cleared. There is no window between "I own" and "my generation is set".
//!
//! A claimant may CAS away an owner word that names
//! * nobody (slot 0);
//! * a dead member — one whose lock no live process holds exclusively. The claimant reaps
//!   it when it can take its lock; when it cannot (a death watcher or a read-only process
//!   holds the byte *shared* for an instant) it claims over it without reaping: the probe
//!   already proved the member dead, and the CAS from the observed word fails if a
//!   registrant freed it meanwhile;
//! * a live member that **declared a lease** with its claim and whose heartbeat is older
//!   than that lease (a *lease takeover*). The claimant's own lease plays no part: it is
//!   what the claimant declares for itself. The declaration is stored in the owner's own
//!   member entry before its claim's CAS, so whoever reads the owner word (SeqCst) and then
//!   the entry sees the declaration of that claim;
//! * an invalid slot (damage).
//!
//! A **deposed writer** (invariant 3) recognises itself because the owner word is no
//! longer exactly the word its claim wrote — with its generation inside, so even a later
//! claim by the same process cannot be mistaken for the old one. Its `release` is a CAS
//! from *its* word, so it fails. Its `heartbeat` loads the heartbeat word, checks the owner
//! word, and only then CASes the stamp in from the value it loaded. A claim by the same
//! process writes `HEARTBEAT_CLAIMED | generation` into that word before its owner CAS,
//! and only once the owner word no longer names the process — after the old guard was
//! deposed. So an old guard either loads the marker (then its check fails) or loaded an
//! older value (then its CAS fails: markers are unique per generation, and stamps strictly
//! increase: each heartbeat stamps above the stamp it replaces, and the first one after a
//! marker reads a monotonic clock after the marker, so above every earlier stamp). Nothing it does can change its successor's owner word,
//! generation, heartbeat or published version (invariant 4).
//!
//! Threads of **one process** share its member entry and may claim at once (through
//! handles with different declarations). Format 2 serialised them with a process-local
//! lock, because each attempt wrote its declared lease and its heartbeat marker into the
//! entry before its CAS, so a losing attempt could overwrite the winner's. Format 3 needs
//! no lock: the **claim word carries the declaration** — the lease code lives in the
//! pair's published half, written by the claim's own 16-byte CAS and kept by every publish,
//! so whenever the owner half is a claim's word the lease code is that claim's, and a judge
//! that CASes from the pair it judged judged by the owner's own declaration. What remains
//! in the entry is the marker "not heartbeaten since the claim"
//! (`claim_marker(observed generation)`), and an attempt writes it with a CAS from a value
//! it loaded *while the owner word was still the one it observed* (it re-reads the owner
//! word after loading the heartbeat word). A winner of the same process that claimed
//! meanwhile changed the owner word before writing its first stamp, so a losing attempt
//! either sees the change and starts over, or its CAS fails on the winner's stamp; at
//! worst it replaces the winner's marker by an equal-meaning marker (still "not
//! heartbeaten since the claim"). Markers name the generation observed, and a later claim
//! observes a higher one, so a marker never recurs after a newer claim's and the ABA of an
//! old guard's heartbeat (above) stays impossible. Across processes a claim stays one CAS.
//!
//! **Waiting** claimants sleep on `wake_seq` with their member's bit set in
//! `claim_waiters` (see `wait.rs`): a release clears the owner word, then wakes them only if
//! a bit is set. Death cannot wake anyone, so the platform's death watcher
//! ([`Platform::watch_member`]) wakes them when the owner's lock is dropped, and the
//! wait is bounded in any case so that nothing waits forever on a dead process (invariant 7).

use std::sync::atomic::Ordering::{Acquire, Relaxed, Release, SeqCst};
use std::time::Duration;

use crate::page::{
    claim_marker, declared_lease_ns, half_lease_code, half_version, identity_pid, lease_code,
    lease_code_ms, lease_start_word, owner_generation, owner_slot, owner_word, published_half,
    OwnerSlot, Page, HEARTBEAT_CLAIMED, MAX_GENERATION,
};
use crate::platform::{Mutant, Platform, WaitKind, Word, WordPair};
use crate::protocol::members::{clear_held_entry, Reaped};
use crate::protocol::wait;

/// Longest a waiting claimant sleeps between looks at the owner, in case no death watcher
/// could be started; also bounds how late a lease expiry is noticed.
pub const MAX_WAIT_SLICE: Duration = Duration::from_millis(5);

/// How a claim displaced its predecessor.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Takeover {
    /// The owner's process was dead (its member lock was free); it was reaped.
    Dead {
        /// Its pid, as it recorded it.
        pid: u32,
        /// The generation it owned.
        generation: u64,
    },
    /// The owner was alive but its heartbeat was older than the lease it had declared.
    LeaseExpired {
        /// Its pid, as it recorded it.
        pid: u32,
        /// The generation it owned.
        generation: u64,
        /// How old its heartbeat was.
        heartbeat_age: Duration,
        /// The lease it had declared.
        lease: Duration,
    },
    /// The owner word named no valid member (damage).
    Invalid {
        /// The generation the word held.
        generation: u64,
    },
}

/// A successful claim.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Claim {
    /// The owner word this claim wrote: it identifies the claim.
    pub word: u64,
    /// The claim's generation (the fencing token).
    pub generation: u64,
    /// Whom it displaced, if anyone.
    pub takeover: Option<Takeover>,
}

/// Why a claim did not succeed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClaimError {
    /// Another live member owns the writer role.
    Busy {
        /// The owner's member index.
        index: usize,
        /// The owner's pid, as it recorded it.
        pid: u32,
        /// The owner's generation.
        generation: u64,
    },
    /// The caller's own member already owns it.
    AlreadyOurs {
        /// The generation it owns.
        generation: u64,
    },
    /// The generation counter is exhausted (only a damaged or hostile page gets here).
    GenerationExhausted,
}

/// What a claimant declares about itself with its claim.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Declaration {
    /// The lease it declares, in whole milliseconds (`LEASE_NONE_MS`: none).
    pub lease_ms: u64,
    /// Its process start time (display), kept beside the lease in its entry.
    pub process_start_secs: u32,
    /// Its claim must get a generation above this (the engine's highest durable token).
    pub generation_floor: u64,
    /// Whether it may judge other owners' leases: `false` when its clock is not the one
    /// heartbeats are stamped on (then it deposes only dead owners).
    pub judges_leases: bool,
    /// With [`Mutant::ClaimantChoosesLease`] only: the lease the claimant judges by.
    pub judge_by_ns: Option<u64>,
}

impl Declaration {
    /// No lease, no floor.
    #[cfg_attr(not(any(test, feature = "loom")), allow(dead_code))]
    pub const NONE: Declaration = Declaration {
        lease_ms: crate::page::LEASE_NONE_MS,
        process_start_secs: 0,
        generation_floor: 0,
        judges_leases: true,
        judge_by_ns: None,
    };
}

/// Read the owner word (one 64-bit load of the pair's owner half). The one place that does.
#[inline]
pub fn load_owner<W: Word>(page: &Page<W>) -> u64 {
    page.pair().load_owner(SeqCst)
}

/// Change the owner word from `from` to `to`, keeping `published` as it is, in one 16-byte
/// CAS. Fails (`Err(owner seen)`) only when the owner word is not `from`; a publish racing
/// with it (possible only by the owner `from` names) makes it retry.
#[inline]
pub fn swap_owner<W: Word>(page: &Page<W>, from: u64, to: u64) -> Result<(), u64> {
    let pair = page.pair();
    let (owner, mut published) = pair.load_both(SeqCst);
    if owner != from {
        return Err(owner);
    }
    loop {
        match pair.compare_exchange((from, published), (to, published), SeqCst, SeqCst) {
            Ok(_) => return Ok(()),
            Err((owner, now)) if owner == from => published = now,
            Err((owner, _)) => return Err(owner),
        }
    }
}

/// A live owner a waiting claimant has been watching: the owner word it saw, and since
/// when (in [`Platform::now`] nanoseconds). Lets a lease expire for an owner that has not
/// heartbeaten since its claim.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Watched {
    /// The owner word observed.
    pub word: u64,
    /// When it was first observed.
    pub since: u64,
}

/// One attempt to claim the writer role for member `me`, taking over a dead owner, an
/// owner with an invalid slot, or an owner whose heartbeat is older than the lease it
/// declared. An owner that has not heartbeaten since its claim is not judged by a single
/// attempt (only by [`claim_until`], which watches it for its lease).
#[cfg_attr(not(any(test, feature = "loom")), allow(dead_code))]
pub fn try_claim<P: Platform>(
    page: &Page<P::Word>,
    plat: &P,
    me: usize,
    declare: &Declaration,
) -> Result<Claim, ClaimError> {
    try_claim_watching(page, plat, me, declare, None)
}

/// When the lease of the owner whose word is `word` and whose heartbeat word is
/// `heartbeat` started: its heartbeat, or — not heartbeaten since its claim — when
/// `watched` first saw it own.
fn lease_start(heartbeat: u64, word: u64, watched: Option<Watched>) -> Option<u64> {
    if heartbeat & HEARTBEAT_CLAIMED == 0 {
        Some(heartbeat)
    } else {
        watched.filter(|w| w.word == word).map(|w| w.since)
    }
}

/// The lease a live owner (member `index`) is judged by: the one its claim declared, which
/// the claim word carries (`published`, the pair's half seen with the owner word).
#[inline]
fn owner_lease<P: Platform>(
    page: &Page<P::Word>,
    plat: &P,
    index: usize,
    published: u64,
    declare: &Declaration,
) -> Option<u64> {
    if plat.mutant(Mutant::ClaimantChoosesLease) {
        return declare.judge_by_ns;
    }
    if !declare.judges_leases {
        return None;
    }
    if plat.mutant(Mutant::LeaseDeclaredInEntry) {
        return declared_lease_ns(page.members[index].lease_start.load(Acquire));
    }
    lease_code_ms(half_lease_code(published)).map(|ms| ms * 1_000_000)
}

/// [`try_claim`], judging an owner that has not heartbeaten since its claim by how long
/// `watched` has seen it own (what a waiting claimant knows).
#[inline]
pub fn try_claim_watching<P: Platform>(
    page: &Page<P::Word>,
    plat: &P,
    me: usize,
    declare: &Declaration,
    watched: Option<Watched>,
) -> Result<Claim, ClaimError> {
    claim_attempt(page, plat, me, declare, watched)
}

/// One claim attempt (see [`try_claim_watching`]). Threads of this process may run others
/// at once: see the module docs for why no lock is needed.
#[inline]
fn claim_attempt<P: Platform>(
    page: &Page<P::Word>,
    plat: &P,
    me: usize,
    declare: &Declaration,
    watched: Option<Watched>,
) -> Result<Claim, ClaimError> {
    let mut displaced = None;
    loop {
        // Both halves: the CAS below expects them (a publish between the two loads only
        // makes it fail and look again).
        let (word, published) = page.pair().load_both(SeqCst);
        let generation = owner_generation(word);
        let takeover = match owner_slot(word) {
            OwnerSlot::Free => displaced.take(),
            OwnerSlot::Member(i) if i == me => return Err(ClaimError::AlreadyOurs { generation }),
            OwnerSlot::Invalid(_) => Some(Takeover::Invalid { generation }),
            OwnerSlot::Member(i) => {
                let owner = &page.members[i];
                let pid = identity_pid(owner.identity.load(Acquire));
                if !plat.member_locked(i) {
                    // Dead: taking its lock is reaping it, which frees the owner word
                    // (keeping the generation); then claim the free word.
                    if plat.try_lock_member(i) {
                        let reaped = clear_held_entry(page, plat, i);
                        plat.unlock_member(i);
                        if let Some(Reaped {
                            pid,
                            owned_generation: Some(generation),
                            ..
                        }) = reaped
                        {
                            displaced = Some(Takeover::Dead { pid, generation });
                        }
                        continue;
                    }
                    // Nobody holds its byte exclusively, but someone holds it shared for
                    // an instant (a death watcher, a read-only prober) or is reaping it:
                    // it is dead all the same. Claim over it; the entry is reaped later.
                    Some(Takeover::Dead { pid, generation })
                } else {
                    let expired =
                        owner_lease(page, plat, i, published, declare).and_then(|lease| {
                            let start = lease_start(owner.heartbeat.load(Acquire), word, watched)?;
                            let age = plat.now().saturating_sub(start);
                            (age > lease).then_some((age, lease))
                        });
                    match expired {
                        Some((age, lease)) => Some(Takeover::LeaseExpired {
                            pid,
                            generation,
                            heartbeat_age: Duration::from_nanos(age),
                            lease: Duration::from_nanos(lease),
                        }),
                        None => {
                            return Err(ClaimError::Busy {
                                index: i,
                                pid,
                                generation,
                            })
                        }
                    }
                }
            }
        };
        let next = if plat.mutant(Mutant::ClaimWithoutGenerationBump) {
            generation
        } else {
            generation.max(declare.generation_floor).saturating_add(1)
        };
        if next > MAX_GENERATION {
            return Err(ClaimError::GenerationExhausted);
        }
        // "Not heartbeaten since this claim" goes into our own entry (no other live process
        // writes it) before the CAS that makes it ours to judge. Reading the clock here
        // would cost more than the rest of the claim.
        let me_entry = &page.members[me];
        if plat.mutant(Mutant::LeaseDeclaredInEntry) {
            // Format 2 without its process-local claim lock: the declaration in the entry,
            // plain stores (a racing attempt of this process overwrites the winner's).
            me_entry.lease_start.store(
                lease_start_word(declare.lease_ms, declare.process_start_secs),
                Release,
            );
            me_entry.heartbeat.store(claim_marker(generation), Release);
        } else {
            // A CAS from a value loaded while the owner word was still the one observed:
            // an attempt of another thread of this process that has won meanwhile (and
            // maybe stamped) makes it fail, so a losing attempt never overwrites the
            // winner's marker or stamp (module docs).
            let seen = me_entry.heartbeat.load(SeqCst);
            if load_owner(page) != word
                || me_entry
                    .heartbeat
                    .compare_exchange(seen, claim_marker(generation), SeqCst, SeqCst)
                    .is_err()
            {
                continue;
            }
        }
        let mine = owner_word(next, Some(me));
        // One 16-byte CAS: the owner half from the word observed to ours, the published
        // half's version unchanged and its lease code ours (the claim word carries the
        // declaration). Every publish of an earlier claim is a CAS that expects that
        // claim's owner half, so none can land after this (see `snapshots.rs`).
        let declared = published_half(half_version(published), lease_code(declare.lease_ms));
        let won = if plat.mutant(Mutant::ClaimWithoutCas) {
            page.pair().store(mine, declared, SeqCst);
            true
        } else {
            page.pair()
                .compare_exchange((word, published), (mine, declared), SeqCst, SeqCst)
                .is_ok()
        };
        if !won {
            continue;
        }
        if takeover.is_some() {
            page.writer.takeovers.fetch_add(1, Relaxed);
        }
        return Ok(Claim {
            word: mine,
            generation: next,
            takeover,
        });
    }
}

/// Claim, waiting until `deadline` (in [`Platform::now`] nanoseconds) for the owner to
/// release, die, or let its heartbeat grow older than the lease it declared.
pub fn claim_until<P: Platform>(
    page: &Page<P::Word>,
    plat: &P,
    me: usize,
    declare: &Declaration,
    deadline: u64,
) -> Result<Claim, ClaimError> {
    let mut watched: Option<Watched> = None;
    wait::sleep_until(
        page,
        plat,
        WaitKind::Claim,
        me,
        deadline,
        MAX_WAIT_SLICE,
        || {
            let busy = match try_claim_watching(page, plat, me, declare, watched) {
                Err(busy @ ClaimError::Busy { .. }) => busy,
                // Won, or an answer that waiting cannot change.
                done => return Ok(done),
            };
            let ClaimError::Busy {
                index, generation, ..
            } = busy
            else {
                unreachable!()
            };
            let now = plat.now();
            let word = owner_word(generation, Some(index));
            if watched.is_none_or(|w| w.word != word) {
                watched = Some(Watched { word, since: now });
            }
            // Its death must wake us: no release will.
            plat.watch_member(index, page.members[index].identity.load(Acquire));
            // Look again when its lease (if it declared one) can have expired.
            let mut longest = u64::MAX;
            let published = page.pair().load_published(SeqCst);
            if let Some(lease) = owner_lease(page, plat, index, published, declare) {
                let heartbeat = page.members[index].heartbeat.load(Acquire);
                if let Some(start) = lease_start(heartbeat, word, watched) {
                    let expires = start.saturating_add(lease).saturating_add(1);
                    longest = expires.saturating_sub(now);
                }
            }
            Err((busy, longest))
        },
    )
    .and_then(|done| done)
}

/// Whether the claim that wrote `word` still owns the writer role.
#[inline]
pub fn is_current<P: Platform>(page: &Page<P::Word>, plat: &P, word: u64) -> bool {
    plat.mutant(Mutant::HeartbeatWithoutOwnerCheck) || load_owner(page) == word
}

/// Stamp the heartbeat of the claim that wrote `word` (owned by member `me`). Writes only
/// the caller's own member entry, and only while the claim is current: `false`, changing
/// nothing, once it has been deposed.
#[inline]
pub fn heartbeat<P: Platform>(page: &Page<P::Word>, plat: &P, me: usize, word: u64) -> bool {
    let stamp_word = &page.members[me].heartbeat;
    if plat.mutant(Mutant::HeartbeatStoresFirst) {
        stamp_word.store(plat.now().max(1), Release);
        return is_current(page, plat, word);
    }
    loop {
        let seen = stamp_word.load(SeqCst);
        if !is_current(page, plat, word) {
            return false;
        }
        // Stamps of this entry strictly increase: a stamp follows the one it replaces. After
        // a claim marker, `now` is past every stamp the marker replaced (the clock is
        // monotonic and was read after the marker was written, which was after them).
        let now = plat.now();
        let stamp = if seen & HEARTBEAT_CLAIMED == 0 {
            now.max(seen + 1)
        } else {
            now.max(1)
        };
        if stamp_word
            .compare_exchange(seen, stamp, SeqCst, SeqCst)
            .is_ok()
        {
            return true;
        }
    }
}

/// Release the claim that wrote `word`: free the owner word (keeping the generation) only
/// if it is still exactly `word`, then wake waiting claimants. `false` when deposed.
#[inline]
pub fn release<P: Platform>(page: &Page<P::Word>, plat: &P, word: u64) -> bool {
    let free = owner_word(owner_generation(word), None);
    let released = if plat.mutant(Mutant::ReleaseWithoutOwnerCheck) {
        let published = page.pair().load_published(SeqCst);
        page.pair().store(free, published, SeqCst);
        true
    } else {
        swap_owner(page, word, free).is_ok()
    };
    if released {
        wake_claimants(page, plat);
    }
    released
}

/// Tell waiting claimants to look again (after a release, or when a death is noticed).
/// Loads only when nobody waits.
#[inline]
pub fn wake_claimants<P: Platform>(page: &Page<P::Word>, plat: &P) {
    wait::wake(page, plat, WaitKind::Claim);
}
