//! Independent confirmation of `vectors/`: every data message in every transcript is checked
//! with libotr 4.1.1's own code, through the tools of Debian's `libotr5-bin`, so the vectors
//! are not merely our engine agreeing with itself.
//!
//! For each data message (reassembled from its fragments where it was fragmented):
//! - `otr_parse` parses it: version 3 (or 2, without tags), the sender's and receiver's instance tags, the keyids,
//!   the announced next DH value (must be the sender's recorded key `sender_keyid + 1`), a
//!   counter that strictly increases per key pair, and revealed MAC keys (each must be a MAC
//!   key libotr derived for an earlier message of the transcript).
//! - `otr_sesskeys` derives the data keys from the receiver's recorded DH private key and the
//!   sender's recorded public key: the public value it computes from the private key must be
//!   the recorded one, its receiving AES and MAC keys must equal both sides' recorded session
//!   keys, and its session id (SHA-1 of 0x00 and MPI(s)) must match the recorded shared secret.
//! - `otr_mackey` must derive the same MAC key from that AES key.
//! - `otr_readforge` must verify the MAC with that key and decrypt the message text, which must
//!   be what the receiver's events show (or what the sender typed).
//! - The TLVs after the text (decrypted with libotr's key by a stock AES-CTR) must be what the
//!   step did: disconnect for `end`, TLV 8 with the use and use data for the extra symmetric
//!   key (whose value must be SHA-256 of 0xff and the libotr-confirmed MPI(s)), SMP1/SMP1Q,
//!   SMP2 and abort for `smp_start`, `smp_respond` and `smp_abort`.
//! - Hostile vectors: a message our engine rejected for its MAC must fail libotr's MAC check too.

#![allow(clippy::unwrap_used)]

use std::collections::{HashMap, HashSet};
use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use ctr::cipher::{KeyIvInit, StreamCipher};
use serde_json::Value;
use sha1::Sha1;
use sha2::{Digest, Sha256};

const TOOLS: [&str; 4] = ["otr_parse", "otr_sesskeys", "otr_mackey", "otr_readforge"];

fn run(tool: &str, args: &[&str], stdin: &str) -> String {
    let mut child = Command::new(tool)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{tool}: {e}"));
    child.stdin.take().unwrap().write_all(stdin.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&out.stderr));
    text
}

fn tools_installed() -> bool {
    TOOLS.iter().all(|t| Command::new(t).stdout(Stdio::null()).stderr(Stdio::null()).status().is_ok())
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap()).collect()
}

/// `Label: value` lines of a tool's output, keys trimmed.
fn fields(out: &str) -> HashMap<String, String> {
    out.lines()
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect()
}

/// What `otr_parse` says about a data message.
struct Parsed {
    flags: u8,
    /// A version 2 message (no instance tags).
    v2: bool,
    sender: u32,
    receiver: u32,
    sender_keyid: u32,
    recipient_keyid: u32,
    next_dh: String,
    counter: String,
    encrypted: Vec<u8>,
    revealed: Vec<String>,
}

fn parse(msg: &str) -> Parsed {
    let out = run("otr_parse", &[], &format!("{msg}\n"));
    assert!(out.starts_with("Data Message:"), "otr_parse: {out}");
    let f = fields(&out);
    let v2 = f["Version"] == "02";
    assert!(v2 || f["Version"] == "03", "{out}");
    // A v2 message has no instance tags.
    let tag = |name: &str| if v2 { 0 } else { f[name].parse().unwrap() };
    let revealed = out
        .lines()
        .filter(|l| l.trim_start().starts_with("Key "))
        .map(|l| l.split_once(':').unwrap().1.trim().to_string())
        .collect();
    Parsed {
        flags: f["Flags"].parse().unwrap(),
        v2,
        sender: tag("Sender instance"),
        receiver: tag("Receiver instance"),
        sender_keyid: f["Sender keyid"].parse().unwrap(),
        recipient_keyid: f["Rcpt keyid"].parse().unwrap(),
        next_dh: f["DH y"].trim_start_matches('0').to_string(),
        counter: f["Counter"].clone(),
        encrypted: unhex(f.get("Encrypted message").map_or("", String::as_str)),
        revealed,
    }
}

