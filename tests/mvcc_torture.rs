//! MVCC witness torture (invariants 8 and 9 under real crashes).
//!
//! A writer process keeps [`SLOTS`] version slots in a data file and writes version `v`
//! into slot `v % SLOTS`, overwriting the version `v - SLOTS` that slot held only once
//! `oldest_pinned()` / `wait_readers_past(v - SLOTS + 1)` says no live reader can still
//! read it; then it publishes `v`. Reader processes (two threads each) loop: attach (pin),
//! `pread` the slot of their pinned version, verify its stamp (the version) and its
//! checksum and payload (both derived from the version, so a reader recomputes them),
//! hold the pin a random while (nothing, a yield, a nested second pin, or 1 ms), read and
//! verify the slot again, detach. The harness SIGKILLs writers (often the owner) and
//! readers at random points and restarts them; a standby writer takes over with
//! `claim_writer` and continues from `published()`.
//!
//! **The witness is the data file, not the library**: a reader that finds another
//! version's stamp in its slot read a *reclaimed* version; a stamp whose checksum or
//! payload does not match read a *torn* slot. Either is reported to the harness as a
//! `FAIL` line in the worker's own log (one `write(2)` per line, `O_APPEND`). Writers log
//! each claim (generation, `published()` at the claim) and their latest publish, so the
//! harness checks that no claim starts below what an earlier generation published
//! (invariant 9); it also samples `published()` itself between kills.
//!
//! Processes: the test binary re-executes itself (`current_exe()`, role in
//! [`ROLE_ENV`], filter `mvcc_worker_entry --exact`), so no other binary is needed; the
//! worker entry returns at once when the variable is absent. At most 5 workers + the
//! harness run at once; every child is reaped; children die with the harness
//! (`PR_SET_PDEATHSIG`).
//!
//! `cargo test --test mvcc_torture` runs the CI size (3 s and ≥ 300 kills). The long run:
//! `SHMLOCK_MVCC_TORTURE_KILLS=10000 SHMLOCK_MVCC_TORTURE_READS=1000000
//! SHMLOCK_MVCC_TORTURE_MAX_SECS=1800 cargo test --release --test mvcc_torture crash -- --nocapture`.
//! `SHMLOCK_MVCC_TORTURE_SEED` replays the harness's choices (the workers' timing still
//! varies). `a_writer_that_ignores_pins_is_caught` runs the same harness with a writer that
//! skips the pin check and requires the witness to report reclaimed or torn reads.

// Unix only for now: its harness reads its witness with `pread` and tells a SIGKILL from a
// panic by the exit signal; the portable kill/takeover/pin tests are tests/processes.rs,
// which runs on Windows (under wine) too.
#![cfg(unix)]

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use shmlock::{shm_path_for, Error, ShmLock};

/// Version slots in the data file.
const SLOTS: u64 = 4;
/// Bytes per slot: a 32-byte stamp, then the payload.
const SLOT_BYTES: usize = 4096;
/// The data file's first page: [`DATA_MAGIC`], [`SLOTS`], [`SLOT_BYTES`].
const HEADER_BYTES: u64 = 4096;
const DATA_MAGIC: u64 = u64::from_le_bytes(*b"MVCCWIT1");
/// The stamp's fourth word: a slot that was ever written carries it.
const SLOT_TAG: u64 = u64::from_le_bytes(*b"SLOTv001");
const STAMP_WORDS: usize = 4;
const PAYLOAD_WORDS: usize = SLOT_BYTES / 8 - STAMP_WORDS;

const ROLE_ENV: &str = "SHMLOCK_MVCC_ROLE";
const DATA_ENV: &str = "SHMLOCK_MVCC_DATA";
const LOG_ENV: &str = "SHMLOCK_MVCC_LOG";
const SEED_ENV: &str = "SHMLOCK_MVCC_WORKER_SEED";
const PARENT_ENV: &str = "SHMLOCK_MVCC_PARENT";
/// Set for the deliberately broken writer: it overwrites slots without looking at pins.
const BROKEN_ENV: &str = "SHMLOCK_MVCC_BROKEN_WRITER";

