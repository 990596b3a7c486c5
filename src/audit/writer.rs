//! The [`Recorder`]: the data path's handle to the store.
//!
//! Events go through a bounded queue to a writer thread of their own, which gives each its
//! chain position, encodes and hashes it, and appends them in batches (one transaction each),
//! then signs the chain head every `checkpoint_interval`. The data path never waits on disk.
//!
//! The queue is bounded twice: in records (`queue_size`) and in bytes (`queue_bytes`, each
//! event weighed by [`Event::weight`]; the room an event takes is given back once its record
//! is written). A writer that falls behind therefore slows the relay down (backpressure)
//! instead of making it buffer: a large result costs the same memory as a small one.
//!
//! Fail closed (PCI DSS 10.7): while the store fails [`Recorder::record`] refuses at once, and
//! the proxy refuses the statement it wanted to record; while the queue is full the relay
//! waits for room up to `queue_wait`, then refuses the same way (a statement with 58030, a
//! result by ending its connection with 58030). The writer keeps the batch it could not
//! write and retries it (reconnecting) until the store takes it, so nothing already accepted
//! is lost or reordered; the outage itself becomes a `store_failure` record once the store is
//! back.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::{Semaphore, TryAcquireError, mpsc, oneshot};
use tracing::{error, info, warn};

use super::record::{self, GENESIS, Signer};
use super::store::{self, Encoded, Location, Store};
use super::{Event, Outcome, Who, kind, now_ts};

/// The store cannot take the record now; the statement must be refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Unavailable {
    #[error("the audit store is failing")]
    Failing,
    #[error("the audit queue is full")]
    Full,
    #[error("the audit writer has stopped")]
    Stopped,
}

enum Msg {
    /// An event, its timestamp and the queue room (bytes) it holds until written.
    Event(Box<Event>, String, u32),
    /// Answered once everything queued before it is written and checkpointed.
    Flush(oneshot::Sender<()>),
}

struct Inner {
    tx: mpsc::Sender<Msg>,
    /// The queue's room in bytes: taken by an event as it is queued, given back once its
    /// record is written.
    room: Semaphore,
    queue_bytes: usize,
    /// How long the relay waits for room before refusing.
    wait: Duration,
    failing: AtomicBool,
    /// Set while an alert for the current outage has been logged.
    alerted: AtomicBool,
    /// Records refused because the queue was full or the store failing (a metric).
    refused: AtomicU64,
    written: AtomicU64,
    queue_size: usize,
    chain: String,
}

/// The handle connections and the daemon record through. Cheap to clone.
#[derive(Clone)]
pub struct Recorder {
    inner: Arc<Inner>,
    thread: Arc<std::sync::Mutex<Option<std::thread::JoinHandle<()>>>>,
}

/// How the writer runs.
#[derive(Clone)]
pub struct Settings {
    pub location: Location,
    pub chain: String,
    pub checkpoint_interval: Duration,
    pub batch_size: usize,
    pub queue_size: usize,
    /// Bytes of records waiting for the store, at most (see [`Event::weight`]).
    pub queue_bytes: usize,
    /// How long [`Recorder::record_within`] waits for room in a full queue.
    pub queue_wait: Duration,
    pub retention_days: u32,
    /// How long a batch waits for more records before it is committed.
    pub linger: Duration,
}

impl Settings {
    pub fn from_config(
        c: &crate::config::AuditConfig,
    ) -> Result<Settings, crate::config::SecretError> {
        Ok(Settings {
            location: Location::from_config(c)?,
            chain: c.chain.clone().unwrap_or_else(default_chain),
            checkpoint_interval: c.checkpoint_interval,
            batch_size: c.batch_size,
            queue_size: c.queue_size,
            queue_bytes: c.queue_bytes,
            queue_wait: c.queue_wait,
            retention_days: c.retention_days,
            linger: c.linger,
        })
    }
}

/// The host name, as a chain name.
pub fn default_chain() -> String {
    let name = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| std::fs::read_to_string("/etc/hostname"))
        .unwrap_or_default();
    let name: String = name
        .trim()
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || "._-".contains(*c))
        .take(60)
        .collect();
    if name.is_empty() {
        "tollgate".into()
    } else {
        name
    }
}

