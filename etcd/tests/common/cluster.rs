//! A local etcd cluster for tests, benches and the demo: `n` members of Debian's
//! `etcd-server` on 127.0.0.1 with free ports, data in a temporary directory (in
//! /dev/shm when it exists: no disk fsyncs), killed and reaped on drop, even on panic.

#![allow(dead_code)]

use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// One member's process and addresses.
pub struct Member {
    pub name: String,
    pub client_port: u16,
    pub peer_port: u16,
    pub child: Option<Child>,
}

impl Member {
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.client_port)
    }
}

/// A running cluster; dropping it kills and reaps every member.
pub struct Cluster {
    pub dir: tempfile::TempDir,
    pub members: Vec<Member>,
    token: String,
}

fn free_ports(n: usize) -> Vec<u16> {
    // Hold every listener until all ports are chosen, so none is chosen twice.
    let listeners: Vec<TcpListener> = (0..n)
        .map(|_| TcpListener::bind("127.0.0.1:0").expect("bind a free port"))
        .collect();
    listeners
        .iter()
        .map(|l| l.local_addr().unwrap().port())
        .collect()
}

impl Cluster {
    /// Start `n` members and wait until the cluster has a leader (retrying with new ports
    /// if another program took one of them in between).
    ///
    /// `None`, after saying so on stderr, when no `etcd` binary is installed (a fresh
    /// machine: Debian's `etcd-server` package provides it): the test then checks nothing.
    /// `.ci/run` sets `SHMLOCK_ETCD_REQUIRED=1`, which turns a missing `etcd` into a
    /// failure, so CI never passes without running these tests.
    pub fn start(n: usize) -> Option<Cluster> {
        if Command::new("etcd").arg("--version").output().is_err() {
            assert!(
                std::env::var_os("SHMLOCK_ETCD_REQUIRED").is_none(),
                "SHMLOCK_ETCD_REQUIRED is set but no `etcd` binary is on PATH (Debian: apt-get install etcd-server)"
            );
            eprintln!(
                "SKIPPED: no `etcd` binary on PATH, so this shmlock-etcd test does not run (Debian: apt-get install etcd-server)"
            );
            return None;
        }
        let mut last = String::new();
        for _ in 0..3 {
            let mut cluster = Cluster::spawn(n);
            match cluster.wait_ready(Duration::from_secs(30)) {
                Ok(()) => return Some(cluster),
                Err(e) => last = e,
            }
            drop(cluster);
        }
        panic!("the etcd cluster did not start: {last}");
    }

    fn spawn(n: usize) -> Cluster {
        let ports = free_ports(2 * n);
        let base = if std::path::Path::new("/dev/shm").is_dir() {
            tempfile::Builder::new()
                .prefix("shmlock-etcd-")
                .tempdir_in("/dev/shm")
        } else {
            tempfile::Builder::new().prefix("shmlock-etcd-").tempdir()
        }
        .expect("a temporary directory");
        let members = (0..n)
            .map(|i| Member {
                name: format!("m{i}"),
                client_port: ports[2 * i],
                peer_port: ports[2 * i + 1],
                child: None,
            })
            .collect();
        let token = format!("shmlock-test-{}-{}", std::process::id(), ports[0]);
        let mut cluster = Cluster {
            dir: base,
            members,
            token,
        };
        for i in 0..n {
            cluster.start_member(i);
        }
        cluster
    }

    fn initial_cluster(&self) -> String {
        self.members
            .iter()
            .map(|m| format!("{}=http://127.0.0.1:{}", m.name, m.peer_port))
            .collect::<Vec<_>>()
            .join(",")
    }

    pub fn data_dir(&self, i: usize) -> PathBuf {
        self.dir.path().join(&self.members[i].name)
    }

