//! Drives `shmlock agent` child processes: one command line out, one answer line back.
//! Shared by the demo and (through `#[path]`) the multi-process tests.

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::time::Duration;

#[cfg(unix)]
use nix::sys::signal::{kill, Signal};
#[cfg(unix)]
use nix::unistd::Pid;

/// How long any single answer may take before the driver gives up on the agent.
pub const ANSWER_TIMEOUT: Duration = Duration::from_secs(60);

/// One agent process. Killed and reaped on drop.
pub struct Agent {
    child: Child,
    stdin: ChildStdin,
    answers: Receiver<String>,
    /// The agent's pid.
    pub pid: u32,
}

impl Agent {
    /// Start `exe agent path`.
    pub fn spawn(exe: &Path, path: &Path) -> std::io::Result<Agent> {
        let mut child = Command::new(exe)
            .arg("agent")
            .arg(path)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()?;
        let stdin = child.stdin.take().expect("piped stdin");
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, answers) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let pid = child.id();
        Ok(Agent {
            child,
            stdin,
            answers,
            pid,
        })
    }

    /// Send a command without waiting for its answer.
    pub fn send(&mut self, command: &str) {
        writeln!(self.stdin, "{command}")
            .and_then(|_| self.stdin.flush())
            .unwrap_or_else(|e| panic!("agent {} is gone ({command}): {e}", self.pid));
    }

    /// Wait for the next answer.
    pub fn answer(&mut self) -> String {
        self.answers
            .recv_timeout(ANSWER_TIMEOUT)
            .unwrap_or_else(|e| panic!("agent {} did not answer: {e}", self.pid))
    }

    /// The next answer if one arrives within `within` (`None`: none yet).
    #[allow(dead_code)] // the tests use it; the demo does not
    pub fn answer_within(&mut self, within: Duration) -> Option<String> {
        match self.answers.recv_timeout(within) {
            Ok(answer) => Some(answer),
            Err(mpsc::RecvTimeoutError::Timeout) => None,
            Err(e) => panic!("agent {} is gone: {e}", self.pid),
        }
    }

    /// Send a command and wait for its answer.
    pub fn ask(&mut self, command: &str) -> String {
        self.send(command);
        self.answer()
    }

    /// Send a command that must succeed; the answer's words after `ok`.
    pub fn ok(&mut self, command: &str) -> Vec<String> {
        self.send(command);
        self.ok_answer_to(command)
    }

    /// Wait for the answer to a command sent earlier, which must succeed; its words after
    /// `ok`.
    #[allow(dead_code)] // the tests use it; the demo does not
    pub fn ok_answer(&mut self) -> Vec<String> {
        self.ok_answer_to("the command sent earlier")
    }

    fn ok_answer_to(&mut self, command: &str) -> Vec<String> {
        let answer = self.answer();
        let mut words = answer.split_whitespace().map(str::to_string);
        assert_eq!(
            words.next().as_deref(),
            Some("ok"),
            "agent {}: {command:?} answered {answer:?}",
            self.pid
        );
        words.collect()
    }

    /// Send a signal.
    #[cfg(unix)]
    #[allow(dead_code)] // the tests use it; the demo does not
    pub fn signal(&self, signal: Signal) {
        kill(Pid::from_raw(self.pid as i32), signal).expect("signal agent");
    }

    /// Kill the agent hard (SIGKILL; TerminateProcess on Windows) and reap it.
    pub fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
