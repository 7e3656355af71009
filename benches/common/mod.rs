//! What the benches share: the anchors (a mapped page of raw atomics, the seed design's
//! `pwrite`d header, `flock` + read/modify/write, a robust process-shared pthread mutex in a
//! mapped page, LMDB's reader table and writer mutex), child processes that are the bench
//! binary itself re-executed in a role, and small statistics.
//!
//! Every anchor does, per operation, the least its design needs, so that each ratio is
//! against the anchor at its best.

// Each bench binary uses a different part of this module.
#![allow(dead_code)]

use std::ffi::CString;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::ptr::NonNull;
use std::sync::atomic::AtomicU64;
use std::time::{Duration, Instant};

use lmdb_master_sys as mdb;
use memmap2::MmapRaw;

/// The environment variable that turns a re-executed bench binary into a child role.
pub const ROLE_VAR: &str = "SHMLOCK_BENCH_ROLE";

/// Nanoseconds of `CLOCK_BOOTTIME`: the library's clock, comparable across processes.
#[inline]
pub fn boottime_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec; CLOCK_BOOTTIME exists on Linux.
    unsafe { libc::clock_gettime(libc::CLOCK_BOOTTIME, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// A fresh temporary directory for one bench run (removed on drop).
pub fn scratch_dir(what: &str) -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix(&format!("shmlock-bench-{what}-"))
        .tempdir()
        .expect("create a temporary directory")
}

// ---------------------------------------------------------------------------------------
// A mapped page of raw atomics: the floor, and the home of the robust mutex.

/// One 4096-byte file mapped `MAP_SHARED`, viewed as 512 `AtomicU64` words.
pub struct MappedPage {
    map: MmapRaw,
    _file: File,
}

impl MappedPage {
    /// Create (or open) `path`, sized to one page, and map it.
    pub fn open(path: &Path) -> MappedPage {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .expect("open the anchor page");
        if file.metadata().expect("stat").len() < 4096 {
            file.set_len(4096).expect("size the anchor page");
        }
        let map = MmapRaw::map_raw(&file).expect("map the anchor page");
        MappedPage { map, _file: file }
    }

    /// The 8-byte word at byte `offset` (a multiple of 8, below 4096).
    pub fn word(&self, offset: usize) -> &AtomicU64 {
        assert!(offset % 8 == 0 && offset + 8 <= 4096);
        // SAFETY: the mapping is 4096 bytes, page-aligned, so `offset` is in bounds and
        // 8-aligned; it lives as long as `self`; every process touches it only atomically.
        unsafe { AtomicU64::from_ptr(self.map.as_mut_ptr().add(offset).cast()) }
    }

    fn ptr(&self, offset: usize) -> *mut u8 {
        assert!(offset < 4096);
        // SAFETY: in bounds of the 4096-byte mapping.
        unsafe { self.map.as_mut_ptr().add(offset) }
    }
}

// ---------------------------------------------------------------------------------------
// A robust process-shared pthread mutex in a mapped page, guarding a counter.

/// Byte offset of the mutex in its page; the counter it guards sits on the next line.
const MUTEX_OFFSET: usize = 64;
const MUTEX_COUNTER_OFFSET: usize = 128;
/// Set once the mutex is initialised (a fresh file is all zeroes).
const MUTEX_READY_OFFSET: usize = 0;

/// A `PTHREAD_MUTEX_ROBUST` + `PTHREAD_PROCESS_SHARED` mutex living in a mapped page — the
/// LMDB way of guarding shared state, and what the design keeps out of its own page.
pub struct RobustMutex {
    page: MappedPage,
}

impl RobustMutex {
    /// Map `path`; initialise the mutex if this is the first opener (`create`).
    pub fn open(path: &Path, create: bool) -> RobustMutex {
        assert!(std::mem::size_of::<libc::pthread_mutex_t>() <= 64);
        let page = MappedPage::open(path);
        if create {
            let m = page.ptr(MUTEX_OFFSET).cast::<libc::pthread_mutex_t>();
            // SAFETY: `m` points at 64 writable, suitably aligned bytes of the mapping that
            // no other process uses before `MUTEX_READY_OFFSET` is published; the attr is
            // initialised before use and destroyed after.
            unsafe {
                let mut attr: libc::pthread_mutexattr_t = std::mem::zeroed();
                assert_eq!(libc::pthread_mutexattr_init(&mut attr), 0);
                assert_eq!(
                    libc::pthread_mutexattr_setpshared(&mut attr, libc::PTHREAD_PROCESS_SHARED),
                    0
                );
                assert_eq!(
                    libc::pthread_mutexattr_setrobust(&mut attr, libc::PTHREAD_MUTEX_ROBUST),
                    0
                );
                assert_eq!(libc::pthread_mutex_init(m, &attr), 0);
                libc::pthread_mutexattr_destroy(&mut attr);
            }
            page.word(MUTEX_READY_OFFSET)
                .store(1, std::sync::atomic::Ordering::Release);
        } else {
            while page
                .word(MUTEX_READY_OFFSET)
                .load(std::sync::atomic::Ordering::Acquire)
                == 0
            {
                std::thread::yield_now();
            }
        }
        RobustMutex { page }
    }

    fn mutex(&self) -> *mut libc::pthread_mutex_t {
        self.page.ptr(MUTEX_OFFSET).cast()
    }

    /// Lock (making the mutex consistent if its holder died).
    #[inline]
    pub fn lock(&self) {
        // SAFETY: the mutex was initialised process-shared and robust (see `open`).
        let rc = unsafe { libc::pthread_mutex_lock(self.mutex()) };
        if rc == libc::EOWNERDEAD {
            // SAFETY: we hold the mutex, whose previous holder died.
            unsafe { libc::pthread_mutex_consistent(self.mutex()) };
        } else {
            assert_eq!(rc, 0, "pthread_mutex_lock");
        }
    }

    /// Try to lock; `false` when another thread or process holds it.
    #[inline]
    pub fn try_lock(&self) -> bool {
        // SAFETY: as in `lock`.
        let rc = unsafe { libc::pthread_mutex_trylock(self.mutex()) };
        match rc {
            0 => true,
            libc::EBUSY => false,
            libc::EOWNERDEAD => {
                // SAFETY: we hold it; its previous holder died.
                unsafe { libc::pthread_mutex_consistent(self.mutex()) };
                true
            }
            rc => panic!("pthread_mutex_trylock: {rc}"),
        }
    }

    /// Unlock.
    #[inline]
    pub fn unlock(&self) {
        // SAFETY: called only by the holder.
        let rc = unsafe { libc::pthread_mutex_unlock(self.mutex()) };
        debug_assert_eq!(rc, 0);
    }

    /// The counter the mutex guards (touched only with the mutex held).
    #[inline]
    pub fn counter(&self) -> &AtomicU64 {
        self.page.word(MUTEX_COUNTER_OFFSET)
    }

    /// Lock, add `delta` to the counter, unlock: one guarded update.
    #[inline]
    pub fn update(&self, delta: i64) {
        use std::sync::atomic::Ordering::Relaxed;
        self.lock();
        let c = self.counter();
        c.store(c.load(Relaxed).wrapping_add(delta as u64), Relaxed);
        self.unlock();
    }
}

// ---------------------------------------------------------------------------------------
// flock + read/modify/write + unlock, and the seed design's pwrite of a header.

/// A file whose first 8 bytes are a counter updated under `flock(LOCK_EX)`.
pub struct FlockCounter {
    file: File,
}

impl FlockCounter {
    /// Open (creating) `path`.
    pub fn open(path: &Path) -> FlockCounter {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .expect("open the flock file");
        if file.metadata().expect("stat").len() < 64 {
            file.set_len(64).expect("size the flock file");
        }
        FlockCounter { file }
    }

    fn flock(&self, op: libc::c_int) {
        // SAFETY: a valid open descriptor.
        while unsafe { libc::flock(self.file.as_raw_fd(), op) } != 0 {
            let e = std::io::Error::last_os_error();
            assert_eq!(e.kind(), std::io::ErrorKind::Interrupted, "flock: {e}");
        }
    }

    /// `flock(LOCK_EX)`, `pread` the counter, `pwrite` it plus `delta`, `flock(LOCK_UN)`.
    #[inline]
    pub fn update(&self, delta: i64) {
        let mut buf = [0u8; 8];
        self.flock(libc::LOCK_EX);
        self.file.read_exact_at(&mut buf, 0).expect("pread");
        let value = u64::from_ne_bytes(buf).wrapping_add(delta as u64);
        self.file
            .write_all_at(&value.to_ne_bytes(), 0)
            .expect("pwrite");
        self.flock(libc::LOCK_UN);
    }

    /// `flock(LOCK_SH)`, `pread` 64 bytes, `flock(LOCK_UN)`: a consistent read.
    #[inline]
    pub fn read(&self) -> [u8; 64] {
        let mut buf = [0u8; 64];
        self.flock(libc::LOCK_SH);
        self.file.read_exact_at(&mut buf, 0).expect("pread");
        self.flock(libc::LOCK_UN);
        buf
    }
}

/// The seed design: a 64-byte header (pid, generation, reader count, heartbeat, …) that
/// every operation rewrites whole with one `pwrite` (it never even read it back — which is
/// how it lost updates). Measured at its cheapest: one `pwrite` per operation.
pub struct SeedHeader {
    file: File,
    header: [u64; 8],
}

impl SeedHeader {
    /// Open (creating) `path`.
    pub fn open(path: &Path) -> SeedHeader {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .expect("open the seed header file");
        SeedHeader {
            file,
            header: [0; 8],
        }
    }

    /// Change field `field` by `delta` and rewrite the header.
    #[inline]
    pub fn write(&mut self, field: usize, delta: u64) {
        self.set(field, self.header[field].wrapping_add(delta));
    }

    /// Set field `field` to `value` and rewrite the header.
    #[inline]
    pub fn set(&mut self, field: usize, value: u64) {
        self.header[field] = value;
        let mut bytes = [0u8; 64];
        for (chunk, v) in bytes.chunks_exact_mut(8).zip(self.header) {
            chunk.copy_from_slice(&v.to_ne_bytes());
        }
        self.file.write_all_at(&bytes, 0).expect("pwrite");
    }

    /// Read the header (what a status query does).
    #[inline]
    pub fn read(&self) -> [u8; 64] {
        let mut buf = [0u8; 64];
        self.file.read_exact_at(&mut buf, 0).expect("pread");
        buf
    }
}

// ---------------------------------------------------------------------------------------
// LMDB.

/// An LMDB environment. [`Lmdb::open`] uses `MDB_NOTLS`: reader slots belong to
/// transactions, not threads, so every read-only `begin` claims a slot under the reader
/// mutex and every `abort` frees it. [`Lmdb::open_tls`] uses LMDB's default: a thread keeps
/// its reader slot, so a read-only `begin` only stamps the slot with the txnid it pins (and
/// allocates the transaction), and `abort` clears the stamp.
pub struct Lmdb {
    env: NonNull<mdb::MDB_env>,
}

// SAFETY: an MDB_env is thread-safe; with MDB_NOTLS transactions are not tied to threads.
unsafe impl Send for Lmdb {}
// SAFETY: as above.
unsafe impl Sync for Lmdb {}

fn mdb_check(rc: libc::c_int, what: &str) {
    if rc != 0 {
        // SAFETY: mdb_strerror returns a static NUL-terminated string.
        let msg = unsafe { std::ffi::CStr::from_ptr(mdb::mdb_strerror(rc)) };
        panic!("{what}: {}", msg.to_string_lossy());
    }
}

impl Lmdb {
    /// Open (creating) the environment in directory `dir`, with `MDB_NOTLS`.
    pub fn open(dir: &Path) -> Lmdb {
        Lmdb::open_with(dir, mdb::MDB_NOTLS)
    }

    /// Open (creating) the environment in directory `dir` with LMDB's default flags
    /// (reader slots kept per thread).
    pub fn open_tls(dir: &Path) -> Lmdb {
        Lmdb::open_with(dir, 0)
    }

    fn open_with(dir: &Path, flags: libc::c_uint) -> Lmdb {
        std::fs::create_dir_all(dir).expect("create the LMDB directory");
        let c_dir = CString::new(dir.as_os_str().as_bytes()).expect("no NUL in path");
        let mut env = std::ptr::null_mut();
        // SAFETY: plain LMDB calls with valid pointers; the env is closed on failure paths
        // by the panic unwinding through `Lmdb::drop` only after it is constructed.
        unsafe {
            mdb_check(mdb::mdb_env_create(&mut env), "mdb_env_create");
            mdb_check(
                mdb::mdb_env_set_maxreaders(env, 256),
                "mdb_env_set_maxreaders",
            );
            mdb_check(
                mdb::mdb_env_open(env, c_dir.as_ptr(), flags, 0o600),
                "mdb_env_open",
            );
        }
        Lmdb {
            env: NonNull::new(env).expect("mdb_env_create gave an env"),
        }
    }

    fn begin(&self, flags: libc::c_uint) -> *mut mdb::MDB_txn {
        let mut txn = std::ptr::null_mut();
        // SAFETY: a live env; no parent transaction.
        let rc =
            unsafe { mdb::mdb_txn_begin(self.env.as_ptr(), std::ptr::null_mut(), flags, &mut txn) };
        mdb_check(rc, "mdb_txn_begin");
        txn
    }

    /// `mdb_txn_begin(MDB_RDONLY)` + `mdb_txn_abort`: pin the latest txnid in a reader
    /// slot and unpin it (with `MDB_NOTLS`, also take and free the slot).
    #[inline]
    pub fn reader_slot(&self) {
        let txn = self.begin(mdb::MDB_RDONLY);
        // SAFETY: a live transaction of ours.
        unsafe { mdb::mdb_txn_abort(txn) };
    }

    /// A read-only transaction kept for [`LmdbReadTxn::renew_reset`]: LMDB's cheapest way
    /// to pin and unpin, with no allocation per read.
    pub fn read_txn(&self) -> LmdbReadTxn<'_> {
        let txn = self.begin(mdb::MDB_RDONLY);
        // SAFETY: our live read-only transaction; reset releases its snapshot.
        unsafe { mdb::mdb_txn_reset(txn) };
        LmdbReadTxn { txn, _env: self }
    }

    /// Begin a write transaction (takes the writer mutex; blocks while another writer
    /// holds it; recovers it with `EOWNERDEAD` when its holder died).
    pub fn begin_write(&self) -> LmdbWriteTxn<'_> {
        LmdbWriteTxn {
            txn: self.begin(0),
            _env: self,
        }
    }

    /// `mdb_reader_check`: scan the reader table for dead readers (LMDB's liveness sweep).
    pub fn reader_check(&self) -> i32 {
        let mut dead = 0;
        // SAFETY: a live env.
        mdb_check(
            unsafe { mdb::mdb_reader_check(self.env.as_ptr(), &mut dead) },
            "mdb_reader_check",
        );
        dead
    }
}

