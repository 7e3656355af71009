//! The Linux kernel file: futexes, `CLOCK_BOOTTIME` and time namespaces, `boot_id`,
//! `/proc`, `statfs` magics; the OFD locks and the safe open are shared with macOS
//! ([`super::unix`]).

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::path::Path;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

pub(crate) use super::unix::*;

use nix::errno::Errno;

/// Address of the 32 bits of `word` that hold its low half (what a futex compares).
fn futex_addr(word: &AtomicU64) -> *const u32 {
    let base = word.as_ptr() as *const u32;
    if cfg!(target_endian = "big") {
        base.wrapping_add(1)
    } else {
        base
    }
}

/// Sleep until `word`'s low 32 bits differ from `expected`'s, a wake-up, or `timeout`.
/// A shared (not private) futex: waiters and wakers are in different processes.
pub(crate) fn wait_on_word(_: &Waits, word: &AtomicU64, expected: u64, timeout: Duration) {
    let ts = libc::timespec {
        tv_sec: timeout.as_secs().min(i64::MAX as u64) as libc::time_t,
        tv_nsec: timeout.subsec_nanos() as libc::c_long,
    };
    // SAFETY: the address points into a live, 4-byte-aligned word of the shared page (or
    // of a heap page) for the whole call; FUTEX_WAIT only reads it; `ts` outlives the call.
    // EAGAIN (value changed), ETIMEDOUT and EINTR are normal returns for a waiter that
    // re-checks the state.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_futex,
            futex_addr(word),
            libc::FUTEX_WAIT,
            expected as u32,
            &ts as *const libc::timespec,
            std::ptr::null::<u32>(),
            0u32,
        )
    };
    if rc == -1
        && !matches!(
            Errno::last(),
            Errno::EAGAIN | Errno::ETIMEDOUT | Errno::EINTR
        )
    {
        // The call is refused (a seccomp filter: ENOSYS, EPERM): sleep a little instead,
        // so that a waiter polls rather than spins until its deadline.
        std::thread::sleep(timeout.min(Duration::from_millis(1)));
    }
}

/// Wake every process sleeping in [`wait_on_word`] on `word`; returns how many were woken.
pub(crate) fn wake_all(_: &Waits, word: &AtomicU64) -> usize {
    // SAFETY: as in `futex_wait`; FUTEX_WAKE does not access the word's memory beyond
    // hashing its address.
    let woken = unsafe {
        libc::syscall(
            libc::SYS_futex,
            futex_addr(word),
            libc::FUTEX_WAKE,
            i32::MAX,
            std::ptr::null::<libc::timespec>(),
            std::ptr::null::<u32>(),
            0u32,
        )
    };
    // On an error, say "someone": the caller then does not treat the sleepers as dead.
    usize::try_from(woken).unwrap_or(1)
}

