//! The lock-free state machine over the page: members, readers and the writer role.
//!
//! No I/O and no libc here: everything the protocol needs from the world comes through
//! [`crate::platform::Platform`]. The library runs this code over the mapped page; the loom
//! models in `loom-tests/` run the same code over a heap page with a model of the kernel's
//! lock table. Public so that the models (and tools) can drive it; not a stable API.
//!
//! Each submodule's docs carry its argument of correctness.

pub mod members;
pub mod snapshots;
pub mod wait;
pub mod writer;

use std::sync::atomic::Ordering::{Acquire, Relaxed, SeqCst};
use std::time::{Duration, SystemTime};

use crate::page::{
    identity_pid, identity_token, owner_generation, owner_slot, owner_word, pins_oldest,
    pins_readers, OwnerSlot, Page, FORMAT_VERSION, HEARTBEAT_CLAIMED, MAX_GENERATION,
    MEMBER_CAPACITY, ORIGIN_HEALED,
};
use crate::platform::{Platform, WaitKind, Word, WordPair};
use crate::snapshot::{MemberInfo, OwnerInfo, PageOrigin, Snapshot};
use members::Reaped;
pub use snapshots::Local;

/// How far an opener that finds a page from another boot moves the generation up, at
/// least: tokens handed out after the page's last writeback to disk (lost in the crash)
/// stay below the new ones as long as fewer than 2^32 claims were made since.
pub const REBOOT_GENERATION_JUMP: u64 = 1 << 32;

/// What an opener that is alone found and cleared on a valid page.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Recovery {
    /// Members left behind by dead processes.
    pub reaped: Vec<Reaped>,
    /// The owner word named a dead or invalid owner (its generation), now freed.
    pub owner_freed: Option<u64>,
    /// The page was last initialised or recovered in another boot of the host: the
    /// generation was moved from the first value to the second.
    pub rebooted: Option<(u64, u64)>,
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
///
/// `boot` identifies the running boot of the host; a page last settled in another boot
/// may have lost, in the crash, writes that reached the engine's durable state (the page
/// reaches disk only by writeback), so its generation jumps by at least
/// [`REBOOT_GENERATION_JUMP`] and to at least `clock_seed`.
pub fn recover_alone<P: Platform>(
    page: &Page<P::Word>,
    plat: &P,
    boot: u64,
    clock_seed: u64,
) -> Recovery {
    let reaped = members::reap_all(page, plat, None);
    let mut owner_freed = reaped.iter().find_map(|r| r.owned_generation);
    let word = writer::load_owner(page);
    let mut generation = owner_generation(word);
    if owner_slot(word) != OwnerSlot::Free {
        owner_freed = Some(generation);
    }
    let mut rebooted = None;
    if page.writer.boot.load(Relaxed) != boot {
        let jumped = generation
            .saturating_add(REBOOT_GENERATION_JUMP)
            .max(clock_seed)
            .min(MAX_GENERATION);
        rebooted = Some((generation, jumped));
        generation = jumped;
        page.writer.boot.store(boot, Relaxed);
    }
    let published = page.pair().load_published(SeqCst);
    page.pair()
        .store(owner_word(generation, None), published, SeqCst);
    for kind in [WaitKind::Claim, WaitKind::Publish, WaitKind::Pins] {
        for word in wait::bits(page, kind) {
            word.store(0, Relaxed);
        }
    }
    Recovery {
        reaped,
        owner_freed,
        rebooted,
    }
}

/// Wake every sleeper after a member's death (called by the platform's death watcher).
pub fn wake_after_death<P: Platform>(page: &Page<P::Word>, plat: &P) {
    wait::wake_all_kinds(page, plat);
}

fn count_bits<W: Word>(page: &Page<W>, kind: WaitKind) -> u64 {
    wait::bits(page, kind)
        .iter()
        .map(|w| u64::from(w.load(Relaxed).count_ones()))
        .sum()
}

