//! Append validation: producers, `Stream-Seq`, closure, content types, precedence between
//! the checks, limits, and the rule that a rejected append changes nothing.

use bytes::Bytes;
use riffle_engine::{
    AppendRequest, AppendStatus, CreateSpec, Durability, Engine, EngineConfig, EngineError,
    ForkSpec, Framing, ManualClock, Payload, ProducerAck, ProducerClaim, ReadFrom,
};
use std::sync::Arc;

const CT: &str = "text/plain";

fn engine_with(config: EngineConfig) -> Engine {
    Engine::new(config, Arc::new(ManualClock::new(1_000_000)))
}

fn engine() -> Engine {
    engine_with(EngineConfig::default())
}

fn spec() -> CreateSpec {
    CreateSpec {
        content_type: Some((CT.into(), Framing::Bytes)),
        expiry: None,
        closed: false,
        initial: Payload::default(),
        fork: None,
        durability: None,
    }
}

fn payload(data: &[u8]) -> Payload {
    Payload {
        data: Bytes::copy_from_slice(data),
        messages: 1,
    }
}

fn data(d: &[u8]) -> AppendRequest {
    AppendRequest {
        content_type: Some(CT.into()),
        payload: payload(d),
        ..Default::default()
    }
}

fn claim(id: &str, epoch: u64, seq: u64) -> Option<ProducerClaim> {
    Some(ProducerClaim {
        id: id.into(),
        epoch,
        seq,
    })
}

fn produced(d: &[u8], id: &str, epoch: u64, seq: u64) -> AppendRequest {
    AppendRequest {
        producer: claim(id, epoch, seq),
        ..data(d)
    }
}

fn close_only() -> AppendRequest {
    AppendRequest {
        close: true,
        ..Default::default()
    }
}

fn seq(d: &[u8], s: &str) -> AppendRequest {
    AppendRequest {
        stream_seq: Some(s.into()),
        ..data(d)
    }
}

fn ack(epoch: u64, seq: u64) -> Option<ProducerAck> {
    Some(ProducerAck { epoch, seq })
}

fn read_all(e: &Engine, name: &str) -> Vec<u8> {
    let batch = e
        .open(name)
        .unwrap()
        .read(ReadFrom::Start, usize::MAX)
        .unwrap();
    assert!(batch.up_to_date);
    batch.chunks.concat()
}

async fn new_log(e: &Engine, name: &str) {
    assert!(e.create(name, spec()).await.unwrap().created);
}

#[tokio::test]
async fn new_producer_starts_at_seq_zero() {
    let e = engine();
    new_log(&e, "s").await;
    let a = e.append("s", produced(b"abc", "p", 0, 0)).await.unwrap();
    assert_eq!(a.status, AppendStatus::Written);
    assert_eq!(a.next, 3);
    assert!(!a.closed);
    assert_eq!(a.producer, ack(0, 0));

    // A new producer may start at any epoch, but always at seq 0.
    let a = e.append("s", produced(b"d", "q", 7, 0)).await.unwrap();
    assert_eq!(a.producer, ack(7, 0));
    assert_eq!(a.next, 4);
    assert_eq!(read_all(&e, "s"), b"abcd");
}

#[tokio::test]
async fn unknown_producer_with_nonzero_seq_is_a_gap() {
    let e = engine();
    new_log(&e, "s").await;
    let err = e.append("s", produced(b"x", "p", 0, 3)).await.unwrap_err();
    assert_eq!(
        err,
        EngineError::SeqGap {
            expected: 0,
            received: 3
        }
    );
    let err = e.append("s", produced(b"x", "p", 2, 1)).await.unwrap_err();
    assert_eq!(
        err,
        EngineError::SeqGap {
            expected: 0,
            received: 1
        }
    );
    assert_eq!(e.info("s").unwrap().next, 0);
    // The producer is still unknown: seq 0 is what it must start with.
    let a = e.append("s", produced(b"x", "p", 0, 0)).await.unwrap();
    assert_eq!(a.status, AppendStatus::Written);
}

#[tokio::test]
async fn duplicate_is_answered_with_the_highest_seq() {
    let e = engine();
    new_log(&e, "s").await;
    for (i, d) in [b"a", b"b", b"c"].iter().enumerate() {
        let a = e.append("s", produced(*d, "p", 4, i as u64)).await.unwrap();
        assert_eq!(a.status, AppendStatus::Written);
    }
    for retry in 0..=2 {
        let a = e
            .append("s", produced(b"zzz", "p", 4, retry))
            .await
            .unwrap();
        assert_eq!(a.status, AppendStatus::Duplicate, "retry of seq {retry}");
        assert_eq!(a.next, 3);
        assert!(!a.closed);
        assert_eq!(a.producer, ack(4, 2));
    }
    assert_eq!(read_all(&e, "s"), b"abc");
    // The sequence continues where it was.
    let a = e.append("s", produced(b"d", "p", 4, 3)).await.unwrap();
    assert_eq!(a.status, AppendStatus::Written);
    assert_eq!(a.producer, ack(4, 3));
}

