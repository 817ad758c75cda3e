//! A bounded set of open stream files. Every file-backed log has two files; holding both open
//! for the log's life would make the number of streams bounded by the open-files limit
//! (`RLIMIT_NOFILE`). Instead a log names its files by id and every operation takes the open
//! file from this cache, opening it on a miss and evicting the least recently used one (a clock
//! sweep) when the cache is full.
//!
//! - Eviction only drops the cache's `Arc`: an operation in flight keeps its file open until it
//!   is done, so the process may briefly hold a few more files than the capacity.
//! - A file is created only by [`FileCache::open`] with `create` (a log's creation or its
//!   recovery); later misses reopen without `create`, so an operation racing the removal of a
//!   deleted log's files gets `NotFound` instead of recreating an empty file.
//! - Unsynced writes made through an evicted handle are still covered by a later
//!   `sync_data` through a new one: `fdatasync` flushes the inode, whichever descriptor asks
//!   (and since Linux 4.13 a new descriptor still reports a writeback error nobody has seen).
//!   `MemDir` models the same: every handle of a path shares one file.
//! - The WAL's segments do not go through here: they stay open while they are written.
//! - If an open fails because the process is out of descriptors (sockets took more than the
//!   share the capacity left them), the cache closes some of its files and tries once more,
//!   so storage keeps working while connections hold the rest.

use crate::store::{data_path, idx_path};
use parking_lot::Mutex;
use riffle_wal::{Dir, DirFile};
use std::collections::HashMap;
use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// One of a log's two files.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct FileKey {
    pub id: u64,
    pub kind: FileKind,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum FileKind {
    Data,
    Idx,
}

impl FileKey {
    pub fn data(id: u64) -> Self {
        Self {
            id,
            kind: FileKind::Data,
        }
    }

    pub fn idx(id: u64) -> Self {
        Self {
            id,
            kind: FileKind::Idx,
        }
    }

    pub(crate) fn path(self) -> String {
        match self.kind {
            FileKind::Data => data_path(self.id),
            FileKind::Idx => idx_path(self.id),
        }
    }
}

struct Slot {
    key: FileKey,
    file: Arc<dyn DirFile>,
    /// Set by every hit, cleared by the clock hand: a slot is evicted when the hand finds it
    /// unused since its last pass.
    used: bool,
}

#[derive(Default)]
struct Shard {
    map: HashMap<FileKey, usize, foldhash::fast::RandomState>,
    slots: Vec<Slot>,
    hand: usize,
    /// Bumped by every removal: an open that raced one does not cache what it opened.
    removals: u64,
}

impl Shard {
    fn get(&mut self, key: FileKey) -> Option<Arc<dyn DirFile>> {
        let i = *self.map.get(&key)?;
        let slot = &mut self.slots[i];
        slot.used = true;
        Some(slot.file.clone())
    }

    /// Cache `file` under `key` (not present), returning the evicted file, if any, so the
    /// caller closes it outside the lock.
    fn insert(
        &mut self,
        key: FileKey,
        file: Arc<dyn DirFile>,
        cap: usize,
    ) -> Option<Arc<dyn DirFile>> {
        let slot = Slot {
            key,
            file,
            used: false,
        };
        if self.slots.len() < cap {
            self.map.insert(key, self.slots.len());
            self.slots.push(slot);
            return None;
        }
        let hand = self.victim();
        let old = std::mem::replace(&mut self.slots[hand], slot);
        self.map.remove(&old.key);
        self.map.insert(key, hand);
        Some(old.file)
    }

    /// The slot the clock evicts next (the shard is not empty): the first one the hand finds
    /// unused since its last pass, clearing the marks it passes.
    fn victim(&mut self) -> usize {
        loop {
            let hand = self.hand % self.slots.len();
            self.hand = hand + 1;
            let slot = &mut self.slots[hand];
            if !slot.used {
                return hand;
            }
            slot.used = false;
        }
    }

    /// Evict the clock's next victim, if any.
    fn evict(&mut self) -> Option<Arc<dyn DirFile>> {
        if self.slots.is_empty() {
            return None;
        }
        let victim = self.victim();
        let key = self.slots[victim].key;
        self.remove_entry(key)
    }

    fn remove(&mut self, key: FileKey) -> Option<Arc<dyn DirFile>> {
        self.removals += 1;
        self.remove_entry(key)
    }

    fn remove_entry(&mut self, key: FileKey) -> Option<Arc<dyn DirFile>> {
        let i = self.map.remove(&key)?;
        let old = self.slots.swap_remove(i);
        if let Some(moved) = self.slots.get(i) {
            self.map.insert(moved.key, i);
        }
        Some(old.file)
    }
}

