//! The seam: everything that differs per kernel is reached from here, and only from here;
//! `page`, `protocol/`, `platform` and the handle layer name no kernel.
//!
//! This module is portable: the open sequence, the process-wide registry, [`Mapping`],
//! [`OsPlatform`] and `inspect`. It calls `os::` for every kernel-specific operation; the
//! kernel file is chosen by `cfg` at the `mod` lines below and nowhere else. Each kernel file
//! provides the same operations, with the same names and signatures:
//!
//! | operation | what it is |
//! |---|---|
//! | `LockKind`, `try_lock`, `lock_blocking`, `unlock` | member and dead-man-switch byte locks, released by the kernel when their holder dies |
//! | `convert` | turn this handle's lock into the other kind (the dead-man switch's downgrade and upgrade) |
//! | `locked_by_other`, `probe_handle` | the probe: does another holder hold the byte exclusively (without keeping a lock), and the handle a mapping probes through |
//! | `watcher_handle` | a fresh handle of the lock file, for a death watcher's blocking lock |
//! | `Waits`, `wait_on_word`, `wake_all` | sleep on a shared page word until it changes / wake every sleeper, across processes (`Waits`: a mapping's per-file wait state, empty where the kernel waits on an address) |
//! | `boottime_ns`, `clock_is_host` | the host clock in ns (monotonic, counts suspend) and whether leases may be judged on it |
//! | `process_start_secs` | this process's start time (display only) |
//! | `network_filesystem_at`, `network_filesystem_of` | the local-filesystem check, before a create and on an open file |
//! | `OpenHow`, `open_lock_file`, `open_error`, `special_kind`, `set_mode`, `data_file_mode`, `may_write` | the safe open (no symlinks, no FIFOs, no hang) and its errors |
//! | `file_key`, `path_key`, `read_at` | the file's identity on the host; a positioned read |
//! | `boot_id_hash` (`None`: unknown, which counts as a new boot), `link_no_replace`, `link_count` | the boot identity; the creation's link into place; a data file's hard links |
//!
//! and `fork` the fork hook (`sys/fork.rs` on Unix; nothing on Windows, which has no fork):
//! `TrackedFile`, `TrackedMap`, `fork_epoch`, `install_fork_hooks`. The wall clock
//! ([`unix_ns`]) and the pid ([`pid`]) come from `std` everywhere.

#[cfg(unix)]
mod fork;
#[cfg(target_os = "linux")]
pub(crate) mod linux;
#[cfg(target_os = "macos")]
pub(crate) mod macos;
#[cfg(any(target_os = "macos", windows))]
mod poll;
#[cfg(unix)]
pub(crate) mod unix;
#[cfg(windows)]
pub(crate) mod windows;

#[cfg(target_os = "linux")]
pub(crate) use linux as os;
#[cfg(target_os = "macos")]
pub(crate) use macos as os;
#[cfg(windows)]
pub(crate) use windows as os;
#[cfg(windows)]
use windows::fork;

#[cfg(unix)]
pub(crate) use fork::{fork_epoch, install_fork_hooks};
use fork::{TrackedFile, TrackedMap};
#[cfg(windows)]
pub(crate) use windows::fork::{fork_epoch, install_fork_hooks};

#[cfg(not(any(target_os = "linux", target_os = "macos", windows)))]
compile_error!(
    "shmlock runs on Linux, macOS and Windows only: its liveness rests on byte-range locks \
     that belong to an open file description (or handle) and die with their process, which \
     FreeBSD and the other BSDs lack (flock is whole-file, POSIX F_SETLK locks drop when any \
     descriptor of the file closes); a port needs such a lock (or another liveness signal \
     the kernel releases at death) behind the seam in src/sys/"
);

use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant, SystemTime};

use crossbeam_utils::Backoff;

use crate::error::{CorruptReason, Error, Result};
use crate::page::{
    classify_prefix, owner_generation, owner_word, Format2Facts, Invalid, Page,
    DEAD_MAN_SWITCH_BYTE, FORMAT_VERSION, MAX_GENERATION, MEMBER_CAPACITY, MEMBER_LOCK_BASE,
    ORIGIN_CREATED, ORIGIN_HEALED, PAGE_SIZE,
};
use crate::platform::{AtomicPair, Platform, WaitKind, WordPair};
use crate::protocol::{self, Local, Recovery};
use crate::snapshot::Snapshot;
use os::{LockKind, OpenHow};

/// How long an opener waits for another opener that is initialising or healing the page
/// (it holds the dead-man switch exclusively) before giving up with an error. A dead
/// initialiser's lock is dropped by the kernel at once; only a live, stuck one is waited for.
const INITIALISER_PATIENCE: Duration = Duration::from_secs(10);

