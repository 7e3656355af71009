//! The public API: [`ShmLock`], [`WriterGuard`], [`ReaderGuard`], [`Options`].

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use crate::error::{human_duration, CorruptReason, Error, Result};
use crate::page::{
    lease_ms, owner_generation, LEASE_NONE_MS, MAX_GENERATION, MAX_READERS_PER_MEMBER, MAX_VERSION,
    MEMBER_CAPACITY,
};
use crate::protocol::members::{self, Identity, Registration};
use crate::protocol::snapshots::{self, AttachError, Pin, PublishError};
use crate::protocol::writer::{self, Claim, ClaimError, Declaration, Takeover};
use crate::protocol::Recovery;
use crate::protocol::{self};
use crate::snapshot::{ReapReport, Snapshot};
use crate::sys::{self, Mapping, OpenParams, Settled};

/// How [`ShmLock::open`] found the file ([`ShmLock::open_state`]): created, reopened clean,
/// joined live users, or recovered (and how) — what an engine logs at start-up, and the
/// only place a heal or a reboot recovery is reported to the program.
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
    /// checksum) or of an older format: it was rewritten, the generation restarted from the
    /// clock, above any generation it can have reached before, and the published version
    /// restarted at 0.
    HealedCorruptHeader,
    /// Nobody had it open and the page was last used in another boot of the host (a
    /// reboot, or a power cut that may have lost its latest writes): the generation jumped
    /// by at least 2^32, so no fencing token handed out before the crash repeats. Anything
    /// dead processes left was cleared as in `RecoveredFromCrash`.
    RecoveredAfterReboot,
    /// Nobody had it open and the page was of the previous format (version 2): it was
    /// upgraded in place to this library's format. The generation, the published version
    /// and the boot record carry over (a page from another boot also jumps its generation,
    /// as in `RecoveredAfterReboot`); anything dead processes left was cleared. While
    /// processes of the older library have the file open, the open is refused instead
    /// (`IncompatibleVersion`).
    UpgradedFormat,
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
    generation_floor: u64,
}

impl Default for Options {
    fn default() -> Self {
        Options::new()
    }
}

impl Options {
    /// Defaults: no lease, mode 0600 for a new file, local filesystems only, create if
    /// missing, no generation floor.
    pub fn new() -> Options {
        Options {
            lease: None,
            mode: None,
            allow_network_filesystem: false,
            create: true,
            generation_floor: 0,
        }
    }

    /// Declare, with every claim through this handle, "depose me if I am silent for longer
    /// than `lease`": while this handle's claim owns the role, any claimant may take it
    /// over once the latest heartbeat is older than `lease` (rounded up to whole
    /// milliseconds). The deposed guard learns it from `heartbeat()`, `is_current()`,
    /// `publish()` and `release()`. Without a lease an owner is taken over only when its
    /// process dies. A claimant's own lease never shortens another owner's: each owner is
    /// judged by the lease it declared.
    pub fn lease(mut self, lease: Duration) -> Options {
        self.lease = Some(lease);
        self
    }

