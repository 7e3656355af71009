//! The fork hook (Unix): a forked child must hold none of this library's locks.
//!
//! OFD locks belong to an open file description, and they last until its last reference
//! goes: a descriptor or a shared mapping, in any process. A child of `fork()` gets a copy
//! of every descriptor and mapping of its parent, so a child that lives on (a pre-fork
//! worker) would keep its parent's member lock, dead-man switch and writer role alive after
//! the parent died: a fresh claim would then wait forever (without a lease) and `inspect`
//! would show the dead parent alive and pinning.
//!
//! So every descriptor and every page mapping this library makes is *tracked*: it is
//! created and recorded under [`TRACKED`]'s lock, and unrecorded and closed (or unmapped)
//! under it too, and the fork hook's prepare handler takes that lock. No fork can
//! therefore fall between a descriptor's creation and its recording, nor between its
//! forgetting and its closing: at every fork, the table lists exactly the library's
//! descriptors and mappings. The table is a growable `Vec` (no fixed size that could stop
//! protecting); it is only ever grown by the parent, under the lock, and the child's
//! handler only reads it (and marks what it closed).
//!
//! In the child, each tracked mapping is replaced by a private anonymous page (MAP_FIXED
//! over the same range), and each tracked descriptor is pointed at `/dev/null` with `dup3`
//! (`dup2` and `FD_CLOEXEC` on macOS)
//! from a `/dev/null` descriptor opened once, in the parent, when the hook was installed:
//! the child needs no new descriptor (a child forked at its descriptor limit is covered).
//! Should that descriptor be gone, the child closes the tracked one instead (and its
//! handle then does not close it a second time). The parent's descriptions are untouched.
//!
//! The handles themselves learn of the fork from the fork epoch (bumped in the child):
//! every operation that writes refuses with `ForkedHandle`, and every read answers from
//! the file (a fresh read-only look) rather than from the replaced page.

use std::fs::File;
use std::io;
use std::mem::ManuallyDrop;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::{AtomicI32, AtomicU64, Ordering};
use std::sync::Once;

use memmap2::{MmapOptions, MmapRaw};
use nix::libc;

use super::REGISTRY;

/// A mutex that a forked child can take over: its whole state is one word of its own, so
/// the child's hook resets it with a store (async-signal-safe). `parking_lot`'s unlock of a
/// contended mutex goes through a process-wide table of buckets whose locks another thread
/// may have held at the fork: a child that force-unlocked such a mutex hung for good (the
/// fork torture caught it). Waiters spin briefly, then yield and sleep in short slices: the
/// critical sections it guards are a few system calls long.
pub(crate) struct ForkSafeMutex<T> {
    locked: std::sync::atomic::AtomicBool,
    data: std::cell::UnsafeCell<T>,
}

// SAFETY: access to `data` is serialised by `locked` (see `lock`), as in `std::sync::Mutex`.
unsafe impl<T: Send> Sync for ForkSafeMutex<T> {}

/// Holds a [`ForkSafeMutex`]; unlocks it on drop.
pub(crate) struct ForkSafeGuard<'a, T> {
    mutex: &'a ForkSafeMutex<T>,
}

impl<T> ForkSafeMutex<T> {
    pub(crate) const fn new(data: T) -> ForkSafeMutex<T> {
        ForkSafeMutex {
            locked: std::sync::atomic::AtomicBool::new(false),
            data: std::cell::UnsafeCell::new(data),
        }
    }

    fn lock_raw(&self) {
        let backoff = crossbeam_utils::Backoff::new();
        while self
            .locked
            .compare_exchange_weak(false, true, Ordering::Acquire, Ordering::Relaxed)
            .is_err()
        {
            if backoff.is_completed() {
                std::thread::sleep(std::time::Duration::from_micros(20));
            } else {
                backoff.snooze();
            }
        }
    }

    fn unlock_raw(&self) {
        self.locked.store(false, Ordering::Release);
    }

    /// Lock it (spinning, then sleeping in 20 µs slices).
    pub(crate) fn lock(&self) -> ForkSafeGuard<'_, T> {
        self.lock_raw();
        ForkSafeGuard { mutex: self }
    }
}

impl<T> std::ops::Deref for ForkSafeGuard<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        // SAFETY: the guard holds the lock: no other reference to the data exists.
        unsafe { &*self.mutex.data.get() }
    }
}

impl<T> std::ops::DerefMut for ForkSafeGuard<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        // SAFETY: the guard holds the lock: no other reference to the data exists.
        unsafe { &mut *self.mutex.data.get() }
    }
}

