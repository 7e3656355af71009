//! The lock-free state machine over the page: members, readers and the writer role.
//!
//! No I/O and no libc here: everything the protocol needs from the world comes through
//! [`crate::platform::Platform`]. The library runs this code over the mapped page; the loom
//! models in `loom-tests/` run the same code over a heap page with a model of the kernel's
//! lock table. Public so that the models (and tools) can drive it; not a stable API.
//!
//! Each submodule's docs carry its argument of correctness.

pub mod members;
pub mod writer;

use std::sync::atomic::Ordering::{Acquire, Relaxed};
use std::time::{Duration, SystemTime};

use crate::page::{
    identity_pid, identity_token, owner_generation, owner_slot, owner_word, OwnerSlot, Page,
    FORMAT_VERSION, HEARTBEAT_UNSTAMPED, MAX_READERS_PER_MEMBER, MEMBER_CAPACITY, ORIGIN_HEALED,
};
use crate::platform::{Platform, Word};
use crate::snapshot::{MemberInfo, OwnerInfo, PageOrigin, Snapshot};
use members::Reaped;

/// What an opener that is alone found and cleared on a valid page.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Recovery {
    /// Members left behind by dead processes.
    pub reaped: Vec<Reaped>,
    /// The owner word named a dead or invalid owner (its generation), now freed.
    pub owner_freed: Option<u64>,
}

impl Recovery {
    /// Whether anything was left behind by a crash.
    pub fn found_stale_state(&self) -> bool {
        !self.reaped.is_empty() || self.owner_freed.is_some()
    }
}

/// Clear every trace of dead processes from a valid page. Only a process that is alone
/// (holds the dead-man switch exclusively, before registering) may call this: then every
/// member entry and owner belongs to a dead process.
pub fn recover_alone<P: Platform>(page: &Page<P::Word>, plat: &P) -> Recovery {
    let reaped = members::reap_all(page, plat, None);
    let mut owner_freed = reaped.iter().find_map(|r| r.owned_generation);
    let word = page.writer.owner.load(Acquire);
    if owner_slot(word) != OwnerSlot::Free {
        page.writer
            .owner
            .store(owner_word(owner_generation(word), None), Relaxed);
        owner_freed = Some(owner_generation(word));
    }
    page.writer.waiters.store(0, Relaxed);
    Recovery {
        reaped,
        owner_freed,
    }
}

/// Read the state of the page for display. `me` is the caller's own member index, if it
/// has one; `now` is [`Platform::now`]. Every value read is bounded before it is used.
pub fn snapshot<P: Platform>(page: &Page<P::Word>, plat: &P, me: Option<usize>) -> Snapshot {
    let now = plat.now();
    let age = |then: u64| Duration::from_nanos(now.saturating_sub(then));
    let secs_age = |then: u64| Duration::from_secs((now / 1_000_000_000).saturating_sub(then));
    let members: Vec<MemberInfo> = (0..MEMBER_CAPACITY)
        .filter_map(|index| {
            let m = &page.members[index];
            let identity = m.identity.load(Acquire);
            if identity == 0 {
                return None;
            }
            let times = m.times.load(Relaxed);
            Some(MemberInfo {
                index,
                pid: identity_pid(identity),
                token: identity_token(identity),
                alive: plat.member_locked(index),
                is_self: me == Some(index),
                readers: m.readers.load(Acquire).min(MAX_READERS_PER_MEMBER),
                registered_age: secs_age(times >> 32),
                process_age: secs_age(times & 0xffff_ffff),
                heartbeat_age: match m.heartbeat.load(Acquire) {
                    HEARTBEAT_UNSTAMPED => None,
                    stamp => Some(age(stamp)),
                },
            })
        })
        .collect();
    let word = page.writer.owner.load(Acquire);
    let owner = match owner_slot(word) {
        OwnerSlot::Free => None,
        OwnerSlot::Invalid(_) => Some(OwnerInfo {
            index: None,
            pid: 0,
            alive: false,
            generation: owner_generation(word),
            heartbeat_age: None,
        }),
        OwnerSlot::Member(index) => {
            let m = members.iter().find(|m| m.index == index);
            Some(OwnerInfo {
                index: Some(index),
                pid: m.map_or(0, |m| m.pid),
                alive: m.is_some_and(|m| m.alive),
                generation: owner_generation(word),
                heartbeat_age: m.and_then(|m| m.heartbeat_age),
            })
        }
    };
    let reader_count = members
        .iter()
        .filter(|m| m.alive)
        .map(|m| m.readers)
        .fold(0, u64::saturating_add);
    let h = &page.header;
    Snapshot {
        format_version: h.version.load(Relaxed).min(u32::MAX as u64) as u32,
        supported_version: FORMAT_VERSION,
        created_at: SystemTime::UNIX_EPOCH + Duration::from_nanos(h.created_at.load(Relaxed)),
        origin: if h.origin.load(Relaxed) == ORIGIN_HEALED {
            PageOrigin::Healed
        } else {
            PageOrigin::Created
        },
        generation: owner_generation(word),
        owner,
        takeovers: page.writer.takeovers.load(Relaxed),
        waiting_claimants: page.writer.waiters.load(Relaxed),
        reader_count,
        members,
    }
}

