//! [`Options`]: the lease TTL and the client's timeouts.

use std::time::Duration;

/// The shortest lease this crate asks for. etcd raises shorter TTLs to its own minimum
/// (1.5 × its election timeout, 1.5 s with the defaults) and counts TTLs in whole seconds;
/// a lease shorter than a leader election would depose healthy owners whenever the
/// cluster changes leader.
pub const MIN_LEASE: Duration = Duration::from_secs(2);

/// How an [`EtcdLock`](crate::EtcdLock) behaves: a by-value builder.
///
/// ```
/// use std::time::Duration;
/// let options = shmlock_etcd::Options::new()
///     .lease(Duration::from_secs(5))
///     .request_timeout(Duration::from_millis(500));
/// assert_eq!(options.lease_ttl(), Duration::from_secs(5));
/// ```
#[derive(Clone, Debug)]
pub struct Options {
    pub(crate) lease: Duration,
    pub(crate) request_timeout: Duration,
    pub(crate) retry_for: Duration,
}

impl Default for Options {
    fn default() -> Options {
        Options::new()
    }
}

impl Options {
    /// The defaults: lease 10 s, request timeout 1 s, retries for 5 s.
    pub fn new() -> Options {
        Options {
            lease: Duration::from_secs(10),
            request_timeout: Duration::from_secs(1),
            retry_for: Duration::from_secs(5),
        }
    }

    /// The TTL of this handle's lease, which the owner's key and every reader pin of the
    /// handle are bound to. A process silent for longer (dead, paused, partitioned) loses
    /// the writer role and its pins when etcd expires the lease: liveness is this TTL (plus
    /// up to 0.5 s, etcd's expiry check), not the instant death of the local backend.
    /// Rounded up to whole seconds; at least [`MIN_LEASE`] (2 s), shorter values are
    /// raised. The lease is kept alive every TTL/3 by a task of its own.
    pub fn lease(mut self, ttl: Duration) -> Options {
        self.lease = ttl;
        self
    }

    /// How long one request may take before it is abandoned and retried on the next
    /// endpoint (default 1 s). Without it, a request sent to a dead or partitioned member
    /// waits for TCP to give up.
    pub fn request_timeout(mut self, timeout: Duration) -> Options {
        self.request_timeout = timeout;
        self
    }

    /// How long an operation is retried (on every endpoint in turn) before it fails with
    /// [`Error::Unavailable`](crate::Error::Unavailable) (default 5 s).
    pub fn retry_for(mut self, budget: Duration) -> Options {
        self.retry_for = budget;
        self
    }

    /// The lease TTL the handle will ask for: [`lease`](Options::lease) raised to
    /// [`MIN_LEASE`] and rounded up to whole seconds.
    pub fn lease_ttl(&self) -> Duration {
        let secs = self.lease.max(MIN_LEASE).as_nanos().div_ceil(1_000_000_000);
        Duration::from_secs(secs as u64)
    }
}
