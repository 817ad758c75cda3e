//! Forks: divergence points (with sub-offsets in both framings), chains, stitched reads,
//! soft deletion and cascading collection, expiry inheritance, and fork errors.

use bytes::Bytes;
use riffle_engine::wal::{Dir, MemDir};
use riffle_engine::{
    AppendRequest, CreateSpec, Durability, Engine, EngineConfig, EngineError, Expiry, ForkSpec,
    Framing, ManualClock, Payload, ReadFrom, StorageConfig,
};
use std::sync::Arc;

const BYTES_CT: &str = "text/plain";
const JSON_CT: &str = "application/json";

fn engine() -> (Engine, Arc<ManualClock>) {
    let clock = Arc::new(ManualClock::new(1_000_000));
    (Engine::new(EngineConfig::default(), clock.clone()), clock)
}

fn base_spec(ct: &str, framing: Framing) -> CreateSpec {
    CreateSpec {
        content_type: Some((ct.into(), framing)),
        expiry: None,
        closed: false,
        initial: Payload::default(),
        fork: None,
        durability: None,
    }
}

fn bytes_spec() -> CreateSpec {
    base_spec(BYTES_CT, Framing::Bytes)
}

fn json_spec() -> CreateSpec {
    base_spec(JSON_CT, Framing::JsonMessages)
}

fn fork_spec(source: &str, offset: Option<u64>, sub: u64) -> CreateSpec {
    CreateSpec {
        content_type: None,
        expiry: None,
        closed: false,
        initial: Payload::default(),
        fork: Some(ForkSpec {
            source: source.into(),
            offset,
            sub,
        }),
        durability: None,
    }
}

fn raw(d: &[u8]) -> Payload {
    Payload {
        data: Bytes::copy_from_slice(d),
        messages: 1,
    }
}

/// JSON messages in stored form: each message's text followed by `,`.
fn json(messages: &[&str]) -> Payload {
    let mut data = Vec::new();
    for m in messages {
        data.extend_from_slice(m.as_bytes());
        data.push(b',');
    }
    Payload {
        data: data.into(),
        messages: messages.len() as u32,
    }
}

fn req(payload: Payload) -> AppendRequest {
    AppendRequest {
        payload,
        ..Default::default()
    }
}

async fn put(e: &Engine, name: &str, d: &[u8]) {
    e.append(name, req(raw(d))).await.unwrap();
}

async fn put_json(e: &Engine, name: &str, messages: &[&str]) {
    e.append(name, req(json(messages))).await.unwrap();
}

fn read_all(e: &Engine, name: &str) -> Vec<u8> {
    let batch = e
        .open(name)
        .unwrap()
        .read(ReadFrom::Start, usize::MAX)
        .unwrap();
    assert!(batch.up_to_date);
    assert_eq!(batch.next, e.info(name).unwrap().next);
    batch.chunks.concat()
}

/// The ends of the chunks a reader gets when reading one record at a time from the start.
fn record_ends(e: &Engine, name: &str) -> Vec<u64> {
    let h = e.open(name).unwrap();
    let mut ends = Vec::new();
    let mut pos = 0;
    loop {
        let batch = h.read(ReadFrom::At(pos), 1).unwrap();
        if batch.is_empty() {
            assert!(batch.up_to_date);
            return ends;
        }
        assert_eq!(batch.start, pos);
        assert_eq!(batch.byte_len() as u64, batch.next - pos);
        pos = batch.next;
        ends.push(pos);
    }
}

#[tokio::test]
async fn fork_at_tail_and_divergence() {
    let (e, _) = engine();
    e.create("src", bytes_spec()).await.unwrap();
    put(&e, "src", b"abc").await;
    put(&e, "src", b"def").await;

    let created = e.create("f", fork_spec("src", None, 0)).await.unwrap();
    assert!(created.created);
    assert_eq!(created.info.next, 6);
    assert_eq!(&*created.info.content_type, BYTES_CT);
    assert_eq!(created.info.framing, Framing::Bytes);
    assert!(!created.info.closed);
    assert_ne!(created.info.id, e.info("src").unwrap().id);
    assert_eq!(read_all(&e, "f"), b"abcdef");

    put(&e, "f", b"gh").await;
    // Source appends after the fork are invisible to it, and the other way round.
    put(&e, "src", b"XYZ").await;
    assert_eq!(read_all(&e, "f"), b"abcdefgh");
    assert_eq!(read_all(&e, "src"), b"abcdefXYZ");
    assert_eq!(record_ends(&e, "f"), [3, 6, 8]);
    assert_eq!(record_ends(&e, "src"), [3, 6, 9]);
}

