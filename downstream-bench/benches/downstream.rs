//! shmlock's hot paths from another crate: `attach_reader()` + drop (owned and borrowed
//! guards), `try_claim_writer()` + release (owned and borrowed), beside the floor of an
//! attach (a `fetch_add` + `fetch_sub` on a line of our own) measured here too.

use std::hint::black_box;
use std::sync::atomic::{AtomicU64, Ordering};

use criterion::{criterion_group, criterion_main, Criterion};
use shmlock::ShmLock;

#[repr(align(64))]
struct Line(AtomicU64);

fn downstream(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("tempdir");
    let lock = ShmLock::open(dir.path().join("downstream-shm")).expect("open");
    lock.try_claim_writer_ref()
        .expect("claim")
        .publish(1)
        .expect("publish");
    let mut g = c.benchmark_group("downstream");
    g.bench_function("attach_reader", |b| {
        b.iter(|| drop(black_box(lock.attach_reader().expect("attach"))))
    });
    g.bench_function("attach_reader_ref", |b| {
        b.iter(|| drop(black_box(lock.attach_reader_ref().expect("attach"))))
    });
    let line = Line(AtomicU64::new(0));
    g.bench_function("attach_floor", |b| {
        b.iter(|| {
            black_box(line.0.fetch_add(1, Ordering::SeqCst));
            black_box(line.0.fetch_sub(1, Ordering::SeqCst));
        })
    });
    g.bench_function("claim_release", |b| {
        b.iter(|| {
            lock.try_claim_writer()
                .expect("claim")
                .release()
                .expect("release")
        })
    });
    g.bench_function("claim_release_ref", |b| {
        b.iter(|| {
            lock.try_claim_writer_ref()
                .expect("claim")
                .release()
                .expect("release")
        })
    });
    // The floor of the design's claim + release: the locked instructions it cannot lose —
    // the claim's marker CAS on its own line and the 16-byte CAS of claim and of release —
    // and the same with 8-byte CASes, to show what the 16-byte one costs.
    #[repr(align(64))]
    struct Pair(portable_atomic::AtomicU128);
    let pair = Pair(portable_atomic::AtomicU128::new(0));
    let marker = Line(AtomicU64::new(0));
    g.bench_function("claim_release_floor_16_byte_cas", |b| {
        b.iter(|| {
            let seen = marker.0.load(Ordering::SeqCst);
            let _ = black_box(marker.0.compare_exchange(
                seen,
                seen ^ 1,
                Ordering::SeqCst,
                Ordering::SeqCst,
            ));
            let v = pair.0.load(Ordering::Relaxed);
            let _ =
                black_box(
                    pair.0
                        .compare_exchange(v, v + 1, Ordering::SeqCst, Ordering::SeqCst),
                );
            let _ = black_box(pair.0.compare_exchange(
                v + 1,
                v + 2,
                Ordering::SeqCst,
                Ordering::SeqCst,
            ));
        })
    });
    let word = Line(AtomicU64::new(0));
    g.bench_function("claim_release_floor_8_byte_cas", |b| {
        b.iter(|| {
            let seen = marker.0.load(Ordering::SeqCst);
            let _ = black_box(marker.0.compare_exchange(
                seen,
                seen ^ 1,
                Ordering::SeqCst,
                Ordering::SeqCst,
            ));
            let v = word.0.load(Ordering::Relaxed);
            let _ =
                black_box(
                    word.0
                        .compare_exchange(v, v + 1, Ordering::SeqCst, Ordering::SeqCst),
                );
            let _ = black_box(word.0.compare_exchange(
                v + 1,
                v + 2,
                Ordering::SeqCst,
                Ordering::SeqCst,
            ));
        })
    });
    g.finish();
}

criterion_group!(benches, downstream);
criterion_main!(benches);
