//! The one-page layout (format v3), its constants and its validation.
//!
//! Every field is a 64-bit atomic word in native byte order; FORMAT.md documents each byte
//! and which atomic operation and ordering reads and writes it. The page is generic over the
//! word type so that production views the mapping as `Page<AtomicU64>` and the loom models
//! use a heap `Page<loom::sync::atomic::AtomicU64>` — the same code reads both. One field is
//! 16 bytes: the owner word and `published`, changed together by one 16-byte CAS
//! ([`WordPair`]); everything else is a 64-bit word.

use std::sync::atomic::Ordering::{Acquire, Relaxed, Release};

use crate::platform::{Mutant, Platform, Word, WordPair};

/// Size of the page, and of the file, in bytes.
pub const PAGE_SIZE: usize = 4096;
/// Size of one cache line of the layout.
pub const LINE_SIZE: usize = 64;
/// Size of one member entry; two entries share a line (see [`member_allocation_order`]).
pub const MEMBER_SIZE: usize = 32;
/// Number of member entries: how many processes may have the file open at once.
pub const MEMBER_CAPACITY: usize = 120;
/// Lines before the member table: the header, the writer line, the snapshot line and the
/// wait line.
pub const LINES_BEFORE_MEMBERS: usize = 4;
/// The format version this library writes and reads.
pub const FORMAT_VERSION: u32 = 3;
/// The magic, published last by the initialiser: the bytes `SHMLOCK` then `0x01`, read as
/// a native-endian word.
pub const MAGIC: u64 = u64::from_le_bytes(*b"SHMLOCK\x01");
/// The magic's value while an initialiser or healer is rewriting the page: marks the file
/// as ours (so a crash mid-way can be healed) but never validates.
pub const MAGIC_INITIALISING: u64 = u64::from_le_bytes(*b"SHMINIT\x01");
/// Byte-order marker, stored natively: another byte order reads it reversed.
pub const BYTE_ORDER_MARK: u64 = 0x0102_0304_0506_0708;
/// The layout descriptor: page size, line size, member count and member size, 16 bits each.
pub const LAYOUT: u64 = (PAGE_SIZE as u64)
    | (LINE_SIZE as u64) << 16
    | (MEMBER_CAPACITY as u64) << 32
    | (MEMBER_SIZE as u64) << 48;
/// Largest generation the owner word can hold (56 bits).
pub const MAX_GENERATION: u64 = (1 << 56) - 1;
/// Bits of a version in the snapshot words (`published`, member pins).
pub const VERSION_BITS: u32 = 48;
/// Largest version a writer may publish: 2^48 − 2 (2^48 − 1 marks "no pin").
pub const MAX_VERSION: u64 = (1 << VERSION_BITS) - 2;
/// The pin field of a member that pins nothing.
pub const NO_PIN: u64 = (1 << VERSION_BITS) - 1;
/// Most readers one member may have attached at once (the 15 bits above a pin's version).
pub const MAX_READERS_PER_MEMBER: u64 = (1 << (63 - VERSION_BITS)) - 1;
/// Bit 63 of a member's pin word: its one reader is *solo*, attached while the member
/// counted none, and pins the word's version in the word alone (not in its process's pin
/// slots). The next attach of that process records the solo pin in the slots for it and
/// clears the bit.
pub const PINS_SOLO: u64 = 1 << 63;
/// Bit 63 of a member's heartbeat word: set, the word is `HEARTBEAT_CLAIMED | generation`,
/// "not heartbeaten since the claim of that generation"; clear, it is a stamp.
pub const HEARTBEAT_CLAIMED: u64 = 1 << 63;
/// The heartbeat word a claim leaves in its member's entry before its CAS: "claimed over
/// the owner word of generation `observed`, not heartbeaten since". Never a stamp (bit 63);
/// a later claim observes a higher generation, so never the marker of an earlier one either.
#[inline]
pub const fn claim_marker(observed: u64) -> u64 {
    HEARTBEAT_CLAIMED | observed
}

