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

pub(crate) const MAGIC: &[u8; 8] = b"RIFFLWAL";
pub(crate) const VERSION: u32 = 1;
pub(crate) const HEADER: u64 = 32;
pub(crate) const RECORD_HEADER: usize = 8;

/// The largest payload a shard accepts, and the largest length recovery believes:
/// `max(segment_bytes, 64 MiB)`, and never more than a `u32` can say. A longer "record" found
/// at recovery is damage, not data.
pub fn max_record(segment_bytes: u64) -> u64 {
    segment_bytes.max(64 << 20).min(u64::from(u32::MAX))
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

/// Most payload bytes [`valid_data_after`] checksums while looking for intact records past a
/// damaged one; past that budget the damage is taken for a torn tail.
const SCAN_BUDGET: u64 = 256 << 20;

/// Whether intact records follow a damaged record at `pos`: that tells corruption (intact data
/// after the damage) from a torn tail (nothing intact after it). Returns where they start.
///
/// Looks first where the damaged record claims to end, then, in case the length field itself
/// is what is damaged, at every later byte offset. An offset counts only if whole records
/// start there and follow one another up to exactly the end of the file, so stray bytes
/// inside the payload of a torn record are not mistaken for data.
pub(crate) fn valid_data_after(buf: &[u8], pos: usize, max: u64) -> Option<usize> {
    let mut budget = SCAN_BUDGET;
    // Whole records from `q` to the end of the file; `None` once the budget is spent.
    let mut chain_to_end = |q: usize| -> Option<bool> {
        let mut at = q;
        while at < buf.len() {
            let len = buf.get(at..at + 4).map_or(0, |b| {
                u64::from(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            });
            budget = budget.checked_sub(len + 4)?;
            match parse_record(buf, at, max) {
                Ok((_, next)) => at = next,
                Err(_) => return Some(false),
            }
        }
        Some(at > q)
    };
    if let Some(len) = buf.get(pos..pos + 4) {
        let claimed = u32::from_le_bytes([len[0], len[1], len[2], len[3]]) as usize;
        let after = pos + RECORD_HEADER + claimed;
        if after < buf.len() && chain_to_end(after)? {
            return Some(after);
        }
    }
    for q in pos + 1..buf.len().saturating_sub(RECORD_HEADER - 1) {
        let len = u64::from(u32::from_le_bytes([
            buf[q],
            buf[q + 1],
            buf[q + 2],
            buf[q + 3],
        ]));
        if len > max || q + RECORD_HEADER + len as usize > buf.len() {
            continue;
        }
        if chain_to_end(q)? {
            return Some(q);
        }
    }
    None
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
