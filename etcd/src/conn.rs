//! The connection: one client per endpoint, per-request timeouts, retries that move to the
//! next endpoint, and the watch used by every wait.

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use etcd_client::{Client, ConnectOptions, WatchOptions};
use tokio::time::{sleep, timeout, timeout_at, Instant};

use crate::error::{Error, Result};

/// HTTP/2 keep-alive: etcd refuses a connection that pings more often than its
/// `--grpc-keepalive-min-time` (5 s by default) with `ResourceExhausted` ("too many pings").
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(10);
const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(5);
/// A wait re-reads the state at least this often even if its watch says nothing, so a
/// watch on a member that stopped answering (paused, partitioned) cannot hold it forever.
const WAIT_SLICE: Duration = Duration::from_secs(3);

/// What one attempt's failure means.
pub(crate) enum Failure {
    /// Worth retrying on another endpoint: transport errors, timeouts, no leader.
    Retry(String),
    /// The cluster answered, and the answer is an error (e.g. the lease is not found).
    Rejected(etcd_client::Error),
}

fn classify(e: etcd_client::Error) -> Failure {
    use etcd_client::Error as E;
    match &e {
        E::GRpcStatus(status) => match status.code() {
            tonic_code::NotFound
            | tonic_code::InvalidArgument
            | tonic_code::FailedPrecondition
            | tonic_code::OutOfRange
            | tonic_code::PermissionDenied
            | tonic_code::Unauthenticated
            | tonic_code::AlreadyExists => Failure::Rejected(e),
            _ => Failure::Retry(e.to_string()),
        },
        E::InvalidArgs(_) | E::InvalidUri(_) => Failure::Rejected(e),
        _ => Failure::Retry(e.to_string()),
    }
}

use tonic::Code as tonic_code;

pub(crate) struct Conn {
    clients: Vec<Client>,
    current: AtomicUsize,
    pub(crate) request_timeout: Duration,
    pub(crate) retry_for: Duration,
}

impl Conn {
    pub(crate) async fn connect(
        endpoints: &[&str],
        request_timeout: Duration,
        retry_for: Duration,
    ) -> Result<Conn> {
        if endpoints.is_empty() {
            return Err(Error::Unavailable {
                op: "connect",
                reason: "no endpoint given".into(),
            });
        }
        let options = ConnectOptions::new()
            .with_require_leader(true)
            .with_connect_timeout(request_timeout)
            .with_keep_alive(KEEPALIVE_INTERVAL, KEEPALIVE_TIMEOUT)
            .with_keep_alive_while_idle(false);
        let mut clients = Vec::with_capacity(endpoints.len());
        // One client per endpoint, so a failed request moves on to the next member instead
        // of being balanced onto the dead one again. Connections are made lazily.
        for endpoint in endpoints {
            let client = Client::connect([*endpoint], Some(options.clone()))
                .await
                .map_err(|e| Error::Unavailable {
                    op: "connect",
                    reason: format!("{endpoint}: {e}"),
                })?;
            clients.push(client);
        }
        Ok(Conn {
            clients,
            current: AtomicUsize::new(0),
            request_timeout,
            retry_for,
        })
    }

    /// The client to use now, and its index.
    pub(crate) fn client(&self) -> (usize, Client) {
        let i = self.current.load(Ordering::Relaxed) % self.clients.len();
        (i, self.clients[i].clone())
    }

    /// Move on from endpoint `i` (unless another task already did).
    pub(crate) fn rotate(&self, i: usize) {
        let _ = self.current.compare_exchange(
            i,
            (i + 1) % self.clients.len(),
            Ordering::Relaxed,
            Ordering::Relaxed,
        );
    }

    /// Run `attempt` (given a client and the attempt number, from 0) until it succeeds, the
    /// cluster rejects it, or `retry_for` has passed (`Unavailable`). Every attempt has the
    /// request timeout; a failed one moves to the next endpoint.
    pub(crate) async fn call<T, F, Fut>(
        &self,
        op: &'static str,
        mut attempt: F,
    ) -> Result<T, CallError>
    where
        F: FnMut(Client, u32) -> Fut,
        Fut: Future<Output = Result<T, etcd_client::Error>>,
    {
        let deadline = Instant::now() + self.retry_for;
        let mut last = String::from("no attempt finished");
        for n in 0u32.. {
            let now = Instant::now();
            if n > 0 && now >= deadline {
                break;
            }
            let budget = self
                .request_timeout
                .min(deadline.saturating_duration_since(now))
                .max(Duration::from_millis(50));
            let (i, client) = self.client();
            match timeout(budget, attempt(client, n)).await {
                Ok(Ok(value)) => return Ok(value),
                Ok(Err(e)) => match classify(e) {
                    Failure::Rejected(e) => return Err(CallError::Rejected(e)),
                    Failure::Retry(reason) => last = reason,
                },
                Err(_) => last = format!("no answer within {budget:?}"),
            }
            log::debug!("etcd {op}: attempt {n} on endpoint {i} failed: {last}");
            self.rotate(i);
            let backoff = Duration::from_millis(20 * u64::from(n.min(10) + 1));
            sleep(backoff.min(deadline.saturating_duration_since(Instant::now()))).await;
        }
        Err(CallError::Unavailable(Error::Unavailable {
            op,
            reason: last,
        }))
    }

    /// Wait until something changes under `key` (a prefix if `prefix`) at or after revision
    /// `from`, or until `deadline`, or until [`WAIT_SLICE`] passes. Every outcome — an
    /// event, a cancelled or compacted watch, a broken stream — returns, and the caller
    /// re-reads the state and watches again from the revision of that read: a watch
    /// restarts from the last revision seen and survives compaction by construction.
    pub(crate) async fn wait_change(&self, key: &[u8], prefix: bool, from: i64, deadline: Instant) {
        let slice_end = deadline.min(Instant::now() + WAIT_SLICE);
        let (i, mut client) = self.client();
        let mut options = WatchOptions::new().with_start_revision(from);
        if prefix {
            options = options.with_prefix();
        }
        let opened = timeout_at(
            slice_end.min(Instant::now() + self.request_timeout),
            client.watch(key.to_vec(), Some(options)),
        )
        .await;
        let mut stream = match opened {
            Ok(Ok(stream)) => stream,
            Ok(Err(e)) => {
                log::debug!("etcd watch on endpoint {i} failed: {e}");
                self.rotate(i);
                sleep(Duration::from_millis(50)).await;
                return;
            }
            Err(_) => {
                self.rotate(i);
                return;
            }
        };
        loop {
            match timeout_at(slice_end, stream.message()).await {
                Err(_) => return,
                Ok(Ok(Some(response))) => {
                    if response.canceled() || !response.events().is_empty() {
                        return;
                    }
                }
                Ok(Ok(None)) | Ok(Err(_)) => {
                    self.rotate(i);
                    sleep(Duration::from_millis(50)).await;
                    return;
                }
            }
        }
    }
}

/// Why a [`Conn::call`] failed.
pub(crate) enum CallError {
    /// Retries ran out: an [`Error::Unavailable`].
    Unavailable(Error),
    /// The cluster answered with an error.
    Rejected(etcd_client::Error),
}

impl CallError {
    /// As a public error: a rejection is reported as `Unavailable` too (the operation did
    /// not happen, and retrying later may succeed).
    pub(crate) fn into_error(self, op: &'static str) -> Error {
        match self {
            CallError::Unavailable(e) => e,
            CallError::Rejected(e) => Error::Unavailable {
                op,
                reason: e.to_string(),
            },
        }
    }
}