/// The lease field of a member that declared none (its owner is deposed only at death).
pub const LEASE_NONE_MS: u64 = u32::MAX as u64;
/// Offset of the dead-man-switch lock byte, just past the page.
pub const DEAD_MAN_SWITCH_BYTE: u64 = PAGE_SIZE as u64;
/// Offset of member 0's lock byte; member `i` locks `MEMBER_LOCK_BASE + i`.
pub const MEMBER_LOCK_BASE: u64 = PAGE_SIZE as u64 + 1;
/// Words of a bitmap with one bit per member.
pub const BITMAP_WORDS: usize = MEMBER_CAPACITY.div_ceil(64);

/// Line 0: immutable once the magic is published.
#[repr(C)]
pub struct Header<W> {
    /// [`MAGIC`] once valid; published last (Release), read first (Acquire).
    pub magic: W,
    /// [`BYTE_ORDER_MARK`].
    pub byte_order: W,
    /// [`FORMAT_VERSION`].
    pub version: W,
    /// [`LAYOUT`].
    pub layout: W,
    /// Wall-clock creation time, nanoseconds since the Unix epoch.
    pub created_at: W,
    /// The generation the page started from (the wall clock in microseconds).
    pub generation_seed: W,
    /// How the page came to be: [`ORIGIN_CREATED`] or [`ORIGIN_HEALED`].
    pub origin: W,
    /// [`header_checksum`] of words 1..=6.
    pub checksum: W,
}

/// `Header::origin` of a page initialised on an empty file.
pub const ORIGIN_CREATED: u64 = 1;
/// `Header::origin` of a page rewritten by a heal of a damaged one.
pub const ORIGIN_HEALED: u64 = 2;

/// Line 1: the writer's line (written by claims that displace someone, waiting claimants
/// and registrations; the owner word itself lives in line 2 since format 3).
#[repr(C)]
pub struct WriterLine<W> {
    /// Reserved, zero (format 2's owner word: an upgrade reads it from here).
    pub reserved_head: W,
    /// Claims that deposed a dead or lease-expired owner.
    pub takeovers: W,
    /// Bumped to wake waiting claimants (by a release, a death watcher or a reaper);
    /// they sleep on its low 32 bits.
    pub wake_seq: W,
    /// One bit per member with a claimant asleep on `wake_seq` (a release skips the wake
    /// system call when every bit is clear; a reaper clears a dead member's bit).
    pub claim_waiters: [W; BITMAP_WORDS],
    /// Incarnation counter: each registration takes the next value for its token.
    pub next_incarnation: W,
    /// FNV-1a of the kernel's boot id at the page's latest initialisation or recovery
    /// by an opener that was alone (0: unknown).
    pub boot: W,
    /// Reserved, zero.
    pub reserved: W,
}

/// Line 2: what readers read on every attach and detach; written only by a claim, a
/// release, a publish and by a writer that starts or stops waiting for readers.
#[repr(C)]
pub struct SnapshotLine<W: Word> {
    /// The owner word and the published version, one 16-byte word changed by one 16-byte
    /// CAS (the fence, by construction: see `protocol/snapshots.rs`). The owner half is
    /// `generation << 8 | slot` (slot = owning member index + 1, 0 = free); the published
    /// half is the latest published version (0 before the first).
    pub owner_published: W::Pair,
    /// One bit per member with a writer asleep in `wait_readers_past` (a detach that raises
    /// its member's oldest pin wakes them only when a bit is set).
    pub pin_waiters: [W; BITMAP_WORDS],
    /// Reserved, zero.
    pub reserved: [W; 4],
}

/// Line 3: the sequence words sleepers wait on, and the publish waiters.
#[repr(C)]
pub struct WaitLine<W> {
    /// Bumped by a publish when `publish_waiters` is not clear; `wait_published` sleeps on it.
    pub publish_seq: W,
    /// One bit per member with a reader asleep in `wait_published`.
    pub publish_waiters: [W; BITMAP_WORDS],
    /// Bumped by a detach (or a death) that raises a member's oldest pin while
    /// `pin_waiters` is not clear; `wait_readers_past` sleeps on it.
    pub pin_seq: W,
    /// Reserved, zero.
    pub reserved: [W; 4],
}

