//! Expiry (sliding TTLs, absolute deadlines, sweeping, re-creation), waiting for changes, and
//! the read path's chunking and bounds.

use bytes::Bytes;
use riffle_engine::wal::{Dir, MemDir};
use riffle_engine::{
    AppendRequest, AppendStatus, CreateSpec, Durability, Engine, EngineConfig, EngineError, Expiry,
    ForkSpec, Framing, LogHandle, ManualClock, Payload, ProducerClaim, ReadFrom, StorageConfig,
};
use std::sync::Arc;
use std::time::Duration;
use tokio::time::timeout;

/// Long enough for any wake-up that is due; the tests never wait this long when all is well.
const WAKE: Duration = Duration::from_secs(10);
/// How long to watch for a wake-up that must not come.
const QUIET: Duration = Duration::from_millis(50);

fn engine() -> (Engine, Arc<ManualClock>) {
    let clock = Arc::new(ManualClock::new(1_000_000));
    (Engine::new(EngineConfig::default(), clock.clone()), clock)
}

fn spec(expiry: Option<Expiry>) -> CreateSpec {
    CreateSpec {
        content_type: Some(("text/plain".into(), Framing::Bytes)),
        expiry,
        closed: false,
        initial: Payload::default(),
        fork: None,
        durability: None,
    }
}

fn ttl(secs: u64) -> Option<Expiry> {
    Some(Expiry::Ttl { secs })
}

/// Expires at `unix_ms` (the manual clock starts at 1,000,000).
fn at(unix_ms: i64) -> Option<Expiry> {
    Some(Expiry::At {
        unix_ms,
        text: unix_ms.to_string(),
    })
}

fn data(d: &[u8]) -> AppendRequest {
    AppendRequest {
        payload: Payload {
            data: Bytes::copy_from_slice(d),
            messages: 1,
        },
        ..Default::default()
    }
}

fn close_only() -> AppendRequest {
    AppendRequest {
        close: true,
        ..Default::default()
    }
}

fn fork_of(source: &str) -> CreateSpec {
    CreateSpec {
        content_type: None,
        fork: Some(ForkSpec {
            source: source.into(),
            offset: None,
            sub: 0,
        }),
        ..spec(None)
    }
}

async fn wakes(h: &mut LogHandle) -> bool {
    timeout(WAKE, h.changed()).await.is_ok()
}

async fn stays_quiet(h: &mut LogHandle) -> bool {
    timeout(QUIET, h.changed()).await.is_err()
}

#[tokio::test]
async fn ttl_slides_on_open_and_append_but_not_on_info() {
    let (e, clock) = engine();
    e.create("info", spec(ttl(10))).await.unwrap();
    e.create("open", spec(ttl(10))).await.unwrap();
    e.create("append", spec(ttl(10))).await.unwrap();
    e.create("touch", spec(ttl(10))).await.unwrap();
    clock.advance_ms(9_000);
    e.info("info").unwrap();
    let held = e.open("open").unwrap();
    e.append("append", data(b"x")).await.unwrap();
    let touch = e.open("touch").unwrap();
    clock.advance_ms(999);
    touch.touch();
    drop(touch);
    clock.advance_ms(1);
    // 10 s after creation: only the log that was merely looked at is gone.
    assert_eq!(e.info("info").unwrap_err(), EngineError::NotFound);
    assert_eq!(e.open("info").err().unwrap(), EngineError::NotFound);
    // The others were used 1 s ago.
    for name in ["open", "append", "touch"] {
        e.info(name).unwrap();
    }
    clock.advance_ms(8_999);
    for name in ["open", "append"] {
        e.info(name).unwrap();
    }
    clock.advance_ms(1);
    assert_eq!(e.info("append").unwrap_err(), EngineError::NotFound);
    // The touched one was used 999 ms later.
    e.info("touch").unwrap();
    clock.advance_ms(998);
    e.info("touch").unwrap();
    clock.advance_ms(1);
    assert_eq!(e.info("touch").unwrap_err(), EngineError::NotFound);
    // A handle still held is a live reader still there: that log does not expire...
    clock.advance_ms(60_000);
    e.info("open").unwrap();
    assert_eq!(held.read(ReadFrom::Start, 100).unwrap().next, 0);
    // ... and its idle clock starts when the reader goes.
    drop(held);
    clock.advance_ms(9_999);
    e.info("open").unwrap();
    clock.advance_ms(1);
    assert_eq!(e.info("open").unwrap_err(), EngineError::NotFound);
    assert_eq!(e.log_count(), 0);
}

