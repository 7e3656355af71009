//! An append-only log fenced by generation: the pattern to copy when a writer that was
//! deposed (its process paused past its lease, then resumed) may still write into the data
//! file. A lock never protects data by itself: the writes must carry the fencing token and
//! the data's readers must reject stale ones. Three rules do it here:
//!
//! 1. **Every record carries the generation of the claim that wrote it** (and a checksum,
//!    and its sequence number within that generation).
//! 2. **A successor cuts the deposed writer's unpublished tail**: right after its claim it
//!    truncates the file to the published length (everything the old writer appended but
//!    never published is gone), then appends a *fence* record carrying its own generation.
//!    If a deposed writer's append slipped in between the cut and the fence, it cuts again.
//! 3. **Readers reject records of a stale generation**: they read only the published
//!    prefix (the version their `ReaderGuard` pins), and drop any record whose generation
//!    is below one seen earlier in the file — what a deposed writer appended after its
//!    successor's fence.
//!
//! The published version is the number of records in the file; the writer appends with
//! `O_APPEND` (whole 32-byte records, so a deposed writer's late append lands at the end and
//! never over a record), and publishes after a batch. A deposed writer finds out at its
//! next `publish` (`Error::Deposed`) and stops. The log opens its lock file with
//! `generation_floor` = the highest generation in the file, so fencing tokens never repeat
//! even if the lock file is lost.
//!
//! ```sh
//! cargo run --example fenced_log -- demo            # writers killed and paused, checked
//! cargo run --example fenced_log -- writer /tmp/log.dat
//! cargo run --example fenced_log -- reader /tmp/log.dat
//! ```
//!
//! `demo` runs two writer and two reader processes for a few seconds, SIGKILLs the writer
//! that owns the role or SIGSTOPs it past its lease (so it resumes deposed and appends
//! stale records), and checks the log: no published record lost, no unpublished tail kept,
//! every stale record rejected. `tests/fenced_log.rs` runs the same check under
//! `cargo test`.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::process::{Child, Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use shmlock::{Error, ErrorKind, Options, ShmLock, WriterGuard};

/// Bytes per record: generation, sequence, payload, checksum.
pub const RECORD: u64 = 32;
/// The payload of the fence record a writer appends after its cut.
pub const FENCE: u64 = u64::MAX;
/// The lease the writers declare: a writer paused for longer is taken over.
pub const LEASE: Duration = Duration::from_millis(100);

/// A boxed error that crosses threads.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// One record of the log.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Record {
    /// The generation of the claim that wrote it: the fencing token.
    pub generation: u64,
    /// Its place among the records of its generation (0: the fence).
    pub seq: u64,
    /// The record's content (here: its sequence number, or [`FENCE`]).
    pub payload: u64,
}

/// SplitMix64's finaliser, as a checksum.
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58476d1ce4e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d049bb133111eb);
    z ^ (z >> 31)
}

impl Record {
    fn checksum(&self) -> u64 {
        mix(self.generation ^ mix(self.seq ^ mix(self.payload)))
    }

    fn encode(&self) -> [u8; RECORD as usize] {
        let mut bytes = [0; RECORD as usize];
        for (i, word) in [self.generation, self.seq, self.payload, self.checksum()]
            .into_iter()
            .enumerate()
        {
            bytes[i * 8..i * 8 + 8].copy_from_slice(&word.to_le_bytes());
        }
        bytes
    }

    /// `None` for bytes that are not a whole, intact record.
    fn decode(bytes: &[u8]) -> Option<Record> {
        let word = |i: usize| u64::from_le_bytes(bytes[i * 8..i * 8 + 8].try_into().unwrap());
        let record = Record {
            generation: word(0),
            seq: word(1),
            payload: word(2),
        };
        (bytes.len() == RECORD as usize && record.checksum() == word(3)).then_some(record)
    }
}

