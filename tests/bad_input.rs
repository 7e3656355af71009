//! Every bad input of DESIGN.md: a typed error (or a heal, only when alone and the page is
//! ours), never a panic, never a rewrite of a file that is not ours or that others use.

// Unix only: it sets Unix modes and reads pages with `pread` (std::os::unix); the Windows-
// relevant bad inputs (a file that is not ours, racing openers) are in tests/processes.rs,
// which runs under wine.
#![cfg(unix)]

mod common;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use common::open_agent;
use shmlock::page::{BYTE_ORDER_MARK, FORMAT_VERSION, MAGIC, PAGE_SIZE};
use shmlock::{Error, OpenState, Options, ShmLock};

fn write(path: &Path, bytes: &[u8]) {
    fs::write(path, bytes).unwrap();
}

/// A valid page, made by the library itself in a scratch file.
fn valid_page(dir: &Path) -> Vec<u8> {
    let scratch = dir.join("scratch-shm");
    drop(ShmLock::open(&scratch).unwrap());
    let bytes = fs::read(&scratch).unwrap();
    fs::remove_file(&scratch).unwrap();
    bytes
}

fn set_word(page: &mut [u8], index: usize, value: u64) {
    page[index * 8..index * 8 + 8].copy_from_slice(&value.to_ne_bytes());
}

/// Opening `bytes` must fail with an error `check` accepts and leave the file untouched.
fn refused_untouched(bytes: &[u8], check: impl Fn(&Error) -> bool) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad-shm");
    write(&path, bytes);
    let err = ShmLock::open(&path).unwrap_err();
    assert!(
        check(&err),
        "unexpected error for {} bytes: {err}",
        bytes.len()
    );
    assert_eq!(fs::read(&path).unwrap(), bytes, "the file was modified");
    // inspect refuses it too, without writing.
    assert!(shmlock::inspect(&path).is_err());
    assert_eq!(fs::read(&path).unwrap(), bytes);
}

fn is_corrupt(e: &Error) -> bool {
    matches!(e, Error::Corrupt { .. })
}

#[test]
fn missing_directory_is_an_io_error_naming_the_path() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("no/such/dir/x-shm");
    match ShmLock::open(&path).unwrap_err() {
        Error::Io {
            op,
            path: p,
            source,
        } => {
            assert_eq!(op, "open");
            assert_eq!(p, path);
            assert_eq!(source.kind(), std::io::ErrorKind::NotFound);
        }
        other => panic!("{other}"),
    }
}

#[test]
fn directories_fifos_devices_and_symlinks_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let sub = dir.path().join("a-directory");
    fs::create_dir(&sub).unwrap();
    let fifo = dir.path().join("a-fifo");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::S_IRWXU).unwrap();
    let target = dir.path().join("target-shm");
    write(&target, b"someone else's file");
    let link = dir.path().join("link-shm");
    std::os::unix::fs::symlink(&target, &link).unwrap();
    let dangling = dir.path().join("dangling-shm");
    std::os::unix::fs::symlink(dir.path().join("nowhere"), &dangling).unwrap();
    for path in [&sub, &fifo, Path::new("/dev/null"), &link, &dangling] {
        match ShmLock::open(path) {
            Err(Error::NotARegularFile { path: p, .. }) => assert_eq!(p, *path),
            other => panic!("{}: {other:?}", path.display()),
        }
    }
    assert_eq!(fs::read(&target).unwrap(), b"someone else's file");
    assert!(
        !dir.path().join("nowhere").exists(),
        "a dangling symlink was followed"
    );
    let msg = ShmLock::open(&link).unwrap_err().to_string();
    assert!(msg.contains("symbolic link"), "{msg}");
}

#[test]
fn an_existing_empty_file_is_refused_untouched() {
    // A shmlock opener never exposes an empty file (it links an initialised page into
    // place), so an empty file at the path is someone else's.
    for bytes in [&[][..], &[0; PAGE_SIZE][..]] {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("empty-shm");
        write(&path, bytes);
        let err = ShmLock::open(&path).unwrap_err();
        assert!(is_corrupt(&err), "{} bytes: {err}", bytes.len());
        assert_eq!(fs::read(&path).unwrap(), bytes, "the file was modified");
    }
}

