//! The MVCC witness of `tests/mvcc_torture.rs`, over etcd, with kills.
//!
//! A writer keeps [`SLOTS`] version slots in a data file and writes version `v` into slot
//! `v % SLOTS` only once `wait_readers_past(v - SLOTS + 1)` says no live reader pins the
//! version that slot held, then publishes `v`. Readers attach (pin), read their version's
//! slot, hold it a while, read it again, and check the stamp and payload (both derived
//! from the version). The harness SIGKILLs writers and readers at random and restarts
//! them; a standby writer takes over with `claim_writer` and continues from `published()`.
//! The witness is the data file: a reader whose pin still stands (`is_pinned` after the
//! read) and that finds another version in its slot read a reclaimed version (`FAIL`).
//! `a_writer_that_ignores_pins_is_caught` runs the same harness with a writer that skips
//! the wait, and requires the witness to catch it.

mod common;

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use shmlock_etcd::{EtcdLock, Options};

use common::cluster::Cluster;

const SLOTS: u64 = 4;
const SLOT_BYTES: usize = 512;
const ROLE_ENV: &str = "SHMLOCK_ETCD_MVCC";
const TTL: u64 = 2;

static SERIAL: Mutex<()> = Mutex::new(());

fn payload(version: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(SLOT_BYTES);
    let mut x = version.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    while out.len() < SLOT_BYTES {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out[..8].copy_from_slice(&version.to_le_bytes());
    out
}

fn read_slot(file: &File, version: u64) -> bool {
    let mut buf = vec![0u8; SLOT_BYTES];
    file.read_exact_at(&mut buf, (version % SLOTS) * SLOT_BYTES as u64)
        .is_ok()
        && buf == payload(version)
}

/// Workers: `writer|badwriter|reader <data> <log> <endpoints>`.
#[test]
fn mvcc_worker_entry() {
    let Ok(spec) = std::env::var(ROLE_ENV) else {
        return;
    };
    let w: Vec<String> = spec.split(' ').map(str::to_owned).collect();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async move {
        let endpoints: Vec<&str> = w[3].split(',').collect();
        let options = Options::new()
            .lease(Duration::from_secs(TTL))
            .request_timeout(Duration::from_millis(700));
        let lock = EtcdLock::connect(&endpoints, "mvcc", &options)
            .await
            .unwrap();
        let mut log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&w[2])
            .unwrap();
        let data = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&w[1])
            .unwrap();
        match w[0].as_str() {
            "writer" | "badwriter" => loop {
                let Ok(writer) = lock.claim_writer(Duration::from_secs(30)).await else {
                    continue;
                };
                log.write_all(format!("claim {}\n", writer.generation()).as_bytes())
                    .unwrap();
                let Ok(mut v) = lock.published().await else {
                    continue;
                };
                loop {
                    v += 1;
                    let ignore_pins = w[0] == "badwriter";
                    if !ignore_pins
                        && v > SLOTS
                        && writer
                            .wait_readers_past(v - SLOTS + 1, Duration::from_secs(10))
                            .await
                            .is_err()
                    {
                        break;
                    }
                    data.write_all_at(&payload(v), (v % SLOTS) * SLOT_BYTES as u64)
                        .unwrap();
                    if writer.publish(v).await.is_err() {
                        break;
                    }
                }
            },
            _ => {
                let mut reads = 0u64;
                let mut n = 0u64;
                loop {
                    n += 1;
                    let Ok(reader) = lock.attach_reader().await else {
                        continue;
                    };
                    let v = reader.version();
                    if v == 0 {
                        let _ = reader.detach().await;
                        continue;
                    }
                    let first = read_slot(&data, v);
                    tokio::time::sleep(Duration::from_millis(n % 20)).await;
                    let second = read_slot(&data, v);
                    let pinned = reader.is_pinned().await.unwrap_or(false);
                    if pinned && !(first && second) {
                        log.write_all(format!("FAIL reclaimed read of version {v}\n").as_bytes())
                            .unwrap();
                    } else if pinned {
                        reads += 1;
                        if reads % 20 == 0 {
                            log.write_all(b"reads 20\n").unwrap();
                        }
                    }
                    let _ = reader.detach().await;
                }
            }
        }
    });
}

struct Outcome {
    reads: u64,
    fails: u64,
    claims: u64,
    kills: u64,
}

/// `None` when no etcd is installed (the test then checks nothing; see `Cluster::start`).
fn torture(run: Duration, writer_role: &str) -> Option<Outcome> {
    let cluster = Cluster::start(3)?;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::write(&data, vec![0u8; SLOTS as usize * SLOT_BYTES]).unwrap();
    let endpoints = cluster.endpoints().join(",");
    let mut next = 0;
    let mut spawn = |role: &str| -> Child {
        next += 1;
        let log = dir.path().join(format!("w{next}.log"));
        Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "mvcc_worker_entry",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(
                ROLE_ENV,
                format!("{role} {} {} {endpoints}", data.display(), log.display()),
            )
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .unwrap()
    };
    let mut workers: Vec<(String, Child)> = Vec::new();
    for role in [writer_role, writer_role, "reader", "reader", "reader"] {
        workers.push((role.to_owned(), spawn(role)));
    }
    let start = Instant::now();
    let mut kills = 0;
    let mut x: u64 = 0x2545_F491_4F6C_DD1D ^ u64::from(std::process::id());
    while start.elapsed() < run {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        std::thread::sleep(Duration::from_millis(400 + x % 800));
        let i = (x >> 20) as usize % workers.len();
        let (role, child) = &mut workers[i];
        child.kill().unwrap();
        child.wait().unwrap();
        kills += 1;
        let role = role.clone();
        workers[i] = (role.clone(), spawn(&role));
    }
    for (_, child) in workers.iter_mut() {
        let _ = child.kill();
        let _ = child.wait();
    }
    let mut outcome = Outcome {
        reads: 0,
        fails: 0,
        claims: 0,
        kills,
    };
    for i in 1..=next {
        let Ok(text) = std::fs::read_to_string(dir.path().join(format!("w{i}.log"))) else {
            continue;
        };
        for line in text.lines() {
            if line.starts_with("FAIL") {
                outcome.fails += 1;
            } else if line == "reads 20" {
                outcome.reads += 20;
            } else if line.starts_with("claim ") {
                outcome.claims += 1;
            }
        }
    }
    Some(outcome)
}

#[test]
fn no_reclaimed_read_under_kills() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let Some(o) = torture(Duration::from_secs(20), "writer") else {
        return;
    };
    eprintln!(
        "mvcc witness over etcd: {} verified reads, {} reclaimed, {} claims, {} kills",
        o.reads, o.fails, o.claims, o.kills
    );
    assert_eq!(o.fails, 0, "reclaimed reads");
    assert!(o.reads >= 100, "too few reads: {}", o.reads);
    assert!(o.claims >= 2 && o.kills >= 10);
}

#[test]
fn a_writer_that_ignores_pins_is_caught() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let Some(o) = torture(Duration::from_secs(8), "badwriter") else {
        return;
    };
    eprintln!("control: {} reclaimed reads caught", o.fails);
    assert!(o.fails > 0, "the witness caught nothing");
}