/// The log: its data file, appended to, and its lock file beside it.
pub struct Log {
    file: File,
    lock: ShmLock,
}

/// What a reader saw: the records it accepted (with their index in the file) under the
/// version it pinned, and how many stale ones it rejected.
#[derive(Debug)]
pub struct Snapshot {
    /// The version (record count) the reader pinned.
    pub version: u64,
    /// The accepted records, with their index in the file.
    pub records: Vec<(u64, Record)>,
    /// Records rejected because a newer generation came before them.
    pub rejected: u64,
}

impl Log {
    /// Open (creating if missing) the log at `data` and its lock file.
    pub fn open(data: &Path) -> Result<Log, BoxError> {
        let file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .open(data)
            .map_err(|e| format!("{}: {e}", data.display()))?;
        // Tokens never repeat, even with a lost lock file: claim above what the log holds.
        let floor = highest_generation(&file)?;
        shmlock::set_provisioning_enabled(true); // this example may create the lock file
        let options = Options::new().lease(LEASE).generation_floor(floor);
        let lock = ShmLock::provision_with(data, &options)?;
        Ok(Log { file, lock })
    }

    /// The lock file handle (for observers).
    pub fn lock(&self) -> &ShmLock {
        &self.lock
    }

    /// Claim the writer role (waiting up to `timeout`) and cut the deposed writer's
    /// unpublished tail (rule 2).
    pub fn claim(&self, timeout: Duration) -> Result<Writer<'_>, BoxError> {
        let guard = self.lock.claim_writer(timeout)?;
        // Read after the claim: a deposed writer can publish nothing more.
        let cut_at = self.lock.published();
        let fence = Record {
            generation: guard.generation(),
            seq: 0,
            payload: FENCE,
        };
        loop {
            self.file.set_len(cut_at * RECORD)?;
            (&self.file).write_all(&fence.encode())?;
            if self.record_at(cut_at) == Some(fence) {
                break;
            }
            // A deposed writer's append landed between the cut and the fence: cut again.
        }
        Ok(Writer {
            log: self,
            guard,
            next_seq: 1,
            cut_at,
        })
    }

    fn record_at(&self, index: u64) -> Option<Record> {
        let mut bytes = [0; RECORD as usize];
        self.file.read_exact_at(&mut bytes, index * RECORD).ok()?;
        Record::decode(&bytes)
    }

    /// Read the published log (rule 3): pin a version, read that many records, reject
    /// records of a generation older than one already seen.
    pub fn read(&self) -> Result<Snapshot, BoxError> {
        let reader = self.lock.attach_reader()?;
        let version = reader.version();
        let mut bytes = vec![0; (version * RECORD) as usize];
        self.file.read_exact_at(&mut bytes, 0)?;
        drop(reader); // the copy is ours now
        let mut snapshot = Snapshot {
            version,
            records: Vec::new(),
            rejected: 0,
        };
        let mut newest = 0;
        for (index, chunk) in bytes.chunks(RECORD as usize).enumerate() {
            let record = Record::decode(chunk)
                .ok_or_else(|| format!("record {index} of {version} published is torn"))?;
            if record.generation < newest {
                snapshot.rejected += 1; // a deposed writer's late append
                continue;
            }
            newest = record.generation;
            snapshot.records.push((index as u64, record));
        }
        Ok(snapshot)
    }
}

/// The highest generation of any intact record in `file` (0 for an empty log).
fn highest_generation(file: &File) -> Result<u64, BoxError> {
    let len = file.metadata()?.len() / RECORD * RECORD;
    let mut bytes = vec![0; len as usize];
    file.read_exact_at(&mut bytes, 0)?;
    Ok(bytes
        .chunks(RECORD as usize)
        .filter_map(Record::decode)
        .map(|r| r.generation)
        .max()
        .unwrap_or(0))
}

