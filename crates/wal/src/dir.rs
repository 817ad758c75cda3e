//! The filesystem seam: everything the WAL, checkpoints and stream files do to a disk goes
//! through [`Dir`], so tests can swap real files for [`MemDir`] (which can simulate a crash
//! that loses unsynced data) or wrap any directory in [`FaultDir`] to inject I/O errors.

use parking_lot::Mutex;
use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// A directory of files addressed by relative paths (`wal/00/….wal`, `streams/….data`).
pub trait Dir: Send + Sync + 'static {
    /// Open (creating it if `create`) a file; parent directories are created as needed.
    fn open(&self, path: &str, create: bool) -> io::Result<Arc<dyn DirFile>>;
    fn exists(&self, path: &str) -> bool;
    /// Remove a file (`NotFound` if it does not exist).
    fn remove(&self, path: &str) -> io::Result<()>;
    /// Atomically replace `to` with `from`.
    fn rename(&self, from: &str, to: &str) -> io::Result<()>;
    /// Relative paths of the files directly inside `dir` (`""` is the root), sorted; empty if
    /// the directory does not exist.
    fn list(&self, dir: &str) -> io::Result<Vec<String>>;
    /// Make creations, renames and removals inside `dir` durable.
    fn sync_dir(&self, dir: &str) -> io::Result<()>;
    /// Make the data of every file in the directory durable with one call, as
    /// [`DirFile::sync_data`] on each would (also what was written through handles since
    /// closed). For many files at once: a checkpoint after writes to a million streams would
    /// otherwise open and sync two million files. `Ok(false)`: not supported here; the caller
    /// syncs file by file.
    fn sync_all_data(&self) -> io::Result<bool> {
        Ok(false)
    }
    /// The length of a file, `None` if it does not exist. Without opening it where the
    /// directory can (recovery asks this of every stream file).
    fn size(&self, path: &str) -> io::Result<Option<u64>> {
        match self.open(path, false) {
            Ok(f) => f.len().map(Some),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }
}

/// An open file with positional I/O.
pub trait DirFile: Send + Sync {
    /// Read at `offset`; short only at end of file.
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize>;
    fn write_all_at(&self, buf: &[u8], offset: u64) -> io::Result<()>;
    fn len(&self) -> io::Result<u64>;
    fn is_empty(&self) -> io::Result<bool> {
        Ok(self.len()? == 0)
    }
    fn set_len(&self, len: u64) -> io::Result<()>;
    /// Make the file's data durable (`fdatasync`), including what was written through other
    /// handles of the same file, as `fdatasync` does for the inode: the engine's stream files
    /// may be written through a handle that is closed before another one syncs them.
    fn sync_data(&self) -> io::Result<()>;
    /// Give back the disk space of `[offset, offset + len)` without changing the file's length;
    /// the range reads as zeros afterwards. A filesystem that cannot is not an error (the
    /// space is simply kept).
    fn punch_hole(&self, offset: u64, len: u64) -> io::Result<()>;
    /// The file's descriptor, for zero-copy sends (`sendfile`) of its bytes to a socket; `None`
    /// for files that are not real files (in memory, or faulty by design), which are read.
    fn fd(&self) -> Option<std::os::fd::BorrowedFd<'_>> {
        None
    }
}

fn parent(path: &str) -> &str {
    path.rsplit_once('/').map_or("", |(d, _)| d)
}

fn join(dir: &str, name: &str) -> String {
    if dir.is_empty() {
        name.to_string()
    } else {
        format!("{dir}/{name}")
    }
}

// ---------------------------------------------------------------------------------------------

/// Real files under a root directory.
#[derive(Debug, Clone)]
pub struct FsDir {
    root: PathBuf,
    /// The root, open for [`Dir::sync_all_data`] (`syncfs`) from the start: a writeback error
    /// is reported to every descriptor of the filesystem opened before it happened, so one
    /// held for the directory's life misses none, whoever else has seen it.
    handle: Arc<std::fs::File>,
}

impl FsDir {
    /// Use (and create) `root`.
    pub fn open(root: impl Into<PathBuf>) -> io::Result<Self> {
        let root = root.into();
        if !root.is_dir() {
            std::fs::create_dir_all(&root)?;
            if let Some(up) = root.parent().filter(|p| !p.as_os_str().is_empty()) {
                sync_path(up)?;
            }
        }
        let handle = Arc::new(std::fs::File::open(&root)?);
        Ok(Self { root, handle })
    }