/// One process's mapping of one lock file, with its open file description (which holds
/// this process's dead-man-switch and member locks).
pub(crate) struct Mapping {
    pub(crate) path: PathBuf,
    /// Declared before `file`: unmapped before the descriptor closes.
    map: TrackedMap,
    pub(crate) file: TrackedFile,
    /// The handle member probes go through (`os::probe_handle`); `None`: `file`.
    probe: Option<TrackedFile>,
    /// What the kernel file needs to sleep on and wake this page's words.
    waits: os::Waits,
    /// Member locks this process holds (its own entry, or one it is reaping right now):
    /// OFD locks never conflict within one open file description, so threads of this
    /// process exclude each other here.
    held: [AtomicBool; MEMBER_CAPACITY],
    /// Per member, the identity word a death watcher of this process was last started
    /// for: at most one watcher per member incarnation, however often waiters ask.
    watched: parking_lot::Mutex<[u64; MEMBER_CAPACITY]>,
    /// Per member, the identity word of the incarnation a death watcher of this process is
    /// blocked on right now (0: none): that incarnation is alive until the watcher clears
    /// it, so a reader of pins need not ask the kernel (see `Platform::member_alive`).
    standing: [AtomicU64; MEMBER_CAPACITY],
    /// This process's reader pins and heartbeat stamps for this page.
    local: Local<AtomicU64>,
    /// Threads of this process asleep in the page, per [`WaitKind`].
    local_waiters: parking_lot::Mutex<[u32; 3]>,
}

/// Pin slots per process and file: distinct versions its readers can pin at once before
/// new pins share an older version's slot.
const LOCAL_PIN_SLOTS: usize = 64;

impl Mapping {
    /// The page, in place.
    #[inline]
    pub(crate) fn page(&self) -> &Page<AtomicU64> {
        // SAFETY: `map` is a live MAP_SHARED, read-write mapping of exactly PAGE_SIZE bytes
        // (the file was checked to be PAGE_SIZE long before mapping), page-aligned, and it
        // lives as long as `self`. `Page<AtomicU64>` is `repr(C)`, PAGE_SIZE bytes, 64-byte
        // aligned (checked at compile time), made only of `AtomicU64`, for which every bit
        // pattern is valid. Every access, here and in every other process running this
        // library, is atomic, so sharing the memory is not a data race. No `&mut` to it is
        // ever created.
        unsafe { &*(self.map.as_ptr() as *const Page<AtomicU64>) }
    }

    /// The platform over this mapping.
    #[inline]
    pub(crate) fn platform(self: &Arc<Self>) -> OsPlatform<'_> {
        OsPlatform { mapping: self }
    }

    /// Drop this process's locks on its member entry and the dead-man switch.
    pub(crate) fn unlock_dead_man_switch(&self) {
        let _ = os::unlock(&self.file, DEAD_MAN_SWITCH_BYTE);
    }
}

/// The production platform: the mapped page, the kernel's OFD lock table, the boot clock
/// and futexes.
pub(crate) struct OsPlatform<'a> {
    mapping: &'a Arc<Mapping>,
}

