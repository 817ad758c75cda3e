//! Where RAM-held logs keep their sealed chunks: one file for the process, so a catch-up read
//! sends them from the page cache with `sendfile`, as it does file-backed data, instead of
//! copying them from the heap into the socket (the copy was most of a memory-mode read's CPU).
//! Readers that need the bytes in memory (topic reads, HTTP/2, TLS) see them through a
//! read-only mapping of the same file, without copying either.
//!
//! The file is, as [`configure_arena`] chose ([`ArenaBacking`]): an unlinked file (`O_TMPFILE`)
//! in a directory, by default (the page cache of a disk file system holds large folios, which
//! the kernel sends at 1.1-1.25x the rate of shared memory's 4 KiB pages, and can write them
//! back and drop them under memory pressure; nothing of the file outlives the process); or
//! anonymous shared memory (a `memfd`); or none (chunks on the heap).
//!
//! Invariants, which make the `unsafe` below sound and the sends correct:
//! - a block's bytes are written once, through the file (`pwrite`), before any handle to it
//!   exists, and never again while it is allocated: every handle (a [`Bytes`] view or a
//!   [`Block`] range being sent) holds the block's `Arc`, and the block is released only when
//!   the last one drops;
//! - a log packs its blocks byte after byte into its current [`Extent`] (so they continue one
//!   another in the file, however small), and a page of an extent goes back to the arena only
//!   when no live block and no block still to come can lie on it;
//! - a page that goes back is punched out of the file first, so data the kernel still sends
//!   from it (`sendfile` keeps references to pages until the peer has them) is never
//!   overwritten: a new owner writes into fresh pages;
//! - the file is reachable by no name (unlinked from birth, or a `memfd`) and only grows, and
//!   the mapped segments stay mapped for the life of the process (the arena is a static), so
//!   a pointer into them stays valid as long as its block is allocated.
//!
//! Where the chosen file cannot be made (no `O_TMPFILE` on that file system, a missing
//! directory, no `memfd`), the next one down is used; where the arena cannot grow or a write to
//! it fails (a full disk), chunks stay on the heap as immutable `Bytes`, as before.

use bytes::Bytes;
use memmap2::{Mmap, MmapOptions};
use parking_lot::Mutex;
use std::collections::{BTreeMap, BTreeSet};
use std::os::fd::AsFd;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

/// Each segment of the file is mapped on its own, as the arena grows; a block never crosses
/// one (a chunk this large or larger stays on the heap).
const SEGMENT: u64 = 64 * 1024 * 1024;
/// The unit of the file the arena allocates and punches out.
const PAGE: u64 = 4096;

/// A block of the arena holding one sealed chunk.
pub(crate) struct Block {
    offset: u64,
    len: usize,
    /// Its first byte in the mapping.
    ptr: std::ptr::NonNull<u8>,
    /// The extent it lies in, which gives its pages back once nothing else lies on them.
    extent: Arc<Extent>,
}

// SAFETY: `ptr` points into a read-only shared mapping that lives as long as the process (the
// arena is a static and never unmaps), and the bytes it covers do not change while the block
// exists (see the module's invariants), so reading them from any thread is sound.
unsafe impl Send for Block {}
// SAFETY: as for `Send`: shared access is read-only and the memory is immutable meanwhile.
unsafe impl Sync for Block {}

impl Block {
    fn bytes(&self) -> &[u8] {
        // SAFETY: `ptr..ptr + len` lies inside one mapped segment (allocation never crosses
        // one), mapped for the life of the process, and holds bytes written through the file
        // before this block was handed out; no page under it goes back to the arena (to be
        // written by another owner) before it is released, which cannot happen while `self`
        // is borrowed.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }

    /// Offset of the block's first byte in the arena's file.
    pub(crate) fn offset(&self) -> u64 {
        self.offset
    }
}

impl Drop for Block {
    fn drop(&mut self) {
        let mut st = self.extent.state.lock();
        st.live.remove(&self.offset);
        self.extent.free_front(&mut st);
    }
}

impl std::fmt::Debug for Block {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Block({}+{})", self.offset, self.len)
    }
}

/// A shared block as the owner of a [`Bytes`] view.
struct View(Arc<Block>);

impl AsRef<[u8]> for View {
    fn as_ref(&self) -> &[u8] {
        self.0.bytes()
    }
}