    /// Create directory `dir` (under the root) and its missing ancestors, durably: the
    /// directory holding each new one is synced.
    fn create_dirs(&self, dir: &Path) -> io::Result<()> {
        if dir.is_dir() {
            return Ok(());
        }
        std::fs::create_dir_all(dir)?;
        let mut d = dir;
        while let Some(up) = d.parent() {
            if !up.starts_with(&self.root) {
                break;
            }
            sync_path(up)?;
            d = up;
        }
        Ok(())
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.root.join(rel)
    }
}

struct FsFile(std::fs::File);

impl DirFile for FsFile {
    fn fd(&self) -> Option<std::os::fd::BorrowedFd<'_>> {
        use std::os::fd::AsFd;
        Some(self.0.as_fd())
    }
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        use std::os::unix::fs::FileExt;
        let mut done = 0;
        while done < buf.len() {
            match self.0.read_at(&mut buf[done..], offset + done as u64) {
                Ok(0) => break,
                Ok(n) => done += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(done)
    }
    fn write_all_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        std::os::unix::fs::FileExt::write_all_at(&self.0, buf, offset)
    }
    fn len(&self) -> io::Result<u64> {
        Ok(self.0.metadata()?.len())
    }
    fn set_len(&self, len: u64) -> io::Result<()> {
        self.0.set_len(len)
    }
    fn sync_data(&self) -> io::Result<()> {
        self.0.sync_data()
    }
    fn punch_hole(&self, offset: u64, len: u64) -> io::Result<()> {
        use std::os::fd::AsRawFd;
        let (Ok(off), Ok(len)) = (libc::off_t::try_from(offset), libc::off_t::try_from(len)) else {
            return Err(io::Error::from(io::ErrorKind::InvalidInput));
        };
        if len == 0 {
            return Ok(());
        }
        // SAFETY: `fallocate` takes no pointers; the descriptor belongs to `self.0`, an open
        // `File` that outlives the call, so it cannot be closed or reused meanwhile. Errors
        // come back through the return value and `errno`, which `last_os_error` reads at once.
        let r = unsafe {
            libc::fallocate(
                self.0.as_raw_fd(),
                libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
                off,
                len,
            )
        };
        if r == 0 {
            return Ok(());
        }
        let e = io::Error::last_os_error();
        match e.raw_os_error() {
            Some(libc::EOPNOTSUPP | libc::ENOSYS) => Ok(()),
            _ => Err(e),
        }
    }
}

impl Dir for FsDir {
    fn open(&self, path: &str, create: bool) -> io::Result<Arc<dyn DirFile>> {
        let p = self.path(path);
        if create && let Some(dir) = p.parent() {
            self.create_dirs(dir)?;
        }
        let f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(create)
            .truncate(false)
            .open(p)?;
        Ok(Arc::new(FsFile(f)))
    }
    fn exists(&self, path: &str) -> bool {
        self.path(path).exists()
    }
    fn size(&self, path: &str) -> io::Result<Option<u64>> {
        // Relative to the held root: the kernel walks `path` alone, not the root's own path
        // again (recovery asks this of two million files with a million streams).
        match rustix::fs::statat(&*self.handle, path, rustix::fs::AtFlags::empty()) {
            Ok(st) => Ok(Some(u64::try_from(st.st_size).unwrap_or(0))),
            Err(rustix::io::Errno::NOENT) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }
    fn remove(&self, path: &str) -> io::Result<()> {
        std::fs::remove_file(self.path(path))
    }
    fn rename(&self, from: &str, to: &str) -> io::Result<()> {
        std::fs::rename(self.path(from), self.path(to))
    }
    fn list(&self, dir: &str) -> io::Result<Vec<String>> {
        let rd = match std::fs::read_dir(self.path(dir)) {
            Ok(rd) => rd,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e),
        };
        let mut out = Vec::new();
        for entry in rd {
            let entry = entry?;
            if entry.file_type()?.is_file()
                && let Some(name) = entry.file_name().to_str()
            {
                out.push(join(dir, name));
            }
        }
        // Unstable: names are distinct, and it needs no buffer as large as the listing.
        out.sort_unstable();
        Ok(out)
    }
    fn sync_dir(&self, dir: &str) -> io::Result<()> {
        match sync_path(&self.path(dir)) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            r => r,
        }
    }
    /// `syncfs` of the root's filesystem (the data directory is one filesystem: its files are
    /// not mount points). Linux reports writeback errors through `syncfs` since 5.8; older
    /// kernels do not, and there the caller's per-file syncs are the reliable path, so only
    /// kernels that report them use this one.
    fn sync_all_data(&self) -> io::Result<bool> {
        use std::os::fd::AsRawFd;
        if !syncfs_reports_errors() {
            return Ok(false);
        }
        // SAFETY: `syncfs` takes no pointers; the descriptor belongs to `self.handle`, an open
        // `File` that outlives the call, so it cannot be closed or reused meanwhile. Errors
        // come back through the return value and `errno`, which `last_os_error` reads at once.
        let r = unsafe { libc::syncfs(self.handle.as_raw_fd()) };
        if r == 0 {
            Ok(true)
        } else {
            Err(io::Error::last_os_error())
        }
    }
}

