//! A write-ahead log shard with real group commit.
//!
//! One committer thread per shard. It blocks for the first request, drains everything else
//! already queued, writes all records with ONE write at the segment's end, issues ONE
//! `fdatasync` if any record asked for it (or the sync interval ran out), then completes every
//! record's callback in queue order. Appenders never block on I/O: while the committer syncs,
//! new records queue up and share the next sync.
//!
//! When a write or sync fails, every callback of the batch gets the error and the batch is cut
//! off the segment (`set_len` back to where it started, then `fdatasync`), so a failed record
//! can never be replayed. If the cut fails too, every later batch first retries it and fails
//! until it succeeds: the shard heals by itself when the disk does.
//!
//! The on-disk format is described in [`crate::format`](mod@crate::format).

use crate::dir::{Dir, DirFile};
use crate::error::WalError;
use crate::format::{HEADER, RECORD_HEADER, frame, max_record, segment_dir, segment_header};
use crate::format::{segment_id, segment_path};
use crate::stats::{Histogram, HistogramSnapshot, RECORDS_PER_SYNC, SYNC_LATENCY_US};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// Most payload bytes the committer drains into one batch; the rest waits for the next batch
/// (which starts at once).
const BATCH_BYTES: usize = 16 << 20;
/// Shortest wait before a failed periodic sync is tried again.
const RETRY: Duration = Duration::from_millis(10);

/// Shard settings.
#[derive(Debug, Clone)]
pub struct WalConfig {
    /// The shard's number: its segments live in `wal/<shard:02>/`.
    pub shard: u32,
    /// A segment is closed and a new one started once it passes this size. Records longer
    /// than `max(segment_bytes, 128 MiB)` are refused ([`crate::format::max_record`]).
    pub segment_bytes: u64,
    /// Records committed with [`Commit::Write`] are synced at most this long after writing.
    pub sync_interval: Duration,
}

/// A record's position: its segment and the byte offset of its header there. Lsns grow in
/// append order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Lsn {
    pub segment: u64,
    pub offset: u64,
}

/// When an append's callback runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Commit {
    /// After the `fdatasync` that covers the record: it survives a crash.
    Sync,
    /// After the record is written (it survives the process dying); an `fdatasync` follows
    /// within [`WalConfig::sync_interval`] (it survives a power loss after that).
    Write,
    /// After the record is written; it never causes an `fdatasync` of its own (a later sync,
    /// or a checkpoint of what it changed, makes it durable): best effort.
    Lazy,
}

/// Counters since the shard was opened.
#[derive(Debug, Clone, Copy, Default)]
pub struct WalStats {
    /// Records written successfully.
    pub records: u64,
    /// Bytes of those records, framing included.
    pub bytes: u64,
    /// Successful write calls (one per batch).
    pub writes: u64,
    /// Successful `fdatasync` calls.
    pub syncs: u64,
    /// Failed I/O operations (writes, syncs, truncations).
    pub failures: u64,
    /// The segment new records go to.
    pub segment: u64,
    /// Segments started after the one opened with the shard (by size, or by [`Wal::rotate`]).
    pub rotations: u64,
    /// Requests (appends, barriers, rotations, flushes) queued for the committer whose
    /// callback or reply has not been given yet.
    pub queue_depth: u64,
    /// The highest `queue_depth` seen.
    pub queue_depth_peak: u64,
}

/// Distributions since the shard was opened.
#[derive(Debug, Clone)]
pub struct WalHistograms {
    /// Duration of each successful `fdatasync`, in microseconds.
    pub sync_latency_us: HistogramSnapshot,
    /// Records each successful `fdatasync` made durable (the group commit size).
    pub records_per_sync: HistogramSnapshot,
}

struct Counters {
    records: AtomicU64,
    bytes: AtomicU64,
    writes: AtomicU64,
    syncs: AtomicU64,
    failures: AtomicU64,
    segment: AtomicU64,
    rotations: AtomicU64,
    /// Raised by the submitting thread before its send, lowered by the committer just before
    /// a request's callback or reply: relaxed atomics, no lock next to the channel.
    queued: AtomicU64,
    queued_peak: AtomicU64,
    sync_latency_us: Histogram,
    records_per_sync: Histogram,
}