/// What `otr_sesskeys` derives for the receiver.
#[derive(Clone)]
struct LibKeys {
    our_public: String,
    session_id: String,
    recv_aes: String,
    recv_mac: String,
}

/// One transcript, indexed for the checks.
struct Vector {
    name: String,
    steps: Vec<Value>,
    tags: HashMap<String, u32>,
    /// party -> (step, keyid, private, public) for every recorded DH key, in order.
    dh: HashMap<String, Vec<(usize, u32, String, String)>>,
    /// (from step, transmit index) -> the step that received it.
    received_by: HashMap<(usize, usize), usize>,
    sesskeys: HashMap<(String, String), LibKeys>,
    /// MAC keys libotr derived so far.
    macs: HashSet<String>,
    /// Last counter per key pair.
    counters: HashMap<(String, String), String>,
    checked: usize,
}

impl Vector {
    fn new(v: &Value) -> Self {
        let steps = v["steps"].as_array().unwrap().clone();
        let tags = v["parties"]
            .as_object()
            .unwrap()
            .iter()
            .map(|(n, p)| (n.clone(), u32::try_from(p["instance_tag"].as_u64().unwrap()).unwrap()))
            .collect();
        let mut dh: HashMap<String, Vec<_>> = HashMap::new();
        let mut received_by = HashMap::new();
        for (i, s) in steps.iter().enumerate() {
            let party = s["party"].as_str().unwrap().to_string();
            for t in s["trace"].as_array().unwrap() {
                // The AKE's DH key becomes keyid 1 of the data phase.
                if t["type"] == "ake_keys" {
                    let (private, public) =
                        (t["our_private"].as_str().unwrap(), t["our_public"].as_str().unwrap());
                    dh.entry(party.clone()).or_default().push((i, 1, private.into(), public.into()));
                }
                if t["type"] == "dh_key" {
                    let keyid = u32::try_from(t["keyid"].as_u64().unwrap()).unwrap();
                    let (private, public) = (t["private"].as_str().unwrap(), t["public"].as_str().unwrap());
                    dh.entry(party.clone()).or_default().push((i, keyid, private.into(), public.into()));
                }
            }
            if let Some(from) = s["action"].get("from") {
                let key =
                    (from["step"].as_u64().unwrap() as usize, from["transmit"].as_u64().unwrap() as usize);
                received_by.insert(key, i);
            }
        }
        Self {
            name: v["name"].as_str().unwrap().to_string(),
            steps,
            tags,
            dh,
            received_by,
            sesskeys: HashMap::new(),
            macs: HashSet::new(),
            counters: HashMap::new(),
            checked: 0,
        }
    }

    fn other(&self, party: &str) -> String {
        self.tags.keys().find(|p| *p != party).unwrap().clone()
    }

    /// The newest recorded key `keyid` of `party` as of step `at`: (private, public).
    fn key(&self, party: &str, keyid: u32, at: usize) -> (String, String) {
        let found = self.dh[party].iter().rev().find(|(s, k, _, _)| *s <= at && *k == keyid);
        let (_, _, private, public) =
            found.unwrap_or_else(|| panic!("{}: no recorded key {keyid} of {party} by step {at}", self.name));
        (private.clone(), public.clone())
    }

    /// The newest session keys `party` recorded for (ours, theirs) as of step `at`.
    fn our_session_keys(&self, party: &str, ours: u32, theirs: u32, at: usize) -> Option<Value> {
        let all = self.steps[..=at].iter().filter(|s| s["party"] == party);
        let keys = all.flat_map(|s| s["trace"].as_array().unwrap().iter());
        let mut found = keys
            .filter(|t| t["type"] == "session_keys" && t["our_keyid"] == ours && t["their_keyid"] == theirs);
        found.next_back().cloned()
    }