/// A handle opened before expiry reads nothing of a log that expired meanwhile (an absolute
/// deadline: held handles do not stop it).
#[tokio::test]
async fn a_held_handle_reads_nothing_of_an_expired_log() {
    let (e, clock) = engine();
    let at = 1_000_000 + 10_000;
    e.create(
        "at",
        spec(Some(Expiry::At {
            unix_ms: at,
            text: "t".into(),
        })),
    )
    .await
    .unwrap();
    let held = e.open("at").unwrap();
    clock.advance_ms(10_000);
    assert_eq!(e.info("at").unwrap_err(), EngineError::NotFound);
    assert_eq!(
        held.read(ReadFrom::Start, 100).unwrap_err(),
        EngineError::NotFound
    );
}

/// A graceful stop keeps each idle clock: the downtime counts as idle, so a stream whose TTL
/// ran out while the server was down is gone after the restart. After a crash the clock
/// starts again at the restart (reads since the last checkpoint are not in it, and a stream
/// must never expire early).
#[tokio::test]
async fn idle_clocks_go_on_across_a_graceful_stop_and_restart_after_a_crash() {
    let dir: Arc<dyn Dir> = Arc::new(MemDir::new());
    let config = EngineConfig {
        default_durability: Durability::Fsync,
        ..EngineConfig::default()
    };
    let open = |now_ms: i64| {
        let storage = StorageConfig::new(dir.clone());
        Engine::recover(config, Arc::new(ManualClock::new(now_ms)), storage)
            .unwrap()
            .0
    };
    let e = open(1_000_000);
    e.create("idle", spec(ttl(10))).await.unwrap();
    e.create("busy", spec(ttl(10))).await.unwrap();
    e.append("busy", data(b"x")).await.unwrap();
    e.close().unwrap();
    drop(e);

    // 20 s later: down for longer than the TTL.
    let e = open(1_020_000);
    assert_eq!(e.info("idle").unwrap_err(), EngineError::NotFound);
    assert_eq!(e.info("busy").unwrap_err(), EngineError::NotFound);
    e.create("c", spec(ttl(10))).await.unwrap();
    drop(e); // no graceful stop

    let e = open(1_040_000);
    assert!(
        e.info("c").is_ok(),
        "after a crash the idle clock starts again"
    );
}

#[tokio::test]
async fn expiry_on_append_and_delete_paths() {
    let (e, clock) = engine();
    e.create("a", spec(ttl(1))).await.unwrap();
    e.create("d", spec(ttl(1))).await.unwrap();
    clock.advance_ms(1_000);
    assert_eq!(
        e.append("a", data(b"x")).await.unwrap_err(),
        EngineError::NotFound
    );
    assert_eq!(e.delete("d").await.unwrap_err(), EngineError::NotFound);
    assert_eq!(e.log_count(), 0);
}

#[tokio::test]
async fn expires_at_is_absolute() {
    let (e, clock) = engine();
    let at = Expiry::At {
        unix_ms: 1_005_000,
        text: "Thu, 01 Jan 1970 00:16:45 GMT".into(),
    };
    let created = e.create("s", spec(Some(at.clone()))).await.unwrap();
    assert_eq!(created.info.expiry, Some(at.clone()));
    assert_eq!(e.info("s").unwrap().expiry, Some(at));
    clock.advance_ms(4_000);
    e.open("s").unwrap();
    e.append("s", data(b"x")).await.unwrap();
    clock.advance_ms(999);
    e.info("s").unwrap();
    clock.advance_ms(1);
    assert_eq!(e.info("s").unwrap_err(), EngineError::NotFound);
}

