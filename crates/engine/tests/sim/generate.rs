//! Random operations as clients would send them.

use super::{BYTE_TYPES, CLASSES, JSON, NAMES, PRODUCERS, Run};
use bytes::Bytes;
use riffle_engine::{AppendRequest, CreateSpec, ForkSpec, Framing, Payload, ProducerClaim};

impl Run {
    pub(super) fn token(&mut self, framing: Framing) -> (Bytes, u32) {
        let n = self.next_n;
        self.next_n += 1;
        // Unique per append and self-delimiting, so the stored bytes say which appends are in.
        match (framing, self.rng.below(3)) {
            // The simulation creates streams only (topics have their own tests).
            (Framing::Bytes | Framing::TopicRecords, _) => (format!("<{n}>").into(), 1),
            (Framing::JsonMessages, 0) => (format!("{{\"n\":{n}}},").into(), 1),
            (Framing::JsonMessages, 1) => (format!("{n},\"v{n}\",").into(), 2),
            (Framing::JsonMessages, _) => (format!("[{n}],{{\"m\":[{n}]}},[\"{n}\"],").into(), 3),
        }
    }

    pub(super) fn pick_name(&mut self) -> &'static str {
        // Mostly live logs; sometimes a deleted or missing one. In the order of NAMES: the
        // model's maps iterate in a different order in every process.
        let names = &self.model.names;
        let used: Vec<&'static str> = NAMES
            .into_iter()
            .filter(|n| {
                names
                    .get(n)
                    .is_some_and(|&i| !self.model.logs[i].soft_deleted)
            })
            .chain(NAMES.into_iter().filter(|n| {
                names
                    .get(n)
                    .is_some_and(|&i| self.model.logs[i].soft_deleted)
            }))
            .collect();
        let live = used
            .iter()
            .filter(|n| !self.model.logs[names[*n]].soft_deleted)
            .count();
        if used.is_empty() || self.rng.chance(8) {
            return self.rng.pick(&NAMES);
        }
        // A soft-deleted one now and then.
        let pool = if live > 0 && !self.rng.chance(10) {
            &used[..live]
        } else {
            &used[..]
        };
        self.rng.pick(pool)
    }

    pub(super) fn random_append(&mut self, log: Option<usize>) -> AppendRequest {
        let framing = log.map_or(Framing::Bytes, |i| self.model.logs[i].framing);
        // Close-only requests are more common on closed logs (answered "already closed").
        let closed = log.is_some_and(|i| self.model.logs[i].closed);
        let close_only = self.rng.chance(if closed { 30 } else { 4 });
        let payload = if close_only {
            // Numbered all the same: attempts are told apart by number.
            self.next_n += 1;
            Payload::default()
        } else {
            let (data, messages) = self.token(framing);
            Payload { data, messages }
        };
        let own_type = log.map(|i| self.model.logs[i].content_type.clone());
        let content_type = match self.rng.below(12) {
            0 => None,
            1 => Some(self.rng.pick(&BYTE_TYPES).to_string()),
            _ => own_type,
        };
        let producer = match log {
            Some(i) if self.rng.chance(55) => Some(self.random_claim(i)),
            _ => None,
        };
        let stream_seq = match log {
            Some(i) if self.rng.chance(25) => {
                let last = self.model.logs[i]
                    .last_seq
                    .as_deref()
                    .map_or(0, |s| s.parse::<u64>().unwrap_or(0));
                let v = if self.rng.chance(15) {
                    last.saturating_sub(self.rng.below(2))
                } else {
                    last + 1 + self.rng.below(3)
                };
                Some(format!("{v:05}"))
            }
            _ => None,
        };
        AppendRequest {
            content_type,
            payload,
            stream_seq,
            producer,
            close: close_only || self.rng.chance(2),
        }
    }

    /// A producer claim as a client would send it: usually the next seq after the last one it
    /// sent, sometimes a retry of an earlier one, a stale epoch, a gap or a new epoch.
    pub(super) fn random_claim(&mut self, i: usize) -> ProducerClaim {
        let id = self.rng.pick(&PRODUCERS);
        let sent: Vec<(u64, u64)> = self.tracks[i]
            .queue
            .iter()
            .filter_map(|a| a.req.producer.as_ref())
            .filter(|c| c.id == id)
            .map(|c| (c.epoch, c.seq))
            .collect();
        let last = sent
            .last()
            .copied()
            .or_else(|| self.model.logs[i].producers.get(id).copied());
        let (epoch, seq) = match (last, self.rng.below(10)) {
            (None, 0..=7) => (self.rng.below(2), 0),
            (None, _) => (0, 1 + self.rng.below(2)),
            (Some((e, s)), 0..=4) => (e, s + 1),
            (Some(_), 5) if !sent.is_empty() => self.rng.pick(&sent),
            (Some((e, s)), 5 | 6) => (e, s),
            (Some((e, s)), 7) => (e + 1, if self.rng.chance(80) { 0 } else { s + 1 }),
            (Some((e, s)), 8) => (e.saturating_sub(1), s + 1),
            (Some((e, s)), _) => (e, s + 2),
        };
        ProducerClaim {
            id: id.into(),
            epoch,
            seq,
        }
    }

    pub(super) fn random_spec(&mut self) -> CreateSpec {
        let fork = self.rng.chance(35).then(|| {
            let source = self.rng.pick(&NAMES);
            let src = self.model.names.get(source).map(|&s| &self.model.logs[s]);
            let tail = src.map_or(4, |l| l.tail());
            let offset = match self.rng.below(10) {
                0..=2 => None,
                3..=7 => src
                    .filter(|l| !l.bounds.is_empty())
                    .map(|l| l.bounds[self.rng.below(l.bounds.len() as u64) as usize])
                    .or(Some(0)),
                _ => Some(self.rng.below(tail + 2)),
            };
            let sub = if self.rng.chance(60) {
                0
            } else {
                self.rng.below(4)
            };
            ForkSpec {
                source: source.into(),
                offset,
                sub,
            }
        });
        let content_type = match (&fork, self.rng.below(10)) {
            (Some(_), 0..=5) => None,
            (_, 0..=2) => Some((JSON.to_string(), Framing::JsonMessages)),
            _ => Some((self.rng.pick(&BYTE_TYPES).to_string(), Framing::Bytes)),
        };
        let durability = self.rng.chance(60).then(|| self.rng.pick(&CLASSES));
        let framing = match (&content_type, &fork) {
            (Some((_, f)), None) => *f,
            (_, Some(f)) => self
                .model
                .names
                .get(f.source.as_str())
                .map_or(Framing::Bytes, |&s| self.model.logs[s].framing),
            (None, None) => Framing::Bytes,
        };
        let initial = if self.rng.chance(50) {
            Payload::default()
        } else {
            let (data, messages) = self.token(framing);
            Payload { data, messages }
        };
        CreateSpec {
            content_type,
            expiry: None,
            closed: self.rng.chance(8),
            initial,
            fork,
            durability,
        }
    }
}