#[tokio::test]
async fn producers_are_independent_per_id_and_per_log() {
    let e = engine();
    new_log(&e, "a").await;
    new_log(&e, "b").await;
    e.append("a", produced(b"1", "p", 0, 0)).await.unwrap();
    e.append("a", produced(b"2", "p", 0, 1)).await.unwrap();
    // Same id on another log: unknown there.
    let a = e.append("b", produced(b"1", "p", 0, 0)).await.unwrap();
    assert_eq!(a.status, AppendStatus::Written);
    // Another id on the same log: unknown.
    let a = e.append("a", produced(b"3", "q", 0, 0)).await.unwrap();
    assert_eq!(a.status, AppendStatus::Written);
    assert_eq!(read_all(&e, "a"), b"123");
}

#[tokio::test]
async fn stale_epoch_is_fenced() {
    let e = engine();
    new_log(&e, "s").await;
    e.append("s", produced(b"a", "p", 1, 0)).await.unwrap();
    let err = e.append("s", produced(b"b", "p", 0, 1)).await.unwrap_err();
    assert_eq!(err, EngineError::StaleEpoch { current: 1 });
    let err = e.append("s", produced(b"b", "p", 0, 0)).await.unwrap_err();
    assert_eq!(err, EngineError::StaleEpoch { current: 1 });
    assert_eq!(read_all(&e, "s"), b"a");
}

#[tokio::test]
async fn epoch_bump_must_start_at_seq_zero() {
    let e = engine();
    new_log(&e, "s").await;
    e.append("s", produced(b"a", "p", 0, 0)).await.unwrap();
    e.append("s", produced(b"b", "p", 0, 1)).await.unwrap();
    let err = e.append("s", produced(b"c", "p", 1, 2)).await.unwrap_err();
    assert_eq!(err, EngineError::EpochSeqNotZero);
    let err = e.append("s", produced(b"c", "p", 1, 1)).await.unwrap_err();
    assert_eq!(err, EngineError::EpochSeqNotZero);
    assert_eq!(e.info("s").unwrap().next, 2);

    let a = e.append("s", produced(b"c", "p", 1, 0)).await.unwrap();
    assert_eq!(a.status, AppendStatus::Written);
    assert_eq!(a.producer, ack(1, 0));
    // The old epoch is now fenced.
    let err = e.append("s", produced(b"d", "p", 0, 2)).await.unwrap_err();
    assert_eq!(err, EngineError::StaleEpoch { current: 1 });
    // The retry of the new epoch's seq 0 is a duplicate.
    let a = e.append("s", produced(b"c", "p", 1, 0)).await.unwrap();
    assert_eq!(a.status, AppendStatus::Duplicate);
    assert_eq!(a.producer, ack(1, 0));
    assert_eq!(read_all(&e, "s"), b"abc");
}

#[tokio::test]
async fn seq_gap_is_rejected() {
    let e = engine();
    new_log(&e, "s").await;
    e.append("s", produced(b"a", "p", 0, 0)).await.unwrap();
    let err = e.append("s", produced(b"c", "p", 0, 2)).await.unwrap_err();
    assert_eq!(
        err,
        EngineError::SeqGap {
            expected: 1,
            received: 2
        }
    );
    let a = e.append("s", produced(b"b", "p", 0, 1)).await.unwrap();
    assert_eq!(a.status, AppendStatus::Written);
    assert_eq!(read_all(&e, "s"), b"ab");
}

#[tokio::test]
async fn stream_seq_is_compared_bytewise() {
    let e = engine();
    new_log(&e, "s").await;
    e.append("s", seq(b"a", "2")).await.unwrap();
    let err = e.append("s", seq(b"b", "10")).await.unwrap_err();
    assert_eq!(
        err,
        EngineError::SeqRegression {
            given: "10".into(),
            last: "2".into()
        }
    );
    // Equal is a regression too.
    let err = e.append("s", seq(b"b", "2")).await.unwrap_err();
    assert!(matches!(err, EngineError::SeqRegression { .. }));
    assert_eq!(read_all(&e, "s"), b"a");

    let e = engine();
    new_log(&e, "s").await;
    e.append("s", seq(b"a", "09")).await.unwrap();
    e.append("s", seq(b"b", "10")).await.unwrap();
    // Appends without a Stream-Seq do not reset it.
    e.append("s", data(b"c")).await.unwrap();
    let err = e.append("s", seq(b"d", "09")).await.unwrap_err();
    assert_eq!(
        err,
        EngineError::SeqRegression {
            given: "09".into(),
            last: "10".into()
        }
    );
    e.append("s", seq(b"d", "10a")).await.unwrap();
    assert_eq!(read_all(&e, "s"), b"abcd");
}