const WRITERS: usize = 2;
const READERS: usize = 3;
const READER_THREADS: usize = 2;
/// A reader's progress lines cover this many verified reads each (a SIGKILL loses at most
/// one unreported batch per thread: the counts are lower bounds).
const BATCH: u64 = 64;
/// A writer's progress lines cover this many publishes each.
const WRITER_BATCH: u64 = 8;
/// No reader in this workload holds a pin for more than a few milliseconds, so a writer
/// that waits this long for readers to move on has met a pin that never goes away.
const STALL: Duration = Duration::from_secs(5);

/// One torture at a time in this binary: each runs 5 workers on a 2-core machine.
static SERIAL: Mutex<()> = Mutex::new(());

// ---------------------------------------------------------------------------------------
// The data file: what a slot holds, derived from the version alone.

/// SplitMix64's finaliser: payload words and the harness's random choices.
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        mix(self.0)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

/// Payload word `i` of version `version` (versions are below 2^48).
fn payload_word(version: u64, i: usize) -> u64 {
    mix(version ^ ((i as u64) << 48))
}

/// FNV-1a over 64-bit words: the stamp's version and generation, then the payload.
fn checksum(version: u64, generation: u64, payload: impl Iterator<Item = u64>) -> u64 {
    let mut hash = 0xcbf2_9ce4_8422_2325u64;
    for word in [version, generation].into_iter().chain(payload) {
        hash ^= word;
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash
}

fn slot_offset(version: u64) -> u64 {
    HEADER_BYTES + (version % SLOTS) * SLOT_BYTES as u64
}

fn word_at(buf: &[u8], i: usize) -> u64 {
    u64::from_le_bytes(buf[i * 8..i * 8 + 8].try_into().unwrap())
}

/// Write version `version` of generation `generation` into its slot: the payload in
/// four pieces, then the stamp, so that a reader overlapping the write sees a mix.
fn write_slot(file: &File, version: u64, generation: u64) -> std::io::Result<()> {
    let mut buf = vec![0u8; SLOT_BYTES];
    for i in 0..PAYLOAD_WORDS {
        let at = (STAMP_WORDS + i) * 8;
        buf[at..at + 8].copy_from_slice(&payload_word(version, i).to_le_bytes());
    }
    let sum = checksum(
        version,
        generation,
        (0..PAYLOAD_WORDS).map(|i| payload_word(version, i)),
    );
    for (i, word) in [version, generation, sum, SLOT_TAG].into_iter().enumerate() {
        buf[i * 8..i * 8 + 8].copy_from_slice(&word.to_le_bytes());
    }
    let offset = slot_offset(version);
    let stamp = STAMP_WORDS * 8;
    let piece = (SLOT_BYTES - stamp).div_ceil(4);
    let mut at = stamp;
    while at < SLOT_BYTES {
        let end = (at + piece).min(SLOT_BYTES);
        file.write_all_at(&buf[at..end], offset + at as u64)?;
        at = end;
    }
    file.write_all_at(&buf[..stamp], offset)
}

/// Read the slot of `pinned` and check it holds exactly that version.
fn verify_slot(file: &File, pinned: u64, buf: &mut [u8]) -> Result<(), String> {
    file.read_exact_at(buf, slot_offset(pinned))
        .map_err(|e| format!("pread of slot {}: {e}", pinned % SLOTS))?;
    let (version, generation, sum, tag) = (
        word_at(buf, 0),
        word_at(buf, 1),
        word_at(buf, 2),
        word_at(buf, 3),
    );
    if version != pinned {
        return Err(format!(
            "reclaimed read: pinned version {pinned}, but slot {} holds version {version} \
             (generation {generation})",
            pinned % SLOTS
        ));
    }
    let payload = (0..PAYLOAD_WORDS).map(|i| word_at(buf, STAMP_WORDS + i));
    if tag != SLOT_TAG || sum != checksum(version, generation, payload) {
        return Err(format!(
            "torn read: version {pinned}'s slot {} fails its checksum (tag {tag:#x})",
            pinned % SLOTS
        ));
    }
    if let Some(i) =
        (0..PAYLOAD_WORDS).find(|&i| word_at(buf, STAMP_WORDS + i) != payload_word(pinned, i))
    {
        return Err(format!(
            "torn read: version {pinned}'s slot {} has a foreign payload word {i}",
            pinned % SLOTS
        ));
    }
    Ok(())
}

fn create_data_file(path: &Path) {
    let file = File::create(path).unwrap();
    let mut header = vec![0u8; HEADER_BYTES as usize];
    for (i, word) in [DATA_MAGIC, SLOTS, SLOT_BYTES as u64]
        .into_iter()
        .enumerate()
    {
        header[i * 8..i * 8 + 8].copy_from_slice(&word.to_le_bytes());
    }
    file.write_all_at(&header, 0).unwrap();
    file.set_len(HEADER_BYTES + SLOTS * SLOT_BYTES as u64)
        .unwrap();
}

// ---------------------------------------------------------------------------------------
// Workers: the same binary, re-executed with a role.

/// A worker's log: one `write(2)` per line, appended (the harness reads it after reaping).
struct Log(File);

impl Log {
    fn line(&self, text: &str) {
        let line = format!("{text}\n");
        // A failed log write cannot be reported anywhere else; the harness then sees no
        // progress from this worker, and the run's minimum reads catch that.
        let _ = (&self.0).write_all(line.as_bytes());
    }
    fn fail(&self, text: &str) {
        self.line(&format!("FAIL {text}"));
    }
}

/// The entry of every worker process; returns at once in a normal test run.
#[test]
fn mvcc_worker_entry() {
    let Ok(role) = std::env::var(ROLE_ENV) else {
        return;
    };
    let env = |name: &str| std::env::var(name).unwrap_or_else(|_| panic!("{name} is not set"));
    // Die with the harness, and make sure it had not already died before we asked.
    nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL).unwrap();
    if nix::unistd::getppid().as_raw().to_string() != env(PARENT_ENV) {
        return;
    }
    let log = Log(OpenOptions::new()
        .append(true)
        .create(true)
        .open(env(LOG_ENV))
        .unwrap());
    let data = PathBuf::from(env(DATA_ENV));
    let seed: u64 = env(SEED_ENV).parse().unwrap();
    match role.as_str() {
        "writer" => run_writer(&data, seed, std::env::var_os(BROKEN_ENV).is_some(), &log),
        "reader" => run_reader(&data, seed, &log),
        other => log.fail(&format!("unknown role {other}")),
    }
}