    /// Claims through this handle get a generation above `floor`: pass the highest
    /// fencing token your engine made durable, so tokens never repeat even if the lock
    /// file was lost or rolled back (deleted, on a tmpfs after a reboot, or written back
    /// before a power cut). The claim raises the page's generation to match.
    ///
    /// A floor above [`MAX_GENERATION_FLOOR`] (2^55 − 1) is refused by
    /// [`ShmLock::open_with`] with `Err(GenerationFloorTooHigh)`: one claim at it would
    /// leave too few generations above it for the file to stay claimable.
    pub fn generation_floor(mut self, floor: u64) -> Options {
        self.generation_floor = floor;
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

/// The highest [`Options::generation_floor`] accepted: half the generation range
/// (2^55 − 1), so that a claim at the floor leaves 2^55 generations (and reboot jumps of
/// 2^32) above it. A higher floor is refused with [`Error::GenerationFloorTooHigh`].
pub const MAX_GENERATION_FLOOR: u64 = MAX_GENERATION / 2;

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

/// Whether `path` is a shmlock lock file rather than a data file: its name ends in `-shm`,
/// or it starts with the shmlock magic (any version, finished or not, either byte order).
/// The rule [`ShmLock::provision`] uses to refuse a lock file given as a data path, for
/// tools that take either (the `shmlock` CLI does). Reads at most 8 bytes; `false` when the
/// file cannot be read.
///
/// ```
/// # let dir = tempfile::tempdir().unwrap();
/// let lock = shmlock::ShmLock::open(dir.path().join("renamed.lock")).unwrap();
/// assert!(shmlock::is_lock_file(lock.path())); // by its magic
/// assert!(shmlock::is_lock_file("app.db-shm")); // by its name
/// assert!(!shmlock::is_lock_file(dir.path().join("app.db")));
/// ```
pub fn is_lock_file(path: impl AsRef<Path>) -> bool {
    sys::is_lock_file(path.as_ref())
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

/// The lock file a path names, by the one rule that [`inspect`] and the `shmlock` CLI share:
///
/// - a lock file ([`is_lock_file`]: its name ends in `-shm`, or it carries the shmlock
///   magic) names itself;
/// - otherwise, when `<path>-shm` exists, or `path` is a readable regular file (a data file
///   whose lock file does not exist yet), or neither exists, the lock file is
///   [`shm_path_for(path)`](shm_path_for);
/// - anything else (a directory, a symbolic link, an unreadable file) names itself, so that
///   opening it reports what is wrong.
///
/// So `app.db` and `app.db-shm` name the same lock file, and a lock file is never taken
/// for a data file (`app.db-shm` never means `app.db-shm-shm`). Reads at most 8 bytes.
///
/// ```
/// # let dir = tempfile::tempdir().unwrap();
/// let data = dir.path().join("app.db");
/// std::fs::write(&data, b"the engine's data").unwrap();
/// assert_eq!(shmlock::resolve_lock_path(&data), shmlock::shm_path_for(&data));
/// let shm = shmlock::shm_path_for(&data);
/// assert_eq!(shmlock::resolve_lock_path(&shm), shm);
/// ```
pub fn resolve_lock_path(path: impl AsRef<Path>) -> PathBuf {
    let path = path.as_ref();
    if sys::is_lock_file(path) {
        return path.to_path_buf();
    }
    let shm = shm_path_for(path);
    if std::fs::symlink_metadata(&shm).is_ok() {
        return shm;
    }
    match std::fs::symlink_metadata(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => shm,
        Ok(meta) if meta.is_file() && std::fs::File::open(path).is_ok() => shm,
        _ => path.to_path_buf(),
    }
}

/// Read-only look at a lock file: creates, registers and writes nothing. `path` is the lock
/// file or the data file beside it ([`resolve_lock_path`] decides, as the CLI does).
/// `Ok(None)` when the lock file does not exist or is empty. Liveness is probed from the
/// kernel's lock table.
///
/// # Errors
///
/// [`Error::NotARegularFile`] (a directory, FIFO, symbolic link …), [`Error::Corrupt`] (a
/// damaged page, or a file without the shmlock magic named as a lock file),
/// [`Error::IncompatibleVersion`], and [`Error::Io`] when the file cannot be opened or
/// read (kind [`PermissionDenied`](crate::ErrorKind::PermissionDenied) if this process
/// may not read it).
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
///
/// // The data file names its lock file too.
/// let data = dir.path().join("app.db");
/// std::fs::write(&data, b"").unwrap();
/// assert_eq!(shmlock::inspect(&data)?.expect("app.db-shm").reader_count, 1);
/// # Ok(()) }
/// ```
pub fn inspect(path: impl AsRef<Path>) -> Result<Option<Snapshot>> {
    sys::inspect(&resolve_lock_path(path))
}

/// This process's membership of one lock file: shared by every [`ShmLock`] of the file.
pub(crate) struct Inner {
    pub(crate) mapping: Arc<Mapping>,
    pub(crate) registration: Registration,
    fork_epoch: u64,
    /// The file's (device, inode): a forked child reads it again only if the path still
    /// names it.
    key: (u64, u64),
    /// The page's generation seed, read when it validated: every generation the page can
    /// legitimately hold is at or above it, so a claim at or below it means the page was
    /// truncated or overwritten under its live users (see `ShmLock::claim`).
    generation_seed: u64,
}

impl Inner {
    /// Whether this process is the one that opened the file (not a forked child). A
    /// `bool`, not a `Result`: the hot paths would otherwise drop an `Error` every call.
    #[inline]
    pub(crate) fn same_process(&self) -> bool {
        sys::fork_epoch() == self.fork_epoch
    }

    #[inline]
    pub(crate) fn check_fork(&self) -> Result<()> {
        if self.same_process() {
            Ok(())
        } else {
            Err(Error::ForkedHandle)
        }
    }

    #[inline]
    pub(crate) fn index(&self) -> usize {
        self.registration.index
    }

    /// The page's state for a handle in a forked child: its own mapping was replaced by
    /// the fork hook, so it reads the file (which must still be the one it opened), and
    /// answers as pessimistically as possible when it cannot.
    #[cold]
    fn forked_look(&self) -> Snapshot {
        match sys::inspect_in_child(&self.mapping.path, self.key) {
            Ok(snapshot) => snapshot,
            Err(e) => {
                log::warn!("a handle used in a forked child cannot read its file: {e}");
                Snapshot::unknown()
            }
        }
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
    pub(crate) inner: Arc<Inner>,
    /// What this handle's claims declare (worked out once, at open).
    declare: Declaration,
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
    /// Open (creating if missing, mode 0600) the lock file at `path`: [`open_with`](ShmLock::open_with)
    /// with default [`Options`], whose `# Errors` apply.
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
    ///
    /// # Errors
    ///
    /// - [`Error::Io`] when a system call fails; its [`kind()`](Error::kind) tells
    ///   [`NotFound`](crate::ErrorKind::NotFound) (a missing directory, or a missing file
    ///   with [`Options::create`]`(false)`), [`PermissionDenied`](crate::ErrorKind::PermissionDenied)
    ///   and [`ReadOnlyFilesystem`](crate::ErrorKind::ReadOnlyFilesystem) apart.
    /// - [`Error::NotARegularFile`]: a directory, FIFO, device, socket or symbolic link.
    /// - [`Error::Corrupt`]: not a shmlock lock file (left untouched), or a damaged page
    ///   that live processes use (not rewritten).
    /// - [`Error::IncompatibleVersion`]: another format version.
    /// - [`Error::UnsupportedFilesystem`]: a network filesystem (see
    ///   [`Options::allow_network_filesystem`]).
    /// - [`Error::TooManyProcesses`]: every member entry is taken by a live process.
    pub fn open_with(path: impl AsRef<Path>, options: &Options) -> Result<ShmLock> {
        let path = path.as_ref();
        if options.generation_floor > MAX_GENERATION_FLOOR {
            return Err(Error::GenerationFloorTooHigh {
                floor: options.generation_floor,
                max: MAX_GENERATION_FLOOR,
            });
        }
        let params = OpenParams {
            mode: options.mode.unwrap_or(0o600),
            create: options.create,
            allow_network_filesystem: options.allow_network_filesystem,
        };
        sys::install_fork_hooks();
        let declare = declaration(options);
        let wrap = |inner, state| ShmLock {
            inner,
            declare,
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
            Settled::Recovered(Recovery {
                rebooted: Some((before, after)),
                ..
            }) => {
                log::warn!(
                    "{}: the page was last used in another boot of the host; the generation jumped from {before} to {after} so that no fencing token can repeat",
                    path.display()
                );
                OpenState::RecoveredAfterReboot
            }
            Settled::Recovered(rec) if rec.found_stale_state() => {
                log::info!(
                    "{}: recovered after a crash: {}reaped {} dead member(s)",
                    path.display(),
                    rec.owner_freed
                        .map(|g| format!("freed the dead writer's generation {g}, "))
                        .unwrap_or_default(),
                    rec.reaped.len()
                );
                OpenState::RecoveredFromCrash
            }
            Settled::Recovered(_) => OpenState::Reopened,
            Settled::Upgraded(_) => OpenState::UpgradedFormat,
        };
        log_reaped(path, &reaped);
        let generation_seed = opened
            .mapping
            .page()
            .header
            .generation_seed
            .load(Ordering::Acquire);
        let inner = Arc::new(Inner {
            mapping: opened.mapping,
            registration,
            fork_epoch: sys::fork_epoch(),
            key: opened.key,
            generation_seed,
        });
        let mut registry = sys::REGISTRY.lock();
        registry.retain(|(_, weak)| weak.strong_count() > 0);
        // Another thread of this process may have opened the file meanwhile: use theirs
        // (ours unregisters as it drops).
        if let Some(theirs) = lookup(&registry, opened.key) {
            drop(registry);
            return Ok(wrap(theirs, OpenState::Joined));
        }
        let weak: Weak<Inner> = Arc::downgrade(&inner);
        let membership: Weak<dyn std::any::Any + Send + Sync> = weak;
        registry.push((opened.key, membership));
        Ok(wrap(inner, state))
    }

    /// Open `shm_path_for(data_path)`, the lock file beside a data file, with default
    /// [`Options`]: [`provision_with`](ShmLock::provision_with) says what it does.
    ///
    /// The data path is resolved first (`realpath`: symbolic links, `..`, relative
    /// paths), so every path that reaches one data file through symbolic links gets the
    /// same lock file, beside the data file itself ([`ShmLock::path`] says which). Hard
    /// links cannot be resolved: two names of one data file in two directories (or under
    /// two names) get two lock files, and so two writers. Give every process the same
    /// name for a data file that has hard links (`provision` logs a warning when it has
    /// more than one).
    ///
    /// ```
    /// # fn main() -> shmlock::Result<()> {
    /// # let dir = tempfile::tempdir().unwrap();
    /// let data = dir.path().join("app.db");
    /// std::fs::write(&data, b"").unwrap(); // the engine's data file exists first
    /// shmlock::set_provisioning_enabled(true);
    /// let lock = shmlock::ShmLock::provision(&data)?;
    /// assert_eq!(lock.path(), shmlock::shm_path_for(data.canonicalize().unwrap()));
    /// assert!(matches!(
    ///     shmlock::ShmLock::provision(lock.path()),
    ///     Err(shmlock::Error::DataPathIsLockFile { .. })
    /// ));
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    ///
    /// As [`provision_with`](ShmLock::provision_with).
    pub fn provision(data_path: impl AsRef<Path>) -> Result<ShmLock> {
        ShmLock::provision_with(data_path, &Options::new())
    }

    /// Open `shm_path_for(data_path)`, the lock file beside a data file, with `options`
    /// (a lease, a generation floor, …): one open, for the writer and its readers alike.
    ///
    /// The data file must exist: the lock file belongs to it. A missing lock file is created
    /// only when [`provisioning_enabled`] and this process may write the data file; it
    /// gets the data file's permission bits unless `options` sets a [`mode`](Options::mode)
    /// (so whoever may open the data may open its lock file). A path that is itself a lock
    /// file (ends in `-shm`, or starts with the shmlock magic) is refused: nothing is
    /// created or written.
    ///
    /// **Permissions.** Every process that uses the lock file, readers included, opens it
    /// for reading and writing (a reader's pins live in the page), as SQLite's readers need
    /// its `-shm`. So: the lock file is created by a process that may write the data file
    /// (the engine's writer, or an install step), and a process that may only read the
    /// data file can use it once it exists if its mode grants that process write
    /// permission (for example a group with `rw` on `app.db-shm`). A process that may only
    /// read the data file never creates the lock file: it would own it, and the writer
    /// could then not open it.
    ///
    /// ```
    /// use std::time::Duration;
    /// use shmlock::{ErrorKind, Options, ShmLock};
    /// # fn main() -> shmlock::Result<()> {
    /// # let dir = tempfile::tempdir().unwrap();
    /// let data = dir.path().join("app.db");
    /// let options = Options::new().lease(Duration::from_secs(5));
    /// shmlock::set_provisioning_enabled(true);
    /// let missing = ShmLock::provision_with(&data, &options).unwrap_err();
    /// assert_eq!(missing.kind(), ErrorKind::NotFound); // no data file, no lock file
    /// std::fs::write(&data, b"").unwrap();
    /// let lock = ShmLock::provision_with(&data, &options)?; // leased claims from here
    /// let writer = lock.try_claim_writer()?;
    /// # drop(writer);
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    ///
    /// - [`Error::NoDataFile`] (kind `NotFound`): `data_path` does not exist.
    /// - [`Error::NotARegularFile`]: `data_path` is a directory or another non-file.
    /// - [`Error::DataPathIsLockFile`]: `data_path` is a lock file.
    /// - [`Error::ProvisioningDisabled`]: no lock file, and [`provisioning_enabled`] is
    ///   off.
    /// - [`Error::ProvisionNotPermitted`] (kind `PermissionDenied`): no lock file, and
    ///   this process may not write the data file.
    /// - Everything [`open_with`](ShmLock::open_with) returns, for the lock file.
    pub fn provision_with(data_path: impl AsRef<Path>, options: &Options) -> Result<ShmLock> {
        let given = data_path.as_ref();
        // One data file, one lock file, whatever path reaches it: resolve symbolic links
        // (of the file and of its directories, `..` and relative paths) as SQLite does,
        // so `link.db -> d.db` gets `d.db-shm`, not a second lock file `link.db-shm`.
        let resolved = match std::fs::canonicalize(given) {
            Ok(resolved) => resolved,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(Error::NoDataFile {
                    path: given.to_path_buf(),
                })
            }
            Err(e) => return Err(Error::io("resolve the data file's path", given, e)),
        };
        let data = resolved.as_path();
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
        if sys::is_lock_file(data) {
            return Err(Error::DataPathIsLockFile {
                path: data.to_path_buf(),
            });
        }
        let links = sys::link_count(data, &meta);
        if links > 1 {
            log::warn!(
                "{}: the data file has {links} hard links; every process must provision it by the same name, or each name gets its own lock file",
                data.display(),
            );
        }
        let mut options = options.clone();
        options.mode = Some(options.mode.unwrap_or(sys::data_file_mode(&meta)));
        options.create = options.create && provisioning_enabled();
        let shm = shm_path_for(data);
        let lock_missing = std::fs::symlink_metadata(&shm)
            .is_err_and(|e| e.kind() == std::io::ErrorKind::NotFound);
        if lock_missing && options.create && !sys::may_write(data) {
            return Err(Error::ProvisionNotPermitted {
                path: shm,
                data: data.to_path_buf(),
            });
        }
        ShmLock::open_with(&shm, &options).map_err(|e| match e {
            Error::Io { source, .. }
                if source.kind() == std::io::ErrorKind::NotFound && !provisioning_enabled() =>
            {
                Error::ProvisioningDisabled { path: shm }
            }
            other => other,
        })
    }

    /// How this handle's open found the file (see [`OpenState`]). A second open of the
    /// same file in a process says [`OpenState::Joined`].
    pub fn open_state(&self) -> OpenState {
        self.state
    }

    /// The lock file's path, as given to the open that mapped it (for `provision`,
    /// [`shm_path_for`] of the data file).
    pub fn path(&self) -> &Path {
        &self.inner.mapping.path
    }

    /// This process's member index in the file's member table (one entry per process,
    /// shared by all its handles of the file): the `MEMBER` column of `shmlock inspect`.
    pub fn member_index(&self) -> usize {
        self.inner.index()
    }

    /// Claim the writer role now, taking over a dead owner (or, with a lease, one whose
    /// heartbeat is older than the lease). `Err(WriterBusy)` if a live owner holds it.
    ///
    /// # Errors
    ///
    /// - [`Error::WriterBusy`]: a live owner (another process) holds the role; it names
    ///   the owner's pid and generation.
    /// - [`Error::AlreadyWriter`]: this process holds the role through another guard.
    /// - [`Error::ForkedHandle`]: the handle was opened before `fork()`.
    /// - [`Error::Corrupt`]: the page was truncated or overwritten under its users
    ///   ([`CorruptReason::ResetUnderUse`]), or its generation counter is exhausted; the
    ///   claim was given back.
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
    /// # Errors
    ///
    /// - [`Error::ClaimTimeout`] (kind [`Timeout`](crate::ErrorKind::Timeout)): `timeout`
    ///   passed (at once for `Duration::ZERO`) and a live owner still held the role; it
    ///   names the owner's pid and generation.
    /// - [`Error::AlreadyWriter`]: this process holds the role through another guard, or
    ///   came to hold it while this call waited.
    /// - [`Error::ForkedHandle`]: the handle was opened before `fork()`.
    /// - [`Error::Corrupt`]: as for [`try_claim_writer`](ShmLock::try_claim_writer).
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

    /// [`try_claim_writer`](ShmLock::try_claim_writer) with a guard that borrows this
    /// handle instead of sharing it: no reference count to bump and drop (see
    /// [`WriterRef`]).
    ///
    /// # Errors
    ///
    /// As [`try_claim_writer`](ShmLock::try_claim_writer).
    #[inline]
    pub fn try_claim_writer_ref(&self) -> Result<WriterRef<'_>> {
        self.claim_ref(None)
    }

    /// [`claim_writer`](ShmLock::claim_writer) with a guard that borrows this handle (see
    /// [`WriterRef`]).
    ///
    /// # Errors
    ///
    /// As [`claim_writer`](ShmLock::claim_writer): [`Error::ClaimTimeout`] when `timeout`
    /// passes, [`Error::AlreadyWriter`], [`Error::ForkedHandle`], [`Error::Corrupt`].
    pub fn claim_writer_ref(&self, timeout: Duration) -> Result<WriterRef<'_>> {
        self.claim_ref(Some(timeout))
    }

    #[inline]
    fn claim_ref(&self, timeout: Option<Duration>) -> Result<WriterRef<'_>> {
        Ok(WriterRef {
            lock: self,
            claim: self.claim_raw(timeout)?,
            released: false,
        })
    }

