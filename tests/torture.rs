//! Crash torture: child processes churn through every operation (open, register, attach,
//! detach, claim, heartbeat, release, reap, close) and are SIGKILLed at random points; an
//! external witness and a checker verify the invariants after every kill.
//!
//! `cargo test --test torture` runs 1,000 kills (the default); `SHMLOCK_TORTURE_KILLS=100000`
//! runs more, and `SHMLOCK_TORTURE_SEED=<n>` replays one seed. See RELIABILITY.md.
//!
//! Half the children declare a lease with their claims, and the test SIGSTOPs a child
//! (usually the owner) for longer than the lease now and then, so lease takeovers of live
//! owners happen inside the witness too.
//!
//! The witness is independent of the library: each churning child (`shmlock agent`'s
//! `churn` command) holds a POSIX write lock on byte 0 of a separate witness file for
//! exactly as long as it believes it owns the writer role, and appends fixed-size records
//! (`BEGIN gen pid`, `END gen pid`) under it. A claim that took over a live owner by its
//! lease records `LEASE gen pid old-gen old-pid`; a child that finds the witness lock taken
//! right after its claim succeeded records `OVERLAP gen pid holder` and waits for the lock;
//! a child that learns it was deposed records `DEPOSED gen pid` and drops the lock. The
//! checker here reads those records and fails on an overlap whose holder no `LEASE` record
//! deposed, a `DEPOSED` no `LEASE` record explains (or of a child that declared no lease),
//! a generation that does not increase, an `END` that does not close the open `BEGIN`, a
//! `BEGIN` while an owner that was neither killed nor deposed by a lease has its `BEGIN`
//! open, or any `ERROR` a child reported.

// Unix only: its witness is a POSIX (`F_SETLK`) lock and its agents use Unix-only commands.
#![cfg(unix)]

#[path = "../cli/src/driver.rs"]
#[allow(dead_code)]
mod driver;

use std::collections::{BTreeMap, HashSet};
use std::fs::{File, OpenOptions};
use std::io::Read;
use std::os::fd::AsFd;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::time::{Duration, Instant};

use driver::Agent;
use nix::fcntl::{fcntl, FcntlArg};
use nix::libc;
use nix::sys::signal::Signal;
use shmlock::ShmLock;

const EXE: &str = env!("CARGO_BIN_EXE_shmlock");
/// Size of one witness record (see the agent's `torture` module).
const RECORD: usize = 128;

/// What the checker carries from one look at the witness log to the next.
#[derive(Default, Debug)]
struct WitnessState {
    last_generation: u64,
    /// The open `BEGIN`: (generation, pid).
    owner: Option<(u64, u32)>,
    claims: u64,
    /// `BEGIN`s that followed an owner which died without its `END`.
    takeovers_of_killed_owners: u64,
    opens: BTreeMap<String, u64>,
    records: u64,
    /// Claims (generation, pid) that a `LEASE` record says were deposed by a lease.
    lease_victims: HashSet<(u64, u32)>,
    /// `LEASE` records: takeovers of live owners whose declared lease had expired.
    lease_takeovers: u64,
    /// `BEGIN`s over an owner deposed by a lease that had not noticed yet.
    begins_over_lease_victims: u64,
    /// `DEPOSED` records: a lease victim noticed and stepped down.
    depositions_noticed: u64,
    /// `DEPOSED` records not (yet) explained by a `LEASE` record: the victim may notice
    /// before its successor writes `LEASE`; each must be explained by the end.
    unexplained_depositions: Vec<(u64, u32)>,
    /// `OVERLAP`s whose holder was a lease victim (the claimant waited for it).
    overlaps_with_lease_victims: u64,
    /// Claims (generation, pid) that a `LEASE` record says took over a live owner.
    lease_claims: HashSet<(u64, u32)>,
    /// `OVERLAP`s of a lease takeover whose holder let go of the witness lock between the
    /// claimant's try-lock and its look at the holder (recorded as holder 0): the victim
    /// noticed its deposition in that window.
    overlaps_released_in_passing: u64,
}