#[tokio::test]
async fn closed_comes_before_content_type_before_seq() {
    let e = engine();
    new_log(&e, "s").await;
    e.append("s", produced(b"ab", "p", 0, 0)).await.unwrap();
    e.append("s", seq(b"c", "5")).await.unwrap();

    // Content type beats a producer gap and a Stream-Seq regression.
    let bad_everything = || AppendRequest {
        content_type: Some("application/json".into()),
        payload: payload(b"x"),
        stream_seq: Some("1".into()),
        producer: claim("p", 0, 9),
        close: false,
    };
    let err = e.append("s", bad_everything()).await.unwrap_err();
    assert_eq!(
        err,
        EngineError::ContentTypeMismatch {
            expected: CT.into()
        }
    );

    // The producer check beats the Stream-Seq check.
    let err = e
        .append(
            "s",
            AppendRequest {
                stream_seq: Some("1".into()),
                ..produced(b"x", "p", 0, 9)
            },
        )
        .await
        .unwrap_err();
    assert!(matches!(err, EngineError::SeqGap { .. }), "{err:?}");

    // A producer retry is a duplicate even though its Stream-Seq now looks like a regression.
    let a = e
        .append(
            "s",
            AppendRequest {
                stream_seq: Some("1".into()),
                ..produced(b"ab", "p", 0, 0)
            },
        )
        .await
        .unwrap();
    assert_eq!(a.status, AppendStatus::Duplicate);

    e.append("s", close_only()).await.unwrap();
    // Closed beats everything.
    let err = e.append("s", bad_everything()).await.unwrap_err();
    assert_eq!(err, EngineError::Closed { next: 3 });
    assert_eq!(read_all(&e, "s"), b"abc");
}

#[tokio::test]
async fn empty_append_without_close_is_rejected() {
    let e = engine();
    new_log(&e, "s").await;
    let err = e.append("s", AppendRequest::default()).await.unwrap_err();
    assert_eq!(err, EngineError::EmptyAppend);
    let err = e
        .append(
            "s",
            AppendRequest {
                producer: claim("p", 0, 0),
                ..Default::default()
            },
        )
        .await
        .unwrap_err();
    assert_eq!(err, EngineError::EmptyAppend);
    // The producer's seq 0 was not consumed.
    let a = e.append("s", produced(b"a", "p", 0, 0)).await.unwrap();
    assert_eq!(a.status, AppendStatus::Written);
}

#[tokio::test]
async fn close_only_is_idempotent() {
    let e = engine();
    new_log(&e, "s").await;
    e.append("s", data(b"abc")).await.unwrap();
    let a = e.append("s", close_only()).await.unwrap();
    assert_eq!(a.status, AppendStatus::Written);
    assert!(a.closed);
    assert_eq!(a.next, 3);
    assert!(e.info("s").unwrap().closed);

    for _ in 0..2 {
        let a = e.append("s", close_only()).await.unwrap();
        assert_eq!(a.status, AppendStatus::AlreadyClosed);
        assert!(a.closed);
        assert_eq!(a.next, 3);
        assert_eq!(a.producer, None);
    }
    // A close-only with a content type that does not match is still just "already closed".
    let a = e
        .append(
            "s",
            AppendRequest {
                content_type: Some("image/png".into()),
                ..close_only()
            },
        )
        .await
        .unwrap();
    assert_eq!(a.status, AppendStatus::AlreadyClosed);
    assert_eq!(read_all(&e, "s"), b"abc");
}

