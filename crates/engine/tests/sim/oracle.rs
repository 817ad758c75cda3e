//! What the simulation knows about each log, and the rules it checks.
//!
//! The shared [`Model`] holds each log's *resolved* state: every change whose outcome is known.
//! Appends whose outcome is not known yet wait in the log's queue, in the order they first
//! ran (which is the order the engine validates them in: one log's appends are serialized).
//! An entry leaves the queue, in order, once its outcome is known:
//! - answered: the model must give the same answer (a storage error is allowed only while
//!   faults are armed, and then the append must show nothing);
//! - dropped before it answered (a cancelled request): once it is sealed (a later append to
//!   the same log answered, or a checkpoint flushed the WAL) it counts as committed exactly
//!   when its unique bytes are in the log, which the model must allow;
//! - in flight: it and everything after it wait.
//!
//! Every change the model applies is kept in the log's history, so that after a crash the
//! recovered log can be matched to the state it had after some prefix of its history.

use crate::common::{Ack, MLog, Model, same_error};
use riffle_engine::{AppendRequest, AppendStatus, Appended, EngineError};

#[derive(Debug)]
pub enum Outcome {
    InFlight,
    /// The future was dropped before it answered; `at` is the drop's event number.
    Dropped {
        at: u64,
    },
    Answered(Result<Appended, EngineError>),
}

#[derive(Debug)]
pub struct Attempt {
    /// Unique number; the append's bytes (its token) are made from it.
    pub n: u64,
    pub req: AppendRequest,
    pub outcome: Outcome,
    /// Faults were armed while it ran: a storage error is a possible answer.
    pub faulty: bool,
}

impl Attempt {
    /// Whether its answer was decided by the log's state, and so after every append to the
    /// same log that ran before it had committed or failed (appends to one log are
    /// serialized until they commit, even when their futures are dropped). Answers that need
    /// no state (a wrong content type) may come sooner.
    pub fn seals(&self) -> bool {
        use EngineError::*;
        match &self.outcome {
            Outcome::Answered(Ok(_)) => true,
            Outcome::Answered(Err(e)) => matches!(
                e,
                Closed { .. }
                    | SeqRegression { .. }
                    | StaleEpoch { .. }
                    | EpochSeqNotZero
                    | SeqGap { .. }
                    | StreamFull { .. }
                    | Storage { .. }
            ),
            _ => false,
        }
    }

    pub fn token(&self) -> &[u8] {
        &self.req.payload.data
    }
}

/// One state of a log, and whether a client was told it happened.
#[derive(Debug, Clone)]
pub struct Snap {
    pub log: MLog,
    pub acked: bool,
}

/// Per log incarnation (indexed like `Model::logs`).
#[derive(Debug, Default)]
pub struct Track {
    pub queue: std::collections::VecDeque<Attempt>,
    /// States after each change, from its creation (or the last recovery) on.
    pub hist: Vec<Snap>,
    /// Index in `hist` that the last successful checkpoint covers.
    pub ckpt: Option<usize>,
}

impl Track {
    pub fn new(created: &MLog) -> Self {
        Self {
            queue: Default::default(),
            hist: vec![Snap {
                log: created.clone(),
                acked: true,
            }],
            ckpt: None,
        }
    }

    /// The last state a client was told about.
    pub fn last_acked(&self) -> usize {
        self.hist.iter().rposition(|s| s.acked).unwrap_or(0)
    }

    pub fn quiet(&self) -> bool {
        self.queue.is_empty()
    }
}

pub fn ack_of(a: &Appended) -> Ack {
    Ack {
        status: a.status,
        next: a.next,
        closed: a.closed,
        producer: a.producer,
    }
}

/// Copy the writer state (not the fork structure, which does not change with appends) of
/// `from` into `to`.
pub fn restore_writer(to: &mut MLog, from: &MLog) {
    to.data.clone_from(&from.data);
    to.bounds.clone_from(&from.bounds);
    to.closed = from.closed;
    to.closed_by.clone_from(&from.closed_by);
    to.producers.clone_from(&from.producers);
    to.last_seq.clone_from(&from.last_seq);
}

/// Apply an answered append to the model. Returns an error message on a wrong answer.
pub fn apply_answered(
    model: &mut Model,
    track: &mut Track,
    i: usize,
    a: &Attempt,
    got: &Result<Appended, EngineError>,
) -> Result<(), String> {
    let saved = model.logs[i].clone();
    let want = model.append_at(i, &a.req);
    match (&want, got) {
        (Ok(w), Ok(g)) if *w == ack_of(g) => {
            if w.status == AppendStatus::Written {
                track.hist.push(Snap {
                    log: model.logs[i].clone(),
                    acked: true,
                });
            }
            Ok(())
        }
        (Err(w), Err(g)) if same_error(g, w) => Ok(()),
        (Ok(w), Err(EngineError::Storage { .. })) if w.status == AppendStatus::Written => {
            restore_writer(&mut model.logs[i], &saved);
            if a.faulty {
                Ok(())
            } else {
                Err(format!(
                    "append #{} failed with no fault armed: {got:?}",
                    a.n
                ))
            }
        }
        _ => Err(format!(
            "append #{} {:?}: the model answers {want:?}, the engine {got:?}",
            a.n, a.req
        )),
    }
}

/// Apply a sealed dropped (or crash-interrupted) append: it committed iff `present`.
pub fn apply_dropped(
    model: &mut Model,
    track: &mut Track,
    i: usize,
    a: &Attempt,
    present: bool,
) -> Result<(), String> {
    let saved = model.logs[i].clone();
    let want = model.append_at(i, &a.req);
    let written = matches!(&want, Ok(w) if w.status == AppendStatus::Written);
    if present && !written {
        return Err(format!(
            "dropped append #{} {:?} is stored, but the model answers {want:?} (stored twice?)",
            a.n, a.req
        ));
    }
    if present {
        track.hist.push(Snap {
            log: model.logs[i].clone(),
            acked: false,
        });
    } else {
        restore_writer(&mut model.logs[i], &saved);
    }
    Ok(())
}

/// Whether `data` is `base` followed by the tokens of some of `queue`'s attempts in queue
/// order, each at most once, including every one answered as written. On a mismatch, says why.
pub fn prefix_consistent(data: &[u8], base: &[u8], queue: &[&Attempt]) -> Result<(), String> {
    let Some(mut rest) = data.strip_prefix(base) else {
        return Err(format!(
            "the log does not start with its resolved state {:?}: {:?}",
            String::from_utf8_lossy(base),
            String::from_utf8_lossy(data)
        ));
    };
    for a in queue {
        let tok = a.token();
        let written = matches!(&a.outcome, Outcome::Answered(Ok(w)) if w.status == AppendStatus::Written && !tok.is_empty());
        if !tok.is_empty() && rest.starts_with(tok) {
            let failed = matches!(&a.outcome, Outcome::Answered(r) if !matches!(r, Ok(w) if w.status == AppendStatus::Written));
            if failed {
                return Err(format!(
                    "append #{} was answered {:?} but its data is stored",
                    a.n, a.outcome
                ));
            }
            rest = &rest[tok.len()..];
        } else if written {
            return Err(format!(
                "append #{} was acknowledged but is not where it belongs in {:?}",
                a.n,
                String::from_utf8_lossy(data)
            ));
        }
    }
    if rest.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "unexplained bytes after the resolved state: {:?} (duplicated or out of order)",
            String::from_utf8_lossy(rest)
        ))
    }
}
