//! A handle used in a forked child returns `ForkedHandle` and leaves the parent's state
//! alone. In its own test binary: the child runs only code that neither allocates nor
//! takes locks before `_exit`.

// Unix only: Windows has no fork(), so there is no forked handle to refuse (the Windows
// kernel file has no fork hook).
#![cfg(unix)]

use nix::sys::wait::{waitpid, WaitStatus};
use nix::unistd::{fork, ForkResult};
use shmlock::{Error, ShmLock};

#[test]
fn handle_used_after_fork_returns_forked_handle_and_parent_is_unharmed() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("fork-shm");
    let lock = ShmLock::open(&path).unwrap();
    let writer = lock.try_claim_writer().unwrap();
    let reader = lock.attach_reader().unwrap();
    // SAFETY: the child calls shmlock's fork-checked entry points (an atomic load and a
    // comparison each) and `snapshot` (which opens, reads and allocates: glibc's malloc is
    // fork-safe through its own atfork handlers, and no lock of the library is taken), then
    // `_exit`.
    match unsafe { fork() }.unwrap() {
        ForkResult::Child => {
            let mut code = 0;
            if !matches!(lock.attach_reader(), Err(Error::ForkedHandle)) {
                code |= 1;
            }
            if !matches!(lock.try_claim_writer(), Err(Error::ForkedHandle)) {
                code |= 2;
            }
            if !matches!(writer.heartbeat(), Err(Error::ForkedHandle)) {
                code |= 4;
            }
            if writer.is_current() {
                code |= 8;
            }
            if !matches!(lock.reap(), Err(Error::ForkedHandle)) {
                code |= 16;
            }
            if !matches!(writer.publish(1), Err(Error::ForkedHandle)) {
                code |= 32;
            }
            // The child's snapshot is a read-only look at the file: the parent's state.
            if lock.snapshot().reader_count != 1 {
                code |= 64;
            }
            // Dropping inherited guards in the child must not touch the parent's state.
            drop(reader);
            drop(writer);
            // SAFETY: `_exit` ends the child without running the parent's destructors.
            unsafe { nix::libc::_exit(code) };
        }
        ForkResult::Parent { child } => {
            let status = waitpid(child, None).unwrap();
            assert_eq!(status, WaitStatus::Exited(child, 0), "child checks failed");
            let snap = lock.snapshot();
            assert_eq!(
                snap.reader_count, 1,
                "the child's drop detached the parent's reader"
            );
            assert!(
                writer.is_current(),
                "the child's drop released the parent's writer"
            );
            writer.heartbeat().unwrap();
            drop(reader);
            assert_eq!(lock.snapshot().reader_count, 0);
        }
    }
}
