//! The hub dispatcher: delivers outbox entries to subscribers' callbacks.
//!
//! Every poll it lists the subscriptions and starts a delivery round for each one that has
//! none running, at most `PINV_HUB_CONCURRENCY` at once, so a slow listener holds up only
//! its own round, never a POST or another listener. A round takes the subscription's lease
//! (several instances on one MongoDB: one delivers, the others skip), reads a batch of
//! entries in key order (subscription, product, revision) and POSTs each product's entries
//! one after the other, up to `DELIVERIES_AT_ONCE` products at a time. A failed entry is
//! retried later with exponential backoff and jitter, and the product's later entries wait
//! behind it, so each product's events arrive in commit order.
//! Entries are removed only after their listener answered 2xx: at least once.

use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::Utc;
use futures_util::stream::{self, StreamExt};
use hmac::{Hmac, KeyInit, Mac};
use prometheus::{Histogram, HistogramOpts, IntCounterVec, IntGauge, Opts};
use sha2::Sha256;
use tokio::sync::Semaphore;

use crate::config::HubSettings;
use crate::core::event::EventType;
use crate::core::PinvId;
use crate::store::outbox::{overflow, OutboxEntry, Settlement, Subscription};
use crate::store::Store;

/// Header carrying the event id of a delivery.
pub const EVENT_ID_HEADER: &str = "x-pinv-event-id";
/// Header carrying `sha256=<hex HMAC-SHA256 of the body>` when the subscription has a secret.
pub const SIGNATURE_HEADER: &str = "x-pinv-signature";

/// The dispatcher's metrics.
#[derive(Clone)]
pub struct HubMetrics {
    /// Entries waiting, summed over subscriptions (as of each one's last round).
    pub depth: IntGauge,
    /// Entries kept as dead, summed likewise.
    pub dead: IntGauge,
    /// Delivery attempts by outcome: `delivered`, `failed`, `dead`; and `overflow`: events
    /// given up undelivered because the subscription's outbox passed `PINV_HUB_OUTBOX_MAX`.
    pub deliveries: IntCounterVec,
    /// Seconds from commit to a listener's 2xx.
    pub latency: Histogram,
}

impl HubMetrics {
    /// Fresh, unregistered metrics.
    pub fn new() -> Self {
        Self {
            depth: IntGauge::new("pinv_hub_outbox_depth", "Hub events waiting for delivery")
                .expect("valid metric"),
            dead: IntGauge::new("pinv_hub_outbox_dead", "Hub events given up on")
                .expect("valid metric"),
            deliveries: IntCounterVec::new(
                Opts::new(
                    "pinv_hub_deliveries_total",
                    "Hub delivery attempts by outcome",
                ),
                &["outcome"],
            )
            .expect("valid metric"),
            latency: Histogram::with_opts(
                HistogramOpts::new(
                    "pinv_hub_delivery_latency_seconds",
                    "Time from commit to the listener's answer",
                )
                .buckets(vec![
                    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 60.0,
                ]),
            )
            .expect("valid metric"),
        }
    }

    /// The collectors, to register with the app's metrics.
    pub fn collectors(&self) -> Vec<Box<dyn prometheus::core::Collector>> {
        vec![
            Box::new(self.depth.clone()),
            Box::new(self.dead.clone()),
            Box::new(self.deliveries.clone()),
            Box::new(self.latency.clone()),
        ]
    }
}

impl Default for HubMetrics {
    fn default() -> Self {
        Self::new()
    }
}