/// One member entry: one process that has the file open.
#[repr(C)]
pub struct Member<W> {
    /// `pid << 32 | token`; 0 = free. token = `incarnation << 8 | index + 1`, never 0.
    pub identity: W,
    /// `readers << 48 | oldest`: how many reader guards this member's process has attached,
    /// and the oldest version they pin ([`NO_PIN`] or anything when `readers` is 0). Only
    /// this member's process writes it while alive.
    pub pins: W,
    /// Boot-clock nanoseconds (host time namespace) of this member's latest heartbeat or
    /// registration, or `HEARTBEAT_CLAIMED | generation` from its claim of that generation
    /// until its first heartbeat. Only this member's process writes it.
    pub heartbeat: W,
    /// `lease_ms << 32 | process_start`: the lease this member declared with its latest
    /// claim, in milliseconds ([`LEASE_NONE_MS`]: none), and its process start time in
    /// whole seconds of the boot clock (display only).
    pub lease_start: W,
}

/// The whole page.
#[repr(C, align(64))]
pub struct Page<W: Word> {
    /// Line 0.
    pub header: Header<W>,
    /// Line 1.
    pub writer: WriterLine<W>,
    /// Line 2.
    pub snapshot: SnapshotLine<W>,
    /// Line 3.
    pub wait: WaitLine<W>,
    /// Lines 4..=63, two entries per line.
    pub members: [Member<W>; MEMBER_CAPACITY],
}

const _: () = {
    use std::mem::{align_of, offset_of, size_of};
    use std::sync::atomic::AtomicU64;
    assert!(size_of::<AtomicU64>() == 8 && align_of::<AtomicU64>() == 8);
    assert!(size_of::<crate::platform::AtomicPair>() == 16);
    assert!(align_of::<crate::platform::AtomicPair>() == 16);
    assert!(offset_of!(SnapshotLine<AtomicU64>, owner_published) == 0);
    assert!(size_of::<Page<AtomicU64>>() == PAGE_SIZE);
    assert!(align_of::<Page<AtomicU64>>() == LINE_SIZE);
    assert!(size_of::<Header<AtomicU64>>() == LINE_SIZE);
    assert!(size_of::<WriterLine<AtomicU64>>() == LINE_SIZE);
    assert!(size_of::<SnapshotLine<AtomicU64>>() == LINE_SIZE);
    assert!(size_of::<WaitLine<AtomicU64>>() == LINE_SIZE);
    assert!(size_of::<Member<AtomicU64>>() == MEMBER_SIZE);
    assert!(offset_of!(Page<AtomicU64>, writer) == LINE_SIZE);
    assert!(offset_of!(Page<AtomicU64>, snapshot) == 2 * LINE_SIZE);
    assert!(offset_of!(Page<AtomicU64>, wait) == 3 * LINE_SIZE);
    assert!(offset_of!(Page<AtomicU64>, members) == LINES_BEFORE_MEMBERS * LINE_SIZE);
    assert!(MEMBER_CAPACITY >= 120 && MEMBER_CAPACITY < 255);
    assert!(BITMAP_WORDS * 64 >= MEMBER_CAPACITY);
};

/// Owner word for `generation` held by member `index` (`None`: free).
#[inline]
pub const fn owner_word(generation: u64, index: Option<usize>) -> u64 {
    let slot = match index {
        Some(i) => i as u64 + 1,
        None => 0,
    };
    generation << 8 | slot
}

/// Generation recorded in an owner word.
#[inline]
pub const fn owner_generation(word: u64) -> u64 {
    word >> 8
}

/// What an owner word's slot says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OwnerSlot {
    /// No owner.
    Free,
    /// Member `index` owns.
    Member(usize),
    /// A slot beyond the member table: damage; treated like a dead owner.
    Invalid(u64),
}