#[test]
fn foreign_files_of_any_size_are_never_overwritten() {
    for len in [1usize, 4095, 4096, 4097, 1 << 20] {
        let bytes: Vec<u8> = (0..len).map(|i| (i * 7 + 1) as u8).collect();
        refused_untouched(&bytes, is_corrupt);
    }
}

#[test]
fn a_data_file_opened_by_mistake_gets_a_hint() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("app.db");
    write(&db, b"SQLite format 3\0 and some pages");
    let msg = ShmLock::open(&db).unwrap_err().to_string();
    assert!(msg.contains("provision"), "{msg}");
    assert!(msg.contains("app.db"), "{msg}");
    assert_eq!(fs::read(&db).unwrap(), b"SQLite format 3\0 and some pages");
}

#[test]
fn newer_format_version_is_never_touched() {
    let dir = tempfile::tempdir().unwrap();
    let mut page = valid_page(dir.path());
    set_word(&mut page, 2, FORMAT_VERSION as u64 + 1);
    refused_untouched(&page, |e| {
        matches!(e, Error::IncompatibleVersion { found, supported, .. }
            if *found == FORMAT_VERSION as u64 + 1 && *supported == FORMAT_VERSION as u64)
    });
    // Even when the newer format's file is not one page long.
    page.extend_from_slice(&[0; 4096]);
    refused_untouched(&page, |e| matches!(e, Error::IncompatibleVersion { .. }));
}

#[test]
fn other_byte_order_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let mut page = valid_page(dir.path());
    set_word(&mut page, 0, MAGIC.swap_bytes());
    set_word(&mut page, 1, BYTE_ORDER_MARK.swap_bytes());
    refused_untouched(&page, is_corrupt);
}

#[test]
fn random_pages_are_refused_untouched() {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    for _ in 0..20 {
        let page: Vec<u8> = (0..PAGE_SIZE)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        refused_untouched(&page, is_corrupt);
    }
}

#[test]
fn our_damaged_page_is_healed_when_alone_with_a_generation_above_the_old_one() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("torn-shm");
    let old_generation = {
        let lock = ShmLock::open(&path).unwrap();
        lock.try_claim_writer().unwrap().generation()
    };
    // Tear line 0: the checksum no longer matches.
    let mut page = fs::read(&path).unwrap();
    page[4 * 8] ^= 0xff;
    write(&path, &page);
    let lock = ShmLock::open(&path).unwrap();
    assert_eq!(lock.open_state(), OpenState::HealedCorruptHeader);
    assert_eq!(lock.snapshot().origin, shmlock::PageOrigin::Healed);
    assert!(lock.try_claim_writer().unwrap().generation() > old_generation);
}

#[test]
fn our_page_of_the_wrong_size_is_healed_when_alone() {
    let dir = tempfile::tempdir().unwrap();
    let good = valid_page(dir.path());
    for len in [8usize, 100, 4095, 4097, 1 << 20] {
        let path = dir.path().join(format!("size-{len}-shm"));
        let mut bytes = good.clone();
        bytes.resize(len, 0xAB);
        write(&path, &bytes);
        let lock = ShmLock::open(&path).unwrap();
        assert_eq!(
            lock.open_state(),
            OpenState::HealedCorruptHeader,
            "{len} bytes"
        );
        assert_eq!(fs::metadata(&path).unwrap().len(), PAGE_SIZE as u64);
    }
}