#[tokio::test]
async fn fork_at_an_offset() {
    let (e, _) = engine();
    e.create("src", bytes_spec()).await.unwrap();
    put(&e, "src", b"abc").await;
    put(&e, "src", b"def").await;

    e.create("at3", fork_spec("src", Some(3), 0)).await.unwrap();
    assert_eq!(e.info("at3").unwrap().next, 3);
    assert_eq!(read_all(&e, "at3"), b"abc");
    put(&e, "at3", b"123").await;
    assert_eq!(read_all(&e, "at3"), b"abc123");
    assert_eq!(record_ends(&e, "at3"), [3, 6]);

    e.create("at0", fork_spec("src", Some(0), 0)).await.unwrap();
    assert_eq!(e.info("at0").unwrap().next, 0);
    assert_eq!(read_all(&e, "at0"), b"");
    put(&e, "at0", b"x").await;
    assert_eq!(read_all(&e, "at0"), b"x");

    // A position inside a record, in byte framing: the record is inherited in part.
    e.create("at4", fork_spec("src", Some(4), 0)).await.unwrap();
    assert_eq!(read_all(&e, "at4"), b"abcd");
    assert_eq!(record_ends(&e, "at4"), [3, 4]);

    // Reading from an inherited position in the middle.
    let batch = e
        .open("at3")
        .unwrap()
        .read(ReadFrom::At(2), usize::MAX)
        .unwrap();
    assert_eq!(batch.chunks.concat(), b"c123");
    assert_eq!((batch.start, batch.next), (2, 6));
    assert_eq!(read_all(&e, "src"), b"abcdef");
}

#[tokio::test]
async fn fork_with_byte_sub_offset() {
    let (e, _) = engine();
    e.create("src", bytes_spec()).await.unwrap();
    put(&e, "src", b"abc").await;
    put(&e, "src", b"defg").await;

    e.create("f", fork_spec("src", Some(3), 2)).await.unwrap();
    assert_eq!(e.info("f").unwrap().next, 5);
    assert_eq!(read_all(&e, "f"), b"abcde");
    put(&e, "f", b"Z").await;
    assert_eq!(read_all(&e, "f"), b"abcdeZ");
    assert_eq!(record_ends(&e, "f"), [3, 5, 6]);

    // The whole record.
    e.create("whole", fork_spec("src", Some(3), 4))
        .await
        .unwrap();
    assert_eq!(read_all(&e, "whole"), b"abcdefg");
    // A sub-offset from a position inside a record counts from that position.
    e.create("mid", fork_spec("src", Some(1), 1)).await.unwrap();
    assert_eq!(read_all(&e, "mid"), b"ab");
    let err = e
        .create("over", fork_spec("src", Some(3), 5))
        .await
        .unwrap_err();
    assert_eq!(
        err,
        EngineError::ForkSubOffsetOvershoot {
            sub: 5,
            available: 4
        }
    );
    // At the tail there is no record to take a sub-offset of.
    let err = e
        .create("over", fork_spec("src", None, 1))
        .await
        .unwrap_err();
    assert_eq!(
        err,
        EngineError::ForkSubOffsetOvershoot {
            sub: 1,
            available: 0
        }
    );
    assert_eq!(e.info("over").unwrap_err(), EngineError::NotFound);
}