impl Platform for OsPlatform<'_> {
    type Word = AtomicU64;

    fn try_lock_member(&self, index: usize) -> bool {
        let m = self.mapping;
        if m.held[index].swap(true, Ordering::Acquire) {
            return false;
        }
        match os::try_lock(
            &m.file,
            LockKind::Exclusive,
            MEMBER_LOCK_BASE + index as u64,
        ) {
            Ok(true) => true,
            result => {
                if let Err(e) = result {
                    log::warn!("{}: cannot lock member {index}: {e}", m.path.display());
                }
                m.held[index].store(false, Ordering::Release);
                false
            }
        }
    }

    fn unlock_member(&self, index: usize) {
        let m = self.mapping;
        if let Err(e) = os::unlock(&m.file, MEMBER_LOCK_BASE + index as u64) {
            log::warn!("{}: cannot unlock member {index}: {e}", m.path.display());
        }
        m.held[index].store(false, Ordering::Release);
    }

    fn member_locked(&self, index: usize) -> bool {
        let m = self.mapping;
        // On an unexpected error, say "alive": never reap on a guess.
        m.held[index].load(Ordering::Acquire)
            || os::locked_by_other(
                m.probe.as_deref().unwrap_or(&m.file),
                MEMBER_LOCK_BASE + index as u64,
            )
            .unwrap_or(true)
    }

    /// A death watcher standing on this incarnation says alive without a system call (the
    /// kernel probe, `F_OFD_GETLK`, walks the inode's lock list: 1.6 µs when the holder's
    /// lock is last of 120). Otherwise ask the kernel, and start a watcher on a live
    /// member so that the next look is free.
    #[inline]
    fn member_alive(&self, index: usize, identity: u64) -> bool {
        let m = self.mapping;
        if identity != 0 && m.standing[index].load(Ordering::Acquire) == identity {
            return true;
        }
        let alive = self.member_locked(index);
        if alive && !m.held[index].load(Ordering::Relaxed) {
            self.watch_member(index, identity);
        }
        alive
    }

    #[inline]
    fn now(&self) -> u64 {
        os::boottime_ns()
    }

    fn wait(&self, word: &AtomicU64, expected: u64, timeout: Duration) {
        os::wait_on_word(&self.mapping.waits, word, expected, timeout)
    }

    fn wake_all(&self, word: &AtomicU64) -> usize {
        os::wake_all(&self.mapping.waits, word)
    }

    /// A death watcher: a thread that blocks on a shared lock of the member's byte through
    /// its own open file description. The kernel grants it when the member's process dies
    /// (or closes the file); the thread unlocks it at once (explicitly: a forked child may
    /// share the description), and wakes every sleeper. At most one per member
    /// incarnation per process, however many waiters ask and however often; it ends when
    /// that incarnation does.
    fn watch_member(&self, index: usize, identity: u64) {
        let m = self.mapping;
        {
            let mut watched = m.watched.lock();
            if identity == 0 || watched[index] == identity {
                return;
            }
            watched[index] = identity;
        }
        log::debug!(
            target: "shmlock::watch",
            "{}: started a death watcher on member {index} (identity {identity:#x})",
            m.path.display()
        );
        let reopened = TrackedFile::open(|| os::watcher_handle(&m.file, &m.path));
        let mapping = Arc::clone(m);
        // Standing from now on: until the thread below has the lock, the member is alive
        // (or has only just died, which only makes a pin reader more careful).
        m.standing[index].store(identity, Ordering::Release);
        let spawned = reopened.and_then(|watch_file| {
            std::thread::Builder::new()
                .name("shmlock-watch".into())
                .stack_size(64 * 1024)
                .spawn(move || {
                    let byte = MEMBER_LOCK_BASE + index as u64;
                    let result = os::lock_blocking(&watch_file, LockKind::Shared, byte);
                    // Dead (or failed to watch): stop vouching for it, before anyone is
                    // woken to look again.
                    let _ = mapping.standing[index].compare_exchange(
                        identity,
                        0,
                        Ordering::AcqRel,
                        Ordering::Relaxed,
                    );
                    if result.is_ok() {
                        let _ = os::unlock(&watch_file, byte);
                    }
                    drop(watch_file);
                    if result.is_ok() {
                        protocol::wake_after_death(mapping.page(), &mapping.platform());
                    }
                })
        });
        if spawned.is_err() {
            // Waiters fall back to polling every wait slice; a later wait may try again.
            let _ = m.standing[index].compare_exchange(
                identity,
                0,
                Ordering::AcqRel,
                Ordering::Relaxed,
            );
            m.watched.lock()[index] = 0;
        }
    }

    #[inline]
    fn local(&self) -> &Local<AtomicU64> {
        &self.mapping.local
    }

    fn with_local_waiters(&self, kind: WaitKind, f: &mut dyn FnMut(&mut u32)) {
        f(&mut self.mapping.local_waiters.lock()[kind.index()]);
    }
}

/// Options of the open sequence (the public `Options` minus the claim lease).
pub(crate) struct OpenParams {
    pub(crate) mode: u32,
    pub(crate) create: bool,
    pub(crate) allow_network_filesystem: bool,
}

/// How the open sequence left the page.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Settled {
    /// Alone, on an empty file: initialised.
    Created,
    /// Alone, on a valid page; what dead processes had left, now cleared.
    Recovered(Recovery),
    /// Alone, on a page of the previous format: upgraded in place, then recovered.
    Upgraded(Recovery),
    /// Alone, on a damaged page of ours: rewritten (the reason).
    Healed(String),
    /// Not alone: validated only.
    Joined,
}

/// A mapped, validated page with this process's dead-man-switch lock (shared) held.
pub(crate) struct Opened {
    pub(crate) mapping: Arc<Mapping>,
    pub(crate) settled: Settled,
    pub(crate) key: (u64, u64),
}

fn io_err(op: &'static str, path: &Path, e: impl Into<io::Error>) -> Error {
    Error::io(op, path, e)
}

/// Refuse a network filesystem: its locks and mappings are not coherent between hosts.
fn refuse_network(path: &Path, found: Option<&'static str>) -> Result<()> {
    match found {
        Some(fs) => Err(Error::UnsupportedFilesystem {
            path: path.to_path_buf(),
            fs,
        }),
        None => Ok(()),
    }
}

fn not_regular(path: &Path, found: &'static str) -> Error {
    Error::NotARegularFile {
        path: path.to_path_buf(),
        found,
    }
}

