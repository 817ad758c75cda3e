//! Durability classes and storage settings through the real binary: `Stream-Durability` on
//! PUT (accepted, reported on HEAD, validated, inherited by forks), what survives a restart
//! per class, `storage.wal_shards` (including a restart with a different shard count) and
//! `storage.sync_interval_ms`.

mod common;

use common::{Options, Server, TempDir, header};
use std::path::Path;
use std::time::Duration;

const TEXT: &str = "text/plain";
const CLASSES: [&str; 4] = ["ephemeral", "memory", "disk", "fsync"];

async fn start(mode: &str, data: &Path) -> Server {
    Server::start_with(Options::default().storage(mode, data)).await
}

/// `PUT url` as a text stream with `Stream-Durability: class` (if any); returns the status.
async fn create_with(s: &Server, url: &str, class: Option<&str>) -> u16 {
    let mut req = s.client.put(url).header("content-type", TEXT);
    if let Some(class) = class {
        req = req.header("stream-durability", class);
    }
    req.send().await.expect("PUT").status().as_u16()
}

/// The class HEAD reports.
async fn class_of(s: &Server, url: &str) -> String {
    let r = s.head(url).await;
    assert_eq!(r.status(), 200, "HEAD {url}");
    header(&r, "stream-durability").expect("HEAD reports Stream-Durability")
}

#[tokio::test]
async fn each_class_is_accepted_reported_and_validated() {
    let tmp = TempDir::new("classes");
    let s = start("file-durable", &tmp.path().join("data")).await;

    for class in CLASSES {
        let url = s.stream(class);
        assert_eq!(create_with(&s, &url, Some(class)).await, 201, "{class}");
        assert_eq!(class_of(&s, &url).await, class);
        s.append(&url, TEXT, format!("in {class}")).await;
        assert_eq!(s.read_all(&url).await, format!("in {class}").as_bytes());

        // Re-creating with the same class, or without naming one, is idempotent (200).
        assert_eq!(create_with(&s, &url, Some(class)).await, 200, "{class}");
        assert_eq!(create_with(&s, &url, None).await, 200, "{class}");
        // Naming another class conflicts, and changes nothing.
        for other in CLASSES.iter().filter(|&&c| c != class) {
            assert_eq!(
                create_with(&s, &url, Some(other)).await,
                409,
                "{class} re-created as {other}"
            );
        }
        assert_eq!(class_of(&s, &url).await, class);
    }

    // Without the header a stream takes the mode's default class.
    let url = s.stream("default");
    assert_eq!(create_with(&s, &url, None).await, 201);
    assert_eq!(class_of(&s, &url).await, "fsync");

    // Unknown values are a 400 and create nothing.
    for bad in ["", "FSYNC", "durable", "disk,fsync", "f sync", "none"] {
        let url = s.stream("bad-class");
        assert_eq!(create_with(&s, &url, Some(bad)).await, 400, "{bad:?}");
        assert_eq!(s.head(&url).await.status(), 404, "{bad:?} created a stream");
    }
}

#[tokio::test]
async fn forks_inherit_their_source_class() {
    let tmp = TempDir::new("fork-class");
    let s = start("file-durable", &tmp.path().join("data")).await;
    for class in CLASSES {
        let src = s.stream(&format!("src-{class}"));
        assert_eq!(create_with(&s, &src, Some(class)).await, 201);
        s.append(&src, TEXT, "base").await;
        let fork = s.stream(&format!("fork-{class}"));
        let r = s
            .client
            .put(&fork)
            .header("stream-forked-from", src.strip_prefix(&s.base).unwrap())
            .send()
            .await
            .expect("PUT fork");
        assert_eq!(r.status(), 201, "fork of a {class} stream");
        assert_eq!(class_of(&s, &fork).await, class, "fork of a {class} stream");
        s.append(&fork, TEXT, "+fork").await;
        assert_eq!(s.read_all(&fork).await, b"base+fork");
    }

    // A fork of an ephemeral stream cannot be durable: it would outlive its source's data.
    let src = s.stream("eph-src");
    assert_eq!(create_with(&s, &src, Some("ephemeral")).await, 201);
    let fork = s.stream("eph-fork");
    let r = s
        .client
        .put(&fork)
        .header("stream-forked-from", src.strip_prefix(&s.base).unwrap())
        .header("stream-durability", "fsync")
        .send()
        .await
        .expect("PUT fork");
    assert_eq!(r.status(), 409);
    assert_eq!(s.head(&fork).await.status(), 404);
}