/// Claim (waiting as a standby while another writer owns), then write and publish
/// forever from `published() + 1`, overwriting a slot only past the oldest pin.
fn run_writer(data: &Path, seed: u64, broken: bool, log: &Log) {
    let mut rng = Rng(seed);
    let lock = match ShmLock::open(shm_path_for(data)) {
        Ok(lock) => lock,
        Err(e) => return log.fail(&format!("writer open: {e}")),
    };
    let file = match OpenOptions::new().read(true).write(true).open(data) {
        Ok(file) => file,
        Err(e) => return log.fail(&format!("writer data open: {e}")),
    };
    let guard = loop {
        match lock.claim_writer(Duration::from_secs(1)) {
            Ok(guard) => break guard,
            Err(Error::ClaimTimeout { .. }) => continue,
            Err(e) => return log.fail(&format!("claim_writer: {e}")),
        }
    };
    let generation = guard.generation();
    // Everything this claim may overwrite is re-derived from the page: the published
    // version and, per write, the oldest pin.
    let mut version = lock.published();
    log.line(&format!(
        "claim {generation} {version} {}",
        u8::from(guard.takeover().is_some())
    ));
    let (mut published, mut waits) = (0u64, 0u64);
    loop {
        let next = version + 1;
        // Slot `next % SLOTS` holds `next - SLOTS`: no reader may pin it (or anything
        // older, which would read this slot too) when we overwrite it.
        if next > SLOTS && !broken {
            let past = next - SLOTS + 1;
            let free = rng.below(4) != 0
                && match lock.oldest_pinned() {
                    None => true,
                    Some(oldest) => oldest >= past,
                };
            if !free {
                waits += 1;
                while let Err(e) = guard.wait_readers_past(past, STALL) {
                    log.fail(&format!("wait_readers_past({past}) after {STALL:?}: {e}"));
                }
            }
        }
        if let Err(e) = write_slot(&file, next, generation) {
            return log.fail(&format!("pwrite of version {next}: {e}"));
        }
        if let Err(e) = guard.publish(next) {
            return log.fail(&format!("publish({next}) by generation {generation}: {e}"));
        }
        version = next;
        published += 1;
        if published % WRITER_BATCH == 0 {
            if let Err(e) = guard.heartbeat() {
                log.fail(&format!("heartbeat of generation {generation}: {e}"));
            }
            log.line(&format!("pub {published} {version} {generation} {waits}"));
            (published, waits) = (0, 0);
        }
    }
}