/// Check what `open` found is a regular file.
fn check_regular(path: &Path, file: &File) -> Result<std::fs::Metadata> {
    let meta = file.metadata().map_err(|e| io_err("fstat", path, e))?;
    let ft = meta.file_type();
    if ft.is_file() {
        return Ok(meta);
    }
    Err(not_regular(path, os::special_kind(&ft)))
}

/// How many times an open looks for the file again after losing a creation race (a file
/// another process creates and deletes over and over could otherwise keep it looping).
const CREATE_ATTEMPTS: usize = 100;

/// Open the existing lock file read-write, never following a symlink, and so that a FIFO
/// or device at the path cannot hang us (`os::open_lock_file`). `Ok(Err(e))`: it does not
/// exist.
fn open_existing(
    path: &Path,
    params: &OpenParams,
) -> Result<std::result::Result<(TrackedFile, std::fs::Metadata), io::Error>> {
    let opened = TrackedFile::open(|| os::open_lock_file(path, OpenHow::ReadWrite));
    let file = match opened {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Err(e)),
        Err(e) => return Err(os::open_error(path, e)),
    };
    if !params.allow_network_filesystem {
        refuse_network(path, os::network_filesystem_of(&file, path))?;
    }
    let meta = check_regular(path, &file)?;
    Ok(Ok((file, meta)))
}

