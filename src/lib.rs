//! # shmlock
//!
//! A cross-process lock manager for embedded database engines: **one writer process** owns a
//! data file, **many reader processes** read it, and when the owner crashes (or stalls past
//! the lease it declared) the next claimant **takes over** with a higher *generation*, a
//! fencing token that marks the deposed writer's writes as stale. Readers **pin** the
//! version they read, so the writer knows what it may reclaim, and both sides can **sleep**
//! until the other moves: a publish wakes readers, a detach (or a reader's death) wakes the
//! writer.
//!
//! All coordination state lives in a one-page file beside the data file (`app.db-shm`, 4096
//! bytes) mapped `MAP_SHARED` into every process. Its fields are atomics accessed in place:
//! attach, detach, publish, heartbeat, claim and release are lock-free, with no system call
//! on the hot path. Liveness comes from kernel byte locks (OFD locks; `LockFileEx` on Windows)
//! — one byte per process — never from pids, so pid reuse, zombies and pid namespaces cannot fool it, and whatever a crashed
//! process held (the writer role, readers, pins) is released by its death alone.
//!
//! # Adding it
//!
//! ```toml
//! [dependencies]
//! shmlock = "0.1"
//! # or, with the async waits for Tokio programs:
//! # shmlock = { version = "0.1", features = ["tokio"] }
//! ```
//!
//! (`cargo add shmlock` does the same.) The command-line tool is a separate package, so the
//! library pulls in none of its dependencies.
//!
//! # Platforms
//!
//! Linux (OFD locks, futexes, `CLOCK_BOOTTIME`), Windows 10+ (`LockFileEx` byte locks; waits
//! on named events; `GetTickCount64`) and macOS (OFD locks;
//! `os_sync_wait_on_address` on 14.4+, polling before; `CLOCK_MONOTONIC_RAW`), with the same
//! protocol and guarantees: everything kernel-specific is behind one seam. Linux runs every
//! test; Windows runs the unit and multi-process tests under wine in CI; macOS is
//! compile-checked only. Other systems (FreeBSD among them) fail to compile: they lack a
//! byte lock that belongs to an open file description and dies with its process. The
//! README's "Platforms" table says what each one guarantees and how it is tested.
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
//! std::fs::write(&data, b"")?; // the engine's data file exists first
//! shmlock::set_provisioning_enabled(true); // or SHMLOCK_PROVISION=1: may create app.db-shm
//! // Every process, writer or reader: open the lock file beside the data file, once.
//! let lock = ShmLock::provision_with(&data, &Options::new().lease(Duration::from_secs(5)))?;
//!
//! // The writer: one process at a time. A dead owner is taken over at once, and one whose
//! // heartbeats stopped for longer than the lease it declared (here 5 s) too.
//! let writer = lock.claim_writer(Duration::from_secs(1))?;
//! let token = writer.generation(); // stamp every write with it: the fencing token
//! // ... append a transaction to app.db, stamped with `token` ...
//! writer.publish(1)?; // readers that attach from now on read version 1
//!
//! // A reader, in this or any other process: pin the latest version while reading it.
//! let reader = lock.attach_reader()?;
//! assert_eq!(reader.version(), 1);
//! writer.publish(2)?;
//!
//! // What may the writer reuse? Everything below the oldest pin, over all processes.
//! assert_eq!(lock.oldest_pinned(), Some(1));
//! assert_eq!(writer.reclaimable_below()?, 1); // version 1 is still read
//! drop(reader); // (or the reader's process dies: the same, with nobody cleaning up)
//! writer.wait_readers_past(2, Duration::from_secs(1))?; // sleeps until no pin is below 2
//! assert_eq!(writer.reclaimable_below()?, 2);
//!
//! // Readers sleep until a newer version is published (by any process).
//! assert_eq!(lock.wait_published(1, Duration::from_secs(1))?, 2);
//!
//! // The next claim gets a higher generation: writes stamped with `token` are fenced.
//! drop(writer); // releases the role (a crash would too) and wakes waiting claimants
//! let next = lock.try_claim_writer()?;
//! assert!(next.generation() > token);
//! # Ok(()) }
//! ```
//!
//! The repository's `examples/` run this in separate processes: `writer` and `reader` (run
//! several, kill them), `keepalive` (a heartbeat thread), `versioned_store` (a store that
//! reclaims behind its readers), `fenced_log` (below) and `async_reader` (feature `tokio`).
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
//! Each process opens a file once: every [`ShmLock`] of the same file in a process shares
//! one mapping and one member entry (120 entries: at most 120 processes at once).
//!
//! # Fencing: what the lock cannot do for you
//!
//! A lock never protects data by itself. A writer that was paused (by a debugger, a VM
//! migration, swap) past its lease resumes *deposed*: its next `heartbeat`, `publish` and
//! `is_current` say so, but a write it issues before asking lands in the data file anyway.
//! The engine's own writes must carry the [generation](WriterGuard::generation), and
//! whoever reads the data must reject the stale ones. `examples/fenced_log.rs` is a
//! complete pattern to copy, shown working under SIGKILL and SIGSTOP in
//! `tests/fenced_log.rs`: an append-only log whose records carry the generation, whose
//! successor cuts the deposed writer's unpublished tail, and whose readers reject records
//! of an older generation than one already seen. Give [`Options::generation_floor`] the
//! highest generation your data holds, so tokens never repeat even if the lock file is lost.
//!
//! # Reclaiming behind readers
//!
//! A reader pins [`published()`](ShmLock::published) as it attaches. So after a publish of
//! `v`, everything below `min(v, oldest pin)` is free for good — no live reader pins it and
//! no later reader can. [`WriterGuard::reclaimable_below`] returns exactly that bound (and
//! [`Error::Deposed`] to a deposed writer, which must reclaim nothing);
//! [`WriterGuard::wait_readers_past`] sleeps until it reaches a version.
//! [`ShmLock::oldest_pinned`] returning `None` means no pin *now*, not "everything is free":
//! see its documentation.
//!
//! # Errors
//!
//! Every fallible call returns [`Error`], whose `Display` is a sentence that names the file
//! and says what to do, and whose [`kind()`](Error::kind) is an [`ErrorKind`] to branch on
//! (`Timeout`, `WriterBusy`, `Deposed`, `NotFound`, `PermissionDenied`, …). Each method's
//! `# Errors` section lists what it can return; a wait that runs out of time is always
//! `ErrorKind::Timeout` (a claim's [`Error::ClaimTimeout`] also names the owner that still
//! holds the role).
//!
//! # Permissions
//!
//! Every process that uses a lock file, readers included, opens it for reading and writing.
//! [`ShmLock::provision_with`] creates it with the data file's mode, and only in a process
//! that may write the data file; a process that may only read the data can use the lock file
//! once it exists, if its mode lets that process write it. See
//! [`provision_with`](ShmLock::provision_with).
//!
//! # Platforms
//!
//! Linux only today (≥ 3.15, for open-file-description locks; also `CLOCK_BOOTTIME` and
//! shared futexes); on any other target the crate fails to compile with a sentence saying
//! so. Lock files must be on a local filesystem, used by processes of one host.
//!
//! # Features
//!
//! - `tokio` (off): async forms of the waits — `claim_writer_async`,
//!   `wait_published_async`, `WriterGuard::wait_readers_past_async` — that never block a
//!   runtime thread.
//! - `loom` and `internals` (off): open the (doc-hidden, unstable) page, platform and
//!   protocol modules to the repository's loom models and page-level tests. Not for
//!   applications.
//!
//! # Logging
//!
//! Events an operator wants in the engine's logs go through the
//! [`log`](https://docs.rs/log) facade (targets under `shmlock::`): takeovers and heals of a
//! damaged page at `warn`, recoveries after a crash and reaps of dead members at `info`.
//! Nothing is logged on the hot path. `log` rather than `tracing`: these are a handful of
//! rare, self-contained events that need no spans, `log` is the smaller dependency every
//! engine already has, and `tracing` subscribers receive `log` records through
//! `tracing-log`.
//!
//! # Command-line tool
//!
//! The `shmlock` binary (the `shmlock-cli` package in the repository's `cli/`; this crate
//! has no command-line dependencies) shows and fixes the state of a lock file:
//! `shmlock inspect app.db` (or `--json`), `shmlock watch app.db`, `shmlock reap app.db`,
//! and `shmlock demo`, which shows everything above with real processes and crashes.
//!
//! # Further reading
//!
//! Shipped with the crate: the
//! [README](https://docs.rs/crate/shmlock/latest/source/README.md) (guarantees and limits,
//! the command-line tool),
//! [FORMAT.md](https://docs.rs/crate/shmlock/latest/source/FORMAT.md) (every byte of the
//! page), [RELIABILITY.md](https://docs.rs/crate/shmlock/latest/source/RELIABILITY.md) (the
//! crash and fault tests) and
//! [BENCHMARKS.md](https://docs.rs/crate/shmlock/latest/source/BENCHMARKS.md).

