//! shmlock-etcd's figures beside shmlock's local ones, in one run on one machine:
//! claim, publish, attach, oldest, release→waiter, publish→waiter, and takeover after
//! SIGKILL (p50/p99 over `--trials` runs at TTL 2 s), plain and with the etcd leader
//! killed at the same moment. The local backend is measured directly and through the
//! `Backend` trait (`block_on`), to show the trait costs it nothing.
//!
//! ```text
//! cargo run --release -p shmlock-etcd --example bench [-- --trials 20]
//! ```
//! Starts its own 3-member cluster on 127.0.0.1 (Debian's `etcd-server`).

#[path = "../tests/common/cluster.rs"]
mod cluster;

use std::hint::black_box;
use std::io::{BufRead, BufReader, Write};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use shmlock::backend::{block_on, Backend, BackendReader, BackendWriter};
use shmlock_etcd::{EtcdLock, Options};

const TTL: u64 = 2;

fn pct(samples: &mut [Duration], p: f64) -> Duration {
    samples.sort_unstable();
    let i = ((samples.len() as f64 - 1.0) * p).round() as usize;
    samples[i]
}

fn show(what: &str, samples: &mut [Duration]) {
    let p50 = pct(samples, 0.5);
    let p99 = pct(samples, 0.99);
    println!("| {what} | {} | {:?} | {:?} |", samples.len(), p50, p99);
}

/// Mean ns per call of `f` over `n` calls, the best of 5 batches.
fn per_op(n: u32, mut f: impl FnMut()) -> f64 {
    (0..5)
        .map(|_| {
            let start = Instant::now();
            for _ in 0..n {
                f();
            }
            start.elapsed().as_nanos() as f64 / f64::from(n)
        })
        .fold(f64::INFINITY, f64::min)
}

/// A child that claims, says so, and waits to be killed.
fn owner(args: &[&str]) -> (Child, u64) {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(args)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.as_mut().unwrap())
        .read_line(&mut line)
        .unwrap();
    let g = line
        .trim()
        .parse()
        .unwrap_or_else(|_| panic!("owner said {line:?}"));
    (child, g)
}

fn child_main(args: &[String]) -> bool {
    match args.get(1).map(String::as_str) {
        Some("--local-owner") => {
            let lock = shmlock::ShmLock::open(&args[2]).unwrap();
            let w = lock.claim_writer(Duration::from_secs(10)).unwrap();
            println!("{}", w.generation());
            std::thread::sleep(Duration::from_secs(3600));
            true
        }
        Some("--local-waiter") => {
            let lock = shmlock::ShmLock::open(&args[2]).unwrap();
            for _ in std::io::stdin().lines() {
                let w = lock.claim_writer(Duration::from_secs(10)).unwrap();
                println!("{}", monotonic_ns());
                w.release().unwrap();
            }
            true
        }
        Some("--etcd-owner") => {
            let rt = tokio::runtime::Runtime::new().unwrap();
            rt.block_on(async {
                let endpoints: Vec<&str> = args[2].split(',').collect();
                let options = Options::new().lease(Duration::from_secs(TTL));
                let lock = EtcdLock::connect(&endpoints, "bench", &options)
                    .await
                    .unwrap();
                let w = lock.claim_writer(Duration::from_secs(30)).await.unwrap();
                println!("{}", w.generation());
                tokio::time::sleep(Duration::from_secs(3600)).await;
            });
            true
        }
        _ => false,
    }
}