/// Create the lock file, initialised, without ever exposing an empty or half-written file
/// at `path`: the page is initialised in a new file beside it (`.NAME.PID.N.shmlock-new`)
/// and hard-linked into place, which fails if anything exists at `path` by then. So an
/// empty file at `path` is never one a shmlock opener is creating, and is never written
/// (it is someone else's). `Ok(None)`: another process created `path` first (join it).
fn create(path: &Path, params: &OpenParams) -> Result<Option<Opened>> {
    static NEXT: std::sync::atomic::AtomicU64 = AtomicU64::new(0);
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    // Refuse a network filesystem before leaving a new file on it.
    if !params.allow_network_filesystem {
        refuse_network(path, os::network_filesystem_at(dir))?;
    }
    let name = path
        .file_name()
        .ok_or_else(|| not_regular(path, "a directory"))?;
    let mut temp_name = std::ffi::OsString::from(".");
    temp_name.push(name);
    temp_name.push(format!(
        ".{}.{}.shmlock-new",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    let temp = dir.join(temp_name);
    let create_temp =
        || TrackedFile::open(|| os::open_lock_file(&temp, OpenHow::CreateNew(params.mode)));
    let file = match create_temp() {
        // Our pid is in the name, and the number is new in this process: a file of that
        // name was left by a dead process that had our pid (it crashed before linking).
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            let _ = std::fs::remove_file(&temp);
            create_temp()
        }
        created => created,
    }
    .map_err(|e| os::open_error(path, e))?;
    let remove_temp = || {
        let _ = std::fs::remove_file(&temp);
    };
    let initialised = (|| {
        // Exactly the mode asked for, whatever the umask (a provisioned file gets its data
        // file's mode, so whoever may open the data may open its lock file).
        os::set_mode(&file, params.mode).map_err(|e| io_err("chmod", path, e))?;
        let meta = check_regular(path, &file)?;
        if !os::try_lock(&file, LockKind::Exclusive, DEAD_MAN_SWITCH_BYTE)
            .map_err(|e| io_err("lock", path, e))?
        {
            return Err(io_err(
                "lock a new file",
                path,
                io::Error::from(io::ErrorKind::WouldBlock),
            ));
        }
        let key = os::file_key(&file, &meta).map_err(|e| io_err("fstat", path, e))?;
        let (mapping, settled) = settle_alone(path, file, 0, true, key)?;
        Ok((mapping, settled, key))
    })();
    let (mapping, settled, key) = match initialised {
        Ok(done) => done,
        Err(e) => {
            remove_temp();
            return Err(e);
        }
    };
    let linked = os::link_no_replace(&temp, path);
    remove_temp();
    match linked {
        Ok(()) => Ok(Some(Opened {
            mapping,
            settled,
            key,
        })),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(None),
        Err(e) => Err(io_err("link the new lock file into place", path, e)),
    }
}

/// Take the dead-man switch: exclusively if nobody else has the file open (`true`: alone),
/// else shared (`false`). Waits, bounded, while another opener initialises.
fn take_dead_man_switch(path: &Path, file: &File) -> Result<bool> {
    let lock = |kind| os::try_lock(file, kind, DEAD_MAN_SWITCH_BYTE);
    let start = Instant::now();
    let backoff = Backoff::new();
    loop {
        if lock(LockKind::Exclusive).map_err(|e| io_err("lock", path, e))? {
            return Ok(true);
        }
        if lock(LockKind::Shared).map_err(|e| io_err("lock", path, e))? {
            return Ok(false);
        }
        if start.elapsed() > INITIALISER_PATIENCE {
            return Err(io_err(
                "wait for the process initialising it",
                path,
                io::Error::new(
                    io::ErrorKind::TimedOut,
                    "another process has held the dead-man switch exclusively for over 10 s (is it stopped?)",
                ),
            ));
        }
        if backoff.is_completed() {
            std::thread::sleep(Duration::from_micros(200));
        } else {
            backoff.snooze();
        }
    }
}

/// A page of zeros: an initialiser sized the file and died before its first store. It
/// holds nothing to lose, so it counts as empty.
fn untouched_page(len: u64, prefix: &[u8]) -> bool {
    len == PAGE_SIZE as u64 && prefix.iter().all(|&b| b == 0)
}

/// Read up to one page from the start of the file.
fn read_prefix(path: &Path, file: &File, len: u64) -> Result<Vec<u8>> {
    let mut buf = vec![0u8; len.min(PAGE_SIZE as u64) as usize];
    os::read_at(file, &mut buf, 0).map_err(|e| io_err("read", path, e))?;
    Ok(buf)
}

fn map(path: &Path, file: TrackedFile, key: (u64, u64)) -> Result<Arc<Mapping>> {
    let map = TrackedMap::map(&file, PAGE_SIZE).map_err(|e| io_err("mmap", path, e))?;
    let probe = os::probe_handle(&file, path)
        .map_err(|e| io_err("reopen", path, e))?
        .map(|probe| TrackedFile::open(|| Ok(probe)))
        .transpose()
        .map_err(|e| io_err("reopen", path, e))?;
    let waits = os::Waits::new(key, map.as_ptr() as usize);
    Ok(Arc::new(Mapping {
        path: path.to_path_buf(),
        map,
        file,
        probe,
        waits,
        held: std::array::from_fn(|_| AtomicBool::new(false)),
        watched: parking_lot::Mutex::new([0; MEMBER_CAPACITY]),
        standing: std::array::from_fn(|_| AtomicU64::new(0)),
        local: Local::new(LOCAL_PIN_SLOTS),
        local_waiters: parking_lot::Mutex::new([0; 3]),
    }))
}

fn not_ours(path: &Path, len: u64) -> Error {
    Error::corrupt(path, CorruptReason::NotALockFile { len })
}

fn incompatible(path: &Path, found: u64) -> Error {
    Error::IncompatibleVersion {
        path: path.to_path_buf(),
        found,
        supported: FORMAT_VERSION as u64,
    }
}

fn invalid_to_error(path: &Path, len: u64, why: Invalid, live: bool) -> Error {
    match why {
        Invalid::NewerVersion(v) => incompatible(path, v),
        Invalid::OlderVersion(v) => Error::IncompatibleVersion {
            path: path.to_path_buf(),
            found: v,
            supported: FORMAT_VERSION as u64,
        },
        Invalid::NotOurs => not_ours(path, len),
        Invalid::OtherByteOrder => Error::corrupt(path, CorruptReason::OtherByteOrder),
        other => Error::corrupt(
            path,
            CorruptReason::Damaged {
                what: other.describe(),
                in_use: live,
            },
        ),
    }
}

/// What an opener that is alone will do, decided from the file's bytes before mapping.
enum AlonePlan {
    Initialise,
    Heal(String),
    Recover,
}

/// `new_file`: the file is the one `create` just made (the only empty file that is ours).
fn plan_alone(path: &Path, file: &File, len: u64, new_file: bool) -> Result<AlonePlan> {
    if len == 0 {
        if new_file {
            return Ok(AlonePlan::Initialise);
        }
        // Never one a shmlock opener is creating (see `create`): someone else's.
        return Err(Error::corrupt(path, CorruptReason::Empty { in_use: false }));
    }
    let prefix = read_prefix(path, file, len)?;
    // A page of zeros at the path is never one a shmlock opener is creating (see
    // `create`): someone else's, refused below (no magic).
    match classify_prefix(&prefix) {
        Ok(()) if len == PAGE_SIZE as u64 => Ok(AlonePlan::Recover),
        Ok(()) => Ok(AlonePlan::Heal(format!(
            "the file was {len} bytes, not {PAGE_SIZE}"
        ))),
        Err(Invalid::Initialising) => Ok(AlonePlan::Heal(
            "an initialisation was interrupted".to_string(),
        )),
        Err(Invalid::OlderVersion(_)) if len == PAGE_SIZE as u64 => Ok(AlonePlan::Recover),
        Err(why) => Err(invalid_to_error(path, len, why, false)),
    }
}

/// A format-2 page this opener (alone) can upgrade in place: its facts.
fn upgradable(path: &Path, file: &File, version: u64) -> Result<Option<Format2Facts>> {
    if version != 2 {
        return Ok(None);
    }
    Ok(Format2Facts::read(&read_prefix(
        path,
        file,
        PAGE_SIZE as u64,
    )?))
}

/// Alone: make the page valid (initialise, heal or recover), then downgrade the dead-man
/// switch to shared.
fn settle_alone(
    path: &Path,
    file: TrackedFile,
    len: u64,
    new_file: bool,
    key: (u64, u64),
) -> Result<(Arc<Mapping>, Settled)> {
    let plan = plan_alone(path, &file, len, new_file)?;
    if len != PAGE_SIZE as u64 {
        file.set_len(PAGE_SIZE as u64)
            .map_err(|e| io_err("resize", path, e))?;
    }
    let mapping = map(path, file, key)?;
    let plat = mapping.platform();
    let page = mapping.page();
    let clock_seed = unix_ns() / 1000;
    // An unknown boot (a hidden /proc) counts as a new boot, now and for the next opener.
    let boot = os::boot_id_hash().unwrap_or_else(fresh_boot_identity);
    // A heal restarts the generation from the clock, and above whatever the damaged
    // page's owner word still holds if that is plausible (a burst of claims can outrun
    // the clock); an implausible one (past half the range) is ignored as damage.
    let heal_seed = || {
        // Format 3 keeps the owner word in line 2; formats 1 and 2 kept it at byte 64.
        let format3 = owner_generation(protocol::writer::load_owner(page));
        let format2 = owner_generation(page.writer.reserved_head.load(Ordering::Acquire));
        [format3, format2]
            .into_iter()
            .filter(|&old| old < MAX_GENERATION / 2)
            .fold(clock_seed, |seed, old| seed.max(old + 1))
    };
    let settled = match plan {
        AlonePlan::Initialise => {
            page.initialise(&plat, unix_ns(), clock_seed, ORIGIN_CREATED, boot);
            Settled::Created
        }
        AlonePlan::Heal(reason) => {
            page.initialise(&plat, unix_ns(), heal_seed(), ORIGIN_HEALED, boot);
            Settled::Healed(reason)
        }
        AlonePlan::Recover => match page.validate() {
            Ok(()) => Settled::Recovered(protocol::recover_alone(page, &plat, boot, clock_seed)),
            Err(Invalid::Damaged(what)) => {
                page.initialise(&plat, unix_ns(), heal_seed(), ORIGIN_HEALED, boot);
                Settled::Healed(format!("line 0 was damaged: {what}"))
            }
            Err(Invalid::OlderVersion(v)) => match upgradable(path, &mapping.file, v)? {
                Some(old) => {
                    // In place: line 0's facts, the generation, the published version and the
                    // boot record carry over; members and waiter bits were all dead (alone).
                    page.initialise(
                        &plat,
                        old.created_at,
                        old.generation_seed,
                        old.origin,
                        old.boot,
                    );
                    page.pair().store(
                        owner_word(old.generation.min(MAX_GENERATION), None),
                        old.published,
                        Ordering::SeqCst,
                    );
                    log::info!(
                        "{}: upgraded the lock file from format version 2 to {FORMAT_VERSION} in place (generation {} and published version {} carried over)",
                        path.display(),
                        old.generation,
                        old.published
                    );
                    Settled::Upgraded(protocol::recover_alone(page, &plat, boot, clock_seed))
                }
                None => {
                    page.initialise(&plat, unix_ns(), heal_seed(), ORIGIN_HEALED, boot);
                    Settled::Healed(format!(
                        "upgraded from format version {v} to {FORMAT_VERSION} (the generation carries on above the old one; the published version restarts at 0)"
                    ))
                }
            },
            Err(why) => return Err(invalid_to_error(path, len, why, false)),
        },
    };
    // Converting our own exclusive lock to shared cannot conflict; should the kernel say
    // otherwise, fail the open rather than run without the switch.
    if !os::convert(&mapping.file, LockKind::Shared, DEAD_MAN_SWITCH_BYTE)
        .map_err(|e| io_err("lock", path, e))?
    {
        return Err(io_err(
            "downgrade the dead-man switch",
            path,
            io::Error::from(io::ErrorKind::WouldBlock),
        ));
    }
    Ok((mapping, settled))
}

/// The 16-byte compare-and-swap the page's owner word and `published` need, as its
/// instruction is called on this architecture (for the error when it is missing).
const PAIR_INSTRUCTION: &str = if cfg!(target_arch = "x86_64") {
    "cmpxchg16b"
} else if cfg!(target_arch = "aarch64") {
    "casp or ldxp/stxp"
} else {
    "a 16-byte compare-and-swap"
};

/// Refuse a machine whose 16-byte atomics would be a lock in this process's memory (see
/// `platform::WordPair::is_lock_free`): they would not exclude other processes.
fn require_lock_free_pair(path: &Path) -> Result<()> {
    if <AtomicPair as WordPair>::is_lock_free() {
        Ok(())
    } else {
        Err(Error::UnsupportedCpu {
            path: path.to_path_buf(),
            instruction: PAIR_INSTRUCTION,
        })
    }
}

/// The open sequence up to (not including) member registration.
pub(crate) fn open(path: &Path, params: &OpenParams) -> Result<Opened> {
    require_lock_free_pair(path)?;
    let mut attempts = 0;
    let (file, meta) = loop {
        match open_existing(path, params)? {
            Ok(found) => break found,
            Err(_) if params.create && attempts < CREATE_ATTEMPTS => {
                attempts += 1;
                if let Some(opened) = create(path, params)? {
                    return Ok(opened);
                }
                // Another opener linked its file first: join it.
            }
            Err(missing) => return Err(os::open_error(path, missing)),
        }
    };
    let key = os::file_key(&file, &meta).map_err(|e| io_err("fstat", path, e))?;
    let mut alone = take_dead_man_switch(path, &file)?;
    loop {
        let len = file.metadata().map_err(|e| io_err("fstat", path, e))?.len();
        if alone {
            let (mapping, settled) = settle_alone(path, file, len, false, key)?;
            return Ok(Opened {
                mapping,
                settled,
                key,
            });
        }
        // Not alone: never rewrite; validate only.
        let why = if len == 0 {
            // Never one a shmlock opener is creating (see `create`): never written.
            return Err(Error::corrupt(path, CorruptReason::Empty { in_use: true }));
        } else if len != PAGE_SIZE as u64 {
            let prefix = read_prefix(path, &file, len)?;
            match classify_prefix(&prefix) {
                Err(Invalid::NewerVersion(v)) => return Err(incompatible(path, v)),
                Err(Invalid::NotOurs) if len > 0 => return Err(not_ours(path, len)),
                _ => Invalid::Damaged("the file is not one page long"),
            }
        } else {
            let clone = file.try_clone().map_err(|e| io_err("dup", path, e))?;
            let mapping = map(path, clone, key)?;
            match mapping.page().validate() {
                Ok(()) => {
                    return Ok(Opened {
                        mapping: {
                            drop(file);
                            mapping
                        },
                        settled: Settled::Joined,
                        key,
                    })
                }
                Err(why) => why,
            }
        };
        // Everyone else may have left meanwhile: if we can be alone now, heal.
        if matches!(why, Invalid::Damaged(_) | Invalid::Initialising)
            && os::convert(&file, LockKind::Exclusive, DEAD_MAN_SWITCH_BYTE)
                .map_err(|e| io_err("lock", path, e))?
        {
            alone = true;
            continue;
        }
        return Err(invalid_to_error(path, len, why, true));
    }
}

/// Whether `path` names a shmlock lock file rather than a data file: its name ends in
/// `-shm`, or it starts with the shmlock magic (in either byte order, finished or not).
pub(crate) fn is_lock_file(path: &Path) -> bool {
    if path
        .file_name()
        .is_some_and(|name| name.as_encoded_bytes().ends_with(b"-shm"))
    {
        return true;
    }
    let Ok(file) = os::open_lock_file(path, OpenHow::ReadOnly) else {
        return false;
    };
    let mut magic = [0u8; 8];
    os::read_at(&file, &mut magic, 0).is_ok()
        && !matches!(classify_prefix(&magic), Err(Invalid::NotOurs))
}

/// Read-only look at a lock file: opens it read-only, copies the page with `pread` (so a
/// concurrent truncation cannot SIGBUS us), probes member locks without taking them.
/// Creates, registers and writes nothing. `None` when there is no file or it is empty.
pub(crate) fn inspect(path: &Path) -> Result<Option<Snapshot>> {
    look(path, None)
}

/// [`inspect`] for a handle in a forked child (whose page mapping was replaced): the file
/// at `path` must still be the one the handle opened, `key` (device, inode).
pub(crate) fn inspect_in_child(path: &Path, key: (u64, u64)) -> Result<Snapshot> {
    look(path, Some(key))?.ok_or_else(|| {
        io_err(
            "read the page in a forked child",
            path,
            io::Error::other("the file is empty now"),
        )
    })
}

fn look(path: &Path, key: Option<(u64, u64)>) -> Result<Option<Snapshot>> {
    let file = match os::open_lock_file(path, OpenHow::ReadOnly) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(os::open_error(path, e)),
    };
    let meta = check_regular(path, &file)?;
    if key.is_some_and(|key| os::file_key(&file, &meta).ok() != Some(key)) {
        return Err(io_err(
            "read the page in a forked child",
            path,
            io::Error::other("the path names another file than the one the handle opened"),
        ));
    }
    let len = meta.len();
    if len == 0 {
        return Ok(None);
    }
    let prefix = read_prefix(path, &file, len)?;
    if untouched_page(len, &prefix) {
        return Ok(None);
    }
    if let Err(why) = classify_prefix(&prefix) {
        return Err(invalid_to_error(path, len, why, false));
    }
    if len != PAGE_SIZE as u64 {
        return Err(Error::corrupt(path, CorruptReason::WrongSize { len }));
    }
    let copy = Box::new(Page::<AtomicU64>::zeroed());
    let raw = Box::into_raw(copy);
    // SAFETY: `raw` is a freshly allocated, exclusively owned Page<AtomicU64> of exactly
    // PAGE_SIZE bytes (compile-time checked) and `prefix` holds PAGE_SIZE bytes; any bit
    // pattern is a valid AtomicU64. Ownership returns to a Box right after.
    let copy = unsafe {
        std::ptr::copy_nonoverlapping(prefix.as_ptr(), raw as *mut u8, PAGE_SIZE);
        Box::from_raw(raw)
    };
    copy.validate()
        .map_err(|why| invalid_to_error(path, len, why, false))?;
    let plat = ProbePlatform {
        file: &file,
        local: Local::new(1),
    };
    Ok(Some(protocol::snapshot(&copy, &plat, None)))
}