/// A block as a file to send from: reads and `sendfile` go to the arena's file at the
/// block's offsets (absolute: `FileRange` offsets are the file's).
impl riffle_wal::DirFile for Block {
    fn fd(&self) -> Option<std::os::fd::BorrowedFd<'_>> {
        arena().map(|a| a.file.as_fd())
    }
    fn read_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<usize> {
        let bytes = self.bytes();
        let from = offset
            .checked_sub(self.offset)
            .and_then(|o| usize::try_from(o).ok())
            .filter(|&o| o <= bytes.len())
            .ok_or_else(|| std::io::Error::other("a read outside its arena block"))?;
        let n = buf.len().min(bytes.len() - from);
        buf[..n].copy_from_slice(&bytes[from..from + n]);
        Ok(n)
    }
    fn write_all_at(&self, _: &[u8], _: u64) -> std::io::Result<()> {
        Err(std::io::ErrorKind::Unsupported.into())
    }
    fn len(&self) -> std::io::Result<u64> {
        Ok(self.offset + self.len as u64)
    }
    fn set_len(&self, _: u64) -> std::io::Result<()> {
        Err(std::io::ErrorKind::Unsupported.into())
    }
    fn sync_data(&self) -> std::io::Result<()> {
        Ok(())
    }
    fn punch_hole(&self, _: u64, _: u64) -> std::io::Result<()> {
        Err(std::io::ErrorKind::Unsupported.into())
    }
}

/// A page-aligned range of the arena that one log packs its sealed chunks into, byte after
/// byte, so that a catch-up read sends consecutive chunks in one `sendfile` however small
/// its records (chunks of logs written at the same time would otherwise alternate, and
/// chunks that are not whole pages would never continue one another). Pages go back to the
/// arena front first, as the chunks on them go (a topic's trimmed head), and all of them once
/// the log has moved on to another extent and its last chunk here is released.
pub(crate) struct Extent {
    state: Mutex<ExtentState>,
}

struct ExtentState {
    /// First byte of every live block.
    live: BTreeSet<u64>,
    /// Everything before this is back in the arena (a page boundary).
    freed_to: u64,
    /// Where the log's next chunk goes, while the log still packs chunks here.
    next: Option<u64>,
    /// End of the bytes written here (the page that holds it goes with the last block).
    written_end: u64,
}

impl Extent {
    /// Give back the whole pages before the first byte still in use (a live block's, or the
    /// next chunk's while the log may still add one); all of them when neither is left.
    fn free_front(&self, st: &mut ExtentState) {
        let in_use = st.live.first().copied().or(st.next);
        let limit = match in_use {
            Some(at) => at / PAGE * PAGE,
            None => st.written_end.div_ceil(PAGE) * PAGE,
        };
        if limit > st.freed_to {
            if let Some(arena) = arena() {
                arena.free(st.freed_to, limit - st.freed_to);
            }
            st.freed_to = limit;
        }
    }
}

/// A log's current extent and how far it reaches. It is never written beyond the next chunk,
/// so what is ahead costs address space and no memory, and goes back to the arena (unwritten)
/// when the log moves on to a larger extent or goes.
#[derive(Default)]
pub(crate) struct Reserve {
    extent: Option<Arc<Extent>>,
    /// End of the current extent.
    end: u64,
    /// Size of the extent it last took: the next is twice as large, up to [`MAX_EXTENT`].
    last: u64,
}

impl std::fmt::Debug for Reserve {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Reserve(..{}, last {})", self.end, self.last)
    }
}

/// Largest extent a log sets aside at once.
const MAX_EXTENT: u64 = 4 * 1024 * 1024;

impl Reserve {
    /// Stop packing into the current extent: what was never written goes back to the arena,
    /// and the rest as soon as its blocks are released.
    fn close(&mut self) {
        let Some(extent) = self.extent.take() else {
            return;
        };
        let mut st = extent.state.lock();
        if let Some(next) = st.next.take() {
            let unwritten = next.div_ceil(PAGE) * PAGE;
            if unwritten < self.end
                && let Some(arena) = arena()
            {
                arena.give_back(unwritten, self.end - unwritten);
            }
        }
        extent.free_front(&mut st);
    }
}

impl Drop for Reserve {
    fn drop(&mut self) {
        self.close();
    }
}