/// Read the state of the page for display. `me` is the caller's own member index, if it
/// has one; `now` is [`Platform::now`]. Every value read is bounded before it is used.
pub fn snapshot<P: Platform>(page: &Page<P::Word>, plat: &P, me: Option<usize>) -> Snapshot {
    let now = plat.now();
    let age = |then: u64| Duration::from_nanos(now.saturating_sub(then));
    let secs_age = |then: u64| Duration::from_secs((now / 1_000_000_000).saturating_sub(then));
    // The owner word and the lease its claim declared (the claim word carries it).
    let (word, published) = page.pair().load_both(SeqCst);
    let owner_lease = crate::page::lease_code_ms(crate::page::half_lease_code(published))
        .map(Duration::from_millis);
    let owner_index = match owner_slot(word) {
        OwnerSlot::Member(index) => Some(index),
        _ => None,
    };
    let members: Vec<MemberInfo> = (0..MEMBER_CAPACITY)
        .filter_map(|index| {
            let m = &page.members[index];
            let identity = m.identity.load(Acquire);
            if identity == 0 {
                return None;
            }
            let lease_start = m.lease_start.load(Relaxed);
            let pins = m.pins.load(Acquire);
            Some(MemberInfo {
                index,
                pid: identity_pid(identity),
                token: identity_token(identity),
                alive: plat.member_locked(index),
                is_self: me == Some(index),
                readers: pins_readers(pins),
                oldest_pin: pins_oldest(pins),
                process_age: secs_age(lease_start & 0xffff_ffff),
                heartbeat_age: match m.heartbeat.load(Acquire) {
                    stamp if stamp & HEARTBEAT_CLAIMED != 0 => None,
                    stamp => Some(age(stamp)),
                },
                // Only the owner's declaration counts; its claim word carries it.
                declared_lease: owner_lease.filter(|_| owner_index == Some(index)),
            })
        })
        .collect();
    let owner = match owner_slot(word) {
        OwnerSlot::Free => None,
        OwnerSlot::Invalid(_) => Some(OwnerInfo {
            index: None,
            pid: 0,
            alive: false,
            generation: owner_generation(word),
            heartbeat_age: None,
            lease: None,
        }),
        OwnerSlot::Member(index) => {
            let m = members.iter().find(|m| m.index == index);
            Some(OwnerInfo {
                index: Some(index),
                pid: m.map_or(0, |m| m.pid),
                alive: m.is_some_and(|m| m.alive),
                generation: owner_generation(word),
                heartbeat_age: m.and_then(|m| m.heartbeat_age),
                lease: m.and_then(|m| m.declared_lease),
            })
        }
    };
    let live = || members.iter().filter(|m| m.alive);
    let reader_count = live().map(|m| m.readers).fold(0, u64::saturating_add);
    let oldest_pinned = live().filter_map(|m| m.oldest_pin).min();
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
        waiting_claimants: count_bits(page, WaitKind::Claim),
        waiting_for_publish: count_bits(page, WaitKind::Publish),
        waiting_for_readers: count_bits(page, WaitKind::Pins),
        published: snapshots::published(page),
        oldest_pinned,
        reader_count,
        members,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::page::{Page, MAX_GENERATION};
    use std::cell::{Cell, RefCell};
    use std::collections::HashSet;
    use std::sync::atomic::AtomicU64;

    /// A one-process platform: a lock table in a set, a clock the test moves.
    struct Fake {
        held_by_others: RefCell<HashSet<usize>>,
        mine: RefCell<HashSet<usize>>,
        clock: Cell<u64>,
        local: Local<AtomicU64>,
        waiters: RefCell<[u32; 3]>,
    }

    impl Default for Fake {
        fn default() -> Self {
            Fake {
                held_by_others: RefCell::default(),
                mine: RefCell::default(),
                clock: Cell::new(1),
                local: Local::new(4),
                waiters: RefCell::default(),
            }
        }
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
        fn wake_all(&self, _: &AtomicU64) -> usize {
            0
        }
        fn local(&self) -> &Local<AtomicU64> {
            &self.local
        }
        fn with_local_waiters(&self, kind: WaitKind, f: &mut dyn FnMut(&mut u32)) {
            f(&mut self.waiters.borrow_mut()[kind.index()]);
        }
    }

    const BOOT: u64 = 77;

    fn fresh() -> Box<Page<AtomicU64>> {
        let page = Box::new(Page::zeroed());
        page.initialise(&Fake::default(), 1, 1000, crate::page::ORIGIN_CREATED, BOOT);
        page
    }

    const NONE: writer::Declaration = writer::Declaration::NONE;

    fn leased(ms: u64) -> writer::Declaration {
        writer::Declaration {
            lease_ms: ms,
            ..NONE
        }
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
        let claim = writer::try_claim(&page, &plat, reg.index, &NONE).unwrap();
        assert_eq!(claim.generation, 1001);
        assert_eq!(
            writer::try_claim(&page, &plat, reg.index, &NONE),
            Err(writer::ClaimError::AlreadyOurs { generation: 1001 })
        );
        assert!(writer::release(&page, &plat, claim.word));
        assert!(!writer::release(&page, &plat, claim.word));
        let again = writer::try_claim(&page, &plat, reg.index, &NONE).unwrap();
        assert_eq!(again.generation, 1002);
        assert!(!writer::is_current(&page, &plat, claim.word));
        assert!(writer::is_current(&page, &plat, again.word));
    }

    #[test]
    fn dead_owner_is_reaped_by_the_claimant() {
        let page = fresh();
        let plat = Fake::default();
        let (a, _) = members::register(&page, &plat, who(10)).unwrap();
        let claim = writer::try_claim(&page, &plat, a.index, &NONE).unwrap();
        assert!(snapshots::attach(&page, &plat, a.index).is_ok());
        // Move `a` to "another process" that then dies: its lock is free, entry stays.
        plat.mine.borrow_mut().remove(&a.index);
        let (b, _) = members::register(&page, &plat, who(11)).unwrap();
        // Registration reaped `a` (readers gone, owner freed, generation kept).
        assert_eq!(members::reader_count(&page, &plat), 0);
        let taken = writer::try_claim(&page, &plat, b.index, &NONE).unwrap();
        assert_eq!(taken.generation, claim.generation + 1);
    }

    #[test]
    fn live_owner_is_busy_until_the_lease_it_declared_expires() {
        let page = fresh();
        let plat = Fake::default();
        let (a, _) = members::register(&page, &plat, who(10)).unwrap();
        let claim = writer::try_claim(&page, &plat, a.index, &leased(1)).unwrap();
        plat.mine.borrow_mut().remove(&a.index);
        plat.held_by_others.borrow_mut().insert(a.index);
        let (b, _) = members::register(&page, &plat, who(11)).unwrap();
        // Not heartbeaten since its claim: a single attempt never judges it expired.
        plat.clock.set(plat.clock.get() + 5_000_000);
        assert!(matches!(
            writer::try_claim(&page, &plat, b.index, &NONE),
            Err(writer::ClaimError::Busy { pid: 10, .. })
        ));
        assert!(writer::heartbeat(&page, &plat, a.index, claim.word));
        assert!(matches!(
            writer::try_claim(&page, &plat, b.index, &NONE),
            Err(writer::ClaimError::Busy { pid: 10, .. })
        ));
        plat.clock.set(plat.clock.get() + 1_000_001);
        // The claimant declared no lease of its own: the owner's counts.
        let taken = writer::try_claim(&page, &plat, b.index, &NONE).unwrap();
        assert!(matches!(
            taken.takeover,
            Some(writer::Takeover::LeaseExpired { pid: 10, .. })
        ));
        // The deposed owner: heartbeat, is_current and release all fail and change
        // nothing of the successor's.
        let before = writer::load_owner(&page);
        let hb = page.members[b.index].heartbeat.load(Relaxed);
        assert!(!writer::heartbeat(&page, &plat, a.index, claim.word));
        assert!(!writer::release(&page, &plat, claim.word));
        assert_eq!(writer::load_owner(&page), before);
        assert_eq!(page.members[b.index].heartbeat.load(Relaxed), hb);
    }

    #[test]
    fn a_claimant_lease_of_zero_never_deposes_an_owner_that_declared_none() {
        let page = fresh();
        let plat = Fake::default();
        let (a, _) = members::register(&page, &plat, who(10)).unwrap();
        let claim = writer::try_claim(&page, &plat, a.index, &NONE).unwrap();
        assert!(writer::heartbeat(&page, &plat, a.index, claim.word));
        plat.mine.borrow_mut().remove(&a.index);
        plat.held_by_others.borrow_mut().insert(a.index);
        let (b, _) = members::register(&page, &plat, who(11)).unwrap();
        plat.clock.set(plat.clock.get() + 3_600_000_000_000);
        assert!(matches!(
            writer::try_claim(&page, &plat, b.index, &leased(0)),
            Err(writer::ClaimError::Busy { pid: 10, .. })
        ));
    }

    #[test]
    fn a_deposed_guard_cannot_refresh_a_successor_claimed_by_the_same_process() {
        let page = fresh();
        let plat = Fake::default();
        let (a, _) = members::register(&page, &plat, who(10)).unwrap();
        let old = writer::try_claim(&page, &plat, a.index, &leased(1)).unwrap();
        assert!(writer::heartbeat(&page, &plat, a.index, old.word));
        // Deposed (here: released by someone else's view), then re-claimed by the process.
        assert!(writer::release(&page, &plat, old.word));
        let new = writer::try_claim(&page, &plat, a.index, &leased(1)).unwrap();
        let marker = page.members[a.index].heartbeat.load(Relaxed);
        assert_eq!(marker, crate::page::claim_marker(new.generation - 1));
        assert!(!writer::heartbeat(&page, &plat, a.index, old.word));
        assert_eq!(page.members[a.index].heartbeat.load(Relaxed), marker);
        assert!(writer::heartbeat(&page, &plat, a.index, new.word));
    }

    #[test]
    fn a_generation_floor_lifts_the_claim_above_it() {
        let page = fresh();
        let plat = Fake::default();
        let (a, _) = members::register(&page, &plat, who(1)).unwrap();
        let floor = writer::Declaration {
            generation_floor: 5_000,
            ..NONE
        };
        let claim = writer::try_claim(&page, &plat, a.index, &floor).unwrap();
        assert_eq!(claim.generation, 5_001);
        assert!(writer::release(&page, &plat, claim.word));
        // Below the page's generation, the floor changes nothing.
        let next = writer::try_claim(&page, &plat, a.index, &floor).unwrap();
        assert_eq!(next.generation, 5_002);
    }

    #[test]
    fn a_page_from_another_boot_jumps_its_generation() {
        let page = fresh();
        let plat = Fake::default();
        let recovery = recover_alone(&page, &plat, BOOT, 0);
        assert_eq!(recovery.rebooted, None);
        let recovery = recover_alone(&page, &plat, BOOT + 1, 0);
        assert_eq!(
            recovery.rebooted,
            Some((1000, 1000 + REBOOT_GENERATION_JUMP))
        );
        assert_eq!(snapshot(&page, &plat, None).generation, 1000 + (1 << 32));
        let recovery = recover_alone(&page, &plat, BOOT + 2, 1 << 40);
        assert_eq!(recovery.rebooted.map(|r| r.1), Some(1 << 40));
    }

    #[test]
    fn pins_publish_and_the_oldest_across_guards_of_one_process() {
        let page = fresh();
        let plat = Fake::default();
        let (a, _) = members::register(&page, &plat, who(1)).unwrap();
        let claim = writer::try_claim(&page, &plat, a.index, &NONE).unwrap();
        assert_eq!(snapshots::oldest_pinned(&page, &plat), None);
        snapshots::publish(&page, &plat, claim.word, 5).unwrap();
        assert_eq!(
            snapshots::publish(&page, &plat, claim.word, 5),
            Err(snapshots::PublishError::NotIncreasing { published: 5 })
        );
        let p5 = snapshots::attach(&page, &plat, a.index).unwrap();
        let q5 = snapshots::attach(&page, &plat, a.index).unwrap();
        snapshots::publish(&page, &plat, claim.word, 9).unwrap();
        let p9 = snapshots::attach(&page, &plat, a.index).unwrap();
        assert_eq!((p5.version, p9.version), (5, 9));
        assert_eq!(snapshots::oldest_pinned(&page, &plat), Some((5, a.index)));
        snapshots::detach(&page, &plat, a.index, p5);
        assert_eq!(snapshots::oldest_pinned(&page, &plat), Some((5, a.index)));
        snapshots::detach(&page, &plat, a.index, q5);
        assert_eq!(snapshots::oldest_pinned(&page, &plat), Some((9, a.index)));
        assert_eq!(members::reader_count(&page, &plat), 1);
        snapshots::detach(&page, &plat, a.index, p9);
        assert_eq!(snapshots::oldest_pinned(&page, &plat), None);
        assert_eq!(members::reader_count(&page, &plat), 0);
        // A deposed claim cannot publish; its successor's claim keeps the version.
        assert!(writer::release(&page, &plat, claim.word));
        let next = writer::try_claim(&page, &plat, a.index, &NONE).unwrap();
        assert_eq!(
            snapshots::publish(&page, &plat, claim.word, 10),
            Err(snapshots::PublishError::Deposed)
        );
        assert_eq!(snapshots::published(&page), 9);
        snapshots::publish(&page, &plat, next.word, 10).unwrap();
    }

    #[test]
    fn a_deposed_publish_fails_whatever_the_generations_low_bits() {
        let page = fresh();
        let plat = Fake::default();
        let (a, _) = members::register(&page, &plat, who(1)).unwrap();
        let old = writer::try_claim(&page, &plat, a.index, &NONE).unwrap();
        snapshots::publish(&page, &plat, old.word, 1).unwrap();
        assert!(writer::release(&page, &plat, old.word));
        // A successor whose generation agrees with the old one in its low 16 bits (format
        // 2's tag) and in everything but bit 16.
        let floor = writer::Declaration {
            generation_floor: old.generation + 65535,
            ..NONE
        };
        let new = writer::try_claim(&page, &plat, a.index, &floor).unwrap();
        assert_eq!(new.generation, old.generation + 65536);
        assert_eq!(
            snapshots::publish(&page, &plat, old.word, 2),
            Err(snapshots::PublishError::Deposed)
        );
        assert_eq!(snapshots::published(&page), 1);
        snapshots::publish(&page, &plat, new.word, 2).unwrap();
        assert_eq!(snapshots::published(&page), 2);
    }

    #[test]
    fn full_pin_slots_share_an_older_version() {
        let page = fresh();
        let plat = Fake::default(); // 4 slots
        let (a, _) = members::register(&page, &plat, who(1)).unwrap();
        let claim = writer::try_claim(&page, &plat, a.index, &NONE).unwrap();
        let mut pins = Vec::new();
        for v in 1..=6 {
            snapshots::publish(&page, &plat, claim.word, v).unwrap();
            pins.push(snapshots::attach(&page, &plat, a.index).unwrap());
        }
        assert_eq!(pins[5].version, 6);
        assert_eq!(pins[5].recorded, 4, "the newest older slot is shared");
        assert_eq!(snapshots::oldest_pinned(&page, &plat), Some((1, a.index)));
        for pin in pins.drain(..4) {
            snapshots::detach(&page, &plat, a.index, pin);
        }
        // Versions 5 and 6 share the slot of 4: the oldest is 4 until they leave.
        assert_eq!(snapshots::oldest_pinned(&page, &plat), Some((4, a.index)));
        for pin in pins.drain(..) {
            snapshots::detach(&page, &plat, a.index, pin);
        }
        assert_eq!(snapshots::oldest_pinned(&page, &plat), None);
    }

    #[test]
    fn a_dead_members_pins_and_waiter_bits_do_not_count() {
        let page = fresh();
        let plat = Fake::default();
        let (a, _) = members::register(&page, &plat, who(1)).unwrap();
        let claim = writer::try_claim(&page, &plat, a.index, &NONE).unwrap();
        snapshots::publish(&page, &plat, claim.word, 3).unwrap();
        let _pin = snapshots::attach(&page, &plat, a.index).unwrap();
        wait::enter(&page, &plat, WaitKind::Publish, a.index);
        assert!(wait::anyone_waits(&page, WaitKind::Publish));
        // a dies
        plat.mine.borrow_mut().remove(&a.index);
        let (_b, reaped) = members::register(&page, &plat, who(2)).unwrap();
        assert_eq!(reaped.len(), 1);
        assert_eq!(reaped[0].readers, 1);
        assert_eq!(snapshots::oldest_pinned(&page, &plat), None);
        assert_eq!(members::reader_count(&page, &plat), 0);
        assert!(!wait::anyone_waits(&page, WaitKind::Publish));
    }

    #[test]
    fn invalid_owner_slot_is_taken_over_and_exhausted_generation_refused() {
        let page = fresh();
        let plat = Fake::default();
        let (a, _) = members::register(&page, &plat, who(1)).unwrap();
        page.pair().store(5 << 8 | 250, 0, Relaxed);
        let claim = writer::try_claim(&page, &plat, a.index, &NONE).unwrap();
        assert_eq!(claim.generation, 6);
        assert!(writer::release(&page, &plat, claim.word));
        page.pair()
            .store(owner_word(MAX_GENERATION, None), 0, Relaxed);
        assert_eq!(
            writer::try_claim(&page, &plat, a.index, &NONE),
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
        assert!(seen[..60].iter().all(|i| i % 2 == 0));
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
        writer::try_claim(&page, &plat, a.index, &NONE).unwrap();
        snapshots::attach(&page, &plat, a.index).unwrap();
        plat.mine.borrow_mut().clear();
        let recovery = recover_alone(&page, &plat, BOOT, 0);
        assert!(recovery.found_stale_state());
        assert_eq!(recovery.reaped.len(), 1);
        assert_eq!(recovery.reaped[0].readers, 1);
        let snap = snapshot(&page, &plat, None);
        assert!(snap.owner.is_none() && snap.members.is_empty());
        assert_eq!(snap.generation, 1001);
        assert_eq!(writer::load_owner(&page) >> 8, 1001);
    }
}
