//! The publish fence with real processes (issue 14, item 4): a deposed writer's publish
//! never lands after its successor's claim returned, whatever the two generations are.
//!
//! Page format 2 re-tagged `published` with 16 bits of the claimant's generation, so a
//! successor opening with `generation_floor = g + 65535` (generation `g + 65536`, the same
//! low 16 bits) let a publisher stopped between its owner check and its CAS land its
//! version after the successor's claim (7 of 80 trials). Each trial here: a publisher
//! process claims (lease 5 ms) and publishes as fast as it can; the harness SIGSTOPs it at
//! a random moment, takes the role over through `generation_floor = g + 65535`, reads
//! `published`, SIGCONTs the publisher and lets it run until a publish fails. That failure
//! must be `Deposed`, and `published` must still be what the successor read.
//!
//! Processes: the test binary re-executes itself (`fence_publisher_entry`); every child is
//! reaped, and dies with the harness (`PR_SET_PDEATHSIG`).

// Unix only: its pauses are SIGSTOP/SIGCONT and it reads lock state with fcntl; kills and
// takeovers run portably in tests/processes.rs, under wine too.
#![cfg(unix)]

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use shmlock::{Error, Options, ShmLock};

const ROLE_ENV: &str = "SHMLOCK_FENCE_ROLE";
const PATH_ENV: &str = "SHMLOCK_FENCE_PATH";
const PARENT_ENV: &str = "SHMLOCK_FENCE_PARENT";
/// Trials: format 2 failed about 1 in 11, so 100 trials miss it with probability ~1e-4.
const TRIALS: u64 = 100;
/// Every trial together may take this long (they take about 3 s).
const PATIENCE: Duration = Duration::from_secs(120);

/// The publisher: claim, say the generation, publish 1, 2, 3, … until a publish fails,
/// then say how it failed.
#[test]
fn fence_publisher_entry() {
    let Ok(role) = std::env::var(ROLE_ENV) else {
        return;
    };
    assert_eq!(role, "publisher");
    nix::sys::prctl::set_pdeathsig(Signal::SIGKILL).unwrap();
    if nix::unistd::getppid().as_raw().to_string() != std::env::var(PARENT_ENV).unwrap() {
        return;
    }
    let path = std::env::var(PATH_ENV).unwrap();
    let options = Options::new().lease(Duration::from_millis(5));
    let lock = ShmLock::open_with(&path, &options).unwrap();
    let writer = lock.claim_writer(Duration::from_secs(10)).unwrap();
    writer.heartbeat().unwrap();
    println!("claimed {}", writer.generation());
    let mut version = lock.published();
    let failure = loop {
        version += 1;
        if let Err(e) = writer.publish(version) {
            break e;
        }
    };
    match failure {
        Error::Deposed { .. } => println!("deposed at {version}"),
        other => println!("failed at {version}: {other}"),
    }
}