impl Recorder {
    /// Opens the store, starts the writer thread and records `daemon_start` (noting an unclean
    /// previous stop). Fails if the store cannot be opened.
    pub fn start(settings: Settings, signer: Signer) -> Result<Recorder, store::Error> {
        let (tx, rx) = mpsc::channel(settings.queue_size);
        let queue_bytes = settings.queue_bytes.clamp(1, Semaphore::MAX_PERMITS);
        let inner = Arc::new(Inner {
            tx,
            room: Semaphore::new(queue_bytes),
            queue_bytes,
            wait: settings.queue_wait,
            failing: AtomicBool::new(false),
            alerted: AtomicBool::new(false),
            refused: AtomicU64::new(0),
            written: AtomicU64::new(0),
            queue_size: settings.queue_size,
            chain: settings.chain.clone(),
        });
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let writer_inner = Arc::clone(&inner);
        let thread = std::thread::Builder::new()
            .name("tollgate-audit".into())
            .spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("audit writer runtime");
                rt.block_on(async move {
                    let mut writer = match Writer::open(settings, signer, writer_inner).await {
                        Ok(w) => {
                            let _ = ready_tx.send(Ok(w.previous_stop_clean));
                            w
                        }
                        Err(e) => {
                            let _ = ready_tx.send(Err(e));
                            return;
                        }
                    };
                    writer.run(rx).await;
                });
            })
            .expect("spawn the audit writer");
        let clean = ready_rx.recv().map_err(|_| {
            store::Error::Corrupt("the audit writer stopped while opening the store".into())
        })??;
        let recorder = Recorder {
            inner,
            thread: Arc::new(std::sync::Mutex::new(Some(thread))),
        };
        let _ = recorder.record(Event::new(
            kind::DAEMON_START,
            Outcome::Success,
            Who::daemon(),
            serde_json::json!({
                "version": env!("CARGO_PKG_VERSION"),
                "pid": std::process::id(),
                "previous_stop": if clean { "clean" } else { "unclean" },
            }),
        ));
        Ok(recorder)
    }

    /// This instance's chain.
    pub fn chain(&self) -> &str {
        &self.inner.chain
    }

    /// How long the relay waits for room in a full queue before it refuses.
    pub fn queue_wait(&self) -> Duration {
        self.inner.wait
    }

    /// Queues an event without waiting. Refuses when the store is failing or the queue is
    /// full: the caller must then refuse whatever it wanted to record.
    pub fn record(&self, event: Event) -> Result<(), Unavailable> {
        self.refuse_if_failing()?;
        let weight = self.weigh(&event);
        match self.inner.room.try_acquire_many(weight) {
            Ok(permit) => permit.forget(),
            Err(TryAcquireError::NoPermits) => return Err(self.full()),
            Err(TryAcquireError::Closed) => return Err(Unavailable::Stopped),
        }
        match self
            .inner
            .tx
            .try_send(Msg::Event(Box::new(event), now_ts(), weight))
        {
            Ok(()) => Ok(()),
            Err(mpsc::error::TrySendError::Full(_)) => {
                self.inner.room.add_permits(weight as usize);
                Err(self.full())
            }
            Err(mpsc::error::TrySendError::Closed(_)) => Err(Unavailable::Stopped),
        }
    }

    /// Queues an event, waiting up to `queue_wait` for room in a full queue (a burst, or a
    /// writer behind, becomes latency: backpressure), then refusing; refuses at once while the
    /// store is failing. For statements before they are forwarded.
    pub async fn record_within(&self, event: Event) -> Result<(), Unavailable> {
        self.refuse_if_failing()?;
        self.enqueue(event, Some(self.inner.wait)).await
    }

    /// Queues what a statement already forwarded produced (its results), waiting up to
    /// `queue_wait` for room, even while the store fails (a short outage only delays the
    /// result), then refusing: the caller must then end the connection rather than show
    /// what was not recorded.
    pub async fn record_result(&self, event: Event) -> Result<(), Unavailable> {
        self.enqueue(event, Some(self.inner.wait)).await
    }

    /// Queues an event, waiting for room as long as it takes: for the few small events that
    /// must be recorded whatever the store's state (a session's end, approval decisions).
    pub async fn record_wait(&self, event: Event) -> Result<(), Unavailable> {
        self.enqueue(event, None).await
    }

    fn refuse_if_failing(&self) -> Result<(), Unavailable> {
        if self.inner.failing.load(Ordering::Acquire) {
            self.inner.refused.fetch_add(1, Ordering::Relaxed);
            metrics::counter!(crate::metrics::AUDIT_REFUSED).increment(1);
            return Err(Unavailable::Failing);
        }
        Ok(())
    }

    /// The room an event takes: its weight, at most the whole queue (so that one event larger
    /// than the queue waits for an empty queue rather than forever).
    fn weigh(&self, event: &Event) -> u32 {
        event
            .weight()
            .min(self.inner.queue_bytes)
            .try_into()
            .unwrap_or(u32::MAX)
    }

    /// Takes room for the event (waiting up to `wait`, or as long as it takes), then queues it.
    async fn enqueue(&self, event: Event, wait: Option<Duration>) -> Result<(), Unavailable> {
        let weight = self.weigh(&event);
        let deadline = wait.map(|w| tokio::time::Instant::now() + w);
        match self.inner.room.try_acquire_many(weight) {
            Ok(permit) => permit.forget(),
            Err(TryAcquireError::Closed) => return Err(Unavailable::Stopped),
            Err(TryAcquireError::NoPermits) => {
                metrics::counter!(crate::metrics::AUDIT_BACKPRESSURE).increment(1);
                let acquire = self.inner.room.acquire_many(weight);
                let acquired = match deadline {
                    Some(d) => match tokio::time::timeout_at(d, acquire).await {
                        Ok(acquired) => acquired,
                        Err(_) => return Err(self.full()),
                    },
                    None => acquire.await,
                };
                acquired.map_err(|_| Unavailable::Stopped)?.forget();
            }
        }
        // The timestamp once the event has its room, so that time follows chain order.
        let msg = Msg::Event(Box::new(event), now_ts(), weight);
        let sent = match self.inner.tx.try_send(msg) {
            Ok(()) => return Ok(()),
            Err(mpsc::error::TrySendError::Closed(_)) => Err(Unavailable::Stopped),
            Err(mpsc::error::TrySendError::Full(msg)) => match deadline {
                Some(d) => match self
                    .inner
                    .tx
                    .send_timeout(msg, d - tokio::time::Instant::now().min(d))
                    .await
                {
                    Ok(()) => Ok(()),
                    Err(mpsc::error::SendTimeoutError::Closed(_)) => Err(Unavailable::Stopped),
                    Err(mpsc::error::SendTimeoutError::Timeout(_)) => Err(self.full()),
                },
                None => self
                    .inner
                    .tx
                    .send(msg)
                    .await
                    .map_err(|_| Unavailable::Stopped),
            },
        };
        if sent.is_err() {
            self.inner.room.add_permits(weight as usize);
        }
        sent
    }

    /// Counts and alerts a refusal for want of room.
    fn full(&self) -> Unavailable {
        self.inner.refused.fetch_add(1, Ordering::Relaxed);
        metrics::counter!(crate::metrics::AUDIT_REFUSED).increment(1);
        if !self.inner.alerted.swap(true, Ordering::AcqRel) {
            error!(
                chain = self.inner.chain,
                queue = self.inner.queue_size,
                queue_bytes = self.inner.queue_bytes,
                "ALERT audit queue full: statements are refused until the store catches up"
            );
        }
        Unavailable::Full
    }

    /// Waits until everything queued so far is written and the head checkpointed.
    pub async fn flush(&self) -> Result<(), Unavailable> {
        let (tx, rx) = oneshot::channel();
        self.inner
            .tx
            .send(Msg::Flush(tx))
            .await
            .map_err(|_| Unavailable::Stopped)?;
        rx.await.map_err(|_| Unavailable::Stopped)
    }

    /// Whether records are being accepted.
    pub fn healthy(&self) -> bool {
        !self.inner.failing.load(Ordering::Acquire)
            && self.inner.tx.capacity() > 0
            && self.inner.room.available_permits() > 0
            && !self.inner.tx.is_closed()
    }

    /// Records waiting for the store.
    pub fn queue_depth(&self) -> usize {
        self.inner.queue_size - self.inner.tx.capacity()
    }

    /// Bytes (about) of records waiting for the store.
    pub fn queue_bytes(&self) -> usize {
        self.inner.queue_bytes - self.inner.room.available_permits()
    }

    /// Records written since start.
    pub fn written(&self) -> u64 {
        self.inner.written.load(Ordering::Relaxed)
    }

    /// Records refused since start.
    pub fn refused(&self) -> u64 {
        self.inner.refused.load(Ordering::Relaxed)
    }

    /// Records `daemon_stop`, writes everything queued, signs the head and stops the writer.
    /// Blocking: call from outside the runtimes.
    pub fn stop(&self, detail: serde_json::Value) {
        let _ = self.inner.tx.blocking_send(Msg::Event(
            Box::new(Event::new(
                kind::DAEMON_STOP,
                Outcome::Success,
                Who::daemon(),
                detail,
            )),
            now_ts(),
            0,
        ));
        let (tx, rx) = oneshot::channel();
        if self.inner.tx.blocking_send(Msg::Flush(tx)).is_ok() {
            // A store that never comes back must not hold the process forever.
            let deadline = Instant::now() + Duration::from_secs(30);
            let mut rx = rx;
            loop {
                match rx.try_recv() {
                    Err(oneshot::error::TryRecvError::Empty) if Instant::now() < deadline => {
                        std::thread::sleep(Duration::from_millis(10));
                    }
                    Err(oneshot::error::TryRecvError::Empty) => {
                        error!("ALERT audit store did not take the last records before stop");
                        return;
                    }
                    _ => break,
                }
            }
        }
        let thread = self.thread.lock().unwrap_or_else(|p| p.into_inner()).take();
        // The writer ends once every sender is gone; this handle's clones may live on, so it
        // is detached rather than joined after the final flush.
        drop(thread);
    }
}

