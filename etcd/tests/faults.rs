//! Real processes and real faults against a real 3-member cluster: racing claimants, a
//! SIGKILLed owner during a leader kill, one member down, quorum lost, and a Jepsen-style
//! history under kills and pauses. (The SIGKILLed and SIGSTOPped owner, the killed
//! reader's pins and the cross-process wait are in the conformance suite.)

mod common;

use std::process::{Command, Stdio};

use std::time::{Duration, Instant};

use shmlock::ErrorKind;
use shmlock_etcd::{EtcdLock, Options};

use common::child::{child_main, etcd_spec, Driven};
use common::cluster::Cluster;
use common::history::{history_child, now_ns, History, HISTORY_ENV};

/// The child processes' entry point (returns at once in the parent).
#[test]
fn child_process() {
    child_main();
    history_child();
}

/// One cluster at a time on a 2-core machine.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

const TTL: u64 = 2;

fn options() -> Options {
    Options::new()
        .lease(Duration::from_secs(TTL))
        .request_timeout(Duration::from_millis(700))
        .retry_for(Duration::from_secs(3))
}

async fn connect(cluster: &Cluster, name: &str) -> EtcdLock {
    let endpoints = cluster.endpoints();
    let refs: Vec<&str> = endpoints.iter().map(String::as_str).collect();
    EtcdLock::connect(&refs, name, &options()).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_claimants_exactly_one_wins() {
    let _serial = SERIAL.lock().await;
    let Some(cluster) = Cluster::start(3) else {
        return;
    };
    let spec = etcd_spec("race", TTL, &cluster.endpoints());
    let mut children: Vec<Driven> = (0..4).map(|_| Driven::spawn(&spec)).collect();
    let mut last = 0;
    for round in 0..5 {
        for c in children.iter_mut() {
            c.send("try_claim");
        }
        let answers: Vec<String> = children.iter_mut().map(Driven::read).collect();
        let winners: Vec<usize> = (0..answers.len())
            .filter(|&i| answers[i].starts_with("ok "))
            .collect();
        assert_eq!(winners.len(), 1, "round {round}: {answers:?}");
        for (i, a) in answers.iter().enumerate() {
            if i != winners[0] {
                assert_eq!(a, "err WriterBusy");
            }
        }
        let g: u64 = answers[winners[0]][3..].parse().unwrap();
        assert!(g > last, "generations increase: {last} then {g}");
        last = g;
        assert_eq!(children[winners[0]].cmd("release"), "ok");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_member_down() {
    let _serial = SERIAL.lock().await;
    let Some(mut cluster) = Cluster::start(3) else {
        return;
    };
    // The first endpoint is the one every client tries first.
    cluster.kill_member(0);
    let lock = connect(&cluster, "one-down").await;
    let w = lock.try_claim_writer().await.unwrap();
    w.publish(1).await.unwrap();
    let r = lock.attach_reader().await.unwrap();
    assert_eq!(r.version(), 1);
    let spec = etcd_spec("one-down", TTL, &cluster.endpoints());
    let mut child = Driven::spawn(&spec);
    assert_eq!(child.cmd("try_claim"), "err WriterBusy");
    assert_eq!(child.cmd("oldest"), "ok 1");
    child.send("wait_published 1 10000");
    w.publish(2).await.unwrap();
    assert_eq!(child.read(), "ok 2");
    r.detach().await.unwrap();
    w.wait_readers_past(2, Duration::from_secs(5))
        .await
        .unwrap();
    w.release().await.unwrap();
    assert!(child.ok_num("try_claim") > 0);
    // The member comes back and the cluster goes on.
    cluster.start_member(0);
    cluster.wait_ready(Duration::from_secs(20)).unwrap();
    assert_eq!(child.cmd("publish 3"), "ok");
    assert_eq!(lock.published().await.unwrap(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leader_killed_during_handover() {
    let _serial = SERIAL.lock().await;
    let Some(mut cluster) = Cluster::start(3) else {
        return;
    };
    let lock = connect(&cluster, "handover").await;
    let spec = etcd_spec("handover", TTL, &cluster.endpoints());
    let mut child = Driven::spawn(&spec);
    let g = child.ok_num("try_claim");
    assert_eq!(child.cmd("publish 7"), "ok");
    let leader = cluster.leader().await.expect("a leader");
    // The owner and the etcd leader die at the same moment.
    child.kill();
    cluster.kill_member(leader);
    let start = Instant::now();
    let w = lock.claim_writer(Duration::from_secs(30)).await.unwrap();
    let took = start.elapsed();
    eprintln!("takeover with the leader killed: {took:?}");
    // TTL, etcd's lease expiry check, a leader election (which extends every lease by an
    // election timeout) and client retries.
    assert!(
        took < Duration::from_secs(TTL + 6),
        "takeover took {took:?}"
    );
    assert!(w.generation() > g);
    assert_eq!(lock.published().await.unwrap(), 7);
    w.publish(8).await.unwrap();
    w.release().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quorum_lost_no_publish_succeeds() {
    let _serial = SERIAL.lock().await;
    let Some(mut cluster) = Cluster::start(3) else {
        return;
    };
    let lock = connect(&cluster, "quorum").await;
    let w = lock.try_claim_writer().await.unwrap();
    w.publish(10).await.unwrap();
    let r = lock.attach_reader().await.unwrap();
    assert_eq!(r.version(), 10);
    cluster.kill_member(1);
    cluster.kill_member(2);
    // No majority: nothing may succeed. Each fails within its retry budget.
    for v in 11..13 {
        let start = Instant::now();
        let e = w.publish(v).await.expect_err("a publish without quorum");
        assert!(
            matches!(
                e.kind(),
                ErrorKind::Unavailable | ErrorKind::Timeout | ErrorKind::Deposed
            ),
            "{e}"
        );
        assert!(
            start.elapsed() < Duration::from_secs(6),
            "{:?}",
            start.elapsed()
        );
    }
    assert_eq!(
        lock.published().await.unwrap_err().kind(),
        ErrorKind::Unavailable
    );
    assert_eq!(
        lock.try_claim_writer().await.unwrap_err().kind(),
        ErrorKind::AlreadyWriter
    );
    // The majority comes back: the contract resumes.
    cluster.start_member(1);
    cluster.start_member(2);
    cluster.wait_ready(Duration::from_secs(30)).unwrap();
    // A publish that failed `Unavailable` has an unknown outcome: the surviving member may
    // hold it in its log, uncommitted, and commit it once the majority is back (seen here).
    // Its transaction's fence is evaluated when it is applied, so it can land only while
    // this writer still owns the role, and never after a later claim.
    let after = lock.published().await.unwrap();
    assert!((10..=12).contains(&after), "published {after}");
    // The writer's lease may have expired during the outage (then it is deposed and claims
    // again); either way the next publish goes through a fenced owner.
    let next = after + 1;
    let w = match w.publish(next).await {
        Ok(()) => w,
        Err(e) => {
            assert_eq!(e.kind(), ErrorKind::Deposed, "{e}");
            drop(w);
            let w = lock.claim_writer(Duration::from_secs(10)).await.unwrap();
            w.publish(next).await.unwrap();
            w
        }
    };
    assert_eq!(lock.published().await.unwrap(), next);
    let _ = r.detach().await;
    let r = lock.attach_reader().await.unwrap();
    assert_eq!(r.version(), next);
    r.detach().await.unwrap();
    w.release().await.unwrap();
}

/// The owner's pid, from the holder string in the owner key ("host … pid N lease …").
async fn owner_pid(lock: &EtcdLock) -> Option<u32> {
    let e = lock.try_claim_writer().await.err()?;
    let text = e.to_string();
    let at = text.find(" pid ")?;
    text[at + 5..].split(' ').next()?.parse().ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_under_kills_and_pauses() {
    let _serial = SERIAL.lock().await;
    let Some(cluster) = Cluster::start(3) else {
        return;
    };
    let observer = connect(&cluster, "history").await;
    let dir = tempfile::tempdir().unwrap();
    let run = Duration::from_secs(24);
    let until = now_ns() + run.as_nanos() as u64;
    let endpoints = cluster.endpoints().join(",");
    let spawn = |i: usize| {
        let file = dir.path().join(format!("h{i}.log"));
        Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "child_process",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(
                HISTORY_ENV,
                format!("{} {TTL} {until} {endpoints}", file.display()),
            )
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .unwrap()
    };
    let mut next = 0;
    let mut children: Vec<std::process::Child> = (0..4)
        .map(|_| {
            next += 1;
            spawn(next)
        })
        .collect();
    let (mut kills, mut pauses) = (0, 0);
    let mut event = 0;
    while now_ns() + 4_000_000_000 < until {
        tokio::time::sleep(Duration::from_millis(1200)).await;
        let Some(pid) = owner_pid(&observer).await else {
            continue;
        };
        let Some(i) = children.iter().position(|c| c.id() == pid) else {
            continue;
        };
        event += 1;
        if event % 2 == 0 {
            // SIGKILL the owner and start another child in its place.
            children[i].kill().unwrap();
            children[i].wait().unwrap();
            next += 1;
            children[i] = spawn(next);
            kills += 1;
        } else {
            // Pause the owner past its TTL: its next publish must fail Deposed.
            // SAFETY: kill(2) on our own, unreaped child.
            unsafe { libc::kill(pid as i32, libc::SIGSTOP) };
            tokio::time::sleep(Duration::from_secs(TTL + 1)).await;
            // SAFETY: as above.
            unsafe { libc::kill(pid as i32, libc::SIGCONT) };
            pauses += 1;
        }
    }
    for mut c in children {
        let deadline = Instant::now() + Duration::from_secs(20);
        while c.try_wait().unwrap().is_none() && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let _ = c.kill();
        let _ = c.wait();
    }
    let mut history = History::default();
    for i in 1..=next {
        if let Ok(text) = std::fs::read_to_string(dir.path().join(format!("h{i}.log"))) {
            History::parse(&text, &mut history);
        }
    }
    let pairs = history.check();
    let top = history
        .publishes
        .iter()
        .map(|p| p.version)
        .max()
        .unwrap_or(0);
    assert!(observer.published().await.unwrap() >= top);
    eprintln!(
        "history: {} claims, {} publishes ok, {} failed ({} Deposed), {} failed claims, \
         {pairs} (publish, later claim) pairs checked; {kills} owners SIGKILLed, {pauses} paused",
        history.claims.len(),
        history.publishes.len(),
        history.failed_publishes,
        history.deposed,
        history.failed_claims
    );
    assert!(history.claims.len() >= 4, "{history:?}");
    assert!(history.publishes.len() >= 20);
    assert!(kills >= 1 && pauses >= 1, "kills {kills}, pauses {pauses}");
    assert!(
        history.deposed >= 1,
        "a paused owner's publish fails Deposed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paused_reader_loses_its_pin_then_recovers() {
    let _serial = SERIAL.lock().await;
    let Some(cluster) = Cluster::start(3) else {
        return;
    };
    let lock = connect(&cluster, "paused-reader").await;
    let w = lock.try_claim_writer().await.unwrap();
    w.publish(3).await.unwrap();
    let spec = etcd_spec("paused-reader", TTL, &cluster.endpoints());
    let mut child = Driven::spawn(&spec);
    assert_eq!(child.ok_num("attach"), 3);
    assert_eq!(lock.oldest_pinned().await.unwrap(), Some(3));
    w.publish(4).await.unwrap();
    // Paused past its TTL, the reader's pin vanishes (the local backend would keep it):
    // the writer may reclaim version 3.
    child.signal(libc::SIGSTOP);
    let start = Instant::now();
    w.wait_readers_past(4, Duration::from_secs(10))
        .await
        .unwrap();
    assert!(start.elapsed() < Duration::from_secs(TTL) + Duration::from_millis(1500));
    assert_eq!(lock.oldest_pinned().await.unwrap(), None);
    child.signal(libc::SIGCONT);
    // Its handle's lease is gone; the next attach and claim grant a new one.
    assert_eq!(child.ok_num("attach"), 4);
    assert_eq!(lock.oldest_pinned().await.unwrap(), Some(4));
    w.release().await.unwrap();
    assert!(child.ok_num("try_claim") > 0);
}
