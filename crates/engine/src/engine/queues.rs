//! Queue topics on the engine: claims (with the coalescing window, long-poll waits and
//! dead-lettering), acks, nacks, extensions and `/work` streams' leases. The lease state and
//! its WAL records are the queue log's (`log/queue.rs`); this side decides what spans topics
//! (dead-letter writes) and time (waits, the coalescing window).

use super::combine::Combiner;
use super::*;
use crate::log::{AckRequest, ClaimPass, LeaseChange, Taker};
use crate::topic::queue::{Job, LeaseDone, QueueCounts};
use crate::topic::{NewRecord, TopicConfig, TopicKind, TopicWrite};
use bytes::Bytes;

/// Lease bounds (the reference's clamp).
const LEASE_MS: (u64, u64) = (100, 86_400_000);
/// How long a job its dead-letter topic refused waits before it is tried there again.
const DEAD_LETTER_RETRY_MS: i64 = 5_000;

/// A claim request.
#[derive(Debug, Clone)]
pub struct ClaimRequest {
    pub node: String,
    pub max: usize,
    /// The queue's `lease_ms` when `None`.
    pub lease_ms: Option<u64>,
    /// Wait this long for a job when none is ready (0: answer at once).
    pub wait_ms: u64,
    /// The `/work` stream taking the jobs (its leases go when it ends).
    pub conn: Option<u64>,
}

/// What a claim got.
#[derive(Debug, Clone, Default)]
pub struct Claimed {
    pub jobs: Vec<Job>,
    pub counts: QueueCounts,
}

/// Claims waiting to be served together, answered with their jobs and the queue's counts.
pub(super) type Claims = Combiner<Taker, (Vec<Job>, QueueCounts)>;
/// Acks waiting to be served together.
pub(super) type Acks = Combiner<AckRequest, LeaseDone>;

impl Engine {
    fn live_queue(&self, name: &str) -> Result<(Arc<Log>, TopicConfig)> {
        let log = self.live_topic(name)?;
        let config = log.topic_info(self.now(), false)?.config;
        if config.kind != TopicKind::Queue {
            return Err(EngineError::NotAQueue);
        }
        Ok((log, config))
    }

    /// Claim up to `req.max` jobs of queue `name`.
    pub async fn queue_claim(&self, name: &str, req: ClaimRequest) -> Result<Claimed> {
        let (log, config) = self.live_queue(name)?;
        let lease_ms = req
            .lease_ms
            .unwrap_or(config.lease_ms)
            .clamp(LEASE_MS.0, LEASE_MS.1);
        let taker = Taker {
            node: req.node,
            conn: req.conn,
            max: req.max.clamp(1, 1000),
            lease_ms,
        };
        let window = Duration::from_millis(config.claim_jitter_ms);
        let deadline = self
            .now()
            .saturating_add(i64::try_from(req.wait_ms).unwrap_or(0));
        loop {
            let mut rx = log.subscribe();
            rx.borrow_and_update();
            // Claims waiting together are served by one pass: within the coalescing window
            // they split the jobs evenly; without one, they share a WAL record.
            let (engine, queue, q) = (self.clone(), log.clone(), name.to_string());
            let serve = move |takers: Vec<Taker>| {
                let (engine, queue, q) = (engine.clone(), queue.clone(), q.clone());
                async move {
                    match engine.claim_pass(&q, &queue, &takers).await {
                        Ok(pass) => pass
                            .jobs
                            .into_iter()
                            .map(|j| Ok((j, pass.counts)))
                            .collect(),
                        Err(e) => takers.iter().map(|_| Err(e.clone())).collect(),
                    }
                }
            };
            let claims = self.inner.claims.clone();
            let (jobs, counts) = claims
                .submit(log.config.id, taker.clone(), window, serve)
                .await?;
            let now = self.now();
            if !jobs.is_empty() || now >= deadline {
                return Ok(Claimed { jobs, counts });
            }
            // Nothing ready: wait for a write, a lease that expires or a delay that ends.
            let until = log.queue_next_due().map_or(deadline, |d| d.min(deadline));
            let ms = u64::try_from(until.saturating_sub(now)).unwrap_or(0).max(1);
            tokio::select! {
                _ = rx.changed() => {}
                _ = tokio::time::sleep(Duration::from_millis(ms)) => {}
            }
        }
    }

    /// One claim pass for `takers`, with dead-lettering of the jobs past `max_deliveries`.
    async fn claim_pass(&self, name: &str, log: &Arc<Log>, takers: &[Taker]) -> Result<ClaimPass> {
        let persist = self.inner.persist.as_ref();
        loop {
            let pass = log.queue_claim(takers, self.now(), persist).await?;
            if pass.dead.is_empty() {
                return Ok(pass);
            }
            self.dead_letter(name, log, pass.dead).await?;
            if pass.jobs.iter().any(|j| !j.is_empty()) {
                // The counts as of after the dead jobs left (the pass counted them ready).
                return Ok(ClaimPass {
                    dead: Vec::new(),
                    counts: log.queue_counts(self.now())?,
                    ..pass
                });
            }
            // Every job found was dead: look again.
        }
    }

