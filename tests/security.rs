//! Security: file modes, `O_NOFOLLOW`, non-regular files, a file the caller cannot write,
//! and a hostile writer scribbling on a live page (see the threat model in RELIABILITY.md).

// Unix only: file modes, `O_NOFOLLOW`, FIFOs, devices and read-only mounts are Unix notions;
// Windows refuses reparse points, UNC and device paths (src/sys/windows.rs's tests, under
// wine).
#![cfg(unix)]

#[path = "../cli/src/driver.rs"]
#[allow(dead_code)]
mod driver;

use std::fs::OpenOptions;
use std::os::unix::fs::{FileExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use driver::Agent;
use nix::sys::stat::{umask, Mode};
use shmlock::{Error, Options, ShmLock};
use shmlock::{MEMBER_CAPACITY, PAGE_SIZE};

const EXE: &str = env!("CARGO_BIN_EXE_shmlock");

fn mode_of(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o7777
}

/// `umask` is process-wide: the tests that change it take this lock.
static UMASK: parking_lot::Mutex<()> = parking_lot::Mutex::new(());

#[test]
fn new_files_are_0600_whatever_the_umask() {
    let dir = tempfile::tempdir().unwrap();
    let _guard = UMASK.lock();
    for (i, mask) in [0o000, 0o022, 0o077].into_iter().enumerate() {
        let old = umask(Mode::from_bits_truncate(mask));
        let path = dir.path().join(format!("new-{i}-shm"));
        let opened = ShmLock::open(&path);
        umask(old);
        opened.unwrap();
        assert_eq!(mode_of(&path), 0o600, "umask {mask:o}");
    }
    let path = dir.path().join("asked-shm");
    let old = umask(Mode::from_bits_truncate(0o077));
    let opened = ShmLock::open_with(&path, &Options::new().mode(0o640));
    umask(old);
    opened.unwrap();
    assert_eq!(mode_of(&path), 0o640, "Options::mode wins over the umask");
}

#[test]
fn provisioned_lock_files_take_the_data_files_mode() {
    shmlock::set_provisioning_enabled(true);
    let dir = tempfile::tempdir().unwrap();
    let _guard = UMASK.lock();
    for (data_mode, expected) in [
        (0o640, 0o640),
        (0o600, 0o600),
        (0o755, 0o644),
        (0o666, 0o666),
    ] {
        let data = dir.path().join(format!("app-{data_mode:o}.db"));
        std::fs::write(&data, b"data").unwrap();
        std::fs::set_permissions(&data, std::fs::Permissions::from_mode(data_mode)).unwrap();
        let old = umask(Mode::from_bits_truncate(0o077));
        let lock = ShmLock::provision(&data);
        umask(old);
        let lock = lock.unwrap();
        assert_eq!(mode_of(lock.path()), expected, "data mode {data_mode:o}");
        assert_eq!(
            std::fs::read(&data).unwrap(),
            b"data",
            "the data file is untouched"
        );
    }
}

fn assert_not_regular(result: Result<impl std::fmt::Debug, Error>, what: &str) {
    match result {
        Err(e @ Error::NotARegularFile { .. }) => {
            assert!(e.to_string().contains("not a regular file"), "{what}: {e}")
        }
        other => panic!("{what}: {other:?}"),
    }
}

#[test]
fn a_symlink_at_the_path_is_refused_and_never_followed() {
    let dir = tempfile::tempdir().unwrap();
    let real = dir.path().join("real-shm");
    drop(ShmLock::open(&real).unwrap());
    let before = std::fs::read(&real).unwrap();
    let cases: [(&str, PathBuf); 3] = [
        ("to a lock file", real.clone()),
        ("dangling", dir.path().join("missing-shm")),
        ("to a directory", dir.path().to_path_buf()),
    ];
    for (what, target) in cases {
        let link = dir.path().join(format!("link-{}", what.replace(' ', "-")));
        std::os::unix::fs::symlink(&target, &link).unwrap();
        assert_not_regular(ShmLock::open(&link), what);
        assert_not_regular(
            ShmLock::open_with(&link, &Options::new().create(false)),
            what,
        );
        assert_not_regular(shmlock::inspect(&link), what);
    }
    assert!(
        !dir.path().join("missing-shm").exists(),
        "a dangling symlink's target was created"
    );
    assert_eq!(
        std::fs::read(&real).unwrap(),
        before,
        "the target was written through the link"
    );
    // `provision` of a data file whose `-shm` is a symlink: refused too.
    shmlock::set_provisioning_enabled(true);
    let data = dir.path().join("app.db");
    std::fs::write(&data, b"data").unwrap();
    std::os::unix::fs::symlink(&real, shmlock::shm_path_for(&data)).unwrap();
    assert_not_regular(ShmLock::provision(&data), "provision over a symlink");
}

#[test]
fn non_regular_files_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("fifo-shm");
    nix::unistd::mkfifo(&fifo, Mode::from_bits_truncate(0o600)).unwrap();
    let socket = dir.path().join("socket-shm");
    let _listener = std::os::unix::net::UnixListener::bind(&socket).unwrap();
    let subdir = dir.path().join("dir-shm");
    std::fs::create_dir(&subdir).unwrap();
    let cases = [
        ("a directory", subdir.clone()),
        ("a FIFO (must not block)", fifo.clone()),
        ("a socket", socket.clone()),
        ("a character device", PathBuf::from("/dev/null")),
    ];
    for (what, path) in &cases {
        assert_not_regular(ShmLock::open(path), what);
        assert_not_regular(shmlock::inspect(path), what);
    }
    use std::os::unix::fs::FileTypeExt;
    assert!(std::fs::metadata(&fifo).unwrap().file_type().is_fifo());
    assert!(std::fs::read_dir(&subdir).unwrap().next().is_none());
}

