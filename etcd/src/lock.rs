//! [`EtcdLock`], [`EtcdWriter`] and [`EtcdReader`]: the contract over etcd's KV
//! transactions, leases and watches.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use etcd_client::{
    Compare, CompareOp, GetOptions, KeyValue, PutOptions, SortOrder, SortTarget, Txn, TxnOp,
    TxnOpResponse, TxnResponse,
};
use tokio::sync::Mutex;
use tokio::task::JoinHandle;
use tokio::time::{sleep, timeout, Instant};

use crate::conn::{CallError, Conn};
use crate::error::{Error, Result};
use crate::options::Options;

/// Versions are stored as 20 decimal digits, so etcd's byte comparison orders them as
/// numbers (`value(published) < v` in a transaction, pin keys sorted by version).
fn encode(version: u64) -> String {
    format!("{version:020}")
}

fn escape(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    for c in name.chars() {
        match c {
            '/' => out.push_str("%2F"),
            '%' => out.push_str("%25"),
            c => out.push(c),
        }
    }
    out
}

/// The keys of one lock, all under `shmlock/<name>/`.
struct Keys {
    owner: Vec<u8>,
    published: Vec<u8>,
    pins: Vec<u8>,
}

impl Keys {
    fn new(name: &str) -> Keys {
        let prefix = format!("shmlock/{}/", escape(name));
        Keys {
            owner: format!("{prefix}owner").into_bytes(),
            published: format!("{prefix}published").into_bytes(),
            pins: format!("{prefix}pins/").into_bytes(),
        }
    }

    fn pin(&self, version: u64, lease: i64, n: u64) -> Vec<u8> {
        let mut key = self.pins.clone();
        key.extend_from_slice(format!("{}/{lease:x}-{n}", encode(version)).as_bytes());
        key
    }

    /// The end of the range of pins below `version`.
    fn pins_below(&self, version: u64) -> Vec<u8> {
        let mut key = self.pins.clone();
        key.extend_from_slice(encode(version).as_bytes());
        key
    }
}

fn corrupt(kv: &KeyValue) -> Error {
    Error::Corrupt {
        key: String::from_utf8_lossy(kv.key()).into_owned(),
        value: String::from_utf8_lossy(kv.value()).into_owned(),
    }
}

fn parse_version(kv: &KeyValue) -> Result<u64> {
    std::str::from_utf8(kv.value())
        .ok()
        .filter(|s| s.len() == 20)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| corrupt(kv))
}

/// The version in a pin key `…/pins/<20 digits>/<lease>-<n>`.
fn parse_pin(prefix_len: usize, kv: &KeyValue) -> Result<u64> {
    kv.key()
        .get(prefix_len..prefix_len + 20)
        .and_then(|d| std::str::from_utf8(d).ok())
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| corrupt(kv))
}

fn header_revision(response: &TxnResponse) -> i64 {
    response.header().map_or(0, |h| h.revision())
}

/// The key-values of the `index`th operation's range response.
fn range_kvs(response: &TxnResponse, index: usize) -> Vec<KeyValue> {
    match response.op_responses().into_iter().nth(index) {
        Some(TxnOpResponse::Get(mut get)) => get.take_kvs(),
        _ => Vec::new(),
    }
}

/// This handle's lease, kept alive by a task of its own.
struct Session {
    id: i64,
    lost: Arc<AtomicBool>,
    keeper: JoinHandle<()>,
}

pub(crate) struct Inner {
    conn: Conn,
    keys: Keys,
    ttl: Duration,
    session: Mutex<Option<Session>>,
    writer_held: AtomicBool,
    pin_counter: AtomicU64,
    holder: String,
}

