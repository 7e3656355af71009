//! The public API: [`ShmLock`], [`WriterGuard`], [`ReaderGuard`], [`Options`].

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::error::{Error, Result};
use crate::page::{MAX_READERS_PER_MEMBER, MEMBER_CAPACITY};
use crate::protocol::members::{self, Identity, Registration};
use crate::protocol::writer::{self, Claim, ClaimError, Takeover};
use crate::protocol::{self};
use crate::snapshot::{ReapReport, Snapshot};
use crate::sys::{self, Mapping, OpenParams, Settled};

/// How [`ShmLock::open`] found the file.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum OpenState {
    /// The file was missing or empty: this process initialised it.
    Created,
    /// Nobody had it open and the last users left it clean.
    Reopened,
    /// Other live processes have it open (or this process already had).
    Joined,
    /// Nobody had it open, and dead processes had left an owner or members behind: they
    /// were cleared (the generation carries on).
    RecoveredFromCrash,
    /// Nobody had it open and the page was ours but damaged (torn, wrong size, bad
    /// checksum): it was rewritten, and the generation restarted from the clock, above any
    /// generation it can have reached before.
    HealedCorruptHeader,
}

/// Options for [`ShmLock::open_with`].
///
/// ```
/// use std::time::Duration;
/// use shmlock::{Options, ShmLock};
/// # fn main() -> shmlock::Result<()> {
/// # let dir = tempfile::tempdir().unwrap();
/// let options = Options::new()
///     .lease(Duration::from_secs(5)) // depose a writer silent for 5 s
///     .mode(0o640);                  // for a file this open creates
/// let lock = ShmLock::open_with(dir.path().join("app.db-shm"), &options)?;
/// # drop(lock);
/// # Ok(()) }
/// ```
#[derive(Clone, Debug)]
pub struct Options {
    lease: Option<Duration>,
    mode: Option<u32>,
    allow_network_filesystem: bool,
    create: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options::new()
    }
}

impl Options {
    /// Defaults: no lease, mode 0600 for a new file, local filesystems only, create if
    /// missing.
    pub fn new() -> Options {
        Options {
            lease: None,
            mode: None,
            allow_network_filesystem: false,
            create: true,
        }
    }

    /// Let this handle's claims take over a *live* owner whose last heartbeat is older than
    /// `lease` (a dead owner is always taken over). The deposed owner learns it from
    /// `heartbeat()`, `is_current()` and `release()`.
    pub fn lease(mut self, lease: Duration) -> Options {
        self.lease = Some(lease);
        self
    }

    /// Permission bits for a file this open creates (default 0600; `provision` uses the
    /// data file's).
    pub fn mode(mut self, mode: u32) -> Options {
        self.mode = Some(mode & 0o7777);
        self
    }

    /// Allow a network filesystem (NFS, SMB, 9P, Ceph, …). Only sound when a single host
    /// ever opens the file: locks and shared mappings are not coherent across hosts.
    pub fn allow_network_filesystem(mut self, allow: bool) -> Options {
        self.allow_network_filesystem = allow;
        self
    }

    /// Create the file if it is missing (default `true`).
    pub fn create(mut self, create: bool) -> Options {
        self.create = create;
        self
    }
}

/// The lock file path beside a data file: `<data>-shm`.
///
/// ```
/// assert_eq!(shmlock::shm_path_for("/var/lib/app.db").to_str(), Some("/var/lib/app.db-shm"));
/// ```
pub fn shm_path_for(data_path: impl AsRef<Path>) -> PathBuf {
    let mut name = OsString::from(data_path.as_ref().as_os_str());
    name.push("-shm");
    PathBuf::from(name)
}

/// 0: not decided yet (read the environment), 1: off, 2: on.
static PROVISIONING: AtomicU8 = AtomicU8::new(0);

/// Allow (or forbid) [`ShmLock::provision`] to create a missing `<data>-shm` file, for the
/// whole process. Overrides the `SHMLOCK_PROVISION` environment variable.
pub fn set_provisioning_enabled(enabled: bool) {
    PROVISIONING.store(if enabled { 2 } else { 1 }, Ordering::Relaxed);
}

