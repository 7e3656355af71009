//! How the cost of `snapshot()`, `reap()` and registration grows with the number of
//! processes registered in the file (1 → 120): the other members are child processes
//! (this binary re-executed) that hold the file open.
//!
//! * `snapshot`: `ShmLock::snapshot()` from one member while k are registered;
//! * `reap`: `ShmLock::reap()` over k live members (nothing to reap: the steady state);
//! * `open+register`: `ShmLock::open` of the file by this process, joining k − 1 others
//!   (it registers the k-th member), then its drop (which unregisters it).
//!
//! Each value is the median over 15 batches. Writes a table to stdout, and `growth.csv`
//! and `growth.png` to the output directory (default `benches/results`).
//!
//! With `--oldest`, it measures instead **`oldest_pinned()` vs live members** (default
//! k = 1, 8, 32, 64, 120). This process opens the file first (member 0) and is the
//! writer; k − 1 child processes each hold one reader guard, re-attached on command. At
//! each k, each value the median over 15 batches:
//!
//! * `none`: no guard pins anything (a scan of the member table, no system call);
//! * `own`: every member pins the same version, this process too: the minimum's first
//!   holder is this process, whose liveness needs no kernel probe;
//! * `other first` / `other last`: this process pins nothing; the oldest pin is held by the
//!   child spawned first / last alone, so the scan ends with one kernel liveness probe
//!   (`F_OFD_GETLK` on that member's byte), which walks the file's lock list (about two
//!   locks per live process, in the order they were taken): where the holder's lock sits
//!   in it matters;
//! * floors: `scan floor` = 120 SeqCst loads of a mapped page and their minimum; `probe
//!   floor` = one `F_OFD_GETLK` on the holder's member byte through a descriptor of our
//!   own, without the library.
//!
//! It writes `oldest.csv` to the output directory.
//!
//! ```text
//! cargo bench --bench growth -- [--counts 1,2,4,…,120] [--out DIR] [--oldest]
//! ```

mod common;

use std::hint::black_box;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering::SeqCst;
use std::time::Duration;

use common::{median_ns, MappedPage, RoleChild};
use plotters::prelude::*;
use shmlock::ShmLock;

const DEFAULT_COUNTS: [usize; 10] = [1, 2, 4, 8, 16, 32, 48, 64, 96, 120];
const DEFAULT_OLDEST_COUNTS: [usize; 5] = [1, 8, 32, 64, 120];
/// The member table's size.
const MEMBER_CAPACITY: usize = shmlock::MEMBER_CAPACITY;
/// Byte offset of member 0's liveness lock in the lock file (FORMAT.md: after the page and
/// the dead-man switch byte).
const MEMBER_LOCK_BASE: i64 = 4096 + 1;

/// Picks one measured value out of a [`Point`].
type Metric = fn(&Point) -> f64;

struct Point {
    registered: usize,
    snapshot_ns: f64,
    reap_ns: f64,
    open_ns: f64,
}

fn measure(path: &Path, registered: usize) -> Point {
    let open_ns = median_ns(15, 10, || drop(ShmLock::open(path).expect("open")));
    let lock = ShmLock::open(path).expect("open");
    assert_eq!(lock.snapshot().live_members().count(), registered);
    let snapshot_ns = median_ns(15, 100, || drop(std::hint::black_box(lock.snapshot())));
    let reap_ns = median_ns(15, 100, || {
        let report = lock.reap().expect("reap");
        assert!(report.members.is_empty());
    });
    Point {
        registered,
        snapshot_ns,
        reap_ns,
        open_ns,
    }
}

// ---------------------------------------------------------------------------------------
// oldest_pinned() vs live members (`--oldest`).

/// A member holding (on command) one reader guard: `pin` (re)attaches and answers the
/// version pinned, `unpin` drops the guard. Announces its member index first.
fn pinner(path: &Path) {
    let lock = ShmLock::open(path).expect("open");
    common::tell_parent(&lock.member_index().to_string());
    let mut guard = None;
    for line in std::io::stdin().lines() {
        match line.expect("read a command").as_str() {
            "pin" => {
                drop(guard.take());
                let g = lock.attach_reader().expect("attach");
                common::tell_parent(&g.version().to_string());
                guard = Some(g);
            }
            "unpin" => {
                drop(guard.take());
                common::tell_parent("ok");
            }
            other => panic!("unknown pinner command {other}"),
        }
    }
}

