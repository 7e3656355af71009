//! The Windows kernel file: `LockFileEx` byte locks, `GetDriveTypeW`, `GetTickCount64`,
//! and waits on named events. The page is mapped by memmap2 (`CreateFileMappingW` /
//! `MapViewOfFile`); there is no fork, so no fork hook ([`fork`] is empty).
//!
//! `LockFileEx` locks belong to a *handle* (two handles of one process conflict, like two
//! open file descriptions), are released by the system when the handle is closed or its
//! process ends, and are mandatory: they sit on bytes past the page ([`crate::page`]'s
//! `DEAD_MAN_SWITCH_BYTE` and `MEMBER_LOCK_BASE`), which nobody reads or writes. Unlike OFD
//! locks they cannot be converted in place, and there is no `F_OFD_GETLK`: see [`convert`]
//! and [`locked_by_other`].

use std::fs::{File, OpenOptions};
use std::io;
use std::os::windows::ffi::OsStrExt;
use std::os::windows::fs::{FileExt, OpenOptionsExt};
use std::os::windows::io::{AsRawHandle, FromRawHandle, OwnedHandle};
use std::path::{Component, Path, Prefix};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use windows_sys::Win32::Foundation::{
    GetLastError, ERROR_INVALID_FUNCTION, ERROR_LOCK_VIOLATION, ERROR_NOT_SUPPORTED, FILETIME,
    GENERIC_READ, HANDLE, INVALID_HANDLE_VALUE, WAIT_OBJECT_0, WAIT_TIMEOUT,
};
use windows_sys::Win32::Storage::FileSystem::{
    GetDriveTypeW, GetFileInformationByHandle, LockFileEx, MoveFileExW, ReOpenFile, UnlockFileEx,
    BY_HANDLE_FILE_INFORMATION, FILE_FLAG_OPEN_REPARSE_POINT, FILE_SHARE_DELETE, FILE_SHARE_READ,
    FILE_SHARE_WRITE, LOCKFILE_EXCLUSIVE_LOCK, LOCKFILE_FAIL_IMMEDIATELY,
};
use windows_sys::Win32::System::SystemInformation::GetTickCount64;
use windows_sys::Win32::System::Threading::{
    CreateEventW, GetCurrentProcess, GetProcessTimes, SetEvent, WaitForSingleObject,
};
use windows_sys::Win32::System::WindowsProgramming::DRIVE_REMOTE;
use windows_sys::Win32::System::IO::OVERLAPPED;

use crate::error::Error;

/// Kind of byte lock.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum LockKind {
    Shared,
    Exclusive,
}

fn handle(file: &File) -> HANDLE {
    file.as_raw_handle() as HANDLE
}

/// An `OVERLAPPED` naming `byte` as the offset (the handle is synchronous, so the call
/// completes before it returns and the structure need not outlive it).
fn at(byte: u64) -> OVERLAPPED {
    let mut o = OVERLAPPED::default();
    o.Anonymous.Anonymous.Offset = byte as u32;
    o.Anonymous.Anonymous.OffsetHigh = (byte >> 32) as u32;
    o
}

fn lock(file: &File, kind: LockKind, byte: u64, wait: bool) -> io::Result<bool> {
    let mut flags = 0;
    if kind == LockKind::Exclusive {
        flags |= LOCKFILE_EXCLUSIVE_LOCK;
    }
    if !wait {
        flags |= LOCKFILE_FAIL_IMMEDIATELY;
    }
    let mut o = at(byte);
    // SAFETY: the handle is open for the whole call (borrowed from `file`) and was opened
    // for synchronous I/O, so LockFileEx completes (or fails) before returning and `o`,
    // a valid OVERLAPPED on this stack frame, is not used after it.
    let ok = unsafe { LockFileEx(handle(file), flags, 0, 1, 0, &mut o) };
    if ok != 0 {
        return Ok(true);
    }
    // SAFETY: no preconditions.
    match unsafe { GetLastError() } {
        ERROR_LOCK_VIOLATION if !wait => Ok(false),
        _ => Err(io::Error::last_os_error()),
    }
}