#[test]
fn a_page_damaged_under_a_live_user_is_an_error_not_a_reset() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("live-shm");
    let (mut user, _) = open_agent(&path, None);
    user.ok("try_claim");
    // Damage line 0 behind the live user's back (pwrite, not the mapping).
    let mut page = fs::read(&path).unwrap();
    page[5 * 8] ^= 0x01;
    write(&path, &page);
    match ShmLock::open(&path).unwrap_err() {
        Error::Corrupt { reason, .. } => assert!(reason.to_string().contains("live"), "{reason}"),
        other => panic!("{other}"),
    }
    assert_eq!(
        fs::read(&path).unwrap(),
        page,
        "rewritten under a live user"
    );
    // A short file under a live user is refused too, and not resized.
    let short = &page[..1000];
    write(&path, short);
    assert!(ShmLock::open(&path).is_err());
    assert_eq!(fs::read(&path).unwrap(), short);
    // The user still holds its writer role (its mapping was never reset).
    write(&path, &page);
    assert_eq!(user.ok("is_current"), ["true"]);
}

#[test]
fn new_files_are_0600_and_provisioned_files_take_the_data_files_mode() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("mode-shm");
    drop(ShmLock::open(&path).unwrap());
    assert_eq!(
        fs::metadata(&path).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let custom = dir.path().join("custom-shm");
    drop(ShmLock::open_with(&custom, &Options::new().mode(0o640)).unwrap());
    assert_eq!(
        fs::metadata(&custom).unwrap().permissions().mode() & 0o777,
        0o640
    );

    let data = dir.path().join("app.db");
    write(&data, b"data");
    fs::set_permissions(&data, fs::Permissions::from_mode(0o664)).unwrap();
    shmlock::set_provisioning_enabled(false);
    match ShmLock::provision(&data).unwrap_err() {
        Error::ProvisioningDisabled { path } => {
            assert_eq!(path, shmlock::shm_path_for(&data));
        }
        other => panic!("{other}"),
    }
    assert!(!shmlock::shm_path_for(&data).exists());
    shmlock::set_provisioning_enabled(true);
    let lock = ShmLock::provision(&data).unwrap();
    assert_eq!(lock.path(), shmlock::shm_path_for(&data));
    let mode = fs::metadata(lock.path()).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o664);
}

#[test]
fn create_false_does_not_create() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("absent-shm");
    let err = ShmLock::open_with(&path, &Options::new().create(false)).unwrap_err();
    assert!(
        matches!(err, Error::Io { ref source, .. } if source.kind() == std::io::ErrorKind::NotFound)
    );
    assert!(!path.exists());
}

#[test]
fn inspect_creates_registers_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("inspect-shm");
    assert_eq!(shmlock::inspect(&path).unwrap(), None);
    assert!(!path.exists());
    let (mut user, _) = open_agent(&path, None);
    user.ok("attach");
    let before = fs::read(&path).unwrap();
    let snap = shmlock::inspect(&path).unwrap().unwrap();
    assert_eq!(snap.members.len(), 1);
    assert_eq!(snap.reader_count, 1);
    assert_eq!(snap.members[0].pid, user.pid);
    assert!(snap.members[0].alive);
    assert_eq!(fs::read(&path).unwrap(), before);
}

#[test]
fn shm_path_for_appends_dash_shm() {
    assert_eq!(
        shmlock::shm_path_for("/var/db/app.db"),
        Path::new("/var/db/app.db-shm")
    );
}

#[test]
fn one_process_maps_a_file_once() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("once-shm");
    let a = ShmLock::open(&path).unwrap();
    let b = ShmLock::open(&path).unwrap();
    assert_eq!(b.open_state(), OpenState::Joined);
    assert_eq!(a.member_index(), b.member_index());
    assert_eq!(a.snapshot().members.len(), 1);
    let w = a.try_claim_writer().unwrap();
    assert!(matches!(b.try_claim_writer(), Err(Error::AlreadyWriter)));
    drop(w);
    drop(a);
    // The member lives on while any handle does.
    assert_eq!(
        shmlock::inspect(&path)
            .unwrap()
            .unwrap()
            .live_members()
            .count(),
        1
    );
    drop(b);
    assert_eq!(shmlock::inspect(&path).unwrap().unwrap().members.len(), 0);
}

