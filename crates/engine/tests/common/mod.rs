//! The reference model of the engine's logic, shared by the model test (`model.rs`) and the
//! simulation (`simulation.rs`): per log a byte vector, its record boundaries, a closed flag,
//! the producer map and the fork structure, with the engine's rules applied in order.

// Each test binary uses a different part of it.
#![allow(dead_code)]

pub mod disk;
pub mod requests;
pub mod routing;

use riffle_engine::{
    AppendRequest, AppendStatus, CreateSpec, Durability, EngineError, ForkSpec, Framing,
    ProducerAck, ProducerClaim, cost,
};
use std::collections::{HashMap, HashSet};

/// xorshift64*.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    pub fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
    pub fn pick<T: Copy>(&mut self, xs: &[T]) -> T {
        xs[self.below(xs.len() as u64) as usize]
    }
    /// 1 to `max_len` random letters.
    pub fn bytes(&mut self, max_len: u64) -> Vec<u8> {
        let len = 1 + self.below(max_len);
        (0..len).map(|_| b'a' + self.below(26) as u8).collect()
    }
}

pub fn key(ct: &str) -> String {
    ct.split(';').next().unwrap().trim().to_ascii_lowercase()
}

/// One incarnation of a log, as the model sees it.
#[derive(Debug, Clone)]
pub struct MLog {
    pub name: &'static str,
    pub id: u64,
    pub content_type: String,
    pub framing: Framing,
    pub durability: Durability,
    pub data: Vec<u8>,
    /// Ends of the records as this log serves them (inherited ones cut at the fork point).
    pub bounds: Vec<u64>,
    /// Inherited prefix length.
    pub upto: u64,
    pub closed: bool,
    pub closed_by: Option<ProducerClaim>,
    pub producers: HashMap<String, (u64, u64)>,
    pub last_seq: Option<String>,
    pub source: Option<usize>,
    pub fork: Option<ForkSpec>,
    pub fork_refs: usize,
    pub soft_deleted: bool,
    pub removed: bool,
}

impl MLog {
    pub fn tail(&self) -> u64 {
        self.data.len() as u64
    }

    pub fn push(&mut self, d: &[u8]) {
        if !d.is_empty() {
            self.data.extend_from_slice(d);
            self.bounds.push(self.tail());
        }
    }

    /// Where a read from `from` with `max_bytes` stops: the end of the first record at which
    /// the budget is used up, or the tail.
    pub fn read_end(&self, from: u64, max_bytes: usize) -> u64 {
        let budget = max_bytes.max(1) as u64;
        self.bounds
            .iter()
            .copied()
            .find(|&b| b > from && b - from >= budget)
            .unwrap_or(self.tail())
    }

    /// Whether `pos` is between two messages (always, for byte framing): a JSON log's messages
    /// are its stored text split after each top-level `,`.
    pub fn is_boundary(&self, pos: u64) -> bool {
        pos == 0
            || self.framing == Framing::Bytes
            || json_ends(&self.data).contains(&(pos as usize))
    }

