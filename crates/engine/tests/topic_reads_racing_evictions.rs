//! Diff reads racing the writes that evict what they read. A read takes several steps (the
//! topic's view, then its records, in runs); a cap eviction landing between them must not make
//! the read skip records silently: every seq a read passes is either returned or inside its
//! tombstone. (Found as a router that stalled one seq short of its source's gap: it read past
//! an eviction without being told, so the gap never reached its destination.)

mod common;

use common::disk::Disk;
use common::routing::{cfg, datas, open, q, write};
use riffle_engine::topic::TopicConfig;
use riffle_engine::{Durability, ManualClock};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

/// Writes of `BATCH` records each: each evicts most of the one before (cap 3), so a reader
/// between two meets a gap.
const WRITES: usize = 1000;
const BATCH: usize = 8;
const RECORDS: u64 = (WRITES * BATCH) as u64;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_racing_evictions_reports_every_seq_it_passes() {
    for class in [Durability::Ephemeral, Durability::Memory, Durability::Disk] {
        let d = Disk::new();
        let clock = Arc::new(ManualClock::new(1_000_000));
        let e = open(&d, &clock);
        let topic = TopicConfig {
            cap_records: 3,
            ..cfg(class)
        };
        e.topic_put("t", topic).await.unwrap();
        let done = Arc::new(AtomicBool::new(false));
        // The reader runs on its own thread, beside the writer's task.
        let reader = {
            let (e, done) = (e.clone(), done.clone());
            std::thread::spawn(move || {
                let (mut from, mut reads, mut gaps) = (0u64, 0u64, 0u64);
                while !done.load(Ordering::Acquire) || from < RECORDS {
                    let d = e.topic_diff("t", &q(from)).expect("diff");
                    reads += 1;
                    // Every seq in (from, next] is a record returned or inside the tombstone.
                    let mut expect = from + 1;
                    if let Some(t) = &d.tombstone {
                        assert_eq!(t.gap_from, from + 1, "{class:?}: {t:?}");
                        assert!(t.missed_estimate >= 1, "{class:?}: {t:?}");
                        expect = t.gap_to + 1;
                        gaps += 1;
                    }
                    for r in &d.records {
                        assert_eq!(r.seq, expect, "{class:?}: read from {from} skipped a seq");
                        expect += 1;
                    }
                    assert_eq!(
                        d.next_from_seq,
                        expect - 1,
                        "{class:?}: read from {from} passed seqs it neither returned nor reported"
                    );
                    from = d.next_from_seq;
                }
                (reads, gaps)
            })
        };
        for i in 0..WRITES {
            write(&e, "t", &datas("r", i * BATCH, BATCH)).await;
        }
        done.store(true, Ordering::Release);
        let (reads, gaps) = reader.join().expect("the reader's checks hold");
        assert!(
            reads > 0 && gaps > 0,
            "{class:?}: {reads} reads, {gaps} gaps"
        );
    }
}