/// Store `data` in a new block, right after the log's last one in `reserve` (which takes a
/// new extent when the current one is short): the block and a view of its bytes. `None` when
/// the arena cannot take it (none on this system, too large, out of space, a failed write):
/// the caller keeps the bytes on the heap.
pub(crate) fn store(data: &[u8], reserve: &mut Reserve) -> Option<(Arc<Block>, Bytes)> {
    let arena = arena()?;
    let len = data.len() as u64;
    if data.is_empty() || len > SEGMENT {
        return None;
    }
    let room = |r: &Reserve| {
        r.extent
            .as_ref()
            .and_then(|e| e.state.lock().next)
            .map_or(0, |next| r.end - next)
    };
    if room(reserve) < len {
        let need = len.div_ceil(PAGE) * PAGE;
        let want = (reserve.last * 2).clamp(need, MAX_EXTENT.max(need));
        let (offset, got) = arena.alloc(need, want)?;
        reserve.close();
        let state = ExtentState {
            live: BTreeSet::new(),
            freed_to: offset,
            next: Some(offset),
            written_end: offset,
        };
        reserve.extent = Some(Arc::new(Extent {
            state: Mutex::new(state),
        }));
        reserve.end = offset + got;
        reserve.last = got;
    }
    let extent = reserve.extent.clone()?;
    let mut st = extent.state.lock();
    let offset = st.next?;
    let ptr = arena.ptr_at(offset)?;
    // Written, or partly written, either way its pages go back with the extent's.
    st.next = Some(offset + len);
    st.written_end = offset + len;
    if let Err(e) = arena.file.write_all_at(data, offset) {
        tracing::warn!(error = %e, "writing to the memory arena failed; kept on the heap");
        return None;
    }
    st.live.insert(offset);
    drop(st);
    let block = Arc::new(Block {
        offset,
        len: data.len(),
        ptr,
        extent,
    });
    let view = Bytes::from_owner(View(block.clone()));
    Some((block, view))
}

struct Arena {
    file: std::fs::File,
    space: Mutex<Space>,
    backing: ArenaBacking,
}

/// The arena's free space: coalesced ranges by position and by size (best fit), and the
/// mapped segments.
#[derive(Default)]
struct Space {
    by_pos: BTreeMap<u64, u64>,
    by_len: BTreeSet<(u64, u64)>,
    segments: Vec<Mmap>,
}

/// What the memory arena keeps RAM-held chunks in. One arena serves the whole process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ArenaBacking {
    /// An unlinked file (`O_TMPFILE`) in this directory: page cache, sent like file-backed
    /// data. On a disk file system the kernel may write its pages back in the background and
    /// drop them under memory pressure (reading them back when needed), and the file takes disk
    /// space up to the chunks it holds; nothing of it remains after the process ends.
    File(PathBuf),
    /// Anonymous shared memory (a `memfd`): never on a disk, 4 KiB pages.
    SharedMemory,
    /// No arena: chunks stay on the heap, and reads copy them into the socket.
    Heap,
}

impl std::fmt::Display for ArenaBacking {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::File(dir) => write!(f, "an unlinked file in {}", dir.display()),
            Self::SharedMemory => f.write_str("shared memory (memfd)"),
            Self::Heap => f.write_str("the heap"),
        }
    }
}

static ARENA: OnceLock<Option<Arena>> = OnceLock::new();

/// Choose what the process's memory arena is kept in, falling back down the list of
/// [`ArenaBacking`] where one cannot be made (logged as a warning), and answer what is in use.
/// The arena is made once per process: once made (by this call or by the first chunk sealed
/// without it, which takes shared memory), later calls change nothing and answer what it is.
pub fn configure_arena(want: ArenaBacking) -> ArenaBacking {
    ARENA
        .get_or_init(|| Arena::open(want))
        .as_ref()
        .map_or(ArenaBacking::Heap, |a| a.backing.clone())
}

fn arena() -> Option<&'static Arena> {
    ARENA
        .get_or_init(|| Arena::open(ArenaBacking::SharedMemory))
        .as_ref()
}

impl Arena {
    /// The arena `want` names, or the first one below it that can be made.
    fn open(want: ArenaBacking) -> Option<Self> {
        let mut next = want;
        loop {
            let file = match &next {
                ArenaBacking::File(dir) => rustix::fs::open(
                    dir,
                    rustix::fs::OFlags::TMPFILE
                        | rustix::fs::OFlags::RDWR
                        | rustix::fs::OFlags::CLOEXEC,
                    rustix::fs::Mode::from_raw_mode(0o600),
                ),
                ArenaBacking::SharedMemory => {
                    rustix::fs::memfd_create("riffle-arena", rustix::fs::MemfdFlags::CLOEXEC)
                }
                ArenaBacking::Heap => return None,
            };
            let below = match next {
                ArenaBacking::File(_) => ArenaBacking::SharedMemory,
                _ => ArenaBacking::Heap,
            };
            match file {
                Ok(fd) => {
                    return Some(Self {
                        file: std::fs::File::from(fd),
                        space: Mutex::new(Space::default()),
                        backing: next,
                    });
                }
                Err(e) => {
                    tracing::warn!(error = %e, "the memory arena cannot be {next}; using {below}");
                    next = below;
                }
            }
        }
    }

