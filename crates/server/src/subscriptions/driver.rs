//! The delivery driver: one task that waits for the engine's subscription news (a linked
//! stream was appended to, a wake ended, a subscription was created or recovered) and for
//! the subscriptions' timers (lease expiries, webhook retries), and looks at each such
//! subscription: the engine decides (expire a lease, make a wake) and says what to deliver,
//! which this side does: a signed webhook POST, or a wake event appended to the pull-wake
//! stream. Nothing here polls streams; an idle subscription costs nothing.

use super::{Subscriptions, ssrf};
use crate::http::metrics::Metrics;
use crate::http::streams::payload::{EmptyArray, to_payload};
use crate::http::subscriptions::{render, token};
use bytes::Bytes;
use riffle_engine::subs::{Delivery, STREAM_ROOT, SubAction, SubError, WakeInfo};
use riffle_engine::{AppendRequest, Engine};
use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{Semaphore, mpsc};
use tokio_util::sync::CancellationToken;

/// Subscriptions looked at concurrently (each look may wait for a WAL commit).
const LOOKS: usize = 256;
/// When a pull-wake event could not be appended (its stream missing or closed): try again.
const EVENT_RETRY_MS: i64 = 5_000;
/// When a look failed (storage trouble): try again.
const LOOK_RETRY_MS: i64 = 1_000;

/// Webhook retry delay after `failures` failed deliveries in a row: exponential from 1 s up
/// to 60 s, with 20 % jitter (the protocol's schedule).
pub fn backoff_ms(failures: u32) -> u64 {
    let base = 1_000u64
        .saturating_mul(1u64 << failures.saturating_sub(1).min(16))
        .min(60_000);
    let jitter = (fastrand::f64() * 2.0 - 1.0) * 0.2;
    (base as f64 * (1.0 + jitter)).round() as u64
}

struct Driver {
    engine: Engine,
    subs: Arc<Subscriptions>,
    metrics: Arc<Metrics>,
    /// Looks in flight, and whether news arrived for one meanwhile (look again after).
    running: parking_lot::Mutex<HashMap<String, bool>>,
    looks: Semaphore,
    /// `(due, name)` from finished looks.
    due: mpsc::UnboundedSender<(i64, String)>,
}

/// Run until `shutdown`: recover the links, then deliver.
pub async fn run(
    engine: Engine,
    subs: Arc<Subscriptions>,
    metrics: Arc<Metrics>,
    shutdown: CancellationToken,
) {
    engine.subs_reconcile().await;
    let (due_tx, mut due_rx) = mpsc::unbounded_channel();
    let driver = Arc::new(Driver {
        engine: engine.clone(),
        subs,
        metrics,
        running: Default::default(),
        looks: Semaphore::new(LOOKS),
        due: due_tx,
    });
    let mut timers: BTreeSet<(i64, String)> = BTreeSet::new();
    let mut news = engine.sub_names();
    loop {
        for name in news.drain(..) {
            driver.clone().look(name);
        }
        let sleep = timers
            .first()
            .map(|(at, _)| Duration::from_millis(u64::try_from(at - engine.now_ms()).unwrap_or(0)));
        tokio::select! {
            names = engine.sub_news() => news = names,
            Some((at, name)) = due_rx.recv() => {
                timers.insert((at, name));
            }
            _ = tokio::time::sleep(sleep.unwrap_or(Duration::from_secs(3600))), if sleep.is_some() => {
                let now = engine.now_ms();
                while timers.first().is_some_and(|(at, _)| *at <= now) {
                    if let Some((_, name)) = timers.pop_first() {
                        news.push(name);
                    }
                }
                news.sort_unstable();
                news.dedup();
            }
            _ = shutdown.cancelled() => return,
        }
    }
}

impl Driver {
    /// Look at subscription `name` on a task of its own (one look per name at a time).
    fn look(self: Arc<Self>, name: String) {
        {
            let mut running = self.running.lock();
            if let Some(again) = running.get_mut(&name) {
                *again = true;
                return;
            }
            running.insert(name.clone(), false);
        }
        tokio::spawn(async move {
            loop {
                if let Ok(_permit) = self.looks.acquire().await {
                    self.look_once(&name).await;
                }
                let mut running = self.running.lock();
                if running.get(&name) == Some(&true) {
                    running.insert(name.clone(), false);
                } else {
                    running.remove(&name);
                    return;
                }
            }
        });
    }