/// Whether [`ShmLock::provision`] may create a missing `<data>-shm` file: what
/// [`set_provisioning_enabled`] said, else `SHMLOCK_PROVISION` = 1, true, yes or on (any
/// case), else off.
pub fn provisioning_enabled() -> bool {
    match PROVISIONING.load(Ordering::Relaxed) {
        1 => false,
        2 => true,
        _ => std::env::var("SHMLOCK_PROVISION").is_ok_and(|v| provision_env_says_yes(&v)),
    }
}

/// `SHMLOCK_PROVISION`'s yes: 1, true, yes or on, in any case, surrounding blanks ignored.
fn provision_env_says_yes(value: &str) -> bool {
    matches!(
        value.trim().to_ascii_lowercase().as_str(),
        "1" | "true" | "yes" | "on"
    )
}

/// Read-only look at a lock file: creates, registers and writes nothing. `Ok(None)` when the
/// file does not exist or is empty. Liveness is probed from the kernel's lock table.
///
/// ```
/// # fn main() -> shmlock::Result<()> {
/// # let dir = tempfile::tempdir().unwrap();
/// let path = dir.path().join("app.db-shm");
/// assert!(shmlock::inspect(&path)?.is_none()); // no file: nothing is created
///
/// let lock = shmlock::ShmLock::open(&path)?;
/// let _reader = lock.attach_reader()?;
/// let snapshot = shmlock::inspect(&path)?.expect("the file exists now");
/// assert_eq!(snapshot.reader_count, 1);
/// assert!(snapshot.owner.is_none());
/// # Ok(()) }
/// ```
pub fn inspect(path: impl AsRef<Path>) -> Result<Option<Snapshot>> {
    sys::inspect(path.as_ref())
}

/// This process's membership of one lock file: shared by every [`ShmLock`] of the file.
pub(crate) struct Inner {
    mapping: Arc<Mapping>,
    registration: Registration,
    fork_epoch: u64,
    /// The page's generation seed, read when it validated: every generation the page can
    /// legitimately hold is at or above it, so a claim at or below it means the page was
    /// truncated or overwritten under its live users (see `ShmLock::claim`).
    generation_floor: u64,
}

impl Inner {
    /// Whether this process is the one that opened the file (not a forked child). A
    /// `bool`, not a `Result`: the hot paths would otherwise drop an `Error` every call.
    #[inline]
    fn same_process(&self) -> bool {
        sys::fork_epoch() == self.fork_epoch
    }

    #[inline]
    fn check_fork(&self) -> Result<()> {
        if self.same_process() {
            Ok(())
        } else {
            Err(Error::ForkedHandle)
        }
    }

    #[inline]
    fn index(&self) -> usize {
        self.registration.index
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        if sys::fork_epoch() != self.fork_epoch {
            // A forked child shares the parent's open file description (and so its
            // locks) and maps the parent's page: touching either would break the parent.
            return;
        }
        let plat = self.mapping.platform();
        protocol::members::unregister(self.mapping.page(), &plat, self.registration);
        self.mapping.unlock_dead_man_switch();
    }
}

/// A handle on one lock file. Cheap to clone; `Send + Sync`. Every handle of one file in a
/// process shares one mapping, one descriptor and one member entry; the member is
/// unregistered when the last handle (and guard) is dropped.
#[derive(Clone)]
pub struct ShmLock {
    inner: Arc<Inner>,
    lease: Option<Duration>,
    state: OpenState,
}

impl std::fmt::Debug for ShmLock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ShmLock")
            .field("path", &self.inner.mapping.path)
            .field("member", &self.inner.index())
            .field("open_state", &self.state)
            .finish()
    }
}

impl ShmLock {
    /// Open (creating if missing, mode 0600) the lock file at `path`.
    ///
    /// ```
    /// use shmlock::{OpenState, ShmLock};
    /// # fn main() -> shmlock::Result<()> {
    /// # let dir = tempfile::tempdir().unwrap();
    /// let lock = ShmLock::open(dir.path().join("app.db-shm"))?;
    /// assert_eq!(lock.open_state(), OpenState::Created);
    /// // A second open in the same process shares the first one's membership.
    /// let again = ShmLock::open(lock.path())?;
    /// assert_eq!(again.member_index(), lock.member_index());
    /// # Ok(()) }
    /// ```
    pub fn open(path: impl AsRef<Path>) -> Result<ShmLock> {
        ShmLock::open_with(path, &Options::new())
    }

