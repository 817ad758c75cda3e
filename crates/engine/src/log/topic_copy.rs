//! A router's copies, applied to its destination topic. Copies are derived: they are applied
//! at once (no WAL record of their own, so a source append costs one WAL write at any
//! fan-out) and recorded in the destination's state with the router's cursor. They become
//! durable either with the next checkpoint (which syncs the destination's files and holds the
//! cursor) or, when the destination has a logged change first (a client's write, a delete, a
//! trim, a configuration or router change), in a `TopicCopies` record logged before it, so
//! replay always meets the destination's records in the order they were made. After a crash,
//! copies past the durable cursor are dropped and forwarded again from the source.

use super::commit::WalRecord;
use super::*;
use crate::topic::Discard;
use crate::topic::record;
use crate::topic::router::Feed;
use crate::topic::state::{TAG_ENTRY_COST, TAG_KEY_COST};

/// Copies a router made of a batch of source records, ready for its destination.
pub(crate) struct Copies {
    /// Their stored form (their sources' `$ts`, raised to the destination's latest when applied).
    pub buf: Vec<u8>,
    pub rel_ends: Vec<u64>,
    pub tags: Vec<Option<String>>,
    /// Source records evicted before they were forwarded: they become as many empty records
    /// ahead of the copies, which readers are told of with a `source_trim` tombstone.
    pub lost: u64,
    /// The source seq the router has now copied (or skipped) up to.
    pub cursor: u64,
}

impl Copies {
    /// No copies yet; the router's cursor at `cursor`.
    pub fn new(cursor: u64) -> Self {
        Copies {
            buf: Vec::new(),
            rel_ends: Vec::new(),
            tags: Vec::new(),
            lost: 0,
            cursor,
        }
    }

    /// Keep only the first copy, made of source record `seq` (a full destination takes what
    /// fits, one record at a time).
    pub fn keep_first(&mut self, seq: u64) {
        let end = self.rel_ends.first().copied().unwrap_or(0);
        self.buf.truncate(end as usize);
        self.rel_ends.truncate(1);
        self.tags.truncate(1);
        self.lost = 0;
        self.cursor = seq;
    }
}

/// What applying copies did.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum CopyOutcome {
    /// Applied (the number of copies).
    Applied(u64),
    /// The destination refuses more (`discard: reject` at its cap): nothing applied.
    Full,
    /// The router no longer feeds this topic (deleted or replaced).
    NotFed,
}

impl Log {
    /// The append lock, for a caller that makes several changes under it.
    pub(crate) async fn lock_append(&self) -> OwnedMutexGuard<()> {
        self.append_lock.clone().lock_owned().await
    }

    /// The router feeding this topic.
    pub(crate) fn feed(&self) -> Option<Feed> {
        self.state.lock().topic.as_deref()?.feed.clone()
    }

    /// The append lock for a logged change: a router's copies not logged yet are logged first
    /// (so replay meets them before the change).
    pub(crate) async fn lock_logged(
        self: &Arc<Self>,
        persist: Option<&Arc<Persist>>,
    ) -> Result<OwnedMutexGuard<()>> {
        loop {
            let serial = self.append_lock.clone().lock_owned().await;
            if let Some(serial) = self.log_copies(serial, persist).await? {
                return Ok(serial);
            }
        }
    }

    /// Log the unlogged copies now, in one `TopicCopies` record of the topic's class, under
    /// the append lock the caller holds (`serial`). Gives the guard back if there was nothing
    /// to log (or no WAL); otherwise it is released once the record is applied.
    pub(crate) async fn log_copies(
        self: &Arc<Self>,
        serial: OwnedMutexGuard<()>,
        persist: Option<&Arc<Persist>>,
    ) -> Result<Option<OwnedMutexGuard<()>>> {
        let Some(p) = persist.filter(|_| self.files.is_some()) else {
            return Ok(Some(serial));
        };
        let Some((record, log_seq)) = self.copies_record(p)? else {
            return Ok(Some(serial));
        };
        self.commit(serial, Some(record), 0, move |_, st| {
            st.w.log_seq = log_seq;
            if let Some(t) = st.topic.as_deref_mut() {
                t.unlogged = None;
                t.unlogged_lost.clear();
            }
        })
        .await?;
        Ok(None)
    }