struct Writer {
    store: Option<Store>,
    settings: Settings,
    signer: Signer,
    inner: Arc<Inner>,
    seq: u64,
    head: String,
    checkpointed: u64,
    last_checkpoint: Instant,
    previous_stop_clean: bool,
    /// Events the writer itself has to record next (an outage that ended).
    own: Vec<(Event, String)>,
    last_prune: Option<Instant>,
}

impl Writer {
    async fn open(
        settings: Settings,
        signer: Signer,
        inner: Arc<Inner>,
    ) -> Result<Writer, store::Error> {
        let mut store = Store::open(&settings.location, true).await?;
        let (seq, head) = store
            .head(&settings.chain)
            .await?
            .unwrap_or((0, GENESIS.into()));
        let checkpointed = store
            .last_checkpoint(&settings.chain, None)
            .await?
            .map_or(0, |c| c.seq);
        // The last record of a cleanly stopped chain is its daemon_stop, checkpointed.
        let previous_stop_clean = seq == 0 || {
            let last = store
                .page(&settings.chain, seq.saturating_sub(1), 1)
                .await?;
            last.first().is_some_and(|r| r.kind == kind::DAEMON_STOP) && checkpointed == seq
        };
        info!(chain = settings.chain, location = ?settings.location, head = seq, "audit store open");
        Ok(Writer {
            store: Some(store),
            settings,
            signer,
            inner,
            seq,
            head,
            checkpointed,
            last_checkpoint: Instant::now(),
            previous_stop_clean,
            own: Vec::new(),
            last_prune: None,
        })
    }

