//! The append path: validate against the writer state, reserve memory, then apply (at once
//! for `Ephemeral` logs, from the WAL callback for durable ones).

use super::*;
use crate::engine::EngineConfig;

impl Log {
    /// Validate and apply one append atomically: closure, content type, producer, `Stream-Seq`,
    /// limits, then data and every piece of writer state together (one WAL record for durable
    /// logs, applied only once the WAL has it).
    pub async fn append(
        self: &Arc<Self>,
        req: AppendRequest,
        limits: EngineConfig,
        clock: &dyn Clock,
        persist: Option<&Arc<Persist>>,
    ) -> Result<Appended> {
        let durability = self.config.durability;
        if !durability.is_persistent() {
            let mut st = self.state.lock();
            let plan = match self.validate(&mut st, req, limits, clock)? {
                Decision::Answer(a) => return Ok(a),
                Decision::Write(plan) => plan,
            };
            let out = self.apply(&mut st, plan, limits);
            drop(st);
            self.wake();
            return Ok(out);
        }
        let Some(persist) = persist else {
            return Err(storage_error("durable log without storage", false));
        };
        // Owned, so that it can move into the WAL callback: if this future is dropped while
        // the record is queued (a client resets its HTTP/2 stream), the next append still
        // waits until this one is applied or failed, and never validates against stale state.
        let serial = self.append_lock.clone().lock_owned().await;
        let (plan, record) = {
            let mut st = self.state.lock();
            let plan = match self.validate(&mut st, req, limits, clock)? {
                Decision::Answer(a) => return Ok(a),
                Decision::Write(plan) => plan,
            };
            let record = plan.entry(self.config.id).encode(&plan.payload.data);
            (plan, record)
        };
        let record = super::commit::WalRecord {
            persist,
            bytes: record,
            commit: commit_for(durability),
        };
        let charge = plan.charge;
        let (out, _) = self
            .commit(serial, Some(record), charge, move |log, st| {
                log.apply(st, plan, limits)
            })
            .await?;
        Ok(out)
    }

    fn validate(
        &self,
        st: &mut LogState,
        req: AppendRequest,
        limits: EngineConfig,
        clock: &dyn Clock,
    ) -> Result<Decision> {
        if st.removed || st.creating {
            return Err(EngineError::NotFound);
        }
        // Client-controlled state is bounded before anything looks at it: every producer id
        // is kept (in RAM, checkpoints and WAL records) and every Stream-Seq too.
        if let Some(p) = &req.producer
            && p.id.len() > limits.max_producer_id_bytes
        {
            return Err(EngineError::ProducerIdTooLong {
                len: p.id.len(),
                limit: limits.max_producer_id_bytes,
            });
        }
        if let Some(seq) = &req.stream_seq
            && seq.len() > limits.max_stream_seq_bytes
        {
            return Err(EngineError::StreamSeqTooLong {
                len: seq.len(),
                limit: limits.max_stream_seq_bytes,
            });
        }
        self.slide(st, clock);
        let w = &st.w;
        let has_data = !req.payload.is_empty();
        if !has_data && !req.close {
            return Err(EngineError::EmptyAppend);
        }

        if w.closed {
            if let (Some(claim), Some(by)) = (&req.producer, &w.closed_by)
                && claim == by
            {
                return Ok(Decision::Answer(Appended {
                    status: AppendStatus::Duplicate,
                    next: w.tail,
                    closed: true,
                    producer: Some(ProducerAck {
                        epoch: claim.epoch,
                        seq: claim.seq,
                    }),
                }));
            }
            if req.close && !has_data {
                let producer = req.producer.as_ref().and_then(|c| {
                    w.producers.get(&c.id).map(|p| ProducerAck {
                        epoch: p.epoch,
                        seq: p.last_seq,
                    })
                });
                return Ok(Decision::Answer(Appended {
                    status: AppendStatus::AlreadyClosed,
                    next: w.tail,
                    closed: true,
                    producer,
                }));
            }
            return Err(EngineError::Closed { next: w.tail });
        }

        if has_data
            && let Some(ct) = &req.content_type
            && !framing::has_media_key(ct, &self.config.media_key)
        {
            return Err(EngineError::ContentTypeMismatch {
                expected: self.config.content_type.to_string(),
            });
        }

        // Producer fencing and deduplication come before Stream-Seq: a retry is answered as a
        // duplicate even though its Stream-Seq would now look like a regression.
        if let Some(claim) = &req.producer {
            match w.producers.get(&claim.id) {
                None => {
                    if claim.seq != 0 {
                        return Err(EngineError::SeqGap {
                            expected: 0,
                            received: claim.seq,
                        });
                    }
                }
                Some(p) if claim.epoch < p.epoch => {
                    return Err(EngineError::StaleEpoch { current: p.epoch });
                }
                Some(p) if claim.epoch > p.epoch => {
                    if claim.seq != 0 {
                        return Err(EngineError::EpochSeqNotZero);
                    }
                }
                Some(p) => {
                    if claim.seq <= p.last_seq {
                        return Ok(Decision::Answer(Appended {
                            status: AppendStatus::Duplicate,
                            next: w.tail,
                            closed: w.closed,
                            producer: Some(ProducerAck {
                                epoch: p.epoch,
                                seq: p.last_seq,
                            }),
                        }));
                    }
                    if claim.seq != p.last_seq + 1 {
                        return Err(EngineError::SeqGap {
                            expected: p.last_seq + 1,
                            received: claim.seq,
                        });
                    }
                }
            }
        }

        if let Some(seq) = &req.stream_seq
            && let Some(last) = &w.last_stream_seq
            && seq.as_bytes() <= last.as_bytes()
        {
            return Err(EngineError::SeqRegression {
                given: seq.clone(),
                last: last.clone(),
            });
        }

        let len = req.payload.data.len() as u64;
        if len > 0 && st.pending.data.len() >= PENDING_MAX_BYTES {
            return Err(storage_error(
                "the stream's files cannot be written; refusing appends until they can",
                false,
            ));
        }
        let mut charge = 0;
        self.check_retained(len)?;
        if len > 0 {
            let size = w.tail + len;
            if size > limits.max_stream_bytes {
                return Err(EngineError::StreamFull {
                    size,
                    limit: limits.max_stream_bytes,
                });
            }
            if self.files.is_none() {
                charge += len + RECORD_OVERHEAD;
            }
        }
        if let Some(p) = &req.producer
            && !w.producers.contains_key(&p.id)
        {
            charge += p.id.len() as u64 + PRODUCER_OVERHEAD;
        }
        self.reserve_memory(charge)?;
        Ok(Decision::Write(Plan {
            start: w.tail,
            payload: req.payload,
            producer: req.producer,
            stream_seq: req.stream_seq,
            close: req.close,
            log_seq: w.log_seq + 1,
            charge,
        }))
    }

