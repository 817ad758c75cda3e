//! Topic diff reads: from a seq cursor, whole records in their stored form (sliced from the
//! bytes one read of the files returned, never re-parsed), skipping deleted, expired and
//! own-node records silently, with a tombstone when the cursor fell below an eviction floor.

use super::*;
use crate::topic::record;
use crate::topic::{Diff, DiffQuery, GapReason, RecordView, Tombstone};

/// Most records one diff examines (returned or skipped), so a read over a long run of
/// filtered records stays bounded; the cursor still advances past them.
const MAX_SCAN: u64 = 100_000;

/// How often a diff read starts over when evictions keep passing its cursor while it reads.
const RACE_RETRIES: u32 = 16;

impl Log {
    /// Read records after `q.from_seq`.
    pub fn topic_diff(&self, q: &DiffQuery, now: i64) -> Result<Diff> {
        let mut attempt = 0;
        loop {
            match self.diff_once(q, now)? {
                Ok(d) => return Ok(d),
                // A write's eviction passed the cursor between the read's steps: read again,
                // so evicted records are reported, never skipped. Each retry needs another
                // eviction to land just there; past a few, answer with nothing read.
                Err(nothing) if attempt >= RACE_RETRIES => return Ok(nothing),
                Err(_) => attempt += 1,
            }
        }
    }

