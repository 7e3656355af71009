//! Reliability beyond the basic multi-process tests: the open race at width 32, real pid
//! reuse, zombies, pid namespaces, truncation under live handles, the malformed-file corpus
//! (tests/corpus/) and a fuzz-style property test of the validator and the open path.
//!
//! Environment: `SHMLOCK_FUZZ_CASES` (default 2,000; torture mode: 100,000),
//! `SHMLOCK_FUZZ_SEED`, `SHMLOCK_OPEN_RACE_ROUNDS` (default 100),
//! `SHMLOCK_REGENERATE_CORPUS=1` (rewrite tests/corpus/ from its generator).

// Unix only: pid reuse, pid namespaces and its POSIX-lock open-race gate are Unix notions;
// the open race at small width runs portably in tests/processes.rs.
#![cfg(unix)]

#[path = "../cli/src/driver.rs"]
#[allow(dead_code)]
mod driver;
#[path = "common/reliability_pages.rs"]
#[allow(dead_code)]
mod pages;

use std::fs::{File, OpenOptions};
use std::os::fd::AsFd;
use std::os::unix::fs::{FileExt, PermissionsExt};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::AtomicU64;
use std::time::{Duration, Instant};

use driver::Agent;
use nix::fcntl::{fcntl, FcntlArg};
use nix::libc;
use nix::sys::signal::{kill, Signal};
use nix::sys::wait::{waitid, waitpid, Id, WaitPidFlag, WaitStatus};
use nix::unistd::{fork, ForkResult, Pid};
use pages::Expect;
use shmlock::page::{classify_prefix, Invalid, Page, PAGE_SIZE};
use shmlock::{Error, OpenState, ShmLock};

const EXE: &str = env!("CARGO_BIN_EXE_shmlock");

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.trim().parse().ok())
}

fn spawn(path: &Path) -> Agent {
    Agent::spawn(Path::new(EXE), path).expect("spawn agent")
}

fn generation(words: &[String]) -> u64 {
    words[0].parse().expect("generation")
}

fn state_name(state: OpenState) -> &'static str {
    match state {
        OpenState::Created => "created",
        OpenState::Reopened => "reopened",
        OpenState::Joined => "joined",
        OpenState::RecoveredFromCrash => "recovered",
        OpenState::HealedCorruptHeader => "healed",
        OpenState::RecoveredAfterReboot => "rebooted",
        OpenState::UpgradedFormat => "upgraded",
        _ => "other-state",
    }
}

fn error_name(e: &Error) -> String {
    match e {
        Error::Corrupt { .. } => "corrupt".into(),
        Error::IncompatibleVersion { .. } => "incompatible".into(),
        other => format!("{other:?}"),
    }
}

/// A one-line executable that runs the agent through `prefix` (a wrapper such as
/// `unshare …`): `Agent::spawn(wrapper, path)` then runs `prefix shmlock agent path`.
fn wrapper(dir: &Path, name: &str, prefix: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, format!("#!/bin/sh\nexec {prefix} {EXE} \"$@\"\n")).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}

// ---------------------------------------------------------------------------------------
// Open race

