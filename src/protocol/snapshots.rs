//! Snapshots: the writer publishes versions, readers pin them, the writer learns the
//! oldest pin, and either side sleeps until the other moves.
//!
//! # The words
//!
//! * `published` (line 2) = the latest version, below 2^48 − 1 (the pins' field width). It
//!   is the high half of a 16-byte word whose low half is the owner word (page format 3).
//! * each member's `pins` = `SOLO | readers << 48 | oldest`: how many reader guards its
//!   process has attached and the oldest version among them; `SOLO` (bit 63) when its one
//!   reader's pin is in this word alone. Only that process writes it.
//! * each process keeps [`Local`] pin slots, `count << 48 | version`: which versions its
//!   live guards pin, so a detach can tell what the process's oldest pin becomes. A solo
//!   guard is in no slot until another attach records it (the adopted slot).
//!
//! # Argument of correctness
//!
//! **Invariant 8 (no reclaimed version is read).** An attach pins the version it read
//! (`published`), makes the pin visible in its member's word (a CAS to
//! `(readers + 1, min(oldest, v))`), and then re-reads `published`; if it changed, it
//! reads the new version (which its pin covers) and re-reads again. It returns only once a
//! re-read returned the version it reads, which its word already covered. A writer publishes (a CAS on
//! `published`) and then scans the members' words. All four accesses are SeqCst, so in
//! their single total order either the scan comes after the reader's CAS (the scan sees a
//! pin ≤ v) or the reader's re-read comes after the publish (it sees the new version and
//! moves on). So a scan that follows `publish(w)` and reports "> v" (or no pin at all) can
//! miss only readers that will hold a version ≥ w > v. A dead process's pins never count:
//! the scan asks the kernel whether the member holding the minimum is alive and skips (and
//! reaps) it if not.
//!
//! **The solo fast path.** The first guard of a member that counts none CASes
//! `(0, _) → SOLO | (1, v)` and records nothing else: one locked instruction to attach,
//! one (`SOLO | (1, v) → (0, _)`) to detach, the handshake above unchanged. An attach that
//! finds readers records its own pin in the slots, and, if the word is solo, the solo pin
//! too (the adopted slot), both before the CAS that counts it and clears `SOLO`; a failed
//! CAS takes the adopted record back. So whenever `SOLO` is clear, every guard the word
//! counts is in the slots (the `AdoptWithoutRecording` mutant breaks this for model 11c).
//! A solo guard's detach either CASes the still-solo word to zero or, finding it cleared,
//! drops the adopted record and detaches as a recorded pin. An attach goes solo only when
//! the slots record no pin either: a word counting none under recorded pins was zeroed
//! under them, and the slots' path decides that case (`PublishedBelowPins`).
//!
//! **Pins never move.** An attach whose re-read finds a newer version reads that one and
//! keeps its first pin (which covers it) until the detach: it holds one version more back
//! for a reader that raced a publish, and no detach's rescan can miss a pin on its way
//! from one slot to another (with solo pins, moving pins let a detach's rescan miss the
//! new slot and CAS its stale result over an unchanged word: model 11b found it).
//!
//! **Aggregation in one process.** Several threads' guards share the member's one word.
//! A detach removes its local pin first, then CASes the word to `(readers − 1, oldest')`,
//! where `oldest'` is a rescan of the local slots when its pin was the word's oldest.
//! The trap: a detach that scanned, then an attach that wrote its local pin after the
//! scan and whose `min` changed nothing (the word's oldest was already lower), then the
//! detach storing the higher rescanned oldest — hiding the attach's pin. Here every
//! attach changes the word (its reader count), so the detach's CAS from the word it loaded
//! before scanning fails and it rescans. An attach's local pin is written before its CAS
//! (Release); a detach that loads the word after that CAS (Acquire) sees the pin in its
//! rescan. A raise never makes the word's oldest higher than a pin whose guard is live.
//!
//! **Invariant 9 (published versions never go backwards), and the fence by construction.**
//! The owner word and `published` are the two halves of one 16-byte word, and every write
//! to either is one 16-byte compare-and-swap of both:
//!
//! * a publish is `CAS((my claim's owner word, p) → (my claim's owner word, v))`, `v > p`;
//! * a claim is `CAS((observed owner, p) → (my owner word, p))`; a release and a reaper's
//!   free are `CAS((owner, p) → (free, p))`; nothing else writes either half except an
//!   opener that is alone (initialise, recover, upgrade) and a heal of a damaged page,
//!   which says so.
//!
//! So the version only grows (every write of the published half is a publish's CAS to a
//! larger value, or keeps it). And a publish succeeds only at an instant when the owner
//! half is exactly the word its claim wrote. Owner words are unique per claim: each claim
//! writes a generation above every generation the word ever held (`writer.rs`), so once
//! any later claim's CAS has landed, the owner half never again equals the deposed claim's
//! word, and the deposed publish's CAS fails — whatever the two generations are, whatever
//! the generation floors, however long the deposed writer was stopped. There is no tag to
//! collide (format 2 compared 16 bits of the generation, which a claim through
//! `generation_floor = g + 65535` matched: the `FenceTagOf16Bits` mutant keeps that fence
//! for the loom model to catch). A claim is still one CAS and a publish one CAS.
//!
//! The hot paths load one half alone (`published()` and every attach read the published
//! half, `is_current` and heartbeats the owner half): a 64-bit atomic load of a value some
//! 16-byte write left there (see `platform::AtomicPair`).
//!
//! **Waits** use the bitmaps and sequence words of `wait.rs`: `wait_published` sleeps
//! until the version grows (publish wakes it), `wait_readers_past` until the oldest pin
//! reaches a version (a detach that raises its member's oldest wakes it, and so does a
//! death: a death watcher on the member holding the minimum, and the bounded sleep slice).

