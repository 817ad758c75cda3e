//! Random operations: records, configurations, delete criteria and diff queries.

use super::model::MRec;
use crate::common::Rng;
use bytes::Bytes;
use riffle_engine::Durability;
use riffle_engine::topic::{DeleteSpec, Discard, NewRecord, TagMatch, TopicConfig};

pub const CLASSES: [Durability; 4] = [
    Durability::Ephemeral,
    Durability::Memory,
    Durability::Disk,
    Durability::Fsync,
];
/// A small set, so that deletes by tag find something; one needs escaping.
pub const TAGS: [&str; 6] = ["a", "b", "user-1:x", "user-1:y", "user-2:x", "q\"\u{e9}"];
pub const PREFIXES: [&str; 6] = ["user-1:", "user-", "a", "", "q", "zz"];
pub const NODES: [&str; 3] = ["n1", "n2", "n\"3"];

/// `count` records of attempt `w` (their data names the attempt and the index, so that a
/// stored record tells which write it came from).
pub fn records(rng: &mut Rng, w: u64, count: u64) -> Vec<MRec> {
    (0..count)
        .map(|i| {
            let s = String::from_utf8(rng.bytes(12)).expect("letters");
            let data = match rng.below(10) {
                0 => format!("[{w},{i},\"x y\"]"),
                1 => format!(" {{ \"w\" : {w} , \"i\":{i} }} "),
                2 => format!("\"w{w} i{i} \\u00e9 \\\"{s}\\\"\""),
                3 => format!(
                    "{{\"w\":{w},\"i\":{i},\"pad\":\"{}\"}}",
                    "p".repeat(100 + rng.below(400) as usize)
                ),
                _ => format!("{{\"w\":{w},\"i\":{i},\"s\":\"{s}\"}}"),
            };
            MRec {
                w,
                data,
                tag: rng.chance(55).then(|| rng.pick(&TAGS).to_string()),
                node: rng.chance(30).then(|| rng.pick(&NODES).to_string()),
                meta: rng.chance(10).then(|| format!("{{\"m\":{w}}}")),
                ts: 0,
                eph: false,
            }
        })
        .collect()
}

pub fn new_records(recs: &[MRec]) -> Vec<NewRecord> {
    recs.iter()
        .map(|r| NewRecord {
            data: Bytes::from(r.data.clone()),
            tag: r.tag.clone(),
            node: r.node.clone(),
            meta: r.meta.clone().map(Bytes::from),
        })
        .collect()
}

/// A fresh configuration of `class` (with a random idempotency window, kept for the topic's
/// life: a window that shrinks and grows again would make which keys are kept depend on when
/// writes happened, which nothing documents).
pub fn config(rng: &mut Rng, class: Durability) -> TopicConfig {
    let mut c = TopicConfig {
        durability: class,
        idempotency_window_ms: rng.pick(&[3_000, 10_000, 60_000]),
        ..TopicConfig::default()
    };
    for _ in 0..rng.below(3) {
        mutate(rng, &mut c);
    }
    c
}

/// Change one or two settings of `c` (the class among them, sometimes).
pub fn changed(rng: &mut Rng, c: &TopicConfig) -> TopicConfig {
    let mut c = c.clone();
    for _ in 0..1 + rng.below(2) {
        mutate(rng, &mut c);
    }
    c
}

fn mutate(rng: &mut Rng, c: &mut TopicConfig) {
    match rng.below(7) {
        0 | 1 => c.durability = rng.pick(&CLASSES),
        2 => c.cap_records = rng.pick(&[0, 0, 4, 12, 40]),
        3 => c.cap_bytes = rng.pick(&[0, 0, 500, 1_500, 4_000]),
        4 => {
            c.discard = if rng.chance(30) {
                Discard::Reject
            } else {
                Discard::Old
            }
        }
        5 => c.ttl_ms = rng.pick(&[0, 0, 1_500, 5_000]),
        _ => c.dedupe_node = !c.dedupe_node,
    }
}

pub fn delete_spec(rng: &mut Rng, head: u64) -> DeleteSpec {
    let before = rng.below(head + 3);
    let tag = if rng.chance(50) {
        TagMatch::Eq(rng.pick(&TAGS).to_string())
    } else {
        TagMatch::Prefix(rng.pick(&PREFIXES).to_string())
    };
    match rng.below(10) {
        0..=3 => DeleteSpec {
            before_seq: Some(before),
            tag: None,
        },
        4..=7 => DeleteSpec {
            before_seq: None,
            tag: Some(tag),
        },
        _ => DeleteSpec {
            before_seq: Some(before),
            tag: Some(tag),
        },
    }
}

/// A reader's query: `(from, limit, nodes, max_bytes)`.
pub fn query(rng: &mut Rng, head: u64, marks: &[u64]) -> (u64, usize, Vec<String>, usize) {
    let from = match rng.below(10) {
        0..=2 => 0,
        3..=5 => rng.below(head + 3),
        _ => {
            let m = rng.pick(marks);
            (m + rng.below(3)).saturating_sub(1)
        }
    };
    let limit = if rng.chance(30) {
        1000
    } else {
        1 + rng.below(25) as usize
    };
    let nodes = NODES
        .iter()
        .filter(|_| rng.chance(25))
        .map(|n| n.to_string())
        .collect();
    let max_bytes = if rng.chance(30) {
        30 + rng.below(600) as usize
    } else {
        1 << 20
    };
    (from, limit, nodes, max_bytes)
}
