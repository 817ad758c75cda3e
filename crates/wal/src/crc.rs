//! CRC32C arithmetic for recovery's damage scan: the checksum of any byte range of a buffer in
//! (nearly) constant time, so checking a candidate record at every byte offset after a damaged
//! one stays linear in the file size whatever lengths the bytes there claim.
//!
//! CRC32C is linear over GF(2): `crc(A ‖ B) = crc(A)·x^(8|B|) + crc(B)` (mod the polynomial,
//! with the pre- and post-conditioning cancelling out, as in zlib's `crc32_combine`). So with the
//! running checksum at every `STEP`th byte, `crc(buf[a..b])` is the two marks around the range,
//! one shift (a multiplication per non-zero byte of the distance), and at most `2 * STEP` bytes
//! checksummed directly at its ends.
//!
//! Why not `crc32c::crc32c_combine`: it is zlib's matrix method, some thirty 32×32 GF(2)
//! matrix products per call, which at every byte offset of a damaged segment's tail would make
//! the scan take minutes; the byte tables here make a shift a handful of multiplications.

/// CRC32C's polynomial in reflected bit order (bit 31 is `x^0`).
const POLY: u32 = 0x82F6_3B78;

/// Bytes between two stored running checksums: the memory is 4 bytes per `STEP` bytes scanned,
/// the work per range at most `2 * STEP` bytes.
const STEP: usize = 256;

/// `a * b` modulo the polynomial.
const fn mul(a: u32, mut b: u32) -> u32 {
    let mut p = 0;
    let mut m = 1u32 << 31;
    while m != 0 {
        if a & m != 0 {
            p ^= b;
        }
        b = if b & 1 != 0 { (b >> 1) ^ POLY } else { b >> 1 };
        m >>= 1;
    }
    p
}

/// `BYTES[k][j]` is `x^(8 * j * 256^k)` modulo the polynomial: advancing a checksum over `n`
/// bytes takes one multiplication per non-zero byte of `n`.
const BYTES: [[u32; 256]; 8] = {
    let mut t = [[0u32; 256]; 8];
    let mut one_byte = 1u32 << 23; // x^8
    let mut k = 0;
    while k < 8 {
        let mut p = 1u32 << 31; // x^0
        let mut j = 0;
        while j < 256 {
            t[k][j] = p;
            p = mul(p, one_byte);
            j += 1;
        }
        one_byte = p; // x^(8 * 256^(k+1))
        k += 1;
    }
    t
};

/// `x^(8n)` modulo the polynomial.
fn zeros_factor(n: usize) -> u32 {
    let mut factor = 1u32 << 31; // x^0
    for (k, byte) in (n as u64).to_le_bytes().into_iter().enumerate() {
        if byte != 0 {
            factor = mul(BYTES[k][usize::from(byte)], factor);
        }
    }
    factor
}

/// `crc` advanced over `n` bytes as if they were zeros, without the conditioning:
/// `combine(crc(A), crc(B), |B|) == shift(crc(A), |B|) ^ crc(B)`.
fn shift(crc: u32, n: usize) -> u32 {
    mul(zeros_factor(n), crc)
}

/// The CRC32C of `A ‖ B` from those of `A` and `B` and the length of `B`.
pub(crate) fn combine(crc_a: u32, crc_b: u32, len_b: usize) -> u32 {
    if len_b == 0 {
        return crc_a;
    }
    shift(crc_a, len_b) ^ crc_b
}

/// Checksums of arbitrary ranges of `buf[base..]`.
pub(crate) struct Ranges<'a> {
    buf: &'a [u8],
    base: usize,
    /// `marks[i]` is the CRC32C of `buf[base..base + i * STEP]`.
    marks: Vec<u32>,
}

impl<'a> Ranges<'a> {
    pub(crate) fn new(buf: &'a [u8], base: usize) -> Self {
        let tail = buf.get(base..).unwrap_or_default();
        let mut marks = Vec::with_capacity(tail.len() / STEP + 1);
        let mut crc = 0;
        marks.push(crc);
        for chunk in tail.chunks_exact(STEP) {
            crc = crc32c::crc32c_append(crc, chunk);
            marks.push(crc);
        }
        Self { buf, base, marks }
    }

    /// The CRC32C of `buf[a..b]`; `None` unless `base <= a <= b <= buf.len()`.
    pub(crate) fn crc(&self, a: usize, b: usize) -> Option<u32> {
        let range = self.buf.get(a..b)?;
        if a < self.base {
            return None;
        }
        if b - a <= 2 * STEP {
            return Some(crc32c::crc32c(range));
        }
        // Marks at a0 (the first at or after a) and b0 (the last at or before b): a0 < b0
        // because the range spans more than two steps.
        let (ia, ib) = ((a - self.base).div_ceil(STEP), (b - self.base) / STEP);
        let (a0, b0) = (self.base + ia * STEP, self.base + ib * STEP);
        // crc(a..b0) = shift(crc(a..a0), n) ^ crc(a0..b0), and crc(a0..b0) = marks[ib] ^
        // shift(marks[ia], n): one shift of the two, since shifting is linear.
        let head = crc32c::crc32c(self.buf.get(a..a0)?);
        let to_b0 = shift(head ^ *self.marks.get(ia)?, b0 - a0) ^ *self.marks.get(ib)?;
        Some(crc32c::crc32c_append(to_b0, self.buf.get(b0..b)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bytes(n: usize, seed: u32) -> Vec<u8> {
        let mut x = seed | 1;
        (0..n)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                x as u8
            })
            .collect()
    }

    #[test]
    fn combine_matches_the_crate_and_direct_checksums() {
        let data = bytes(5000, 7);
        for split in [0usize, 1, 3, 255, 256, 257, 1024, 4999, 5000] {
            let (a, b) = data.split_at(split);
            let (ca, cb) = (crc32c::crc32c(a), crc32c::crc32c(b));
            assert_eq!(combine(ca, cb, b.len()), crc32c::crc32c(&data), "{split}");
            assert_eq!(
                combine(ca, cb, b.len()),
                crc32c::crc32c_combine(ca, cb, b.len())
            );
        }
    }

    #[test]
    fn long_shifts_match_the_crate() {
        for n in [1usize << 20, 0x0123_4567, 0xff00_ff01, u32::MAX as usize] {
            for (a, b) in [(0x1234_5678u32, 0x9abc_def0u32), (0, 1), (u32::MAX, 0)] {
                assert_eq!(combine(a, b, n), crc32c::crc32c_combine(a, b, n), "{n:#x}");
            }
        }
    }

    #[test]
    fn ranges_match_direct_checksums() {
        let data = bytes(3 * STEP + 77, 11);
        for base in [0usize, 1, 100] {
            let r = Ranges::new(&data, base);
            for a in (base..data.len()).step_by(7).chain([base, data.len()]) {
                for b in (a..=data.len()).step_by(13).chain([a, data.len()]) {
                    let want = crc32c::crc32c(&data[a..b]);
                    assert_eq!(r.crc(a, b), Some(want), "base {base} range {a}..{b}");
                }
            }
            assert_eq!(r.crc(data.len(), data.len() + 1), None);
            if base > 0 {
                assert_eq!(r.crc(base - 1, base + 1), None);
            }
        }
    }
}
