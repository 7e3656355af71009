//! The error type: each variant says what happened and what to do.

use std::io;
use std::path::PathBuf;

/// `std::result::Result` with this crate's [`Error`] as the default error type: what every
/// fallible call of the crate returns.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong. Each `Display` is a sentence a person can act on.
///
/// ```
/// use shmlock::{Error, ShmLock};
/// # fn main() -> shmlock::Result<()> {
/// # let dir = tempfile::tempdir().unwrap();
/// let lock = ShmLock::open(dir.path().join("app.db-shm"))?;
/// let _writer = lock.try_claim_writer()?;
/// match lock.try_claim_writer() {
///     Err(Error::AlreadyWriter) => {} // this process holds it already
///     Err(Error::WriterBusy { pid, generation }) => println!("pid {pid} writes ({generation})"),
///     Err(e) => return Err(e),
///     Ok(_) => unreachable!("one writer at a time"),
/// }
/// # Ok(()) }
/// ```
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Another live process owns the writer role.
    #[error("the writer role is held by process {pid} (generation {generation}); wait with claim_writer(timeout), or try again later")]
    WriterBusy {
        /// The owner's pid, as it recorded it (display only).
        pid: u32,
        /// The owner's generation.
        generation: u64,
    },
    /// This writer guard was deposed: another claim won after its lease expired or it was
    /// taken over. Stop writing; anything written under this generation must be fenced.
    #[error("this writer (generation {generation}) was deposed by a newer claim; stop writing and claim again")]
    Deposed {
        /// The deposed guard's generation.
        generation: u64,
    },
    /// This process already owns the writer role through another guard.
    #[error("this process already holds the writer role through another WriterGuard; use or drop that guard")]
    AlreadyWriter,
    /// `publish` was given a version at or below the one already published: versions only
    /// grow (they survive crashes, takeovers and reopens).
    #[error("cannot publish version {version}: version {published} is already published, and published versions only grow; publish a higher one")]
    VersionNotIncreasing {
        /// The version given.
        version: u64,
        /// The version already published.
        published: u64,
    },
    /// `publish` was given a version above the largest the page can hold.
    #[error("cannot publish version {version}: versions must be at most {max} (2^48 - 2)")]
    VersionTooLarge {
        /// The version given.
        version: u64,
        /// The largest version the page can hold.
        max: u64,
    },
    /// [`ShmLock::claim_writer`](crate::ShmLock::claim_writer) (or its `_ref` and async
    /// forms) waited its whole `timeout` and the owner below still held the role: alive,
    /// and heartbeating within the lease it declared (if any). Nothing was changed.
    /// [`kind()`](Error::kind) is [`ErrorKind::Timeout`], as for the other waits.
    #[error("timed out after {} waiting for the writer role: process {pid} (generation {generation}) still holds it, alive and within any lease it declared; the role frees when that process releases it or dies, or, if it declared a lease, when its heartbeats stop for longer than the lease", human_duration(*waited))]
    ClaimTimeout {
        /// The owner's pid, as it recorded it (display only).
        pid: u32,
        /// The owner's generation.
        generation: u64,
        /// How long the claim waited.
        waited: std::time::Duration,
    },
    /// A wait ran out of time; nothing was changed.
    #[error("timed out after {} waiting for {what}; wait longer or retry", human_duration(*waited))]
    Timeout {
        /// What was awaited ("a version above 7", "readers to move past version 3", …).
        what: String,
        /// How long it waited.
        waited: std::time::Duration,
    },
    /// `ShmLock::provision` found no lock file and provisioning is off, so it created none.
    #[error("{path}: no lock file, and provisioning is off so none was created; set SHMLOCK_PROVISION=1 or call shmlock::set_provisioning_enabled(true) to let provision() create it")]
    ProvisioningDisabled {
        /// The lock file that is missing.
        path: PathBuf,
    },
    /// [`ShmLock::provision`](crate::ShmLock::provision) was given a data file that does
    /// not exist. The lock file belongs to its data file, so nothing was created.
    /// [`kind()`](Error::kind) is [`ErrorKind::NotFound`].
    #[error("{path}: no such data file; create the data file first (the lock file app.db-shm belongs to its data file app.db), or check the path")]
    NoDataFile {
        /// The data file that is missing.
        path: PathBuf,
    },
    /// [`ShmLock::provision`](crate::ShmLock::provision) found no lock file beside a data
    /// file that this process may not write, so it did not create one (a process that may
    /// only read the data must not become the owner of its lock file). Nothing was created.
    /// [`kind()`](Error::kind) is [`ErrorKind::PermissionDenied`].
    #[error("{path}: no lock file yet, and this process may not write the data file {data}, so it does not create one; let a process that may write {data} provision it first (its mode then follows {data}'s), and give readers write permission on it")]
    ProvisionNotPermitted {
        /// The lock file that is missing.
        path: PathBuf,
        /// The data file this process may not write.
        data: PathBuf,
    },
    /// `ShmLock::provision` (or a tool) was given a lock file where a data file was
    /// expected; nothing was created or written.
    #[error("{path}: is a shmlock lock file, not a data file; pass the data file (app.db), whose lock file is app.db-shm, or open the lock file itself with ShmLock::open")]
    DataPathIsLockFile {
        /// The path given.
        path: PathBuf,
    },
    /// This process has attached as many readers as one member entry can count.
    #[error("this process already has {limit} readers attached; detach some first")]
    TooManyReaders {
        /// Most readers one process may have attached.
        limit: u64,
    },
    /// Every member entry is taken by a live process.
    #[error("all {capacity} member entries are taken by live processes; close some handles (or run `shmlock reap`) and retry")]
    TooManyProcesses {
        /// The member table's size.
        capacity: usize,
    },
    /// The file is not a usable shmlock page, and it was not rewritten.
    #[error("{path}: {reason}")]
    Corrupt {
        /// The lock file.
        path: PathBuf,
        /// What is wrong (its `Display` also says what to do).
        reason: CorruptReason,
    },
    /// The file uses a format version other than this library's, and it was not touched:
    /// a newer one (upgrade shmlock), or an older one still in use by processes of an
    /// older shmlock (the first opener after they stop upgrades it).
    #[error("{path}: format version {found}, but this library uses version {supported}; {}", version_hint(*found, *supported))]
    IncompatibleVersion {
        /// The lock file.
        path: PathBuf,
        /// The file's version.
        found: u64,
        /// The version this library supports.
        supported: u64,
    },
    /// The file lives on a network (or otherwise unsupported) filesystem, where kernel
    /// locks and shared mappings are not coherent across hosts.
    #[error("{path}: is on a {fs} filesystem, where shared memory and locks are not coherent between hosts; put it on a local filesystem or set Options::allow_network_filesystem(true) if only one host uses it")]
    UnsupportedFilesystem {
        /// The lock file.
        path: PathBuf,
        /// The filesystem's name.
        fs: &'static str,
    },
    /// This CPU cannot change 16 bytes with one lock-free instruction (x86_64 without
    /// `cmpxchg16b`: some first-generation x86_64 CPUs and emulators). Page format 3 keeps
    /// the owner word and the published version in one 16-byte word that every process
    /// changes with one compare-and-swap; an emulation with a lock in this process's memory
    /// would not exclude the other processes, so the file is not opened.
    #[error("{path}: this CPU has no lock-free 16-byte compare-and-swap ({instruction}), which the lock file's format needs so that every process changes the owner word and the published version together; run on a CPU that has it (or, in an emulator, enable it)")]
    UnsupportedCpu {
        /// The lock file.
        path: PathBuf,
        /// The instruction missing.
        instruction: &'static str,
    },
    /// The path is not a regular file (a directory, FIFO, device, socket or symlink).
    #[error("{path}: is {found}, not a regular file; give the path of a lock file (or of a data file to ShmLock::provision)")]
    NotARegularFile {
        /// The path.
        path: PathBuf,
        /// What it is instead ("a directory", "a symbolic link", …).
        found: &'static str,
    },
    /// The generation counter reached its top (2^56 − 1): no claim can get a fencing token above every earlier one. Only a damaged or hostile
    /// page, or 2^55 claims, get there (a [`generation_floor`](crate::Options::generation_floor)
    /// is refused when it would leave less headroom).
    #[error("{path}: the generation counter is exhausted at {generation}: no claim can get a fencing token above every earlier one; when nothing uses the file, delete it and open it again with Options::generation_floor set to your highest durable token")]
    GenerationExhausted {
        /// The lock file.
        path: PathBuf,
        /// The generation the page holds.
        generation: u64,
    },
    /// [`Options::generation_floor`](crate::Options::generation_floor) was given a floor above
    /// [`MAX_GENERATION_FLOOR`](crate::MAX_GENERATION_FLOOR), which would leave too few
    /// generations above it; nothing was opened or written.
    #[error("generation floor {floor} is above {max}, the highest this library accepts (a floor that high would leave too few fencing tokens above it, and the file could soon be claimed no more); pass your highest durable token, which should be far below")]
    GenerationFloorTooHigh {
        /// The floor given.
        floor: u64,
        /// The highest floor accepted.
        max: u64,
    },
    /// The published version fell below a version this process's readers pin: the file was
    /// truncated or overwritten while in use. Nothing was attached.
    #[error("{path}: the published version fell to {published}, below version {pinned} that this process's readers still pin: the file was truncated or overwritten while in use; stop its users (see `shmlock inspect`), then open it again (delete it if that open refuses it)")]
    PublishedBelowPins {
        /// The lock file.
        path: PathBuf,
        /// The published version found.
        published: u64,
        /// The oldest version this process's readers pin.
        pinned: u64,
    },
    /// The handle was opened before a `fork()` and used in the child; open the file again
    /// in the child.
    #[error("this handle was opened before fork(); a child process must open the lock file again")]
    ForkedHandle,
    /// An operating-system call failed.
    #[error("{path}: {op} failed: {source}{}", io_hint(source))]
    Io {
        /// The operation ("open", "lock", "map", …).
        op: &'static str,
        /// The file it was about.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
}

