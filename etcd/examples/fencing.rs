//! Fencing, for engine authors: locks never protect data by themselves.
//!
//! A writer can be deposed without knowing it yet — paused by the scheduler or a GC,
//! partitioned from etcd — and still hold a generation it believes current. So every
//! write to storage shared by the hosts carries the writer's generation, and the storage
//! (or whoever reads it) rejects a write or a segment whose generation is below the
//! highest one it has seen. Here the "shared storage" is a directory: a `FencedStore`
//! whose conditional write (under an exclusive `flock`, standing in for the storage's own
//! compare-and-set: an S3 conditional put, a database's `WHERE generation <= ?`, a
//! fencing-aware filesystem) refuses stale generations, and whose readers and compactor
//! skip segments that a higher generation superseded.
//!
//! ```text
//! etcd/demo/cluster.sh &
//! cargo run -p shmlock-etcd --example fencing [-- endpoints]
//! ```

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::time::Duration;

use shmlock_etcd::{EtcdLock, Options};

const DEFAULT_ENDPOINTS: &str =
    "http://127.0.0.1:2379,http://127.0.0.1:22379,http://127.0.0.1:32379";

/// Storage shared by the hosts: segments `<version>.seg` whose first line is the
/// generation that wrote them, and a `fence` file holding the highest generation seen.
struct FencedStore {
    dir: PathBuf,
}

#[derive(Debug)]
enum StoreError {
    /// The write's generation is below the fence: its writer was deposed.
    Stale {
        generation: u64,
        fence: u64,
    },
    Io(std::io::Error),
}

impl std::fmt::Display for StoreError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StoreError::Stale { generation, fence } => {
                write!(
                    f,
                    "stale write: generation {generation} is below the fence {fence}"
                )
            }
            StoreError::Io(e) => write!(f, "storage: {e}"),
        }
    }
}

impl From<std::io::Error> for StoreError {
    fn from(e: std::io::Error) -> Self {
        StoreError::Io(e)
    }
}

impl FencedStore {
    fn open(dir: &Path) -> std::io::Result<FencedStore> {
        std::fs::create_dir_all(dir)?;
        Ok(FencedStore {
            dir: dir.to_owned(),
        })
    }

    /// The storage's conditional write: accepted only if `generation` is at least the
    /// highest generation seen, which it then becomes. Atomic under an exclusive lock.
    fn write(&self, generation: u64, version: u64, data: &[u8]) -> Result<(), StoreError> {
        let mut fence = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(self.dir.join("fence"))?;
        // SAFETY: flock(2) on a descriptor we own; released when `fence` closes.
        if unsafe { libc::flock(fence.as_raw_fd(), libc::LOCK_EX) } != 0 {
            return Err(std::io::Error::last_os_error().into());
        }
        let mut text = String::new();
        fence.read_to_string(&mut text)?;
        let highest: u64 = text.trim().parse().unwrap_or(0);
        if generation < highest {
            return Err(StoreError::Stale {
                generation,
                fence: highest,
            });
        }
        let tmp = self.dir.join(format!("{version}.seg.tmp"));
        let mut segment = File::create(&tmp)?;
        writeln!(segment, "{generation}")?;
        segment.write_all(data)?;
        segment.sync_all()?;
        std::fs::rename(&tmp, self.dir.join(format!("{version}.seg")))?;
        fence.set_len(0)?;
        std::os::unix::fs::FileExt::write_all_at(&fence, generation.to_string().as_bytes(), 0)?;
        Ok(())
    }

    /// What a reader (or the compactor) accepts: a segment whose generation is not below
    /// that of any later segment. (A stale one the storage could not refuse — written
    /// before the fence moved — is superseded by the new writer's first write.)
    fn read(&self, version: u64) -> std::io::Result<Option<(u64, String)>> {
        let text = match std::fs::read_to_string(self.dir.join(format!("{version}.seg"))) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        let (generation, data) = text.split_once('\n').unwrap_or((&text, ""));
        Ok(Some((generation.parse().unwrap_or(0), data.to_owned())))
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let endpoints = std::env::args()
        .nth(1)
        .unwrap_or_else(|| DEFAULT_ENDPOINTS.to_owned());
    let endpoints: Vec<&str> = endpoints.split(',').collect();
    let options = Options::new().lease(Duration::from_secs(2));
    let dir = std::env::temp_dir().join(format!("shmlock-fencing-{}", std::process::id()));
    let store = FencedStore::open(&dir)?;

    // Host A claims and writes version 1 under its generation.
    let host_a = EtcdLock::connect(&endpoints, "fencing.db", &options).await?;
    let a = host_a.claim_writer(Duration::from_secs(10)).await?;
    let stale_token = a.generation();
    store
        .write(stale_token, 1, b"written by A")
        .map_err(|e| e.to_string())?;
    a.publish(1).await?;
    println!("A (generation {stale_token}) wrote and published version 1");

    // A stalls (a GC pause, a partition): here it releases, and keeps its token, which is
    // what a stalled writer that missed its deposition holds.
    a.release().await?;
    let host_b = EtcdLock::connect(&endpoints, "fencing.db", &options).await?;
    let b = host_b.claim_writer(Duration::from_secs(10)).await?;
    store
        .write(b.generation(), 2, b"written by B")
        .map_err(|e| e.to_string())?;
    b.publish(2).await?;
    println!(
        "B (generation {}) took over, wrote and published version 2",
        b.generation()
    );

    // A wakes up and writes with its old token: the storage refuses it.
    match store.write(stale_token, 3, b"late write by A") {
        Err(StoreError::Stale { generation, fence }) => {
            println!("A's late write (generation {generation}) refused: the fence is at {fence}")
        }
        Err(e) => return Err(e.to_string().into()),
        Ok(()) => return Err("the stale write was not refused".into()),
    }

    // Readers accept what the published version names, with its generation.
    let published = host_b.published().await?;
    let (generation, data) = store.read(published)?.ok_or("missing segment")?;
    println!("a reader reads version {published}: {data:?} (generation {generation})");
    assert!(generation >= b.generation());
    b.release().await?;
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}
