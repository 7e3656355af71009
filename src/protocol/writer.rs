//! The writer role: claim, heartbeat, release, and waiting for a claim.
//!
//! # Argument of correctness
//!
//! The owner word is `generation << 8 | slot`. Every claim is one compare-and-swap from
//! the word it observed to `(generation + 1, me)`, so
//!
//! * **at most one owner** (invariant 1): of claimants that observed the same word,
//!   exactly one CAS succeeds; the others observe a changed word and start over;
//! * **generations strictly increase and never repeat** (invariant 2): each success
//!   writes its observed generation + 1 into the same word it takes ownership in, and the
//!   generation is never lowered — release and reaping keep it, only the slot is cleared.
//!   There is no window between "I own" and "my generation is set".
//!
//! A claimant may CAS away an owner word that names
//! * nobody (slot 0);
//! * a dead member — one whose lock it could take, which is reaping it: the reap frees the
//!   word (keeping the generation) and the claimant claims the free word;
//! * a live member whose heartbeat is older than the claimant's lease (a *lease takeover*);
//! * an invalid slot (damage).
//!
//! A **deposed writer** (invariant 3) recognises itself because the owner word is no
//! longer exactly the word its claim wrote — with its generation inside, so even a later
//! claim by the same process cannot be mistaken for the old one. Its `release` is a CAS
//! from *its* word, so it fails; its `heartbeat` stores only into its own member entry
//! (which no successor reads as its own), then reports `Deposed`. Nothing it does can
//! change its successor's owner word, generation or heartbeat (invariant 4).
//!
//! **Waiting** claimants sleep on `wake_seq` (a futex in production). A waiter counts
//! itself in `waiters` *before* it first looks at the owner word, and reads `wake_seq`
//! before each look; a release clears the owner word, then reads `waiters`, and only if it
//! is non-zero bumps `wake_seq` and wakes sleepers (all SeqCst). If a waiter's look saw the
//! owner, its increment precedes the release's CAS and so the release's read of `waiters`:
//! the release bumps `wake_seq` — before the waiter's sleep checks it (the sleep returns at
//! once) or after (the wake-up reaches it). An uncontended release thus costs one CAS and
//! one load. Death cannot wake anyone, so the platform's death watcher
//! ([`Platform::watch_member`]) bumps `wake_seq` when the owner's lock is dropped, and the
//! wait is bounded in any case so that nothing waits forever on a dead process (invariant 7).

use std::sync::atomic::Ordering::{Acquire, Relaxed, Release, SeqCst};
use std::time::Duration;

use crate::page::{
    identity_pid, owner_generation, owner_slot, owner_word, OwnerSlot, Page, HEARTBEAT_UNSTAMPED,
    MAX_GENERATION,
};
use crate::platform::{Mutant, Platform, Word};
use crate::protocol::members::{clear_held_entry, Reaped};

/// Longest a waiting claimant sleeps between looks at the owner, in case no death watcher
/// could be started; also bounds how late a lease expiry is noticed.
pub const MAX_WAIT_SLICE: Duration = Duration::from_millis(5);

