//! After a crash: match every recovered topic to a state its history allows, check the
//! promises of its class, and make that state the model's.
//!
//! A topic's history since the last checkpoint is a list of changes, each one WAL record (an
//! `ephemeral` write's record carries only its seqs, lazily, never waited for), followed by the
//! writes whose outcome was unknown at the crash (each committed or not). What recovery
//! rebuilds is the checkpoint with the records that survived replayed over it, so:
//!
//! - process crash (`kill -9`): every record that was written survives, so the state is the
//!   whole history (with some subset of the unknown writes);
//! - power loss: the WAL keeps a prefix of each shard, so the state is a prefix of the history,
//!   at least up to the last change known durable (synced itself, or followed on its shard by
//!   a synced record or a checkpoint); `fsync` changes are synced, so all of them survive;
//! - `ephemeral` writes leave their seqs (their lazy record, or the seqs of the next logged
//!   write): replayed, the head moves past them and their records are lost. Behind live
//!   records they are skipped silently, like deleted records; at the front (nothing live before
//!   them) the first live record moves past them and the cap floor rises to the first seq after
//!   them, so readers below get a tombstone. Records of WAL classes before and after them
//!   survive. When the topic is `ephemeral` at the restart, all of its records are gone (with a
//!   tombstone). A lazy record not yet written (or synced, for a power loss) with no logged
//!   write after it is lost, and with it the seqs: the head goes back and the seqs are handed
//!   out again. That is expected after a power loss; after a `kill -9`, or when a WAL fault
//!   failed the record, it breaks the promise that seqs survive a crash: a documented limit,
//!   counted as a known problem (a failure with `SIM_STRICT=1`).
//!
//! The replay below applies those records as the engine's recovery does (`persist.rs`), and
//! the recovered topic must equal one of the states it yields, exactly. Then the rules of the
//! class are checked against the live state that prefix had reached: records of a WAL class
//! are not lost (unless the topic is `ephemeral` at the restart), nothing deleted or evicted
//! comes back, lost records leave a tombstone, and seqs go back only as said above.

use super::check::{check_reads, model_persisted, persisted, read_all};
use super::model::{MState, Trim, WriteOutcome};
use super::track::{Entry, Kind, Marks, Out, Topic, check_answer};
use super::{Check, NAMES, Run};
use crate::disk::Crash;
use riffle_engine::topic::TopicConfig;
use riffle_engine::{Durability, EngineError};
use std::sync::Arc;

/// Seqs an `ephemeral` topic reserves past a write (the engine's `RESERVE_SEQS`), and the
/// largest write the simulation makes.
const RESERVE_SEQS: u64 = 4096;
const MAX_WRITE: u64 = 20;

pub fn reconcile(run: &mut Run, how: Crash) -> Check {
    let engine = run.engine().clone();
    for (slot, name) in NAMES.iter().enumerate() {
        let Some(t) = run.slots[slot].take() else {
            if let Ok(h) = engine.topic_open(name) {
                return Err(format!("{name} came back after the crash (id {})", h.id()));
            }
            continue;
        };
        let class = t.st.config.durability;
        let id = match engine.topic_open(name) {
            Ok(h) => h.id(),
            Err(EngineError::NotFound) => {
                let durable = t
                    .created
                    .is_none_or(|(stamp, synced)| synced || run.marks.synced[t.shard] > stamp);
                if how == Crash::Power && !durable {
                    run.count("crash lost a new topic");
                    continue;
                }
                return Err(format!("{name} ({class}, created {:?}) is lost", t.created));
            }
            Err(e) => return Err(format!("{name} after the crash: {e:?}")),
        };
        if id != t.id {
            return Err(format!(
                "{name} is incarnation {id}, the model's is {}",
                t.id
            ));
        }
        let config = engine
            .topic_info(name, false)
            .map_err(|e| format!("info {name}: {e:?}"))?
            .config;
        let st = recovered(run, &t, how, &config)
            .map_err(|e| format!("{name} ({class}) after the crash: {e}"))?;
        run.slots[slot] = Some(Topic {
            base: Arc::new(st.clone()),
            st,
            created: None,
            hist: Vec::new(),
            queue: Default::default(),
            ..t
        });
    }
    // The recovery's checkpoint covers everything; the new engine has queued nothing.
    run.marks = Marks::default();
    Ok(())
}

