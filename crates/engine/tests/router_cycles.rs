//! Routers in a cycle (`allow_cycle`): every record goes around at most the hop cap, also
//! when a crash interrupts forwarding.

mod common;

use common::disk::Disk;
use common::routing::*;
use riffle_engine::topic::router::Guarantee;
use riffle_engine::{Durability, ManualClock};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

/// Topics `A` and `B` of `class` with routers both ways (`ba` closing the cycle).
async fn cycle(e: &riffle_engine::Engine, class: Durability) {
    e.topic_put("A", cfg(class)).await.unwrap();
    e.topic_put("B", cfg(class)).await.unwrap();
    e.router_put("ab", def("A", "B", Guarantee::AtLeastOnce))
        .await
        .unwrap();
    let mut back = def("B", "A", Guarantee::AtLeastOnce);
    back.allow_cycle = true;
    e.router_put("ba", back).await.unwrap();
}

/// How often each value is in `t`.
fn counts(e: &riffle_engine::Engine, t: &str) -> BTreeMap<String, usize> {
    let mut m = BTreeMap::new();
    for (_, d) in read(e, t, 0) {
        *m.entry(d).or_insert(0) += 1;
    }
    m
}

#[tokio::test]
async fn a_cycle_copies_each_record_to_the_hop_cap_across_a_crash() {
    for crash_after in [0usize, 3, 7, 15, 40] {
        let d = Arc::new(Disk::new());
        let clock = Arc::new(ManualClock::new(1_000_000));
        let e = open(&d, &clock);
        cycle(&e, Durability::Disk).await;
        write(&e, "A", &datas("v", 0, 20)).await;
        // Let forwarding run a little, then crash in the middle of it.
        for _ in 0..crash_after {
            tokio::task::yield_now().await;
        }
        crash(&d, e, Crash::Process);
        let e = open(&d, &clock);
        // Settle: nothing changes for a while.
        let mut last = (0, 0);
        for _ in 0..200 {
            tokio::time::sleep(Duration::from_millis(10)).await;
            let now = (head(&e, "A"), head(&e, "B"));
            if now == last && now.0 > 0 {
                break;
            }
            last = now;
        }
        let (a, b) = (counts(&e, "A"), counts(&e, "B"));
        assert_eq!(a.len(), 20, "crash after {crash_after}: {a:?}");
        for (v, n) in &a {
            assert_eq!(*n, 5, "crash after {crash_after}: {v} in A (1 + 4 copies)");
        }
        for (v, n) in &b {
            assert_eq!(*n, 4, "crash after {crash_after}: {v} in B");
        }
    }
}

#[tokio::test]
async fn a_cycle_racing_writes_and_a_crash_copies_each_record_to_the_hop_cap() {
    for (round, class) in [Durability::Disk, Durability::Fsync, Durability::Disk]
        .into_iter()
        .enumerate()
    {
        let d = Arc::new(Disk::new());
        let clock = Arc::new(ManualClock::new(1_000_000));
        let e = open(&d, &clock);
        cycle(&e, class).await;
        let (d2, e2) = (d.clone(), e.clone());
        let done = on_thread(move || async move {
            let mut i = 0;
            while i < 200 {
                write(&e2, "A", &datas("v", i, 10)).await;
                i += 10;
            }
            crash(&d2, e2, Crash::Process);
        });
        drop(e);
        done.await.expect("writer");
        let e = open(&d, &clock);
        let mut last = (0, 0);
        for _ in 0..300 {
            tokio::time::sleep(Duration::from_millis(10)).await;
            let now = (head(&e, "A"), head(&e, "B"));
            if now == last && now.0 >= 200 {
                break;
            }
            last = now;
        }
        let (a, b) = (counts(&e, "A"), counts(&e, "B"));
        assert_eq!(a.len(), 200, "round {round}");
        let bad_a: Vec<_> = a.iter().filter(|(_, n)| **n != 5).collect();
        let bad_b: Vec<_> = b.iter().filter(|(_, n)| **n != 4).collect();
        assert!(
            bad_a.is_empty() && bad_b.is_empty(),
            "round {round} ({class:?}): A {bad_a:?} B {bad_b:?}"
        );
    }
}

/// Forwarding settled, then a crash: every topic comes back exactly as it was. The copies in a
/// middle topic are derived, lost with the crash and made again; a router reading from it
/// (in a chain, or around a cycle) meets a source behind its durable cursor meanwhile, and
/// must wait for it rather than read it from the start (it copied everything twice).
#[tokio::test]
async fn settled_chains_and_cycles_stay_as_they_were_across_a_crash() {
    for cycle in [true, false] {
        let d = Arc::new(Disk::new());
        let clock = Arc::new(ManualClock::new(1_000_000));
        let e = open(&d, &clock);
        for t in ["A", "B", "C"] {
            e.topic_put(t, cfg(Durability::Fsync)).await.unwrap();
        }
        e.router_put("ab", def("A", "B", Guarantee::AtLeastOnce))
            .await
            .unwrap();
        if cycle {
            let mut back = def("B", "A", Guarantee::AtLeastOnce);
            back.allow_cycle = true;
            e.router_put("ba", back).await.unwrap();
        } else {
            e.router_put("bc", def("B", "C", Guarantee::AtLeastOnce))
                .await
                .unwrap();
        }
        for i in 0..40 {
            write(&e, "A", &datas("v", i * 10, 10)).await;
            // Let forwarding go round between writes, as a slow client would.
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        let all = |e: &riffle_engine::Engine| ["A", "B", "C"].map(|t| read(e, t, 0));
        let settle = |e: riffle_engine::Engine| async move {
            let mut last = [0; 3];
            for _ in 0..300 {
                tokio::time::sleep(Duration::from_millis(10)).await;
                let now = ["A", "B", "C"].map(|t| head(&e, t));
                if now == last && now[0] >= 400 {
                    break;
                }
                last = now;
            }
            e
        };
        let e = settle(e).await;
        let before = all(&e);
        let expected = if cycle {
            [2000, 1600, 0]
        } else {
            [400, 400, 400]
        };
        assert_eq!(before.each_ref().map(Vec::len), expected, "cycle={cycle}");
        crash(&d, e, Crash::Process);
        let e = settle(open(&d, &clock)).await;
        let after = all(&e);
        assert_eq!(after.each_ref().map(Vec::len), expected, "cycle={cycle}");
        assert!(
            after == before,
            "cycle={cycle}: the same records at the same seqs"
        );
    }
}