/// Why a file is not a usable lock file ([`Error::Corrupt`]).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CorruptReason {
    /// It does not start with the shmlock magic: someone else's file, left untouched.
    #[error("is a {len}-byte file that is not a shmlock lock file (no shmlock magic), so it was left untouched; if it is a database, open its lock file with ShmLock::provision(data) or shm_path_for(data)")]
    NotALockFile {
        /// The file's length in bytes.
        len: u64,
    },
    /// It is empty: shmlock creates its lock files whole (initialised, then linked into
    /// place), so an empty file is never one it is creating; it may be another program's,
    /// and it was left untouched.
    #[error("{}", if *in_use {
        "is empty, and live processes have it open: a lock file truncated under them; stop them (see `shmlock inspect`), then delete it (shmlock never writes an empty file it did not create)"
    } else {
        "is empty, and shmlock never writes an empty file it did not create (it may be another program's; shmlock creates its lock files whole): if it is a lock file that was truncated, delete it when nothing uses it and open it again"
    })]
    Empty {
        /// Live processes have it open (a lock file truncated under them).
        in_use: bool,
    },
    /// It was written by a machine of the other byte order.
    #[error("was written by a machine of the other byte order; lock files are for one host: delete it when nothing uses it")]
    OtherByteOrder,
    /// Our page, but damaged (torn, interrupted initialisation, bad checksum, wrong size).
    #[error("{what}{}", if *in_use { "; live processes have it open, so it was not rewritten: stop them (see `shmlock inspect`) and the next opener heals it" } else { "" })]
    Damaged {
        /// What is damaged.
        what: String,
        /// Live processes have it open (so nobody may rewrite it now).
        in_use: bool,
    },
    /// Not one page long (seen by a read-only look, which never heals).
    #[error("is {len} bytes, not 4096; the next opener that is alone heals it")]
    WrongSize {
        /// The file's length in bytes.
        len: u64,
    },
    /// The page's generation fell below where it started while processes used it: it was
    /// truncated or overwritten under them. The claim was given back.
    #[error("its generation fell to {generation} (below its start, {seed}): the file was truncated or overwritten while processes use it; stop them (see `shmlock inspect`) and the next opener heals it")]
    ResetUnderUse {
        /// The generation found.
        generation: u64,
        /// The generation the page started from.
        seed: u64,
    },
}