fn setpriv_works() -> Result<(), String> {
    let out = Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "id",
            "-u",
        ])
        .output()
        .map_err(|e| format!("cannot run setpriv: {e}"))?;
    let uid = String::from_utf8_lossy(&out.stdout).trim().to_string();
    if out.status.success() && uid == "65534" {
        Ok(())
    } else {
        Err(format!(
            "setpriv cannot switch to uid 65534 ({})",
            out.status
        ))
    }
}

/// A script in `dir` that runs the agent binary as `nobody` (uid and gid 65534, no groups).
fn as_nobody(dir: &Path) -> PathBuf {
    let wrapper = dir.join("as-nobody");
    std::fs::write(
        &wrapper,
        format!(
            "#!/bin/sh\nexec setpriv --reuid=65534 --regid=65534 --clear-groups {EXE} \"$@\"\n"
        ),
    )
    .unwrap();
    std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o755)).unwrap();
    wrapper
}

/// As `nobody`, a lock file it may read but not write: `inspect` shows it, `open` fails
/// with a clear permission error that points at `inspect`, and nothing is written.
#[test]
fn a_file_the_caller_cannot_write_can_be_inspected_but_not_joined() {
    if let Err(reason) = setpriv_works() {
        println!("SKIPPED unwritable file: {reason}");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let path = dir.path().join("readonly-shm");
    let owner = ShmLock::open_with(&path, &Options::new().mode(0o644)).unwrap();
    let writer = owner.try_claim_writer().unwrap();
    let reader = owner.attach_reader().unwrap();
    let secret = dir.path().join("private-shm");
    drop(ShmLock::open(&secret).unwrap()); // 0600: nobody may not even read it
    let wrapper = as_nobody(dir.path());
    let before = std::fs::read(&path).unwrap();

    let mut nobody = Agent::spawn(&wrapper, &path).unwrap();
    let inspected = nobody.ok("inspect");
    assert_eq!(
        inspected[0],
        format!("owner={}", std::process::id()),
        "{inspected:?}"
    );
    assert_eq!(inspected[1], "alive=true", "{inspected:?}");
    assert_eq!(inspected[2], format!("generation={}", writer.generation()));
    assert_eq!(inspected[3], "readers=1");
    let refused = nobody.ask("open");
    assert!(refused.starts_with("err io"), "{refused}");
    assert!(refused.contains("Permission denied"), "{refused}");
    assert!(
        refused.contains("inspect"),
        "the error points at inspect: {refused}"
    );
    assert_eq!(
        std::fs::read(&path).unwrap(),
        before,
        "nobody wrote to the file"
    );
    assert_eq!(owner.snapshot().members.len(), 1, "nobody registered");

    let mut nobody = Agent::spawn(&wrapper, &secret).unwrap();
    let denied = nobody.ask("inspect");
    assert!(
        denied.starts_with("err io") && denied.contains("Permission denied"),
        "{denied}"
    );
    let missing = dir.path().join("new-shm");
    let mut nobody = Agent::spawn(&wrapper, &missing).unwrap();
    let denied = nobody.ask("open");
    assert!(
        denied.starts_with("err io") && denied.contains("Permission denied"),
        "{denied}"
    );
    assert!(!missing.exists());
    drop((writer, reader));
}

/// Provisioning needs write permission on the data file (issue 18, item 5): a process
/// that may only read `app.db` does not create `app.db-shm` (it would own it, and the
/// writer could not open it), even in a directory it may write; its error says so and
/// does not point at `inspect` for a file that does not exist. Once a process that may
/// write the data has provisioned it, with a mode that lets the reader write the lock
/// file, the read-only process joins it.
#[test]
fn a_process_that_may_only_read_the_data_file_does_not_provision_its_lock_file() {
    if let Err(reason) = setpriv_works() {
        println!("SKIPPED read-only provisioning: {reason}");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    let data = dir.path().join("app.db");
    std::fs::write(&data, b"the engine's data").unwrap();
    std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o644)).unwrap();
    let wrapper = as_nobody(dir.path());
    let shm = shmlock::shm_path_for(&data);

    let mut nobody = Agent::spawn(&wrapper, &data).unwrap();
    let refused = nobody.ask("provision");
    assert!(
        refused.starts_with("err provision_not_permitted"),
        "{refused}"
    );
    assert!(refused.contains("may not write"), "{refused}");
    assert!(!refused.contains("inspect"), "{refused}");
    assert!(!shm.exists(), "a read-only process created the lock file");

    // The writer provisions it, giving its readers write permission on the lock file.
    shmlock::set_provisioning_enabled(true);
    let owner = ShmLock::provision_with(&data, &Options::new().mode(0o666)).unwrap();
    let writer = owner.try_claim_writer().unwrap();
    writer.publish(3).unwrap();
    let mut nobody = Agent::spawn(&wrapper, &data).unwrap();
    let joined = nobody.ask("provision");
    assert!(joined.starts_with("ok Joined"), "{joined}");
    assert_eq!(nobody.ok("attach"), ["1", "3"]);
    assert_eq!(owner.snapshot().reader_count, 1);
    drop(writer);
}

