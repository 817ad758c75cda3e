//! Replay: one WAL record at a time applied to the logs being recovered, over the state the
//! checkpoint gave them (records it already covers are skipped).

use super::Replaying;
use crate::filecache::FileCache;
use crate::records::{WalEntry, WriterRec};
use crate::subs::SubRec;
use crate::topic::queue::QueueState;
use crate::topic::record;
use crate::topic::state::TopicState;
use std::collections::BTreeMap;
use std::sync::Arc;

/// Apply one WAL record during recovery. Records a checkpoint already covers are skipped.
pub(super) fn replay(
    files: &Arc<FileCache>,
    logs: &mut BTreeMap<u64, Replaying>,
    subs: &mut BTreeMap<u64, SubRec>,
    record: &[u8],
) -> Result<(), String> {
    let (entry, payload) = WalEntry::decode(record)?;
    match entry {
        WalEntry::SubCreate { rec } => {
            subs.entry(rec.id).or_insert(*rec);
        }
        WalEntry::SubChange { sub_id, seq, ops } => {
            if let Some(sub) = subs.get_mut(&sub_id)
                && seq > sub.seq
            {
                for op in &ops {
                    sub.apply(op);
                }
                sub.seq = seq;
            }
        }
        WalEntry::SubDelete { sub_id } => {
            subs.remove(&sub_id);
        }
        WalEntry::Create { meta, closed } => {
            if logs.contains_key(&meta.id) {
                return Ok(());
            }
            let tail = meta.fork.as_ref().map_or(0, |f| f.upto);
            let mut log = Replaying {
                writer: WriterRec {
                    tail,
                    closed,
                    ..WriterRec::default()
                },
                topic: None,
                lost_from: None,
                meta,
                deleted: false,
                files: None,
                dirty: false,
            };
            let files = log.files(files)?.clone();
            files.truncate(tail, 0).map_err(|e| e.to_string())?;
            if !payload.is_empty() {
                files
                    .write_record(0, tail, payload)
                    .map_err(|e| e.to_string())?;
                log.dirty = true;
                log.writer.records = 1;
                log.writer.tail += payload.len() as u64;
            }
            logs.insert(log.meta.id, log);
        }
        WalEntry::Append {
            log_id,
            log_seq,
            start,
            producer,
            stream_seq,
            close,
        } => {
            let Some(log) = logs.get_mut(&log_id) else {
                return Ok(()); // its create failed or it was collected before the checkpoint
            };
            if log_seq <= log.writer.log_seq {
                return Ok(());
            }
            if start != log.writer.tail {
                return Err(format!(
                    "log {log_id:x}: record {log_seq} starts at {start}, but the log ends at {}",
                    log.writer.tail
                ));
            }
            if !payload.is_empty() {
                let index = log.writer.records;
                log.files(files)?
                    .write_record(index, start, payload)
                    .map_err(|e| e.to_string())?;
                log.dirty = true;
                log.writer.records += 1;
                log.writer.tail += payload.len() as u64;
            }
            let w = &mut log.writer;
            w.log_seq = log_seq;
            if let Some(seq) = stream_seq {
                w.last_stream_seq = Some(seq);
            }
            if let Some(p) = &producer {
                w.producers.retain(|(id, _, _)| id != &p.0);
                w.producers.push(p.clone());
            }
            if close {
                w.closed = true;
                w.closed_by = producer;
            }
        }
        WalEntry::Delete { log_id } => {
            if let Some(log) = logs.get_mut(&log_id) {
                log.deleted = true;
            }
        }
        WalEntry::CreateTopic { meta, config } => {
            if logs.contains_key(&meta.id) {
                return Ok(());
            }
            let log = Replaying {
                writer: WriterRec::default(),
                topic: Some(TopicState::new(config, 0)),
                lost_from: None,
                meta,
                deleted: false,
                files: None,
                dirty: false,
            };
            // Its files are not cut here: records written while it was `ephemeral` are in
            // them, not in the WAL, and a `TopicSeal` later in the WAL may say they are its
            // records. (Replay overwrites what logged records cover; `finish` cuts the rest.)
            logs.insert(log.meta.id, log);
        }
        entry => replay_topic(files, logs, entry, payload)?,
    }
    Ok(())
}

