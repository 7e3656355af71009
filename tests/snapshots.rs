//! Snapshots across real processes (issue 10): the writer publishes versions, readers in
//! other processes pin them, the writer learns the oldest pin, and either side sleeps until
//! the other moves. `shmlock agent` children, SIGKILL and SIGSTOP; every wait is on a
//! condition or an answer, with a bound.

// Unix only: it pauses readers with SIGSTOP; pins released by a killed reader and a publish
// waking another process run portably in tests/processes.rs, under wine too.
#![cfg(unix)]

mod common;

use std::time::Duration;

use common::{open_agent, wait_until, Agent};
use nix::sys::signal::Signal;
use shmlock::{OpenState, ShmLock};

const BOUND: Duration = Duration::from_secs(30);

fn generation(words: &[String]) -> u64 {
    words[0].parse().expect("generation")
}

/// `attach`'s answer: the version the new guard pins.
fn attach(agent: &mut Agent) -> u64 {
    agent.ok("attach")[1].parse().expect("pinned version")
}

fn oldest(agent: &mut Agent) -> Option<u64> {
    let words = agent.ok("oldest");
    (words[0] != "none").then(|| words[0].parse().unwrap())
}

/// Readers in three processes pin three versions; after each detach (and once every
/// agent has answered, so nothing is in flight) `oldest_pinned` is exactly the minimum of
/// the live pins — seen from the writer, from an observer and in each member's entry.
#[test]
fn readers_in_several_processes_pin_and_the_oldest_is_exact() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("pins-shm");
    let observer = ShmLock::open(&path).unwrap();
    let (mut writer, _) = open_agent(&path, None);
    writer.ok("try_claim");
    let mut readers: Vec<Agent> = (0..3).map(|_| open_agent(&path, None).0).collect();
    assert_eq!(observer.oldest_pinned(), None);
    // Before any publish a reader pins version 0.
    assert_eq!(attach(&mut readers[2]), 0);
    assert_eq!(observer.oldest_pinned(), Some(0));
    readers[2].ok("detach");
    assert_eq!(observer.oldest_pinned(), None);

    writer.ok("publish 10");
    assert_eq!(attach(&mut readers[0]), 10);
    writer.ok("publish 20");
    assert_eq!(attach(&mut readers[1]), 20);
    assert_eq!(attach(&mut readers[0]), 20);
    writer.ok("publish 30");
    assert_eq!(attach(&mut readers[2]), 30);
    assert_eq!(attach(&mut readers[1]), 30);
    assert_eq!(observer.published(), 30);

    let expect =
        |want: Option<u64>, writer: &mut Agent, pins: [Option<u64>; 3], readers: &[Agent]| {
            assert_eq!(observer.oldest_pinned(), want);
            assert_eq!(oldest(writer), want);
            let snap = observer.snapshot();
            assert_eq!(snap.oldest_pinned, want);
            for (agent, pin) in readers.iter().zip(pins) {
                let member = snap.members.iter().find(|m| m.pid == agent.pid).unwrap();
                assert_eq!(member.oldest_pin, pin, "pid {}", agent.pid);
            }
        };
    expect(
        Some(10),
        &mut writer,
        [Some(10), Some(20), Some(30)],
        &readers,
    );
    readers[0].ok("detach_version 10");
    expect(
        Some(20),
        &mut writer,
        [Some(20), Some(20), Some(30)],
        &readers,
    );
    readers[1].ok("detach_version 20");
    expect(
        Some(20),
        &mut writer,
        [Some(20), Some(30), Some(30)],
        &readers,
    );
    readers[0].ok("detach_version 20");
    expect(Some(30), &mut writer, [None, Some(30), Some(30)], &readers);
    readers[2].ok("detach");
    readers[1].ok("detach");
    expect(None, &mut writer, [None, None, None], &readers);
    assert_eq!(observer.snapshot().reader_count, 0);
}

