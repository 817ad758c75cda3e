//! Helpers shared by the integration tests.
#![allow(dead_code)]

use riffle_wal::{Commit, Dir, Lsn, MemDir, Recovery, Wal, WalConfig, WalError};
use std::sync::{Arc, mpsc};
use std::time::Duration;

pub fn cfg(segment_bytes: u64, sync_interval_ms: u64) -> WalConfig {
    WalConfig {
        shard: 0,
        segment_bytes,
        sync_interval: Duration::from_millis(sync_interval_ms),
    }
}

/// Records replayed, with their positions.
pub type Replayed = Vec<(Lsn, Vec<u8>)>;

/// Open a shard and collect what it replays.
pub fn open(dir: Arc<dyn Dir>, cfg: WalConfig) -> Result<(Wal, Recovery, Replayed), WalError> {
    let mut seen = Vec::new();
    let (wal, rec) = Wal::open(dir, cfg, |lsn, p| {
        seen.push((lsn, p.to_vec()));
        Ok(())
    })?;
    Ok((wal, rec, seen))
}

/// Open, collect the payloads, close.
pub fn replayed(dir: Arc<dyn Dir>, cfg: WalConfig) -> Result<(Recovery, Vec<Vec<u8>>), WalError> {
    let (wal, rec, seen) = open(dir, cfg)?;
    drop(wal);
    Ok((rec, seen.into_iter().map(|(_, p)| p).collect()))
}

/// Append and wait for the callback.
pub fn append(wal: &Wal, payload: &[u8], commit: Commit) -> Result<Lsn, WalError> {
    let (tx, rx) = mpsc::channel();
    wal.append(
        payload.to_vec(),
        commit,
        Box::new(move |r| {
            let _ = tx.send(r);
        }),
    );
    rx.recv().expect("the callback runs exactly once")
}

pub fn payload(i: usize) -> Vec<u8> {
    format!("record-{i:04}-{}", "x".repeat(i % 23)).into_bytes()
}

/// A fresh in-memory directory holding one file with `bytes`, durably.
pub fn mem_with(path: &str, bytes: &[u8]) -> MemDir {
    let d = MemDir::new();
    let f = d.open(path, true).unwrap();
    f.write_all_at(bytes, 0).unwrap();
    f.sync_data().unwrap();
    d.sync_dir(path.rsplit_once('/').map_or("", |(d, _)| d))
        .unwrap();
    d
}

pub fn read_file(dir: &dyn Dir, path: &str) -> Vec<u8> {
    let f = dir.open(path, false).unwrap();
    let mut buf = vec![0u8; f.len().unwrap() as usize];
    let n = f.read_at(&mut buf, 0).unwrap();
    buf.truncate(n);
    buf
}

pub fn seg(id: u64) -> String {
    format!("wal/00/{id:016x}.wal")
}