impl Drop for Inner {
    fn drop(&mut self) {
        if let Some(session) = self.session.get_mut().take() {
            session.keeper.abort();
            if session.lost.load(Ordering::Relaxed) {
                return;
            }
            // Best effort: revoking the lease frees the role and the pins now instead of
            // at TTL expiry. Drop cannot wait on the network.
            if let Ok(runtime) = tokio::runtime::Handle::try_current() {
                let (_, mut client) = self.conn.client();
                let deadline = self.conn.request_timeout;
                runtime.spawn(async move {
                    let _ = timeout(deadline, client.lease_revoke(session.id)).await;
                });
            }
        }
    }
}

/// A handle on one named lock in an etcd cluster: the writer role with its fencing
/// generation, the published version, and the reader pins. `Clone` shares the handle (one
/// lease, one connection); everything that talks to etcd is async (tokio).
///
/// See the crate docs for how it differs from [`shmlock::ShmLock`].
#[derive(Clone)]
pub struct EtcdLock {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for EtcdLock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdLock")
            .field("key", &String::from_utf8_lossy(&self.inner.keys.owner))
            .field("ttl", &self.inner.ttl)
            .finish()
    }
}

impl EtcdLock {
    /// Connect to the cluster at `endpoints` (URLs such as `"http://127.0.0.1:2379"`) and
    /// open the lock `name` (its keys live under `shmlock/<name>/`). Creates the
    /// `published` key (version 0) if it is missing; grants no lease until the handle
    /// claims or attaches.
    pub async fn connect(endpoints: &[&str], name: &str, options: &Options) -> Result<EtcdLock> {
        let conn = Conn::connect(endpoints, options.request_timeout, options.retry_for).await?;
        let keys = Keys::new(name);
        let published = keys.published.clone();
        conn.call("connect", |mut client, _| {
            let txn = Txn::new()
                .when([Compare::create_revision(
                    published.clone(),
                    CompareOp::Equal,
                    0,
                )])
                .and_then([TxnOp::put(published.clone(), encode(0), None)]);
            async move { client.txn(txn).await }
        })
        .await
        .map_err(|e| e.into_error("connect"))?;
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
        Ok(EtcdLock {
            inner: Arc::new(Inner {
                conn,
                keys,
                ttl: options.lease_ttl(),
                session: Mutex::new(None),
                writer_held: AtomicBool::new(false),
                pin_counter: AtomicU64::new(0),
                holder: format!("host {} pid {}", host.trim(), std::process::id()),
            }),
        })
    }

    /// The TTL of this handle's lease.
    pub fn lease_ttl(&self) -> Duration {
        self.inner.ttl
    }

    /// This handle's live lease, granting a new one (and starting its keep-alive task) if
    /// there is none or the last one was lost.
    async fn lease(&self) -> Result<i64> {
        let mut session = self.inner.session.lock().await;
        if let Some(s) = session.as_ref() {
            if !s.lost.load(Ordering::Acquire) {
                return Ok(s.id);
            }
            s.keeper.abort();
        }
        let ttl = self.inner.ttl.as_secs() as i64;
        let granted_at = Instant::now();
        let id = self
            .inner
            .conn
            .call("lease grant", |mut client, _| async move {
                client.lease_grant(ttl, None).await.map(|r| r.id())
            })
            .await
            .map_err(|e| e.into_error("lease grant"))?;
        let lost = Arc::new(AtomicBool::new(false));
        let keeper = tokio::spawn(keep_alive(
            Arc::downgrade(&self.inner),
            id,
            self.inner.ttl,
            granted_at,
            lost.clone(),
        ));
        *session = Some(Session { id, lost, keeper });
        Ok(id)
    }

    /// Claim the writer role now: `Err(WriterBusy)` if a live owner holds it.
    pub async fn try_claim_writer(&self) -> Result<EtcdWriter> {
        match self.claim_once().await? {
            Claim::Won(writer) => Ok(writer),
            Claim::Busy {
                generation, holder, ..
            } => Err(Error::WriterBusy { generation, holder }),
        }
    }

