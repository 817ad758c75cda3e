//! A write-ahead log shard with real group commit.
//!
//! One committer thread per shard. It blocks for the first request, drains everything else
//! already queued, writes all records with ONE write at the segment's end, issues ONE
//! `fdatasync` if any record asked for it (or the sync interval ran out), then completes every
//! record's callback in queue order. Appenders never block on I/O: while the committer syncs,
//! new records queue up and share the next sync.
//!
//! Segment files `wal/<shard:02>/<segment:016x>.wal` start with a 32-byte header (magic,
//! version, shard, segment id, CRC32C of the header). Records are
//! `[u32 LE payload length][u32 LE CRC32C of the length bytes and the payload][payload]`.

use crate::dir::{Dir, DirFile};
use crate::error::WalError;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

const MAGIC: &[u8; 8] = b"RIFFLWAL";
const VERSION: u32 = 1;
const HEADER: u64 = 32;
const RECORD_HEADER: usize = 8;
/// Larger "records" are damage, not data.
const MAX_RECORD: u64 = 256 << 20;

/// Shard settings.
#[derive(Debug, Clone)]
pub struct WalConfig {
    pub shard: u32,
    /// A segment is closed and a new one started once it passes this size.
    pub segment_bytes: u64,
    /// Records committed with [`Commit::Write`] are synced at most this long after writing.
    pub sync_interval: Duration,
}

/// A record's position: its segment and byte offset there.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Lsn {
    pub segment: u64,
    pub offset: u64,
}

/// When an append's callback runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Commit {
    /// After the `fdatasync` that covers the record.
    Sync,
    /// After the record is written; a sync follows within the sync interval.
    Write,
}

/// Counters since the shard was opened.
#[derive(Debug, Clone, Copy, Default)]
pub struct WalStats {
    pub records: u64,
    pub bytes: u64,
    pub writes: u64,
    pub syncs: u64,
    pub failures: u64,
}

#[derive(Default)]
struct Counters {
    records: AtomicU64,
    bytes: AtomicU64,
    writes: AtomicU64,
    syncs: AtomicU64,
    failures: AtomicU64,
}

/// How recovery ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StopReason {
    CleanEnd,
    /// The last segment ended in an incomplete or damaged record (an interrupted write); it
    /// was truncated there.
    TornTail {
        path: String,
        offset: u64,
        reason: String,
    },
}

/// What recovery did.
#[derive(Debug, Clone)]
pub struct Recovery {
    pub records: u64,
    pub segments: usize,
    pub stop: StopReason,
}

type Callback = Box<dyn FnOnce(Result<Lsn, WalError>) + Send>;

enum Request {
    Append {
        payload: Vec<u8>,
        commit: Commit,
        done: Callback,
    },
    Rotate(mpsc::SyncSender<Result<u64, WalError>>),
    Flush(mpsc::SyncSender<Result<(), WalError>>),
    RemoveBefore(u64, mpsc::SyncSender<Result<(), WalError>>),
}

/// One WAL shard.
pub struct Wal {
    tx: Option<mpsc::Sender<Request>>,
    thread: Option<std::thread::JoinHandle<()>>,
    counters: Arc<Counters>,
}

fn segment_dir(shard: u32) -> String {
    format!("wal/{shard:02}")
}

fn segment_path(shard: u32, segment: u64) -> String {
    format!("wal/{shard:02}/{segment:016x}.wal")
}

fn segment_header(shard: u32, segment: u64) -> [u8; HEADER as usize] {
    let mut h = [0u8; HEADER as usize];
    h[..8].copy_from_slice(MAGIC);
    h[8..12].copy_from_slice(&VERSION.to_le_bytes());
    h[12..16].copy_from_slice(&shard.to_le_bytes());
    h[16..24].copy_from_slice(&segment.to_le_bytes());
    let crc = crc32c::crc32c(&h[..28]);
    h[28..32].copy_from_slice(&crc.to_le_bytes());
    h
}

fn frame(payload: &[u8], out: &mut Vec<u8>) {
    let len = (payload.len() as u32).to_le_bytes();
    let crc = crc32c::crc32c_append(crc32c::crc32c(&len), payload);
    out.extend_from_slice(&len);
    out.extend_from_slice(&crc.to_le_bytes());
    out.extend_from_slice(payload);
}

