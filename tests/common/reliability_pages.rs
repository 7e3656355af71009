//! Building lock-file pages byte by byte for the reliability tests: a valid page from the
//! library's own initialiser (fixed times, so the bytes are reproducible), field setters,
//! and the malformed-file corpus with the outcome each file must get.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use shmlock::page::{
    header_checksum, owner_word, Page, BYTE_ORDER_MARK, LAYOUT, MAGIC, MAGIC_INITIALISING,
    MAX_GENERATION, MEMBER_CAPACITY, ORIGIN_CREATED, PAGE_SIZE,
};
use shmlock::platform::{Platform, WaitKind, WordPair};
use shmlock::protocol::Local;

/// Creation time and generation seed of corpus pages (2026-11-01, in ns and µs).
pub const CREATED_AT_NS: u64 = 1_793_491_200_000_000_000;
pub const SEED: u64 = CREATED_AT_NS / 1000;

/// The boot record of corpus pages: not this machine's boot (none is), so a valid corpus
/// page opens as `RecoveredAfterReboot`.
pub const CORPUS_BOOT: u64 = 0x5348_4d4c_4f43_4b42;

/// A platform with no other process: enough for `Page::initialise`.
struct Alone;

impl Platform for Alone {
    type Word = AtomicU64;
    fn try_lock_member(&self, _: usize) -> bool {
        true
    }
    fn unlock_member(&self, _: usize) {}
    fn member_locked(&self, _: usize) -> bool {
        false
    }
    fn now(&self) -> u64 {
        0
    }
    fn wait(&self, _: &AtomicU64, _: u64, _: Duration) {}
    fn wake_all(&self, _: &AtomicU64) -> usize {
        0
    }
    fn local(&self) -> &Local<AtomicU64> {
        unreachable!("initialise keeps no process-local state")
    }
    fn with_local_waiters(&self, _: WaitKind, _: &mut dyn FnMut(&mut u32)) {}
}

/// A freshly initialised page (as the library would write it) to mutate.
pub fn valid_page() -> Box<Page<AtomicU64>> {
    let page = Box::new(Page::zeroed());
    page.initialise(&Alone, CREATED_AT_NS, SEED, ORIGIN_CREATED, CORPUS_BOOT);
    page
}

/// The page's bytes.
pub fn bytes_of(page: &Page<AtomicU64>) -> Vec<u8> {
    // SAFETY: `Page<AtomicU64>` is `repr(C)`, exactly PAGE_SIZE bytes of `AtomicU64` words
    // with no padding (the library checks this at compile time); nothing else writes this
    // heap page while we read it.
    unsafe { std::slice::from_raw_parts(page as *const Page<AtomicU64> as *const u8, PAGE_SIZE) }
        .to_vec()
}

pub fn valid_bytes() -> Vec<u8> {
    bytes_of(&valid_page())
}

/// A clean page of the previous format (2) as a format-2 library leaves it: the owner word
/// at byte 64 (generation `SEED + 7`, free), `published` at byte 128 as
/// `tag << 48 | 42`, the boot record at byte 112, no members.
pub fn format2_bytes() -> Vec<u8> {
    let mut words = vec![0u64; PAGE_SIZE / 8];
    words[..7].copy_from_slice(&[
        MAGIC,
        BYTE_ORDER_MARK,
        2,
        LAYOUT,
        CREATED_AT_NS,
        SEED,
        ORIGIN_CREATED,
    ]);
    words[7] = header_checksum(words[1..7].try_into().unwrap());
    words[8] = owner_word(SEED + 7, None);
    words[13] = 1;
    words[14] = CORPUS_BOOT;
    words[16] = ((SEED + 7) & 0xffff) << 48 | 42;
    words.iter().flat_map(|w| w.to_ne_bytes()).collect()
}

fn with(f: impl FnOnce(&Page<AtomicU64>)) -> Vec<u8> {
    let page = valid_page();
    f(&page);
    bytes_of(&page)
}

fn sized(mut bytes: Vec<u8>, len: usize) -> Vec<u8> {
    bytes.resize(len, 0);
    bytes
}

fn random(seed: u64, len: usize) -> Vec<u8> {
    let mut rng = fastrand::Rng::with_seed(seed);
    (0..len).map(|_| rng.u8(..)).collect()
}