    /// Claim the writer role, waiting up to `timeout` for the owner to release it or for
    /// its lease to expire (a dead owner is noticed at its TTL, plus up to 0.5 s).
    /// `Err(ClaimTimeout)` (kind `Timeout`, naming the owner) when the time is up.
    pub async fn claim_writer(&self, timeout: Duration) -> Result<EtcdWriter> {
        let start = Instant::now();
        let deadline = start + timeout;
        loop {
            match self.claim_once().await? {
                Claim::Won(writer) => return Ok(writer),
                Claim::Busy {
                    generation,
                    holder,
                    revision,
                } => {
                    if Instant::now() >= deadline {
                        return Err(Error::ClaimTimeout {
                            generation,
                            holder,
                            waited: start.elapsed(),
                        });
                    }
                    self.inner
                        .conn
                        .wait_change(&self.inner.keys.owner, false, revision + 1, deadline)
                        .await;
                }
            }
        }
    }

    async fn claim_once(&self) -> Result<Claim> {
        if self.inner.writer_held.swap(true, Ordering::AcqRel) {
            return Err(Error::AlreadyWriter);
        }
        let result = self.claim_txn().await;
        if !matches!(result, Ok(Claim::Won(_))) {
            self.inner.writer_held.store(false, Ordering::Release);
        }
        result
    }

    /// One claim; if the handle's lease turns out to have expired (it was paused or cut
    /// off), once more with a new lease.
    async fn claim_txn(&self) -> Result<Claim> {
        for _ in 0..2 {
            if let Some(claim) = self.claim_with_lease().await? {
                return Ok(claim);
            }
        }
        Err(Error::Unavailable {
            op: "claim",
            reason: "this handle's lease expired twice in a row".into(),
        })
    }

    /// `Ok(None)` if the lease was not found.
    async fn claim_with_lease(&self) -> Result<Option<Claim>> {
        let lease = self.lease().await?;
        let owner = self.inner.keys.owner.clone();
        let value = format!("{} lease {lease:x}", self.inner.holder);
        let response = self
            .inner
            .conn
            .call("claim", |mut client, _| {
                let txn = Txn::new()
                    .when([Compare::create_revision(owner.clone(), CompareOp::Equal, 0)])
                    .and_then([TxnOp::put(
                        owner.clone(),
                        value.clone(),
                        Some(PutOptions::new().with_lease(lease)),
                    )])
                    .or_else([TxnOp::get(owner.clone(), None)]);
                async move { client.txn(txn).await }
            })
            .await;
        let response = match response {
            Ok(response) => response,
            Err(CallError::Rejected(e)) if is_lease_not_found(&e) => {
                // Our lease expired under us (we were paused, or partitioned): forget it;
                // the next attempt grants a new one.
                self.forget_lease(lease).await;
                return Ok(None);
            }
            Err(e) => return Err(e.into_error("claim")),
        };
        let writer = |generation: u64| EtcdWriter {
            lock: self.clone(),
            generation,
            done: false,
        };
        if response.succeeded() {
            return Ok(Some(Claim::Won(writer(header_revision(&response) as u64))));
        }
        let revision = header_revision(&response);
        match range_kvs(&response, 0).first() {
            // A retried claim whose first attempt won (its answer was lost), or a role this
            // handle's dropped writer did not get to release: the key is bound to our lease.
            Some(kv) if kv.lease() == lease => {
                Ok(Some(Claim::Won(writer(kv.create_revision() as u64))))
            }
            Some(kv) => Ok(Some(Claim::Busy {
                generation: kv.create_revision() as u64,
                holder: String::from_utf8_lossy(kv.value()).into_owned(),
                revision,
            })),
            // Released between the compare and the get: impossible in one transaction, but
            // harmless: report busy at this revision and let the caller retry.
            None => Ok(Some(Claim::Busy {
                generation: 0,
                holder: "nobody (released)".into(),
                revision,
            })),
        }
    }