fn spawn_publisher(path: &std::path::Path) -> Child {
    Command::new(std::env::current_exe().unwrap())
        .args([
            "fence_publisher_entry",
            "--exact",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(ROLE_ENV, "publisher")
        .env(PATH_ENV, path)
        .env(PARENT_ENV, std::process::id().to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap()
}

/// The publisher's next report, from the next line of its output that has one (libtest
/// prints its own text too, "test fence_publisher_entry ... " on the same line).
fn next_report(lines: &mut impl Iterator<Item = std::io::Result<String>>) -> String {
    for line in lines {
        let line = line.unwrap();
        if let Some(at) = ["claimed ", "deposed at ", "failed at "]
            .iter()
            .find_map(|p| line.find(p))
        {
            return line[at..].to_string();
        }
    }
    panic!("the publisher ended without a report");
}

/// A cheap random number for the stop moment (the test needs spread, not quality).
fn jitter(trial: u64) -> u64 {
    let mut x = trial.wrapping_add(std::process::id() as u64) ^ 0x9e37_79b9_7f4a_7c15;
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

#[test]
fn a_deposed_publish_never_lands_after_a_successor_whose_generation_agrees_in_16_bits() {
    if std::env::var_os(ROLE_ENV).is_some() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("fence-shm");
    let start = Instant::now();
    let mut landed = Vec::new();
    for trial in 0..TRIALS {
        assert!(start.elapsed() < PATIENCE, "the trials took too long");
        let mut child = spawn_publisher(&path);
        let pid = Pid::from_raw(child.id() as i32);
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let claimed = next_report(&mut lines);
        let g: u64 = claimed["claimed ".len()..].parse().unwrap();
        // Let it publish for 0–2 ms, then stop it wherever it is.
        std::thread::sleep(Duration::from_micros(jitter(trial) % 2000));
        kill(pid, Signal::SIGSTOP).unwrap();
        // The successor: same low 16 bits of the generation as the stopped publisher.
        let options = Options::new().generation_floor(g + 65535);
        let lock = ShmLock::open_with(&path, &options).unwrap();
        let successor = lock.claim_writer(Duration::from_secs(10)).unwrap();
        assert_eq!(successor.generation(), g + 65536);
        assert_eq!(successor.generation() & 0xffff, g & 0xffff);
        let after_claim = lock.published();
        kill(pid, Signal::SIGCONT).unwrap();
        let report = next_report(&mut lines);
        assert!(
            report.starts_with("deposed at "),
            "trial {trial}: the deposed publisher's publish failed otherwise: {report}"
        );
        let status = child.wait().unwrap();
        assert!(status.success(), "trial {trial}: the publisher failed");
        let now = lock.published();
        if now != after_claim {
            landed.push((trial, after_claim, now));
        }
        assert!(successor.is_current());
        successor.release().unwrap();
    }
    assert!(
        landed.is_empty(),
        "a deposed writer's publish landed after its successor's claim returned \
         (trial, published after the claim, published later): {landed:?}"
    );
}

/// A clean format-2 page (the previous format): owner word at byte 64 (generation `g`,
/// free), `published` at byte 128 as `tag << 48 | 42`, boot record at byte 112.
/// (FORMAT.md's bytes, written out here: the page module is not public.)
fn format2_bytes(g: u64) -> Vec<u8> {
    let magic = u64::from_le_bytes(*b"SHMLOCK\x01");
    let layout = 4096 | 64 << 16 | 120 << 32 | 32 << 48;
    let mut words = vec![0u64; 4096 / 8];
    words[..7].copy_from_slice(&[magic, 0x0102_0304_0506_0708, 2, layout, 1, g, 1]);
    // FNV-1a 64 over the native bytes of words 1-6.
    let mut checksum: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in words[1..7].iter().flat_map(|w| w.to_ne_bytes()) {
        checksum = (checksum ^ byte as u64).wrapping_mul(0x0000_0100_0000_01b3);
    }
    words[7] = checksum;
    words[8] = g << 8;
    words[13] = 1;
    words[14] = 0x5348_4d4c_4f43_4b42;
    words[16] = (g & 0xffff) << 48 | 42;
    words.iter().flat_map(|w| w.to_ne_bytes()).collect()
}

/// A format-2 file is refused, untouched and with a sentence that says what to do, while a
/// process (of the older library) has it open; the first opener after it left upgrades it
/// in place, keeping the generation (fencing tokens never repeat) and the published version.
#[test]
fn a_format_2_file_is_refused_in_use_and_upgraded_by_an_opener_alone() {
    use nix::fcntl::{fcntl, FcntlArg};
    use std::os::fd::AsFd;
    if std::env::var_os(ROLE_ENV).is_some() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("old-shm");
    let g = 1_000_000;
    let old = format2_bytes(g);
    std::fs::write(&path, &old).unwrap();
    // A format-2 process: it holds the dead-man switch (byte 4096) shared, on its own open
    // file description, as every open handle of every format does.
    let user = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&path)
        .unwrap();
    // SAFETY: `flock` is plain data; all-zero is a valid value to fill in.
    let mut lock: nix::libc::flock = unsafe { std::mem::zeroed() };
    lock.l_type = nix::libc::F_RDLCK as i16;
    lock.l_whence = nix::libc::SEEK_SET as i16;
    lock.l_start = 4096;
    lock.l_len = 1;
    fcntl(user.as_fd(), FcntlArg::F_OFD_SETLK(&lock)).unwrap();
    let refused = ShmLock::open(&path).unwrap_err();
    assert!(
        matches!(
            refused,
            Error::IncompatibleVersion {
                found: 2,
                supported: 3,
                ..
            }
        ),
        "{refused:?}"
    );
    let text = refused.to_string();
    assert!(
        text.contains("format version 2") && text.contains("stop them"),
        "{text}"
    );
    assert_eq!(std::fs::read(&path).unwrap(), old, "refused, yet rewritten");
    drop(user);
    let lock = ShmLock::open(&path).unwrap();
    assert_eq!(lock.open_state(), shmlock::OpenState::UpgradedFormat);
    assert_eq!(lock.published(), 42, "the published version carries over");
    let snapshot = lock.snapshot();
    assert_eq!(snapshot.format_version, 3);
    let writer = lock.try_claim_writer().unwrap();
    assert!(writer.generation() > g, "a fencing token would repeat");
    writer.publish(43).unwrap();
    assert_eq!(lock.published(), 43);
}
