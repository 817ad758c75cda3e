//! The on-disk format of WAL segments.
//!
//! A segment file `wal/<shard:02>/<segment:016x>.wal` starts with a 32-byte header:
//!
//! | bytes  | field                                  |
//! |--------|----------------------------------------|
//! | 0..8   | magic `b"RIFFLWAL"`                    |
//! | 8..12  | format version (u32 LE, currently 1)   |
//! | 12..16 | shard (u32 LE)                         |
//! | 16..24 | segment id (u64 LE)                    |
//! | 24..28 | reserved, zero                         |
//! | 28..32 | CRC32C of bytes 0..28 (u32 LE)         |
//!
//! followed by records, back to back:
//!
//! | bytes      | field                                              |
//! |------------|----------------------------------------------------|
//! | 0..4       | payload length `n` (u32 LE)                        |
//! | 4..8       | CRC32C over bytes 0..4 and the payload (u32 LE)    |
//! | 8..8+n     | payload                                            |
//!
//! A record's [`Lsn`](crate::Lsn) is its segment id and the byte offset of its length field.

use crate::crc::{self, Ranges};

pub(crate) const MAGIC: &[u8; 8] = b"RIFFLWAL";
pub(crate) const VERSION: u32 = 1;
pub(crate) const HEADER: u64 = 32;
pub(crate) const RECORD_HEADER: usize = 8;

/// The bound on a record whatever the segment size: room for a whole request body at the
/// server's default limit (64 MiB) plus what its record adds (framing, and a `/v0` batch's
/// per-record headers and batch-wide node copied into every record), so a body the server
/// accepts never fails in the WAL.
pub const MIN_MAX_RECORD: u64 = 128 << 20;

/// The largest payload a shard accepts, and the largest length recovery believes:
/// `max(segment_bytes, MIN_MAX_RECORD)`, and never more than a `u32` can say. A longer
/// "record" found at recovery is damage, not data.
pub fn max_record(segment_bytes: u64) -> u64 {
    segment_bytes.max(MIN_MAX_RECORD).min(u64::from(u32::MAX))
}

pub(crate) fn segment_dir(shard: u32) -> String {
    format!("wal/{shard:02}")
}

pub(crate) fn segment_path(shard: u32, segment: u64) -> String {
    format!("wal/{shard:02}/{segment:016x}.wal")
}

/// The segment id of a path listed in a shard directory, if it names a segment.
pub(crate) fn segment_id(path: &str) -> Option<u64> {
    let name = path.rsplit('/').next()?.strip_suffix(".wal")?;
    if name.len() != 16 {
        return None;
    }
    u64::from_str_radix(name, 16).ok()
}

pub(crate) fn segment_header(shard: u32, segment: u64) -> [u8; HEADER as usize] {
    let mut h = [0u8; HEADER as usize];
    h[..8].copy_from_slice(MAGIC);
    h[8..12].copy_from_slice(&VERSION.to_le_bytes());
    h[12..16].copy_from_slice(&shard.to_le_bytes());
    h[16..24].copy_from_slice(&segment.to_le_bytes());
    let crc = crc32c::crc32c(&h[..28]);
    h[28..32].copy_from_slice(&crc.to_le_bytes());
    h
}

/// What is wrong with a segment header, if anything.
pub(crate) fn check_header(h: &[u8], shard: u32, segment: u64) -> Result<(), String> {
    if h.len() < HEADER as usize {
        return Err("incomplete segment header".into());
    }
    if &h[..8] != MAGIC {
        return Err("not a WAL segment (bad magic)".into());
    }
    let crc = u32::from_le_bytes([h[28], h[29], h[30], h[31]]);
    if crc32c::crc32c(&h[..28]) != crc {
        return Err("segment header checksum mismatch".into());
    }
    let version = u32::from_le_bytes([h[8], h[9], h[10], h[11]]);
    if version != VERSION {
        return Err(format!("unsupported WAL format version {version}"));
    }
    let (s, id) = (
        u32::from_le_bytes([h[12], h[13], h[14], h[15]]),
        u64::from_le_bytes([h[16], h[17], h[18], h[19], h[20], h[21], h[22], h[23]]),
    );
    if s != shard || id != segment {
        return Err(format!(
            "segment header names shard {s} segment {id:x}, expected shard {shard} segment {segment:x}"
        ));
    }
    Ok(())
}