/// Take a lock on one byte without blocking. `Ok(false)` when another handle holds a
/// conflicting lock. (To change the kind of a lock this handle holds, use [`convert`].)
pub(crate) fn try_lock(file: &File, kind: LockKind, byte: u64) -> io::Result<bool> {
    lock(file, kind, byte, false)
}

/// Turn this handle's lock on `byte` into one of `kind`; `Ok(false)` when another handle's
/// lock forbids it. Windows cannot convert a lock in place: a shared lock stacks on the
/// same handle's exclusive one and the first unlock drops the exclusive one (a downgrade
/// with no unlocked instant); an upgrade unlocks, tries exclusive, and on failure takes
/// the shared lock back if it still can.
pub(crate) fn convert(file: &File, kind: LockKind, byte: u64) -> io::Result<bool> {
    match kind {
        LockKind::Shared => {
            if !lock(file, LockKind::Shared, byte, false)? {
                return Ok(false);
            }
            unlock(file, byte)?;
            Ok(true)
        }
        LockKind::Exclusive => {
            unlock(file, byte)?;
            if lock(file, LockKind::Exclusive, byte, false)? {
                return Ok(true);
            }
            lock(file, LockKind::Shared, byte, false)?;
            Ok(false)
        }
    }
}

/// Take a lock on one byte, blocking until no other handle holds a conflicting one (used
/// only by death watchers, on a handle of their own).
pub(crate) fn lock_blocking(file: &File, kind: LockKind, byte: u64) -> io::Result<()> {
    lock(file, kind, byte, true).map(drop)
}