impl WitnessState {
    /// Check a run of records; `killed` holds every pid the test has SIGKILLed, `leased`
    /// every pid whose claims declared a lease.
    fn check(
        &mut self,
        bytes: &[u8],
        killed: &HashSet<u32>,
        leased: &HashSet<u32>,
    ) -> Result<(), String> {
        if bytes.len() % RECORD != 0 {
            return Err(format!(
                "the witness log holds a torn record ({} bytes)",
                bytes.len()
            ));
        }
        for chunk in bytes.chunks(RECORD) {
            self.records += 1;
            let line = String::from_utf8_lossy(chunk);
            let words: Vec<&str> = line.split_whitespace().collect();
            let num = |i: usize| -> Result<u64, String> {
                words
                    .get(i)
                    .and_then(|w| w.parse().ok())
                    .ok_or_else(|| format!("malformed witness record {:?}", line.trim_end()))
            };
            match words.first().copied() {
                Some("BEGIN") => {
                    let (generation, pid) = (num(1)?, num(2)? as u32);
                    if generation <= self.last_generation {
                        return Err(format!(
                            "generation {generation} (pid {pid}) does not exceed the previous claim's {}",
                            self.last_generation
                        ));
                    }
                    if let Some((g, p)) = self.owner {
                        if self.lease_victims.contains(&(g, p)) {
                            self.begins_over_lease_victims += 1;
                        } else if killed.contains(&p) {
                            self.takeovers_of_killed_owners += 1;
                        } else {
                            return Err(format!(
                                "pid {pid} began generation {generation} while pid {p} (generation {g}) still owned, was never killed and was not deposed by a lease"
                            ));
                        }
                    }
                    self.owner = Some((generation, pid));
                    self.last_generation = generation;
                    self.claims += 1;
                }
                Some("END") => {
                    let (generation, pid) = (num(1)?, num(2)? as u32);
                    if self.owner != Some((generation, pid)) {
                        return Err(format!(
                            "END of generation {generation} by pid {pid} while the witness says {:?} owns",
                            self.owner
                        ));
                    }
                    self.owner = None;
                }
                Some("LEASE") => {
                    let (generation, pid) = (num(1)?, num(2)? as u32);
                    let (old, victim) = (num(3)?, num(4)? as u32);
                    if !leased.contains(&victim) {
                        return Err(format!(
                            "pid {pid} (generation {generation}) took over pid {victim} by a lease it never declared"
                        ));
                    }
                    if generation <= old || victim == pid {
                        return Err(format!("a lease takeover that cannot be: {line}"));
                    }
                    self.lease_victims.insert((old, victim));
                    self.lease_claims.insert((generation, pid));
                    self.unexplained_depositions.retain(|&d| d != (old, victim));
                    self.lease_takeovers += 1;
                }
                Some("DEPOSED") => {
                    let (generation, pid) = (num(1)?, num(2)? as u32);
                    if !leased.contains(&pid) {
                        return Err(format!(
                            "pid {pid}, which declared no lease, was deposed alive: {}",
                            line.trim_end()
                        ));
                    }
                    if !self.lease_victims.contains(&(generation, pid)) {
                        self.unexplained_depositions.push((generation, pid));
                    }
                    if self.owner == Some((generation, pid)) {
                        self.owner = None;
                    }
                    self.depositions_noticed += 1;
                }
                Some("OVERLAP")
                    if num(3).is_ok_and(|holder| {
                        self.lease_victims
                            .iter()
                            .any(|&(_, victim)| victim as u64 == holder)
                    }) =>
                {
                    self.overlaps_with_lease_victims += 1;
                }
                // Holder 0: the lock was taken at the try-lock and free at the look that
                // followed. Only a lease takeover's victim may let go in that window
                // (noticing it was deposed); for any other claim it is an overlap.
                Some("OVERLAP")
                    if num(3).is_ok_and(|holder| holder == 0)
                        && num(1).is_ok_and(|generation| {
                            num(2).is_ok_and(|pid| {
                                self.lease_claims.contains(&(generation, pid as u32))
                            })
                        }) =>
                {
                    self.overlaps_released_in_passing += 1;
                }
                Some("OPEN") => {
                    *self
                        .opens
                        .entry(words.get(1).unwrap_or(&"?").to_string())
                        .or_default() += 1;
                }
                _ => return Err(format!("witness: {}", line.trim_end())),
            }
        }
        Ok(())
    }
}

