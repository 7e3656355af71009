//! The Jepsen-style history: child processes claim and publish in a loop, recording every
//! operation with its start and end (CLOCK_MONOTONIC, shared by the processes of a host);
//! the parent kills and stops them and checks the history.

use std::io::Write;
use std::time::Duration;

use shmlock_etcd::{EtcdLock, Options};

pub const HISTORY_ENV: &str = "SHMLOCK_ETCD_HISTORY";

pub fn now_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes the timespec we pass.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// A child of the history test: `<file> <ttl s> <until ns> <endpoints,…>`.
pub fn history_child() {
    let Ok(spec) = std::env::var(HISTORY_ENV) else {
        return;
    };
    let words: Vec<&str> = spec.split(' ').collect();
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(words[0])
        .unwrap();
    let ttl: u64 = words[1].parse().unwrap();
    let until: u64 = words[2].parse().unwrap();
    let endpoints: Vec<&str> = words[3].split(',').collect();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let options = Options::new()
            .lease(Duration::from_secs(ttl))
            .request_timeout(Duration::from_millis(700))
            .retry_for(Duration::from_secs(3));
        let lock = EtcdLock::connect(&endpoints, "history", &options)
            .await
            .unwrap();
        let mut rec = |line: String| {
            file.write_all(format!("{line}\n").as_bytes()).unwrap();
        };
        while now_ns() < until {
            let start = now_ns();
            let writer = match lock.claim_writer(Duration::from_secs(2)).await {
                Ok(w) => w,
                Err(e) => {
                    rec(format!("claim_err {:?} {start} {}", e.kind(), now_ns()));
                    continue;
                }
            };
            let g = writer.generation();
            rec(format!("claim_ok {g} {start} {}", now_ns()));
            for _ in 0..20 {
                let p = match lock.published().await {
                    Ok(p) => p,
                    Err(_) => break,
                };
                let start = now_ns();
                let result = writer.publish(p + 1).await;
                let end = now_ns();
                match result {
                    Ok(()) => rec(format!("pub_ok {g} {} {start} {end}", p + 1)),
                    Err(e) => {
                        rec(format!(
                            "pub_err {g} {} {start} {end} {:?}",
                            p + 1,
                            e.kind()
                        ));
                        if e.kind() == shmlock::ErrorKind::Deposed {
                            break;
                        }
                    }
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            let _ = writer.release().await;
        }
    });
    std::process::exit(0);
}

/// One recorded operation.
#[derive(Debug, Clone, Copy)]
pub struct Op {
    pub generation: u64,
    pub version: u64,
    pub start: u64,
    pub end: u64,
}

#[derive(Debug, Default)]
pub struct History {
    pub claims: Vec<Op>,
    pub publishes: Vec<Op>,
    pub deposed: usize,
    pub failed_publishes: usize,
    pub failed_claims: usize,
}

impl History {
    pub fn parse(text: &str, into: &mut History) {
        for line in text.lines() {
            let w: Vec<&str> = line.split(' ').collect();
            // A line cut by SIGKILL is incomplete: skip it.
            let n = |i: usize| w.get(i).and_then(|s| s.parse::<u64>().ok());
            match w[0] {
                "claim_ok" => {
                    if let (Some(g), Some(s), Some(e)) = (n(1), n(2), n(3)) {
                        into.claims.push(Op {
                            generation: g,
                            version: 0,
                            start: s,
                            end: e,
                        });
                    }
                }
                "claim_err" => into.failed_claims += 1,
                "pub_ok" => {
                    if let (Some(g), Some(v), Some(s), Some(e)) = (n(1), n(2), n(3), n(4)) {
                        into.publishes.push(Op {
                            generation: g,
                            version: v,
                            start: s,
                            end: e,
                        });
                    }
                }
                "pub_err" => {
                    into.failed_publishes += 1;
                    if w.get(5) == Some(&"Deposed") {
                        into.deposed += 1;
                    }
                }
                _ => {}
            }
        }
    }

    /// Check the history; returns the number of (claim, publish) pairs checked for the
    /// fence. Panics on a violation.
    pub fn check(&self) -> usize {
        // Generations are unique and follow real-time order of the claims.
        let mut gens: Vec<u64> = self.claims.iter().map(|c| c.generation).collect();
        gens.sort_unstable();
        let before = gens.len();
        gens.dedup();
        assert_eq!(gens.len(), before, "a generation was handed out twice");
        for a in &self.claims {
            for b in &self.claims {
                if a.end < b.start {
                    assert!(
                        a.generation < b.generation,
                        "claims out of order: {a:?} then {b:?}"
                    );
                }
            }
        }
        // Published versions are unique and strictly increase in real time.
        let mut versions: Vec<u64> = self.publishes.iter().map(|p| p.version).collect();
        versions.sort_unstable();
        let before = versions.len();
        versions.dedup();
        assert_eq!(versions.len(), before, "a version was published twice");
        for a in &self.publishes {
            for b in &self.publishes {
                if a.end < b.start {
                    assert!(
                        a.version < b.version,
                        "published went backwards: {a:?} then {b:?}"
                    );
                }
            }
        }
        // In version order, generations never go down.
        let mut by_version = self.publishes.clone();
        by_version.sort_by_key(|p| p.version);
        for pair in by_version.windows(2) {
            assert!(
                pair[0].generation <= pair[1].generation,
                "a lower generation published after a higher one: {:?} then {:?}",
                pair[0],
                pair[1]
            );
        }
        // No publish of a generation lands after a higher generation's claim returned.
        let mut pairs = 0;
        for p in &self.publishes {
            for c in self.claims.iter().filter(|c| c.generation > p.generation) {
                pairs += 1;
                assert!(
                    p.start < c.end,
                    "generation {} published {} after generation {}'s claim returned: {p:?} {c:?}",
                    p.generation,
                    p.version,
                    c.generation
                );
            }
        }
        pairs
    }
}