/// Drop this handle's lock on one byte (its exclusive one first, if it holds both).
pub(crate) fn unlock(file: &File, byte: u64) -> io::Result<()> {
    let mut o = at(byte);
    // SAFETY: as in `lock`.
    if unsafe { UnlockFileEx(handle(file), 0, 1, 0, &mut o) } == 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Whether another handle holds an *exclusive* lock on the byte. Windows has no
/// `F_OFD_GETLK`: this takes a shared lock (which conflicts only with exclusive ones) and
/// drops it at once, so `file` must hold no lock on `byte` — a handle of its own
/// ([`probe_handle`]), or `inspect`'s fresh read-only one. The instant it holds the shared
/// lock, another handle's exclusive `try_lock` on that byte fails: a member claim or a reap
/// that meets a probe fails once and is tried again, never wrongly succeeds.
pub(crate) fn locked_by_other(file: &File, byte: u64) -> io::Result<bool> {
    if !lock(file, LockKind::Shared, byte, false)? {
        return Ok(true);
    }
    unlock(file, byte)?;
    Ok(false)
}

/// A new handle of the same file (read access, which `LockFileEx` needs), opened for
/// synchronous I/O, holding no locks.
fn reopen(file: &File) -> io::Result<File> {
    // SAFETY: the handle is open for the whole call; ReOpenFile returns a new handle that
    // we own (or INVALID_HANDLE_VALUE).
    let h = unsafe {
        ReOpenFile(
            handle(file),
            GENERIC_READ,
            FILE_SHARE_READ | FILE_SHARE_WRITE | FILE_SHARE_DELETE,
            0,
        )
    };
    if h == INVALID_HANDLE_VALUE {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `h` is a valid handle that nothing else owns.
    Ok(File::from(unsafe { OwnedHandle::from_raw_handle(h as _) }))
}

/// The handle [`locked_by_other`] probes a mapping's member bytes through: the mapping's
/// own handle holds its member's lock, and a probe on it would stack on that lock.
pub(crate) fn probe_handle(file: &File, _path: &Path) -> io::Result<Option<File>> {
    reopen(file).map(Some)
}

/// A new handle of the lock file for a death watcher's blocking lock.
pub(crate) fn watcher_handle(file: &File, _path: &Path) -> io::Result<File> {
    reopen(file)
}

/// A mapping's wait state: one named auto-reset event per page word that anyone sleeps on,
/// `Local\shmlock-<volume>-<file index>-<offset>`, opened (or created) on first use and
/// kept as long as the mapping. `WaitOnAddress` would wake only threads of the waker's
/// process; a named event reaches every process of the session.
pub(crate) struct Waits {
    key: (u64, u64),
    base: usize,
    /// (offset of the word in the page, its event); `None`: the event could not be made.
    events: parking_lot::Mutex<Vec<(usize, Option<OwnedHandle>)>>,
}

impl Waits {
    /// For the file `key` mapped at `base`.
    pub(crate) fn new(key: (u64, u64), base: usize) -> Waits {
        Waits {
            key,
            base,
            events: parking_lot::Mutex::new(Vec::new()),
        }
    }

    /// The event of `word` (`None`: not a word of the page, or no event could be made:
    /// the caller polls).
    fn event(&self, word: &AtomicU64) -> Option<HANDLE> {
        let offset = (word.as_ptr() as usize).checked_sub(self.base)?;
        if offset >= crate::page::PAGE_SIZE {
            return None;
        }
        let mut events = self.events.lock();
        if let Some((_, event)) = events.iter().find(|(at, _)| *at == offset) {
            return event.as_ref().map(|h| h.as_raw_handle() as HANDLE);
        }
        let name: Vec<u16> = format!(
            "Local\\shmlock-{:x}-{:x}-{offset:x}",
            self.key.0, self.key.1
        )
        .encode_utf16()
        .chain([0])
        .collect();
        // SAFETY: default security (null), an auto-reset event, initially unset; `name` is
        // NUL-terminated UTF-16 that outlives the call. The result is a new handle we own,
        // or null.
        let h = unsafe { CreateEventW(std::ptr::null(), 0, 0, name.as_ptr()) };
        // SAFETY: a non-null result is a valid event handle nothing else owns.
        let event = (!h.is_null()).then(|| unsafe { OwnedHandle::from_raw_handle(h as _) });
        let raw = event.as_ref().map(|e| e.as_raw_handle() as HANDLE);
        events.push((offset, event));
        raw
    }
}

/// How long one wait on an event lasts before the waiter looks at the word again: what a
/// waiter in another session (another `Local\` namespace) or without its event waits at
/// most for a change nobody signalled to it.
const LOOK_EVERY: Duration = Duration::from_millis(16);

/// Sleep until `word`'s low 32 bits differ from `expected`'s, a wake-up, or `timeout`, on
/// the word's named event (auto-reset): a waker sets it after changing the word; a woken
/// waiter that sees the change sets it again for the next sleeper of the word and returns,
/// so one set wakes them all in turn. The last one's set is left over: the next waiter
/// consumes it, sees no change and waits again at once; a second such wake in one wait (a
/// never-reset event squatting the name) costs a millisecond's sleep, so nothing can make
/// it spin. The word is also looked at
/// every [`LOOK_EVERY`]. Without an event, it polls every millisecond (`sys/poll.rs`).
pub(crate) fn wait_on_word(waits: &Waits, word: &AtomicU64, expected: u64, timeout: Duration) {
    let Some(event) = waits.event(word) else {
        return super::poll::wait_on_word(word, expected, timeout);
    };
    let start = Instant::now();
    let changed = || word.load(Ordering::SeqCst) as u32 != expected as u32;
    let mut stale = 0u32;
    loop {
        if changed() {
            return;
        }
        let left = timeout.saturating_sub(start.elapsed());
        if left.is_zero() {
            return;
        }
        let ms = left.min(LOOK_EVERY).as_micros().div_ceil(1000) as u32;
        // SAFETY: `event` is a live event handle owned by `waits`, which the caller
        // borrows for the whole call.
        match unsafe { WaitForSingleObject(event, ms) } {
            WAIT_OBJECT_0 if changed() => {
                // SAFETY: as above.
                unsafe { SetEvent(event) };
                return;
            }
            WAIT_OBJECT_0 => {
                stale += 1;
                if stale > 1 {
                    std::thread::sleep(Duration::from_millis(1));
                }
            }
            WAIT_TIMEOUT => {}
            _ => return super::poll::wait_on_word(word, expected, left),
        }
    }
}

/// Wake every sleeper in [`wait_on_word`] on `word` (set its event: the first sleeper
/// passes it on). Says 1 ("someone", since it cannot tell) so the caller never treats
/// sleepers as dead.
pub(crate) fn wake_all(waits: &Waits, word: &AtomicU64) -> usize {
    if let Some(event) = waits.event(word) {
        // SAFETY: `event` is a live event handle owned by `waits`.
        unsafe { SetEvent(event) };
    }
    1
}

/// Milliseconds since boot, sleep and hibernation included, on every process's same clock
/// (`GetTickCount64`), in nanoseconds. Its resolution is the timer's (1 to 15.6 ms): ample
/// for leases of seconds.
#[inline]
pub(crate) fn boottime_ns() -> u64 {
    // SAFETY: no preconditions.
    unsafe { GetTickCount64() }.saturating_mul(1_000_000)
}

/// Always `true`: Windows has one boot clock for every process.
pub(crate) fn clock_is_host() -> bool {
    true
}

/// The boot identity: the wall-clock minute the host booted (now minus the tick count),
/// hashed. A step of the wall clock, or a reading that straddles a minute, gives another
/// value; that only costs the generation jump of a page that seems to come from another
/// boot (the safe direction).
pub(crate) fn boot_id_hash() -> Option<u64> {
    let now_ms = super::unix_ns() / 1_000_000;
    let up_ms = boottime_ns() / 1_000_000;
    let boot_minute = now_ms.saturating_sub(up_ms) / 60_000;
    Some(super::fnv(&boot_minute.to_le_bytes()))
}

/// Give the file at `from` the name `to` as well, failing with `AlreadyExists` if
/// anything is at `to`: a hard link (`CreateHardLinkW`), or where the volume has none (FAT,
/// exFAT), a move that replaces nothing (`MoveFileExW` without
/// `MOVEFILE_REPLACE_EXISTING`).
pub(crate) fn link_no_replace(from: &Path, to: &Path) -> io::Result<()> {
    match std::fs::hard_link(from, to) {
        Err(e)
            if matches!(
                e.raw_os_error().map(|c| c as u32),
                Some(ERROR_INVALID_FUNCTION | ERROR_NOT_SUPPORTED)
            ) =>
        {
            let wide = |p: &Path| -> Vec<u16> { p.as_os_str().encode_wide().chain([0]).collect() };
            let (from, to) = (wide(from), wide(to));
            // SAFETY: both are NUL-terminated UTF-16 paths that live across the call.
            if unsafe { MoveFileExW(from.as_ptr(), to.as_ptr(), 0) } == 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        }
        other => other,
    }
}

/// The number of names the file at `path` has (1 when it cannot be told).
pub(crate) fn link_count(path: &Path, _meta: &std::fs::Metadata) -> u64 {
    let Ok(file) = OpenOptions::new()
        .access_mode(0)
        .share_mode(FILE_SHARE_READ | FILE_SHARE_WRITE | FILE_SHARE_DELETE)
        .open(path)
    else {
        return 1;
    };
    // SAFETY: all-zero is a valid BY_HANDLE_FILE_INFORMATION (integers only).
    let mut info: BY_HANDLE_FILE_INFORMATION = unsafe { std::mem::zeroed() };
    // SAFETY: the handle is open for the whole call; `info` is writable.
    if unsafe { GetFileInformationByHandle(handle(&file), &mut info) } == 0 {
        return 1;
    }
    info.nNumberOfLinks as u64
}

/// This process's start time in whole seconds since boot (0 if unknown), for display.
pub(crate) fn process_start_secs(_fork_epoch: u64) -> u32 {
    let zero = FILETIME {
        dwLowDateTime: 0,
        dwHighDateTime: 0,
    };
    let (mut created, mut exited, mut kernel, mut user) = (zero, zero, zero, zero);
    // SAFETY: GetCurrentProcess returns a pseudo-handle valid in this process; the four
    // pointers are to writable FILETIMEs on this stack frame.
    let ok = unsafe {
        GetProcessTimes(
            GetCurrentProcess(),
            &mut created,
            &mut exited,
            &mut kernel,
            &mut user,
        )
    };
    if ok == 0 {
        return 0;
    }
    // FILETIME: 100 ns since 1601-01-01; the Unix epoch is 11,644,473,600 s later.
    let ticks = (created.dwHighDateTime as u64) << 32 | created.dwLowDateTime as u64;
    let created_unix_s = (ticks / 10_000_000).saturating_sub(11_644_473_600);
    let boot_unix_s =
        (super::unix_ns() / 1_000_000_000).saturating_sub(boottime_ns() / 1_000_000_000);
    created_unix_s
        .saturating_sub(boot_unix_s)
        .min(u32::MAX as u64) as u32
}

/// Whether `path` (made absolute) is on a network: a UNC path (`\\server\share`), a device
/// path (`\\.\`), or a drive letter that `GetDriveTypeW` says is remote.
fn network_path(path: &Path) -> Option<&'static str> {
    let absolute = std::path::absolute(path).ok()?;
    match absolute.components().next()? {
        Component::Prefix(prefix) => match prefix.kind() {
            Prefix::UNC(..) | Prefix::VerbatimUNC(..) => Some("a network share (UNC path)"),
            Prefix::DeviceNS(..) => Some("a device path"),
            Prefix::Disk(letter) | Prefix::VerbatimDisk(letter) => {
                let root: Vec<u16> = format!("{}:\\", letter as char)
                    .encode_utf16()
                    .chain([0])
                    .collect();
                // SAFETY: `root` is a NUL-terminated UTF-16 string that outlives the call.
                let kind = unsafe { GetDriveTypeW(root.as_ptr()) };
                (kind == DRIVE_REMOTE).then_some("a remote drive (SMB)")
            }
            Prefix::Verbatim(..) => None,
        },
        _ => None,
    }
}

/// The network filesystem the directory `dir` is on, if any.
pub(crate) fn network_filesystem_at(dir: &Path) -> Option<&'static str> {
    network_path(dir)
}