/// The open stream files of a data directory, at most `capacity` of them (plus those in use).
pub(crate) struct FileCache {
    dir: Arc<dyn Dir>,
    shards: Box<[Mutex<Shard>]>,
    /// Capacity of each shard.
    per_shard: usize,
    /// Files opened (misses) and closed to make room, since start: with more stream files in
    /// use than the cache holds, every miss is an `open` and an eviction a `close`.
    opens: AtomicU64,
    evictions: AtomicU64,
    /// What of the files' recovered contents has been checked against their checksums.
    pub checked: crate::store::Checked,
    /// Index files may be in the layout before checksums (recovery of a directory whose
    /// checkpoint predates format 8): they are rewritten, not refused.
    old_layouts: std::sync::atomic::AtomicBool,
}

/// What the cache has done, for metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FileCacheStats {
    /// Most files the cache holds open.
    pub capacity: u64,
    /// Files it holds open now.
    pub open: u64,
    /// Files opened on a miss, and closed to make room (or shed when out of descriptors),
    /// since start.
    pub opens: u64,
    pub evictions: u64,
    /// Reads refused because stored bytes failed their checksum, since start.
    pub damaged_reads: u64,
}

impl FileCache {
    /// A cache over `dir` holding at most `capacity` (at least 1) open files.
    pub fn new(dir: Arc<dyn Dir>, capacity: usize) -> Self {
        let capacity = capacity.max(1);
        // Shards spread the lock over threads; each keeps at least 8 files, so a small cache is
        // not split into slivers that thrash while others sit idle.
        let shards = (capacity / 8).clamp(1, 16);
        let shards = if shards.is_power_of_two() {
            shards
        } else {
            shards.next_power_of_two() / 2
        };
        Self {
            dir,
            shards: (0..shards).map(|_| Mutex::new(Shard::default())).collect(),
            per_shard: capacity / shards,
            opens: AtomicU64::new(0),
            evictions: AtomicU64::new(0),
            checked: Default::default(),
            old_layouts: Default::default(),
        }
    }

    pub fn stats(&self) -> FileCacheStats {
        FileCacheStats {
            capacity: self.capacity() as u64,
            open: self.len() as u64,
            opens: self.opens.load(Ordering::Relaxed),
            evictions: self.evictions.load(Ordering::Relaxed),
            damaged_reads: self.checked.failures(),
        }
    }

    /// Most files held open by the cache itself.
    fn capacity(&self) -> usize {
        self.per_shard * self.shards.len()
    }

    fn shard(&self, key: FileKey) -> &Mutex<Shard> {
        // Ids are sequential, so the low bits spread logs evenly; a log's two files share one.
        &self.shards[(key.id % self.shards.len() as u64) as usize]
    }

    /// The open file `key`, opening it on a miss (creating it only if `create`).
    pub fn open(&self, key: FileKey, create: bool) -> io::Result<Arc<dyn DirFile>> {
        let shard = self.shard(key);
        let removals = {
            let mut s = shard.lock();
            if let Some(f) = s.get(key) {
                return Ok(f);
            }
            s.removals
        };
        // Opened outside the lock: an open is a system call, and hits on other files of the
        // shard should not wait for it.
        let path = key.path();
        let file = match self.dir.open(&path, create) {
            Err(e) if out_of_descriptors(&e) && self.shed() > 0 => self.dir.open(&path, create)?,
            r => r?,
        };
        self.opens.fetch_add(1, Ordering::Relaxed);
        let evicted = {
            let mut s = shard.lock();
            if s.removals != removals {
                // A removal ran meanwhile (perhaps of this very file): use the file for this
                // one operation, but do not keep a handle that may name a removed file.
                return Ok(file);
            }
            if let Some(f) = s.get(key) {
                return Ok(f); // another thread opened it meanwhile; ours closes on return
            }
            let evicted = s.insert(key, file.clone(), self.per_shard);
            if evicted.is_some() {
                self.evictions.fetch_add(1, Ordering::Relaxed);
            }
            evicted
        };
        drop(evicted);
        Ok(file)
    }

    /// Close up to a quarter of the cached files (at least one), for an open that found the
    /// process out of descriptors. Returns how many were closed; a file an operation still
    /// holds closes when it is done.
    fn shed(&self) -> usize {
        let per_shard = (self.per_shard / 4).max(1);
        let mut shed = 0;
        for shard in self.shards.iter() {
            let evicted: Vec<_> = {
                let mut s = shard.lock();
                (0..per_shard).map_while(|_| s.evict()).collect()
            };
            shed += evicted.len();
            self.evictions
                .fetch_add(evicted.len() as u64, Ordering::Relaxed);
        }
        tracing::debug!(
            closed = shed,
            "out of file descriptors: closed cached stream files"
        );
        shed
    }

