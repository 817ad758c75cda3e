//! Durable Streams subscriptions (`__ds`): durable cursors over many streams that wake a
//! worker when a linked stream has data past its cursor.
//!
//! A subscription's whole state is a [`SubRec`]: its configuration, one [`Link`] per linked
//! stream (with the acked position and the incarnation of the stream it was linked to), the
//! wake generation, the wake in flight (its snapshot of tails, its holder and lease) and the
//! webhook retry schedule. Every change is a list of [`SubOp`]s logged as one WAL record and
//! applied after it commits, by the same [`SubRec::apply`] during recovery, so what replay
//! rebuilds is what was acknowledged.
//!
//! Invariants:
//! 1. `generation` only grows, and every wake has a generation of its own: a request for an
//!    older wake (or the same generation's other `wake_id`) can never match again.
//! 2. An acked position only moves forward, and only by an ack of the current wake (or the
//!    auto-ack of a webhook answering `done`).
//! 3. A wake in flight is re-offered after a restart: an undelivered one is delivered again,
//!    a held lease expires at its recorded deadline.

pub(crate) mod glob;

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Where Durable Streams streams live in the engine's namespace: a stream's key is its full
/// canonical path, and subscriptions name streams relative to this root.
pub const STREAM_ROOT: &str = "/v1/stream/";

/// Lease bounds and default of the protocol (1 s to 10 min, 30 s).
pub const LEASE_TTL_MS: (u64, u64, u64) = (1_000, 600_000, 30_000);

/// A configured `lease_ttl_ms`: the protocol's default when absent, `None` when out of
/// bounds.
pub fn lease_ttl(ms: Option<u64>) -> Option<u64> {
    let (min, max, default) = LEASE_TTL_MS;
    match ms {
        None => Some(default),
        Some(ms) if (min..=max).contains(&ms) => Some(ms),
        Some(_) => None,
    }
}

/// How a subscription wakes its worker.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum SubKind {
    /// POST a signed wake to this URL.
    Webhook { url: String },
    /// Append a wake event to this stream (root-relative), for workers to claim.
    PullWake { wake_stream: String },
}

/// A subscription's configuration, normalized: two specs are the same configuration exactly
/// when they are equal (the protocol's config hash compares the same fields).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubSpec {
    pub kind: SubKind,
    pub pattern: Option<String>,
    /// Explicit streams, sorted and without duplicates.
    pub streams: Vec<String>,
    pub lease_ttl_ms: u64,
    pub description: Option<String>,
}

impl SubSpec {
    /// Sort and deduplicate the explicit streams.
    pub fn normalized(mut self) -> Self {
        self.streams.sort();
        self.streams.dedup();
        self
    }
}

/// One linked stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Link {
    pub explicit: bool,
    pub glob: bool,
    /// Last processed position, inclusive (the next read starts here).
    pub acked: u64,
    /// The incarnation (log id) of the stream the link counts positions of; `None` while the
    /// stream does not exist.
    pub log: Option<u64>,
}

/// The wake in flight.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Wake {
    pub wake_id: String,
    pub generation: u64,
    /// The streams with pending data when the wake was made, and their tails then: what a
    /// webhook's `done` acks.
    pub snapshot: Vec<(String, u64)>,
    /// The pull-wake worker holding the lease.
    pub holder: Option<String>,
    /// When the lease ends (Unix ms); `None` until a webhook is delivered or a worker claims.
    pub lease_until: Option<i64>,
    /// A webhook wake was delivered (answered 2xx).
    pub delivered: bool,
}

/// A subscription's durable state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubRec {
    /// Engine id (from the log id space: it picks the WAL shard).
    pub id: u64,
    pub name: String,
    pub spec: SubSpec,
    pub created_ms: i64,
    /// The base URL the subscription was created through (`scheme://host`): the delivery
    /// side builds its callback URLs from it. Not part of the configuration.
    pub origin: String,
    /// The last change applied (WAL records with a lower or equal one are replayed over).
    pub seq: u64,
    pub links: BTreeMap<String, Link>,
    pub generation: u64,
    pub wake: Option<Wake>,
    /// Failed webhook deliveries in a row, and when the next attempt is due.
    pub attempts: u32,
    pub next_attempt: Option<i64>,
}

