//! Multi-process scaling of attach+detach: N processes (default 1, 2, 4, 8, 16) each loop
//! for a fixed time; the table gives the aggregate operations per second and the speed-up
//! over one process, for shmlock and for the anchors:
//!
//! * `shmlock`: `attach_reader()` + drop, every process on its own member entry;
//! * `per_line`: `fetch_add` + `fetch_sub` on a cache line of the process's own (the floor);
//! * `shared_counter`: `fetch_add` + `fetch_sub` on one word every process shares (a
//!   single reader count, as the seed design had);
//! * `robust_mutex`: two lock/update/unlock of a robust process-shared pthread mutex;
//! * `flock`: two `flock` + `pread` + `pwrite` + unlock;
//! * `lmdb`: LMDB's reader slot, `mdb_txn_begin(MDB_RDONLY)` + `mdb_txn_abort`, `MDB_NOTLS`.
//!
//! One operation is one attach+detach pair (or its equivalent pair for an anchor).
//!
//! It needs no cargo to run: the workers are this same binary re-executed with
//! `SHMLOCK_BENCH_ROLE=worker`, so the prebuilt binary can be copied to another machine.
//!
//! ```text
//! cargo bench --bench scale -- [--secs 1] [--procs 1,2,4,8,16] [--variants shmlock,flock]
//!                              [--csv FILE]
//! ```

mod common;

use std::hint::black_box;
use std::path::Path;
use std::sync::atomic::Ordering::{AcqRel, Acquire, Relaxed, Release};
use std::time::{Duration, Instant};

use common::{FlockCounter, Lmdb, MappedPage, RobustMutex, RoleChild};
use shmlock::ShmLock;

const VARIANTS: [&str; 6] = [
    "shmlock",
    "per_line",
    "shared_counter",
    "robust_mutex",
    "flock",
    "lmdb",
];

/// The control page: start and stop flags, a ready count, one result line per worker.
const GO: usize = 0;
const STOP: usize = 64;
const READY: usize = 128;
const RESULTS: usize = 192;
const MAX_PROCS: usize = (4096 - RESULTS) / 64;

/// Operations between two looks at the stop flag.
const BATCH: u64 = 32;

fn worker(variant: &str, index: usize, dir: &Path) {
    let ctl = MappedPage::open(&dir.join("ctl.page"));
    let mut op: Box<dyn FnMut()> = match variant {
        "shmlock" => {
            let lock = ShmLock::open(dir.join("scale-shm")).expect("open");
            Box::new(move || drop(black_box(lock.attach_reader().expect("attach"))))
        }
        "per_line" | "shared_counter" => {
            let page = MappedPage::open(&dir.join("words.page"));
            let offset = if variant == "per_line" {
                64 * (index + 1)
            } else {
                0
            };
            Box::new(move || {
                let w = page.word(offset);
                black_box(w.fetch_add(1, AcqRel));
                black_box(w.fetch_sub(1, Release));
            })
        }
        "robust_mutex" => {
            let mutex = RobustMutex::open(&dir.join("mutex.page"), false);
            Box::new(move || {
                mutex.update(1);
                mutex.update(-1);
            })
        }
        "flock" => {
            let counter = FlockCounter::open(&dir.join("flock.ctr"));
            Box::new(move || {
                counter.update(1);
                counter.update(-1);
            })
        }
        "lmdb" => {
            let env = Lmdb::open(&dir.join("lmdb"));
            Box::new(move || env.reader_slot())
        }
        other => panic!("unknown variant {other}"),
    };
    ctl.word(READY).fetch_add(1, AcqRel);
    while ctl.word(GO).load(Acquire) == 0 {
        std::thread::yield_now();
    }
    let mut count = 0u64;
    while ctl.word(STOP).load(Relaxed) == 0 {
        for _ in 0..BATCH {
            op();
        }
        count += BATCH;
    }
    let end = common::boottime_ns();
    let slot = RESULTS + 64 * index;
    ctl.word(slot + 8).store(end, Relaxed);
    ctl.word(slot).store(count, Release);
}