    fn sesskeys(&mut self, private: &str, public: &str) -> LibKeys {
        let key = (private.to_string(), public.to_string());
        if let Some(k) = self.sesskeys.get(&key) {
            return k.clone();
        }
        let out = run("otr_sesskeys", &[private, public], "");
        let f = fields(&out);
        let get =
            |k: &str| f.get(k).unwrap_or_else(|| panic!("otr_sesskeys printed no {k}: {out}")).to_lowercase();
        let keys = LibKeys {
            our_public: get("Our public key").trim_start_matches('0').to_string(),
            session_id: get("Session id"),
            recv_aes: get("Receiving AES key"),
            recv_mac: get("Receiving MAC key"),
        };
        self.macs.insert(get("Sending   MAC key"));
        self.macs.insert(keys.recv_mac.clone());
        self.sesskeys.insert(key, keys.clone());
        keys
    }

    /// Checks one data message sent by `sender` at step `at`; `delivered` is the transmit
    /// index of its last piece.
    fn check_data(&mut self, at: usize, sender: &str, delivered: usize, msg: &str) {
        let ctx = format!("{} step {at} ({sender})", self.name);
        let receiver = self.other(sender);
        let p = parse(msg);
        let tags = if p.v2 { (0, 0) } else { (self.tags[sender], self.tags[&receiver]) };
        assert_eq!((p.sender, p.receiver), tags, "{ctx}: instance tags");
        let (their_private, their_public) = self.key(&receiver, p.recipient_keyid, at);
        let (_, sender_public) = self.key(sender, p.sender_keyid, at);
        let (_, next_public) = self.key(sender, p.sender_keyid + 1, at);
        assert_eq!(p.next_dh, next_public.trim_start_matches('0'), "{ctx}: next_dh is the sender's next key");

        // libotr derives the keys from the recorded DH values.
        let lib = self.sesskeys(&their_private, &sender_public);
        assert_eq!(
            lib.our_public,
            their_public.trim_start_matches('0'),
            "{ctx}: recorded private/public agree"
        );
        let mac = fields(&run("otr_mackey", &[&lib.recv_aes], ""))["MAC key"].to_lowercase();
        assert_eq!(mac, lib.recv_mac, "{ctx}: otr_mackey");
        let ours = self.our_session_keys(sender, p.sender_keyid, p.recipient_keyid, at);
        let ours = ours.unwrap_or_else(|| panic!("{ctx}: the sender recorded no keys"));
        let recorded = |k: &Value, aes: &str, mac: &str| {
            (k[aes].as_str().map(str::to_string), k[mac].as_str().map(str::to_string))
        };
        let libotr = (Some(lib.recv_aes.clone()), Some(lib.recv_mac.clone()));
        assert_eq!(recorded(&ours, "send_aes", "send_mac"), libotr, "{ctx}: sender's recorded keys");
        // The receiver derives its keys when the message arrives.
        if let Some(&r) = self.received_by.get(&(at, delivered)) {
            let theirs = self.our_session_keys(&receiver, p.recipient_keyid, p.sender_keyid, r);
            let theirs = theirs.unwrap_or_else(|| panic!("{ctx}: the receiver recorded no keys"));
            assert_eq!(recorded(&theirs, "recv_aes", "recv_mac"), libotr, "{ctx}: receiver's recorded keys");
        }
        let s = unhex(ours["shared_secret"].as_str().unwrap());
        assert_eq!(
            hex(&Sha1::new().chain_update([0u8]).chain_update(&s).finalize()),
            lib.session_id,
            "{ctx}: MPI(s)"
        );

        // Counter and revealed MAC keys.
        let pair = (their_private.clone(), sender_public.clone());
        if let Some(last) = self.counters.get(&pair) {
            assert!(p.counter > *last, "{ctx}: counter {} after {last}", p.counter);
        }
        self.counters.insert(pair, p.counter.clone());
        for k in &p.revealed {
            assert!(
                self.macs.contains(&k.to_lowercase()),
                "{ctx}: revealed {k} is no MAC key of an earlier pair"
            );
        }

        // libotr verifies the MAC and decrypts.
        let out = run("otr_readforge", &[&lib.recv_aes], &format!("{msg}\n"));
        let text = out
            .strip_prefix("Plaintext: ``")
            .and_then(|t| t.strip_suffix("''\n"))
            .unwrap_or_else(|| panic!("{ctx}: otr_readforge: {out}"));
        let step = &self.steps[at];
        let receive = self.received_by.get(&(at, delivered)).map(|&r| &self.steps[r]);
        let expected = match receive {
            Some(r) => {
                let shown = r["events"].as_array().unwrap().iter().find(|e| e["type"] == "message");
                shown.map_or(String::new(), |e| e["text"].as_str().unwrap().to_string())
            }
            None => step["action"]["text"].as_str().unwrap_or_default().to_string(),
        };
        assert_eq!(text, expected, "{ctx}: decrypted text");

        // The TLVs, decrypted with libotr's key.
        let aes: [u8; 16] = unhex(&lib.recv_aes).try_into().unwrap();
        let mut iv = [0u8; 16];
        iv[..8].copy_from_slice(&unhex(&p.counter));
        let mut plain = p.encrypted.clone();
        ctr::Ctr128BE::<aes::Aes128>::new(&aes.into(), &iv.into()).apply_keystream(&mut plain);
        let tlvs = tlvs(&plain, &ctx);
        let kinds: Vec<u16> = tlvs.iter().map(|t| t.0).collect();
        let action = step["action"]["do"].as_str().unwrap();
        match action {
            "end" => assert_eq!(kinds, [1], "{ctx}: disconnect TLV"),
            "smp_start" => {
                let question = step["action"]["question"].as_str();
                assert_eq!(kinds, [if question.is_some() { 7 } else { 2 }], "{ctx}: SMP1");
                if let Some(q) = question {
                    assert!(tlvs[0].1.starts_with(format!("{q}\0").as_bytes()), "{ctx}: question");
                }
            }
            "smp_respond" => assert_eq!(kinds, [3], "{ctx}: SMP2"),
            "smp_abort" => assert_eq!(kinds, [6], "{ctx}: SMP abort"),
            "extra_symmetric_key" => {
                assert_eq!(kinds, [8], "{ctx}: TLV 8");
                let use_ = u32::try_from(step["action"]["use"].as_u64().unwrap()).unwrap();
                let mut value = use_.to_be_bytes().to_vec();
                value.extend(unhex(step["action"]["usedata"].as_str().unwrap()));
                assert_eq!(tlvs[0].1, value, "{ctx}: use and use data");
                let key = hex(&Sha256::new().chain_update([0xffu8]).chain_update(&s).finalize());
                assert_eq!(step["result"]["ok"]["key"].as_str(), Some(&*key), "{ctx}: extra symmetric key");
            }
            "handle_timeout" => {
                assert!(kinds.is_empty() && text.is_empty() && p.flags & 1 == 1, "{ctx}: heartbeat")
            }
            _ => assert!(kinds.iter().all(|k| (1..=8).contains(k)), "{ctx}: TLVs {kinds:?}"),
        }
        self.checked += 1;
    }