impl Drop for Lmdb {
    fn drop(&mut self) {
        // SAFETY: no transaction outlives the env (they borrow it).
        unsafe { mdb::mdb_env_close(self.env.as_ptr()) };
    }
}

/// A reset read-only transaction; aborted on drop.
pub struct LmdbReadTxn<'a> {
    txn: *mut mdb::MDB_txn,
    _env: &'a Lmdb,
}

impl LmdbReadTxn<'_> {
    /// `mdb_txn_renew` + `mdb_txn_reset`: pin the latest txnid in the thread's reader slot,
    /// then unpin it.
    #[inline]
    pub fn renew_reset(&mut self) {
        // SAFETY: our reset read-only transaction; renew re-pins it, reset unpins it.
        unsafe {
            mdb_check(mdb::mdb_txn_renew(self.txn), "mdb_txn_renew");
            mdb::mdb_txn_reset(self.txn);
        }
    }
}

impl Drop for LmdbReadTxn<'_> {
    fn drop(&mut self) {
        // SAFETY: our live (reset) transaction.
        unsafe { mdb::mdb_txn_abort(self.txn) };
    }
}

/// A write transaction; aborted on drop (which releases the writer mutex).
pub struct LmdbWriteTxn<'a> {
    txn: *mut mdb::MDB_txn,
    _env: &'a Lmdb,
}

