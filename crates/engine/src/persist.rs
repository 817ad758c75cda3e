//! The engine's use of the WAL: shards, recovery (checkpoint + WAL replay over the stream
//! files), and checkpoints that let old WAL segments go.
//!
//! Files in the data directory:
//! - `wal/<shard>/<segment>.wal`: the write-ahead log, one directory per shard.
//! - `streams/<id>.data`, `streams/<id>.idx`: each durable log's stored bytes and record ends.
//! - `checkpoint`: the state of every durable log as of the WAL segments it names.

use crate::filecache::{FileCache, FileKey};
use crate::records::{LogMeta, WriterRec};
use crate::store::{LogFiles, data_path, idx_len, idx_path};
use crate::subs::SubRec;
use crate::topic::queue::{QueueRec, QueueState};
use crate::topic::router::Feed;
use crate::topic::state::{TopicRec, TopicState};
use riffle_wal::{Commit, Dir, Lsn, StopReason, Wal, WalConfig, WalError};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

mod replay;
mod snapshot;
mod stats;

use replay::replay;
use snapshot::Snapshot;

const CHECKPOINT: &str = "checkpoint";
/// Present while a server runs on the directory; removed after the final checkpoint of a
/// graceful stop. Found at start-up, it says the last run did not stop that way.
const RUNNING: &str = "running";
/// Most shard directories probed at recovery (a previous run may have used more shards).
const MAX_SHARDS: u32 = 64;

/// Storage settings.
#[derive(Clone)]
pub struct StorageConfig {
    pub dir: Arc<dyn Dir>,
    /// WAL shards; a log's records all go to shard `id % shards`.
    pub shards: u32,
    /// Longest time a `disk`-class append stays unsynced.
    pub sync_interval: Duration,
    pub segment_bytes: u64,
    /// Take a checkpoint once this many WAL bytes were written since the last one. Smaller
    /// means less data-file writeback for each checkpoint's syncs at once (which the WAL's
    /// own fsyncs queue behind on the device), so shorter commit stalls: at 256 MiB a 500,000
    /// records/s topic load saw 55 ms p99, at 64 MiB 11 ms.
    pub checkpoint_bytes: u64,
    /// Most stream files held open at once (two per log in use); more logs than that are
    /// served by reopening files on demand. See [`crate::filecache`].
    pub max_open_files: usize,
    /// WAL records replayed so far during recovery (for readiness reports while it runs).
    pub progress: Arc<std::sync::atomic::AtomicU64>,
}

impl StorageConfig {
    /// Defaults for a directory: one shard per two cores (1 to 8), 50 ms disk-class sync
    /// interval, 512 open stream files (half the usual default open-files limit).
    ///
    /// Why not a shard per core: a committer thread mostly waits for its `fdatasync`, and each
    /// one more is another thread to wake and another sync per round. On 2 cores, with the
    /// load sharing them, one shard gave 3-20 % more durable appends at 7-16 % less CPU per
    /// append than two (docs/BENCHMARKS.md).
    pub fn new(dir: Arc<dyn Dir>) -> Self {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        Self {
            dir,
            shards: u32::try_from((cores / 2).clamp(1, 8)).unwrap_or(1),
            sync_interval: Duration::from_millis(50),
            segment_bytes: 64 << 20,
            checkpoint_bytes: 64 << 20,
            max_open_files: 512,
            progress: Arc::default(),
        }
    }
}

/// Why the engine could not open its storage.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("{0}")]
    Wal(#[from] WalError),
    #[error("checkpoint is unreadable: {0}")]
    Checkpoint(String),
    #[error("recovery failed: {0}")]
    Replay(String),
}

/// What recovery found, for the operator's log.
#[derive(Debug, Clone, Default)]
pub struct RecoveryReport {
    pub logs: usize,
    pub records_replayed: u64,
    pub torn_tails: Vec<String>,
}

