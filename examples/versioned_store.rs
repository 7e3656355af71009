//! A small multi-process **versioned store** built only on shmlock's snapshot API: one
//! writer process commits versions, reader processes read consistent snapshots, and the
//! writer reuses the space of an old version only once no reader can still read it.
//! Copy it as the skeleton of an engine's MVCC.
//!
//! ```sh
//! cargo run --example versioned_store                  # the demo: spawns itself (below)
//! cargo run --example versioned_store -- writer /tmp/bank.db      # by hand, terminal 1
//! cargo run --example versioned_store -- reader /tmp/bank.db      # terminal 2 (and 3 …)
//! cargo run --example versioned_store -- pin /tmp/bank.db         # a long read: the
//!                                   # writer soon waits for it; Ctrl-C it and it goes on
//! cargo run --example versioned_store -- get /tmp/bank.db         # one consistent read
//! shmlock watch /tmp/bank.db                                      # published, oldest pin
//! ```
//!
//! `writer`, `reader` and `pin` run until Ctrl-C, or for `--secs N`.
//!
//! # The store
//!
//! The data file holds a header page and [`SLOTS`] version slots. A version is the whole
//! state (a table of [`ACCOUNTS`] balances; every commit moves money between two accounts,
//! so the total never changes); version `v` lives in slot `v % SLOTS`, stamped with its
//! version, the writer's generation (its fencing token) and a checksum. A real engine keeps
//! pages and a free list instead of whole copies, but it reuses space by the same rule.
//!
//! # The protocol
//!
//! **Readers: pin → read → unpin.** `attach_reader()` pins the latest published version
//! (`ReaderGuard::version()`); while the guard lives, no writer that asks shmlock reuses
//! that version's space, so the reader can take its time. Drop the guard when done: the
//! pin goes with it, and so it does when the reader process dies (the kernel drops its
//! lock), so a crashed reader never holds the writer back for long.
//!
//! **The writer: write → publish → wait_readers_past → reuse.** To commit `v` it writes `v`
//! into space no reader can read (slot `v % SLOTS` held `v - SLOTS`; it waits until
//! `wait_readers_past(v - SLOTS + 1)` says no live reader pins `v - SLOTS` or older),
//! records the commit in its data file, and only then calls `publish(v)`: readers that
//! attach from then on see `v`. `publish` is the commit point readers follow: what a dead
//! writer wrote but did not publish is invisible and simply overwritten by its successor.
//!
//! **A successor** (`claim_writer` waits for the owner to die or release) derives
//! everything from what is durable and shared: it continues from the newer of
//! `published()` and the data file's commit record, and asks shmlock about pins before each
//! reuse; it remembers nothing of its predecessor. The data file also records the highest
//! generation it stamped, passed back as `Options::generation_floor` so fencing tokens never
//! repeat even if the lock file is lost.

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use shmlock::{Error, Options, ShmLock, WriterGuard};

/// Version slots: the writer can run this many versions ahead of the oldest reader.
const SLOTS: u64 = 4;
/// Bytes per slot (and of the header page).
const SLOT_BYTES: usize = 4096;
/// Accounts in the table; every version's balances sum to `ACCOUNTS * INITIAL_BALANCE`.
const ACCOUNTS: usize = 500;
const INITIAL_BALANCE: u64 = 1_000;
const MAGIC: u64 = u64::from_le_bytes(*b"VSTORE01");
/// Words before the balances in a slot: version, generation, checksum, account count.
const STAMP_WORDS: usize = 4;
/// The header's words: magic, slots, slot bytes, accounts, committed version, generation.
const HEADER_COMMITTED: usize = 4;

// ---------------------------------------------------------------------------------------
// Output that survives `| head`: a closed stdout stops the printing, not the program (Rust
// ignores SIGPIPE, so `println!` would panic on EPIPE).

static STDOUT_GONE: AtomicBool = AtomicBool::new(false);

fn say(line: std::fmt::Arguments) {
    if STDOUT_GONE.load(Ordering::Relaxed) {
        return;
    }
    let mut out = std::io::stdout().lock();
    if out
        .write_fmt(line)
        .and_then(|()| out.write_all(b"\n"))
        .and_then(|()| out.flush())
        .is_err()
    {
        STDOUT_GONE.store(true, Ordering::Relaxed);
    }
}

macro_rules! say {
    ($($arg:tt)*) => { say(format_args!($($arg)*)) };
}

type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

// ---------------------------------------------------------------------------------------
// The store: a data file and its lock file.

