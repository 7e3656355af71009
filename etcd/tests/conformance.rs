//! One conformance suite, written once over [`shmlock::backend::Backend`], run against
//! both backends: shmlock (in this process and across processes, on a lock file) and
//! shmlock-etcd (against a real 3-member cluster started for the test).

mod common;

use std::time::{Duration, Instant};

use shmlock::backend::{Backend, BackendReader, BackendWriter};
use shmlock::ErrorKind;

use common::child::{child_main, etcd_spec, local_spec, Driven};
use common::cluster::Cluster;

/// The child processes' entry point (returns at once in the parent).
#[test]
fn child_process() {
    child_main();
}

fn kind<T, E: shmlock::backend::BackendError>(r: Result<T, E>) -> ErrorKind {
    match r {
        Ok(_) => panic!("expected an error, got Ok"),
        Err(e) => e.kind(),
    }
}

/// What a backend's run of the suite needs: a handle in this process, a way to start a
/// child process on the same lock (`spec`, for [`Driven::spawn`]; its handle declares a
/// lease), and how long a dead or silent process may keep the role or its pins.
struct Env<'a, B> {
    lock: &'a B,
    spec: String,
    liveness: Duration,
}

/// Claim, fence, publish, release — in this process and against a child.
async fn claim_publish_release<B: Backend>(env: &Env<'_, B>) {
    let lock = env.lock;
    let w = lock.try_claim_writer().await.unwrap();
    let g1 = w.generation();
    assert!(w.is_current().await.unwrap());
    assert_eq!(
        kind(lock.try_claim_writer().await),
        ErrorKind::AlreadyWriter
    );

    let mut child = Driven::spawn(&env.spec);
    assert_eq!(child.cmd("try_claim"), "err WriterBusy");

    let p0 = lock.published().await.unwrap();
    w.publish(p0 + 1).await.unwrap();
    assert_eq!(lock.published().await.unwrap(), p0 + 1);
    assert_eq!(
        kind(w.publish(p0 + 1).await),
        ErrorKind::VersionNotIncreasing
    );
    assert_eq!(kind(w.publish(p0).await), ErrorKind::VersionNotIncreasing);
    assert_eq!(child.ok_num("published"), p0 + 1);
    w.release().await.unwrap();

    let g2 = child.ok_num("try_claim");
    assert!(g2 > g1, "generations increase: {g1} then {g2}");
    assert_eq!(child.cmd("publish 1"), "err VersionNotIncreasing");
    assert_eq!(child.cmd(&format!("publish {}", p0 + 2)), "ok");
    assert_eq!(kind(lock.try_claim_writer().await), ErrorKind::WriterBusy);
    assert_eq!(child.cmd("release"), "ok");

    let w = lock.try_claim_writer().await.unwrap();
    assert!(w.generation() > g2);
    assert_eq!(
        lock.published().await.unwrap(),
        p0 + 2,
        "versions survive handovers"
    );
    w.release().await.unwrap();
}

/// A waiting claim is handed the role when the owner (another process) releases it.
async fn claim_waits_for_release<B: Backend>(env: &Env<'_, B>) {
    let mut child = Driven::spawn(&env.spec);
    let g = child.ok_num("try_claim");
    child.send("sleep 300");
    child.send("release");
    let start = Instant::now();
    let w = env
        .lock
        .claim_writer(Duration::from_secs(20))
        .await
        .unwrap();
    assert!(
        start.elapsed() >= Duration::from_millis(250),
        "the claim waited"
    );
    assert!(w.generation() > g);
    assert_eq!(child.read(), "ok");
    assert_eq!(child.read(), "ok");
    // A claim that times out is a time-out on both backends (and names the owner).
    assert_eq!(child.cmd("claim 200"), "err Timeout");
    w.release().await.unwrap();
}

/// A SIGKILLed owner is taken over within the liveness bound, with a higher generation,
/// and the published version survives.
async fn killed_owner_taken_over<B: Backend>(env: &Env<'_, B>) {
    let mut child = Driven::spawn(&env.spec);
    let g = child.ok_num("try_claim");
    let p = child.ok_num("published");
    assert_eq!(child.cmd(&format!("publish {}", p + 1)), "ok");
    child.kill();
    let start = Instant::now();
    let w = env
        .lock
        .claim_writer(env.liveness + Duration::from_secs(5))
        .await
        .unwrap();
    let took = start.elapsed();
    assert!(
        took <= env.liveness,
        "takeover took {took:?} (bound {:?})",
        env.liveness
    );
    assert!(w.generation() > g);
    assert_eq!(env.lock.published().await.unwrap(), p + 1);
    w.release().await.unwrap();
}

/// An owner stopped past its lease is deposed: its later publish fails `Deposed` and
/// changes nothing.
async fn stopped_owner_deposed<B: Backend>(env: &Env<'_, B>) {
    let mut child = Driven::spawn(&env.spec);
    let g = child.ok_num("try_claim");
    let p = child.ok_num("published");
    child.signal(libc::SIGSTOP);
    let w = env
        .lock
        .claim_writer(env.liveness + Duration::from_secs(5))
        .await
        .unwrap();
    assert!(w.generation() > g);
    w.publish(p + 1).await.unwrap();
    child.signal(libc::SIGCONT);
    assert_eq!(child.cmd(&format!("publish {}", p + 100)), "err Deposed");
    assert_eq!(child.cmd("is_current"), "ok false");
    assert_eq!(env.lock.published().await.unwrap(), p + 1);
    assert!(w.is_current().await.unwrap());
    w.release().await.unwrap();
}

