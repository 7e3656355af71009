//! Child processes driven line by line: the test binary re-executes itself (test
//! `child_process`, spec in `SHMLOCK_ETCD_CHILD`) and runs a small command interpreter
//! over [`shmlock::backend::Backend`], so one child serves both backends.
//!
//! Commands (one per line on stdin), answers (one line on stdout, prefixed `@@ `):
//! `claim <ms>` / `try_claim` → `ok <generation>`; `publish <v>` → `ok`; `is_current` →
//! `ok <bool>`; `release`; `attach` → `ok <version>`; `detach`; `published` → `ok <v>`;
//! `wait_published <after> <ms>` → `ok <v>`; `oldest` → `ok <v|none>`; errors →
//! `err <ErrorKind>`.

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::Duration;

use shmlock::backend::{Backend, BackendError, BackendReader, BackendWriter};

pub const CHILD_ENV: &str = "SHMLOCK_ETCD_CHILD";

/// Where a child finds the lock: `local <path> <lease ms>` or
/// `etcd <name> <lease s> <endpoint,endpoint,…>`.
pub fn local_spec(path: &std::path::Path, lease_ms: u64) -> String {
    format!("local {} {lease_ms}", path.display())
}

pub fn etcd_spec(name: &str, lease_s: u64, endpoints: &[String]) -> String {
    format!("etcd {name} {lease_s} {}", endpoints.join(","))
}

/// The body of the `child_process` test: returns at once unless this process is a child.
pub fn child_main() {
    let Ok(spec) = std::env::var(CHILD_ENV) else {
        return;
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let words: Vec<String> = spec.split(' ').map(str::to_owned).collect();
    runtime.block_on(async move {
        match words[0].as_str() {
            "local" => {
                let lease = Duration::from_millis(words[2].parse().unwrap());
                let mut options = shmlock::Options::new();
                if !lease.is_zero() {
                    options = options.lease(lease);
                }
                let lock = shmlock::ShmLock::open_with(&words[1], &options).unwrap();
                serve(&lock).await;
            }
            "etcd" => {
                let endpoints: Vec<&str> = words[3].split(',').collect();
                let options = shmlock_etcd::Options::new()
                    .lease(Duration::from_secs(words[2].parse().unwrap()))
                    .request_timeout(Duration::from_millis(700));
                let lock = shmlock_etcd::EtcdLock::connect(&endpoints, &words[1], &options)
                    .await
                    .unwrap();
                serve(&lock).await;
            }
            other => panic!("unknown backend {other}"),
        }
    });
    std::process::exit(0);
}

fn answer(line: String) {
    let mut out = std::io::stdout().lock();
    writeln!(out, "@@ {line}").unwrap();
    out.flush().unwrap();
}

fn err<E: BackendError>(e: E) -> String {
    format!("err {:?}", e.kind())
}

async fn serve<B: Backend>(lock: &B) {
    let mut writer: Option<B::Writer> = None;
    let mut readers: Vec<B::Reader> = Vec::new();
    answer("ready".into());
    let stdin = std::io::stdin();
    let mut line = String::new();
    loop {
        line.clear();
        if stdin.lock().read_line(&mut line).unwrap() == 0 {
            return;
        }
        let words: Vec<&str> = line.split_whitespace().collect();
        let num = |i: usize| -> u64 { words[i].parse().unwrap() };
        let reply = match words[0] {
            "claim" | "try_claim" => {
                let result = if words[0] == "claim" {
                    lock.claim_writer(Duration::from_millis(num(1))).await
                } else {
                    lock.try_claim_writer().await
                };
                match result {
                    Ok(w) => {
                        let g = w.generation();
                        writer = Some(w);
                        format!("ok {g}")
                    }
                    Err(e) => err(e),
                }
            }
            "publish" => match writer.as_ref().unwrap().publish(num(1)).await {
                Ok(()) => "ok".into(),
                Err(e) => err(e),
            },
            "is_current" => match writer.as_ref().unwrap().is_current().await {
                Ok(b) => format!("ok {b}"),
                Err(e) => err(e),
            },
            "release" => match writer.take().unwrap().release().await {
                Ok(()) => "ok".into(),
                Err(e) => err(e),
            },
            "attach" => match lock.attach_reader().await {
                Ok(r) => {
                    let v = r.version();
                    readers.push(r);
                    format!("ok {v}")
                }
                Err(e) => err(e),
            },
            "detach" => match readers.pop().unwrap().detach().await {
                Ok(()) => "ok".into(),
                Err(e) => err(e),
            },
            "published" => match lock.published().await {
                Ok(v) => format!("ok {v}"),
                Err(e) => err(e),
            },
            "wait_published" => {
                match lock
                    .wait_published(num(1), Duration::from_millis(num(2)))
                    .await
                {
                    Ok(v) => format!("ok {v}"),
                    Err(e) => err(e),
                }
            }
            "oldest" => match lock.oldest_pinned().await {
                Ok(Some(v)) => format!("ok {v}"),
                Ok(None) => "ok none".into(),
                Err(e) => err(e),
            },
            "sleep" => {
                tokio::time::sleep(Duration::from_millis(num(1))).await;
                "ok".into()
            }
            "exit" => return,
            other => format!("unknown command {other}"),
        };
        answer(reply);
    }
}

/// A child process, from the parent's side. Killed and reaped on drop.
pub struct Driven {
    pub child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

impl Driven {
    /// Start a child for `spec` and wait for its `ready`.
    pub fn spawn(spec: &str) -> Driven {
        let child = Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "child_process",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD_ENV, spec)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        Driven::from_child(child)
    }

    pub fn from_child(mut child: Child) -> Driven {
        let stdin = child.stdin.take().unwrap();
        let stdout = BufReader::new(child.stdout.take().unwrap());
        let mut driven = Driven {
            child,
            stdin,
            stdout,
        };
        assert_eq!(driven.read(), "ready");
        driven
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// Send a command without waiting for its answer.
    pub fn send(&mut self, command: &str) {
        writeln!(self.stdin, "{command}").unwrap();
        self.stdin.flush().unwrap();
    }

    /// The next answer (blocking).
    pub fn read(&mut self) -> String {
        tokio::task::block_in_place(|| {
            let mut line = String::new();
            loop {
                line.clear();
                let n = self.stdout.read_line(&mut line).unwrap();
                assert!(n > 0, "the child exited before answering");
                // libtest may have printed "test child_process ... " on the same line.
                if let Some(at) = line.find("@@ ") {
                    return line[at + 3..].trim_end().to_owned();
                }
            }
        })
    }

    /// Send a command and return its answer.
    pub fn cmd(&mut self, command: &str) -> String {
        self.send(command);
        self.read()
    }

    /// The number after `ok `.
    pub fn ok_num(&mut self, command: &str) -> u64 {
        let answer = self.cmd(command);
        answer
            .strip_prefix("ok ")
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("{command}: {answer}"))
    }

    pub fn signal(&self, signal: i32) {
        // SAFETY: kill(2) on our own child's pid, which we have not reaped yet.
        assert_eq!(unsafe { libc::kill(self.pid(), signal) }, 0);
    }

    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Driven {
    fn drop(&mut self) {
        // SIGKILL ends a stopped child too.
        self.kill();
    }
}