    /// Move `dead` jobs of queue `name` to its `dead_letter` topic (if it has one; else they
    /// are only dropped): each a write with `meta.$dead_letter_from`, `_deliveries` and
    /// `_src_seq`, under an idempotency key of its own, so a retry after a crash writes it
    /// once; then they are deleted from the queue.
    ///
    /// A job the dead-letter topic refuses (full with `discard: "reject"`, or any failure)
    /// stays in the queue, out of claims, and is tried again after [`DEAD_LETTER_RETRY_MS`]: it
    /// must not be lost, delivered again past its limit, or hold back the jobs behind it.
    async fn dead_letter(&self, name: &str, log: &Arc<Log>, dead: Vec<Job>) -> Result<()> {
        let config = log.topic_info(self.now(), false)?.config;
        let mut moved = Vec::with_capacity(dead.len());
        let mut refused = Vec::new();
        if let Some(dlq) = &config.dead_letter {
            for job in &dead {
                let r = &job.record;
                let decode = |lit: Option<&[u8]>| -> Option<String> {
                    lit.and_then(|l| serde_json::from_slice(l).ok())
                };
                let extra = format!(
                    "\"$dead_letter_from\":{},\"$dead_letter_deliveries\":{},\"$dead_letter_src_seq\":{}",
                    crate::topic::record::literal(name),
                    job.deliveries,
                    r.seq
                );
                let meta =
                    crate::topic::record::with_member(r.meta_json().unwrap_or(b"{}"), &extra);
                let w = TopicWrite {
                    records: vec![NewRecord {
                        data: Bytes::copy_from_slice(r.data_json()),
                        tag: decode(r.tag_json()),
                        node: decode(r.node_json()),
                        meta: Some(Bytes::from(meta)),
                    }],
                    idempotency_key: Some(format!("$dead_letter:{}:{}", log.config.id, r.seq)),
                    create: Some(self.default_topic_config()),
                };
                match self.topic_write(dlq, w).await {
                    Ok(_) => moved.push(r.seq),
                    Err(e) => {
                        tracing::warn!(queue = name, dead_letter = %dlq, seq = r.seq, error = %e,
                            "a job past max_deliveries could not be dead-lettered; it waits in the queue and is tried again");
                        refused.push(r.seq);
                    }
                }
            }
        } else {
            moved.extend(dead.iter().map(|j| j.record.seq));
        }
        let persist = self.inner.persist.as_ref();
        if !refused.is_empty() {
            let retry_at = self.now().saturating_add(DEAD_LETTER_RETRY_MS);
            let change = LeaseChange::Postpone { until: retry_at };
            log.queue_lease_change("", &refused, None, change, self.now(), persist)
                .await?;
        }
        if moved.is_empty() {
            return Ok(());
        }
        log.queue_drop(moved, persist).await
    }

    /// Ack jobs: deleted for good. Acks waiting together share one delete (one WAL record).
    pub async fn queue_ack(
        &self,
        name: &str,
        node: &str,
        seqs: &[u64],
        lease_ids: Option<&[u64]>,
    ) -> Result<LeaseDone> {
        let (log, _) = self.live_queue(name)?;
        let ack = AckRequest {
            node: node.to_string(),
            seqs: seqs.to_vec(),
            lease_ids: lease_ids.map(<[u64]>::to_vec),
        };
        let (engine, queue) = (self.clone(), log.clone());
        let serve = move |acks: Vec<AckRequest>| {
            let (engine, queue) = (engine.clone(), queue.clone());
            async move {
                let persist = engine.inner.persist.as_ref();
                match queue.queue_ack(&acks, engine.now(), persist).await {
                    Ok(done) => done.into_iter().map(Ok).collect(),
                    Err(e) => acks.iter().map(|_| Err(e.clone())).collect(),
                }
            }
        };
        let acks = self.inner.acks.clone();
        acks.submit(log.config.id, ack, Duration::ZERO, serve).await
    }

    /// Nack jobs: ready again after `delay_ms`.
    pub async fn queue_nack(
        &self,
        name: &str,
        node: &str,
        seqs: &[u64],
        lease_ids: Option<&[u64]>,
        delay_ms: u64,
    ) -> Result<LeaseDone> {
        let change = LeaseChange::Nack { delay_ms };
        self.lease_change(name, node, seqs, lease_ids, change).await
    }

    /// Extend leases to `now + lease_ms`.
    pub async fn queue_extend(
        &self,
        name: &str,
        node: &str,
        seqs: &[u64],
        lease_ids: Option<&[u64]>,
        lease_ms: u64,
    ) -> Result<LeaseDone> {
        let change = LeaseChange::Extend {
            lease_ms: lease_ms.clamp(LEASE_MS.0, LEASE_MS.1),
        };
        self.lease_change(name, node, seqs, lease_ids, change).await
    }

    async fn lease_change(
        &self,
        name: &str,
        node: &str,
        seqs: &[u64],
        lease_ids: Option<&[u64]>,
        change: LeaseChange,
    ) -> Result<LeaseDone> {
        let (log, _) = self.live_queue(name)?;
        let persist = self.inner.persist.as_ref();
        log.queue_lease_change(node, seqs, lease_ids, change, self.now(), persist)
            .await
    }

    /// A new `/work` stream id.
    pub fn queue_conn_id(&self) -> u64 {
        self.inner.next_conn.fetch_add(1, Ordering::Relaxed)
    }

    /// The jobs `/work` stream `conn` holds, and the queue's counts.
    pub fn queue_conn_jobs(&self, name: &str, conn: u64) -> Result<Vec<u64>> {
        let (log, _) = self.live_queue(name)?;
        Ok(log.queue_leases_of(conn))
    }

    /// A `/work` stream ended: its jobs are ready again at once.
    pub async fn queue_release_conn(&self, name: &str, conn: u64) -> Result<LeaseDone> {
        let change = LeaseChange::ReleaseConn(conn);
        self.lease_change(name, "", &[], None, change).await
    }
}