    #[inline]
    pub(crate) fn claim(&self, timeout: Option<Duration>) -> Result<WriterGuard> {
        Ok(WriterGuard {
            inner: Arc::clone(&self.inner),
            claim: self.claim_raw(timeout)?,
            released: false,
        })
    }

    /// One claim attempt that judges a silent owner by how long `watched` has seen it own
    /// (the async claim keeps one per waiting task, as the blocking wait does).
    #[cfg(feature = "tokio")]
    pub(crate) fn claim_watching(&self, watched: Option<writer::Watched>) -> Result<WriterGuard> {
        Ok(WriterGuard {
            inner: Arc::clone(&self.inner),
            claim: self.claim_with(ClaimHow::Try(watched))?,
            released: false,
        })
    }

    #[inline]
    fn claim_raw(&self, timeout: Option<Duration>) -> Result<Claim> {
        match timeout {
            None => self.claim_with(ClaimHow::Try(None)),
            Some(t) => self
                .claim_with(ClaimHow::Until(deadline_after(t)))
                .map_err(|e| claim_timed_out(e, t)),
        }
    }

    #[inline]
    fn claim_with(&self, how: ClaimHow) -> Result<Claim> {
        let inner = &self.inner;
        if !inner.same_process() {
            return Err(Error::ForkedHandle);
        }
        let page = inner.mapping.page();
        let plat = inner.mapping.platform();
        let declare = self.declaration();
        let me = inner.index();
        let result = match how {
            ClaimHow::Try(watched) => {
                writer::try_claim_watching(page, &plat, me, &declare, watched)
            }
            ClaimHow::Until(deadline) => writer::claim_until(page, &plat, me, &declare, deadline),
        };
        match result {
            Ok(claim) => {
                if claim.generation <= inner.generation_seed {
                    return Err(page_reset_under_us(inner, claim));
                }
                if let Some(t) = claim.takeover {
                    log_takeover(&inner.mapping.path, claim.generation, &t);
                }
                Ok(claim)
            }
            Err(e) => Err(claim_error(&inner.mapping.path, page, e)),
        }
    }

