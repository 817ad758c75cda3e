//! The stored form of a topic record, the bytes that the log's files (or RAM store) hold:
//!
//! ```text
//! [u32 LE total length][i64 LE $ts][u16 LE tag length][u16 LE hops << 12 | node length]
//! [u32 LE meta length][tag][node][meta][data]
//! ```
//!
//! `hops` counts how many routers forwarded the record (0 for a record written by a client).
//!
//! The tag and node are JSON string literals (quotes included, escaped once at write), meta
//! and data are the JSON text as received: a read copies slices into its response and never
//! parses or re-encodes them. A zero length means "absent" (a literal is at least `""`).

use super::NewRecord;

pub(crate) const HEADER: usize = 20;

/// Node literals are shorter than this (the rest of their length field holds the hops).
const NODE_LEN_LIMIT: usize = 1 << 12;

/// Where the parts of one stored record are.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Layout {
    tag: u16,
    node: u16,
    meta: u32,
    pub hops: u8,
}

/// The decoded header of a record at the start of `raw`: layout, `$ts` and total length.
pub(crate) fn parse(raw: &[u8]) -> Option<(Layout, i64, usize)> {
    if raw.len() < HEADER {
        return None;
    }
    let total = u32::from_le_bytes(raw[0..4].try_into().ok()?) as usize;
    let ts = i64::from_le_bytes(raw[4..12].try_into().ok()?);
    let tag = u16::from_le_bytes(raw[12..14].try_into().ok()?);
    let node_field = u16::from_le_bytes(raw[14..16].try_into().ok()?);
    let (node, hops) = (node_field & 0x0fff, (node_field >> 12) as u8);
    let meta = u32::from_le_bytes(raw[16..20].try_into().ok()?);
    let parts = HEADER + tag as usize + node as usize + meta as usize;
    if total < parts || total > raw.len() {
        return None;
    }
    Some((
        Layout {
            tag,
            node,
            meta,
            hops,
        },
        ts,
        total,
    ))
}

impl Layout {
    fn part(raw: &[u8], at: usize, len: usize) -> Option<&[u8]> {
        (len > 0).then(|| &raw[at..at + len])
    }
    pub fn tag<'a>(&self, raw: &'a [u8]) -> Option<&'a [u8]> {
        Self::part(raw, HEADER, self.tag as usize)
    }
    pub fn node<'a>(&self, raw: &'a [u8]) -> Option<&'a [u8]> {
        Self::part(raw, HEADER + self.tag as usize, self.node as usize)
    }
    pub fn meta<'a>(&self, raw: &'a [u8]) -> Option<&'a [u8]> {
        let at = HEADER + self.tag as usize + self.node as usize;
        Self::part(raw, at, self.meta as usize)
    }
    pub fn data<'a>(&self, raw: &'a [u8]) -> &'a [u8] {
        &raw[HEADER + self.tag as usize + self.node as usize + self.meta as usize..]
    }
}

/// A string as a JSON string literal.
pub(crate) fn literal(s: &str) -> String {
    // A `&str` always serializes.
    serde_json::to_string(s).unwrap_or_else(|_| "\"\"".into())
}

/// Why a record cannot be stored.
#[derive(Debug)]
pub(crate) struct TooLarge;

/// The length of `rec`'s stored form.
pub(crate) fn encoded_len(rec: &NewRecord) -> usize {
    let literal_len = |s: &Option<String>| s.as_deref().map_or(0, |s| literal(s).len());
    HEADER
        + literal_len(&rec.tag)
        + literal_len(&rec.node)
        + rec.meta.as_ref().map_or(0, |m| m.len())
        + rec.data.len()
}

/// Append the stored form of `rec` to `out`.
pub(crate) fn encode(rec: &NewRecord, ts: i64, out: &mut Vec<u8>) -> Result<(), TooLarge> {
    let tag = rec.tag.as_deref().map(literal).unwrap_or_default();
    let node = rec.node.as_deref().map(literal).unwrap_or_default();
    let meta: &[u8] = rec.meta.as_deref().unwrap_or_default();
    if node.len() >= NODE_LEN_LIMIT {
        return Err(TooLarge);
    }
    let total = HEADER + tag.len() + node.len() + meta.len() + rec.data.len();
    let (Ok(total32), Ok(tag_len), Ok(node_len), Ok(meta_len)) = (
        u32::try_from(total),
        u16::try_from(tag.len()),
        u16::try_from(node.len()),
        u32::try_from(meta.len()),
    ) else {
        return Err(TooLarge);
    };
    out.reserve(total);
    out.extend_from_slice(&total32.to_le_bytes());
    out.extend_from_slice(&ts.to_le_bytes());
    out.extend_from_slice(&tag_len.to_le_bytes());
    out.extend_from_slice(&node_len.to_le_bytes());
    out.extend_from_slice(&meta_len.to_le_bytes());
    out.extend_from_slice(tag.as_bytes());
    out.extend_from_slice(node.as_bytes());
    out.extend_from_slice(meta);
    out.extend_from_slice(&rec.data);
    Ok(())
}

