//! Queue topics on the engine: claims (with the coalescing window, long-poll waits and
//! dead-lettering), acks, nacks, extensions and `/work` streams' leases. The lease state and
//! its WAL records are the queue log's (`log/queue.rs`); this side decides what spans topics
//! (dead-letter writes) and time (waits, the coalescing window).

use super::*;
use crate::log::{ClaimPass, LeaseChange, Taker};
use crate::topic::queue::{Job, LeaseDone, QueueCounts};
use crate::topic::{NewRecord, TopicConfig, TopicKind, TopicWrite};
use bytes::Bytes;

/// Lease bounds (the reference's clamp).
const LEASE_MS: (u64, u64) = (100, 86_400_000);

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

/// Claimers waiting in a queue's coalescing window: what each may take, and where to send it.
pub(super) type Cohort = Vec<(Taker, oneshot::Sender<Result<(Vec<Job>, QueueCounts)>>)>;

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
        };
        let deadline = self
            .now()
            .saturating_add(i64::try_from(req.wait_ms).unwrap_or(0));
        loop {
            let mut rx = log.subscribe();
            rx.borrow_and_update();
            let (jobs, counts) = if config.claim_jitter_ms > 0 {
                self.claim_in_cohort(name, &log, taker.clone(), lease_ms, config.claim_jitter_ms)
                    .await?
            } else {
                let mut pass = self
                    .claim_pass(name, &log, std::slice::from_ref(&taker), lease_ms)
                    .await?;
                (pass.jobs.pop().unwrap_or_default(), pass.counts)
            };
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
    async fn claim_pass(
        &self,
        name: &str,
        log: &Arc<Log>,
        takers: &[Taker],
        lease_ms: u64,
    ) -> Result<ClaimPass> {
        let persist = self.inner.persist.as_ref();
        loop {
            let pass = log
                .queue_claim(takers, lease_ms, self.now(), persist)
                .await?;
            if pass.dead.is_empty() {
                return Ok(pass);
            }
            self.dead_letter(name, log, pass.dead).await?;
            if pass.jobs.iter().any(|j| !j.is_empty()) {
                return Ok(ClaimPass {
                    dead: Vec::new(),
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
    async fn dead_letter(&self, name: &str, log: &Arc<Log>, dead: Vec<Job>) -> Result<()> {
        let config = log.topic_info(self.now(), false)?.config;
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
                    create: Some(TopicConfig::default()),
                };
                self.topic_write(dlq, w).await?;
            }
        }
        let seqs = dead.iter().map(|j| j.record.seq).collect();
        log.queue_drop(seqs, self.inner.persist.as_ref()).await
    }

    /// A claim in a queue's coalescing window: the first claimer waits the window out, then
    /// one pass takes jobs for everyone who joined meanwhile, dealt evenly.
    async fn claim_in_cohort(
        &self,
        name: &str,
        log: &Arc<Log>,
        taker: Taker,
        lease_ms: u64,
        window_ms: u64,
    ) -> Result<(Vec<Job>, QueueCounts)> {
        let (tx, rx) = oneshot::channel();
        let id = log.config.id;
        let lead = {
            let mut cohorts = self.inner.cohorts.lock();
            match cohorts.get_mut(&id) {
                Some(c) => {
                    c.push((taker, tx));
                    false
                }
                None => {
                    cohorts.insert(id, vec![(taker, tx)]);
                    true
                }
            }
        };
        if lead {
            // The leader's work runs on its own, so a cancelled leader strands no follower.
            let (engine, log, name) = (self.clone(), log.clone(), name.to_string());
            let work = async move {
                tokio::time::sleep(Duration::from_millis(window_ms)).await;
                let cohort: Cohort = engine.inner.cohorts.lock().remove(&id).unwrap_or_default();
                let takers: Vec<Taker> = cohort.iter().map(|(t, _)| t.clone()).collect();
                match engine.claim_pass(&name, &log, &takers, lease_ms).await {
                    Ok(pass) => {
                        for ((_, tx), jobs) in cohort.into_iter().zip(pass.jobs) {
                            let _ = tx.send(Ok((jobs, pass.counts)));
                        }
                    }
                    Err(e) => {
                        for (_, tx) in cohort {
                            let _ = tx.send(Err(e.clone()));
                        }
                    }
                }
            };
            match tokio::runtime::Handle::try_current() {
                Ok(h) => drop(h.spawn(work)),
                Err(_) => work.await,
            }
        }
        rx.await
            .unwrap_or_else(|_| Err(storage_error("the claim was abandoned", false)))
    }

    /// Ack jobs: deleted for good.
    pub async fn queue_ack(
        &self,
        name: &str,
        node: &str,
        seqs: &[u64],
        lease_ids: Option<&[u64]>,
    ) -> Result<LeaseDone> {
        let (log, _) = self.live_queue(name)?;
        log.queue_ack(
            node,
            seqs,
            lease_ids,
            self.now(),
            self.inner.persist.as_ref(),
        )
        .await
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
