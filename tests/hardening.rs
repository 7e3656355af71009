//! Regression tests for the defects of issue 9 (the protocol attacked with real processes,
//! and the first hour of a new user), each named after the failure it pins. Real `shmlock
//! agent` processes, SIGKILL and SIGSTOP; every wait is on a condition, with a bound.

// Unix only: its attacks use fork, signals, `pread` and POSIX modes.
#![cfg(unix)]

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{field, open_agent, threads_named, wait_until, wrapper, Agent};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use shmlock::{Error, OpenState, Options, ShmLock};

/// Long enough for anything that must happen on a loaded 2-core machine; a test that
/// waits this long has failed.
const BOUND: Duration = Duration::from_secs(30);

fn generation(words: &[String]) -> u64 {
    words[0].parse().expect("generation")
}

/// The name a death watcher thread carries (`/proc/PID/task/TID/comm`).
const WATCHER: &str = "shmlock-watch";

/// Make this test process the reaper of orphaned descendants, so a forked child whose
/// parent agent was killed is reparented to us and can be reaped here.
fn become_subreaper() {
    // SAFETY: prctl(PR_SET_CHILD_SUBREAPER, 1) takes no pointers; it only sets a flag of
    // this process.
    let rc = unsafe { nix::libc::prctl(nix::libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
    assert_eq!(rc, 0, "prctl(PR_SET_CHILD_SUBREAPER)");
}

/// A child an agent forked (it lives on without exec). Killed on drop; reaped here once
/// its parent agent is gone (we are the subreaper), else by its parent.
struct Forked(i32);

impl Forked {
    fn is_alive(&self) -> bool {
        std::fs::read_to_string(format!("/proc/{}/stat", self.0))
            .map(|stat| {
                // state is the field after the parenthesised command name
                let state = stat.rsplit(')').next().unwrap_or("").trim_start();
                !state.starts_with('Z') && !state.starts_with('X')
            })
            .unwrap_or(false)
    }
}

impl Drop for Forked {
    fn drop(&mut self) {
        let pid = Pid::from_raw(self.0);
        let _ = kill(pid, Signal::SIGKILL);
        let _ = nix::sys::wait::waitpid(pid, None);
    }
}

// ---------------------------------------------------------------------------------------
// Item 1: a forked child pins nothing

/// A claimant waiting in `claim_writer` (its death watcher running) forks a child that
/// lives on without exec. The owner is SIGKILLed: the waiting claim wins, the dead owner
/// is reaped (the child holds no lock on its byte: neither the watcher's nor any other),
/// and after a release a fresh process claims at once.
#[test]
fn forked_child_does_not_pin_a_dead_owner() {
    become_subreaper();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("fork-watch-shm");
    let (mut owner, _) = open_agent(&path, None);
    let g = generation(&owner.ok("try_claim"));
    let owner_pid = owner.pid;
    let (mut claimant, _) = open_agent(&path, None);
    claimant.ok("spawn_claim 30000");
    let pid = claimant.pid;
    wait_until("the claimant's death watcher runs", BOUND, || {
        !threads_named(pid, WATCHER).is_empty()
    });
    let child = Forked(claimant.ok("fork_child")[0].parse().unwrap());
    assert!(child.is_alive());

    owner.kill();
    let words = claimant.ok("claim_result");
    assert_eq!(generation(&words), g + 1, "the waiting claim took over");
    // Nothing keeps the dead owner's byte: it is gone from the table, or dead.
    let snap = shmlock::inspect(&path).unwrap().unwrap();
    assert!(
        snap.members.iter().all(|m| m.pid != owner_pid || !m.alive),
        "the dead owner reads alive: {:?}",
        snap.members
    );
    claimant.ok("reap");
    let snap = shmlock::inspect(&path).unwrap().unwrap();
    assert!(snap.members.iter().all(|m| m.pid != owner_pid), "{snap:?}");
    assert!(child.is_alive(), "the forked child lives on");

    let (mut fresh, _) = open_agent(&path, None);
    let busy = fresh.ask("try_claim");
    assert!(busy.starts_with("err busy"), "{busy}");
    claimant.ok("release");
    assert_eq!(generation(&fresh.ok("try_claim")), g + 2);
    assert!(child.is_alive());
    claimant.ok(&format!("kill_child {}", child.0));
}

/// A process with a member, a reader and the writer role forks a child that lives on
/// without exec, then is SIGKILLed: its member reads dead at once, its reader stops
/// counting, a fresh process takes the role over, and the entry is reaped — although the
/// child, which inherited its descriptors and its mapping, is alive.
#[test]
fn a_forked_child_does_not_keep_its_dead_parent_alive() {
    become_subreaper();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("fork-parent-shm");
    let observer = ShmLock::open(&path).unwrap();
    let (mut parent, _) = open_agent(&path, None);
    parent.ok("attach");
    let g = generation(&parent.ok("try_claim"));
    let child = Forked(parent.ok("fork_child")[0].parse().unwrap());
    assert_eq!(observer.snapshot().reader_count, 1);
    let parent_pid = parent.pid;
    parent.kill();
    assert!(child.is_alive(), "the forked child lives on");
    let snap = observer.snapshot();
    let member = snap
        .members
        .iter()
        .find(|m| m.pid == parent_pid)
        .expect("the dead parent's entry is still there until reaped");
    assert!(!member.alive, "the dead parent reads alive: {member:?}");
    assert_eq!(snap.reader_count, 0);
    let (mut fresh, _) = open_agent(&path, None);
    assert_eq!(generation(&fresh.ok("try_claim")), g + 1);
    observer.reap().unwrap();
    let snap = observer.snapshot();
    assert!(snap.members.iter().all(|m| m.pid != parent_pid), "{snap:?}");
    assert!(child.is_alive());
}

// ---------------------------------------------------------------------------------------
// Item 2: watcher threads are bounded

/// One waiting claimant: its agent, and how many owner incarnations it has waited on.
struct Waiter {
    agent: Agent,
    owners_seen: u64,
}

/// Four processes wait in `claim_writer` while the owner is SIGKILLed again and again
/// (the winner becomes the next victim; a new claimant replaces it). Each process may
/// start at most one death watcher per owner incarnation it waited on — not a respawn
/// storm. Counted exactly from the library's log where it logs watcher starts (the
/// agent's `watchers`), and in any case from `/proc/PID/task/*/comm`, sampled all along
/// (a lower bound: a watcher that lives less than a sample period can be missed).
#[test]
fn watcher_threads_are_bounded_with_many_waiting_claimants() {
    const WAITERS: usize = 4;
    const ROUNDS: usize = 6;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("storm-shm");
    let observer = ShmLock::open(&path).unwrap();
    let (mut owner, _) = open_agent(&path, None);
    owner.ok("try_claim");
    // Owner incarnations the current owner waited on before it won (the first: none).
    let mut owner_waited_on = 0;

    // The sampler: every watcher thread id seen, per process.
    let pids: Arc<Mutex<Vec<u32>>> = Arc::default();
    let seen: Arc<Mutex<BTreeMap<u32, BTreeSet<u32>>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let sampler = {
        let (pids, seen, stop) = (pids.clone(), seen.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut samples = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let now: Vec<u32> = pids.lock().unwrap().clone();
                for pid in now {
                    let tids = threads_named(pid, WATCHER);
                    seen.lock().unwrap().entry(pid).or_default().extend(tids);
                }
                samples += 1;
                std::thread::sleep(Duration::from_micros(300));
            }
            samples
        })
    };

    let spawn_waiter = |pids: &Mutex<Vec<u32>>| {
        let (mut agent, _) = open_agent(&path, None);
        pids.lock().unwrap().push(agent.pid);
        agent.ok("spawn_claim 60000");
        Waiter {
            agent,
            owners_seen: 1,
        }
    };
    let mut waiters: Vec<Waiter> = (0..WAITERS).map(|_| spawn_waiter(&pids)).collect();
    // (pid, watchers logged, owner incarnations waited on) of every process that is done.
    let mut done: Vec<(u32, u64, u64)> = Vec::new();
    let all_waiting = |waiters: &[Waiter]| {
        wait_until(
            "every claimant sleeps with a watcher on the owner",
            BOUND,
            || {
                observer.snapshot().waiting_claimants == WAITERS as u64
                    && waiters
                        .iter()
                        .all(|w| !threads_named(w.agent.pid, WATCHER).is_empty())
            },
        )
    };
    all_waiting(&waiters);
    for _ in 0..ROUNDS {
        // The owner (a claimant that won the last round, or the first owner) dies.
        let logged: u64 = owner.ok("watchers")[0].parse().unwrap();
        done.push((owner.pid, logged, owner_waited_on));
        owner.kill();
        let mut winner = None;
        wait_until("a waiting claimant takes over", BOUND, || {
            let owner = shmlock::inspect(&path).unwrap().unwrap().owner;
            winner = owner
                .filter(|o| o.alive)
                .and_then(|o| waiters.iter().position(|w| w.agent.pid == o.pid));
            winner.is_some()
        });
        let winner = winner.unwrap();
        waiters[winner].agent.ok("claim_result");
        let won = waiters.remove(winner);
        for w in &mut waiters {
            w.owners_seen += 1;
        }
        owner = won.agent;
        // It waited on `owners_seen` owners; as the owner it waits on nobody.
        owner_waited_on = won.owners_seen;
        waiters.push(spawn_waiter(&pids));
        all_waiting(&waiters);
    }
    for w in &mut waiters {
        // Its claim still waits (in another thread); the agent answers meanwhile.
        let logged: u64 = w.agent.ok("watchers")[0].parse().unwrap();
        done.push((w.agent.pid, logged, w.owners_seen));
    }
    stop.store(true, Ordering::Relaxed);
    let samples = sampler.join().unwrap();
    let seen = seen.lock().unwrap();
    let any_logged = done.iter().any(|&(_, logged, _)| logged > 0);
    println!(
        "watchers: {samples} samples; counted from {}",
        if any_logged {
            "the library's log"
        } else {
            "/proc sampling only (the library does not log watcher starts)"
        }
    );
    for &(pid, logged, owners) in &done {
        let sampled = seen.get(&pid).map_or(0, |tids| tids.len() as u64);
        println!("pid {pid}: {owners} owner incarnation(s) waited on, {logged} watcher(s) logged, {sampled} sampled");
        let started = logged.max(sampled);
        assert!(
            started <= owners.max(1),
            "pid {pid} started {started} death watchers for {owners} owner incarnation(s) (logged {logged}, sampled {sampled})"
        );
    }
    // The first owner waited on nobody: it must have started none.
    assert_eq!(done[0].1, 0);
}