pub(crate) struct Persist {
    pub dir: Arc<dyn Dir>,
    /// The stream files (the WAL and the checkpoint use `dir` directly).
    pub files: Arc<FileCache>,
    shards: Vec<Wal>,
    active: u32,
    pub config: StorageConfig,
    written_at_checkpoint: parking_lot::Mutex<u64>,
    checkpointing: parking_lot::Mutex<()>,
    stats: stats::PersistStats,
}

/// A log as recovered, before it becomes a live `Log`.
/// What a checkpoint covers: every durable log with its soft-deleted flag, and every
/// subscription.
pub(crate) type Live = (Vec<(Arc<crate::log::Log>, bool)>, Vec<SubRec>);

/// An opened data directory: the WAL, the recovered logs and subscriptions, the id counter.
pub(crate) struct Opened {
    pub persist: Arc<Persist>,
    pub logs: Vec<RecoveredLog>,
    pub subs: Vec<SubRec>,
    pub next_id: u64,
    pub report: RecoveryReport,
    /// The checkpoint found describes everything: no WAL record after it, no torn tail.
    pub current: bool,
    /// The last run stopped gracefully: the checkpoint's last accesses are the last there
    /// were (after a crash, reads since the checkpoint are not in it).
    pub clean_stop: bool,
    /// The checkpoint's last accesses of logs with an idle TTL, by log id.
    pub accessed: HashMap<u64, i64>,
}

pub(crate) struct RecoveredLog {
    pub meta: LogMeta,
    /// A topic's state (topics only).
    pub topic: Option<TopicState>,
    pub writer: WriterRec,
    pub deleted: bool,
    pub files: LogFiles,
    /// Replay wrote into its files (not yet synced).
    pub dirty: bool,
}

struct Replaying {
    meta: LogMeta,
    topic: Option<TopicState>,
    /// A topic's first seq of an `ephemeral` stretch whose records were never logged (only
    /// their seqs), not yet followed by a logged write that says where they ended.
    lost_from: Option<u64>,
    writer: WriterRec,
    deleted: bool,
    files: Option<LogFiles>,
    dirty: bool,
}

impl Replaying {
    /// The stream position its files start at (a fork's files hold only its own bytes).
    fn base(&self) -> u64 {
        self.meta.fork.as_ref().map_or(0, |f| f.upto)
    }

    /// Whether both its files exist with exactly its recovered lengths (checked without
    /// opening them).
    fn files_at_lengths(&self, dir: &dyn Dir) -> bool {
        let id = self.meta.id;
        let exact = |path: String, len: u64| dir.size(&path).is_ok_and(|s| s == Some(len));
        exact(data_path(id), self.writer.tail - self.base())
            && exact(idx_path(id), idx_len(self.writer.records))
    }

    fn files(&mut self, cache: &Arc<FileCache>) -> Result<&LogFiles, String> {
        if self.files.is_none() {
            let f = LogFiles::open(cache, self.meta.id, self.base())
                .map_err(|e| format!("cannot open files of log {:x}: {e}", self.meta.id))?;
            self.files = Some(f);
        }
        self.files
            .as_ref()
            .ok_or_else(|| "log files vanished".to_string())
    }
}