/// The candidate histories: the known one, then each consistent choice of the unknown writes.
fn histories(t: &Topic) -> Vec<Vec<Entry>> {
    let mut branches: Vec<(MState, Vec<Entry>)> = vec![(t.st.clone(), t.hist.clone())];
    let entry = |st: &MState, kind: Kind, sub: u64| Entry {
        eph: matches!(&kind, Kind::Write(w) if w.recs[0].eph),
        sync: st.config.durability == Durability::Fsync,
        kind,
        sub,
        after: Arc::new(st.clone()),
    };
    for p in &t.queue {
        let mut next = Vec::new();
        for (mut st, mut es) in branches {
            match &p.out {
                Out::Answered { r, at } => match check_answer(&st, p, r) {
                    Err(_) => {}
                    Ok(None) => next.push((st, es)),
                    Ok(Some(eff)) => {
                        st.apply_write(&eff);
                        es.push(entry(&st, Kind::Write(eff), *at));
                        next.push((st, es));
                    }
                },
                _ => {
                    // An `ephemeral` write commits in the poll that takes the append lock, so
                    // one that never answered never ran.
                    let eph = st.config.durability == Durability::Ephemeral;
                    if let WriteOutcome::Written(eff) =
                        st.plan_write(&p.recs, p.key.as_deref(), p.now)
                        && !eph
                    {
                        let (mut st2, mut es2) = (st.clone(), es.clone());
                        st2.apply_write(&eff);
                        es2.push(entry(&st2, Kind::Write(eff), u64::MAX));
                        next.push((st2, es2));
                    }
                    next.push((st, es));
                }
            }
        }
        branches = next;
    }
    branches.into_iter().map(|(_, es)| es).collect()
}

/// Replay `entries` over `base` as recovery does, given the recovered head `head` (which
/// says which lazy records of `ephemeral` writes survived). `None`: recovery would have
/// refused these records.
fn replay(base: &MState, entries: &[Entry], head: u64) -> Option<MState> {
    let mut rs = base.clone();
    // The first seq of an `ephemeral` stretch whose records were never logged, until a logged
    // write says where it ended.
    let mut lost_from: Option<u64> = None;
    for e in entries {
        let ephemeral = rs.config.durability == Durability::Ephemeral;
        match &e.kind {
            Kind::Write(w) if e.eph => {
                if w.last <= head {
                    if w.first < rs.head + 1 {
                        return None;
                    }
                    lost_from.get_or_insert(rs.head + 1);
                    rs.head = w.last;
                    rs.last_ts = rs.last_ts.max(w.ts);
                }
            }
            Kind::Write(w) => {
                if w.first < rs.head + 1 {
                    return None;
                }
                // Records of an `ephemeral` stretch before it were never logged; the engine
                // reads this write's `$ts` for them.
                let from = lost_from.take().unwrap_or(rs.head + 1);
                rs.head = w.first - 1;
                rs.lose(from, w.first, w.ts);
                rs.apply_write(w);
            }
            // While the topic is `ephemeral`, recovery skips its deletes and trims: a seal or
            // the final drop of all its records supersedes them.
            Kind::Delete { .. } | Kind::Trim(_) if ephemeral => {}
            Kind::Delete { matched, trim } => {
                // Whole runs past the recovered head are dropped; so is a trim past it.
                let mut keep = Vec::new();
                let mut i = 0;
                while i < matched.len() {
                    let mut j = i + 1;
                    while j < matched.len() && matched[j] == matched[j - 1] + 1 {
                        j += 1;
                    }
                    if matched[j - 1] < rs.head + 1 {
                        keep.extend_from_slice(&matched[i..j]);
                    }
                    i = j;
                }
                let trim = if trim.earliest <= rs.head + 1 {
                    *trim
                } else {
                    Trim {
                        earliest: rs.earliest,
                        cap_floor: rs.cap_floor,
                        ttl_floor: rs.ttl_floor,
                    }
                };
                rs.apply_delete(&keep, trim);
            }
            Kind::Trim(t) => {
                if t.earliest <= rs.head + 1 {
                    rs.apply_trim(*t);
                }
            }
            // Out of `ephemeral` into a WAL class: the change logged the topic's whole live
            // state (its files synced), which recovery takes as it is.
            Kind::Config(c) if ephemeral && c.durability.is_persistent() => {
                rs = (*e.after).clone();
                lost_from = None;
            }
            Kind::Config(c) => rs.config = c.clone(),
        }
    }
    // Still `ephemeral` at the end: the head may be anywhere up to the last seq reserved.
    if rs.config.durability == Durability::Ephemeral && head > rs.head {
        if head > rs.head + RESERVE_SEQS + MAX_WRITE {
            return None;
        }
        lost_from.get_or_insert(rs.head + 1);
        rs.head = head;
    }
    // A stretch at the end: its records are gone.
    if let Some(from) = lost_from {
        let (to, ts) = (rs.head + 1, rs.last_ts);
        rs.lose(from, to, ts);
    }
    if rs.config.durability == Durability::Ephemeral && rs.earliest <= rs.head {
        let gone = rs.head + 1;
        rs.apply_trim(Trim {
            earliest: gone,
            cap_floor: gone,
            ttl_floor: 0,
        });
    }
    Some(rs)
}

