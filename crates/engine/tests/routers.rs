//! Routers on the engine across crashes: a router forwards every source record written after
//! it was created, in order, exactly once, and after a `kill -9` or a power loss (with or
//! without checkpoints, racing a burst of writes, between direct writes to the destination)
//! forwarding resumes from the durable cursor so that the destination ends up holding exactly
//! one copy of each, at the seqs it had. Router definitions, `forwarded_total`, deletes and
//! topic removals survive restarts, and `exactly_once` copies keep their keys.
//!
//! The engine's dev-dependencies have no `rt-multi-thread` tokio feature, so these tests run on
//! the current-thread runtime (forwarding tasks run whenever a test awaits); where writes must
//! race forwarding, they run on a thread of their own with its own runtime.

mod common;

use common::disk::Disk;
use common::routing::*;
use riffle_engine::topic::router::Guarantee;
use riffle_engine::topic::{DeleteSpec, NewRecord, TagMatch, TopicWrite};
use riffle_engine::{Durability, Engine, EngineError, ManualClock};
use serde_json::Value;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

/// The source's records after `start`, as the destination must hold them: seqs from 1.
fn as_copies(source: &[(u64, String)], start: u64) -> Vec<(u64, String)> {
    source
        .iter()
        .filter(|(s, _)| *s > start)
        .enumerate()
        .map(|(i, (_, d))| (i as u64 + 1, d.clone()))
        .collect()
}

/// Every (crash, source class, dest class) worth testing: a power loss only with an `fsync`
/// source (the others may lose acknowledged source records).
fn matrix() -> Vec<(Crash, Durability, Durability)> {
    let mut out = Vec::new();
    for how in CRASHES {
        for src in CLASSES {
            for dst in CLASSES {
                if how == Crash::Process || src == Durability::Fsync {
                    out.push((how, src, dst));
                }
            }
        }
    }
    out
}

fn guarantee(i: usize) -> Guarantee {
    if i.is_multiple_of(2) {
        Guarantee::AtLeastOnce
    } else {
        Guarantee::ExactlyOnce
    }
}

/// Source `src` with a few records from before the router, dest `dst`, router `r`: the seq the
/// router starts after.
async fn setup(e: &Engine, src: Durability, dst: Durability, g: Guarantee) -> u64 {
    e.topic_put("src", cfg(src)).await.unwrap();
    e.topic_put("dst", cfg(dst)).await.unwrap();
    write(e, "src", &datas("before", 0, 3)).await;
    let put = e.router_put("r", def("src", "dst", g)).await.unwrap();
    assert!(put.created);
    assert_eq!(put.info.forwarded_total, 0);
    3
}

/// Writes `n` source records in batches of 1..=7, waiting for none of them.
async fn burst(e: &Engine, prefix: &str, from: usize, n: usize) {
    let mut i = from;
    while i < from + n {
        let k = (1 + i % 7).min(from + n - i);
        write(e, "src", &datas(prefix, i, k)).await;
        i += k;
    }
}

#[tokio::test]
async fn forwarded_copies_survive_a_crash_exactly_once() {
    for (i, (how, src, dst)) in matrix().into_iter().enumerate() {
        let what = format!("{how:?} src {src:?} dst {dst:?}");
        let d = Disk::new();
        let clock = Arc::new(ManualClock::new(1_000));
        let e = open(&d, &clock);
        let start = setup(&e, src, dst, guarantee(i)).await;
        burst(&e, "s", 0, 50).await;
        settle(&e, "r", "dst", 50, &what).await;
        let want = as_copies(&read(&e, "src", 0), start);
        assert_eq!(want.len(), 50, "{what}");
        assert_eq!(read(&e, "dst", 0), want, "{what}: before the crash");
        crash(&d, e, how);

        let e = open(&d, &clock);
        assert_eq!(
            as_copies(&read(&e, "src", 0), start),
            want,
            "{what}: source"
        );
        settle(&e, "r", "dst", 50, &what).await;
        assert_eq!(read(&e, "dst", 0), want, "{what}: after the crash");
        assert_eq!(head(&e, "dst"), 50, "{what}");
        let info = e.router_get("r").unwrap();
        assert_eq!(info.def, def("src", "dst", guarantee(i)), "{what}");
    }
}

