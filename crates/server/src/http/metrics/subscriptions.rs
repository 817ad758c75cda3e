//! Subscription delivery counters: webhook deliveries and pull-wake events by outcome.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabel {
    outcome: &'static str,
}

pub struct SubscriptionMetrics {
    deliveries: Family<OutcomeLabel, Counter>,
    events: Family<OutcomeLabel, Counter>,
}

impl SubscriptionMetrics {
    pub(super) fn register(registry: &mut Registry) -> Self {
        let deliveries = Family::<OutcomeLabel, Counter>::default();
        registry.register(
            "riffle_subscription_webhook_deliveries",
            "Webhook wake deliveries, by outcome: accepted (2xx), done (2xx answering done: the wake acked), failed (error or non-2xx: retried with backoff)",
            deliveries.clone(),
        );
        let events = Family::<OutcomeLabel, Counter>::default();
        registry.register(
            "riffle_subscription_wake_events",
            "Pull-wake events appended to wake streams, by outcome: appended, failed (the wake stream missing or closed: retried)",
            events.clone(),
        );
        Self { deliveries, events }
    }

    /// Count a webhook delivery: `accepted`, `done` or `failed`.
    pub fn delivery(&self, outcome: &'static str) {
        self.deliveries
            .get_or_create(&OutcomeLabel { outcome })
            .inc();
    }

    /// Count a pull-wake event: `appended` or `failed`.
    pub fn wake_event(&self, outcome: &'static str) {
        self.events.get_or_create(&OutcomeLabel { outcome }).inc();
    }
}