/// Two threads, each: attach, read and verify, hold the pin a while, verify again, detach.
fn run_reader(data: &Path, seed: u64, log: &Log) {
    let lock = match ShmLock::open(shm_path_for(data)) {
        Ok(lock) => lock,
        Err(e) => return log.fail(&format!("reader open: {e}")),
    };
    let file = match File::open(data) {
        Ok(file) => file,
        Err(e) => return log.fail(&format!("reader data open: {e}")),
    };
    let mut header = [0u8; 8];
    if file.read_exact_at(&mut header, 0).is_err() || u64::from_le_bytes(header) != DATA_MAGIC {
        return log.fail("the data file has no header");
    }
    std::thread::scope(|scope| {
        for thread in 0..READER_THREADS as u64 {
            let (lock, file) = (&lock, &file);
            scope.spawn(move || read_loop(lock, file, Rng(mix(seed ^ thread)), log));
        }
    });
}

fn read_loop(lock: &ShmLock, file: &File, mut rng: Rng, log: &Log) {
    let mut buf = vec![0u8; SLOT_BYTES];
    let mut second = vec![0u8; SLOT_BYTES];
    let (mut last_pin, mut verified) = (0u64, 0u64);
    loop {
        let guard = match lock.attach_reader() {
            Ok(guard) => guard,
            Err(e) => return log.fail(&format!("attach_reader: {e}")),
        };
        let pinned = guard.version();
        if pinned == 0 {
            drop(guard);
            match lock.wait_published(0, Duration::from_millis(100)) {
                Ok(_) | Err(Error::Timeout { .. }) => continue,
                Err(e) => return log.fail(&format!("wait_published: {e}")),
            }
        }
        if pinned < last_pin {
            log.fail(&format!(
                "pinned version {pinned} after {last_pin}: published went back"
            ));
        }
        last_pin = pinned;
        let mut result = verify_slot(file, pinned, &mut buf);
        // Hold the pin: the writer laps the other slots meanwhile.
        match rng.below(64) {
            0 => std::thread::sleep(Duration::from_millis(1)),
            1..=4 => std::thread::yield_now(),
            5..=12 => {
                // A second, newer pin in the same thread; the older one is dropped first,
                // so the process's oldest pin is raised under the newer one.
                match lock.attach_reader() {
                    Ok(newer) => {
                        let v = newer.version();
                        if v < pinned {
                            log.fail(&format!("nested pin {v} is older than {pinned}"));
                        }
                        let nested = verify_slot(file, v, &mut second);
                        if rng.below(2) == 0 {
                            result = result.and(verify_slot(file, pinned, &mut buf));
                            drop(guard);
                            std::thread::yield_now();
                            result = result.and(nested).and(verify_slot(file, v, &mut second));
                            drop(newer);
                            report(&mut verified, &result, log);
                            continue;
                        }
                        result = result.and(nested);
                        drop(newer);
                    }
                    Err(e) => return log.fail(&format!("nested attach_reader: {e}")),
                }
            }
            _ => {}
        }
        result = result.and(verify_slot(file, pinned, &mut buf));
        drop(guard);
        report(&mut verified, &result, log);
        if rng.below(256) == 0 {
            // A reader that waits for the next version (woken by the writer's publish).
            match lock.wait_published(pinned, Duration::from_millis(20)) {
                Ok(v) if v <= pinned => log.fail(&format!("wait_published({pinned}) gave {v}")),
                Ok(_) | Err(Error::Timeout { .. }) => {}
                Err(e) => return log.fail(&format!("wait_published: {e}")),
            }
        }
    }
}