/// One change of a subscription. A WAL record holds a list of them, applied together.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum SubOp {
    /// Link `path` (explicitly or by the pattern); a new link starts at `acked` on `log`.
    Link {
        path: String,
        explicit: bool,
        acked: u64,
        log: Option<u64>,
    },
    /// Remove the explicit link of `path` (a glob link stays).
    Unlink { path: String },
    /// The stream was removed: its glob link goes, an explicit one waits at 0 for a new one.
    StreamGone { path: String },
    /// The stream was (re)created as `log`: the link counts from its start.
    StreamNew { path: String, log: u64 },
    /// A new wake.
    Wake(Wake),
    /// The webhook accepted the wake; its lease runs to `lease_until`.
    Delivered { lease_until: i64 },
    /// A webhook delivery failed: the next attempt is due at `next_at`.
    Retry { attempts: u32, next_at: i64 },
    /// A worker claimed the wake.
    Claim { holder: String, lease_until: i64 },
    /// The lease was extended.
    Extend { lease_until: i64 },
    /// Acked positions.
    Acks(Vec<(String, u64)>),
    /// The wake ended (done, released or its lease expired); its retry schedule goes too.
    End,
}

impl SubRec {
    /// The stream `path` went or came anew: the wake in flight must not ack its tail of the
    /// stream that was (a webhook's `done` acks the snapshot), which on the new one would skip
    /// data never delivered.
    fn forget_in_wake(&mut self, path: &str) {
        if let Some(w) = &mut self.wake {
            w.snapshot.retain(|(p, _)| p != path);
        }
    }

    /// Apply one change (live after its record commits, and in replay).
    pub fn apply(&mut self, op: &SubOp) {
        match op {
            SubOp::Link {
                path,
                explicit,
                acked,
                log,
            } => {
                let link = self.links.entry(path.clone()).or_insert(Link {
                    explicit: false,
                    glob: false,
                    acked: *acked,
                    log: *log,
                });
                if *explicit {
                    link.explicit = true;
                } else {
                    link.glob = true;
                }
            }
            SubOp::Unlink { path } => {
                if let Some(l) = self.links.get_mut(path) {
                    l.explicit = false;
                    if !l.glob {
                        self.links.remove(path);
                    }
                }
            }
            SubOp::StreamGone { path } => {
                self.forget_in_wake(path);
                if let Some(l) = self.links.get_mut(path) {
                    if l.explicit {
                        l.glob = false;
                        l.acked = 0;
                        l.log = None;
                    } else {
                        self.links.remove(path);
                    }
                }
            }
            SubOp::StreamNew { path, log } => {
                self.forget_in_wake(path);
                if let Some(l) = self.links.get_mut(path) {
                    l.acked = 0;
                    l.log = Some(*log);
                }
            }
            SubOp::Wake(w) => {
                self.generation = w.generation;
                self.wake = Some(w.clone());
            }
            SubOp::Delivered { lease_until } => {
                self.attempts = 0;
                self.next_attempt = None;
                if let Some(w) = &mut self.wake {
                    w.delivered = true;
                    w.lease_until = Some(*lease_until);
                }
            }
            SubOp::Retry { attempts, next_at } => {
                self.attempts = *attempts;
                self.next_attempt = Some(*next_at);
            }
            SubOp::Claim {
                holder,
                lease_until,
            } => {
                if let Some(w) = &mut self.wake {
                    w.holder = Some(holder.clone());
                    w.lease_until = Some(*lease_until);
                }
            }
            SubOp::Extend { lease_until } => {
                if let Some(w) = &mut self.wake {
                    w.lease_until = Some(*lease_until);
                }
            }
            SubOp::Acks(acks) => {
                for (path, pos) in acks {
                    if let Some(l) = self.links.get_mut(path) {
                        l.acked = l.acked.max(*pos);
                    }
                }
            }
            SubOp::End => {
                // No retry is scheduled for a wake that is over.
                self.wake = None;
                self.attempts = 0;
                self.next_attempt = None;
            }
        }
    }
}

/// A linked stream as a response shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkInfo {
    pub path: String,
    /// `explicit` wins over `glob` when both link it.
    pub explicit: bool,
    pub acked: u64,
    pub tail: u64,
}

impl LinkInfo {
    pub fn has_pending(&self) -> bool {
        self.tail > self.acked
    }
}

/// A subscription as `GET` shows it.
#[derive(Debug, Clone)]
pub struct SubInfo {
    pub name: String,
    pub spec: SubSpec,
    pub created_ms: i64,
    pub origin: String,
    /// A webhook delivery failed and a retry is scheduled.
    pub failed: bool,
    pub links: Vec<LinkInfo>,
}

