//! The shmlock-etcd demo: a writer process, two readers and a standby on their own
//! handles (as if on other hosts), and a takeover after the writer is SIGKILLed.
//!
//! ```text
//! etcd/demo/cluster.sh &        # a local 3-member cluster on 127.0.0.1
//! cargo run -p shmlock-etcd --example demo
//! ```
//!
//! Optional argument: the endpoints, comma-separated (default: the demo cluster's).

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use shmlock_etcd::{EtcdLock, Options};

const DEFAULT_ENDPOINTS: &str =
    "http://127.0.0.1:2379,http://127.0.0.1:22379,http://127.0.0.1:32379";
const TTL: Duration = Duration::from_secs(2);
const NAME: &str = "demo.db";

async fn connect(endpoints: &str) -> shmlock_etcd::Result<EtcdLock> {
    let endpoints: Vec<&str> = endpoints.split(',').collect();
    EtcdLock::connect(&endpoints, NAME, &Options::new().lease(TTL)).await
}

/// The writer process: claim, then publish a version every 250 ms until killed.
async fn writer(endpoints: &str) -> shmlock_etcd::Result<()> {
    let lock = connect(endpoints).await?;
    let writer = lock.claim_writer(Duration::from_secs(30)).await?;
    println!("claimed {}", writer.generation());
    let mut v = lock.published().await?;
    loop {
        v += 1;
        writer.publish(v).await?;
        println!(
            "  writer   pid {} (generation {}) published {v}",
            std::process::id(),
            writer.generation()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("--writer") {
        writer(&args[2]).await?;
        return Ok(());
    }
    let endpoints = args
        .get(1)
        .cloned()
        .unwrap_or_else(|| DEFAULT_ENDPOINTS.to_owned());
    let start = Instant::now();
    let t = move || format!("{:5.2}s", start.elapsed().as_secs_f64());

    // The writer, in a process of its own.
    let mut child = Command::new(std::env::current_exe()?)
        .args(["--writer", &endpoints])
        .stdout(Stdio::piped())
        .spawn()?;
    let mut lines = BufReader::new(child.stdout.take().expect("piped"));
    let mut line = String::new();
    lines.read_line(&mut line)?;
    let first: u64 = line
        .trim()
        .strip_prefix("claimed ")
        .ok_or("the writer failed")?
        .parse()?;
    println!(
        "{} writer process {} claimed the role: generation {first}",
        t(),
        child.id()
    );
    let echo = std::thread::spawn(move || {
        for line in lines.lines().map_while(Result::ok) {
            println!("{line}");
        }
    });

    // Two readers and a standby, each with a handle (a lease) of its own.
    let mut readers = Vec::new();
    for i in 1..=2 {
        let lock = connect(&endpoints).await?;
        readers.push(tokio::spawn(async move {
            let mut seen = 0;
            let until = Instant::now() + Duration::from_secs(9);
            while Instant::now() < until {
                let Ok(v) = lock.wait_published(seen, Duration::from_secs(5)).await else {
                    continue;
                };
                seen = v;
                let Ok(reader) = lock.attach_reader().await else {
                    continue;
                };
                let oldest = lock.oldest_pinned().await.ok().flatten();
                tokio::time::sleep(Duration::from_millis(150 * i)).await;
                let still = reader.is_pinned().await.unwrap_or(false);
                println!(
                    "  reader {i} pinned {} (oldest pin {oldest:?}), read it, pin held: {still}",
                    reader.version()
                );
                let _ = reader.detach().await;
            }
        }));
    }
    let standby = connect(&endpoints).await?;
    let standby_task = tokio::spawn(async move {
        let writer = standby.claim_writer(Duration::from_secs(30)).await?;
        let took_over = Instant::now();
        let published = standby.published().await?;
        Ok::<_, shmlock_etcd::Error>((standby, writer, took_over, published))
    });
    println!("{} standby waits for the role (claim_writer)", t());

    tokio::time::sleep(Duration::from_secs(3)).await;
    // SAFETY: kill(2) on our own child, not yet reaped.
    unsafe { libc::kill(child.id() as i32, libc::SIGKILL) };
    let killed = Instant::now();
    child.wait()?;
    echo.join().ok();
    println!(
        "{} SIGKILL the writer: its lease (TTL {TTL:?}) expires, then the standby claims",
        t()
    );

    let (lock, writer, took_over, published) = standby_task.await??;
    assert!(
        writer.generation() > first,
        "the takeover's generation is higher"
    );
    println!(
        "{} standby took over {:.2}s after the kill: generation {} > {first}; published {published} survived",
        t(),
        took_over.duration_since(killed).as_secs_f64(),
        writer.generation(),
    );
    for v in published + 1..published + 8 {
        writer.publish(v).await?;
        println!(
            "  standby  (generation {}) published {v}",
            writer.generation()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    for r in readers {
        r.await?;
    }
    writer
        .wait_readers_past(lock.published().await?, Duration::from_secs(5))
        .await?;
    writer.release().await?;
    println!(
        "{} done: one writer at a time, versions only grew, the takeover fenced generation {first}",
        t()
    );
    Ok(())
}