/// How an opener that is alone must find a file (the corpus manifest's `open` column).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Expect {
    Created,
    Reopened,
    Recovered,
    /// A valid page from another boot (every corpus page is: see [`CORPUS_BOOT`]).
    Rebooted,
    Healed,
    Corrupt,
    /// Empty, or a page of zeros: never one a shmlock opener is creating, so not ours
    /// (refused as corrupt); `inspect` says there is no lock file.
    Empty,
    Incompatible,
    /// A valid page of the previous format: upgraded by an opener that is alone, refused
    /// (not touched) while another process has it open, and by `inspect`.
    Upgraded,
}

impl Expect {
    pub fn name(self) -> &'static str {
        match self {
            Expect::Created => "created",
            Expect::Reopened => "reopened",
            Expect::Recovered => "recovered",
            Expect::Rebooted => "rebooted",
            Expect::Healed => "healed",
            Expect::Corrupt | Expect::Empty => "corrupt",
            Expect::Incompatible => "incompatible",
            Expect::Upgraded => "upgraded",
        }
    }

    pub fn parse(name: &str) -> Option<Expect> {
        [
            Expect::Created,
            Expect::Reopened,
            Expect::Recovered,
            Expect::Rebooted,
            Expect::Healed,
            Expect::Corrupt,
            Expect::Incompatible,
            Expect::Upgraded,
        ]
        .into_iter()
        .find(|e| e.name() == name)
    }

    /// What `inspect` (read-only) must say of the file.
    pub fn inspect(self) -> &'static str {
        match self {
            Expect::Created | Expect::Empty => "none",
            Expect::Reopened | Expect::Recovered | Expect::Rebooted => "ok",
            Expect::Healed | Expect::Corrupt => "corrupt",
            Expect::Incompatible | Expect::Upgraded => "incompatible",
        }
    }

    /// What an opener must get when another live process has the file open (and so
    /// nothing may be rewritten).
    pub fn live(self) -> &'static str {
        match self {
            Expect::Reopened | Expect::Recovered | Expect::Rebooted => "joined",
            Expect::Incompatible | Expect::Upgraded => "incompatible",
            Expect::Created | Expect::Healed | Expect::Corrupt | Expect::Empty => "corrupt",
        }
    }
}

/// One corpus file.
pub struct Entry {
    pub name: &'static str,
    pub what: &'static str,
    pub bytes: Vec<u8>,
    pub open: Expect,
    /// What a claim right after a successful open gets: "ok" or "exhausted".
    pub claim: &'static str,
}

fn entry(
    name: &'static str,
    what: &'static str,
    bytes: Vec<u8>,
    open: Expect,
    claim: &'static str,
) -> Entry {
    Entry {
        name,
        what,
        bytes,
        open,
        claim,
    }
}

