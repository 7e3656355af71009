//! The core guarantees, with real processes (`shmlock agent` children), SIGKILL and SIGSTOP.

// Unix only: it stops and resumes agents with SIGSTOP/SIGCONT; the kills, counts and
// takeovers it checks run portably in tests/processes.rs, under wine too.
#![cfg(unix)]

mod common;

use std::time::Duration;

use common::{open_agent, wait_until, Agent};
use nix::sys::signal::Signal;
use shmlock::{OpenState, ShmLock};

fn gen_of(words: &[String]) -> u64 {
    words[0].parse().expect("generation")
}

#[test]
fn racing_try_claims_have_exactly_one_winner_per_round() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("race-shm");
    let (mut a, _) = open_agent(&path, None);
    let (mut b, _) = open_agent(&path, None);
    let mut last_generation = 0;
    for round in 0..200 {
        // Both commands are in flight before either answer is read.
        a.send("try_claim");
        b.send("try_claim");
        let answers = [a.answer(), b.answer()];
        let winners: Vec<usize> = (0..2).filter(|&i| answers[i].starts_with("ok")).collect();
        assert_eq!(winners.len(), 1, "round {round}: {answers:?}");
        let loser = &answers[1 - winners[0]];
        assert!(loser.starts_with("err busy"), "round {round}: {loser}");
        let generation: u64 = answers[winners[0]]
            .split_whitespace()
            .nth(1)
            .unwrap()
            .parse()
            .unwrap();
        assert!(
            generation > last_generation,
            "generation went from {last_generation} to {generation}"
        );
        if last_generation != 0 {
            assert_eq!(generation, last_generation + 1);
        }
        last_generation = generation;
        let winner: &mut Agent = if winners[0] == 0 { &mut a } else { &mut b };
        winner.ok("release");
    }
}

#[test]
fn killed_owner_is_taken_over_by_a_waiting_claimant_with_the_next_generation() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("kill-shm");
    let (mut owner, state) = open_agent(&path, None);
    assert_eq!(state, "Created");
    let generation = gen_of(&owner.ok("try_claim"));
    owner.ok("heartbeat_loop 5");
    let (mut claimant, _) = open_agent(&path, None);
    assert!(claimant.ask("try_claim").starts_with("err busy"));
    claimant.send("claim 30000");
    let observer = ShmLock::open(&path).unwrap();
    wait_until(
        "the claimant sleeps in claim_writer",
        Duration::from_secs(30),
        || observer.snapshot().waiting_claimants > 0,
    );
    owner.kill();
    let answer = claimant.answer();
    let words: Vec<&str> = answer.split_whitespace().collect();
    assert_eq!(words[0], "ok", "{answer}");
    assert_eq!(words[1].parse::<u64>().unwrap(), generation + 1);
    let snap = observer.snapshot();
    assert_eq!(snap.owner.as_ref().unwrap().pid, claimant.pid);
    assert!(snap.owner.as_ref().unwrap().alive);
    assert_eq!(snap.takeovers, 1);
    // The dead owner's entry went with the takeover.
    assert_eq!(snap.dead_members().count(), 0);
}

#[test]
fn stopped_owner_past_its_lease_is_deposed_and_cannot_touch_its_successor() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("lease-shm");
    // The owner declares the lease with its claim; the claimant declares none of its own.
    let (mut owner, _) = open_agent(&path, Some(50));
    let generation = gen_of(&owner.ok("try_claim"));
    owner.ok("heartbeat_loop 5");
    let (mut claimant, _) = open_agent(&path, None);
    owner.signal(Signal::SIGSTOP);
    let words = claimant.ok("claim 30000");
    assert_eq!(gen_of(&words), generation + 1);
    owner.signal(Signal::SIGCONT);
    // The deposed owner is told, on every path, and changes nothing.
    assert!(owner.ask("heartbeat").starts_with("err deposed"));
    assert_eq!(owner.ok("is_current"), ["false"]);
    assert!(owner.ask("release").starts_with("err deposed"));
    assert_eq!(claimant.ok("is_current"), ["true"]);
    claimant.ok("heartbeat");
    let snap = ShmLock::open(&path).unwrap().snapshot();
    let o = snap.owner.unwrap();
    assert_eq!((o.pid, o.generation), (claimant.pid, generation + 1));
    assert!(o.heartbeat_age.unwrap() < Duration::from_secs(5));
    assert_eq!(snap.takeovers, 1);
    claimant.ok("release");
}