/// Decode an owner word's slot. Every value is accepted; none indexes out of bounds.
#[inline]
pub const fn owner_slot(word: u64) -> OwnerSlot {
    match word & 0xff {
        0 => OwnerSlot::Free,
        s if s as usize <= MEMBER_CAPACITY => OwnerSlot::Member(s as usize - 1),
        s => OwnerSlot::Invalid(s),
    }
}

/// Token of a member's identity word.
#[inline]
pub const fn identity_token(identity: u64) -> u32 {
    identity as u32
}

/// Pid of a member's identity word (display only).
#[inline]
pub const fn identity_pid(identity: u64) -> u32 {
    (identity >> 32) as u32
}

/// Build an identity word; never 0 because the token's low byte is `index + 1`.
#[inline]
pub const fn identity_word(pid: u32, incarnation: u64, index: usize) -> u64 {
    let token = ((incarnation & 0x00ff_ffff) << 8) as u32 | (index as u32 + 1);
    (pid as u64) << 32 | token as u64
}

/// A member's pin word: `readers` guards attached, the oldest pinning `oldest`.
#[inline]
pub const fn pins_word(readers: u64, oldest: u64) -> u64 {
    readers << VERSION_BITS | (oldest & NO_PIN)
}

/// Readers counted in a pin word.
#[inline]
pub const fn pins_readers(word: u64) -> u64 {
    (word >> VERSION_BITS) & MAX_READERS_PER_MEMBER
}

/// Whether a pin word's one reader is solo ([`PINS_SOLO`]).
#[inline]
pub const fn pins_solo(word: u64) -> bool {
    word & PINS_SOLO != 0
}

/// The oldest version a pin word pins; `None` when it counts no reader.
#[inline]
pub const fn pins_oldest(word: u64) -> Option<u64> {
    if pins_readers(word) == 0 {
        None
    } else {
        Some(word & NO_PIN)
    }
}

/// Format 2's tag of a generation in its `published` word: the low 16 bits (only the
/// [`Mutant::FenceTagOf16Bits`] model of the old fence uses it).
#[inline]
pub const fn format2_tag(generation: u64) -> u64 {
    generation & 0xffff
}

/// What an upgrade carries over from a format-2 page (read from its bytes while alone).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Format2Facts {
    /// Its owner word's generation.
    pub generation: u64,
    /// Its published version (the tag stripped).
    pub published: u64,
    /// Its boot record.
    pub boot: u64,
    /// Its creation time, generation seed and origin (line 0).
    pub created_at: u64,
    /// See `created_at`.
    pub generation_seed: u64,
    /// See `created_at`.
    pub origin: u64,
}

impl Format2Facts {
    /// Read from a whole format-2 page (validated as version 2 by [`classify_prefix`] and
    /// its checksum). `None` when the bytes are not one.
    pub fn read(bytes: &[u8]) -> Option<Format2Facts> {
        let word = |i: usize| -> Option<u64> {
            bytes
                .get(i * 8..i * 8 + 8)
                .map(|b| u64::from_ne_bytes(b.try_into().expect("8 bytes")))
        };
        let header = [word(1)?, word(2)?, word(3)?, word(4)?, word(5)?, word(6)?];
        if word(0)? != MAGIC
            || header[0] != BYTE_ORDER_MARK
            || header[1] != 2
            || header[2] != LAYOUT
            || word(7)? != header_checksum(header)
        {
            return None;
        }
        // Format 2: the owner word was word 8 (line 1), `published` word 16 (line 2) as
        // `tag << 48 | version`, the boot record word 14.
        let published = word(16)? & NO_PIN;
        Some(Format2Facts {
            generation: owner_generation(word(8)?),
            published: published.min(MAX_VERSION),
            boot: word(14)?,
            created_at: header[3],
            generation_seed: header[4],
            origin: header[5],
        })
    }
}

/// The published half of the owner/published pair: `lease_code << 48 | version`. The
/// version is what readers read; the lease code is what the claim that owns the role (the
/// owner half) declared with it ([`lease_code`]): the claim word carries the declaration,
/// so no other write (of another thread of the owner's process) can change it.
#[inline]
pub const fn published_half(version: u64, lease_code: u64) -> u64 {
    lease_code << VERSION_BITS | (version & NO_PIN)
}