/// One version of the store, as read from its slot.
struct Version {
    version: u64,
    generation: u64,
    balances: Vec<u64>,
}

impl Version {
    fn initial() -> Version {
        Version {
            version: 0,
            generation: 0,
            balances: vec![INITIAL_BALANCE; ACCOUNTS],
        }
    }

    fn encode(&self) -> Vec<u8> {
        let mut words = vec![self.version, self.generation, 0, ACCOUNTS as u64];
        words.extend_from_slice(&self.balances);
        words[2] = checksum(&words);
        let mut bytes: Vec<u8> = words.iter().flat_map(|w| w.to_le_bytes()).collect();
        bytes.resize(SLOT_BYTES, 0);
        bytes
    }

    /// Decode a slot that must hold `expected`; any mismatch means the slot was reused
    /// (or torn) under the reader — exactly what pins prevent.
    fn decode(bytes: &[u8], expected: u64) -> std::result::Result<Version, String> {
        let words: Vec<u64> = bytes[..(STAMP_WORDS + ACCOUNTS) * 8]
            .chunks_exact(8)
            .map(|c| u64::from_le_bytes(c.try_into().unwrap()))
            .collect();
        if words[0] != expected {
            return Err(format!("slot holds version {}, not {expected}", words[0]));
        }
        let mut unsummed = words.clone();
        unsummed[2] = 0;
        if words[2] != checksum(&unsummed) || words[3] != ACCOUNTS as u64 {
            return Err(format!("version {expected}'s slot fails its checksum"));
        }
        let balances = words[STAMP_WORDS..].to_vec();
        let total: u64 = balances.iter().sum();
        if total != ACCOUNTS as u64 * INITIAL_BALANCE {
            return Err(format!("version {expected} is inconsistent: total {total}"));
        }
        Ok(Version {
            version: words[0],
            generation: words[1],
            balances,
        })
    }
}