impl Default for Counters {
    fn default() -> Self {
        Self {
            records: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
            writes: AtomicU64::new(0),
            syncs: AtomicU64::new(0),
            failures: AtomicU64::new(0),
            segment: AtomicU64::new(0),
            rotations: AtomicU64::new(0),
            queued: AtomicU64::new(0),
            queued_peak: AtomicU64::new(0),
            sync_latency_us: Histogram::new(SYNC_LATENCY_US),
            records_per_sync: Histogram::new(RECORDS_PER_SYNC),
        }
    }
}

/// How recovery ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StopReason {
    /// Every segment was intact to its end.
    CleanEnd,
    /// The last segment ended in an incomplete or damaged record (an interrupted write) with
    /// nothing intact after it; it was truncated at `offset` (a segment whose header was never
    /// completed is removed, with `offset` 0).
    TornTail {
        path: String,
        offset: u64,
        reason: String,
    },
}

/// What recovery did.
#[derive(Debug, Clone)]
pub struct Recovery {
    /// Records replayed.
    pub records: u64,
    /// Segment files found.
    pub segments: usize,
    pub stop: StopReason,
}

/// An append's completion: called exactly once, on the committer thread, in queue order.
pub type Callback = Box<dyn FnOnce(Result<Lsn, WalError>) + Send>;

enum Request {
    Append {
        payload: Vec<u8>,
        commit: Commit,
        done: Callback,
    },
    Rotate(mpsc::SyncSender<Result<u64, WalError>>),
    Barrier(Callback),
    Flush(mpsc::SyncSender<Result<(), WalError>>),
}

/// One WAL shard. `Send + Sync`: share it (e.g. in an `Arc`) between appending threads.
pub struct Wal {
    tx: Option<mpsc::Sender<Request>>,
    thread: Option<std::thread::JoinHandle<()>>,
    counters: Arc<Counters>,
    dir: Arc<dyn Dir>,
    shard: u32,
}

impl Wal {
    /// Open shard `cfg.shard` under `wal/<shard:02>/` in `dir`, replaying every intact record
    /// in order through `replay`, and start a fresh segment for new records.
    ///
    /// A torn tail of the last segment is truncated and reported in [`Recovery::stop`]; any
    /// other damage is [`WalError::Corrupt`] and nothing is changed. An error from `replay`
    /// aborts the open as [`WalError::Replay`].
    pub fn open(
        dir: Arc<dyn Dir>,
        cfg: WalConfig,
        replay: impl FnMut(Lsn, &[u8]) -> Result<(), String>,
    ) -> Result<(Wal, Recovery), WalError> {
        Wal::open_from(dir, cfg, None, replay)
    }

    /// [`Wal::open`], where segment `first` must be there (when given): the caller knows
    /// replay starts in it (its checkpoint names it, or nothing was ever removed and it is
    /// the first). A segment missing there, or anywhere after it, is [`WalError::Corrupt`].
    pub fn open_from(
        dir: Arc<dyn Dir>,
        cfg: WalConfig,
        first: Option<u64>,
        mut replay: impl FnMut(Lsn, &[u8]) -> Result<(), String>,
    ) -> Result<(Wal, Recovery), WalError> {
        let (next, recovery) = crate::recover::recover(dir.as_ref(), &cfg, first, &mut replay)?;
        let shard = cfg.shard;
        let committer = Committer::start(dir.clone(), cfg, next)?;
        let counters = committer.counters.clone();
        let (tx, rx) = mpsc::channel();
        let thread = std::thread::Builder::new()
            .name(format!("riffle-wal-{:02}", committer.cfg.shard))
            .spawn(move || committer.run(rx))
            .map_err(|e| WalError::io("spawn committer for", "wal", &e))?;
        let wal = Wal {
            tx: Some(tx),
            thread: Some(thread),
            counters,
            dir,
            shard,
        };
        Ok((wal, recovery))
    }

