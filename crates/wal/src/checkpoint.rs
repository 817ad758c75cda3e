//! Checkpoint files: published atomically (write a temporary file, sync it, rename it over the
//! old one, sync the directory), and verified on read (magic, length, CRC32C), so a crash at any
//! moment leaves either the old checkpoint or the new one, never a mix.

use crate::dir::Dir;
use crate::error::WalError;

const MAGIC: &[u8; 8] = b"RIFFLCKP";
const HEADER: usize = 16; // magic, u32 length, u32 crc32c of the body

fn dir_of(path: &str) -> &str {
    path.rsplit_once('/').map_or("", |(d, _)| d)
}

/// Publish `bytes` atomically as the checkpoint file `path`.
pub fn write_checkpoint(dir: &dyn Dir, path: &str, bytes: &[u8]) -> Result<(), WalError> {
    let len = u32::try_from(bytes.len()).map_err(|_| {
        let e = std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "a checkpoint is at most 4 GiB",
        );
        WalError::io("write", path, &e)
    })?;
    let tmp = format!("{path}.tmp");
    let mut buf = Vec::with_capacity(HEADER + bytes.len());
    buf.extend_from_slice(MAGIC);
    buf.extend_from_slice(&len.to_le_bytes());
    buf.extend_from_slice(&crc32c::crc32c(bytes).to_le_bytes());
    buf.extend_from_slice(bytes);
    let f = dir
        .open(&tmp, true)
        .map_err(|e| WalError::io("create", &tmp, &e))?;
    f.set_len(0)
        .map_err(|e| WalError::io("truncate", &tmp, &e))?;
    f.write_all_at(&buf, 0)
        .map_err(|e| WalError::io("write", &tmp, &e))?;
    f.sync_data().map_err(|e| WalError::io("sync", &tmp, &e))?;
    dir.rename(&tmp, path)
        .map_err(|e| WalError::io("rename", path, &e))?;
    dir.sync_dir(dir_of(path))
        .map_err(|e| WalError::io("sync directory of", path, &e))
}

/// Read and verify the checkpoint `path`; `None` if there is none.
pub fn read_checkpoint(dir: &dyn Dir, path: &str) -> Result<Option<Vec<u8>>, WalError> {
    if !dir.exists(path) {
        return Ok(None);
    }
    let f = dir
        .open(path, false)
        .map_err(|e| WalError::io("open", path, &e))?;
    let len = f.len().map_err(|e| WalError::io("stat", path, &e))?;
    let mut buf = vec![0u8; len as usize];
    let n = f
        .read_at(&mut buf, 0)
        .map_err(|e| WalError::io("read", path, &e))?;
    buf.truncate(n);
    let corrupt = |offset: u64, reason: &str| WalError::Corrupt {
        path: path.to_string(),
        offset,
        reason: reason.to_string(),
    };
    if buf.len() < HEADER || &buf[..8] != MAGIC {
        return Err(corrupt(0, "not a checkpoint (bad magic)"));
    }
    let body_len = u32::from_le_bytes([buf[8], buf[9], buf[10], buf[11]]) as usize;
    let crc = u32::from_le_bytes([buf[12], buf[13], buf[14], buf[15]]);
    let body = &buf[HEADER..];
    if body.len() != body_len {
        return Err(corrupt(8, "length does not match the file"));
    }
    if crc32c::crc32c(body) != crc {
        return Err(corrupt(HEADER as u64, "checksum mismatch"));
    }
    Ok(Some(body.to_vec()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dir::MemDir;

    #[test]
    fn round_trip_and_damage() {
        let d = MemDir::new();
        assert_eq!(read_checkpoint(&d, "checkpoint").unwrap(), None);
        write_checkpoint(&d, "checkpoint", b"one").unwrap();
        write_checkpoint(&d, "checkpoint", b"two").unwrap();
        assert_eq!(read_checkpoint(&d, "checkpoint").unwrap().unwrap(), b"two");
        let f = d.open("checkpoint", false).unwrap();
        f.write_all_at(b"X", 17).unwrap();
        let e = read_checkpoint(&d, "checkpoint").unwrap_err();
        assert!(e.to_string().contains("checkpoint"), "{e}");
    }

    #[test]
    fn a_crash_mid_write_keeps_the_old_checkpoint() {
        let d = MemDir::new();
        write_checkpoint(&d, "checkpoint", b"old").unwrap();
        // Simulate a crash after the temporary file was written but before the rename.
        let f = d.open("checkpoint.tmp", true).unwrap();
        f.write_all_at(b"garbage", 0).unwrap();
        d.crash();
        assert_eq!(read_checkpoint(&d, "checkpoint").unwrap().unwrap(), b"old");
    }
}
