//! Recovery over arbitrary bytes after a valid segment header: it never panics, a refusal is
//! `Corrupt` and changes nothing, and success only ever cuts the file.
#![no_main]

use libfuzzer_sys::fuzz_target;
use riffle_wal::{Dir, MemDir, Wal, WalConfig, WalError};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

const SEGMENT: &str = "wal/00/0000000000000001.wal";

fn config() -> WalConfig {
    WalConfig {
        shard: 0,
        segment_bytes: 1 << 20,
        sync_interval: Duration::from_millis(10),
    }
}

fn read(dir: &MemDir) -> Option<Vec<u8>> {
    let f = dir.open(SEGMENT, false).ok()?;
    let mut buf = vec![0u8; f.len().ok()? as usize];
    let n = f.read_at(&mut buf, 0).ok()?;
    buf.truncate(n);
    Some(buf)
}

/// The header a real shard writes for its first segment.
fn header() -> &'static [u8] {
    static HEADER: OnceLock<Vec<u8>> = OnceLock::new();
    HEADER.get_or_init(|| {
        let dir = MemDir::new();
        drop(Wal::open(Arc::new(dir.clone()), config(), |_, _| Ok(())).expect("open"));
        read(&dir).expect("segment 1")
    })
}

fuzz_target!(|tail: &[u8]| {
    let bytes = [header(), tail].concat();
    let dir = MemDir::new();
    let f = dir.open(SEGMENT, true).expect("create");
    f.write_all_at(&bytes, 0).expect("write");
    match Wal::open(Arc::new(dir.clone()), config(), |_, _| Ok(())) {
        Ok(_) => {
            let after = read(&dir).expect("segment 1 stays");
            assert!(bytes.starts_with(&after), "recovery only cuts");
        }
        Err(WalError::Corrupt { .. }) => assert_eq!(read(&dir).as_deref(), Some(&bytes[..])),
        Err(e) => panic!("{e}"),
    }
});