#[tokio::test]
async fn memory_mode_has_only_the_ephemeral_class() {
    let s = Server::start_with(Options::default().env("DS_STORAGE__MODE", "memory")).await;
    let url = s.stream("mem");
    assert_eq!(create_with(&s, &url, None).await, 201);
    assert_eq!(class_of(&s, &url).await, "ephemeral");
    assert_eq!(
        create_with(&s, &s.stream("eph"), Some("ephemeral")).await,
        201
    );
    // There is no data directory to keep anything else in.
    for class in ["memory", "disk", "fsync"] {
        let url = s.stream(class);
        assert_eq!(create_with(&s, &url, Some(class)).await, 400, "{class}");
        assert_eq!(s.head(&url).await.status(), 404);
    }
}

#[tokio::test]
async fn restarts_keep_durable_classes_and_drop_ephemeral_ones() {
    let tmp = TempDir::new("restart-classes");
    let data = tmp.path().join("data");
    let s = start("file-fast", &data).await;
    let mut urls = Vec::new();
    for class in CLASSES {
        let path = s.path(class);
        let url = s.url(&path);
        assert_eq!(create_with(&s, &url, Some(class)).await, 201);
        for i in 0..5 {
            s.append(&url, TEXT, format!("{class}-{i};")).await;
        }
        urls.push((class, path));
    }
    s.stop_gracefully();

    let s = start("file-fast", &data).await;
    for (class, path) in &urls {
        let url = s.url(path);
        if *class == "ephemeral" {
            assert_eq!(s.head(&url).await.status(), 404, "ephemeral data is gone");
            continue;
        }
        let want: String = (0..5).map(|i| format!("{class}-{i};")).collect();
        assert_eq!(s.read_all(&url).await, want.as_bytes(), "{class}");
        assert_eq!(class_of(&s, &url).await, *class);
        // Still writable, and the name of the ephemeral stream is free again.
        s.append(&url, TEXT, "more").await;
    }
    let eph = s.url(&urls[0].1);
    assert_eq!(create_with(&s, &eph, Some("ephemeral")).await, 201);
}

/// `n` streams of mixed classes with `appends` appends each; returns (path, content).
async fn fill(s: &Server, tag: &str, n: usize, appends: usize) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for i in 0..n {
        let path = s.path(&format!("{tag}-{i}"));
        let url = s.url(&path);
        let class = ["memory", "disk", "fsync"][i % 3];
        assert_eq!(create_with(s, &url, Some(class)).await, 201);
        let mut content = String::new();
        for k in 0..appends {
            let piece = format!("{tag}/{i}/{k}:{};", "p".repeat((i * 7 + k) % 40));
            s.append(&url, TEXT, piece.clone()).await;
            content.push_str(&piece);
        }
        out.push((path, content));
    }
    out
}

async fn assert_all_back(s: &Server, streams: &[(String, String)], when: &str) {
    for (path, content) in streams {
        assert_eq!(
            String::from_utf8(s.read_all(&s.url(path)).await).expect("text"),
            *content,
            "{path} {when}"
        );
    }
}

#[tokio::test]
async fn wal_shards_keep_everything_and_can_change_between_runs() {
    for (first, second) in [("1", "3"), ("3", "1")] {
        let tmp = TempDir::new("shards");
        let data = tmp.path().join("data");
        let opts = |shards: &str| {
            Options::default()
                .storage("file-durable", &data)
                .env("DS_STORAGE__WAL_SHARDS", shards)
        };
        let s = Server::start_with(opts(first)).await;
        let mut streams = fill(&s, "a", 24, 6).await;
        drop(s); // SIGKILL: recovery replays every shard's WAL

        let s = Server::start_with(opts(first)).await;
        assert_all_back(
            &s,
            &streams,
            &format!("after kill -9 with {first} shard(s)"),
        )
        .await;
        s.stop_gracefully();

        let s = Server::start_with(opts(second)).await;
        assert_all_back(
            &s,
            &streams,
            &format!("after {first} then {second} shard(s)"),
        )
        .await;
        // Streams written under the old layout take appends under the new one.
        for (path, content) in streams.iter_mut() {
            s.append(&s.url(path), TEXT, "x").await;
            content.push('x');
        }
        streams.extend(fill(&s, "b", 9, 3).await);
        drop(s);

        let s = Server::start_with(opts(second)).await;
        assert_all_back(
            &s,
            &streams,
            &format!("after kill -9 with {second} shard(s)"),
        )
        .await;
        // And back to the default shard count.
        s.stop_gracefully();
        let s = start("file-durable", &data).await;
        assert_all_back(&s, &streams, "with the default shard count").await;
    }
}

