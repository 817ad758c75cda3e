//! Recovery: replay a shard's segments in order, stop at the end or at a torn tail of the last
//! segment (which is cut off), and report any other damage without changing anything.
//!
//! The rules, and why they are safe:
//!
//! - A segment's header is written and synced before any record goes into it, so a last
//!   segment no longer than a header, holding a prefix of its header (or zeros where that
//!   never reached the disk), was being created when the process died: it holds nothing and
//!   is removed. Any other bad header is damage.
//! - Records are appended only at the end of the newest segment, and a segment is synced before
//!   the next one is created, so only the end of the last segment that holds records can hold
//!   a write the crash interrupted, and it leaves a prefix of one batch. (Segments after it
//!   hold no record: a rotation whose new segment could not be completed leaves one behind,
//!   and the committer goes on writing to the older one.) A damaged record there with no intact
//!   record anywhere after it (see [`valid_data_after`]) is such a torn tail: the file is
//!   truncated before it and synced.
//! - A damaged record in an earlier segment, or one followed by intact records, cannot come
//!   from an interrupted append: it is [`WalError::Corrupt`], naming the file and offset, and
//!   nothing is changed, so the evidence stays for an operator.
//! - A power loss can persist a later page of an unsynced write but not an earlier one. That
//!   also looks like damage followed by intact records, and it is refused too: without sync
//!   markers it cannot be told from damage to records already acknowledged, and refusing
//!   loses nothing where guessing "torn" would silently drop them.

use crate::dir::{Dir, DirFile};
use crate::error::WalError;
use crate::format::{
    HEADER, check_header, max_record, parse_record, segment_dir, segment_header, segment_id,
    segment_path, valid_data_after,
};
use crate::wal::{Lsn, Recovery, StopReason, WalConfig};

/// The caller's replay function.
pub(crate) type Replay<'a> = dyn FnMut(Lsn, &[u8]) -> Result<(), String> + 'a;

fn read_all(f: &dyn DirFile, path: &str) -> Result<Vec<u8>, WalError> {
    let len = f.len().map_err(|e| WalError::io("stat", path, &e))?;
    let len = usize::try_from(len).map_err(|_| WalError::Corrupt {
        path: path.to_string(),
        offset: 0,
        reason: format!("impossible segment size {len}"),
    })?;
    let mut buf = vec![0u8; len];
    let n = f
        .read_at(&mut buf, 0)
        .map_err(|e| WalError::io("read", path, &e))?;
    if n != len {
        // The file shrank under us (nothing else should write it): what was not read may hold
        // intact records, so taking the short read for the segment could cut them off.
        let e = std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            format!("read {n} of {len} bytes"),
        );
        return Err(WalError::io("read", path, &e));
    }
    Ok(buf)
}

/// Whether a last segment with a bad header can only be one whose creation was interrupted:
/// no longer than a header, and every byte either the header's or zero (the header is written
/// in one call and synced before any record, so a crash leaves a prefix of it, or zeros where
/// the file's size reached the disk but its data did not). Anything else (a flipped bit, a
/// whole header of another shard or segment, a foreign file) is evidence and is kept.
fn interrupted_creation(buf: &[u8], shard: u32, segment: u64) -> bool {
    let expected = segment_header(shard, segment);
    buf.len() <= expected.len() && buf.iter().zip(expected).all(|(&b, e)| b == e || b == 0)
}

/// Segments are numbered one after another, and none is removed but the oldest: a gap, or a
/// missing segment that replay must start in (`first`, which the caller's checkpoint names),
/// means a file was lost, and replaying around it would drop what it held without a word.
fn check_sequence(
    cfg: &WalConfig,
    segments: &[(u64, String)],
    first: Option<u64>,
) -> Result<(), WalError> {
    let from = first.or(segments.first().map(|s| s.0)).unwrap_or(0);
    let ids: Vec<u64> = segments
        .iter()
        .map(|s| s.0)
        .filter(|&id| id >= from)
        .collect();
    let missing = |id: u64, reason: String| WalError::Missing {
        path: segment_path(cfg.shard, id),
        reason,
    };
    if let Some(n) = first
        && ids.first() != Some(&n)
    {
        return Err(missing(
            n,
            "replay must start in this segment (a checkpoint names it; without one it is a \
             shard's first, 1, so a lost checkpoint shows as this)"
                .into(),
        ));
    }
    if let Some(w) = ids.windows(2).find(|w| w[1] != w[0] + 1) {
        return Err(missing(
            w[0] + 1,
            format!("segments {} and {} are there", w[0], w[1]),
        ));
    }
    Ok(())
}

