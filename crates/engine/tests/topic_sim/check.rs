//! Comparing what the engine answers with what the model says.

use super::model::{ExpDiff, MRec, MState, lit};
use riffle_engine::Engine;
use riffle_engine::topic::{DeleteSpec, Diff, DiffQuery, GapReason, TopicInfo};

/// Everything the engine holds of a topic, read whole.
pub fn read_all(engine: &Engine, name: &str) -> Result<Diff, String> {
    engine
        .topic_diff(
            name,
            &DiffQuery {
                from_seq: 0,
                limit: 1 << 20,
                nodes: Vec::new(),
                max_bytes: 1 << 30,
            },
        )
        .map_err(|e| format!("diff {name} from 0: {e:?}"))
}

/// The topic's persisted state `(earliest, head, count, bytes)`, TTL not applied: what a
/// delete of nothing answers (it waits for the append lock and writes nothing).
pub fn persisted(engine: &Engine, name: &str) -> Result<(u64, u64, u64, u64), String> {
    let nothing = DeleteSpec {
        before_seq: Some(0),
        tag: None,
    };
    let d = crate::disk::block_on(engine.topic_delete_records(name, &nothing))
        .map_err(|e| format!("delete of nothing in {name}: {e:?}"))?;
    if d.deleted != 0 {
        return Err(format!("a delete of nothing in {name} deleted: {d:?}"));
    }
    Ok((d.earliest_seq, d.head_seq, d.count, d.bytes))
}

/// The model's persisted state, as [`persisted`] reads the engine's.
pub fn model_persisted(st: &MState) -> (u64, u64, u64, u64) {
    (st.earliest, st.head, st.count(), st.bytes())
}

/// Whether a returned record is byte for byte the model's.
fn same_record(r: &riffle_engine::topic::RecordView, m: &MRec) -> bool {
    let tag = m.tag.as_deref().map(lit);
    let node = m.node.as_deref().map(lit);
    r.data_json() == m.data.as_bytes()
        && r.tag_json() == tag.as_deref().map(str::as_bytes)
        && r.node_json() == node.as_deref().map(str::as_bytes)
        && r.meta_json() == m.meta.as_deref().map(str::as_bytes)
        && r.ts == m.ts
        && r.stored_len() as u64 == m.size()
}

fn show(r: &riffle_engine::topic::RecordView) -> String {
    format!(
        "#{} ts {} tag {:?} node {:?} data {:?}",
        r.seq,
        r.ts,
        r.tag_json().map(String::from_utf8_lossy),
        r.node_json().map(String::from_utf8_lossy),
        String::from_utf8_lossy(r.data_json())
    )
}

/// Compare a diff's answer with the model's.
pub fn compare_diff(got: &Diff, want: &ExpDiff, st: &MState) -> Result<(), String> {
    let seqs: Vec<u64> = got.records.iter().map(|r| r.seq).collect();
    if seqs != want.seqs {
        return Err(format!(
            "records {seqs:?}, the model has {:?} (live: {:?})",
            want.seqs,
            st.recs.keys().collect::<Vec<_>>()
        ));
    }
    for r in &got.records {
        let m = &st.recs[&r.seq];
        if !same_record(r, m) {
            return Err(format!("record {} differs from the model's {m:?}", show(r)));
        }
    }
    let tomb = got
        .tombstone
        .as_ref()
        .map(|t| (t.gap_from, t.gap_to, t.reason));
    let same = (got.next_from_seq, got.head_seq, got.earliest_seq, tomb)
        == (want.next, want.head, want.earliest, want.tomb);
    if !same {
        return Err(format!(
            "next {} head {} earliest {} tombstone {:?}; the model: next {} head {} earliest {} \
             tombstone {:?} (floors cap {} ttl {})",
            got.next_from_seq,
            got.head_seq,
            got.earliest_seq,
            got.tombstone,
            want.next,
            want.head,
            want.earliest,
            want.tomb,
            st.cap_floor,
            st.ttl_floor
        ));
    }
    if let Some(t) = &got.tombstone {
        let bound = if t.reason == GapReason::Recreated {
            0
        } else {
            (t.gap_to + 1).saturating_sub(t.gap_from)
        };
        if t.missed_estimate > bound {
            return Err(format!("tombstone {t:?} misses more than its gap"));
        }
    }
    Ok(())
}

