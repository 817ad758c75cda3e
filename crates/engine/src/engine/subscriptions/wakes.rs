//! Wakes: the delivery side's look at a subscription (lease expiry, a new wake, what to
//! deliver), webhook outcomes, and the pull-wake claim, ack and release, all fenced by the
//! wake's generation.

use super::*;

impl Engine {
    /// New wake `generation` over `streams` (made when the subscription is idle with
    /// pending data).
    fn new_wake(sub: &Sub, generation: u64, streams: &[LinkInfo]) -> Wake {
        Wake {
            wake_id: format!("w_{:x}_{generation}", sub.id),
            generation,
            snapshot: streams.iter().map(|l| (l.path.clone(), l.tail)).collect(),
            holder: None,
            lease_until: None,
            delivered: false,
        }
    }

    /// Look at subscription `name` now (`now`: Unix ms): end a lease that expired, make a
    /// wake if it is idle with pending data, and say what to deliver and when to look again.
    pub async fn sub_poke(&self, name: &str) -> SubResult<SubPoke> {
        let sub = self.sub_named(name)?;
        let guard = self.sub_lock(&sub).await?;
        let now = self.now();
        let ops = {
            let mut st = sub.state.lock();
            let mut ops = Vec::new();
            let expired = st.rec.wake.as_ref().is_some_and(|w| {
                (w.holder.is_some() || w.delivered) && w.lease_until.is_some_and(|u| now >= u)
            });
            if expired {
                ops.push(SubOp::End);
            }
            if st.rec.wake.is_none() || expired {
                let pending = self.pending_links(&mut st);
                if !pending.is_empty() {
                    ops.push(SubOp::Wake(Self::new_wake(
                        &sub,
                        st.rec.generation + 1,
                        &pending,
                    )));
                }
            }
            ops
        };
        self.sub_commit(&sub, guard, ops).await?;
        let mut st = sub.state.lock();
        let Some(w) = st.rec.wake.clone() else {
            return Ok(SubPoke::default());
        };
        let mut poke = SubPoke::default();
        match st.rec.spec.kind.clone() {
            SubKind::Webhook { url } if !w.delivered => {
                let due = st.rec.next_attempt.unwrap_or(now);
                if due > now {
                    poke.due = Some(due);
                } else if !st.delivering {
                    st.delivering = true;
                    let streams = w
                        .snapshot
                        .iter()
                        .map(|(p, tail)| {
                            let link = st.rec.links.get(p);
                            LinkInfo {
                                path: p.clone(),
                                explicit: link.is_some_and(|l| l.explicit),
                                acked: link.map_or(0, |l| l.acked),
                                tail: *tail,
                            }
                        })
                        .collect();
                    poke.action = Some(SubAction::Webhook {
                        url,
                        wake: WakeInfo {
                            name: sub.name.clone(),
                            origin: st.rec.origin.clone(),
                            sub_id: sub.id,
                            wake_id: w.wake_id.clone(),
                            generation: w.generation,
                            streams,
                            lease_ttl_ms: st.rec.spec.lease_ttl_ms,
                        },
                    });
                }
            }
            SubKind::PullWake { wake_stream } if w.holder.is_none() && !st.event_written => {
                st.event_written = true;
                let stream = w.snapshot.first().map_or("", |(p, _)| p.as_str());
                let event = serde_json::json!({
                    "type": "wake",
                    "subscription_id": sub.name,
                    "stream": stream,
                    "generation": w.generation,
                    "ts": now,
                });
                poke.action = Some(SubAction::WakeEvent {
                    wake_stream,
                    generation: w.generation,
                    event: event.to_string(),
                });
            }
            _ => {}
        }
        if w.holder.is_some() || w.delivered {
            poke.due = w.lease_until;
        }
        Ok(poke)
    }