/// A reader process that pins the oldest version is SIGKILLed: `oldest_pinned` moves past
/// its pin as soon as the death is reported, though nobody calls `reap`. (Format 3: a
/// reader of pins trusts the death watcher that stands on a live holder instead of asking
/// the kernel each time, so for the instant between the death and the watcher's wake-up
/// the dead pin may still count — lower than the truth, never higher. A writer waiting in
/// `wait_readers_past` is woken by that watcher.)
#[test]
fn a_killed_pinning_reader_stops_holding_the_oldest_back_without_reap() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("deadpin-shm");
    let (mut writer, _) = open_agent(&path, None);
    writer.ok("try_claim");
    writer.ok("publish 1");
    let (mut old_reader, _) = open_agent(&path, None);
    assert_eq!(attach(&mut old_reader), 1);
    writer.ok("publish 2");
    let (mut new_reader, _) = open_agent(&path, None);
    assert_eq!(attach(&mut new_reader), 2);
    assert_eq!(oldest(&mut writer), Some(1));
    old_reader.kill();
    writer.ok("wait_readers_past 2 10000");
    assert_eq!(
        oldest(&mut writer),
        Some(2),
        "the dead reader's pin still counts"
    );
    new_reader.ok("detach");
    assert_eq!(oldest(&mut writer), None);
}

/// A reader asleep in `wait_published` in one process is woken by a publish in another,
/// and gets the new version; with nothing published it times out cleanly.
#[test]
fn wait_published_wakes_a_reader_in_another_process() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("wake-shm");
    let observer = ShmLock::open(&path).unwrap();
    let (mut writer, _) = open_agent(&path, None);
    writer.ok("try_claim");
    writer.ok("publish 4");
    let (mut reader, _) = open_agent(&path, None);
    // Already published: at once.
    assert_eq!(reader.ok("wait_published 3 30000"), ["4"]);
    reader.send("wait_published 4 30000");
    wait_until("the reader sleeps in wait_published", BOUND, || {
        observer.snapshot().waiting_for_publish == 1
    });
    writer.ok("publish 5");
    assert_eq!(reader.ok_answer(), ["5"]);
    assert_eq!(observer.snapshot().waiting_for_publish, 0);
    let timeout = reader.ask("wait_published 5 50");
    assert!(timeout.starts_with("err timeout"), "{timeout}");
    assert_eq!(observer.snapshot().waiting_for_publish, 0);
}

/// The writer waits in `wait_readers_past` for two old readers in two processes: one
/// detach is not enough, the last one's detach wakes it.
#[test]
fn wait_readers_past_returns_when_the_last_old_reader_detaches() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("past-detach-shm");
    let observer = ShmLock::open(&path).unwrap();
    let (mut writer, _) = open_agent(&path, None);
    writer.ok("try_claim");
    writer.ok("publish 1");
    let (mut a, _) = open_agent(&path, None);
    let (mut b, _) = open_agent(&path, None);
    attach(&mut a);
    attach(&mut b);
    writer.ok("publish 2");
    let (mut current, _) = open_agent(&path, None);
    assert_eq!(
        attach(&mut current),
        2,
        "a reader of the new version holds nothing back"
    );
    writer.send("wait_readers_past 2 30000");
    wait_until("the writer sleeps in wait_readers_past", BOUND, || {
        observer.snapshot().waiting_for_readers == 1
    });
    a.ok("detach");
    // Still pinned by b: the writer sleeps on (the page says so; its answer has not come).
    assert_eq!(observer.oldest_pinned(), Some(1));
    assert_eq!(writer.answer_within(Duration::ZERO), None);
    b.ok("detach");
    assert_eq!(writer.ok_answer(), Vec::<String>::new());
    assert_eq!(observer.oldest_pinned(), Some(2));
    assert_eq!(observer.snapshot().waiting_for_readers, 0);
}

/// The last old reader dies instead of detaching: the writer's `wait_readers_past` returns
/// (nobody calls `reap`).
#[test]
fn wait_readers_past_returns_when_the_last_old_reader_dies() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("past-death-shm");
    let observer = ShmLock::open(&path).unwrap();
    let (mut writer, _) = open_agent(&path, None);
    writer.ok("try_claim");
    writer.ok("publish 1");
    let (mut reader, _) = open_agent(&path, None);
    attach(&mut reader);
    attach(&mut reader);
    writer.ok("publish 2");
    writer.send("wait_readers_past 2 30000");
    wait_until("the writer sleeps in wait_readers_past", BOUND, || {
        observer.snapshot().waiting_for_readers == 1
    });
    reader.kill();
    assert_eq!(writer.ok_answer(), Vec::<String>::new());
    assert_eq!(observer.oldest_pinned(), None);
}

