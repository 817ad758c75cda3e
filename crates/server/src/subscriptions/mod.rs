//! Delivery of `__ds` subscriptions: the signing keys, webhook URL checks, the outbound
//! client, and the driver that turns the engine's news into webhook calls and pull-wake
//! events. The subscriptions' state lives in the engine (`riffle_engine::subs`); the HTTP API
//! is `crate::http::subscriptions`.

pub mod driver;
pub mod signing;
pub mod ssrf;
pub mod webhook;

use crate::config::SubscriptionSettings;
use std::path::Path;
use std::time::Duration;

/// What delivering subscriptions needs, shared by the HTTP face and the driver.
pub struct Subscriptions {
    pub keys: signing::SigningKeys,
    pub settings: SubscriptionSettings,
    pub client: webhook::WebhookClient,
}

impl Subscriptions {
    /// Open the signing keys (kept in `<data_dir>/keys/`, created on first start; in RAM
    /// without a data directory) and build the webhook client.
    pub fn open(
        settings: SubscriptionSettings,
        data_dir: Option<&Path>,
    ) -> Result<Subscriptions, String> {
        let dir = data_dir.map(|d| d.join("keys"));
        let keys = signing::SigningKeys::open(dir.as_deref()).map_err(|e| e.to_string())?;
        let client = webhook::WebhookClient::new(webhook::WebhookClientConfig {
            timeout: Duration::from_millis(settings.webhook_timeout_ms),
            connect_timeout: Duration::from_millis(settings.webhook_connect_timeout_ms),
            concurrency: usize::try_from(settings.webhook_concurrency).unwrap_or(64),
            allow_localhost: settings.allow_localhost_webhooks,
        })?;
        Ok(Subscriptions {
            keys,
            settings,
            client,
        })
    }
}