/// `CLOCK_BOOTTIME` of this process's time namespace, in nanoseconds.
#[inline]
fn raw_boottime_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec; CLOCK_BOOTTIME exists on Linux >= 2.6.39.
    unsafe { libc::clock_gettime(libc::CLOCK_BOOTTIME, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// The host's `CLOCK_BOOTTIME` in nanoseconds: monotonic, counts suspend, not stepped when
/// the wall clock is, and the same in every process whatever its time namespace (Linux ≥
/// 5.6 lets a namespace offset its boot clock; the offset is subtracted here, so every
/// stamp in the page is on one clock). See [`clock_is_host`] for the one case it cannot
/// know the offset.
#[inline]
pub(crate) fn boottime_ns() -> u64 {
    raw_boottime_ns().wrapping_sub(time_namespace().offset_ns as u64)
}

/// Whether [`boottime_ns`] is known to be the host's clock: `false` in a process that
/// unshared a time namespace for its children (its own namespace's offset is then not
/// readable), and wherever `/proc` is hidden on a kernel that may have time namespaces
/// (the offset is unknown). Such a process declares no lease and judges none.
pub(crate) fn clock_is_host() -> bool {
    time_namespace().known
}

#[derive(Clone, Copy)]
struct TimeNamespace {
    offset_ns: i64,
    known: bool,
}

/// This process's boot-clock offset, read once per process (and again in a forked child,
/// which may be in another time namespace).
fn time_namespace() -> TimeNamespace {
    use std::sync::atomic::Ordering::{Acquire, Release};
    use std::sync::atomic::{AtomicI64, AtomicU64};
    /// `1 << 63 | known << 62 | fork epoch`; 0: not read yet.
    static TAG: AtomicU64 = AtomicU64::new(0);
    static OFFSET: AtomicI64 = AtomicI64::new(0);
    let epoch = crate::sys::fork_epoch() & ((1 << 62) - 1);
    let tag = TAG.load(Acquire);
    if tag != 0 && tag & ((1 << 62) - 1) == epoch {
        return TimeNamespace {
            offset_ns: OFFSET.load(std::sync::atomic::Ordering::Relaxed),
            known: tag & (1 << 62) != 0,
        };
    }
    let ns = read_time_namespace();
    OFFSET.store(ns.offset_ns, std::sync::atomic::Ordering::Relaxed);
    TAG.store(1 << 63 | u64::from(ns.known) << 62 | epoch, Release);
    ns
}

fn read_time_namespace() -> TimeNamespace {
    use std::os::unix::fs::MetadataExt;
    let ino = |p: &str| std::fs::metadata(p).map(|m| (m.dev(), m.ino())).ok();
    // timens_offsets describes the namespace of this process's *children*; it is ours
    // unless this process unshared a new one.
    let own = ino("/proc/self/ns/time");
    let children = ino("/proc/self/ns/time_for_children");
    let unknown = TimeNamespace {
        offset_ns: 0,
        known: false,
    };
    match std::fs::read_to_string("/proc/self/timens_offsets") {
        Ok(text) => match parse_boottime_offset(&text) {
            Some(offset_ns) => TimeNamespace {
                offset_ns,
                known: own.is_some() && own == children,
            },
            None => unknown,
        },
        // One clock for everyone: the kernel has no time namespaces.
        Err(_) if kernel_lacks_time_namespaces() => TimeNamespace {
            offset_ns: 0,
            known: true,
        },
        // `/proc` is hidden (or lies): the offset is unknown, so this process neither
        // declares a lease nor judges one (fail closed).
        Err(_) => unknown,
    }
}

/// Whether this kernel certainly has no time namespaces: `/proc/self` is there (so
/// `/proc` is not hidden) but has no `timens_offsets`, or the kernel is older than 5.6
/// (which added them).
fn kernel_lacks_time_namespaces() -> bool {
    if std::fs::metadata("/proc/self/stat").is_ok() {
        return true;
    }
    // SAFETY: `utsname` is a plain C struct, valid zeroed; uname only writes it.
    let mut name: libc::utsname = unsafe { std::mem::zeroed() };
    // SAFETY: `name` is writable for the call.
    if unsafe { libc::uname(&mut name) } != 0 {
        return false;
    }
    // SAFETY: uname NUL-terminates `release` within the array.
    let release = unsafe { std::ffi::CStr::from_ptr(name.release.as_ptr()) };
    kernel_release_before_5_6(&release.to_string_lossy())
}

/// Whether a kernel release string ("5.4.0-150-generic") names a kernel older than 5.6.
fn kernel_release_before_5_6(release: &str) -> bool {
    let mut numbers = release
        .split(|c: char| !c.is_ascii_digit())
        .map(|n| n.parse::<u32>().ok());
    match (numbers.next().flatten(), numbers.next().flatten()) {
        (Some(major), Some(minor)) => (major, minor) < (5, 6),
        _ => false,
    }
}

/// The boottime line of `/proc/PID/timens_offsets` ("boottime <secs> <nanos>"), in ns.
fn parse_boottime_offset(text: &str) -> Option<i64> {
    text.lines().find_map(|line| {
        let mut words = line.split_whitespace();
        let clock = words.next()?;
        if clock != "boottime" && clock != "7" {
            return None;
        }
        let secs: i64 = words.next()?.parse().ok()?;
        let nanos: i64 = words.next()?.parse().ok()?;
        Some(secs.saturating_mul(1_000_000_000).saturating_add(nanos))
    })
}

/// FNV-1a of the kernel's boot id (`/proc/sys/kernel/random/boot_id`), never 0; `None`
/// when it cannot be read (a hidden `/proc`): the caller counts that as a new boot.
pub(crate) fn boot_id_hash() -> Option<u64> {
    match std::fs::read("/proc/sys/kernel/random/boot_id") {
        Ok(id) if !id.trim_ascii().is_empty() => Some(super::fnv(id.trim_ascii())),
        _ => None,
    }
}

/// This process's start time in whole seconds of `CLOCK_BOOTTIME` (0 if unknown): with the
/// pid, it tells a person which process a member was, even after its pid is reused. Read
/// from `/proc/self/stat` once per process (and again in a forked child, which started
/// later): the read is a fifth of an open's cost.
pub(crate) fn process_start_secs(fork_epoch: u64) -> u32 {
    use std::sync::atomic::Ordering::Relaxed;
    /// `1 << 63 | (fork_epoch & 0x7fff_ffff) << 32 | seconds`; 0: not read yet.
    static CACHE: AtomicU64 = AtomicU64::new(0);
    let tag = 1 << 63 | (fork_epoch & 0x7fff_ffff) << 32;
    let cached = CACHE.load(Relaxed);
    if cached & !0xffff_ffff == tag {
        return cached as u32;
    }
    let secs = read_process_start_secs();
    CACHE.store(tag | secs as u64, Relaxed);
    secs
}

fn read_process_start_secs() -> u32 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let after_comm = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    // Field 22 (starttime, clock ticks since boot) is the 20th after the command name.
    let ticks: u64 = after_comm
        .split_whitespace()
        .nth(19)
        .and_then(|t| t.parse().ok())
        .unwrap_or(0);
    // SAFETY: sysconf has no memory-safety preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if hz <= 0 {
        return 0;
    }
    (ticks / hz as u64).min(u32::MAX as u64) as u32
}