#[tokio::test]
async fn close_only_with_producer_on_closed_log_echoes_its_state() {
    let e = engine();
    new_log(&e, "s").await;
    e.append("s", produced(b"a", "p", 2, 0)).await.unwrap();
    let a = e
        .append(
            "s",
            AppendRequest {
                producer: claim("p", 2, 1),
                ..close_only()
            },
        )
        .await
        .unwrap();
    assert_eq!(a.status, AppendStatus::Written);
    assert!(a.closed);
    assert_eq!(a.producer, ack(2, 1));
    // The same tuple again: a duplicate of the close.
    let a = e
        .append(
            "s",
            AppendRequest {
                producer: claim("p", 2, 1),
                ..close_only()
            },
        )
        .await
        .unwrap();
    assert_eq!(a.status, AppendStatus::Duplicate);
    assert!(a.closed);
    assert_eq!(a.producer, ack(2, 1));
    // Another close-only tuple: already closed, echoing the producer's state.
    let a = e
        .append(
            "s",
            AppendRequest {
                producer: claim("p", 2, 2),
                ..close_only()
            },
        )
        .await
        .unwrap();
    assert_eq!(a.status, AppendStatus::AlreadyClosed);
    assert_eq!(a.producer, ack(2, 1));
    // An unknown producer: already closed, no producer state.
    let a = e
        .append(
            "s",
            AppendRequest {
                producer: claim("q", 0, 0),
                ..close_only()
            },
        )
        .await
        .unwrap();
    assert_eq!(a.status, AppendStatus::AlreadyClosed);
    assert_eq!(a.producer, None);
}

#[tokio::test]
async fn closing_tuple_retry_is_a_duplicate() {
    let e = engine();
    new_log(&e, "s").await;
    e.append("s", produced(b"ab", "p", 0, 0)).await.unwrap();
    let closing = || AppendRequest {
        close: true,
        ..produced(b"cd", "p", 0, 1)
    };
    let a = e.append("s", closing()).await.unwrap();
    assert_eq!(a.status, AppendStatus::Written);
    assert!(a.closed);
    assert_eq!(a.next, 4);
    assert_eq!(a.producer, ack(0, 1));

    for _ in 0..2 {
        let a = e.append("s", closing()).await.unwrap();
        assert_eq!(a.status, AppendStatus::Duplicate);
        assert!(a.closed);
        assert_eq!(a.next, 4);
        assert_eq!(a.producer, ack(0, 1));
    }
    assert_eq!(read_all(&e, "s"), b"abcd");
}

#[tokio::test]
async fn other_data_on_a_closed_log_is_rejected() {
    let e = engine();
    new_log(&e, "s").await;
    e.append("s", produced(b"ab", "p", 0, 0)).await.unwrap();
    e.append(
        "s",
        AppendRequest {
            close: true,
            ..produced(b"cd", "p", 0, 1)
        },
    )
    .await
    .unwrap();
    let closed = EngineError::Closed { next: 4 };
    // The next seq of the closing producer.
    let err = e.append("s", produced(b"x", "p", 0, 2)).await.unwrap_err();
    assert_eq!(err, closed);
    // Another producer's tuple.
    let err = e.append("s", produced(b"x", "q", 0, 0)).await.unwrap_err();
    assert_eq!(err, closed);
    // No producer at all.
    let err = e.append("s", data(b"x")).await.unwrap_err();
    assert_eq!(err, closed);
    // Data with close.
    let err = e
        .append(
            "s",
            AppendRequest {
                close: true,
                ..data(b"x")
            },
        )
        .await
        .unwrap_err();
    assert_eq!(err, closed);
    assert_eq!(read_all(&e, "s"), b"abcd");
}

#[tokio::test]
async fn log_created_closed_accepts_nothing() {
    let e = engine();
    let created = e
        .create(
            "s",
            CreateSpec {
                closed: true,
                initial: payload(b"final"),
                ..spec()
            },
        )
        .await
        .unwrap();
    assert!(created.info.closed);
    assert_eq!(created.info.next, 5);
    let err = e.append("s", data(b"x")).await.unwrap_err();
    assert_eq!(err, EngineError::Closed { next: 5 });
    let a = e.append("s", close_only()).await.unwrap();
    assert_eq!(a.status, AppendStatus::AlreadyClosed);
    let batch = e.open("s").unwrap().read(ReadFrom::Start, 1024).unwrap();
    assert_eq!(batch.chunks.concat(), b"final");
    assert!(batch.closed);
}