/// What kind of error an [`Error`] is, for programs that branch on it ([`Error::kind`]):
/// one value per variant (a claim's time-out is a [`Timeout`](ErrorKind::Timeout) like the
/// other waits', a missing data file [`NotFound`](ErrorKind::NotFound)), and the operating-system errors a caller handles differently
/// (a missing file, no permission, a read-only filesystem) told apart without looking at
/// strings.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// [`Error::WriterBusy`].
    WriterBusy,
    /// [`Error::Deposed`].
    Deposed,
    /// [`Error::AlreadyWriter`].
    AlreadyWriter,
    /// [`Error::TooManyReaders`].
    TooManyReaders,
    /// [`Error::TooManyProcesses`].
    TooManyProcesses,
    /// [`Error::Corrupt`].
    Corrupt,
    /// [`Error::IncompatibleVersion`].
    IncompatibleVersion,
    /// [`Error::UnsupportedFilesystem`].
    UnsupportedFilesystem,
    /// [`Error::UnsupportedCpu`].
    UnsupportedCpu,
    /// [`Error::NotARegularFile`].
    NotARegularFile,
    /// [`Error::ForkedHandle`].
    ForkedHandle,
    /// [`Error::GenerationExhausted`].
    GenerationExhausted,
    /// [`Error::GenerationFloorTooHigh`].
    GenerationFloorTooHigh,
    /// [`Error::PublishedBelowPins`].
    PublishedBelowPins,
    /// [`Error::VersionNotIncreasing`].
    VersionNotIncreasing,
    /// [`Error::VersionTooLarge`].
    VersionTooLarge,
    /// [`Error::Timeout`], and [`Error::ClaimTimeout`] (a claim that waited its whole
    /// timeout: it also names the owner).
    Timeout,
    /// [`Error::ProvisioningDisabled`].
    ProvisioningDisabled,
    /// [`Error::DataPathIsLockFile`].
    DataPathIsLockFile,
    /// An [`Error::Io`] because the file or a directory on its path does not exist, or
    /// [`Error::NoDataFile`].
    NotFound,
    /// An [`Error::Io`] because the process may not open or lock the file, or
    /// [`Error::ProvisionNotPermitted`].
    PermissionDenied,
    /// An [`Error::Io`] because the file is on a read-only filesystem.
    ReadOnlyFilesystem,
    /// Any other [`Error::Io`].
    Io,
    /// The coordination service did not answer in time (a backend over the network, such
    /// as `shmlock-etcd`: no quorum, no reachable endpoint). The local backend never
    /// returns it. Whether the operation took effect is unknown: check and retry.
    Unavailable,
}