fn local(trials: usize) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bench.db-shm");
    let lock = shmlock::ShmLock::open(&path).unwrap();
    println!("\n### shmlock (local), direct calls and through the `Backend` trait\n");
    println!("| operation | direct | via `Backend` + `block_on` |");
    println!("|---|---|---|");
    let claim_direct = per_op(20_000, || {
        lock.try_claim_writer().unwrap().release().unwrap()
    });
    let claim_trait = per_op(20_000, || {
        block_on(async {
            let w = Backend::try_claim_writer(&lock).await.unwrap();
            BackendWriter::release(w).await.unwrap();
        })
    });
    let claim_calls = per_op(20_000, || {
        let w = block_on(Backend::try_claim_writer(&lock)).unwrap();
        block_on(BackendWriter::release(w)).unwrap();
    });
    println!("| claim + release | {claim_direct:.1} ns | {claim_calls:.1} ns (one `block_on` per call); {claim_trait:.1} ns (one `async` block) |");
    let w = lock.try_claim_writer().unwrap();
    let mut v = lock.published();
    let publish_direct = per_op(200_000, || {
        v += 1;
        w.publish(black_box(v)).unwrap()
    });
    let publish_trait = per_op(200_000, || {
        v += 1;
        block_on(BackendWriter::publish(&w, black_box(v))).unwrap()
    });
    println!("| publish | {publish_direct:.1} ns | {publish_trait:.1} ns |");
    let attach_direct = per_op(200_000, || {
        let r = lock.attach_reader().unwrap();
        black_box(r.version());
        r.detach().unwrap()
    });
    let attach_trait = per_op(200_000, || {
        block_on(async {
            let r = Backend::attach_reader(&lock).await.unwrap();
            black_box(r.version());
            BackendReader::detach(r).await.unwrap();
        })
    });
    let attach_calls = per_op(200_000, || {
        let r = block_on(Backend::attach_reader(&lock)).unwrap();
        black_box(r.version());
        block_on(BackendReader::detach(r)).unwrap();
    });
    println!("| attach + detach | {attach_direct:.1} ns | {attach_calls:.1} ns (one `block_on` per call); {attach_trait:.1} ns (one `async` block) |");
    let _r = lock.attach_reader().unwrap();
    let oldest_direct = per_op(200_000, || {
        black_box(lock.oldest_pinned());
    });
    let oldest_trait = per_op(200_000, || {
        black_box(block_on(Backend::oldest_pinned(&lock)).unwrap());
    });
    println!("| oldest_pinned | {oldest_direct:.1} ns | {oldest_trait:.1} ns |");
    drop(_r);
    drop(w);

    println!("\n| local latency | n | p50 | p99 |\n|---|---|---|---|");
    // The writer role is per process: the waiter is a child process, told by a line on
    // its stdin to wait; it answers with the CLOCK_MONOTONIC time it got the role.
    let mut waiter = Command::new(std::env::current_exe().unwrap())
        .args(["--local-waiter", path.to_str().unwrap()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut to_waiter = waiter.stdin.take().unwrap();
    let mut from_waiter = BufReader::new(waiter.stdout.take().unwrap());
    let mut samples = Vec::new();
    for _ in 0..200 {
        let w = lock.claim_writer(Duration::from_secs(5)).unwrap();
        writeln!(to_waiter, "go").unwrap();
        std::thread::sleep(Duration::from_millis(3));
        let start = monotonic_ns();
        w.release().unwrap();
        let mut line = String::new();
        from_waiter.read_line(&mut line).unwrap();
        let got: u64 = line.trim().parse().unwrap();
        samples.push(Duration::from_nanos(got.saturating_sub(start)));
    }
    drop(to_waiter);
    waiter.wait().unwrap();
    show("release→waiter (another process)", &mut samples);
    let mut samples = Vec::new();
    let w = lock.try_claim_writer().unwrap();
    for _ in 0..200 {
        let p = lock.published();
        let l2 = lock.clone();
        let waiter = std::thread::spawn(move || {
            let v = l2.wait_published(p, Duration::from_secs(5)).unwrap();
            (Instant::now(), v)
        });
        std::thread::sleep(Duration::from_millis(2));
        let start = Instant::now();
        w.publish(p + 1).unwrap();
        let (got, _) = waiter.join().unwrap();
        samples.push(got - start);
    }
    show("publish→waiter (threads)", &mut samples);
    drop(w);
    let mut samples = Vec::new();
    for _ in 0..trials {
        let (mut child, g) = owner(&["--local-owner", path.to_str().unwrap()]);
        let start = Instant::now();
        child.kill().unwrap();
        let w = lock.claim_writer(Duration::from_secs(10)).unwrap();
        samples.push(start.elapsed());
        assert!(w.generation() > g);
        child.wait().unwrap();
        w.release().unwrap();
    }
    show("takeover after SIGKILL (process)", &mut samples);
}

async fn etcd(trials: usize) {
    let Some(mut cluster) = cluster::Cluster::start(3) else {
        return;
    };
    let endpoints = cluster.endpoints();
    let refs: Vec<&str> = endpoints.iter().map(String::as_str).collect();
    let options = Options::new().lease(Duration::from_secs(TTL));
    let lock = EtcdLock::connect(&refs, "bench", &options).await.unwrap();
    let other = EtcdLock::connect(&refs, "bench", &options).await.unwrap();
    println!("\n### shmlock-etcd, 3 members on 127.0.0.1, TTL {TTL} s\n");
    println!("| operation | n | p50 | p99 |\n|---|---|---|---|");
    let n = 200;
    let (mut claim, mut release, mut publish, mut attach, mut detach, mut oldest) =
        (vec![], vec![], vec![], vec![], vec![], vec![]);
    let mut v = lock.published().await.unwrap();
    for _ in 0..n {
        let t = Instant::now();
        let w = lock.try_claim_writer().await.unwrap();
        claim.push(t.elapsed());
        v += 1;
        let t = Instant::now();
        w.publish(v).await.unwrap();
        publish.push(t.elapsed());
        let t = Instant::now();
        let r = lock.attach_reader().await.unwrap();
        attach.push(t.elapsed());
        let t = Instant::now();
        black_box(lock.oldest_pinned().await.unwrap());
        oldest.push(t.elapsed());
        let t = Instant::now();
        r.detach().await.unwrap();
        detach.push(t.elapsed());
        let t = Instant::now();
        w.release().await.unwrap();
        release.push(t.elapsed());
    }
    show("claim (try_claim_writer)", &mut claim);
    show("publish", &mut publish);
    show("attach_reader", &mut attach);
    show("oldest_pinned", &mut oldest);
    show("detach", &mut detach);
    show("release", &mut release);

    let mut samples = Vec::new();
    for _ in 0..50 {
        let w = lock.try_claim_writer().await.unwrap();
        let o = other.clone();
        let waiter = tokio::spawn(async move {
            let w = o.claim_writer(Duration::from_secs(10)).await.unwrap();
            (Instant::now(), w)
        });
        tokio::time::sleep(Duration::from_millis(30)).await;
        let start = Instant::now();
        w.release().await.unwrap();
        let (got, w2) = waiter.await.unwrap();
        samples.push(got - start);
        w2.release().await.unwrap();
    }
    show("release→waiter (another handle)", &mut samples);
    let mut samples = Vec::new();
    let w = lock.try_claim_writer().await.unwrap();
    for _ in 0..50 {
        let p = lock.published().await.unwrap();
        let o = other.clone();
        let waiter = tokio::spawn(async move {
            let v = o.wait_published(p, Duration::from_secs(10)).await.unwrap();
            (Instant::now(), v)
        });
        tokio::time::sleep(Duration::from_millis(30)).await;
        let start = Instant::now();
        w.publish(p + 1).await.unwrap();
        let (got, _) = waiter.await.unwrap();
        samples.push(got - start);
    }
    show("publish→waiter (another handle)", &mut samples);
    w.release().await.unwrap();

    let joined = endpoints.join(",");
    for leader_too in [false, true] {
        let mut samples = Vec::new();
        for _ in 0..trials {
            let (mut child, g) = owner(&["--etcd-owner", &joined]);
            let leader = if leader_too {
                cluster.leader().await
            } else {
                None
            };
            let start = Instant::now();
            child.kill().unwrap();
            if let Some(i) = leader {
                cluster.kill_member(i);
            }
            let w = other.claim_writer(Duration::from_secs(60)).await.unwrap();
            samples.push(start.elapsed());
            assert!(w.generation() > g);
            child.wait().unwrap();
            w.release().await.unwrap();
            if let Some(i) = leader {
                cluster.start_member(i);
                let _ = tokio::task::block_in_place(|| cluster.wait_ready(Duration::from_secs(30)));
            }
        }
        let what = if leader_too {
            "takeover after SIGKILL, etcd leader killed too"
        } else {
            "takeover after SIGKILL"
        };
        show(what, &mut samples);
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if child_main(&args) {
        return;
    }
    let trials = args
        .iter()
        .position(|a| a == "--trials")
        .map_or(20, |i| args[i + 1].parse().unwrap());
    println!(
        "{} CPUs; etcd: {}",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        etcd_version()
    );
    local(trials);
    if args.iter().any(|a| a == "--local-only") {
        return;
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(etcd(trials));
}

fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes the timespec we pass.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

fn etcd_version() -> String {
    Command::new("etcd")
        .arg("--version")
        .output()
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .next()
                .unwrap_or("")
                .to_owned()
        })
        .unwrap_or_default()
}
