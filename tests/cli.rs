//! The `shmlock` command-line tool end to end: the built binary against lock files used by
//! real `shmlock agent` child processes.

// Unix only: it drives `shmlock watch` in a terminal (tmux) and uses Unix modes and signals;
// `inspect`, `reap` and `demo` were run by hand under wine.
#![cfg(unix)]

#[allow(dead_code)]
#[path = "../cli/src/driver.rs"]
mod driver;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use driver::Agent;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde_json::Value;
use shmlock::{Options, ShmLock};

const EXE: &str = env!("CARGO_BIN_EXE_shmlock");

fn shmlock(args: &[&str]) -> Output {
    Command::new(EXE)
        .args(args)
        .env_remove("NO_COLOR")
        .output()
        .expect("run shmlock")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8(bytes.to_vec()).expect("utf-8 output")
}

fn arg(path: &Path) -> &str {
    path.to_str().expect("utf-8 temp path")
}

/// An agent that has opened `path`; also its member index.
fn open_agent(path: &Path) -> (Agent, usize) {
    open_agent_with(path, "open")
}

/// An agent that has opened `path` with `open` (`open LEASE_MS` declares a lease).
fn open_agent_with(path: &Path, open: &str) -> (Agent, usize) {
    let mut agent = Agent::spawn(Path::new(EXE), path).expect("spawn agent");
    let words = agent.ok(open);
    (agent, words[1].parse().expect("member index"))
}

/// A data file and its lock file, with a writer (generation `generation`, declared lease
/// 3 s) and two reader processes holding 2 and 1 readers.
struct Scene {
    _dir: tempfile::TempDir,
    data: PathBuf,
    shm: PathBuf,
    writer: (Agent, usize),
    generation: u64,
    reader_a: (Agent, usize),
    reader_b: (Agent, usize),
}

fn scene() -> Scene {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("app.db");
    std::fs::write(&data, b"some data\n").unwrap();
    let shm = shmlock::shm_path_for(&data);
    let mut writer = open_agent_with(&shm, "open 3000");
    let generation = writer.0.ok("try_claim")[0].parse().unwrap();
    writer.0.ok("heartbeat");
    let mut reader_a = open_agent(&shm);
    reader_a.0.ok("attach");
    reader_a.0.ok("attach");
    let mut reader_b = open_agent(&shm);
    reader_b.0.ok("attach");
    Scene {
        _dir: dir,
        data,
        shm,
        writer,
        generation,
        reader_a,
        reader_b,
    }
}