/// A duration as a person reads it: "250 µs", "1.5 ms", "40 ms", "2.3 s", "5 min 3 s".
pub(crate) fn human_duration(d: std::time::Duration) -> String {
    let ns = d.as_nanos();
    let tenths = |unit: u128| {
        let t = ns * 10 / unit;
        if t % 10 == 0 || t >= 1000 {
            format!("{}", t / 10)
        } else {
            format!("{}.{}", t / 10, t % 10)
        }
    };
    match ns {
        0..1_000 => format!("{ns} ns"),
        1_000..1_000_000 => format!("{} µs", tenths(1_000)),
        1_000_000..1_000_000_000 => format!("{} ms", tenths(1_000_000)),
        _ if d.as_secs() < 60 => format!("{} s", tenths(1_000_000_000)),
        _ if d.as_secs() < 3600 => format!("{} min {} s", d.as_secs() / 60, d.as_secs() % 60),
        _ => format!("{} h {} min", d.as_secs() / 3600, d.as_secs() / 60 % 60),
    }
}

fn version_hint(found: u64, supported: u64) -> &'static str {
    if found > supported {
        "upgrade shmlock in every process that opens it"
    } else {
        "processes of an older shmlock still use it: stop them, and the next opener upgrades the file"
    }
}

fn io_hint(source: &io::Error) -> &'static str {
    match source.kind() {
        io::ErrorKind::NotFound => " (does the directory exist? is the path right?)",
        io::ErrorKind::PermissionDenied => {
            " (every process that opens a lock file, readers included, needs read and write permission on it, and creating it needs write permission on its directory; an existing lock file you may only read can still be looked at with shmlock::inspect)"
        }
        io::ErrorKind::ReadOnlyFilesystem => " (the lock file must be on a writable filesystem)",
        _ => "",
    }
}