/// The network filesystem the open lock file at `path` is on, if any.
pub(crate) fn network_filesystem_of(_file: &File, path: &Path) -> Option<&'static str> {
    network_path(path)
}

/// How the safe open opens the lock file.
#[derive(Clone, Copy)]
pub(crate) enum OpenHow {
    ReadOnly,
    ReadWrite,
    /// Create it (failing if it exists), read-write.
    CreateNew(#[expect(dead_code, reason = "the Unix mode: Windows files have none")] u32),
}

/// Open the lock file without following a symlink or junction
/// (`FILE_FLAG_OPEN_REPARSE_POINT`: the link itself is opened, and refused as not a
/// regular file), sharing read, write and delete with other openers.
pub(crate) fn open_lock_file(path: &Path, how: OpenHow) -> io::Result<File> {
    if path.as_os_str().encode_wide().take(2).eq([b'\\' as u16; 2]) {
        // \\server\share, \\.\pipe\..., \\?\...: a network share, a pipe or a device
        // namespace. Refused before any open (a pipe's open could wait for its server).
        let verbatim_disk = matches!(
            path.components().next(),
            Some(Component::Prefix(p)) if matches!(p.kind(), Prefix::VerbatimDisk(_))
        );
        if !verbatim_disk {
            return Err(io::Error::new(
                io::ErrorKind::Unsupported,
                "UNC and device paths are refused",
            ));
        }
    }
    let mut options = OpenOptions::new();
    options
        .read(true)
        .custom_flags(FILE_FLAG_OPEN_REPARSE_POINT)
        .share_mode(FILE_SHARE_READ | FILE_SHARE_WRITE | FILE_SHARE_DELETE);
    match how {
        OpenHow::ReadOnly => {}
        OpenHow::ReadWrite => {
            options.write(true);
        }
        OpenHow::CreateNew(_) => {
            options.write(true).create_new(true);
        }
    }
    options.open(path)
}

/// Windows files have no Unix mode; access is the directory's ACL's.
pub(crate) fn set_mode(_file: &File, _mode: u32) -> io::Result<()> {
    Ok(())
}

/// A data file's mode for its lock file: read-only stays read-only.
pub(crate) fn data_file_mode(meta: &std::fs::Metadata) -> u32 {
    if meta.permissions().readonly() {
        0o444
    } else {
        0o666
    }
}

/// Whether this process may write the file at `path`: it can open it for writing (the
/// ACL's answer; nothing is written, and the handle is closed at once).
pub(crate) fn may_write(path: &Path) -> bool {
    OpenOptions::new()
        .write(true)
        .share_mode(FILE_SHARE_READ | FILE_SHARE_WRITE | FILE_SHARE_DELETE)
        .open(path)
        .is_ok()
}

/// `Error` for an open failure.
pub(crate) fn open_error(path: &Path, e: io::Error) -> Error {
    let found = if e.kind() == io::ErrorKind::Unsupported {
        Some("a UNC or device path (refused)")
    } else if e.kind() == io::ErrorKind::PermissionDenied
        && std::fs::symlink_metadata(path).is_ok_and(|m| m.is_dir())
    {
        // CreateFileW on a directory without FILE_FLAG_BACKUP_SEMANTICS: access denied.
        Some("a directory")
    } else {
        None
    };
    match found {
        Some(found) => Error::NotARegularFile {
            path: path.to_path_buf(),
            found,
        },
        None => Error::io("open", path, e),
    }
}

/// What a file that is not a regular file is, for the error.
pub(crate) fn special_kind(ft: &std::fs::FileType) -> &'static str {
    if ft.is_dir() {
        "a directory"
    } else if ft.is_symlink() {
        "a symbolic link or junction (refused: FILE_FLAG_OPEN_REPARSE_POINT)"
    } else {
        "not a regular file"
    }
}