    /// Open the lock file at `path` with `options`.
    pub fn open_with(path: impl AsRef<Path>, options: &Options) -> Result<ShmLock> {
        let path = path.as_ref();
        let params = OpenParams {
            mode: options.mode.unwrap_or(0o600),
            create: options.create,
            allow_network_filesystem: options.allow_network_filesystem,
        };
        sys::install_fork_hooks();
        let wrap = |inner, state| ShmLock {
            inner,
            lease: options.lease,
            state,
        };
        if let Some(inner) = registered(path)? {
            return Ok(wrap(inner, OpenState::Joined));
        }
        let opened = sys::open(path, &params)?;
        let plat = opened.mapping.platform();
        let who = Identity {
            pid: sys::pid(),
            process_start_secs: sys::os::process_start_secs(sys::fork_epoch()),
        };
        let (registration, reaped) =
            members::register(opened.mapping.page(), &plat, who).map_err(|_| {
                Error::TooManyProcesses {
                    capacity: MEMBER_CAPACITY,
                }
            })?;
        let state = match &opened.settled {
            Settled::Created => OpenState::Created,
            Settled::Joined => OpenState::Joined,
            Settled::Healed(reason) => {
                log::warn!("{}: healed a damaged lock file: {reason}", path.display());
                OpenState::HealedCorruptHeader
            }
            Settled::Recovered(rec) if rec.found_stale_state() => {
                log::info!(
                    "{}: recovered after a crash: freed owner generation {:?}, reaped {} dead member(s)",
                    path.display(),
                    rec.owner_freed,
                    rec.reaped.len()
                );
                OpenState::RecoveredFromCrash
            }
            Settled::Recovered(_) => OpenState::Reopened,
        };
        log_reaped(path, &reaped);
        let generation_floor = opened
            .mapping
            .page()
            .header
            .generation_seed
            .load(Ordering::Acquire);
        let inner = Arc::new(Inner {
            mapping: opened.mapping,
            registration,
            fork_epoch: sys::fork_epoch(),
            generation_floor,
        });
        let mut registry = sys::REGISTRY.lock();
        registry.retain(|(_, weak)| weak.strong_count() > 0);
        // Another thread of this process may have opened the file meanwhile: use theirs
        // (ours unregisters as it drops).
        if let Some(theirs) = lookup(&registry, opened.key) {
            drop(registry);
            return Ok(wrap(theirs, OpenState::Joined));
        }
        registry.push((opened.key, Arc::downgrade(&inner)));
        Ok(wrap(inner, state))
    }

    /// Open `shm_path_for(data_path)`, the lock file beside a data file. A missing lock file
    /// is created (with the data file's mode) only when [`provisioning_enabled`].
    pub fn provision(data_path: impl AsRef<Path>) -> Result<ShmLock> {
        let data = data_path.as_ref();
        let meta = std::fs::metadata(data).map_err(|e| Error::io("stat data file", data, e))?;
        if !meta.is_file() {
            return Err(Error::NotARegularFile {
                path: data.to_path_buf(),
                found: if meta.is_dir() {
                    "a directory"
                } else {
                    "not a regular file"
                },
            });
        }
        use std::os::unix::fs::PermissionsExt;
        let options = Options::new()
            .mode(meta.permissions().mode() & 0o666)
            .create(provisioning_enabled());
        let shm = shm_path_for(data);
        ShmLock::open_with(&shm, &options).map_err(|e| match e {
            Error::Io { source, .. }
                if source.kind() == std::io::ErrorKind::NotFound && !options.create =>
            {
                Error::Io {
                    op: "open (provisioning is off: set SHMLOCK_PROVISION=1 or call set_provisioning_enabled(true) to create it)",
                    path: shm,
                    source,
                }
            }
            other => other,
        })
    }

    /// How this handle's open found the file.
    pub fn open_state(&self) -> OpenState {
        self.state
    }

    /// The lock file's path.
    pub fn path(&self) -> &Path {
        &self.inner.mapping.path
    }

    /// This process's member index in the file's member table.
    pub fn member_index(&self) -> usize {
        self.inner.index()
    }