/// A wake to hand to a worker: the webhook's body or the claim's answer.
#[derive(Debug, Clone)]
pub struct WakeInfo {
    pub name: String,
    /// The subscription's [`SubRec::origin`].
    pub origin: String,
    /// The subscription's incarnation (tokens name it, so a re-created subscription of the
    /// same name refuses them).
    pub sub_id: u64,
    pub wake_id: String,
    pub generation: u64,
    /// The streams with pending data.
    pub streams: Vec<LinkInfo>,
    pub lease_ttl_ms: u64,
}

/// What the delivery side should do for a subscription now.
#[derive(Debug, Clone)]
pub enum SubAction {
    /// POST this wake to the webhook.
    Webhook { url: String, wake: WakeInfo },
    /// Append this wake event (JSON) to the pull-wake stream (a root-relative path).
    WakeEvent {
        wake_stream: String,
        generation: u64,
        event: String,
    },
}

/// What [`crate::Engine::sub_poke`] found: something to do now, and when to look again.
#[derive(Debug, Clone, Default)]
pub struct SubPoke {
    pub action: Option<SubAction>,
    /// Unix ms of the next lease expiry or retry, if any.
    pub due: Option<i64>,
}

/// How a webhook delivery went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivery {
    /// 2xx; `done`: the body was `{"done": true}`.
    Accepted {
        done: bool,
    },
    Failed,
}

/// A subscription request the state refuses.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SubError {
    #[error("subscription not found")]
    NotFound,
    #[error("subscription already exists with a different configuration")]
    Exists,
    #[error("subscription is not pull-wake")]
    NotPullWake,
    #[error("subscription is not a webhook subscription")]
    NotWebhook,
    #[error("another worker holds the lease")]
    AlreadyClaimed { holder: String, generation: u64 },
    #[error("subscription has no pending work")]
    NoPendingWork,
    #[error("wake generation is stale")]
    Fenced,
    #[error("{0}")]
    InvalidOffset(String),
    #[error("the server's limit {limit} ({max}) is reached")]
    Limit { limit: &'static str, max: u64 },
    #[error(transparent)]
    Engine(#[from] crate::EngineError),
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec() -> SubRec {
        SubRec {
            id: 1,
            name: "s".into(),
            spec: SubSpec {
                kind: SubKind::Webhook {
                    url: "https://x".into(),
                },
                pattern: Some("a/*".into()),
                streams: vec![],
                lease_ttl_ms: 30_000,
                description: None,
            },
            created_ms: 0,
            origin: String::new(),
            seq: 0,
            links: BTreeMap::new(),
            generation: 0,
            wake: None,
            attempts: 0,
            next_attempt: None,
        }
    }

    #[test]
    fn links_keep_explicit_over_glob_and_streams_restart_at_zero() {
        let mut r = rec();
        let link = |explicit| SubOp::Link {
            path: "a/b".into(),
            explicit,
            acked: 7,
            log: Some(3),
        };
        r.apply(&link(false));
        r.apply(&link(true));
        r.apply(&SubOp::Unlink { path: "a/b".into() });
        assert!(r.links["a/b"].glob && !r.links["a/b"].explicit);
        r.apply(&SubOp::Acks(vec![("a/b".into(), 9), ("a/b".into(), 8)]));
        assert_eq!(r.links["a/b"].acked, 9, "acks never move back");
        r.apply(&SubOp::StreamNew {
            path: "a/b".into(),
            log: 4,
        });
        assert_eq!((r.links["a/b"].acked, r.links["a/b"].log), (0, Some(4)));
        r.apply(&SubOp::StreamGone { path: "a/b".into() });
        assert!(r.links.is_empty(), "a glob-only link goes with its stream");
        r.apply(&link(true));
        r.apply(&SubOp::StreamGone { path: "a/b".into() });
        assert_eq!(
            r.links["a/b"].log, None,
            "an explicit link waits for a new stream"
        );
    }

    #[test]
    fn a_wake_records_its_generation_and_ends() {
        let mut r = rec();
        r.apply(&SubOp::Wake(Wake {
            wake_id: "w".into(),
            generation: 5,
            snapshot: vec![],
            holder: None,
            lease_until: None,
            delivered: false,
        }));
        r.apply(&SubOp::Claim {
            holder: "w1".into(),
            lease_until: 10,
        });
        assert_eq!(
            r.wake.as_ref().and_then(|w| w.holder.clone()),
            Some("w1".into())
        );
        r.apply(&SubOp::End);
        assert_eq!((r.generation, r.wake.is_none()), (5, true));
    }
}