    /// Remove the file `key` from the directory and close the cache's handle.
    pub fn remove(&self, key: FileKey) -> io::Result<()> {
        let result = self.dir.remove(&key.path());
        let evicted = self.shard(key).lock().remove(key);
        drop(evicted);
        result
    }

    /// Rename `from` over the file `key` and close the cache's handle to the file replaced.
    pub fn replace(&self, key: FileKey, from: &str) -> io::Result<()> {
        let result = self.dir.rename(from, &key.path());
        let evicted = self.shard(key).lock().remove(key);
        drop(evicted);
        result
    }

    /// Whether index files may be in the layout before checksums (see `old_layouts`).
    pub fn old_layouts(&self) -> bool {
        self.old_layouts.load(Ordering::Relaxed)
    }

    pub fn set_old_layouts(&self, may: bool) {
        self.old_layouts.store(may, Ordering::Relaxed);
    }

    /// The directory the files are in.
    pub fn dir(&self) -> &Arc<dyn Dir> {
        &self.dir
    }

    /// Files the cache holds open now (a lock per shard: for tests and metrics scrapes).
    fn len(&self) -> usize {
        self.shards.iter().map(|s| s.lock().slots.len()).sum()
    }
}

/// EMFILE (this process) or ENFILE (the system): out of file descriptors.
fn out_of_descriptors(e: &io::Error) -> bool {
    const ENFILE: i32 = 23;
    const EMFILE: i32 = 24;
    matches!(e.raw_os_error(), Some(EMFILE | ENFILE))
}

#[cfg(test)]
mod tests {
    use super::*;
    use riffle_wal::{CountingDir, MemDir};

    /// A [`MemDir`] that counts the handles alive (opened and not yet dropped); with a limit
    /// set, an open past it fails with EMFILE like a process out of descriptors.
    fn counting() -> CountingDir {
        CountingDir::new(Arc::new(MemDir::new()), "")
    }

    fn read_all(f: &dyn DirFile) -> Vec<u8> {
        let mut buf = vec![0; f.len().expect("len") as usize];
        let n = f.read_at(&mut buf, 0).expect("read");
        buf.truncate(n);
        buf
    }

    #[test]
    fn open_handles_never_exceed_the_capacity() {
        let dir = counting();
        for capacity in [1, 3, 8, 20, 64] {
            let cache = FileCache::new(Arc::new(dir.clone()), capacity);
            assert!(cache.capacity() <= capacity && cache.capacity() >= capacity / 2);
            for id in 0..500u64 {
                for key in [FileKey::data(id), FileKey::idx(id)] {
                    cache
                        .open(key, true)
                        .expect("create")
                        .write_all_at(&id.to_le_bytes(), 0)
                        .expect("write");
                    assert!(dir.live() <= capacity);
                }
            }
            assert_eq!(cache.len(), cache.capacity());
            // Every file is still there and holds what was written, evicted or not.
            for id in 0..500u64 {
                let f = cache.open(FileKey::idx(id), false).expect("reopen");
                assert_eq!(read_all(f.as_ref()), id.to_le_bytes());
                drop(f);
                assert!(dir.live() <= capacity);
            }
            drop(cache);
            assert_eq!(dir.live(), 0, "capacity {capacity}");
        }
    }

    #[test]
    fn hits_do_not_reopen_and_recently_used_files_stay() {
        let dir = counting();
        let cache = FileCache::new(Arc::new(dir.clone()), 4);
        let hot = FileKey::data(0);
        cache.open(hot, true).expect("create");
        for id in 1..100u64 {
            cache.open(FileKey::data(id), true).expect("create");
            // Touched between every other open: the clock always finds it used.
            cache.open(hot, false).expect("hit");
        }
        // 100 creations, and the hot file was never reopened.
        assert_eq!(dir.opens(), 100);
    }

    #[test]
    fn a_removed_file_is_not_recreated_by_a_later_open() {
        let dir = counting();
        let cache = FileCache::new(Arc::new(dir.clone()), 8);
        let key = FileKey::data(7);
        cache.open(key, true).expect("create");
        let in_flight = cache.open(key, false).expect("hit");
        cache.remove(key).expect("remove");
        assert!(!dir.exists("streams/0000000000000007.data"));
        let e = cache
            .open(key, false)
            .err()
            .expect("an error, not a new file");
        assert_eq!(e.kind(), io::ErrorKind::NotFound);
        assert!(!dir.exists("streams/0000000000000007.data"));
        // The cache let its handle go; only the operation in flight holds one.
        assert_eq!(dir.live(), 1);
        drop(in_flight);
        assert_eq!(dir.live(), 0);
        assert_eq!(
            cache.remove(key).err().map(|e| e.kind()),
            Some(io::ErrorKind::NotFound)
        );
    }