#![deny(missing_docs)]
#![deny(unsafe_op_in_unsafe_fn)]

#[cfg(feature = "tokio")]
mod async_wait;
pub mod backend;
mod error;
mod handle;
mod snapshot;
mod sys;

// The page layout, the platform seam and the protocol are the library's insides, not its
// API. The additive `internals` feature (which `loom` implies) opens them, hidden from the
// docs, for the models in loom-tests/ and for the tests that build pages byte by byte;
// nothing else may rely on them.
#[cfg(feature = "internals")]
#[doc(hidden)]
pub mod page;
#[cfg(not(feature = "internals"))]
mod page;
#[cfg(feature = "internals")]
#[doc(hidden)]
pub mod platform;
#[cfg(not(feature = "internals"))]
mod platform;
#[cfg(feature = "internals")]
#[doc(hidden)]
pub mod protocol;
#[cfg(not(feature = "internals"))]
mod protocol;

pub use error::{CorruptReason, Error, ErrorKind, Result};
pub use handle::MAX_GENERATION_FLOOR;
pub use handle::{
    inspect, is_lock_file, provisioning_enabled, resolve_lock_path, set_provisioning_enabled,
    shm_path_for, HeartbeatHandle, OpenState, Options, ReaderGuard, ReaderRef, ShmLock,
    WriterGuard, WriterRef,
};
pub use page::{FORMAT_VERSION, MAX_VERSION, MEMBER_CAPACITY, PAGE_SIZE};
pub use protocol::writer::Takeover;
pub use snapshot::{MemberInfo, OwnerInfo, PageOrigin, ReapReport, ReapedMember, Snapshot};
