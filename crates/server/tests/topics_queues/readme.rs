//! The queue recipes of the topics README and Riffle's README, verbatim.

use super::*;

/// The topics README's job-queue recipe, as a queue: the topic is created with
/// `"type": "queue"` (sent as its curl sends it, `-d` without a content type), producers POST
/// jobs, cancels are match deletes, workers claim and ack.
#[tokio::test]
async fn topics_readme_job_queue_recipe() {
    let s = start().await;
    let curl_d = async |method: Method, path: &str, body: &str| {
        raw(&s, method, path, Some(FORM), body.as_bytes()).await
    };
    let body = r#"{ "type": "queue", "durable": true, "cap_records": 0 }"#;
    let r = curl_d(Method::PUT, "/v0/topics/transcode", body).await;
    let v = r.ok(201);
    let want = json!({ "type": "queue", "durable": true, "durability": "fsync" });
    assert_config(&v["config"], want);
    let clips = ["clip-9001", "clip-9002", "clip-7", "clip-8"];
    let jobs = clips.map(|c| json!({ "data": { "clip": c }, "tag": c }));
    write(&s, "transcode", json!({ "records": jobs })).await;
    let del = "/v0/topics/transcode/delete";
    let one = r#"{ "match": ["tag", "Eq", "clip-7"] }"#;
    assert_eq!(curl_d(Method::POST, del, one).await.ok(200)["deleted"], 1);
    let batch = r#"{ "match": ["tag", "Glob", "clip-90*"] }"#;
    assert_eq!(curl_d(Method::POST, del, batch).await.ok(200)["deleted"], 2);
    has!(counts(&s, "transcode").await, { "ready": 1, "in_flight": 0 });
    let v = claim(&s, "transcode", json!({ "node": "transcode-1", "max": 50 })).await;
    assert_eq!(cseqs(&v), [4], "cancelled jobs are never claimed");
    let ack = json!({ "node": "transcode-1", "seqs": [4], "lease_ids": lease_ids(&v) });
    has!(op(&s, "transcode", "ack", ack).await, { "acked": 1, "ready": 0, "in_flight": 0 });
    assert_eq!(state(&s, "transcode").await["count"], 0);
}

/// Riffle's README queue commands, bodies byte for byte.
#[tokio::test]
async fn riffle_readme_queue_commands() {
    let s = start().await;
    let body = r#"{ "type": "queue",
  "durable": true, "lease_ms": 30000, "max_deliveries": 5, "dead_letter": "transcode:dead" }"#;
    let path = "/v0/topics/transcode";
    let v = raw(&s, Method::PUT, path, Some(JSON), body.as_bytes()).await;
    let want = json!({ "type": "queue", "durable": true, "durability": "fsync",
                       "max_deliveries": 5, "dead_letter": "transcode:dead" });
    assert_config(&v.ok(201)["config"], want);
    let body = r#"{ "records": [ { "data": { "clip": 9001 } } ] }"#;
    post_text(&s, "/v0/topics/transcode", body).await.ok(200);
    let body = r#"{ "node": "worker-1", "max": 8, "wait_ms": 10000 }"#;
    let started = Instant::now();
    let v = post_text(&s, "/v0/topics/transcode/claim", body).await;
    let v = v.ok(200);
    assert!(started.elapsed() < ms(2000), "a job was ready");
    has!(v, { "count": 1, "ready": 0 });
    has!(claimed(&v)[0], { "$seq": 1, "data": { "clip": 9001 }, "deliveries": 1 });
    // The README's lease id is a placeholder for the claimed one.
    let body = r#"{ "node": "worker-1", "seqs": [1], "lease_ids": ["lease_..."] }"#;
    let lease = claimed(&v)[0]["lease_id"].as_str().unwrap().to_string();
    let body = body.replace("lease_...", &lease);
    let v = post_text(&s, "/v0/topics/transcode/ack", &body).await;
    has!(v.ok(200), { "acked": 1, "skipped": [] });
    let body = r#"{ "node": "worker-1", "seqs": [1], "delay_ms": 5000 }"#;
    let v = post_text(&s, "/v0/topics/transcode/nack", body).await;
    let v = v.ok(200);
    has!(v, { "nacked": 0, "skipped": [1] });

    // `curl -N` sends `Accept: */*`.
    write_n(&s, "transcode", 4).await;
    let path = "/v0/topics/transcode/work?node=worker-1&max=4";
    let mut sse = open_path(&s, path, "*/*", None).await;
    let mut got = Vec::new();
    for _ in 0..4 {
        got.push(next_job(&mut sse).await["$seq"].as_u64().unwrap());
    }
    assert_eq!(got, [2, 3, 4, 5]);
}