/// The version in a published half.
#[inline]
pub const fn half_version(half: u64) -> u64 {
    half & NO_PIN
}

/// The lease code in a published half.
#[inline]
pub const fn half_lease_code(half: u64) -> u64 {
    half >> VERSION_BITS
}

/// A declared lease in whole milliseconds ([`LEASE_NONE_MS`]: none) as the 16-bit code the
/// claim word carries: 0 = none; 1..=2048 = 0..=2047 ms exactly; above that a float of an
/// 11-bit mantissa and an exponent, rounded **up** (an owner is never deposed earlier than
/// it declared, and at most 1/2048 later).
#[inline]
pub const fn lease_code(lease_ms: u64) -> u64 {
    if lease_ms >= LEASE_NONE_MS {
        return 0;
    }
    if lease_ms < 2048 {
        return lease_ms + 1;
    }
    // lease_ms ≤ (2048 + m) << (e − 1) with m < 2048, e ≥ 1, as small as possible.
    let top = 63 - lease_ms.leading_zeros() as u64; // ≥ 11
    let mut e = top - 10;
    let shift = e - 1;
    let mut m = (lease_ms + (1 << shift) - 1) >> shift; // in 2048..=4096
    if m == 4096 {
        m = 2048;
        e += 1;
    }
    (e << 11 | (m - 2048)) + 1
}

/// The lease a [`lease_code`] declares, in milliseconds; `None`: no lease.
#[inline]
pub const fn lease_code_ms(code: u64) -> Option<u64> {
    match code {
        0 => None,
        c if c <= 2048 => Some(c - 1),
        c => {
            let c = c - 1;
            Some((2048 + (c & 2047)) << ((c >> 11) - 1))
        }
    }
}

/// A member's `lease_start` word.
#[inline]
pub const fn lease_start_word(lease_ms: u64, process_start_secs: u32) -> u64 {
    lease_ms << 32 | process_start_secs as u64
}

/// The lease a `lease_start` word declares, in nanoseconds; `None`: no lease.
#[inline]
pub const fn declared_lease_ns(word: u64) -> Option<u64> {
    match word >> 32 {
        LEASE_NONE_MS => None,
        ms => Some(ms * 1_000_000),
    }
}

/// A lease as the page stores it: whole milliseconds, rounded up (an owner is never
/// deposed earlier than it declared), at most `LEASE_NONE_MS - 1`.
#[inline]
pub fn lease_ms(lease: Option<std::time::Duration>) -> u64 {
    match lease {
        None => LEASE_NONE_MS,
        Some(d) => {
            let ms = d.as_nanos().div_ceil(1_000_000);
            ms.min(LEASE_NONE_MS as u128 - 1) as u64
        }
    }
}

/// The bit of member `index` in a per-member bitmap: (word, mask).
#[inline]
pub const fn member_bit(index: usize) -> (usize, u64) {
    (index / 64, 1 << (index % 64))
}

/// Member indices in the order registration tries them: first one entry per line, so up to
/// 60 processes never share a line, then the second entry of each line.
pub fn member_allocation_order() -> impl Iterator<Item = usize> {
    (0..MEMBER_CAPACITY)
        .step_by(2)
        .chain((1..MEMBER_CAPACITY).step_by(2))
}

