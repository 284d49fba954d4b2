//! The event hub: a bounded history ring plus a broadcast to subscribers, each behind its
//! own bounded queue. Publishing never waits: a subscriber whose queue is full loses the
//! event, the loss is counted, and the subscriber is told in-band, at the exact place of
//! the gap, with `LostEvents { source: CLIENT_QUEUE, count }` (Hubble's model: loss is a
//! first-class message).
//!
//! The same hub serves the agent (fed by the call tracker) and the collector (fed by every
//! agent's `Publish` stream).
use std::{
    collections::{HashMap, VecDeque},
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Mutex, MutexGuard,
    },
    time::{Duration, Instant},
};

use collector_proto::v1::{
    flow_event::Event, CallStateKind, FlowEvent, LostEvents, LostEventsSource, Party,
};
use tokio::sync::mpsc::{self, error::TryRecvError, error::TrySendError};

use super::filter::Selector;
use crate::metrics::Metrics;
use crate::privacy::policy::PREFIX_SEPARATOR;

/// Default number of events kept in the history ring.
pub const DEFAULT_HISTORY: usize = 10_000;
/// Default queue length of one subscriber.
pub const DEFAULT_SUBSCRIBER_QUEUE: usize = 1_024;
/// Default most subscribers at once.
pub const DEFAULT_MAX_SUBSCRIBERS: usize = 64;
/// Default most calls whose parties are remembered (for party filters on media and SIP
/// message events).
pub const DEFAULT_MAX_CALLS: usize = 20_000;
/// Smallest subscriber queue: a loss notice and the event after it must fit together.
pub const MIN_SUBSCRIBER_QUEUE: usize = 2;

/// Sizes of a hub.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HubConfig {
    /// Events kept for `--last` / `--since` (0 = no history).
    pub history: usize,
    /// Queue length of each subscriber (at least [`MIN_SUBSCRIBER_QUEUE`]).
    pub subscriber_queue: usize,
    /// Most subscribers at once.
    pub max_subscribers: usize,
    /// Most calls whose parties are remembered.
    pub max_calls: usize,
}

impl Default for HubConfig {
    fn default() -> Self {
        HubConfig {
            history: DEFAULT_HISTORY,
            subscriber_queue: DEFAULT_SUBSCRIBER_QUEUE,
            max_subscribers: DEFAULT_MAX_SUBSCRIBERS,
            max_calls: DEFAULT_MAX_CALLS,
        }
    }
}

/// One published event as the hub keeps it.
#[derive(Debug, Clone, PartialEq)]
pub struct Stored {
    /// Publication order in this hub, from 1.
    pub seq: u64,
    /// The event.
    pub event: FlowEvent,
    /// Pseudonyms of the parties of the event's call (its own, and those learnt from the
    /// call's earlier call_state events), for party filters.
    pub parties: Arc<[String]>,
}

/// What a subscriber receives.
#[derive(Debug, Clone, PartialEq)]
pub enum Item {
    /// An event.
    Event(Arc<Stored>),
    /// This many matching events were lost here because the subscriber's queue was full.
    Lost(u64),
}

impl Item {
    /// The event to send to a client: the event itself, or a `LostEvents` notice stamped
    /// `now_ms`.
    pub fn to_event(&self, now_ms: u64) -> FlowEvent {
        match self {
            Item::Event(s) => s.event.clone(),
            Item::Lost(count) => lost_event(LostEventsSource::ClientQueue, *count, now_ms),
        }
    }
}

/// A `LostEvents` flow event.
pub fn lost_event(source: LostEventsSource, count: u64, time_ms: u64) -> FlowEvent {
    FlowEvent {
        time_ms,
        event: Some(Event::LostEvents(LostEvents {
            source: source as i32,
            count,
        })),
        ..Default::default()
    }
}