#[test]
fn a_heal_restarts_the_generation_above_a_plausible_old_one_that_outran_the_clock() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("outran-shm");
    let mut page = valid_page(dir.path());
    // A burst of claims took the generation past the clock in µs (far in the future).
    let now_us = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_micros() as u64;
    let old = now_us * 4;
    set_word(&mut page, 8, old << 8);
    page[4 * 8] ^= 0xff; // tear line 0
    write(&path, &page);
    let lock = ShmLock::open(&path).unwrap();
    assert_eq!(lock.open_state(), OpenState::HealedCorruptHeader);
    assert!(lock.try_claim_writer().unwrap().generation() > old);
    // An implausible one (damage) is not trusted: the clock is.
    let path = dir.path().join("garbage-shm");
    let mut page = valid_page(dir.path());
    set_word(&mut page, 8, u64::MAX - 255);
    page[4 * 8] ^= 0xff;
    write(&path, &page);
    let lock = ShmLock::open(&path).unwrap();
    assert_eq!(lock.open_state(), OpenState::HealedCorruptHeader);
    let generation = lock.try_claim_writer().unwrap().generation();
    assert!(
        generation > now_us && generation < now_us * 2,
        "{generation}"
    );
}

#[test]
fn a_page_truncated_under_a_live_user_refuses_claims_instead_of_restarting_generations() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cut-shm");
    let lock = ShmLock::open(&path).unwrap();
    let writer = lock.try_claim_writer().unwrap();
    let generation = writer.generation();
    // Someone cuts the file below the owner word (bytes 64..72) while it is in use: the
    // rest of the still-backed page reads as zeros.
    fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .unwrap()
        .set_len(40)
        .unwrap();
    assert!(
        !writer.is_current(),
        "the owner word is gone: the writer is deposed"
    );
    assert!(matches!(writer.heartbeat(), Err(Error::Deposed { .. })));
    drop(writer);
    // A claim now would hand out generation 1, repeating an old fencing token: refused.
    match lock.try_claim_writer() {
        Err(Error::Corrupt { reason, .. }) => {
            assert!(
                matches!(reason, shmlock::CorruptReason::ResetUnderUse { .. }),
                "{reason}"
            )
        }
        other => panic!("expected Corrupt, got {other:?} (generation was {generation})"),
    }
    assert!(
        lock.snapshot().owner.is_none(),
        "the refused claim was given back"
    );
}

/// Unmounts on drop, so a failing test leaves no mount behind.
struct Mounted(std::path::PathBuf);

impl Drop for Mounted {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg(&self.0).status();
    }
}

#[test]
fn a_read_only_filesystem_is_an_io_error_and_an_existing_file_can_still_be_inspected() {
    let dir = tempfile::tempdir().unwrap();
    let mnt = dir.path().join("ro");
    fs::create_dir(&mnt).unwrap();
    let mounted = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=1m", "shmlock-test"])
        .arg(&mnt)
        .status();
    if !mounted.is_ok_and(|s| s.success()) {
        println!("skipped: cannot mount a tmpfs here (not root, or no mount namespace rights)");
        return;
    }
    let _guard = Mounted(mnt.clone());
    let path = mnt.join("app.db-shm");
    drop(ShmLock::open(&path).unwrap());
    let remounted = std::process::Command::new("mount")
        .args(["-o", "remount,ro"])
        .arg(&mnt)
        .status()
        .unwrap();
    assert!(remounted.success());
    let before = fs::read(&path).unwrap();
    for target in [path.clone(), mnt.join("new-shm")] {
        match ShmLock::open(&target).unwrap_err() {
            Error::Io { op, source, .. } => {
                assert_eq!(op, "open");
                assert_eq!(source.kind(), std::io::ErrorKind::ReadOnlyFilesystem);
            }
            other => panic!("{}: {other}", target.display()),
        }
    }
    let msg = ShmLock::open(&path).unwrap_err().to_string();
    assert!(msg.contains("writable filesystem"), "{msg}");
    assert!(shmlock::inspect(&path).unwrap().is_some());
    assert_eq!(fs::read(&path).unwrap(), before);
}