struct Member {
    child: RoleChild,
    index: usize,
}

impl Member {
    fn command(&mut self, what: &str) -> String {
        self.child.send(what);
        self.child.line()
    }
}

struct OldestRow {
    members: usize,
    none_ns: f64,
    own_ns: f64,
    /// `(oldest_pinned(), probe floor)` with the first / the last spawned child holding
    /// the oldest pin (`None` with no child).
    other_first: Option<(f64, f64)>,
    other_last: Option<(f64, f64)>,
}

/// An OFD lock probe (`F_OFD_GETLK`, exclusive) of member `index`'s byte: whether another
/// open file description holds it.
fn probe(file: &std::fs::File, index: usize) -> bool {
    // SAFETY: `flock` is a plain C struct; all-zero is valid.
    let mut fl: libc::flock = unsafe { std::mem::zeroed() };
    fl.l_type = libc::F_WRLCK as libc::c_short;
    fl.l_whence = libc::SEEK_SET as libc::c_short;
    fl.l_start = MEMBER_LOCK_BASE + index as i64;
    fl.l_len = 1;
    // SAFETY: a valid descriptor and a valid, writable `flock`.
    let rc = unsafe { libc::fcntl(file.as_raw_fd(), libc::F_OFD_GETLK, &mut fl) };
    assert_eq!(rc, 0, "F_OFD_GETLK");
    fl.l_type != libc::F_UNLCK as libc::c_short
}

fn oldest_growth(dir: &Path, counts: &[usize]) -> Vec<OldestRow> {
    let path = dir.join("oldest-shm");
    let lock = ShmLock::open(&path).expect("open");
    assert_eq!(lock.member_index(), 0, "the bench is the first member");
    let writer = lock.try_claim_writer().expect("claim");
    let mut version = 0;
    let mut publish = || {
        version += 1;
        writer.publish(version).expect("publish");
        version
    };
    let file = std::fs::File::open(&path).expect("open the lock file for probes");
    let path_arg = path.to_str().expect("utf-8 path").to_string();
    let mut children: Vec<Member> = Vec::new();
    let mut rows = Vec::new();
    let measure_other = |holder: usize| {
        let other = median_ns(15, 200, || {
            black_box(lock.oldest_pinned());
        });
        assert!(probe(&file, holder));
        let floor = median_ns(15, 200, || {
            black_box(probe(&file, holder));
        });
        (other, floor)
    };
    for &k in counts {
        // Children in spawn order: the order their locks entered the kernel's list.
        while children.len() < k - 1 {
            let mut child = RoleChild::spawn("pinner", &[&path_arg]);
            let index = child.line().parse().expect("member index");
            children.push(Member { child, index });
        }
        assert_eq!(lock.snapshot().live_members().count(), k);

        for m in &mut children {
            assert_eq!(m.command("unpin"), "ok");
        }
        assert_eq!(lock.oldest_pinned(), None);
        let none_ns = median_ns(15, 2000, || {
            black_box(lock.oldest_pinned());
        });

        let (mut other_first, mut other_last) = (None, None);
        let mut newest = 0;
        if !children.is_empty() {
            // The first child alone keeps an older version; this process pins nothing.
            let a = publish();
            for m in &mut children {
                assert_eq!(m.command("pin"), a.to_string());
            }
            let b = publish();
            for m in &mut children[1..] {
                assert_eq!(m.command("pin"), b.to_string());
            }
            assert_eq!(lock.oldest_pinned(), Some(a));
            other_first = Some(measure_other(children[0].index));

            // The last child alone keeps an older version.
            let c = publish();
            let (last, rest) = children.split_last_mut().expect("a child");
            for m in rest {
                assert_eq!(m.command("pin"), c.to_string());
            }
            assert_eq!(lock.oldest_pinned(), Some(if k == 2 { a } else { b }));
            other_last = Some(measure_other(last.index));
            assert_eq!(last.command("pin"), c.to_string());
            newest = c;
        }

        // This process pins the same version as every child; it is member 0, the first.
        let guard = lock.attach_reader().expect("attach");
        assert_eq!(guard.version(), newest.max(lock.published()));
        assert_eq!(lock.oldest_pinned(), Some(guard.version()));
        let own_ns = median_ns(15, 2000, || {
            black_box(lock.oldest_pinned());
        });
        drop(guard);

        eprintln!("# {k} members: none {none_ns:.0}, own {own_ns:.0}, other first {other_first:?}, other last {other_last:?}");
        rows.push(OldestRow {
            members: k,
            none_ns,
            own_ns,
            other_first,
            other_last,
        });
    }
    for m in children {
        m.child.finish(Duration::from_secs(5));
    }
    rows
}