/// The state the recovered topic is in, checked against its history and its class's rules.
fn recovered(run: &mut Run, t: &Topic, how: Crash, config: &TopicConfig) -> Result<MState, String> {
    let engine = run.engine().clone();
    let all = read_all(&engine, t.name)?;
    let persisted = persisted(&engine, t.name)?;
    let now = run.now();
    let head = all.head_seq;
    let mut failures = Vec::new();
    let (mut fallback, mut refused) = (None, Vec::new());
    for hist in histories(t) {
        let durable = |e: &Entry| e.sync || run.marks.synced[t.shard] > e.sub;
        let floor = match how {
            Crash::Process => hist.len(),
            Crash::Power => hist.iter().rposition(durable).map_or(0, |i| i + 1),
        };
        for k in (floor..=hist.len()).rev() {
            let Some(mut rs) = replay(&t.base, &hist[..k], head) else {
                continue;
            };
            if rs.head != head || *config != rs.config {
                continue;
            }
            // A first live seq left on a deleted record (a replayed delete of the first record
            // after a lost stretch at the front) is moved past it by the delete of nothing that
            // read the persisted state.
            let on_deleted = rs.earliest <= rs.head && !rs.recs.contains_key(&rs.earliest);
            if on_deleted {
                rs.apply_trim(Trim {
                    earliest: rs.live_from(rs.earliest),
                    cap_floor: rs.cap_floor,
                    ttl_floor: rs.ttl_floor,
                });
            }
            if model_persisted(&rs) != persisted {
                failures.push(format!(
                    "{k} of {} changes: persisted {persisted:?}, replayed {:?}",
                    hist.len(),
                    model_persisted(&rs)
                ));
                continue;
            }
            if let Err(e) = check_reads(&engine, t.name, &rs, now) {
                failures.push(format!("{k} of {} changes: {e}", hist.len()));
                continue;
            }
            let live = hist[..k].last().map_or(&t.base, |e| &e.after);
            let v = match promises(run, t, how, &hist[..k], live, &rs, now) {
                Ok(v) => v,
                Err(e) => {
                    refused.push(e);
                    continue;
                }
            };
            if v.known.is_empty() {
                return adopt(run, t, how, v, rs);
            }
            fallback.get_or_insert((v, rs));
        }
    }
    if let Some((v, rs)) = fallback {
        return adopt(run, t, how, v, rs);
    }
    if let Some(e) = refused.into_iter().next() {
        return Err(e);
    }
    Err(format!(
        "recovered head {head}, records {:?}: no state of its history fits (last: {:?}; tried: \
         {})",
        all.records.iter().map(|r| r.seq).collect::<Vec<_>>(),
        t.st.recs.keys().collect::<Vec<_>>(),
        failures.join("; ")
    ))
}