/// A hostile process that can write the file scribbles random and adversarial values over
/// the live page while this process uses every operation: no panic, no out-of-bounds
/// access, waits stay bounded. (It can deny service — that is in the threat model.)
#[test]
fn a_hostile_writer_cannot_crash_a_live_handle() {
    let iterations: u64 = std::env::var("SHMLOCK_HOSTILE_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200_000);
    let seed = fastrand::u64(..);
    println!("hostile writer: seed {seed}, {iterations} rounds");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("hostile-shm");
    let lock = ShmLock::open(&path).unwrap();
    let me = lock.member_index();
    let done = Arc::new(AtomicBool::new(false));
    let scribbler = {
        let done = Arc::clone(&done);
        let file = OpenOptions::new().write(true).open(&path).unwrap();
        std::thread::spawn(move || {
            let mut rng = fastrand::Rng::with_seed(seed);
            let mut writes = 0u64;
            while !done.load(Ordering::Relaxed) {
                let word = rng.usize(0..PAGE_SIZE / 8);
                let slot_word = |rng: &mut fastrand::Rng| rng.u64(..) & !0xff | rng.u64(0..=255);
                let value = match rng.u8(0..8) {
                    0 => 0,
                    1 => u64::MAX,
                    2 => slot_word(&mut rng),
                    3 => (me as u64 + 1) | rng.u64(..) << 8, // names our own member
                    4 => rng.u64(0..MEMBER_CAPACITY as u64 + 3),
                    _ => rng.u64(..),
                };
                file.write_all_at(&value.to_ne_bytes(), word as u64 * 8)
                    .unwrap();
                writes += 1;
            }
            writes
        })
    };
    let mut rng = fastrand::Rng::with_seed(!seed);
    let mut readers = Vec::new();
    let mut writer = None;
    for _ in 0..iterations {
        match rng.u8(0..9) {
            0 => {
                if let Ok(r) = lock.attach_reader() {
                    readers.push(r);
                }
            }
            1 => drop(readers.pop()),
            2 => {
                if writer.is_none() {
                    writer = lock.try_claim_writer().ok();
                }
            }
            3 => {
                let started = Instant::now();
                if writer.is_none() {
                    writer = lock.claim_writer(Duration::from_millis(2)).ok();
                }
                assert!(
                    started.elapsed() < Duration::from_secs(5),
                    "a bounded claim hung"
                );
            }
            4 => {
                if let Some(w) = &writer {
                    let _ = w.heartbeat();
                    let _ = w.is_current();
                }
            }
            5 => {
                if let Some(w) = writer.take() {
                    let _ = w.release();
                }
            }
            6 => {
                let _ = lock.reap();
            }
            7 => {
                let s = lock.snapshot();
                assert!(s.members.len() <= MEMBER_CAPACITY);
            }
            _ => {
                let _ = shmlock::inspect(&path);
            }
        }
    }
    done.store(true, Ordering::Relaxed);
    let writes = scribbler.join().unwrap();
    drop((writer, readers, lock));
    println!(
        "hostile writer: {writes} hostile word writes against {iterations} operations, 0 panics"
    );
    assert!(writes > 0);
}

/// Threat model, stated as a test: a process that can only *read* the file can still take
/// shared OFD locks through its read-only descriptor. Liveness asks for an *exclusive*
/// holder, so a shared lock on a dead member's byte does not make that member look alive,
/// and a claim no longer needs to take the byte to take over a dead owner: the reader
/// cannot deny a takeover (it once could), and it can change nothing on the page. It can
/// only keep the dead entry from being reaped until it lets go.
#[test]
fn a_read_only_process_cannot_deny_a_takeover_and_changes_nothing() {
    use std::os::fd::AsFd;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("pinned-shm");
    let mut owner = Agent::spawn(Path::new(EXE), &path).unwrap();
    let index: u64 = owner.ok("open")[1].parse().unwrap();
    let owner_pid = owner.pid;
    let generation: u64 = owner.ok("try_claim")[0].parse().unwrap();
    // A live bystander: openers join rather than recover alone (the usual case).
    let mut bystander = Agent::spawn(Path::new(EXE), &path).unwrap();
    bystander.ok("open");
    let read_only = std::fs::File::open(&path).unwrap();
    // SAFETY: `flock` is a plain C struct of integers; all-zero is a valid value.
    let mut f: nix::libc::flock = unsafe { std::mem::zeroed() };
    f.l_type = nix::libc::F_RDLCK as nix::libc::c_short;
    f.l_whence = nix::libc::SEEK_SET as nix::libc::c_short;
    f.l_start = (PAGE_SIZE as u64 + 1 + index) as nix::libc::off_t; // the member's lock byte
    f.l_len = 1;
    // Taken once the owner is dead (its exclusive lock would conflict before), then held.
    owner.kill();
    nix::fcntl::fcntl(read_only.as_fd(), nix::fcntl::FcntlArg::F_OFD_SETLK(&f))
        .expect("a read-only descriptor takes a shared lock");
    let before = std::fs::read(&path).unwrap();
    let lock = ShmLock::open(&path).unwrap();
    let snap = lock.snapshot();
    let dead = snap.members.iter().find(|m| m.pid == owner_pid).unwrap();
    assert!(!dead.alive, "a shared lock made the dead owner look alive");
    let writer = lock
        .try_claim_writer()
        .expect("the read-only process denied the takeover");
    assert_eq!(writer.generation(), generation + 1);
    // The entry it holds cannot be reaped yet (the reaper cannot take its byte)...
    assert!(lock.reap().unwrap().members.is_empty());
    assert_eq!(lock.snapshot().dead_members().count(), 1);
    drop(writer);
    drop(lock);
    let after = std::fs::read(&path).unwrap();
    assert_eq!(before[..64], after[..64], "line 0 unchanged");
    // ...and is reaped once it lets go.
    drop(read_only);
    let lock = ShmLock::open(&path).unwrap();
    assert_eq!(lock.snapshot().dead_members().count(), 0);
}