/// The hex HMAC-SHA256 of `body` under `secret`.
pub fn signature(secret: &str, body: &[u8]) -> String {
    let mut mac =
        Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes keys of any length");
    mac.update(body);
    mac.finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Where an event goes: the TMF637 listener resource under the callback,
/// `{callback}/listener/productCreateEvent` etc. (the callback's query kept); the callback
/// itself for an event of no known kind.
pub fn listener_url(callback: &str, kind: Option<EventType>) -> String {
    let (Some(kind), Ok(mut url)) = (kind, reqwest::Url::parse(callback)) else {
        return callback.to_owned();
    };
    if let Ok(mut segments) = url.path_segments_mut() {
        segments
            .pop_if_empty()
            .push("listener")
            .push(kind.listener());
    }
    url.to_string()
}

/// The delay before retry number `attempts` (1-based): `base * 2^(attempts-1)`, at most
/// `max`, then a random half to all of it so that retries of many events spread out.
pub fn backoff(attempts: u32, base: Duration, max: Duration) -> Duration {
    let exp = base.saturating_mul(1u32 << attempts.saturating_sub(1).min(20));
    let capped = exp.min(max);
    capped.mul_f64(0.5 + fastrand::f64() / 2.0)
}

struct Dispatcher {
    store: Arc<dyn Store>,
    settings: HubSettings,
    client: reqwest::Client,
    metrics: HubMetrics,
    holder: String,
    running: Mutex<HashSet<String>>,
    rounds: Semaphore,
    counts: Mutex<std::collections::HashMap<String, (u64, u64)>>,
    /// When each subscription's next count is due.
    counted: Mutex<std::collections::HashMap<String, Instant>>,
}

/// See [`Dispatcher::counts_due`].
const COUNT_EVERY: Duration = Duration::from_secs(1);
/// A count waits at least this many times its own duration before the next one.
const COUNT_SHARE: u32 = 20;

/// How long after a count that took `took` the next one is due: counting then takes at
/// most a twentieth of the subscription's time.
fn count_wait(took: Duration) -> Duration {
    COUNT_EVERY.max(took.saturating_mul(COUNT_SHARE))
}

/// Deliveries one subscription's round has in flight at once, each of another product: one
/// at a time, a listener got about 1,500 events a second here, fewer than PINV stores
/// (BENCHMARKS.md, round 11).
const DELIVERIES_AT_ONCE: usize = 8;

/// What became of one delivery attempt, applied to the subscription once its round is over.
enum Outcome {
    Delivered {
        key: String,
        at: chrono::DateTime<Utc>,
    },
    /// `entry` carries the failure in `last_error`, and its next attempt or `dead`.
    Failed {
        entry: Box<OutboxEntry>,
        at: chrono::DateTime<Utc>,
    },
}

/// Starts the dispatcher on the current runtime; it runs until the runtime stops.
pub fn spawn(
    store: Arc<dyn Store>,
    settings: HubSettings,
    metrics: HubMetrics,
) -> tokio::task::JoinHandle<()> {
    let client = reqwest::Client::builder()
        .timeout(settings.hub_timeout)
        .build()
        .expect("a plain HTTP client builds");
    let dispatcher = Arc::new(Dispatcher {
        store,
        rounds: Semaphore::new(settings.hub_concurrency),
        settings,
        client,
        metrics,
        holder: uuid::Uuid::new_v4().to_string(),
        running: Mutex::new(HashSet::new()),
        counts: Mutex::new(Default::default()),
        counted: Mutex::new(Default::default()),
    });
    tokio::spawn(async move { dispatcher.run().await })
}

impl Dispatcher {
    async fn run(self: Arc<Self>) {
        let mut tick = tokio::time::interval(self.settings.hub_poll);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // Owned here, so that stopping the dispatcher stops its rounds too (and every
        // handle on the store goes).
        let mut rounds = tokio::task::JoinSet::new();
        loop {
            tick.tick().await;
            while rounds.try_join_next().is_some() {}
            let subs = match self.store.subscriptions().await {
                Ok(subs) => subs,
                Err(e) => {
                    tracing::warn!(error = %e.chain(), "hub: cannot list subscriptions");
                    continue;
                }
            };
            self.forget_deleted(&subs);
            for sub in subs {
                let Ok(permit) = self.rounds.try_acquire() else {
                    break;
                };
                if !self.lock_running().insert(sub.id.clone()) {
                    continue;
                }
                permit.forget();
                let me = Arc::clone(&self);
                rounds.spawn(async move {
                    let id = sub.id.clone();
                    me.deliver(sub).await;
                    me.lock_running().remove(&id);
                    me.rounds.add_permits(1);
                });
            }
        }
    }

    /// Counting reads a subscription's whole outbox, so the depth gauges are refreshed at
    /// most every [`COUNT_EVERY`] per subscription, not after every round; and, when the
    /// outbox is so deep that one count takes longer than a twentieth of that, only after
    /// twenty times the last count's duration (see [`Dispatcher::counted_in`]), so that a
    /// backlog is not made worse by counting it.
    fn counts_due(&self, id: &str) -> bool {
        let due = self.counted.lock().unwrap_or_else(|p| p.into_inner());
        due.get(id).is_none_or(|at| Instant::now() >= *at)
    }

    /// Records that a count of `id`'s outbox took `took`: the next is due after
    /// `max(COUNT_EVERY, COUNT_SHARE * took)`.
    fn counted_in(&self, id: &str, took: Duration) {
        let wait = count_wait(took);
        self.counted
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id.to_owned(), Instant::now() + wait);
    }

    fn lock_running(&self) -> std::sync::MutexGuard<'_, HashSet<String>> {
        self.running.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn forget_deleted(&self, subs: &[Subscription]) {
        let live: HashSet<&str> = subs.iter().map(|s| s.id.as_str()).collect();
        let mut counts = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        counts.retain(|id, _| live.contains(id.as_str()));
        self.counted
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|id, _| live.contains(id.as_str()));
        self.publish_counts(&counts);
    }

    fn publish_counts(&self, counts: &std::collections::HashMap<String, (u64, u64)>) {
        let (pending, dead) = counts
            .values()
            .fold((0, 0), |(p, d), (cp, cd)| (p + cp, d + cd));
        self.metrics
            .depth
            .set(i64::try_from(pending).unwrap_or(i64::MAX));
        self.metrics
            .dead
            .set(i64::try_from(dead).unwrap_or(i64::MAX));
    }

    /// Delivery rounds for one subscription until its due entries are done or one fails.
    async fn deliver(&self, mut sub: Subscription) {
        let lease = format!("hub/{}", sub.id);
        loop {
            let mut until = Utc::now();
            if !self.hold(&lease, &mut until).await {
                return;
            }
            if self.counts_due(&sub.id) {
                let started = Instant::now();
                let counted = self.count_and_bound(&mut sub).await;
                self.counted_in(&sub.id, started.elapsed());
                if !counted {
                    return;
                }
            }
            let entries = match self.store.outbox(&sub.id, self.settings.hub_batch).await {
                Ok(entries) => entries,
                Err(e) => {
                    tracing::warn!(error = %e.chain(), "hub: cannot read the outbox");
                    return;
                }
            };
            let full = entries.len() == self.settings.hub_batch;
            let (settlements, delivered_any) = self.round(&mut sub, entries, &lease, until).await;
            let status_changed = !settlements.is_empty();
            if let Err(e) = self.store.settle(settlements).await {
                tracing::warn!(error = %e.chain(), "hub: cannot record deliveries");
                return;
            }
            if status_changed {
                if let Err(e) = self.store.set_delivery_status(&sub.id, &sub.status).await {
                    tracing::warn!(error = %e.chain(), "hub: cannot record the delivery status");
                }
            }
            if !(full && delivered_any) {
                return;
            }
        }
    }

    /// Refreshes the subscription's counts and, when more than `PINV_HUB_OUTBOX_MAX` events
    /// wait, keeps the oldest as dead. The bound is kept here, under the subscription's
    /// lease, rather than at commit: counting there would cost every POST a read per
    /// subscription, and a full outbox must never refuse or hold up a write. False when
    /// the store failed (the round stops; the next poll tries again).
    async fn count_and_bound(&self, sub: &mut Subscription) -> bool {
        let Ok(mut c) = self.store.outbox_counts(&sub.id).await else {
            return true;
        };
        let max = self.settings.hub_outbox_max;
        if c.pending > u64::try_from(max).unwrap_or(u64::MAX) {
            let limit = usize::try_from(c.pending).unwrap_or(usize::MAX);
            let pending = match self.store.outbox(&sub.id, limit).await {
                Ok(pending) => pending,
                Err(e) => {
                    tracing::warn!(error = %e.chain(), "hub: cannot read the outbox");
                    return false;
                }
            };
            let dead = overflow(pending, max);
            let n = dead.len() as u64;
            if n > 0 {
                let first = dead[0].event_id.clone();
                let settled = dead.into_iter().map(Settlement::Keep).collect();
                if let Err(e) = self.store.settle(settled).await {
                    tracing::warn!(error = %e.chain(), "hub: cannot record the overflow");
                    return false;
                }
                tracing::warn!(subscription = %sub.id, given_up = n, max, "hub: outbox full");
                self.metrics
                    .deliveries
                    .with_label_values(&["overflow"])
                    .inc_by(n);
                sub.status.overflowed += n;
                sub.status.last_error = Some(format!(
                    "{first}: outbox full (PINV_HUB_OUTBOX_MAX={max}): the {n} oldest waiting events kept as dead"
                ));
                sub.status.last_error_at = Some(Utc::now());
                if let Err(e) = self.store.set_delivery_status(&sub.id, &sub.status).await {
                    tracing::warn!(error = %e.chain(), "hub: cannot record the delivery status");
                }
                c.pending -= n.min(c.pending);
                c.dead += n;
            }
        }
        let mut counts = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        counts.insert(sub.id.clone(), (c.pending, c.dead));
        self.publish_counts(&counts);
        true
    }

    /// Delivers the due entries of one batch; returns what to record and whether any
    /// entry was delivered. Up to [`DELIVERIES_AT_ONCE`] products' events are in flight at
    /// once, each product's one after the other, in commit order.
    async fn round(
        &self,
        sub: &mut Subscription,
        entries: Vec<OutboxEntry>,
        lease: &str,
        until: chrono::DateTime<Utc>,
    ) -> (Vec<Settlement>, bool) {
        let mut products: BTreeMap<PinvId, Vec<OutboxEntry>> = BTreeMap::new();
        for entry in entries {
            products.entry(entry.product).or_default().push(entry);
        }
        let until = tokio::sync::Mutex::new(until);
        let listener: &Subscription = sub;
        let outcomes: Vec<Vec<Outcome>> = stream::iter(products.into_values())
            .map(|entries| self.deliver_product(listener, entries, lease, &until))
            .buffer_unordered(DELIVERIES_AT_ONCE)
            .collect()
            .await;
        let mut settlements = Vec::new();
        let mut delivered_any = false;
        for outcome in outcomes.into_iter().flatten() {
            match outcome {
                Outcome::Delivered { key, at } => {
                    sub.status.delivered += 1;
                    sub.status.last_success = sub.status.last_success.max(Some(at));
                    delivered_any = true;
                    settlements.push(Settlement::Delivered(key));
                }
                Outcome::Failed { entry, at } => {
                    if sub.status.last_error_at.is_none_or(|last| last <= at) {
                        let error = entry.last_error.as_deref().unwrap_or_default();
                        sub.status.last_error = Some(format!("{}: {error}", entry.event_id));
                        sub.status.last_error_at = Some(at);
                    }
                    settlements.push(Settlement::Keep(*entry));
                }
            }
        }
        (settlements, delivered_any)
    }

    /// One product's due entries, oldest first, until one fails (the later ones wait
    /// behind it) or is not due yet.
    async fn deliver_product(
        &self,
        sub: &Subscription,
        entries: Vec<OutboxEntry>,
        lease: &str,
        until: &tokio::sync::Mutex<chrono::DateTime<Utc>>,
    ) -> Vec<Outcome> {
        let mut outcomes = Vec::new();
        for mut entry in entries {
            if entry.next_attempt > Utc::now() {
                break;
            }
            // Another instance may take over once the lease lapses: stop before that. One
            // product at a time renews it: two renewals at once would race on its version.
            if !self.hold(lease, &mut *until.lock().await).await {
                break;
            }
            match self.post(sub, &entry).await {
                Ok(()) => {
                    let now = Utc::now();
                    let seconds = (now - entry.committed_at)
                        .to_std()
                        .map_or(0.0, |d| d.as_secs_f64());
                    self.metrics.latency.observe(seconds);
                    self.metrics
                        .deliveries
                        .with_label_values(&["delivered"])
                        .inc();
                    outcomes.push(Outcome::Delivered {
                        key: entry.key(),
                        at: now,
                    });
                }
                Err(error) => {
                    let now = Utc::now();
                    entry.attempts += 1;
                    entry.last_error = Some(error);
                    let window = chrono::Duration::from_std(self.settings.hub_retry_window)
                        .unwrap_or(chrono::Duration::days(1));
                    if now - entry.committed_at >= window {
                        entry.dead = true;
                        self.metrics.deliveries.with_label_values(&["dead"]).inc();
                    } else {
                        let delay = backoff(
                            entry.attempts,
                            self.settings.hub_retry_base,
                            self.settings.hub_retry_max,
                        );
                        entry.next_attempt =
                            now + chrono::Duration::from_std(delay).unwrap_or_default();
                        self.metrics.deliveries.with_label_values(&["failed"]).inc();
                    }
                    outcomes.push(Outcome::Failed {
                        entry: Box::new(entry),
                        at: now,
                    });
                    break;
                }
            }
        }
        outcomes
    }

    /// Keeps the subscription's lease for at least one more delivery: renews it (to two
    /// delivery timeouts plus a margin) when less than half of that is left. False when
    /// another instance holds it.
    async fn hold(&self, lease: &str, until: &mut chrono::DateTime<Utc>) -> bool {
        let span = self.settings.hub_timeout * 2 + Duration::from_secs(5);
        let span = chrono::Duration::from_std(span).unwrap_or(chrono::Duration::hours(1));
        let now = Utc::now();
        if *until - now > span / 2 {
            return true;
        }
        match self.store.lease(lease, &self.holder, now + span).await {
            Ok(true) => {
                *until = now + span;
                true
            }
            Ok(false) => false,
            Err(e) => {
                tracing::warn!(error = %e.chain(), "hub: cannot take the delivery lease");
                false
            }
        }
    }

    /// One HTTP POST of one entry; `Err` says why it did not get a 2xx.
    async fn post(&self, sub: &Subscription, entry: &OutboxEntry) -> Result<(), String> {
        let body = entry.event.text().as_bytes().to_vec();
        let mut request = self
            .client
            .post(listener_url(
                &sub.callback,
                EventType::of_event_id(&entry.event_id),
            ))
            .header("content-type", "application/json")
            .header(EVENT_ID_HEADER, &entry.event_id);
        if let Some(secret) = &sub.secret {
            request = request.header(
                SIGNATURE_HEADER,
                format!("sha256={}", signature(secret, &body)),
            );
        }
        let started = Instant::now();
        let answer = request.body(body).send().await;
        tracing::debug!(
            subscription = %sub.id,
            event = %entry.event_id,
            ms = started.elapsed().as_millis() as u64,
            "hub: delivery attempt"
        );
        match answer {
            Ok(res) if res.status().is_success() => Ok(()),
            Ok(res) => Err(format!("listener answered {}", res.status().as_u16())),
            Err(e) if e.is_timeout() => Err("listener did not answer in time".to_owned()),
            Err(e) => Err(format!("cannot reach the listener: {e}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_count_that_takes_long_waits_twenty_times_as_long() {
        assert_eq!(count_wait(Duration::ZERO), COUNT_EVERY);
        assert_eq!(count_wait(Duration::from_millis(20)), COUNT_EVERY);
        assert_eq!(count_wait(Duration::from_millis(50)), COUNT_EVERY);
        assert_eq!(
            count_wait(Duration::from_millis(200)),
            Duration::from_secs(4)
        );
        assert_eq!(count_wait(Duration::MAX), Duration::MAX);
    }

    #[test]
    fn backoff_doubles_up_to_the_cap_with_jitter() {
        let base = Duration::from_millis(100);
        let max = Duration::from_secs(1);
        for _ in 0..50 {
            let first = backoff(1, base, max);
            assert!(
                first >= Duration::from_millis(50) && first <= base,
                "{first:?}"
            );
            let third = backoff(3, base, max);
            assert!(third >= Duration::from_millis(200) && third <= Duration::from_millis(400));
            let late = backoff(40, base, max);
            assert!(late >= max / 2 && late <= max, "{late:?}");
        }
    }

    #[test]
    fn events_go_to_the_tmf_listener_resource_under_the_callback() {
        let create = Some(EventType::Create);
        let state = Some(EventType::StateChange);
        assert_eq!(
            listener_url("http://a:1/hook", create),
            "http://a:1/hook/listener/productCreateEvent"
        );
        assert_eq!(
            listener_url("https://a/hook/?token=x", state),
            "https://a/hook/listener/productStateChangeEvent?token=x"
        );
        assert_eq!(
            listener_url("http://a", create),
            "http://a/listener/productCreateEvent"
        );
        assert_eq!(listener_url("http://a/x", None), "http://a/x");
    }

    #[test]
    fn the_signature_is_the_rfc_4231_hmac_sha256() {
        // RFC 4231, test case 2.
        assert_eq!(
            signature("Jefe", b"what do ya want for nothing?"),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }
}