/// Read the witness log's new records and empty it (every writer is paused or dead).
fn drain_witness(path: &Path) -> Vec<u8> {
    let mut bytes = Vec::new();
    File::open(path)
        .and_then(|mut f| f.read_to_end(&mut bytes))
        .expect("read the witness log");
    OpenOptions::new()
        .write(true)
        .open(path)
        .and_then(|f| f.set_len(0))
        .expect("empty the witness log");
    bytes
}

/// The pid holding the POSIX lock on byte 0 of the witness file, if any.
fn witness_holder(path: &Path) -> Option<i32> {
    let file = File::open(path).expect("open the witness log");
    // SAFETY: `flock` is a plain C struct of integers; all-zero is a valid value.
    let mut f: libc::flock = unsafe { std::mem::zeroed() };
    f.l_type = libc::F_WRLCK as libc::c_short;
    f.l_whence = libc::SEEK_SET as libc::c_short;
    f.l_len = 1;
    fcntl(file.as_fd(), FcntlArg::F_GETLK(&mut f)).expect("F_GETLK");
    // Closing `file` would drop our own POSIX locks on it: this process holds none.
    (f.l_type != libc::F_UNLCK as libc::c_short).then_some(f.l_pid)
}

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.trim().parse().ok())
}

struct Child {
    agent: Agent,
}

/// The lease that leased children declare, in ms. A stop lasts longer than this.
const LEASE_MS: u64 = 25;

fn spawn_churner(path: &Path, witness: &Path, seed: u64, lease: bool) -> Child {
    let mut agent = Agent::spawn(Path::new(EXE), path).expect("spawn agent");
    let lease = if lease {
        format!(" {LEASE_MS}")
    } else {
        String::new()
    };
    agent.ok(&format!("churn {seed} {}{lease}", witness.display()));
    Child { agent }
}

/// A paused child's report.
#[derive(Debug, Clone, Copy)]
struct Report {
    pid: u32,
    open: bool,
    readers: u64,
    writer: u64,
    ops: u64,
    /// A claim waiting for a lease victim to drop the witness lock.
    awaiting: u64,
}

fn pause(child: &mut Child) -> Report {
    child.agent.send("pause");
    read_pause(child)
}

fn read_pause(child: &mut Child) -> Report {
    let answer = child.agent.answer();
    let words: Vec<&str> = answer.split_whitespace().collect();
    assert_eq!(words.first(), Some(&"ok"), "pause answered {answer:?}");
    let field = |name: &str| -> u64 {
        words
            .iter()
            .find_map(|w| w.strip_prefix(name)?.strip_prefix('='))
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("pause answered {words:?}"))
    };
    Report {
        pid: child.agent.pid,
        open: field("open") == 1,
        readers: field("readers"),
        writer: field("writer"),
        ops: field("ops"),
        awaiting: field("awaiting"),
    }
}

#[derive(Debug, Default)]
struct Figures {
    kills: u64,
    massacres: u64,
    checks: u64,
    child_ops: u64,
    max_takeovers_counter: u64,
    deferred_reaps: u64,
    stops: u64,
}

