//! Router copies of records their source no longer has. Copies are derived (made again from
//! the source after a crash) unless the source could lose the records first: a source with a
//! cap, a TTL, a queue's acks or an `ephemeral` class has its copies logged as they are made,
//! and a delete on any source first lets its routers copy and log what it deletes. So a copy
//! a reader saw survives a crash even when its source record is gone, with the timestamp it
//! had; and records a source evicted before they were forwarded are told of with a
//! `source_trim` tombstone, before and after a restart.

mod common;

use common::disk::Disk;
use common::routing::*;
use riffle_engine::topic::router::Guarantee;
use riffle_engine::topic::{DeleteSpec, Discard, GapReason, TopicConfig};
use riffle_engine::{Durability, Engine, ManualClock};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// `(seq, data, $ts)` of every live record of `t`.
fn read_ts(e: &Engine, t: &str) -> Vec<(u64, String, i64)> {
    let d = e.topic_diff(t, &q(0)).expect("diff");
    d.records
        .iter()
        .map(|r| {
            (
                r.seq,
                String::from_utf8_lossy(r.data_json()).into_owned(),
                r.ts,
            )
        })
        .collect()
}

/// The ways a source sheds records that were already copied.
#[derive(Debug, Clone, Copy)]
enum Shed {
    Cap,
    Ttl,
    Delete,
}

#[tokio::test]
async fn copies_outlive_their_source_records_across_a_crash() {
    for shed in [Shed::Cap, Shed::Ttl, Shed::Delete] {
        for how in CRASHES {
            for dst in CLASSES {
                // A power loss keeps only what was synced: an `fsync` destination's copies.
                if how == Crash::Power && dst != Durability::Fsync {
                    continue;
                }
                let what = format!("{shed:?}, {how:?}, dest {dst:?}");
                let d = Disk::new();
                let clock = Arc::new(ManualClock::new(1_000_000));
                let e = open(&d, &clock);
                let src = TopicConfig {
                    cap_records: if matches!(shed, Shed::Cap) { 1 } else { 0 },
                    ttl_ms: if matches!(shed, Shed::Ttl) { 1000 } else { 0 },
                    ..cfg(Durability::Fsync)
                };
                e.topic_put("src", src).await.unwrap();
                e.topic_put("dst", cfg(dst)).await.unwrap();
                e.router_put("r", def("src", "dst", Guarantee::AtLeastOnce))
                    .await
                    .unwrap();
                for i in 0..3 {
                    write(&e, "src", &datas("a", i, 1)).await;
                    // Each is copied before the next write evicts it (cap 1).
                    settle(&e, "r", "dst", i as u64 + 1, &what).await;
                    clock.advance_ms(10);
                }
                let before = read_ts(&e, "dst");
                assert_eq!(before.len(), 3, "{what}: {before:?}");
                // The source loses what was copied (the cap already took two of them).
                match shed {
                    Shed::Cap => {}
                    Shed::Ttl => {
                        clock.advance_ms(5000);
                        e.sweep_topics().await;
                    }
                    Shed::Delete => {
                        let all = DeleteSpec {
                            before_seq: Some(4),
                            tag: None,
                        };
                        e.topic_delete_records("src", &all).await.unwrap();
                    }
                }
                assert!(
                    read(&e, "src", 0).len() <= 1,
                    "{what}: the source shed its records"
                );
                crash(&d, e, how);
                clock.advance_ms(60_000);
                let e = open(&d, &clock);
                tokio::time::sleep(Duration::from_millis(20)).await;
                assert_eq!(
                    read_ts(&e, "dst"),
                    before,
                    "{what}: the copies, as they were"
                );
                let t = e.topic_diff("dst", &q(0)).unwrap().tombstone;
                assert!(t.is_none(), "{what}: no gap: {t:?}");
            }
        }
    }
}

/// A copy carries its source record's `$ts` (not the time it was made), so one made again
/// after a crash is the same record.
#[tokio::test]
async fn copies_made_again_after_a_crash_keep_their_timestamps() {
    let d = Disk::new();
    let clock = Arc::new(ManualClock::new(1_000_000));
    let e = open(&d, &clock);
    e.topic_put("src", cfg(Durability::Fsync)).await.unwrap();
    e.topic_put("dst", cfg(Durability::Memory)).await.unwrap();
    e.router_put("r", def("src", "dst", Guarantee::ExactlyOnce))
        .await
        .unwrap();
    for i in 0..4 {
        write(&e, "src", &datas("b", i, 1)).await;
        clock.advance_ms(7);
    }
    settle(&e, "r", "dst", 4, "before").await;
    let source: Vec<i64> = read_ts(&e, "src").into_iter().map(|r| r.2).collect();
    let before = read_ts(&e, "dst");
    assert_eq!(
        before.iter().map(|r| r.2).collect::<Vec<_>>(),
        source,
        "copies keep the source's timestamps"
    );
    d.power_loss(e);
    clock.advance_ms(60_000);
    let e = open(&d, &clock);
    settle(&e, "r", "dst", 4, "after").await;
    assert_eq!(read_ts(&e, "dst"), before, "made again, the same");
}