/// Make `fd` a close-on-exec copy of `null` (in a forked child); `fd` on success.
///
/// # Safety
/// Both are descriptors of this process; only async-signal-safe calls are made.
pub(crate) unsafe fn redirect_fd(null: std::os::fd::RawFd, fd: std::os::fd::RawFd) -> i32 {
    // SAFETY: dup3 is an async-signal-safe system call on valid descriptors.
    unsafe { libc::dup3(null, fd, libc::O_CLOEXEC) }
}

/// A fresh open file description of the lock file, for a death watcher: through
/// `/proc/self/fd`, so it is the same file even if the path was renamed or replaced.
pub(crate) fn watcher_handle(file: &File, _path: &Path) -> io::Result<File> {
    File::open(format!("/proc/self/fd/{}", file.as_raw_fd()))
}

/// The network filesystem the directory `dir` is on (by its `statfs` magic), if any; `None`
/// also when it cannot be told (the open that follows reports a missing directory).
pub(crate) fn network_filesystem_at(dir: &Path) -> Option<&'static str> {
    let st = nix::sys::statfs::statfs(dir).ok()?;
    network_filesystem(st.filesystem_type().0 as u64)
}

/// The network filesystem the open `file` is on, if any.
pub(crate) fn network_filesystem_of(file: &File, _path: &Path) -> Option<&'static str> {
    let st = nix::sys::statfs::fstatfs(file).ok()?;
    network_filesystem(st.filesystem_type().0 as u64)
}

/// Give the file at `from` the name `to` as well, failing with `AlreadyExists` if
/// anything (a file, a symlink, a directory) is at `to`: `link(2)`, or where the
/// filesystem has no hard links, `renameat2(RENAME_NOREPLACE)` (which moves it instead).
pub(crate) fn link_no_replace(from: &Path, to: &Path) -> io::Result<()> {
    match std::fs::hard_link(from, to) {
        Err(e)
            if matches!(
                e.raw_os_error(),
                Some(libc::EPERM | libc::EOPNOTSUPP | libc::EMLINK)
            ) =>
        {
            use std::os::unix::ffi::OsStrExt;
            let cstr = |p: &Path| {
                std::ffi::CString::new(p.as_os_str().as_bytes())
                    .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))
            };
            let (from, to) = (cstr(from)?, cstr(to)?);
            // SAFETY: both are NUL-terminated paths that live across the call.
            let rc = unsafe {
                libc::renameat2(
                    libc::AT_FDCWD,
                    from.as_ptr(),
                    libc::AT_FDCWD,
                    to.as_ptr(),
                    libc::RENAME_NOREPLACE,
                )
            };
            if rc == 0 {
                Ok(())
            } else {
                Err(io::Error::last_os_error())
            }
        }
        other => other,
    }
}