fn inspect_json(path: &Path) -> Value {
    let out = shmlock(&["inspect", "--json", arg(path)]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    serde_json::from_slice(&out.stdout).expect("inspect --json prints one JSON object")
}

/// The byte range of the `column`-th whitespace-separated field of `line`.
fn field_span(line: &str, column: usize) -> (usize, usize) {
    let mut spans = Vec::new();
    let mut start = None;
    for (i, c) in line.char_indices().chain([(line.len(), ' ')]) {
        match (c.is_whitespace(), start) {
            (false, None) => start = Some(i),
            (true, Some(s)) => {
                spans.push((s, i));
                start = None;
            }
            _ => {}
        }
    }
    spans[column]
}

#[test]
fn inspect_of_a_data_file_shows_writer_and_readers_in_an_aligned_table() {
    let s = scene();
    let out = shmlock(&["inspect", arg(&s.data)]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(out.stderr.is_empty());
    let stdout = text(&out.stdout);
    assert!(
        !stdout.contains('\x1b'),
        "no colour off a terminal:\n{stdout}"
    );
    assert!(
        stdout.contains(&format!(
            "lock file   {}  (lock file of {})",
            s.shm.display(),
            s.data.display()
        )),
        "{stdout}"
    );
    assert!(stdout.contains("format      v3, created "), "{stdout}");
    let lines: Vec<&str> = stdout.lines().collect();
    let writer_at = lines.iter().position(|l| l.starts_with("writer")).unwrap();
    assert_eq!(
        lines[writer_at],
        format!(
            "writer      pid {} (member {}), alive, generation {}",
            s.writer.0.pid, s.writer.1, s.generation
        )
    );
    // The lease the owner declared, beside its heartbeat age.
    let detail = lines[writer_at + 1];
    assert!(
        detail.starts_with("            heartbeat ")
            && detail.ends_with(" ago; declared lease 3 s"),
        "{detail}"
    );
    assert!(
        stdout.contains("snapshots   published 0; oldest pin 0"),
        "{stdout}"
    );
    assert!(
        stdout.contains("readers     3 across 3 live members"),
        "{stdout}"
    );
    assert!(
        stdout.contains("members     3 registered: 3 alive, 0 dead"),
        "{stdout}"
    );

    let lines: Vec<&str> = stdout.lines().collect();
    let header_at = lines.iter().position(|l| l.starts_with("MEMBER")).unwrap();
    let header = lines[header_at];
    let readers_end = header.find("READERS").unwrap() + "READERS".len();
    let rows = &lines[header_at + 1..header_at + 4];
    for (agent, index, readers, note) in [
        (&s.writer.0, s.writer.1, 0, Some("writer")),
        (&s.reader_a.0, s.reader_a.1, 2, None),
        (&s.reader_b.0, s.reader_b.1, 1, None),
    ] {
        let row = rows
            .iter()
            .find(|r| r.split_whitespace().nth(1) == Some(&agent.pid.to_string()))
            .unwrap_or_else(|| panic!("no row for pid {}:\n{stdout}", agent.pid));
        let words: Vec<&str> = row.split_whitespace().collect();
        assert_eq!(words[0], index.to_string(), "{row}");
        assert_eq!(words[2], "alive", "{row}");
        assert_eq!(words[3], readers.to_string(), "{row}");
        // Right-aligned under its header.
        assert_eq!(
            field_span(row, 3).1,
            readers_end,
            "misaligned:\n{header}\n{row}"
        );
        // Registration ages are whole seconds: never "0 µs ago".
        assert!(row.contains(" ago"), "{row}");
        assert!(!row.contains("µs"), "{row}");
        assert_eq!(row.trim_end().ends_with("writer"), note.is_some(), "{row}");
    }
}

/// This test process as the writer (lease 2.5 s) of a fresh lock file: it publishes 5, a
/// reader process attaches (pinning 5), it publishes 7, a second reader process attaches
/// (pinning 7).
struct Pinned {
    _dir: tempfile::TempDir,
    shm: PathBuf,
    started: SystemTime,
    lock: ShmLock,
    writer: shmlock::WriterGuard,
    old_reader: (Agent, usize),
    new_reader: (Agent, usize),
}

fn pinned_scene() -> Pinned {
    let dir = tempfile::tempdir().unwrap();
    let shm = dir.path().join("pinned-shm");
    let started = SystemTime::now();
    let lock =
        ShmLock::open_with(&shm, &Options::new().lease(Duration::from_millis(2500))).expect("open");
    let writer = lock.try_claim_writer().expect("claim");
    writer.publish(5).unwrap();
    let mut old_reader = open_agent(&shm);
    old_reader.0.ok("attach");
    writer.publish(7).unwrap();
    let mut new_reader = open_agent(&shm);
    new_reader.0.ok("attach");
    Pinned {
        _dir: dir,
        shm,
        started,
        lock,
        writer,
        old_reader,
        new_reader,
    }
}

#[test]
fn inspect_json_schema_2_reports_every_documented_field() {
    let p = pinned_scene();
    let v = inspect_json(&p.shm);
    let keys: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
    let mut expected = vec![
        "schema",
        "path",
        "data_path",
        "format_version",
        "supported_version",
        "origin",
        "created_unix_ms",
        "generation",
        "published",
        "oldest_pinned",
        "owner",
        "takeovers",
        "waiting_claimants",
        "waiting_for_publish",
        "waiting_for_readers",
        "reader_count",
        "live_members",
        "dead_members",
        "members",
    ];
    let mut got = keys.clone();
    got.sort_unstable();
    expected.sort_unstable();
    assert_eq!(got, expected);

    assert_eq!(v["schema"], 2);
    assert_eq!(v["path"], arg(&p.shm));
    assert_eq!(v["data_path"], Value::Null, "named by its lock file");
    assert_eq!(v["format_version"], 3);
    assert_eq!(v["supported_version"], 3);
    assert_eq!(v["origin"], "created");
    let created = v["created_unix_ms"].as_u64().unwrap();
    let started_ms = p.started.duration_since(UNIX_EPOCH).unwrap().as_millis() as u64;
    let now_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    assert!(
        (started_ms.saturating_sub(1)..=now_ms).contains(&created),
        "{started_ms} <= {created} <= {now_ms}"
    );
    assert_eq!(v["generation"].as_u64(), Some(p.writer.generation()));
    assert_eq!(v["published"], 7);
    assert_eq!(v["oldest_pinned"], 5);
    assert_eq!(p.lock.oldest_pinned(), Some(5), "the library agrees");
    assert_eq!(v["takeovers"], 0);
    assert_eq!(v["waiting_claimants"], 0);
    assert_eq!(v["waiting_for_publish"], 0);
    assert_eq!(v["waiting_for_readers"], 0);
    assert_eq!(v["reader_count"], 2);
    assert_eq!(v["live_members"], 3);
    assert_eq!(v["dead_members"], 0);

    let owner = &v["owner"];
    assert_eq!(owner.as_object().unwrap().len(), 6, "{owner}");
    assert_eq!(owner["member"].as_u64(), Some(p.lock.member_index() as u64));
    assert_eq!(owner["pid"].as_u64(), Some(std::process::id() as u64));
    assert_eq!(owner["alive"], true);
    assert_eq!(owner["generation"].as_u64(), Some(p.writer.generation()));
    // Claimed and never heartbeaten since.
    assert_eq!(owner["heartbeat_age_us"], Value::Null, "{owner}");
    assert_eq!(owner["lease_ms"], 2500, "the lease the owner declared");

    let members = v["members"].as_array().unwrap();
    assert_eq!(members.len(), 3);
    for (pid, index, readers, pin, lease) in [
        (
            std::process::id(),
            p.lock.member_index(),
            0,
            Value::Null,
            Value::from(2500),
        ),
        (
            p.old_reader.0.pid,
            p.old_reader.1,
            1,
            Value::from(5),
            Value::Null,
        ),
        (
            p.new_reader.0.pid,
            p.new_reader.1,
            1,
            Value::from(7),
            Value::Null,
        ),
    ] {
        let m = members
            .iter()
            .find(|m| m["pid"].as_u64() == Some(pid as u64))
            .unwrap_or_else(|| panic!("no member for pid {pid}: {v}"));
        assert_eq!(m.as_object().unwrap().len(), 10, "{m}");
        assert_eq!(m["index"].as_u64(), Some(index as u64));
        assert!(m["token"].is_u64(), "{m}");
        assert_eq!(m["alive"], true);
        assert_eq!(m["is_owner"], index == p.lock.member_index());
        assert_eq!(m["readers"].as_u64(), Some(readers));
        assert_eq!(m["oldest_pin"], pin, "{m}");
        assert_eq!(m["declared_lease_ms"], lease, "{m}");
        assert!(
            m["process_age_s"].as_u64().unwrap() < 3600 * 24 * 365,
            "{m}"
        );
        assert!(m.get("registered_age_s").is_none(), "dropped in schema 2");
        if index != p.lock.member_index() {
            assert!(m["heartbeat_age_us"].is_u64(), "{m}");
        }
    }
}

#[test]
fn inspect_json_of_a_data_file_names_both_files() {
    let s = scene();
    let v = inspect_json(&s.shm);
    let by_data = inspect_json(&s.data);
    assert_eq!(by_data["data_path"], arg(&s.data));
    assert_eq!(by_data["path"], v["path"]);
    assert_eq!(by_data["generation"], v["generation"]);
    assert_eq!(by_data["owner"]["lease_ms"], 3000);
}

#[test]
fn inspect_table_shows_the_published_version_and_every_pin() {
    let p = pinned_scene();
    let out = shmlock(&["inspect", arg(&p.shm)]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains("snapshots   published 7; oldest pin 5\n"),
        "{stdout}"
    );
    assert!(
        stdout.contains("            no heartbeat since its claim; declared lease 2.5 s\n"),
        "{stdout}"
    );
    assert!(
        stdout.contains("waiting     0 claimants, 0 for a publish, 0 for readers\n"),
        "{stdout}"
    );
    let lines: Vec<&str> = stdout.lines().collect();
    let header = lines.iter().find(|l| l.starts_with("MEMBER")).unwrap();
    let pin_end = header.find("OLDEST PIN").unwrap() + "OLDEST PIN".len();
    for (pid, pin) in [(p.old_reader.0.pid, "5"), (p.new_reader.0.pid, "7")] {
        let row = lines
            .iter()
            .find(|r| r.split_whitespace().nth(1) == Some(&pid.to_string()))
            .unwrap_or_else(|| panic!("no row for pid {pid}:\n{stdout}"));
        assert_eq!(row.split_whitespace().nth(4), Some(pin), "{row}");
        assert_eq!(field_span(row, 4).1, pin_end, "aligned:\n{header}\n{row}");
    }
    let owner_row = lines
        .iter()
        .find(|r| r.split_whitespace().nth(1) == Some(&std::process::id().to_string()))
        .unwrap();
    assert!(owner_row.contains(" 2.5 s "), "its lease: {owner_row}");
    assert!(owner_row.ends_with("writer"), "{owner_row}");
}

/// The error a command printed: exit code 1, nothing on stdout, one sentence on stderr
/// that starts with `shmlock: PATH:`, and no Debug dump.
fn assert_human_error(out: &Output, path: &Path) -> String {
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(out.stdout.is_empty(), "{}", text(&out.stdout));
    let stderr = text(&out.stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.starts_with(&format!("shmlock: {}: ", path.display())),
        "{stderr}"
    );
    for debug in ["{", "Os ", "kind:", "Error", "\x1b"] {
        assert!(!stderr.contains(debug), "{debug:?} in {stderr}");
    }
    stderr
}

#[test]
fn inspect_of_a_missing_file_says_so_and_exits_1() {
    let dir = tempfile::tempdir().unwrap();
    let shm = dir.path().join("nothing-shm");
    let stderr = assert_human_error(&shmlock(&["inspect", arg(&shm)]), &shm);
    assert!(stderr.contains("no such lock file"), "{stderr}");

    let data = dir.path().join("nothing.db");
    let stderr = assert_human_error(&shmlock(&["inspect", arg(&data)]), &data);
    assert!(stderr.contains("no such file"), "{stderr}");
    assert!(stderr.contains("nothing.db-shm"), "{stderr}");
}

#[test]
fn inspect_of_a_data_file_without_lock_file_creates_nothing_and_exits_1() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("app.db");
    std::fs::write(&data, b"SQLite format 3\0 pretend").unwrap();
    let stderr = assert_human_error(&shmlock(&["inspect", arg(&data)]), &data);
    assert!(stderr.contains("has no lock file beside it"), "{stderr}");
    assert!(
        !shmlock::shm_path_for(&data).exists(),
        "inspect created a file"
    );
}

#[test]
fn inspect_of_a_corrupt_file_says_so_exits_1_and_leaves_it_alone() {
    let dir = tempfile::tempdir().unwrap();
    let shm = dir.path().join("garbage-shm");
    let garbage = vec![0xab_u8; 4096];
    std::fs::write(&shm, &garbage).unwrap();
    let stderr = assert_human_error(&shmlock(&["inspect", arg(&shm)]), &shm);
    assert!(stderr.contains("not a shmlock lock file"), "{stderr}");
    // Reap is a writer, but never of a file that is not ours.
    assert_human_error(&shmlock(&["reap", arg(&shm)]), &shm);
    assert_eq!(std::fs::read(&shm).unwrap(), garbage);
}

#[test]
fn usage_errors_exit_2_and_help_exits_0() {
    for args in [
        &[][..],
        &["inspect"][..],
        &["frobnicate", "x"][..],
        &["inspect", "x-shm", "--jsn"][..],
        &["watch", "x-shm", "--interval", "soon"][..],
        &["watch", "x-shm", "--count", "0"][..],
    ] {
        let out = shmlock(args);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {out:?}");
        assert!(out.stdout.is_empty(), "{args:?}");
        let stderr = text(&out.stderr);
        assert!(
            stderr.starts_with("error: ") || stderr.contains("Usage: shmlock [OPTIONS] <COMMAND>"),
            "{args:?}: {stderr}"
        );
    }
    let out = shmlock(&["--help"]);
    assert_eq!(out.status.code(), Some(0));
    for command in ["inspect", "watch", "reap", "demo", "--color"] {
        assert!(text(&out.stdout).contains(command), "{command} in --help");
    }
}

#[test]
fn the_internal_agent_is_advertised_nowhere() {
    // (`help agent` is refused: "unrecognized subcommand 'agent'" only echoes the user.)
    assert_eq!(shmlock(&["help", "agent"]).status.code(), Some(2));
    for args in [&["--help"][..], &["help"][..], &["agen", "x"][..]] {
        let out = shmlock(args);
        let all = text(&out.stdout) + &text(&out.stderr);
        assert!(
            !all.contains("agent"),
            "{args:?} mentions the agent:\n{all}"
        );
    }
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md"))
        .expect("README.md");
    assert!(
        !readme.contains("shmlock agent"),
        "the README advertises the internal agent"
    );
}

#[test]
fn reap_after_sigkill_reports_the_dead_member_and_keeps_the_living() {
    let mut s = scene();
    let (mut victim, victim_index) = open_agent(&s.shm);
    victim.ok("attach");
    let victim_pid = victim.pid;
    victim.kill();
    let before = inspect_json(&s.shm);
    assert_eq!(before["dead_members"], 1);
    assert_eq!(
        before["reader_count"], 3,
        "the dead reader no longer counts"
    );

    let out = shmlock(&["reap", arg(&s.data)]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(
        lines[0],
        format!(
            "{}: cleared 1 dead member (1 reader with it)",
            s.shm.display()
        )
    );
    let words: Vec<&str> = lines[1].split_whitespace().collect();
    assert_eq!(
        words,
        [
            "member",
            &victim_index.to_string(),
            "pid",
            &victim_pid.to_string(),
            "1",
            "reader"
        ]
    );
    assert_eq!(
        lines[2],
        format!(
            "3 live members remain: writer pid {} (generation {}) and 3 readers attached",
            s.writer.0.pid, s.generation
        )
    );

    let after = inspect_json(&s.shm);
    assert_eq!(after["dead_members"], 0);
    assert_eq!(after["live_members"], 3);
    assert_eq!(after["reader_count"], 3);
    assert_eq!(after["owner"]["pid"].as_u64(), Some(s.writer.0.pid as u64));
    assert_eq!(after["owner"]["generation"].as_u64(), Some(s.generation));
    assert_eq!(s.writer.0.ok("is_current"), ["true"]);
    assert_eq!(
        s.reader_a.0.ok("detach"),
        ["1"],
        "its readers were untouched"
    );

    let again = shmlock(&["reap", arg(&s.shm)]);
    assert_eq!(again.status.code(), Some(0));
    assert_eq!(
        text(&again.stdout),
        format!(
            "{}: nothing to reap (3 live members, none dead)\n",
            s.shm.display()
        )
    );
}

#[test]
fn reap_when_everyone_died_frees_the_writer_role_and_keeps_the_generation() {
    let dir = tempfile::tempdir().unwrap();
    let shm = dir.path().join("crashed-shm");
    let (mut writer, writer_index) = open_agent(&shm);
    let generation: u64 = writer.ok("try_claim")[0].parse().unwrap();
    let (mut reader, reader_index) = open_agent(&shm);
    reader.ok("attach");
    let (writer_pid, reader_pid) = (writer.pid, reader.pid);
    writer.kill();
    reader.kill();

    let out = shmlock(&["reap", arg(&shm)]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(
        stdout.starts_with(&format!(
            "{}: cleared 2 dead members (1 reader with them)\n",
            shm.display()
        )),
        "{stdout}"
    );
    let line_of = |index: usize| {
        stdout
            .lines()
            .find(|l| l.split_whitespace().nth(1) == Some(&index.to_string()))
            .unwrap_or_else(|| panic!("no line for member {index}:\n{stdout}"))
    };
    let writer_line = line_of(writer_index);
    assert!(
        writer_line.contains(&format!("pid {writer_pid} ")),
        "{writer_line}"
    );
    assert!(
        writer_line.contains(&format!("held the writer role (generation {generation})")),
        "{writer_line}"
    );
    assert!(line_of(reader_index).contains(&format!("pid {reader_pid} ")));
    assert!(stdout.ends_with("0 live members remain: no writer and 0 readers attached\n"));

    let after = inspect_json(&shm);
    assert_eq!(after["owner"], Value::Null);
    assert_eq!(after["dead_members"], 0);
    assert_eq!(after["generation"].as_u64(), Some(generation), "kept");
}

#[test]
fn watch_off_a_terminal_prints_count_snapshots_line_by_line() {
    let s = scene();
    let out = shmlock(&["watch", arg(&s.data), "--interval", "10", "--count", "3"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(!stdout.contains('\x1b'), "no escape codes off a terminal");
    let headers: Vec<&str> = stdout.lines().filter(|l| l.starts_with("== ")).collect();
    assert_eq!(headers.len(), 3, "{stdout}");
    for (n, header) in headers.iter().enumerate() {
        assert!(header.ends_with(&format!("(sample {})", n + 1)), "{header}");
    }
    let writer_line = format!(
        "writer      pid {} (member {}), alive, generation {}",
        s.writer.0.pid, s.writer.1, s.generation
    );
    assert_eq!(stdout.matches(&writer_line).count(), 3, "{stdout}");
}

/// A `shmlock watch` child whose stdout lines arrive on a channel; killed and reaped on drop.
struct Watch {
    child: Child,
    lines: mpsc::Receiver<String>,
}

impl Watch {
    fn start(path: &Path) -> Watch {
        Watch::start_every(path, 10)
    }

    fn start_every(path: &Path, interval_ms: u64) -> Watch {
        let mut child = Command::new(EXE)
            .args(["watch", arg(path), "--interval", &interval_ms.to_string()])
            .stdout(Stdio::piped())
            .spawn()
            .expect("start watch");
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                if line.map(|l| tx.send(l)).is_err() {
                    break;
                }
            }
        });
        Watch { child, lines }
    }

    /// Read lines until one equals `want` (bounded by the driver's answer timeout).
    fn wait_for_line(&self, want: &str) {
        self.wait_for(want, |line| line == want);
    }

    /// Read lines until one satisfies `ready` (bounded by the driver's answer timeout).
    fn wait_for(&self, what: &str, ready: impl Fn(&str) -> bool) {
        loop {
            match self.lines.recv_timeout(driver::ANSWER_TIMEOUT) {
                Ok(line) if ready(&line) => return,
                Ok(_) => {}
                Err(e) => panic!("watch never printed {what:?}: {e}"),
            }
        }
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn watch_reports_members_coming_and_dying_and_exits_0_on_sigint() {
    let dir = tempfile::tempdir().unwrap();
    let shm = dir.path().join("watched-shm");
    let (mut first, _) = open_agent(&shm);
    let generation: u64 = first.ok("try_claim")[0].parse().unwrap();
    let mut watch = Watch::start(&shm);
    watch.wait_for_line(&format!(
        "writer      pid {} (member 0), alive, generation {generation}",
        first.pid
    ));

    let (mut second, index) = open_agent(&shm);
    watch.wait_for_line(&format!("* pid {} joined (member {index})", second.pid));
    second.ok("attach");
    let pid = second.pid;
    second.kill();
    // Nobody reaps it, so the watch sees it dead (whichever sample saw the attach).
    loop {
        let line = watch
            .lines
            .recv_timeout(driver::ANSWER_TIMEOUT)
            .expect("watch reports the death");
        if line.starts_with(&format!("* pid {pid} (member {index}) DIED with")) {
            break;
        }
    }

    kill(Pid::from_raw(watch.child.id() as i32), Signal::SIGINT).unwrap();
    let status = watch.child.wait().unwrap();
    assert_eq!(status.code(), Some(0), "Ctrl-C is a clean exit");
    first.ok("release");
}

/// Where a command's output goes: a pipe whose reader is gone, or a full device.
fn closed_pipe() -> Stdio {
    let (read, write) = nix::unistd::pipe().expect("pipe");
    drop(read);
    Stdio::from(write)
}

fn dev_full() -> Stdio {
    Stdio::from(
        std::fs::OpenOptions::new()
            .write(true)
            .open("/dev/full")
            .expect("/dev/full"),
    )
}

fn shmlock_into(args: &[&str], stdout: Stdio) -> Output {
    Command::new(EXE)
        .args(args)
        .env_remove("NO_COLOR")
        .stdout(stdout)
        .stderr(Stdio::piped())
        .output()
        .expect("run shmlock")
}

/// Every command that prints, on the scene's files.
fn printing_commands(s: &Scene) -> Vec<Vec<String>> {
    let data = arg(&s.data).to_string();
    [
        vec!["demo"],
        vec!["inspect", &data],
        vec!["inspect", "--json", &data],
        vec!["reap", &data],
        vec!["reap", "--json", &data],
        vec!["watch", &data, "--interval", "10", "--count", "2"],
        vec!["--help"],
    ]
    .iter()
    .map(|a| a.iter().map(|w| w.to_string()).collect())
    .collect()
}

#[test]
fn a_closed_pipe_ends_every_command_quietly_with_status_0() {
    let s = scene();
    for args in printing_commands(&s) {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = shmlock_into(&args, closed_pipe());
        assert_eq!(out.status.code(), Some(0), "{args:?}: {out:?}");
        assert_eq!(text(&out.stderr), "", "{args:?}: quiet, no panic");
    }
}

#[test]
fn a_full_device_is_one_sentence_and_status_1() {
    let s = scene();
    for args in printing_commands(&s) {
        if args == ["--help"] {
            continue; // clap's own output
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = shmlock_into(&args, dev_full());
        assert_eq!(out.status.code(), Some(1), "{args:?}: {out:?}");
        assert_eq!(
            text(&out.stderr),
            "shmlock: cannot write the output: no space left on device\n",
            "{args:?}"
        );
    }
}

#[test]
fn the_demo_counts_the_processes_it_lists_and_shows_a_pin_released_by_a_death() {
    let out = shmlock(&["demo"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    let title = stdout.lines().next().unwrap();
    let announced: usize = title
        .strip_prefix("shmlock demo: ")
        .and_then(|t| t.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{title}"));
    let opened: Vec<u32> = stdout
        .lines()
        .filter(|l| l.contains(" opened the lock file: "))
        .map(|l| l.split_whitespace().nth(2).unwrap().parse().unwrap())
        .collect();
    assert_eq!(opened.len(), announced, "{stdout}");
    assert!(opened.contains(&out_pid_of_demo(&stdout)), "{stdout}");
    // Part two: the pinned reader holds back reclamation, its death releases it.
    assert!(
        stdout.contains("wait_readers_past(2, 100 ms): gave up after 100 ms waiting for readers to move past version 2 (the oldest pin is still 1)"),
        "{stdout}"
    );
    assert!(
        stdout.contains("snapshots   published 3; oldest pin 1"),
        "{stdout}"
    );
    assert!(
        stdout
            .lines()
            .any(|l| l.contains("wait_readers_past(2, 10 s) returned ")
                && l.ends_with(" after the SIGKILL, and nobody called reap")),
        "{stdout}"
    );
    assert!(
        stdout.contains("snapshots   published 3; oldest pin 3"),
        "{stdout}"
    );
    // Its directory is deleted at the end: it suggests nothing to run on it.
    assert!(!stdout.contains("or run:"), "{stdout}");
    assert!(
        !stdout
            .lines()
            .skip(1)
            .any(|l| l.trim_start().starts_with("shmlock ")),
        "{stdout}"
    );
    assert!(!stdout.contains("agent"), "{stdout}");
    for debug in ["Some(", "None", "Created", "Joined"] {
        assert!(!stdout.contains(debug), "{debug:?} in the demo:\n{stdout}");
    }
}

/// The pid the demo reports for itself ("demo     pid N ...").
fn out_pid_of_demo(stdout: &str) -> u32 {
    stdout
        .lines()
        .find_map(|l| l.trim_start().strip_prefix("demo     pid "))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|pid| pid.parse().ok())
        .unwrap_or_else(|| panic!("the demo never says its own pid:\n{stdout}"))
}

#[test]
fn reap_json_reports_the_cleared_members_and_what_remains() {
    let s = scene();
    let (mut victim, victim_index) = open_agent(&s.shm);
    victim.ok("attach");
    let victim_pid = victim.pid;
    victim.kill();
    let out = shmlock(&["reap", "--json", arg(&s.data)]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let v: Value = serde_json::from_slice(&out.stdout).expect("one JSON object");
    let mut keys: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
    keys.sort_unstable();
    assert_eq!(
        keys,
        [
            "cleared",
            "data_path",
            "healed",
            "live_members",
            "owner",
            "owner_freed",
            "path",
            "reader_count",
            "readers_cleared",
            "schema"
        ]
    );
    assert_eq!(v["schema"], 1);
    assert_eq!(v["path"], arg(&s.shm));
    assert_eq!(v["data_path"], arg(&s.data));
    assert_eq!(v["healed"], false);
    assert_eq!(
        v["cleared"],
        serde_json::json!([{
            "index": victim_index,
            "pid": victim_pid,
            "readers": 1,
            "owned_generation": null
        }])
    );
    assert_eq!(v["readers_cleared"], 1);
    assert_eq!(v["owner_freed"], Value::Null);
    assert_eq!(v["live_members"], 3);
    assert_eq!(
        v["owner"],
        serde_json::json!({"pid": s.writer.0.pid, "alive": true, "generation": s.generation})
    );
    assert_eq!(v["reader_count"], 3);

    let again = shmlock(&["reap", "--json", arg(&s.shm)]);
    let v: Value = serde_json::from_slice(&again.stdout).unwrap();
    assert_eq!(v["cleared"], serde_json::json!([]));
}

#[test]
fn color_follows_the_flag_then_no_color_then_the_terminal() {
    let s = scene();
    let run = |color: Option<&str>, no_color: bool| {
        let mut cmd = Command::new(EXE);
        if let Some(c) = color {
            cmd.args(["--color", c]);
        }
        cmd.args(["inspect", arg(&s.data)]).env_remove("NO_COLOR");
        if no_color {
            cmd.env("NO_COLOR", "1");
        }
        let out = cmd.output().unwrap();
        assert_eq!(out.status.code(), Some(0), "{out:?}");
        text(&out.stdout).contains('\x1b')
    };
    assert!(!run(None, false), "auto: not into a pipe");
    assert!(!run(Some("auto"), false));
    assert!(run(Some("always"), false));
    assert!(run(Some("always"), true), "the flag wins over NO_COLOR");
    assert!(!run(Some("never"), false));
    // Errors too, and the flag goes anywhere on the line.
    let out = shmlock(&["inspect", "/nonexistent/x.db", "--color=always"]);
    assert!(
        text(&out.stderr).starts_with("\x1b[1;31mshmlock:\x1b[0m "),
        "{out:?}"
    );
    let bad = shmlock(&["--color", "sometimes", "inspect", "x"]);
    assert_eq!(bad.status.code(), Some(2));
}

#[test]
fn errors_speak_to_operators_not_to_programmers() {
    let dir = tempfile::tempdir().unwrap();
    let not_ours = dir.path().join("notes-shm");
    std::fs::write(&not_ours, b"shopping list").unwrap();
    let cases = [
        (
            dir.path().to_path_buf(),
            "is a directory, not a regular file",
        ),
        (not_ours.clone(), "not a shmlock lock file"),
    ];
    for (path, says) in cases {
        for command in ["inspect", "reap", "watch"] {
            let out = shmlock(&[command, arg(&path)]);
            let stderr = assert_human_error(&out, &path);
            assert!(stderr.contains(says), "{command}: {stderr}");
            for api in [
                "::",
                "ShmLock",
                "Options",
                "provision",
                "(data)",
                "os error",
            ] {
                assert!(!stderr.contains(api), "{command}: {api:?} in {stderr}");
            }
        }
    }
    assert_eq!(std::fs::read(&not_ours).unwrap(), b"shopping list");
}

#[test]
fn a_lock_file_is_never_taken_for_a_data_file() {
    let dir = tempfile::tempdir().unwrap();
    // A lock file with another name (it carries the magic), and a stray "<it>-shm" beside.
    let odd = dir.path().join("odd.lock");
    let (mut owner, _) = open_agent(&odd);
    let generation: u64 = owner.ok("try_claim")[0].parse().unwrap();
    let (stray, _) = open_agent(&shmlock::shm_path_for(&odd));
    let v = inspect_json(&odd);
    assert_eq!(
        v["path"],
        arg(&odd),
        "the file itself, as the library sees it"
    );
    assert_eq!(v["data_path"], Value::Null);
    assert_eq!(v["generation"].as_u64(), Some(generation));
    // A name ending in -shm is a lock file even when "<it>-shm" exists.
    let shm = dir.path().join("app.db-shm");
    let (_a, _) = open_agent(&shm);
    let (_b, _) = open_agent(&shmlock::shm_path_for(&shm));
    assert_eq!(inspect_json(&shm)["path"], arg(&shm));
    drop(stray);
}

/// The root package's examples, when `cargo test --workspace` (CI) has built them.
fn example(name: &str) -> Option<PathBuf> {
    let path = Path::new(EXE).parent()?.join("examples").join(name);
    if path.exists() {
        Some(path)
    } else {
        eprintln!(
            "skipped: {} is not built (`cargo test --workspace` or `cargo build --examples` builds it)",
            path.display()
        );
        None
    }
}

#[test]
fn the_examples_refuse_a_lock_file_as_their_data_path_and_survive_their_output() {
    let (Some(reader), Some(writer)) = (example("reader"), example("writer")) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("app.db");
    std::fs::write(&data, b"").unwrap();
    let shm = shmlock::shm_path_for(&data);
    drop(ShmLock::open(&shm).unwrap());
    let page = std::fs::read(&shm).unwrap();
    for exe in [&reader, &writer] {
        let out = Command::new(exe).arg(&shm).output().unwrap();
        assert_eq!(out.status.code(), Some(1), "{exe:?}: {out:?}");
        assert!(text(&out.stderr).contains("is a shmlock lock file, not a data file"));
        assert_eq!(
            std::fs::read(&shm).unwrap(),
            page,
            "{exe:?} wrote into the lock file"
        );
        assert!(
            !shmlock::shm_path_for(&shm).exists(),
            "{exe:?} made a lock file's lock file"
        );
    }
    // A lock file's name that does not exist yet: the writer creates nothing either.
    let missing = dir.path().join("new.db-shm");
    let out = Command::new(&writer).arg(&missing).output().unwrap();
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(!missing.exists() && !shmlock::shm_path_for(&missing).exists());

    for exe in [&reader, &writer] {
        let closed = Command::new(exe)
            .arg(&data)
            .stdout(closed_pipe())
            .stderr(Stdio::piped())
            .output()
            .unwrap();
        assert_eq!(closed.status.code(), Some(0), "{exe:?}: {closed:?}");
        assert_eq!(text(&closed.stderr), "", "{exe:?}");
        let full = Command::new(exe)
            .arg(&data)
            .stdout(dev_full())
            .stderr(Stdio::piped())
            .output()
            .unwrap();
        assert_eq!(full.status.code(), Some(1), "{exe:?}: {full:?}");
        assert!(
            text(&full.stderr).contains("cannot write the output: No space left on device"),
            "{exe:?}: {full:?}"
        );
    }
}

#[test]
fn watch_lists_a_death_before_the_takeover_it_made_possible() {
    let dir = tempfile::tempdir().unwrap();
    let shm = dir.path().join("order-shm");
    let (mut first, first_index) = open_agent(&shm);
    let generation: u64 = first.ok("try_claim")[0].parse().unwrap();
    let (mut claimant, _) = open_agent(&shm);
    let watch = Watch::start_every(&shm, 1000);
    watch.wait_for("== ", |line| line.ends_with("(sample 1)"));
    // Both within one interval: the next sample sees the death and the takeover at once.
    let first_pid = first.pid;
    first.kill();
    claimant.ok("try_claim");
    let mut events = Vec::new();
    loop {
        let line = watch
            .lines
            .recv_timeout(driver::ANSWER_TIMEOUT)
            .expect("watch reports the takeover");
        if let Some(event) = line.strip_prefix("* ") {
            events.push(event.to_string());
        } else if line.starts_with("== ") && !events.is_empty() {
            break;
        }
    }
    assert_eq!(
        events,
        [
            format!("writer pid {first_pid} (member {first_index}) died and was cleared"),
            format!(
                "TAKEOVER: generation {} by pid {} from pid {first_pid}",
                generation + 1,
                claimant.pid
            ),
        ]
    );
}

/// A private tmux server running one command in a detached window of a given size; the
/// server is killed on drop. `None` (with the reason printed) when tmux is missing.
struct Tmux {
    socket: String,
}

impl Tmux {
    fn start(columns: u16, rows: u16, command: &str) -> Option<Tmux> {
        if Command::new("tmux").arg("-V").output().is_err() {
            eprintln!("skipped: tmux is not installed (apt-get install tmux; .ci/run installs it)");
            return None;
        }
        let socket = format!("shmlock-test-{}-{columns}x{rows}", std::process::id());
        let status = Command::new("tmux")
            .args(["-L", &socket, "-f", "/dev/null", "new-session", "-d"])
            .args(["-x", &columns.to_string(), "-y", &rows.to_string()])
            .arg(command)
            .env("TERM", "xterm-256color")
            .env_remove("NO_COLOR")
            .status()
            .expect("run tmux");
        assert!(status.success(), "tmux new-session failed");
        Some(Tmux { socket })
    }

    /// The screen's rows, as tmux shows them (`-J`: wrapped lines joined, so a line that
    /// wrapped shows as one longer than the width).
    fn screen(&self) -> Vec<String> {
        let out = Command::new("tmux")
            .args(["-L", &self.socket, "capture-pane", "-p", "-J"])
            .output()
            .expect("tmux capture-pane");
        text(&out.stdout)
            .lines()
            .map(|l| l.trim_end().to_string())
            .collect()
    }

    /// Poll the screen until `ready` holds (bounded by the driver's answer timeout).
    fn wait_for(&self, what: &str, ready: impl Fn(&[String]) -> bool) -> Vec<String> {
        let deadline = Instant::now() + driver::ANSWER_TIMEOUT;
        loop {
            let screen = self.screen();
            if ready(&screen) {
                return screen;
            }
            assert!(
                Instant::now() < deadline,
                "the screen never showed {what}:\n{}",
                screen.join("\n")
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn keys(&self, keys: &str) {
        let status = Command::new("tmux")
            .args(["-L", &self.socket, "send-keys", keys])
            .status()
            .expect("tmux send-keys");
        assert!(status.success());
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = Command::new("tmux")
            .args(["-L", &self.socket, "kill-server"])
            .status();
    }
}

/// `shmlock watch PATH` in a shell that says how it ended.
fn watch_command(path: &Path) -> String {
    format!(
        "'{EXE}' watch '{}' --interval 20; echo \"watch ended with status $?\"; sleep 600",
        arg(path)
    )
}

#[test]
fn watch_fits_a_60_by_14_terminal_and_quits_on_q() {
    let s = scene();
    // Ten members: more rows than 14 lines hold with the header and an event.
    let mut extra: Vec<Agent> = Vec::new();
    for _ in 0..7 {
        let (mut a, _) = open_agent(&s.shm);
        a.ok("attach");
        extra.push(a);
    }
    let Some(tmux) = Tmux::start(60, 14, &watch_command(&s.data)) else {
        return;
    };
    let fits = |screen: &[String]| {
        screen.len() <= 14
            && screen.iter().all(|l| l.chars().count() <= 60)
            && screen
                .first()
                .is_some_and(|l| l.starts_with("shmlock watch"))
    };
    let screen = tmux.wait_for("the writer", |screen| {
        screen.iter().any(|l| l.starts_with("writer ")) && fits(screen)
    });
    let all = screen.join("\n");
    assert!(
        all.contains("snapshots   published 0; oldest pin 0"),
        "{all}"
    );
    assert!(all.contains("OLDEST PIN"), "{all}");
    assert!(
        !all.contains("PROCESS STARTED"),
        "no room for it at 60 columns:\n{all}"
    );
    // An event arrives: the oldest rows make room for it; still no line wraps, and
    // nothing scrolls the title away.
    let (joined, _) = open_agent(&s.shm);
    let screen = tmux.wait_for("the join", |screen| {
        screen
            .iter()
            .any(|l| l.contains(&format!("pid {} joined", joined.pid)))
    });
    assert!(fits(&screen), "{}", screen.join("\n"));
    let all = screen.join("\n");
    assert!(all.contains("more (a taller terminal shows them)"), "{all}");
    tmux.keys("q");
    tmux.wait_for("watch ending on q", |screen| {
        screen.iter().any(|l| l == "watch ended with status 0")
    });
}

#[test]
fn watch_uses_the_width_of_a_200_column_terminal() {
    let s = scene();
    let Some(tmux) = Tmux::start(200, 50, &watch_command(&s.data)) else {
        return;
    };
    let screen = tmux.wait_for("the member table", |screen| {
        screen.iter().any(|l| l.starts_with("MEMBER"))
    });
    let all = screen.join("\n");
    let header = screen.iter().find(|l| l.starts_with("MEMBER")).unwrap();
    for column in [
        "OLDEST PIN",
        "HEARTBEAT",
        "LEASE",
        "PROCESS STARTED",
        "TOKEN",
        "NOTE",
    ] {
        assert!(header.contains(column), "{column} at 200 columns: {header}");
    }
    assert!(!all.contains('…'), "nothing cut at 200 columns:\n{all}");
    assert!(screen[0].ends_with(arg(&s.data)), "{}", screen[0]);
    assert!(screen.iter().all(|l| l.chars().count() <= 200));
    tmux.keys("C-c");
    tmux.wait_for("watch ending on Ctrl-C", |screen| {
        screen.iter().any(|l| l == "watch ended with status 0")
    });
}

// ---------------------------------------------------------------------------------------
// Issue 18: a new user's first day (items 8-10).

/// The demo's own title names its lock file, in its temporary directory.
fn demo_dir_of(title: &str) -> PathBuf {
    let shm = title
        .rsplit(' ')
        .next()
        .unwrap_or_else(|| panic!("no path in the title {title:?}"));
    Path::new(shm).parent().unwrap().to_path_buf()
}

/// SIGTERM, or Ctrl-C (SIGINT to the terminal's whole process group, the demo's agents
/// included), in the middle of `shmlock demo`: it dies of that signal, without a panic
/// message, with its child processes killed and its temporary directory removed.
#[test]
fn an_interrupted_demo_kills_its_children_and_removes_its_directory() {
    use std::io::Read;
    use std::os::unix::process::{CommandExt, ExitStatusExt};
    for (stop, whole_group) in [(Signal::SIGTERM, false), (Signal::SIGINT, true)] {
        let mut demo = Command::new(EXE)
            .args(["demo", "--color", "never"])
            .process_group(0) // its own group, as a shell job gets
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start the demo");
        let mut lines = BufReader::new(demo.stdout.take().unwrap()).lines();
        let title = lines.next().unwrap().unwrap();
        let dir = demo_dir_of(&title);
        assert!(dir.is_dir(), "{title}");
        // Read up to the claimant's wait: the writer, 3 readers and the claimant are alive.
        let mut children = Vec::new();
        for line in lines.by_ref() {
            let line = line.unwrap();
            if line.contains(" opened the lock file: ") {
                children.push(
                    line.split_whitespace()
                        .nth(2)
                        .unwrap()
                        .parse::<i32>()
                        .unwrap(),
                );
            }
            if line.contains("claim_writer(10 s): asleep") {
                break;
            }
        }
        assert_eq!(children.len(), 5, "{stop}: writer, 3 readers, claimant");
        let pid = Pid::from_raw(demo.id() as i32);
        if whole_group {
            nix::sys::signal::killpg(pid, stop).unwrap();
        } else {
            kill(pid, stop).unwrap();
        }
        let mut stderr = String::new();
        demo.stderr
            .take()
            .unwrap()
            .read_to_string(&mut stderr)
            .unwrap();
        let status = demo.wait().unwrap();
        assert_eq!(
            status.signal(),
            Some(stop as i32),
            "{stop}: {status:?} {stderr}"
        );
        assert!(!stderr.contains("panicked"), "{stop}: {stderr}");
        assert!(!dir.exists(), "{stop}: {} was left behind", dir.display());
        // Killed and reaped before the demo died; give init a moment for any stragglers.
        let deadline = Instant::now() + driver::ANSWER_TIMEOUT;
        for pid in children {
            while kill(Pid::from_raw(pid), None) != Err(nix::errno::Errno::ESRCH) {
                assert!(
                    Instant::now() < deadline,
                    "{stop}: child {pid} outlived the demo"
                );
                std::thread::sleep(Duration::from_millis(10));
            }
        }
    }
}

#[test]
fn demo_dir_on_an_existing_file_is_a_sentence() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("not-a-dir");
    std::fs::write(&file, b"x").unwrap();
    let out = shmlock(&["demo", "--dir", arg(&file)]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    assert!(stderr.contains("exists and is not a directory"), "{stderr}");
    assert!(!stderr.contains("os error"), "{stderr}");
    assert_eq!(std::fs::read(&file).unwrap(), b"x");
}

/// Under `cargo run` the demo process began as cargo, which execs it: its row must say
/// when the demo started, not when the exec'ing process did.
#[test]
fn the_demo_process_shows_when_the_demo_started() {
    let out = Command::new("sh")
        .args(["-c", &format!("sleep 2; exec '{EXE}' demo --color never")])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    let me = out_pid_of_demo(&stdout).to_string();
    let rows: Vec<&str> = stdout
        .lines()
        .filter(|l| l.split_whitespace().nth(1) == Some(me.as_str()))
        .collect();
    assert!(!rows.is_empty(), "{stdout}");
    for row in rows {
        assert!(row.contains("<1 s ago"), "{row}");
    }
}

/// "1 live member remains"; the reap hint names the binary as it was run when `shmlock` on
/// PATH is not it (here: never, the tests run target/…/shmlock by its path).
#[test]
fn reap_speaks_in_the_singular_and_the_hint_names_the_binary_run() {
    let dir = tempfile::tempdir().unwrap();
    let shm = dir.path().join("one-shm");
    let (_alive, _) = open_agent(&shm);
    let (victim, _) = open_agent(&shm);
    victim.kill();
    let out = Command::new(EXE)
        .args(["inspect", arg(&shm)])
        .env("PATH", "/usr/bin:/bin")
        .output()
        .unwrap();
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains(&format!("\n  {EXE} reap {}\n", shm.display())),
        "{stdout}"
    );
    let out = shmlock(&["reap", arg(&shm)]);
    let stdout = text(&out.stdout);
    assert!(stdout.contains("\n1 live member remains: "), "{stdout}");
}

/// Every subcommand's --help says what --color does in one entry, not an 8-line block.
#[test]
fn the_color_option_is_one_line_in_every_help() {
    for command in ["inspect", "watch", "reap", "demo"] {
        let out = shmlock(&[command, "--help"]);
        let help = text(&out.stdout);
        let color = help
            .lines()
            .filter(|l| l.contains("--color") || l.contains("NO_COLOR"))
            .count();
        assert_eq!(color, 1, "{command} --help:\n{help}");
        assert!(!help.contains("Possible values"), "{command}:\n{help}");
    }
}

/// At 60 columns, `inspect` on a terminal fits every line (the member table drops columns
/// instead of wrapping) and `watch` never cuts the generation, on the writer line or in a
/// takeover event: the token is the one number an operator copies.
#[test]
fn a_60_column_terminal_never_cuts_the_generation() {
    let s = scene();
    let Some(tmux) = Tmux::start(
        60,
        40,
        &format!(
            "'{EXE}' inspect '{}'; echo inspect ended; sleep 600",
            arg(&s.data)
        ),
    ) else {
        return;
    };
    let screen = tmux.wait_for("inspect", |screen| {
        screen.iter().any(|l| l == "inspect ended")
    });
    let all = screen.join("\n");
    assert!(screen.iter().all(|l| l.chars().count() <= 60), "{all}");
    assert!(
        all.contains(&format!("generation {}", s.generation)),
        "{all}"
    );
    assert!(
        all.contains("MEMBER") && all.contains("OLDEST PIN"),
        "{all}"
    );
    drop(tmux);

    // watch at 60 x 14, then a takeover: the writer line and the event keep the whole
    // token.
    let (mut claimant, _) = open_agent(&s.shm);
    let Some(tmux) = Tmux::start(60, 14, &watch_command(&s.data)) else {
        return;
    };
    let token = format!("generation {}", s.generation);
    tmux.wait_for("the writer's whole token", |screen| {
        screen
            .iter()
            .any(|l| l.starts_with("writer ") && l.ends_with(&token))
    });
    let writer = s.writer;
    writer.0.kill();
    let next = claimant.ok("claim 10000")[0].clone();
    let token = format!("generation {next}");
    let screen = tmux.wait_for("the takeover with its whole token", |screen| {
        screen
            .iter()
            .any(|l| l.contains("TAKEOVER") && l.contains(&token))
            && screen
                .iter()
                .any(|l| l.starts_with("writer ") && l.ends_with(&token))
    });
    assert!(
        screen.iter().all(|l| l.chars().count() <= 60),
        "{}",
        screen.join("\n")
    );
}