/// FNV-1a over 64-bit words (a real engine would use a CRC).
fn checksum(words: &[u64]) -> u64 {
    words.iter().fold(0xcbf2_9ce4_8422_2325u64, |hash, &word| {
        (hash ^ word).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

fn slot_offset(version: u64) -> u64 {
    SLOT_BYTES as u64 * (1 + version % SLOTS)
}

struct Store {
    data: PathBuf,
    file: File,
    lock: ShmLock,
}

impl Store {
    /// Create the data file if it is missing.
    fn create(data: &Path) -> Result<()> {
        let file = match OpenOptions::new().write(true).create_new(true).open(data) {
            Ok(file) => file,
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => return Ok(()),
            Err(e) => return Err(format!("{}: cannot create it: {e}", data.display()).into()),
        };
        let header = [MAGIC, SLOTS, SLOT_BYTES as u64, ACCOUNTS as u64, 0, 0];
        let bytes: Vec<u8> = header.iter().flat_map(|w| w.to_le_bytes()).collect();
        file.write_all_at(&bytes, 0)?;
        file.set_len(SLOT_BYTES as u64 * (1 + SLOTS))?;
        Ok(())
    }

    /// Open the store and its lock file (`<data>-shm`, created beside it when missing, with
    /// the data file's permissions). Claims through this handle get a generation above
    /// every one the data file recorded.
    fn open(data: &Path, writable: bool) -> Result<Store> {
        let file = OpenOptions::new()
            .read(true)
            .write(writable)
            .open(data)
            .map_err(|e| {
                format!(
                    "{}: {e} (run the writer first to create it)",
                    data.display()
                )
            })?;
        if header_word(&file, 0)? != MAGIC {
            return Err(format!("{}: not a versioned store", data.display()).into());
        }
        let options = Options::new().generation_floor(header_word(&file, HEADER_COMMITTED + 1)?);
        shmlock::set_provisioning_enabled(true); // this example may create the lock file
        let lock = ShmLock::provision_with(data, &options)?;
        Ok(Store {
            data: data.to_path_buf(),
            file,
            lock,
        })
    }

    /// A read transaction: pin the latest published version, read it, unpin.
    fn read(&self) -> Result<Option<Version>> {
        let pin = self.lock.attach_reader()?; // pin
        let version = pin.version();
        if version == 0 {
            return Ok(None); // nothing committed yet
        }
        let snapshot = self.read_slot(version)?; // read: the slot cannot be reused now
        drop(pin); // unpin: from here on, the writer may reuse the slot
        Ok(Some(snapshot))
    }

    fn read_slot(&self, version: u64) -> Result<Version> {
        let mut bytes = vec![0u8; SLOT_BYTES];
        self.file.read_exact_at(&mut bytes, slot_offset(version))?;
        Version::decode(&bytes, version).map_err(|e| format!("{}: {e}", self.data.display()).into())
    }
}

fn header_word(file: &File, index: usize) -> Result<u64> {
    let mut word = [0u8; 8];
    file.read_exact_at(&mut word, index as u64 * 8)?;
    Ok(u64::from_le_bytes(word))
}

/// The writer role, held: commits versions.
struct Writer<'a> {
    store: &'a Store,
    guard: WriterGuard,
    latest: Version,
    /// Reuses that had to wait for readers, and how long they waited in all.
    waits: u64,
    waited: Duration,
}

impl<'a> Writer<'a> {
    /// Claim the writer role (waiting while another process holds it) and find where the
    /// store stands: the newer of the published version and the data file's commit record.
    fn claim(store: &'a Store) -> Result<Writer<'a>> {
        let guard = loop {
            match store.lock.claim_writer(Duration::from_secs(1)) {
                Ok(guard) => break guard,
                Err(Error::WriterBusy { pid, generation }) => {
                    say!(
                        "writer {}: waiting; pid {pid} writes (generation {generation})",
                        std::process::id()
                    )
                }
                Err(e) => return Err(e.into()),
            }
        };
        let committed = header_word(&store.file, HEADER_COMMITTED)?.max(store.lock.published());
        let latest = match committed {
            0 => Version::initial(),
            version => store.read_slot(version)?,
        };
        Ok(Writer {
            store,
            guard,
            latest,
            waits: 0,
            waited: Duration::ZERO,
        })
    }

    /// Commit the next version: `change` edits a copy of the latest one.
    fn commit(&mut self, change: impl FnOnce(&mut [u64])) -> Result<u64> {
        let version = self.latest.version + 1;
        // Reuse: slot `version % SLOTS` holds `version - SLOTS`. Wait until no live reader
        // pins that version or an older one (a reader of an older one reads this slot too).
        if version > SLOTS {
            let past = version - SLOTS + 1;
            if self
                .store
                .lock
                .oldest_pinned()
                .is_some_and(|oldest| oldest < past)
            {
                let start = Instant::now();
                while let Err(e) = self.guard.wait_readers_past(past, Duration::from_secs(1)) {
                    // A long read holds us back (a dead reader never does for long).
                    say!("writer {}: {e}", std::process::id());
                }
                self.waits += 1;
                self.waited += start.elapsed();
            }
        }
        let mut next = Version {
            version,
            generation: self.guard.generation(),
            balances: self.latest.balances.clone(),
        };
        change(&mut next.balances);
        // Write: into space no reader can see. (An engine that must survive power loss
        // calls `sync_data()` here, before the commit record and the publish.)
        self.store
            .file
            .write_all_at(&next.encode(), slot_offset(version))?;
        let record: Vec<u8> = [version, next.generation]
            .iter()
            .flat_map(|w| w.to_le_bytes())
            .collect();
        self.store
            .file
            .write_all_at(&record, HEADER_COMMITTED as u64 * 8)?;
        // Publish: the commit point. Fails with `Deposed` if another writer took over.
        self.guard.publish(version)?;
        self.latest = next;
        Ok(version)
    }
}

// ---------------------------------------------------------------------------------------
// The roles.

fn run_writer(data: &Path, secs: Option<f64>) -> Result<()> {
    Store::create(data)?;
    let store = Store::open(data, true)?;
    let mut writer = Writer::claim(&store)?;
    let me = std::process::id();
    let first = writer.latest.version;
    say!(
        "writer {me}: generation {}{}, continuing from version {first}",
        writer.guard.generation(),
        if writer.guard.takeover().is_some() {
            " (took over a dead writer)"
        } else {
            ""
        },
    );
    let mut random = u64::from(me) | 1;
    let start = Instant::now();
    let mut progress = Instant::now();
    while secs.is_none_or(|s| start.elapsed().as_secs_f64() < s) {
        // xorshift: which accounts, how much.
        random ^= random << 13;
        random ^= random >> 7;
        random ^= random << 17;
        let (from, to) = (
            (random % ACCOUNTS as u64) as usize,
            ((random >> 20) % ACCOUNTS as u64) as usize,
        );
        writer.commit(|balances| {
            let amount = (random >> 40) % 10;
            let amount = amount.min(balances[from]);
            balances[from] -= amount;
            balances[to] += amount;
        })?;
        if progress.elapsed() >= Duration::from_secs(1) {
            progress = Instant::now();
            say!(
                "writer {me}: at version {}, {} reuses waited for readers so far",
                writer.latest.version,
                writer.waits
            );
        }
    }
    let last = writer.latest.version;
    say!(
        "writer {me}: published versions {}..={last} ({}), {} reuses waited for readers ({:.1} ms in all); releasing",
        first + 1,
        last - first,
        writer.waits,
        writer.waited.as_secs_f64() * 1e3
    );
    writer.guard.release()?;
    Ok(())
}

fn run_reader(data: &Path, secs: Option<f64>) -> Result<()> {
    let store = Store::open(data, false)?;
    let me = std::process::id();
    let start = Instant::now();
    let (mut reads, mut empty, mut lowest, mut highest) = (0u64, 0u64, u64::MAX, 0u64);
    while secs.is_none_or(|s| start.elapsed().as_secs_f64() < s) {
        match store.read()? {
            Some(snapshot) => {
                reads += 1;
                lowest = lowest.min(snapshot.version);
                highest = highest.max(snapshot.version);
            }
            None => {
                // Nothing committed yet: sleep until the writer publishes.
                empty += 1;
                match store.lock.wait_published(0, Duration::from_secs(1)) {
                    Ok(_) | Err(Error::Timeout { .. }) => {}
                    Err(e) => return Err(e.into()),
                }
            }
        }
        // Now and then a long query: hold a pin for 2 ms while reading twice.
        if reads % 500 == 499 {
            let pin = store.lock.attach_reader()?;
            if pin.version() > 0 {
                let before = store.read_slot(pin.version())?;
                std::thread::sleep(Duration::from_millis(2));
                let after = store.read_slot(pin.version())?;
                if before.balances != after.balances {
                    return Err(format!("version {} changed while pinned", pin.version()).into());
                }
                reads += 1;
            }
        }
    }
    say!(
        "reader {me}: {reads} consistent snapshots verified (versions {}..={highest}){}",
        if reads == 0 { 0 } else { lowest },
        if empty > 0 {
            ", waited for the first commit"
        } else {
            ""
        }
    );
    Ok(())
}

/// A long read transaction: pin the latest version and hold it.
fn run_pin(data: &Path, secs: Option<f64>) -> Result<()> {
    let store = Store::open(data, false)?;
    let pin = store.lock.attach_reader()?;
    let version = pin.version();
    let generation = match version {
        0 => 0, // nothing committed yet: the pin still holds back every version from 1
        v => store.read_slot(v)?.generation,
    };
    say!(
        "pin {}: pinned version {version} (generation {generation}); holding it",
        std::process::id()
    );
    std::thread::sleep(Duration::from_secs_f64(secs.unwrap_or(f64::from(u32::MAX))));
    if version > 0 {
        // Still the same version: the writer waited for us.
        store.read_slot(version)?;
    }
    Ok(())
}

fn run_get(data: &Path) -> Result<()> {
    let store = Store::open(data, false)?;
    match store.read()? {
        None => say!("nothing committed yet"),
        Some(v) => say!(
            "version {} (generation {}): {} accounts, total {}, account 0 holds {}",
            v.version,
            v.generation,
            v.balances.len(),
            v.balances.iter().sum::<u64>(),
            v.balances[0]
        ),
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// The demo: this program as one writer and a few readers, then a long read, then a crash.

/// Children of the demo, killed and reaped however the demo ends.
#[derive(Default)]
struct Children(Vec<Child>);

impl Children {
    fn spawn(&mut self, args: &[&str], data: &Path, stdout: Stdio) -> Result<usize> {
        let child = Command::new(std::env::current_exe()?)
            .args(args)
            .arg(data)
            .stdin(Stdio::null())
            .stdout(stdout)
            .spawn()?;
        self.0.push(child);
        Ok(self.0.len() - 1)
    }

    fn wait(&mut self, index: usize) -> Result<()> {
        let status = self.0[index].wait()?;
        if !status.success() {
            return Err(format!("child {} failed: {status}", self.0[index].id()).into());
        }
        Ok(())
    }

    fn kill(&mut self, index: usize) -> Result<()> {
        self.0[index].kill()?; // SIGKILL: a crash, not a shutdown
        self.0[index].wait()?;
        Ok(())
    }
}

impl Drop for Children {
    fn drop(&mut self) {
        for child in &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn demo(secs: f64) -> Result<()> {
    let dir = tempfile::tempdir()?;
    let data = dir.path().join("bank.db");
    Store::create(&data)?;
    // The demo watches through its own handle; it never reads or writes.
    let lock = Store::open(&data, false)?.lock;
    let mut children = Children::default();
    let secs_arg = format!("{secs}");

    say!(
        "== 1. one writer, three readers, {secs} s ({})",
        data.display()
    );
    let writer = children.spawn(&["writer", "--secs", "600"], &data, Stdio::inherit())?;
    let readers: Vec<usize> = (0..3)
        .map(|_| children.spawn(&["reader", "--secs", &secs_arg], &data, Stdio::inherit()))
        .collect::<Result<_>>()?;
    for reader in readers {
        children.wait(reader)?;
    }
    say!("   published: version {}", lock.published());

    say!("== 2. a long read holds back reuse; its death releases it");
    let pin = children.spawn(&["pin", "--secs", "600"], &data, Stdio::piped())?;
    let mut line = String::new();
    BufReader::new(children.0[pin].stdout.take().ok_or("no pipe")?).read_line(&mut line)?;
    say!("   {}", line.trim_end());
    let pinned: u64 = line
        .split_whitespace()
        .nth(4)
        .and_then(|w| w.parse().ok())
        .ok_or("pin printed no version")?;
    // With `pinned` pinned the writer can go on up to `pinned + SLOTS - 1`: the next
    // version would reuse the pinned one's slot.
    let stuck = pinned + SLOTS - 1;
    let reached = lock.wait_published(stuck - 1, Duration::from_secs(10))?;
    let held = Duration::from_millis(500);
    match lock.wait_published(stuck, held) {
        Err(Error::Timeout { .. }) => say!(
            "   the writer stopped at version {reached}: for {held:?} nothing newer, because \
             oldest_pinned() = {:?} and version {} would reuse its slot",
            lock.oldest_pinned(),
            stuck + 1
        ),
        Ok(v) => return Err(format!("version {v} was published over a pinned one").into()),
        Err(e) => return Err(e.into()),
    }
    let killed = Instant::now();
    children.kill(pin)?;
    let next = lock.wait_published(stuck, Duration::from_secs(10))?;
    say!(
        "   SIGKILLed the pinning reader: the writer went on at once (version {next} {:.2} ms \
         later; nobody called reap)",
        killed.elapsed().as_secs_f64() * 1e3
    );

    say!("== 3. the writer crashes; a standby takes over from published()");
    let standby = children.spawn(&["writer", "--secs", "1"], &data, Stdio::inherit())?;
    let generation = lock.snapshot().generation;
    let before = lock.published();
    children.kill(writer)?;
    say!("   SIGKILLed the writer (generation {generation}) at version {before}");
    let after = lock.wait_published(before, Duration::from_secs(10))?;
    say!(
        "   version {after} published by generation {}",
        lock.snapshot().generation
    );
    children.wait(standby)?;
    match Store::open(&data, false)?.read()? {
        Some(v) => say!(
            "== done: version {} of generation {} is consistent (total {}); oldest pin now {:?}",
            v.version,
            v.generation,
            v.balances.iter().sum::<u64>(),
            lock.oldest_pinned()
        ),
        None => return Err("nothing was committed".into()),
    }
    Ok(())
}

fn usage() -> &'static str {
    "usage: versioned_store [demo [--secs N]]\n       versioned_store writer|reader|pin DATA [--secs N]\n       versioned_store get DATA"
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let secs = match args.iter().position(|a| a == "--secs") {
        Some(i) => match args.get(i + 1).and_then(|s| s.parse::<f64>().ok()) {
            Some(s) if s >= 0.0 => Some(s),
            _ => {
                eprintln!("--secs needs a number of seconds\n{}", usage());
                return ExitCode::FAILURE;
            }
        },
        None => None,
    };
    let positional: Vec<&str> = args
        .iter()
        .enumerate()
        .filter(|&(i, a)| a != "--secs" && (i == 0 || args[i - 1] != "--secs"))
        .map(|(_, a)| a.as_str())
        .collect();
    let data = positional.get(1).map(Path::new);
    let result = match (positional.first().copied(), data) {
        (None | Some("demo"), _) => demo(secs.unwrap_or(3.0)),
        (Some("writer"), Some(data)) => run_writer(data, secs),
        (Some("reader"), Some(data)) => run_reader(data, secs),
        (Some("pin"), Some(data)) => run_pin(data, secs),
        (Some("get"), Some(data)) => run_get(data),
        _ => {
            eprintln!("{}", usage());
            return ExitCode::FAILURE;
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("versioned_store: {e}");
            ExitCode::FAILURE
        }
    }
}
