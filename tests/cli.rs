//! The `shmlock` command-line tool end to end: the built binary against lock files used by
//! real `shmlock agent` child processes.

#[allow(dead_code)]
#[path = "../cli/src/driver.rs"]
mod driver;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{SystemTime, UNIX_EPOCH};

use driver::Agent;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde_json::Value;

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
    let mut agent = Agent::spawn(Path::new(EXE), path).expect("spawn agent");
    let words = agent.ok("open");
    (agent, words[1].parse().expect("member index"))
}

/// A data file and its lock file, with a writer (generation `generation`) and two reader
/// processes holding 2 and 1 readers.
struct Scene {
    _dir: tempfile::TempDir,
    data: PathBuf,
    shm: PathBuf,
    started: SystemTime,
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
    let started = SystemTime::now();
    let mut writer = open_agent(&shm);
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
        started,
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
    assert!(stdout.contains("format      v1, created "), "{stdout}");
    let writer_line = stdout.lines().find(|l| l.starts_with("writer")).unwrap();
    assert_eq!(
        writer_line,
        format!(
            "writer      pid {} (member {}), alive, generation {}",
            s.writer.0.pid, s.writer.1, s.generation
        )
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

#[test]
fn inspect_json_reports_every_documented_field() {
    let s = scene();
    let v = inspect_json(&s.shm);
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
        "owner",
        "takeovers",
        "waiting_claimants",
        "reader_count",
        "live_members",
        "dead_members",
        "members",
    ];
    let mut got = keys.clone();
    got.sort_unstable();
    expected.sort_unstable();
    assert_eq!(got, expected);

    assert_eq!(v["schema"], 1);
    assert_eq!(v["path"], arg(&s.shm));
    assert_eq!(v["data_path"], Value::Null, "named by its lock file");
    assert_eq!(v["format_version"], 1);
    assert_eq!(v["supported_version"], 1);
    assert_eq!(v["origin"], "created");
    let created = v["created_unix_ms"].as_u64().unwrap();
    let started_ms = s.started.duration_since(UNIX_EPOCH).unwrap().as_millis() as u64;
    let now_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    assert!(
        (started_ms.saturating_sub(1)..=now_ms).contains(&created),
        "{started_ms} <= {created} <= {now_ms}"
    );
    assert_eq!(v["generation"].as_u64(), Some(s.generation));
    assert_eq!(v["takeovers"], 0);
    assert_eq!(v["waiting_claimants"], 0);
    assert_eq!(v["reader_count"], 3);
    assert_eq!(v["live_members"], 3);
    assert_eq!(v["dead_members"], 0);

    let owner = &v["owner"];
    assert_eq!(owner.as_object().unwrap().len(), 5, "{owner}");
    assert_eq!(owner["member"].as_u64(), Some(s.writer.1 as u64));
    assert_eq!(owner["pid"].as_u64(), Some(s.writer.0.pid as u64));
    assert_eq!(owner["alive"], true);
    assert_eq!(owner["generation"].as_u64(), Some(s.generation));
    // The writer heartbeat after its claim; far less than an hour ago.
    assert!(owner["heartbeat_age_us"].as_u64().unwrap() < 3_600_000_000);

    let members = v["members"].as_array().unwrap();
    assert_eq!(members.len(), 3);
    for (agent, index, readers) in [
        (&s.writer.0, s.writer.1, 0),
        (&s.reader_a.0, s.reader_a.1, 2),
        (&s.reader_b.0, s.reader_b.1, 1),
    ] {
        let m = members
            .iter()
            .find(|m| m["pid"].as_u64() == Some(agent.pid as u64))
            .unwrap_or_else(|| panic!("no member for pid {}: {v}", agent.pid));
        assert_eq!(m.as_object().unwrap().len(), 9, "{m}");
        assert_eq!(m["index"].as_u64(), Some(index as u64));
        assert!(m["token"].is_u64(), "{m}");
        assert_eq!(m["alive"], true);
        assert_eq!(m["is_owner"], index == s.writer.1);
        assert_eq!(m["readers"].as_u64(), Some(readers));
        assert!(m["registered_age_s"].as_u64().unwrap() < 3600, "{m}");
        assert!(m["process_age_s"].as_u64().unwrap() < 3600, "{m}");
        assert!(m["heartbeat_age_us"].is_u64(), "{m}");
    }

    // The same file named by its data file: the same state, and the data path said.
    let by_data = inspect_json(&s.data);
    assert_eq!(by_data["data_path"], arg(&s.data));
    assert_eq!(by_data["path"], v["path"]);
    assert_eq!(by_data["generation"], v["generation"]);
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
            stderr.starts_with("error: ") || stderr.contains("Usage: shmlock <COMMAND>"),
            "{args:?}: {stderr}"
        );
    }
    let out = shmlock(&["--help"]);
    assert_eq!(out.status.code(), Some(0));
    for command in ["inspect", "watch", "reap", "demo"] {
        assert!(text(&out.stdout).contains(command), "{command} in --help");
    }
    assert!(
        !text(&out.stdout).contains("agent"),
        "the agent stays hidden"
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
        let mut child = Command::new(EXE)
            .args(["watch", arg(path), "--interval", "10"])
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
    fn wait_for(&self, want: &str) {
        loop {
            match self.lines.recv_timeout(driver::ANSWER_TIMEOUT) {
                Ok(line) if line == want => return,
                Ok(_) => {}
                Err(e) => panic!("watch never printed {want:?}: {e}"),
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
    watch.wait_for(&format!(
        "writer      pid {} (member 0), alive, generation {generation}",
        first.pid
    ));

    let (mut second, index) = open_agent(&shm);
    watch.wait_for(&format!("* pid {} joined (member {index})", second.pid));
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