/// The file's identity on this host: (volume serial number, file index).
pub(crate) fn file_key(file: &File, _meta: &std::fs::Metadata) -> io::Result<(u64, u64)> {
    // SAFETY: all-zero is a valid BY_HANDLE_FILE_INFORMATION (integers only).
    let mut info: BY_HANDLE_FILE_INFORMATION = unsafe { std::mem::zeroed() };
    // SAFETY: the handle is open for the whole call; `info` is writable.
    if unsafe { GetFileInformationByHandle(handle(file), &mut info) } == 0 {
        return Err(io::Error::last_os_error());
    }
    Ok((
        info.dwVolumeSerialNumber as u64,
        (info.nFileIndexHigh as u64) << 32 | info.nFileIndexLow as u64,
    ))
}

/// The identity of the regular file at `path` (not following a symlink), if there is one.
pub(crate) fn path_key(path: &Path) -> Option<(u64, u64)> {
    let file = OpenOptions::new()
        .access_mode(0)
        .custom_flags(FILE_FLAG_OPEN_REPARSE_POINT)
        .share_mode(FILE_SHARE_READ | FILE_SHARE_WRITE | FILE_SHARE_DELETE)
        .open(path)
        .ok()?;
    let meta = file.metadata().ok()?;
    if !meta.is_file() {
        return None;
    }
    file_key(&file, &meta).ok()
}