/// Replay shard `cfg.shard`; returns the id the next segment must take and what happened.
/// With `first`, segment `first` must be there (see [`check_sequence`]).
pub(crate) fn recover(
    dir: &dyn Dir,
    cfg: &WalConfig,
    first: Option<u64>,
    replay: &mut Replay<'_>,
) -> Result<(u64, Recovery), WalError> {
    let sdir = segment_dir(cfg.shard);
    let listed = dir
        .list(&sdir)
        .map_err(|e| WalError::io("list", &sdir, &e))?;
    let mut segments: Vec<(u64, String)> = listed
        .into_iter()
        .filter_map(|p| Some((segment_id(&p)?, p)))
        .collect();
    segments.sort();
    check_sequence(cfg, &segments, first)?;
    let max = max_record(cfg.segment_bytes);

    let mut stop = StopReason::CleanEnd;
    let mut interrupted = None;
    let mut records = 0u64;
    let count = segments.len();
    // Index of the last segment longer than a header: records can only be torn there.
    let mut holds_records = Vec::with_capacity(count);
    for (_, path) in &segments {
        let f = dir
            .open(path, false)
            .map_err(|e| WalError::io("open", path, &e))?;
        holds_records.push(f.len().map_err(|e| WalError::io("stat", path, &e))? > HEADER);
    }
    let last_written = holds_records.iter().rposition(|&h| h);
    for (i, (id, path)) in segments.iter().enumerate() {
        let last = last_written.is_none_or(|w| i >= w);
        let corrupt = |offset: u64, reason: String| WalError::Corrupt {
            path: path.clone(),
            offset,
            reason,
        };
        let f = dir
            .open(path, false)
            .map_err(|e| WalError::io("open", path, &e))?;
        let buf = read_all(f.as_ref(), path)?;
        if let Err(reason) = check_header(&buf, cfg.shard, *id) {
            if !(last && interrupted_creation(&buf, cfg.shard, *id)) {
                return Err(corrupt(0, reason));
            }
            // Crashed while creating the segment: nothing was ever written into it.
            interrupted = Some(*id);
            drop(f);
            dir.remove(path)
                .map_err(|e| WalError::io("remove", path, &e))?;
            dir.sync_dir(&sdir)
                .map_err(|e| WalError::io("sync directory", &sdir, &e))?;
            stop = StopReason::TornTail {
                path: path.clone(),
                offset: 0,
                reason,
            };
            continue;
        }
        let mut pos = HEADER as usize;
        while pos < buf.len() {
            match parse_record(&buf, pos, max) {
                Ok((payload, next)) => {
                    let lsn = Lsn {
                        segment: *id,
                        offset: pos as u64,
                    };
                    replay(lsn, payload).map_err(WalError::Replay)?;
                    records += 1;
                    pos = next;
                }
                Err(bad) => {
                    if !last {
                        return Err(corrupt(
                            pos as u64,
                            format!("{} in a segment that is not the last", bad.reason()),
                        ));
                    }
                    if let Some(at) = valid_data_after(&buf, pos, max) {
                        return Err(corrupt(
                            pos as u64,
                            format!(
                                "{}, with an intact record after it (at byte {at})",
                                bad.reason()
                            ),
                        ));
                    }
                    f.set_len(pos as u64)
                        .and_then(|()| f.sync_data())
                        .map_err(|e| WalError::io("truncate torn tail of", path, &e))?;
                    stop = StopReason::TornTail {
                        path: path.clone(),
                        offset: pos as u64,
                        reason: bad.reason().to_string(),
                    };
                    break;
                }
            }
        }
        // What was replayed becomes durable before anything is written after it: a process
        // crash leaves unsynced bytes in the page cache, where replay reads them, and the
        // segments this run writes next could otherwise outlive them in a later power loss
        // (a hole in the middle of the log, which recovery would then refuse). Already synced
        // data makes this cheap.
        f.sync_data()
            .map_err(|e| WalError::io("sync replayed segment", path, &e))?;
    }
    let next = match segments.last() {
        None => 1,
        // The segment whose creation was interrupted is created again under its id: skipping
        // it would leave a hole, which recovery takes for a lost segment.
        Some((id, _)) if interrupted == Some(*id) => *id,
        Some((id, path)) => id.checked_add(1).ok_or_else(|| WalError::Corrupt {
            path: path.clone(),
            offset: 0,
            reason: "no segment id left after this one".into(),
        })?,
    };
    Ok((
        next,
        Recovery {
            records,
            segments: count,
            stop,
        },
    ))
}