    /// What this handle declares with a claim.
    #[inline]
    pub(crate) fn declaration(&self) -> Declaration {
        self.declare
    }

    /// Attach a reader and pin the latest published version: until the guard is dropped,
    /// [`oldest_pinned`](ShmLock::oldest_pinned) in every process stays at or below
    /// [`ReaderGuard::version`], so the writer does not reclaim what this reader reads.
    /// Lock-free: atomics on this process's own line and in-process slots, no system call.
    ///
    /// # Errors
    ///
    /// [`Error::TooManyReaders`] (this process has the most readers one member entry can
    /// count), [`Error::ForkedHandle`].
    ///
    /// ```
    /// # fn main() -> shmlock::Result<()> {
    /// # let dir = tempfile::tempdir().unwrap();
    /// let lock = shmlock::ShmLock::open(dir.path().join("app.db-shm"))?;
    /// let writer = lock.try_claim_writer()?;
    /// writer.publish(7)?;
    /// let first = lock.attach_reader()?;
    /// writer.publish(8)?;
    /// let second = lock.attach_reader()?;
    /// assert_eq!((first.version(), second.version()), (7, 8));
    /// assert_eq!(lock.snapshot().reader_count, 2);
    /// assert_eq!(lock.oldest_pinned(), Some(7));
    /// drop(first);
    /// assert_eq!(lock.oldest_pinned(), Some(8));
    /// second.detach()?;
    /// assert_eq!(lock.oldest_pinned(), None);
    /// # Ok(()) }
    /// ```
    #[inline]
    pub fn attach_reader(&self) -> Result<ReaderGuard> {
        let pin = attach_pin(&self.inner)?;
        Ok(ReaderGuard {
            inner: Arc::clone(&self.inner),
            pin,
        })
    }

