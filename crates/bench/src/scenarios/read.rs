//! `read`: catch-up throughput. S streams are pre-filled with M bytes each, then C connections
//! read them whole from `offset=-1`, following `Stream-Next-Offset` until `Stream-Up-To-Date`,
//! over and over. Bodies are streamed frame by frame and counted, never buffered whole. Every
//! complete pass must return exactly M bytes.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Result, anyhow};
use bytes::Bytes;
use http::Method;
use http_body_util::BodyExt;
use serde::Serialize;

use super::{Clock, Common, byte_payload, cleanup, parse_size};
use crate::client::{Conn, REQUEST_TIMEOUT, create_stream, head_tail, header, query_escape};
use crate::procstat::Window;
use crate::stats::{Counters, Errors, Lat, Progress, ScenarioResult, add_errors};
use crate::verify::{Ledger, check_offsets};

#[derive(clap::Args, Clone, Debug, Serialize)]
pub struct ReadArgs {
    /// Streams to pre-fill.
    #[arg(long, default_value_t = 4)]
    pub streams: usize,
    /// Bytes per stream (suffixes KiB, MiB, GiB); rounded up to whole chunks.
    #[arg(long, default_value = "16MiB", value_parser = parse_size)]
    pub stream_bytes: u64,
    /// Bytes per pre-fill append.
    #[arg(long, default_value = "64KiB", value_parser = parse_size)]
    pub chunk: u64,
    /// Reading connections.
    #[arg(long, short = 'c', default_value_t = 4)]
    pub connections: usize,
}

#[derive(Default)]
struct Worker {
    lat: Lat,
    errors: Errors,
    gets: u64,
    bytes: u64,
    passes: u64,
    bad_passes: Vec<String>,
}

/// Appends `chunk`-sized bodies to one stream until it holds `total` bytes.
async fn prefill(c: &Common, l: &mut Ledger, chunk: u64, total: u64) -> Result<()> {
    let mut conn = Conn::new(&c.target);
    let body = byte_payload(chunk as usize);
    while l.bytes < total {
        let (h, _) = conn
            .call(
                Method::POST,
                &l.path,
                &[("content-type", "application/octet-stream")],
                body.clone(),
                &[200, 204],
                REQUEST_TIMEOUT,
            )
            .await
            .map_err(|e| anyhow!("pre-fill {}: {e}", l.path))?;
        l.acked
            .push(header(&h, "stream-next-offset").unwrap_or("").to_string());
        l.bytes += chunk;
        l.messages += 1;
    }
    Ok(())
}

/// One complete read of a stream; returns the bytes read, or `None` when `end` passed first.
async fn pass(
    conn: &mut Conn,
    path: &str,
    clock: &Clock,
    me: &mut Worker,
    counters: &Counters,
) -> Option<u64> {
    let mut offset = "-1".to_string();
    let mut got = 0u64;
    loop {
        let started = Instant::now();
        if started >= clock.end {
            return None;
        }
        let url = format!("{path}?offset={}", query_escape(&offset));
        let resp = match conn
            .send(Method::GET, &url, &[], Bytes::new(), REQUEST_TIMEOUT)
            .await
        {
            Ok(r) if r.status() == 200 => r,
            Ok(r) => {
                *me.errors
                    .entry(r.status().as_u16().to_string())
                    .or_default() += 1;
                counters.error();
                conn.reset();
                return Some(got);
            }
            Err(f) => {
                *me.errors.entry(f.key()).or_default() += 1;
                counters.error();
                return Some(got);
            }
        };
        let next = header(resp.headers(), "stream-next-offset").map(str::to_string);
        let done = header(resp.headers(), "stream-up-to-date") == Some("true");
        let mut body = resp.into_body();
        let mut n = 0u64;
        while let Some(frame) = body.frame().await {
            match frame {
                Ok(f) => n += f.data_ref().map_or(0, |d| d.len() as u64),
                Err(_) => {
                    *me.errors.entry("io".into()).or_default() += 1;
                    counters.error();
                    conn.reset();
                    return Some(got);
                }
            }
        }
        got += n;
        if started >= clock.measure {
            me.lat.record(started.elapsed());
            me.gets += 1;
            me.bytes += n;
            counters.op();
        }
        match next {
            Some(next) if !(done || n == 0 && next == offset) => offset = next,
            _ => return Some(got),
        }
    }
}