/// One look at the whole system with every child parked between operations.
#[allow(clippy::too_many_arguments)] // the run's whole state, spelled out
fn check_all(
    seed: u64,
    lock_path: &Path,
    witness: &Path,
    children: &mut [Child],
    state: &mut WitnessState,
    killed: &HashSet<u32>,
    leased: &HashSet<u32>,
    figures: &mut Figures,
) -> Vec<Report> {
    // Every pause is in flight before the first answer is awaited.
    for child in children.iter_mut() {
        child.agent.send("pause");
    }
    let reports: Vec<Report> = children.iter_mut().map(read_pause).collect();
    let fail = |what: String| -> ! {
        panic!(
            "seed {seed}, after {} kills: {what}\nreports: {reports:?}",
            figures.kills
        )
    };
    if let Err(e) = state.check(&drain_witness(witness), killed, leased) {
        fail(e);
    }
    let owners: Vec<&Report> = reports.iter().filter(|r| r.writer != 0).collect();
    if owners.len() > 1 {
        fail(format!("two live processes believe they own: {owners:?}"));
    }
    // The witness agrees with the children about who owns.
    if let Some(o) = owners.first() {
        if state.owner != Some((o.writer, o.pid)) {
            fail(format!(
                "pid {} owns generation {} but the witness log says {:?}",
                o.pid, o.writer, state.owner
            ));
        }
        if witness_holder(witness) != Some(o.pid as i32) {
            fail(format!(
                "the owner pid {} does not hold the witness lock ({:?} does)",
                o.pid,
                witness_holder(witness)
            ));
        }
    } else if let Some((g, p)) = state.owner {
        if !killed.contains(&p) {
            fail(format!(
                "the witness says live pid {p} owns generation {g}, but no child does"
            ));
        }
    }
    // The file always opens, and after a reap the page matches the live children exactly.
    let lock = ShmLock::open(lock_path).unwrap_or_else(|e| fail(format!("open failed: {e}")));
    lock.reap()
        .unwrap_or_else(|e| fail(format!("reap failed: {e}")));
    let mut snap = lock.snapshot();
    // A dead member cannot be reaped while a live child's death watcher (a library thread
    // the pause does not park) holds its byte shared for the instant after the death; it
    // is dead all the same (not alive, readers not counted). Reap again, bounded.
    let deadline = Instant::now() + Duration::from_secs(2);
    while snap.dead_members().count() != 0 && Instant::now() < deadline {
        figures.deferred_reaps += 1;
        std::thread::sleep(Duration::from_micros(200));
        lock.reap()
            .unwrap_or_else(|e| fail(format!("reap failed: {e}")));
        snap = lock.snapshot();
    }
    let open_children = reports.iter().filter(|r| r.open).count();
    let live = snap.live_members().count();
    if live != open_children + 1 || snap.dead_members().count() != 0 {
        fail(format!(
            "{live} live and {} dead members after reap; {open_children} children have it open (+1: the checker)",
            snap.dead_members().count()
        ));
    }
    let guards: u64 = reports.iter().map(|r| r.readers).sum();
    if snap.reader_count != guards {
        fail(format!(
            "reader count {} after reap, but the live children hold {guards} reader guards",
            snap.reader_count
        ));
    }
    // The page's owner is the child that believes it owns — or, after a lease takeover
    // its victim has not noticed yet, the child waiting for the victim's witness lock.
    let is_victim = |o: &&Report| state.lease_victims.contains(&(o.writer, o.pid));
    let believer = owners.first();
    match (believer, &snap.owner) {
        (None, None) => {}
        (Some(o), Some(info)) if info.alive && info.generation == o.writer && info.pid == o.pid => {
        }
        (o, Some(info))
            if info.alive
                && o.is_none_or(is_victim)
                && reports
                    .iter()
                    .any(|r| r.pid == info.pid && r.awaiting == info.generation) => {}
        // The victim's successor died before it began, and was reaped.
        (Some(o), None) if is_victim(o) => {}
        (o, info) => fail(format!(
            "the page's owner {info:?} does not match the children's {o:?}"
        )),
    }
    if snap.generation < state.last_generation {
        fail(format!(
            "the page's generation {} is below the last claim's {}",
            snap.generation, state.last_generation
        ));
    }
    figures.max_takeovers_counter = figures.max_takeovers_counter.max(snap.takeovers);
    drop(lock);
    figures.checks += 1;
    for child in children.iter_mut() {
        child.agent.send("resume");
    }
    for child in children.iter_mut() {
        let answer = child.agent.answer();
        assert_eq!(answer, "ok", "resume answered {answer:?}");
    }
    reports
}