/// A diff read checked against the model.
pub fn check_diff(
    engine: &Engine,
    name: &str,
    st: &MState,
    q: &(u64, usize, Vec<String>, usize),
    now: i64,
) -> Result<(), String> {
    check_diff_via(engine, name, st, q, now, false)
}

/// A diff read (through a [`riffle_engine::TopicHandle`] if `handle`) checked against the
/// model.
pub fn check_diff_via(
    engine: &Engine,
    name: &str,
    st: &MState,
    q: &(u64, usize, Vec<String>, usize),
    now: i64,
    handle: bool,
) -> Result<(), String> {
    let (from, limit, nodes, max_bytes) = q.clone();
    let dq = DiffQuery {
        from_seq: from,
        limit,
        nodes: nodes.clone(),
        max_bytes,
    };
    let got = if handle {
        engine.topic_open(name).and_then(|h| h.diff(&dq))
    } else {
        engine.topic_diff(name, &dq)
    }
    .map_err(|e| format!("diff {name} {q:?}: {e:?}"))?;
    let want = st.diff(from, limit, &nodes, max_bytes, now);
    compare_diff(&got, &want, st).map_err(|e| format!("diff {name} {q:?}: {e}"))
}

/// The topic's info agrees with the model.
pub fn check_info(info: &TopicInfo, id: u64, st: &MState, now: i64) -> Result<(), String> {
    let v = st.view(now);
    let same = info.id == id
        && info.config == st.config
        && (info.head_seq, info.earliest_seq, info.count, info.bytes)
            == (st.head, v.earliest, v.count, v.bytes);
    if same {
        return Ok(());
    }
    Err(format!(
        "info {}: id {} head {} earliest {} count {} bytes {} config {:?}; the model: id {id} \
         head {} earliest {} count {} bytes {} config {:?}",
        info.name,
        info.id,
        info.head_seq,
        info.earliest_seq,
        info.count,
        info.bytes,
        info.config,
        st.head,
        v.earliest,
        v.count,
        v.bytes,
        st.config
    ))
}

/// The topic's info, a whole read and reads from the cursors that matter (around
/// the floors, the first live record and the head) agree with the model.
pub fn check_topic(
    engine: &Engine,
    name: &str,
    id: u64,
    st: &MState,
    info: &TopicInfo,
    now: i64,
) -> Result<(), String> {
    st.invariants()?;
    check_info(info, id, st, now)?;
    let p = persisted(engine, name)?;
    if p != model_persisted(st) {
        return Err(format!(
            "{name}: persisted (earliest, head, count, bytes) {p:?}, the model's {:?}",
            model_persisted(st)
        ));
    }
    check_reads(engine, name, st, now)?;
    Ok(())
}

/// A whole read, and reads from the cursors that matter (around the floors, the first live
/// record and the head), agree with the model.
pub fn check_reads(engine: &Engine, name: &str, st: &MState, now: i64) -> Result<(), String> {
    let v = st.view(now);
    let all = read_all(engine, name)?;
    let want = st.diff(0, 1 << 20, &[], 1 << 30, now);
    compare_diff(&all, &want, st).map_err(|e| format!("whole read of {name}: {e}"))?;
    let mut cursors = vec![st.head, st.head + 1, v.earliest.saturating_sub(1)];
    for f in [st.cap_floor, v.ttl_floor] {
        cursors.extend([f.saturating_sub(2), f.saturating_sub(1), f]);
    }
    cursors.sort_unstable();
    cursors.dedup();
    for from in cursors {
        check_diff(engine, name, st, &(from, 3, Vec::new(), 1 << 20), now)?;
    }
    Ok(())
}