    /// Start (or restart, on its existing data) member `i`.
    pub fn start_member(&mut self, i: usize) {
        assert!(self.members[i].child.is_none(), "member {i} is running");
        let initial = self.initial_cluster();
        let data = self.data_dir(i);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(
                self.dir
                    .path()
                    .join(format!("{}.log", self.members[i].name)),
            )
            .expect("the member's log file");
        let m = &self.members[i];
        let client = format!("http://127.0.0.1:{}", m.client_port);
        let peer = format!("http://127.0.0.1:{}", m.peer_port);
        let mut command = Command::new("etcd");
        // SAFETY: prctl(2) is async-signal-safe; the closure allocates nothing. The member
        // dies with the thread that started it, even if the test process is SIGKILLed.
        unsafe {
            command.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        let child = command
            .args(["--name", &m.name])
            .arg("--data-dir")
            .arg(&data)
            .args(["--listen-client-urls", &client])
            .args(["--advertise-client-urls", &client])
            .args(["--listen-peer-urls", &peer])
            .args(["--initial-advertise-peer-urls", &peer])
            .args(["--initial-cluster", &initial])
            .args(["--initial-cluster-token", &self.token])
            .args(["--initial-cluster-state", "new"])
            .args(["--logger", "zap", "--log-level", "warn"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start etcd (Debian package etcd-server)");
        self.members[i].child = Some(child);
    }

    /// SIGKILL member `i` and reap it.
    pub fn kill_member(&mut self, i: usize) {
        if let Some(mut child) = self.members[i].child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub fn endpoints(&self) -> Vec<String> {
        self.members.iter().map(Member::endpoint).collect()
    }

    /// Wait until every running member answers and agrees on a leader.
    pub fn wait_ready(&mut self, timeout: Duration) -> Result<(), String> {
        let deadline = Instant::now() + timeout;
        loop {
            for (i, m) in self.members.iter_mut().enumerate() {
                if let Some(child) = m.child.as_mut() {
                    if let Ok(Some(status)) = child.try_wait() {
                        return Err(format!("member {i} exited: {status}"));
                    }
                }
            }
            let running: Vec<usize> = (0..self.members.len())
                .filter(|&i| self.members[i].child.is_some())
                .collect();
            let endpoints: Vec<String> = running
                .iter()
                .map(|&i| self.members[i].endpoint())
                .collect();
            // On a thread of its own: the caller may be inside a runtime.
            let answers = std::thread::spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap();
                runtime.block_on(async {
                    let mut leaders = Vec::new();
                    for endpoint in &endpoints {
                        leaders.push(status_leader(endpoint).await);
                    }
                    leaders
                })
            })
            .join()
            .unwrap();
            if answers
                .iter()
                .all(|a| a.is_some_and(|(leader, _)| leader != 0))
                && answers
                    .windows(2)
                    .all(|w| w[0].map(|a| a.0) == w[1].map(|a| a.0))
            {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(format!("no agreed leader after {timeout:?}: {answers:?}"));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The index of the current leader, asked of the running members.
    pub async fn leader(&self) -> Option<usize> {
        for m in self.members.iter().filter(|m| m.child.is_some()) {
            if let Some((leader, _)) = status_leader(&m.endpoint()).await {
                if leader == 0 {
                    continue;
                }
                for (j, other) in self.members.iter().enumerate() {
                    if other.child.is_some() {
                        if let Some((_, id)) = status_leader(&other.endpoint()).await {
                            if id == leader {
                                return Some(j);
                            }
                        }
                    }
                }
            }
        }
        None
    }
}

/// (leader id, own member id) from member `endpoint`'s status.
async fn status_leader(endpoint: &str) -> Option<(u64, u64)> {
    let options = etcd_client::ConnectOptions::new()
        .with_connect_timeout(Duration::from_millis(500))
        .with_timeout(Duration::from_millis(500));
    let mut client = etcd_client::Client::connect([endpoint], Some(options))
        .await
        .ok()?;
    let status = tokio::time::timeout(Duration::from_millis(700), client.status())
        .await
        .ok()?
        .ok()?;
    Some((status.leader(), status.header()?.member_id()))
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for i in 0..self.members.len() {
            self.kill_member(i);
        }
    }
}
