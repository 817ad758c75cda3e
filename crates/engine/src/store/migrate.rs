//! Index files of the layout before checksums (one u64 end position per record from offset
//! 0, no header) are rewritten in the current layout when their log's files are opened: the
//! checksum of each record is computed from the bytes the data file holds (there is nothing
//! older to check them against). The new index is written beside the old one and renamed
//! over it, so a crash leaves either layout whole and the next open finishes the job; a
//! leftover `.idx.new` is removed with the other stray files at the end of recovery.

use super::{HEADER, MAGIC, UNCHECKED, header, push_entry, read_exact_at, record_crc, stored_crc};
use crate::filecache::{FileCache, FileKey};
use riffle_wal::DirFile;
use std::io;

/// Old entries converted per pass (bounds the memory a conversion holds).
const CHUNK: u64 = 65_536;

/// Make the index of log `id` (data from position `base`) exist in the current layout.
pub(super) fn ensure_layout(cache: &FileCache, id: u64, base: u64) -> io::Result<()> {
    let idx = cache.open(FileKey::idx(id), true)?;
    let len = idx.len()?;
    if len == 0 {
        return idx.write_all_at(&header(), 0);
    }
    let mut head = [0u8; HEADER as usize];
    let have = len.min(HEADER) as usize;
    read_exact_at(idx.as_ref(), &mut head[..have], 0)?;
    if &head[..8] == MAGIC {
        return Ok(());
    }
    if !cache.old_layouts() && head == [0; HEADER as usize] {
        // The header's page never reached the disk (a power loss soon after the log was
        // created) while a later one did: the entries there are rewritten by replay, and any
        // that are not fail their checks when read.
        tracing::warn!(
            log = id,
            "stream index without its header (lost page); header rewritten"
        );
        return idx.write_all_at(&header(), 0);
    }
    if !cache.old_layouts() {
        // A directory of checkpoint format 8 or later has only the current layout: this is
        // a damaged header, and reading it as the old layout would make up record bounds.
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!(
                "stream index {} has no valid header",
                FileKey::idx(id).path()
            ),
        ));
    }
    convert(cache, idx.as_ref(), id, base, len)
}

fn convert(cache: &FileCache, old: &dyn DirFile, id: u64, base: u64, len: u64) -> io::Result<()> {
    let data = cache.open(FileKey::data(id), true)?;
    let data_len = data.len()?;
    let tmp = format!("{}.new", FileKey::idx(id).path());
    let new = cache.dir().open(&tmp, true)?;
    new.set_len(0)?;
    new.write_all_at(&header(), 0)?;
    let (entries, mut start, mut written) = (len / 8, base, HEADER);
    let (mut raw, mut out) = (Vec::new(), Vec::new());
    let mut first = 0;
    // Inside a released stretch (a topic's trimmed head: its entries read as zeros).
    let mut released = false;
    'chunks: while first < entries {
        let n = (entries - first).min(CHUNK);
        raw.resize((n * 8) as usize, 0);
        read_exact_at(old, &mut raw, first * 8)?;
        out.clear();
        for c in raw.chunks_exact(8) {
            let mut e = [0u8; 8];
            e.copy_from_slice(c);
            let end = u64::from_le_bytes(e);
            if end == 0 {
                // Released (or an empty record at 0): never read again.
                push_entry(&mut out, 0, record_crc(&[], 0), 0);
                released = true;
                continue;
            }
            if end < start || end - base > data_len {
                // Not the end of stored bytes: a torn tail (entries written, their bytes not,
                // when the power went). Those records are in the WAL: replay rewrites them.
                new.write_all_at(&out, written)?;
                written += out.len() as u64;
                break 'chunks;
            }
            if std::mem::take(&mut released) {
                // The first record after a released stretch: where it starts went with the
                // stretch's entries, so there is nothing to compute its checksum over.
                push_entry(&mut out, end, 0, UNCHECKED);
            } else {
                // Index-only records (an `ephemeral` stretch lost) span a hole: their checksum
                // is of the zeros it reads as, which is what a read of them would find.
                let crc = stored_crc(data.as_ref(), start - base, end - start, end)?;
                push_entry(&mut out, end, crc, 0);
            }
            start = end;
        }
        new.write_all_at(&out, written)?;
        written += out.len() as u64;
        first += n;
    }
    new.sync_data()?;
    drop(new);
    cache.replace(FileKey::idx(id), &tmp)?;
    tracing::debug!(
        log = id,
        records = (written - HEADER) / 16,
        "stream index rewritten with checksums"
    );
    Ok(())
}
