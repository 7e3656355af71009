//! The generated code of the local backend through the `Backend` trait, beside the direct
//! calls: both functions call `ShmLock::attach_reader` and `ReaderGuard::detach` and nothing
//! else on their hot path (the trait's version moves the 56-byte `Result` a few more times).
//!
//! ```text
//! cargo rustc --release -p shmlock-etcd --example local_codegen -- --emit asm -C debuginfo=0
//! f=$(ls -t target/release/examples/local_codegen-*.s | head -1)
//! awk '/^probe_trait:/,/cfi_endproc/' $f | grep call
//! ```

use shmlock::backend::{block_on, Backend, BackendReader};
#[inline(never)]
#[no_mangle]
pub fn probe_direct(lock: &shmlock::ShmLock) -> u64 {
    let r = lock.attach_reader().unwrap();
    let v = r.version();
    r.detach().unwrap();
    v
}
#[inline(never)]
#[no_mangle]
pub fn probe_trait(lock: &shmlock::ShmLock) -> u64 {
    let r = block_on(Backend::attach_reader(lock)).unwrap();
    let v = r.version();
    block_on(BackendReader::detach(r)).unwrap();
    v
}
fn main() {
    let dir = tempfile::tempdir().unwrap();
    let lock = shmlock::ShmLock::open(dir.path().join("x")).unwrap();
    println!("{} {}", probe_direct(&lock), probe_trait(&lock));
}