// ---------------------------------------------------------------------------------------
// Item 3: a deposed guard cannot refresh a successor of the same process

/// P claims G1 (declaring a lease) and heartbeats it in a loop; SIGSTOPped past the lease,
/// it is deposed by Q, which then releases. P, continued, claims G2 and never heartbeats
/// it, while G1's loop goes on. G1's heartbeats must all say `Deposed` and must not keep
/// G2 alive: a waiting claimant deposes G2 after its lease.
#[test]
fn a_deposed_guard_cannot_refresh_a_successor_claimed_by_the_same_process() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("reclaim-shm");
    let (mut p, _) = open_agent(&path, Some(200));
    let g1 = generation(&p.ok("try_claim"));
    let loop_g1 = p.ok("heartbeat_forever 5")[0].clone();
    let beats = |p: &mut Agent| -> (u64, u64, u64) {
        let w = p.ok(&format!("beats {loop_g1}"));
        let n = |k: &str| field(&w, k).parse::<u64>().unwrap();
        (n("ok"), n("deposed"), n("other"))
    };
    wait_until("G1 has heartbeaten", BOUND, || beats(&mut p).0 > 0);
    let (mut q, _) = open_agent(&path, None);
    p.signal(Signal::SIGSTOP);
    assert_eq!(generation(&q.ok("claim 30000")), g1 + 1, "Q deposed G1");
    q.ok("release");
    p.signal(Signal::SIGCONT);
    wait_until("G1's loop sees it is deposed", BOUND, || {
        beats(&mut p).1 > 0
    });
    let g2 = generation(&p.ok("try_claim"));
    assert_eq!(g2, g1 + 2);
    let (ok_at_g2, deposed_at_g2, _) = beats(&mut p);
    // G1 keeps beating (and failing) while R waits out G2's lease.
    let (mut r, _) = open_agent(&path, None);
    let words = r.ok("claim 30000");
    assert_eq!(generation(&words), g2 + 1, "R deposed the silent G2");
    let (ok_now, deposed_now, other) = beats(&mut p);
    assert_eq!(ok_now, ok_at_g2, "a deposed G1's heartbeat succeeded");
    assert!(deposed_now > deposed_at_g2, "G1's loop stopped beating");
    assert_eq!(other, 0);
    assert_eq!(p.ok("is_current"), ["false"], "G2 was deposed");
    let snap = shmlock::inspect(&path).unwrap().unwrap();
    assert_eq!(
        snap.owner.map(|o| (o.pid, o.generation)),
        Some((r.pid, g2 + 1))
    );
}