/// Append one framed record to `out`. The caller has checked `payload.len() <= u32::MAX`.
pub(crate) fn frame(payload: &[u8], out: &mut Vec<u8>) {
    let len = (payload.len() as u32).to_le_bytes();
    let crc = crc32c::crc32c_append(crc32c::crc32c(&len), payload);
    out.extend_from_slice(&len);
    out.extend_from_slice(&crc.to_le_bytes());
    out.extend_from_slice(payload);
}

/// Why the bytes at some offset are not a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Bad {
    ShortHeader,
    TooLong,
    ShortPayload,
    Checksum,
}

impl Bad {
    pub(crate) fn reason(self) -> &'static str {
        match self {
            Bad::ShortHeader => "incomplete record header",
            Bad::TooLong => "impossible record length",
            Bad::ShortPayload => "incomplete record",
            Bad::Checksum => "record checksum mismatch",
        }
    }
}

/// The record at `pos` of `buf`, if it is whole and its checksum holds: `(payload, next)`.
pub(crate) fn parse_record(buf: &[u8], pos: usize, max: u64) -> Result<(&[u8], usize), Bad> {
    let rest = buf.get(pos..).unwrap_or_default();
    if rest.len() < RECORD_HEADER {
        return Err(Bad::ShortHeader);
    }
    let len = u64::from(u32::from_le_bytes([rest[0], rest[1], rest[2], rest[3]]));
    let crc = u32::from_le_bytes([rest[4], rest[5], rest[6], rest[7]]);
    if len > max {
        return Err(Bad::TooLong);
    }
    let end = RECORD_HEADER + len as usize;
    if rest.len() < end {
        return Err(Bad::ShortPayload);
    }
    let payload = &rest[RECORD_HEADER..end];
    if crc32c::crc32c_append(crc32c::crc32c(&rest[..4]), payload) != crc {
        return Err(Bad::Checksum);
    }
    Ok((payload, pos + end))
}

/// Whether an intact record starts at `q`: a length within `max` and the file, and a checksum
/// that holds. Costs O(1) bytes checksummed whatever the length claims (see [`Ranges`]).
fn intact_at(buf: &[u8], ranges: &Ranges<'_>, q: usize, max: u64) -> bool {
    let Some(h) = buf.get(q..q + RECORD_HEADER) else {
        return false;
    };
    let len = u32::from_le_bytes([h[0], h[1], h[2], h[3]]);
    let stored = u32::from_le_bytes([h[4], h[5], h[6], h[7]]);
    let start = q + RECORD_HEADER;
    let Some(end) = usize::try_from(len).ok().and_then(|n| start.checked_add(n)) else {
        return false;
    };
    if u64::from(len) > max || end > buf.len() {
        return false;
    }
    ranges.crc(start, end).is_some_and(|payload| {
        crc::combine(crc32c::crc32c(&h[..4]), payload, end - start) == stored
    })
}

