//! Stream files damaged while the server was down: bytes that fail their checksum are refused
//! (`500` naming the damage), never served; the rest of the stream and other streams are
//! served as before. Through the real binary, on the zero-copy path (plain TCP: `sendfile`)
//! and the copying one (JSON).

mod common;

use common::{Options, Server, TempDir, offset};
use std::path::{Path, PathBuf};

const FIRST: &str = "the first record, damaged later";
const SECOND: &str = "the second record";

fn opts(data: &Path) -> Options {
    Options::default().storage("file-durable", data)
}

/// The data file under `streams/` holding `needle`.
fn data_file_with(data: &Path, needle: &[u8]) -> PathBuf {
    let dir = data.join("streams");
    std::fs::read_dir(&dir)
        .expect("streams/")
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "data"))
        .find(|p| std::fs::read(p).is_ok_and(|b| b.windows(needle.len()).any(|w| w == needle)))
        .expect("a data file holding the record")
}

fn flip_byte(path: &Path, at: usize) {
    let mut bytes = std::fs::read(path).expect("read");
    bytes[at] ^= 0x20;
    std::fs::write(path, bytes).expect("write");
}

#[tokio::test]
async fn damaged_bytes_are_refused_and_the_rest_is_served() {
    let data = TempDir::new("damaged");
    let s = Server::start_with(opts(data.path())).await;
    let paths = [s.path("a"), s.path("b"), s.path("j")];
    let [a, b, j] = paths.clone().map(|p| s.url(&p));
    s.create(&a, "text/plain").await;
    s.create(&b, "text/plain").await;
    s.create(&j, "application/json").await;
    s.append(&a, "text/plain", FIRST).await;
    s.append(&a, "text/plain", SECOND).await;
    s.append(&b, "text/plain", "untouched").await;
    s.append(&j, "application/json", r#"{"n":"json record"}"#)
        .await;
    s.stop_gracefully();

    flip_byte(&data_file_with(data.path(), FIRST.as_bytes()), 4);
    flip_byte(&data_file_with(data.path(), b"json record"), 8);

    let s = Server::start_with(opts(data.path())).await;
    let [a, b, j] = paths.map(|p| s.url(&p));
    for (url, from) in [
        (&a, "-1".to_string()),
        (&a, offset(0)),
        (&j, "-1".to_string()),
    ] {
        let r = s.read(url, &from).await;
        assert_eq!(r.status(), 500, "read {url} from {from}");
        let body = r.text().await.expect("body");
        assert!(body.contains("damaged"), "{body}");
        // Refused every time, not only the first.
        assert_eq!(s.read(url, &from).await.status(), 500);
    }
    // What follows the damaged record, the stream's metadata and other streams are served.
    let r = s.read(&a, &offset(FIRST.len() as u64)).await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.text().await.expect("body"), SECOND);
    assert_eq!(s.head(&a).await.status(), 200);
    assert_eq!(s.read_all(&b).await, b"untouched");
    // Each refusal is counted.
    let metrics = s
        .client
        .get(s.url("/metrics"))
        .send()
        .await
        .expect("GET /metrics");
    let text = metrics.text().await.expect("metrics");
    assert!(text.contains("riffle_damaged_reads_total 6"), "{text}");
    // New appends to the damaged stream are stored and served.
    s.append(&a, "text/plain", "third").await;
    let r = s
        .read(&a, &offset((FIRST.len() + SECOND.len()) as u64))
        .await;
    assert_eq!(r.text().await.expect("body"), "third");
    s.stop_gracefully();
}
