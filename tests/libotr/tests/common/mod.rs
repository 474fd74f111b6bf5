//! Helpers shared by the live tests against libotr.

use otr::{Event, Session, Timestamp};
use otr_libotr_harness::{LibotrPeer, Output, PeerEvent};
use rand_chacha::ChaCha20Rng;

/// Routes messages between our session and several libotr clients of one account until all
/// are quiet. Everything we send reaches every client (as an XMPP server does for a bare JID).
pub fn pump(
    ours: &mut Session,
    clients: &mut [LibotrPeer],
    rng: &mut ChaCha20Rng,
    now: Timestamp,
    events: &mut Vec<Event>,
    lib_events: &mut [Vec<PeerEvent>],
) {
    for _ in 0..1000 {
        let mut moved = false;
        while let Some(t) = ours.poll_transmit() {
            moved = true;
            for c in clients.iter_mut() {
                c.receive(t.message.as_bytes());
            }
        }
        for (k, c) in clients.iter_mut().enumerate() {
            while let Some(o) = c.poll_output() {
                match o {
                    Output::Net(m) => {
                        moved = true;
                        let _ = ours.receive(now, &m, rng);
                    }
                    Output::Event(PeerEvent::Log(_)) => {}
                    Output::Event(e) => lib_events[k].push(e),
                }
            }
        }
        while let Some(e) = ours.poll_event() {
            events.push(e);
        }
        if !moved {
            return;
        }
    }
    panic!("never quiet");
}