/// Which buffered events a subscriber starts with.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Window {
    /// Only events at or after this time (Unix ms; 0 = no bound).
    pub since_ms: u64,
    /// Only events before this time (Unix ms; 0 = no bound).
    pub until_ms: u64,
    /// Only the last N matching events (0 = all in the window when `since_ms` is set, none
    /// otherwise).
    pub last_n: usize,
}

/// Why a subscription was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum HubError {
    /// The hub has as many subscribers as it allows.
    #[error("too many watch clients (at most {0})")]
    TooManySubscribers(usize),
    /// The hub is shutting down.
    #[error("the watch hub is shutting down")]
    Closed,
}

/// Counters of a hub (also exported through [`Metrics`] when one is attached).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HubStats {
    /// Events published.
    pub published: u64,
    /// Events lost because a subscriber's queue was full.
    pub client_lost: u64,
    /// Subscribers now (those still listening).
    pub subscribers: usize,
    /// Events in the history ring now.
    pub history: usize,
    /// Calls forgotten to stay within `max_calls`.
    pub calls_evicted: u64,
    /// Calls whose parties are remembered now.
    pub calls_indexed: usize,
}

struct Slot {
    tx: mpsc::Sender<Item>,
    lost: Arc<AtomicU64>,
    selector: Arc<Selector>,
}

enum Delivery {
    Sent,
    Lost,
    Gone,
}

impl Slot {
    /// Queues `stored`, preceded by the pending loss notice if there is one; never waits.
    fn deliver(&self, stored: &Arc<Stored>) -> Delivery {
        if self.lost.load(Ordering::Acquire) == 0 {
            return match self.tx.try_send(Item::Event(Arc::clone(stored))) {
                Ok(()) => Delivery::Sent,
                Err(TrySendError::Full(_)) => {
                    self.lost.fetch_add(1, Ordering::AcqRel);
                    Delivery::Lost
                }
                Err(TrySendError::Closed(_)) => Delivery::Gone,
            };
        }
        // Reserve room for both, so the notice sits exactly where the gap is.
        match self.tx.try_reserve_many(2) {
            Ok(mut permits) => {
                // The subscriber may have taken the count itself meanwhile (on an empty
                // queue); either way each lost event is reported exactly once.
                let n = self.lost.swap(0, Ordering::AcqRel);
                if n > 0 {
                    if let Some(p) = permits.next() {
                        p.send(Item::Lost(n));
                    }
                }
                if let Some(p) = permits.next() {
                    p.send(Item::Event(Arc::clone(stored)));
                }
                Delivery::Sent
            }
            Err(TrySendError::Full(())) => {
                self.lost.fetch_add(1, Ordering::AcqRel);
                Delivery::Lost
            }
            Err(TrySendError::Closed(())) => Delivery::Gone,
        }
    }
}

/// How long a call's parties are still remembered after its `ENDED` state: the events
/// that follow it (the BYE's response, the last media statistics, a CDR sent late after the
/// tracker's linger) still match party filters.
pub const ENDED_CALL_LINGER: Duration = Duration::from_secs(60);

/// Parties remembered per call, so events that carry no party (media stats, SIP messages)
/// still match a party filter. A call is forgotten [`ENDED_CALL_LINGER`] after it ended, so
/// memory follows the calls in progress; and within `max` calls, the calls first seen
/// longest ago are forgotten first (calls whose end was never seen).
struct CallIndex {
    max: usize,
    parties: HashMap<(String, String), Arc<[String]>>,
    /// Keys in the order first seen (some already forgotten; compacted when it doubles).
    order: VecDeque<(String, String)>,
    /// Ended calls and when to forget them, in that order.
    ended: VecDeque<(Instant, (String, String))>,
    evicted: u64,
    empty: Arc<[String]>,
}

impl CallIndex {
    fn new(max: usize) -> Self {
        CallIndex {
            max,
            parties: HashMap::new(),
            order: VecDeque::new(),
            ended: VecDeque::new(),
            evicted: 0,
            empty: Arc::from(Vec::new()),
        }
    }