#[test]
fn readers_across_processes_are_counted_exactly_and_a_killed_one_vanishes_once() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("readers-shm");
    let observer = ShmLock::open(&path).unwrap();
    let mut agents = Vec::new();
    for n in [2, 3, 1] {
        let (mut agent, _) = open_agent(&path, None);
        for _ in 0..n {
            agent.ok("attach");
        }
        agents.push(agent);
    }
    let local = observer.attach_reader().unwrap();
    assert_eq!(observer.snapshot().reader_count, 7);

    let victim = agents.remove(1);
    let victim_pid = victim.pid;
    victim.kill();
    // Dead readers stop counting at once (liveness is the kernel's lock)...
    let snap = observer.snapshot();
    assert_eq!(snap.reader_count, 4);
    let dead: Vec<_> = snap.dead_members().collect();
    assert_eq!(dead.len(), 1);
    assert_eq!((dead[0].pid, dead[0].readers), (victim_pid, 3));
    // ...and are cleared from the page exactly once.
    let report = observer.reap().unwrap();
    assert_eq!(report.members.len(), 1);
    assert_eq!(report.readers_cleared(), 3);
    assert!(observer.reap().unwrap().members.is_empty());
    assert_eq!(observer.snapshot().reader_count, 4);

    // A new process's registration reaps too.
    agents.remove(1).kill();
    assert_eq!(observer.snapshot().dead_members().count(), 1);
    let (_newcomer, _) = open_agent(&path, None);
    let snap = observer.snapshot();
    assert_eq!(snap.dead_members().count(), 0);
    assert_eq!(snap.reader_count, 3);
    assert!(observer.reap().unwrap().members.is_empty());

    agents[0].ok("detach");
    drop(local);
    assert_eq!(observer.snapshot().reader_count, 1);
}

#[test]
fn sixteen_processes_opening_a_fresh_file_create_it_exactly_once() {
    let dir = tempfile::tempdir().unwrap();
    for round in 0..4 {
        let path = dir.path().join(format!("fresh-{round}-shm"));
        let mut agents: Vec<Agent> = (0..16)
            .map(|_| {
                Agent::spawn(std::path::Path::new(env!("CARGO_BIN_EXE_shmlock")), &path).unwrap()
            })
            .collect();
        for agent in &mut agents {
            agent.send("open");
        }
        let states: Vec<String> = agents.iter_mut().map(|a| a.answer()).collect();
        let created = states
            .iter()
            .filter(|s| s.starts_with("ok Created"))
            .count();
        let joined = states.iter().filter(|s| s.starts_with("ok Joined")).count();
        assert_eq!((created, joined), (1, 15), "round {round}: {states:?}");
        assert_eq!(std::fs::metadata(&path).unwrap().len(), 4096);
        let snap = shmlock::inspect(&path).unwrap().unwrap();
        assert_eq!(snap.live_members().count(), 16);
        let mut indices: Vec<usize> = snap.members.iter().map(|m| m.index).collect();
        indices.dedup();
        assert_eq!(indices.len(), 16, "every process has its own entry");
    }
}

#[test]
fn generation_survives_clean_reopen_and_crash_recovery() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("gen-shm");
    let first = {
        let lock = ShmLock::open(&path).unwrap();
        assert_eq!(lock.open_state(), OpenState::Created);
        lock.try_claim_writer().unwrap().generation()
    };
    let second = {
        let lock = ShmLock::open(&path).unwrap();
        assert_eq!(lock.open_state(), OpenState::Reopened);
        lock.try_claim_writer().unwrap().generation()
    };
    assert_eq!(second, first + 1);
    let (mut owner, state) = open_agent(&path, None);
    assert_eq!(state, "Reopened");
    owner.ok("attach");
    assert_eq!(gen_of(&owner.ok("try_claim")), second + 1);
    owner.kill();
    let lock = ShmLock::open(&path).unwrap();
    assert_eq!(lock.open_state(), OpenState::RecoveredFromCrash);
    let snap = lock.snapshot();
    assert!(snap.owner.is_none());
    assert_eq!(snap.reader_count, 0);
    assert_eq!(snap.members.len(), 1, "only this process remains");
    assert_eq!(lock.try_claim_writer().unwrap().generation(), second + 2);
}

#[test]
fn release_hands_over_to_a_waiting_claimant() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("handoff-shm");
    let (mut owner, _) = open_agent(&path, None);
    let generation = gen_of(&owner.ok("try_claim"));
    let (mut claimant, _) = open_agent(&path, None);
    claimant.send("claim 30000");
    let observer = ShmLock::open(&path).unwrap();
    wait_until("the claimant sleeps", Duration::from_secs(30), || {
        observer.snapshot().waiting_claimants > 0
    });
    owner.ok("release");
    let words: Vec<String> = claimant
        .answer()
        .split_whitespace()
        .map(String::from)
        .collect();
    assert_eq!(words[0], "ok");
    assert_eq!(words[1].parse::<u64>().unwrap(), generation + 1);
    // The previous owner is alive: a release is no takeover.
    assert_eq!(observer.snapshot().takeovers, 0);
}

