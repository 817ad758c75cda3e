//! Requests to one log gathered while a pass for earlier ones runs, then served together by
//! one pass: a queue's claims and acks each commit one WAL record per pass instead of one per
//! request, which is what lets many workers share a queue (group commit at the queue's level).

use super::*;
use std::future::Future;

type Waiting<Q, A> = Vec<(Q, oneshot::Sender<Result<A>>)>;

/// Gathers requests `Q` to a log (by id) and answers each with an `A`.
pub(super) struct Combiner<Q, A> {
    waiting: parking_lot::Mutex<HashMap<u64, Waiting<Q, A>>>,
}

impl<Q: Send + 'static, A: Send + 'static> Combiner<Q, A> {
    pub fn new() -> Arc<Self> {
        Arc::new(Self {
            waiting: Default::default(),
        })
    }

    /// Serve `q` with the other requests to log `id`. The first request starts a task that
    /// waits `window` (a coalescing window; usually none) and then serves whatever waits,
    /// pass after pass, until nothing does. `serve` answers a pass's requests in order. The
    /// task runs on its own, so a request that is dropped strands no other.
    pub async fn submit<F, Fut>(
        self: &Arc<Self>,
        id: u64,
        q: Q,
        window: Duration,
        serve: F,
    ) -> Result<A>
    where
        F: Fn(Vec<Q>) -> Fut + Send + 'static,
        Fut: Future<Output = Vec<Result<A>>> + Send + 'static,
    {
        let (tx, rx) = oneshot::channel();
        let lead = {
            let mut w = self.waiting.lock();
            match w.get_mut(&id) {
                Some(v) => {
                    v.push((q, tx));
                    false
                }
                None => {
                    w.insert(id, vec![(q, tx)]);
                    true
                }
            }
        };
        if lead {
            let me = self.clone();
            let work = async move {
                if !window.is_zero() {
                    tokio::time::sleep(window).await;
                }
                loop {
                    let batch = {
                        let mut w = me.waiting.lock();
                        let batch = w.get_mut(&id).map(std::mem::take).unwrap_or_default();
                        if batch.is_empty() {
                            w.remove(&id);
                        }
                        batch
                    };
                    if batch.is_empty() {
                        return;
                    }
                    let (qs, txs): (Vec<Q>, Vec<_>) = batch.into_iter().unzip();
                    for (tx, a) in txs.into_iter().zip(serve(qs).await) {
                        let _ = tx.send(a);
                    }
                }
            };
            match tokio::runtime::Handle::try_current() {
                Ok(h) => drop(h.spawn(work)),
                Err(_) => work.await,
            }
        }
        rx.await
            .unwrap_or_else(|_| Err(storage_error("the request was abandoned", false)))
    }
}