/// 120 SeqCst loads of a mapped page and their minimum: the least a scan can cost.
fn scan_floor(dir: &Path) -> f64 {
    let page = MappedPage::open(&dir.join("scan.page"));
    let words: Vec<&AtomicU64> = (0..MEMBER_CAPACITY).map(|i| page.word(i * 32)).collect();
    median_ns(15, 2000, || {
        black_box(words.iter().map(|w| w.load(SeqCst)).min());
    })
}

fn run_oldest(counts: &[usize], out: &Path) {
    let dir = common::scratch_dir("oldest");
    let floor = scan_floor(dir.path());
    let rows = oldest_growth(dir.path(), counts);
    println!("# shmlock growth: oldest_pinned() vs live members (ns, median of 15 batches)");
    println!("# machine: {}", common::machine_description());
    println!("| members | none pinned | own is oldest | other (first) is oldest | its probe floor | other (last) is oldest | its probe floor | scan floor |");
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|");
    let pair = |v: Option<(f64, f64)>| {
        v.map_or(["—".to_string(), "—".to_string()], |(o, f)| {
            [format!("{o:.0}"), format!("{f:.0}")]
        })
    };
    let mut csv = String::from(
        "members,none_ns,own_ns,other_first_ns,probe_first_ns,other_last_ns,probe_last_ns,scan_floor_ns\n",
    );
    for r in &rows {
        let [first, probe_first] = pair(r.other_first);
        let [last, probe_last] = pair(r.other_last);
        let cells = [
            format!("{:.0}", r.none_ns),
            format!("{:.0}", r.own_ns),
            first,
            probe_first,
            last,
            probe_last,
            format!("{floor:.0}"),
        ];
        println!("| {} | {} |", r.members, cells.join(" | "));
        csv += &format!("{},{}\n", r.members, cells.join(","));
    }
    std::fs::create_dir_all(out).expect("create the output directory");
    std::fs::write(out.join("oldest.csv"), csv).expect("write oldest.csv");
    println!("# wrote {}", out.join("oldest.csv").display());
}

/// The first TrueType font found among the usual system locations (`None`: no PNG text).
fn find_font() -> Option<&'static [u8]> {
    [
        "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
        "/usr/share/fonts/dejavu/DejaVuSans.ttf",
        "/usr/share/fonts/TTF/DejaVuSans.ttf",
        "/usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf",
    ]
    .iter()
    .find_map(|p| std::fs::read(p).ok())
    .map(|bytes| &*Box::leak(bytes.into_boxed_slice()))
}

fn plot(points: &[Point], png: &Path) -> Result<(), Box<dyn std::error::Error>> {
    let font = find_font().ok_or("no TrueType font found for the plot's text")?;
    plotters::style::register_font("sans-serif", FontStyle::Normal, font)
        .map_err(|_| "the font could not be loaded")?;
    let root = BitMapBackend::new(png, (900, 560)).into_drawing_area();
    root.fill(&WHITE)?;
    let to_us = |ns: f64| ns / 1e3;
    let all = points
        .iter()
        .flat_map(|p| [p.snapshot_ns, p.reap_ns, p.open_ns])
        .map(to_us);
    let (lo, hi) = all.fold((f64::MAX, f64::MIN), |(lo, hi), v| (lo.min(v), hi.max(v)));
    let max_x = points.last().map_or(120, |p| p.registered) as f64;
    let mut chart = ChartBuilder::on(&root)
        .caption("shmlock: cost vs registered processes", ("sans-serif", 24))
        .margin(16)
        .x_label_area_size(44)
        .y_label_area_size(64)
        .build_cartesian_2d(0f64..max_x + 4.0, ((lo / 2.0)..(hi * 2.0)).log_scale())?;
    chart
        .configure_mesh()
        .x_desc("registered processes")
        .y_desc("µs per call (median, log scale)")
        .label_style(("sans-serif", 15))
        .draw()?;
    let series: [(&str, Metric, RGBColor); 3] = [
        ("open + register + drop", |p| p.open_ns, RED),
        ("reap() (all alive)", |p| p.reap_ns, BLUE),
        ("snapshot()", |p| p.snapshot_ns, GREEN),
    ];
    for (name, value, color) in series {
        let data: Vec<(f64, f64)> = points
            .iter()
            .map(|p| (p.registered as f64, to_us(value(p))))
            .collect();
        chart
            .draw_series(LineSeries::new(data.clone(), color.stroke_width(2)))?
            .label(name)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color));
        chart.draw_series(
            data.into_iter()
                .map(|xy| Circle::new(xy, 3, color.filled())),
        )?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::LowerRight)
        .label_font(("sans-serif", 15))
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()?;
    root.present()?;
    Ok(())
}

