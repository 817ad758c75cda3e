//! Catch-up reads of file-backed streams: ranges in files go out with `sendfile` on plain
//! HTTP/1.1 and are read for TLS and HTTP/2. Every transport returns exactly the stored bytes,
//! across the files / pending-tail boundary, from any offset, across a fork's inheritance
//! point, and after a restart (everything in files); and memory-mode reads from every kind of
//! memory arena.

mod common;

use common::H2;
use common::{Options, Server, TempDir, node_json};
use sha2::{Digest, Sha256};

const RECORDS: usize = 120;
const RECORD: usize = 20_000;

/// Record `i`'s bytes: distinct per record and position, so a misplaced range shows.
fn record(i: usize) -> Vec<u8> {
    (0..RECORD)
        .map(|j| ((i * 7 + j * 13) % 251) as u8)
        .collect()
}

fn stored() -> Vec<u8> {
    (0..RECORDS).flat_map(record).collect()
}

/// Read from `offset` to the end over HTTP/1.1, following `Stream-Next-Offset`.
async fn read_h1(s: &Server, path: &str, mut offset: String) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let r = s
            .client
            .get(s.url(&format!("{path}?offset={offset}")))
            .send()
            .await
            .expect("answer");
        assert_eq!(r.status(), 200);
        let next = common::header(&r, "stream-next-offset").expect("next offset");
        let done = common::header(&r, "stream-up-to-date").is_some();
        out.extend_from_slice(&r.bytes().await.expect("body"));
        if done {
            return out;
        }
        offset = next;
    }
}

async fn read_h2(port: u16, path: &str) -> Vec<u8> {
    let mut c = H2::connect(port).await.expect("h2c");
    let mut offset = "-1".to_string();
    let mut out = Vec::new();
    loop {
        let r = c
            .request("GET", &format!("{path}?offset={offset}"), &[], b"")
            .await
            .expect("h2 answer");
        assert_eq!(r.status, 200);
        out.extend_from_slice(&r.body);
        if r.header("stream-up-to-date").is_some() {
            return out;
        }
        offset = r.header("stream-next-offset").expect("next").to_string();
    }
}

/// Read the whole stream over HTTPS with HTTP/1.1 (Node's client); its SHA-256 and length.
async fn read_tls(port: u16, path: &str) -> (String, u64) {
    let script = r#"
        const https = require("https");
        const crypto = require("crypto");
        const [port, path] = [process.argv[1], process.argv[2]];
        const hash = crypto.createHash("sha256");
        let len = 0;
        const get = (offset) => https.get({ host: "127.0.0.1", port, rejectUnauthorized: false,
            path: `${path}?offset=${offset}` }, (res) => {
          res.on("data", (c) => { hash.update(c); len += c.length; });
          res.on("end", () => {
            if (res.headers["stream-up-to-date"]) {
              console.log(JSON.stringify([hash.digest("hex"), len]));
            } else {
              get(res.headers["stream-next-offset"]);
            }
          });
        }).on("error", (e) => { console.error(e); process.exit(1); });
        get("-1");
    "#;
    let v = node_json(script, &[&port.to_string(), path]).await;
    (
        v[0].as_str().expect("hash").to_string(),
        v[1].as_u64().expect("len"),
    )
}

async fn fill(s: &Server, path: &str) {
    s.create(&s.url(path), "application/octet-stream").await;
    for i in 0..RECORDS {
        s.append(&s.url(path), "application/octet-stream", record(i))
            .await;
    }
}

#[tokio::test]
async fn catch_up_reads_return_the_stored_bytes_over_every_transport() {
    let data = TempDir::new("zero-copy");
    let fixtures = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let opts = || {
        Options::default()
            .storage("file-durable", data.path())
            .env(
                "DS_TLS__CERT_PATH",
                fixtures.join("test-cert.pem").to_str().expect("utf-8"),
            )
            .env(
                "DS_TLS__KEY_PATH",
                fixtures.join("test-key.pem").to_str().expect("utf-8"),
            )
    };
    let want = stored();
    let digest = format!("{:x}", Sha256::digest(&want));
    let path = "/v1/stream/big";
    let plain_data = TempDir::new("zero-copy-plain");
    let s = Server::start_with(Options::default().storage("file-durable", plain_data.path())).await;
    fill(&s, path).await;
    // Whole, and from an offset inside the files (record 10's start) and near the tail.
    assert!(
        read_h1(&s, path, "-1".into()).await == want,
        "HTTP/1.1 whole"
    );
    let at = common::offset((10 * RECORD) as u64);
    assert!(
        read_h1(&s, path, at).await == want[10 * RECORD..],
        "HTTP/1.1 from record 10"
    );
    let at = common::offset(((RECORDS - 1) * RECORD) as u64);
    assert!(
        read_h1(&s, path, at).await == want[(RECORDS - 1) * RECORD..],
        "the last record"
    );
    assert!(read_h2(s.port, path).await == want, "h2c whole");
    // A fork reads its source's file range, then its own.
    let fork = "/v1/stream/big-fork";
    let forked = s
        .client
        .put(s.url(fork))
        .header("content-type", "application/octet-stream")
        .header("stream-forked-from", path)
        .send()
        .await
        .expect("answer");
    assert_eq!(forked.status(), 201);
    s.append(
        &s.url(fork),
        "application/octet-stream",
        b"tail-of-the-fork".to_vec(),
    )
    .await;
    let mut fork_want = want.clone();
    fork_want.extend_from_slice(b"tail-of-the-fork");
    assert!(
        read_h1(&s, fork, "-1".into()).await == fork_want,
        "the fork"
    );
    drop(s);

    // After a restart everything is in files.
    let s = Server::start_with(Options::default().storage("file-durable", plain_data.path())).await;
    assert!(
        read_h1(&s, path, "-1".into()).await == want,
        "after a restart"
    );
    assert!(
        read_h1(&s, fork, "-1".into()).await == fork_want,
        "the fork after a restart"
    );
    drop(s);

    // Over TLS with HTTP/1.1: the same pieces, read instead of sent from the file.
    let tls = Server::start_tls(opts()).await;
    let tls_path = "/v1/stream/tls";
    assert_eq!(fill_over_tls(&tls, tls_path).await, RECORDS);
    let (hash, len) = read_tls(tls.port, tls_path).await;
    assert_eq!((hash, len), (digest, want.len() as u64), "TLS whole");
}

