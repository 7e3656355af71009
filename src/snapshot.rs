//! What `snapshot()` and `inspect()` report: plain data, read from the page at one moment.

use std::time::{Duration, SystemTime};

/// How the page came to be ([`Snapshot::origin`]): initialised on an empty file, or
/// rewritten by a heal (after which generations restarted from the clock and the published
/// version from 0).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum PageOrigin {
    /// Initialised on an empty file.
    Created,
    /// Rewritten by a heal of a damaged page (its generation restarted from the clock).
    Healed,
}

/// The state of a lock file at one moment, from [`ShmLock::snapshot`](crate::ShmLock::snapshot)
/// or the read-only [`inspect`](crate::inspect): the writer, every registered process, the
/// reader count, the published version and the oldest pin. Plain data, copied from the page;
/// liveness comes from the kernel's lock table, never from pids. What the `shmlock inspect`
/// command prints.
///
/// ```
/// # fn main() -> shmlock::Result<()> {
/// # let dir = tempfile::tempdir().unwrap();
/// let lock = shmlock::ShmLock::open(dir.path().join("app.db-shm"))?;
/// let writer = lock.try_claim_writer()?;
/// let snapshot = lock.snapshot();
/// let owner = snapshot.owner.as_ref().expect("we own it");
/// assert_eq!(owner.pid, std::process::id());
/// assert_eq!(owner.generation, writer.generation());
/// assert_eq!(snapshot.live_members().count(), 1);
/// assert_eq!(snapshot.dead_members().count(), 0);
/// # Ok(()) }
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Snapshot {
    /// Format version of the page.
    pub format_version: u32,
    /// Format version this library reads and writes.
    pub supported_version: u32,
    /// When the page was initialised (wall clock).
    pub created_at: SystemTime,
    /// Whether the page was created or healed.
    pub origin: PageOrigin,
    /// The latest generation: the current owner's, or the last owner's when free.
    pub generation: u64,
    /// The writer, if the owner word names one (alive or not).
    pub owner: Option<OwnerInfo>,
    /// How many claims took over a dead or lease-expired owner.
    pub takeovers: u64,
    /// Processes with a claimant asleep waiting for the writer role (a process killed in
    /// its sleep stays counted until the next wake-up or reap finds it dead).
    pub waiting_claimants: u64,
    /// Processes with a reader asleep in `wait_published`.
    pub waiting_for_publish: u64,
    /// Processes with a writer asleep in `wait_readers_past`.
    pub waiting_for_readers: u64,
    /// The latest published version (0 before the first publish).
    pub published: u64,
    /// The oldest version pinned by a live reader, over all processes (`None`: no reader
    /// pins anything).
    pub oldest_pinned: Option<u64>,
    /// Every registered member, alive or dead-and-not-yet-reaped.
    pub members: Vec<MemberInfo>,
    /// Readers attached across live members.
    pub reader_count: u64,
}

impl Snapshot {
    /// What a handle in a forked child reports when it can no longer read its file: as
    /// pessimistic as it gets (version 0 pinned, nothing published, nobody known).
    pub(crate) fn unknown() -> Snapshot {
        Snapshot {
            format_version: 0,
            supported_version: crate::page::FORMAT_VERSION,
            created_at: SystemTime::UNIX_EPOCH,
            origin: PageOrigin::Created,
            generation: 0,
            owner: None,
            takeovers: 0,
            waiting_claimants: 0,
            waiting_for_publish: 0,
            waiting_for_readers: 0,
            published: 0,
            oldest_pinned: Some(0),
            members: Vec::new(),
            reader_count: 0,
        }
    }

    /// Members whose process has died and whose entry waits to be reaped.
    pub fn dead_members(&self) -> impl Iterator<Item = &MemberInfo> {
        self.members.iter().filter(|m| !m.alive)
    }

    /// Members whose process is alive.
    pub fn live_members(&self) -> impl Iterator<Item = &MemberInfo> {
        self.members.iter().filter(|m| m.alive)
    }
}

/// The writer, as the owner word names it ([`Snapshot::owner`]): its process (alive or
/// dead), its generation, and its heartbeat and declared lease, which decide when a
/// claimant may take it over.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct OwnerInfo {
    /// Its member index (`None`: the owner word is damaged and names no member).
    pub index: Option<usize>,
    /// Its pid as it recorded it (display only; 0 if unknown).
    pub pid: u32,
    /// Whether its process is alive (its member lock is held).
    pub alive: bool,
    /// Its generation (fencing token).
    pub generation: u64,
    /// Time since its latest heartbeat; `None` when it has not heartbeaten since its claim
    /// (a lease claimant then times it from when it first saw it own).
    pub heartbeat_age: Option<Duration>,
    /// The lease it declared with its claim (`None`: none; it is deposed only at death).
    pub lease: Option<Duration>,
}

/// One process registered in the file's member table ([`Snapshot::members`]): one entry
/// per process that has the file open (or had, until a reap clears its entry), with its
/// readers, its oldest pin and its heartbeat.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct MemberInfo {
    /// Its member index.
    pub index: usize,
    /// Its pid as it recorded it (display only: nothing decides liveness from it).
    pub pid: u32,
    /// Its incarnation token: changes each time the entry is taken, so a reused entry (or
    /// pid) is never mistaken for its previous process.
    pub token: u32,
    /// Whether its process is alive (its member lock is held).
    pub alive: bool,
    /// Whether it is the process that took this snapshot.
    pub is_self: bool,
    /// Readers it has attached.
    pub readers: u64,
    /// The oldest version its readers pin (`None` without readers).
    pub oldest_pin: Option<u64>,
    /// Time since its process started (whole seconds).
    pub process_age: Duration,
    /// Time since its latest heartbeat or registration; `None` when it claimed the writer
    /// role and has not heartbeaten since.
    pub heartbeat_age: Option<Duration>,
    /// The lease it declared with its latest claim of the writer role (`None`: none).
    pub declared_lease: Option<Duration>,
}

/// What [`ShmLock::reap`](crate::ShmLock::reap) cleared: every dead member's entry (with the
/// readers that vanished with it) and, if the dead held it, the writer role. Empty when
/// nobody had died. Live members are never in it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ReapReport {
    /// Dead members cleared, with the readers they had attached.
    pub members: Vec<ReapedMember>,
}

impl ReapReport {
    /// Readers that vanished with the reaped members.
    pub fn readers_cleared(&self) -> u64 {
        self.members.iter().map(|m| m.readers).sum()
    }
    /// The generation of a dead owner this reap freed, if any.
    pub fn owner_freed(&self) -> Option<u64> {
        self.members.iter().find_map(|m| m.owned_generation)
    }
}

/// One dead process whose member entry a reap cleared ([`ReapReport::members`]).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct ReapedMember {
    /// Its member index.
    pub index: usize,
    /// Its pid as it recorded it.
    pub pid: u32,
    /// Readers it had attached.
    pub readers: u64,
    /// The generation it owned the writer role with, if it did.
    pub owned_generation: Option<u64>,
}

impl From<crate::protocol::members::Reaped> for ReapedMember {
    fn from(r: crate::protocol::members::Reaped) -> Self {
        ReapedMember {
            index: r.index,
            pid: r.pid,
            readers: r.readers,
            owned_generation: r.owned_generation,
        }
    }
}