/// The writer role over the log.
pub struct Writer<'a> {
    log: &'a Log,
    guard: WriterGuard,
    next_seq: u64,
    /// Where this claim cut the log (the published version when it claimed).
    pub cut_at: u64,
}

impl Writer<'_> {
    /// The claim's generation, carried by every record it appends.
    pub fn generation(&self) -> u64 {
        self.guard.generation()
    }

    /// Records of this generation appended so far (the fence included).
    pub fn appended(&self) -> u64 {
        self.next_seq
    }

    /// Append one record (rule 1). Not visible to readers until [`commit`](Writer::commit).
    pub fn append(&mut self) -> std::io::Result<()> {
        let record = Record {
            generation: self.generation(),
            seq: self.next_seq,
            payload: self.next_seq,
        };
        (&self.log.file).write_all(&record.encode())?;
        self.next_seq += 1;
        Ok(())
    }

    /// Publish everything appended: the new version is the record count. `Err(Deposed)`
    /// when another claim has won: stop writing (the successor cuts what we appended).
    pub fn commit(&self) -> Result<u64, BoxError> {
        // An engine would fdatasync the file here, before publishing.
        let version = self.log.file.metadata()?.len() / RECORD;
        self.guard.publish(version)?;
        Ok(version)
    }
}

// ---------------------------------------------------------------------------------------
// The processes of the demonstration (and of tests/fenced_log.rs).

/// Append a line to the witness file (one `write(2)`, `O_APPEND`).
fn witness(path: &Path, line: &str) {
    if let Ok(mut file) = OpenOptions::new().append(true).create(true).open(path) {
        let _ = file.write_all(format!("{line}\n").as_bytes());
    }
}

/// A writer process: claim (waiting while another owns), append batches of 1–4 records
/// and commit each; when deposed, claim again. Writes `claim G CUT`, `published G V N`
/// (N records of generation G are published) and `deposed G` to the witness file.
pub fn run_writer(data: &Path, witness_file: &Path) -> Result<(), BoxError> {
    let log = Log::open(data)?;
    let mut batch = std::process::id() as u64;
    loop {
        let mut writer = match log.claim(Duration::from_secs(1)) {
            Ok(writer) => writer,
            Err(e)
                if e.downcast_ref()
                    .is_some_and(|e: &Error| e.kind() == ErrorKind::Timeout) =>
            {
                continue; // another writer owns the role: keep waiting
            }
            Err(e) => return Err(e),
        };
        witness(
            witness_file,
            &format!("claim {} {}", writer.generation(), writer.cut_at),
        );
        loop {
            batch = mix(batch);
            for _ in 0..1 + batch % 4 {
                writer.append()?;
            }
            match writer.commit() {
                Ok(version) => witness(
                    witness_file,
                    &format!(
                        "published {} {version} {}",
                        writer.generation(),
                        writer.appended()
                    ),
                ),
                Err(e) if matches!(e.downcast_ref(), Some(Error::Deposed { .. })) => {
                    witness(witness_file, &format!("deposed {}", writer.generation()));
                    break;
                }
                Err(e) => return Err(e),
            }
            // Pacing, not synchronisation: a log that grows at a readable rate.
            std::thread::sleep(Duration::from_micros(500));
        }
    }
}

/// Check what a reader accepted: generations only grow, and the records of each
/// generation are its fence then 1, 2, 3, … with none missing.
pub fn check(snapshot: &Snapshot) -> Result<(), String> {
    let mut last: Option<Record> = None;
    for &(index, record) in &snapshot.records {
        let expected_seq = match last {
            Some(prev) if prev.generation == record.generation => prev.seq + 1,
            _ => 0,
        };
        if record.seq != expected_seq
            || (record.seq == 0) != (record.payload == FENCE)
            || last.is_some_and(|prev| prev.generation > record.generation)
        {
            return Err(format!(
                "record {index} {record:?} after {last:?} (version {})",
                snapshot.version
            ));
        }
        last = Some(record);
    }
    Ok(())
}