    /// [`attach_reader`](ShmLock::attach_reader) with a guard that borrows this handle
    /// instead of sharing it: no reference count to bump and drop, for a read transaction
    /// that begins and ends in one scope (see [`ReaderRef`]).
    ///
    /// ```
    /// # fn main() -> shmlock::Result<()> {
    /// # let dir = tempfile::tempdir().unwrap();
    /// let lock = shmlock::ShmLock::open(dir.path().join("app.db-shm"))?;
    /// lock.try_claim_writer_ref()?.publish(4)?;
    /// let read = lock.attach_reader_ref()?; // one read transaction
    /// assert_eq!(read.version(), 4);
    /// assert_eq!(lock.oldest_pinned(), Some(4));
    /// drop(read);
    /// assert_eq!(lock.oldest_pinned(), None);
    /// # Ok(()) }
    /// ```
    #[inline]
    pub fn attach_reader_ref(&self) -> Result<ReaderRef<'_>> {
        Ok(ReaderRef {
            lock: self,
            pin: attach_pin(&self.inner)?,
        })
    }

    /// The latest published version (0 before the first publish). One atomic load. (In a
    /// forked child, whose handles no longer map the file, it is read from the file, as
    /// [`inspect`] does; 0 if the file can no longer be read there.)
    #[inline]
    pub fn published(&self) -> u64 {
        if !self.inner.same_process() {
            return self.inner.forked_look().published;
        }
        snapshots::published(self.inner.mapping.page())
    }

    /// Wait until a version above `after` is published, and return it (at once if one
    /// already is); `Err(Timeout)` after `timeout`. Sleeps on a shared futex: a publish in
    /// any process wakes it.
    ///
    /// # Errors
    ///
    /// - [`Error::Timeout`]: `timeout` passed (at once for `Duration::ZERO`) with no
    ///   version above `after` published.
    /// - [`Error::ForkedHandle`]: the handle was opened before `fork()`.
    ///
    /// ```
    /// use std::time::Duration;
    /// # fn main() -> shmlock::Result<()> {
    /// # let dir = tempfile::tempdir().unwrap();
    /// let lock = shmlock::ShmLock::open(dir.path().join("app.db-shm"))?;
    /// assert!(matches!(
    ///     lock.wait_published(0, Duration::from_millis(1)),
    ///     Err(shmlock::Error::Timeout { .. })
    /// ));
    /// lock.try_claim_writer()?.publish(3)?;
    /// assert_eq!(lock.wait_published(0, Duration::from_secs(1))?, 3);
    /// # Ok(()) }
    /// ```
    pub fn wait_published(&self, after: u64, timeout: Duration) -> Result<u64> {
        let inner = &self.inner;
        inner.check_fork()?;
        let plat = inner.mapping.platform();
        let page = inner.mapping.page();
        snapshots::wait_published(page, &plat, inner.index(), after, deadline_after(timeout))
            .map_err(|_| publish_timeout(after, timeout))
    }

    /// The oldest version pinned by a live reader in any process (`None`: no reader pins
    /// anything). It may be lower than the truth for an instant (a detach in flight), never
    /// higher; a dead process's pins never count. Costs a scan of the member table and one
    /// kernel liveness probe per member with pins. (In a forked child, whose handles no
    /// longer map the file, it is read from the file, as [`inspect`] does; `Some(0)`,
    /// "everything is pinned", if the file can no longer be read there.)
    ///
    /// **When is `None` safe?** `None` says no reader pins anything *now*; a reader that
    /// attaches a moment later pins [`published()`](ShmLock::published) as it is then. So
    /// `None` frees exactly the versions below the latest version published *before* this
    /// call — not "everything", and not a version published after it. The same holds for
    /// `Some(oldest)`: what is free is below `min(oldest, published)`, with `published` read
    /// before the scan. A writer reads it best as [`WriterGuard::reclaimable_below`], after
    /// its publish, which also checks that it is still the writer (a deposed writer must
    /// reclaim nothing).
    ///
    /// ```
    /// # fn main() -> shmlock::Result<()> {
    /// # let dir = tempfile::tempdir().unwrap();
    /// let lock = shmlock::ShmLock::open(dir.path().join("app.db-shm"))?;
    /// let writer = lock.try_claim_writer()?;
    /// writer.publish(5)?;
    /// assert_eq!(lock.oldest_pinned(), None); // no reader now...
    /// let late = lock.attach_reader()?;       // ...but one may attach at once,
    /// assert_eq!(late.version(), 5);           // pinning the published version:
    /// assert_eq!(writer.reclaimable_below()?, 5); // only versions below 5 are free.
    /// # Ok(()) }
    /// ```
    pub fn oldest_pinned(&self) -> Option<u64> {
        let inner = &self.inner;
        if !inner.same_process() {
            return inner.forked_look().oldest_pinned;
        }
        let plat = inner.mapping.platform();
        snapshots::oldest_pinned(inner.mapping.page(), &plat).map(|(oldest, _)| oldest)
    }

    /// The state of the file now: owner, members, readers, versions. Liveness comes from
    /// the kernel. (In a forked child, whose handles no longer map the file, it is read
    /// through a read-only look at the file, as [`inspect`] does; if the file can no
    /// longer be read there, a snapshot that says version 0 is pinned and knows nothing
    /// else.)
    pub fn snapshot(&self) -> Snapshot {
        let inner = &self.inner;
        if !inner.same_process() {
            return inner.forked_look();
        }
        protocol::snapshot(
            inner.mapping.page(),
            &inner.mapping.platform(),
            Some(inner.index()),
        )
    }

    /// Clear every dead member (and a dead owner) from the page; report what was cleared.
    /// Live members are never touched. Nobody has to call it for correctness: dead
    /// processes' readers and pins never count, and whoever next needs a dead entry clears
    /// it; it is for tidiness and for operators (`shmlock reap`).
    ///
    /// # Errors
    ///
    /// [`Error::ForkedHandle`] in a forked child.
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

/// How a claim goes: one attempt (judging a silent owner by what was watched), or waiting
/// until a boot-clock deadline.
#[derive(Clone, Copy)]
enum ClaimHow {
    Try(Option<writer::Watched>),
    Until(u64),
}

/// What claims through a handle opened with `options` declare.
fn declaration(options: &Options) -> Declaration {
    // A process whose boot clock is not the host's (it unshared a time namespace for its
    // children) can neither stamp heartbeats others may judge nor judge theirs: it
    // declares no lease and deposes only dead owners.
    let clock_ok = sys::os::clock_is_host();
    if !clock_ok && options.lease.is_some() {
        log::warn!(
            "this process's boot clock is not the host's (it unshared a time namespace): its claims declare no lease"
        );
    }
    Declaration {
        lease_ms: if clock_ok {
            lease_ms(options.lease)
        } else {
            LEASE_NONE_MS
        },
        process_start_secs: sys::os::process_start_secs(sys::fork_epoch()),
        generation_floor: options.generation_floor,
        judges_leases: clock_ok,
        judge_by_ns: None,
    }
}

/// The boot-clock instant `timeout` from now.
#[inline]
pub(crate) fn deadline_after(timeout: Duration) -> u64 {
    sys::os::boottime_ns().saturating_add(timeout.as_nanos().min(u64::MAX as u128) as u64)
}

fn lookup(registry: &sys::Registry, key: (u64, u64)) -> Option<Arc<Inner>> {
    let epoch = sys::fork_epoch();
    registry
        .iter()
        .filter(|(k, _)| *k == key)
        .filter_map(|(_, weak)| weak.upgrade()?.downcast::<Inner>().ok())
        .find(|inner| inner.fork_epoch == epoch)
}