use std::sync::atomic::Ordering::{AcqRel, Acquire, SeqCst};
use std::time::Duration;

use crate::page::{
    format2_tag, half_lease_code, half_version, owner_generation, pins_oldest, pins_readers,
    pins_solo, pins_word, published_half, Page, MAX_READERS_PER_MEMBER, MAX_VERSION,
    MEMBER_CAPACITY, NO_PIN, PINS_SOLO,
};
use crate::platform::{Mutant, Platform, WaitKind, Word, WordPair};
use crate::protocol::{wait, writer};

/// Longest a sleeper in a snapshot wait sleeps between looks (a death it was not told of
/// is noticed within this).
pub const MAX_WAIT_SLICE: Duration = Duration::from_millis(50);

/// A process's own protocol state for one page: its reader pins.
pub struct Local<W> {
    /// `count << 48 | version`: `count` live guards of this process pin `version`.
    slots: Box<[W]>,
    /// Slots ever used (scans stop here).
    used: W,
    /// `count << 48 | version`, the slot of the member's solo pin once another attach of
    /// this process recorded it (see [`attach`]): at most one solo guard is recorded at a
    /// time; an attach whose CAS then fails takes its count back.
    adopted: W,
}

impl<W: Word> Local<W> {
    /// A process-local state with `slots` pin slots (distinct versions pinned at once;
    /// beyond that, a new pin shares the slot of an older version, which only holds more
    /// back), one of them the adopted slot.
    pub fn new(slots: usize) -> Local<W> {
        Local {
            slots: (0..slots.max(2) - 1).map(|_| W::new(0)).collect(),
            used: W::new(0),
            adopted: W::new(0),
        }
    }

    /// Record the member's solo pin of `version` for its guard (before the CAS that
    /// clears [`PINS_SOLO`]). The slot keeps the lowest version recorded while its count
    /// is above 0, which only holds more back.
    #[inline]
    fn adopt(&self, version: u64) {
        let mut word = self.adopted.load(Acquire);
        loop {
            let (count, pinned) = (pins_readers(word), word & NO_PIN);
            let new = pins_word(
                count + 1,
                if count == 0 {
                    version
                } else {
                    pinned.min(version)
                },
            );
            match self.adopted.compare_exchange(word, new, AcqRel, Acquire) {
                Ok(_) => return,
                Err(now) => word = now,
            }
        }
    }

    /// Drop one count of the adopted slot: the adopted solo guard's detach, or an attach
    /// whose CAS failed after [`Local::adopt`].
    #[inline]
    fn unadopt(&self) {
        let mut word = self.adopted.load(Acquire);
        while pins_readers(word) > 0 {
            match self
                .adopted
                .compare_exchange(word, word - (1 << 48), AcqRel, Acquire)
            {
                Ok(_) => return,
                Err(now) => word = now,
            }
        }
        // Nothing adopted: only a bug gets here (the `AdoptWithoutRecording` mutant does,
        // and its model must see the hidden pin, not a panic here); nothing to take back.
    }

    #[inline]
    fn used(&self) -> usize {
        (self.used.load(Acquire) as usize).min(self.slots.len())
    }