    /// One attempt of [`Log::topic_diff`]: `Err` with an empty answer at the cursor when an
    /// eviction moved the topic's start past the cursor while it read.
    fn diff_once(&self, q: &DiffQuery, now: i64) -> Result<std::result::Result<Diff, Diff>> {
        let v = self.view()?;
        let mut from = q.from_seq;
        let mut tombstone = None;
        let cut = self.ttl_cut(&v, v.trim.earliest, now)?;
        let cap_floor = v.trim.cap_floor;
        let ttl_floor = if cut > v.trim.earliest {
            v.trim.ttl_floor.max(cut)
        } else {
            v.trim.ttl_floor
        };
        let (earliest, moved) = self.with_topic(|st| {
            let t = st.topic.as_deref_mut().expect("checked by with_topic");
            t.last_read_ts = Some(now);
            (t.live_from(cut.max(v.trim.earliest)), t.trim != v.trim)
        })?;
        // The floors below decide the tombstone; they must be the ones `earliest` comes from.
        let raced = || Diff {
            records: Vec::new(),
            next_from_seq: q.from_seq,
            head_seq: v.head,
            earliest_seq: v.trim.earliest,
            tombstone: None,
            scanned: 0,
        };
        if moved {
            return Ok(Err(raced()));
        }
        if from > v.head {
            // The cursor is past anything this topic ever had: it was deleted and re-created.
            // The documented shape: `gap_from` = from_seq + 1, `gap_to` = earliest_seq - 1
            // (an empty range: what the old incarnation held is not known).
            tombstone = Some(Tombstone {
                gap_from: from.saturating_add(1),
                gap_to: earliest - 1,
                reason: GapReason::Recreated,
                missed_estimate: 0,
            });
            from = 0;
        }
        let floor = cap_floor.max(ttl_floor);
        if tombstone.is_none() && from + 1 < floor {
            let first = from + 1;
            let reason = match (first < cap_floor, first < ttl_floor) {
                (true, true) => GapReason::Mixed,
                (true, false) => GapReason::Cap,
                _ => GapReason::Ttl,
            };
            let deleted = self.with_topic(|st| {
                let t = st.topic.as_deref().expect("checked by with_topic");
                t.deleted.count_in(first, floor)
            })?;
            tombstone = Some(Tombstone {
                gap_from: first,
                gap_to: earliest - 1,
                reason,
                missed_estimate: (floor - first).saturating_sub(deleted),
            });
        }
        if tombstone.is_none() && from + 1 < earliest {
            // Records a router's source evicted before forwarding them, at the front.
            let trimmed = self.with_topic(|st| {
                let t = st.topic.as_deref().expect("checked by with_topic");
                t.source_trimmed(from + 1, earliest)
            })?;
            if trimmed > 0 {
                tombstone = Some(Tombstone {
                    gap_from: from + 1,
                    gap_to: earliest - 1,
                    reason: GapReason::SourceTrim,
                    missed_estimate: trimmed,
                });
            }
        }
        let nodes: Vec<String> = if v.config.dedupe_node {
            q.nodes.iter().map(|n| record::literal(n)).collect()
        } else {
            Vec::new()
        };
        let ttl = i64::try_from(v.config.ttl_ms).unwrap_or(i64::MAX);
        let limit = q.limit.max(1);
        let mut next = from.max(earliest - 1);
        let mut records = Vec::new();
        let mut bytes = 0usize;
        let mut scanned = 0u64;
        while records.len() < limit && next < v.head && scanned < MAX_SCAN {
            let (s, run_end, trimmed, evicted) = self.with_topic(|st| {
                let t = st.topic.as_deref().expect("checked by with_topic");
                let s = t.live_from(next + 1);
                let end = t.deleted.next_start(s).unwrap_or(u64::MAX);
                // Records a router's source evicted before forwarding them, on the way.
                let trimmed = t.source_trimmed(next + 1, s);
                (s, end.min(v.head + 1), trimmed, t.trim.earliest > next + 1)
            })?;
            if evicted {
                // Evicted since the view: the next read reports them.
                if records.is_empty() {
                    return Ok(Err(raced()));
                }
                break;
            }
            if trimmed > 0 {
                if !records.is_empty() {
                    break; // the next read starts at the gap, and is told of it
                }
                if tombstone.is_none() {
                    tombstone = Some(Tombstone {
                        gap_from: next + 1,
                        gap_to: s - 1,
                        reason: GapReason::SourceTrim,
                        missed_estimate: trimmed,
                    });
                }
            }
            if s > v.head {
                next = v.head;
                break;
            }
            let want = (run_end - s)
                .min((limit - records.len()) as u64)
                .min(MAX_SCAN - scanned);
            let start = self.seq_pos(s, &v)?;
            let ends = self.record_ends(s - 1, want)?;
            // Whole records within the byte budget (at least one per response).
            let room = q.max_bytes.saturating_sub(bytes) as u64;
            let mut k = ends.partition_point(|&e| e - start <= room);
            if k == 0 && records.is_empty() {
                k = 1;
            }
            if k == 0 {
                break;
            }
            let end = ends[k - 1];
            let mut chunks: Vec<Bytes> = Vec::new();
            let mut budget = (end - start) as usize;
            self.collect_own(start, end, &mut budget, &mut chunks)?;
            if self.with_topic(|st| st.topic.as_deref().map_or(0, |t| t.trim.earliest))? > s {
                // Evicted while read: what came back may be partial (memory mode frees it).
                if records.is_empty() {
                    return Ok(Err(raced()));
                }
                break;
            }
            let mut seq = s;
            for chunk in chunks {
                let mut at = 0;
                while at < chunk.len() {
                    let (layout, ts, total) = record::parse(&chunk[at..])
                        .ok_or_else(|| storage_error("a topic record is damaged", false))?;
                    let raw = chunk.slice(at..at + total);
                    at += total;
                    scanned += 1;
                    let own = layout
                        .node(&raw)
                        .is_some_and(|n| nodes.iter().any(|x| x.as_bytes() == n));
                    let expired = ttl > 0 && now.saturating_sub(ts) > ttl;
                    if !own && !expired {
                        bytes += total;
                        records.push(RecordView {
                            seq,
                            ts,
                            raw,
                            layout,
                        });
                    }
                    next = seq;
                    seq += 1;
                }
            }
            if k < ends.len() || bytes >= q.max_bytes {
                break;
            }
        }
        if records.len() < limit && next < v.head {
            // Only deleted records left before the head: the cursor passes them silently,
            // unless some stand for source-trimmed ones, which the next read reports.
            let (s, silent) = self.with_topic(|st| {
                let t = st.topic.as_deref().expect("checked by with_topic");
                let s = t.live_from(next + 1);
                // Neither source-trimmed nor evicted since the view.
                let silent = t.source_trimmed(next + 1, s) == 0 && t.trim.earliest <= next + 1;
                (s, silent)
            })?;
            if s > v.head && silent {
                next = v.head;
            }
        }
        Ok(Ok(Diff {
            records,
            next_from_seq: next,
            head_seq: v.head,
            earliest_seq: earliest,
            tombstone,
            scanned,
        }))
    }
}