    /// A free range of `want` bytes, or if none is that long, of at least `need` (both whole
    /// pages): its offset and length. Grows the file by a segment when nothing fits.
    fn alloc(&self, need: u64, want: u64) -> Option<(u64, u64)> {
        let mut s = self.space.lock();
        let fit = |s: &Space, len| s.by_len.range((len, 0)..).next().copied();
        let (have, offset) = match fit(&s, want).or_else(|| fit(&s, need)) {
            Some(fit) => fit,
            None => {
                let at = s.segments.len() as u64 * SEGMENT;
                if let Err(e) = self.grow(&mut s, at) {
                    tracing::warn!(error = %e, "the memory arena cannot grow; kept on the heap");
                    return None;
                }
                (SEGMENT, at)
            }
        };
        let take = have.min(want);
        s.remove(offset, have);
        if have > take {
            s.insert(offset + take, have - take);
        }
        Some((offset, take))
    }

    /// The first byte of the file's `offset` in the mapping.
    fn ptr_at(&self, offset: u64) -> Option<std::ptr::NonNull<u8>> {
        let s = self.space.lock();
        let segment = s.segments.get(usize::try_from(offset / SEGMENT).ok()?)?;
        let within = usize::try_from(offset % SEGMENT).ok()?;
        // (A pointer into a live mapping: a block never crosses a segment's end.)
        std::ptr::NonNull::new(segment.as_ptr().wrapping_add(within).cast_mut())
    }

    /// Add the segment at `at` (the file's end): extend the file, map it, and free it whole.
    fn grow(&self, s: &mut Space, at: u64) -> std::io::Result<()> {
        self.file.set_len(at + SEGMENT)?;
        // SAFETY: the file is this arena's own, reachable by no name; nothing truncates it (it only
        // grows), so the mapped range stays backed; its bytes change only in blocks no handle
        // refers to (the module's invariants), so `&[u8]` views of live blocks never change.
        let map = unsafe {
            MmapOptions::new()
                .offset(at)
                .len(SEGMENT as usize)
                .map(&self.file)?
        };
        s.segments.push(map);
        s.insert(at, SEGMENT);
        Ok(())
    }

    /// Give back `[offset, offset + len)` (whole pages): its pages first, so that nothing a
    /// send still references is written over when the range is used again.
    fn free(&self, offset: u64, len: u64) {
        let len = len.div_ceil(PAGE) * PAGE;
        let punch = rustix::fs::FallocateFlags::PUNCH_HOLE | rustix::fs::FallocateFlags::KEEP_SIZE;
        if let Err(e) = rustix::fs::fallocate(&self.file, punch, offset, len) {
            // Reusing the pages could change bytes a send still reads: leak the range.
            tracing::warn!(error = %e, "could not free memory arena pages; range left unused");
            return;
        }
        self.give_back(offset, len);
    }

    /// Return a range that holds no pages (never written since it was last punched).
    fn give_back(&self, offset: u64, len: u64) {
        let mut s = self.space.lock();
        let (mut start, mut end) = (offset, offset + len);
        // Coalesce with free neighbours in the same segment.
        if start % SEGMENT != 0
            && let Some((&p, &l)) = s.by_pos.range(..start).next_back()
            && p + l == start
        {
            s.remove(p, l);
            start = p;
        }
        if end % SEGMENT != 0
            && let Some(&l) = s.by_pos.get(&end)
        {
            s.remove(end, l);
            end += l;
        }
        s.insert(start, end - start);
    }
}

impl Space {
    fn insert(&mut self, offset: u64, len: u64) {
        self.by_pos.insert(offset, len);
        self.by_len.insert((len, offset));
    }

