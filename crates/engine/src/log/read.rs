//! Reads: a range of a log gathered from the fork chain (walked iteratively, never by
//! recursion), and the record lookups that JSON boundaries and fork points need.

use super::*;
use crate::arena::Block;
use crate::types::{FileRange, Piece};

/// Where a read puts what it gathers: stored bytes as they are, and file ranges either read
/// (`Vec<Bytes>`) or left in the file for a zero-copy send (`Vec<Piece>`).
pub(crate) trait Sink {
    fn bytes(&mut self, b: Bytes);
    fn file(&mut self, files: &LogFiles, from: u64, to: u64) -> std::io::Result<()>;
    /// `bytes`, the part of arena `block` from `lo` on: sent from the arena where a sink can.
    fn shared(&mut self, block: &Arc<Block>, lo: u64, bytes: Bytes);
}

impl Sink for Vec<Bytes> {
    fn bytes(&mut self, b: Bytes) {
        self.push(b);
    }
    fn shared(&mut self, _: &Arc<Block>, _: u64, bytes: Bytes) {
        self.push(bytes);
    }
    fn file(&mut self, files: &LogFiles, from: u64, to: u64) -> std::io::Result<()> {
        self.push(files.read_bytes(from, to)?);
        Ok(())
    }
}

impl Sink for Vec<Piece> {
    fn bytes(&mut self, b: Bytes) {
        self.push(Piece::Mem(b));
    }
    fn shared(&mut self, block: &Arc<Block>, lo: u64, bytes: Bytes) {
        self.push(Piece::File(FileRange::of_block(block, lo, bytes)));
    }
    fn file(&mut self, files: &LogFiles, from: u64, to: u64) -> std::io::Result<()> {
        self.push(Piece::File(files.range(from, to)?));
        Ok(())
    }
}

impl Log {
    /// The log of this fork chain that stores position `pos` (this log, or the ancestor whose
    /// own records hold it), and the end of the range this log inherits from it. Iterative:
    /// chains may be as deep as clients made them before the depth limit existed.
    fn owner_of(&self, pos: u64) -> (&Log, u64) {
        let mut log = self;
        let mut limit = u64::MAX;
        while let Some(base) = &log.config.base
            && pos < base.upto
        {
            limit = limit.min(base.upto);
            log = &base.source;
        }
        (log, limit)
    }

    /// Append the stored chunks of `[from, to)` to `out`, stopping once `budget` bytes are
    /// gathered at a record boundary. Returns the position reached.
    pub fn collect(
        &self,
        from: u64,
        to: u64,
        budget: &mut usize,
        out: &mut impl Sink,
    ) -> Result<u64> {
        let mut pos = from;
        while pos < to {
            let (owner, limit) = self.owner_of(pos);
            let end = to.min(limit);
            let reached = owner.collect_own(pos, end, budget, out)?;
            if reached < end || *budget == 0 {
                return Ok(reached);
            }
            pos = reached;
        }
        Ok(pos)
    }

    /// `collect` over this log's own records only.
    pub(super) fn collect_own(
        &self,
        pos: u64,
        to: u64,
        budget: &mut usize,
        out: &mut impl Sink,
    ) -> Result<u64> {
        if let Some(files) = &self.files {
            return self.collect_files(files, pos, to, budget, out);
        }
        Ok(self.state.lock().mem.collect(pos, to, budget, out))
    }

    /// `collect` for a file-backed log: what is in the files never changes, so it is read
    /// without the lock; what is still pending is copied under it.
    fn collect_files(
        &self,
        files: &LogFiles,
        mut pos: u64,
        to: u64,
        budget: &mut usize,
        out: &mut impl Sink,
    ) -> Result<u64> {
        loop {
            let (file_records, pending_start, tail) = {
                let st = self.state.lock();
                (
                    st.w.records - st.pending.ends.len() as u64,
                    st.pending.start,
                    st.w.tail,
                )
            };
            let to = to.min(tail);
            if pos < pending_start.min(to) {
                let end = files
                    .read_end(file_records, pos, pending_start.min(to), *budget)
                    .map_err(io_error)?;
                if end > pos {
                    out.file(files, pos, end).map_err(io_error)?;
                    *budget = budget.saturating_sub((end - pos) as usize);
                }
                pos = end.max(pos);
                if pos < pending_start.min(to) || *budget == 0 {
                    return Ok(pos);
                }
            }
            if pos >= to {
                return Ok(pos);
            }
            let st = self.state.lock();
            let p = &st.pending;
            if pos < p.start {
                // A flush moved the range into the files meanwhile: read it from there.
                continue;
            }
            // Whole pending records until the budget is reached.
            let first = p.ends.partition_point(|&e| e <= pos);
            let mut end = pos;
            for &e in &p.ends[first..] {
                end = e.min(to);
                if end >= to || (end - pos) as usize >= *budget {
                    break;
                }
            }
            let lo = (pos - p.start) as usize;
            let hi = (end - p.start) as usize;
            out.bytes(Bytes::copy_from_slice(&p.data[lo..hi]));
            *budget = budget.saturating_sub(hi - lo);
            return Ok(end);
        }
    }

    /// The record of a file-backed log that holds `pos` (pending or in the files).
    fn file_record_containing(&self, files: &LogFiles, pos: u64) -> Result<Option<(u64, Bytes)>> {
        let file_records = {
            let st = self.state.lock();
            let p = &st.pending;
            if pos >= p.start {
                let i = p.ends.partition_point(|&e| e <= pos);
                return Ok(p.ends.get(i).map(|&end| {
                    let start = if i == 0 { p.start } else { p.ends[i - 1] };
                    let lo = (start - p.start) as usize;
                    let hi = (end - p.start) as usize;
                    (start, Bytes::copy_from_slice(&p.data[lo..hi]))
                }));
            }
            st.w.records - p.ends.len() as u64
        };
        files.record_containing(file_records, pos).map_err(io_error)
    }

    /// For JSON framing: whether `pos` falls between two messages (offsets inside a message
    /// would make reads and forks return broken JSON).
    pub fn is_message_boundary(&self, pos: u64) -> Result<bool> {
        if self.config.framing != Framing::JsonMessages {
            return Ok(true);
        }
        let (owner, _) = self.owner_of(pos);
        if owner.config.base.as_ref().is_some_and(|b| b.upto == pos) {
            // Where an inheritance ends is a boundary: forks are made at boundaries.
            return Ok(true);
        }
        Ok(match owner.own_record_containing(pos)? {
            None => true, // at the tail
            Some((start, rec)) => framing::json_is_boundary(&rec, (pos - start) as usize),
        })
    }

    /// The stored bytes from `pos` to the end of the record that holds `pos`, as this log sees
    /// it (a record a fork inherited only in part ends where the inheritance ends). `None` at
    /// the tail.
    pub fn record_rest(&self, pos: u64) -> Result<Option<Bytes>> {
        let (owner, limit) = self.owner_of(pos);
        Ok(owner.own_record_containing(pos)?.map(|(start, rec)| {
            let rest = rec.slice((pos - start) as usize..);
            let keep = limit.saturating_sub(pos).min(rest.len() as u64) as usize;
            rest.slice(..keep)
        }))
    }

    /// This log's own record that holds `pos`: its start and bytes.
    fn own_record_containing(&self, pos: u64) -> Result<Option<(u64, Bytes)>> {
        match &self.files {
            Some(files) => self.file_record_containing(files, pos),
            None => Ok(self.state.lock().mem.record_at(pos)),
        }
    }
}