    async fn run(&mut self, mut rx: mpsc::Receiver<Msg>) {
        let mut events: Vec<(Event, String)> = Vec::with_capacity(self.settings.batch_size);
        let mut flushes: Vec<oneshot::Sender<()>> = Vec::new();
        loop {
            let wait = self
                .settings
                .checkpoint_interval
                .saturating_sub(self.last_checkpoint.elapsed())
                .max(Duration::from_millis(10));
            let first = match tokio::time::timeout(wait, rx.recv()).await {
                Ok(Some(m)) => Some(m),
                Ok(None) => break,
                Err(_) => None,
            };
            events.append(&mut self.own);
            // The queue room the batch's events hold, given back once they are written.
            let mut held = 0usize;
            let take = |m: Msg, events: &mut Vec<(Event, String)>, flushes: &mut Vec<_>| match m {
                Msg::Event(e, ts, weight) => {
                    events.push((*e, ts));
                    weight as usize
                }
                Msg::Flush(tx) => {
                    flushes.push(tx);
                    0
                }
            };
            if let Some(m) = first {
                let flush = matches!(m, Msg::Flush(_));
                held += take(m, &mut events, &mut flushes);
                // Group commit: a moment for more records to arrive, so a busy proxy commits
                // (and syncs) a few hundred times a second rather than once per statement.
                if self.settings.linger > Duration::ZERO && !flush {
                    tokio::time::sleep(self.settings.linger).await;
                }
            }
            // Sized by bytes too: a batch holds at most a quarter of the queue's room, so the
            // relay goes on queueing while it is written.
            let batch_bytes = self.inner.queue_bytes / 4;
            while events.len() < self.settings.batch_size && held < batch_bytes {
                match rx.try_recv() {
                    Ok(m) => held += take(m, &mut events, &mut flushes),
                    Err(_) => break,
                }
            }
            if !events.is_empty() {
                self.write(&mut events).await;
            }
            self.inner.room.add_permits(held);
            let due = self.last_checkpoint.elapsed() >= self.settings.checkpoint_interval;
            if self.seq > self.checkpointed && (due || !flushes.is_empty()) {
                self.checkpoint().await;
            } else if due {
                self.last_checkpoint = Instant::now();
            }
            for f in flushes.drain(..) {
                let _ = f.send(());
            }
            self.prune_if_due().await;
        }
        if self.seq > self.checkpointed {
            self.checkpoint().await;
        }
    }