    /// Claim the writer role now, taking over a dead owner (or, with a lease, one whose
    /// heartbeat is older than the lease). `Err(WriterBusy)` if a live owner holds it.
    ///
    /// ```
    /// # fn main() -> shmlock::Result<()> {
    /// # let dir = tempfile::tempdir().unwrap();
    /// let lock = shmlock::ShmLock::open(dir.path().join("app.db-shm"))?;
    /// let writer = lock.try_claim_writer()?;
    /// // One writer per process too: a second claim is refused while the guard lives.
    /// assert!(matches!(lock.try_claim_writer(), Err(shmlock::Error::AlreadyWriter)));
    /// writer.release()?;
    /// # Ok(()) }
    /// ```
    pub fn try_claim_writer(&self) -> Result<WriterGuard> {
        self.claim(None)
    }

    /// Claim the writer role, waiting up to `timeout` for the owner to release it, die, or
    /// (with a lease) stop heartbeating. Sleeps while it waits; wakes at once on a release
    /// and within microseconds of the owner's death.
    ///
    /// ```
    /// use std::time::Duration;
    /// # fn main() -> shmlock::Result<()> {
    /// # let dir = tempfile::tempdir().unwrap();
    /// let lock = shmlock::ShmLock::open(dir.path().join("app.db-shm"))?;
    /// let writer = lock.claim_writer(Duration::from_secs(1))?;
    /// println!("writing with fencing token {}", writer.generation());
    /// # Ok(()) }
    /// ```
    pub fn claim_writer(&self, timeout: Duration) -> Result<WriterGuard> {
        self.claim(Some(timeout))
    }

    #[inline]
    fn claim(&self, timeout: Option<Duration>) -> Result<WriterGuard> {
        let inner = &self.inner;
        if !inner.same_process() {
            return Err(Error::ForkedHandle);
        }
        let page = inner.mapping.page();
        let plat = inner.mapping.platform();
        let lease_ns = self
            .lease
            .map(|l| l.as_nanos().min(u64::MAX as u128) as u64);
        let me = inner.index();
        let result = match timeout {
            None => writer::try_claim(page, &plat, me, lease_ns),
            Some(t) => {
                let deadline = sys::os::boottime_ns()
                    .saturating_add(t.as_nanos().min(u64::MAX as u128) as u64);
                writer::claim_until(page, &plat, me, lease_ns, deadline)
            }
        };
        match result {
            Ok(claim) => {
                if claim.generation <= inner.generation_floor {
                    return Err(page_reset_under_us(inner, claim));
                }
                if let Some(t) = claim.takeover {
                    log_takeover(&inner.mapping.path, claim.generation, &t);
                }
                Ok(WriterGuard {
                    inner: Arc::clone(inner),
                    claim,
                    released: false,
                })
            }
            Err(e) => Err(claim_error(&inner.mapping.path, e)),
        }
    }

    /// Attach a reader: bumps this process's own reader count (one atomic add on a line no
    /// other process writes). Dropping the guard detaches.
    #[inline]
    ///
    /// ```
    /// # fn main() -> shmlock::Result<()> {
    /// # let dir = tempfile::tempdir().unwrap();
    /// let lock = shmlock::ShmLock::open(dir.path().join("app.db-shm"))?;
    /// let first = lock.attach_reader()?;
    /// let second = lock.attach_reader()?;
    /// assert_eq!(lock.snapshot().reader_count, 2);
    /// drop(first);
    /// second.detach()?;
    /// assert_eq!(lock.snapshot().reader_count, 0);
    /// # Ok(()) }
    /// ```
    pub fn attach_reader(&self) -> Result<ReaderGuard> {
        let inner = &self.inner;
        if !inner.same_process() {
            return Err(Error::ForkedHandle);
        }
        if !members::attach(inner.mapping.page(), inner.index()) {
            return Err(Error::TooManyReaders {
                limit: MAX_READERS_PER_MEMBER,
            });
        }
        Ok(ReaderGuard {
            inner: Arc::clone(inner),
        })
    }

    /// The state of the file now: owner, members, readers. Liveness comes from the kernel.
    pub fn snapshot(&self) -> Snapshot {
        let inner = &self.inner;
        let me = inner.same_process().then(|| inner.index());
        protocol::snapshot(inner.mapping.page(), &inner.mapping.platform(), me)
    }