#[test]
fn claim_writer_times_out_on_a_live_owner() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("timeout-shm");
    let (mut owner, _) = open_agent(&path, None);
    owner.ok("try_claim");
    let lock = ShmLock::open(&path).unwrap();
    let start = std::time::Instant::now();
    let err = lock.claim_writer(Duration::from_millis(100)).unwrap_err();
    assert!(start.elapsed() >= Duration::from_millis(100));
    // A time-out, recognisable as one, that still names the owner; its sentence does not
    // tell the caller to do what it just did.
    assert_eq!(err.kind(), shmlock::ErrorKind::Timeout);
    let text = err.to_string();
    assert!(!text.contains("claim_writer(timeout)"), "{text}");
    assert!(text.contains("timed out after 100 ms"), "{text}");
    match err {
        shmlock::Error::ClaimTimeout {
            pid,
            generation,
            waited,
        } => {
            assert_eq!(pid, owner.pid);
            assert_eq!(
                Some(generation),
                lock.snapshot().owner.map(|o| o.generation)
            );
            assert_eq!(waited, Duration::from_millis(100));
        }
        other => panic!("expected ClaimTimeout, got {other}"),
    }
    // Not waiting is no time-out: the owner is busy.
    assert_eq!(
        lock.try_claim_writer().unwrap_err().kind(),
        shmlock::ErrorKind::WriterBusy
    );
}

#[test]
fn a_full_member_table_refuses_the_next_process_until_one_dies() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("full-shm");
    let observer = ShmLock::open(&path).unwrap();
    let exe = std::path::Path::new(env!("CARGO_BIN_EXE_shmlock"));
    let capacity = shmlock::MEMBER_CAPACITY;
    let mut agents: Vec<Agent> = (1..capacity)
        .map(|_| Agent::spawn(exe, &path).unwrap())
        .collect();
    for agent in &mut agents {
        agent.send("open");
    }
    for agent in &mut agents {
        let answer = agent.answer();
        assert!(answer.starts_with("ok Joined"), "{answer}");
    }
    assert_eq!(observer.snapshot().live_members().count(), capacity);
    let mut late = Agent::spawn(exe, &path).unwrap();
    let refused = late.ask("open");
    assert!(refused.starts_with("err too_many_processes"), "{refused}");
    assert!(refused.contains(&capacity.to_string()), "{refused}");
    agents.pop().unwrap().kill();
    // The dead member's entry is reaped by the next registration and reused.
    assert!(late.ask("open").starts_with("ok Joined"));
    assert_eq!(observer.snapshot().live_members().count(), capacity);
}

#[test]
fn an_owner_that_never_heartbeats_is_deposed_by_a_waiting_lease_claimant_only() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("silent-shm");
    let (mut owner, _) = open_agent(&path, Some(50));
    let generation = gen_of(&owner.ok("try_claim"));
    owner.signal(Signal::SIGSTOP);
    let (mut claimant, _) = open_agent(&path, None);
    // No heartbeat since its claim: a single attempt cannot tell how old it is.
    let busy = claimant.ask("try_claim");
    assert!(busy.starts_with("err busy"), "{busy}");
    // A waiting claimant times it from when it first saw it own, and deposes it after
    // the lease.
    let start = std::time::Instant::now();
    let words = claimant.ok("claim 30000");
    assert_eq!(gen_of(&words), generation + 1);
    assert!(start.elapsed() >= Duration::from_millis(50));
    owner.signal(Signal::SIGCONT);
    assert_eq!(owner.ok("is_current"), ["false"]);
    assert!(owner.ask("heartbeat").starts_with("err deposed"));
}

/// `reclaimable_below` answers for every process: a pin held by a reader process keeps it
/// down, the reader's death frees it (nobody reaps), and a writer deposed by another
/// process's takeover gets `Deposed` rather than a bound to reclaim by.
#[test]
fn reclaimable_below_follows_pins_in_other_processes_and_refuses_a_deposed_writer() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("reclaim-shm");
    let lock = ShmLock::open_with(
        &path,
        &shmlock::Options::new().lease(Duration::from_millis(200)),
    )
    .unwrap();
    let writer = lock.try_claim_writer().unwrap();
    writer.publish(5).unwrap();
    let (mut reader, _) = open_agent(&path, None);
    assert_eq!(reader.ok("attach"), ["1", "5"]);
    writer.publish(9).unwrap();
    assert_eq!(writer.reclaimable_below().unwrap(), 5);
    reader.kill();
    // The death is reported by this process's death watcher on the reader (format 3's
    // `oldest_pinned` trusts it instead of asking the kernel; until it runs, the dead pin
    // may still count: lower, never higher). A waiting writer is woken by it.
    writer
        .wait_readers_past(9, Duration::from_secs(10))
        .unwrap();
    assert_eq!(writer.reclaimable_below().unwrap(), 9);

    // Silent past its lease: another process takes over; this guard must reclaim nothing.
    let (mut successor, _) = open_agent(&path, None);
    successor.ok("claim 5000");
    match writer.reclaimable_below() {
        Err(shmlock::Error::Deposed { generation }) => {
            assert_eq!(generation, writer.generation())
        }
        other => panic!("a deposed writer got {other:?}"),
    }
}