#[tokio::test]
async fn a_checkpoint_between_copies_then_a_crash_neither_loses_nor_duplicates() {
    for (i, (how, src, dst)) in matrix().into_iter().enumerate() {
        let what = format!("{how:?} src {src:?} dst {dst:?}");
        let d = Disk::new();
        let clock = Arc::new(ManualClock::new(1_000));
        let e = open(&d, &clock);
        let start = setup(&e, src, dst, guarantee(i)).await;
        burst(&e, "a", 0, 20).await;
        settle(&e, "r", "dst", 20, &what).await;
        // Some copies may still be in flight when the checkpoint is taken.
        burst(&e, "b", 0, 10).await;
        e.checkpoint().expect("checkpoint");
        burst(&e, "c", 0, 20).await;
        if i.is_multiple_of(3) {
            // A second checkpoint with copies after the first one, some unlogged.
            e.checkpoint().expect("checkpoint");
        }
        settle(&e, "r", "dst", 50, &what).await;
        let want = as_copies(&read(&e, "src", 0), start);
        assert_eq!(read(&e, "dst", 0), want, "{what}: before the crash");
        crash(&d, e, how);

        let e = open(&d, &clock);
        settle(&e, "r", "dst", 50, &what).await;
        assert_eq!(read(&e, "dst", 0), want, "{what}: after the crash");
        // And again, with a restart's own checkpoint behind it.
        crash(&d, e, how);
        let e = open(&d, &clock);
        settle(&e, "r", "dst", 50, &what).await;
        assert_eq!(read(&e, "dst", 0), want, "{what}: after a second crash");
    }
}

/// Direct writes to the destination (and a delete) between forwarded batches: after a crash the
/// destination's content (seq → data) is exactly what it was, once forwarding settles. After a
/// power loss that holds for an `fsync` destination; a `memory` or `disk` one may lose its
/// direct writes, but still holds every copy exactly once, in order.
#[tokio::test]
async fn interleaved_direct_writes_keep_their_seqs_across_a_crash() {
    for (i, (how, src, dst)) in matrix().into_iter().enumerate() {
        let ends_with_copies = i.is_multiple_of(2);
        let what = format!("{how:?} src {src:?} dst {dst:?} copies last: {ends_with_copies}");
        let d = Disk::new();
        let clock = Arc::new(ManualClock::new(1_000));
        let e = open(&d, &clock);
        let start = setup(&e, src, dst, guarantee(i + 1)).await;
        let mut forwarded = 0;
        for round in 0..8 {
            let k = 1 + round % 4;
            write(&e, "src", &datas(&format!("s{round}"), 0, k)).await;
            forwarded += k as u64;
            settle(&e, "r", "dst", forwarded, &what).await;
            if i % 3 == 1 && round % 3 == 2 {
                // A checkpoint over unlogged copies, in some runs.
                e.checkpoint().expect("checkpoint");
            }
            if round == 7 && ends_with_copies {
                break;
            }
            write(&e, "dst", &datas(&format!("d{round}"), 0, 1 + round % 3)).await;
            if round == 4 {
                // A delete is a logged change too: the copies before it are logged with it.
                let spec = DeleteSpec {
                    before_seq: Some(4),
                    tag: None,
                };
                e.topic_delete_records("dst", &spec).await.unwrap();
            }
        }
        let before = read(&e, "dst", 0);
        let dst_head = head(&e, "dst");
        let source = as_copies(&read(&e, "src", 0), start);
        crash(&d, e, how);

        let e = open(&d, &clock);
        settle(&e, "r", "dst", forwarded, &what).await;
        let after = read(&e, "dst", 0);
        if how == Crash::Process || dst == Durability::Fsync {
            assert_eq!(after, before, "{what}: the destination changed");
            assert_eq!(head(&e, "dst"), dst_head, "{what}");
            continue;
        }
        // The copies in `after` (the direct writes' data start with "d"): each source record
        // once, in order, except those the delete took (the first two, if it survived).
        let copies: Vec<&String> = after
            .iter()
            .map(|(_, d)| d)
            .filter(|d| d.starts_with("\"s"))
            .collect();
        let want: Vec<&String> = source.iter().map(|(_, d)| d).collect();
        assert!(
            want.ends_with(&copies) && copies.len() + 2 >= want.len(),
            "{what}: copies {copies:?}, source {want:?}"
        );
        let seqs: Vec<u64> = after.iter().map(|r| r.0).collect();
        assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{what}: {after:?}");
    }
}