/// FNV-1a over the native bytes of header words 1..=6.
pub fn header_checksum(words: [u64; 6]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for word in words {
        for byte in word.to_ne_bytes() {
            hash ^= byte as u64;
            hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    hash
}

/// Why a page does not validate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Invalid {
    /// The first word is not our magic: not a shmlock file (or not yet initialised).
    NotOurs,
    /// An initialiser or healer was rewriting it (and may have died doing so).
    Initialising,
    /// Our magic byte-swapped: written by a machine of the other byte order.
    OtherByteOrder,
    /// A newer format this library must not touch.
    NewerVersion(u64),
    /// An older format (written by an older shmlock): upgraded by an opener that is alone,
    /// refused while processes of the older library may use it.
    OlderVersion(u64),
    /// Our magic, but line 0 is damaged (the text says how).
    Damaged(&'static str),
}

impl Invalid {
    /// A person's description.
    pub fn describe(&self) -> String {
        match self {
            Invalid::NotOurs => "the file does not start with the shmlock magic".into(),
            Invalid::Initialising => {
                "the page was being initialised and the initialiser never finished".into()
            }
            Invalid::OtherByteOrder => {
                "the page was written by a machine of the other byte order".into()
            }
            Invalid::NewerVersion(v) => format!("format version {v} is newer than this library"),
            Invalid::OlderVersion(v) => format!("format version {v} is older than this library's"),
            Invalid::Damaged(what) => format!("line 0 is damaged: {what}"),
        }
    }
}

/// Classify the first bytes of a file (before anything is mapped): whose is it, and which
/// version. `bytes` may be shorter than a page.
pub fn classify_prefix(bytes: &[u8]) -> Result<(), Invalid> {
    let word = |i: usize| -> Option<u64> {
        bytes
            .get(i * 8..i * 8 + 8)
            .map(|b| u64::from_ne_bytes(b.try_into().expect("8 bytes")))
    };
    match word(0) {
        Some(MAGIC) => {}
        Some(MAGIC_INITIALISING) => return Err(Invalid::Initialising),
        Some(m) if m == MAGIC.swap_bytes() || m == MAGIC_INITIALISING.swap_bytes() => {
            return Err(Invalid::OtherByteOrder)
        }
        _ => return Err(Invalid::NotOurs),
    }
    match word(2) {
        Some(v) if v > FORMAT_VERSION as u64 && word(1) == Some(BYTE_ORDER_MARK) => {
            Err(Invalid::NewerVersion(v))
        }
        Some(v) if (1..FORMAT_VERSION as u64).contains(&v) && word(1) == Some(BYTE_ORDER_MARK) => {
            Err(Invalid::OlderVersion(v))
        }
        _ => Ok(()),
    }
}

impl<W: Word> Page<W> {
    /// The owner word and `published`.
    #[inline(always)]
    pub fn pair(&self) -> &W::Pair {
        &self.snapshot.owner_published
    }

    /// A page of zero words (models and tests; production maps the file instead).
    pub fn zeroed() -> Self {
        Page {
            header: Header {
                magic: W::new(0),
                byte_order: W::new(0),
                version: W::new(0),
                layout: W::new(0),
                created_at: W::new(0),
                generation_seed: W::new(0),
                origin: W::new(0),
                checksum: W::new(0),
            },
            writer: WriterLine {
                reserved_head: W::new(0),
                takeovers: W::new(0),
                wake_seq: W::new(0),
                claim_waiters: std::array::from_fn(|_| W::new(0)),
                next_incarnation: W::new(0),
                boot: W::new(0),
                reserved: W::new(0),
            },
            snapshot: SnapshotLine {
                owner_published: W::Pair::new(0, 0),
                pin_waiters: std::array::from_fn(|_| W::new(0)),
                reserved: std::array::from_fn(|_| W::new(0)),
            },
            wait: WaitLine {
                publish_seq: W::new(0),
                publish_waiters: std::array::from_fn(|_| W::new(0)),
                pin_seq: W::new(0),
                reserved: std::array::from_fn(|_| W::new(0)),
            },
            members: std::array::from_fn(|_| Member {
                identity: W::new(0),
                pins: W::new(0),
                heartbeat: W::new(0),
                lease_start: W::new(0),
            }),
        }
    }

    /// Every 64-bit word of lines 1..=63 (the 16-byte pair is not among them).
    fn words_after_header(&self) -> impl Iterator<Item = &W> {
        let w = &self.writer;
        let s = &self.snapshot;
        let t = &self.wait;
        [
            &w.reserved_head,
            &w.takeovers,
            &w.wake_seq,
            &w.next_incarnation,
            &w.boot,
            &w.reserved,
        ]
        .into_iter()
        .chain(&w.claim_waiters)
        .chain(&s.pin_waiters)
        .chain(&s.reserved)
        .chain([&t.publish_seq, &t.pin_seq])
        .chain(&t.publish_waiters)
        .chain(&t.reserved)
        .chain(
            self.members
                .iter()
                .flat_map(|m| [&m.identity, &m.pins, &m.heartbeat, &m.lease_start]),
        )
    }

    fn header_words(&self) -> [u64; 6] {
        let h = &self.header;
        [
            h.byte_order.load(Relaxed),
            h.version.load(Relaxed),
            h.layout.load(Relaxed),
            h.created_at.load(Relaxed),
            h.generation_seed.load(Relaxed),
            h.origin.load(Relaxed),
        ]
    }

    /// Validate line 0. The magic is read first with Acquire, so a valid magic makes the
    /// rest of line 0 (written before it was published) visible.
    pub fn validate(&self) -> Result<(), Invalid> {
        let magic = self.header.magic.load(Acquire);
        classify_prefix(&magic.to_ne_bytes())?;
        let words = self.header_words();
        let [byte_order, version, layout, ..] = words;
        if byte_order != BYTE_ORDER_MARK {
            return Err(Invalid::Damaged("bad byte-order marker"));
        }
        if version > FORMAT_VERSION as u64 {
            return Err(Invalid::NewerVersion(version));
        }
        if (1..FORMAT_VERSION as u64).contains(&version) {
            return Err(Invalid::OlderVersion(version));
        }
        if version != FORMAT_VERSION as u64 {
            return Err(Invalid::Damaged("bad format version"));
        }
        if layout != LAYOUT {
            return Err(Invalid::Damaged("layout descriptor does not match"));
        }
        if self.header.checksum.load(Relaxed) != header_checksum(words) {
            return Err(Invalid::Damaged("checksum mismatch"));
        }
        Ok(())
    }

    /// Write a fresh page: mark it as being initialised, zero every other word, write line
    /// 0 and the writer line, and publish the magic last (Release).
    ///
    /// Only a process that is alone (holds the dead-man switch exclusively) may call this.
    pub fn initialise<P: Platform<Word = W>>(
        &self,
        plat: &P,
        created_at_unix_ns: u64,
        generation_seed: u64,
        origin: u64,
        boot: u64,
    ) {
        let h = &self.header;
        h.magic.store(MAGIC_INITIALISING, Release);
        for word in self.words_after_header() {
            word.store(0, Relaxed);
        }
        self.pair().store(
            owner_word(generation_seed.min(MAX_GENERATION), None),
            0,
            Relaxed,
        );
        let w = &self.writer;
        w.next_incarnation.store(1, Relaxed);
        w.boot.store(boot, Relaxed);
        let early = plat.mutant(Mutant::MagicPublishedFirst);
        if early {
            h.magic.store(MAGIC, Release);
        }
        h.byte_order.store(BYTE_ORDER_MARK, Relaxed);
        h.version.store(FORMAT_VERSION as u64, Relaxed);
        h.layout.store(LAYOUT, Relaxed);
        h.created_at.store(created_at_unix_ns, Relaxed);
        h.generation_seed.store(generation_seed, Relaxed);
        h.origin.store(origin, Relaxed);
        h.checksum
            .store(header_checksum(self.header_words()), Relaxed);
        if !early {
            h.magic.store(MAGIC, Release);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lease_codes_round_up_by_at_most_one_part_in_2048() {
        assert_eq!(lease_code(LEASE_NONE_MS), 0);
        assert_eq!(lease_code_ms(0), None);
        for ms in (0..5000)
            .chain([65_535, 1 << 20, 3_600_000, 86_400_000])
            .chain([LEASE_NONE_MS - 1, (1 << 31) + 1])
        {
            let code = lease_code(ms);
            assert!(code > 0 && code < 1 << 16, "{ms} ms → code {code}");
            let back = lease_code_ms(code).unwrap();
            assert!(back >= ms, "{ms} ms declared, {back} ms judged: earlier");
            assert!(back - ms <= ms / 2048, "{ms} ms declared, {back} ms judged");
            if ms < 2048 {
                assert_eq!(back, ms);
            }
        }
    }
}
