//! `__ds` subscriptions on the engine: links follow streams, wakes fence stale workers, and
//! cursors, generations, wakes and leases survive a power loss (an `fsync` engine) with a
//! manual clock for lease expiry.

mod common;

use common::disk::Disk;
use riffle_engine::subs::{Delivery, SubAction, SubError, SubKind, SubSpec, WakeInfo};
use riffle_engine::{
    AppendRequest, CreateSpec, Durability, Engine, EngineConfig, Framing, ManualClock, Payload,
    StorageConfig,
};
use std::sync::Arc;
use std::time::Duration;

fn open(d: &Disk, clock: &Arc<ManualClock>) -> Engine {
    let mut storage = StorageConfig::new(d.dir());
    storage.shards = 2;
    storage.sync_interval = Duration::from_millis(5);
    let config = EngineConfig {
        default_durability: Durability::Fsync,
        ..EngineConfig::default()
    };
    Engine::recover(config, clock.clone(), storage)
        .expect("recover")
        .0
}

const ROOT: &str = "/v1/stream/";

async fn create(e: &Engine, path: &str, data: &str) {
    let spec = CreateSpec {
        content_type: Some(("text/plain".into(), Framing::Bytes)),
        expiry: None,
        closed: false,
        initial: Payload {
            data: data.to_string().into(),
            messages: 1,
        },
        fork: None,
        durability: None,
    };
    e.create(&format!("{ROOT}{path}"), spec)
        .await
        .expect("create");
}

async fn append(e: &Engine, path: &str, data: &str) -> u64 {
    let req = AppendRequest {
        content_type: Some("text/plain".into()),
        payload: Payload {
            data: data.to_string().into(),
            messages: 1,
        },
        ..Default::default()
    };
    e.append(&format!("{ROOT}{path}"), req)
        .await
        .expect("append")
        .next
}

fn pull(pattern: &str) -> SubSpec {
    SubSpec {
        kind: SubKind::PullWake {
            wake_stream: "wake".into(),
        },
        pattern: Some(pattern.into()),
        streams: vec![],
        lease_ttl_ms: 1_000,
        description: None,
    }
}

/// A webhook subscription on `stream`.
fn webhook_on(stream: &str) -> SubSpec {
    SubSpec {
        kind: SubKind::Webhook {
            url: "https://example.com/hook".into(),
        },
        pattern: None,
        streams: vec![stream.into()],
        lease_ttl_ms: 1_000,
        description: None,
    }
}

/// A pull-wake worker's ack of wake `w` of subscription `s`.
async fn pull_ack(
    e: &Engine,
    w: &WakeInfo,
    acks: &[(String, u64)],
    done: bool,
) -> Result<bool, SubError> {
    e.sub_ack("s", w.sub_id, w.generation, &w.wake_id, acks, done, true)
        .await
}

fn acked(e: &Engine, sub: &str, path: &str) -> Option<(u64, u64)> {
    let info = e.sub_get(sub).expect("get");
    info.links
        .iter()
        .find(|l| l.path == path)
        .map(|l| (l.acked, l.tail))
}