    /// The `TopicCopies` record of the unlogged copies (and its `log_seq`), if any (the caller
    /// holds the append lock, so nothing changes meanwhile).
    fn copies_record<'a>(&self, persist: &'a Arc<Persist>) -> Result<Option<(WalRecord<'a>, u64)>> {
        let (seq0, pos0, lost, trim, feed, ts, head, tail, log_seq, class) = {
            let st = self.state.lock();
            let Some(t) = st.topic.as_deref() else {
                return Ok(None);
            };
            let Some((seq0, pos0)) = t.unlogged else {
                return Ok(None);
            };
            if !t.config.durability.is_persistent() {
                return Ok(None);
            }
            let Some(feed) = t.feed.clone() else {
                return Ok(None);
            };
            (
                seq0,
                pos0,
                t.unlogged_lost.clone(),
                t.trim,
                feed,
                t.last_ts,
                t.head,
                st.w.tail,
                st.w.log_seq,
                t.config.durability,
            )
        };
        let mut chunks: Vec<Bytes> = Vec::new();
        let mut budget = (tail - pos0) as usize;
        self.collect_own(pos0, tail, &mut budget, &mut chunks)?;
        let payload = chunks.concat();
        let entry = WalEntry::TopicCopies {
            log_id: self.config.id,
            log_seq: log_seq + 1,
            start: pos0,
            first_seq: seq0,
            count: head + 1 - seq0,
            ts,
            trim,
            lost,
            cursor: feed.cursor,
            forwarded: feed.forwarded,
        };
        let record = WalRecord {
            persist,
            bytes: entry.encode(&payload),
            commit: commit_for(class),
        };
        Ok(Some((record, log_seq + 1)))
    }

    /// Apply a router's copies (the caller holds the append lock: `_held`). On
    /// [`CopyOutcome::Full`] nothing is applied and `c` is left as it was, save `$ts`.
    pub(crate) async fn topic_copy(
        self: &Arc<Self>,
        _held: &OwnedMutexGuard<()>,
        router: &str,
        c: &mut Copies,
        now: i64,
        persist: Option<&Arc<Persist>>,
    ) -> Result<CopyOutcome> {
        let mut v = self.view()?;
        let fed = self.with_topic(|st| {
            let t = st.topic.as_deref().expect("checked by with_topic");
            t.feed.as_ref().is_some_and(|f| f.name == router)
        })?;
        if !fed {
            return Ok(CopyOutcome::NotFed);
        }
        let n = c.rel_ends.len() as u64;
        let logged_later = persist.is_some() && self.files.is_some();
        if logged_later && v.config.durability == Durability::Ephemeral {
            // Like an `ephemeral` write's, the seqs are reserved first.
            let needed = v.head + c.lost + n;
            let reserved = self.with_topic(|st| st.topic.as_deref().map_or(0, |t| t.reserved))?;
            if needed > reserved
                && let Some(p) = persist
            {
                self.reserve_seqs(p, needed + super::topic::RESERVE_SEQS, now)
                    .await?;
                v = self.view()?;
            }
        }
        // Copies keep their source records' timestamps (raised to the topic's latest): made
        // again after a crash, they are the same. The source-trimmed gap takes no time.
        let ts = record::floor_ts(&mut c.buf, v.last_ts);
        // Source-trimmed records first: empty records, skipped by readers (with a tombstone).
        // (A gap comes alone: the router makes its copies next, in another call.)
        debug_assert!(
            c.lost == 0 || n == 0,
            "a source-trimmed gap comes without copies"
        );
        if n == 0 {
            self.apply_lost(c.lost, ts, c.cursor, logged_later);
            self.wake();
            return Ok(CopyOutcome::Applied(0));
        }
        let trim = match self.plan_write_trim(&v, &c.rel_ends, ts) {
            Err(EngineError::TopicFull) if v.config.discard == Discard::Reject => {
                return Ok(CopyOutcome::Full);
            }
            r => r?,
        };
        let records_charge = if self.files.is_none() {
            c.buf.len() as u64 + n * RECORD_OVERHEAD
        } else {
            0
        };
        let index_charge: u64 = c
            .tags
            .iter()
            .flatten()
            .map(|t| t.len() as u64 + TAG_KEY_COST + TAG_ENTRY_COST)
            .sum();
        self.reserve_memory(records_charge + index_charge)?;
        let first_seq = v.head + 1;
        {
            let mut st = self.state.lock();
            assert_eq!(v.tail, st.w.tail, "copies apply under the append lock");
            let t = st.topic.as_deref_mut().expect("a topic stays a topic");
            let before = t.ram();
            for (i, tag) in c.tags.iter().enumerate() {
                if let Some(tag) = tag {
                    t.tags.insert(tag, first_seq + i as u64);
                    t.tagged += 1;
                }
            }
            t.apply_write(n, ts, None, trim);
            t.copy_changes += 1;
            // Under the same lock: a checkpoint's snapshot sees the copies with their cursor.
            advance_feed(t, c.cursor, n, (first_seq, v.tail), logged_later);
            let grown = t.ram() as i64 - before as i64;
            self.push_records(&mut st, &c.buf, &c.rel_ends);
            st.own_bytes += records_charge;
            self.settle_index_ram(&mut st, grown, index_charge);
            self.release_mem(&mut st);
        }
        self.wake();
        Ok(CopyOutcome::Applied(n))
    }

    /// `lost` empty records at the tail, standing for source-trimmed records (none: only the
    /// cursor moves), with the router's cursor moved to `cursor`, in one step.
    fn apply_lost(&self, lost: u64, ts: i64, cursor: u64, logged_later: bool) {
        let mut st = self.state.lock();
        let tail = st.w.tail;
        let Some(t) = st.topic.as_deref_mut() else {
            return;
        };
        let from = t.head + 1;
        advance_feed(t, cursor, 0, (from, tail), logged_later);
        if lost == 0 {
            return;
        }
        t.apply_write(lost, ts, None, t.trim);
        t.copy_changes += 1;
        let to = t.head + 1;
        t.deleted.insert(from, to, 0);
        t.note_source_trim(from, to);
        if logged_later {
            t.unlogged_lost.push((from, to));
        }
        // Their index entries: empty records ending at the tail.
        let ends = vec![0u64; lost as usize];
        self.push_records(&mut st, &[], &ends);
    }
}