impl<T> Drop for ForkSafeGuard<'_, T> {
    fn drop(&mut self) {
        self.mutex.unlock_raw();
    }
}

/// Bumped in every child right after `fork()`: a handle remembers the value it was opened
/// under, and refuses to work when it differs.
static FORK_EPOCH: AtomicU64 = AtomicU64::new(0);
static FORK_HOOKS: Once = Once::new();

/// What the child must redirect: the library's descriptors and page mappings.
struct Tracked {
    /// Descriptors this library owns (each mapping's, each death watcher's). A value
    /// below 0 is `!fd` of one the child's hook closed (see [`TrackedFile`]'s drop).
    fds: Vec<RawFd>,
    /// Start addresses of this library's page mappings (each [`TrackedMap::len`] bytes).
    maps: Vec<(usize, usize)>,
}

/// Held (by the prepare handler) across `fork()`; held by every thread while it creates,
/// records, forgets or closes a tracked descriptor or mapping.
static TRACKED: ForkSafeMutex<Tracked> = ForkSafeMutex::new(Tracked {
    fds: Vec::new(),
    maps: Vec::new(),
});

/// `/dev/null`, opened once in the parent when the hook is installed (-1: none), and its
/// identity (device, inode, rdev), checked in the child before each use: the program may
/// have closed it and the number been reused.
static DEV_NULL: AtomicI32 = AtomicI32::new(-1);
static DEV_NULL_ID_COPY: [AtomicU64; 3] = [const { AtomicU64::new(0) }; 3];

/// A descriptor of this library: recorded for the fork hook from before anyone can see it
/// until after it is closed.
pub(crate) struct TrackedFile {
    file: ManuallyDrop<File>,
}

impl TrackedFile {
    /// Run `open` (which creates one descriptor) and record it, with no fork in between.
    pub(crate) fn open(open: impl FnOnce() -> io::Result<File>) -> io::Result<TrackedFile> {
        let mut tracked = TRACKED.lock();
        let file = open()?;
        tracked.fds.push(file.as_raw_fd());
        Ok(TrackedFile {
            file: ManuallyDrop::new(file),
        })
    }

    /// A second descriptor of the same open file description, tracked.
    pub(crate) fn try_clone(&self) -> io::Result<TrackedFile> {
        TrackedFile::open(|| self.file.try_clone())
    }
}

impl std::ops::Deref for TrackedFile {
    type Target = File;
    fn deref(&self) -> &File {
        &self.file
    }
}

impl Drop for TrackedFile {
    fn drop(&mut self) {
        let fd = self.file.as_raw_fd();
        let mut tracked = TRACKED.lock();
        let position = tracked.fds.iter().position(|&f| f == fd || f == !fd);
        let closed_by_hook = position.is_some_and(|i| tracked.fds[i] == !fd);
        if let Some(i) = position {
            tracked.fds.swap_remove(i);
        }
        // SAFETY: `file` is dropped exactly once, here, and never used again.
        let file = unsafe { ManuallyDrop::take(&mut self.file) };
        if closed_by_hook {
            // The fork hook already closed this number in this child: closing it again
            // could close an unrelated file that reused it.
            std::mem::forget(file);
        } else {
            drop(file);
        }
        drop(tracked);
    }
}

/// A shared read-write mapping of this library: recorded for the fork hook from before
/// anyone can use it until after it is unmapped.
pub(crate) struct TrackedMap {
    map: ManuallyDrop<MmapRaw>,
}

impl TrackedMap {
    /// Map the first `len` bytes of `file` and record the mapping, with no fork in between.
    pub(crate) fn map(file: &File, len: usize) -> io::Result<TrackedMap> {
        let mut tracked = TRACKED.lock();
        let map = MmapOptions::new().len(len).map_raw(file)?;
        tracked.maps.push((map.as_ptr() as usize, len));
        Ok(TrackedMap {
            map: ManuallyDrop::new(map),
        })
    }

    /// The mapping's first byte.
    #[inline]
    pub(crate) fn as_ptr(&self) -> *const u8 {
        self.map.as_ptr()
    }
}

impl Drop for TrackedMap {
    fn drop(&mut self) {
        let addr = self.map.as_ptr() as usize;
        let mut tracked = TRACKED.lock();
        if let Some(i) = tracked.maps.iter().position(|&(a, _)| a == addr) {
            tracked.maps.swap_remove(i);
        }
        // SAFETY: `map` is dropped exactly once, here, and never used again.
        unsafe { ManuallyDrop::drop(&mut self.map) };
        drop(tracked);
    }
}