/// Pins: the oldest pin, waits for readers, a killed reader's pins released.
async fn pins<B: Backend>(env: &Env<'_, B>) {
    let lock = env.lock;
    let w = lock.try_claim_writer().await.unwrap();
    let v1 = lock.published().await.unwrap() + 1;
    w.publish(v1).await.unwrap();
    let r = lock.attach_reader().await.unwrap();
    assert_eq!(r.version(), v1);
    assert_eq!(lock.oldest_pinned().await.unwrap(), Some(v1));
    w.publish(v1 + 1).await.unwrap();
    assert_eq!(
        kind(
            w.wait_readers_past(v1 + 1, Duration::from_millis(200))
                .await
        ),
        ErrorKind::Timeout
    );
    w.wait_readers_past(v1, Duration::from_millis(200))
        .await
        .unwrap();
    let r2 = lock.attach_reader().await.unwrap();
    assert_eq!(r2.version(), v1 + 1);
    assert_eq!(lock.oldest_pinned().await.unwrap(), Some(v1));
    r.detach().await.unwrap();
    w.wait_readers_past(v1 + 1, Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(lock.oldest_pinned().await.unwrap(), Some(v1 + 1));
    r2.detach().await.unwrap();
    assert_eq!(lock.oldest_pinned().await.unwrap(), None);

    // Another process's pin counts until the process dies.
    let mut child = Driven::spawn(&env.spec);
    assert_eq!(child.ok_num("attach"), v1 + 1);
    assert_eq!(lock.oldest_pinned().await.unwrap(), Some(v1 + 1));
    w.publish(v1 + 2).await.unwrap();
    assert_eq!(
        kind(
            w.wait_readers_past(v1 + 2, Duration::from_millis(200))
                .await
        ),
        ErrorKind::Timeout
    );
    child.kill();
    let start = Instant::now();
    w.wait_readers_past(v1 + 2, env.liveness + Duration::from_secs(5))
        .await
        .unwrap();
    let took = start.elapsed();
    assert!(
        took <= env.liveness,
        "a killed reader's pin lasted {took:?}"
    );
    assert_eq!(lock.oldest_pinned().await.unwrap(), None);
    w.release().await.unwrap();
}

/// `wait_published` is woken by another process's publish, and times out otherwise.
async fn wait_published_across_processes<B: Backend>(env: &Env<'_, B>) {
    let mut child = Driven::spawn(&env.spec);
    child.ok_num("try_claim");
    let p = env.lock.published().await.unwrap();
    assert_eq!(
        kind(env.lock.wait_published(p, Duration::from_millis(200)).await),
        ErrorKind::Timeout
    );
    child.send("sleep 300");
    child.send(&format!("publish {}", p + 5));
    let start = Instant::now();
    assert_eq!(
        env.lock
            .wait_published(p, Duration::from_secs(20))
            .await
            .unwrap(),
        p + 5
    );
    assert!(start.elapsed() >= Duration::from_millis(250));
    assert_eq!(child.read(), "ok");
    assert_eq!(child.read(), "ok");
    // Already above: returns at once.
    assert_eq!(
        env.lock.wait_published(p, Duration::ZERO).await.unwrap(),
        p + 5
    );
    assert_eq!(child.cmd("release"), "ok");
}

async fn suite<B: Backend>(env: &Env<'_, B>) {
    eprintln!("claim_publish_release");
    claim_publish_release(env).await;
    eprintln!("claim_waits_for_release");
    claim_waits_for_release(env).await;
    eprintln!("pins");
    pins(env).await;
    eprintln!("wait_published_across_processes");
    wait_published_across_processes(env).await;
    eprintln!("killed_owner_taken_over");
    killed_owner_taken_over(env).await;
    eprintln!("stopped_owner_deposed");
    stopped_owner_deposed(env).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_backend() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("app.db-shm");
    let lock = shmlock::ShmLock::open(&path).unwrap();
    let env = Env {
        lock: &lock,
        // The children declare a 1 s lease (the local contract deposes a silent owner only
        // if it declared one).
        spec: local_spec(&path, 1000),
        liveness: Duration::from_secs(2),
    };
    suite(&env).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_backend() {
    let Some(cluster) = Cluster::start(3) else {
        return;
    };
    let endpoints = cluster.endpoints();
    let refs: Vec<&str> = endpoints.iter().map(String::as_str).collect();
    let ttl = 2;
    let options = shmlock_etcd::Options::new().lease(Duration::from_secs(ttl));
    let lock = shmlock_etcd::EtcdLock::connect(&refs, "conformance", &options)
        .await
        .unwrap();
    let env = Env {
        lock: &lock,
        spec: etcd_spec("conformance", ttl, &endpoints),
        // TTL, plus up to 0.5 s for etcd's expiry check, plus 1 s of slack on 2 cores.
        liveness: Duration::from_secs(ttl) + Duration::from_millis(1500),
    };
    suite(&env).await;
}
