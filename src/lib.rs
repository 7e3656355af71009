//! # shmlock
//!
//! A cross-process lock manager for embedded database engines: one writer process owns a
//! file, many reader processes attach to it, and when the owner crashes the next claimant
//! takes over with a higher **generation** that fences the deposed one.
//!
//! All coordination state lives in a one-page file (`<data>-shm`, 4096 bytes) mapped
//! `MAP_SHARED` into every process. Its fields are atomics accessed in place: attach,
//! detach, heartbeat, claim and release are lock-free, with no system call on the hot path.
//! Liveness comes from kernel OFD locks — one byte per process — never from pids, so pid
//! reuse, zombies and pid namespaces cannot fool it.
//!
//! # Quick start
//!
//! ```
//! use std::time::Duration;
//! use shmlock::{Options, ShmLock};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # let dir = tempfile::tempdir()?;
//! # let data = dir.path().join("app.db");
//! # std::fs::write(&data, b"")?;
//! // The lock file beside the data file: app.db-shm.
//! let shm = shmlock::shm_path_for(&data);
//! let lock = ShmLock::open_with(&shm, &Options::new().lease(Duration::from_secs(5)))?;
//!
//! // A writer: claim (waiting up to a second), stamp every write with the generation.
//! let writer = lock.claim_writer(Duration::from_secs(1))?;
//! let fencing_token = writer.generation();
//! writer.heartbeat()?; // Err(Deposed) once another claim has won
//! assert!(writer.is_current());
//! drop(writer); // releases the role and wakes waiting claimants
//!
//! // A reader: attach while reading, detach on drop.
//! let reader = lock.attach_reader()?;
//! assert_eq!(lock.snapshot().reader_count, 1);
//! drop(reader);
//!
//! // The next claim gets a higher generation: writes stamped with the old one are fenced.
//! let next = lock.try_claim_writer()?;
//! assert!(next.generation() > fencing_token);
//! # Ok(()) }
//! ```
//!
//! # Roles
//!
//! - **Writer**: [`ShmLock::try_claim_writer`] / [`ShmLock::claim_writer`] return a
//!   [`WriterGuard`] (or, borrowing the handle, [`ShmLock::try_claim_writer_ref`] a
//!   [`WriterRef`]). Its [`generation`](WriterGuard::generation) is a fencing token that
//!   strictly increases with every claim (above [`Options::generation_floor`] if given). A
//!   claim takes over a dead owner at once, and a live one whose heartbeat is older than
//!   the lease *it* declared ([`Options::lease`]); the deposed guard then gets
//!   [`Error::Deposed`]. The writer [publishes](WriterGuard::publish) versions and may
//!   [wait until readers move past](WriterGuard::wait_readers_past) one before reusing
//!   what only older versions need.
//! - **Reader**: [`ShmLock::attach_reader`] returns a [`ReaderGuard`] that pins the
//!   published version ([`ReaderGuard::version`]) until it drops; [`ShmLock::oldest_pinned`]
//!   is the oldest pin over all live processes, and [`ShmLock::wait_published`] sleeps until
//!   a newer version appears. A crashed reader stops counting, and stops pinning, at once.
//! - **Anyone**: [`ShmLock::snapshot`], [`ShmLock::reap`], and the read-only [`inspect`].
//!
//! # Features
//!
//! - `tokio` (off): async forms of the waits — `claim_writer_async`,
//!   `wait_published_async`, `WriterGuard::wait_readers_past_async`.
//! - `loom` (off): swaps the protocol's atomics for loom's, for the models in
//!   `loom-tests/`; it also opens the (doc-hidden, unstable) page and protocol modules to
//!   them. Not for applications.
//!
//! Each process opens a file once; every [`ShmLock`] of the same file in a process shares
//! one mapping and one member entry.
//!
//! # Logging
//!
//! Events an operator wants in the engine's logs go through the [`log`] facade (targets
//! under `shmlock::`): takeovers and heals of a damaged page at `warn`, recoveries after a
//! crash and reaps of dead members at `info`. Nothing is logged on the hot path. `log` rather
//! than `tracing`: these are a handful of rare, self-contained events that need no spans,
//! `log` is the smaller dependency every engine already has, and `tracing` subscribers
//! receive `log` records through `tracing-log`.
//!
//! # Command-line tool
//!
//! The `shmlock` binary (the `shmlock-cli` package in the repository's `cli/`; this crate
//! has no command-line dependencies) shows and fixes the state of a lock
//! file: `shmlock inspect app.db` (or `--json`), `shmlock watch app.db`, `shmlock reap
//! app.db`, and `shmlock demo`. See the README's "Command-line tool" section.
//!
//! See `README.md` for the guarantees and limits, and `FORMAT.md` for every byte of the page.

#![deny(missing_docs)]
#![deny(unsafe_op_in_unsafe_fn)]

#[cfg(not(target_os = "linux"))]
compile_error!("shmlock needs Linux (OFD locks, CLOCK_BOOTTIME, futexes)");

#[cfg(feature = "tokio")]
mod async_wait;
mod error;
mod handle;
mod snapshot;
mod sys;

// The page layout, the platform seam and the protocol are the library's insides, not its
// API. The additive `loom` feature opens them (hidden from the docs) for the models in
// loom-tests/ and for tests that build pages byte by byte; nothing else may rely on them.
#[cfg(feature = "loom")]
#[doc(hidden)]
pub mod page;
#[cfg(not(feature = "loom"))]
mod page;
#[cfg(feature = "loom")]
#[doc(hidden)]
pub mod platform;
#[cfg(not(feature = "loom"))]
mod platform;
#[cfg(feature = "loom")]
#[doc(hidden)]
pub mod protocol;
#[cfg(not(feature = "loom"))]
mod protocol;

pub use error::{CorruptReason, Error, ErrorKind, Result};
pub use handle::{
    inspect, is_lock_file, provisioning_enabled, set_provisioning_enabled, shm_path_for,
    HeartbeatHandle, OpenState, Options, ReaderGuard, ReaderRef, ShmLock, WriterGuard, WriterRef,
};
pub use page::{FORMAT_VERSION, MAX_VERSION, MEMBER_CAPACITY, PAGE_SIZE};
pub use protocol::writer::Takeover;
pub use snapshot::{MemberInfo, OwnerInfo, PageOrigin, ReapReport, ReapedMember, Snapshot};
