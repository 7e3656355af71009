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
//! ```text
//! cargo bench --bench growth -- [--counts 1,2,4,…,120] [--out DIR]
//! ```

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::{median_ns, RoleChild};
use plotters::prelude::*;
use shmlock::ShmLock;

const DEFAULT_COUNTS: [usize; 10] = [1, 2, 4, 8, 16, 32, 48, 64, 96, 120];

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

fn parse_args() -> (Vec<usize>, PathBuf) {
    let (mut counts, mut out) = (DEFAULT_COUNTS.to_vec(), PathBuf::from("benches/results"));
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        let mut value = || it.next().unwrap_or_else(|| panic!("{a} needs a value"));
        match a.as_str() {
            "--counts" => {
                counts = value()
                    .split(',')
                    .map(|n| n.parse().expect("--counts N,N,…"))
                    .collect()
            }
            "--out" => out = PathBuf::from(value()),
            _ => {}
        }
    }
    counts.sort_unstable();
    assert!(
        counts
            .iter()
            .all(|&n| (1..=shmlock::page::MEMBER_CAPACITY).contains(&n)),
        "1..={} registered processes",
        shmlock::page::MEMBER_CAPACITY
    );
    (counts, out)
}

fn main() {
    if let Some(role) = common::role() {
        assert_eq!(role, "hold", "unknown child role");
        let _lock = ShmLock::open(common::arg_path(1)).expect("open");
        common::tell_parent("ready");
        common::wait_for_stdin_eof();
        return;
    }
    let (counts, out) = parse_args();
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