/// One cell of the table: `procs` workers of `variant` for `secs`; aggregate ops/s.
fn run_cell(variant: &str, procs: usize, secs: f64) -> f64 {
    let dir = common::scratch_dir("scale");
    let ctl = MappedPage::open(&dir.path().join("ctl.page"));
    if variant == "robust_mutex" {
        drop(RobustMutex::open(&dir.path().join("mutex.page"), true));
    }
    let dir_arg = dir.path().to_str().expect("utf-8 path").to_string();
    let workers: Vec<RoleChild> = (0..procs)
        .map(|i| RoleChild::spawn("worker", &[variant, &i.to_string(), &dir_arg]))
        .collect();
    let deadline = Instant::now() + Duration::from_secs(60);
    while ctl.word(READY).load(Acquire) < procs as u64 {
        assert!(Instant::now() < deadline, "workers did not get ready");
        std::thread::sleep(Duration::from_millis(1));
    }
    let start = common::boottime_ns();
    ctl.word(GO).store(1, Release);
    std::thread::sleep(Duration::from_secs_f64(secs));
    ctl.word(STOP).store(1, Release);
    for w in workers {
        w.finish(Duration::from_secs(30));
    }
    let (mut total, mut last_end) = (0u64, start);
    for i in 0..procs {
        let slot = RESULTS + 64 * i;
        total += ctl.word(slot).load(Acquire);
        last_end = last_end.max(ctl.word(slot + 8).load(Relaxed));
    }
    total as f64 / ((last_end - start) as f64 / 1e9)
}

struct Args {
    secs: f64,
    procs: Vec<usize>,
    variants: Vec<String>,
    csv: Option<String>,
}

fn parse_args() -> Args {
    let mut args = Args {
        secs: 1.0,
        procs: vec![1, 2, 4, 8, 16],
        variants: VARIANTS.iter().map(|v| v.to_string()).collect(),
        csv: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        let mut value = || it.next().unwrap_or_else(|| panic!("{a} needs a value"));
        match a.as_str() {
            "--secs" => args.secs = value().parse().expect("--secs SECONDS"),
            "--procs" => {
                args.procs = value()
                    .split(',')
                    .map(|n| n.parse().expect("--procs N,N,…"))
                    .collect()
            }
            "--variants" => args.variants = value().split(',').map(str::to_string).collect(),
            "--csv" => args.csv = Some(value()),
            // cargo bench passes --bench; criterion-style filters are ignored.
            _ => {}
        }
    }
    assert!(
        args.procs.iter().all(|&n| (1..=MAX_PROCS).contains(&n)),
        "1..={MAX_PROCS} processes"
    );
    args
}

fn main() {
    if let Some(role) = common::role() {
        assert_eq!(role, "worker", "unknown child role");
        let index: usize = common::arg(2).parse().expect("worker index");
        worker(&common::arg(1), index, &common::arg_path(3));
        return;
    }
    let args = parse_args();
    println!("# shmlock scale: aggregate attach+detach pairs per second (M/s)");
    println!("# machine: {}", common::machine_description());
    println!("# {} s per cell, processes {:?}", args.secs, args.procs);
    let mut header = String::from("| variant |");
    let mut rule = String::from("|---|");
    for n in &args.procs {
        header += &format!(" N={n} |");
        rule += "---:|";
    }
    header += &format!(" N={}/N={} |", args.procs.last().unwrap(), args.procs[0]);
    rule += "---:|";
    println!("{header}\n{rule}");
    let mut csv = String::from("variant,procs,ops_per_sec\n");
    for variant in &args.variants {
        let rates: Vec<f64> = args
            .procs
            .iter()
            .map(|&n| run_cell(variant, n, args.secs))
            .collect();
        let mut row = format!("| {variant} |");
        for (n, r) in args.procs.iter().zip(&rates) {
            row += &format!(" {:.2} |", r / 1e6);
            csv += &format!("{variant},{n},{r:.0}\n");
        }
        row += &format!(" {:.2}× |", rates.last().unwrap() / rates[0]);
        println!("{row}");
    }
    if let Some(path) = args.csv {
        std::fs::write(&path, csv).expect("write the CSV");
        println!("# wrote {path}");
    }
}