// ---------------------------------------------------------------------------------------
// Item 4: the owner declares the lease, not the claimant

/// A claimant that opened with a lease of zero cannot take the role from a healthy owner,
/// whether the owner declared no lease or a long one; `inspect` shows what it declared.
#[test]
fn a_claimant_lease_of_zero_cannot_depose_a_healthy_owner() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("lease0-shm");
    let (mut claimant, _) = open_agent(&path, Some(0));
    for (owner_lease, declared) in [(None, None), (Some(60_000), Some(Duration::from_secs(60)))] {
        let (mut owner, _) = open_agent(&path, owner_lease);
        owner.ok("try_claim");
        owner.ok("heartbeat_loop 20");
        for attempt in 0..50 {
            let busy = claimant.ask("try_claim");
            assert!(
                busy.starts_with("err busy"),
                "owner lease {owner_lease:?}, attempt {attempt}: {busy}"
            );
        }
        let busy = claimant.ask("claim 200");
        assert!(busy.starts_with("err timeout"), "{busy}");
        let snap = shmlock::inspect(&path).unwrap().unwrap();
        let o = snap.owner.expect("an owner");
        assert_eq!((o.pid, o.alive), (owner.pid, true));
        assert_eq!(o.lease, declared, "inspect shows the declared lease");
        owner.ok("release");
    }
}