/// Read exactly `buf.len()` bytes at `offset`.
pub(crate) fn read_at(file: &File, mut buf: &mut [u8], mut offset: u64) -> io::Result<()> {
    while !buf.is_empty() {
        match file.seek_read(buf, offset) {
            Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
            Ok(n) => {
                buf = &mut std::mem::take(&mut buf)[n..];
                offset += n as u64;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// No fork on Windows: nothing to track, no hook, and the epoch never moves. The types
/// have the Unix fork hook's shapes (`sys/fork.rs`) so the open sequence is the same.
pub(crate) mod fork {
    use std::fs::File;
    use std::io;

    use memmap2::{MmapOptions, MmapRaw};

    /// A handle of this library (nothing to track: no child inherits it).
    pub(crate) struct TrackedFile {
        file: File,
    }

    impl TrackedFile {
        /// Run `open`.
        pub(crate) fn open(open: impl FnOnce() -> io::Result<File>) -> io::Result<TrackedFile> {
            open().map(|file| TrackedFile { file })
        }

        /// A second handle of the same file object (`DuplicateHandle`).
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

    /// A shared read-write mapping of this library.
    pub(crate) struct TrackedMap {
        map: MmapRaw,
    }

    impl TrackedMap {
        /// Map the first `len` bytes of `file`.
        pub(crate) fn map(file: &File, len: usize) -> io::Result<TrackedMap> {
            let map = MmapOptions::new().len(len).map_raw(file)?;
            Ok(TrackedMap { map })
        }

        /// The mapping's first byte.
        #[inline]
        pub(crate) fn as_ptr(&self) -> *const u8 {
            self.map.as_ptr()
        }
    }

    /// The registry's lock: an ordinary mutex where no fork can interrupt it.
    pub(crate) type ForkSafeMutex<T> = parking_lot::Mutex<T>;

    /// Nothing to install.
    pub(crate) fn install_fork_hooks() {}

    /// Always 0.
    #[inline]
    pub(crate) fn fork_epoch() -> u64 {
        0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn open_rw(path: &Path) -> File {
        open_lock_file(path, OpenHow::ReadWrite).unwrap()
    }

    #[test]
    fn handle_locks_conflict_the_probe_leaves_nothing_and_convert_keeps_the_lock() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("locks");
        std::fs::write(&path, b"").unwrap();
        let (a, b) = (open_rw(&path), open_rw(&path));
        let ro = open_lock_file(&path, OpenHow::ReadOnly).unwrap();
        assert!(try_lock(&a, LockKind::Exclusive, 5000).unwrap());
        // Two handles of one process conflict, like two open file descriptions.
        assert!(!try_lock(&b, LockKind::Exclusive, 5000).unwrap());
        assert!(!try_lock(&b, LockKind::Shared, 5000).unwrap());
        assert!(locked_by_other(&b, 5000).unwrap());
        assert!(locked_by_other(&ro, 5000).unwrap());
        // A downgrade never leaves the byte unlocked and ends shared.
        assert!(convert(&a, LockKind::Shared, 5000).unwrap());
        assert!(!try_lock(&b, LockKind::Exclusive, 5000).unwrap());
        assert!(try_lock(&b, LockKind::Shared, 5000).unwrap());
        // An upgrade fails while another handle shares it, and keeps the shared lock.
        assert!(!convert(&a, LockKind::Exclusive, 5000).unwrap());
        unlock(&b, 5000).unwrap();
        assert!(!locked_by_other(&ro, 5000).unwrap());
        assert!(
            !try_lock(&b, LockKind::Exclusive, 5000).unwrap(),
            "a still shares it"
        );
        assert!(convert(&a, LockKind::Exclusive, 5000).unwrap());
        assert!(locked_by_other(&ro, 5000).unwrap());
        unlock(&a, 5000).unwrap();
        // The probe took and dropped its lock: the byte is free for anyone.
        assert!(!locked_by_other(&ro, 5000).unwrap());
        assert!(try_lock(&b, LockKind::Exclusive, 5000).unwrap());
        unlock(&b, 5000).unwrap();
        // A closed handle's locks are gone.
        assert!(try_lock(&a, LockKind::Exclusive, 7000).unwrap());
        drop(a);
        assert!(try_lock(&b, LockKind::Exclusive, 7000).unwrap());
    }

    #[test]
    fn unc_and_device_paths_are_refused_and_local_ones_are_not() {
        assert!(network_path(Path::new(r"\\server\share\app.db-shm")).is_some());
        assert!(network_path(Path::new(r"\\?\UNC\server\share\x")).is_some());
        assert!(network_path(Path::new(r"\\.\pipe\x")).is_some());
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(network_path(dir.path()), None);
        let e = open_lock_file(Path::new(r"\\.\pipe\shmlock-test"), OpenHow::ReadOnly);
        assert_eq!(e.unwrap_err().kind(), io::ErrorKind::Unsupported);
    }

    #[test]
    fn the_boot_clock_moves_and_the_key_names_the_file() {
        let t0 = boottime_ns();
        std::thread::sleep(Duration::from_millis(40));
        assert!(boottime_ns() > t0);
        assert_eq!(boot_id_hash(), boot_id_hash());
        let dir = tempfile::tempdir().unwrap();
        let (p, q) = (dir.path().join("p"), dir.path().join("q"));
        std::fs::write(&p, b"").unwrap();
        std::fs::write(&q, b"").unwrap();
        let f = open_rw(&p);
        let key = file_key(&f, &f.metadata().unwrap()).unwrap();
        assert_eq!(path_key(&p), Some(key));
        assert_ne!(path_key(&q), Some(key));
        assert_eq!(path_key(dir.path()), None, "a directory has no key");
    }
}