    /// Queue one record. `done` is called exactly once, from the committer thread, in queue
    /// order, after the record's write ([`Commit::Write`]) or the covering `fdatasync`
    /// ([`Commit::Sync`]), with the record's [`Lsn`] or the error. Never blocks on I/O.
    ///
    /// A payload longer than `max(segment_bytes, 128 MiB)` fails with an `InvalidInput`
    /// [`WalError::Io`]. If the shard is shut down, `done` gets [`WalError::Closed`] at once.
    pub fn append(&self, payload: Vec<u8>, commit: Commit, done: Callback) {
        self.send_or_fail(Request::Append {
            payload,
            commit,
            done,
        });
    }

    /// Queue a request that carries a callback; if the shard is shut down, the callback gets
    /// [`WalError::Closed`] at once.
    fn send_or_fail(&self, req: Request) {
        if let Err(Request::Append { done, .. } | Request::Barrier(done)) = self.send(req) {
            done(Err(WalError::Closed));
        }
    }

    /// Queue a request for the committer, counted in the queue depth; gives it back if the
    /// shard is shut down.
    fn send(&self, req: Request) -> Result<(), Request> {
        let Some(tx) = &self.tx else { return Err(req) };
        let c = &self.counters;
        // Counted before the send: the committer may finish the request before it returns.
        let depth = c.queued.fetch_add(1, Ordering::Relaxed) + 1;
        // A load first: the peak's cache line is only written when it grows.
        if depth > c.queued_peak.load(Ordering::Relaxed) {
            c.queued_peak.fetch_max(depth, Ordering::Relaxed);
        }
        tx.send(req).map_err(|e| {
            c.queued.fetch_sub(1, Ordering::Relaxed);
            e.0
        })
    }

    fn call<T>(
        &self,
        make: impl FnOnce(mpsc::SyncSender<Result<T, WalError>>) -> Request,
    ) -> Result<T, WalError> {
        let (tx, rx) = mpsc::sync_channel(1);
        self.send(make(tx)).map_err(|_| WalError::Closed)?;
        rx.recv().map_err(|_| WalError::Closed)?
    }

    /// Call `done` once every record queued before this call is durable (written and synced),
    /// on the committer thread, with the position reached or the error. Never blocks: for a
    /// caller whose own record elsewhere must not outlive these (a fork's creation in another
    /// shard must not survive a power loss that takes the data it inherited).
    pub fn barrier(&self, done: Callback) {
        self.send_or_fail(Request::Barrier(done));
    }

    /// Start a new segment (in queue order) and return its id: every record appended before
    /// this call is in an earlier segment, synced. Blocks until the committer did it.
    pub fn rotate(&self) -> Result<u64, WalError> {
        self.call(Request::Rotate)
    }

    /// Wait until everything queued so far is written, synced and its callbacks have run.
    pub fn flush(&self) -> Result<(), WalError> {
        self.call(Request::Flush)
    }

    /// Delete the segments with an id below `segment` (a checkpoint covers them), oldest
    /// first. The segment new records go to is never deleted. Runs on the caller's thread, not
    /// the committer's: deleting large files takes milliseconds each, and commits must not wait
    /// for it. Segments below the active one are closed and never written again.
    pub fn remove_segments_before(&self, segment: u64) -> Result<(), WalError> {
        let limit = segment.min(self.counters.segment.load(Ordering::SeqCst));
        let sdir = segment_dir(self.shard);
        let listed = self
            .dir
            .list(&sdir)
            .map_err(|e| WalError::io("list", &sdir, &e))?;
        let mut old: Vec<(u64, String)> = listed
            .into_iter()
            .filter_map(|p| Some((segment_id(&p)?, p)))
            .filter(|(id, _)| *id < limit)
            .collect();
        if old.is_empty() {
            return Ok(());
        }
        old.sort();
        for (_, p) in old {
            self.dir
                .remove(&p)
                .map_err(|e| WalError::io("remove", &p, &e))?;
        }
        self.dir
            .sync_dir(&sdir)
            .map_err(|e| WalError::io("sync directory", &sdir, &e))
    }