    fn remove(&mut self, offset: u64, len: u64) {
        self.by_pos.remove(&offset);
        self.by_len.remove(&(len, offset));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use riffle_wal::DirFile;

    #[test]
    fn blocks_hold_their_bytes_and_their_ranges_are_reused_once_freed() {
        let r = &mut Reserve::default();
        let Some((a, view)) = store(&[1u8; 5000], r) else {
            return; // no arena here: the heap path is tested by the store's tests
        };
        assert_eq!(&view[..], &[1u8; 5000][..]);
        let mut buf = [0u8; 10];
        assert_eq!(a.read_at(&mut buf, a.offset() + 4995).unwrap(), 5);
        assert_eq!(&buf[..5], &[1u8; 5]);
        let (b, _) = store(&[2u8; 100], r).unwrap();
        assert_ne!(a.offset(), b.offset(), "live blocks never overlap");
        drop(a);
        // The view keeps the block (and its bytes) alive.
        assert_eq!(&view[..10], &[1u8; 10][..]);
        drop(view);
        // Freed ranges are taken again, each with its own bytes.
        let blocks: Vec<_> = (0..4u8)
            .map(|i| store(&[i; 4096], &mut Reserve::default()).unwrap())
            .collect();
        for (i, (_, v)) in blocks.iter().enumerate() {
            assert!(v.iter().all(|&x| x == i as u8));
        }
        assert_eq!(b.bytes(), &[2u8; 100][..]);
    }

    #[test]
    fn a_logs_chunks_continue_one_another_while_logs_alternate() {
        // (a's chunk size, chunks, b's chunk size, most breaks): whole-page chunks in extents
        // of 1, 2, 4 and 8 chunks; chunks that are not whole pages, packed byte after byte,
        // one break per extent taken (8 KiB, 16, 32, ... 256 KiB for 300,000 bytes).
        for (size, n, other, most) in [(16384, 15, 16384, 3), (5000, 60, 3000, 6)] {
            let (mut a, mut b) = (Reserve::default(), Reserve::default());
            let (mut mine, mut theirs) = (Vec::new(), Vec::new());
            for i in 0..n {
                let Some((x, _)) = store(&vec![i as u8; size], &mut a) else {
                    return; // no arena here
                };
                mine.push(x);
                theirs.push(store(&vec![!(i as u8); other], &mut b).unwrap().0);
            }
            let breaks = mine
                .windows(2)
                .filter(|w| w[0].offset() + size as u64 != w[1].offset())
                .count();
            assert!(breaks <= most, "{size}: {breaks} breaks in {mine:?}");
            for (i, (x, y)) in mine.iter().zip(&theirs).enumerate() {
                assert_eq!(x.bytes(), &vec![i as u8; size][..]);
                assert_eq!(y.bytes(), &vec![!(i as u8); other][..]);
            }
        }
    }

    #[test]
    fn an_extents_pages_go_back_front_first_once_no_block_lies_on_them() {
        // (A log that has written 32 KiB before: its next extent is 64 KiB, room for all six.)
        let mut r = Reserve::default();
        r.last = 32768;
        let Some(first) = store(&[0u8; 5000], &mut r) else {
            return; // no arena here
        };
        let mut blocks = vec![Some(first)];
        for i in 1..6u8 {
            blocks.push(Some(store(&[i; 5000], &mut r).unwrap()));
        }
        let live = |b: &Option<(Arc<Block>, Bytes)>| b.as_ref().map(|(b, _)| b.clone());
        let all: Vec<_> = blocks.iter().filter_map(live).collect();
        assert!(
            all.windows(2)
                .all(|w| w[0].offset() + 5000 == w[1].offset())
        );
        let (start, extent) = (all[0].offset(), all[0].extent.clone());
        drop(all);
        let freed = || extent.state.lock().freed_to - start;
        // A middle block goes: the first still holds the front page.
        blocks[2] = None;
        assert_eq!(freed(), 0);
        // The first goes: the page before the second block's first byte is given back.
        blocks[0] = None;
        assert_eq!(freed(), 4096);
        // The second goes: up to the page that block 3 (at 15,000) starts on.
        blocks[1] = None;
        assert_eq!(freed(), 12288);
        // Other logs take and write freed pages; the blocks left keep their bytes, block 3's
        // first page included (dead block 2 shared it).
        let others: Vec<_> = (0..64)
            .map(|_| store(&[0xEE; 4096], &mut Reserve::default()).unwrap())
            .collect();
        for (i, left) in blocks.iter().enumerate().skip(3) {
            let (b, v) = left.as_ref().unwrap();
            assert_eq!(b.bytes(), &[i as u8; 5000][..]);
            assert_eq!(&v[..], &[i as u8; 5000][..]);
        }
        // The log moves on (its reserve goes): nothing more while blocks remain.
        drop(r);
        assert_eq!(freed(), 12288);
        blocks.clear();
        // Every page written is given back once the last block goes.
        assert_eq!(freed(), 32768);
        assert!(others.iter().all(|(b, _)| b.bytes() == [0xEE; 4096]));
    }
}