#[tokio::test]
async fn fork_with_json_sub_offset() {
    let (e, _) = engine();
    e.create("src", json_spec()).await.unwrap();
    put_json(&e, "src", &["1", "2", "3"]).await;
    put_json(&e, "src", &[r#"{"a":"x,y"}"#, "[1,2]", r#""q\",""#]).await;
    assert_eq!(e.info("src").unwrap().next, 6 + 12 + 6 + 7);

    // One message of the second record.
    let f = e.create("f1", fork_spec("src", Some(6), 1)).await.unwrap();
    assert_eq!(f.info.framing, Framing::JsonMessages);
    assert_eq!(&*f.info.content_type, JSON_CT);
    assert_eq!(read_all(&e, "f1"), br#"1,2,3,{"a":"x,y"},"#);
    // Two messages.
    e.create("f2", fork_spec("src", Some(6), 2)).await.unwrap();
    assert_eq!(read_all(&e, "f2"), br#"1,2,3,{"a":"x,y"},[1,2],"#);
    // All three: the whole record.
    e.create("f3", fork_spec("src", Some(6), 3)).await.unwrap();
    assert_eq!(read_all(&e, "f3"), read_all(&e, "src"));
    let err = e
        .create("f4", fork_spec("src", Some(6), 4))
        .await
        .unwrap_err();
    assert_eq!(
        err,
        EngineError::ForkSubOffsetOvershoot {
            sub: 4,
            available: 3
        }
    );
    // Two messages of the first record.
    e.create("g", fork_spec("src", Some(0), 2)).await.unwrap();
    assert_eq!(read_all(&e, "g"), b"1,2,");
    put_json(&e, "g", &["true", "null"]).await;
    assert_eq!(read_all(&e, "g"), b"1,2,true,null,");
    // Every chunk ends at a message boundary.
    assert_eq!(record_ends(&e, "g"), [4, 14]);
    assert_eq!(record_ends(&e, "f1"), [6, 18]);
}

#[tokio::test]
async fn chained_byte_forks_compose_sub_offsets() {
    let (e, _) = engine();
    e.create("a", bytes_spec()).await.unwrap();
    put(&e, "a", b"abcdef").await;
    put(&e, "a", b"ghij").await;

    // b: 4 bytes of a's first record, then its own.
    e.create("b", fork_spec("a", Some(0), 4)).await.unwrap();
    put(&e, "b", b"KLM").await;
    assert_eq!(read_all(&e, "b"), b"abcdKLM");
    assert_eq!(record_ends(&e, "b"), [4, 7]);

    // c: 2 bytes of b's own record.
    e.create("c", fork_spec("b", Some(4), 2)).await.unwrap();
    put(&e, "c", b"n").await;
    assert_eq!(read_all(&e, "c"), b"abcdKLn");
    assert_eq!(record_ends(&e, "c"), [4, 6, 7]);

    // d: b's view of a's first record is 4 bytes long; c sees the same.
    e.create("d", fork_spec("c", Some(0), 3)).await.unwrap();
    assert_eq!(read_all(&e, "d"), b"abc");
    let err = e.create("x", fork_spec("c", Some(0), 5)).await.unwrap_err();
    assert_eq!(
        err,
        EngineError::ForkSubOffsetOvershoot {
            sub: 5,
            available: 4
        }
    );
    e.create("d2", fork_spec("c", Some(2), 2)).await.unwrap();
    assert_eq!(read_all(&e, "d2"), b"abcd");
    let err = e.create("x", fork_spec("c", Some(2), 3)).await.unwrap_err();
    assert_eq!(
        err,
        EngineError::ForkSubOffsetOvershoot {
            sub: 3,
            available: 2
        }
    );
    // Within c's inherited part of b's record.
    e.create("d3", fork_spec("c", Some(5), 1)).await.unwrap();
    assert_eq!(read_all(&e, "d3"), b"abcdKL");
    let err = e.create("x", fork_spec("c", Some(5), 2)).await.unwrap_err();
    assert_eq!(
        err,
        EngineError::ForkSubOffsetOvershoot {
            sub: 2,
            available: 1
        }
    );
    put(&e, "d", b"!").await;
    assert_eq!(read_all(&e, "d"), b"abc!");
    // Nothing above changed.
    assert_eq!(read_all(&e, "a"), b"abcdefghij");
    assert_eq!(read_all(&e, "b"), b"abcdKLM");
    assert_eq!(read_all(&e, "c"), b"abcdKLn");
}

#[tokio::test]
async fn chained_json_forks_compose_sub_offsets() {
    let (e, _) = engine();
    e.create("a", json_spec()).await.unwrap();
    put_json(&e, "a", &["1", "2", "3", "4"]).await;
    // b: the first three messages.
    e.create("b", fork_spec("a", Some(0), 3)).await.unwrap();
    assert_eq!(read_all(&e, "b"), b"1,2,3,");
    // c: from message 2 (position 2) one message.
    e.create("c", fork_spec("b", Some(2), 1)).await.unwrap();
    assert_eq!(read_all(&e, "c"), b"1,2,");
    let err = e.create("x", fork_spec("b", Some(2), 3)).await.unwrap_err();
    assert_eq!(
        err,
        EngineError::ForkSubOffsetOvershoot {
            sub: 3,
            available: 2
        }
    );
    // d: c sees the record as two messages.
    let err = e.create("x", fork_spec("c", Some(0), 3)).await.unwrap_err();
    assert_eq!(
        err,
        EngineError::ForkSubOffsetOvershoot {
            sub: 3,
            available: 2
        }
    );
    e.create("d", fork_spec("c", Some(0), 1)).await.unwrap();
    put_json(&e, "d", &[r#"{"k":[1,2]}"#]).await;
    assert_eq!(read_all(&e, "d"), br#"1,{"k":[1,2]},"#);
    assert_eq!(record_ends(&e, "d"), [2, 14]);
    // c's whole inherited part is one piece of one record.
    assert_eq!(record_ends(&e, "c"), [4]);
}

#[tokio::test]
async fn stitched_reads_respect_budgets() {
    let (e, _) = engine();
    e.create("a", bytes_spec()).await.unwrap();
    for r in [&b"aa"[..], b"bbb", b"c"] {
        put(&e, "a", r).await;
    }
    e.create("b", fork_spec("a", Some(2), 2)).await.unwrap();
    put(&e, "b", b"DD").await;
    put(&e, "b", b"E").await;
    // b: [aa][bb][DD][E]
    assert_eq!(record_ends(&e, "b"), [2, 4, 6, 7]);
    let h = e.open("b").unwrap();
    let batch = h.read(ReadFrom::Start, 3).unwrap();
    assert_eq!(batch.chunks.concat(), b"aabb");
    assert!(!batch.up_to_date);
    let batch = h.read(ReadFrom::At(1), 4).unwrap();
    assert_eq!(batch.chunks.concat(), b"abbDD");
    assert_eq!(batch.next, 6);
    let batch = h.read(ReadFrom::At(3), 1).unwrap();
    assert_eq!(batch.chunks.concat(), b"b");
    let batch = h.read(ReadFrom::At(4), 100).unwrap();
    assert_eq!(batch.chunks.concat(), b"DDE");
    assert!(batch.up_to_date);
    let batch = h.read(ReadFrom::Tail, 100).unwrap();
    assert!(batch.is_empty());
    assert_eq!(batch.start, 7);
    assert!(batch.up_to_date);
}

mod lifecycle;
