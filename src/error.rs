//! The error type: each variant says what happened and what to do.

use std::io;
use std::path::PathBuf;

/// `Result` with [`Error`].
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
    /// A wait ran out of time; nothing was changed.
    #[error("timed out after {waited:?} waiting for {what}; wait longer or retry")]
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
        /// What is wrong and what to do.
        reason: String,
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
        supported: u32,
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
    /// The path is not a regular file (a directory, FIFO, device, socket or symlink).
    #[error("{path}: is {found}, not a regular file; give the path of a lock file (or of a data file to ShmLock::provision)")]
    NotARegularFile {
        /// The path.
        path: PathBuf,
        /// What it is instead ("a directory", "a symbolic link", …).
        found: &'static str,
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

fn version_hint(found: u64, supported: u32) -> &'static str {
    if found > supported as u64 {
        "upgrade shmlock in every process that opens it"
    } else {
        "processes of an older shmlock still use it: stop them, and the next opener upgrades the file"
    }
}

fn io_hint(source: &io::Error) -> &'static str {
    match source.kind() {
        io::ErrorKind::NotFound => " (does the directory exist? is the path right?)",
        io::ErrorKind::PermissionDenied => {
            " (a file you cannot write can still be read with `shmlock inspect`)"
        }
        io::ErrorKind::ReadOnlyFilesystem => " (the lock file must be on a writable filesystem)",
        _ => "",
    }
}

impl Error {
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

    pub(crate) fn corrupt(path: impl Into<PathBuf>, reason: impl Into<String>) -> Error {
        Error::Corrupt {
            path: path.into(),
            reason: reason.into(),
        }
    }
}