pub async fn run(c: &Common, a: &ReadArgs) -> Result<Vec<ScenarioResult>> {
    let chunk = a.chunk.max(1);
    let total = a.stream_bytes.div_ceil(chunk) * chunk;
    let mut conn = Conn::new(&c.target);
    let mut ledgers = Vec::new();
    for i in 0..a.streams.max(1) {
        let path = c.stream("read", i);
        let start = create_stream(&mut conn, &path, "application/octet-stream").await?;
        ledgers.push(Ledger::new(path, start));
    }
    let t = Instant::now();
    let fills = ledgers.into_iter().map(|mut l| {
        let c = c.clone();
        tokio::spawn(async move { prefill(&c, &mut l, chunk, total).await.map(|_| l) })
    });
    let mut ledgers = Vec::new();
    for f in fills.collect::<Vec<_>>() {
        ledgers.push(f.await??);
    }
    let mut ends = Vec::new();
    for l in &ledgers {
        ends.push(head_tail(&mut conn, &l.path).await?);
    }
    let mut verify = check_offsets(&ledgers, &ends, chunk, c.strict_offsets);
    if c.progress > Duration::ZERO {
        eprintln!(
            "  [read] pre-filled {} streams x {} MiB in {:.1}s",
            ledgers.len(),
            total >> 20,
            t.elapsed().as_secs_f64()
        );
    }

    let counters = Arc::new(Counters::default());
    let clock = Clock::start(c);
    let paths: Arc<Vec<String>> = Arc::new(ledgers.iter().map(|l| l.path.clone()).collect());
    let n_conns = a.connections.max(1);
    let mut tasks = Vec::new();
    for w in 0..n_conns {
        let (target, paths, counters) = (c.target.clone(), paths.clone(), counters.clone());
        tasks.push(tokio::spawn(async move {
            let mut conn = Conn::new(&target);
            let mut me = Worker::default();
            let mut i = 0usize;
            loop {
                let path = &paths[(w + i * n_conns) % paths.len()];
                i += 1;
                match pass(&mut conn, path, &clock, &mut me, &counters).await {
                    None => break,
                    Some(n) if n == total => me.passes += 1,
                    Some(n) => me.bad_passes.push(format!("{path}: a pass read {n} B")),
                }
            }
            me
        }));
    }
    tokio::time::sleep_until(clock.measure.into()).await;
    let window = Window::begin(c.server_pid);
    let progress = Progress::start("read".into(), c.duration, c.progress, counters);
    let mut all = Worker::default();
    for t in tasks {
        let w = t.await?;
        all.lat.merge(&w.lat);
        add_errors(&mut all.errors, &w.errors);
        all.gets += w.gets;
        all.bytes += w.bytes;
        all.passes += w.passes;
        all.bad_passes.extend(w.bad_passes);
    }
    // GETs that began inside the window are counted whole, so the window ends when the
    // last of them does.
    let elapsed = clock.measure.elapsed();
    drop(progress);

    let mut res = ScenarioResult::new("read", "", serde_json::to_value(a)?);
    res.server = window.map(|w| w.finish(all.gets));
    res.totals(elapsed, all.gets, all.bytes);
    res.add_latency("get", &all.lat);
    res.errors = all.errors;
    verify.check(
        all.bad_passes.is_empty() && all.passes > 0,
        format!(
            "{} complete passes each read {total} B = bytes pre-filled",
            all.passes
        ),
    );
    for b in all.bad_passes.iter().take(5) {
        verify.fail(b.clone());
    }
    res.verify = verify;
    cleanup(c, &paths).await;
    Ok(vec![res])
}