// ---------------------------------------------------------------------------------------
// Item 5: fencing survives the loss of the lock file

/// A page last used in another boot (forged: the `boot` word at byte 112 rewritten while
/// nobody has the file open) is recovered with the generation raised by at least 2^32, so
/// no token handed out before a host crash repeats.
#[test]
fn a_page_from_another_boot_jumps_the_generation() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("reboot-shm");
    let old = {
        let lock = ShmLock::open(&path).unwrap();
        for _ in 0..3 {
            lock.try_claim_writer().unwrap().release().unwrap();
        }
        lock.try_claim_writer().unwrap().generation()
    };
    {
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .unwrap();
        let mut boot = [0u8; 8];
        file.read_exact_at(&mut boot, 112).unwrap();
        let forged = (u64::from_ne_bytes(boot) ^ 0x5a5a_5a5a_0000_0001).to_ne_bytes();
        file.write_all_at(&forged, 112).unwrap();
    }
    let (mut agent, state) = open_agent(&path, None);
    assert_eq!(state, "RecoveredAfterReboot");
    let g = generation(&agent.ok("try_claim"));
    assert!(
        g >= old + (1 << 32),
        "generation {g} after another boot's page at {old}"
    );
    agent.ok("close");
    drop(agent);
    // The recovery recorded this boot: a clean reopen is no reboot.
    let lock = ShmLock::open(&path).unwrap();
    assert_eq!(lock.open_state(), OpenState::Reopened);
    assert_eq!(lock.try_claim_writer().unwrap().generation(), g + 1);
}

/// A handle opened with a generation floor above the page's generation claims above the
/// floor, and the page keeps the raised generation for everyone after.
#[test]
fn a_generation_floor_above_the_page_lifts_the_claim() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("floor-shm");
    let observer = ShmLock::open(&path).unwrap();
    let page_generation = observer.try_claim_writer().unwrap().generation();
    let floor = page_generation + 1_000_000;
    let (mut engine, _) = open_agent(&path, None);
    engine.ok("close");
    engine.ok(&format!("open floor={floor}"));
    let g = generation(&engine.ok("try_claim"));
    assert_eq!(g, floor + 1, "the claim is lifted above the floor");
    engine.ok("release");
    // A floor below the page changes nothing; a handle without one carries on above.
    let (mut low, _) = open_agent(&path, None);
    low.ok("close");
    low.ok(&format!("open floor={}", page_generation));
    assert_eq!(generation(&low.ok("try_claim")), floor + 2);
    low.ok("release");
    assert_eq!(observer.try_claim_writer().unwrap().generation(), floor + 3);
    // In one process too (through the library directly).
    let lifted = ShmLock::open_with(&path, &Options::new().generation_floor(floor + 100))
        .unwrap()
        .try_claim_writer()
        .unwrap()
        .generation();
    assert_eq!(lifted, floor + 101);
}