/// The live `Inner` of this process for the file at `path`, if it has one.
fn registered(path: &Path) -> Result<Option<Arc<Inner>>> {
    let registry = sys::REGISTRY.lock();
    if registry.is_empty() {
        return Ok(None);
    }
    // Not following a symlink: one at the path is refused by the open that follows.
    let Some(key) = sys::path_key(path) else {
        return Ok(None);
    };
    Ok(lookup(&registry, key))
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
        CorruptReason::ResetUnderUse {
            generation: claim.generation.saturating_sub(1),
            seed: inner.generation_seed,
        },
    )
}

/// A waiting claim that ended busy ran out of time: say so, naming the owner (blocking and
/// async forms alike).
#[cold]
pub(crate) fn claim_timed_out(e: Error, waited: Duration) -> Error {
    match e {
        Error::WriterBusy { pid, generation } => Error::ClaimTimeout {
            pid,
            generation,
            waited,
        },
        other => other,
    }
}

#[cold]
fn claim_error(
    path: &Path,
    page: &crate::page::Page<std::sync::atomic::AtomicU64>,
    e: ClaimError,
) -> Error {
    match e {
        ClaimError::Busy {
            pid, generation, ..
        } => Error::WriterBusy { pid, generation },
        // The owner word names this process: one of its guards holds the role.
        ClaimError::AlreadyOurs { .. } => Error::AlreadyWriter,
        ClaimError::GenerationExhausted => Error::GenerationExhausted {
            path: path.to_path_buf(),
            generation: owner_generation(writer::load_owner(page)),
        },
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
            heartbeat_age,
            lease,
        } => format!(
            "owner pid {pid} (generation {generation}) had not heartbeaten for {}, longer than the lease of {} it declared",
            human_duration(*heartbeat_age),
            human_duration(*lease)
        ),
        Takeover::Invalid { generation } => {
            format!("the owner word (generation {generation}) named no valid member")
        }
    }
}

/// The writer role, held. Dropping it releases the role (if it still holds it).
#[must_use = "dropping the guard releases the writer role"]
pub struct WriterGuard {
    pub(crate) inner: Arc<Inner>,
    pub(crate) claim: Claim,
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

    /// Stamp the heartbeat (an atomic compare-and-swap on this process's own member entry)
    /// while the claim still holds. `Err(Deposed)` once another claim has won; a deposed
    /// guard's heartbeat changes nothing, even when a newer claim of the same process owns
    /// the role.
    ///
    /// # Errors
    ///
    /// [`Error::Deposed`], [`Error::ForkedHandle`].
    #[inline]
    pub fn heartbeat(&self) -> Result<()> {
        heartbeat_claim(&self.inner, &self.claim)
    }

    /// Whether this claim still owns the writer role (`false` once deposed, or in a forked
    /// child).
    #[inline]
    pub fn is_current(&self) -> bool {
        claim_is_current(&self.inner, &self.claim)
    }

    /// A handle for a keep-alive thread: it can [`heartbeat`](HeartbeatHandle::heartbeat)
    /// and check [`is_current`](HeartbeatHandle::is_current) for this claim, but cannot
    /// release it or publish, so the guard stays with the code that owns the role.
    ///
    /// ```
    /// use std::time::Duration;
    /// # fn main() -> shmlock::Result<()> {
    /// # let dir = tempfile::tempdir().unwrap();
    /// let options = shmlock::Options::new().lease(Duration::from_secs(2));
    /// let lock = shmlock::ShmLock::open_with(dir.path().join("app.db-shm"), &options)?;
    /// let writer = lock.try_claim_writer()?;
    /// let keepalive = writer.heartbeat_handle();
    /// let beats = std::thread::spawn(move || {
    ///     // Heartbeat until the claim is released or deposed.
    ///     while keepalive.heartbeat().is_ok() {
    ///         std::thread::sleep(Duration::from_millis(10));
    ///     }
    /// });
    /// writer.publish(1)?;
    /// writer.release()?; // the keep-alive thread's next heartbeat says Deposed
    /// beats.join().unwrap();
    /// # Ok(()) }
    /// ```
    pub fn heartbeat_handle(&self) -> HeartbeatHandle {
        HeartbeatHandle {
            inner: Arc::clone(&self.inner),
            claim: self.claim,
        }
    }

    /// Publish `version`: readers that attach from now on pin it, and readers asleep in
    /// [`ShmLock::wait_published`] wake. Versions only grow (`Err(VersionNotIncreasing)`)
    /// and are at most 2^48 − 2 (`Err(VersionTooLarge)`); a deposed writer cannot publish
    /// (`Err(Deposed)`). One CAS; a system call only when a reader is waiting.
    ///
    /// # Errors
    ///
    /// [`Error::Deposed`], [`Error::VersionNotIncreasing`], [`Error::VersionTooLarge`],
    /// [`Error::ForkedHandle`]. Nothing is published when it fails.
    #[inline]
    pub fn publish(&self, version: u64) -> Result<()> {
        publish_claim(&self.inner, &self.claim, version)
    }

    /// Wait until no live reader, in any process, pins a version below `version` — then
    /// everything only those readers could read may be reclaimed. Returns at once if none
    /// does; sleeps otherwise, woken by the detach (or the death) of the readers that held
    /// it back; `Err(Timeout)` after `timeout`. Works whether or not this guard is still
    /// current (reclaiming is the current writer's business: check `is_current()`, or use
    /// [`reclaimable_below`](WriterGuard::reclaimable_below)).
    ///
    /// # Errors
    ///
    /// - [`Error::Timeout`]: `timeout` passed (at once for `Duration::ZERO`) while a live
    ///   reader still pinned a version below `version`; it names the oldest pin.
    /// - [`Error::ForkedHandle`]: the handle was opened before `fork()`.
    ///
    /// ```
    /// use std::time::Duration;
    /// # fn main() -> shmlock::Result<()> {
    /// # let dir = tempfile::tempdir().unwrap();
    /// let lock = shmlock::ShmLock::open(dir.path().join("app.db-shm"))?;
    /// let writer = lock.try_claim_writer()?;
    /// writer.publish(1)?;
    /// let reader = lock.attach_reader()?; // pins 1
    /// writer.publish(2)?;
    /// let short = Duration::from_millis(1);
    /// assert!(matches!(writer.wait_readers_past(2, short), Err(shmlock::Error::Timeout { .. })));
    /// drop(reader);
    /// writer.wait_readers_past(2, short)?; // version 1 may be reclaimed now
    /// # Ok(()) }
    /// ```
    pub fn wait_readers_past(&self, version: u64, timeout: Duration) -> Result<()> {
        wait_readers_past(&self.inner, version, timeout)
    }