    pub fn stats(&self) -> WalStats {
        let c = &self.counters;
        WalStats {
            records: c.records.load(Ordering::Relaxed),
            bytes: c.bytes.load(Ordering::Relaxed),
            writes: c.writes.load(Ordering::Relaxed),
            syncs: c.syncs.load(Ordering::Relaxed),
            failures: c.failures.load(Ordering::Relaxed),
            segment: c.segment.load(Ordering::Relaxed),
            rotations: c.rotations.load(Ordering::Relaxed),
            queue_depth: c.queued.load(Ordering::Relaxed),
            queue_depth_peak: c.queued_peak.load(Ordering::Relaxed),
        }
    }

    pub fn histograms(&self) -> WalHistograms {
        WalHistograms {
            sync_latency_us: self.counters.sync_latency_us.snapshot(),
            records_per_sync: self.counters.records_per_sync.snapshot(),
        }
    }
}

impl Drop for Wal {
    /// Commits everything queued, syncs, and joins the committer thread.
    fn drop(&mut self) {
        // Closing the channel tells the committer to finish the queue, sync and exit.
        self.tx.take();
        if let Some(t) = self.thread.take() {
            // A callback running on the committer may drop the last owner of this `Wal`: the
            // thread then finishes by itself once the channel is closed; joining it from
            // itself would deadlock.
            if t.thread().id() != std::thread::current().id() {
                let _ = t.join();
            }
        }
    }
}

type Batch = Vec<(Vec<u8>, Commit, Callback)>;

fn complete(done: Callback, result: Result<Lsn, WalError>) {
    // A panicking callback must not take the committer (and every later append) down.
    let _ = catch_unwind(AssertUnwindSafe(move || done(result)));
}

struct Committer {
    dir: Arc<dyn Dir>,
    cfg: WalConfig,
    max: u64,
    segment: u64,
    path: String,
    file: Arc<dyn DirFile>,
    end: u64,
    /// When the written but unsynced records must be synced at the latest.
    sync_due: Option<Instant>,
    /// Records were written since the last sync (`Lazy` ones included, which set no
    /// deadline): a segment must be synced before records go to the next one, or a power
    /// loss could keep later records of a log and lose earlier ones.
    unsynced: bool,
    /// Records written since the last sync: the next sync's group commit size.
    unsynced_records: u64,
    /// A failed batch could not be cut off: the file must be truncated here before writing.
    cut_to: Option<u64>,
    counters: Arc<Counters>,
}

impl Committer {
    fn start(dir: Arc<dyn Dir>, cfg: WalConfig, segment: u64) -> Result<Self, WalError> {
        let (path, file) = create_segment(dir.as_ref(), cfg.shard, segment)?;
        let counters = Arc::new(Counters::default());
        counters.segment.store(segment, Ordering::Relaxed);
        Ok(Self {
            dir,
            max: max_record(cfg.segment_bytes),
            cfg,
            segment,
            path,
            file,
            end: HEADER,
            sync_due: None,
            unsynced: false,
            unsynced_records: 0,
            cut_to: None,
            counters,
        })
    }

    fn run(mut self, rx: mpsc::Receiver<Request>) {
        let mut queue = Vec::new();
        loop {
            let first = match self.sync_due {
                Some(due) => match rx.recv_timeout(due.saturating_duration_since(Instant::now())) {
                    Ok(r) => Some(r),
                    Err(mpsc::RecvTimeoutError::Timeout) => None,
                    Err(mpsc::RecvTimeoutError::Disconnected) => break,
                },
                None => match rx.recv() {
                    Ok(r) => Some(r),
                    Err(_) => break,
                },
            };
            if first.is_some() {
                // Let producers that are ready to run (on a busy or single core) add their
                // records to this batch rather than the next: the send that woke us preempts
                // them. Batches grow several-fold when the machine is CPU-bound, so one
                // fdatasync covers more appends; on an idle core this returns at once.
                std::thread::yield_now();
            }
            let mut bytes = 0;
            if let Some(r) = first {
                bytes += size(&r);
                queue.push(r);
            }
            while bytes < BATCH_BYTES {
                let Ok(r) = rx.try_recv() else { break };
                bytes += size(&r);
                queue.push(r);
            }
            self.process(&mut queue);
            if self.sync_due.is_some_and(|due| Instant::now() >= due) && self.settle().is_err() {
                // Try again later, not in a loop against a failing disk.
                self.sync_due = Some(Instant::now() + self.cfg.sync_interval.max(RETRY));
            }
        }
        let _ = self.settle();
    }