    /// The parties of `e`: its own and its call's, remembering new ones; `now` is when it
    /// was published.
    fn observe(&mut self, e: &FlowEvent, now: Instant) -> Arc<[String]> {
        self.forget_ended(now);
        let parties = self.parties_of(e);
        let ended = matches!(
            &e.event,
            Some(Event::CallState(cs)) if cs.state == CallStateKind::Ended as i32
        );
        if ended && !e.call_id.is_empty() {
            let key = (e.agent_id.clone(), e.call_id.clone());
            if self.parties.contains_key(&key) {
                self.ended.push_back((now + ENDED_CALL_LINGER, key));
            }
        }
        parties
    }

    /// Forgets the ended calls whose linger is over.
    fn forget_ended(&mut self, now: Instant) {
        while self.ended.front().is_some_and(|(at, _)| *at <= now) {
            if let Some((_, key)) = self.ended.pop_front() {
                self.parties.remove(&key);
            }
        }
        if self.order.len() > 2 * self.parties.len().max(64) {
            let parties = &self.parties;
            self.order.retain(|k| parties.contains_key(k));
        }
    }

    fn parties_of(&mut self, e: &FlowEvent) -> Arc<[String]> {
        let own = own_parties(e);
        if e.call_id.is_empty() || self.max == 0 {
            return if own.is_empty() {
                Arc::clone(&self.empty)
            } else {
                Arc::from(own)
            };
        }
        let key = (e.agent_id.clone(), e.call_id.clone());
        if let Some(known) = self.parties.get_mut(&key) {
            if own.iter().all(|p| known.contains(p)) {
                return Arc::clone(known);
            }
            let mut merged = known.to_vec();
            for p in own {
                if !merged.contains(&p) {
                    merged.push(p);
                }
            }
            *known = Arc::from(merged);
            return Arc::clone(known);
        }
        if own.is_empty() {
            return Arc::clone(&self.empty);
        }
        let parties: Arc<[String]> = Arc::from(own);
        self.parties.insert(key.clone(), Arc::clone(&parties));
        self.order.push_back(key);
        while self.parties.len() > self.max {
            let Some(old) = self.order.pop_front() else {
                break;
            };
            if self.parties.remove(&old).is_some() {
                self.evicted = self.evicted.saturating_add(1);
            }
        }
        parties
    }
}

/// Party pseudonyms an event names itself: caller and callee of a call state (and of its
/// CDR), or a registration's address of record. A `keep_prefix` value (`+4420…n_k1_x`)
/// also yields the pseudonym after the separator, so filters by pseudonym find it.
fn own_parties(e: &FlowEvent) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let mut add_party = |p: &Option<Party>| {
        let Some(p) = p else { return };
        for v in [&p.user, &p.domain, &p.display] {
            if v.is_empty() {
                continue;
            }
            for s in [
                Some(v.as_str()),
                v.split_once(PREFIX_SEPARATOR).map(|(_, pseudo)| pseudo),
            ]
            .into_iter()
            .flatten()
            {
                if !s.is_empty() && !out.iter().any(|o| o == s) {
                    out.push(s.to_string());
                }
            }
        }
    };
    match &e.event {
        Some(Event::CallState(cs)) => {
            add_party(&cs.caller);
            add_party(&cs.callee);
            if let Some(cdr) = &cs.cdr {
                add_party(&cdr.caller);
                add_party(&cdr.callee);
            }
        }
        Some(Event::Registration(r)) => add_party(&r.aor),
        Some(
            Event::MediaStats(_) | Event::Alert(_) | Event::LostEvents(_) | Event::SipMessage(_),
        )
        | None => {}
    }
    out
}

struct Inner {
    next_seq: u64,
    ring: VecDeque<Arc<Stored>>,
    subs: Vec<Slot>,
    calls: CallIndex,
    closed: bool,
}