extern "C" fn before_fork() {
    REGISTRY.lock_raw();
    TRACKED.lock_raw();
}

extern "C" fn after_fork_in_parent() {
    // `before_fork` locked both in this thread.
    TRACKED.unlock_raw();
    REGISTRY.unlock_raw();
}

/// Whether `fd` is still the `/dev/null` opened at install (async-signal-safe: fstat).
fn dev_null_is_intact(fd: RawFd) -> bool {
    if fd < 0 {
        return false;
    }
    // SAFETY: `st` is a plain C struct, valid zeroed; fstat only writes it.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: fstat on any integer is memory-safe; `st` is writable for the call.
    if unsafe { libc::fstat(fd, &mut st) } != 0 {
        return false;
    }
    let id = [st.st_dev as u64, st.st_ino as u64, st.st_rdev as u64];
    id.iter()
        .zip(&DEV_NULL_ID_COPY)
        .all(|(a, b)| *a == b.load(Ordering::Relaxed))
}

extern "C" fn after_fork_in_child() {
    FORK_EPOCH.fetch_add(1, Ordering::Relaxed);
    // SAFETY: `before_fork` locked TRACKED in the forking thread, the child's only
    // thread, so nothing else accesses the table: the child reads it and marks closed
    // descriptors through the raw pointer without allocating (no push, no growth).
    let tracked = unsafe { &mut *TRACKED.data.get() };
    let null = DEV_NULL.load(Ordering::Relaxed);
    let null_ok = dev_null_is_intact(null);
    // SAFETY: every (addr, len) in `maps` is a live mapping of this library (it leaves
    // the table, under the lock, only as it is unmapped); MAP_FIXED replaces exactly that
    // range in this single-threaded child, so no other object is affected, and the
    // TrackedMap that owns it unmaps the same range on drop. mmap, munmap, dup3 (dup2 and
    // fcntl on macOS: `os::redirect_fd`), close and fstat are async-signal-safe system calls. Every fd in `fds` is one this library
    // opened and has not closed (it leaves the table, under the lock, only as it closes);
    // `null` was checked to be our /dev/null.
    unsafe {
        for &(addr, len) in &tracked.maps {
            let replaced = libc::mmap(
                addr as *mut libc::c_void,
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED,
                -1,
                0,
            );
            if replaced == libc::MAP_FAILED {
                // The reference must go whatever it costs: a child that touches the page
                // now faults, and no handle of a forked child reads its page.
                libc::munmap(addr as *mut libc::c_void, len);
            }
        }
        for fd in tracked.fds.iter_mut() {
            if *fd < 0 || *fd == null {
                continue;
            }
            if !(null_ok && super::os::redirect_fd(null, *fd) == *fd) {
                libc::close(*fd);
                *fd = !*fd;
            }
        }
    }
    // `before_fork` locked both in the forking thread, the child's only thread: a store
    // each (no wake-up, no shared table) hands them to the child.
    TRACKED.unlock_raw();
    REGISTRY.unlock_raw();
}

/// Install the fork hooks, once per process, and open the `/dev/null` they use.
pub(crate) fn install_fork_hooks() {
    FORK_HOOKS.call_once(|| {
        use std::os::unix::fs::MetadataExt;
        match std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/null")
        {
            Ok(null) => match null.metadata() {
                Ok(meta) => {
                    let id = (meta.dev(), meta.ino(), meta.rdev());
                    for (slot, value) in DEV_NULL_ID_COPY.iter().zip([id.0, id.1, id.2]) {
                        slot.store(value, Ordering::Relaxed);
                    }
                    // Kept open (close-on-exec) for the life of the process.
                    DEV_NULL.store(std::os::fd::IntoRawFd::into_raw_fd(null), Ordering::Release);
                }
                Err(e) => log::warn!("cannot stat /dev/null ({e}): a forked child closes shmlock's descriptors instead"),
            },
            Err(e) => log::warn!(
                "cannot open /dev/null ({e}): a forked child closes shmlock's descriptors instead"
            ),
        }
        // SAFETY: the handlers are `extern "C" fn()` items that live for the whole program;
        // they lock/unlock static mutexes, bump an atomic and make async-signal-safe
        // system calls, which is allowed between fork's prepare and after hooks.
        // pthread_atfork fails only with ENOMEM.
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