/// Whether the running kernel reports writeback errors through `syncfs` (Linux 5.8 and later).
fn syncfs_reports_errors() -> bool {
    static REPORTS: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *REPORTS.get_or_init(|| {
        let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
        let mut parts = release.trim().split(['.', '-']);
        let mut next = || parts.next().and_then(|p| p.parse::<u32>().ok());
        matches!((next(), next()), (Some(major), Some(minor)) if (major, minor) >= (5, 8))
    })
}

/// `fsync` a directory.
fn sync_path(dir: &Path) -> io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

// ---------------------------------------------------------------------------------------------

#[derive(Default)]
struct MemFileData {
    /// What a reader sees now.
    data: Vec<u8>,
    /// What survives a crash: the data as of the last `sync_data`.
    synced: Vec<u8>,
}

#[derive(Default)]
struct MemState {
    /// Current namespace: path → file.
    files: BTreeMap<String, Arc<Mutex<MemFileData>>>,
    /// Namespace as of the last `sync_dir` of each directory (what survives a crash).
    durable: BTreeMap<String, Arc<Mutex<MemFileData>>>,
}

/// An in-memory directory. [`MemDir::crash`] simulates power loss: every file falls back to
/// its last synced contents, and every directory to its last synced entries.
#[derive(Clone, Default)]
pub struct MemDir {
    state: Arc<Mutex<MemState>>,
}

impl MemDir {
    pub fn new() -> Self {
        Self::default()
    }

    /// Lose everything that was not made durable.
    pub fn crash(&self) {
        let mut st = self.state.lock();
        st.files = st.durable.clone();
        for f in st.files.values() {
            let mut f = f.lock();
            f.data = f.synced.clone();
        }
    }
}

struct MemFile(Arc<Mutex<MemFileData>>);

impl DirFile for MemFile {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        let f = self.0.lock();
        let start = (offset as usize).min(f.data.len());
        let n = buf.len().min(f.data.len() - start);
        buf[..n].copy_from_slice(&f.data[start..start + n]);
        Ok(n)
    }
    fn write_all_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        let mut f = self.0.lock();
        let end = offset as usize + buf.len();
        if f.data.len() < end {
            f.data.resize(end, 0);
        }
        f.data[offset as usize..end].copy_from_slice(buf);
        Ok(())
    }
    fn len(&self) -> io::Result<u64> {
        Ok(self.0.lock().data.len() as u64)
    }
    fn set_len(&self, len: u64) -> io::Result<()> {
        self.0.lock().data.resize(len as usize, 0);
        Ok(())
    }
    fn sync_data(&self) -> io::Result<()> {
        let mut f = self.0.lock();
        f.synced = f.data.clone();
        Ok(())
    }
    fn punch_hole(&self, offset: u64, len: u64) -> io::Result<()> {
        // A hole is durable at once (it is a metadata change that `fallocate` makes), and
        // reads as zeros: model both.
        let f = &mut *self.0.lock();
        for data in [&mut f.data, &mut f.synced] {
            let end = (offset.saturating_add(len) as usize).min(data.len());
            let start = (offset as usize).min(end);
            data[start..end].fill(0);
        }
        Ok(())
    }
}

