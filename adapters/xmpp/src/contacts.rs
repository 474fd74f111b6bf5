//! The contacts the client holds an OTR session for, and which of them make room when
//! strangers write.
//!
//! Anyone with an account can write to us, and every sender gets a session (whose fragment
//! buffer alone may hold 8 MiB for 120 s). So contacts are of three kinds:
//! - the user's own (the application sent to them, started a conversation, ...): kept, and
//!   not counted against any limit: the user chose them;
//! - strangers in a private conversation: kept while it lasts;
//! - other strangers: dropped, least recently active first, when a new stranger writes
//!   while `max_strangers` strangers have sessions, or when the strangers' fragment buffers
//!   together pass [`STRANGER_FRAGMENT_BYTES`].
//!
//! A stranger dropped loses nothing but an unfinished key exchange or unfinished fragments;
//! if it writes again, it gets a fresh session.

use std::collections::HashMap;

use otr_core::Session;
use otr_driver::Driver;
use xmpp_parsers::jid::BareJid;

/// Most bytes all strangers' fragment buffers may hold together before idle strangers are
/// dropped (eight contacts' worth of the 8 MiB one session may hold).
pub const STRANGER_FRAGMENT_BYTES: usize = 64 << 20;

/// What decides whether a contact's session may be dropped.
struct Contact {
    /// The activity count when it last wrote to us or the user addressed it.
    last_active: u64,
    /// The user addressed this contact (sent, started, asked...): it is never dropped.
    users: bool,
}

/// Every contact with a session; see the module documentation. The sessions live in one
/// [`Driver`] (one timer queue, one pump); this type decides who gets one.
pub(crate) struct Contacts {
    driver: Driver<BareJid>,
    map: HashMap<BareJid, Contact>,
    max_strangers: usize,
    fragment_budget: usize,
    /// Counts activity (messages received, the user's actions), to order contacts by it.
    activity: u64,
}

impl Contacts {
    /// No contacts yet; at most `max_strangers` strangers, whose fragments may hold
    /// `fragment_budget` bytes together.
    pub(crate) fn new(max_strangers: usize, fragment_budget: usize) -> Self {
        Self { driver: Driver::new(), map: HashMap::new(), max_strangers, fragment_budget, activity: 0 }
    }

    /// Runs `f` on the session with `jid`, which becomes (or stays) one of the user's
    /// contacts; `new` makes the session if there is none.
    pub(crate) fn user<T>(
        &mut self,
        jid: &BareJid,
        new: impl FnOnce() -> Session,
        f: impl FnOnce(&mut Session) -> T,
    ) -> T {
        self.activity += 1;
        let contact = self.map.entry(jid.clone()).or_insert(Contact { last_active: 0, users: true });
        contact.users = true;
        contact.last_active = self.activity;
        self.driver.with_or_insert(jid, new, f)
    }

    /// Runs `f` on the session with `jid`, who wrote to us; `new` makes the session if there
    /// is none. When `max_strangers` strangers have sessions, the least recently active
    /// droppable one makes room. `None` (and `f` is not run): every stranger's session holds
    /// a private conversation.
    pub(crate) fn writer<T>(
        &mut self,
        jid: &BareJid,
        new: impl FnOnce() -> Session,
        f: impl FnOnce(&mut Session) -> T,
    ) -> Option<T> {
        self.activity += 1;
        if !self.map.contains_key(jid) {
            let strangers = self.map.values().filter(|c| !c.users).count();
            if strangers >= self.max_strangers && !self.drop_least_active() {
                return None;
            }
            self.map.insert(jid.clone(), Contact { last_active: 0, users: false });
        }
        if let Some(contact) = self.map.get_mut(jid) {
            contact.last_active = self.activity;
        }
        Some(self.driver.with_or_insert(jid, new, f))
    }

    /// Drops droppable strangers, least recently active first, while the strangers' fragment
    /// buffers together hold more than the budget. Call it after a stranger's message.
    pub(crate) fn trim(&mut self) {
        while self.stranger_fragment_bytes() > self.fragment_budget && self.drop_least_active() {}
    }

    fn stranger_fragment_bytes(&self) -> usize {
        self.strangers().map(|(_, s)| s.buffered_fragment_bytes()).sum()
    }

    /// Strangers and their sessions.
    fn strangers(&self) -> impl Iterator<Item = (&BareJid, &Session)> {
        self.driver.iter().filter(|(jid, _)| self.map.get(*jid).is_some_and(|c| !c.users))
    }

    /// Drops the least recently active droppable stranger (one without a private
    /// conversation with any of its clients); false if there is none.
    fn drop_least_active(&mut self) -> bool {
        let victim = self
            .strangers()
            .filter(|(_, s)| !s.instances().any(|(_, private)| private))
            .filter_map(|(jid, _)| Some((self.map.get(jid)?.last_active, jid)))
            .min_by_key(|(active, _)| *active)
            .map(|(_, jid)| jid.clone());
        victim.is_some_and(|jid| {
            self.map.remove(&jid);
            self.driver.remove(&jid).is_some()
        })
    }