/// Report a failed read at once; count a verified one and report progress per [`BATCH`].
fn report(verified: &mut u64, result: &Result<(), String>, log: &Log) {
    match result {
        Err(e) => log.fail(e),
        Ok(()) => {
            *verified += 1;
            if *verified == BATCH {
                log.line(&format!("ok {BATCH}"));
                *verified = 0;
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// The harness.

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Role {
    Writer,
    Reader,
}

struct Worker {
    role: Role,
    child: Child,
    log: PathBuf,
}

/// The running workers; dropping it kills and reaps every one of them.
struct Workers {
    list: Vec<Worker>,
    dir: PathBuf,
    data: PathBuf,
    spawned: u64,
    broken: bool,
    seed: u64,
}

impl Workers {
    fn spawn(&mut self, role: Role) {
        self.spawned += 1;
        let log = self.dir.join(format!("worker-{}.log", self.spawned));
        let stderr = OpenOptions::new()
            .append(true)
            .create(true)
            .open(&log)
            .unwrap();
        let mut command = Command::new(std::env::current_exe().unwrap());
        command
            .args([
                "mvcc_worker_entry",
                "--exact",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(
                ROLE_ENV,
                match role {
                    Role::Writer => "writer",
                    Role::Reader => "reader",
                },
            )
            .env(DATA_ENV, &self.data)
            .env(LOG_ENV, &log)
            .env(SEED_ENV, mix(self.seed ^ self.spawned).to_string())
            .env(PARENT_ENV, std::process::id().to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr);
        if self.broken {
            command.env(BROKEN_ENV, "1");
        } else {
            command.env_remove(BROKEN_ENV);
        }
        let child = command.spawn().unwrap();
        self.list.push(Worker { role, child, log });
    }
}

impl Drop for Workers {
    fn drop(&mut self) {
        for worker in &mut self.list {
            let _ = worker.child.kill();
            let _ = worker.child.wait();
        }
    }
}

#[derive(Clone, Copy, Debug)]
struct Config {
    /// Run at least this long …
    secs: f64,
    /// … and until this many kills …
    min_kills: u64,
    /// … and this many verified reads, but never longer than `max_secs`.
    min_reads: u64,
    max_secs: f64,
    /// Kills are paced by a random delay below this.
    pace_us: u64,
    broken: bool,
    /// Stop at the first failure (the broken-writer run).
    stop_on_failure: bool,
    seed: u64,
}

#[derive(Default, Debug)]
struct Report {
    verified_reads: u64,
    publishes: u64,
    reclamation_waits: u64,
    kills: u64,
    writer_kills: u64,
    owner_kills: u64,
    reader_kills: u64,
    /// (generation, published() at the claim, was a takeover)
    claims: Vec<(u64, u64, bool)>,
    /// (generation, latest version it reported publishing)
    latest_publish: Vec<(u64, u64)>,
    failures: u64,
    messages: Vec<String>,
    published_at_end: u64,
    page_takeovers: u64,
    elapsed: Duration,
}

impl Report {
    fn fail(&mut self, message: String) {
        self.failures += 1;
        if self.messages.len() < 20 {
            self.messages.push(message);
        }
    }

    /// Fold in a reaped worker's log.
    fn harvest(&mut self, worker: &Worker, killed: bool) {
        let text = std::fs::read(&worker.log).unwrap_or_default();
        let _ = std::fs::remove_file(&worker.log);
        let text = String::from_utf8_lossy(&text);
        let mut other = Vec::new();
        for line in text.lines() {
            let words: Vec<&str> = line.split_whitespace().collect();
            let num = |i: usize| words.get(i).and_then(|w| w.parse::<u64>().ok());
            match words.first().copied() {
                Some("ok") => self.verified_reads += num(1).unwrap_or(0),
                Some("pub") => {
                    if let (Some(n), Some(last), Some(generation), Some(waits)) =
                        (num(1), num(2), num(3), num(4))
                    {
                        self.publishes += n;
                        self.reclamation_waits += waits;
                        self.latest_publish.push((generation, last));
                    }
                }
                Some("claim") => {
                    if let (Some(generation), Some(at), Some(takeover)) = (num(1), num(2), num(3)) {
                        self.claims.push((generation, at, takeover == 1));
                    }
                }
                // A line cut by the SIGKILL is the log's last; a cut FAIL still counts.
                Some(w) if w.starts_with('F') => self.fail(format!(
                    "{:?} pid {}: {line}",
                    worker.role,
                    worker.child.id()
                )),
                Some(_) => other.push(line.to_string()),
                None => {}
            }
        }
        if !killed {
            self.fail(format!(
                "{:?} pid {} exited on its own; its log: {other:?}",
                worker.role,
                worker.child.id()
            ));
        }
    }

    /// Invariant 9 across claims: no claim starts below what an earlier generation
    /// published or saw at its own claim; generations never repeat.
    fn check_claims(&mut self) {
        let mut claims = self.claims.clone();
        claims.sort_unstable();
        let mut publishes = self.latest_publish.clone();
        publishes.sort_unstable();
        let mut floor = (0u64, 0u64); // (version, generation that made it the floor)
        let mut next_publish = publishes.iter().peekable();
        let mut previous: Option<u64> = None;
        for &(generation, at, _) in &claims {
            if previous == Some(generation) {
                self.fail(format!("generation {generation} was claimed twice"));
            }
            previous = Some(generation);
            while let Some(&&(g, last)) = next_publish.peek() {
                if g >= generation {
                    break;
                }
                if last > floor.0 {
                    floor = (last, g);
                }
                next_publish.next();
            }
            if at < floor.0 {
                self.fail(format!(
                    "generation {generation} claimed at published {at}, below version {} \
                     published by generation {}",
                    floor.0, floor.1
                ));
            }
            if at > floor.0 {
                floor = (at, generation);
            }
        }
    }
}

fn env_num(name: &str) -> Option<u64> {
    let value = std::env::var(name).ok()?;
    Some(
        value
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("{name}={value:?} is not a number")),
    )
}

fn run_torture(config: Config) -> Report {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("store.db");
    create_data_file(&data);
    let lock = ShmLock::open(shm_path_for(&data)).unwrap();
    let mut rng = Rng(config.seed);
    let mut workers = Workers {
        list: Vec::new(),
        dir: dir.path().to_path_buf(),
        data: data.clone(),
        spawned: 0,
        broken: config.broken,
        seed: config.seed,
    };
    for _ in 0..WRITERS {
        workers.spawn(Role::Writer);
    }
    for _ in 0..READERS {
        workers.spawn(Role::Reader);
    }
    let mut report = Report::default();
    let start = Instant::now();
    let mut last_published = 0u64;
    let mut last_progress = Instant::now();
    let verbose = std::env::var_os("SHMLOCK_MVCC_TORTURE_KILLS").is_some();
    loop {
        let elapsed = start.elapsed().as_secs_f64();
        let done = elapsed >= config.secs
            && report.kills >= config.min_kills
            && report.verified_reads >= config.min_reads;
        if done || elapsed >= config.max_secs || (config.stop_on_failure && report.failures > 0) {
            break;
        }
        if verbose && last_progress.elapsed() >= Duration::from_secs(30) {
            last_progress = Instant::now();
            eprintln!(
                "mvcc torture: {elapsed:.0} s, {} kills, {} verified reads, {} claims, \
                 published {last_published}, {} failures",
                report.kills,
                report.verified_reads,
                report.claims.len(),
                report.failures
            );
        }
        // The workload's pace, not a synchronisation.
        std::thread::sleep(Duration::from_micros(rng.below(config.pace_us)));

        // Workers never exit on their own: one that did hit an error (or a panic).
        let mut i = 0;
        while i < workers.list.len() {
            if let Ok(Some(_)) = workers.list[i].child.try_wait() {
                let worker = workers.list.swap_remove(i);
                report.harvest(&worker, false);
                workers.spawn(worker.role);
            } else {
                i += 1;
            }
        }

        let published = lock.published();
        if published < last_published {
            report.fail(format!(
                "published went back from {last_published} to {published}"
            ));
        }
        last_published = published;

        // The victim: the owner a third of the time (it dies at every point of its loop),
        // otherwise anyone (a reader mid-pin, a standby mid-claim, a fresh worker mid-open).
        let owner = lock.snapshot().owner.map(|owner| owner.pid);
        let index =
            match owner.and_then(|pid| workers.list.iter().position(|w| w.child.id() == pid)) {
                Some(index) if rng.below(3) == 0 => index,
                _ => rng.below(workers.list.len() as u64) as usize,
            };
        let mut worker = workers.list.swap_remove(index);
        let _ = worker.child.kill();
        let status = worker.child.wait().unwrap();
        let killed = status.signal() == Some(nix::libc::SIGKILL);
        report.kills += 1;
        match worker.role {
            Role::Writer if owner == Some(worker.child.id()) => {
                report.writer_kills += 1;
                report.owner_kills += 1;
            }
            Role::Writer => report.writer_kills += 1,
            Role::Reader => report.reader_kills += 1,
        }
        report.harvest(&worker, killed);
        workers.spawn(worker.role);
    }
    for mut worker in std::mem::take(&mut workers.list) {
        let _ = worker.child.kill();
        let status = worker.child.wait().unwrap();
        report.harvest(&worker, status.signal() == Some(nix::libc::SIGKILL));
    }
    report.elapsed = start.elapsed();
    report.check_claims();

    // After the massacre: no pin survives its process, published kept its value, and the
    // published version's slot holds exactly that version.
    let published = lock.published();
    if published < last_published {
        report.fail(format!(
            "published went back from {last_published} to {published}"
        ));
    }
    report.published_at_end = published;
    if let Some(oldest) = lock.oldest_pinned() {
        report.fail(format!(
            "every reader is dead, yet version {oldest} is still pinned"
        ));
    }
    let snapshot = lock.snapshot();
    if snapshot.reader_count != 0 {
        report.fail(format!(
            "every reader is dead, yet {} are counted",
            snapshot.reader_count
        ));
    }
    report.page_takeovers = snapshot.takeovers;
    if published > 0 {
        let file = File::open(&data).unwrap();
        let mut buf = vec![0u8; SLOT_BYTES];
        if let Err(e) = verify_slot(&file, published, &mut buf) {
            report.fail(format!("after the run, the published version's slot: {e}"));
        }
    }
    report
}

fn summary(config: &Config, report: &Report) -> String {
    // Owners never release, so every claim after the first took over a killed owner. The
    // claimant reports a takeover only when it found the dead owner itself; when another
    // process reaped the dead owner's member entry first (a new worker registering into
    // it), the claimant found the owner word already freed.
    let reported = report.claims.iter().filter(|c| c.2).count();
    format!(
        "seed {}: {:.1} s, {} verified reads, {} publishes (published {} at the end), \
         {} reclamation waits, {} kills ({} writers of which {} owners, {} readers), \
         {} claims = {} takeovers of a killed owner ({} found the owner dead themselves; \
         the page counts {}), {} failures",
        config.seed,
        report.elapsed.as_secs_f64(),
        report.verified_reads,
        report.publishes,
        report.published_at_end,
        report.reclamation_waits,
        report.kills,
        report.writer_kills,
        report.owner_kills,
        report.reader_kills,
        report.claims.len(),
        report.claims.len().saturating_sub(1),
        reported,
        report.page_takeovers,
        report.failures
    )
}

fn seed() -> u64 {
    env_num("SHMLOCK_MVCC_TORTURE_SEED").unwrap_or_else(|| {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos() as u64;
        mix(nanos ^ u64::from(std::process::id()))
    })
}

/// Readers never read a reclaimed or torn version while writers and readers are killed
/// at random and writers take over from `published()`.
#[test]
fn crash_torture_no_reclaimed_or_torn_reads() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let config = Config {
        secs: env_num("SHMLOCK_MVCC_TORTURE_SECS").map_or(3.0, |s| s as f64),
        min_kills: env_num("SHMLOCK_MVCC_TORTURE_KILLS").unwrap_or(300),
        min_reads: env_num("SHMLOCK_MVCC_TORTURE_READS").unwrap_or(1000),
        max_secs: env_num("SHMLOCK_MVCC_TORTURE_MAX_SECS").map_or(120.0, |s| s as f64),
        pace_us: 4000,
        broken: false,
        stop_on_failure: false,
        seed: seed(),
    };
    eprintln!(
        "mvcc torture: seed {} (SHMLOCK_MVCC_TORTURE_SEED)",
        config.seed
    );
    let report = run_torture(config);
    let summary = summary(&config, &report);
    eprintln!("mvcc torture: {summary}");
    assert_eq!(
        report.failures, 0,
        "{summary}\nfirst failures: {:#?}",
        report.messages
    );
    assert!(
        report.kills >= config.min_kills && report.verified_reads >= config.min_reads,
        "the run ended at SHMLOCK_MVCC_TORTURE_MAX_SECS before its minimums: {summary}"
    );
    assert!(report.claims.len() > 1, "no takeover happened: {summary}");
    assert!(
        report.published_at_end > SLOTS,
        "the writers never lapped the slots: {summary}"
    );
}

/// The witness can fail: a writer that overwrites slots without waiting for pins is
/// caught reading reclaimed (or torn) versions.
#[test]
fn a_writer_that_ignores_pins_is_caught() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let config = Config {
        // Until the first failure, for at most 30 s.
        secs: 30.0,
        min_kills: 0,
        min_reads: 0,
        max_secs: 30.0,
        pace_us: 4000,
        broken: true,
        stop_on_failure: true,
        seed: seed(),
    };
    let report = run_torture(config);
    let summary = summary(&config, &report);
    eprintln!(
        "mvcc torture, broken writer: {summary}\nfirst failures: {:#?}",
        report.messages
    );
    assert!(
        report
            .messages
            .iter()
            .any(|m| m.contains("reclaimed read") || m.contains("torn read")),
        "the witness missed a writer that ignores pins: {summary}"
    );
}