/// A reader process: read the published log over and over; every read must pass
/// [`check`] and extend the previous one (the log is append-only). Writes `FAIL …` lines
/// and, every read, nothing else.
pub fn run_reader(data: &Path, witness_file: &Path) -> Result<(), BoxError> {
    let log = Log::open(data)?;
    let mut previous: Vec<(u64, Record)> = Vec::new();
    loop {
        let snapshot = log.read()?;
        if let Err(e) = check(&snapshot) {
            witness(witness_file, &format!("FAIL reader: {e}"));
        }
        if !snapshot.records.starts_with(&previous) {
            witness(witness_file, "FAIL reader: an accepted record changed");
        }
        previous = snapshot.records;
    }
}

/// What [`torture`] did and found.
#[derive(Debug, Default)]
pub struct Report {
    /// Owners SIGKILLed.
    pub kills: u64,
    /// Owners SIGSTOPped past their lease (and resumed deposed).
    pub pauses: u64,
    /// Claims the writers made.
    pub claims: u64,
    /// Records accepted in the final read.
    pub records: u64,
    /// Stale records the final read rejected.
    pub rejected: u64,
}

/// Children that die with their parent's harness and are always reaped.
struct Children(Vec<(&'static str, Child)>);

impl Drop for Children {
    fn drop(&mut self) {
        for (_, child) in &mut self.0 {
            let pid = nix::unistd::Pid::from_raw(child.id() as i32);
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGCONT);
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Run two writers and two readers on a log in `dir` for `run_for`, killing or pausing the
/// owner whenever it has published since the last blow; then check the log against the
/// writers' witness lines. `spawn(role)` makes the command for a `writer` or `reader`
/// process on `data` and `witness` (`dir/log.dat`, `dir/witness.txt`).
pub fn torture(
    dir: &Path,
    run_for: Duration,
    spawn: &dyn Fn(&str, &Path, &Path) -> Command,
) -> Result<Report, BoxError> {
    let data = dir.join("log.dat");
    let witness_file = dir.join("witness.txt");
    let log = Log::open(&data)?;
    let start = |role: &'static str| -> Result<(&'static str, Child), BoxError> {
        let child = spawn(role, &data, &witness_file)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()?;
        Ok((role, child))
    };
    let mut children = Children(vec![
        start("writer")?,
        start("writer")?,
        start("reader")?,
        start("reader")?,
    ]);
    let mut report = Report::default();
    let began = Instant::now();
    let mut seen = log.lock().published();
    let mut round = 0u64;
    while began.elapsed() < run_for {
        // Wait for the owner to publish something new, then strike it.
        seen = match log.lock().wait_published(seen, Duration::from_secs(10)) {
            Ok(version) => version,
            Err(e) => return Err(format!("no writer made progress: {e}").into()),
        };
        let Some(owner) = log.lock().snapshot().owner.filter(|o| o.alive) else {
            continue;
        };
        let Some(at) = children
            .0
            .iter()
            .position(|(role, c)| *role == "writer" && c.id() == owner.pid)
        else {
            continue;
        };
        let pid = nix::unistd::Pid::from_raw(owner.pid as i32);
        round += 1;
        if round % 2 == 0 {
            // SIGKILL: the standby takes over at once; start a new standby.
            nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL)?;
            let (_, mut dead) = children.0.swap_remove(at);
            dead.wait()?;
            children.0.push(start("writer")?);
            report.kills += 1;
        } else {
            // SIGSTOP past the lease: the standby takes over; resumed, the paused writer
            // appends the rest of its batch under its old generation, then learns it was
            // deposed at its commit.
            nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGSTOP)?;
            nix::sys::wait::waitpid(pid, Some(nix::sys::wait::WaitPidFlag::WUNTRACED))?;
            // The paused owner publishes nothing: the next publish is its successor's.
            let stopped_at = log.lock().published();
            seen = log
                .lock()
                .wait_published(stopped_at, Duration::from_secs(10))
                .map_err(|e| format!("nobody took over a paused writer: {e}"))?;
            nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGCONT)?;
            report.pauses += 1;
        }
    }
    drop(children); // every writer and reader killed and reaped
    let snapshot = log.read()?;
    check(&snapshot)?;
    report.records = snapshot.records.len() as u64;
    report.rejected = snapshot.rejected;
    let lines = std::fs::read_to_string(&witness_file)?;
    for line in lines.lines() {
        let words: Vec<&str> = line.split_whitespace().collect();
        let number = |i: usize| -> u64 { words[i].parse().unwrap_or(u64::MAX) };
        match words[0] {
            "FAIL" => return Err(line.into()),
            "claim" => {
                report.claims += 1;
                // The cut: nothing of an older generation is accepted at or past it.
                let (generation, cut) = (number(1), number(2));
                if let Some((index, r)) = snapshot
                    .records
                    .iter()
                    .find(|(index, r)| *index >= cut && r.generation < generation)
                {
                    return Err(format!(
                        "record {index} {r:?} of an older generation survived the cut at {cut} by generation {generation}"
                    )
                    .into());
                }
            }
            "published" => {
                // Nothing published is lost: generation G's records 0..N are all there.
                let (generation, count) = (number(1), number(3));
                let kept = snapshot
                    .records
                    .iter()
                    .filter(|(_, r)| r.generation == generation)
                    .count() as u64;
                if kept < count {
                    return Err(format!(
                        "generation {generation} published {count} records, {kept} remain"
                    )
                    .into());
                }
            }
            _ => {}
        }
    }
    Ok(report)
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    let result = match (args.get(1).map(String::as_str), args.get(2)) {
        (Some("writer"), Some(data)) => run_writer(Path::new(data), Path::new("/dev/null")),
        (Some("reader"), Some(data)) => {
            let log = Log::open(Path::new(data));
            log.and_then(|log| {
                let snapshot = log.read()?;
                check(&snapshot)?;
                println!(
                    "version {}: {} records accepted, {} stale rejected",
                    snapshot.version,
                    snapshot.records.len(),
                    snapshot.rejected
                );
                Ok(())
            })
        }
        (Some("demo"), _) => demo(),
        _ => Err("usage: fenced_log demo | writer DATA | reader DATA".into()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("fenced_log: {e}");
            ExitCode::FAILURE
        }
    }
}