impl Drop for LmdbWriteTxn<'_> {
    fn drop(&mut self) {
        // SAFETY: our live transaction.
        unsafe { mdb::mdb_txn_abort(self.txn) };
    }
}

// ---------------------------------------------------------------------------------------
// Child processes: this bench binary re-executed in a role.

/// A child process running `role` (this very binary, re-executed with [`ROLE_VAR`] set),
/// talking in lines over its stdin/stdout. Killed and reaped on drop.
pub struct RoleChild {
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: BufReader<ChildStdout>,
    /// The child's pid.
    pub pid: i32,
}

impl RoleChild {
    /// Start this binary in `role` with `args`.
    pub fn spawn(role: &str, args: &[&str]) -> RoleChild {
        let exe = std::env::current_exe().expect("current_exe");
        let mut child = Command::new(exe)
            .env(ROLE_VAR, role)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn a child role");
        let stdin = child.stdin.take();
        let stdout = BufReader::new(child.stdout.take().expect("piped stdout"));
        let pid = child.id() as i32;
        RoleChild {
            child,
            stdin,
            stdout,
            pid,
        }
    }

    /// Send one line.
    pub fn send(&mut self, line: &str) {
        let stdin = self.stdin.as_mut().expect("stdin still open");
        writeln!(stdin, "{line}")
            .and_then(|_| stdin.flush())
            .unwrap_or_else(|e| panic!("child {} is gone: {e}", self.pid));
    }