    /// Count one more guard pinning `version`. Returns the version recorded: `version`,
    /// or an older one whose slot it shares when every slot is taken; `None` when every
    /// slot pins a newer version (the caller reads `published` again).
    #[inline(always)]
    fn pin(&self, version: u64) -> Option<u64> {
        'look: loop {
            let used = self.used();
            // The first free slot, with the word it held (a CAS from it claims it).
            let mut free: Option<(usize, u64)> = None;
            let mut older: Option<(usize, u64)> = None;
            for (i, slot) in self.slots[..used].iter().enumerate() {
                let word = slot.load(Acquire);
                let (count, pinned) = (pins_readers(word), word & NO_PIN);
                if count == 0 {
                    free.get_or_insert((i, word));
                } else if count < MAX_READERS_PER_MEMBER && pinned <= version {
                    if pinned == version {
                        if slot
                            .compare_exchange(word, word + (1 << 48), AcqRel, Acquire)
                            .is_ok()
                        {
                            return Some(version);
                        }
                        continue 'look; // changed under us
                    }
                    if older.is_none_or(|(_, v)| v < pinned) {
                        older = Some((i, pinned));
                    }
                }
            }
            let target = match free {
                Some(found) => Some(found),
                None if used < self.slots.len() => {
                    let i = self.used.fetch_add(1, AcqRel) as usize;
                    (i < self.slots.len()).then(|| (i, self.slots[i].load(Acquire)))
                }
                None => None,
            };
            if let Some((i, word)) = target {
                if pins_readers(word) == 0
                    && self.slots[i]
                        .compare_exchange(word, pins_word(1, version), AcqRel, Acquire)
                        .is_ok()
                {
                    return Some(version);
                }
                continue;
            }
            // Every slot is taken: share the slot of the newest older version (holding
            // back more than needed, never less).
            let (i, pinned) = older?;
            let slot = &self.slots[i];
            let word = slot.load(Acquire);
            if pins_readers(word) > 0
                && pins_readers(word) < MAX_READERS_PER_MEMBER
                && word & NO_PIN == pinned
                && slot
                    .compare_exchange(word, word + (1 << 48), AcqRel, Acquire)
                    .is_ok()
            {
                return Some(pinned);
            }
        }
    }

    /// Drop one guard's pin of `version` (the version [`Local::pin`] recorded).
    #[inline(always)]
    fn unpin(&self, version: u64) {
        loop {
            let mut found = false;
            for slot in &self.slots[..self.used()] {
                let word = slot.load(Acquire);
                if pins_readers(word) > 0 && word & NO_PIN == version {
                    found = true;
                    if slot
                        .compare_exchange(word, word - (1 << 48), AcqRel, Acquire)
                        .is_ok()
                    {
                        return;
                    }
                    break;
                }
            }
            if !found {
                debug_assert!(false, "unpin of a version this process does not pin");
                return;
            }
        }
    }

    /// Whether any guard's pin is recorded here (a live slot, or the adopted one).
    #[inline]
    fn any_pinned(&self) -> bool {
        pins_readers(self.adopted.load(Acquire)) > 0
            || self.slots[..self.used()]
                .iter()
                .any(|slot| pins_readers(slot.load(Acquire)) > 0)
    }

    /// The oldest version this process's guards pin ([`NO_PIN`]: none).
    #[inline]
    fn oldest(&self) -> u64 {
        self.slots[..self.used()]
            .iter()
            .chain(std::iter::once(&self.adopted))
            .map(|slot| slot.load(Acquire))
            .filter(|&word| pins_readers(word) > 0)
            .map(|word| word & NO_PIN)
            .min()
            .unwrap_or(NO_PIN)
    }
}

/// A reader's pin: the version it reads, and the version its process's slot records.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Pin {
    /// The version the reader reads (`ReaderGuard::version`).
    pub version: u64,
    /// The version recorded for it in the process's pin slots, or in its member's word
    /// for a solo pin (≤ `version`).
    pub recorded: u64,
    /// Attached solo ([`PINS_SOLO`]): its pin is in the member's word alone until another
    /// attach of its process records it in [`Local`]'s adopted slot.
    pub solo: bool,
}

/// Why an attach failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AttachError {
    /// The member already counts [`MAX_READERS_PER_MEMBER`] readers.
    TooManyReaders,
    /// `published` is below every version this process's readers pin, so no pin slot can
    /// take it: the page was truncated or overwritten under its live users (versions only
    /// grow otherwise).
    PublishedBelowPins {
        /// The published version found.
        published: u64,
        /// The oldest version this process pins.
        pinned: u64,
    },
}