#[tokio::test]
async fn disk_class_works_with_long_and_short_sync_intervals() {
    for interval in ["1", "5000"] {
        let tmp = TempDir::new("interval");
        let data = tmp.path().join("data");
        let opts = Options::default()
            .storage("file-fast", &data)
            .env("DS_STORAGE__SYNC_INTERVAL_MS", interval);
        let s = Server::start_with(opts.clone()).await;
        let streams = fill(&s, "i", 6, 8).await;
        for (path, content) in &streams {
            assert_eq!(s.read_all(&s.url(path)).await, content.as_bytes());
        }
        let disk = s.stream("disk-default");
        assert_eq!(create_with(&s, &disk, None).await, 201);
        assert_eq!(class_of(&s, &disk).await, "disk");
        s.stop_gracefully();
        let s = Server::start_with(opts).await;
        assert_all_back(&s, &streams, &format!("with a {interval} ms sync interval")).await;
    }
}

/// A `disk` append is acknowledged after its WAL `write()`, so a process crash (whose page
/// cache survives) keeps it even when no fsync came for seconds. (Appends racing the kill are
/// the crash test's business; these are all answered well before it.)
#[tokio::test]
async fn disk_class_survives_kill_dash_nine_before_its_sync() {
    let tmp = TempDir::new("interval-kill");
    let data = tmp.path().join("data");
    let opts = Options::default()
        .storage("file-fast", &data)
        .env("DS_STORAGE__SYNC_INTERVAL_MS", "10000");
    let s = Server::start_with(opts.clone()).await;
    let streams = fill(&s, "k", 6, 20).await;
    drop(s); // SIGKILL, well inside the sync interval
    let s = Server::start_with(opts).await;
    assert_all_back(&s, &streams, "after kill -9 inside the sync interval").await;
}

/// Copy directory `from` into `to`, recursively.
fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let dest = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &dest);
        } else {
            std::fs::copy(e.path(), dest).unwrap();
        }
    }
}

/// A data directory that lost its checkpoint or a WAL segment it needs is refused at start-up,
/// naming what is missing: it is never started with the acknowledged data those held gone
/// (and the stream files a lost checkpoint described are not deleted as orphans).
#[tokio::test]
async fn a_lost_checkpoint_or_wal_segment_is_refused() {
    let tmp = TempDir::new("lost-files");
    let data = tmp.path().join("data");
    let s = start("file-durable", &data).await;
    let path = |s: &Server, url: &str| url.strip_prefix(s.base.as_str()).unwrap().to_string();
    let a = s.stream("a");
    let (a_path, b_path) = (path(&s, &a), path(&s, &s.stream("b")));
    s.create(&a, TEXT).await;
    s.append(&a, TEXT, "hello").await;
    s.stop_gracefully(); // a checkpoint
    let s = start("file-durable", &data).await;
    let (a, b) = (s.url(&a_path), s.url(&b_path));
    s.append(&a, TEXT, " world").await;
    s.create(&b, TEXT).await;
    s.append(&b, TEXT, "bee").await;
    drop(s); // kill -9

    let refused = |dir: &Path, what: &str| {
        let dir = dir.to_str().unwrap();
        let env = [
            ("DS_STORAGE__MODE", "file-durable"),
            ("DS_STORAGE__DATA_DIR", dir),
        ];
        let (st, err) = common::run_to_exit(&["--port", "0"], &env, Duration::from_secs(30));
        assert!(!st.success(), "{what}: started");
        assert!(err.contains("missing"), "{what}: {err}");
        err
    };
    let lost_checkpoint = tmp.path().join("no-checkpoint");
    copy_dir(&data, &lost_checkpoint);
    std::fs::remove_file(lost_checkpoint.join("checkpoint")).unwrap();
    refused(&lost_checkpoint, "no checkpoint");
    assert!(
        std::fs::read_dir(lost_checkpoint.join("streams"))
            .unwrap()
            .count()
            >= 4,
        "the stream files are all still there"
    );

    let lost_segments = tmp.path().join("no-segments");
    copy_dir(&data, &lost_segments);
    for shard in std::fs::read_dir(lost_segments.join("wal")).unwrap() {
        for seg in std::fs::read_dir(shard.unwrap().path()).unwrap() {
            std::fs::remove_file(seg.unwrap().path()).unwrap();
        }
    }
    let err = refused(&lost_segments, "no WAL segments");
    assert!(err.contains(".wal"), "names the segment: {err}");
    std::fs::remove_file(lost_segments.join("checkpoint")).unwrap();
    refused(&lost_segments, "no checkpoint and no WAL");

    // The directory as it was recovers everything.
    let s = start("file-durable", &data).await;
    assert_eq!(s.read_all(&s.url(&a_path)).await, b"hello world");
    assert_eq!(s.read_all(&s.url(&b_path)).await, b"bee");
}