impl Error {
    /// What kind of error this is.
    ///
    /// ```
    /// use shmlock::{ErrorKind, ShmLock};
    /// let missing = ShmLock::open("/nonexistent-directory/app.db-shm").unwrap_err();
    /// assert_eq!(missing.kind(), ErrorKind::NotFound);
    /// ```
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::WriterBusy { .. } => ErrorKind::WriterBusy,
            Error::Deposed { .. } => ErrorKind::Deposed,
            Error::AlreadyWriter => ErrorKind::AlreadyWriter,
            Error::TooManyReaders { .. } => ErrorKind::TooManyReaders,
            Error::TooManyProcesses { .. } => ErrorKind::TooManyProcesses,
            Error::Corrupt { .. } => ErrorKind::Corrupt,
            Error::IncompatibleVersion { .. } => ErrorKind::IncompatibleVersion,
            Error::UnsupportedFilesystem { .. } => ErrorKind::UnsupportedFilesystem,
            Error::UnsupportedCpu { .. } => ErrorKind::UnsupportedCpu,
            Error::NotARegularFile { .. } => ErrorKind::NotARegularFile,
            Error::ForkedHandle => ErrorKind::ForkedHandle,
            Error::GenerationExhausted { .. } => ErrorKind::GenerationExhausted,
            Error::GenerationFloorTooHigh { .. } => ErrorKind::GenerationFloorTooHigh,
            Error::PublishedBelowPins { .. } => ErrorKind::PublishedBelowPins,
            Error::VersionNotIncreasing { .. } => ErrorKind::VersionNotIncreasing,
            Error::VersionTooLarge { .. } => ErrorKind::VersionTooLarge,
            Error::Timeout { .. } | Error::ClaimTimeout { .. } => ErrorKind::Timeout,
            Error::NoDataFile { .. } => ErrorKind::NotFound,
            Error::ProvisionNotPermitted { .. } => ErrorKind::PermissionDenied,
            Error::ProvisioningDisabled { .. } => ErrorKind::ProvisioningDisabled,
            Error::DataPathIsLockFile { .. } => ErrorKind::DataPathIsLockFile,
            Error::Io { source, .. } => match source.kind() {
                io::ErrorKind::NotFound => ErrorKind::NotFound,
                io::ErrorKind::PermissionDenied => ErrorKind::PermissionDenied,
                io::ErrorKind::ReadOnlyFilesystem => ErrorKind::ReadOnlyFilesystem,
                _ => ErrorKind::Io,
            },
        }
    }

    pub(crate) fn io(
        op: &'static str,
        path: impl Into<PathBuf>,
        source: impl Into<io::Error>,
    ) -> Error {
        Error::Io {
            op,
            path: path.into(),
            source: source.into(),
        }
    }

    pub(crate) fn corrupt(path: impl Into<PathBuf>, reason: CorruptReason) -> Error {
        Error::Corrupt {
            path: path.into(),
            reason,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::human_duration;
    use std::time::Duration;

    #[test]
    fn durations_read_as_a_person_writes_them() {
        for (d, text) in [
            (Duration::from_nanos(640), "640 ns"),
            (Duration::from_micros(250), "250 µs"),
            (Duration::from_micros(1_500), "1.5 ms"),
            (Duration::from_millis(40), "40 ms"),
            (Duration::from_millis(2_300), "2.3 s"),
            (Duration::from_secs(303), "5 min 3 s"),
            (Duration::from_secs(7_500), "2 h 5 min"),
        ] {
            assert_eq!(human_duration(d), text);
        }
    }
}