/// A platform that only looks: for `inspect` over a copy of the page.
struct ProbePlatform<'a> {
    file: &'a File,
    local: Local<AtomicU64>,
}

impl Platform for ProbePlatform<'_> {
    type Word = AtomicU64;
    fn try_lock_member(&self, _: usize) -> bool {
        false
    }
    fn unlock_member(&self, _: usize) {}
    fn member_locked(&self, index: usize) -> bool {
        os::locked_by_other(self.file, MEMBER_LOCK_BASE + index as u64).unwrap_or(true)
    }
    fn now(&self) -> u64 {
        os::boottime_ns()
    }
    fn wait(&self, _: &AtomicU64, _: u64, timeout: Duration) {
        std::thread::sleep(timeout)
    }
    fn wake_all(&self, _: &AtomicU64) -> usize {
        1
    }
    fn local(&self) -> &Local<AtomicU64> {
        &self.local
    }
    fn with_local_waiters(&self, _: WaitKind, f: &mut dyn FnMut(&mut u32)) {
        f(&mut 0)
    }
}

/// The process-wide registry: every open lock file of this process, by (device, inode), so
/// that each `ShmLock::open` of one file shares one mapping, descriptor and member entry.
/// Held across `fork()` (see [`install_fork_hooks`]) so a child never inherits it locked.
pub(crate) static REGISTRY: fork::ForkSafeMutex<Registry> = fork::ForkSafeMutex::new(Vec::new());

