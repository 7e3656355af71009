//! Client behaviour: idempotent claims, waits across compaction, endpoints that are dead
//! from the start, errors that map onto `shmlock::ErrorKind`.

mod common;

use std::time::{Duration, Instant};

use shmlock::ErrorKind;
use shmlock_etcd::{EtcdLock, Options};

use common::cluster::Cluster;

static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn options() -> Options {
    Options::new()
        .lease(Duration::from_secs(2))
        .request_timeout(Duration::from_millis(700))
        .retry_for(Duration::from_secs(3))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_behaviour() {
    let _serial = SERIAL.lock().await;
    let Some(cluster) = Cluster::start(3) else {
        return;
    };
    let mut endpoints = vec!["http://127.0.0.1:1".to_owned()]; // nothing listens there
    endpoints.extend(cluster.endpoints());
    let refs: Vec<&str> = endpoints.iter().map(String::as_str).collect();

    // A dead endpoint first: every request moves on to the next one.
    let lock = EtcdLock::connect(&refs, "client", &options())
        .await
        .unwrap();
    let other = EtcdLock::connect(&refs[1..], "client", &options())
        .await
        .unwrap();

    // A claim that finds the owner key bound to its own lease has won: here the role a
    // writer dropped outside any runtime (its best-effort release could not run), the
    // same path a retried claim whose first answer was lost takes.
    let w = lock.try_claim_writer().await.unwrap();
    let g = w.generation();
    std::thread::spawn(move || drop(w)).join().unwrap();
    assert_eq!(
        other.try_claim_writer().await.unwrap_err().kind(),
        ErrorKind::WriterBusy
    );
    let w = lock.try_claim_writer().await.unwrap();
    assert_eq!(w.generation(), g, "the handle's own claim, adopted");
    assert_eq!(
        lock.try_claim_writer().await.unwrap_err().kind(),
        ErrorKind::AlreadyWriter
    );

    // Waits survive compaction: a waiter whose watch started before the history it
    // watches from was compacted away is still woken.
    let waiter = {
        let other = other.clone();
        tokio::spawn(async move { other.wait_published(0, Duration::from_secs(20)).await })
    };
    let mut raw = etcd_client::Client::connect(&refs[1..], None)
        .await
        .unwrap();
    write_noise_and_compact(
        &mut raw,
        50,
        Some(etcd_client::CompactionOptions::new().with_physical()),
    )
    .await;
    w.publish(5).await.unwrap();
    let start = Instant::now();
    assert_eq!(waiter.await.unwrap().unwrap(), 5);
    assert!(start.elapsed() < Duration::from_secs(5));

    // A claimant waiting across compaction is handed the role on release.
    let claimant = {
        let other = other.clone();
        tokio::spawn(async move { other.claim_writer(Duration::from_secs(20)).await })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    write_noise_and_compact(&mut raw, 20, None).await;
    w.release().await.unwrap();
    let w2 = claimant.await.unwrap().unwrap();
    assert!(w2.generation() > g);

    // Errors carry their kind.
    assert_eq!(
        w2.publish(5).await.unwrap_err().kind(),
        ErrorKind::VersionNotIncreasing
    );
    assert_eq!(
        lock.wait_published(5, Duration::from_millis(100))
            .await
            .unwrap_err()
            .kind(),
        ErrorKind::Timeout
    );
    w2.release().await.unwrap();

    // Names are escaped: a name with '/' never reaches into another lock's keys.
    let nested = EtcdLock::connect(&refs[1..], "client/pins", &options())
        .await
        .unwrap();
    let r = nested.attach_reader().await.unwrap();
    assert_eq!(r.version(), 0);
    assert_eq!(lock.oldest_pinned().await.unwrap(), None);
    r.detach().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_listening_is_unavailable() {
    let options = Options::new()
        .request_timeout(Duration::from_millis(200))
        .retry_for(Duration::from_millis(600));
    let start = Instant::now();
    let e = EtcdLock::connect(&["http://127.0.0.1:1"], "x", &options)
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unavailable, "{e}");
    assert!(start.elapsed() < Duration::from_secs(3));
    let e = EtcdLock::connect(&["not a url"], "x", &options)
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unavailable, "{e}");
}

#[test]
fn options_round_the_ttl() {
    assert_eq!(
        Options::new().lease(Duration::from_millis(100)).lease_ttl(),
        Duration::from_secs(2)
    );
    assert_eq!(
        Options::new()
            .lease(Duration::from_millis(2500))
            .lease_ttl(),
        Duration::from_secs(3)
    );
    assert_eq!(Options::new().lease_ttl(), Duration::from_secs(10));
}

/// Move the cluster's revision on by `puts` writes to a key of no lock, then compact the
/// history up to it: a watch that resumes from an older revision must survive this.
async fn write_noise_and_compact(
    raw: &mut etcd_client::Client,
    puts: usize,
    options: Option<etcd_client::CompactionOptions>,
) {
    for i in 0..puts {
        raw.put("shmlock-test/noise", format!("{i}"), None)
            .await
            .unwrap();
    }
    let revision = raw
        .get("shmlock-test/noise", None)
        .await
        .unwrap()
        .header()
        .unwrap()
        .revision();
    raw.compact(revision, options).await.unwrap();
}