    async fn forget_lease(&self, lease: i64) {
        let session = self.inner.session.lock().await;
        if let Some(s) = session.as_ref() {
            if s.id == lease {
                s.lost.store(true, Ordering::Release);
            }
        }
    }

    /// The latest published version (0 before the first): a linearizable read.
    pub async fn published(&self) -> Result<u64> {
        Ok(self.read_published().await?.0)
    }

    /// The published version, its key's mod revision, and the read's revision.
    async fn read_published(&self) -> Result<(u64, i64, i64)> {
        let key = self.inner.keys.published.clone();
        let mut response = self
            .inner
            .conn
            .call("read published", |mut client, _| {
                let key = key.clone();
                async move { client.get(key, None).await }
            })
            .await
            .map_err(|e| e.into_error("read published"))?;
        let revision = response.header().map_or(0, |h| h.revision());
        match response.take_kvs().first() {
            Some(kv) => Ok((parse_version(kv)?, kv.mod_revision(), revision)),
            None => Ok((0, 0, revision)),
        }
    }

    /// The first published version above `after`, waiting up to `timeout` (`Err(Timeout)`).
    /// Woken by a watch on the `published` key.
    pub async fn wait_published(&self, after: u64, timeout: Duration) -> Result<u64> {
        let start = Instant::now();
        let deadline = start + timeout;
        loop {
            let (published, _, revision) = self.read_published().await?;
            if published > after {
                return Ok(published);
            }
            if Instant::now() >= deadline {
                return Err(Error::Timeout {
                    what: format!("a version above {after}"),
                    waited: start.elapsed(),
                });
            }
            self.inner
                .conn
                .wait_change(&self.inner.keys.published, false, revision + 1, deadline)
                .await;
        }
    }

    /// The oldest version a live reader pins (over every process and host), or `None`.
    /// A paused reader's pin vanishes when its lease expires.
    pub async fn oldest_pinned(&self) -> Result<Option<u64>> {
        Ok(self.read_oldest(None).await?.0)
    }

    /// The oldest pin (below `below` if given), and the read's revision.
    async fn read_oldest(&self, below: Option<u64>) -> Result<(Option<u64>, i64)> {
        let pins = self.inner.keys.pins.clone();
        let end = match below {
            Some(version) => self.inner.keys.pins_below(version),
            None => {
                let mut end = pins.clone();
                *end.last_mut().expect("the pins prefix ends with '/'") += 1;
                end
            }
        };
        let mut response = self
            .inner
            .conn
            .call("read pins", |mut client, _| {
                let options = GetOptions::new()
                    .with_range(end.clone())
                    .with_sort(SortTarget::Key, SortOrder::Ascend)
                    .with_limit(1)
                    .with_keys_only();
                let pins = pins.clone();
                async move { client.get(pins, Some(options)).await }
            })
            .await
            .map_err(|e| e.into_error("read pins"))?;
        let revision = response.header().map_or(0, |h| h.revision());
        let oldest = match response.take_kvs().first() {
            Some(kv) => Some(parse_pin(self.inner.keys.pins.len(), kv)?),
            None => None,
        };
        Ok((oldest, revision))
    }

    /// Pin the published version while reading it: a key `pins/<version>/<lease>-<n>`
    /// bound to this handle's lease, written only if `published` has not changed since it
    /// was read (so a writer that publishes and then reads the oldest pin cannot miss it).
    /// The pin vanishes when the handle's lease expires: a reader paused for longer than
    /// the TTL has lost it, and must check [`EtcdReader::is_pinned`] after reading.
    pub async fn attach_reader(&self) -> Result<EtcdReader> {
        for _ in 0..2 {
            if let Some(reader) = self.attach_with_lease().await? {
                return Ok(reader);
            }
        }
        Err(Error::Unavailable {
            op: "attach",
            reason: "this handle's lease expired twice in a row".into(),
        })
    }

