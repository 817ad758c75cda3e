//! After a crash: match every recovered log to a state of its history.
//!
//! The rules per class (`strict` means every acknowledged append must be there):
//! - `fsync`: strict, under any crash. Its create is synced too, so the log must exist.
//! - `memory`, `disk` after a process crash: strict (an append is acknowledged once its WAL
//!   write is done, and written data survives the process).
//! - `memory`, `disk` after a power loss: the log is at some state of its history at least as
//!   new as the last checkpoint (or missing entirely if no checkpoint saw it).
//! - `ephemeral`: gone.
//!
//! In every case the recovered log is one state of its history followed by some of its
//! pending appends in order, never a failed append, never anything twice, and recovery
//! itself never refuses to start.

use super::disk::Crash;
use super::oracle::{Attempt, Outcome, Snap, Track, apply_answered, apply_dropped, restore_writer};
use super::{Check, Run};
use crate::common::Model;
use riffle_engine::{AppendStatus, Durability, EngineError};

pub fn reconcile(run: &mut Run, how: Crash) -> Check {
    // A create that failed as the machine went down may have committed.
    for (name, spec) in std::mem::take(&mut run.dying_creates) {
        let Ok(info) = run.engine().info(name) else {
            continue;
        };
        if run.model.names.contains_key(name) {
            continue;
        }
        let (i, _) = run
            .model
            .create(name, &spec)
            .map_err(|e| format!("{name} came back, but the model refuses it now: {e:?}"))?;
        run.model.logs[i].id = info.id;
        run.tracks.push(Track::new(&run.model.logs[i]));
        run.count("crash kept a failed create");
    }
    // Forks before their sources: a lost fork may release a soft-deleted source.
    for i in (0..run.model.logs.len()).rev() {
        let log = &run.model.logs[i];
        if log.removed || log.durability == Durability::Ephemeral {
            continue;
        }
        let (name, id, class) = (log.name, log.id, log.durability);
        let strict = class == Durability::Fsync || how == Crash::Process;
        let info = run.engine().info(name);
        let found = match &info {
            Ok(info) => info.id == id,
            Err(EngineError::Gone) => run.model.logs[i].soft_deleted,
            Err(_) => false,
        };
        if !found {
            let track = &run.tracks[i];
            if strict || track.ckpt.is_some() {
                return Err(format!(
                    "{name} ({class}, created {}) is lost: {info:?}",
                    if track.ckpt.is_some() {
                        "before a checkpoint"
                    } else {
                        "and acknowledged"
                    }
                ));
            }
            run.model.remove(i);
            run.tracks[i].queue.clear();
            run.count("crash lost a log");
            continue;
        }
        if run.model.logs[i].soft_deleted {
            run.tracks[i].queue.clear();
            continue;
        }
        let data = run.read_all(name)?;
        let closed = info.as_ref().is_ok_and(|i| i.closed);
        let (model, track) = (&mut run.model, &mut run.tracks[i]);
        match_history(model, track, i, &data, closed, strict)
            .map_err(|e| format!("{name} ({class}) after the crash: {e}"))?;
        let track = &mut run.tracks[i];
        track.ckpt = Some(track.hist.len() - 1);
        for s in &mut track.hist {
            s.acked = true;
        }
    }
    Ok(())
}

/// Find the state of log `i`'s history that the recovered `data` (and `closed`) show, and
/// make it the model's.
fn match_history(
    model: &mut Model,
    track: &mut Track,
    i: usize,
    data: &[u8],
    closed: bool,
    strict: bool,
) -> Check {
    let last = track.hist.len() - 1;
    let mut floor = track.ckpt.unwrap_or(0);
    if strict {
        floor = floor.max(track.last_acked());
    }
    let acked_pending = track.queue.iter().any(
        |a| matches!(&a.outcome, Outcome::Answered(Ok(w)) if w.status == AppendStatus::Written),
    );
    // The newest state first: the whole history, then some of the pending appends.
    let mut why = String::new();
    if let Some(rest) = data.strip_prefix(&track.hist[last].log.data[..]) {
        let saved = model.logs[i].clone();
        let pending = format!("{:?}", track.queue);
        match apply_pending(model, track, i, rest, closed, strict) {
            Ok(()) if model.logs[i].closed == closed => return Ok(()),
            r => why = format!("{r:?} with pending {pending}; "),
        }
        restore_writer(&mut model.logs[i], &saved);
        track.hist.truncate(last + 1);
    }
    if strict && !data.starts_with(&track.hist[floor].log.data) {
        return Err(format!(
            "acknowledged data is lost: recovered {:?}, acknowledged {:?}",
            String::from_utf8_lossy(data),
            String::from_utf8_lossy(&track.hist[floor].log.data)
        ));
    }
    // Or an older state, with none of the pending appends.
    let k = (floor..=last)
        .rev()
        .find(|&k| track.hist[k].log.data == data && track.hist[k].log.closed == closed);
    match k {
        Some(k) if !(strict && acked_pending) => {
            restore_writer(&mut model.logs[i], &track.hist[k].log);
            track.hist.truncate(k + 1);
            track.queue.clear();
            Ok(())
        }
        _ => Err(format!(
            "{why}{:?} (closed: {closed}) is no state of its history from {floor} on \
             (strict: {strict}): {:?}",
            String::from_utf8_lossy(data),
            track.hist[floor..]
                .iter()
                .map(|s: &Snap| (
                    String::from_utf8_lossy(&s.log.data).into_owned(),
                    s.log.closed
                ))
                .collect::<Vec<_>>(),
        )),
    }
}

/// Apply the pending appends whose bytes `rest` holds, in order; the others did not commit.
fn apply_pending(
    model: &mut Model,
    track: &mut Track,
    i: usize,
    mut rest: &[u8],
    closed: bool,
    strict: bool,
) -> Check {
    let queue: Vec<Attempt> = track.queue.drain(..).collect();
    let mut lost_acked = None;
    // A dropped append missing after a power loss may have committed and been lost with the
    // unsynced tail (`memory`, `disk`): answers given after it may count it, so those of the
    // appends missing too are not compared (seed 206).
    let mut maybe_lost = false;
    for a in &queue {
        let tok = a.token();
        let written =
            matches!(&a.outcome, Outcome::Answered(Ok(w)) if w.status == AppendStatus::Written);
        let present = if tok.is_empty() {
            // A close-only append: its trace is the closed flag.
            closed
                && !model.logs[i].closed
                && (written || !matches!(a.outcome, Outcome::Answered(_)))
        } else {
            rest.starts_with(tok)
        };
        if present {
            rest = &rest[tok.len()..];
            if let Some(n) = lost_acked {
                return Err(format!(
                    "#{} survived but the acknowledged #{n} before it did not",
                    a.n
                ));
            }
        }
        match &a.outcome {
            Outcome::Answered(got) if present && !written => {
                return Err(format!(
                    "#{} was answered {got:?} but is in the recovered log",
                    a.n
                ));
            }
            Outcome::Answered(_) if written && !present => {
                if strict {
                    return Err(format!("the acknowledged #{} is lost", a.n));
                }
                lost_acked = Some(a.n);
            }
            Outcome::Answered(got) if lost_acked.is_none() && (!maybe_lost || present) => {
                apply_answered(model, track, i, a, got)?;
            }
            Outcome::Answered(_) => {}
            _ => {
                maybe_lost |= !present && !strict;
                apply_dropped(model, track, i, a, present)?
            }
        }
    }
    if rest.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "unexplained bytes {:?} after the history",
            String::from_utf8_lossy(rest)
        ))
    }
}