    /// Handle queued requests in order: runs of appends become one batch each.
    fn process(&mut self, queue: &mut Vec<Request>) {
        let mut batch: Batch = Vec::new();
        for req in queue.drain(..) {
            match req {
                Request::Append {
                    payload,
                    commit,
                    done,
                } if payload.len() as u64 <= self.max => batch.push((payload, commit, done)),
                Request::Append { payload, done, .. } => {
                    self.commit(std::mem::take(&mut batch));
                    let e = std::io::Error::new(
                        std::io::ErrorKind::InvalidInput,
                        format!(
                            "a record of {} bytes is longer than the limit of {} bytes",
                            payload.len(),
                            self.max
                        ),
                    );
                    self.dequeued(1);
                    complete(done, Err(WalError::io("append to", &self.path, &e)));
                }
                control => {
                    self.commit(std::mem::take(&mut batch));
                    self.control(control);
                }
            }
        }
        self.commit(batch);
    }

    fn control(&mut self, req: Request) {
        match req {
            Request::Append { .. } => {}
            Request::Rotate(reply) => {
                let r = self.settle().and_then(|()| self.rotate());
                self.dequeued(1);
                let _ = reply.send(r);
            }
            Request::Flush(reply) => {
                let r = self.settle();
                self.dequeued(1);
                let _ = reply.send(r);
            }
            Request::Barrier(done) => {
                let at = Lsn {
                    segment: self.segment,
                    offset: self.end,
                };
                let r = self.settle().map(|()| at);
                self.dequeued(1);
                complete(done, r);
            }
        }
    }

    /// `n` requests are about to get their callbacks or replies: they leave the queue depth
    /// (before, so a caller that got its answer never finds itself still counted).
    fn dequeued(&self, n: usize) {
        self.counters.queued.fetch_sub(n as u64, Ordering::Relaxed);
    }

    fn fail(&self, batch: Batch, e: &WalError) {
        self.dequeued(batch.len());
        for (_, _, done) in batch {
            complete(done, Err(e.clone()));
        }
    }

    fn failed(&self, op: &'static str, e: &std::io::Error) -> WalError {
        self.counters.failures.fetch_add(1, Ordering::Relaxed);
        WalError::io(op, &self.path, e)
    }

    /// Drop the bytes past `len`, durably, so failed records can never be replayed; if that
    /// fails, it stays pending and every later batch retries it first.
    fn cut(&mut self, len: u64) -> Result<(), WalError> {
        self.end = len;
        self.cut_to = Some(len);
        if let Err(e) = self.file.set_len(len) {
            return Err(self.failed("truncate", &e));
        }
        if let Err(e) = self.timed_sync() {
            return Err(self.failed("sync", &e));
        }
        self.counters.syncs.fetch_add(1, Ordering::Relaxed);
        self.sync_due = None;
        self.unsynced = false;
        // What was cut is gone; what the cut kept was counted by an earlier sync.
        self.unsynced_records = 0;
        self.cut_to = None;
        Ok(())
    }

    /// Apply a pending cut, then sync: afterwards the segment holds exactly the records whose
    /// callbacks succeeded, durably.
    fn settle(&mut self) -> Result<(), WalError> {
        if let Some(len) = self.cut_to {
            self.cut(len)?;
        }
        self.sync()
    }