/// The latest published version.
#[inline]
pub fn published<W: Word>(page: &Page<W>) -> u64 {
    // Bounded: only a damaged or hostile page holds more (a publish never writes more).
    half_version(page.pair().load_published(SeqCst)).min(MAX_VERSION)
}

/// Pin `version` (or, if it is no longer the latest, a newer published one) in this
/// process's slots: the version pinned and the version its slot records.
///
/// Bounded: each retry needs `published` to have grown (it is below 2^48). Slots that all
/// pin versions above an unchanged `published` mean it went backwards under us.
#[inline(always)]
fn pin_locally<P: Platform>(
    page: &Page<P::Word>,
    plat: &P,
    mut version: u64,
) -> Result<(u64, u64), AttachError> {
    loop {
        if let Some(recorded) = plat.local().pin(version) {
            return Ok((version, recorded));
        }
        let now = published(page);
        if now <= version {
            let pinned = plat.local().oldest();
            return Err(if pinned > version {
                AttachError::PublishedBelowPins {
                    published: now,
                    pinned,
                }
            } else {
                AttachError::TooManyReaders
            });
        }
        version = now;
    }
}

/// Attach a reader of member `me` (the caller's own entry) and pin the latest published
/// version: the pin is visible to every scan that follows a later publish before this
/// returns.
///
/// The first reader of a member that counts none is *solo*: one CAS of the member's word
/// `(0, _) → SOLO | (1, v)` pins `v` in the word alone, with no process-local slot (the
/// fast path of a process that reads one transaction at a time). An attach that finds
/// readers records its own pin in the process's slots first, as always, and, when the
/// word is solo, the solo guard's pin too (the adopted slot), before the CAS that counts
/// it and clears the bit: from then on every live guard of the process is in its slots,
/// which is what a detach's rescan needs.
#[inline(always)]
pub fn attach<P: Platform>(page: &Page<P::Word>, plat: &P, me: usize) -> Result<Pin, AttachError> {
    let pins = &page.members[me].pins;
    let mut version = published(page);
    let mut word = pins.load(Acquire);
    // `Some((version, recorded))` once this attach has pinned in the local slots.
    let mut local: Option<(u64, u64)> = None;
    let solo = loop {
        let readers = pins_readers(word);
        // Solo only where nothing of this process is recorded either: a word that counts
        // no reader under recorded pins was zeroed under them (a truncation, or a hostile
        // write), and the slots' path below decides that case (`PublishedBelowPins`).
        if readers == 0 && local.is_none() && !plat.local().any_pinned() {
            match pins.compare_exchange(word, PINS_SOLO | pins_word(1, version), SeqCst, Acquire) {
                Ok(_) => break true,
                Err(now) => {
                    word = now;
                    continue;
                }
            }
        }
        let (v, recorded) = match local {
            Some(pinned) => pinned,
            None => {
                let pinned = pin_locally(page, plat, version)?;
                local = Some(pinned);
                pinned
            }
        };
        version = v;
        if readers >= MAX_READERS_PER_MEMBER {
            plat.local().unpin(recorded);
            return Err(AttachError::TooManyReaders);
        }
        // The solo guard's pin goes into the slots before the CAS that clears its bit.
        let adopt = readers > 0 && pins_solo(word) && !plat.mutant(Mutant::AdoptWithoutRecording);
        if adopt {
            plat.local().adopt(word & NO_PIN);
        }
        let oldest = if readers == 0 { NO_PIN } else { word & NO_PIN };
        match pins.compare_exchange(
            word,
            pins_word(readers + 1, oldest.min(recorded)),
            SeqCst,
            Acquire,
        ) {
            Ok(_) => break false,
            Err(now) => {
                if adopt {
                    plat.local().unadopt();
                }
                word = now;
            }
        }
    };
    let recorded = match local {
        Some((_, recorded)) => recorded,
        None => version,
    };
    if plat.mutant(Mutant::PinWithoutRecheck) {
        return Ok(Pin {
            version,
            recorded,
            solo,
        });
    }
    loop {
        // Our pin, then our re-read; a writer: its publish, then its scan.
        P::Word::seq_cst_order_point();
        let now = published(page);
        if now == version {
            return Ok(Pin {
                version,
                recorded,
                solo,
            });
        }
        // A publish raced with us: read the newer version. Our pin (`recorded`, in the
        // word or the slots) already covers it and holds `recorded` back until the
        // detach: a pin never moves, so a detach's rescan never misses one (see the
        // module's argument). Below `recorded`, `published` went backwards (a truncation
        // or a hostile write): nothing can cover that.
        if now < recorded {
            detach(
                page,
                plat,
                me,
                Pin {
                    version,
                    recorded,
                    solo,
                },
            );
            return Err(AttachError::PublishedBelowPins {
                published: now,
                pinned: recorded,
            });
        }
        version = now;
    }
}

