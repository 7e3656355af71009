//! Linux: the open sequence, OFD locks, statfs, the mapping, and the OS platform.
//!
//! Every system call shmlock makes lives under this module; `protocol/` makes none.

pub(crate) mod os;

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::os::fd::RawFd;
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Once, Weak};
use std::time::{Duration, Instant};

use crossbeam_utils::Backoff;
use memmap2::{MmapOptions, MmapRaw};
use nix::errno::Errno;
use nix::libc;

use crate::error::{CorruptReason, Error, Result};
use crate::page::{
    classify_prefix, owner_generation, Invalid, Page, DEAD_MAN_SWITCH_BYTE, FORMAT_VERSION,
    MAX_GENERATION, MEMBER_CAPACITY, MEMBER_LOCK_BASE, ORIGIN_CREATED, ORIGIN_HEALED, PAGE_SIZE,
};
use crate::platform::{Platform, WaitKind};
use crate::protocol::{self, Local, Recovery};
use crate::snapshot::Snapshot;
use os::LockKind;

/// How long an opener waits for another opener that is initialising or healing the page
/// (it holds the dead-man switch exclusively) before giving up with an error. A dead
/// initialiser's lock is dropped by the kernel at once; only a live, stuck one is waited for.
const INITIALISER_PATIENCE: Duration = Duration::from_secs(10);

/// One process's mapping of one lock file, with its open file description (which holds
/// this process's dead-man-switch and member locks).
pub(crate) struct Mapping {
    pub(crate) path: PathBuf,
    pub(crate) file: File,
    map: MmapRaw,
    /// Member locks this process holds (its own entry, or one it is reaping right now):
    /// OFD locks never conflict within one open file description, so threads of this
    /// process exclude each other here.
    held: [AtomicBool; MEMBER_CAPACITY],
    /// Per member, the identity word a death watcher of this process was last started
    /// for: at most one watcher per member incarnation, however often waiters ask.
    watched: parking_lot::Mutex<[u64; MEMBER_CAPACITY]>,
    /// This process's reader pins and heartbeat stamps for this page.
    local: Local<AtomicU64>,
    /// Threads of this process asleep in the page, per [`WaitKind`].
    local_waiters: parking_lot::Mutex<[u32; 3]>,
    /// Serialises this process's claim attempts (see `Platform::serialise_claim`).
    claim_lock: parking_lot::Mutex<()>,
}

/// Pin slots per process and file: distinct versions its readers can pin at once before
/// new pins share an older version's slot.
const LOCAL_PIN_SLOTS: usize = 64;