    /// `Ok(None)` if the lease was not found (then forgotten: the next call grants one).
    async fn attach_with_lease(&self) -> Result<Option<EtcdReader>> {
        let lease = self.lease().await?;
        let n = self.inner.pin_counter.fetch_add(1, Ordering::Relaxed);
        let published_key = self.inner.keys.published.clone();
        let (mut version, mut mod_revision, _) = self.read_published().await?;
        let mut stale: Vec<Vec<u8>> = Vec::new();
        loop {
            let key = self.inner.keys.pin(version, lease, n);
            let response = self
                .inner
                .conn
                .call("attach", |mut client, _| {
                    let mut then = vec![TxnOp::put(
                        key.clone(),
                        "",
                        Some(PutOptions::new().with_lease(lease)),
                    )];
                    // A retried attempt may have written a pin at an older version.
                    then.extend(stale.iter().map(|k| TxnOp::delete(k.clone(), None)));
                    let txn = Txn::new()
                        .when([Compare::mod_revision(
                            published_key.clone(),
                            CompareOp::Equal,
                            mod_revision,
                        )])
                        .and_then(then)
                        .or_else([TxnOp::get(published_key.clone(), None)]);
                    async move { client.txn(txn).await }
                })
                .await;
            let response = match response {
                Ok(response) => response,
                Err(CallError::Rejected(e)) if is_lease_not_found(&e) => {
                    self.forget_lease(lease).await;
                    return Ok(None);
                }
                Err(e) => return Err(e.into_error("attach")),
            };
            if response.succeeded() {
                return Ok(Some(EtcdReader {
                    lock: self.clone(),
                    key,
                    version,
                    done: false,
                }));
            }
            stale.push(key);
            match range_kvs(&response, 0).first() {
                Some(kv) => {
                    version = parse_version(kv)?;
                    mod_revision = kv.mod_revision();
                }
                None => {
                    version = 0;
                    mod_revision = 0;
                }
            }
        }
    }
}

fn is_lease_not_found(e: &etcd_client::Error) -> bool {
    matches!(e, etcd_client::Error::GRpcStatus(s) if s.code() == tonic::Code::NotFound)
}

enum Claim {
    Won(EtcdWriter),
    Busy {
        generation: u64,
        holder: String,
        revision: i64,
    },
}

/// Keep lease `id` alive every TTL/3, on its own task, moving to the next endpoint when
/// one fails. Marks the lease lost when etcd says it expired, or when no keep-alive got
/// through for a whole TTL.
async fn keep_alive(
    inner: std::sync::Weak<Inner>,
    id: i64,
    ttl: Duration,
    granted_at: Instant,
    lost: Arc<AtomicBool>,
) {
    let interval = ttl / 3;
    let mut expires = granted_at + ttl;
    'outer: loop {
        let Some(strong) = inner.upgrade() else {
            return;
        };
        let request_timeout = strong.conn.request_timeout;
        let (i, mut client) = strong.conn.client();
        let opened = timeout(request_timeout, client.lease_keep_alive(id)).await;
        if let Ok(Ok((mut keeper, mut stream))) = opened {
            drop(strong);
            loop {
                let sent = Instant::now();
                let answered = timeout(request_timeout, async {
                    keeper.keep_alive().await?;
                    stream.message().await
                })
                .await;
                match answered {
                    Ok(Ok(Some(response))) if response.ttl() <= 0 => break 'outer,
                    Ok(Ok(Some(response))) => {
                        expires = sent + Duration::from_secs(response.ttl() as u64);
                    }
                    _ => break,
                }
                sleep(interval).await;
            }
        }
        let Some(strong) = inner.upgrade() else {
            return;
        };
        strong.conn.rotate(i);
        drop(strong);
        if Instant::now() >= expires {
            break;
        }
        sleep(Duration::from_millis(100)).await;
    }
    log::warn!(
        "shmlock-etcd: lease {id:x} expired: this handle's writer role and reader pins are gone"
    );
    lost.store(true, Ordering::Release);
}