/// How a claim displaced its predecessor.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Takeover {
    /// The owner's process was dead (its member lock was free); it was reaped.
    Dead {
        /// Its pid, as it recorded it.
        pid: u32,
        /// The generation it owned.
        generation: u64,
    },
    /// The owner was alive but its heartbeat was older than the claimant's lease.
    LeaseExpired {
        /// Its pid, as it recorded it.
        pid: u32,
        /// The generation it owned.
        generation: u64,
        /// How old its heartbeat was, in nanoseconds.
        heartbeat_age_ns: u64,
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

/// Read the owner word. The one place that does.
#[inline]
pub fn load_owner<W: Word>(page: &Page<W>) -> u64 {
    page.writer.owner.load(SeqCst)
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
/// owner with an invalid slot, or (with `lease_ns`) an owner whose heartbeat is older than
/// the lease. An owner that has not heartbeaten since its claim is not judged by a single
/// attempt (only by [`claim_until`], which watches it for the lease).
pub fn try_claim<P: Platform>(
    page: &Page<P::Word>,
    plat: &P,
    me: usize,
    lease_ns: Option<u64>,
) -> Result<Claim, ClaimError> {
    try_claim_watching(page, plat, me, lease_ns, None)
}

/// When the lease of the owner whose word is `word` and whose heartbeat is `heartbeat`
/// started: its heartbeat, or — not heartbeaten since its claim — when `watched` first saw
/// it own.
fn lease_start(heartbeat: u64, word: u64, watched: Option<Watched>) -> Option<u64> {
    if heartbeat != HEARTBEAT_UNSTAMPED {
        Some(heartbeat)
    } else {
        watched.filter(|w| w.word == word).map(|w| w.since)
    }
}

#[inline]
fn try_claim_watching<P: Platform>(
    page: &Page<P::Word>,
    plat: &P,
    me: usize,
    lease_ns: Option<u64>,
    watched: Option<Watched>,
) -> Result<Claim, ClaimError> {
    let mut displaced = None;
    loop {
        let word = load_owner(page);
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
                    // Someone else holds its lock right now (a reaper or a registrant,
                    // either of which frees the word): busy; the caller looks again.
                    return Err(ClaimError::Busy {
                        index: i,
                        pid,
                        generation,
                    });
                }
                let expired = lease_ns.and_then(|lease| {
                    let start = lease_start(owner.heartbeat.load(Acquire), word, watched)?;
                    let age = plat.now().saturating_sub(start);
                    (age > lease).then_some(age)
                });
                match expired {
                    Some(heartbeat_age_ns) => Some(Takeover::LeaseExpired {
                        pid,
                        generation,
                        heartbeat_age_ns,
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
        };
        let next = if plat.mutant(Mutant::ClaimWithoutGenerationBump) {
            generation
        } else {
            generation + 1
        };
        if next > MAX_GENERATION {
            return Err(ClaimError::GenerationExhausted);
        }
        // An old heartbeat of ours must not make us look expired the moment we own: mark
        // it "not since this claim" (our own entry; no other live process writes it).
        // Reading the clock here would cost more than the rest of the claim.
        page.members[me]
            .heartbeat
            .store(HEARTBEAT_UNSTAMPED, Release);
        let mine = owner_word(next, Some(me));
        let won = if plat.mutant(Mutant::ClaimWithoutCas) {
            page.writer.owner.store(mine, SeqCst);
            true
        } else {
            page.writer
                .owner
                .compare_exchange(word, mine, SeqCst, SeqCst)
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
/// release, die, or (with `lease_ns`) let its heartbeat grow older than the lease.
pub fn claim_until<P: Platform>(
    page: &Page<P::Word>,
    plat: &P,
    me: usize,
    lease_ns: Option<u64>,
    deadline: u64,
) -> Result<Claim, ClaimError> {
    let writer = &page.writer;
    let counted_late = plat.mutant(Mutant::WaiterCountedAfterLook);
    if !counted_late {
        writer.waiters.fetch_add(1, SeqCst);
        // Our count, then our looks at the owner word; a release: its CAS, then its read
        // of the count. SeqCst orders the pairs (see Word::seq_cst_order_point).
        P::Word::seq_cst_order_point();
    }
    let mut watched: Option<Watched> = None;
    let result = loop {
        let seq = writer.wake_seq.load(SeqCst);
        let busy = match try_claim_watching(page, plat, me, lease_ns, watched) {
            Err(busy @ ClaimError::Busy { .. }) => busy,
            done => break done,
        };
        let ClaimError::Busy {
            index, generation, ..
        } = busy
        else {
            unreachable!()
        };
        let now = plat.now();
        if now >= deadline {
            break Err(busy);
        }
        let word = owner_word(generation, Some(index));
        if watched.is_none_or(|w| w.word != word) {
            watched = Some(Watched { word, since: now });
        }
        plat.watch_member(index);
        let mut slice = (deadline - now).min(MAX_WAIT_SLICE.as_nanos() as u64);
        if let Some(lease) = lease_ns {
            let heartbeat = page.members[index].heartbeat.load(Acquire);
            if let Some(start) = lease_start(heartbeat, word, watched) {
                let expires = start.saturating_add(lease).saturating_add(1);
                slice = slice.min(expires.saturating_sub(now).max(1));
            }
        }
        if counted_late {
            writer.waiters.fetch_add(1, SeqCst);
        }
        plat.wait(&writer.wake_seq, seq, Duration::from_nanos(slice));
        if counted_late {
            writer.waiters.fetch_sub(1, SeqCst);
        }
    };
    if !counted_late {
        writer.waiters.fetch_sub(1, SeqCst);
    }
    result
}

/// Whether the claim that wrote `word` still owns the writer role.
#[inline]
pub fn is_current<P: Platform>(page: &Page<P::Word>, plat: &P, word: u64) -> bool {
    plat.mutant(Mutant::HeartbeatWithoutOwnerCheck) || load_owner(page) == word
}

/// Stamp the heartbeat of the claim that wrote `word` (owned by member `me`). Stores only
/// into the caller's own member entry; `false` when the claim has been deposed.
#[inline]
pub fn heartbeat<P: Platform>(page: &Page<P::Word>, plat: &P, me: usize, word: u64) -> bool {
    let now = plat.now().max(HEARTBEAT_UNSTAMPED + 1);
    page.members[me].heartbeat.store(now, Release);
    is_current(page, plat, word)
}

/// Release the claim that wrote `word`: free the owner word (keeping the generation) only
/// if it is still exactly `word`, then wake waiting claimants. `false` when deposed.
#[inline]
pub fn release<P: Platform>(page: &Page<P::Word>, plat: &P, word: u64) -> bool {
    let free = owner_word(owner_generation(word), None);
    let released = if plat.mutant(Mutant::ReleaseWithoutOwnerCheck) {
        page.writer.owner.store(free, SeqCst);
        true
    } else {
        page.writer
            .owner
            .compare_exchange(word, free, SeqCst, SeqCst)
            .is_ok()
    };
    if released {
        wake_claimants(page, plat);
    }
    released
}

/// Tell waiting claimants to look again (after a release, or when a death is noticed).
/// A no-op (one load) when nobody waits.
#[inline]
pub fn wake_claimants<P: Platform>(page: &Page<P::Word>, plat: &P) {
    P::Word::seq_cst_order_point();
    if page.writer.waiters.load(SeqCst) != 0 {
        page.writer.wake_seq.fetch_add(1, SeqCst);
        plat.wake_all(&page.writer.wake_seq);
    }
}
