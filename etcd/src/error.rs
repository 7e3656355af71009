//! The error type, with [`Error::kind`] mapping onto [`shmlock::ErrorKind`].

use std::time::Duration;

/// `Result` with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong. Each `Display` is a sentence a person can act on.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Another live process (whose lease is alive) owns the writer role.
    #[error("the writer role is held by {holder} (generation {generation}); wait with claim_writer(timeout), or try again later")]
    WriterBusy {
        /// The owner's generation.
        generation: u64,
        /// Who the owner said it was (host, pid, lease), for people only.
        holder: String,
    },
    /// [`claim_writer`](crate::EtcdLock::claim_writer) waited its whole `timeout` and the
    /// owner below still held the role with a live lease. Nothing was changed.
    /// [`kind()`](Error::kind) is [`Timeout`](shmlock::ErrorKind::Timeout), as for the
    /// local backend's `ClaimTimeout`.
    #[error("timed out after {waited:?} waiting for the writer role: {holder} (generation {generation}) still holds it with a live lease; the role frees when it releases or its lease expires (at most one TTL after it stops keeping it alive)")]
    ClaimTimeout {
        /// The owner's generation.
        generation: u64,
        /// Who the owner said it was (host, pid, lease), for people only.
        holder: String,
        /// How long the claim waited.
        waited: Duration,
    },
    /// This writer was deposed: its lease expired (it was silent for longer than its TTL)
    /// or it released, and another claim may have won. Stop writing; anything written under
    /// this generation must be fenced.
    #[error("this writer (generation {generation}) no longer owns the role (its lease expired or another claim won); stop writing and claim again")]
    Deposed {
        /// The deposed writer's generation.
        generation: u64,
    },
    /// This handle (this [`EtcdLock`](crate::EtcdLock) and its clones) already holds the
    /// writer role through another [`EtcdWriter`](crate::EtcdWriter).
    #[error("this handle already holds the writer role through another EtcdWriter; use or release that one")]
    AlreadyWriter,
    /// `publish` was given a version at or below the one already published.
    #[error("cannot publish version {version}: version {published} is already published, and published versions only grow; publish a higher one")]
    VersionNotIncreasing {
        /// The version given.
        version: u64,
        /// The version already published.
        published: u64,
    },
    /// A wait ran out of time; nothing was changed.
    #[error("timed out after {waited:?} waiting for {what}; wait longer or retry")]
    Timeout {
        /// What was awaited.
        what: String,
        /// How long it waited.
        waited: Duration,
    },
    /// The cluster did not answer in time (no quorum, no reachable endpoint, or an endpoint
    /// that is not a valid URL). Whether the operation took effect is unknown: a writer
    /// should check [`is_current`](crate::EtcdWriter::is_current) or claim again.
    #[error("etcd did not answer {op} in time ({reason}); check that a majority of the cluster's members is up and reachable, then retry")]
    Unavailable {
        /// The operation ("claim", "publish", …).
        op: &'static str,
        /// The last error seen.
        reason: String,
    },
    /// A key of this lock holds a value this crate did not write.
    #[error("etcd key {key} holds {value:?}, which shmlock-etcd did not write; delete the lock's keys when nothing uses it")]
    Corrupt {
        /// The key.
        key: String,
        /// Its value, lossily decoded.
        value: String,
    },
}

impl Error {
    /// The kind of this error, shared with the local backend: `WriterBusy`, `Deposed`,
    /// `AlreadyWriter`, `VersionNotIncreasing`, `Timeout` (also a timed-out claim), `Unavailable`, `Corrupt`.
    pub fn kind(&self) -> shmlock::ErrorKind {
        use shmlock::ErrorKind;
        match self {
            Error::WriterBusy { .. } => ErrorKind::WriterBusy,
            Error::Deposed { .. } => ErrorKind::Deposed,
            Error::AlreadyWriter => ErrorKind::AlreadyWriter,
            Error::VersionNotIncreasing { .. } => ErrorKind::VersionNotIncreasing,
            Error::Timeout { .. } | Error::ClaimTimeout { .. } => ErrorKind::Timeout,
            Error::Unavailable { .. } => ErrorKind::Unavailable,
            Error::Corrupt { .. } => ErrorKind::Corrupt,
        }
    }
}

impl shmlock::backend::BackendError for Error {
    fn kind(&self) -> shmlock::ErrorKind {
        Error::kind(self)
    }
}
