//! Errors of the WAL and checkpoints: I/O failures (with the path and the OS error, so a full
//! disk can be told apart), damage found by recovery (with the file and byte offset), and
//! errors from the caller's replay function.

use std::io;

#[derive(Debug, Clone, thiserror::Error)]
pub enum WalError {
    #[error("{op} {path}: {message}")]
    Io {
        op: &'static str,
        path: String,
        kind: io::ErrorKind,
        raw_os_error: Option<i32>,
        message: String,
    },
    #[error("{path} is damaged at byte {offset}: {reason}")]
    Corrupt {
        path: String,
        offset: u64,
        reason: String,
    },
    /// A segment recovery needs is not there (see `Wal::open_from`).
    #[error("{path} is missing: {reason}")]
    Missing { path: String, reason: String },
    #[error("replay: {0}")]
    Replay(String),
    #[error("the WAL is shut down")]
    Closed,
}

impl WalError {
    pub(crate) fn io(op: &'static str, path: &str, e: &io::Error) -> Self {
        WalError::Io {
            op,
            path: path.to_string(),
            kind: e.kind(),
            raw_os_error: e.raw_os_error(),
            message: e.to_string(),
        }
    }

    /// The disk is full (ENOSPC): callers answer "insufficient storage".
    pub fn is_no_space(&self) -> bool {
        matches!(self, WalError::Io { kind, raw_os_error, .. }
            if *kind == io::ErrorKind::StorageFull || *raw_os_error == Some(28))
    }
}