    /// A crafted message our engine refused for its MAC: libotr must refuse it too.
    fn check_bad_mac(&mut self, at: usize, receiver: &str, msg: &str) {
        let ctx = format!("{} step {at} (crafted, to {receiver})", self.name);
        let sender = self.other(receiver);
        let p = parse(msg);
        let (private, _) = self.key(receiver, p.recipient_keyid, at);
        let (_, public) = self.key(&sender, p.sender_keyid, at);
        let lib = self.sesskeys(&private, &public);
        let out = run("otr_readforge", &[&lib.recv_aes], &format!("{msg}\n"));
        assert!(out.contains("MAC does not verify"), "{ctx}: libotr accepted it: {out}");
        self.checked += 1;
    }

    fn check(&mut self) {
        let mut pending: HashMap<String, String> = HashMap::new();
        for i in 0..self.steps.len() {
            let step = self.steps[i].clone();
            let party = step["party"].as_str().unwrap();
            for (k, t) in step["transmit"].as_array().unwrap().iter().enumerate() {
                let t = t.as_str().unwrap();
                // v3 fragments carry instance tags before the numbers, v2 fragments do not.
                let numbers = match t.strip_prefix("?OTR|") {
                    Some(rest) => rest.split_once(',').map(|(head, nums)| {
                        assert!(!head.is_empty());
                        nums
                    }),
                    None => t.strip_prefix("?OTR,"),
                };
                let whole = match numbers {
                    Some(piece) => {
                        let mut nums = piece.splitn(3, ',');
                        let k_: u16 = nums.next().unwrap().parse().unwrap();
                        let n: u16 = nums.next().unwrap().parse().unwrap();
                        let piece = nums.next().unwrap().strip_suffix(',').unwrap();
                        let buf = pending.entry(party.to_string()).or_default();
                        if k_ == 1 {
                            buf.clear();
                        }
                        buf.push_str(piece);
                        if k_ < n {
                            continue;
                        }
                        std::mem::take(buf)
                    }
                    None => t.to_string(),
                };
                if whole.starts_with("?OTR:AAMD") || whole.starts_with("?OTR:AAID") {
                    self.check_data(i, party, k, &whole);
                }
            }
            let crafted = step["action"].get("crafted").is_some();
            if crafted && step["result"]["error"]["kind"] == "unreadable_bad_mac" {
                self.check_bad_mac(i, party, step["action"]["message"].as_str().unwrap());
            }
        }
    }
}

