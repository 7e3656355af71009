//! Invariant 8 under real concurrency inside one process: reader threads share their
//! process's one pin word (the in-process aggregation of DESIGN.md's second part) while a
//! writer thread publishes and asks for the oldest pin. A guard that is live when
//! `oldest_pinned()` answers must pin a version at or above the answer, and a version the
//! writer was told is free must never be read afterwards.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::SeqCst};
use std::sync::Arc;
use std::time::{Duration, Instant};

use shmlock::ShmLock;

const READERS: usize = 4;

#[test]
fn oldest_pinned_never_passes_a_live_guard_of_this_process() {
    let dir = tempfile::tempdir().unwrap();
    let lock = ShmLock::open(dir.path().join("pins-shm")).unwrap();
    let writer = lock.try_claim_writer().unwrap();
    writer.publish(1).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    // Each reader records the version of the guard it holds (+1; 0 = none) *after* attach
    // returns and clears it *before* the guard drops: a non-zero slot is a live guard.
    let slots: Arc<Vec<AtomicU64>> = Arc::new((0..READERS).map(|_| AtomicU64::new(0)).collect());
    // The highest version the writer was told is free (no live pin at or below it).
    let freed = Arc::new(AtomicU64::new(0));
    let reads = Arc::new(AtomicU64::new(0));
    let readers: Vec<_> = (0..READERS)
        .map(|i| {
            let (lock, stop, slots, freed, reads) = (
                lock.clone(),
                stop.clone(),
                slots.clone(),
                freed.clone(),
                reads.clone(),
            );
            std::thread::spawn(move || {
                let mut held = Vec::new();
                let mut n = 0u64;
                while !stop.load(SeqCst) {
                    n += 1;
                    let guard = lock.attach_reader().unwrap();
                    let v = guard.version();
                    // Reading version v: it must not have been declared free.
                    assert!(
                        freed.load(SeqCst) < v,
                        "reader {i} pinned version {v}, which the writer had been told no reader holds"
                    );
                    if held.is_empty() {
                        slots[i].store(v + 1, SeqCst);
                    }
                    reads.fetch_add(1, SeqCst);
                    held.push(guard);
                    // Hold one to three guards at once, dropped oldest-first or newest-first,
                    // so detaches of the process's minimum race with attaches.
                    if held.len() > (n % 3) as usize {
                        slots[i].store(0, SeqCst);
                        if n % 2 == 0 {
                            drop(held.remove(0));
                        } else {
                            drop(held.pop());
                        }
                        if let Some(oldest) = held.iter().map(|g| g.version()).min() {
                            slots[i].store(oldest + 1, SeqCst);
                        }
                    }
                }
                slots[i].store(0, SeqCst);
            })
        })
        .collect();

    let start = Instant::now();
    let mut version = 1;
    let mut checks = 0u64;
    while start.elapsed() < Duration::from_secs(2) {
        version += 1;
        writer.publish(version).unwrap();
        let oldest = lock.oldest_pinned();
        // Every guard live now pins at least `oldest`.
        for slot in slots.iter() {
            let recorded = slot.load(SeqCst);
            if recorded != 0 {
                let pinned = recorded - 1;
                // `None` says "nothing below `version`" (the latest publish): a guard that
                // attached after the answer pins at least that.
                assert!(
                    oldest.unwrap_or(version) <= pinned,
                    "oldest_pinned said {oldest:?} (after publishing {version}) while a live guard pins {pinned}"
                );
            }
        }
        // Everything below the answer (and below the latest publish) is free.
        let free_below = oldest.unwrap_or(version);
        freed.fetch_max(free_below - 1, SeqCst);
        checks += 1;
    }
    stop.store(true, SeqCst);
    for r in readers {
        r.join().unwrap();
    }
    assert!(
        reads.load(SeqCst) > 1000,
        "only {} reads",
        reads.load(SeqCst)
    );
    assert!(checks > 100, "only {checks} checks");
    assert_eq!(lock.oldest_pinned(), None, "every guard dropped");
    assert_eq!(lock.snapshot().reader_count, 0);
}