/// Detach a reader of member `me` whose pin is `pin`.
#[inline(always)]
pub fn detach<P: Platform>(page: &Page<P::Word>, plat: &P, me: usize, pin: Pin) {
    if pin.solo {
        let pins = &page.members[me].pins;
        let mut word = pins.load(Acquire);
        // Still solo: this guard is the member's only reader, its pin the word's alone.
        while pins_solo(word) {
            match pins.compare_exchange(word, pins_word(0, NO_PIN), SeqCst, Acquire) {
                Ok(_) => {
                    wait::wake(page, plat, WaitKind::Pins);
                    return;
                }
                Err(now) => word = now,
            }
        }
        // Another attach recorded this pin in the adopted slot: detach as a recorded pin.
        plat.local().unadopt();
    } else {
        plat.local().unpin(pin.recorded);
    }
    raise(page, plat, me, pin.recorded);
}

/// Update member `me`'s word after this process dropped a recorded pin of `detached`: one
/// reader fewer, and the oldest rescanned from the local slots when the dropped pin was
/// the word's oldest. Wakes writers waiting for readers when the member's oldest pin rose.
#[inline(always)]
fn raise<P: Platform>(page: &Page<P::Word>, plat: &P, me: usize, detached: u64) {
    let pins = &page.members[me].pins;
    let mut word = pins.load(Acquire);
    loop {
        let readers = pins_readers(word);
        let oldest = word & NO_PIN;
        let left = readers.saturating_sub(1);
        let new_oldest = if left == 0 {
            NO_PIN
        } else if detached == oldest {
            plat.local().oldest()
        } else {
            oldest
        };
        let new = pins_word(left, new_oldest);
        if plat.mutant(Mutant::RaiseWithoutCas) {
            pins.store(new, SeqCst);
        } else if let Err(now) = pins.compare_exchange(word, new, SeqCst, Acquire) {
            word = now;
            continue;
        }
        let before = if readers == 0 { NO_PIN } else { oldest };
        if new_oldest > before || (left == 0 && readers > 0) {
            wait::wake(page, plat, WaitKind::Pins);
        }
        return;
    }
}

/// The oldest version pinned by a live reader in any process, and the member holding it.
/// May be lower than the truth for an instant (a detach in flight, or a death a standing
/// watcher has not yet reported: [`Platform::member_alive`]), never higher. Dead members'
/// pins never count once known dead (they are reaped when found).
pub fn oldest_pinned<P: Platform>(page: &Page<P::Word>, plat: &P) -> Option<(u64, usize)> {
    P::Word::seq_cst_order_point();
    let mut pinned = [NO_PIN; MEMBER_CAPACITY];
    for (slot, member) in pinned.iter_mut().zip(&page.members) {
        if let Some(oldest) = pins_oldest(member.pins.load(SeqCst)) {
            *slot = oldest;
        }
    }
    loop {
        let (index, &oldest) = pinned.iter().enumerate().min_by_key(|&(_, &v)| v)?;
        if oldest == NO_PIN {
            return None;
        }
        let identity = page.members[index].identity.load(Acquire);
        if plat.member_alive(index, identity) {
            return Some((oldest, index));
        }
        // Its process died: its pins never count. Reap it so that later scans skip it.
        crate::protocol::members::reap_member(page, plat, index);
        pinned[index] = NO_PIN;
    }
}

/// Why a publish failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PublishError {
    /// The claim is no longer current.
    Deposed,
    /// The version is not above the published one.
    NotIncreasing {
        /// The published version.
        published: u64,
    },
    /// The version is above [`MAX_VERSION`].
    TooLarge,
}