    /// Apply a validated append: data and all writer state, as one step.
    fn apply(&self, st: &mut LogState, plan: Plan, limits: EngineConfig) -> Appended {
        // Appends of a log are validated one at a time against the state they apply to (the
        // state lock, or the append lock across a WAL wait), so this cannot fail; if it did,
        // applying would store the record at the wrong position.
        assert_eq!(plan.start, st.w.tail, "appends apply in order");
        self.push_locked(st, plan.payload);
        st.own_bytes += plan.charge;
        let mut freed = 0;
        let w = &mut st.w;
        w.log_seq = plan.log_seq;
        if let Some(seq) = plan.stream_seq {
            w.last_stream_seq = Some(seq);
        }
        let ack = plan.producer.as_ref().map(|c| {
            w.producers.insert(
                c.id.clone(),
                ProducerState {
                    epoch: c.epoch,
                    last_seq: c.seq,
                    last_used: plan.log_seq,
                },
            );
            if w.producers.len() > limits.max_producers_per_log.max(1) {
                // Forget the least recently used producer (replay and restore keep the same
                // set: they rank producers by the same order).
                let oldest = w
                    .producers
                    .iter()
                    .min_by_key(|(_, p)| p.last_used)
                    .map(|(id, _)| id.clone());
                if let Some(id) = oldest
                    && w.producers.remove(&id).is_some()
                {
                    freed += id.len() as u64 + PRODUCER_OVERHEAD;
                }
            }
            ProducerAck {
                epoch: c.epoch,
                seq: c.seq,
            }
        });
        if plan.close {
            w.closed = true;
            w.closed_by = plan.producer;
        }
        let out = Appended {
            status: AppendStatus::Written,
            next: w.tail,
            closed: w.closed,
            producer: ack,
        };
        if freed > 0 {
            st.own_bytes = st.own_bytes.saturating_sub(freed);
            self.budget.used.fetch_sub(freed, Ordering::Relaxed);
        }
        out
    }

    /// Account `len` more bytes against the server-wide memory limit.
    pub fn reserve_memory(&self, len: u64) -> Result<()> {
        if len == 0 {
            return Ok(());
        }
        let limit = self.budget.limit;
        let mut used = self.budget.used.load(Ordering::Relaxed);
        loop {
            if used.saturating_add(len) > limit {
                return Err(EngineError::MemoryFull { limit });
            }
            match self.budget.used.compare_exchange_weak(
                used,
                used + len,
                Ordering::Relaxed,
                Ordering::Relaxed,
            ) {
                Ok(_) => return Ok(()),
                Err(actual) => used = actual,
            }
        }
    }
}

impl Plan {
    fn entry(&self, log_id: u64) -> WalEntry {
        WalEntry::Append {
            log_id,
            log_seq: self.log_seq,
            start: self.start,
            producer: self
                .producer
                .as_ref()
                .map(|c| (c.id.clone(), c.epoch, c.seq)),
            stream_seq: self.stream_seq.clone(),
            close: self.close,
        }
    }
}