impl Dir for MemDir {
    fn open(&self, path: &str, create: bool) -> io::Result<Arc<dyn DirFile>> {
        let mut st = self.state.lock();
        let file = match st.files.get(path) {
            Some(f) => f.clone(),
            None if create => {
                let f = Arc::new(Mutex::new(MemFileData::default()));
                st.files.insert(path.to_string(), f.clone());
                f
            }
            None => return Err(io::Error::new(io::ErrorKind::NotFound, path.to_string())),
        };
        Ok(Arc::new(MemFile(file)))
    }
    fn exists(&self, path: &str) -> bool {
        self.state.lock().files.contains_key(path)
    }
    fn size(&self, path: &str) -> io::Result<Option<u64>> {
        let st = self.state.lock();
        Ok(st.files.get(path).map(|f| f.lock().data.len() as u64))
    }
    fn remove(&self, path: &str) -> io::Result<()> {
        match self.state.lock().files.remove(path) {
            Some(_) => Ok(()),
            None => Err(io::Error::new(io::ErrorKind::NotFound, path.to_string())),
        }
    }
    fn rename(&self, from: &str, to: &str) -> io::Result<()> {
        let mut st = self.state.lock();
        let f = st
            .files
            .remove(from)
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, from.to_string()))?;
        st.files.insert(to.to_string(), f);
        Ok(())
    }
    fn list(&self, dir: &str) -> io::Result<Vec<String>> {
        Ok(self
            .state
            .lock()
            .files
            .keys()
            .filter(|p| parent(p) == dir)
            .cloned()
            .collect())
    }
    fn sync_dir(&self, dir: &str) -> io::Result<()> {
        let mut st = self.state.lock();
        let current: Vec<(String, Arc<Mutex<MemFileData>>)> = st
            .files
            .iter()
            .filter(|(p, _)| parent(p) == dir)
            .map(|(p, f)| (p.clone(), f.clone()))
            .collect();
        st.durable.retain(|p, _| parent(p) != dir);
        st.durable.extend(current);
        Ok(())
    }
    fn sync_all_data(&self) -> io::Result<bool> {
        for f in self.state.lock().files.values() {
            let mut f = f.lock();
            f.synced = f.data.clone();
        }
        Ok(true)
    }
}

// ---------------------------------------------------------------------------------------------

/// A fault to inject into writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// The write fails with EIO and writes nothing.
    Eio,
    /// The write fails with ENOSPC and writes nothing.
    NoSpace,
    /// The first half of the buffer is written, then the write fails with EIO.
    Short,
    /// The first half is written, then the machine "dies": every later operation fails until
    /// [`FaultPlan::clear`] (a test then calls [`MemDir::crash`] and reopens).
    Torn,
}

#[derive(Default)]
struct Plan {
    writes: Vec<(String, Fault, usize)>,
    syncs: Vec<(String, usize)>,
    dir_syncs: Vec<(String, usize)>,
    dead: bool,
    writes_seen: u64,
    syncs_seen: u64,
}

/// Handle to arm faults of a [`FaultDir`] at run time. `count == usize::MAX` means "until
/// cleared".
#[derive(Clone, Default)]
pub struct FaultPlan(Arc<Mutex<Plan>>);

impl FaultPlan {
    /// Fail the next `count` writes to files whose path starts with `prefix`.
    pub fn fail_writes(&self, prefix: &str, fault: Fault, count: usize) {
        self.0
            .lock()
            .writes
            .push((prefix.to_string(), fault, count));
    }
    /// Fail the next `count` syncs of files whose path starts with `prefix` (EIO).
    pub fn fail_syncs(&self, prefix: &str, count: usize) {
        self.0.lock().syncs.push((prefix.to_string(), count));
    }
    /// Fail the next `count` directory syncs ([`Dir::sync_dir`]) of directories whose path
    /// starts with `prefix` (EIO); the creations, renames and removals stay undurable.
    pub fn fail_sync_dirs(&self, prefix: &str, count: usize) {
        self.0.lock().dir_syncs.push((prefix.to_string(), count));
    }
    /// The machine "dies" now: every later operation fails until [`FaultPlan::clear`] (a test
    /// then calls [`MemDir::crash`] and reopens).
    pub fn halt(&self) {
        self.0.lock().dead = true;
    }
    /// Disarm everything and revive a "dead" directory.
    pub fn clear(&self) {
        let mut p = self.0.lock();
        p.writes.clear();
        p.syncs.clear();
        p.dir_syncs.clear();
        p.dead = false;
    }
    /// Whether a [`Fault::Torn`] write "crashed" the directory (until [`FaultPlan::clear`]).
    pub fn is_down(&self) -> bool {
        self.0.lock().dead
    }
    /// Writes attempted through the directory's files (failed ones included).
    pub fn writes_seen(&self) -> u64 {
        self.0.lock().writes_seen
    }
    /// `sync_data` calls attempted through the directory's files (failed ones included).
    pub fn syncs_seen(&self) -> u64 {
        self.0.lock().syncs_seen
    }

    fn alive(&self) -> io::Result<()> {
        if self.0.lock().dead {
            Err(io::Error::other("injected: the machine is down"))
        } else {
            Ok(())
        }
    }