    /// Clear every dead member (and a dead owner) from the page; report what was cleared.
    /// Live members are never touched.
    ///
    /// ```
    /// # fn main() -> shmlock::Result<()> {
    /// # let dir = tempfile::tempdir().unwrap();
    /// let lock = shmlock::ShmLock::open(dir.path().join("app.db-shm"))?;
    /// let report = lock.reap()?;
    /// for dead in &report.members {
    ///     println!("cleared pid {} with {} readers", dead.pid, dead.readers);
    /// }
    /// assert!(report.members.is_empty()); // nobody died here
    /// # Ok(()) }
    /// ```
    pub fn reap(&self) -> Result<ReapReport> {
        let inner = &self.inner;
        inner.check_fork()?;
        let reaped = members::reap_all(
            inner.mapping.page(),
            &inner.mapping.platform(),
            Some(inner.index()),
        );
        log_reaped(&inner.mapping.path, &reaped);
        Ok(ReapReport {
            members: reaped.into_iter().map(Into::into).collect(),
        })
    }
}

fn lookup(
    registry: &[((u64, u64), std::sync::Weak<Inner>)],
    key: (u64, u64),
) -> Option<Arc<Inner>> {
    let epoch = sys::fork_epoch();
    registry
        .iter()
        .filter(|(k, _)| *k == key)
        .filter_map(|(_, weak)| weak.upgrade())
        .find(|inner| inner.fork_epoch == epoch)
}

/// The live `Inner` of this process for the file at `path`, if it has one.
fn registered(path: &Path) -> Result<Option<Arc<Inner>>> {
    use std::os::unix::fs::MetadataExt;
    let registry = sys::REGISTRY.lock();
    if registry.is_empty() {
        return Ok(None);
    }
    // symlink_metadata: a symlink at the path is refused by the open that follows.
    let Ok(meta) = std::fs::symlink_metadata(path) else {
        return Ok(None);
    };
    if !meta.is_file() {
        return Ok(None);
    }
    Ok(lookup(&registry, (meta.dev(), meta.ino())))
}

fn log_reaped(path: &Path, reaped: &[members::Reaped]) {
    for r in reaped {
        log::info!(
            "{}: reaped dead member {} (pid {}, {} reader(s){})",
            path.display(),
            r.index,
            r.pid,
            r.readers,
            r.owned_generation
                .map(|g| format!(", owned generation {g}"))
                .unwrap_or_default()
        );
    }
}

/// The claim won a generation the page cannot legitimately hold: someone truncated or
/// overwrote the file under its live users (a cut below byte 72 zeroes the owner word).
/// Give the claim back and refuse: handing out a generation that may repeat an earlier
/// one would break fencing.
#[cold]
fn page_reset_under_us(inner: &Inner, claim: Claim) -> Error {
    writer::release(inner.mapping.page(), &inner.mapping.platform(), claim.word);
    log::error!(
        "{}: refused claim at generation {}: the page was truncated or overwritten while in use",
        inner.mapping.path.display(),
        claim.generation
    );
    Error::corrupt(
        &inner.mapping.path,
        format!(
            "its generation fell to {} (below its start, {}): the file was truncated or overwritten while processes use it; \
             stop them (see `shmlock inspect`) and the next opener heals it",
            claim.generation.saturating_sub(1),
            inner.generation_floor
        ),
    )
}

#[cold]
fn claim_error(path: &Path, e: ClaimError) -> Error {
    match e {
        ClaimError::Busy {
            pid, generation, ..
        } => Error::WriterBusy { pid, generation },
        // The owner word names this process: one of its guards holds the role.
        ClaimError::AlreadyOurs { .. } => Error::AlreadyWriter,
        ClaimError::GenerationExhausted => Error::corrupt(
            path,
            "the generation counter is exhausted (the page was damaged); delete the file when nothing uses it",
        ),
    }
}

#[cold]
fn log_takeover(path: &Path, generation: u64, t: &Takeover) {
    log::warn!(
        "{}: took over the writer role at generation {generation}: {}",
        path.display(),
        describe_takeover(t)
    );
}