fn torture(kills: u64, seed: u64, width: usize) -> (Figures, WitnessState, Duration) {
    println!("crash torture: seed {seed} (replay with SHMLOCK_TORTURE_SEED={seed}), {kills} kills, {width} children");
    let started = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let lock_path = dir.path().join("torture-shm");
    let witness = dir.path().join("witness.log");
    File::create(&witness).unwrap();
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut leased = HashSet::new();
    let spawn = |rng: &mut fastrand::Rng, leased: &mut HashSet<u32>| {
        let lease = rng.bool();
        let child = spawn_churner(&lock_path, &witness, rng.u64(..), lease);
        if lease {
            leased.insert(child.agent.pid);
        }
        child
    };
    let mut children: Vec<Child> = (0..width).map(|_| spawn(&mut rng, &mut leased)).collect();
    let mut killed = HashSet::new();
    let mut state = WitnessState::default();
    let mut figures = Figures::default();
    let mut last_ops = vec![0u64; width];
    let mut last_reports: Vec<Report> = Vec::new();
    while figures.kills < kills {
        // Let the children run for a random while: this spreads the kill points over
        // every operation (it is workload timing, not synchronisation).
        std::thread::sleep(Duration::from_micros(rng.u64(0..1500)));
        if rng.u32(0..25) == 0 {
            // Pause a child past the lease (the owner at the last look if it declared a
            // lease, else any child): others may take the role over by its lease while it
            // is stopped; once continued, it must learn it was deposed and change nothing.
            let owner = last_reports
                .iter()
                .position(|r| r.writer != 0 && leased.contains(&r.pid));
            let i = owner.unwrap_or_else(|| rng.usize(0..width));
            let stopped = &children[i].agent;
            stopped.signal(Signal::SIGSTOP);
            std::thread::sleep(Duration::from_millis(LEASE_MS + rng.u64(1..=LEASE_MS)));
            stopped.signal(Signal::SIGCONT);
            figures.stops += 1;
            last_reports = check_all(
                seed,
                &lock_path,
                &witness,
                &mut children,
                &mut state,
                &killed,
                &leased,
                &mut figures,
            );
            continue;
        }
        let victims: Vec<usize> = if rng.u32(0..40) == 0 {
            figures.massacres += 1;
            (0..width).collect()
        } else if let (true, Some(owner)) =
            (rng.bool(), last_reports.iter().position(|r| r.writer != 0))
        {
            // Half the time, aim at the child that owned at the last look (it often still
            // does): owners must die at every point of their claim, not only readers.
            vec![owner]
        } else {
            vec![rng.usize(0..width)]
        };
        // Kill first, then spawn: after a massacre nobody has the file open, so the first
        // new child to open is alone and recovers the page.
        for &i in &victims {
            let old = &children[i].agent;
            killed.insert(old.pid);
            old.signal(Signal::SIGKILL);
        }
        for &i in &victims {
            let fresh = spawn(&mut rng, &mut leased);
            std::mem::replace(&mut children[i], fresh).agent.kill();
            figures.kills += 1;
            figures.child_ops += last_ops[i];
            last_ops[i] = 0;
        }
        if victims.len() > 1 && rng.bool() {
            // Half the massacres are checked one round later, so that a child (not the
            // checker) is the one that finds itself alone and recovers.
            last_reports.clear();
            continue;
        }
        let reports = check_all(
            seed,
            &lock_path,
            &witness,
            &mut children,
            &mut state,
            &killed,
            &leased,
            &mut figures,
        );
        // A child's ops count only grows while it lives; remember the latest.
        for (last, r) in last_ops.iter_mut().zip(&reports) {
            *last = r.ops;
        }
        last_reports = reports;
    }
    figures.child_ops += last_ops.iter().sum::<u64>();
    if !state.unexplained_depositions.is_empty() {
        panic!(
            "seed {seed}: deposed, but no LEASE record says by whom: {:?}",
            state.unexplained_depositions
        );
    }
    (figures, state, started.elapsed())
}