#[tokio::test]
async fn recreate_after_expiry_is_a_fresh_log() {
    let (e, clock) = engine();
    let first = e
        .create(
            "s",
            CreateSpec {
                initial: Payload {
                    data: "abc".into(),
                    messages: 1,
                },
                // An absolute deadline: a held handle (`old`) would keep a TTL alive.
                ..spec(at(1_005_000))
            },
        )
        .await
        .unwrap();
    e.append(
        "s",
        AppendRequest {
            producer: Some(ProducerClaim {
                id: "p".into(),
                epoch: 3,
                seq: 0,
            }),
            stream_seq: Some("9".into()),
            close: true,
            ..data(b"def")
        },
    )
    .await
    .unwrap();
    let old = e.open("s").unwrap();
    clock.advance_ms(5_000);

    // A create after expiry creates anew.
    let second = e.create("s", spec(at(1_010_000))).await.unwrap();
    assert!(second.created);
    assert_ne!(second.info.id, first.info.id);
    assert_eq!(second.info.next, 0);
    assert!(!second.info.closed);
    let batch = e.open("s").unwrap().read(ReadFrom::Start, 100).unwrap();
    assert!(batch.chunks.concat().is_empty());
    assert!(batch.up_to_date && !batch.closed);
    // No producer or Stream-Seq state carried over.
    let a = e
        .append(
            "s",
            AppendRequest {
                producer: Some(ProducerClaim {
                    id: "p".into(),
                    epoch: 0,
                    seq: 0,
                }),
                stream_seq: Some("1".into()),
                ..data(b"x")
            },
        )
        .await
        .unwrap();
    assert_eq!(a.status, AppendStatus::Written);
    assert_eq!(a.next, 1);
    // The old handle belongs to the old incarnation.
    assert_eq!(
        old.read(ReadFrom::Start, 100).unwrap_err(),
        EngineError::NotFound
    );
    assert_eq!(old.info().id, first.info.id);

    // After expiry the name may also be created with another configuration.
    clock.advance_ms(5_000);
    let third = e
        .create(
            "s",
            CreateSpec {
                content_type: Some(("application/json".into(), Framing::JsonMessages)),
                ..spec(None)
            },
        )
        .await
        .unwrap();
    assert!(third.created);
    assert_ne!(third.info.id, second.info.id);
    assert_eq!(third.info.framing, Framing::JsonMessages);
}

#[tokio::test]
async fn sweep_expired_removes_what_nobody_touches() {
    let (e, clock) = engine();
    let with_data = |expiry| CreateSpec {
        initial: Payload {
            data: "0123456789".into(),
            messages: 1,
        },
        ..spec(expiry)
    };
    // What each log holds (its structures and its 10-byte record), counted as it is made.
    let mut cost = std::collections::HashMap::new();
    for (name, expiry) in [
        ("short", ttl(1)),
        ("long", ttl(100)),
        ("forever", None),
        (
            "deadline",
            Some(Expiry::At {
                unix_ms: 1_002_000,
                text: "t".into(),
            }),
        ),
        ("referenced", ttl(1)),
    ] {
        let before = e.memory_used();
        e.create(name, with_data(expiry)).await.unwrap();
        cost.insert(name, e.memory_used() - before);
    }
    e.create("fork", fork_of("referenced")).await.unwrap();
    e.append("fork", data(b"x")).await.unwrap();
    assert_eq!(e.sweep_expired(), 0);
    assert!(
        cost.values().all(|&c| c > 10),
        "a log costs more than its bytes"
    );

    clock.advance_ms(1_000);
    // "short", "referenced" and "fork" (which inherited the 1 s TTL).
    assert_eq!(e.sweep_expired(), 3);
    assert_eq!(e.log_count(), 3);
    assert_eq!(
        e.memory_used(),
        cost["long"] + cost["forever"] + cost["deadline"]
    );
    assert_eq!(e.info("short").unwrap_err(), EngineError::NotFound);
    assert_eq!(e.info("referenced").unwrap_err(), EngineError::NotFound);
    assert_eq!(e.info("fork").unwrap_err(), EngineError::NotFound);
    assert_eq!(e.sweep_expired(), 0);

    clock.advance_ms(1_000);
    assert_eq!(e.sweep_expired(), 1);
    assert_eq!(e.info("deadline").unwrap_err(), EngineError::NotFound);
    e.info("long").unwrap();
    e.info("forever").unwrap();
    assert_eq!(e.memory_used(), cost["long"] + cost["forever"]);
}