    /// Everything below the returned version is free to reclaim: no live reader in any
    /// process pins it, and no reader can pin it from now on (a reader that attaches pins
    /// the published version, which only grows). It is `min(published, oldest pin)`, read
    /// in the order that makes it safe (the published version first, then the pins), so
    /// call it after your [`publish`](WriterGuard::publish): what you published is then
    /// the bound, and only readers still on older versions hold it lower. Does not wait
    /// (see [`wait_readers_past`](WriterGuard::wait_readers_past) for that). A scan of the
    /// member table, like [`ShmLock::oldest_pinned`].
    ///
    /// # Errors
    ///
    /// - [`Error::Deposed`]: this guard is no longer the writer; a deposed writer must
    ///   reclaim nothing (its successor owns the data now).
    /// - [`Error::ForkedHandle`]: the handle was opened before `fork()`.
    ///
    /// ```
    /// # fn main() -> shmlock::Result<()> {
    /// # let dir = tempfile::tempdir().unwrap();
    /// let lock = shmlock::ShmLock::open(dir.path().join("app.db-shm"))?;
    /// let writer = lock.try_claim_writer()?;
    /// writer.publish(1)?;
    /// let old_reader = lock.attach_reader()?; // pins 1
    /// writer.publish(2)?;
    /// assert_eq!(writer.reclaimable_below()?, 1); // version 1 is still read
    /// drop(old_reader);
    /// assert_eq!(writer.reclaimable_below()?, 2); // everything below 2 is free
    /// # Ok(()) }
    /// ```
    pub fn reclaimable_below(&self) -> Result<u64> {
        reclaimable_below(&self.inner, &self.claim)
    }

    /// Release the writer role and wake waiting claimants. `Err(Deposed)` if another claim
    /// had already won (nothing is changed then).
    ///
    /// # Errors
    ///
    /// [`Error::Deposed`] (nothing was changed), [`Error::ForkedHandle`].
    pub fn release(mut self) -> Result<()> {
        self.released = true;
        release_claim(&self.inner, &self.claim)
    }
}

fn deposed(claim: &Claim) -> Error {
    Error::Deposed {
        generation: claim.generation,
    }
}

/// Release `claim` if still current (`Err(Deposed)` otherwise, changing nothing).
#[inline]
fn release_claim(inner: &Inner, claim: &Claim) -> Result<()> {
    inner.check_fork()?;
    let plat = inner.mapping.platform();
    if writer::release(inner.mapping.page(), &plat, claim.word) {
        Ok(())
    } else {
        Err(deposed(claim))
    }
}

/// What dropping an unreleased guard does: release if this process can.
#[inline]
fn release_on_drop(inner: &Inner, claim: &Claim) {
    if inner.same_process() {
        writer::release(inner.mapping.page(), &inner.mapping.platform(), claim.word);
    }
}

#[inline]
fn publish_claim(inner: &Inner, claim: &Claim, version: u64) -> Result<()> {
    inner.check_fork()?;
    let plat = inner.mapping.platform();
    match snapshots::publish(inner.mapping.page(), &plat, claim.word, version) {
        Ok(()) => Ok(()),
        Err(PublishError::Deposed) => Err(deposed(claim)),
        Err(PublishError::NotIncreasing { published }) => {
            Err(Error::VersionNotIncreasing { version, published })
        }
        Err(PublishError::TooLarge) => Err(Error::VersionTooLarge {
            version,
            max: MAX_VERSION,
        }),
    }
}

fn reclaimable_below(inner: &Inner, claim: &Claim) -> Result<u64> {
    inner.check_fork()?;
    let page = inner.mapping.page();
    let plat = inner.mapping.platform();
    // Published first, then the pins: a reader whose pin this scan misses re-reads
    // `published` after making its pin visible, so it pins this version or a later one.
    let published = snapshots::published(page);
    let oldest = snapshots::oldest_pinned(page, &plat).map(|(oldest, _)| oldest);
    if !writer::is_current(page, &plat, claim.word) {
        return Err(deposed(claim));
    }
    Ok(oldest.map_or(published, |oldest| oldest.min(published)))
}

fn wait_readers_past(inner: &Inner, version: u64, timeout: Duration) -> Result<()> {
    inner.check_fork()?;
    let plat = inner.mapping.platform();
    let page = inner.mapping.page();
    snapshots::wait_readers_past(page, &plat, inner.index(), version, deadline_after(timeout))
        .map_err(|oldest| readers_timeout(version, oldest, timeout))
}

/// `wait_published`'s time-out (blocking and async forms alike).
pub(crate) fn publish_timeout(after: u64, waited: Duration) -> Error {
    Error::Timeout {
        what: format!("a version above {after} to be published"),
        waited,
    }
}

/// `wait_readers_past`'s time-out (blocking and async forms alike).
pub(crate) fn readers_timeout(version: u64, oldest: u64, waited: Duration) -> Error {
    Error::Timeout {
        what: format!("readers to move past version {version} (the oldest pin is still {oldest})"),
        waited,
    }
}

#[inline]
fn heartbeat_claim(inner: &Inner, claim: &Claim) -> Result<()> {
    inner.check_fork()?;
    let plat = inner.mapping.platform();
    if writer::heartbeat(inner.mapping.page(), &plat, inner.index(), claim.word) {
        Ok(())
    } else {
        Err(deposed(claim))
    }
}

#[inline]
fn claim_is_current(inner: &Inner, claim: &Claim) -> bool {
    inner.same_process()
        && writer::is_current(inner.mapping.page(), &inner.mapping.platform(), claim.word)
}

/// Heartbeats for one claim of the writer role, from a keep-alive thread
/// ([`WriterGuard::heartbeat_handle`]). `Clone`, `Send`, `Sync`; it cannot release the
/// role or publish. Once the claim is released or deposed, `heartbeat` answers `Deposed`
/// and changes nothing.
#[derive(Clone)]
pub struct HeartbeatHandle {
    inner: Arc<Inner>,
    claim: Claim,
}

impl std::fmt::Debug for HeartbeatHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HeartbeatHandle")
            .field("generation", &self.claim.generation)
            .finish()
    }
}

impl HeartbeatHandle {
    /// Stamp the claim's heartbeat while it still holds (see [`WriterGuard::heartbeat`]).
    #[inline]
    pub fn heartbeat(&self) -> Result<()> {
        heartbeat_claim(&self.inner, &self.claim)
    }

    /// Whether the claim still owns the writer role (see [`WriterGuard::is_current`]).
    #[inline]
    pub fn is_current(&self) -> bool {
        claim_is_current(&self.inner, &self.claim)
    }

    /// The claim's generation, its fencing token (see [`WriterGuard::generation`]).
    pub fn generation(&self) -> u64 {
        self.claim.generation
    }
}

impl Drop for WriterGuard {
    fn drop(&mut self) {
        if !self.released {
            release_on_drop(&self.inner, &self.claim);
        }
    }
}