impl Persist {
    /// Open the data directory: read the checkpoint, replay every shard's WAL over the stream
    /// files, truncate what no record covers, collect deleted logs, and return the live ones.
    pub fn open(config: StorageConfig) -> Result<Opened, OpenError> {
        let dir = config.dir.clone();
        let files = Arc::new(FileCache::new(dir.clone(), config.max_open_files));
        let found = riffle_wal::read_checkpoint(dir.as_ref(), CHECKPOINT)?;
        let checkpointed = found.is_some();
        // Before format 8 (or with no checkpoint, when replay rewrites every index from the
        // start) index files may be in the layout before checksums: they are rewritten as
        // recovery opens them, and a checkpoint follows at once, so that no older binary ever
        // meets the new layout under a checkpoint it reads.
        let old_layouts = found
            .as_deref()
            .is_none_or(|b| Snapshot::version(b) < snapshot::VERSION);
        files.set_old_layouts(old_layouts);
        let snapshot: Snapshot = match found {
            None => Snapshot::default(),
            Some(bytes) => Snapshot::decode(&bytes)
                .map_err(|e| OpenError::Checkpoint(format!("{CHECKPOINT}: {e}")))?,
        };
        let mut topics: HashMap<u64, TopicRec> = snapshot.topics.into_iter().collect();
        let mut feeds: HashMap<u64, Feed> = snapshot.feeds.into_iter().collect();
        let mut queues: HashMap<u64, QueueRec> = snapshot.queues.into_iter().collect();
        let mut source_trims: HashMap<u64, Vec<(u64, u64)>> =
            snapshot.source_trims.into_iter().collect();
        let mut subs: BTreeMap<u64, SubRec> =
            snapshot.subs.into_iter().map(|s| (s.id, s)).collect();
        let accessed: HashMap<u64, i64> = snapshot.accessed.into_iter().collect();
        let mut logs: BTreeMap<u64, Replaying> = snapshot
            .logs
            .into_iter()
            .map(|l| {
                (
                    l.meta.id,
                    Replaying {
                        topic: topics.remove(&l.meta.id).map(|rec| {
                            let mut t = TopicState::from_rec(rec);
                            t.feed = feeds.remove(&l.meta.id);
                            if let Some(q) = queues.remove(&l.meta.id) {
                                t.queue = Some(Box::new(QueueState::from_rec(q)));
                            }
                            for (from, to) in source_trims.remove(&l.meta.id).unwrap_or_default() {
                                t.note_source_trim(from, to);
                            }
                            t
                        }),
                        lost_from: None,
                        meta: l.meta,
                        writer: l.writer,
                        deleted: l.deleted,
                        files: None,
                        dirty: false,
                    },
                )
            })
            .collect();
        // Files may hold bytes and idx entries past the checkpoint that no record covers: replay
        // only writes (it never reads them), and `finish` cuts every log to its recovered
        // length once, so they need no pass of their own here.
        let existing = (0..MAX_SHARDS)
            .filter(|s| {
                dir.list(&format!("wal/{s:02}"))
                    .is_ok_and(|files| !files.is_empty())
            })
            .max()
            .map_or(0, |s| s + 1);
        if !checkpointed && existing == 0 && dir.list("streams").is_ok_and(|f| !f.is_empty()) {
            // Stream files outlive neither: recovery would take them for orphans and delete
            // them.
            return Err(OpenError::Checkpoint(format!(
                "{CHECKPOINT}: missing, and so is the WAL, but streams/ holds stream files: \
                 this is not a new data directory (restore its files, or start on an empty one)"
            )));
        }
        let active = config.shards.max(1);
        let progress = config.progress.clone();
        let mut report = RecoveryReport::default();
        let mut shards = Vec::new();
        for shard in 0..active.max(existing) {
            let start = snapshot
                .start_segments
                .get(shard as usize)
                .copied()
                .unwrap_or(0);
            let cfg = WalConfig {
                shard,
                segment_bytes: config.segment_bytes,
                sync_interval: config.sync_interval,
            };
            // The segment replay must start in: the checkpoint's (it removed those before), or
            // without one the first a shard ever had (nothing was removed). Missing, it was
            // lost, and so were its records: refused rather than replayed around.
            let first = if checkpointed {
                snapshot.start_segments.get(shard as usize).copied()
            } else {
                dir.list(&format!("wal/{shard:02}"))
                    .is_ok_and(|files| !files.is_empty())
                    .then_some(1)
            };
            let (wal, recovery) =
                Wal::open_from(dir.clone(), cfg, first, |lsn: Lsn, record: &[u8]| {
                    if lsn.segment < start {
                        return Ok(());
                    }
                    report.records_replayed += 1;
                    progress.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    replay(&files, &mut logs, &mut subs, record)
                })?;
            if let StopReason::TornTail {
                path,
                offset,
                reason,
            } = recovery.stop
            {
                report
                    .torn_tails
                    .push(format!("{path} at byte {offset}: {reason}"));
            }
            shards.push(wal);
        }

        // Ids below this are of logs the checkpoint or the WAL knew (alive or deleted).
        let known_below = snapshot
            .next_id
            .max(logs.keys().next_back().map_or(0, |id| id + 1));
        let recovered = finish(dir.as_ref(), &files, logs, known_below)?;
        report.logs = recovered.len();
        let persist = Arc::new(Persist {
            dir,
            files,
            shards,
            active,
            config,
            written_at_checkpoint: parking_lot::Mutex::new(0),
            checkpointing: parking_lot::Mutex::new(()),
            stats: stats::PersistStats::new(report.records_replayed),
        });
        let next_id = snapshot
            .next_id
            .max(subs.keys().next_back().map_or(0, |id| id + 1));
        persist.files.set_old_layouts(false);
        let current = checkpointed
            && !old_layouts
            && report.records_replayed == 0
            && report.torn_tails.is_empty();
        let clean_stop = checkpointed && !persist.dir.exists(RUNNING);
        persist.mark_running()?;
        Ok(Opened {
            persist,
            logs: recovered,
            subs: subs.into_values().collect(),
            next_id,
            report,
            current,
            clean_stop,
            accessed,
        })
    }