#[tokio::test]
async fn sweep_soft_deletes_a_referenced_source() {
    let (e, clock) = engine();
    e.create("src", spec(ttl(1))).await.unwrap();
    e.append("src", data(b"abc")).await.unwrap();
    e.create(
        "fork",
        CreateSpec {
            expiry: ttl(100),
            ..fork_of("src")
        },
    )
    .await
    .unwrap();
    clock.advance_ms(1_000);
    assert_eq!(e.sweep_expired(), 1);
    assert_eq!(e.log_count(), 2);
    assert_eq!(e.info("src").unwrap_err(), EngineError::Gone);
    assert_eq!(e.sweep_expired(), 0);
    let batch = e.open("fork").unwrap().read(ReadFrom::Start, 100).unwrap();
    assert_eq!(batch.chunks.concat(), b"abc");
    clock.advance_ms(100_000);
    assert_eq!(e.sweep_expired(), 1);
    assert_eq!(e.log_count(), 0);
    assert_eq!(e.memory_used(), 0);
}

#[tokio::test]
async fn changed_wakes_on_append() {
    let (e, _) = engine();
    e.create("s", spec(None)).await.unwrap();
    let mut h = e.open("s").unwrap();
    assert!(stays_quiet(&mut h).await);

    // A waiter that is already waiting.
    let waiter = tokio::spawn(async move {
        h.changed().await;
        h.read(ReadFrom::Start, 100).unwrap().chunks.concat()
    });
    tokio::task::yield_now().await;
    e.append("s", data(b"abc")).await.unwrap();
    let seen = timeout(WAKE, waiter).await.expect("woken").unwrap();
    assert_eq!(seen, b"abc");

    // A change between open and wait is not lost.
    let mut h = e.open("s").unwrap();
    e.append("s", data(b"d")).await.unwrap();
    assert!(wakes(&mut h).await);
    // Seen once: no further wake-up without a change.
    assert!(stays_quiet(&mut h).await);
    e.append("s", data(b"e")).await.unwrap();
    assert!(wakes(&mut h).await);
    let batch = h.read(ReadFrom::At(3), 100).unwrap();
    assert_eq!(batch.chunks.concat(), b"de");
}

#[tokio::test]
async fn changed_wakes_on_close() {
    let (e, _) = engine();
    e.create("s", spec(None)).await.unwrap();
    e.append("s", data(b"abc")).await.unwrap();
    let mut h = e.open("s").unwrap();
    let waiter = tokio::spawn(async move {
        h.changed().await;
        let batch = h.read(ReadFrom::Tail, 100).unwrap();
        (batch.closed, batch.next)
    });
    tokio::task::yield_now().await;
    e.append("s", close_only()).await.unwrap();
    let (closed, next) = timeout(WAKE, waiter).await.expect("woken").unwrap();
    assert!(closed);
    assert_eq!(next, 3);

    // A close that changes nothing wakes nobody.
    let mut h = e.open("s").unwrap();
    let a = e.append("s", close_only()).await.unwrap();
    assert_eq!(a.status, AppendStatus::AlreadyClosed);
    assert!(stays_quiet(&mut h).await);
}