/// The writer role. [`generation`](EtcdWriter::generation) is the fencing token: the etcd
/// revision of the claim, strictly increasing over claims (with gaps). Release it with
/// [`release`](EtcdWriter::release); `Drop` only *tries* to (it cannot wait on the
/// network), and otherwise the role frees itself when the handle's lease expires.
pub struct EtcdWriter {
    lock: EtcdLock,
    generation: u64,
    done: bool,
}

impl std::fmt::Debug for EtcdWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdWriter")
            .field("generation", &self.generation)
            .finish()
    }
}

impl EtcdWriter {
    /// The fencing token: stamp every durable write with it.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// Publish `version`, fenced inside etcd: one transaction that writes `published` only
    /// if the owner key is still this claim's (`create_revision == generation`) and the
    /// published version is below `version`. `Err(Deposed)` if not the owner,
    /// `Err(VersionNotIncreasing)` if not above, `Err(Unavailable)` if the cluster did not
    /// answer (then it may or may not have landed; it never lands once a later claim won).
    /// A retried attempt that finds `version` already published while still the owner is
    /// done.
    pub async fn publish(&self, version: u64) -> Result<()> {
        let keys = &self.lock.inner.keys;
        let generation = self.generation as i64;
        let mut retried = false;
        let response = self
            .lock
            .inner
            .conn
            .call("publish", |mut client, attempt| {
                retried |= attempt > 0;
                let txn = Txn::new()
                    .when([
                        Compare::create_revision(keys.owner.clone(), CompareOp::Equal, generation),
                        Compare::value(keys.published.clone(), CompareOp::Less, encode(version)),
                    ])
                    .and_then([TxnOp::put(keys.published.clone(), encode(version), None)])
                    .or_else([
                        TxnOp::get(keys.owner.clone(), None),
                        TxnOp::get(keys.published.clone(), None),
                    ]);
                async move { client.txn(txn).await }
            })
            .await
            .map_err(|e| e.into_error("publish"))?;
        if response.succeeded() {
            return Ok(());
        }
        let owner = range_kvs(&response, 0);
        if owner.first().map(|kv| kv.create_revision()) != Some(generation) {
            return Err(self.deposed());
        }
        let published = match range_kvs(&response, 1).first() {
            Some(kv) => parse_version(kv)?,
            None => 0,
        };
        if retried && published == version {
            return Ok(());
        }
        Err(Error::VersionNotIncreasing { version, published })
    }

    fn deposed(&self) -> Error {
        Error::Deposed {
            generation: self.generation,
        }
    }

    /// Whether this writer still owns the role: a linearizable read of the owner key (a
    /// round trip through the cluster's leader, not an atomic load). `Ok(false)` once its
    /// lease expired or another claim won.
    pub async fn is_current(&self) -> Result<bool> {
        let owner = self.lock.inner.keys.owner.clone();
        let mut response = self
            .lock
            .inner
            .conn
            .call("is_current", |mut client, _| {
                let owner = owner.clone();
                async move { client.get(owner, None).await }
            })
            .await
            .map_err(|e| e.into_error("is_current"))?;
        Ok(response
            .take_kvs()
            .first()
            .is_some_and(|kv| kv.create_revision() as u64 == self.generation))
    }

    /// Wait up to `timeout` until no live reader pins a version below `version`
    /// (`Err(Timeout)`). Woken by a watch on the pins; a killed reader's pins vanish at its
    /// lease's expiry.
    pub async fn wait_readers_past(&self, version: u64, timeout: Duration) -> Result<()> {
        let start = Instant::now();
        let deadline = start + timeout;
        loop {
            let (oldest, revision) = self.lock.read_oldest(Some(version)).await?;
            if oldest.is_none() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(Error::Timeout {
                    what: format!("readers to move past version {version}"),
                    waited: start.elapsed(),
                });
            }
            self.lock
                .inner
                .conn
                .wait_change(&self.lock.inner.keys.pins, true, revision + 1, deadline)
                .await;
        }
    }

    /// Give the role up: deletes the owner key if it is still this claim's. `Err(Deposed)`
    /// if another claim had won (or the lease expired). A retried release that finds the
    /// key gone reports success: its first attempt may have deleted it.
    pub async fn release(mut self) -> Result<()> {
        self.done = true;
        let result = release_txn(&self.lock, self.generation).await;
        self.lock.inner.writer_held.store(false, Ordering::Release);
        match result {
            Ok(true) => Ok(()),
            Ok(false) => Err(self.deposed()),
            Err(e) => Err(e),
        }
    }
}