    /// How the webhook delivery of wake `generation` went. A `done` answer acks the wake's
    /// snapshot and ends it; a failure schedules the next attempt `backoff(failures so far)`
    /// milliseconds from now.
    pub async fn sub_delivered(
        &self,
        name: &str,
        generation: u64,
        outcome: Delivery,
        backoff: impl FnOnce(u32) -> u64,
    ) -> SubResult<()> {
        let sub = self.sub_named(name)?;
        let guard = self.sub_lock(&sub).await?;
        let now = self.now();
        let ops = {
            let mut st = sub.state.lock();
            st.delivering = false;
            match &st.rec.wake {
                Some(w) if w.generation == generation && !w.delivered => {
                    let lease_until = after(now, st.rec.spec.lease_ttl_ms);
                    match outcome {
                        Delivery::Accepted { done: false } => {
                            vec![SubOp::Delivered { lease_until }]
                        }
                        Delivery::Accepted { done: true } => vec![
                            SubOp::Delivered { lease_until },
                            SubOp::Acks(w.snapshot.clone()),
                            SubOp::End,
                        ],
                        Delivery::Failed => {
                            let attempts = st.rec.attempts.saturating_add(1);
                            vec![SubOp::Retry {
                                attempts,
                                next_at: after(now, backoff(attempts)),
                            }]
                        }
                    }
                }
                _ => Vec::new(),
            }
        };
        self.sub_commit(&sub, guard, ops).await?;
        self.mark_dirty(name);
        Ok(())
    }

    /// The pull-wake event of wake `generation` could not be appended: offer it again at the
    /// next look.
    pub fn sub_event_failed(&self, name: &str, generation: u64) {
        if let Ok(sub) = self.sub_named(name) {
            let mut st = sub.state.lock();
            if st
                .rec
                .wake
                .as_ref()
                .is_some_and(|w| w.generation == generation)
            {
                st.event_written = false;
            }
        }
    }

    /// A pull-wake worker claims subscription `name`'s wake (making one if the subscription
    /// is idle with pending data).
    pub async fn sub_claim(&self, name: &str, worker: &str) -> SubResult<WakeInfo> {
        let sub = self.sub_named(name)?;
        let guard = self.sub_lock(&sub).await?;
        let now = self.now();
        let (ops, info) = {
            let mut st = sub.state.lock();
            if !matches!(st.rec.spec.kind, SubKind::PullWake { .. }) {
                return Err(SubError::NotPullWake);
            }
            let mut ops = Vec::new();
            let mut generation = st.rec.generation;
            let mut wake_id = None;
            if let Some(w) = &st.rec.wake {
                let live = w.lease_until.is_none_or(|u| now < u);
                match &w.holder {
                    Some(holder) if live => {
                        return Err(SubError::AlreadyClaimed {
                            holder: holder.clone(),
                            generation: w.generation,
                        });
                    }
                    Some(_) => ops.push(SubOp::End),
                    None => wake_id = Some(w.wake_id.clone()),
                }
            }
            let pending = self.pending_links(&mut st);
            if pending.is_empty() {
                // A wake nobody claimed whose data went (its streams were removed) ends.
                if wake_id.is_some() {
                    ops.push(SubOp::End);
                }
                (ops, None)
            } else {
                let wake_id = match wake_id {
                    Some(id) => id,
                    None => {
                        generation += 1;
                        let w = Self::new_wake(&sub, generation, &pending);
                        let id = w.wake_id.clone();
                        ops.push(SubOp::Wake(w));
                        id
                    }
                };
                ops.push(SubOp::Claim {
                    holder: worker.to_string(),
                    lease_until: after(now, st.rec.spec.lease_ttl_ms),
                });
                let info = WakeInfo {
                    name: sub.name.clone(),
                    origin: st.rec.origin.clone(),
                    sub_id: sub.id,
                    wake_id,
                    generation,
                    streams: pending,
                    lease_ttl_ms: st.rec.spec.lease_ttl_ms,
                };
                (ops, Some(info))
            }
        };
        self.sub_commit(&sub, guard, ops).await?;
        let info = info.ok_or(SubError::NoPendingWork)?;
        self.mark_dirty(name);
        Ok(info)
    }

