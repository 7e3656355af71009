//! # shmlock-etcd
//!
//! shmlock's contract — one writer with a strictly increasing fencing generation, takeover
//! of a dead or silent owner, published versions that only grow and survive takeovers,
//! reader pins with the oldest pin known, and waits on both sides — across hosts, on an
//! etcd v3 cluster. Built on plain KV transactions, leases and watches (not etcd's
//! Lock/Election APIs).
//!
//! ```no_run
//! use std::time::Duration;
//! use shmlock_etcd::{EtcdLock, Options};
//!
//! # async fn run() -> shmlock_etcd::Result<()> {
//! let endpoints = ["http://127.0.0.1:2379", "http://127.0.0.1:22379", "http://127.0.0.1:32379"];
//! let options = Options::new().lease(Duration::from_secs(5));
//! let lock = EtcdLock::connect(&endpoints, "app.db", &options).await?;
//!
//! let writer = lock.claim_writer(Duration::from_secs(10)).await?;
//! let token = writer.generation(); // stamp every durable write with it
//! writer.publish(1).await?;        // Err(Deposed) once another claim has won
//! writer.release().await?;
//!
//! let reader = lock.attach_reader().await?; // pins the published version
//! assert!(reader.version() >= 1);
//! reader.detach().await?;
//! # let _ = token; Ok(()) }
//! ```
//!
//! # The keys
//!
//! Under `shmlock/<name>/` (`/` and `%` in the name are escaped):
//!
//! | key | value | lease |
//! |---|---|---|
//! | `owner` | who holds the role (for people) | the owner handle's |
//! | `published` | the version, 20 decimal digits (bytes compare as numbers) | none |
//! | `pins/<version>/<lease>-<n>` | empty | the reader handle's |
//!
//! A claim is a transaction "`owner` absent → put it bound to my lease", and its revision
//! is the generation. A publish is "`owner`'s `create_revision` = my generation and
//! `published` < v → put", so the fence holds inside etcd. An attach is "`published`
//! unchanged since I read it → put my pin", so a writer that publishes and then reads the
//! oldest pin cannot miss it. Waits watch the keys from the revision of their last read.
//!
//! # How it differs from the local backend ([`shmlock::ShmLock`])
//!
//! - **Liveness is a lease TTL** ([`Options::lease`]), not the kernel: a dead, paused or
//!   partitioned owner is noticed when its lease expires — TTL plus up to 0.5 s (etcd's
//!   expiry check) — not at once. The minimum TTL is 2 s ([`MIN_LEASE`]); TTLs count
//!   whole seconds. A live owner whose keep-alives cannot reach a majority for a TTL
//!   loses the role.
//! - **Readers hold leases too**: a reader paused (or cut off) for longer than the TTL
//!   loses its pin, and the writer may reuse what it read. Check
//!   [`EtcdReader::is_pinned`] after a read and discard the read if it is `false`.
//! - **`Drop` is best effort**: it cannot wait on the network. It spawns the release
//!   (or detach) on the current tokio runtime if there is one; otherwise the role and pins
//!   free themselves at the lease's expiry. Call [`EtcdWriter::release`] and
//!   [`EtcdReader::detach`].
//! - **`is_current` is a linearizable read** (a round trip through the leader), and so
//!   returns `Result<bool>`; the fence that matters is inside `publish`'s transaction.
//! - **Generations have gaps**: a generation is the etcd revision of the claim, strictly
//!   increasing but not by one. A cluster restored from a snapshot can repeat revisions
//!   unless it is restored with `etcdutl snapshot restore --bump-revision` (etcd 3.5.10+).
//! - **`Unavailable`** ([`shmlock::ErrorKind::Unavailable`]): the cluster did not answer
//!   within [`Options::retry_for`]. A publish under quorum loss fails (or waits) and never
//!   succeeds; whether an `Unavailable` operation landed is unknown: it may sit in a
//!   surviving member's log and be committed when the majority returns (the quorum test
//!   saw this). Its fence is evaluated when it is applied, so a publish never lands after
//!   a later claim won.
//! - **`published`, `oldest_pinned` are reads over the network** (`Result`), and the
//!   whole API is async (tokio).
//! - Versions may use all of `u64` (the local page holds up to 2^48 − 2).
//! - One writer per handle ([`Error::AlreadyWriter`]), like one per process locally.
//!
//! # Robustness
//!
//! Every request has a timeout ([`Options::request_timeout`]) and is retried on the next
//! endpoint until [`Options::retry_for`] runs out; retries are idempotent (a retried claim
//! that finds the owner key bound to its own lease has won; a retried publish that finds
//! its version published while still the owner is done). The lease is kept alive every
//! TTL/3 by a task of its own. Requests require a leader (a member cut off from the
//! majority answers at once instead of hanging). HTTP/2 keep-alive pings every 10 s:
//! etcd refuses clients that ping more often than every 5 s.
//!
//! # Locks never protect data by themselves
//!
//! A deposed writer may not know it yet (a pause, a partition). On shared storage every
//! write must carry the generation, and the storage or its readers must reject writes
//! whose generation is below the highest seen: see `examples/fencing.rs`.
//!
//! # One interface for both backends
//!
//! [`EtcdLock`] implements [`shmlock::backend::Backend`], like [`shmlock::ShmLock`]: an
//! engine written against the trait runs on either.

#![deny(missing_docs)]

mod backend;
mod conn;
mod error;
mod lock;
mod options;

pub use error::{Error, Result};
pub use lock::{EtcdLock, EtcdReader, EtcdWriter};
pub use options::{Options, MIN_LEASE};