/// Delete the owner key if its `create_revision` is `generation`. `Ok(false)` if it was not
/// (on the first attempt).
async fn release_txn(lock: &EtcdLock, generation: u64) -> Result<bool> {
    let owner = lock.inner.keys.owner.clone();
    let mut retried = false;
    let response = lock
        .inner
        .conn
        .call("release", |mut client, attempt| {
            retried |= attempt > 0;
            let txn = Txn::new()
                .when([Compare::create_revision(
                    owner.clone(),
                    CompareOp::Equal,
                    generation as i64,
                )])
                .and_then([TxnOp::delete(owner.clone(), None)]);
            async move { client.txn(txn).await }
        })
        .await
        .map_err(|e| e.into_error("release"))?;
    Ok(response.succeeded() || retried)
}

impl Drop for EtcdWriter {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        self.lock.inner.writer_held.store(false, Ordering::Release);
        // Best effort: without a runtime, or if the task does not run before the program
        // ends, the role frees itself at the lease's expiry.
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            let lock = self.lock.clone();
            let generation = self.generation;
            runtime.spawn(async move {
                let _ = release_txn(&lock, generation).await;
            });
        }
    }
}

/// A reader pin on [`version`](EtcdReader::version): a key bound to the handle's lease.
/// Remove it with [`detach`](EtcdReader::detach); `Drop` only *tries* to, and otherwise it
/// vanishes with the handle's lease.
pub struct EtcdReader {
    lock: EtcdLock,
    key: Vec<u8>,
    version: u64,
    done: bool,
}

impl std::fmt::Debug for EtcdReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdReader")
            .field("version", &self.version)
            .finish()
    }
}

impl EtcdReader {
    /// The version this reader pins.
    pub fn version(&self) -> u64 {
        self.version
    }

    /// Whether the pin still stands (a linearizable read). A reader that was paused or cut
    /// off for longer than the lease TTL has lost its pin, and the writer may have reused
    /// what it read: check this *after* reading, and discard the read if it says `false`.
    pub async fn is_pinned(&self) -> Result<bool> {
        let key = self.key.clone();
        let response = self
            .lock
            .inner
            .conn
            .call("is_pinned", |mut client, _| {
                let key = key.clone();
                async move {
                    client
                        .get(key, Some(GetOptions::new().with_count_only()))
                        .await
                }
            })
            .await
            .map_err(|e| e.into_error("is_pinned"))?;
        Ok(response.count() > 0)
    }

    /// Remove the pin (idempotent: retried until the cluster answers).
    pub async fn detach(mut self) -> Result<()> {
        self.done = true;
        detach_key(&self.lock, std::mem::take(&mut self.key)).await
    }
}

/// Delete a reader's pin key (idempotent: retried until the cluster answers).
async fn detach_key(lock: &EtcdLock, key: Vec<u8>) -> Result<()> {
    lock.inner
        .conn
        .call("detach", |mut client, _| {
            let key = key.clone();
            async move { client.delete(key, None).await }
        })
        .await
        .map_err(|e| e.into_error("detach"))?;
    Ok(())
}

impl Drop for EtcdReader {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            let lock = self.lock.clone();
            let key = std::mem::take(&mut self.key);
            runtime.spawn(async move {
                let _ = detach_key(&lock, key).await;
            });
        }
    }
}