/// Write `n` records to `src` in batches of `batch` on a thread of its own, then crash from that
/// thread right after the last acknowledgement, while forwarding may be in the middle of a step.
/// What forwarding had counted at the crash comes back.
fn write_then_crash(
    d: Arc<Disk>,
    e: Engine,
    (n, batch): (usize, usize),
    how: Crash,
) -> tokio::sync::oneshot::Receiver<u64> {
    on_thread(move || async move {
        let mut acked = 0;
        while acked < n {
            let k = batch.min(n - acked);
            write(&e, "src", &datas("w", acked, k)).await;
            acked += k;
        }
        let copied = e.router_get("r").map_or(0, |r| r.forwarded_total);
        crash(&d, e, how);
        copied
    })
}

/// 2000 records written to an `fsync` source while the router forwards (and, in one variant,
/// while checkpoints run back to back), then a crash at once, racing the forwarding of the last
/// ones: once forwarding settles after recovery, the destination is the source exactly.
#[tokio::test]
async fn a_forwarding_burst_racing_a_crash_neither_loses_nor_duplicates() {
    const N: usize = 2000;
    let mut i = 0;
    for how in CRASHES {
        for dst in CLASSES {
            for checkpoints in [false, true] {
                i += 1;
                let what = format!("{how:?} dst {dst:?} checkpoints: {checkpoints}");
                let d = Arc::new(Disk::new());
                let clock = Arc::new(ManualClock::new(1_000));
                let e = open(&d, &clock);
                let start = setup(&e, Durability::Fsync, dst, guarantee(i)).await;
                let stop = Arc::new(AtomicBool::new(false));
                let taken = Arc::new(AtomicU64::new(0));
                let checkpointer = checkpoints.then(|| {
                    let (e, stop, taken) = (e.clone(), stop.clone(), taken.clone());
                    std::thread::spawn(move || {
                        // After the crash the disk refuses: the checkpoint fails, and stops.
                        while !stop.load(Ordering::Relaxed) && e.checkpoint().is_ok() {
                            taken.fetch_add(1, Ordering::Relaxed);
                        }
                    })
                });
                while checkpoints && taken.load(Ordering::Relaxed) == 0 {
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
                // This thread's runtime runs the forwarding task meanwhile.
                let copied = write_then_crash(d.clone(), e.clone(), (N, 50), how)
                    .await
                    .expect("the writer");
                drop(e);
                stop.store(true, Ordering::Relaxed);
                if let Some(c) = checkpointer {
                    c.join().expect("the checkpointer");
                }

                let e = open(&d, &clock);
                let durable = e.router_get("r").unwrap().forwarded_total;
                let source = read(&e, "src", 0);
                let want = as_copies(&source, start);
                assert_eq!(want.len(), N, "{what}: acknowledged fsync writes survive");
                settle(&e, "r", "dst", N as u64, &what).await;
                let got = read(&e, "dst", 0);
                if got != want {
                    let first = got.iter().zip(&want).position(|(a, b)| a != b);
                    panic!(
                        "{what}: {copied} forwarded at the crash, {durable} after recovery; the \
                         dest has {} records, first difference at index {first:?}",
                        got.len()
                    );
                }
            }
        }
    }
}

/// Like the burst above, with a client writing to the destination meanwhile until the crash:
/// after recovery every acknowledged direct write is at the seqs it was acknowledged with (it
/// was logged with the copies before it), and the copies are the source's records exactly once,
/// in order. (After a power loss only an `fsync` destination must keep its direct writes.)
#[tokio::test]
async fn direct_writes_racing_forwarding_and_a_crash_keep_their_seqs() {
    const N: usize = 2000;
    for (i, (how, dst)) in CRASHES
        .into_iter()
        .flat_map(|h| CLASSES.map(|c| (h, c)))
        .enumerate()
    {
        let what = format!("{how:?} dst {dst:?}");
        let d = Arc::new(Disk::new());
        let clock = Arc::new(ManualClock::new(1_000));
        let e = open(&d, &clock);
        let start = setup(&e, Durability::Fsync, dst, guarantee(i)).await;
        let stop = Arc::new(AtomicBool::new(false));
        let writes = Arc::new(AtomicU64::new(0));
        let direct = {
            let (e, stop, writes) = (e.clone(), stop.clone(), writes.clone());
            on_thread(move || async move {
                let (mut acked, mut k) = (Vec::new(), 0);
                while !stop.load(Ordering::Relaxed) {
                    let batch = datas("x", k, 1 + k % 3);
                    k += batch.len();
                    match e.topic_write("dst", put(&batch)).await {
                        Ok(w) => acked.extend((w.first_seq..).zip(batch)),
                        // The crash: this batch may or may not be stored.
                        Err(_) => return (acked, batch),
                    }
                    writes.fetch_add(1, Ordering::Relaxed);
                }
                (acked, Vec::new())
            })
        };
        while writes.load(Ordering::Relaxed) == 0 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        write_then_crash(d.clone(), e.clone(), (N, 5), how)
            .await
            .unwrap();
        stop.store(true, Ordering::Relaxed);
        let (acked, in_flight) = direct.await.expect("the direct writer");
        drop(e);
        assert!(!acked.is_empty(), "{what}: direct writes happened");

        let e = open(&d, &clock);
        let want = as_copies(&read(&e, "src", 0), start);
        assert_eq!(want.len(), N, "{what}: acknowledged fsync writes survive");
        settle(&e, "r", "dst", N as u64, &what).await;
        let got = read(&e, "dst", 0);
        assert!(got.windows(2).all(|w| w[0].0 < w[1].0), "{what}");
        let (direct, copies): (Vec<_>, Vec<_>) = got.iter().partition(|r| r.1.starts_with("\"x"));
        let copies: Vec<&String> = copies.iter().map(|r| &r.1).collect();
        let want: Vec<&String> = want.iter().map(|r| &r.1).collect();
        assert!(
            copies == want,
            "{what}: {} copies of {N} source records",
            copies.len()
        );
        let mut stored: Vec<(u64, String)> = direct.into_iter().cloned().collect();
        let extra = stored.len().saturating_sub(acked.len());
        if how == Crash::Process || dst == Durability::Fsync {
            // Exactly the acknowledged ones at their seqs, then perhaps the one in flight.
            assert_eq!(stored[..acked.len().min(stored.len())], acked[..], "{what}");
            assert!(
                extra == 0 || extra == in_flight.len(),
                "{what}: {extra} extra"
            );
        } else {
            stored.truncate(acked.len());
            let data: Vec<&String> = stored.iter().map(|r| &r.1).collect();
            let prefix: Vec<&String> = acked.iter().map(|r| &r.1).take(data.len()).collect();
            assert_eq!(data, prefix, "{what}: direct writes in order, once");
        }
    }
}

/// Router definitions, `forwarded_total`, router deletes and topic removals survive restarts;
/// a deleted router does not come back, and one re-created starts at the source's head.
#[tokio::test]
async fn router_definitions_deletes_and_removals_survive_restarts() {
    let d = Disk::new();
    let clock = Arc::new(ManualClock::new(1_000));
    let e = open(&d, &clock);
    for t in ["src", "a", "b", "c"] {
        e.topic_put(t, cfg(Durability::Fsync)).await.unwrap();
    }
    let ra = def("src", "a", Guarantee::AtLeastOnce);
    let mut rb = def("src", "b", Guarantee::ExactlyOnce);
    rb.filter = Some(TagMatch::Prefix("k".into()));
    rb.preserve_tag = false;
    let rc = def("a", "c", Guarantee::AtLeastOnce);
    for (name, def) in [("r-a", &ra), ("r-b", &rb), ("r-c", &rc)] {
        assert!(e.router_put(name, def.clone()).await.unwrap().created);
    }
    let tagged = |from: usize, n: usize| -> Vec<NewRecord> {
        (from..from + n)
            .map(|i| {
                let tag = if i.is_multiple_of(2) { "k1" } else { "x" };
                rec(&format!("{i}"), Some(tag), None)
            })
            .collect()
    };
    let put = |recs: Vec<NewRecord>| TopicWrite {
        records: recs,
        idempotency_key: None,
        create: None,
    };
    e.topic_write("src", put(tagged(0, 10))).await.unwrap();
    settle(&e, "r-a", "a", 10, "first").await;
    settle(&e, "r-b", "b", 5, "first").await;
    settle(&e, "r-c", "c", 10, "first").await;
    assert!(e.router_delete("r-b").await.unwrap());
    assert!(!e.router_delete("r-b").await.unwrap(), "deleted once");
    let b_before = read(&e, "b", 0);
    assert_eq!(
        b_before.iter().map(|r| r.1.as_str()).collect::<Vec<_>>(),
        ["0", "2", "4", "6", "8"]
    );
    crash(&d, e, Crash::Process);

    let e = open(&d, &clock);
    let names = |e: &Engine| -> Vec<String> {
        let (list, more) = e.router_list("", None, None, None, 100);
        assert!(!more);
        list.into_iter().map(|r| r.name).collect()
    };
    assert_eq!(names(&e), ["r-a", "r-c"]);
    assert_eq!(
        e.router_get("r-b").unwrap_err(),
        EngineError::RouterNotFound
    );
    // `forwarded_total` is that of the durable cursor until forwarding catches up again.
    assert_eq!(e.router_get("r-a").unwrap().def, ra);
    assert_eq!(e.router_get("r-c").unwrap().def, rc);
    settle(&e, "r-a", "a", 10, "after a crash").await;
    settle(&e, "r-c", "c", 10, "after a crash").await;
    // The deleted router forwards nothing more.
    e.topic_write("src", put(tagged(10, 2))).await.unwrap();
    settle(&e, "r-c", "c", 12, "after the delete").await;
    assert_eq!(read(&e, "b", 0), b_before, "r-b is gone");

    let removed = e.topic_remove("c", false).await.unwrap();
    assert!(removed.existed);
    assert_eq!(removed.routers_removed, ["r-c"]);
    crash(&d, e, Crash::Power);

    let e = open(&d, &clock);
    assert_eq!(names(&e), ["r-a"]);
    assert!(matches!(
        e.topic_info("c", false),
        Err(EngineError::NotFound)
    ));
    assert_eq!(
        e.router_get("r-c").unwrap_err(),
        EngineError::RouterNotFound
    );
    settle(&e, "r-a", "a", 12, "after a power loss").await;
    e.topic_write("src", put(tagged(12, 4))).await.unwrap();
    settle(&e, "r-a", "a", 16, "after the removal").await;
    // Re-created: it starts at the source's head (16), not where it was.
    let again = e.router_put("r-b", rb.clone()).await.unwrap();
    assert!(again.created);
    assert_eq!(again.info.forwarded_total, 0);
    e.topic_write("src", put(tagged(16, 6))).await.unwrap();
    settle(&e, "r-b", "b", 3, "re-created").await;
    settle(&e, "r-a", "a", 22, "re-created").await;
    let mut b_want = b_before.clone();
    b_want.extend([(6, "16".into()), (7, "18".into()), (8, "20".into())]);
    assert_eq!(read(&e, "b", 0), b_want);
    crash(&d, e, Crash::Process);

    let e = open(&d, &clock);
    assert_eq!(names(&e), ["r-a", "r-b"]);
    settle(&e, "r-b", "b", 3, "re-created, after a crash").await;
    settle(&e, "r-a", "a", 22, "after a crash").await;
    assert_eq!(read(&e, "b", 0), b_want);
    let want_a: Vec<(u64, String)> = (0..22).map(|i| (i + 1, i.to_string())).collect();
    assert_eq!(read(&e, "a", 0), want_a);
    // Removing the source removes both; the destinations stay, with their records.
    let mut removed = e.topic_remove("src", false).await.unwrap().routers_removed;
    removed.sort();
    assert_eq!(removed, ["r-a", "r-b"]);
    crash(&d, e, Crash::Power);

    let e = open(&d, &clock);
    assert!(names(&e).is_empty());
    assert_eq!(read(&e, "a", 0), want_a);
    assert_eq!(read(&e, "b", 0), b_want);
}

/// An `exactly_once` router's copies carry `meta._topics_router.idempotency_key`, distinct per
/// source record (next to the record's own meta), and the same after a crash re-forwards them.
#[tokio::test]
async fn exactly_once_keys_are_distinct_and_survive_a_crash() {
    for how in CRASHES {
        for dst in CLASSES {
            let what = format!("{how:?} dst {dst:?}");
            let d = Disk::new();
            let clock = Arc::new(ManualClock::new(1_000));
            let e = open(&d, &clock);
            let start = setup(&e, Durability::Fsync, dst, Guarantee::ExactlyOnce).await;
            let w = |from: usize| TopicWrite {
                records: (from..from + 10)
                    .map(|i| {
                        let meta = (!i.is_multiple_of(3)).then(|| format!("{{\"m\":{i}}}"));
                        rec(&i.to_string(), None, meta.as_deref())
                    })
                    .collect(),
                idempotency_key: None,
                create: None,
            };
            e.topic_write("src", w(0)).await.unwrap();
            e.topic_write("src", w(10)).await.unwrap();
            settle(&e, "r", "dst", 20, &what).await;
            let before = read_meta(&e, "dst", 0);
            assert_eq!(before.len(), 20, "{what}");
            let mut keys = std::collections::HashSet::new();
            for (k, (seq, data, meta)) in before.iter().enumerate() {
                let meta: Value = serde_json::from_str(meta.as_deref().expect("a meta"))
                    .unwrap_or_else(|e| panic!("{what}: meta of {seq} is JSON: {e}"));
                let key = meta["_topics_router"]["idempotency_key"].as_str();
                assert_eq!(key, Some(format!("r:{}", start + 1 + k as u64).as_str()));
                assert!(
                    keys.insert(key.unwrap().to_string()),
                    "{what}: {key:?} twice"
                );
                if !k.is_multiple_of(3) {
                    assert_eq!(meta["m"], k, "{what}: the record's own meta is kept");
                }
                assert_eq!(data, &k.to_string(), "{what}");
            }
            crash(&d, e, how);

            let e = open(&d, &clock);
            settle(&e, "r", "dst", 20, &what).await;
            assert_eq!(read_meta(&e, "dst", 0), before, "{what}: the same copies");
            e.topic_write("src", w(20)).await.unwrap();
            settle(&e, "r", "dst", 30, &what).await;
            let after = read_meta(&e, "dst", 0);
            assert_eq!(after[..20], before[..], "{what}");
            for (k, (_, _, meta)) in after.iter().enumerate().skip(20) {
                let meta: Value = serde_json::from_str(meta.as_deref().unwrap()).unwrap();
                let key = meta["_topics_router"]["idempotency_key"].as_str().unwrap();
                assert_eq!(key, format!("r:{}", start + 1 + k as u64), "{what}");
            }
            // An at-least-once router stamps nothing.
            e.topic_put("plain", cfg(dst)).await.unwrap();
            let plain = def("src", "plain", Guarantee::AtLeastOnce);
            e.router_put("p", plain).await.unwrap();
            e.topic_write("src", w(30)).await.unwrap();
            settle(&e, "p", "plain", 10, &what).await;
            for (k, (_, _, meta)) in read_meta(&e, "plain", 0).iter().enumerate() {
                let i = 30 + k;
                let want = (!i.is_multiple_of(3)).then(|| format!("{{\"m\":{i}}}"));
                assert_eq!(meta, &want, "{what}");
            }
        }
    }
}

/// Changing a router while its source is written (another definition, or another
/// destination and back) neither copies a source record twice nor skips one: a new
/// definition keeps the progress the router has under the destination's lock, and a router
/// moved elsewhere goes on from where it got.
#[tokio::test]
async fn router_changes_racing_writes_copy_each_record_once() {
    const N: usize = 600;
    for move_dest in [false, true] {
        let d = Arc::new(Disk::new());
        let clock = Arc::new(ManualClock::new(1_000_000));
        let e = open(&d, &clock);
        for t in ["src", "d1", "d2"] {
            e.topic_put(t, cfg(Durability::Disk)).await.unwrap();
        }
        e.router_put("r", def("src", "d1", Guarantee::ExactlyOnce))
            .await
            .unwrap();
        let writer = {
            let e = e.clone();
            on_thread(move || async move {
                let mut i = 0;
                while i < N {
                    write(&e, "src", &datas("w", i, 10)).await;
                    i += 10;
                }
            })
        };
        let mut flips = 0;
        let mut writer = writer;
        loop {
            flips += 1;
            let mut next = def("src", "d1", Guarantee::ExactlyOnce);
            if move_dest && flips % 2 == 1 {
                next.dest = "d2".into();
            } else {
                next.preserve_tag = flips % 2 == 1;
            }
            e.router_put("r", next).await.unwrap();
            tokio::time::sleep(Duration::from_millis(1)).await;
            if let Ok(()) = writer.try_recv() {
                break;
            }
        }
        // Settle on d1 with a last definition, then compare every copy with the source.
        e.router_put("r", def("src", "d1", Guarantee::ExactlyOnce))
            .await
            .unwrap();
        let source: Vec<String> = read(&e, "src", 0).into_iter().map(|r| r.1).collect();
        assert_eq!(source.len(), N);
        wait_for(|| head(&e, "d1") + head(&e, "d2") >= N as u64).await;
        tokio::time::sleep(Duration::from_millis(50)).await;
        let mut copies: Vec<String> = ["d1", "d2"]
            .iter()
            .flat_map(|t| read(&e, t, 0).into_iter().map(|r| r.1))
            .collect();
        copies.sort();
        let mut want = source.clone();
        want.sort();
        assert_eq!(
            copies.len(),
            N,
            "move_dest={move_dest}, {flips} changes: {} copies of {N}",
            copies.len()
        );
        assert_eq!(copies, want, "move_dest={move_dest}: each record once");
        if !move_dest {
            let d1: Vec<String> = read(&e, "d1", 0).into_iter().map(|r| r.1).collect();
            assert_eq!(d1, source, "in source order");
        }
    }
}