/// The event hub (see the module docs). Shared behind an `Arc` by the producer and the
/// watch service.
pub struct Hub {
    config: HubConfig,
    inner: Mutex<Inner>,
    published: AtomicU64,
    client_lost: AtomicU64,
    metrics: Option<Arc<Metrics>>,
    closed: tokio::sync::watch::Sender<bool>,
}

impl std::fmt::Debug for Hub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hub")
            .field("config", &self.config)
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

impl Hub {
    /// An empty hub.
    pub fn new(config: HubConfig) -> Self {
        Self::build(config, None)
    }

    /// An empty hub that also reports to `metrics`.
    pub fn with_metrics(config: HubConfig, metrics: Arc<Metrics>) -> Self {
        Self::build(config, Some(metrics))
    }

    fn build(config: HubConfig, metrics: Option<Arc<Metrics>>) -> Self {
        let config = HubConfig {
            subscriber_queue: config.subscriber_queue.max(MIN_SUBSCRIBER_QUEUE),
            ..config
        };
        Hub {
            config,
            inner: Mutex::new(Inner {
                next_seq: 1,
                ring: VecDeque::with_capacity(config.history.min(DEFAULT_HISTORY)),
                subs: Vec::new(),
                calls: CallIndex::new(config.max_calls),
                closed: false,
            }),
            published: AtomicU64::new(0),
            client_lost: AtomicU64::new(0),
            metrics,
            closed: tokio::sync::watch::Sender::new(false),
        }
    }