/// Apply one of a topic's WAL records during recovery: what the record says happened, never
/// re-decided.
fn replay_topic(
    files: &Arc<FileCache>,
    logs: &mut BTreeMap<u64, Replaying>,
    entry: WalEntry,
    payload: &[u8],
) -> Result<(), String> {
    let (log_id, log_seq) = match &entry {
        WalEntry::TopicAppend {
            log_id, log_seq, ..
        }
        | WalEntry::TopicDelete {
            log_id, log_seq, ..
        }
        | WalEntry::TopicTrim {
            log_id, log_seq, ..
        }
        | WalEntry::TopicConfig {
            log_id, log_seq, ..
        }
        | WalEntry::TopicSeal {
            log_id, log_seq, ..
        }
        | WalEntry::RouterSet {
            log_id, log_seq, ..
        }
        | WalEntry::QueueChange {
            log_id, log_seq, ..
        }
        | WalEntry::TopicCopies {
            log_id, log_seq, ..
        } => (*log_id, *log_seq),
        WalEntry::TopicReserve { log_id, upto, ts } => {
            // Seqs an `ephemeral` topic may have handed out: its head moves past them (their
            // records, never logged, are lost like every record of a topic `ephemeral` at the
            // restart). Once the topic is durable again they are its seal's business.
            if let Some(log) = logs.get_mut(log_id)
                && let Some(t) = &mut log.topic
                && t.config.durability == crate::Durability::Ephemeral
                && *upto > t.head
            {
                log.lost_from.get_or_insert(t.head + 1);
                t.head = *upto;
                t.last_ts = t.last_ts.max(*ts);
                log.writer.records = *upto;
            }
            return Ok(());
        }
        _ => return Ok(()),
    };
    let Some(log) = logs.get_mut(&log_id) else {
        return Ok(());
    };
    if log_seq <= log.writer.log_seq || log.topic.is_none() {
        return Ok(());
    }
    // While a topic is `ephemeral`, its records are not logged. What replay makes of its
    // deletes and trims then does not matter: either the topic is still `ephemeral` at the
    // end (recovery drops all its records) or a `TopicSeal` replaces its whole state. They
    // are skipped, so they never meet the positions replay does not know.
    let ephemeral = log
        .topic
        .as_ref()
        .is_some_and(|t| t.config.durability == crate::Durability::Ephemeral);
    if ephemeral
        && matches!(
            entry,
            WalEntry::TopicDelete { .. } | WalEntry::TopicTrim { .. }
        )
    {
        log.writer.log_seq = log_seq;
        return Ok(());
    }
    match entry {
        WalEntry::TopicAppend {
            start,
            first_seq,
            count,
            ts,
            idem,
            trim,
            ..
        } => {
            let ends = record::ends(payload).ok_or_else(|| {
                format!("topic {log_id:x}: record {log_seq} holds damaged records")
            })?;
            let head = log.topic.as_ref().map_or(0, |t| t.head);
            if first_seq < head + 1 || start < log.writer.tail {
                return Err(format!(
                    "topic {log_id:x}: record {log_seq} writes seq {first_seq} at {start}, but the topic ends at seq {head}, position {}",
                    log.writer.tail
                ));
            }
            if payload.is_empty() {
                // An `ephemeral` write: its records were never logged, only their seqs, which
                // are not handed out again. Where they ended is known at the next logged write.
                let last = first_seq + count.max(1) - 1;
                log.lost_from.get_or_insert(head + 1);
                log.writer.records = last;
                if let Some(t) = &mut log.topic {
                    t.head = last;
                    t.last_ts = t.last_ts.max(ts);
                }
                log.writer.log_seq = log_seq;
                return Ok(());
            }
            let gap_from = log.lost_from.take().unwrap_or(head + 1);
            if gap_from < first_seq || start > log.writer.tail {
                // Records of an `ephemeral` stretch before this write were never logged: they
                // held `[tail, start)`. Index entries for them end at `start`, so the next
                // record's start is found, and readers skip them like deleted records.
                let lost = first_seq - gap_from;
                let filler = vec![start; lost as usize];
                log.files(files)?
                    .write_records(gap_from - 1, start, &[], &filler)
                    .map_err(|e| e.to_string())?;
                let bytes = start - log.writer.tail;
                log.writer.records = first_seq - 1;
                log.writer.tail = start;
                if let Some(t) = &mut log.topic {
                    t.head = first_seq - 1;
                    t.lose(gap_from, first_seq, bytes, start);
                }
            }
            let abs: Vec<u64> = ends.iter().map(|e| start + e).collect();
            let index = log.writer.records;
            log.files(files)?
                .write_records(index, start, payload, &abs)
                .map_err(|e| e.to_string())?;
            log.dirty = true;
            log.writer.records += ends.len() as u64;
            log.writer.tail += payload.len() as u64;
            if let Some(t) = &mut log.topic {
                t.tagged += record::tagged(payload);
                t.apply_write(ends.len() as u64, ts, idem, trim);
            }
        }
        WalEntry::TopicDelete {
            ranges, mut trim, ..
        } => {
            // A position past what replay stored lies beyond a lost `ephemeral` stretch.
            trim.earliest_pos = trim.earliest_pos.min(log.writer.tail);
            if let Some(t) = &mut log.topic {
                let head = t.head;
                let ranges: Vec<_> = ranges.into_iter().filter(|r| r.1 <= head + 1).collect();
                if trim.earliest <= head + 1 {
                    t.apply_delete(&ranges, trim);
                } else {
                    t.apply_delete(&ranges, t.trim);
                }
            }
        }
        WalEntry::TopicTrim { mut trim, .. } => {
            trim.earliest_pos = trim.earliest_pos.min(log.writer.tail);
            if let Some(t) = &mut log.topic
                && trim.earliest <= t.head + 1
            {
                t.apply_trim(trim);
            }
        }
        WalEntry::TopicConfig { config, .. } => {
            if let Some(t) = &mut log.topic {
                t.config = config;
            }
        }
        WalEntry::QueueChange { op, .. } => {
            if let Some(q) = log.topic.as_mut().and_then(|t| t.queue.as_deref_mut()) {
                q.apply(&op);
            }
        }
        WalEntry::RouterSet { feed, .. } => {
            if let Some(t) = &mut log.topic {
                t.feed = feed;
            }
        }
        WalEntry::TopicCopies {
            start,
            first_seq,
            count,
            ts,
            trim,
            lost,
            cursor,
            forwarded,
            ..
        } => replay_copies(
            files,
            log,
            (start, first_seq, count, ts),
            trim,
            &lost,
            payload,
        )
        .map(|()| {
            if let Some(f) = log.topic.as_mut().and_then(|t| t.feed.as_mut()) {
                f.cursor = cursor;
                f.forwarded = forwarded;
            }
        })
        .map_err(|e| format!("topic {log_id:x}: record {log_seq}: {e}"))?,
        WalEntry::TopicSeal {
            writer,
            topic,
            feed,
            queue,
            ..
        } => {
            // The files held this state, synced, when the record was written.
            log.writer = writer;
            let mut t = TopicState::from_rec(*topic);
            t.feed = feed;
            if let Some(before) = log.topic.take() {
                t.source_trims = before.source_trims;
            }
            if let Some(q) = queue {
                t.queue = Some(Box::new(QueueState::from_rec(q)));
            }
            log.topic = Some(t);
            log.lost_from = None;
        }
        _ => {}
    }
    log.writer.log_seq = log_seq;
    Ok(())
}