/// The TLVs after the text's NUL: (type, value), which must exactly fill the rest.
fn tlvs(plain: &[u8], ctx: &str) -> Vec<(u16, Vec<u8>)> {
    let Some(nul) = plain.iter().position(|&b| b == 0) else { return Vec::new() };
    let mut rest = &plain[nul + 1..];
    let mut out = Vec::new();
    while !rest.is_empty() {
        assert!(rest.len() >= 4, "{ctx}: truncated TLV");
        let kind = u16::from_be_bytes([rest[0], rest[1]]);
        let len = usize::from(u16::from_be_bytes([rest[2], rest[3]]));
        assert!(rest.len() >= 4 + len, "{ctx}: TLV longer than the message");
        out.push((kind, rest[4..4 + len].to_vec()));
        rest = &rest[4 + len..];
    }
    out
}

#[test]
fn libotr_tools_confirm_every_data_message_of_every_vector() {
    if !tools_installed() {
        assert!(
            std::env::var_os("CI").is_none(),
            "libotr5-bin (otr_parse, otr_sesskeys, ...) is not installed"
        );
        eprintln!("skipped: libotr5-bin is not installed (apt-get install libotr5-bin)");
        return;
    }
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../vectors");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    files.sort();
    assert!(files.len() >= 15, "expected the vector set in {}", dir.display());
    let mut total = 0;
    for file in files {
        let v: Value = serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
        let mut vector = Vector::new(&v);
        vector.check();
        assert!(vector.checked > 0, "{}: no data message checked", vector.name);
        eprintln!("{}: libotr confirmed {} data messages", vector.name, vector.checked);
        total += vector.checked;
    }
    eprintln!("libotr confirmed {total} data messages in all");
}