    async fn look_once(self: &Arc<Self>, name: &str) {
        let poke = match self.engine.sub_poke(name).await {
            Ok(p) => p,
            Err(SubError::NotFound) => return,
            Err(e) => {
                tracing::warn!(subscription = name, error = %e, "could not look at a subscription; retrying");
                let _ = self
                    .due
                    .send((self.engine.now_ms() + LOOK_RETRY_MS, name.to_string()));
                return;
            }
        };
        if let Some(at) = poke.due {
            let _ = self.due.send((at, name.to_string()));
        }
        match poke.action {
            Some(SubAction::Webhook { url, wake }) => {
                let driver = self.clone();
                tokio::spawn(async move { driver.deliver(&url, wake).await });
            }
            Some(SubAction::WakeEvent {
                wake_stream,
                generation,
                event,
            }) => {
                let appended = self.append_event(&wake_stream, event).await;
                let outcome = if appended.is_ok() {
                    "appended"
                } else {
                    "failed"
                };
                self.metrics.subscriptions.wake_event(outcome);
                if let Err(e) = appended {
                    tracing::warn!(subscription = name, wake_stream, error = %e, "could not append a wake event; retrying");
                    self.engine.sub_event_failed(name, generation);
                    let _ = self
                        .due
                        .send((self.engine.now_ms() + EVENT_RETRY_MS, name.to_string()));
                }
            }
            None => {}
        }
    }

    /// POST a signed wake to the webhook, and tell the engine how it went.
    async fn deliver(&self, url: &str, wake: WakeInfo) {
        let public = &self.subs.settings.public_url;
        let origin = if public.is_empty() {
            &wake.origin
        } else {
            public
        };
        let now = self.engine.now_ms();
        let secs = u64::try_from(now / 1000).unwrap_or(0);
        let secret = self.subs.keys.token_secret();
        let t = token::issue(&secret, &wake, secs);
        let body = render::webhook_body(&wake, origin, &t).to_string();
        let signature = self.subs.keys.sign(secs, body.as_bytes());
        let outcome = match ssrf::check_url(url, self.subs.settings.allow_localhost_webhooks) {
            Err(reason) => {
                tracing::warn!(subscription = %wake.name, reason, "webhook URL refused at delivery");
                Delivery::Failed
            }
            Ok(target) => {
                let headers = [
                    ("content-type", "application/json".to_string()),
                    ("webhook-signature", signature),
                ];
                match self
                    .subs
                    .client
                    .post(&target, &headers, Bytes::from(body))
                    .await
                {
                    Ok(reply) if (200..300).contains(&reply.status) => {
                        let done = serde_json::from_slice::<serde_json::Value>(&reply.body)
                            .ok()
                            .and_then(|v| v.get("done")?.as_bool())
                            == Some(true);
                        Delivery::Accepted { done }
                    }
                    Ok(reply) => {
                        tracing::info!(subscription = %wake.name, status = reply.status, "webhook answered with an error; will retry");
                        Delivery::Failed
                    }
                    Err(e) => {
                        tracing::info!(subscription = %wake.name, error = %e, "webhook delivery failed; will retry");
                        Delivery::Failed
                    }
                }
            }
        };
        self.metrics.subscriptions.delivery(match outcome {
            Delivery::Accepted { done: true } => "done",
            Delivery::Accepted { done: false } => "accepted",
            Delivery::Failed => "failed",
        });
        let r = self
            .engine
            .sub_delivered(&wake.name, wake.generation, outcome, backoff_ms)
            .await;
        if let Err(e) = r
            && e != SubError::NotFound
        {
            tracing::warn!(subscription = %wake.name, error = %e, "could not record a webhook delivery");
        }
    }

    /// Append a wake event to the pull-wake stream, in the stream's own framing.
    async fn append_event(
        &self,
        wake_stream: &str,
        event: String,
    ) -> Result<(), riffle_engine::EngineError> {
        let key = format!("{STREAM_ROOT}{wake_stream}");
        let info = self.engine.info(&key)?;
        let payload = to_payload(Bytes::from(event), info.framing, EmptyArray::Rejected)
            .map_err(|_| riffle_engine::EngineError::EmptyAppend)?;
        let req = AppendRequest {
            content_type: Some(info.content_type.to_string()),
            payload,
            ..Default::default()
        };
        self.engine.append(&key, req).await.map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::backoff_ms;

    #[test]
    fn backoff_doubles_from_one_second_to_a_minute_with_jitter() {
        for (failures, base) in [
            (1, 1_000),
            (2, 2_000),
            (3, 4_000),
            (7, 60_000),
            (40, 60_000),
        ] {
            for _ in 0..50 {
                let d = backoff_ms(failures) as f64;
                assert!(
                    (base as f64 * 0.8..=base as f64 * 1.2).contains(&d),
                    "{failures}: {d}"
                );
            }
        }
    }
}
