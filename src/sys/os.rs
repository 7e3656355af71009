//! Thin, safe wrappers over the system calls shmlock makes: OFD byte locks, futexes, the
//! boot-time clock, and what a process knows about itself.

use std::fs::File;
use std::io;
use std::os::fd::AsFd;
use std::sync::atomic::AtomicU64;
use std::time::{Duration, SystemTime};

use nix::errno::Errno;
use nix::fcntl::{fcntl, FcntlArg};
use nix::libc;

/// Kind of OFD lock.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum LockKind {
    Shared,
    Exclusive,
}

fn flock(l_type: libc::c_int, byte: u64) -> libc::flock {
    // SAFETY: `flock` is a plain C struct of integers; all-zero is a valid value.
    let mut f: libc::flock = unsafe { std::mem::zeroed() };
    f.l_type = l_type as libc::c_short;
    f.l_whence = libc::SEEK_SET as libc::c_short;
    f.l_start = byte as libc::off_t;
    f.l_len = 1;
    f.l_pid = 0; // required by F_OFD_*
    f
}

fn l_type(kind: LockKind) -> libc::c_int {
    match kind {
        LockKind::Shared => libc::F_RDLCK,
        LockKind::Exclusive => libc::F_WRLCK,
    }
}

/// Take (or convert to) an OFD lock on one byte without blocking. `Ok(false)` when another
/// open file description holds a conflicting lock.
pub(crate) fn try_lock(file: &File, kind: LockKind, byte: u64) -> io::Result<bool> {
    let f = flock(l_type(kind), byte);
    loop {
        match fcntl(file.as_fd(), FcntlArg::F_OFD_SETLK(&f)) {
            Ok(_) => return Ok(true),
            Err(Errno::EAGAIN) | Err(Errno::EACCES) => return Ok(false),
            Err(Errno::EINTR) => continue,
            Err(e) => return Err(e.into()),
        }
    }
}

/// Take an OFD lock on one byte, blocking until no other open file description holds a
/// conflicting one (used only by death watchers, on their own open file description).
pub(crate) fn lock_blocking(file: &File, kind: LockKind, byte: u64) -> io::Result<()> {
    let f = flock(l_type(kind), byte);
    loop {
        match fcntl(file.as_fd(), FcntlArg::F_OFD_SETLKW(&f)) {
            Ok(_) => return Ok(()),
            Err(Errno::EINTR) => continue,
            Err(e) => return Err(e.into()),
        }
    }
}

/// Drop this open file description's lock on one byte.
pub(crate) fn unlock(file: &File, byte: u64) -> io::Result<()> {
    let f = flock(libc::F_UNLCK, byte);
    fcntl(file.as_fd(), FcntlArg::F_OFD_SETLK(&f))?;
    Ok(())
}

/// Whether another open file description holds an *exclusive* lock on the byte (without
/// taking it). Works on a read-only descriptor.
///
/// Members hold their byte exclusively; a shared lock on it is a death watcher that the
/// kernel has just granted it (the member died) or a read-only process, never a member —
/// so probing with a shared lock (which conflicts only with exclusive ones) is what tells
/// "alive".
pub(crate) fn locked_by_other(file: &File, byte: u64) -> io::Result<bool> {
    let mut f = flock(libc::F_RDLCK, byte);
    fcntl(file.as_fd(), FcntlArg::F_OFD_GETLK(&mut f))?;
    Ok(f.l_type != libc::F_UNLCK as libc::c_short)
}

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
pub(crate) fn futex_wait(word: &AtomicU64, expected: u64, timeout: Duration) {
    let ts = libc::timespec {
        tv_sec: timeout.as_secs().min(i64::MAX as u64) as libc::time_t,
        tv_nsec: timeout.subsec_nanos() as libc::c_long,
    };
    // SAFETY: the address points into a live, 4-byte-aligned word of the shared page (or
    // of a heap page) for the whole call; FUTEX_WAIT only reads it; `ts` outlives the call.
    // Any error (EAGAIN: value changed, ETIMEDOUT, EINTR) is a normal return for a waiter
    // that re-checks the state.
    unsafe {
        libc::syscall(
            libc::SYS_futex,
            futex_addr(word),
            libc::FUTEX_WAIT,
            expected as u32,
            &ts as *const libc::timespec,
            std::ptr::null::<u32>(),
            0u32,
        );
    }
}

/// Wake every process sleeping in [`futex_wait`] on `word`; returns how many were woken.
pub(crate) fn futex_wake_all(word: &AtomicU64) -> usize {
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

/// Whether [`boottime_ns`] is the host's clock: `false` only in a process that unshared a
/// time namespace for its children (its own namespace's offset is then not readable).
/// Such a process declares no lease and judges none.
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
    let Ok(text) = std::fs::read_to_string("/proc/self/timens_offsets") else {
        // No time namespaces (Linux < 5.6): one clock for everyone.
        return TimeNamespace {
            offset_ns: 0,
            known: true,
        };
    };
    let offset_ns = parse_boottime_offset(&text).unwrap_or(0);
    TimeNamespace {
        offset_ns,
        known: own == children,
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

/// FNV-1a of the kernel's boot id (`/proc/sys/kernel/random/boot_id`), never 0; 1 when
/// it cannot be read.
pub(crate) fn boot_id_hash() -> u64 {
    match std::fs::read("/proc/sys/kernel/random/boot_id") {
        Ok(id) => fnv(id.trim_ascii()),
        Err(_) => 1,
    }
}

fn fnv(bytes: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for &byte in bytes {
        hash ^= byte as u64;
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash.max(1)
}

/// Wall-clock nanoseconds since the Unix epoch (0 before it).
pub(crate) fn unix_ns() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos().min(u64::MAX as u128) as u64)
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

/// Name of a network or cluster filesystem by its statfs magic; `None` for local ones.
pub(crate) fn network_filesystem(magic: u64) -> Option<&'static str> {
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