/// Open files of this process: (device, inode) and the shared membership (the handle
/// layer's type, which this layer does not need to know).
pub(crate) type Registry = Vec<((u64, u64), Weak<dyn std::any::Any + Send + Sync>)>;

/// Wall-clock nanoseconds since the Unix epoch (0 before it).
pub(crate) fn unix_ns() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos().min(u64::MAX as u128) as u64)
}

/// The identity of the regular file at `path` (not following a symlink), if there is one.
pub(crate) fn path_key(path: &Path) -> Option<(u64, u64)> {
    os::path_key(path)
}

/// Whether this process may write the file at `path` (provisioning requires it of the data
/// file).
pub(crate) fn may_write(path: &Path) -> bool {
    os::may_write(path)
}

/// The number of names (hard links) of the data file at `path`.
pub(crate) fn link_count(path: &Path, meta: &std::fs::Metadata) -> u64 {
    os::link_count(path, meta)
}

/// The `rw` permission bits of a data file, for its lock file.
pub(crate) fn data_file_mode(meta: &std::fs::Metadata) -> u32 {
    os::data_file_mode(meta)
}

/// A boot identity no page can hold already (what an unknown boot is recorded as): every
/// later opener then sees a different boot, and jumps the generation as after a reboot.
fn fresh_boot_identity() -> u64 {
    let mut bytes = unix_ns().to_ne_bytes().to_vec();
    bytes.extend_from_slice(&os::boottime_ns().to_ne_bytes());
    bytes.extend_from_slice(&std::process::id().to_ne_bytes());
    // Not a boot id's hash: those are FNV-1a of 36 ASCII bytes; this one is of 20 bytes.
    fnv(&bytes)
}

/// FNV-1a, never 0.
pub(crate) fn fnv(bytes: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for &byte in bytes {
        hash ^= byte as u64;
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash.max(1)
}

/// This process's pid, for display.
pub(crate) fn pid() -> u32 {
    std::process::id()
}