impl Drop for Mapping {
    fn drop(&mut self) {
        forget_library_map(self.map.as_ptr() as usize);
        forget_library_fd(self.file.as_raw_fd());
    }
}

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
            || os::locked_by_other(&m.file, MEMBER_LOCK_BASE + index as u64).unwrap_or(true)
    }

    #[inline]
    fn now(&self) -> u64 {
        os::boottime_ns()
    }

    fn wait(&self, word: &AtomicU64, expected: u64, timeout: Duration) {
        os::futex_wait(word, expected, timeout)
    }

    fn wake_all(&self, word: &AtomicU64) -> usize {
        os::futex_wake_all(word)
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
        let reopened = File::open(format!("/proc/self/fd/{}", m.file.as_raw_fd()));
        let mapping = Arc::clone(m);
        let spawned = reopened.and_then(|watch_file| {
            let fd = watch_file.as_raw_fd();
            remember_library_fd(fd);
            std::thread::Builder::new()
                .name("shmlock-watch".into())
                .stack_size(64 * 1024)
                .spawn(move || {
                    let byte = MEMBER_LOCK_BASE + index as u64;
                    let result = os::lock_blocking(&watch_file, LockKind::Shared, byte);
                    if result.is_ok() {
                        let _ = os::unlock(&watch_file, byte);
                    }
                    forget_library_fd(fd);
                    drop(watch_file);
                    if result.is_ok() {
                        protocol::wake_after_death(mapping.page(), &mapping.platform());
                    }
                })
                .inspect_err(|_| forget_library_fd(fd))
        });
        if spawned.is_err() {
            // Waiters fall back to polling every wait slice; a later wait may try again.
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

    #[inline]
    fn serialise_claim(&self, attempt: &mut dyn FnMut()) {
        let _one_at_a_time = self.mapping.claim_lock.lock();
        attempt();
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
fn refuse_network(path: &Path, st: nix::Result<nix::sys::statfs::Statfs>) -> Result<()> {
    // A failing statfs (a missing directory) is reported by the open around it.
    match st.map(|st| os::network_filesystem(st.filesystem_type().0 as u64)) {
        Ok(Some(fs)) => Err(Error::UnsupportedFilesystem {
            path: path.to_path_buf(),
            fs,
        }),
        _ => Ok(()),
    }
}

fn not_regular(path: &Path, found: &'static str) -> Error {
    Error::NotARegularFile {
        path: path.to_path_buf(),
        found,
    }
}

/// Map an `open(2)` failure to the error a person should see.
fn open_error(path: &Path, e: io::Error) -> Error {
    match Errno::from_raw(e.raw_os_error().unwrap_or(0)) {
        Errno::ELOOP => not_regular(path, "a symbolic link (refused: O_NOFOLLOW)"),
        Errno::EISDIR => not_regular(path, "a directory"),
        Errno::ENXIO | Errno::EOPNOTSUPP => not_regular(path, "a socket or special file"),
        _ => io_err("open", path, e),
    }
}

/// Check what `open` found is a regular file.
fn check_regular(path: &Path, file: &File) -> Result<std::fs::Metadata> {
    let meta = file.metadata().map_err(|e| io_err("fstat", path, e))?;
    let ft = meta.file_type();
    if ft.is_file() {
        return Ok(meta);
    }
    use std::os::unix::fs::FileTypeExt;
    Err(not_regular(
        path,
        if ft.is_dir() {
            "a directory"
        } else if ft.is_fifo() {
            "a FIFO"
        } else if ft.is_char_device() || ft.is_block_device() {
            "a device"
        } else if ft.is_socket() {
            "a socket"
        } else {
            "not a regular file"
        },
    ))
}

/// Open (or create) the lock file read-write, never following a symlink, close-on-exec,
/// non-blocking (so a FIFO at the path cannot hang us).
fn open_file(path: &Path, params: &OpenParams) -> Result<(File, std::fs::Metadata)> {
    let flags = libc::O_NOFOLLOW | libc::O_NONBLOCK;
    let existing = || {
        OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(flags)
            .open(path)
    };
    let check_network = !params.allow_network_filesystem;
    let mut created = false;
    let file = match existing() {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::NotFound && params.create => {
            // Refuse a network filesystem before leaving a new file on it.
            if check_network {
                let dir = match path.parent() {
                    Some(p) if !p.as_os_str().is_empty() => p,
                    _ => Path::new("."),
                };
                refuse_network(path, nix::sys::statfs::statfs(dir))?;
            }
            match OpenOptions::new()
                .read(true)
                .write(true)
                .create_new(true)
                .mode(params.mode)
                .custom_flags(flags)
                .open(path)
            {
                Ok(file) => {
                    created = true;
                    file
                }
                // Another process created it between our two opens.
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                    existing().map_err(|e| open_error(path, e))?
                }
                Err(e) => return Err(open_error(path, e)),
            }
        }
        Err(e) => return Err(open_error(path, e)),
    };
    if check_network && !created {
        refuse_network(path, nix::sys::statfs::fstatfs(&file))?;
    }
    let meta = check_regular(path, &file)?;
    if created {
        // Exactly the mode asked for, whatever the umask (a provisioned file gets its data
        // file's mode, so whoever may open the data may open its lock file).
        file.set_permissions(std::fs::Permissions::from_mode(params.mode))
            .map_err(|e| io_err("chmod", path, e))?;
    }
    Ok((file, meta))
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
    file.read_exact_at(&mut buf, 0)
        .map_err(|e| io_err("read", path, e))?;
    Ok(buf)
}

fn map(path: &Path, file: File) -> Result<Arc<Mapping>> {
    let map = MmapOptions::new()
        .len(PAGE_SIZE)
        .map_raw(&file)
        .map_err(|e| io_err("mmap", path, e))?;
    remember_library_fd(file.as_raw_fd());
    remember_library_map(map.as_ptr() as usize);
    Ok(Arc::new(Mapping {
        path: path.to_path_buf(),
        file,
        map,
        held: std::array::from_fn(|_| AtomicBool::new(false)),
        watched: parking_lot::Mutex::new([0; MEMBER_CAPACITY]),
        local: Local::new(LOCAL_PIN_SLOTS),
        local_waiters: parking_lot::Mutex::new([0; 3]),
        claim_lock: parking_lot::Mutex::new(()),
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

fn plan_alone(path: &Path, file: &File, len: u64) -> Result<AlonePlan> {
    if len == 0 {
        return Ok(AlonePlan::Initialise);
    }
    let prefix = read_prefix(path, file, len)?;
    if untouched_page(len, &prefix) {
        return Ok(AlonePlan::Initialise);
    }
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

/// Alone: make the page valid (initialise, heal or recover), then downgrade the dead-man
/// switch to shared.
fn settle_alone(path: &Path, file: File, len: u64) -> Result<(Arc<Mapping>, Settled)> {
    let plan = plan_alone(path, &file, len)?;
    if len != PAGE_SIZE as u64 {
        file.set_len(PAGE_SIZE as u64)
            .map_err(|e| io_err("resize", path, e))?;
    }
    let mapping = map(path, file)?;
    let plat = mapping.platform();
    let page = mapping.page();
    let clock_seed = os::unix_ns() / 1000;
    let boot = os::boot_id_hash();
    // A heal restarts the generation from the clock, and above whatever the damaged
    // page's owner word still holds if that is plausible (a burst of claims can outrun
    // the clock); an implausible one (past half the range) is ignored as damage.
    let heal_seed = || match owner_generation(page.writer.owner.load(Ordering::Acquire)) {
        old if old < MAX_GENERATION / 2 => clock_seed.max(old + 1),
        _ => clock_seed,
    };
    let settled = match plan {
        AlonePlan::Initialise => {
            page.initialise(&plat, os::unix_ns(), clock_seed, ORIGIN_CREATED, boot);
            Settled::Created
        }
        AlonePlan::Heal(reason) => {
            page.initialise(&plat, os::unix_ns(), heal_seed(), ORIGIN_HEALED, boot);
            Settled::Healed(reason)
        }
        AlonePlan::Recover => match page.validate() {
            Ok(()) => Settled::Recovered(protocol::recover_alone(page, &plat, boot, clock_seed)),
            Err(Invalid::Damaged(what)) => {
                page.initialise(&plat, os::unix_ns(), heal_seed(), ORIGIN_HEALED, boot);
                Settled::Healed(format!("line 0 was damaged: {what}"))
            }
            Err(Invalid::OlderVersion(v)) => {
                page.initialise(&plat, os::unix_ns(), heal_seed(), ORIGIN_HEALED, boot);
                Settled::Healed(format!(
                    "upgraded from format version {v} to {FORMAT_VERSION} (the generation carries on above the old one; the published version restarts at 0)"
                ))
            }
            Err(why) => return Err(invalid_to_error(path, len, why, false)),
        },
    };
    // Converting our own exclusive lock to shared cannot conflict; should the kernel say
    // otherwise, fail the open rather than run without the switch.
    if !os::try_lock(&mapping.file, LockKind::Shared, DEAD_MAN_SWITCH_BYTE)
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

/// The open sequence up to (not including) member registration.
pub(crate) fn open(path: &Path, params: &OpenParams) -> Result<Opened> {
    let (file, meta) = open_file(path, params)?;
    let key = (meta.dev(), meta.ino());
    let mut alone = take_dead_man_switch(path, &file)?;
    loop {
        let len = file.metadata().map_err(|e| io_err("fstat", path, e))?.len();
        if alone {
            let (mapping, settled) = settle_alone(path, file, len)?;
            return Ok(Opened {
                mapping,
                settled,
                key,
            });
        }
        // Not alone: never rewrite; validate only.
        let why = if len != PAGE_SIZE as u64 {
            let prefix = read_prefix(path, &file, len)?;
            match classify_prefix(&prefix) {
                Err(Invalid::NewerVersion(v)) => return Err(incompatible(path, v)),
                Err(Invalid::NotOurs) if len > 0 => return Err(not_ours(path, len)),
                _ => Invalid::Damaged("the file is not one page long"),
            }
        } else {
            let mapping = map(path, file.try_clone().map_err(|e| io_err("dup", path, e))?)?;
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
                // We got the switch shared the moment the kernel dropped a dead
                // initialiser's lock: treat its untouched page like an interrupted
                // initialisation.
                Err(Invalid::NotOurs) if untouched_page(len, &read_prefix(path, &file, len)?) => {
                    Invalid::Initialising
                }
                Err(why) => why,
            }
        };
        // Everyone else may have left meanwhile: if we can be alone now, heal.
        if matches!(why, Invalid::Damaged(_) | Invalid::Initialising)
            && os::try_lock(&file, LockKind::Exclusive, DEAD_MAN_SWITCH_BYTE)
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
    let Ok(file) = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)
    else {
        return false;
    };
    let mut magic = [0u8; 8];
    file.read_exact_at(&mut magic, 0).is_ok()
        && !matches!(classify_prefix(&magic), Err(Invalid::NotOurs))
}

/// Read-only look at a lock file: opens it read-only, copies the page with `pread` (so a
/// concurrent truncation cannot SIGBUS us), probes member locks without taking them.
/// Creates, registers and writes nothing. `None` when there is no file or it is empty.
pub(crate) fn inspect(path: &Path) -> Result<Option<Snapshot>> {
    let file = match OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)
    {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(open_error(path, e)),
    };
    let len = check_regular(path, &file)?.len();
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
    fn serialise_claim(&self, attempt: &mut dyn FnMut()) {
        attempt()
    }
}

/// Bumped in every child right after `fork()`: a handle remembers the value it was opened
/// under, and refuses to work when it differs.
static FORK_EPOCH: AtomicU64 = AtomicU64::new(0);
static FORK_HOOKS: Once = Once::new();

/// The process-wide registry: every open lock file of this process, by (device, inode), so
/// that each `ShmLock::open` of one file shares one mapping, descriptor and member entry.
/// Held across `fork()` (see [`install_fork_hooks`]) so a child never inherits it locked.
pub(crate) static REGISTRY: parking_lot::Mutex<Registry> = parking_lot::Mutex::new(Vec::new());

/// Open files of this process: (device, inode) and the shared membership (the handle
/// layer's type, which this layer does not need to know).
pub(crate) type Registry = Vec<((u64, u64), Weak<dyn std::any::Any + Send + Sync>)>;

extern "C" fn before_fork() {
    std::mem::forget(REGISTRY.lock());
}

extern "C" fn after_fork_in_parent() {
    // SAFETY: `before_fork` locked the registry in this thread and forgot the guard.
    unsafe { REGISTRY.force_unlock() };
}

/// Descriptors this library owns (each mapping's, each death watcher's): a forked child
/// must not keep their locks alive (see [`after_fork_in_child`]). A fixed table of atomics
/// so the child can read it without taking a lock another thread may have held at fork.
static LIBRARY_FDS: [AtomicI32; 256] = [const { AtomicI32::new(-1) }; 256];

fn remember_library_fd(fd: RawFd) {
    for slot in &LIBRARY_FDS {
        if slot
            .compare_exchange(-1, fd, Ordering::AcqRel, Ordering::Relaxed)
            .is_ok()
        {
            return;
        }
    }
    log::warn!(
        "more than 256 shmlock descriptors: a forked child may keep descriptor {fd}'s locks"
    );
}

/// Addresses of this library's page mappings (each `PAGE_SIZE` bytes), for the same reason
/// as [`LIBRARY_FDS`]: a shared mapping holds a reference to its open file description, so
/// a child that inherits it keeps the description's locks alive.
static LIBRARY_MAPS: [AtomicUsize; 256] = [const { AtomicUsize::new(0) }; 256];

fn remember_library_map(addr: usize) {
    if !LIBRARY_MAPS.iter().any(|slot| {
        slot.compare_exchange(0, addr, Ordering::AcqRel, Ordering::Relaxed)
            .is_ok()
    }) {
        log::warn!("more than 256 shmlock mappings: a forked child may keep one's locks");
    }
}

fn forget_library_map(addr: usize) {
    for slot in &LIBRARY_MAPS {
        if slot
            .compare_exchange(addr, 0, Ordering::AcqRel, Ordering::Relaxed)
            .is_ok()
        {
            return;
        }
    }
}

fn forget_library_fd(fd: RawFd) {
    for slot in &LIBRARY_FDS {
        if slot
            .compare_exchange(fd, -1, Ordering::AcqRel, Ordering::Relaxed)
            .is_ok()
        {
            return;
        }
    }
}

extern "C" fn after_fork_in_child() {
    FORK_EPOCH.fetch_add(1, Ordering::Relaxed);
    // The child shares every open file description of the parent, and OFD locks belong to
    // the description until its last reference goes — a descriptor or a shared mapping. A
    // child that lives on (a pre-fork worker) would keep the parent's member,
    // dead-man-switch and death-watcher locks alive after the parent dies. So the child's
    // page mappings become private anonymous pages (its handles refuse to work anyway:
    // `ForkedHandle`; what they can still read is a page of zeros), and its copies of the
    // descriptors point at /dev/null (the parent's descriptions are untouched).
    // SAFETY: every address in LIBRARY_MAPS is the start of a live PAGE_SIZE mapping of
    // this library (it leaves the table before it is unmapped); MAP_FIXED replaces exactly
    // that range in this (single-threaded) child, so no other object is affected, and the
    // memmap2 handle that owns it unmaps the same range on drop. mmap, open, dup3 and close
    // are plain system calls, safe in a fork child; the path is a NUL-terminated literal;
    // every descriptor in LIBRARY_FDS is one this library opened and has not yet closed.
    unsafe {
        for slot in &LIBRARY_MAPS {
            let addr = slot.load(Ordering::Acquire);
            if addr != 0 {
                libc::mmap(
                    addr as *mut libc::c_void,
                    PAGE_SIZE,
                    libc::PROT_READ | libc::PROT_WRITE,
                    libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED,
                    -1,
                    0,
                );
            }
        }
        let null = libc::open(c"/dev/null".as_ptr(), libc::O_RDWR | libc::O_CLOEXEC);
        if null >= 0 {
            for slot in &LIBRARY_FDS {
                let fd = slot.load(Ordering::Acquire);
                if fd >= 0 && fd != null {
                    libc::dup3(null, fd, libc::O_CLOEXEC);
                }
            }
            libc::close(null);
        }
    }
    // SAFETY: `before_fork` locked the registry in the forking thread, which is the only
    // thread of the child, and forgot the guard.
    unsafe { REGISTRY.force_unlock() };
}

/// Install the fork hooks, once per process.
pub(crate) fn install_fork_hooks() {
    FORK_HOOKS.call_once(|| {
        // SAFETY: the handlers are `extern "C" fn()` items that live for the whole program;
        // they lock/unlock a static mutex and bump an atomic, which is allowed between
        // fork's prepare and after hooks. pthread_atfork fails only with ENOMEM.
        let rc = unsafe {
            libc::pthread_atfork(
                Some(before_fork),
                Some(after_fork_in_parent),
                Some(after_fork_in_child),
            )
        };
        if rc != 0 {
            log::warn!(
                "pthread_atfork failed ({rc}): handles used after fork() will not be detected"
            );
        }
    });
}

/// The current fork epoch (see [`install_fork_hooks`]).
#[inline]
pub(crate) fn fork_epoch() -> u64 {
    FORK_EPOCH.load(Ordering::Relaxed)
}

/// This process's pid, for display.
pub(crate) fn pid() -> u32 {
    std::process::id()
}