fn describe_takeover(t: &Takeover) -> String {
    match t {
        Takeover::Dead { pid, generation } => {
            format!("owner pid {pid} (generation {generation}) had died")
        }
        Takeover::LeaseExpired {
            pid,
            generation,
            heartbeat_age_ns,
        } => format!(
            "owner pid {pid} (generation {generation}) had not heartbeaten for {:?}",
            Duration::from_nanos(*heartbeat_age_ns)
        ),
        Takeover::Invalid { generation } => {
            format!("the owner word (generation {generation}) named no valid member")
        }
    }
}

/// The writer role, held. Dropping it releases the role (if it still holds it).
#[must_use = "dropping the guard releases the writer role"]
pub struct WriterGuard {
    inner: Arc<Inner>,
    claim: Claim,
    released: bool,
}

impl std::fmt::Debug for WriterGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WriterGuard")
            .field("generation", &self.claim.generation)
            .finish()
    }
}

impl WriterGuard {
    /// This claim's generation: strictly greater than every earlier claim's. Put it on your
    /// writes as a fencing token.
    pub fn generation(&self) -> u64 {
        self.claim.generation
    }

    /// Whom this claim displaced, if it took over a dead or lease-expired owner.
    pub fn takeover(&self) -> Option<Takeover> {
        self.claim.takeover
    }

    /// Stamp the heartbeat (an atomic store into this process's own member entry), and
    /// check the claim still holds. `Err(Deposed)` once another claim has won.
    #[inline]
    pub fn heartbeat(&self) -> Result<()> {
        let inner = &self.inner;
        inner.check_fork()?;
        let plat = inner.mapping.platform();
        if writer::heartbeat(inner.mapping.page(), &plat, inner.index(), self.claim.word) {
            Ok(())
        } else {
            Err(self.deposed())
        }
    }

    /// Whether this claim still owns the writer role (`false` once deposed, or in a forked
    /// child).
    #[inline]
    pub fn is_current(&self) -> bool {
        let inner = &self.inner;
        inner.same_process()
            && writer::is_current(
                inner.mapping.page(),
                &inner.mapping.platform(),
                self.claim.word,
            )
    }

    /// Release the writer role and wake waiting claimants. `Err(Deposed)` if another claim
    /// had already won (nothing is changed then).
    pub fn release(mut self) -> Result<()> {
        self.inner.check_fork()?;
        self.released = true;
        if self.do_release() {
            Ok(())
        } else {
            Err(self.deposed())
        }
    }

    /// Release if still current; `false` when deposed.
    #[inline]
    fn do_release(&self) -> bool {
        let inner = &self.inner;
        writer::release(
            inner.mapping.page(),
            &inner.mapping.platform(),
            self.claim.word,
        )
    }

    fn deposed(&self) -> Error {
        Error::Deposed {
            generation: self.claim.generation,
        }
    }
}

impl Drop for WriterGuard {
    fn drop(&mut self) {
        if !self.released && self.inner.same_process() {
            self.do_release();
        }
    }
}

/// One attached reader. Dropping it detaches.
#[must_use = "dropping the guard detaches the reader"]
pub struct ReaderGuard {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for ReaderGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReaderGuard")
            .field("member", &self.inner.index())
            .finish()
    }
}

impl ReaderGuard {
    /// Detach (the same as dropping the guard, with the fork check reported).
    pub fn detach(self) -> Result<()> {
        let result = self.inner.check_fork();
        drop(self);
        result
    }
}

impl Drop for ReaderGuard {
    #[inline]
    fn drop(&mut self) {
        // In a forked child the count belongs to the parent: leave it alone.
        if self.inner.same_process() {
            members::detach(self.inner.mapping.page(), self.inner.index());
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn handles_and_guards_are_send_and_sync() {
        fn send_sync<T: Send + Sync>() {}
        send_sync::<super::ShmLock>();
        send_sync::<super::WriterGuard>();
        send_sync::<super::ReaderGuard>();
        send_sync::<super::Options>();
    }

    #[test]
    fn provisioning_env_values() {
        for yes in ["1", "true", "TRUE", "Yes", "on", " on "] {
            assert!(super::provision_env_says_yes(yes), "{yes:?}");
        }
        for no in ["", "0", "false", "off", "no", "2", "enable"] {
            assert!(!super::provision_env_says_yes(no), "{no:?}");
        }
    }
}
