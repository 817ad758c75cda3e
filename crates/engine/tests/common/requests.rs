//! Requests the durability tests build over and over: a text log of a class, a text append
//! with an optional producer, and a whole read.

use riffle_engine::{
    AppendRequest, CreateSpec, Durability, Engine, Framing, Payload, ProducerClaim, ReadFrom,
};

/// A `text/plain` log of `durability` (`None`: the engine's default class).
pub fn text_spec(durability: Option<Durability>) -> CreateSpec {
    CreateSpec {
        content_type: Some(("text/plain".into(), Framing::Bytes)),
        expiry: None,
        closed: false,
        initial: Payload::default(),
        fork: None,
        durability,
    }
}

/// A `text/plain` append of `data`, by producer `(id, seq)` at epoch 0 if given.
pub fn text_append(data: impl AsRef<[u8]>, producer: Option<(&str, u64)>) -> AppendRequest {
    AppendRequest {
        content_type: Some("text/plain".into()),
        payload: Payload {
            data: data.as_ref().to_vec().into(),
            messages: 1,
        },
        producer: producer.map(|(id, seq)| ProducerClaim {
            id: id.into(),
            epoch: 0,
            seq,
        }),
        ..Default::default()
    }
}

/// Everything `name` holds, read in one go (which must reach its tail).
pub fn read_all(engine: &Engine, name: &str) -> Vec<u8> {
    let batch = engine
        .open(name)
        .expect("open")
        .read(ReadFrom::Start, usize::MAX)
        .expect("read");
    assert!(batch.up_to_date, "a whole read of {name} reaches its tail");
    batch.chunks.concat()
}
