//! A queue topic's lease operations on its log: claim, ack (a delete of the acked records),
//! release (nack, or a `/work` stream ending), extend, and dead-lettering's delete. Each is
//! decided under the append lock, logged as one WAL record with the queue's class (claims are
//! acknowledged only once their record is as durable as that class makes it), and applied
//! from the commit, like every topic change.

use super::commit::WalRecord;
use super::topic::View;
use super::*;
use crate::topic::queue::{ClaimRec, Job, Lease, LeaseDone, QueueCounts, QueueOp};
use crate::topic::{RecordView, record};

/// Who takes jobs in one claim pass: a node (and its `/work` stream), and how many at most.
#[derive(Debug, Clone)]
pub(crate) struct Taker {
    pub node: String,
    pub conn: Option<u64>,
    pub max: usize,
    pub lease_ms: u64,
}

/// An ack: `node` acks `seqs` (with their lease ids, aligned, when given).
#[derive(Debug, Clone)]
pub(crate) struct AckRequest {
    pub node: String,
    pub seqs: Vec<u64>,
    pub lease_ids: Option<Vec<u64>>,
}

/// What one claim pass gave: each taker's jobs, and the jobs past `max_deliveries`.
#[derive(Debug, Default)]
pub(crate) struct ClaimPass {
    pub jobs: Vec<Vec<Job>>,
    pub dead: Vec<Job>,
    pub counts: QueueCounts,
}

/// A lease id: unique within the topic (the claim's log seq and the job's place in it), and
/// salted with the log's id, so a topic deleted and created again under its name never hands
/// out one of its predecessor's ids (a stale worker's `lease_ids` would fence nothing) and no
/// two queues start from the same id. Logged with the claim, so replay never derives it.
fn lease_id(log_id: u64, log_seq: u64, i: usize) -> u64 {
    // splitmix64's finalizer: distinct ids get unrelated salts. XOR with one salt is a
    // bijection, so ids stay unique within the topic.
    let mut z = log_id.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    let salt = z ^ (z >> 31);
    ((log_seq << 20) | (i as u64 & 0xf_ffff)) ^ salt
}

fn not_a_queue() -> EngineError {
    EngineError::NotAQueue
}