    fn commit(&mut self, batch: Batch) {
        if batch.is_empty() {
            return;
        }
        if let Some(len) = self.cut_to
            && let Err(e) = self.cut(len)
        {
            return self.fail(batch, &e);
        }
        let start = self.end;
        let mut buf = Vec::with_capacity(batch.iter().map(|b| b.0.len() + RECORD_HEADER).sum());
        let mut lsns = Vec::with_capacity(batch.len());
        let mut wants_sync = false;
        for (payload, commit, _) in &batch {
            lsns.push(Lsn {
                segment: self.segment,
                offset: start + buf.len() as u64,
            });
            frame(payload, &mut buf);
            wants_sync |= *commit == Commit::Sync;
        }
        if let Err(e) = self.file.write_all_at(&buf, start) {
            let e = self.failed("write", &e);
            let _ = self.cut(start);
            return self.fail(batch, &e);
        }
        self.counters.writes.fetch_add(1, Ordering::Relaxed);
        self.end = start + buf.len() as u64;
        self.unsynced = true;
        self.unsynced_records += batch.len() as u64;
        let now = Instant::now();
        let lazy_only = batch.iter().all(|(_, c, _)| *c == Commit::Lazy);
        let due = if lazy_only {
            self.sync_due
        } else {
            Some(*self.sync_due.get_or_insert(now + self.cfg.sync_interval))
        };
        if (wants_sync || due.is_some_and(|d| now >= d))
            && let Err(e) = self.sync()
        {
            // Nothing of this batch is known to be durable: take it back entirely.
            let _ = self.cut(start);
            return self.fail(batch, &e);
        }
        self.counters
            .records
            .fetch_add(batch.len() as u64, Ordering::Relaxed);
        self.counters
            .bytes
            .fetch_add(buf.len() as u64, Ordering::Relaxed);
        self.dequeued(batch.len());
        for ((_, _, done), lsn) in batch.into_iter().zip(lsns) {
            complete(done, Ok(lsn));
        }
        if self.end >= self.cfg.segment_bytes {
            // On failure the segment grows on, and the next batch tries again.
            let _ = self.settle().and_then(|()| self.rotate());
        }
    }

    fn sync(&mut self) -> Result<(), WalError> {
        if self.sync_due.is_none() && !self.unsynced {
            return Ok(());
        }
        match self.timed_sync() {
            Ok(()) => {
                self.counters.syncs.fetch_add(1, Ordering::Relaxed);
                self.counters
                    .records_per_sync
                    .observe(std::mem::take(&mut self.unsynced_records));
                self.sync_due = None;
                self.unsynced = false;
                Ok(())
            }
            Err(e) => Err(self.failed("sync", &e)),
        }
    }

    /// `fdatasync` the segment; a success's duration goes to the latency histogram (two clock
    /// reads per sync, nothing next to the sync itself).
    fn timed_sync(&self) -> std::io::Result<()> {
        let t = Instant::now();
        self.file.sync_data()?;
        let us = u64::try_from(t.elapsed().as_micros()).unwrap_or(u64::MAX);
        self.counters.sync_latency_us.observe(us);
        Ok(())
    }

    /// Switch to a new segment. The caller has settled the current one.
    fn rotate(&mut self) -> Result<u64, WalError> {
        let next = self.segment + 1;
        let (path, file) = create_segment(self.dir.as_ref(), self.cfg.shard, next)?;
        self.segment = next;
        self.path = path;
        self.file = file;
        self.end = HEADER;
        self.unsynced = false;
        self.counters.segment.store(next, Ordering::Relaxed);
        self.counters.rotations.fetch_add(1, Ordering::Relaxed);
        Ok(next)
    }
}

fn size(r: &Request) -> usize {
    match r {
        Request::Append { payload, .. } => payload.len() + RECORD_HEADER,
        _ => 0,
    }
}

/// Create a segment with its header, durably (data and directory entry).
fn create_segment(
    dir: &dyn Dir,
    shard: u32,
    segment: u64,
) -> Result<(String, Arc<dyn DirFile>), WalError> {
    let path = segment_path(shard, segment);
    let file = dir
        .open(&path, true)
        .map_err(|e| WalError::io("create", &path, &e))?;
    file.set_len(0)
        .and_then(|()| file.write_all_at(&segment_header(shard, segment), 0))
        .and_then(|()| file.sync_data())
        .map_err(|e| WalError::io("write header of", &path, &e))?;
    let sdir = segment_dir(shard);
    dir.sync_dir(&sdir)
        .map_err(|e| WalError::io("sync directory", &sdir, &e))?;
    Ok((path, file))
}
