//! A directory seam that counts the file handles alive through it, for tests of code that
//! must bound how many files it holds open (and can refuse opens as a process out of file
//! descriptors would).

use crate::dir::{Dir, DirFile};
use parking_lot::Mutex;
use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

/// Wraps a directory; counts the handles of files whose path starts with its prefix.
#[derive(Clone)]
pub struct CountingDir {
    inner: Arc<dyn Dir>,
    prefix: String,
    live: Arc<AtomicUsize>,
    peak: Arc<AtomicUsize>,
    opens: Arc<AtomicUsize>,
    limit: Arc<Mutex<Option<usize>>>,
}

impl CountingDir {
    /// Count the handles of files under `prefix` ("" for all).
    pub fn new(inner: Arc<dyn Dir>, prefix: &str) -> Self {
        Self {
            inner,
            prefix: prefix.to_string(),
            live: Arc::default(),
            peak: Arc::default(),
            opens: Arc::default(),
            limit: Arc::default(),
        }
    }

    /// Counted handles alive now.
    pub fn live(&self) -> usize {
        self.live.load(Ordering::SeqCst)
    }

    /// The most counted handles alive at once.
    pub fn peak(&self) -> usize {
        self.peak.load(Ordering::SeqCst)
    }

    /// Counted opens so far.
    pub fn opens(&self) -> usize {
        self.opens.load(Ordering::SeqCst)
    }

    /// Refuse counted opens with EMFILE while `limit` handles are alive (`None`: never).
    pub fn set_limit(&self, limit: Option<usize>) {
        *self.limit.lock() = limit;
    }
}

struct Counted {
    inner: Arc<dyn DirFile>,
    live: Arc<AtomicUsize>,
}

impl Drop for Counted {
    fn drop(&mut self) {
        self.live.fetch_sub(1, Ordering::SeqCst);
    }
}

impl DirFile for Counted {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        self.inner.read_at(buf, offset)
    }
    fn write_all_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        self.inner.write_all_at(buf, offset)
    }
    fn len(&self) -> io::Result<u64> {
        self.inner.len()
    }
    fn set_len(&self, len: u64) -> io::Result<()> {
        self.inner.set_len(len)
    }
    fn sync_data(&self) -> io::Result<()> {
        self.inner.sync_data()
    }
    fn punch_hole(&self, offset: u64, len: u64) -> io::Result<()> {
        self.inner.punch_hole(offset, len)
    }
    fn fd(&self) -> Option<std::os::fd::BorrowedFd<'_>> {
        self.inner.fd()
    }
}

impl Dir for CountingDir {
    fn open(&self, path: &str, create: bool) -> io::Result<Arc<dyn DirFile>> {
        if !path.starts_with(&self.prefix) {
            return self.inner.open(path, create);
        }
        if self.limit.lock().is_some_and(|l| self.live() >= l) {
            return Err(io::Error::from_raw_os_error(24)); // EMFILE
        }
        let inner = self.inner.open(path, create)?;
        let now = self.live.fetch_add(1, Ordering::SeqCst) + 1;
        self.peak.fetch_max(now, Ordering::SeqCst);
        self.opens.fetch_add(1, Ordering::SeqCst);
        Ok(Arc::new(Counted {
            inner,
            live: self.live.clone(),
        }))
    }
    fn exists(&self, path: &str) -> bool {
        self.inner.exists(path)
    }
    fn size(&self, path: &str) -> io::Result<Option<u64>> {
        // No handle is left open: not counted.
        self.inner.size(path)
    }
    fn remove(&self, path: &str) -> io::Result<()> {
        self.inner.remove(path)
    }
    fn rename(&self, from: &str, to: &str) -> io::Result<()> {
        self.inner.rename(from, to)
    }
    fn list(&self, dir: &str) -> io::Result<Vec<String>> {
        self.inner.list(dir)
    }
    fn sync_dir(&self, dir: &str) -> io::Result<()> {
        self.inner.sync_dir(dir)
    }
    fn sync_all_data(&self) -> io::Result<bool> {
        self.inner.sync_all_data()
    }
}