/// How a router copies records.
#[derive(Debug, Clone, Copy)]
pub(crate) struct CopyRule<'a> {
    pub keep_tag: bool,
    pub keep_node: bool,
    /// Stamp `meta._topics_router.idempotency_key` = "`stamp`:`seq`" (exactly-once routers),
    /// unless an earlier router already did.
    pub stamp: Option<&'a str>,
}

/// Append to `out` a router's copy of the stored record `raw` (laid out as `l`, source seq
/// `seq`): its tag and node kept or dropped, one hop more, the source record's `$ts` (the
/// destination raises it to its own latest, see [`floor_ts`]): a copy made again after a
/// crash is the same copy.
pub(crate) fn copy(raw: &[u8], l: &Layout, seq: u64, rule: CopyRule, out: &mut Vec<u8>) {
    let tag = if rule.keep_tag { l.tag(raw) } else { None }.unwrap_or_default();
    let node = if rule.keep_node { l.node(raw) } else { None }.unwrap_or_default();
    let stamped;
    let mut meta = l.meta(raw).unwrap_or_default();
    if let Some(router) = rule.stamp
        && !contains(meta, b"\"_topics_router\"")
    {
        let member = format!(
            "\"_topics_router\":{{\"idempotency_key\":{}}}",
            literal(&format!("{router}:{seq}"))
        );
        stamped = with_member(meta, &member);
        meta = &stamped;
    }
    let data = l.data(raw);
    let total = HEADER + tag.len() + node.len() + meta.len() + data.len();
    // The parts come from a stored record, so their lengths fit their fields.
    let node_field = (u16::from(l.hops.saturating_add(1).min(15)) << 12) | node.len() as u16;
    out.reserve(total);
    out.extend_from_slice(&(total as u32).to_le_bytes());
    out.extend_from_slice(&raw[4..12]);
    out.extend_from_slice(&(tag.len() as u16).to_le_bytes());
    out.extend_from_slice(&node_field.to_le_bytes());
    out.extend_from_slice(&(meta.len() as u32).to_le_bytes());
    out.extend_from_slice(tag);
    out.extend_from_slice(node);
    out.extend_from_slice(meta);
    out.extend_from_slice(data);
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// The JSON object text `meta` (or `{}` if empty) with `member` added first.
pub(crate) fn with_member(meta: &[u8], member: &str) -> Vec<u8> {
    let Some(open) = meta.iter().position(|&c| c == b'{') else {
        return format!("{{{member}}}").into_bytes();
    };
    let rest = &meta[open + 1..];
    let empty = rest
        .iter()
        .find(|c| !c.is_ascii_whitespace())
        .is_none_or(|&c| c == b'}');
    let mut out = Vec::with_capacity(meta.len() + member.len() + 1);
    out.extend_from_slice(&meta[..=open]);
    out.extend_from_slice(member.as_bytes());
    if !empty {
        out.push(b',');
    }
    out.extend_from_slice(rest);
    out
}

/// Set the `$ts` of every record in `buf` (a clock that went back is not allowed to make
/// timestamps decrease within a topic).
pub(crate) fn set_ts(buf: &mut [u8], ts: i64) {
    map_ts(buf, |_| ts);
}

/// Raise every record's `$ts` in `buf` to at least `floor` (copies keep their source's
/// timestamps, which must not go back within the destination); returns the latest, or `floor`
/// if `buf` is empty.
pub(crate) fn floor_ts(buf: &mut [u8], floor: i64) -> i64 {
    let mut latest = floor;
    map_ts(buf, |ts| {
        latest = latest.max(ts);
        ts.max(floor)
    });
    latest
}

/// Replace each record's `$ts` in `buf` by `f(ts)`.
fn map_ts(buf: &mut [u8], mut f: impl FnMut(i64) -> i64) {
    let mut at = 0;
    while at + HEADER <= buf.len() {
        let total = u32::from_le_bytes([buf[at], buf[at + 1], buf[at + 2], buf[at + 3]]) as usize;
        let mut ts = [0u8; 8];
        ts.copy_from_slice(&buf[at + 4..at + 12]);
        buf[at + 4..at + 12].copy_from_slice(&f(i64::from_le_bytes(ts)).to_le_bytes());
        if total == 0 {
            break;
        }
        at += total;
    }
}

/// The end offsets (relative to `buf`) of the records `buf` holds, or `None` if it is not a
/// whole number of well-formed records.
pub(crate) fn ends(buf: &[u8]) -> Option<Vec<u64>> {
    let mut out = Vec::new();
    let mut at = 0;
    while at < buf.len() {
        let (_, _, total) = parse(&buf[at..])?;
        at += total;
        out.push(at as u64);
    }
    Some(out)
}

/// How many of the records in `buf` carry a tag.
pub(crate) fn tagged(buf: &[u8]) -> u64 {
    let mut n = 0;
    let mut at = 0;
    while let Some((layout, _, total)) = parse(&buf[at..]) {
        n += u64::from(layout.tag(&buf[at..]).is_some());
        at += total;
    }
    n
}

/// The tag of a stored record, decoded (for the tag index).
pub(crate) fn tag_of(raw: &[u8]) -> Option<String> {
    let (layout, _, _) = parse(raw)?;
    serde_json::from_slice(layout.tag(raw)?).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    #[test]
    fn records_round_trip() {
        let rec = NewRecord {
            data: Bytes::from_static(br#"{"a": [1, 2]}"#),
            tag: Some("order \"7\"".into()),
            node: None,
            meta: Some(Bytes::from_static(br#"{"k":1}"#)),
        };
        let mut buf = Vec::new();
        encode(&rec, 42, &mut buf).unwrap();
        encode(&NewRecord::default(), 43, &mut buf).unwrap();
        let ends = ends(&buf).unwrap();
        assert_eq!(ends.len(), 2);
        let (l, ts, total) = parse(&buf).unwrap();
        assert_eq!((ts, total as u64), (42, ends[0]));
        assert_eq!(l.tag(&buf).unwrap(), br#""order \"7\"""#);
        assert!(l.node(&buf).is_none());
        assert_eq!(l.meta(&buf[..total]).unwrap(), br#"{"k":1}"#);
        assert_eq!(l.data(&buf[..total]), br#"{"a": [1, 2]}"#);
        assert_eq!(tag_of(&buf).as_deref(), Some("order \"7\""));
        set_ts(&mut buf, 99);
        assert_eq!(parse(&buf[total..]).unwrap().1, 99);
        // Raised to a floor, never lowered; the latest is returned.
        assert_eq!(floor_ts(&mut buf, 50), 99);
        assert_eq!(floor_ts(&mut buf, 120), 120);
        assert_eq!(parse(&buf).unwrap().1, 120);
        assert!(super::ends(&buf[..total - 1]).is_none());
    }

    #[test]
    fn copies_keep_or_drop_parts_count_hops_and_stamp_meta() {
        let rec = NewRecord {
            data: Bytes::from_static(b"[1]"),
            tag: Some("t".into()),
            node: Some("n".into()),
            meta: Some(Bytes::from_static(br#" { "k": 1 }"#)),
        };
        let mut buf = Vec::new();
        encode(&rec, 5, &mut buf).unwrap();
        let (l, _, _) = parse(&buf).unwrap();
        assert_eq!(l.hops, 0);
        let rule = CopyRule {
            keep_tag: false,
            keep_node: true,
            stamp: Some("r>1"),
        };
        let mut out = Vec::new();
        copy(&buf, &l, 7, rule, &mut out);
        let (c, ts, total) = parse(&out).unwrap();
        assert_eq!((c.hops, ts, total), (1, 5, out.len()), "the source's $ts");
        assert!(c.tag(&out).is_none());
        assert_eq!(c.node(&out).unwrap(), br#""n""#);
        assert_eq!(c.data(&out), b"[1]");
        let meta: serde_json::Value = serde_json::from_slice(c.meta(&out).unwrap()).unwrap();
        assert_eq!(meta["k"], 1);
        assert_eq!(meta["_topics_router"]["idempotency_key"], "r>1:7");
        // A copy of the copy keeps the first stamp and counts one more hop.
        let mut again = Vec::new();
        copy(&out, &c, 9, rule, &mut again);
        let (c2, _, _) = parse(&again).unwrap();
        assert_eq!(c2.hops, 2);
        assert_eq!(c2.meta(&again), c.meta(&out));
        // Empty and absent meta get the member alone.
        assert_eq!(with_member(b"{ }", "\"a\":1"), b"{\"a\":1 }");
        assert_eq!(with_member(b"", "\"a\":1"), b"{\"a\":1}");
    }
}
