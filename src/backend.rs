//! One interface an engine is written against once: [`Backend`], with its [`BackendWriter`]
//! and [`BackendReader`], implemented here for [`ShmLock`] (one host, a mapped page) and by
//! the `shmlock-etcd` crate for `EtcdLock` (several hosts, an etcd cluster).
//!
//! Every operation that may talk to a network returns a future. The local implementation
//! returns [`Done`]: the work is done inline when the method is called (the same code as
//! the direct call), and the future is ready at its first poll. Generic engine code
//! therefore monomorphises to the direct calls: [`block_on`] polls such a future once with
//! a no-op waker, and the optimiser removes the wrapper. BENCHMARKS.md ("One interface,
//! two backends") compares the two: `publish`, `published` and `oldest_pinned` cost the
//! same; the calls that return a guard move its `Result` a few more times. A wait of the local backend (`claim_writer`, `wait_published`,
//! `wait_readers_past`) sleeps inside the call, exactly like its blocking form: on an async
//! runtime, call the engine's waits on a blocking thread, or use the `tokio` feature's
//! `*_async` methods directly.
//!
//! ```
//! use std::time::Duration;
//! use shmlock::backend::{block_on, Backend, BackendWriter};
//!
//! // Written once, for any backend.
//! async fn commit<B: Backend>(lock: &B, version: u64) -> Result<u64, B::Error> {
//!     let writer = lock.claim_writer(Duration::from_secs(1)).await?;
//!     let token = writer.generation(); // stamp the data's writes with it
//!     writer.publish(version).await?;
//!     writer.release().await?;
//!     Ok(token)
//! }
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # let dir = tempfile::tempdir()?;
//! let lock = shmlock::ShmLock::open(dir.path().join("app.db-shm"))?;
//! let generation = block_on(commit(&lock, 7))?; // local: no runtime needed
//! assert!(generation > 0);
//! assert_eq!(lock.published(), 7);
//! # Ok(()) }
//! ```

use std::future::Future;
use std::mem::ManuallyDrop;
use std::pin::pin;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use crate::{Error, ErrorKind, ReaderGuard, ShmLock, WriterGuard};

/// An error of a backend, with the [`ErrorKind`] a program branches on.
pub trait BackendError: std::error::Error + Send + Sync + 'static {
    /// What kind of error this is (`Deposed`, `WriterBusy`, `Timeout`,
    /// `VersionNotIncreasing`, `Unavailable`, …).
    fn kind(&self) -> ErrorKind;
}

impl BackendError for Error {
    #[inline]
    fn kind(&self) -> ErrorKind {
        Error::kind(self)
    }
}

/// A coordination point for one database: one writer with a fencing generation, published
/// versions that only grow, reader pins with the oldest pin known, and waits on both sides.
pub trait Backend: Send + Sync {
    /// The writer role, held until [`BackendWriter::release`].
    type Writer: BackendWriter<Error = Self::Error>;
    /// A reader pin, held until [`BackendReader::detach`].
    type Reader: BackendReader<Error = Self::Error>;
    /// The backend's error.
    type Error: BackendError;

    /// Claim the writer role now, or fail with `WriterBusy`.
    fn try_claim_writer(&self) -> impl Future<Output = Result<Self::Writer, Self::Error>> + Send;
    /// Claim the writer role, waiting up to `timeout` for the owner to release it or die.
    fn claim_writer(
        &self,
        timeout: Duration,
    ) -> impl Future<Output = Result<Self::Writer, Self::Error>> + Send;
    /// Pin the latest published version while reading it.
    fn attach_reader(&self) -> impl Future<Output = Result<Self::Reader, Self::Error>> + Send;
    /// The latest published version (0 before the first).
    fn published(&self) -> impl Future<Output = Result<u64, Self::Error>> + Send;
    /// The first published version above `after`, waiting up to `timeout` (`Timeout`).
    fn wait_published(
        &self,
        after: u64,
        timeout: Duration,
    ) -> impl Future<Output = Result<u64, Self::Error>> + Send;
    /// The oldest version a live reader pins, or `None`.
    fn oldest_pinned(&self) -> impl Future<Output = Result<Option<u64>, Self::Error>> + Send;
}

/// The writer role of a [`Backend`].
pub trait BackendWriter: Send + Sync + Sized {
    /// The backend's error.
    type Error: BackendError;
    /// The fencing token: strictly increasing over successful claims.
    fn generation(&self) -> u64;
    /// Publish `version` (above the published one), fenced: `Deposed` if no longer the owner.
    fn publish(&self, version: u64) -> impl Future<Output = Result<(), Self::Error>> + Send;
    /// Whether this writer still owns the role.
    fn is_current(&self) -> impl Future<Output = Result<bool, Self::Error>> + Send;
    /// Wait up to `timeout` until no live reader pins a version below `version`.
    fn wait_readers_past(
        &self,
        version: u64,
        timeout: Duration,
    ) -> impl Future<Output = Result<(), Self::Error>> + Send;
    /// Give the role up (`Deposed` if another claim had won).
    fn release(self) -> impl Future<Output = Result<(), Self::Error>> + Send;
}

/// A reader pin of a [`Backend`].
pub trait BackendReader: Send + Sync + Sized {
    /// The backend's error.
    type Error: BackendError;
    /// The version this reader pins.
    fn version(&self) -> u64;
    /// Drop the pin.
    fn detach(self) -> impl Future<Output = Result<(), Self::Error>> + Send;
}