/// Every kind of rejection leaves the log as it was: the same tail and bytes, the same
/// producer state (the rejected seq is still the one expected), the same `Stream-Seq`, open.
#[tokio::test]
async fn rejected_appends_change_nothing() {
    let e = engine_with(EngineConfig {
        max_stream_bytes: 16,
        ..EngineConfig::default()
    });
    new_log(&e, "s").await;
    e.append("s", produced(b"ab", "p", 1, 0)).await.unwrap();
    e.append("s", seq(b"cd", "m")).await.unwrap();
    let before = read_all(&e, "s");

    let rejected: Vec<AppendRequest> = vec![
        // Content type mismatch, carrying the next seq, a new Stream-Seq and a close.
        AppendRequest {
            content_type: Some("application/json".into()),
            stream_seq: Some("n".into()),
            close: true,
            ..produced(b"x", "p", 1, 1)
        },
        // Stream-Seq regression carrying the next seq and a close.
        AppendRequest {
            stream_seq: Some("a".into()),
            close: true,
            ..produced(b"x", "p", 1, 1)
        },
        // Too big for the stream, carrying the next seq, a Stream-Seq and a close.
        AppendRequest {
            stream_seq: Some("n".into()),
            close: true,
            ..produced(&[b'x'; 13], "p", 1, 1)
        },
        // A gap carrying a close and a Stream-Seq.
        AppendRequest {
            stream_seq: Some("n".into()),
            close: true,
            ..produced(b"x", "p", 1, 5)
        },
        // A stale epoch.
        AppendRequest {
            close: true,
            ..produced(b"x", "p", 0, 1)
        },
        // A new epoch not at seq 0.
        AppendRequest {
            close: true,
            ..produced(b"x", "p", 2, 1)
        },
        // A new producer not at seq 0, with a Stream-Seq.
        AppendRequest {
            stream_seq: Some("n".into()),
            close: true,
            ..produced(b"x", "q", 0, 1)
        },
    ];
    for req in rejected {
        let desc = format!("{req:?}");
        assert!(e.append("s", req).await.is_err(), "accepted: {desc}");
        let info = e.info("s").unwrap();
        assert_eq!(info.next, 4, "after {desc}");
        assert!(!info.closed, "after {desc}");
        assert_eq!(read_all(&e, "s"), before, "after {desc}");
    }

    // The producer's next seq is still 1 (and its epoch still 1), "n" is still a valid
    // Stream-Seq, and the new producer q still starts at 0.
    let a = e
        .append(
            "s",
            AppendRequest {
                stream_seq: Some("n".into()),
                ..produced(b"ef", "p", 1, 1)
            },
        )
        .await
        .unwrap();
    assert_eq!(a.status, AppendStatus::Written);
    assert_eq!(a.producer, ack(1, 1));
    let a = e.append("s", produced(b"g", "q", 0, 0)).await.unwrap();
    assert_eq!(a.status, AppendStatus::Written);
    assert_eq!(read_all(&e, "s"), b"abcdefg");
}

#[tokio::test]
async fn content_type_match_ignores_case_and_parameters() {
    let e = engine();
    e.create(
        "s",
        CreateSpec {
            content_type: Some(("Text/Plain; charset=utf-8".into(), Framing::Bytes)),
            ..spec()
        },
    )
    .await
    .unwrap();
    for ct in [
        "text/plain",
        "TEXT/PLAIN",
        "text/plain;charset=latin1",
        " text/plain ; q=1",
    ] {
        let a = e
            .append(
                "s",
                AppendRequest {
                    content_type: Some(ct.into()),
                    ..data(b"x")
                },
            )
            .await
            .unwrap_or_else(|err| panic!("{ct}: {err}"));
        assert_eq!(a.status, AppendStatus::Written);
    }
    // No content type: not compared.
    e.append(
        "s",
        AppendRequest {
            content_type: None,
            ..data(b"y")
        },
    )
    .await
    .unwrap();
    for ct in ["text/html", "text/plainx", "application/octet-stream"] {
        let err = e
            .append(
                "s",
                AppendRequest {
                    content_type: Some(ct.into()),
                    ..data(b"z")
                },
            )
            .await
            .unwrap_err();
        assert_eq!(
            err,
            EngineError::ContentTypeMismatch {
                expected: "Text/Plain; charset=utf-8".into()
            },
            "{ct}"
        );
    }
    assert_eq!(read_all(&e, "s"), b"xxxxy");
    // The stored content type is kept as given.
    assert_eq!(
        &*e.info("s").unwrap().content_type,
        "Text/Plain; charset=utf-8"
    );
    // Idempotent create compares the same way.
    let again = e
        .create(
            "s",
            CreateSpec {
                content_type: Some(("TEXT/plain".into(), Framing::Bytes)),
                ..spec()
            },
        )
        .await
        .unwrap();
    assert!(!again.created);
    let err = e
        .create(
            "s",
            CreateSpec {
                content_type: Some(("text/html".into(), Framing::Bytes)),
                ..spec()
            },
        )
        .await
        .unwrap_err();
    assert!(matches!(err, EngineError::ConfigMismatch(_)), "{err:?}");
}

mod limits;