/// The record at `pos` of `buf`, if it is whole and its checksum holds: `(payload, next)`.
fn parse_record(buf: &[u8], pos: usize) -> Result<(&[u8], usize), &'static str> {
    let rest = &buf[pos..];
    if rest.len() < RECORD_HEADER {
        return Err("incomplete record header");
    }
    let len = u32::from_le_bytes([rest[0], rest[1], rest[2], rest[3]]) as u64;
    let crc = u32::from_le_bytes([rest[4], rest[5], rest[6], rest[7]]);
    if len > MAX_RECORD {
        return Err("impossible record length");
    }
    let end = RECORD_HEADER + len as usize;
    if rest.len() < end {
        return Err("incomplete record");
    }
    let payload = &rest[RECORD_HEADER..end];
    if crc32c::crc32c_append(crc32c::crc32c(&rest[..4]), payload) != crc {
        return Err("checksum mismatch");
    }
    Ok((payload, pos + end))
}

fn read_all(f: &dyn DirFile, path: &str) -> Result<Vec<u8>, WalError> {
    let len = f.len().map_err(|e| WalError::io("stat", path, &e))?;
    let mut buf = vec![0u8; len as usize];
    let n = f
        .read_at(&mut buf, 0)
        .map_err(|e| WalError::io("read", path, &e))?;
    buf.truncate(n);
    Ok(buf)
}

impl Wal {
    /// Open shard `cfg.shard`, replaying every intact record in order through `replay`, and
    /// start a fresh segment for new records. A torn tail of the last segment is truncated;
    /// any other damage is [`WalError::Corrupt`] and nothing is changed.
    pub fn open(
        dir: Arc<dyn Dir>,
        cfg: WalConfig,
        mut replay: impl FnMut(Lsn, &[u8]) -> Result<(), String>,
    ) -> Result<(Wal, Recovery), WalError> {
        let sdir = segment_dir(cfg.shard);
        let listed = dir
            .list(&sdir)
            .map_err(|e| WalError::io("list", &sdir, &e))?;
        let mut segments: Vec<(u64, String)> = listed
            .into_iter()
            .filter_map(|p| {
                let name = p.rsplit('/').next()?.strip_suffix(".wal")?;
                let id = u64::from_str_radix(name, 16).ok()?;
                Some((id, p))
            })
            .collect();
        segments.sort();

        let mut stop = StopReason::CleanEnd;
        let mut records = 0u64;
        let count = segments.len();
        for (i, (id, path)) in segments.iter().enumerate() {
            let last = i + 1 == count;
            let f = dir
                .open(path, false)
                .map_err(|e| WalError::io("open", path, &e))?;
            let buf = read_all(f.as_ref(), path)?;
            let corrupt = |offset: u64, reason: &str| WalError::Corrupt {
                path: path.clone(),
                offset,
                reason: reason.to_string(),
            };
            if buf.len() < HEADER as usize {
                if last {
                    // Crashed while creating the segment: nothing in it was acknowledged.
                    stop = StopReason::TornTail {
                        path: path.clone(),
                        offset: 0,
                        reason: "incomplete segment header".into(),
                    };
                    f.set_len(0)
                        .map_err(|e| WalError::io("truncate", path, &e))?;
                    break;
                }
                return Err(corrupt(0, "incomplete segment header"));
            }
            if buf[..HEADER as usize] != segment_header(cfg.shard, *id) {
                return Err(corrupt(
                    0,
                    "bad segment header (wrong magic, shard, id or checksum)",
                ));
            }
            let mut pos = HEADER as usize;
            while pos < buf.len() {
                match parse_record(&buf, pos) {
                    Ok((payload, next)) => {
                        replay(
                            Lsn {
                                segment: *id,
                                offset: pos as u64,
                            },
                            payload,
                        )
                        .map_err(WalError::Replay)?;
                        records += 1;
                        pos = next;
                    }
                    Err(reason) => {
                        // A torn tail is the last thing in the last segment: if a valid record
                        // follows where this one claims to end, it is damage, not a tear.
                        let claimed = u32::from_le_bytes(
                            buf[pos..]
                                .get(..4)
                                .and_then(|b| b.try_into().ok())
                                .unwrap_or([0; 4]),
                        ) as usize;
                        let after = pos + RECORD_HEADER + claimed;
                        let valid_after = after < buf.len() && parse_record(&buf, after).is_ok();
                        if !last || valid_after {
                            return Err(corrupt(pos as u64, reason));
                        }
                        f.set_len(pos as u64)
                            .and_then(|()| f.sync_data())
                            .map_err(|e| WalError::io("truncate", path, &e))?;
                        stop = StopReason::TornTail {
                            path: path.clone(),
                            offset: pos as u64,
                            reason: reason.to_string(),
                        };
                        break;
                    }
                }
            }
        }

        let next_id = segments.last().map_or(1, |(id, _)| id + 1);
        let committer = Committer::start(dir, cfg, next_id)?;
        let counters = committer.counters.clone();
        let (tx, rx) = mpsc::channel();
        let thread = std::thread::Builder::new()
            .name(format!("riffle-wal-{:02}", committer.cfg.shard))
            .spawn(move || committer.run(rx))
            .map_err(|e| WalError::io("spawn committer for", "wal", &e))?;
        Ok((
            Wal {
                tx: Some(tx),
                thread: Some(thread),
                counters,
            },
            Recovery {
                records,
                segments: count,
                stop,
            },
        ))
    }