impl Log {
    /// The WAL record of a queue change (none for an `ephemeral` queue, whose jobs do not
    /// survive a restart anyway).
    fn queue_record<'a>(
        &self,
        persist: Option<&'a Arc<Persist>>,
        v: &View,
        op: QueueOp,
    ) -> Option<WalRecord<'a>> {
        let p = persist.filter(|_| self.files.is_some() && v.config.durability.is_persistent())?;
        Some(WalRecord {
            persist: p,
            bytes: WalEntry::QueueChange {
                log_id: self.config.id,
                log_seq: v.log_seq + 1,
                op,
            }
            .encode(&[]),
            commit: commit_for(v.config.durability),
        })
    }

    /// Live records `seqs`, read from the log: each run of consecutive seqs with one read of
    /// the index and one of the data.
    fn records_at(&self, v: &View, seqs: &[u64]) -> Result<Vec<RecordView>> {
        let mut out = Vec::with_capacity(seqs.len());
        let mut i = 0;
        while i < seqs.len() {
            let mut j = i + 1;
            while j < seqs.len() && seqs[j] == seqs[j - 1] + 1 {
                j += 1;
            }
            let first = seqs[i];
            let start = self.seq_pos(first, v)?;
            let ends = self.record_ends(first - 1, (j - i) as u64)?;
            let end = ends.last().copied().unwrap_or(start);
            let mut chunks: Vec<Bytes> = Vec::new();
            let mut budget = (end - start) as usize;
            self.collect_own(start, end, &mut budget, &mut chunks)?;
            let data = if chunks.len() == 1 {
                chunks.pop().unwrap_or_default()
            } else {
                Bytes::from(chunks.concat())
            };
            let mut at = start;
            for (k, &e) in ends.iter().enumerate() {
                let raw = data.slice((at - start) as usize..(e - start) as usize);
                let (layout, ts, total) = record::parse(&raw)
                    .ok_or_else(|| storage_error("a topic record is damaged", false))?;
                out.push(RecordView {
                    seq: first + k as u64,
                    ts,
                    raw: raw.slice(..total),
                    layout,
                });
                at = e;
            }
            i = j;
        }
        Ok(out)
    }

    /// One claim pass: jobs ready again first (lowest seq first), then fresh ones, dealt to
    /// `takers` in turn; a job past `max_deliveries` goes to `dead` instead.
    pub(crate) async fn queue_claim(
        self: &Arc<Self>,
        takers: &[Taker],
        now: i64,
        persist: Option<&Arc<Persist>>,
    ) -> Result<ClaimPass> {
        let serial = self.lock_logged(persist).await?;
        let v = self.view()?;
        let want: usize = takers.iter().map(|t| t.max).sum();
        let max_deliveries = v.config.max_deliveries;
        // Jobs past the topic's `ttl_ms` are expired, as for every read: never claimed.
        let unexpired = self.ttl_cut(&v, v.trim.earliest, now)?;
        let picked = self.with_topic(|st| {
            let t = st.topic.as_deref_mut().expect("checked by with_topic");
            let (earliest, head) = (t.trim.earliest.max(unexpired), t.head);
            let mut q = t.queue.take()?;
            q.sweep(now);
            let mut out: Vec<(u64, u32)> = Vec::new();
            let ready: Vec<u64> = q.reclaimable(earliest).take(want * 2 + 16).collect();
            let deliveries = |q: &crate::topic::queue::QueueState, s: u64| {
                q.deliveries.get(&s).copied().unwrap_or(0) + 1
            };
            for s in ready {
                if out.len() == want {
                    break;
                }
                if s >= earliest && s <= head && t.deleted.range_end(s).is_none() {
                    out.push((s, deliveries(&q, s)));
                }
            }
            let before = q.cursor;
            let mut cursor = before;
            while out.len() < want {
                let s = t.live_from((cursor + 1).max(earliest));
                if s > head {
                    break;
                }
                out.push((s, deliveries(&q, s)));
                cursor = s;
            }
            t.queue = Some(q);
            Some((out, before, cursor))
        })?;
        let Some((picked, before, cursor)) = picked else {
            return Err(not_a_queue());
        };
        let seqs: Vec<u64> = picked.iter().map(|p| p.0).collect();
        let records = self.records_at(&v, &seqs)?;
        let mut pass = ClaimPass {
            jobs: vec![Vec::new(); takers.len()],
            ..Default::default()
        };
        let mut claims = Vec::new();
        let mut turn = 0;
        for (i, (record, (seq, deliveries))) in records.into_iter().zip(picked).enumerate() {
            let lease_id = lease_id(self.config.id, v.log_seq + 1, i);
            if max_deliveries > 0 && u64::from(deliveries) > max_deliveries {
                pass.dead.push(Job {
                    record,
                    lease_id,
                    deadline: now,
                    deliveries: deliveries - 1,
                });
                continue;
            }
            // The next taker with room, in turn.
            while pass.jobs[turn % takers.len()].len() >= takers[turn % takers.len()].max {
                turn += 1;
            }
            let k = turn % takers.len();
            turn += 1;
            let lease_ms = i64::try_from(takers[k].lease_ms).unwrap_or(i64::MAX);
            let deadline = now.saturating_add(lease_ms);
            let job = Job {
                record,
                lease_id,
                deadline,
                deliveries,
            };
            claims.push(ClaimRec {
                seq,
                lease: Lease {
                    node: takers[k].node.clone(),
                    lease_id,
                    deadline,
                    conn: takers[k].conn,
                },
                deliveries,
            });
            pass.jobs[k].push(job);
        }
        if claims.is_empty() && cursor == before {
            pass.counts = self.queue_counts(now)?;
            return Ok(pass);
        }
        let op = QueueOp::Claim { claims, cursor };
        let record = self.queue_record(persist, &v, op.clone());
        let log_seq = v.log_seq + 1;
        let ((), _) = self
            .commit(serial, record, 0, move |_, st| {
                st.w.log_seq = log_seq;
                if let Some(q) = st.topic.as_deref_mut().and_then(|t| t.queue.as_deref_mut()) {
                    q.apply(&op);
                    if let QueueOp::Claim { claims, .. } = &op {
                        for c in claims {
                            if let Some(conn) = c.lease.conn {
                                q.set_conn(c.seq, conn);
                            }
                        }
                    }
                }
            })
            .await?;
        pass.counts = self.queue_counts(now)?;
        Ok(pass)
    }

    /// Whether job `seq` is still a live record (not trimmed, past the head, or deleted).
    fn is_live_job(&self, v: &View, seq: u64) -> bool {
        seq >= v.trim.earliest && seq <= v.head && self.live_from(seq) == seq
    }

    /// The queue's counts now: as the topic's state reports them (jobs past `ttl_ms` are not
    /// ready, they are expired).
    pub(crate) fn queue_counts(&self, now: i64) -> Result<QueueCounts> {
        self.topic_info(now, false)?.queue.ok_or_else(not_a_queue)
    }

    /// Leases of `seqs` held by `node` (with `lease_ids`, aligned, when given): those held and
    /// those skipped.
    fn held(
        &self,
        node: &str,
        seqs: &[u64],
        lease_ids: Option<&[u64]>,
    ) -> Result<(Vec<u64>, Vec<u64>)> {
        self.with_topic(|st| {
            let q = st.topic.as_deref().and_then(|t| t.queue.as_deref())?;
            let (mut held, mut skipped) = (Vec::new(), Vec::new());
            for (i, &s) in seqs.iter().enumerate() {
                let id = lease_ids.and_then(|ids| ids.get(i).copied());
                if q.held(s, node, id).is_some() && !held.contains(&s) {
                    held.push(s);
                } else {
                    skipped.push(s);
                }
            }
            Some((held, skipped))
        })?
        .ok_or_else(not_a_queue)
    }

    /// Acks: the jobs each request's node holds among its seqs are deleted for good, all in
    /// one delete (one WAL record).
    pub(crate) async fn queue_ack(
        self: &Arc<Self>,
        acks: &[AckRequest],
        now: i64,
        persist: Option<&Arc<Persist>>,
    ) -> Result<Vec<LeaseDone>> {
        let serial = self.lock_logged(persist).await?;
        let v = self.view()?;
        let mut all = Vec::new();
        let mut seen = std::collections::HashSet::new();
        let mut out = Vec::with_capacity(acks.len());
        for a in acks {
            let (mut held, mut skipped) = self.held(&a.node, &a.seqs, a.lease_ids.as_deref())?;
            // A job two requests ack goes to the first.
            held.retain(|s| {
                let first = seen.insert(*s);
                if !first {
                    skipped.push(*s);
                }
                first
            });
            all.extend_from_slice(&held);
            out.push(LeaseDone {
                done: held.len() as u64,
                skipped,
                ..Default::default()
            });
        }
        all.sort_unstable();
        if !all.is_empty() {
            let commit = commit_for(v.config.durability);
            self.delete_matched(serial, &v, v.trim.earliest, all, persist, commit)
                .await?;
        }
        let counts = self.queue_counts(now)?;
        for d in &mut out {
            d.counts = counts;
        }
        Ok(out)
    }

    /// Delete jobs for good (dead-lettered), counting them.
    pub(crate) async fn queue_drop(
        self: &Arc<Self>,
        mut seqs: Vec<u64>,
        persist: Option<&Arc<Persist>>,
    ) -> Result<()> {
        let serial = self.lock_logged(persist).await?;
        let v = self.view()?;
        let op = QueueOp::DeadLettered {
            count: seqs.len() as u64,
        };
        let record = self.queue_record(persist, &v, op.clone());
        let log_seq = v.log_seq + 1;
        self.commit(serial, record, 0, move |_, st| {
            st.w.log_seq = log_seq;
            if let Some(q) = st.topic.as_deref_mut().and_then(|t| t.queue.as_deref_mut()) {
                q.apply(&op);
            }
        })
        .await?;
        let serial = self.lock_logged(persist).await?;
        let v = self.view()?;
        seqs.sort_unstable();
        seqs.retain(|&s| self.is_live_job(&v, s));
        if !seqs.is_empty() {
            let commit = commit_for(v.config.durability);
            self.delete_matched(serial, &v, v.trim.earliest, seqs, persist, commit)
                .await?;
        }
        Ok(())
    }

    /// Nack (ready again after `delay_ms`) or extend (deadline `now + lease_ms`) the jobs
    /// `node` holds among `seqs`; `conn` instead releases every lease of that `/work` stream.
    #[allow(clippy::too_many_arguments)]
    pub(crate) async fn queue_lease_change(
        self: &Arc<Self>,
        node: &str,
        seqs: &[u64],
        lease_ids: Option<&[u64]>,
        change: LeaseChange,
        now: i64,
        persist: Option<&Arc<Persist>>,
    ) -> Result<LeaseDone> {
        let serial = self.lock_logged(persist).await?;
        let v = self.view()?;
        let (held, skipped) = match change {
            LeaseChange::ReleaseConn(conn) => {
                let held = self.with_topic(|st| {
                    st.topic
                        .as_deref()
                        .and_then(|t| t.queue.as_deref())
                        .map(|q| q.leases_of(conn))
                })?;
                (held.ok_or_else(not_a_queue)?, Vec::new())
            }
            // Jobs no one holds (the dead-letter topic refused them): the live ones.
            LeaseChange::Postpone { .. } => {
                let live = seqs
                    .iter()
                    .copied()
                    .filter(|&s| self.is_live_job(&v, s))
                    .collect();
                (live, Vec::new())
            }
            _ => self.held(node, seqs, lease_ids)?,
        };
        let ms = |x: u64| i64::try_from(x).unwrap_or(i64::MAX);
        let op = match change {
            LeaseChange::Nack { delay_ms } if delay_ms > 0 => QueueOp::Release {
                seqs: held.clone(),
                ready_at: now.saturating_add(ms(delay_ms)),
            },
            LeaseChange::Nack { .. } | LeaseChange::ReleaseConn(_) => QueueOp::Release {
                seqs: held.clone(),
                ready_at: 0,
            },
            LeaseChange::Postpone { until } => QueueOp::Release {
                seqs: held.clone(),
                ready_at: until,
            },
            LeaseChange::Extend { lease_ms } => QueueOp::Extend {
                seqs: held.clone(),
                deadline: now.saturating_add(ms(lease_ms)),
            },
        };
        let deadlines = match &op {
            QueueOp::Extend { seqs, deadline } => seqs.iter().map(|s| (*s, *deadline)).collect(),
            _ => Vec::new(),
        };
        if !held.is_empty() {
            // A lease extension matters after a restart only when leases are restored.
            let logged = !matches!(op, QueueOp::Extend { .. }) || v.config.leases_durable;
            let record = if logged {
                self.queue_record(persist, &v, op.clone())
            } else {
                None
            };
            let log_seq = v.log_seq + 1;
            self.commit(serial, record, 0, move |_, st| {
                if logged {
                    st.w.log_seq = log_seq;
                }
                if let Some(q) = st.topic.as_deref_mut().and_then(|t| t.queue.as_deref_mut()) {
                    q.apply(&op);
                }
            })
            .await?;
        }
        Ok(LeaseDone {
            done: held.len() as u64,
            skipped,
            deadlines,
            counts: self.queue_counts(now)?,
        })
    }

    /// The jobs `/work` stream `conn` holds.
    pub(crate) fn queue_leases_of(&self, conn: u64) -> Vec<u64> {
        let st = self.state.lock();
        st.topic
            .as_deref()
            .and_then(|t| t.queue.as_deref())
            .map_or_else(Vec::new, |q| q.leases_of(conn))
    }

    /// When a waiting claim should look again without a change of the queue.
    pub(crate) fn queue_next_due(&self) -> Option<i64> {
        let st = self.state.lock();
        st.topic.as_deref()?.queue.as_deref()?.next_due()
    }
}

/// A change of leases.
#[derive(Debug, Clone, Copy)]
pub(crate) enum LeaseChange {
    Nack {
        delay_ms: u64,
    },
    Extend {
        lease_ms: u64,
    },
    /// Every lease of a `/work` stream, released at once.
    ReleaseConn(u64),
    /// Jobs held by no one, out of claims until `until` (ms).
    Postpone {
        until: i64,
    },
}
