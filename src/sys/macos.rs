//! The macOS kernel file: the OFD locks and the safe open are shared with Linux
//! ([`super::unix`]); here are the shared waits (`os_sync_wait_on_address`, macOS 14.4+,
//! found at run time), the boot clock (`CLOCK_MONOTONIC_RAW`), `kern.bootsessionuuid`,
//! `MNT_LOCAL`, and a death watcher's handle without `/proc` (`F_GETPATH`).
//!
//! Compile-checked only (clippy for aarch64- and x86_64-apple-darwin, in CI): every call
//! here was checked against the macOS SDK's headers and man pages (the README's platform
//! table says so).

use std::ffi::{c_void, CStr};
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::path::Path;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

pub(crate) use super::unix::*;

/// Address of the 32 bits of `word` that hold its low half (what a wait compares).
fn low_half(word: &AtomicU64) -> *mut c_void {
    let base = word.as_ptr() as *mut u32;
    if cfg!(target_endian = "big") {
        base.wrapping_add(1) as *mut c_void
    } else {
        base as *mut c_void
    }
}

/// `os_sync_wait_on_address_with_timeout` (`<os/os_sync_wait_on_address.h>`).
type WaitFn = unsafe extern "C" fn(*mut c_void, u64, libc::size_t, u32, u32, u64) -> libc::c_int;
/// `os_sync_wake_by_address_all` (same header).
type WakeFn = unsafe extern "C" fn(*mut c_void, libc::size_t, u32) -> libc::c_int;

/// The two functions, looked up once with `dlsym` (macOS 14.4+ has them; a binary that
/// linked them directly would not start on older releases). `None`: fall back to polling.
fn os_sync() -> Option<(WaitFn, WakeFn)> {
    /// 0: not looked up; 1: absent; else the wait function's address.
    static WAIT: AtomicUsize = AtomicUsize::new(0);
    static WAKE: AtomicUsize = AtomicUsize::new(0);
    let mut wait = WAIT.load(Ordering::Acquire);
    if wait == 0 {
        // SAFETY: RTLD_DEFAULT searches every loaded image; the names are NUL-terminated
        // literals; dlsym returns null or the address of the named function.
        let (w, k) = unsafe {
            (
                libc::dlsym(
                    libc::RTLD_DEFAULT,
                    c"os_sync_wait_on_address_with_timeout".as_ptr(),
                ),
                libc::dlsym(libc::RTLD_DEFAULT, c"os_sync_wake_by_address_all".as_ptr()),
            )
        };
        let found = !w.is_null() && !k.is_null();
        WAKE.store(if found { k as usize } else { 1 }, Ordering::Release);
        wait = if found { w as usize } else { 1 };
        WAIT.store(wait, Ordering::Release);
    }
    if wait == 1 {
        return None;
    }
    let wake = WAKE.load(Ordering::Acquire);
    // SAFETY: both addresses came from dlsym for functions with exactly these C
    // signatures (checked against the 14.4 SDK's header); WAKE is stored before WAIT.
    Some(unsafe {
        (
            std::mem::transmute::<usize, WaitFn>(wait),
            std::mem::transmute::<usize, WakeFn>(wake),
        )
    })
}

/// Sleep until `word`'s low 32 bits differ from `expected`'s, a wake-up, or `timeout`:
/// `os_sync_wait_on_address_with_timeout` with `OS_SYNC_WAIT_ON_ADDRESS_SHARED` (waiters
/// and wakers are in different processes) on macOS 14.4+; before 14.4, a look at the word
/// every millisecond (the protocol's slices bound each wait above that).
pub(crate) fn wait_on_word(_: &Waits, word: &AtomicU64, expected: u64, timeout: Duration) {
    let Some((wait, _)) = os_sync() else {
        return super::poll::wait_on_word(word, expected, timeout);
    };
    let ns = timeout.as_nanos().clamp(1, u64::MAX as u128) as u64;
    // SAFETY: the address points into a live, 4-byte-aligned word of the shared page for
    // the whole call; the call only reads it. Any error (EINTR, ETIMEDOUT, EFAULT) is a
    // normal return for a waiter that re-checks the state.
    unsafe {
        wait(
            low_half(word),
            expected as u32 as u64,
            4,
            libc::OS_SYNC_WAIT_ON_ADDRESS_SHARED,
            libc::OS_CLOCK_MACH_ABSOLUTE_TIME,
            ns,
        )
    };
}