    /// Mark the directory as in use until [`Persist::mark_stopped`] (durably: a crash after
    /// this must find the mark).
    fn mark_running(&self) -> Result<(), OpenError> {
        let io = |e: std::io::Error| OpenError::Replay(format!("{RUNNING} mark: {e}"));
        self.dir.open(RUNNING, true).map_err(io)?;
        self.dir.sync_dir("").map_err(io)
    }

    /// After the final checkpoint of a graceful stop: the next start may trust its last
    /// accesses.
    pub fn mark_stopped(&self) -> Result<(), OpenError> {
        let io = |e: std::io::Error| OpenError::Replay(format!("{RUNNING} mark: {e}"));
        match self.dir.remove(RUNNING) {
            // Already gone (removed by hand): stopped all the same.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            r => r.map_err(io)?,
        }
        self.dir.sync_dir("").map_err(io)
    }

    fn shard(&self, log_id: u64) -> &Wal {
        &self.shards[self.shard_of(log_id) as usize]
    }

    /// Queue a record for `log_id`'s shard.
    pub fn submit(
        &self,
        log_id: u64,
        record: Vec<u8>,
        commit: Commit,
        done: Box<dyn FnOnce(Result<Lsn, WalError>) + Send>,
    ) {
        self.shard(log_id).append(record, commit, done);
    }

    /// Call `done` once everything queued so far on `log_id`'s shard is durable.
    pub fn barrier(&self, log_id: u64, done: riffle_wal::Callback) {
        self.shard(log_id).barrier(done);
    }

    /// The shard `log_id`'s records go to.
    pub fn shard_of(&self, log_id: u64) -> u64 {
        log_id % u64::from(self.active)
    }

    /// Whether enough WAL was written since the last checkpoint to take another.
    pub fn checkpoint_due(&self) -> bool {
        self.wal_bytes() >= *self.written_at_checkpoint.lock() + self.config.checkpoint_bytes
    }