/// What the class's rules say of a recovered state: documented limits (counted, or failures
/// with `SIM_STRICT=1`) and what happened, for the stats.
pub struct Verdict {
    known: Vec<(&'static str, String)>,
    notes: Vec<&'static str>,
}

fn adopt(run: &mut Run, t: &Topic, how: Crash, v: Verdict, rs: MState) -> Result<MState, String> {
    for (kind, what) in v.known {
        run.known(kind, what)?;
    }
    for note in v.notes {
        run.count(note);
    }
    run.count(format!("recovered {:?} {}", how, t.st.config.durability));
    Ok(rs)
}

/// The rules of the class, for the recovered state `rs` that replaying `hist` gave, whose live
/// state was `live`.
fn promises(
    run: &Run,
    t: &Topic,
    how: Crash,
    hist: &[Entry],
    live: &MState,
    rs: &MState,
    now: i64,
) -> Result<Verdict, String> {
    let mut v = Verdict {
        known: Vec::new(),
        notes: Vec::new(),
    };
    // Seqs handed out again: only those of lazy records a power loss took.
    for e in hist.iter().filter(|e| e.eph) {
        let Some(w) = e.write() else { continue };
        if w.last <= rs.head {
            continue;
        }
        let what = format!(
            "ephemeral write {}..={} is forgotten after a {how:?} crash: its seqs will be \
             handed out again (head {} -> {})",
            w.first, w.last, live.head, rs.head
        );
        // The write waited for the record reserving its seqs to be written.
        let synced = run.marks.synced[t.shard] > e.sub;
        match how {
            Crash::Power if synced => return Err(format!("{what}, though it was synced")),
            Crash::Power => v.notes.push("power loss took ephemeral seqs"),
            Crash::Process => return Err(format!("{what}, though its seqs were reserved")),
        }
    }
    // Nothing comes back that was deleted or evicted; what survives is what was written.
    for (seq, r) in &rs.recs {
        if live.recs.get(seq) != Some(r) {
            return Err(format!(
                "record {seq} ({r:?}) is back, but the state it belongs to had {:?}",
                live.recs.get(seq)
            ));
        }
    }
    // Records of WAL classes survive, unless the topic is `ephemeral` now.
    let lost: Vec<u64> = live
        .recs
        .iter()
        .filter(|(s, _)| **s <= rs.head && !rs.recs.contains_key(s))
        .map(|(s, _)| *s)
        .collect();
    let durable_lost: Vec<u64> = lost.iter().copied().filter(|s| !live.recs[s].eph).collect();
    if !durable_lost.is_empty() {
        if live.config.durability != Durability::Ephemeral {
            return Err(format!(
                "records {durable_lost:?}, written in a WAL class, are lost after a {how:?} crash"
            ));
        }
        v.notes.push("restart emptied an ephemeral topic");
    }
    // Readers that had not read a record lost at the front are told; behind live records, lost
    // records are skipped like deleted ones.
    if let Some(&max) = lost.iter().rfind(|s| **s < rs.earliest) {
        let floor = rs.cap_floor.max(rs.view(now).ttl_floor);
        if floor <= max {
            return Err(format!(
                "records {lost:?} are lost without a tombstone (first live {}, floors: cap {} \
                 ttl {})",
                rs.earliest, rs.cap_floor, rs.ttl_floor
            ));
        }
        v.notes.push("crash lost records with a tombstone");
    }
    if lost.iter().any(|s| *s >= rs.earliest) {
        v.notes.push("crash skipped lost records behind live ones");
    }
    Ok(v)
}