/// Every kill is followed by a full check; ≥ 1,000 kills in CI.
#[test]
fn crash_torture_never_two_owners_generations_increase_readers_balance() {
    let kills = env_u64("SHMLOCK_TORTURE_KILLS").unwrap_or(1000);
    let seed = env_u64("SHMLOCK_TORTURE_SEED").unwrap_or_else(|| fastrand::u64(..));
    let (figures, state, elapsed) = torture(kills, seed, 4);
    println!(
        "crash torture: seed {seed}: {} kills ({} massacres), {} checks, {} claims witnessed, \
         {} takeovers of killed owners witnessed, {} witness records, ~{} child operations, \
         opens {:?}, page takeover counter {}, {} deferred reaps, {} stops past the lease, \
         {} lease takeovers ({} BEGINs over an unnoticing victim, {} claimants waited for one, \
         {} found it letting go, {} depositions noticed), {:.1} s, failures 0",
        figures.kills,
        figures.massacres,
        figures.checks,
        state.claims,
        state.takeovers_of_killed_owners,
        state.records,
        figures.child_ops,
        state.opens,
        figures.max_takeovers_counter,
        figures.deferred_reaps,
        figures.stops,
        state.lease_takeovers,
        state.begins_over_lease_victims,
        state.overlaps_with_lease_victims,
        state.overlaps_released_in_passing,
        state.depositions_noticed,
        elapsed.as_secs_f64()
    );
    assert!(figures.kills >= kills);
    assert!(state.claims > 0, "no claim was ever witnessed");
    assert!(
        state.takeovers_of_killed_owners > 0 || kills < 100,
        "no owner was ever killed while owning: the torture did not reach the takeover path"
    );
    assert!(
        state.lease_takeovers > 0 || kills < 1000,
        "no lease takeover happened: the torture did not reach the lease path"
    );
}

/// The checker fails on what it is meant to catch (so a green torture run means something).
#[test]
fn witness_checker_rejects_overlap_reuse_and_unmatched_records() {
    fn rec(text: &str) -> Vec<u8> {
        let mut b = text.as_bytes().to_vec();
        b.resize(RECORD - 1, b' ');
        b.push(b'\n');
        b
    }
    let killed: HashSet<u32> = [7].into_iter().collect();
    // Pids 1 and 2 declared a lease; 3 did not.
    let leased: HashSet<u32> = [1, 2].into_iter().collect();
    let run_state = |records: &[&str]| {
        let bytes: Vec<u8> = records.iter().flat_map(|r| rec(r)).collect();
        let mut state = WitnessState::default();
        state.check(&bytes, &killed, &leased).map(|()| state)
    };
    let run = |records: &[&str]| run_state(records).map(|_| ());
    assert!(run(&["BEGIN 5 1", "END 5 1", "BEGIN 6 7", "BEGIN 9 2", "END 9 2"]).is_ok());
    assert!(
        run(&["BEGIN 5 1", "BEGIN 6 2"]).is_err(),
        "live owner overlapped"
    );
    assert!(
        run(&["BEGIN 5 1", "END 5 1", "BEGIN 5 2"]).is_err(),
        "generation repeated"
    );
    assert!(
        run(&["BEGIN 5 1", "END 5 1", "BEGIN 4 2"]).is_err(),
        "generation went back"
    );
    assert!(run(&["BEGIN 5 1", "END 6 1"]).is_err(), "unmatched END");
    assert!(run(&["OVERLAP 5 1 2"]).is_err());
    assert!(run(&["DEPOSED 5 3 heartbeat"]).is_err());
    assert!(run(&["ERROR 1 open: boom"]).is_err());
    let mut torn = rec("BEGIN 5 1");
    torn.truncate(40);
    assert!(WitnessState::default()
        .check(&torn, &killed, &leased)
        .is_err());
    // Lease takeovers: the victim announced by LEASE may notice late, its successor waits.
    assert!(run(&["BEGIN 5 1", "LEASE 6 2 5 1", "DEPOSED 5 1", "BEGIN 6 2"]).is_ok());
    let waited = run_state(&[
        "BEGIN 5 1",
        "LEASE 6 3 5 1",
        "OVERLAP 6 3 1",
        "END 5 1",
        "DEPOSED 5 1 release",
        "BEGIN 6 3",
        "END 6 3",
    ])
    .unwrap();
    assert_eq!(
        (waited.lease_takeovers, waited.overlaps_with_lease_victims),
        (1, 1)
    );
    // The victim noticed before its successor said LEASE: explained later.
    let early = run_state(&["BEGIN 5 1", "DEPOSED 5 1", "LEASE 6 2 5 1", "BEGIN 6 2"]).unwrap();
    assert!(early.unexplained_depositions.is_empty());
    let never = run_state(&["BEGIN 5 1", "DEPOSED 5 1"]).unwrap();
    assert_eq!(never.unexplained_depositions, [(5, 1)], "never explained");
    assert!(
        run(&["BEGIN 5 3", "LEASE 6 2 5 3"]).is_err(),
        "a lease the owner never declared"
    );
    assert!(
        run(&["BEGIN 5 3", "DEPOSED 5 3"]).is_err(),
        "lease-less deposed"
    );
    assert!(
        run(&["BEGIN 5 1", "OVERLAP 6 2 1"]).is_err(),
        "overlap without a lease takeover"
    );
    // A lease victim let go between the successor's try-lock and its look at the holder.
    let passing = run_state(&[
        "BEGIN 5 1",
        "LEASE 6 2 5 1",
        "OVERLAP 6 2 0",
        "DEPOSED 5 1 heartbeat",
        "BEGIN 6 2",
    ])
    .unwrap();
    assert_eq!(passing.overlaps_released_in_passing, 1);
    assert!(
        run(&["BEGIN 5 1", "END 5 1", "OVERLAP 6 2 0"]).is_err(),
        "a vanished holder without a lease takeover"
    );
    assert!(
        run(&["BEGIN 5 1", "LEASE 6 2 5 1", "OVERLAP 7 3 0"]).is_err(),
        "a vanished holder, but another claim's lease takeover"
    );
    assert!(
        run(&["BEGIN 5 1", "BEGIN 6 2"]).is_err(),
        "a leased owner overlapped without a LEASE record"
    );
}