    /// Take a checkpoint (timed by [`Persist::checkpoint`]).
    fn checkpoint_untimed(
        &self,
        live: impl FnOnce() -> Live,
        next_id: u64,
    ) -> Result<(), OpenError> {
        let _one = self.checkpointing.lock();
        let written = self.wal_bytes();
        // 1. Everything queued before this point lands in earlier segments, and is applied.
        let mut start_segments = Vec::with_capacity(self.shards.len());
        for wal in &self.shards {
            start_segments.push(wal.rotate()?);
            wal.flush()?;
        }
        // 2. Snapshot every log; sync the files of those that changed, so the snapshot's tails
        //    are durable in the stream files.
        let mut snap = Snapshot {
            start_segments: start_segments.clone(),
            next_id,
            logs: Vec::new(),
            topics: Vec::new(),
            feeds: Vec::new(),
            queues: Vec::new(),
            subs: Vec::new(),
            source_trims: Vec::new(),
            accessed: Vec::new(),
        };
        let (mut logs, subs) = live();
        // In id order: recovery builds its map of logs from this list, which is then a single
        // sorted run (in registry order, sorting a million recovered logs was an eighth of a
        // restart).
        logs.sort_unstable_by_key(|(l, _)| l.config.id);
        snap.subs = subs;
        let mut topics = Vec::new();
        let mut dirty_logs = Vec::new();
        for (log, deleted) in logs {
            let (s, dirty, topic) = log
                .snapshot(deleted)
                .map_err(|e| OpenError::Replay(format!("flush before checkpoint: {e}")))?;
            if dirty && log.files.is_some() {
                dirty_logs.push((log.clone(), s.writer.tail));
            }
            if let Some(t) = topic {
                topics.push((log.clone(), t.rec.trim));
                snap.topics.push((s.meta.id, t.rec));
                if let Some(f) = t.feed {
                    snap.feeds.push((s.meta.id, f));
                }
                if let Some(q) = t.queue {
                    snap.queues.push((s.meta.id, q));
                }
                if !t.source_trims.is_empty() {
                    snap.source_trims.push((s.meta.id, t.source_trims));
                }
            }
            if let Some(ms) = log.ttl_last_access() {
                snap.accessed.push((s.meta.id, ms));
            }
            snap.logs.push(s);
        }
        self.sync_logs(&dirty_logs)?;
        self.dir
            .sync_dir("streams")
            .map_err(|e| OpenError::Replay(format!("sync of streams/: {e}")))?;
        // 3. Publish it, then 4. let the covered segments go.
        riffle_wal::write_checkpoint(self.dir.as_ref(), CHECKPOINT, &snap.encode())?;
        for (wal, seg) in self.shards.iter().zip(start_segments) {
            wal.remove_segments_before(seg)?;
        }
        // 5. Trimmed topic records are gone for good now: give their space back.
        for (log, trim) in topics {
            if let Err(e) = log.release_trimmed(&trim) {
                tracing::warn!(log = log.config.id, error = %e, "could not free a topic's trimmed space");
            }
        }
        *self.written_at_checkpoint.lock() = written;
        Ok(())
    }

    /// Make the files of `dirty` logs durable up to their snapshot tails: file by file when
    /// they are few, with one sync of the whole directory when there are many (one call
    /// instead of two `fdatasync`s and perhaps two opens per log: 14 s for a million streams).
    fn sync_logs(&self, dirty: &[(Arc<crate::log::Log>, u64)]) -> Result<(), OpenError> {
        if dirty.len() < BULK_SYNC_LOGS
            || !self
                .dir
                .sync_all_data()
                .map_err(|e| OpenError::Replay(format!("sync of the stream files: {e}")))?
        {
            for (log, _) in dirty {
                if let Some(files) = &log.files {
                    files.sync().map_err(|e| {
                        OpenError::Replay(format!("sync of log {:x}: {e}", log.config.id))
                    })?;
                }
            }
        }
        for (log, tail) in dirty {
            log.mark_synced(*tail);
        }
        Ok(())
    }
}

/// From this many logs with unsynced files on, a checkpoint syncs the whole directory at once.
/// Below it, syncing each is cheaper than flushing whatever else the filesystem holds.
const BULK_SYNC_LOGS: usize = 256;

/// Remove a log's files (after its removal is durable) and close the cache's handles to them.
pub(crate) fn remove_log_files(files: &FileCache, id: u64) {
    files.checked.forget(id);
    for key in [FileKey::data(id), FileKey::idx(id)] {
        if let Err(e) = files.remove(key)
            && e.kind() != std::io::ErrorKind::NotFound
        {
            tracing::warn!(log = id, file = ?key.kind, error = %e, "could not remove a deleted stream's file");
        }
    }
}