/// Wake every process sleeping in [`wait_on_word`] on `word`; 1 ("someone") when it
/// cannot tell, so the caller never treats sleepers as dead.
pub(crate) fn wake_all(_: &Waits, word: &AtomicU64) -> usize {
    let Some((_, wake)) = os_sync() else {
        return 1;
    };
    // SAFETY: as in `wait_on_word`; waking only hashes the address.
    unsafe { wake(low_half(word), 4, libc::OS_SYNC_WAKE_BY_ADDRESS_SHARED) };
    1
}

/// `CLOCK_MONOTONIC_RAW` in nanoseconds: on macOS it keeps counting while the machine
/// sleeps (`clock_gettime(3)`), is never stepped, and is one clock for every process.
#[inline]
pub(crate) fn boottime_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec; CLOCK_MONOTONIC_RAW exists since 10.12.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC_RAW, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// Always `true`: macOS has no time namespaces.
pub(crate) fn clock_is_host() -> bool {
    true
}

/// FNV-1a of `kern.bootsessionuuid` (a new one every boot), never 0; `None` when it
/// cannot be read: the caller counts that as a new boot.
pub(crate) fn boot_id_hash() -> Option<u64> {
    let mut buf = [0u8; 64];
    let mut len: libc::size_t = buf.len();
    // SAFETY: the name is a NUL-terminated literal; `buf` is writable for `len` bytes and
    // `len` is updated to what was written; no new value is set (null, 0).
    let rc = unsafe {
        libc::sysctlbyname(
            c"kern.bootsessionuuid".as_ptr(),
            buf.as_mut_ptr() as *mut c_void,
            &mut len,
            std::ptr::null_mut(),
            0,
        )
    };
    if rc != 0 {
        return None;
    }
    let id =
        CStr::from_bytes_until_nul(&buf[..len.min(buf.len())]).map_or(&buf[..0], CStr::to_bytes);
    if id.is_empty() {
        return None;
    }
    Some(super::fnv(id))
}

/// This process's start time since boot, for display: 0 (unknown) on macOS, which keeps
/// it only in `kinfo_proc`; the pid alone names the member there.
pub(crate) fn process_start_secs(_fork_epoch: u64) -> u32 {
    0
}

fn statfs_network(st: &libc::statfs) -> Option<&'static str> {
    if st.f_flags & libc::MNT_LOCAL as u32 != 0 {
        return None;
    }
    let name: Vec<u8> = st
        .f_fstypename
        .iter()
        .take_while(|&&c| c != 0)
        .map(|&c| c as u8)
        .collect();
    Some(match name.as_slice() {
        b"nfs" => "NFS",
        b"smbfs" => "SMB",
        b"afpfs" => "AFP",
        b"webdav" => "WebDAV",
        _ => "a filesystem that is not MNT_LOCAL",
    })
}

/// The network filesystem the directory `dir` is on (not `MNT_LOCAL`), if any; `None`
/// also when it cannot be told (the open that follows reports a missing directory).
pub(crate) fn network_filesystem_at(dir: &Path) -> Option<&'static str> {
    use std::os::unix::ffi::OsStrExt;
    let path = std::ffi::CString::new(dir.as_os_str().as_bytes()).ok()?;
    // SAFETY: all-zero is a valid `struct statfs` (integers and byte arrays).
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: `path` is NUL-terminated; `st` is writable.
    if unsafe { libc::statfs(path.as_ptr(), &mut st) } != 0 {
        return None;
    }
    statfs_network(&st)
}