/// No reader moves: `wait_readers_past` times out cleanly — the writer still owns and can
/// publish, nothing is left counted as waiting, and a later wait returns once the reader
/// detaches.
#[test]
fn wait_readers_past_times_out_cleanly_otherwise() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("past-timeout-shm");
    let observer = ShmLock::open(&path).unwrap();
    let (mut writer, _) = open_agent(&path, None);
    writer.ok("try_claim");
    writer.ok("publish 1");
    let (mut reader, _) = open_agent(&path, None);
    attach(&mut reader);
    writer.ok("publish 2");
    let timeout = writer.ask("wait_readers_past 2 100");
    assert!(timeout.starts_with("err timeout"), "{timeout}");
    assert!(timeout.contains("oldest pin is still 1"), "{timeout}");
    assert_eq!(observer.snapshot().waiting_for_readers, 0);
    assert_eq!(writer.ok("is_current"), ["true"]);
    writer.ok("publish 3");
    assert_eq!(observer.oldest_pinned(), Some(1));
    reader.ok("detach");
    writer.ok("wait_readers_past 3 30000");
}

/// The owner publishes and is SIGKILLed; the claimant that takes over finds the published
/// version, cannot publish below or at it, and publishes above it.
#[test]
fn a_takeover_keeps_the_published_version() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("takeover-pub-shm");
    let (mut owner, _) = open_agent(&path, None);
    let g = generation(&owner.ok("try_claim"));
    owner.ok("publish 7");
    let (mut claimant, _) = open_agent(&path, None);
    claimant.send("claim 30000");
    let observer = ShmLock::open(&path).unwrap();
    wait_until("the claimant sleeps", BOUND, || {
        observer.snapshot().waiting_claimants == 1
    });
    owner.kill();
    assert_eq!(generation(&claimant.ok_answer()), g + 1);
    assert_eq!(claimant.ok("published"), ["7"]);
    for stale in [6, 7] {
        let refused = claimant.ask(&format!("publish {stale}"));
        assert!(
            refused.starts_with("err version_not_increasing"),
            "{refused}"
        );
    }
    claimant.ok("publish 8");
    assert_eq!(observer.published(), 8);
}

/// An owner SIGSTOPped past its declared lease is deposed; continued, it cannot publish:
/// the published version stays its successor's.
#[test]
fn a_deposed_writer_cannot_publish() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("deposed-pub-shm");
    let (mut owner, _) = open_agent(&path, Some(100));
    let g = generation(&owner.ok("try_claim"));
    owner.ok("publish 1");
    owner.ok("heartbeat_loop 5");
    let (mut claimant, _) = open_agent(&path, None);
    owner.signal(Signal::SIGSTOP);
    assert_eq!(generation(&claimant.ok("claim 30000")), g + 1);
    claimant.ok("publish 2");
    owner.signal(Signal::SIGCONT);
    for version in [2, 3, 100] {
        let refused = owner.ask(&format!("publish {version}"));
        assert!(refused.starts_with("err deposed"), "{refused}");
    }
    assert_eq!(claimant.ok("published"), ["2"]);
    claimant.ok("publish 3");
    assert_eq!(owner.ok("published"), ["3"]);
}

/// The published version survives a clean reopen (nobody has the file open in between)
/// and a crash recovery (the publisher SIGKILLed, the next opener alone).
#[test]
fn published_survives_a_clean_reopen_and_crash_recovery() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("durable-pub-shm");
    {
        let lock = ShmLock::open(&path).unwrap();
        lock.try_claim_writer().unwrap().publish(4).unwrap();
    }
    let (mut agent, state) = open_agent(&path, None);
    assert_eq!(state, "Reopened");
    assert_eq!(agent.ok("published"), ["4"]);
    agent.ok("try_claim");
    agent.ok("publish 9");
    attach(&mut agent);
    agent.kill();
    let lock = ShmLock::open(&path).unwrap();
    assert_eq!(lock.open_state(), OpenState::RecoveredFromCrash);
    assert_eq!(lock.published(), 9);
    assert_eq!(
        lock.oldest_pinned(),
        None,
        "the dead reader's pin went with it"
    );
    let snap = lock.snapshot();
    assert_eq!((snap.published, snap.reader_count), (9, 0));
}