/// After replay: collect deleted logs no fork needs (cascading), cut every file to its
/// recovered length, and remove files that belong to no log: those of logs known to be
/// deleted (ids below `known_below`). Files of logs no record describes at all (ids from
/// `known_below` on) are renamed `<name>.lost` instead: after a crash they are creates never
/// acknowledged, but they are also what a lost WAL segment leaves, and evidence is not
/// deleted.
fn finish(
    dir: &dyn Dir,
    cache: &Arc<FileCache>,
    mut logs: BTreeMap<u64, Replaying>,
    known_below: u64,
) -> Result<Vec<RecoveredLog>, OpenError> {
    loop {
        let referenced: HashSet<u64> = logs
            .values()
            .filter_map(|l| l.meta.fork.as_ref().map(|f| f.source_id))
            .collect();
        let dead: Vec<u64> = logs
            .values()
            .filter(|l| l.deleted && !referenced.contains(&l.meta.id))
            .map(|l| l.meta.id)
            .collect();
        if dead.is_empty() {
            break;
        }
        for id in dead {
            // Through the cache, so no handle to a removed file stays open.
            if logs.remove(&id).is_some_and(|l| l.files.is_some()) {
                remove_log_files(cache, id);
            }
        }
    }
    let mut out = Vec::with_capacity(logs.len());
    for (id, mut log) in logs {
        // An `ephemeral` stretch at the end (the topic is `ephemeral` now, so restoring it drops
        // all its records): its records are gone, as empty records at the tail in the index.
        let lost = match (log.lost_from.take(), &mut log.topic) {
            (Some(from), Some(t)) => {
                let (to, tail) = (t.head + 1, log.writer.tail);
                t.lose(from, to, 0, tail);
                Some((from, to))
            }
            _ => None,
        };
        let (tail, records) = (log.writer.tail, log.writer.records);
        // (Not while old layouts may be about: every index is opened, and rewritten if old.)
        let files = if log.files.is_none()
            && lost.is_none()
            && !cache.old_layouts()
            && log.files_at_lengths(dir)
        {
            // Untouched by replay and nothing to cut: not opened (with a million logs,
            // opening and truncating two files each is most of a restart).
            LogFiles::existing(cache, id, log.base(), tail)
        } else {
            let files = log.files(cache).map_err(OpenError::Replay)?.clone();
            if let Some((from, to)) = lost {
                let filler = vec![tail; (to - from) as usize];
                files
                    .write_records(from - 1, tail, &[], &filler)
                    .map_err(|e| OpenError::Replay(format!("log {id:x}: {e}")))?;
            }
            files
                .truncate(tail, records)
                .map_err(|e| OpenError::Replay(format!("log {id:x}: {e}")))?;
            files.recovered(tail)
        };
        out.push(RecoveredLog {
            topic: log.topic,
            meta: log.meta,
            writer: log.writer,
            deleted: log.deleted,
            files,
            dirty: log.dirty,
        });
    }
    // Ids, not file names: with a million logs, two million path strings would be a few
    // hundred MB that recovery allocates only to drop.
    let keep: HashSet<u64> = out.iter().map(|l| l.meta.id).collect();
    let mut lost = 0;
    for name in dir.list("streams").unwrap_or_default() {
        let file = name.strip_prefix("streams/").unwrap_or(&name);
        if file.ends_with(".lost") {
            continue;
        }
        let id = file
            .strip_suffix(".data")
            .or_else(|| file.strip_suffix(".idx"))
            // Exactly the names `data_path`/`idx_path` give: 16 lower-case hex digits.
            .filter(|hex| {
                hex.len() == 16 && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
            })
            .and_then(|hex| u64::from_str_radix(hex, 16).ok());
        match id {
            Some(id) if keep.contains(&id) => {}
            Some(id) if id >= known_below => {
                if dir
                    .rename(&format!("streams/{file}"), &format!("streams/{file}.lost"))
                    .is_ok()
                {
                    lost += 1;
                }
            }
            _ => {
                let _ = dir.remove(&format!("streams/{file}"));
            }
        }
    }
    if lost > 0 {
        let _ = dir.sync_dir("streams");
        tracing::warn!(
            files = lost,
            "stream files of logs that neither the checkpoint nor the WAL describes were renamed \
             streams/*.lost: after a crash, creates that were never acknowledged (safe to delete); \
             otherwise a WAL segment or the checkpoint is missing (restore it, rename them back)"
        );
    }
    Ok(out)
}