/// `fenced_log demo`: the torture for 3 seconds in a temporary directory, this program's
/// own `worker` roles as its processes.
fn demo() -> Result<(), BoxError> {
    if let (Ok(role), Ok(data), Ok(witness_file)) = (
        std::env::var("FENCED_LOG_ROLE"),
        std::env::var("FENCED_LOG_DATA"),
        std::env::var("FENCED_LOG_WITNESS"),
    ) {
        nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL)?;
        let (data, witness_file) = (Path::new(&data), Path::new(&witness_file));
        return match role.as_str() {
            "writer" => run_writer(data, witness_file),
            _ => run_reader(data, witness_file),
        };
    }
    let dir = std::env::temp_dir().join(format!("fenced-log-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let exe = std::env::current_exe()?;
    let result = torture(&dir, Duration::from_secs(3), &|role, data, witness_file| {
        let mut command = Command::new(&exe);
        command
            .arg("demo")
            .env("FENCED_LOG_ROLE", role)
            .env("FENCED_LOG_DATA", data)
            .env("FENCED_LOG_WITNESS", witness_file);
        command
    });
    let _ = std::fs::remove_dir_all(&dir);
    let report = result?;
    println!(
        "{} owners killed, {} paused past their lease; {} claims; {} records accepted, {} stale records rejected; nothing published was lost, no unpublished tail was kept",
        report.kills, report.pauses, report.claims, report.records, report.rejected
    );
    Ok(())
}