/// Where the first intact record after a damaged record at `pos` starts, if there is one: that
/// tells corruption (intact data after the damage) from a torn tail (nothing intact after it).
///
/// The damaged record's length field may itself be what is damaged, so its claimed end means
/// nothing: every later byte offset is a candidate, and one record whose length fits and whose
/// CRC32C holds is enough. A write cut short leaves a prefix of one batch, never a whole record
/// after a broken one, so such a record is evidence of damage to data already written (a power
/// loss that keeps a later page and loses an earlier one is refused too: see `recover.rs`). The
/// price is that a torn record whose payload happens to hold a whole framed record (say, a WAL
/// segment stored as data) is refused rather than cut: refusing can be undone, cutting cannot.
/// Runs of zeros (pages that never reached the disk) are never records: a zero length with a
/// zero checksum fails, since the CRC32C of four zero bytes is `0x48674BC7`.
///
/// There is no budget: a budget that ran out would either have to call the damage a torn tail
/// (silently dropping acknowledged records, the bug this replaced) or refuse to start whenever
/// the bytes after a real torn tail happened to be expensive to scan. Instead each candidate
/// costs O(1) whatever length it claims, so the scan is linear in the bytes after `pos`.
pub(crate) fn valid_data_after(buf: &[u8], pos: usize, max: u64) -> Option<usize> {
    let first = pos.checked_add(1)?;
    let ranges = Ranges::new(buf, first);
    (first..buf.len().saturating_sub(RECORD_HEADER - 1)).find(|&q| intact_at(buf, &ranges, q, max))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn framed(payloads: &[&[u8]]) -> Vec<u8> {
        let mut out = Vec::new();
        for p in payloads {
            frame(p, &mut out);
        }
        out
    }

    #[test]
    fn records_round_trip() {
        let buf = framed(&[b"a", b"", b"hello"]);
        let max = max_record(0);
        let (p, next) = parse_record(&buf, 0, max).unwrap();
        assert_eq!((p, next), (&b"a"[..], 9));
        let (p, next) = parse_record(&buf, next, max).unwrap();
        assert_eq!((p, next), (&b""[..], 17));
        let (p, next) = parse_record(&buf, next, max).unwrap();
        assert_eq!((p, next), (&b"hello"[..], buf.len()));
        assert_eq!(parse_record(&buf, next, max), Err(Bad::ShortHeader));
    }

    #[test]
    fn damage_is_classified() {
        let buf = framed(&[b"hello"]);
        let max = max_record(0);
        assert_eq!(parse_record(&buf[..5], 0, max), Err(Bad::ShortHeader));
        assert_eq!(parse_record(&buf[..10], 0, max), Err(Bad::ShortPayload));
        let mut bad = buf.clone();
        bad[9] ^= 1;
        assert_eq!(parse_record(&bad, 0, max), Err(Bad::Checksum));
        let mut long = buf.clone();
        long[3] = 0xff;
        assert_eq!(parse_record(&long, 0, max), Err(Bad::TooLong));
    }

    #[test]
    fn valid_data_after_damage_is_found_even_with_a_broken_length() {
        let buf = framed(&[b"first", b"second", b"third"]);
        let max = max_record(0);
        let mut flipped_payload = buf.clone();
        flipped_payload[9] ^= 1;
        assert_eq!(valid_data_after(&flipped_payload, 0, max), Some(13));
        let mut flipped_len = buf.clone();
        flipped_len[0] = 200;
        assert_eq!(valid_data_after(&flipped_len, 0, max), Some(13));
        // A torn last record: nothing intact after it.
        let torn = &buf[..buf.len() - 2];
        assert_eq!(valid_data_after(torn, 27, max), None);
        // Zeros (a lost page) are not records.
        let mut zeros = buf[..13].to_vec();
        zeros.extend_from_slice(&[0u8; 64]);
        assert_eq!(valid_data_after(&zeros, 13, max), None);
    }

    #[test]
    fn zeros_are_never_records() {
        // An all-zero record header claims an empty payload, whose checksum is not zero.
        assert_eq!(crc32c::crc32c(&[0; 4]), 0x4867_4BC7);
        let max = max_record(0);
        for head in [0usize, 1, 5, 13] {
            let mut buf = framed(&[b"first", b"second"])[..head].to_vec();
            buf.extend_from_slice(&[0u8; 5000]);
            assert_eq!(valid_data_after(&buf, 0, max), None, "{head}");
        }
    }

    #[test]
    fn a_length_off_by_one_still_finds_the_long_records_after_it() {
        // The reviewer's case: the claimed end lands one byte into the next record, where the
        // "length" is huge; that must not end the scan.
        let big = vec![0xabu8; 1024];
        let mut buf = framed(&[&big, &big, &big]);
        buf[0] ^= 1;
        assert_eq!(valid_data_after(&buf, 0, max_record(0)), Some(1032));
        // An intact record with an empty payload counts too.
        let mut buf = framed(&[b"damaged", b""]);
        buf[9] ^= 1;
        assert_eq!(valid_data_after(&buf, 0, max_record(0)), Some(15));
    }

    #[test]
    fn headers_are_checked() {
        let h = segment_header(3, 7);
        assert!(check_header(&h, 3, 7).is_ok());
        assert!(check_header(&h, 3, 8).is_err());
        assert!(check_header(&h[..20], 3, 7).is_err());
        let mut bad = h;
        bad[17] ^= 1;
        assert!(check_header(&bad, 3, 7).unwrap_err().contains("checksum"));
        assert_eq!(segment_id("wal/03/0000000000000007.wal"), Some(7));
        assert_eq!(segment_id("wal/03/7.wal"), None);
        assert_eq!(segment_id("wal/03/0000000000000007.wal.tmp"), None);
    }
}