impl Backend for ShmLock {
    type Writer = WriterGuard;
    type Reader = ReaderGuard;
    type Error = Error;

    #[inline]
    fn try_claim_writer(&self) -> impl Future<Output = Result<WriterGuard, Error>> + Send {
        ready(ShmLock::try_claim_writer(self))
    }
    #[inline]
    fn claim_writer(
        &self,
        timeout: Duration,
    ) -> impl Future<Output = Result<WriterGuard, Error>> + Send {
        ready(ShmLock::claim_writer(self, timeout))
    }
    #[inline]
    fn attach_reader(&self) -> impl Future<Output = Result<ReaderGuard, Error>> + Send {
        ready(ShmLock::attach_reader(self))
    }
    #[inline]
    fn published(&self) -> impl Future<Output = Result<u64, Error>> + Send {
        ready(Ok(ShmLock::published(self)))
    }
    #[inline]
    fn wait_published(
        &self,
        after: u64,
        timeout: Duration,
    ) -> impl Future<Output = Result<u64, Error>> + Send {
        ready(ShmLock::wait_published(self, after, timeout))
    }
    #[inline]
    fn oldest_pinned(&self) -> impl Future<Output = Result<Option<u64>, Error>> + Send {
        ready(Ok(ShmLock::oldest_pinned(self)))
    }
}

impl BackendWriter for WriterGuard {
    type Error = Error;

    #[inline]
    fn generation(&self) -> u64 {
        WriterGuard::generation(self)
    }
    #[inline]
    fn publish(&self, version: u64) -> impl Future<Output = Result<(), Error>> + Send {
        ready(WriterGuard::publish(self, version))
    }
    #[inline]
    fn is_current(&self) -> impl Future<Output = Result<bool, Error>> + Send {
        ready(Ok(WriterGuard::is_current(self)))
    }
    #[inline]
    fn wait_readers_past(
        &self,
        version: u64,
        timeout: Duration,
    ) -> impl Future<Output = Result<(), Error>> + Send {
        ready(WriterGuard::wait_readers_past(self, version, timeout))
    }
    #[inline]
    fn release(self) -> impl Future<Output = Result<(), Error>> + Send {
        ready(WriterGuard::release(self))
    }
}

impl BackendReader for ReaderGuard {
    type Error = Error;

    #[inline]
    fn version(&self) -> u64 {
        ReaderGuard::version(self)
    }
    #[inline]
    fn detach(self) -> impl Future<Output = Result<(), Error>> + Send {
        ready(ReaderGuard::detach(self))
    }
}

/// A future that is ready at once with a value computed when it was made: the local
/// backend's futures. Unlike [`std::future::Ready`], dropping it after its poll compiles to
/// nothing (its emptied slot is seen to be empty), so a guard that travels through it costs
/// no more than the direct call (BENCHMARKS.md, "The one interface").
#[derive(Debug)]
#[must_use = "futures do nothing unless polled"]
pub struct Done<T>(ManuallyDrop<Option<T>>);

impl<T> Unpin for Done<T> {}

#[inline(always)]
fn ready<T>(value: T) -> Done<T> {
    Done(ManuallyDrop::new(Some(value)))
}

impl<T> Future for Done<T> {
    type Output = T;
    #[inline(always)]
    fn poll(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<T> {
        match self.0.take() {
            Some(value) => Poll::Ready(value),
            None => polled_twice(),
        }
    }
}

impl<T> Drop for Done<T> {
    #[inline(always)]
    fn drop(&mut self) {
        if self.0.is_some() {
            drop_unpolled(&mut self.0);
        }
    }
}

#[cold]
#[inline(never)]
fn polled_twice() -> ! {
    panic!("a shmlock::backend::Done future was polled after it completed")
}

#[cold]
fn drop_unpolled<T>(slot: &mut ManuallyDrop<Option<T>>) {
    // SAFETY: called once, from Drop, on a slot that is never used again.
    unsafe { ManuallyDrop::drop(slot) }
}

/// Run `future` to completion on this thread: poll it, and park between polls until its
/// waker is called. For the local backend's futures (ready at once) this is one poll that
/// the optimiser inlines away; it is not an async runtime (the etcd backend needs tokio).
#[inline]
pub fn block_on<F: Future>(future: F) -> F::Output {
    let mut future = pin!(future);
    // Fast path: a ready future (the local backend) needs no waker that does anything.
    let mut cx = Context::from_waker(Waker::noop());
    if let Poll::Ready(output) = future.as_mut().poll(&mut cx) {
        return output;
    }
    block_on_slow(future)
}

#[cold]
fn block_on_slow<F: Future>(mut future: Pin<&mut F>) -> F::Output {
    use std::sync::Arc;
    use std::task::Wake;
    struct Unpark(std::thread::Thread);
    impl Wake for Unpark {
        fn wake(self: Arc<Self>) {
            self.0.unpark();
        }
        fn wake_by_ref(self: &Arc<Self>) {
            self.0.unpark();
        }
    }
    let waker = Waker::from(Arc::new(Unpark(std::thread::current())));
    let mut cx = Context::from_waker(&waker);
    loop {
        if let Poll::Ready(output) = future.as_mut().poll(&mut cx) {
            return output;
        }
        std::thread::park();
    }
}