    /// Writes a batch, retrying until the store takes it.
    async fn write(&mut self, events: &mut Vec<(Event, String)>) {
        // (The queue room is given back by the caller, after this.)
        let mut records = Vec::with_capacity(events.len());
        let mut prev = self.head.clone();
        let mut seq = self.seq;
        for (event, ts) in events.drain(..) {
            seq += 1;
            let body = event.encode(&self.settings.chain, seq, &prev, &ts);
            let hash = record::hash(&body);
            prev = hash.clone();
            records.push(Encoded {
                seq,
                ts,
                kind: event.kind,
                outcome: event.outcome.as_str(),
                session: event.who.session.as_ref().map(|s| s.0.clone()),
                body,
                hash,
            });
        }
        let mut outage: Option<(String, String)> = None;
        let mut backoff = Duration::from_millis(50);
        metrics::gauge!(crate::metrics::AUDIT_QUEUE)
            .set((self.inner.queue_size - self.inner.tx.capacity()) as f64);
        let started = Instant::now();
        loop {
            let result = match self.store.as_mut() {
                Some(store) => store.append(&self.settings.chain, &records).await,
                None => match Store::open(&self.settings.location, false).await {
                    Ok(store) => {
                        self.store = Some(store);
                        continue;
                    }
                    Err(e) => Err(e),
                },
            };
            match result {
                Ok(()) => break,
                Err(e) => {
                    let message = e.to_string();
                    if outage.is_none() {
                        self.inner.failing.store(true, Ordering::Release);
                        metrics::gauge!(crate::metrics::AUDIT_FAILING).set(1.0);
                        error!(chain = self.settings.chain, error = %message, "ALERT audit store failing: statements are refused until it recovers");
                        outage = Some((now_ts(), message));
                    }
                    // A position already taken means another writer on this chain: fatal
                    // for this chain, but the records stay queued and statements refused.
                    if let Some(store) = self.store.take() {
                        store.close().await;
                    }
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(2));
                }
            }
        }
        metrics::histogram!(crate::metrics::AUDIT_WRITE).record(started.elapsed().as_secs_f64());
        metrics::counter!(crate::metrics::AUDIT_RECORDS).increment(records.len() as u64);
        self.seq = seq;
        self.head = prev;
        self.inner
            .written
            .fetch_add(records.len() as u64, Ordering::Relaxed);
        if let Some((since, message)) = outage {
            self.inner.failing.store(false, Ordering::Release);
            metrics::gauge!(crate::metrics::AUDIT_FAILING).set(0.0);
            self.inner.alerted.store(false, Ordering::Release);
            warn!(chain = self.settings.chain, "audit store recovered");
            self.own.push((
                Event::new(
                    kind::STORE_FAILURE,
                    Outcome::Failure,
                    Who::daemon(),
                    serde_json::json!({"since": since, "until": now_ts(), "error": crate::mask::for_log(&message)}),
                ),
                now_ts(),
            ));
        } else if self.inner.alerted.load(Ordering::Acquire) && self.inner.tx.capacity() > 0 {
            self.inner.alerted.store(false, Ordering::Release);
        }
    }

    async fn checkpoint(&mut self) {
        let c = self
            .signer
            .sign(&self.settings.chain, self.seq, &self.head, &now_ts());
        if let Some(store) = self.store.as_mut() {
            match store.add_checkpoint(&c).await {
                Ok(()) => {
                    self.checkpointed = self.seq;
                    self.last_checkpoint = Instant::now();
                }
                Err(e) => warn!(error = %e, "audit checkpoint not written; retrying later"),
            }
        }
    }

    /// Once an hour, removes checkpointed segments older than the retention period.
    async fn prune_if_due(&mut self) {
        if self.settings.retention_days == 0
            || self
                .last_prune
                .is_some_and(|t| t.elapsed() < Duration::from_secs(3600))
        {
            return;
        }
        self.last_prune = Some(Instant::now());
        let cutoff = std::time::SystemTime::now()
            - Duration::from_secs(u64::from(self.settings.retention_days) * 86_400);
        let cutoff = humantime::format_rfc3339_micros(cutoff).to_string();
        let Some(store) = self.store.as_mut() else {
            return;
        };
        match prune(store, &self.settings.chain, &cutoff).await {
            Ok(Some((seq, removed))) => {
                info!(
                    chain = self.settings.chain,
                    through = seq,
                    removed,
                    "audit records pruned"
                );
                self.own.push((
                    Event::new(
                        kind::AUDIT_PRUNED,
                        Outcome::Success,
                        Who::daemon(),
                        serde_json::json!({"through_seq": seq, "removed": removed, "older_than": cutoff, "retention_days": self.settings.retention_days}),
                    ),
                    now_ts(),
                ));
            }
            Ok(None) => {}
            Err(e) => warn!(error = %e, "audit pruning failed"),
        }
    }
}

