//! Caps on what clients hold at once, with a slot per holder that is given back when the
//! holder goes (RAII): live connections (SSE, long-poll, WebSocket) server-wide and per
//! credential, and requests in flight per credential. Past a cap: 429 with `Retry-After`
//! (the `/v0` envelope's `detail.limit` and `detail.max`).

use super::ApiError;
use super::auth::Credential;
use http::StatusCode;
use parking_lot::Mutex;
use prometheus_client::metrics::gauge::Gauge;
use std::collections::HashMap;
use std::sync::Arc;

/// Holders counted server-wide (`max` 0: no cap) and per credential (`per_key` 0: no cap).
pub struct Slots {
    name: &'static str,
    per_key_name: &'static str,
    max: u64,
    per_key: u64,
    held: Mutex<(u64, HashMap<[u8; 32], u64>)>,
}

/// A slot: given back when dropped.
pub struct Slot {
    slots: Arc<Slots>,
    /// Boxed: a parked live subscriber holds its slot, and with auth off (no key) this keeps
    /// the slot at 24 bytes instead of 56.
    key: Option<Box<[u8; 32]>>,
    /// The live-connections gauge of its kind, if counted.
    gauge: Option<Gauge>,
}

impl Slot {
    /// Count this slot in `gauge` while it is held.
    pub fn counted(mut self, gauge: Gauge) -> Self {
        gauge.inc();
        self.gauge = Some(gauge);
        self
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        if let Some(g) = &self.gauge {
            g.dec();
        }
        let mut held = self.slots.held.lock();
        held.0 = held.0.saturating_sub(1);
        if let Some(k) = &self.key
            && let Some(n) = held.1.get_mut(&**k)
        {
            *n -= 1;
            if *n == 0 {
                held.1.remove(&**k);
            }
        }
    }
}

fn throttled(limit: &'static str, max: u64) -> ApiError {
    ApiError::new(
        StatusCode::TOO_MANY_REQUESTS,
        format!("the server's limit {limit} ({max}) is reached; retry later"),
    )
    .code("throttled")
    .reason(limit)
    .detail(serde_json::json!({ "limit": limit, "max": max }))
    .with_header("retry-after", 1)
}

impl Slots {
    pub fn new(
        name: &'static str,
        max: u64,
        per_key_name: &'static str,
        per_key: u64,
    ) -> Arc<Self> {
        Arc::new(Self {
            name,
            per_key_name,
            max,
            per_key,
            held: Mutex::new((0, HashMap::new())),
        })
    }

    /// A slot for a holder with `cred` (per-credential caps apply only with one).
    pub fn acquire(self: &Arc<Self>, cred: Option<&Credential>) -> Result<Slot, ApiError> {
        let mut held = self.held.lock();
        if self.max > 0 && held.0 >= self.max {
            return Err(throttled(self.name, self.max));
        }
        let key = cred.map(|c| c.id);
        if let Some(k) = key {
            let n = held.1.entry(k).or_default();
            if self.per_key > 0 && *n >= self.per_key {
                return Err(throttled(self.per_key_name, self.per_key));
            }
            *n += 1;
        }
        held.0 += 1;
        Ok(Slot {
            slots: self.clone(),
            key: key.map(Box::new),
            gauge: None,
        })
    }

    /// Holders now.
    pub fn held(&self) -> u64 {
        self.held.lock().0
    }
}
