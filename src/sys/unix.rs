//! What Linux and macOS share: open-file-description byte locks through `fcntl`, the safe
//! open (`O_NOFOLLOW | O_NONBLOCK`), `errno`s a person should see, and file identity.
//!
//! `F_OFD_SETLK`, `F_OFD_SETLKW` and `F_OFD_GETLK` exist on Linux ≥ 3.15 and macOS (public
//! since the macOS 14 SDK, handled by the kernel since 10.11); `libc` defines them for both.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileExt, FileTypeExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

use crate::error::Error;

/// Kind of OFD lock.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum LockKind {
    Shared,
    Exclusive,
}

/// `F_RDLCK`, `F_WRLCK` and `F_UNLCK` are `int` on Linux and `short` on macOS; `l_type`
/// and `l_whence` are `short` on both.
fn short(value: impl Into<i32>) -> libc::c_short {
    value.into() as libc::c_short
}

fn flock(l_type: libc::c_short, byte: u64) -> libc::flock {
    // SAFETY: `flock` is a plain C struct of integers; all-zero is a valid value.
    let mut f: libc::flock = unsafe { std::mem::zeroed() };
    f.l_type = l_type;
    f.l_whence = short(libc::SEEK_SET);
    f.l_start = byte as libc::off_t;
    f.l_len = 1;
    f.l_pid = 0; // required by F_OFD_*
    f
}

fn l_type(kind: LockKind) -> libc::c_short {
    match kind {
        LockKind::Shared => short(libc::F_RDLCK),
        LockKind::Exclusive => short(libc::F_WRLCK),
    }
}

/// `fcntl(file, cmd, f)`, retried on `EINTR`.
fn fcntl_lock(file: &File, cmd: libc::c_int, f: &mut libc::flock) -> io::Result<()> {
    loop {
        // SAFETY: the descriptor is open for the whole call (borrowed from `file`); `f` is
        // a valid, writable `struct flock`, which is what the OFD lock commands take.
        let rc = unsafe { libc::fcntl(file.as_raw_fd(), cmd, f as *mut libc::flock) };
        if rc != -1 {
            return Ok(());
        }
        let e = io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::EINTR) {
            return Err(e);
        }
    }
}

/// Take (or convert to) an OFD lock on one byte without blocking. `Ok(false)` when another
/// open file description holds a conflicting lock.
pub(crate) fn try_lock(file: &File, kind: LockKind, byte: u64) -> io::Result<bool> {
    let mut f = flock(l_type(kind), byte);
    match fcntl_lock(file, libc::F_OFD_SETLK, &mut f) {
        Ok(()) => Ok(true),
        Err(e) if matches!(e.raw_os_error(), Some(libc::EAGAIN | libc::EACCES)) => Ok(false),
        Err(e) => Err(e),
    }
}

/// Turn this description's lock on `byte` into one of `kind` (an OFD lock converts in
/// place, atomically); `Ok(false)` when another description's lock forbids it.
pub(crate) fn convert(file: &File, kind: LockKind, byte: u64) -> io::Result<bool> {
    try_lock(file, kind, byte)
}

/// The handle [`locked_by_other`] probes a mapping's member bytes through: `None`, the
/// mapping's own description (`F_OFD_GETLK` ignores the description's own locks).
pub(crate) fn probe_handle(_file: &File, _path: &Path) -> io::Result<Option<File>> {
    Ok(None)
}

/// Take an OFD lock on one byte, blocking until no other open file description holds a
/// conflicting one (used only by death watchers, on their own open file description).
pub(crate) fn lock_blocking(file: &File, kind: LockKind, byte: u64) -> io::Result<()> {
    let mut f = flock(l_type(kind), byte);
    fcntl_lock(file, libc::F_OFD_SETLKW, &mut f)
}

/// Drop this open file description's lock on one byte.
pub(crate) fn unlock(file: &File, byte: u64) -> io::Result<()> {
    let mut f = flock(short(libc::F_UNLCK), byte);
    fcntl_lock(file, libc::F_OFD_SETLK, &mut f)
}