/// Removes a chain's records up to its newest checkpoint older than `cutoff`, keeping that
/// checkpoint as the anchor the remaining chain verifies from.
pub async fn prune(
    store: &mut Store,
    chain: &str,
    cutoff: &str,
) -> Result<Option<(u64, u64)>, store::Error> {
    let Some(anchor) = store.last_checkpoint(chain, Some(cutoff)).await? else {
        return Ok(None);
    };
    let removed = store.prune(chain, anchor.seq).await?;
    Ok((removed > 0).then_some((anchor.seq, removed)))
}

/// Appends one event to `chain` outside a running writer (the CLI recording its own audit
/// reads), then signs the new head. Retries when another process took the position.
pub async fn append_once(
    location: &Location,
    chain: &str,
    signer: &Signer,
    event: Event,
) -> Result<(), store::Error> {
    let mut store = Store::open(location, true).await?;
    let mut attempt = 0;
    loop {
        let (seq, prev) = store.head(chain).await?.unwrap_or((0, GENESIS.into()));
        let ts = now_ts();
        let body = event.encode(chain, seq + 1, &prev, &ts);
        let hash = record::hash(&body);
        let record = Encoded {
            seq: seq + 1,
            ts,
            kind: event.kind,
            outcome: event.outcome.as_str(),
            session: event.who.session.as_ref().map(|s| s.0.clone()),
            body,
            hash: hash.clone(),
        };
        match store.append(chain, &[record]).await {
            Ok(()) => {
                store
                    .add_checkpoint(&signer.sign(chain, seq + 1, &hash, &now_ts()))
                    .await?;
                store.close().await;
                return Ok(());
            }
            Err(e) if attempt < 5 => {
                attempt += 1;
                tracing::debug!(error = %e, "audit append raced; retrying");
                tokio::time::sleep(Duration::from_millis(20 * attempt)).await;
            }
            Err(e) => return Err(e),
        }
    }
}