    /// Queue one record. `done` runs exactly once, on the committer thread, in queue order.
    pub fn append(&self, payload: Vec<u8>, commit: Commit, done: Callback) {
        let req = Request::Append {
            payload,
            commit,
            done,
        };
        let refused = match &self.tx {
            Some(tx) => tx.send(req).err().map(|e| e.0),
            None => Some(req),
        };
        if let Some(Request::Append { done, .. }) = refused {
            done(Err(WalError::Closed));
        }
    }

    fn call<T>(
        &self,
        make: impl FnOnce(mpsc::SyncSender<Result<T, WalError>>) -> Request,
    ) -> Result<T, WalError> {
        let (tx, rx) = mpsc::sync_channel(1);
        self.tx
            .as_ref()
            .ok_or(WalError::Closed)?
            .send(make(tx))
            .map_err(|_| WalError::Closed)?;
        rx.recv().map_err(|_| WalError::Closed)?
    }

    /// Start a new segment and return its id: every record queued before is in an earlier one.
    pub fn rotate(&self) -> Result<u64, WalError> {
        self.call(Request::Rotate)
    }

    /// Wait until everything queued so far is written, synced and its callbacks have run.
    pub fn flush(&self) -> Result<(), WalError> {
        self.call(Request::Flush)
    }

    /// Delete the segments before `segment` (a checkpoint covers them).
    pub fn remove_segments_before(&self, segment: u64) -> Result<(), WalError> {
        self.call(|tx| Request::RemoveBefore(segment, tx))
    }

    pub fn stats(&self) -> WalStats {
        let c = &self.counters;
        WalStats {
            records: c.records.load(Ordering::Relaxed),
            bytes: c.bytes.load(Ordering::Relaxed),
            writes: c.writes.load(Ordering::Relaxed),
            syncs: c.syncs.load(Ordering::Relaxed),
            failures: c.failures.load(Ordering::Relaxed),
        }
    }
}

impl Drop for Wal {
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

struct Committer {
    dir: Arc<dyn Dir>,
    cfg: WalConfig,
    segment: u64,
    path: String,
    file: Arc<dyn DirFile>,
    end: u64,
    /// When the oldest unsynced write happened.
    unsynced_since: Option<Instant>,
    /// A failed batch could not be cut off: the file must be truncated here before writing.
    cut_to: Option<u64>,
    counters: Arc<Counters>,
}

impl Committer {
    fn start(dir: Arc<dyn Dir>, cfg: WalConfig, segment: u64) -> Result<Self, WalError> {
        let (path, file) = create_segment(dir.as_ref(), cfg.shard, segment)?;
        Ok(Self {
            dir,
            cfg,
            segment,
            path,
            file,
            end: HEADER,
            unsynced_since: None,
            cut_to: None,
            counters: Arc::new(Counters::default()),
        })
    }

    fn run(mut self, rx: mpsc::Receiver<Request>) {
        let mut queue = Vec::new();
        loop {
            let first = match self.unsynced_since {
                Some(since) => {
                    let wait = self.cfg.sync_interval.saturating_sub(since.elapsed());
                    match rx.recv_timeout(wait) {
                        Ok(r) => Some(r),
                        Err(mpsc::RecvTimeoutError::Timeout) => None,
                        Err(mpsc::RecvTimeoutError::Disconnected) => break,
                    }
                }
                None => match rx.recv() {
                    Ok(r) => Some(r),
                    Err(_) => break,
                },
            };
            queue.extend(first);
            queue.extend(rx.try_iter());
            self.process(&mut queue);
            if self
                .unsynced_since
                .is_some_and(|t| t.elapsed() >= self.cfg.sync_interval)
            {
                let _ = self.sync();
            }
        }
        let _ = self.sync();
    }