/// A real process that finds another holding the witness lock after its claim records an
/// OVERLAP: here the test itself holds the lock, as a second "owner" would.
#[test]
fn witness_fires_when_another_process_believes_it_owns() {
    let dir = tempfile::tempdir().unwrap();
    let lock_path = dir.path().join("witness-shm");
    let witness = dir.path().join("witness.log");
    let held = OpenOptions::new()
        .create(true)
        .read(true)
        .append(true)
        .open(&witness)
        .unwrap();
    // SAFETY: `flock` is a plain C struct of integers; all-zero is a valid value.
    let mut f: libc::flock = unsafe { std::mem::zeroed() };
    f.l_type = libc::F_WRLCK as libc::c_short;
    f.l_whence = libc::SEEK_SET as libc::c_short;
    f.l_len = 1;
    fcntl(held.as_fd(), FcntlArg::F_SETLK(&f)).expect("take the witness lock");
    let mut child = spawn_churner(&lock_path, &witness, 1, false);
    // The child claims within its first few operations and then blocks on the witness
    // lock; watch the log (bounded) for its OVERLAP record.
    let deadline = Instant::now() + Duration::from_secs(30);
    let log = loop {
        // Read through the locking descriptor: closing any other descriptor of the file
        // would drop this process's POSIX lock.
        let mut buf = vec![0; held.metadata().unwrap().len() as usize];
        held.read_exact_at(&mut buf, 0).unwrap();
        let text = String::from_utf8_lossy(&buf).into_owned();
        if text.contains("OVERLAP") || Instant::now() > deadline {
            break text;
        }
        std::thread::sleep(Duration::from_millis(2));
    };
    // Closing any descriptor of the file drops this process's POSIX lock: the child goes on.
    drop(held);
    assert!(log.contains("OVERLAP"), "no OVERLAP record: {log}");
    let report = pause(&mut child);
    let bytes = drain_witness(&witness);
    let verdict = WitnessState::default().check(&bytes, &HashSet::new(), &HashSet::new());
    assert!(
        verdict.as_ref().is_err_and(|e| e.contains("OVERLAP")),
        "{verdict:?}, {report:?}"
    );
}