/// Whether another open file description holds an *exclusive* lock on the byte (without
/// taking it). Works on a read-only descriptor.
///
/// Members hold their byte exclusively; a shared lock on it is a death watcher that the
/// kernel has just granted it (the member died) or a read-only process, never a member —
/// so probing with a shared lock (which conflicts only with exclusive ones) is what tells
/// "alive".
pub(crate) fn locked_by_other(file: &File, byte: u64) -> io::Result<bool> {
    let mut f = flock(short(libc::F_RDLCK), byte);
    fcntl_lock(file, libc::F_OFD_GETLK, &mut f)?;
    Ok(f.l_type != short(libc::F_UNLCK))
}

/// A mapping's wait state: none, the kernel sleeps on the word's address (futex,
/// `os_sync_wait_on_address`).
pub(crate) struct Waits;

impl Waits {
    /// For the file `key` mapped at `base`.
    pub(crate) fn new(_key: (u64, u64), _base: usize) -> Waits {
        Waits
    }
}

/// How the safe open opens the lock file.
#[derive(Clone, Copy)]
pub(crate) enum OpenHow {
    ReadOnly,
    ReadWrite,
    /// Create it (failing if it exists) with this mode, read-write.
    CreateNew(u32),
}

/// Open the lock file never following a symlink, close-on-exec (std's default),
/// non-blocking (so a FIFO at the path cannot hang us).
pub(crate) fn open_lock_file(path: &Path, how: OpenHow) -> io::Result<File> {
    let mut options = OpenOptions::new();
    options
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK);
    match how {
        OpenHow::ReadOnly => {}
        OpenHow::ReadWrite => {
            options.write(true);
        }
        OpenHow::CreateNew(mode) => {
            options.write(true).create_new(true).mode(mode);
        }
    }
    options.open(path)
}

/// Give a file exactly `mode`, whatever the umask.
pub(crate) fn set_mode(file: &File, mode: u32) -> io::Result<()> {
    file.set_permissions(std::fs::Permissions::from_mode(mode))
}

/// The permission bits of a data file, for its lock file (`rw` bits only).
pub(crate) fn data_file_mode(meta: &std::fs::Metadata) -> u32 {
    meta.permissions().mode() & 0o666
}

/// The number of names (hard links) the file has.
pub(crate) fn link_count(_path: &Path, meta: &std::fs::Metadata) -> u64 {
    meta.nlink()
}

/// Whether this process may write the file at `path` (`access(W_OK)`).
pub(crate) fn may_write(path: &Path) -> bool {
    nix::unistd::access(path, nix::unistd::AccessFlags::W_OK).is_ok()
}

/// Map an `open(2)` failure to the error a person should see; `None`: a plain I/O error.
pub(crate) fn open_error_kind(e: &io::Error) -> Option<&'static str> {
    match e.raw_os_error()? {
        libc::ELOOP => Some("a symbolic link (refused: O_NOFOLLOW)"),
        libc::EISDIR => Some("a directory"),
        libc::ENXIO | libc::EOPNOTSUPP => Some("a socket or special file"),
        _ => None,
    }
}

/// What a file that is not a regular file is, for the error.
pub(crate) fn special_kind(ft: &std::fs::FileType) -> &'static str {
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
    }
}

/// The file's identity on this host: (device, inode).
pub(crate) fn file_key(_file: &File, meta: &std::fs::Metadata) -> io::Result<(u64, u64)> {
    Ok((meta.dev(), meta.ino()))
}

/// The identity of the file at `path` (not following a symlink), if it is a regular file.
pub(crate) fn path_key(path: &Path) -> Option<(u64, u64)> {
    let meta = std::fs::symlink_metadata(path).ok()?;
    meta.is_file().then(|| (meta.dev(), meta.ino()))
}

/// Read exactly `buf.len()` bytes at `offset` (`pread`: no shared file position).
pub(crate) fn read_at(file: &File, buf: &mut [u8], offset: u64) -> io::Result<()> {
    file.read_exact_at(buf, offset)
}

/// `Error` for an open failure (see [`open_error_kind`]).
pub(crate) fn open_error(path: &Path, e: io::Error) -> Error {
    match open_error_kind(&e) {
        Some(found) => Error::NotARegularFile {
            path: path.to_path_buf(),
            found,
        },
        None => Error::io("open", path, e),
    }
}