/// Replay a router's copies: `at` = (start, first_seq, count, ts); the records of `lost` are
/// empty, the others are `payload`'s, in order.
fn replay_copies(
    files: &Arc<FileCache>,
    log: &mut Replaying,
    at: (u64, u64, u64, i64),
    trim: crate::topic::state::TrimRec,
    lost: &[(u64, u64)],
    payload: &[u8],
) -> Result<(), String> {
    let (start, first_seq, count, ts) = at;
    let head = log.topic.as_ref().map_or(0, |t| t.head);
    if first_seq != head + 1 || start != log.writer.tail || log.lost_from.is_some() {
        return Err(format!(
            "copies of seq {first_seq} at {start}, but the topic ends at seq {head}, position {}",
            log.writer.tail
        ));
    }
    let is_lost = |s: u64| lost.iter().any(|&(a, b)| a <= s && s < b);
    let mut ends = Vec::with_capacity(count as usize);
    let mut pos = 0usize;
    for s in first_seq..first_seq + count {
        if !is_lost(s) {
            let (_, _, total) = record::parse(&payload[pos..]).ok_or("damaged copies")?;
            pos += total;
        }
        ends.push(start + pos as u64);
    }
    if pos != payload.len() {
        return Err("copies longer than their records".into());
    }
    let index = log.writer.records;
    log.files(files)?
        .write_records(index, start, payload, &ends)
        .map_err(|e| e.to_string())?;
    log.dirty = true;
    log.writer.records += count;
    log.writer.tail += payload.len() as u64;
    if let Some(t) = &mut log.topic {
        t.tagged += record::tagged(payload);
        t.apply_write(count, ts, None, trim);
        for &(a, b) in lost {
            let a = a.max(t.trim.earliest);
            if a < b {
                t.deleted.insert(a, b, 0);
                t.note_source_trim(a, b);
            }
        }
    }
    Ok(())
}