    /// Check that a request is for the current wake of incarnation `sub_id`.
    /// A wake whose lease ran out is fenced at once, before the driver's timer ends it.
    fn fence(
        sub: &Sub,
        st: &SubState,
        (sub_id, generation, wake_id): (u64, u64, &str),
        now: i64,
    ) -> SubResult<()> {
        match &st.rec.wake {
            Some(w) if sub.id == sub_id && w.generation == generation && w.wake_id == wake_id => {
                let leased = w.holder.is_some() || w.delivered;
                if leased && w.lease_until.is_some_and(|u| now >= u) {
                    return Err(SubError::Fenced);
                }
                Ok(())
            }
            _ => Err(SubError::Fenced),
        }
    }

    /// Acks of the current wake (a webhook's callback or a pull-wake worker's ack): the
    /// positions move forward; `done` ends the wake (and makes the next one if data is
    /// pending: the answer's `next_wake`), otherwise the lease is extended.
    #[allow(clippy::too_many_arguments)]
    pub async fn sub_ack(
        &self,
        name: &str,
        sub_id: u64,
        generation: u64,
        wake_id: &str,
        acks: &[(String, u64)],
        done: bool,
        pull: bool,
    ) -> SubResult<bool> {
        let sub = self.sub_named(name)?;
        let guard = self.sub_lock(&sub).await?;
        let now = self.now();
        let ops = {
            let mut st = sub.state.lock();
            let is_pull = matches!(st.rec.spec.kind, SubKind::PullWake { .. });
            if pull && !is_pull {
                return Err(SubError::NotPullWake);
            }
            if !pull && is_pull {
                return Err(SubError::NotWebhook);
            }
            Self::fence(&sub, &st, (sub_id, generation, wake_id), now)?;
            if pull && st.rec.wake.as_ref().is_some_and(|w| w.holder.is_none()) {
                return Err(SubError::Fenced);
            }
            for (path, pos) in acks {
                let Some(link) = st.rec.links.get(path) else {
                    return Err(SubError::InvalidOffset(format!(
                        "ack names {path:?}, which this subscription does not link"
                    )));
                };
                if *pos < link.acked {
                    return Err(SubError::InvalidOffset(format!(
                        "ack of {path:?} would move its cursor back"
                    )));
                }
                let info = self.link_info(path, link);
                if *pos > info.tail {
                    return Err(SubError::InvalidOffset(format!(
                        "ack of {path:?} is beyond the stream's tail"
                    )));
                }
            }
            let mut ops = Vec::new();
            if !acks.is_empty() {
                ops.push(SubOp::Acks(acks.to_vec()));
            }
            if done {
                ops.push(SubOp::End);
                for (p, _) in acks {
                    st.pending.insert(p.clone());
                }
            } else {
                ops.push(SubOp::Extend {
                    lease_until: after(now, st.rec.spec.lease_ttl_ms),
                });
            }
            ops
        };
        self.sub_commit(&sub, guard, ops).await?;
        if !done {
            return Ok(false);
        }
        self.next_wake(&sub).await
    }

    /// After a wake ended: make the next one if data is pending. Returns whether it did.
    async fn next_wake(&self, sub: &Arc<Sub>) -> SubResult<bool> {
        let guard = self.sub_lock(sub).await?;
        let ops = {
            let mut st = sub.state.lock();
            if st.rec.wake.is_some() {
                return Ok(true);
            }
            let pending = self.pending_links(&mut st);
            if pending.is_empty() {
                return Ok(false);
            }
            vec![SubOp::Wake(Self::new_wake(
                sub,
                st.rec.generation + 1,
                &pending,
            ))]
        };
        self.sub_commit(sub, guard, ops).await?;
        self.mark_dirty(&sub.name);
        Ok(true)
    }

    /// A pull-wake worker gives its claim back without acking.
    pub async fn sub_release(
        &self,
        name: &str,
        sub_id: u64,
        generation: u64,
        wake_id: &str,
    ) -> SubResult<()> {
        let sub = self.sub_named(name)?;
        let guard = self.sub_lock(&sub).await?;
        let now = self.now();
        {
            let st = sub.state.lock();
            if !matches!(st.rec.spec.kind, SubKind::PullWake { .. }) {
                return Err(SubError::NotPullWake);
            }
            Self::fence(&sub, &st, (sub_id, generation, wake_id), now)?;
        }
        self.sub_commit(&sub, guard, vec![SubOp::End]).await?;
        self.next_wake(&sub).await.map(|_| ())
    }
}