    fn take_write(&self, path: &str) -> Option<Fault> {
        let mut p = self.0.lock();
        p.writes_seen += 1;
        let i = p
            .writes
            .iter()
            .position(|(pre, _, n)| path.starts_with(pre) && *n > 0)?;
        let (_, fault, n) = &mut p.writes[i];
        let fault = *fault;
        if *n != usize::MAX {
            *n -= 1;
        }
        if fault == Fault::Torn {
            p.dead = true;
        }
        Some(fault)
    }

    fn take_sync(&self, path: &str) -> bool {
        let mut p = self.0.lock();
        p.syncs_seen += 1;
        take(&mut p.syncs, |pre| path.starts_with(pre))
    }

    /// A sync of every file fails if a sync of any one of them is armed to.
    fn take_any_sync(&self) -> bool {
        let mut p = self.0.lock();
        p.syncs_seen += 1;
        take(&mut p.syncs, |_| true)
    }

    fn take_dir_sync(&self, path: &str) -> bool {
        take(&mut self.0.lock().dir_syncs, |pre| path.starts_with(pre))
    }
}

/// Consume one armed fault whose prefix `applies`, if any.
fn take(armed: &mut [(String, usize)], applies: impl Fn(&str) -> bool) -> bool {
    let Some((_, n)) = armed.iter_mut().find(|(pre, n)| *n > 0 && applies(pre)) else {
        return false;
    };
    if *n != usize::MAX {
        *n -= 1;
    }
    true
}

fn eio() -> io::Error {
    io::Error::from_raw_os_error(5)
}

fn enospc() -> io::Error {
    io::Error::from_raw_os_error(28)
}

/// Wraps a directory and injects the faults armed in its [`FaultPlan`].
pub struct FaultDir {
    inner: Arc<dyn Dir>,
    plan: FaultPlan,
}

impl FaultDir {
    pub fn new(inner: Arc<dyn Dir>) -> (Self, FaultPlan) {
        let plan = FaultPlan::default();
        (
            Self {
                inner,
                plan: plan.clone(),
            },
            plan,
        )
    }
}

struct FaultFile {
    inner: Arc<dyn DirFile>,
    path: String,
    plan: FaultPlan,
}

impl DirFile for FaultFile {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        self.plan.alive()?;
        self.inner.read_at(buf, offset)
    }
    fn write_all_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        self.plan.alive()?;
        match self.plan.take_write(&self.path) {
            None => self.inner.write_all_at(buf, offset),
            Some(Fault::Eio) => Err(eio()),
            Some(Fault::NoSpace) => Err(enospc()),
            Some(Fault::Short | Fault::Torn) => {
                self.inner.write_all_at(&buf[..buf.len() / 2], offset)?;
                Err(eio())
            }
        }
    }
    fn len(&self) -> io::Result<u64> {
        self.plan.alive()?;
        self.inner.len()
    }
    fn set_len(&self, len: u64) -> io::Result<()> {
        self.plan.alive()?;
        self.inner.set_len(len)
    }
    fn punch_hole(&self, offset: u64, len: u64) -> io::Result<()> {
        self.plan.alive()?;
        self.inner.punch_hole(offset, len)
    }
    fn sync_data(&self) -> io::Result<()> {
        self.plan.alive()?;
        if self.plan.take_sync(&self.path) {
            return Err(eio());
        }
        self.inner.sync_data()
    }
}

impl Dir for FaultDir {
    fn open(&self, path: &str, create: bool) -> io::Result<Arc<dyn DirFile>> {
        self.plan.alive()?;
        Ok(Arc::new(FaultFile {
            inner: self.inner.open(path, create)?,
            path: path.to_string(),
            plan: self.plan.clone(),
        }))
    }
    fn exists(&self, path: &str) -> bool {
        self.inner.exists(path)
    }
    fn size(&self, path: &str) -> io::Result<Option<u64>> {
        self.plan.alive()?;
        self.inner.size(path)
    }
    fn remove(&self, path: &str) -> io::Result<()> {
        self.plan.alive()?;
        self.inner.remove(path)
    }
    fn rename(&self, from: &str, to: &str) -> io::Result<()> {
        self.plan.alive()?;
        self.inner.rename(from, to)
    }
    fn list(&self, dir: &str) -> io::Result<Vec<String>> {
        self.plan.alive()?;
        self.inner.list(dir)
    }
    fn sync_dir(&self, dir: &str) -> io::Result<()> {
        self.plan.alive()?;
        if self.plan.take_dir_sync(dir) {
            return Err(eio());
        }
        self.inner.sync_dir(dir)
    }
    fn sync_all_data(&self) -> io::Result<bool> {
        self.plan.alive()?;
        if self.plan.take_any_sync() {
            return Err(eio());
        }
        self.inner.sync_all_data()
    }
}