/// The malformed-file corpus (and a few well-formed controls).
pub fn corpus() -> Vec<Entry> {
    use Expect::*;
    let valid = valid_bytes();
    let dead_member = |p: &Page<AtomicU64>, i: usize| {
        p.members[i]
            .identity
            .store(4242 << 32 | (7 << 8 | (i as u64 + 1)), Relaxed);
        p.members[i].pins.store(3 << 48 | 1, Relaxed);
    };
    let mut swapped = valid.clone();
    for word in swapped.chunks_mut(8) {
        word.reverse();
    }
    let mut line0_then_random = valid[..64].to_vec();
    line0_then_random.extend(random(35, PAGE_SIZE - 64));
    let mut sqlite = b"SQLite format 3\0".to_vec();
    sqlite.resize(PAGE_SIZE, 0);
    vec![
        entry(
            "size-0",
            "an empty file (never one a shmlock opener is creating: not ours)",
            vec![],
            Empty,
            "-",
        ),
        entry("size-1-zero", "one zero byte", vec![0], Corrupt, "-"),
        entry(
            "size-1-s",
            "one byte 'S' (the magic's first)",
            b"S".to_vec(),
            Corrupt,
            "-",
        ),
        entry(
            "size-8-magic",
            "only the magic",
            MAGIC.to_ne_bytes().to_vec(),
            Healed,
            "ok",
        ),
        entry(
            "size-8-initialising",
            "only the initialising magic",
            MAGIC_INITIALISING.to_ne_bytes().to_vec(),
            Healed,
            "ok",
        ),
        entry(
            "size-4095-valid-prefix",
            "a valid page missing its last byte",
            sized(valid.clone(), 4095),
            Healed,
            "ok",
        ),
        entry(
            "size-4095-zeros",
            "4095 zero bytes",
            vec![0; 4095],
            Corrupt,
            "-",
        ),
        entry(
            "size-4097-valid-plus-one",
            "a valid page and one more byte",
            sized(valid.clone(), 4097),
            Healed,
            "ok",
        ),
        entry(
            "size-1mib-valid-prefix",
            "a valid page followed by zeros to 1 MiB",
            sized(valid.clone(), 1 << 20),
            Healed,
            "ok",
        ),
        entry(
            "size-1mib-random",
            "1 MiB of random bytes",
            random(8, 1 << 20),
            Corrupt,
            "-",
        ),
        entry(
            "size-1mib-zeros",
            "1 MiB of zeros",
            vec![0; 1 << 20],
            Corrupt,
            "-",
        ),
        entry(
            "page-zeros",
            "a page of zeros (never one a shmlock opener is creating: not ours)",
            vec![0; PAGE_SIZE],
            Empty,
            "-",
        ),
        entry(
            "page-valid",
            "a valid, clean page (control)",
            valid.clone(),
            Rebooted,
            "ok",
        ),
        entry(
            "page-ones",
            "a page of 0xff bytes",
            vec![0xff; PAGE_SIZE],
            Corrupt,
            "-",
        ),
        entry(
            "page-random-1",
            "random bytes",
            random(1, PAGE_SIZE),
            Corrupt,
            "-",
        ),
        entry(
            "page-random-2",
            "random bytes",
            random(2, PAGE_SIZE),
            Corrupt,
            "-",
        ),
        entry(
            "page-random-3",
            "random bytes",
            random(3, PAGE_SIZE),
            Corrupt,
            "-",
        ),
        entry(
            "page-sqlite-header",
            "someone's SQLite database header (wrong file opened)",
            sqlite,
            Corrupt,
            "-",
        ),
        entry(
            "magic-flipped-bit",
            "the magic with one bit flipped",
            with(|p| p.header.magic.store(MAGIC ^ 1, Relaxed)),
            Corrupt,
            "-",
        ),
        entry(
            "magic-initialising",
            "an interrupted initialisation (rest of the page valid)",
            with(|p| p.header.magic.store(MAGIC_INITIALISING, Relaxed)),
            Healed,
            "ok",
        ),
        entry(
            "magic-byte-swapped",
            "the magic in the other byte order",
            with(|p| p.header.magic.store(MAGIC.swap_bytes(), Relaxed)),
            Corrupt,
            "-",
        ),
        entry(
            "page-byte-swapped",
            "a whole valid page in the other byte order",
            swapped,
            Corrupt,
            "-",
        ),
        entry(
            "byte-order-mark-wrong",
            "a damaged byte-order marker",
            with(|p| p.header.byte_order.store(0x0807_0605_0403_0201, Relaxed)),
            Healed,
            "ok",
        ),
        entry(
            "version-0",
            "format version 0",
            with(|p| p.header.version.store(0, Relaxed)),
            Healed,
            "ok",
        ),
        entry(
            "format-2",
            "a clean page of the previous format (upgraded in place when alone)",
            format2_bytes(),
            Upgraded,
            "ok",
        ),
        entry(
            "version-4",
            "a newer format version (must never be touched)",
            with(|p| p.header.version.store(4, Relaxed)),
            Incompatible,
            "-",
        ),
        entry(
            "version-max",
            "format version u64::MAX",
            with(|p| p.header.version.store(u64::MAX, Relaxed)),
            Incompatible,
            "-",
        ),
        entry(
            "layout-wrong",
            "a layout descriptor of another member count",
            with(|p| {
                p.header
                    .layout
                    .store(p.header.layout.load(Relaxed) ^ (1 << 32), Relaxed)
            }),
            Healed,
            "ok",
        ),
        entry(
            "created-at-changed",
            "creation time changed (checksum mismatch)",
            with(|p| p.header.created_at.store(1, Relaxed)),
            Healed,
            "ok",
        ),
        entry(
            "generation-seed-changed",
            "generation seed changed (checksum mismatch)",
            with(|p| p.header.generation_seed.store(0, Relaxed)),
            Healed,
            "ok",
        ),
        entry(
            "origin-changed",
            "origin changed (checksum mismatch)",
            with(|p| p.header.origin.store(99, Relaxed)),
            Healed,
            "ok",
        ),
        entry(
            "checksum-wrong",
            "a wrong checksum",
            with(|p| {
                p.header.checksum.fetch_add(1, Relaxed);
            }),
            Healed,
            "ok",
        ),
        entry(
            "torn-line0-half",
            "line 0 torn after 32 bytes",
            sized(valid[..32].to_vec(), PAGE_SIZE),
            Healed,
            "ok",
        ),
        entry(
            "torn-after-line0",
            "line 0 intact, the rest of the page random",
            line0_then_random,
            Rebooted,
            "ok",
        ),
        entry(
            "owner-invalid-slot",
            "an owner word naming slot 250 (no such member)",
            with(|p| {
                p.pair()
                    .store(owner_word(SEED + 5, None) | 250, 0, Relaxed)
            }),
            Rebooted,
            "ok",
        ),
        entry(
            "owner-dead-member",
            "an owner word naming a member whose process is gone",
            with(|p| {
                dead_member(p, 3);
                p.pair().store(owner_word(SEED + 9, Some(3)), 0, Relaxed)
            }),
            Rebooted,
            "ok",
        ),
        entry(
            "owner-all-ones",
            "an owner word of all ones (invalid slot, generation at its maximum)",
            with(|p| p.pair().store(u64::MAX, 0, Relaxed)),
            Rebooted,
            "exhausted",
        ),
        entry(
            "owner-generation-max",
            "a free owner word at the maximum generation",
            with(|p| {
                p.pair()
                    .store(owner_word(MAX_GENERATION, None), 0, Relaxed)
            }),
            Rebooted,
            "exhausted",
        ),
        entry(
            "writer-counters-max",
            "takeovers, sequences, waiter bitmaps, published version and incarnation counter at u64::MAX",
            with(|p| {
                for w in [
                    &p.writer.takeovers,
                    &p.writer.wake_seq,
                    &p.writer.claim_waiters[0],
                    &p.writer.claim_waiters[1],
                    &p.writer.next_incarnation,
                    &p.snapshot.pin_waiters[0],
                    &p.wait.publish_seq,
                    &p.wait.pin_seq,
                    &p.wait.publish_waiters[1],
                ] {
                    w.store(u64::MAX, Relaxed)
                }
                p.pair()
                    .store(p.pair().load_owner(Relaxed), u64::MAX, Relaxed);
            }),
            Rebooted,
            "ok",
        ),
        entry(
            "member-dead-readers-max",
            "a dead member with u64::MAX in its pin word",
            with(|p| {
                dead_member(p, 0);
                p.members[0].pins.store(u64::MAX, Relaxed)
            }),
            Rebooted,
            "ok",
        ),
        entry(
            "members-all-dead",
            "every member entry taken by a dead process",
            with(|p| (0..MEMBER_CAPACITY).for_each(|i| dead_member(p, i))),
            Rebooted,
            "ok",
        ),
        entry(
            "member-free-with-readers",
            "free member entries with stray pin words",
            with(|p| {
                (0..MEMBER_CAPACITY)
                    .for_each(|i| p.members[i].pins.store(u64::MAX - i as u64, Relaxed))
            }),
            Rebooted,
            "ok",
        ),
        entry(
            "member-token-wrong-index",
            "a dead member whose token names another index",
            with(|p| p.members[5].identity.store(1 << 32 | 200, Relaxed)),
            Rebooted,
            "ok",
        ),
        entry(
            "members-random",
            "lines 0-2 (header, writer, owner and published) intact, the rest random",
            {
                let mut b = valid[..192].to_vec();
                b.extend(random(42, PAGE_SIZE - 192));
                b
            },
            Rebooted,
            "ok",
        ),
    ]
}
