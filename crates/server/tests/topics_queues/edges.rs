//! Queue edges: a dead-letter topic that refuses jobs, jobs past the topic's `ttl_ms`, and
//! lease ids across a topic deleted and created again.

use super::*;

/// A dead-letter topic that refuses writes (full, `discard: "reject"`) holds back neither the
/// queue's other jobs nor its claims; the refused job is neither lost nor delivered again, and
/// moves once the dead-letter topic has room.
#[tokio::test]
async fn a_full_dead_letter_topic_does_not_stop_the_queue() {
    let s = start().await;
    put_ok(
        &s,
        "q-dl",
        json!({ "cap_records": 1, "discard": "reject" }),
        201,
    )
    .await;
    write(&s, "q-dl", json!({ "records": [{ "data": 0 }] })).await;
    let cfg = json!({ "lease_ms": 1000, "max_deliveries": 1, "dead_letter": "q-dl" });
    queue(&s, "q", cfg).await;
    write(&s, "q", json!({ "records": [{ "data": "poison" }] })).await;
    assert_eq!(cseqs(&claim(&s, "q", json!({ "node": "w" })).await), [1]);
    op(&s, "q", "nack", json!({ "node": "w", "seqs": [1] })).await;
    write(&s, "q", json!({ "records": [{ "data": "fresh" }] })).await;

    // Job 1 is past its deliveries and q-dl refuses it: job 2 is claimed all the same.
    let v = claim(&s, "q", json!({ "node": "w", "max": 5 })).await;
    assert_eq!(cseqs(&v), [2], "{v}");
    let again = claim(&s, "q", json!({ "node": "w2", "max": 5 })).await;
    assert_eq!(
        cseqs(&again),
        Vec::<u64>::new(),
        "never delivered again: {again}"
    );
    has!(state(&s, "q").await, { "count": 2 });
    has!(counts(&s, "q").await, { "in_flight": 1, "dead_lettered": 0 });
    op(&s, "q", "ack", json!({ "node": "w", "seqs": [2] })).await;

    // With room in q-dl, the next look after the retry interval (5 s) moves it there.
    put_ok(
        &s,
        "q-dl",
        json!({ "cap_records": 10, "discard": "reject" }),
        200,
    )
    .await;
    tokio::time::sleep(ms(5_500)).await;
    let v = claim(&s, "q", json!({ "node": "w", "max": 5 })).await;
    assert_eq!(cseqs(&v), Vec::<u64>::new(), "{v}");
    has!(counts(&s, "q").await, { "dead_lettered": 1 });
    let d = diff(&s, "q-dl", json!({})).await;
    let dead = d["records"].as_array().expect("records");
    assert_eq!(dead.len(), 2, "{d}");
    has!(dead[1], { "data": "poison" });
    has!(dead[1]["meta"], { "$dead_letter_src_seq": 1 });
}

/// Jobs past the queue's `ttl_ms` are expired like any record: no claim gets them.
#[tokio::test]
async fn expired_jobs_are_never_claimed() {
    let s = start().await;
    queue(&s, "qt", json!({ "ttl_ms": 1000, "lease_ms": 200 })).await;
    write(
        &s,
        "qt",
        json!({ "records": [{ "data": 1 }, { "data": 2 }, { "data": 3 }] }),
    )
    .await;
    // Job 1 is claimed and its lease expires: ready again, but expired by then too.
    assert_eq!(cseqs(&claim(&s, "qt", json!({ "node": "w" })).await), [1]);
    tokio::time::sleep(ms(1_500)).await;
    let v = claim(&s, "qt", json!({ "node": "w", "max": 5 })).await;
    assert_eq!(cseqs(&v), Vec::<u64>::new(), "{v}");
    has!(v, { "ready": 0 });
    has!(counts(&s, "qt").await, { "ready": 0, "in_flight": 0 });
    write(&s, "qt", json!({ "records": [{ "data": 4 }] })).await;
    let v = claim(&s, "qt", json!({ "node": "w", "max": 5 })).await;
    assert_eq!(cseqs(&v), [4], "{v}");
}

/// A worker holding a lease of a topic that was deleted fences nothing on the topic created
/// again under its name: lease ids are never handed out twice, and queues do not share them.
#[tokio::test]
async fn lease_ids_do_not_repeat_across_a_recreated_topic() {
    let s = start().await;
    let mut firsts = BTreeSet::new();
    let mut stale = None;
    for round in 0..2 {
        queue(&s, "qr", json!({})).await;
        write(&s, "qr", json!({ "records": [{ "data": round }] })).await;
        let v = claim(&s, "qr", json!({ "node": "worker-1" })).await;
        let id = lease_ids(&v)[0].clone();
        assert!(
            firsts.insert(id.to_string()),
            "lease id {id} handed out again"
        );
        if round == 0 {
            stale = Some(id);
            delete(&s, "/v0/topics/qr").await.ok(200);
        }
    }
    let ack = json!({ "node": "worker-1", "seqs": [1], "lease_ids": [stale] });
    let v = op(&s, "qr", "ack", ack).await;
    has!(v, { "acked": 0, "skipped": [1] });
    has!(counts(&s, "qr").await, { "in_flight": 1 });
    queue(&s, "other", json!({})).await;
    write(&s, "other", json!({ "records": [{ "data": 0 }] })).await;
    let v = claim(&s, "other", json!({ "node": "worker-1" })).await;
    let id = lease_ids(&v)[0].to_string();
    assert!(
        firsts.insert(id.clone()),
        "another queue's first lease id {id}"
    );
}