// ---------------------------------------------------------------------------------------
// Item 6: a dead waiter's count is repaired

/// A claimant SIGKILLed while asleep in `claim_writer` stays counted as waiting only until
/// the next release, which finds it dead and repairs the count (so later releases stop
/// paying a wake for it).
#[test]
fn a_killed_waiting_claimant_stops_costing_releases() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("deadwaiter-shm");
    let observer = ShmLock::open(&path).unwrap();
    let (mut owner, _) = open_agent(&path, None);
    owner.ok("try_claim");
    let (mut claimant, _) = open_agent(&path, None);
    claimant.send("claim 30000");
    wait_until("the claimant sleeps", BOUND, || {
        observer.snapshot().waiting_claimants == 1
    });
    claimant.kill();
    assert_eq!(
        observer.snapshot().waiting_claimants,
        1,
        "counted until someone repairs it"
    );
    owner.ok("release");
    assert_eq!(
        observer.snapshot().waiting_claimants,
        0,
        "the release repaired the dead waiter's count"
    );
    // And it stays repaired through later claims and releases.
    owner.ok("try_claim");
    owner.ok("release");
    assert_eq!(observer.snapshot().waiting_claimants, 0);
}

// ---------------------------------------------------------------------------------------
// Item 7: time namespaces

/// Whether `unshare --time` works here; the reason when it does not.
fn time_namespaces_work() -> Result<(), String> {
    let out = std::process::Command::new("unshare")
        .args([
            "--time",
            "--boottime",
            "1000000",
            "cat",
            "/proc/self/timens_offsets",
        ])
        .output()
        .map_err(|e| format!("cannot run unshare: {e}"))?;
    let text = String::from_utf8_lossy(&out.stdout);
    if out.status.success() && text.contains("1000000") {
        Ok(())
    } else {
        Err(format!(
            "unshare --time refused ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// `CLOCK_BOOTTIME` of a process in a time namespace is 1,000,000 s ahead of the host's.
/// Leases must still be judged on one clock: a healthy owner outside with a 300 ms lease is
/// never deposed by a claimant inside (whose clock says its heartbeat is 11 days old), and
/// a SIGSTOPped owner inside with a 200 ms lease is deposed by a claimant outside (whose
/// clock says its heartbeat is from the future).
#[test]
fn leases_are_judged_on_one_clock_across_time_namespaces() {
    if let Err(reason) = time_namespaces_work() {
        println!("SKIPPED time namespaces: {reason}");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("timens-shm");
    let ahead = wrapper(
        dir.path(),
        "in-time-ns",
        "unshare --time --boottime 1000000",
    );
    let spawn_inside = |lease_ms: u64| {
        let mut agent = Agent::spawn(&ahead, &path).expect("spawn agent in a time namespace");
        agent.ok(&format!("open {lease_ms}"));
        agent
    };
    // The agents' clocks really differ (the library's own stamps are on the host's).
    let (mut outside, _) = open_agent(&path, Some(300));
    let mut inside = spawn_inside(300);
    let t_out: u64 = outside.ok("now")[0].parse().unwrap();
    let t_in: u64 = inside.ok("now")[0].parse().unwrap();
    assert!(t_in > t_out + 500_000 * 1_000_000_000, "{t_in} vs {t_out}");

    // A healthy owner outside, a claimant inside.
    let g = generation(&outside.ok("try_claim"));
    outside.ok("heartbeat_loop 20");
    for attempt in 0..50 {
        let busy = inside.ask("try_claim");
        assert!(busy.starts_with("err busy"), "attempt {attempt}: {busy}");
    }
    let busy = inside.ask("claim 600");
    assert!(busy.starts_with("err timeout"), "{busy}");
    assert_eq!(outside.ok("is_current"), ["true"]);
    outside.ok("release");

    // A stopped owner inside, a waiting claimant outside.
    let mut owner_inside = spawn_inside(200);
    assert_eq!(generation(&owner_inside.ok("try_claim")), g + 1);
    owner_inside.ok("heartbeat_loop 20");
    owner_inside.signal(Signal::SIGSTOP);
    let words = outside.ok("claim 30000");
    assert_eq!(
        generation(&words),
        g + 2,
        "the stopped owner inside was deposed"
    );
    owner_inside.signal(Signal::SIGCONT);
    assert_eq!(owner_inside.ok("is_current"), ["false"]);
    let snap = shmlock::inspect(&path).unwrap().unwrap();
    assert_eq!(snap.owner.map(|o| o.pid), Some(outside.pid));
}

// ---------------------------------------------------------------------------------------
// Items 10 and 11: provisioning

/// `set_provisioning_enabled` is process-wide: the tests that set it take turns.
static PROVISIONING: Mutex<()> = Mutex::new(());

/// Every file under `dir`, with its bytes.
fn tree(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            (
                e.file_name().to_string_lossy().into_owned(),
                std::fs::read(e.path()).unwrap(),
            )
        })
        .collect()
}

/// A data path that is itself a lock file — by name (`…-shm`) or by content (the shmlock
/// magic under another name) — is refused with `DataPathIsLockFile`, with provisioning on:
/// no `…-shm-shm` is created and no byte of the lock file is written, even while a live
/// process uses it.
#[test]
fn provision_refuses_a_lock_file_as_its_data_path() {
    let _turn = PROVISIONING.lock().unwrap_or_else(|e| e.into_inner());
    shmlock::set_provisioning_enabled(true);
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("app.db");
    std::fs::write(&data, b"the engine's data").unwrap();
    let lock = ShmLock::provision(&data).unwrap();
    let (mut user, _) = open_agent(lock.path(), None);
    user.ok("try_claim");
    user.ok("attach");
    // The same page under a name that does not end in -shm.
    let renamed = dir.path().join("copied-page.bin");
    std::fs::copy(lock.path(), &renamed).unwrap();
    let before = tree(dir.path());
    for path in [lock.path().to_path_buf(), renamed] {
        match ShmLock::provision(&path) {
            Err(Error::DataPathIsLockFile { path: p }) => assert_eq!(p, path),
            other => panic!("{}: {other:?}", path.display()),
        }
    }
    let after = tree(dir.path());
    assert_eq!(
        before.keys().collect::<Vec<_>>(),
        after.keys().collect::<Vec<_>>(),
        "a file was created"
    );
    for (name, bytes) in &before {
        // The live page's heartbeat words may move; the copy and the data may not.
        if !name.ends_with("-shm") {
            assert_eq!(&after[name], bytes, "{name} was written");
        }
    }
    // The live lock file's first line (magic, version, layout) is untouched.
    let shm = lock
        .path()
        .file_name()
        .unwrap()
        .to_string_lossy()
        .into_owned();
    assert_eq!(after[&shm][..64], before[&shm][..64]);
    user.ok("is_current");
    shmlock::set_provisioning_enabled(false);
}

/// With provisioning off, `provision` of a data file without a lock file is its own error,
/// `ProvisioningDisabled`, that says how to turn it on — not an `Io` error with a wrong
/// hint — and creates nothing.
#[test]
fn provisioning_off_is_its_own_error() {
    let _turn = PROVISIONING.lock().unwrap_or_else(|e| e.into_inner());
    shmlock::set_provisioning_enabled(false);
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("app.db");
    std::fs::write(&data, b"").unwrap();
    let err = ShmLock::provision(&data).unwrap_err();
    match &err {
        Error::ProvisioningDisabled { path } => {
            assert_eq!(path, &shmlock::shm_path_for(&data))
        }
        other => panic!("expected ProvisioningDisabled, got {other:?}"),
    }
    let text = err.to_string();
    assert!(text.contains("SHMLOCK_PROVISION"), "{text}");
    assert!(!text.contains("does the directory exist"), "{text}");
    assert!(!shmlock::shm_path_for(&data).exists());
    // Turned on, the same call provisions.
    shmlock::set_provisioning_enabled(true);
    assert_eq!(
        ShmLock::provision(&data).unwrap().open_state(),
        OpenState::Created
    );
    shmlock::set_provisioning_enabled(false);
}

/// `provision_with` opens the lock file once with the caller's options (the lease, the
/// generation floor and an explicit mode apply); a missing data file is `NotFound` with a
/// sentence (`Error::NoDataFile`), and nothing is created.
#[test]
fn provision_with_applies_its_options_and_a_missing_data_file_is_not_found() {
    use std::os::unix::fs::PermissionsExt;
    let _turn = PROVISIONING.lock().unwrap_or_else(|e| e.into_inner());
    shmlock::set_provisioning_enabled(true);
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("app.db");
    let options = Options::new()
        .lease(Duration::from_millis(300))
        .generation_floor(1_000_000);
    let missing = ShmLock::provision_with(&data, &options).unwrap_err();
    assert_eq!(missing.kind(), shmlock::ErrorKind::NotFound);
    assert!(
        matches!(&missing, Error::NoDataFile { path } if path == &data),
        "{missing:?}"
    );
    let text = missing.to_string();
    assert!(text.contains("no such data file"), "{text}");
    assert!(!text.contains("stat"), "{text}");
    assert!(tree(dir.path()).is_empty(), "something was created");

    std::fs::write(&data, b"").unwrap();
    std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o640)).unwrap();
    let lock = ShmLock::provision_with(&data, &options).unwrap();
    assert_eq!(lock.path(), shmlock::shm_path_for(&data));
    let mode = std::fs::metadata(lock.path()).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o640, "the data file's mode");
    let writer = lock.try_claim_writer().unwrap();
    assert!(writer.generation() > 1_000_000, "the floor applied");
    // The lease applied: a silent owner is taken over by another process after 300 ms.
    let (mut claimant, _) = open_agent(lock.path(), None);
    let taken = claimant.ok("claim 5000");
    assert!(taken[0].parse::<u64>().unwrap() > writer.generation());
    assert!(matches!(writer.heartbeat(), Err(Error::Deposed { .. })));
    drop((writer, lock));

    // An explicit mode wins over the data file's.
    let other = dir.path().join("other.db");
    std::fs::write(&other, b"").unwrap();
    let lock = ShmLock::provision_with(&other, &Options::new().mode(0o660)).unwrap();
    let mode = std::fs::metadata(lock.path()).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o660);
    shmlock::set_provisioning_enabled(false);
}