    /// Handle queued requests in order: runs of appends become one batch each.
    fn process(&mut self, queue: &mut Vec<Request>) {
        let mut batch: Vec<(Vec<u8>, Commit, Callback)> = Vec::new();
        for req in queue.drain(..) {
            match req {
                Request::Append {
                    payload,
                    commit,
                    done,
                } => batch.push((payload, commit, done)),
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
                let r = self.sync().and_then(|()| self.rotate());
                let _ = reply.send(r);
            }
            Request::Flush(reply) => {
                let _ = reply.send(self.sync());
            }
            Request::RemoveBefore(segment, reply) => {
                let _ = reply.send(self.remove_before(segment));
            }
        }
    }

    fn fail(&self, batch: Vec<(Vec<u8>, Commit, Callback)>, e: &WalError) {
        self.counters.failures.fetch_add(1, Ordering::Relaxed);
        for (_, _, done) in batch {
            done(Err(e.clone()));
        }
    }

    /// Drop bytes past `len` so failed records can never be replayed; if even that fails,
    /// every later batch retries it first.
    fn cut(&mut self, len: u64) {
        self.cut_to = match self.file.set_len(len) {
            Ok(()) => None,
            Err(_) => Some(len),
        };
        self.end = len;
    }

    fn commit(&mut self, batch: Vec<(Vec<u8>, Commit, Callback)>) {
        if batch.is_empty() {
            return;
        }
        if let Some(len) = self.cut_to {
            if let Err(e) = self.file.set_len(len) {
                let e = WalError::io("truncate", &self.path, &e);
                return self.fail(batch, &e);
            }
            self.cut_to = None;
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
            let e = WalError::io("write", &self.path, &e);
            self.cut(start);
            return self.fail(batch, &e);
        }
        self.counters.writes.fetch_add(1, Ordering::Relaxed);
        self.end = start + buf.len() as u64;
        self.unsynced_since.get_or_insert_with(Instant::now);
        let interval_due = self
            .unsynced_since
            .is_some_and(|t| t.elapsed() >= self.cfg.sync_interval);
        if (wants_sync || interval_due)
            && let Err(e) = self.sync()
        {
            // Nothing of this batch is known to be durable: take it back entirely.
            self.cut(start);
            return self.fail(batch, &e);
        }
        self.counters
            .records
            .fetch_add(batch.len() as u64, Ordering::Relaxed);
        self.counters
            .bytes
            .fetch_add(buf.len() as u64, Ordering::Relaxed);
        for ((_, _, done), lsn) in batch.into_iter().zip(lsns) {
            done(Ok(lsn));
        }
        if self.end >= self.cfg.segment_bytes {
            let _ = self.sync().and_then(|()| self.rotate());
        }
    }

    fn sync(&mut self) -> Result<(), WalError> {
        if self.unsynced_since.is_none() {
            return Ok(());
        }
        match self.file.sync_data() {
            Ok(()) => {
                self.counters.syncs.fetch_add(1, Ordering::Relaxed);
                self.unsynced_since = None;
                Ok(())
            }
            Err(e) => {
                self.counters.failures.fetch_add(1, Ordering::Relaxed);
                Err(WalError::io("sync", &self.path, &e))
            }
        }
    }

    fn rotate(&mut self) -> Result<u64, WalError> {
        let next = self.segment + 1;
        let (path, file) = create_segment(self.dir.as_ref(), self.cfg.shard, next)?;
        self.segment = next;
        self.path = path;
        self.file = file;
        self.end = HEADER;
        self.cut_to = None;
        Ok(next)
    }

    fn remove_before(&self, segment: u64) -> Result<(), WalError> {
        let sdir = segment_dir(self.cfg.shard);
        let listed = self
            .dir
            .list(&sdir)
            .map_err(|e| WalError::io("list", &sdir, &e))?;
        for p in listed {
            let id = p
                .rsplit('/')
                .next()
                .and_then(|n| n.strip_suffix(".wal"))
                .and_then(|n| u64::from_str_radix(n, 16).ok());
            if id.is_some_and(|id| id < segment) {
                self.dir
                    .remove(&p)
                    .map_err(|e| WalError::io("remove", &p, &e))?;
            }
        }
        self.dir
            .sync_dir(&sdir)
            .map_err(|e| WalError::io("sync directory", &sdir, &e))
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