#[tokio::test]
async fn changed_wakes_on_delete() {
    let (e, _) = engine();
    e.create("s", spec(None)).await.unwrap();
    let mut h = e.open("s").unwrap();
    let waiter = tokio::spawn(async move {
        h.changed().await;
        h.read(ReadFrom::Start, 100).unwrap_err()
    });
    tokio::task::yield_now().await;
    e.delete("s").await.unwrap();
    let err = timeout(WAKE, waiter).await.expect("woken").unwrap();
    assert_eq!(err, EngineError::NotFound);

    // Re-created under the same name: a new log; the old handle stays on the old one.
    e.create("s", spec(None)).await.unwrap();
    let mut h2 = e.open("s").unwrap();
    e.append("s", data(b"new")).await.unwrap();
    assert!(wakes(&mut h2).await);
    assert_eq!(
        h2.read(ReadFrom::Start, 100).unwrap().chunks.concat(),
        b"new"
    );
}

#[tokio::test]
async fn changed_wakes_on_soft_delete_and_expiry() {
    let (e, clock) = engine();
    e.create("src", spec(ttl(10))).await.unwrap();
    e.create(
        "fork",
        CreateSpec {
            expiry: ttl(100),
            ..fork_of("src")
        },
    )
    .await
    .unwrap();
    // An absolute deadline: the waiting handle would keep a TTL alive.
    e.create("other", spec(at(1_010_000))).await.unwrap();

    let mut src = e.open("src").unwrap();
    e.delete("src").await.unwrap();
    assert!(wakes(&mut src).await);
    assert_eq!(
        src.read(ReadFrom::Start, 10).unwrap_err(),
        EngineError::Gone
    );

    let mut other = e.open("other").unwrap();
    clock.advance_ms(10_000);
    // Lazy expiry on lookup wakes the waiters.
    assert_eq!(e.info("other").unwrap_err(), EngineError::NotFound);
    assert!(wakes(&mut other).await);
    assert_eq!(
        other.read(ReadFrom::Start, 10).unwrap_err(),
        EngineError::NotFound
    );

    // The last fork's deletion collects the source: its waiters wake again.
    e.delete("fork").await.unwrap();
    assert!(wakes(&mut src).await);
    assert_eq!(
        src.read(ReadFrom::Start, 10).unwrap_err(),
        EngineError::NotFound
    );
}

#[tokio::test]
async fn changed_is_per_log() {
    let (e, _) = engine();
    e.create("a", spec(None)).await.unwrap();
    e.create("b", spec(None)).await.unwrap();
    e.append("a", data(b"x")).await.unwrap();
    e.create("fa", fork_of("a")).await.unwrap();
    let mut a = e.open("a").unwrap();
    let mut fa = e.open("fa").unwrap();
    let mut b = e.open("b").unwrap();

    e.append("b", data(b"1")).await.unwrap();
    assert!(wakes(&mut b).await);
    assert!(stays_quiet(&mut a).await);
    assert!(stays_quiet(&mut fa).await);

    e.append("fa", data(b"2")).await.unwrap();
    assert!(wakes(&mut fa).await);
    assert!(stays_quiet(&mut a).await);

    e.append("a", data(b"3")).await.unwrap();
    assert!(wakes(&mut a).await);
    assert!(stays_quiet(&mut fa).await);

    // Rejected appends change nothing and wake nobody.
    let err = e
        .append(
            "a",
            AppendRequest {
                content_type: Some("image/png".into()),
                ..data(b"4")
            },
        )
        .await
        .unwrap_err();
    assert!(matches!(err, EngineError::ContentTypeMismatch { .. }));
    assert!(stays_quiet(&mut a).await);

    e.delete("b").await.unwrap();
    assert!(wakes(&mut b).await);
    assert!(stays_quiet(&mut a).await);
}