/// `--counts` (if given), `--out`, `--oldest`.
fn parse_args() -> (Option<Vec<usize>>, PathBuf, bool) {
    let (mut counts, mut out, mut oldest) = (None, PathBuf::from("benches/results"), false);
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        let mut value = || it.next().unwrap_or_else(|| panic!("{a} needs a value"));
        match a.as_str() {
            "--counts" => {
                let mut n: Vec<usize> = value()
                    .split(',')
                    .map(|n| n.parse().expect("--counts N,N,…"))
                    .collect();
                n.sort_unstable();
                assert!(
                    n.iter().all(|&n| (1..=MEMBER_CAPACITY).contains(&n)),
                    "1..={MEMBER_CAPACITY} registered processes"
                );
                counts = Some(n);
            }
            "--out" => out = PathBuf::from(value()),
            "--oldest" => oldest = true,
            _ => {}
        }
    }
    (counts, out, oldest)
}

fn main() {
    if let Some(role) = common::role() {
        match role.as_str() {
            "hold" => {
                let _lock = ShmLock::open(common::arg_path(1)).expect("open");
                common::tell_parent("ready");
                common::wait_for_stdin_eof();
            }
            "pinner" => pinner(&common::arg_path(1)),
            other => panic!("unknown child role {other}"),
        }
        return;
    }
    let (counts, out, oldest) = parse_args();
    if oldest {
        return run_oldest(&counts.unwrap_or(DEFAULT_OLDEST_COUNTS.to_vec()), &out);
    }
    let counts = counts.unwrap_or(DEFAULT_COUNTS.to_vec());
    let dir = common::scratch_dir("growth");
    let path = dir.path().join("growth-shm");
    drop(ShmLock::open(&path).expect("create"));
    let path_arg = path.to_str().expect("utf-8 path").to_string();

    println!("# shmlock growth: median ns per call vs registered processes");
    println!("# machine: {}", common::machine_description());
    println!("| registered | snapshot() | reap() | open+register+drop |");
    println!("|---:|---:|---:|---:|");
    let mut holders: Vec<RoleChild> = Vec::new();
    let mut points = Vec::new();
    for &registered in &counts {
        // This process is the k-th member while it measures.
        while holders.len() < registered - 1 {
            let mut child = RoleChild::spawn("hold", &[&path_arg]);
            assert_eq!(child.line(), "ready");
            holders.push(child);
        }
        let p = measure(&path, registered);
        println!(
            "| {} | {:.0} | {:.0} | {:.0} |",
            p.registered, p.snapshot_ns, p.reap_ns, p.open_ns
        );
        points.push(p);
    }
    for h in holders {
        h.finish(Duration::from_secs(5));
    }

    std::fs::create_dir_all(&out).expect("create the output directory");
    let mut csv = String::from("registered,snapshot_ns,reap_ns,open_register_drop_ns\n");
    for p in &points {
        csv += &format!(
            "{},{:.0},{:.0},{:.0}\n",
            p.registered, p.snapshot_ns, p.reap_ns, p.open_ns
        );
    }
    std::fs::write(out.join("growth.csv"), csv).expect("write growth.csv");
    let png = out.join("growth.png");
    match plot(&points, &png) {
        Ok(()) => println!("# wrote {} and growth.csv", png.display()),
        Err(e) => println!("# no plot ({e}); wrote growth.csv"),
    }
}