/// Publish `version` for the claim that wrote `claim_word`, then wake readers waiting for
/// it.
pub fn publish<P: Platform>(
    page: &Page<P::Word>,
    plat: &P,
    claim_word: u64,
    version: u64,
) -> Result<(), PublishError> {
    if version > MAX_VERSION {
        return Err(PublishError::TooLarge);
    }
    let pair = page.pair();
    if plat.mutant(Mutant::FenceTagOf16Bits) {
        publish_with_format2_fence(page, plat, claim_word, version)?;
        wait::wake(page, plat, WaitKind::Publish);
        return Ok(());
    }
    // Both halves as this claim expects them: the owner half is its word (anything else is
    // a deposition, and the CAS below fails on it however late it runs).
    let (owner, mut current) = pair.load_both(SeqCst);
    if owner != claim_word {
        return Err(PublishError::Deposed);
    }
    loop {
        let published = half_version(current);
        if version <= published {
            return Err(PublishError::NotIncreasing { published });
        }
        // The claim's declaration (the half's lease code) stays as its claim wrote it.
        let new = published_half(version, half_lease_code(current));
        match pair.compare_exchange((claim_word, current), (claim_word, new), SeqCst, SeqCst) {
            Ok(_) => break,
            Err((owner, _)) if owner != claim_word => return Err(PublishError::Deposed),
            Err((_, now)) => current = now,
        }
    }
    wait::wake(page, plat, WaitKind::Publish);
    Ok(())
}

/// Format 2's publish fence, for the [`Mutant::FenceTagOf16Bits`] model: check the owner
/// word, then CAS the published half, comparing only 16 bits of the generation of the owner
/// half with the claim's (format 2's tag).
#[cold]
fn publish_with_format2_fence<P: Platform>(
    page: &Page<P::Word>,
    plat: &P,
    claim_word: u64,
    version: u64,
) -> Result<(), PublishError> {
    let pair = page.pair();
    let tag = format2_tag(owner_generation(claim_word));
    let mut seen = pair.load_both(SeqCst);
    if !writer::is_current(page, plat, claim_word) {
        return Err(PublishError::Deposed);
    }
    loop {
        if format2_tag(owner_generation(seen.0)) != tag {
            return Err(PublishError::Deposed);
        }
        if version <= half_version(seen.1) {
            return Err(PublishError::NotIncreasing {
                published: half_version(seen.1),
            });
        }
        let new = published_half(version, half_lease_code(seen.1));
        match pair.compare_exchange(seen, (seen.0, new), SeqCst, SeqCst) {
            Ok(_) => return Ok(()),
            Err(now) => seen = now,
        }
    }
}

/// Wait until a version above `after` is published, or until `deadline`
/// ([`Platform::now`] nanoseconds). Returns the published version, or `Err(published)`
/// on time-out.
pub fn wait_published<P: Platform>(
    page: &Page<P::Word>,
    plat: &P,
    me: usize,
    after: u64,
    deadline: u64,
) -> Result<u64, u64> {
    wait::sleep_until(
        page,
        plat,
        WaitKind::Publish,
        me,
        deadline,
        MAX_WAIT_SLICE,
        || match published(page) {
            newer if newer > after => Ok(newer),
            current => Err((current, u64::MAX)),
        },
    )
}

/// Wait until no live reader pins a version below `version`, or until `deadline`.
/// `Err(oldest)` on time-out, with the oldest pin then.
pub fn wait_readers_past<P: Platform>(
    page: &Page<P::Word>,
    plat: &P,
    me: usize,
    version: u64,
    deadline: u64,
) -> Result<(), u64> {
    wait::sleep_until(
        page,
        plat,
        WaitKind::Pins,
        me,
        deadline,
        MAX_WAIT_SLICE,
        || readers_past_or_watch(page, plat, me, version).map_err(|oldest| (oldest, u64::MAX)),
    )
}

/// One look for a wait until no live reader pins a version below `version` (the blocking
/// and the async waits both decide here): `Ok` when none does, else `Err(oldest)` after
/// asking the platform to watch the member holding the oldest pin, unless that is member
/// `me` (the caller's own process: its readers detach, they do not die under it).
pub fn readers_past_or_watch<P: Platform>(
    page: &Page<P::Word>,
    plat: &P,
    me: usize,
    version: u64,
) -> Result<(), u64> {
    match oldest_pinned(page, plat) {
        Some((oldest, holder)) if oldest < version => {
            // The holder's death must wake us: no detach will.
            if holder != me {
                plat.watch_member(holder, page.members[holder].identity.load(Acquire));
            }
            Err(oldest)
        }
        _ => Ok(()),
    }
}