/// Sum of the readers of live members (see [`members::reader_count`]).
pub fn reader_count<P: Platform>(page: &Page<P::Word>, plat: &P) -> u64 {
    members::reader_count(page, plat)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::page::{Page, MAX_GENERATION};
    use std::cell::{Cell, RefCell};
    use std::collections::HashSet;
    use std::sync::atomic::AtomicU64;

    /// A one-process platform: a lock table in a set, a clock the test moves.
    #[derive(Default)]
    struct Fake {
        held_by_others: RefCell<HashSet<usize>>,
        mine: RefCell<HashSet<usize>>,
        clock: Cell<u64>,
    }

    impl Platform for Fake {
        type Word = AtomicU64;
        fn try_lock_member(&self, index: usize) -> bool {
            !self.held_by_others.borrow().contains(&index) && self.mine.borrow_mut().insert(index)
        }
        fn unlock_member(&self, index: usize) {
            self.mine.borrow_mut().remove(&index);
        }
        fn member_locked(&self, index: usize) -> bool {
            self.held_by_others.borrow().contains(&index) || self.mine.borrow().contains(&index)
        }
        fn now(&self) -> u64 {
            self.clock.get()
        }
        fn wait(&self, _: &AtomicU64, _: u64, timeout: Duration) {
            self.clock.set(self.clock.get() + timeout.as_nanos() as u64);
        }
        fn wake_all(&self, _: &AtomicU64) {}
    }

    fn fresh() -> Box<Page<AtomicU64>> {
        let page = Box::new(Page::zeroed());
        page.initialise(&Fake::default(), 1, 1000, crate::page::ORIGIN_CREATED);
        page
    }

    fn who(pid: u32) -> members::Identity {
        members::Identity {
            pid,
            process_start_secs: 0,
        }
    }

    #[test]
    fn initialised_page_validates_and_damage_is_detected() {
        let page = fresh();
        assert_eq!(page.validate(), Ok(()));
        page.header.created_at.store(2, Relaxed);
        assert!(matches!(
            page.validate(),
            Err(crate::page::Invalid::Damaged(_))
        ));
    }

    #[test]
    fn claim_bumps_generation_and_release_keeps_it() {
        let page = fresh();
        let plat = Fake::default();
        let (reg, _) = members::register(&page, &plat, who(1)).unwrap();
        let claim = writer::try_claim(&page, &plat, reg.index, None).unwrap();
        assert_eq!(claim.generation, 1001);
        assert_eq!(
            writer::try_claim(&page, &plat, reg.index, None),
            Err(writer::ClaimError::AlreadyOurs { generation: 1001 })
        );
        assert!(writer::release(&page, &plat, claim.word));
        assert!(!writer::release(&page, &plat, claim.word));
        let again = writer::try_claim(&page, &plat, reg.index, None).unwrap();
        assert_eq!(again.generation, 1002);
        assert!(!writer::is_current(&page, &plat, claim.word));
        assert!(writer::is_current(&page, &plat, again.word));
    }

    #[test]
    fn dead_owner_is_reaped_by_the_claimant() {
        let page = fresh();
        let plat = Fake::default();
        let (a, _) = members::register(&page, &plat, who(10)).unwrap();
        let claim = writer::try_claim(&page, &plat, a.index, None).unwrap();
        assert!(members::attach(&page, a.index));
        // Move `a` to "another process" that then dies: its lock is free, entry stays.
        plat.mine.borrow_mut().remove(&a.index);
        let (b, _) = members::register(&page, &plat, who(11)).unwrap();
        // Registration reaped `a` (readers gone, owner freed, generation kept).
        assert_eq!(members::reader_count(&page, &plat), 0);
        let taken = writer::try_claim(&page, &plat, b.index, None).unwrap();
        assert_eq!(taken.generation, claim.generation + 1);
    }

    #[test]
    fn live_owner_is_busy_until_its_lease_expires() {
        let page = fresh();
        let plat = Fake::default();
        let (a, _) = members::register(&page, &plat, who(10)).unwrap();
        let claim = writer::try_claim(&page, &plat, a.index, None).unwrap();
        plat.mine.borrow_mut().remove(&a.index);
        plat.held_by_others.borrow_mut().insert(a.index);
        let (b, _) = members::register(&page, &plat, who(11)).unwrap();
        // Not heartbeaten since its claim: a single attempt never judges it expired.
        plat.clock.set(plat.clock.get() + 1_000);
        assert!(matches!(
            writer::try_claim(&page, &plat, b.index, Some(50)),
            Err(writer::ClaimError::Busy { pid: 10, .. })
        ));
        assert!(writer::heartbeat(&page, &plat, a.index, claim.word));
        assert!(matches!(
            writer::try_claim(&page, &plat, b.index, Some(50)),
            Err(writer::ClaimError::Busy { pid: 10, .. })
        ));
        plat.clock.set(plat.clock.get() + 51);
        let taken = writer::try_claim(&page, &plat, b.index, Some(50)).unwrap();
        assert!(matches!(
            taken.takeover,
            Some(writer::Takeover::LeaseExpired { pid: 10, .. })
        ));
        // The deposed owner: heartbeat, is_current and release all fail and change
        // nothing of the successor's.
        let before = page.writer.owner.load(Relaxed);
        let hb = page.members[b.index].heartbeat.load(Relaxed);
        assert!(!writer::heartbeat(&page, &plat, a.index, claim.word));
        assert!(!writer::release(&page, &plat, claim.word));
        assert_eq!(page.writer.owner.load(Relaxed), before);
        assert_eq!(page.members[b.index].heartbeat.load(Relaxed), hb);
    }

    #[test]
    fn invalid_owner_slot_is_taken_over_and_exhausted_generation_refused() {
        let page = fresh();
        let plat = Fake::default();
        let (a, _) = members::register(&page, &plat, who(1)).unwrap();
        page.writer.owner.store(5 << 8 | 250, Relaxed);
        let claim = writer::try_claim(&page, &plat, a.index, None).unwrap();
        assert_eq!(claim.generation, 6);
        assert!(writer::release(&page, &plat, claim.word));
        page.writer
            .owner
            .store(owner_word(MAX_GENERATION, None), Relaxed);
        assert_eq!(
            writer::try_claim(&page, &plat, a.index, None),
            Err(writer::ClaimError::GenerationExhausted)
        );
    }

    #[test]
    fn registration_fills_one_entry_per_line_first_and_refuses_when_full() {
        let page = fresh();
        let plat = Fake::default();
        let mut seen = Vec::new();
        for pid in 0..MEMBER_CAPACITY as u32 {
            let (reg, _) = members::register(&page, &plat, who(pid)).unwrap();
            seen.push(reg.index);
        }
        assert!(seen[..62].iter().all(|i| i % 2 == 0));
        assert_eq!(
            members::register(&page, &plat, who(999)),
            Err(members::Full)
        );
    }

    #[test]
    fn recovery_when_alone_clears_dead_members_and_owner() {
        let page = fresh();
        let plat = Fake::default();
        let (a, _) = members::register(&page, &plat, who(1)).unwrap();
        writer::try_claim(&page, &plat, a.index, None).unwrap();
        members::attach(&page, a.index);
        plat.mine.borrow_mut().clear();
        let recovery = recover_alone(&page, &plat);
        assert!(recovery.found_stale_state());
        assert_eq!(recovery.reaped.len(), 1);
        assert_eq!(recovery.reaped[0].readers, 1);
        let snap = snapshot(&page, &plat, None);
        assert!(snap.owner.is_none() && snap.members.is_empty());
        assert_eq!(snap.generation, 1001);
        assert_eq!(page.writer.owner.load(Relaxed) >> 8, 1001);
    }
}