#[tokio::test]
async fn read_on_a_deleted_log_is_not_found() {
    let (e, _) = engine();
    e.create("s", spec(None)).await.unwrap();
    e.append("s", data(b"abc")).await.unwrap();
    let h = e.open("s").unwrap();
    e.delete("s").await.unwrap();
    assert_eq!(
        h.read(ReadFrom::Start, 100).unwrap_err(),
        EngineError::NotFound
    );
    assert_eq!(
        h.read(ReadFrom::Tail, 100).unwrap_err(),
        EngineError::NotFound
    );
    assert_eq!(e.open("s").err().unwrap(), EngineError::NotFound);
    assert_eq!(e.delete("s").await.unwrap_err(), EngineError::NotFound);
}

#[tokio::test]
async fn reads_are_chunked_by_whole_records() {
    let (e, _) = engine();
    e.create("s", spec(None)).await.unwrap();
    for r in [&b"aaa"[..], b"bb", b"c", b"dddd"] {
        e.append("s", data(r)).await.unwrap();
    }
    let h = e.open("s").unwrap();

    let b = h.read(ReadFrom::Start, 1).unwrap();
    assert_eq!(b.chunks, [Bytes::from_static(b"aaa")]);
    assert_eq!((b.start, b.next), (0, 3));
    assert!(!b.up_to_date && !b.closed && !b.is_empty());
    assert_eq!(b.info.next, 10);

    // Zero still yields a record.
    let b = h.read(ReadFrom::Start, 0).unwrap();
    assert_eq!(b.chunks.concat(), b"aaa");

    let b = h.read(ReadFrom::At(3), 3).unwrap();
    assert_eq!(b.chunks.concat(), b"bbc");
    assert_eq!(b.next, 6);
    assert!(!b.up_to_date);

    // Four bytes: reaching the budget inside a record takes the whole record.
    let b = h.read(ReadFrom::At(3), 4).unwrap();
    assert_eq!(b.chunks.concat(), b"bbcdddd");
    assert!(b.up_to_date);

    // From inside a record: its rest counts as one record.
    let b = h.read(ReadFrom::At(1), 1).unwrap();
    assert_eq!(b.chunks.concat(), b"aa");
    assert_eq!(b.next, 3);

    let b = h.read(ReadFrom::At(6), 1).unwrap();
    assert_eq!(b.chunks.concat(), b"dddd");
    assert_eq!(b.next, 10);
    assert!(b.up_to_date);
    assert!(!b.closed);

    // Walking the log in small steps yields it whole.
    let mut pos = 0;
    let mut all = Vec::new();
    loop {
        let b = h.read(ReadFrom::At(pos), 2).unwrap();
        assert_eq!(b.byte_len() as u64, b.next - b.start);
        all.extend_from_slice(&b.chunks.concat());
        pos = b.next;
        if b.up_to_date {
            break;
        }
    }
    assert_eq!(all, b"aaabbcdddd");

    // Closed is reported only at the tail.
    e.append("s", close_only()).await.unwrap();
    let b = h.read(ReadFrom::Start, 1).unwrap();
    assert!(b.info.closed);
    assert!(!b.closed && !b.up_to_date);
    let b = h.read(ReadFrom::At(6), 1).unwrap();
    assert!(b.closed && b.up_to_date);
    let b = h.read(ReadFrom::Tail, 1).unwrap();
    assert!(b.closed && b.up_to_date && b.is_empty());
    assert_eq!(b.start, 10);
}