    /// The sizes in force.
    pub fn config(&self) -> HubConfig {
        self.config
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock cannot leave the ring or the queues inconsistent
        // (each step is a single push or pop), so a poisoned lock is still usable.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Publishes one event: into the history, and to every subscriber whose filters match.
    /// Never waits; a subscriber with a full queue loses the event (counted, and told
    /// in-band). The call tracker calls this for every event it produces.
    pub fn publish(&self, event: FlowEvent) {
        let lost_notice = match &event.event {
            Some(Event::LostEvents(l)) => Some((l.source(), l.count)),
            _ => None,
        };
        let mut lost_now = 0u64;
        let subscribers = {
            let mut g = self.lock();
            if g.closed {
                return;
            }
            let seq = g.next_seq;
            g.next_seq = seq.saturating_add(1);
            let parties = g.calls.observe(&event, Instant::now());
            let stored = Arc::new(Stored {
                seq,
                event,
                parties,
            });
            if self.config.history > 0 {
                while g.ring.len() >= self.config.history {
                    g.ring.pop_front();
                }
                g.ring.push_back(Arc::clone(&stored));
            }
            g.subs.retain(|s| {
                if !s.selector.matches(&stored) {
                    return true;
                }
                match s.deliver(&stored) {
                    Delivery::Sent => true,
                    Delivery::Lost => {
                        lost_now += 1;
                        true
                    }
                    Delivery::Gone => false,
                }
            });
            (g.subs.len(), g.ring.len())
        };
        let (subscribers, held) = subscribers;
        self.published.fetch_add(1, Ordering::Relaxed);
        if lost_now > 0 {
            self.client_lost.fetch_add(lost_now, Ordering::Relaxed);
        }
        if let Some(m) = &self.metrics {
            m.flow_event_published();
            if lost_now > 0 {
                m.flow_events_lost(LostEventsSource::ClientQueue, lost_now);
            }
            if let Some((source, count)) = lost_notice {
                m.flow_events_lost(source, count);
            }
            m.set_watch_subscribers(subscribers);
            m.set_watch_history(held);
        }
    }

    /// Publishes a `LostEvents` notice: `count` events were lost at `source` before they
    /// reached the hub (e.g. the kernel ring buffer was full).
    pub fn publish_lost(&self, source: LostEventsSource, count: u64, time_ms: u64) {
        if count > 0 {
            self.publish(lost_event(source, count, time_ms));
        }
    }

    /// The buffered events in `window` that `selector` matches, oldest first.
    pub fn history(&self, selector: &Selector, window: Window) -> Vec<Arc<Stored>> {
        let g = self.lock();
        select(&g.ring, selector, window).into()
    }

    /// Subscribes: the subscription yields the buffered events in `window` that `selector`
    /// matches, then every new matching event, with no gap or duplicate between the two.
    pub fn subscribe(
        &self,
        selector: Arc<Selector>,
        window: Window,
    ) -> Result<Subscription, HubError> {
        let mut g = self.lock();
        if g.closed {
            return Err(HubError::Closed);
        }
        g.subs.retain(|s| !s.tx.is_closed());
        if g.subs.len() >= self.config.max_subscribers {
            return Err(HubError::TooManySubscribers(self.config.max_subscribers));
        }
        let history = select(&g.ring, &selector, window);
        let (tx, rx) = mpsc::channel(self.config.subscriber_queue);
        let lost = Arc::new(AtomicU64::new(0));
        g.subs.push(Slot {
            tx,
            lost: Arc::clone(&lost),
            selector,
        });
        let n = g.subs.len();
        drop(g);
        if let Some(m) = &self.metrics {
            m.set_watch_subscribers(n);
        }
        Ok(Subscription {
            history,
            rx: Some(rx),
            lost,
        })
    }

    /// Ends every subscription (their streams finish) and refuses new ones; publishing
    /// becomes a no-op. Called at shutdown so open `--follow` streams do not hold the
    /// server up.
    pub fn close(&self) {
        {
            let mut g = self.lock();
            g.closed = true;
            g.subs.clear();
        }
        self.closed.send_replace(true);
    }

    /// Completes once [`Hub::close`] has been called.
    pub async fn closed(&self) {
        let mut rx = self.closed.subscribe();
        // An error means the sender is gone, which only happens with the hub itself.
        let _ = rx.wait_for(|c| *c).await;
    }

    /// The hub's counters.
    pub fn stats(&self) -> HubStats {
        let g = self.lock();
        HubStats {
            published: self.published.load(Ordering::Relaxed),
            client_lost: self.client_lost.load(Ordering::Relaxed),
            subscribers: g.subs.iter().filter(|s| !s.tx.is_closed()).count(),
            history: g.ring.len(),
            calls_evicted: g.calls.evicted,
            calls_indexed: g.calls.parties.len(),
        }
    }
}

/// The events of `ring` in `window` matching `selector`, oldest first.
fn select(
    ring: &VecDeque<Arc<Stored>>,
    selector: &Selector,
    window: Window,
) -> VecDeque<Arc<Stored>> {
    let mut out = VecDeque::new();
    if window.last_n == 0 && window.since_ms == 0 {
        return out;
    }
    // Newest first, so `last_n` can stop early; arrival order, not event time, decides
    // "last", because agents' clocks and delays differ.
    for s in ring.iter().rev() {
        if window.last_n > 0 && out.len() >= window.last_n {
            break;
        }
        let t = s.event.time_ms;
        if t < window.since_ms || (window.until_ms > 0 && t >= window.until_ms) {
            continue;
        }
        if selector.matches(s) {
            out.push_front(Arc::clone(s));
        }
    }
    out
}

/// One subscriber's view of the hub. Dropping it unsubscribes.
#[derive(Debug)]
pub struct Subscription {
    history: VecDeque<Arc<Stored>>,
    rx: Option<mpsc::Receiver<Item>>,
    lost: Arc<AtomicU64>,
}

impl Subscription {
    /// The next item: buffered events first, then live ones; `None` once the hub is
    /// closed. Losses are reported in order, and at the latest when the queue runs empty.
    pub async fn next(&mut self) -> Option<Item> {
        if let Some(item) = self.try_next() {
            return Some(item);
        }
        let rx = self.rx.as_mut()?;
        match rx.recv().await {
            Some(item) => Some(item),
            None => {
                self.rx = None;
                self.take_lost()
            }
        }
    }

