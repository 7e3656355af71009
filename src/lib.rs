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
//! ```no_run
//! use std::time::Duration;
//! use shmlock::{ShmLock, Options};
//!
//! # fn main() -> shmlock::Result<()> {
//! let lock = ShmLock::open_with("/tmp/app.db-shm", &Options::new().lease(Duration::from_secs(5)))?;
//! // A writer: claim (waiting up to a second), stamp writes with the generation.
//! let writer = lock.claim_writer(Duration::from_secs(1))?;
//! let fencing_token = writer.generation();
//! writer.heartbeat()?; // Err(Deposed) once another claim has won
//! # let _ = fencing_token;
//! drop(writer); // releases
//!
//! // A reader: attach while reading, detach on drop.
//! let reader = lock.attach_reader()?;
//! println!("{} readers attached", lock.snapshot().reader_count);
//! drop(reader);
//! # Ok(()) }
//! ```
//!
//! See `README.md` for the guarantees and limits, and `FORMAT.md` for every byte of the page.

#![deny(missing_docs)]
#![deny(unsafe_op_in_unsafe_fn)]

#[cfg(not(target_os = "linux"))]
compile_error!("shmlock needs Linux (OFD locks, CLOCK_BOOTTIME, futexes)");

mod error;
mod handle;
pub mod page;
pub mod platform;
pub mod protocol;
mod snapshot;
mod sys;

pub use error::{Error, Result};
pub use handle::{
    inspect, provisioning_enabled, set_provisioning_enabled, shm_path_for, OpenState, Options,
    ReaderGuard, ShmLock, WriterGuard,
};
pub use protocol::writer::Takeover;
pub use snapshot::{MemberInfo, OwnerInfo, PageOrigin, ReapReport, ReapedMember, Snapshot};