    /// Read one line (panics if the child exits first).
    pub fn line(&mut self) -> String {
        let mut line = String::new();
        let n = self.stdout.read_line(&mut line).expect("read from child");
        assert!(n > 0, "child {} exited early", self.pid);
        line.trim_end().to_string()
    }

    /// Send a signal.
    pub fn signal(&self, signal: nix::sys::signal::Signal) {
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.pid), signal).expect("kill");
    }

    /// Close its stdin (the role's cue to exit) and reap it, killing it after `grace`.
    pub fn finish(mut self, grace: Duration) {
        self.stdin = None;
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        // Drop kills and reaps.
    }

    /// Reap it (after a SIGKILL the caller sent).
    pub fn reap(mut self) {
        let _ = self.child.wait();
    }
}

impl Drop for RoleChild {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The role this process was started in, if it is a child.
pub fn role() -> Option<String> {
    std::env::var(ROLE_VAR).ok()
}

/// Block until stdin reaches end of file (the parent closed it or died).
pub fn wait_for_stdin_eof() {
    let mut sink = String::new();
    let stdin = std::io::stdin();
    let mut lock = stdin.lock();
    while lock.read_line(&mut sink).map(|n| n > 0).unwrap_or(false) {
        sink.clear();
    }
}

/// Print one line to the parent and flush.
pub fn tell_parent(line: &str) {
    let mut out = std::io::stdout().lock();
    writeln!(out, "{line}")
        .and_then(|_| out.flush())
        .expect("write to parent");
}

/// The nth positional argument of a child role.
pub fn arg(n: usize) -> String {
    std::env::args()
        .nth(n)
        .unwrap_or_else(|| panic!("child role needs argument {n}"))
}

/// The nth positional argument of a child role, as a path.
pub fn arg_path(n: usize) -> PathBuf {
    PathBuf::from(arg(n))
}

// ---------------------------------------------------------------------------------------
// Statistics.

/// Sorted samples with percentile look-ups.
pub struct Percentiles(Vec<f64>);

impl Percentiles {
    /// Sort `samples` (there must be at least one).
    pub fn new(mut samples: Vec<f64>) -> Percentiles {
        assert!(!samples.is_empty());
        samples.sort_by(f64::total_cmp);
        Percentiles(samples)
    }