    /// The next item if one is ready now (buffered, queued, or a pending loss notice).
    pub fn try_next(&mut self) -> Option<Item> {
        if let Some(s) = self.history.pop_front() {
            return Some(Item::Event(s));
        }
        let rx = self.rx.as_mut()?;
        match rx.try_recv() {
            Ok(item) => Some(item),
            Err(TryRecvError::Empty) => self.take_lost(),
            Err(TryRecvError::Disconnected) => {
                self.rx = None;
                self.take_lost()
            }
        }
    }

    fn take_lost(&self) -> Option<Item> {
        match self.lost.swap(0, Ordering::AcqRel) {
            0 => None,
            n => Some(Item::Lost(n)),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing, reason = "tests")]
mod tests {
    use collector_proto::v1::{CallState, MediaStats};

    use super::*;

    fn state(call: &str, kind: CallStateKind) -> FlowEvent {
        FlowEvent {
            tenant: String::new(),
            time_ms: 1,
            agent_id: "a".into(),
            call_id: call.into(),
            event: Some(Event::CallState(CallState {
                state: kind as i32,
                caller: Some(Party {
                    user: format!("u_{call}"),
                    ..Default::default()
                }),
                ..Default::default()
            })),
        }
    }

    fn stats(call: &str) -> FlowEvent {
        FlowEvent {
            tenant: String::new(),
            time_ms: 1,
            agent_id: "a".into(),
            call_id: call.into(),
            event: Some(Event::MediaStats(MediaStats::default())),
        }
    }

    #[test]
    fn an_ended_call_is_forgotten_after_its_linger() {
        let t0 = Instant::now();
        let mut idx = CallIndex::new(1_000);
        assert_eq!(
            &*idx.observe(&state("c1", CallStateKind::Trying), t0),
            ["u_c1"]
        );
        // An event without parties takes the call's.
        assert_eq!(&*idx.observe(&stats("c1"), t0), ["u_c1"]);
        idx.observe(&state("c1", CallStateKind::Ended), t0);
        // Still known during the linger (the BYE's response, the last statistics)...
        let during = t0 + ENDED_CALL_LINGER - Duration::from_secs(1);
        assert_eq!(&*idx.observe(&stats("c1"), during), ["u_c1"]);
        // ... and gone after it.
        let after = t0 + ENDED_CALL_LINGER + Duration::from_secs(1);
        assert!(idx.observe(&stats("c1"), after).is_empty());
        assert!(idx.parties.is_empty());
        // A call in progress is never forgotten by time.
        idx.observe(&state("c2", CallStateKind::Answered), t0);
        idx.observe(&stats("x"), after + Duration::from_secs(3600));
        assert_eq!(idx.parties.len(), 1);
        assert_eq!(idx.evicted, 0);
    }

    #[test]
    fn memory_follows_calls_in_progress_not_calls_seen() {
        let t0 = Instant::now();
        let mut idx = CallIndex::new(20_000);
        // 5,000 calls, each ended right away, then their linger passes.
        for i in 0..5_000 {
            let call = format!("c{i}");
            idx.observe(&state(&call, CallStateKind::Trying), t0);
            idx.observe(&state(&call, CallStateKind::Ended), t0);
        }
        assert_eq!(idx.parties.len(), 5_000);
        let later = t0 + ENDED_CALL_LINGER + Duration::from_secs(1);
        idx.observe(&state("live", CallStateKind::Trying), later);
        assert_eq!(idx.parties.len(), 1);
        assert!(idx.order.len() <= 2 * 64 + 1, "{}", idx.order.len());
        assert!(idx.ended.is_empty());
        // The capacity bound still holds for calls whose end is never seen.
        let mut small = CallIndex::new(3);
        for i in 0..5 {
            small.observe(&state(&format!("o{i}"), CallStateKind::Trying), t0);
        }
        assert_eq!(small.parties.len(), 3);
        assert_eq!(small.evicted, 2);
    }
}
