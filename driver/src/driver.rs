//! [`Driver`]: many sessions, one timer queue, one pump.

use std::collections::hash_map::Entry;
use std::collections::{BTreeSet, HashMap, VecDeque};
use std::fmt;
use std::hash::Hash;

use otr_core::{Event, Session, Timestamp, Transmit};

/// Many [`Session`]s keyed by a caller-chosen peer key `K` (a JID, a relay account, `()` for
/// one peer), with one timer queue for all of them and one pump.
///
/// Inputs go through [`with`](Self::with) / [`with_or_insert`](Self::with_or_insert) (a
/// closure gets the peer's session: `receive`, `send`, `start`, SMP, ...) and
/// [`handle_timeout`](Self::handle_timeout). After each input the driver moves what the
/// session produced into its queues, in order, tagged with the peer, and re-arms that
/// session's timer. Drain them in this order, then sleep until
/// [`poll_timeout`](Self::poll_timeout) or the next input:
/// 1. [`poll_transmit`](Self::poll_transmit): strings for the network, with their peer;
/// 2. [`poll_event`](Self::poll_event): what to show or act on, with its peer;
/// 3. [`poll_timeout`](Self::poll_timeout): when to call `handle_timeout`.
///
/// The driver owns no transport, clock or RNG: a transport that fails loses nothing here,
/// and a new one can take over (reconnect). Sessions stay until [`remove`](Self::remove)d.
pub struct Driver<K> {
    slots: HashMap<K, Slot>,
    /// The peer of each slot id (ids keep the timer queue free of `K: Ord`).
    peers: HashMap<u64, K>,
    next_id: u64,
    /// The one timer queue: (when, slot id), one entry per session that wants a timeout.
    timers: BTreeSet<(Timestamp, u64)>,
    transmits: VecDeque<(K, Transmit)>,
    events: VecDeque<(K, Event)>,
}

struct Slot {
    id: u64,
    session: Session,
    /// The entry of this session in `timers`.
    armed: Option<Timestamp>,
    /// When `handle_timeout` last ran for this session: it is not run twice in one
    /// millisecond, whatever the session reports, so a loop can never spin on it.
    handled_at: Option<Timestamp>,
}

impl<K> fmt::Debug for Driver<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Driver")
            .field("sessions", &self.slots.len())
            .field("timers", &self.timers.len())
            .field("transmits", &self.transmits.len())
            .field("events", &self.events.len())
            .finish_non_exhaustive()
    }
}

impl<K: Clone + Eq + Hash> Default for Driver<K> {
    fn default() -> Self {
        Self::new()
    }
}

impl<K: Clone + Eq + Hash> Driver<K> {
    /// A driver without sessions.
    pub fn new() -> Self {
        Self {
            slots: HashMap::new(),
            peers: HashMap::new(),
            next_id: 0,
            timers: BTreeSet::new(),
            transmits: VecDeque::new(),
            events: VecDeque::new(),
        }
    }

    /// Adds `session` for `peer`. A session already there for `peer` is replaced and
    /// returned (what it had produced stays queued).
    pub fn insert(&mut self, peer: K, session: Session) -> Option<Session> {
        let old = self.remove(&peer);
        self.with_or_insert(&peer, || session, |_| ());
        old
    }

    /// Takes the session of `peer` out of the driver (to end it, to store it, or to hand it
    /// to another driver). What it had produced stays queued; its timer is cancelled.
    pub fn remove(&mut self, peer: &K) -> Option<Session> {
        let slot = self.slots.remove(peer)?;
        self.peers.remove(&slot.id);
        if let Some(at) = slot.armed {
            self.timers.remove(&(at, slot.id));
        }
        Some(slot.session)
    }

    /// The session of `peer`, to look at (its state, the peer's key, instances).
    pub fn get(&self, peer: &K) -> Option<&Session> {
        self.slots.get(peer).map(|s| &s.session)
    }

    /// Whether there is a session for `peer`.
    pub fn contains(&self, peer: &K) -> bool {
        self.slots.contains_key(peer)
    }

    /// How many sessions the driver holds.
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    /// Whether the driver holds no session.
    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// Every peer and its session, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = (&K, &Session)> {
        self.slots.iter().map(|(k, s)| (k, &s.session))
    }

    /// Runs `f` on the session of `peer` (any input: `receive`, `send`, `start`, `end`, SMP,
    /// the extra symmetric key), then queues what it produced. `None` when there is no
    /// session for `peer`.
    pub fn with<T>(&mut self, peer: &K, f: impl FnOnce(&mut Session) -> T) -> Option<T> {
        let out = f(&mut self.slots.get_mut(peer)?.session);
        self.settle(peer);
        Some(out)
    }

    /// Like [`with`](Self::with), creating the session with `make` first when `peer` has
    /// none (the per-peer configuration, or a factory shared by all peers).
    pub fn with_or_insert<T>(
        &mut self,
        peer: &K,
        make: impl FnOnce() -> Session,
        f: impl FnOnce(&mut Session) -> T,
    ) -> T {
        let slot = match self.slots.entry(peer.clone()) {
            Entry::Occupied(e) => e.into_mut(),
            Entry::Vacant(e) => {
                let id = self.next_id;
                self.next_id += 1;
                self.peers.insert(id, peer.clone());
                e.insert(Slot { id, session: make(), armed: None, handled_at: None })
            }
        };
        let out = f(&mut slot.session);
        self.settle(peer);
        out
    }

    /// Calls [`Session::handle_timeout`] on every session whose time has come (heartbeats,
    /// fragment expiry, held messages), then queues what they produced. Early calls do
    /// nothing. Returns how many sessions were handled.
    pub fn handle_timeout(&mut self, now: Timestamp) -> usize {
        let due: Vec<K> = self
            .timers
            .iter()
            .take_while(|(at, _)| *at <= now)
            .filter_map(|(_, id)| self.peers.get(id).cloned())
            .collect();
        for peer in &due {
            if let Some(slot) = self.slots.get_mut(peer) {
                slot.session.handle_timeout(now);
                slot.handled_at = Some(now);
            }
            self.settle(peer);
        }
        due.len()
    }

    /// The next transport message, with the peer it is for.
    pub fn poll_transmit(&mut self) -> Option<(K, Transmit)> {
        self.transmits.pop_front()
    }

    /// The next event for the application, with the peer it concerns.
    pub fn poll_event(&mut self) -> Option<(K, Event)> {
        self.events.pop_front()
    }

    /// When [`handle_timeout`](Self::handle_timeout) should next be called: the earliest
    /// time any session wants it. `None`: no session does.
    pub fn poll_timeout(&self) -> Option<Timestamp> {
        self.timers.first().map(|(at, _)| *at)
    }

    /// Moves what the session of `peer` produced into the queues and re-arms its timer.
    fn settle(&mut self, peer: &K) {
        let Some(slot) = self.slots.get_mut(peer) else { return };
        while let Some(t) = slot.session.poll_transmit() {
            self.transmits.push_back((peer.clone(), t));
        }
        while let Some(e) = slot.session.poll_event() {
            self.events.push_back((peer.clone(), e));
        }
        let earliest = slot.handled_at.map_or(Timestamp(0), |t| t.plus_millis(1));
        let due = slot.session.poll_timeout().map(|t| t.max(earliest));
        if due != slot.armed {
            if let Some(at) = slot.armed {
                self.timers.remove(&(at, slot.id));
            }
            if let Some(at) = due {
                self.timers.insert((at, slot.id));
            }
            slot.armed = due;
        }
    }
}