    /// Bytes from `pos` to the end of the record holding it.
    pub fn record_rest(&self, pos: u64) -> u64 {
        self.bounds
            .iter()
            .copied()
            .find(|&b| b > pos)
            .map_or(0, |b| b - pos)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ack {
    pub status: AppendStatus,
    pub next: u64,
    pub closed: bool,
    pub producer: Option<ProducerAck>,
}

pub struct Model {
    /// Whether the engine has storage (else only ephemeral logs can be made).
    pub storage: bool,
    /// The engine's `max_stream_bytes`.
    pub max_stream: u64,
    pub default_durability: Durability,
    pub logs: Vec<MLog>,
    pub names: HashMap<&'static str, usize>,
    /// Logs changed by the current step (their waiters must wake).
    pub changed: Vec<usize>,
}

pub fn ack(epoch: u64, seq: u64) -> Option<ProducerAck> {
    Some(ProducerAck { epoch, seq })
}

impl Model {
    pub fn live(&self, name: &str) -> Result<usize, EngineError> {
        let &i = self.names.get(name).ok_or(EngineError::NotFound)?;
        if self.logs[i].soft_deleted {
            return Err(EngineError::Gone);
        }
        Ok(i)
    }

    /// Returns the log's index and whether it was created.
    pub fn create(
        &mut self,
        name: &'static str,
        spec: &CreateSpec,
    ) -> Result<(usize, bool), EngineError> {
        if let Some(&i) = self.names.get(name) {
            let log = &self.logs[i];
            let mismatch = EngineError::ConfigMismatch("");
            if log.soft_deleted {
                return Err(mismatch);
            }
            if let Some((ct, _)) = &spec.content_type
                && key(ct) != key(&log.content_type)
            {
                return Err(mismatch);
            }
            if spec.durability.is_some_and(|d| d != log.durability) {
                return Err(mismatch);
            }
            if spec.closed != log.closed || spec.fork != log.fork {
                return Err(mismatch);
            }
            return Ok((i, false));
        }
        let initial = &spec.initial.data;
        let mut log = MLog {
            name,
            id: 0,
            content_type: String::new(),
            framing: Framing::Bytes,
            durability: self.default_durability,
            data: Vec::new(),
            bounds: Vec::new(),
            upto: 0,
            closed: spec.closed,
            closed_by: None,
            producers: HashMap::new(),
            last_seq: None,
            source: None,
            fork: spec.fork.clone(),
            fork_refs: 0,
            soft_deleted: false,
            removed: false,
        };
        match &spec.fork {
            None => (log.content_type, log.framing) = spec.content_type.clone().unwrap(),
            Some(f) => {
                let &s = self
                    .names
                    .get(f.source.as_str())
                    .ok_or(EngineError::ForkSourceNotFound)?;
                let src = &self.logs[s];
                if src.soft_deleted {
                    return Err(EngineError::ForkSourceGone);
                }
                log.content_type = match &spec.content_type {
                    Some((ct, _)) if key(ct) != key(&src.content_type) => {
                        return Err(EngineError::ForkContentTypeMismatch {
                            given: ct.clone(),
                            source_type: src.content_type.clone(),
                        });
                    }
                    Some((ct, _)) => ct.clone(),
                    None => src.content_type.clone(),
                };
                log.framing = src.framing;
                let anchor = f.offset.unwrap_or(src.tail());
                if anchor > src.tail() {
                    return Err(EngineError::ForkOffsetBeyondTail {
                        offset: anchor,
                        tail: src.tail(),
                    });
                }
                if !src.is_boundary(anchor) {
                    return Err(EngineError::OffsetInsideMessage { offset: anchor });
                }
                let rest = src.record_rest(anchor);
                // The sub-offset counts bytes, or whole messages of a JSON record.
                let (available, sub_len) = match src.framing {
                    Framing::Bytes => (rest, f.sub),
                    Framing::JsonMessages => {
                        let rec = &src.data[anchor as usize..(anchor + rest) as usize];
                        let ends = json_ends(rec);
                        let len = match f.sub {
                            0 => 0,
                            n => ends.get(n as usize - 1).map_or(0, |&e| e as u64),
                        };
                        (ends.len() as u64, len)
                    }
                    Framing::TopicRecords => unreachable!("the model has no topics"),
                };
                if f.sub > available {
                    return Err(EngineError::ForkSubOffsetOvershoot {
                        sub: f.sub,
                        available,
                    });
                }
                let upto = anchor + sub_len;
                log.upto = upto;
                log.data = src.data[..upto as usize].to_vec();
                log.bounds = src.bounds.iter().copied().filter(|&b| b < upto).collect();
                if upto > 0 {
                    log.bounds.push(upto);
                }
                log.source = Some(s);
            }
        }
        log.durability = match (spec.durability, log.source) {
            (Some(d), _) => d,
            (None, Some(s)) => self.logs[s].durability,
            (None, None) => self.default_durability,
        };
        if let Some(s) = log.source
            && log.durability.is_persistent()
            && !self.logs[s].durability.is_persistent()
        {
            return Err(EngineError::ForkOfEphemeral);
        }
        if log.durability.is_persistent() && !self.storage {
            return Err(EngineError::DurabilityUnavailable(log.durability));
        }
        let size = log.upto + initial.len() as u64;
        if size > self.max_stream {
            return Err(EngineError::StreamFull {
                size,
                limit: self.max_stream,
            });
        }
        log.push(initial);
        if let Some(s) = log.source {
            self.logs[s].fork_refs += 1;
        }
        self.logs.push(log);
        let i = self.logs.len() - 1;
        self.names.insert(name, i);
        Ok((i, true))
    }

    pub fn append(&mut self, name: &str, req: &AppendRequest) -> Result<Ack, EngineError> {
        let i = self.live(name)?;
        self.append_at(i, req)
    }

    /// An append to the incarnation `i`, whatever its name answers now.
    pub fn append_at(&mut self, i: usize, req: &AppendRequest) -> Result<Ack, EngineError> {
        let log = &mut self.logs[i];
        let has_data = !req.payload.data.is_empty();
        if !has_data && !req.close {
            return Err(EngineError::EmptyAppend);
        }
        if log.closed {
            if let Some(c) = &req.producer
                && log.closed_by.as_ref() == Some(c)
            {
                return Ok(Ack {
                    status: AppendStatus::Duplicate,
                    next: log.tail(),
                    closed: true,
                    producer: ack(c.epoch, c.seq),
                });
            }
            if req.close && !has_data {
                return Ok(Ack {
                    status: AppendStatus::AlreadyClosed,
                    next: log.tail(),
                    closed: true,
                    producer: req
                        .producer
                        .as_ref()
                        .and_then(|c| log.producers.get(&c.id))
                        .and_then(|&(epoch, seq)| ack(epoch, seq)),
                });
            }
            return Err(EngineError::Closed { next: log.tail() });
        }
        if has_data
            && let Some(ct) = &req.content_type
            && key(ct) != key(&log.content_type)
        {
            return Err(EngineError::ContentTypeMismatch {
                expected: log.content_type.clone(),
            });
        }
        if let Some(c) = &req.producer {
            match log.producers.get(&c.id) {
                None if c.seq != 0 => {
                    return Err(EngineError::SeqGap {
                        expected: 0,
                        received: c.seq,
                    });
                }
                None => {}
                Some(&(epoch, _)) if c.epoch < epoch => {
                    return Err(EngineError::StaleEpoch { current: epoch });
                }
                Some(&(epoch, _)) if c.epoch > epoch && c.seq != 0 => {
                    return Err(EngineError::EpochSeqNotZero);
                }
                Some(&(epoch, _)) if c.epoch > epoch => {}
                Some(&(epoch, last)) => {
                    if c.seq <= last {
                        return Ok(Ack {
                            status: AppendStatus::Duplicate,
                            next: log.tail(),
                            closed: false,
                            producer: ack(epoch, last),
                        });
                    }
                    if c.seq != last + 1 {
                        return Err(EngineError::SeqGap {
                            expected: last + 1,
                            received: c.seq,
                        });
                    }
                }
            }
        }
        if let (Some(given), Some(last)) = (&req.stream_seq, &log.last_seq)
            && given.as_bytes() <= last.as_bytes()
        {
            return Err(EngineError::SeqRegression {
                given: given.clone(),
                last: last.clone(),
            });
        }
        if has_data {
            let size = log.tail() + req.payload.data.len() as u64;
            if size > self.max_stream {
                return Err(EngineError::StreamFull {
                    size,
                    limit: self.max_stream,
                });
            }
        }
        // Accepted: everything at once.
        log.push(&req.payload.data);
        if let Some(s) = &req.stream_seq {
            log.last_seq = Some(s.clone());
        }
        if let Some(c) = &req.producer {
            log.producers.insert(c.id.clone(), (c.epoch, c.seq));
        }
        if req.close {
            log.closed = true;
            log.closed_by = req.producer.clone();
        }
        self.changed.push(i);
        let log = &self.logs[i];
        Ok(Ack {
            status: AppendStatus::Written,
            next: log.tail(),
            closed: log.closed,
            producer: req.producer.as_ref().and_then(|c| ack(c.epoch, c.seq)),
        })
    }

    pub fn delete(&mut self, name: &str) -> Result<(), EngineError> {
        let i = self.live(name)?;
        self.changed.push(i);
        if self.logs[i].fork_refs > 0 {
            self.logs[i].soft_deleted = true;
            return Ok(());
        }
        self.remove(i);
        Ok(())
    }

    /// Remove a log, releasing its source and collecting soft-deleted ancestors left unused.
    pub fn remove(&mut self, i: usize) {
        let mut next = Some(i);
        while let Some(i) = next.take() {
            let log = &mut self.logs[i];
            if log.removed {
                return;
            }
            if self.names.get(log.name) == Some(&i) {
                self.names.remove(log.name);
            }
            log.removed = true;
            self.changed.push(i);
            if let Some(s) = log.source {
                let src = &mut self.logs[s];
                src.fork_refs -= 1;
                if src.fork_refs == 0 && src.soft_deleted {
                    next = Some(s);
                }
            }
        }
    }

    /// A clean restart: ephemeral logs are gone (releasing what they held); the rest stays.
    pub fn restart(&mut self) {
        let ephemeral: Vec<usize> = (0..self.logs.len())
            .filter(|&i| {
                let log = &self.logs[i];
                !log.removed && log.durability == Durability::Ephemeral
            })
            .collect();
        for i in ephemeral {
            self.remove(i);
        }
        self.changed.clear();
    }

    /// Bytes held in memory: the own bytes of every log still reachable from the registry or
    /// from a held handle, through fork sources.
    pub fn memory(&self, held: &[usize]) -> u64 {
        let mut seen = HashSet::new();
        let mut stack: Vec<usize> = self
            .names
            .values()
            .copied()
            .chain(held.iter().copied())
            .collect();
        let mut total = 0;
        while let Some(i) = stack.pop() {
            if !seen.insert(i) {
                continue;
            }
            let log = &self.logs[i];
            total += cost::log_overhead(log.name, &log.content_type);
            total += log
                .producers
                .keys()
                .map(|id| id.len() as u64 + cost::PRODUCER_OVERHEAD)
                .sum::<u64>();
            if log.durability == Durability::Ephemeral {
                let own_records = log.bounds.iter().filter(|&&b| b > log.upto).count() as u64;
                total += log.tail() - log.upto + own_records * cost::RECORD_OVERHEAD;
            }
            stack.extend(log.source);
        }
        total
    }
}

/// End offsets (just past each top-level `,`) of the messages of stored JSON text.
pub fn json_ends(text: &[u8]) -> Vec<usize> {
    let (mut depth, mut in_string, mut escaped) = (0usize, false, false);
    let mut ends = Vec::new();
    for (i, &b) in text.iter().enumerate() {
        if in_string {
            match (escaped, b) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'[' | b'{' => depth += 1,
            b']' | b'}' => depth = depth.saturating_sub(1),
            b',' if depth == 0 => ends.push(i + 1),
            _ => {}
        }
    }
    ends
}

pub fn same_error(got: &EngineError, want: &EngineError) -> bool {
    match (got, want) {
        (EngineError::ConfigMismatch(_), EngineError::ConfigMismatch(_)) => true,
        _ => got == want,
    }
}

#[track_caller]
pub fn check_err<T: std::fmt::Debug>(
    step: usize,
    what: &str,
    got: Result<T, EngineError>,
    want: &EngineError,
) {
    match got {
        Err(e) if same_error(&e, want) => {}
        other => panic!("step {step}: {what}: expected {want:?}, got {other:?}"),
    }
}