/// `inspect` follows the CLI's rule: a data file names the lock file beside it, a lock file
/// (by name or by magic) names itself; a data file without a lock file is `Ok(None)`, and
/// nothing is created.
#[test]
fn inspect_of_a_data_file_reads_its_lock_file() {
    let _turn = PROVISIONING.lock().unwrap_or_else(|e| e.into_inner());
    shmlock::set_provisioning_enabled(true);
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("app.db");
    std::fs::write(&data, b"the engine's data").unwrap();
    assert_eq!(shmlock::inspect(&data).unwrap(), None);
    assert!(!shmlock::shm_path_for(&data).exists(), "inspect created it");
    let lock = ShmLock::provision(&data).unwrap();
    let writer = lock.try_claim_writer().unwrap();
    let _reader = lock.attach_reader().unwrap();
    let by_data = shmlock::inspect(&data).unwrap().expect("app.db-shm");
    assert_eq!(
        by_data.owner.map(|o| o.generation),
        Some(writer.generation())
    );
    assert_eq!(by_data.reader_count, 1);
    assert_eq!(shmlock::resolve_lock_path(&data), lock.path());
    assert_eq!(shmlock::resolve_lock_path(lock.path()), lock.path());
    let renamed = dir.path().join("copied-page.bin");
    std::fs::copy(lock.path(), &renamed).unwrap();
    assert_eq!(shmlock::resolve_lock_path(&renamed), renamed);
    // A directory names itself, so the error says what it is.
    assert!(matches!(
        shmlock::inspect(dir.path()),
        Err(Error::NotARegularFile { .. })
    ));
    shmlock::set_provisioning_enabled(false);
}