    /// The `q`-quantile (nearest rank), `q` in 0..=1.
    pub fn at(&self, q: f64) -> f64 {
        let rank = ((q * self.0.len() as f64).ceil() as usize).clamp(1, self.0.len());
        self.0[rank - 1]
    }

    /// The median.
    pub fn median(&self) -> f64 {
        self.at(0.5)
    }

    /// The largest sample.
    pub fn max(&self) -> f64 {
        *self.0.last().expect("non-empty")
    }

    /// How many samples.
    pub fn len(&self) -> usize {
        self.0.len()
    }
}

/// Median nanoseconds per call of `op`, over `batches` batches of `per_batch` calls.
pub fn median_ns(batches: usize, per_batch: usize, mut op: impl FnMut()) -> f64 {
    let samples = (0..batches)
        .map(|_| {
            let start = Instant::now();
            for _ in 0..per_batch {
                op();
            }
            start.elapsed().as_nanos() as f64 / per_batch as f64
        })
        .collect();
    Percentiles::new(samples).median()
}

/// Human-readable "machine" line: CPU model, cores, kernel.
pub fn machine_description() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let kernel = nix::sys::utsname::uname()
        .map(|u| u.release().to_string_lossy().into_owned())
        .unwrap_or_default();
    format!("{cpu}, {cores} logical CPUs, Linux {kernel}")
}