/// 32 processes open one fresh path at the same instant (released together by a kernel
/// lock they all wait on), 100 rounds: exactly one `Created` per round and no error.
#[test]
fn open_race_32_processes_exactly_one_creates_each_fresh_file() {
    let rounds = env_u64("SHMLOCK_OPEN_RACE_ROUNDS").unwrap_or(100);
    let width = 32;
    let dir = tempfile::tempdir().unwrap();
    let gate = dir.path().join("gate");
    File::create(&gate).unwrap();
    let mut agents: Vec<Agent> = (0..width)
        .map(|_| spawn(&dir.path().join("unused-shm")))
        .collect();
    let mut joined = 0;
    for round in 0..rounds {
        let path = dir.path().join(format!("race-{round}-shm"));
        let gate_file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&gate)
            .unwrap();
        // SAFETY: `flock` is a plain C struct of integers; all-zero is a valid value.
        let mut f: libc::flock = unsafe { std::mem::zeroed() };
        f.l_type = libc::F_WRLCK as libc::c_short;
        f.l_whence = libc::SEEK_SET as libc::c_short;
        f.l_len = 1;
        fcntl(gate_file.as_fd(), FcntlArg::F_OFD_SETLK(&f)).expect("close the gate");
        for a in &mut agents {
            a.ok(&format!("race_arm {} {}", gate.display(), path.display()));
        }
        // Every agent now waits on the gate; closing our descriptor opens it for all.
        drop(gate_file);
        let states: Vec<String> = agents
            .iter_mut()
            .map(|a| {
                let answer = a.ask("race_result");
                assert!(answer.starts_with("ok "), "round {round}: {answer}");
                answer[3..].to_string()
            })
            .collect();
        let created = states.iter().filter(|s| *s == "Created").count();
        assert_eq!(created, 1, "round {round}: {states:?}");
        joined += states.iter().filter(|s| *s == "Joined").count();
        let snap = shmlock::inspect(&path).unwrap().expect("a page");
        assert_eq!(snap.live_members().count(), width, "round {round}");
        for a in &mut agents {
            a.ok("close");
        }
        let snap = shmlock::inspect(&path).unwrap().expect("a page");
        assert_eq!(
            snap.members.len(),
            0,
            "round {round}: closed members linger"
        );
    }
    println!(
        "open race: {rounds} rounds x {width} processes: {rounds} Created, {joined} Joined, 0 errors"
    );
}

// ---------------------------------------------------------------------------------------
// PID reuse, zombies, PID namespaces

fn spawn_unrelated() -> std::process::Child {
    Command::new("cat")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn cat")
}

/// Wait until `cat` runs (it echoes a line back): `spawn` may return before the child has
/// executed `cat`.
fn wait_running(cat: &mut std::process::Child) {
    use std::io::{BufRead, Write};
    let stdin = cat.stdin.as_mut().unwrap();
    stdin.write_all(b"ready\n").unwrap();
    stdin.flush().unwrap();
    let mut line = String::new();
    std::io::BufReader::new(cat.stdout.as_mut().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(line, "ready\n");
}

/// Start an unrelated long-lived process (`cat`) at pid `target`, which a dead owner had.
/// First the quick way where we may: set `ns_last_pid` (root) to `target - 1` and spawn,
/// retrying while other processes on the host take the pid first. Else fork children that
/// exit at once until the kernel's next pid wraps round to `target`. `Err(forks)` if
/// neither happened within `limit`.
fn occupy_pid(target: u32, limit: Duration) -> Result<(std::process::Child, String), u64> {
    for attempt in 1..=200 {
        if std::fs::write("/proc/sys/kernel/ns_last_pid", (target - 1).to_string()).is_err() {
            break;
        }
        let mut unrelated = spawn_unrelated();
        if unrelated.id() == target {
            return Ok((unrelated, format!("ns_last_pid, attempt {attempt}")));
        }
        let _ = unrelated.kill();
        let _ = unrelated.wait();
    }
    let deadline = Instant::now() + limit;
    let mut forks = 0u64;
    while Instant::now() < deadline {
        // SAFETY: the child calls only `_exit`, which is async-signal-safe.
        let pid = match unsafe { fork() }.expect("fork") {
            ForkResult::Child => unsafe { libc::_exit(0) },
            ForkResult::Parent { child } => child,
        };
        waitpid(pid, None).expect("reap a pid-cycling child");
        forks += 1;
        let pid = pid.as_raw() as u32;
        if pid < target && target - pid <= 3 {
            let unrelated = spawn_unrelated();
            if unrelated.id() == target {
                return Ok((unrelated, format!("{forks} pid-cycling forks")));
            }
            let mut unrelated = unrelated;
            let _ = unrelated.kill();
            let _ = unrelated.wait();
        }
    }
    Err(forks)
}

/// The owner dies; its pid is recycled to a live, unrelated process (`cat`); `kill(pid, 0)`
/// now says "alive" — a pid-based check would wait forever — yet the dead owner is taken
/// over, because liveness is the kernel lock, not the pid.
#[test]
fn pid_reuse_dead_owner_is_taken_over_while_its_pid_lives_again() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("reuse-shm");
    let mut owner = spawn(&path);
    owner.ok("open");
    let gen = generation(&owner.ok("try_claim"));
    owner.ok("attach");
    let dead_pid = owner.pid;
    owner.kill();
    let limit = Duration::from_secs(env_u64("SHMLOCK_PID_REUSE_SECS").unwrap_or(90));
    let (mut unrelated, how) = match occupy_pid(dead_pid, limit) {
        Ok(found) => found,
        Err(forks) => {
            println!("SKIPPED pid reuse: pid {dead_pid} was not handed out again within {limit:?} ({forks} forks; busy host?)");
            return;
        }
    };
    wait_running(&mut unrelated);
    let comm = std::fs::read_to_string(format!("/proc/{dead_pid}/comm")).unwrap();
    let status = std::fs::read_to_string(format!("/proc/{dead_pid}/status")).unwrap();
    assert_eq!(comm.trim(), "cat", "{status}");
    assert!(
        kill(Pid::from_raw(dead_pid as i32), None).is_ok(),
        "the reused pid must look alive to kill(pid, 0)"
    );
    let snap = shmlock::inspect(&path).unwrap().expect("a page");
    let o = snap.owner.expect("the dead owner is still recorded");
    assert_eq!((o.pid, o.alive, o.generation), (dead_pid, false, gen));
    assert_eq!(snap.reader_count, 0, "a dead member's readers do not count");
    let mut claimant = spawn(&path);
    claimant.ok("open");
    let taken = generation(&claimant.ok("try_claim"));
    assert_eq!(taken, gen + 1);
    let snap = shmlock::inspect(&path).unwrap().expect("a page");
    assert_eq!(
        snap.owner.map(|o| (o.pid, o.alive)),
        Some((claimant.pid, true))
    );
    assert!(snap.members.iter().all(|m| m.pid != dead_pid));
    let _ = unrelated.kill();
    let _ = unrelated.wait();
    println!("pid reuse: pid {dead_pid} reused by `cat` ({how}); the dead owner (generation {gen}) was taken over at generation {taken}");
}