#[tokio::test]
async fn json_reads_end_at_message_boundaries() {
    let (e, _) = engine();
    e.create(
        "j",
        CreateSpec {
            content_type: Some(("application/json".into(), Framing::JsonMessages)),
            ..spec(None)
        },
    )
    .await
    .unwrap();
    for msgs in [
        &["1", "2"][..],
        &[r#"{"a":[1,2]}"#],
        &["\"x,y\"", "null", "3"],
    ] {
        let mut d = Vec::new();
        for m in msgs {
            d.extend_from_slice(m.as_bytes());
            d.push(b',');
        }
        e.append(
            "j",
            AppendRequest {
                payload: Payload {
                    data: d.into(),
                    messages: msgs.len() as u32,
                },
                ..Default::default()
            },
        )
        .await
        .unwrap();
    }
    let h = e.open("j").unwrap();
    let mut pos = 0;
    let mut all = Vec::new();
    loop {
        let b = h.read(ReadFrom::At(pos), 1).unwrap();
        for c in &b.chunks {
            assert_eq!(c.last(), Some(&b','));
        }
        all.extend_from_slice(&b.chunks.concat());
        pos = b.next;
        if b.up_to_date {
            break;
        }
    }
    assert_eq!(all, br#"1,2,{"a":[1,2]},"x,y",null,3,"#);
}

#[tokio::test]
async fn reads_beyond_the_tail_are_rejected() {
    let (e, _) = engine();
    e.create("s", spec(None)).await.unwrap();
    let h = e.open("s").unwrap();
    assert_eq!(
        h.read(ReadFrom::At(1), 10).unwrap_err(),
        EngineError::OffsetBeyondTail { offset: 1, tail: 0 }
    );
    e.append("s", data(b"abc")).await.unwrap();
    // The handle sees appends made after it was opened.
    let b = h.read(ReadFrom::At(1), 10).unwrap();
    assert_eq!(b.chunks.concat(), b"bc");
    let b = h.read(ReadFrom::At(3), 10).unwrap();
    assert!(b.is_empty() && b.up_to_date);
    assert_eq!(
        h.read(ReadFrom::At(4), 10).unwrap_err(),
        EngineError::OffsetBeyondTail { offset: 4, tail: 3 }
    );
    assert_eq!(
        h.read(ReadFrom::At(u64::MAX), 10).unwrap_err(),
        EngineError::OffsetBeyondTail {
            offset: u64::MAX,
            tail: 3
        }
    );
}

/// A capped read of a byte stream ends at its budget exactly, inside a record if need be, in
/// memory and from files (pending or flushed); a JSON stream's still ends between messages.
#[tokio::test]
async fn capped_reads_cut_byte_records_but_not_messages() {
    let dir: Arc<dyn Dir> = Arc::new(MemDir::new());
    let config = EngineConfig {
        default_durability: Durability::Fsync,
        ..EngineConfig::default()
    };
    let clock = Arc::new(ManualClock::new(1_000_000));
    let durable = Engine::recover(config, clock, StorageConfig::new(dir))
        .unwrap()
        .0;
    let (memory, _) = engine();
    for e in [memory, durable] {
        e.create("s", spec(None)).await.unwrap();
        for r in [&b"aaaaaa"[..], b"bb", b"cccccccccc"] {
            e.append("s", data(r)).await.unwrap();
        }
        let h = e.open("s").unwrap();
        let mut got = Vec::new();
        let mut at = 0;
        loop {
            let b = h.read_capped(ReadFrom::At(at), 4).unwrap();
            assert!(b.next - at <= 4, "{at} -> {}", b.next);
            got.extend_from_slice(&b.chunks.concat());
            at = b.next;
            if b.up_to_date {
                break;
            }
        }
        assert_eq!(got, b"aaaaaabbcccccccccc");
        assert_eq!(at, 18);
        // The uncapped read takes the whole record that reaches the budget.
        assert_eq!(h.read(ReadFrom::At(0), 4).unwrap().next, 6);

        let json = CreateSpec {
            content_type: Some(("application/json".into(), Framing::JsonMessages)),
            ..spec(None)
        };
        e.create("j", json).await.unwrap();
        e.append("j", data(br#""a long message","#)).await.unwrap();
        let b = e
            .open("j")
            .unwrap()
            .read_capped(ReadFrom::Start, 4)
            .unwrap();
        assert_eq!(b.chunks.concat(), br#""a long message","#);
    }
}