/// Fill a stream on a TLS server (the tests' reqwest speaks no TLS): Node appends.
async fn fill_over_tls(s: &Server, path: &str) -> usize {
    let script = r#"
        const https = require("https");
        const [port, path, n, size] = process.argv.slice(1);
        const call = (method, body) => new Promise((ok, fail) => {
          const req = https.request({ host: "127.0.0.1", port, path, method, rejectUnauthorized: false,
            headers: { "content-type": "application/octet-stream" } }, (res) => {
            res.resume(); res.on("end", () => ok(res.statusCode));
          });
          req.on("error", fail);
          req.end(body);
        });
        (async () => {
          await call("PUT", Buffer.alloc(0));
          let done = 0;
          for (let i = 0; i < Number(n); i++) {
            const b = Buffer.alloc(Number(size));
            for (let j = 0; j < b.length; j++) b[j] = (i * 7 + j * 13) % 251;
            if ((await call("POST", b)) === 204) done++;
          }
          console.log(JSON.stringify(done));
        })().catch((e) => { console.error(e); process.exit(1); });
    "#;
    let v = node_json(
        script,
        &[
            &s.port.to_string(),
            path,
            &RECORDS.to_string(),
            &RECORD.to_string(),
        ],
    )
    .await;
    v.as_u64().expect("a count") as usize
}

/// The files the process holds open (where its links point).
fn open_files(pid: u32) -> Vec<String> {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| {
            d.filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
                .map(|p| p.display().to_string())
                .collect()
        })
        .unwrap_or_default()
}

/// Memory mode keeps sealed chunks in the arena `storage.arena` names (an unlinked file in a
/// directory, shared memory, or none): reads over HTTP/1.1 (`sendfile`) and HTTP/2 (the
/// mapping) return the stored bytes whichever it is, for two streams written in turns (their
/// chunks sit side by side in the arena) with large and small records; a directory that
/// cannot hold the file falls back to shared memory.
#[tokio::test]
async fn memory_mode_reads_the_stored_bytes_from_every_arena() {
    let dir = TempDir::new("arena");
    let d = dir.path().to_str().expect("utf-8").to_string();
    let missing = format!("{d}/missing");
    let cases = [
        ("file", Some(d.as_str()), "an unlinked file in"),
        ("file", Some(missing.as_str()), "shared memory"),
        ("memfd", None, "shared memory"),
        ("heap", None, "the heap"),
    ];
    for (arena, arena_dir, kept_in) in cases {
        let mut opts = Options::default().env("DS_STORAGE__ARENA", arena);
        if let Some(a) = arena_dir {
            opts = opts.env("DS_STORAGE__ARENA_DIR", a);
        }
        let s = Server::start_with(opts).await;
        let case = format!("{arena} {arena_dir:?}");
        let (mut a, mut b) = (Vec::new(), Vec::new());
        for p in ["/v1/stream/a", "/v1/stream/b"] {
            s.create(&s.url(p), "application/octet-stream").await;
        }
        for i in 0..60 {
            // Records of whole pages, large records (a chunk each) and small ones (gathered
            // into chunks): each stream's chunks are packed side by side in its arena
            // extent, and a read ends in a short run written from the mapping.
            let r = match i % 3 {
                0 => record(i).repeat(4)[..65_536].to_vec(),
                1 => record(i),
                _ => record(i)[..3000].to_vec(),
            };
            for (p, want) in [("/v1/stream/a", &mut a), ("/v1/stream/b", &mut b)] {
                s.append(&s.url(p), "application/octet-stream", r.clone())
                    .await;
                want.extend_from_slice(&r);
            }
        }
        for (p, want) in [("/v1/stream/a", &a), ("/v1/stream/b", &b)] {
            assert!(
                read_h1(&s, p, "-1".into()).await == *want,
                "{case}: HTTP/1.1 {p}"
            );
            for from in [50_000, 1_000_000] {
                assert!(
                    read_h1(&s, p, common::offset(from as u64)).await == want[from..],
                    "{case}: HTTP/1.1 {p} from {from}"
                );
            }
            assert!(read_h2(s.port, p).await == *want, "{case}: HTTP/2 {p}");
        }
        let log = s.stderr();
        assert!(
            log.contains(&format!("RAM-held chunks are kept in {kept_in}")),
            "{case}: {log}"
        );
        let files = open_files(s.pid());
        let in_dir = files
            .iter()
            .any(|f| f.starts_with(&d) && f.ends_with("(deleted)"));
        let memfd = files.iter().any(|f| f.contains("memfd:riffle-arena"));
        match kept_in {
            "an unlinked file in" => assert!(in_dir && !memfd, "{case}: {files:?}"),
            "shared memory" => assert!(memfd && !in_dir, "{case}: {files:?}"),
            _ => assert!(!memfd && !in_dir, "{case}: {files:?}"),
        }
    }
}