/// A killed owner that its parent has not reaped yet is a zombie: its pid exists, but its
/// locks are gone, so it is taken over.
#[test]
fn zombie_owner_is_taken_over() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("zombie-shm");
    let mut owner = spawn(&path);
    owner.ok("open");
    let gen = generation(&owner.ok("try_claim"));
    let mut claimant = spawn(&path);
    claimant.ok("open");
    owner.signal(Signal::SIGKILL);
    // Wait for its death without reaping it.
    let pid = Pid::from_raw(owner.pid as i32);
    waitid(Id::Pid(pid), WaitPidFlag::WEXITED | WaitPidFlag::WNOWAIT).expect("waitid");
    let stat = std::fs::read_to_string(format!("/proc/{}/stat", owner.pid)).unwrap();
    let state = stat.rsplit_once(')').unwrap().1.split_whitespace().next();
    assert_eq!(state, Some("Z"), "{stat}");
    assert!(kill(pid, None).is_ok(), "a zombie's pid exists");
    let taken = generation(&claimant.ok("try_claim"));
    assert_eq!(taken, gen + 1);
    drop(owner); // reaps the zombie
}

fn unshare_works() -> Result<(), String> {
    let out = Command::new("unshare")
        .args(["--pid", "--fork", "--kill-child", "sh", "-c", "echo $$"])
        .output()
        .map_err(|e| format!("cannot run unshare: {e}"))?;
    let pid = String::from_utf8_lossy(&out.stdout).trim().to_string();
    if out.status.success() && pid == "1" {
        Ok(())
    } else {
        Err(format!(
            "unshare --pid refused ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// Two owners-to-be, each pid 1 of its own pid namespace, and a claimant outside: pid 1
/// twice is no collision (liveness is per open file description), the live owner is
/// respected, and its death is seen by a claimant that is waiting.
#[test]
fn pid_namespaces_owner_inside_claimant_outside() {
    if let Err(reason) = unshare_works() {
        println!("SKIPPED pid namespaces: {reason}");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ns-shm");
    let ns = wrapper(dir.path(), "in-pid-ns", "unshare --pid --fork --kill-child");
    let mut inside_a = Agent::spawn(&ns, &path).unwrap();
    let mut inside_b = Agent::spawn(&ns, &path).unwrap();
    let a = inside_a.ok("open");
    let b = inside_b.ok("open");
    assert_eq!((a[2].as_str(), b[2].as_str()), ("1", "1"), "{a:?} {b:?}");
    assert_ne!(a[1], b[1], "two pid 1s got distinct member entries");
    let gen = generation(&inside_a.ok("try_claim"));
    inside_b.ok("attach");
    let mut outside = spawn(&path);
    outside.ok("open");
    let busy = outside.ask("try_claim");
    assert!(busy.starts_with("err busy"), "{busy}");
    let snap = shmlock::inspect(&path).unwrap().expect("a page");
    assert_eq!(
        snap.members
            .iter()
            .filter(|m| m.pid == 1 && m.alive)
            .count(),
        2,
        "{snap:?}"
    );
    assert_eq!(snap.reader_count, 1);
    // The claimant waits; the owner's namespace dies (SIGKILL to unshare, which SIGKILLs
    // its pid 1).
    outside.send("claim 30000");
    inside_a.kill();
    let answer = outside.answer();
    let words: Vec<&str> = answer.split_whitespace().collect();
    assert_eq!(words.first(), Some(&"ok"), "{answer}");
    assert_eq!(words[1].parse::<u64>().unwrap(), gen + 1);
    // The other pid 1 is untouched: alive, with its reader.
    let snap = shmlock::inspect(&path).unwrap().expect("a page");
    let ones: Vec<_> = snap.members.iter().filter(|m| m.pid == 1).collect();
    assert!(ones.iter().any(|m| m.alive && m.readers == 1), "{snap:?}");
    assert_eq!(snap.reader_count, 1);
    assert_eq!(inside_b.ok("snapshot")[1], "alive=true");
}

// ---------------------------------------------------------------------------------------
// Truncation while mapped

fn truncation_case(len: u64) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("trunc-shm");
    let mut holder = spawn(&path);
    holder.ok("open");
    let gen = generation(&holder.ok("try_claim"));
    holder.ok("attach");
    // Another process (this one) truncates the file under the live mapping.
    OpenOptions::new()
        .write(true)
        .open(&path)
        .unwrap()
        .set_len(len)
        .unwrap();
    let before = std::fs::read(&path).unwrap();
    // Every new open refuses it, with a clear error, and rewrites nothing.
    let mut opener = spawn(&path);
    let refused = opener.ask("open");
    assert!(refused.starts_with("err corrupt"), "len {len}: {refused}");
    assert!(
        refused.contains("live"),
        "len {len}: the error says why: {refused}"
    );
    match ShmLock::open(&path) {
        Err(Error::Corrupt { reason, .. }) => {
            assert!(reason.to_string().contains("live"), "{reason}")
        }
        other => panic!("len {len}: {other:?}"),
    }
    let inspected = shmlock::inspect(&path);
    assert!(
        matches!(inspected, Err(Error::Corrupt { .. }) | Ok(None)),
        "len {len}: {inspected:?}"
    );
    assert_eq!(
        std::fs::read(&path).unwrap(),
        before,
        "len {len}: rewritten"
    );
    // The live handle that touches its page now: beyond the end of the file that is a
    // SIGBUS (as in SQLite and LMDB); within it, it carries on.
    // (If it is already gone, the status below says why.)
    let _ = catch_unwind(AssertUnwindSafe(|| holder.send("snapshot\nexit")));
    let status = waitpid(Pid::from_raw(holder.pid as i32), None).unwrap();
    // Reaped here: the driver must not signal that pid again when it drops.
    std::mem::forget(holder);
    let sigbus = matches!(status, WaitStatus::Signaled(_, Signal::SIGBUS, _));
    assert!(
        sigbus || matches!(status, WaitStatus::Exited(_, 0)),
        "len {len}: {status:?}"
    );
    // Only a file shorter than the page's first byte faults: a mapping of a file that
    // ends inside the page reads the rest of the page as zeros (writes there are lost).
    assert_eq!(sigbus, len == 0, "len {len}: {status:?}");
    // With the last live handle gone, the next opener (alone) repairs the file; an
    // empty one it cannot tell from another program's empty file, so it refuses it
    // untouched, and a new one is created once it is deleted.
    drop(opener);
    if len == 0 {
        match ShmLock::open(&path) {
            Err(Error::Corrupt { reason, .. }) => {
                assert!(reason.to_string().contains("delete it"), "{reason}")
            }
            other => panic!("len 0, alone: {other:?}"),
        }
        assert_eq!(std::fs::metadata(&path).unwrap().len(), 0);
        std::fs::remove_file(&path).unwrap();
    }
    let reopened = ShmLock::open(&path).unwrap();
    let expected = if len == 0 {
        OpenState::Created
    } else {
        OpenState::HealedCorruptHeader
    };
    assert_eq!(reopened.open_state(), expected, "len {len}");
    assert_eq!(std::fs::metadata(&path).unwrap().len(), PAGE_SIZE as u64);
    let next = reopened.try_claim_writer().unwrap().generation();
    assert!(next > gen, "len {len}: generation {next} after {gen}");
    println!(
        "truncation to {len} bytes: new opens refused, file untouched; the live handle {}",
        if sigbus {
            "died of SIGBUS on its next access"
        } else {
            "carried on"
        }
    );
}

#[test]
fn truncation_under_live_handles_is_refused_and_never_rewritten() {
    for len in [0, 40, 100, 4095, 8192] {
        truncation_case(len);
    }
}

// ---------------------------------------------------------------------------------------
// The malformed-file corpus

fn corpus_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/corpus")
}

const MANIFEST_HEADER: &str =
    "# name\topen (alone)\tinspect\topen (live user)\tclaim after open\tbytes\twhat\n";

fn manifest_of(entries: &[pages::Entry]) -> String {
    let mut text = String::from(
        "# The malformed-file corpus: expected outcome of each file. Generated by\n\
         # `SHMLOCK_REGENERATE_CORPUS=1 cargo test --test reliability corpus_matches`\n\
         # (tests/common/reliability_pages.rs); checked by tests/reliability.rs.\n",
    );
    text.push_str(MANIFEST_HEADER);
    for e in entries {
        text.push_str(&format!(
            "{}.bin\t{}\t{}\t{}\t{}\t{}\t{}\n",
            e.name,
            e.open.name(),
            e.open.inspect(),
            e.open.live(),
            e.claim,
            e.bytes.len(),
            e.what
        ));
    }
    text
}

/// The checked-in corpus is exactly what its generator makes (regenerate after a format
/// change with `SHMLOCK_REGENERATE_CORPUS=1`).
#[test]
fn corpus_matches_its_generator() {
    let entries = pages::corpus();
    assert!(entries.len() >= 30, "only {} corpus files", entries.len());
    let dir = corpus_dir();
    let manifest = manifest_of(&entries);
    if std::env::var_os("SHMLOCK_REGENERATE_CORPUS").is_some() {
        std::fs::create_dir_all(&dir).unwrap();
        for e in &entries {
            std::fs::write(dir.join(format!("{}.bin", e.name)), &e.bytes).unwrap();
        }
        std::fs::write(dir.join("MANIFEST.tsv"), &manifest).unwrap();
        println!(
            "regenerated {} corpus files in {}",
            entries.len(),
            dir.display()
        );
    }
    let stale = "tests/corpus/ is stale: regenerate it with SHMLOCK_REGENERATE_CORPUS=1 cargo test --test reliability corpus_matches";
    assert_eq!(
        std::fs::read_to_string(dir.join("MANIFEST.tsv")).expect(stale),
        manifest,
        "{stale}"
    );
    for e in &entries {
        let on_disk = std::fs::read(dir.join(format!("{}.bin", e.name))).expect(stale);
        assert!(on_disk == e.bytes, "{}: {stale}", e.name);
    }
}

struct Case {
    name: String,
    bytes: Vec<u8>,
    open: Expect,
    inspect: String,
    live: String,
    claim: String,
}

/// The corpus as checked in (files and manifest), independent of the generator.
fn checked_in_corpus() -> Vec<Case> {
    let dir = corpus_dir();
    let manifest =
        std::fs::read_to_string(dir.join("MANIFEST.tsv")).expect("tests/corpus/MANIFEST.tsv");
    manifest
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|line| {
            let f: Vec<&str> = line.split('\t').collect();
            assert!(f.len() >= 6, "manifest line {line:?}");
            let bytes = std::fs::read(dir.join(f[0])).unwrap();
            assert_eq!(bytes.len().to_string(), f[5], "{}", f[0]);
            Case {
                name: f[0].to_string(),
                bytes,
                open: Expect::parse(f[1]).unwrap_or_else(|| panic!("{line:?}")),
                inspect: f[2].to_string(),
                live: f[3].to_string(),
                claim: f[4].to_string(),
            }
        })
        .collect()
}

fn inspect_outcome(path: &Path) -> String {
    match shmlock::inspect(path) {
        Ok(None) => "none".into(),
        Ok(Some(_)) => "ok".into(),
        Err(e) => error_name(&e),
    }
}

/// Each corpus file, opened by a process that is alone, gets exactly its manifest outcome:
/// the typed error (and the file byte for byte untouched), or the open state it names,
/// after which the page works. `inspect` never writes.
#[test]
fn corpus_files_get_their_expected_outcome() {
    let cases = checked_in_corpus();
    assert!(cases.len() >= 30);
    let dir = tempfile::tempdir().unwrap();
    for case in &cases {
        let path = dir.path().join(format!("{}-shm", case.name));
        std::fs::write(&path, &case.bytes).unwrap();
        let name = &case.name;
        assert_eq!(inspect_outcome(&path), case.inspect, "{name}: inspect");
        assert_eq!(
            std::fs::read(&path).unwrap(),
            case.bytes,
            "{name}: inspect wrote"
        );
        match ShmLock::open(&path) {
            Err(e) => {
                assert_eq!(error_name(&e), case.open.name(), "{name}: {e}");
                assert!(!e.to_string().is_empty());
                assert_eq!(
                    std::fs::read(&path).unwrap(),
                    case.bytes,
                    "{name}: an error rewrote the file"
                );
            }
            Ok(lock) => {
                assert_eq!(state_name(lock.open_state()), case.open.name(), "{name}");
                assert_eq!(
                    std::fs::metadata(&path).unwrap().len(),
                    PAGE_SIZE as u64,
                    "{name}"
                );
                let claim = match lock.try_claim_writer() {
                    Ok(_) => "ok".to_string(),
                    Err(Error::GenerationExhausted { .. }) => "exhausted".to_string(),
                    Err(e) => format!("{e:?}"),
                };
                assert_eq!(claim, case.claim, "{name}: claim");
                let reader = lock.attach_reader().unwrap();
                let snap = lock.snapshot();
                assert_eq!(snap.reader_count, 1, "{name}: {snap:?}");
                assert_eq!(snap.live_members().count(), 1, "{name}: {snap:?}");
                drop(reader);
                drop(lock);
                assert_eq!(inspect_outcome(&path), "ok", "{name}: after use");
                assert_eq!(
                    state_name(ShmLock::open(&path).unwrap().open_state()),
                    "reopened",
                    "{name}: a clean reopen"
                );
            }
        }
    }
    println!(
        "corpus: {} files, each got its expected outcome",
        cases.len()
    );
}

/// Each corpus file written over a page that a live process has open (in place, or by
/// resizing the file): an opener refuses it (or, for a valid page, joins) and rewrites
/// nothing — a damaged page with a live user is an error, never a reset.
#[test]
fn corpus_files_under_a_live_user_are_never_rewritten() {
    let cases = checked_in_corpus();
    let dir = tempfile::tempdir().unwrap();
    for case in &cases {
        let name = &case.name;
        let path = dir.path().join(format!("live-{name}-shm"));
        let mut user = spawn(&path);
        assert_eq!(user.ok("open")[0], "Created", "{name}");
        let file = OpenOptions::new().write(true).open(&path).unwrap();
        file.set_len(case.bytes.len() as u64).unwrap();
        file.write_all_at(&case.bytes, 0).unwrap();
        drop(file);
        let outcome = match ShmLock::open(&path) {
            Ok(lock) => state_name(lock.open_state()).to_string(),
            Err(e) => {
                assert_eq!(
                    std::fs::read(&path).unwrap(),
                    case.bytes,
                    "{name}: rewritten under a live user"
                );
                error_name(&e)
            }
        };
        assert_eq!(outcome, case.live, "{name}");
        // The user never touched its page after the overwrite; it goes (SIGKILL) now.
        user.kill();
    }
}

// ---------------------------------------------------------------------------------------
// Fuzz-style property test

fn fuzz_bytes(rng: &mut fastrand::Rng) -> Vec<u8> {
    let lengths = [
        0, 1, 7, 8, 9, 16, 24, 63, 64, 65, 4095, 4096, 4096, 4096, 4097, 8192,
    ];
    let mut len = || {
        if rng.u8(0..4) == 0 {
            rng.usize(0..12_000)
        } else {
            lengths[rng.usize(0..lengths.len())]
        }
    };
    let pick_len = len();
    let mut bytes = pages::valid_bytes();
    match rng.u8(0..5) {
        0 => return (0..pick_len).map(|_| rng.u8(..)).collect(),
        1 | 2 => {
            // Mutate a few words, mostly in line 0 and the writer line.
            for _ in 0..rng.usize(1..8) {
                let word = if rng.bool() {
                    rng.usize(0..16)
                } else {
                    rng.usize(0..512)
                };
                let at = word * 8;
                let old = u64::from_ne_bytes(bytes[at..at + 8].try_into().unwrap());
                let new = match rng.u8(0..7) {
                    0 => 0,
                    1 => u64::MAX,
                    2 => old.swap_bytes(),
                    3 => old ^ 1 << rng.u32(0..64),
                    4 => old.wrapping_add(1),
                    5 => old.wrapping_sub(1),
                    _ => rng.u64(..),
                };
                bytes[at..at + 8].copy_from_slice(&new.to_ne_bytes());
            }
        }
        3 => {
            // Overwrite a random run with random bytes or zeros (a torn write).
            let start = rng.usize(0..PAGE_SIZE);
            let end = rng.usize(start..=PAGE_SIZE);
            let zero = rng.bool();
            for b in &mut bytes[start..end] {
                *b = if zero { 0 } else { rng.u8(..) };
            }
        }
        _ => {}
    }
    if rng.u8(0..3) == 0 {
        bytes.resize(pick_len, 0);
    }
    bytes
}

fn page_from(bytes: &[u8]) -> Box<Page<AtomicU64>> {
    let page = Box::new(Page::<AtomicU64>::zeroed());
    let raw = Box::into_raw(page);
    // SAFETY: `raw` is a fresh, exclusively owned page of PAGE_SIZE bytes of `AtomicU64`
    // (any bit pattern is valid); `bytes` holds at least PAGE_SIZE bytes.
    unsafe {
        std::ptr::copy_nonoverlapping(bytes.as_ptr(), raw as *mut u8, PAGE_SIZE);
        Box::from_raw(raw)
    }
}

/// One fuzz case: the validator and the open path on `bytes`. Panics on a violated property.
fn fuzz_case(dir: &Path, bytes: &[u8]) {
    let prefix = &bytes[..bytes.len().min(PAGE_SIZE)];
    let classified = classify_prefix(prefix);
    if bytes.len() >= PAGE_SIZE {
        let page = page_from(bytes);
        if page.validate().is_ok() {
            assert_eq!(
                classified,
                Ok(()),
                "validate accepted what classify refused"
            );
        }
    }
    let path = dir.join("fuzz-shm");
    let _ = std::fs::remove_file(&path);
    std::fs::write(&path, bytes).unwrap();
    let _ = shmlock::inspect(&path);
    assert_eq!(std::fs::read(&path).unwrap(), bytes, "inspect wrote");
    let all_zero_page = bytes.len() == PAGE_SIZE && bytes.iter().all(|&b| b == 0);
    match ShmLock::open(&path) {
        Ok(lock) => {
            assert!(
                bytes.is_empty()
                    || all_zero_page
                    || classified == Ok(())
                    || classified == Err(Invalid::Initialising)
                    || matches!(classified, Err(Invalid::OlderVersion(1 | 2))),
                "opened a file that is not ours: {classified:?}"
            );
            assert_eq!(std::fs::metadata(&path).unwrap().len(), PAGE_SIZE as u64);
            match lock.try_claim_writer() {
                Ok(w) => {
                    w.heartbeat().unwrap();
                    assert!(w.is_current());
                    w.release().unwrap();
                }
                Err(Error::GenerationExhausted { .. }) => {}
                Err(e) => panic!("claim on a lone handle: {e:?}"),
            }
            let r = lock.attach_reader().unwrap();
            assert_eq!(lock.snapshot().reader_count, 1);
            lock.reap().unwrap();
            drop(r);
            assert!(matches!(shmlock::inspect(&path), Ok(Some(_))));
        }
        Err(e) => {
            assert!(
                matches!(e, Error::Corrupt { .. } | Error::IncompatibleVersion { .. }),
                "unexpected error kind: {e:?}"
            );
            assert_eq!(
                std::fs::read(&path).unwrap(),
                bytes,
                "an error rewrote the file"
            );
            if let Err(Invalid::NewerVersion(_)) = classified {
                assert!(matches!(e, Error::IncompatibleVersion { .. }), "{e:?}");
            }
        }
    }
}

/// Zero panics, zero SIGBUS (it would kill this process), and the properties in
/// [`fuzz_case`], over `SHMLOCK_FUZZ_CASES` generated files.
#[test]
fn fuzz_page_validator_and_open_path() {
    let cases = env_u64("SHMLOCK_FUZZ_CASES").unwrap_or(2000);
    let seed = env_u64("SHMLOCK_FUZZ_SEED").unwrap_or_else(|| fastrand::u64(..));
    println!("fuzz: seed {seed} (replay with SHMLOCK_FUZZ_SEED={seed}), {cases} cases");
    let dir = tempfile::tempdir().unwrap();
    let started = Instant::now();
    let mut opened = 0u64;
    for case in 0..cases {
        let case_seed = seed ^ case.wrapping_mul(0x9e37_79b9_7f4a_7c15);
        let bytes = fuzz_bytes(&mut fastrand::Rng::with_seed(case_seed));
        let result = catch_unwind(AssertUnwindSafe(|| fuzz_case(dir.path(), &bytes)));
        if let Err(panic) = result {
            let kept = std::env::temp_dir().join(format!("shmlock-fuzz-{case_seed}.bin"));
            let _ = std::fs::write(&kept, &bytes);
            let msg = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default();
            panic!(
                "fuzz seed {seed}, case {case} (case seed {case_seed}, input kept at {}): {msg}",
                kept.display()
            );
        }
        opened += ShmLock::open(dir.path().join("fuzz-shm")).is_ok() as u64;
    }
    println!(
        "fuzz: {cases} cases, {opened} ended in a usable page, 0 panics, {:.1} s",
        started.elapsed().as_secs_f64()
    );
}

// ---------------------------------------------------------------------------------------
// Found by the crash torture

/// A death watcher (a claimant's thread blocked on a shared lock of the owner's member
/// byte) is granted that lock the moment the owner dies, and holds it until it is next
/// scheduled. In that window the dead member must not look alive, nor its readers count.
/// (Found by the crash torture under load: "6 live members, 4 children + the checker".)
/// Here a shared lock from a read-only descriptor stands for the watcher.
#[test]
fn a_shared_lock_on_a_dead_members_byte_does_not_make_it_alive() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("watched-shm");
    let mut owner = spawn(&path);
    let index: u64 = owner.ok("open")[1].parse().unwrap();
    owner.ok("try_claim");
    owner.ok("attach");
    owner.ok("attach");
    let mut bystander = spawn(&path);
    bystander.ok("open");
    owner.kill();
    let watcher = File::open(&path).unwrap();
    // SAFETY: `flock` is a plain C struct of integers; all-zero is a valid value.
    let mut f: libc::flock = unsafe { std::mem::zeroed() };
    f.l_type = libc::F_RDLCK as libc::c_short;
    f.l_whence = libc::SEEK_SET as libc::c_short;
    f.l_start = (shmlock::page::MEMBER_LOCK_BASE + index) as libc::off_t;
    f.l_len = 1;
    fcntl(watcher.as_fd(), FcntlArg::F_OFD_SETLK(&f)).expect("shared lock");
    let snap = shmlock::inspect(&path).unwrap().expect("a page");
    let dead = snap.members.iter().find(|m| m.index == index as usize);
    assert_eq!(dead.map(|m| m.alive), Some(false), "{snap:?}");
    assert_eq!(
        snap.reader_count, 0,
        "a dead member's readers counted: {snap:?}"
    );
    assert_eq!(snap.owner.map(|o| o.alive), Some(false));
    let lock = ShmLock::open(&path).unwrap();
    assert_eq!(lock.snapshot().reader_count, 0);
    drop(watcher);
    lock.reap().unwrap();
    assert_eq!(lock.snapshot().dead_members().count(), 0);
}