#[tokio::test]
async fn existing_streams_link_at_their_tail_and_new_ones_at_zero() {
    let clock = Arc::new(ManualClock::new(1_000_000));
    let d = Disk::new();
    let e = open(&d, &clock);
    create(&e, "ev/old", "12345").await;
    create(&e, "other/x", "1").await;
    let (created, info) = e.sub_put("s", pull("ev/*"), "http://h").await.expect("put");
    assert!(created);
    assert_eq!(info.links.len(), 1, "only the matching stream is linked");
    assert_eq!(acked(&e, "s", "ev/old"), Some((5, 5)), "linked at its tail");
    assert!(matches!(
        e.sub_claim("s", "w").await,
        Err(SubError::NoPendingWork)
    ));
    create(&e, "ev/new", "abc").await;
    assert_eq!(
        acked(&e, "s", "ev/new"),
        Some((0, 3)),
        "a new stream is linked at 0"
    );
    // The same configuration confirms; another one conflicts.
    assert!(
        !e.sub_put("s", pull("ev/*"), "http://h")
            .await
            .expect("confirm")
            .0
    );
    assert!(matches!(
        e.sub_put("s", pull("ev/**"), "http://h").await,
        Err(SubError::Exists)
    ));
    // A removed stream's glob link goes.
    e.delete(&format!("{ROOT}ev/old")).await.expect("delete");
    for _ in 0..100 {
        if acked(&e, "s", "ev/old").is_none() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(acked(&e, "s", "ev/old"), None);
}

#[tokio::test]
async fn claims_fence_stale_wakes_and_everything_survives_a_power_loss() {
    let clock = Arc::new(ManualClock::new(1_000_000));
    let d = Disk::new();
    let e = open(&d, &clock);
    create(&e, "wake", "").await;
    e.sub_put("s", pull("ev/*"), "http://h").await.expect("put");
    create(&e, "ev/a", "hello").await;
    // The delivery side makes the wake and appends its event.
    let poke = e.sub_poke("s").await.expect("poke");
    let Some(SubAction::WakeEvent { generation, .. }) = poke.action else {
        panic!("expected a wake event, got {:?}", poke.action);
    };
    let w = e.sub_claim("s", "w1").await.expect("claim");
    assert_eq!(w.generation, generation);
    assert_eq!(w.streams[0].tail, 5);
    match e.sub_claim("s", "w2").await {
        Err(SubError::AlreadyClaimed { holder, .. }) => assert_eq!(holder, "w1"),
        other => panic!("expected ALREADY_CLAIMED, got {other:?}"),
    }
    // An ack beyond the tail or for an unknown stream changes nothing.
    let bad = [("ev/a".to_string(), 6)];
    let r = pull_ack(&e, &w, &bad, true);
    assert!(matches!(r.await, Err(SubError::InvalidOffset(_))));
    // A heartbeat ack of 3 bytes, then a power loss.
    let part = [("ev/a".to_string(), 3)];
    let r = pull_ack(&e, &w, &part, false);
    assert!(!r.await.expect("heartbeat"));
    d.power_loss(e);

    let e = open(&d, &clock);
    e.subs_reconcile().await;
    assert_eq!(
        acked(&e, "s", "ev/a"),
        Some((3, 5)),
        "the acked cursor is kept"
    );
    match e.sub_claim("s", "w2").await {
        Err(SubError::AlreadyClaimed { holder, .. }) => assert_eq!(holder, "w1"),
        other => panic!("the lease survives the crash: {other:?}"),
    }
    // The lease expires: the wake is offered again under a new generation, and the old
    // worker is fenced.
    clock.advance_ms(1_001);
    let poke = e.sub_poke("s").await.expect("poke");
    assert!(matches!(poke.action, Some(SubAction::WakeEvent { .. })));
    let rest = [("ev/a".to_string(), 5)];
    let stale = pull_ack(&e, &w, &rest, true);
    assert!(matches!(stale.await, Err(SubError::Fenced)));
    assert_eq!(
        acked(&e, "s", "ev/a"),
        Some((3, 5)),
        "a stale ack moves nothing"
    );
    let w2 = e.sub_claim("s", "w2").await.expect("claim again");
    assert!(w2.generation > w.generation);
    let r = pull_ack(&e, &w2, &rest, true);
    assert!(!r.await.expect("ack"), "nothing else is pending");
    append(&e, "ev/a", "!").await;
    let r = pull_ack(&e, &w2, &rest, true);
    assert!(
        matches!(r.await, Err(SubError::Fenced)),
        "a finished wake is fenced"
    );
    let w3 = e
        .sub_claim("s", "w3")
        .await
        .expect("new data wakes it again");
    assert_eq!(w3.streams[0].acked, 5);
    e.sub_release("s", w3.sub_id, w3.generation, &w3.wake_id)
        .await
        .expect("release");
    d.power_loss(e);

    let e = open(&d, &clock);
    e.subs_reconcile().await;
    assert_eq!(acked(&e, "s", "ev/a"), Some((5, 6)));
    let w4 = e
        .sub_claim("s", "w4")
        .await
        .expect("released work is claimable");
    assert!(w4.generation > w3.generation, "generations never repeat");
    e.sub_delete("s").await.expect("delete");
    let r = pull_ack(&e, &w4, &[], true);
    assert!(matches!(r.await, Err(SubError::NotFound)));
    d.power_loss(e);
    let e = open(&d, &clock);
    assert!(matches!(e.sub_get("s"), Err(SubError::NotFound)));
}

#[tokio::test]
async fn webhook_wakes_retry_and_done_acks_the_snapshot() {
    let clock = Arc::new(ManualClock::new(1_000_000));
    let d = Disk::new();
    let e = open(&d, &clock);
    let spec = SubSpec {
        description: Some("d".into()),
        ..webhook_on("ev/a")
    };
    e.sub_put("h", spec, "http://h").await.expect("put");
    create(&e, "ev/a", "hello").await;
    let poke = e.sub_poke("h").await.expect("poke");
    let Some(SubAction::Webhook { wake, .. }) = poke.action else {
        panic!("expected a webhook delivery");
    };
    assert!(
        e.sub_poke("h").await.expect("poke").action.is_none(),
        "one delivery at a time"
    );
    e.sub_delivered("h", wake.generation, Delivery::Failed, |n| {
        2_000 * u64::from(n)
    })
    .await
    .expect("failed");
    assert!(e.sub_get("h").expect("get").failed);
    d.process_crash(e);

    let e = open(&d, &clock);
    e.subs_reconcile().await;
    assert!(
        e.sub_get("h").expect("get").failed,
        "the retry schedule survives"
    );
    let poke = e.sub_poke("h").await.expect("poke");
    assert!(poke.action.is_none());
    assert_eq!(
        poke.due,
        Some(1_002_000),
        "not before the scheduled attempt"
    );
    clock.advance_ms(2_000);
    let poke = e.sub_poke("h").await.expect("poke");
    let Some(SubAction::Webhook { wake: again, .. }) = poke.action else {
        panic!("expected the retry");
    };
    assert_eq!(
        again.wake_id, wake.wake_id,
        "the same wake is delivered again"
    );
    append(&e, "ev/a", "+").await;
    e.sub_delivered(
        "h",
        again.generation,
        Delivery::Accepted { done: true },
        |_| 0,
    )
    .await
    .expect("done");
    let info = e.sub_get("h").expect("get");
    assert!(!info.failed);
    assert_eq!(
        acked(&e, "h", "ev/a"),
        Some((5, 6)),
        "done acks the snapshot only"
    );
    let poke = e.sub_poke("h").await.expect("poke");
    let Some(SubAction::Webhook { wake: next, .. }) = poke.action else {
        panic!("data after the snapshot wakes again");
    };
    assert!(next.generation > again.generation);
}

#[tokio::test]
async fn an_expired_lease_is_fenced_before_anyone_ends_it() {
    let clock = Arc::new(ManualClock::new(1_000_000));
    let d = Disk::new();
    let e = open(&d, &clock);
    e.sub_put("s", pull("ev/*"), "http://h").await.expect("put");
    create(&e, "ev/a", "hello").await;
    let w = e.sub_claim("s", "w1").await.expect("claim");
    clock.advance_ms(1_000);
    let acks = [("ev/a".to_string(), 5)];
    let late = pull_ack(&e, &w, &acks, true);
    assert!(
        matches!(late.await, Err(SubError::Fenced)),
        "no poke ran, the lease is over"
    );
    let late = e.sub_release("s", w.sub_id, w.generation, &w.wake_id);
    assert!(matches!(late.await, Err(SubError::Fenced)));
    assert_eq!(acked(&e, "s", "ev/a"), Some((0, 5)));
    let again = e
        .sub_claim("s", "w2")
        .await
        .expect("the expired claim is re-offered");
    assert!(again.generation > w.generation);
}

/// A webhook's `done` acks the wake's snapshot, but never the tail of a stream deleted (and
/// created again) while the wake was out: that offset on the new stream would skip data no
/// wake delivered.
#[tokio::test]
async fn done_never_acks_a_stream_that_was_recreated_meanwhile() {
    let clock = Arc::new(ManualClock::new(1_000_000));
    let d = Disk::new();
    let e = open(&d, &clock);
    e.sub_put("h", webhook_on("ev/a"), "http://h")
        .await
        .expect("put");
    create(&e, "ev/a", "hello world").await;
    let poke = e.sub_poke("h").await.expect("poke");
    let Some(SubAction::Webhook { wake, .. }) = poke.action else {
        panic!("expected a webhook delivery");
    };
    // While the receiver works: the stream goes and comes back shorter.
    e.delete(&format!("{ROOT}ev/a")).await.expect("delete");
    create(&e, "ev/a", "b1").await;
    e.subs_reconcile().await;
    e.sub_delivered(
        "h",
        wake.generation,
        Delivery::Accepted { done: true },
        |_| 0,
    )
    .await
    .expect("done");
    assert_eq!(
        acked(&e, "h", "ev/a"),
        Some((0, 2)),
        "the new stream's data is still to be delivered"
    );
    let poke = e.sub_poke("h").await.expect("poke");
    assert!(
        matches!(poke.action, Some(SubAction::Webhook { .. })),
        "a wake for the new stream's data"
    );
    // And the state replays the same way.
    d.process_crash(e);
    let e = open(&d, &clock);
    assert_eq!(acked(&e, "h", "ev/a").map(|a| a.0), Some(0));
}