/// Name of a network or cluster filesystem by its statfs magic; `None` for local ones.
fn network_filesystem(magic: u64) -> Option<&'static str> {
    Some(match magic as u32 {
        0x6969 => "NFS",
        0x517b => "SMB",
        0xff53_4d42 => "CIFS",
        0xfe53_4d42 => "SMB2",
        0x0102_1997 => "9P",
        0x00c3_6400 => "Ceph",
        0x5346_414f | 0x6b41_4653 => "AFS",
        0x7375_7245 => "Coda",
        0x564c => "NCP",
        0x0bd0_0bd0 => "Lustre",
        0x0116_1970 => "GFS2",
        0x7461_636f => "OCFS2",
        0x47504653 => "GPFS",
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn boottime_offsets_are_parsed_from_timens_offsets() {
        let text = "monotonic           0         0\nboottime       1000000       250\n";
        assert_eq!(parse_boottime_offset(text), Some(1_000_000_000_000_250));
        assert_eq!(
            parse_boottime_offset("boottime -5 0\n"),
            Some(-5_000_000_000)
        );
        assert_eq!(parse_boottime_offset("7 2 3\n"), Some(2_000_000_003));
        assert_eq!(parse_boottime_offset("monotonic 1 0\n"), None);
        assert!(
            clock_is_host(),
            "the test runs in the host's time namespace"
        );
    }

    #[test]
    fn kernels_before_5_6_are_known_to_lack_time_namespaces() {
        assert!(kernel_release_before_5_6("5.4.0-150-generic"));
        assert!(kernel_release_before_5_6("4.19.0"));
        assert!(!kernel_release_before_5_6("5.6.0"));
        assert!(!kernel_release_before_5_6("6.18.44-fc-v1272"));
        assert!(!kernel_release_before_5_6("garbage"));
    }

    #[test]
    fn network_filesystems_are_named_and_local_ones_are_not() {
        assert_eq!(network_filesystem(0x6969), Some("NFS"));
        assert_eq!(network_filesystem(0xff53_4d42), Some("CIFS"));
        assert_eq!(network_filesystem(0xfe53_4d42), Some("SMB2"));
        assert_eq!(network_filesystem(0x0102_1997), Some("9P"));
        assert_eq!(network_filesystem(0x00c3_6400), Some("Ceph"));
        // ext4, tmpfs, btrfs, xfs, overlayfs
        for local in [
            0xef53u64,
            0x0102_1994,
            0x9123_683e,
            0x5846_5342,
            0x794c_7630,
        ] {
            assert_eq!(network_filesystem(local), None, "{local:#x}");
        }
    }

    #[test]
    fn ofd_locks_conflict_between_descriptions_and_probe_read_only() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("locks");
        std::fs::write(&path, b"").unwrap();
        let a = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .unwrap();
        let b = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .unwrap();
        let ro = File::open(&path).unwrap();
        assert!(try_lock(&a, LockKind::Exclusive, 5000).unwrap());
        assert!(!try_lock(&b, LockKind::Exclusive, 5000).unwrap());
        assert!(!try_lock(&b, LockKind::Shared, 5000).unwrap());
        assert!(locked_by_other(&b, 5000).unwrap());
        assert!(locked_by_other(&ro, 5000).unwrap());
        assert!(
            !locked_by_other(&a, 5000).unwrap(),
            "own lock is no conflict"
        );
        unlock(&a, 5000).unwrap();
        assert!(!locked_by_other(&ro, 5000).unwrap());
        assert!(try_lock(&b, LockKind::Shared, 5000).unwrap());
        assert!(try_lock(&a, LockKind::Shared, 5000).unwrap());
    }
}