/// Records the source evicts before they are forwarded (here while a `discard: reject`
/// destination at its cap stalls the router) become a gap on the destination that a reader
/// crossing it is told of with a `source_trim` tombstone; nothing else is lost, and the
/// records after the gap arrive in order.
#[tokio::test]
async fn records_evicted_before_forwarding_leave_a_source_trim_tombstone() {
    let d = Disk::new();
    let clock = Arc::new(ManualClock::new(1_000_000));
    let mut e = open(&d, &clock);
    stall_setup(&e, 1).await;
    // The first record fills the destination; the router then stalls on the second while the
    // source (cap 3) evicts records 2 to 5 under the writes of 6 to 8.
    write(&e, "src", &datas("a", 1, 1)).await;
    wait_for(|| e.topic_info("dst", false).unwrap().head_seq == 1).await;
    for i in 2..=8 {
        write(&e, "src", &datas("a", i, 1)).await;
    }
    // Room again: the router resumes past the evicted records.
    let free = DeleteSpec {
        before_seq: Some(2),
        tag: None,
    };
    e.topic_delete_records("dst", &free).await.unwrap();
    let mut seen = Vec::new();
    let mut tombstone = None;
    let mut from = 1;
    let deadline = Instant::now() + Duration::from_secs(10);
    while seen.len() < 3 && Instant::now() < deadline {
        let d = e.topic_diff("dst", &q(from)).expect("diff");
        if let Some(t) = d.tombstone {
            tombstone.get_or_insert(t);
        }
        seen.extend(
            d.records
                .iter()
                .map(|r| String::from_utf8_lossy(r.data_json()).into_owned()),
        );
        from = d.next_from_seq;
        if d.records.is_empty() {
            // Make room for the next copy (the destination holds one record at a time).
            let below = DeleteSpec {
                before_seq: Some(from + 1),
                tag: None,
            };
            e.topic_delete_records("dst", &below).await.unwrap();
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    let t = tombstone.expect("a tombstone for the records the source evicted");
    assert_eq!(t.reason, GapReason::SourceTrim, "{t:?}");
    assert!(t.missed_estimate >= 1, "{t:?}");
    assert_eq!(
        seen,
        vec!["\"a-6\"", "\"a-7\"", "\"a-8\""],
        "the rest, in order"
    );
    // A cursor inside the gap is told too, and so is every reader after a restart (the gap's
    // ranges are logged with the copies and kept by checkpoints).
    let gap = (t.gap_from, t.gap_to);
    let inside = e.topic_diff("dst", &q(gap.0)).unwrap().tombstone;
    assert_eq!(
        inside.map(|t| (t.reason, t.gap_from)),
        Some((GapReason::SourceTrim, gap.0 + 1)),
        "from inside the gap"
    );
    for restart in ["kill -9", "checkpoint, then kill -9"] {
        if restart.starts_with("checkpoint") {
            e.checkpoint().unwrap();
        }
        d.process_crash(e);
        e = open(&d, &clock);
        let after = e.topic_diff("dst", &q(gap.0 - 1)).unwrap().tombstone;
        // (The gap then runs on over the copies read and deleted since.)
        assert_eq!(
            after.map(|t| (t.reason, t.gap_from, t.gap_to >= gap.1)),
            Some((GapReason::SourceTrim, gap.0, true)),
            "after {restart}"
        );
    }
}

/// A source-trimmed gap at the end of the destination (its router stalled on a full `reject`
/// destination) is not passed silently by a reader before it: the read stops at the gap and
/// the next one reports it.
#[tokio::test]
async fn a_source_trimmed_gap_at_the_head_is_reported_not_skipped() {
    let d = Disk::new();
    let clock = Arc::new(ManualClock::new(1_000_000));
    let e = open(&d, &clock);
    stall_setup(&e, 2).await;
    for i in 1..=2 {
        write(&e, "src", &datas("c", i, 1)).await;
    }
    wait_for(|| e.topic_info("dst", false).unwrap().head_seq == 2).await;
    // The destination is full: the source evicts 3 to 5 under the writes of 6 to 8.
    for i in 3..=8 {
        write(&e, "src", &datas("c", i, 1)).await;
    }
    // The router reaches the head past the gap (at its stall retry, 250 ms, at the latest;
    // generous on a loaded machine). On failure, say where it stood.
    let deadline = Instant::now() + Duration::from_secs(60);
    while e.topic_info("dst", false).unwrap().head_seq < 5 {
        let head = e.topic_info("dst", false).unwrap().head_seq;
        let src = e.topic_diff("src", &q(0)).unwrap();
        assert!(
            Instant::now() < deadline,
            "dst head {head}, router {:?}, src earliest {} head {}",
            e.router_get("r").map(|r| r.forwarded_total),
            src.earliest_seq,
            src.head_seq
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(
        e.topic_info("dst", false).unwrap().head_seq,
        5,
        "no copy fits"
    );
    let first = e.topic_diff("dst", &q(0)).unwrap();
    let seqs: Vec<u64> = first.records.iter().map(|r| r.seq).collect();
    assert_eq!(seqs, vec![1, 2]);
    assert_eq!(
        first.next_from_seq, 2,
        "stops before the gap: {:?}",
        first.tombstone
    );
    let next = e.topic_diff("dst", &q(first.next_from_seq)).unwrap();
    let t = next.tombstone.expect("the gap is reported");
    assert_eq!(
        (t.reason, t.gap_from, t.gap_to),
        (GapReason::SourceTrim, 3, 5)
    );
    assert_eq!(next.next_from_seq, 5);
}

/// Router `r` from `src` (cap 3: it evicts what is not forwarded fast enough) into `dst`, a
/// `discard: reject` topic of `dst_cap` records (it stalls the router once full).
async fn stall_setup(e: &Engine, dst_cap: u64) {
    let src = TopicConfig {
        cap_records: 3,
        ..cfg(Durability::Disk)
    };
    let dst = TopicConfig {
        cap_records: dst_cap,
        discard: Discard::Reject,
        ..cfg(Durability::Disk)
    };
    e.topic_put("src", src).await.unwrap();
    e.topic_put("dst", dst).await.unwrap();
    e.router_put("r", def("src", "dst", Guarantee::AtLeastOnce))
        .await
        .unwrap();
}
