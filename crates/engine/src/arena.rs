//! Where RAM-held logs keep their sealed chunks: one shared-memory file (a `memfd`) for the
//! process, so a catch-up read sends them from the page cache with `sendfile`, as it does
//! file-backed data, instead of copying them from the heap into the socket (the copy was most
//! of a memory-mode read's CPU). Readers that need the bytes in memory (topic reads, HTTP/2,
//! TLS) see them through a read-only mapping of the same file, without copying either.
//!
//! Invariants, which make the `unsafe` below sound and the sends correct:
//! - a block's bytes are written once, through the file (`pwrite`), before any handle to it
//!   exists, and never again while it is allocated: every handle (a [`Bytes`] view or a
//!   [`Block`] range being sent) holds the block's `Arc`, and the block is freed only when the
//!   last one drops;
//! - a freed block's pages are punched out of the file before the range can be allocated again,
//!   so data the kernel still sends from those pages (`sendfile` keeps references to them until
//!   the peer has it) is never overwritten: a new owner writes into fresh pages;
//! - the mapped segments stay mapped for the life of the process (the arena is a static), so
//!   a pointer into them stays valid as long as its block is allocated.
//!
//! Where `memfd_create` is refused (an old kernel, a sandbox that filters it), or the arena
//! cannot grow, chunks stay on the heap as immutable `Bytes`, as before.

use bytes::Bytes;
use memmap2::{Mmap, MmapOptions};
use parking_lot::Mutex;
use std::collections::{BTreeMap, BTreeSet};
use std::os::fd::AsFd;
use std::os::unix::fs::FileExt;
use std::sync::{Arc, OnceLock};

/// Each segment of the file is mapped on its own, as the arena grows; a block never crosses
/// one (a chunk this large or larger stays on the heap).
const SEGMENT: u64 = 64 * 1024 * 1024;
/// Blocks are whole pages: a freed block's pages can be punched out.
const PAGE: u64 = 4096;

/// A block of the arena holding one sealed chunk.
pub(crate) struct Block {
    offset: u64,
    len: usize,
    /// Its first byte in the mapping.
    ptr: std::ptr::NonNull<u8>,
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
        // before this block was handed out and not written again until it is freed, which
        // cannot happen while `self` is borrowed.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }

    /// Offset of the block's first byte in the arena's file.
    pub(crate) fn offset(&self) -> u64 {
        self.offset
    }
}

impl Drop for Block {
    fn drop(&mut self) {
        if let Some(arena) = arena() {
            arena.free(self.offset, self.len as u64);
        }
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

/// Store `data` in a new block: the block and a view of its bytes. `None` when the arena
/// cannot take it (none on this system, too large, or out of memory): the caller keeps the
/// bytes on the heap.
pub(crate) fn store(data: &[u8]) -> Option<(Arc<Block>, Bytes)> {
    let arena = arena()?;
    if data.is_empty() || data.len() as u64 > SEGMENT {
        return None;
    }
    let (offset, ptr) = arena.alloc(data.len() as u64)?;
    let block = Arc::new(Block {
        offset,
        len: data.len(),
        ptr,
    });
    if let Err(e) = arena.file.write_all_at(data, offset) {
        tracing::warn!(error = %e, "writing to the memory arena failed; kept on the heap");
        return None; // dropping the block frees its range
    }
    let view = Bytes::from_owner(View(block.clone()));
    Some((block, view))
}

struct Arena {
    file: std::fs::File,
    space: Mutex<Space>,
}

/// The arena's free space: coalesced ranges by position and by size (best fit), and the
/// mapped segments.
#[derive(Default)]
struct Space {
    by_pos: BTreeMap<u64, u64>,
    by_len: BTreeSet<(u64, u64)>,
    segments: Vec<Mmap>,
}

fn arena() -> Option<&'static Arena> {
    static ARENA: OnceLock<Option<Arena>> = OnceLock::new();
    ARENA
        .get_or_init(|| match Arena::new() {
            Ok(a) => Some(a),
            Err(e) => {
                tracing::info!(error = %e, "no memory arena (memfd): RAM-held chunks stay on the heap");
                None
            }
        })
        .as_ref()
}

impl Arena {
    fn new() -> std::io::Result<Self> {
        let fd = rustix::fs::memfd_create("riffle-arena", rustix::fs::MemfdFlags::CLOEXEC)?;
        Ok(Self {
            file: std::fs::File::from(fd),
            space: Mutex::new(Space::default()),
        })
    }

    /// A free range of `len` bytes (rounded up to pages): its offset and its first byte in the
    /// mapping. Grows the file by a segment when nothing fits.
    fn alloc(&self, len: u64) -> Option<(u64, std::ptr::NonNull<u8>)> {
        let need = len.div_ceil(PAGE) * PAGE;
        let mut s = self.space.lock();
        let (have, offset) = match s.by_len.range((need, 0)..).next().copied() {
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
        s.remove(offset, have);
        if have > need {
            s.insert(offset + need, have - need);
        }
        let segment = s.segments.get(usize::try_from(offset / SEGMENT).ok()?)?;
        let within = usize::try_from(offset % SEGMENT).ok()?;
        // (A pointer into a live mapping: `within + len <= SEGMENT`, as a block never crosses
        // a segment's end.)
        let ptr = std::ptr::NonNull::new(segment.as_ptr().wrapping_add(within).cast_mut())?;
        Some((offset, ptr))
    }

    /// Add the segment at `at` (the file's end): extend the file, map it, and free it whole.
    fn grow(&self, s: &mut Space, at: u64) -> std::io::Result<()> {
        self.file.set_len(at + SEGMENT)?;
        // SAFETY: the file is this arena's private memfd; nothing truncates it (it only
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

    /// Give back `[offset, offset + len)` (rounded up to pages): its pages first, so that
    /// nothing a send still references is written over when the range is used again.
    fn free(&self, offset: u64, len: u64) {
        let len = len.div_ceil(PAGE) * PAGE;
        let punch = rustix::fs::FallocateFlags::PUNCH_HOLE | rustix::fs::FallocateFlags::KEEP_SIZE;
        if let Err(e) = rustix::fs::fallocate(&self.file, punch, offset, len) {
            // Reusing the pages could change bytes a send still reads: leak the range.
            tracing::warn!(error = %e, "could not free memory arena pages; range left unused");
            return;
        }
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
        let Some((a, view)) = store(&[1u8; 5000]) else {
            return; // no memfd here: the heap path is tested by the store's tests
        };
        assert_eq!(&view[..], &[1u8; 5000][..]);
        let mut buf = [0u8; 10];
        assert_eq!(a.read_at(&mut buf, a.offset() + 4995).unwrap(), 5);
        assert_eq!(&buf[..5], &[1u8; 5]);
        let (b, _) = store(&[2u8; 100]).unwrap();
        assert_ne!(a.offset(), b.offset(), "live blocks never overlap");
        drop(a);
        // The view keeps the block (and its bytes) alive.
        assert_eq!(&view[..10], &[1u8; 10][..]);
        drop(view);
        // Freed ranges are taken again, each with its own bytes.
        let blocks: Vec<_> = (0..4u8).map(|i| store(&[i; 4096]).unwrap()).collect();
        for (i, (_, v)) in blocks.iter().enumerate() {
            assert!(v.iter().all(|&x| x == i as u8));
        }
        assert_eq!(b.bytes(), &[2u8; 100][..]);
    }
}