/// The router's cursor moved to `cursor` with `n` more copies, the first of them (or the first
/// unlogged change) at `seq`/`pos` (`at`). The caller holds the state lock, under which it
/// applied the copies: a snapshot never sees copies without their cursor, or the reverse.
fn advance_feed(t: &mut TopicState, cursor: u64, n: u64, at: (u64, u64), logged_later: bool) {
    if let Some(f) = t.feed.as_mut() {
        f.cursor = f.cursor.max(cursor);
        f.forwarded += n;
    }
    if logged_later {
        t.unlogged.get_or_insert(at);
    }
}

impl Log {
    /// Set (or with `None` remove) the router feeding this topic: a logged change of the
    /// topic (the copies of a router it replaces are logged first, with their cursor).
    ///
    /// With `keep_progress`, a new definition of the router already feeding this topic from
    /// the same source keeps the cursor and count it has *now*: they are read under the append
    /// lock, so a forwarding step that applied since the caller looked is not undone (which
    /// would copy its records again). Returns the feed replaced.
    pub(crate) async fn topic_set_feed(
        self: &Arc<Self>,
        mut feed: Option<Feed>,
        keep_progress: bool,
        persist: Option<&Arc<Persist>>,
    ) -> Result<Option<Feed>> {
        let serial = self.lock_logged(persist).await?;
        let v = self.view()?;
        let before = self.feed();
        if keep_progress
            && let (Some(new), Some(old)) = (feed.as_mut(), before.as_ref())
            && new.name == old.name
            && new.def.source == old.def.source
        {
            new.cursor = old.cursor;
            new.forwarded = old.forwarded;
        }
        let log_seq = v.log_seq + 1;
        let record = persist.filter(|_| self.files.is_some()).map(|p| WalRecord {
            persist: p,
            bytes: WalEntry::RouterSet {
                log_id: self.config.id,
                log_seq,
                feed: feed.clone(),
            }
            .encode(&[]),
            commit: Commit::Sync,
        });
        self.commit(serial, record, 0, move |_, st| {
            st.w.log_seq = log_seq;
            if let Some(t) = st.topic.as_deref_mut() {
                t.feed = feed;
            }
        })
        .await?;
        Ok(before)
    }
}