    #[test]
    fn a_write_through_an_evicted_handle_is_made_durable_by_a_sync_through_a_new_one() {
        let mem = MemDir::new();
        let cache = FileCache::new(Arc::new(mem.clone()), 1);
        let a = FileKey::data(1);
        cache.open(a, true).expect("create");
        mem.sync_dir("streams").expect("sync dir");
        cache
            .open(a, false)
            .expect("open")
            .write_all_at(b"acknowledged", 0)
            .expect("write");
        cache
            .open(FileKey::data(2), true)
            .expect("evicts the first");
        cache
            .open(a, false)
            .expect("reopen")
            .sync_data()
            .expect("sync");
        drop(cache);
        mem.crash();
        let f = mem
            .open("streams/0000000000000001.data", false)
            .expect("survives");
        assert_eq!(read_all(f.as_ref()), b"acknowledged");
    }

    #[test]
    fn out_of_descriptors_the_cache_gives_back_its_own_and_the_open_succeeds() {
        let dir = counting();
        let cache = FileCache::new(Arc::new(dir.clone()), 64);
        for id in 0..64u64 {
            cache.open(FileKey::data(id), true).expect("create");
        }
        assert_eq!(dir.live(), 64);
        // Sockets took everything but what the cache holds now.
        dir.set_limit(Some(64));
        for id in 64..200u64 {
            cache
                .open(FileKey::data(id), true)
                .expect("an open after shedding");
            assert!(dir.live() <= 64);
        }
        // With nothing cached to give back, the error reaches the caller.
        dir.set_limit(Some(0));
        drop(cache);
        let cache = FileCache::new(Arc::new(dir.clone()), 64);
        let e = cache.open(FileKey::data(1), false).err().expect("EMFILE");
        assert_eq!(e.raw_os_error(), Some(24));
    }

    #[test]
    fn concurrent_users_see_one_file_per_key() {
        let dir = counting();
        let cache = Arc::new(FileCache::new(Arc::new(dir.clone()), 16));
        for id in 0..64u64 {
            cache.open(FileKey::data(id), true).expect("create");
        }
        let threads: Vec<_> = (0..4u64)
            .map(|t| {
                let cache = cache.clone();
                std::thread::spawn(move || {
                    for round in 0..2000u64 {
                        let id = (round * 7 + t * 13) % 64;
                        let f = cache.open(FileKey::data(id), false).expect("open");
                        // Each thread writes its own 8 bytes of the file.
                        f.write_all_at(&round.to_le_bytes(), t * 8).expect("write");
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().expect("no panic");
        }
        assert!(dir.live() <= 16);
        assert!(cache.len() <= 16);
    }

    /// The price of a hit (`cargo test --release -p riffle-engine --lib hit_cost -- --ignored
    /// --nocapture`): a lookup and an `Arc` clone and drop, against a `pread` of the file.
    #[test]
    #[ignore]
    fn hit_cost() {
        let root = std::env::temp_dir().join(format!("riffle-hit-cost-{}", std::process::id()));
        let dir = Arc::new(riffle_wal::FsDir::open(&root).expect("dir"));
        let cache = FileCache::new(dir, 1024);
        for id in 0..512u64 {
            let f = cache.open(FileKey::data(id), true).expect("create");
            f.write_all_at(&[1; 64], 0).expect("write");
        }
        let rounds = 2_000_000u64;
        let t = std::time::Instant::now();
        for i in 0..rounds {
            let f = cache.open(FileKey::data(i % 512), false).expect("hit");
            std::hint::black_box(&f);
        }
        let hit = t.elapsed().as_nanos() as f64 / rounds as f64;
        let f = cache.open(FileKey::data(0), false).expect("hit");
        let mut buf = [0u8; 64];
        let t = std::time::Instant::now();
        for _ in 0..rounds / 10 {
            f.read_at(&mut buf, 0).expect("read");
        }
        let pread = t.elapsed().as_nanos() as f64 / (rounds / 10) as f64;
        // A cache far smaller than the files cycled through: every open misses and evicts.
        let small = FileCache::new(Arc::new(riffle_wal::FsDir::open(&root).expect("dir")), 8);
        let t = std::time::Instant::now();
        for i in 0..rounds / 20 {
            std::hint::black_box(small.open(FileKey::data(i % 512), false).expect("miss"));
        }
        let miss = t.elapsed().as_nanos() as f64 / (rounds / 20) as f64;
        eprintln!("hit {hit:.0} ns, miss (open + close) {miss:.0} ns, 64-byte pread {pread:.0} ns");
        drop((f, cache, small));
        let _ = std::fs::remove_dir_all(root);
    }
}