/// The network filesystem the open `file` is on, if any.
pub(crate) fn network_filesystem_of(file: &File, _path: &Path) -> Option<&'static str> {
    // SAFETY: all-zero is a valid `struct statfs`.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: the descriptor is open for the whole call; `st` is writable.
    if unsafe { libc::fstatfs(file.as_raw_fd(), &mut st) } != 0 {
        return None;
    }
    statfs_network(&st)
}

/// A fresh open file description of the lock file, for a death watcher. macOS has no
/// `/proc/self/fd` (and opening `/dev/fd/N` duplicates the descriptor, sharing its
/// description): the path comes from `F_GETPATH`, and the file opened there must be the
/// same one (device and inode), or the watcher is not started.
pub(crate) fn watcher_handle(file: &File, _path: &Path) -> io::Result<File> {
    use std::os::unix::ffi::OsStrExt;
    use std::os::unix::fs::MetadataExt;
    let mut buf = vec![0u8; libc::PATH_MAX as usize];
    // SAFETY: F_GETPATH writes at most MAXPATHLEN (= PATH_MAX) bytes, NUL-terminated, into
    // the buffer, which is that long and writable; the descriptor is open.
    if unsafe { libc::fcntl(file.as_raw_fd(), libc::F_GETPATH, buf.as_mut_ptr()) } == -1 {
        return Err(io::Error::last_os_error());
    }
    let path = CStr::from_bytes_until_nul(&buf)
        .map_err(|_| io::Error::from(io::ErrorKind::InvalidData))?;
    let path = Path::new(std::ffi::OsStr::from_bytes(path.to_bytes()));
    let watch = open_lock_file(path, OpenHow::ReadOnly)?;
    let (theirs, ours) = (watch.metadata()?, file.metadata()?);
    if (theirs.dev(), theirs.ino()) != (ours.dev(), ours.ino()) {
        return Err(io::Error::new(
            io::ErrorKind::NotFound,
            "the lock file was replaced at its path",
        ));
    }
    Ok(watch)
}

/// Make `fd` a close-on-exec copy of `null` (in a forked child; macOS has no `dup3`);
/// `fd` on success.
///
/// # Safety
/// Both are descriptors of this process; only async-signal-safe calls are made.
pub(crate) unsafe fn redirect_fd(null: RawFd, fd: RawFd) -> i32 {
    // SAFETY: dup2 and fcntl are async-signal-safe system calls on valid descriptors.
    unsafe {
        let copied = libc::dup2(null, fd);
        if copied == fd {
            libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC);
        }
        copied
    }
}

/// Give the file at `from` the name `to` as well, failing with `AlreadyExists` if
/// anything is at `to`: `link(2)`, or where the filesystem has no hard links (FAT, exFAT,
/// SMB), `renamex_np(RENAME_EXCL)` (which moves it instead).
pub(crate) fn link_no_replace(from: &Path, to: &Path) -> io::Result<()> {
    use std::os::unix::ffi::OsStrExt;
    match std::fs::hard_link(from, to) {
        Err(e)
            if matches!(
                e.raw_os_error(),
                Some(libc::EPERM | libc::ENOTSUP | libc::EOPNOTSUPP | libc::EMLINK)
            ) =>
        {
            let cstr = |p: &Path| {
                std::ffi::CString::new(p.as_os_str().as_bytes())
                    .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))
            };
            let (from, to) = (cstr(from)?, cstr(to)?);
            // SAFETY: both are NUL-terminated paths that live across the call.
            if unsafe { libc::renamex_np(from.as_ptr(), to.as_ptr(), libc::RENAME_EXCL) } == 0 {
                Ok(())
            } else {
                Err(io::Error::last_os_error())
            }
        }
        other => other,
    }
}