/// The writer role, held through a borrow of its [`ShmLock`]: what [`WriterGuard`] is,
/// without a reference count to bump and drop, for code that claims and releases in one
/// scope (a write transaction). `parking_lot` makes the same split between `lock()` and
/// `lock_arc()`. Dropping it releases the role (if it still holds it).
///
/// ```
/// # fn main() -> shmlock::Result<()> {
/// # let dir = tempfile::tempdir().unwrap();
/// let lock = shmlock::ShmLock::open(dir.path().join("app.db-shm"))?;
/// for version in 1..=3 {
///     let writer = lock.try_claim_writer_ref()?; // one write transaction
///     // ... write, stamped with writer.generation() ...
///     writer.publish(version)?;
/// } // released here, each time
/// assert_eq!(lock.published(), 3);
/// # Ok(()) }
/// ```
#[must_use = "dropping the guard releases the writer role"]
pub struct WriterRef<'a> {
    lock: &'a ShmLock,
    claim: Claim,
    released: bool,
}

impl std::fmt::Debug for WriterRef<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WriterRef")
            .field("generation", &self.claim.generation)
            .finish()
    }
}

impl WriterRef<'_> {
    /// This claim's generation (see [`WriterGuard::generation`]).
    pub fn generation(&self) -> u64 {
        self.claim.generation
    }

    /// Whom this claim displaced (see [`WriterGuard::takeover`]).
    pub fn takeover(&self) -> Option<Takeover> {
        self.claim.takeover
    }

    /// Stamp the heartbeat while the claim holds (see [`WriterGuard::heartbeat`]).
    #[inline]
    pub fn heartbeat(&self) -> Result<()> {
        heartbeat_claim(&self.lock.inner, &self.claim)
    }

    /// Whether this claim still owns the writer role.
    #[inline]
    pub fn is_current(&self) -> bool {
        claim_is_current(&self.lock.inner, &self.claim)
    }

    /// A keep-alive handle for this claim (see [`WriterGuard::heartbeat_handle`]).
    pub fn heartbeat_handle(&self) -> HeartbeatHandle {
        HeartbeatHandle {
            inner: Arc::clone(&self.lock.inner),
            claim: self.claim,
        }
    }

    /// Publish `version` (see [`WriterGuard::publish`]).
    #[inline]
    pub fn publish(&self, version: u64) -> Result<()> {
        publish_claim(&self.lock.inner, &self.claim, version)
    }

    /// Wait until no live reader pins a version below `version` (see
    /// [`WriterGuard::wait_readers_past`]).
    pub fn wait_readers_past(&self, version: u64, timeout: Duration) -> Result<()> {
        wait_readers_past(&self.lock.inner, version, timeout)
    }

    /// Everything below the returned version is free to reclaim (see
    /// [`WriterGuard::reclaimable_below`]).
    ///
    /// # Errors
    ///
    /// [`Error::Deposed`], [`Error::ForkedHandle`].
    pub fn reclaimable_below(&self) -> Result<u64> {
        reclaimable_below(&self.lock.inner, &self.claim)
    }

    /// Release the role (see [`WriterGuard::release`]).
    #[inline]
    pub fn release(mut self) -> Result<()> {
        self.released = true;
        release_claim(&self.lock.inner, &self.claim)
    }
}

impl Drop for WriterRef<'_> {
    #[inline]
    fn drop(&mut self) {
        if !self.released {
            release_on_drop(&self.lock.inner, &self.claim);
        }
    }
}

/// One attached reader ([`ShmLock::attach_reader`]), pinning the version that was published
/// when it attached: while it lives, [`ShmLock::oldest_pinned`] in every process stays at
/// or below [`version`](ReaderGuard::version), so no writer reclaims what it reads. It
/// counts in [`Snapshot::reader_count`]. Dropping it detaches and unpins; if its process
/// dies, it stops counting and pinning at once. `Send + Sync`: it may end on another
/// thread.
#[must_use = "dropping the guard detaches the reader"]
pub struct ReaderGuard {
    inner: Arc<Inner>,
    pin: Pin,
}

impl std::fmt::Debug for ReaderGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReaderGuard")
            .field("member", &self.inner.index())
            .field("version", &self.pin.version)
            .finish()
    }
}

impl ReaderGuard {
    /// The version this reader pins: the latest published when it attached. No writer
    /// told by `oldest_pinned` or `wait_readers_past` may reclaim it while the guard lives.
    #[inline]
    pub fn version(&self) -> u64 {
        self.pin.version
    }

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
        detach_pin(&self.inner, self.pin);
    }
}

/// Attach a reader of this process and pin the published version.
#[inline]
fn attach_pin(inner: &Inner) -> Result<Pin> {
    if !inner.same_process() {
        return Err(Error::ForkedHandle);
    }
    let plat = inner.mapping.platform();
    snapshots::attach(inner.mapping.page(), &plat, inner.index()).map_err(|e| match e {
        AttachError::TooManyReaders => Error::TooManyReaders {
            limit: MAX_READERS_PER_MEMBER,
        },
        AttachError::PublishedBelowPins { published, pinned } => Error::PublishedBelowPins {
            path: inner.mapping.path.clone(),
            published,
            pinned,
        },
    })
}

/// Detach the reader whose pin is `pin`.
#[inline]
fn detach_pin(inner: &Inner, pin: Pin) {
    // In a forked child the count belongs to the parent: leave it alone.
    if inner.same_process() {
        let plat = inner.mapping.platform();
        snapshots::detach(inner.mapping.page(), &plat, inner.index(), pin);
    }
}

/// One attached reader, pinning a version, that borrows its [`ShmLock`]: what
/// [`ReaderGuard`] is, without a reference count to bump and drop
/// ([`ShmLock::attach_reader_ref`]). Dropping it detaches and unpins.
#[must_use = "dropping the guard detaches the reader"]
pub struct ReaderRef<'a> {
    lock: &'a ShmLock,
    pin: Pin,
}

impl std::fmt::Debug for ReaderRef<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReaderRef")
            .field("version", &self.pin.version)
            .finish()
    }
}

impl ReaderRef<'_> {
    /// The version this reader pins (see [`ReaderGuard::version`]).
    #[inline]
    pub fn version(&self) -> u64 {
        self.pin.version
    }

    /// Detach (the same as dropping the guard, with the fork check reported).
    pub fn detach(self) -> Result<()> {
        let result = self.lock.inner.check_fork();
        drop(self);
        result
    }
}

impl Drop for ReaderRef<'_> {
    #[inline]
    fn drop(&mut self) {
        detach_pin(&self.lock.inner, self.pin);
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
        send_sync::<super::HeartbeatHandle>();
        send_sync::<super::WriterRef<'static>>();
        send_sync::<super::ReaderRef<'static>>();
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
