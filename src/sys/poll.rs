//! Waits on a word where the kernel file has no way to sleep until a change: macOS before
//! 14.4 (no `os_sync_wait_on_address`), and Windows when a word's named event cannot be
//! made (`WaitOnAddress` wakes only the waker's own process).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// How long one sleep of [`wait_on_word`] lasts before it looks at the word again.
const POLL: Duration = Duration::from_millis(1);

/// A wait on a word without a wake-up: sleep in [`POLL`]s until the word's low 32 bits
/// differ from `expected`'s, or `timeout`. Spurious wake-ups never happen; wakers need not call anything.
pub(crate) fn wait_on_word(word: &AtomicU64, expected: u64, timeout: Duration) {
    let start = Instant::now();
    while word.load(Ordering::SeqCst) as u32 == expected as u32 {
        let left = timeout.saturating_sub(start.elapsed());
        if left.is_zero() {
            return;
        }
        std::thread::sleep(left.min(POLL));
    }
}