    /// The session with `jid`, if there is one (no activity is recorded).
    pub(crate) fn get(&self, jid: &BareJid) -> Option<&Session> {
        self.driver.get(jid)
    }

    /// The driver, to pump (transmits, events, timeouts) and to run actions on contacts that
    /// already have a session (no activity is recorded). Add and drop sessions through
    /// `Contacts` only.
    pub(crate) fn driver(&mut self) -> &mut Driver<BareJid> {
        &mut self.driver
    }

    /// Every contact and its session.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (&BareJid, &Session)> {
        self.driver.iter()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use otr_core::{DsaKeyPair, InstanceTag, Policy, SessionConfig, Timestamp};
    use rand_chacha::ChaCha20Rng;
    use rand_core::SeedableRng;

    use super::*;

    const NOW: Timestamp = Timestamp(0);

    fn session(seed: u64) -> Session {
        let mut rng = ChaCha20Rng::seed_from_u64(seed);
        let tag = InstanceTag::random(&mut rng);
        let key = DsaKeyPair::generate(&mut rng);
        Session::new(SessionConfig::new(format!("user{seed}@localhost"), Policy::ALWAYS, tag), key)
    }

    fn jid(name: &str) -> BareJid {
        format!("{name}@localhost").parse().unwrap()
    }

    fn names(contacts: &Contacts) -> Vec<String> {
        let mut v: Vec<String> = contacts.iter().map(|(j, _)| j.node().unwrap().to_string()).collect();
        v.sort();
        v
    }

    /// Makes `ours` (our session with the peer) and `theirs` private with each other.
    fn make_private(ours: &mut Session, theirs: &mut Session) {
        let mut rng = ChaCha20Rng::seed_from_u64(7);
        theirs.start(NOW);
        for _ in 0..10 {
            while let Some(t) = theirs.poll_transmit() {
                let _ = ours.receive(NOW, &t.message, &mut rng);
            }
            while let Some(t) = ours.poll_transmit() {
                let _ = theirs.receive(NOW, &t.message, &mut rng);
            }
        }
        assert!(ours.private_with().is_some(), "the key exchange did not finish");
    }

    #[test]
    fn new_strangers_replace_the_least_recently_active() {
        let mut contacts = Contacts::new(3, STRANGER_FRAGMENT_BYTES);
        contacts.user(&jid("friend"), || session(1), |_| ());
        for name in ["s1", "s2", "s3"] {
            assert!(contacts.writer(&jid(name), || session(1), |_| ()).is_some());
        }
        // s1 writes again: s2 is now the least recently active stranger.
        assert!(contacts.writer(&jid("s1"), || session(1), |_| ()).is_some());
        assert!(contacts.writer(&jid("s4"), || session(1), |_| ()).is_some());
        assert_eq!(names(&contacts), ["friend", "s1", "s3", "s4"]);
        // A flood of strangers never grows the table past the limit, nor drops the friend.
        for i in 0..20 {
            assert!(contacts.writer(&jid(&format!("flood{i}")), || session(1), |_| ()).is_some());
            assert_eq!(contacts.iter().count(), 4);
        }
        assert!(contacts.get(&jid("friend")).is_some());
        // A stranger the user answers becomes a contact of the user's, and is not counted.
        contacts.user(&jid("flood19"), || session(1), |_| ());
        assert!(contacts.writer(&jid("s5"), || session(1), |_| ()).is_some());
        assert_eq!(contacts.iter().count(), 5);
    }

    #[test]
    fn private_strangers_are_kept() {
        let mut contacts = Contacts::new(2, STRANGER_FRAGMENT_BYTES);
        let mut carol = session(2);
        contacts.writer(&jid("carol"), || session(1), |s| make_private(s, &mut carol)).unwrap();
        for i in 0..5 {
            assert!(contacts.writer(&jid(&format!("flood{i}")), || session(1), |_| ()).is_some());
        }
        assert_eq!(names(&contacts), ["carol", "flood4"]);
        // With every stranger private, a new one is refused rather than the table growing.
        let mut dave = session(3);
        contacts.writer(&jid("flood4"), || session(1), |s| make_private(s, &mut dave)).unwrap();
        assert!(contacts.writer(&jid("eve"), || session(1), |_| ()).is_none());
        assert_eq!(names(&contacts), ["carol", "flood4"]);
    }

    #[test]
    fn fragments_past_the_budget_drop_idle_strangers() {
        let mut contacts = Contacts::new(100, 1000);
        let mut rng = ChaCha20Rng::seed_from_u64(9);
        let piece = "A".repeat(400);
        let first_half = format!("?OTR|00000100|00000000,00001,00002,{piece},");
        for name in ["s1", "s2", "s3"] {
            let buffered = contacts
                .writer(
                    &jid(name),
                    || session(1),
                    |s| {
                        assert!(s.receive(NOW, &first_half, &mut rng).is_ok());
                        s.buffered_fragment_bytes()
                    },
                )
                .unwrap();
            assert!(buffered >= 400);
            contacts.trim();
        }
        // Three halves pass the budget: the oldest sender is dropped.
        assert_eq!(names(&contacts), ["s2", "s3"]);
        assert!(contacts.stranger_fragment_bytes() <= 1000);
    }
}
