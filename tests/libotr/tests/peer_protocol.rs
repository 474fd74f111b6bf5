//! The stdio peer protocol (`peer-protocol.md`), driven exactly as a third-party harness
//! would: two peer processes, every `net` line of one routed into the other, and the event
//! lines checked. Each scenario runs for every pairing of our `otr-peer` example and
//! `libotr-peer` (ours as alice / libotr as bob, libotr as alice / ours as bob, ours against
//! ours, and libotr against libotr as a control that checks the expectations themselves).
//!
//! Every read has a timeout, so a stuck peer fails the test instead of hanging; children
//! are killed when a [`Duo`] is dropped. No key files are used: each peer generates a fresh
//! key in memory, so tests can run in parallel.
//!
//! Synchronisation: the protocol has no no-op command, so to know that a peer has handled
//! everything written to it the driver sends an unknown command (`sync-000042`). Both
//! peers answer every unknown command with an `error` line naming it, after everything
//! that earlier input produced. [`Duo::settle`] repeats such barriers until a round in
//! which neither side printed a `net` line: then both are quiet and nothing is in flight.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::OnceLock;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;

/// How long any single read may take before the test fails.
const TIMEOUT: Duration = Duration::from_secs(20);

/// Alice's side (index into [`Duo::peers`]).
const A: usize = 0;
/// Bob's side.
const B: usize = 1;
const ACCOUNTS: [&str; 2] = ["alice", "bob"];

/// Which program plays a role.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Imp {
    /// Our engine: `cli/examples/otr-peer.rs` (the same code as `otr peer`).
    Ours,
    /// libotr 4.1: `libotr-peer`.
    Libotr,
}

impl Imp {
    fn program(self) -> PathBuf {
        match self {
            Imp::Ours => our_peer().to_path_buf(),
            Imp::Libotr => PathBuf::from(env!("CARGO_BIN_EXE_libotr-peer")),
        }
    }

    fn name(self) -> &'static str {
        match self {
            Imp::Ours => "ours",
            Imp::Libotr => "libotr",
        }
    }
}

/// Builds our `otr-peer` example once per test process and returns its path.
fn our_peer() -> &'static Path {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        // `--workspace`: the same feature set as `cargo test --workspace`, so after that build
        // this is a no-op instead of a rebuild of everything with other features.
        let out = Command::new(&cargo)
            .args(["build", "--workspace", "--example", "otr-peer"])
            .current_dir(&root)
            .output()
            .unwrap_or_else(|e| panic!("cannot run {cargo:?}: {e}"));
        assert!(
            out.status.success(),
            "`cargo build --workspace --example otr-peer` failed ({}):\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        let target = match std::env::var_os("CARGO_TARGET_DIR") {
            // `join` keeps an absolute path as is and resolves a relative one against the root.
            Some(dir) => root.join(dir),
            None => root.join("target"),
        };
        let exe =
            target.join("debug").join("examples").join(format!("otr-peer{}", std::env::consts::EXE_SUFFIX));
        assert!(exe.is_file(), "built otr-peer but {} does not exist", exe.display());
        exe
    })
}

/// What a reader thread saw.
enum Out {
    /// A stdout line, without its `\n`.
    Line(Vec<u8>),
    /// A stderr line (diagnostics only).
    Stderr(String),
    /// stdout closed.
    Eof,
}

struct Peer {
    imp: Imp,
    child: Child,
    stdin: Option<ChildStdin>,
    /// Our own fingerprint, from `ready`; empty until then.
    fp: String,
    /// Event lines in order: everything but `ready`, `net`, `#` and barrier replies.
    events: Vec<String>,
    /// The barrier token we are waiting for, if any.
    barrier: Option<String>,
    /// Whether `net` lines from this peer are held back instead of routed.
    hold: bool,
    /// `net` lines held back (whole lines, as printed).
    held: Vec<String>,
}

/// A position in the record, to look at what happened after it.
#[derive(Debug, Clone, Copy)]
struct Mark {
    events: [usize; 2],
    wire: usize,
}

/// Two peers, alice and bob, talking to each other through this driver.
struct Duo {
    peers: [Peer; 2],
    rx: Receiver<(usize, Out)>,
    /// Every transport message, in the order the driver read them: (sender, payload).
    wire: Vec<(usize, Vec<u8>)>,
    /// Everything that happened, for failure messages.
    log: Vec<String>,
    syncs: u64,
}

impl Drop for Duo {
    fn drop(&mut self) {
        // PEER_PROTOCOL_TRANSCRIPT=1 (with --nocapture) shows every conversation in full.
        if std::env::var_os("PEER_PROTOCOL_TRANSCRIPT").is_some_and(|v| v != "0") {
            let all: Vec<String> = self.log.iter().map(|l| l.chars().take(220).collect()).collect();
            eprintln!("--- transcript:\n    {}", all.join("\n    "));
        }
        for p in &mut self.peers {
            drop(p.stdin.take());
            let _ = p.child.kill();
            let _ = p.child.wait();
        }
    }
}

fn b64(bytes: impl AsRef<[u8]>) -> String {
    B64.encode(bytes)
}

fn is_hex(s: &str, len: usize) -> bool {
    s.len() == len && s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    needle.is_empty() || hay.windows(needle.len()).any(|w| w == needle)
}

/// A short printable rendering of a payload for the transcript.
fn preview(bytes: &[u8]) -> String {
    let s = String::from_utf8_lossy(bytes);
    let s: String = s.chars().take(90).collect::<String>().escape_debug().to_string();
    format!("[{} B] {s}", bytes.len())
}

/// Checks an event line against peer-protocol.md's grammar.
fn validate(line: &str) -> Result<(), String> {
    let w: Vec<&str> = line.split(' ').collect();
    let b64_text = |s: &str| match B64.decode(s) {
        Ok(b) if b.is_empty() => Err("empty text".to_string()),
        Ok(_) => Ok(()),
        Err(e) => Err(format!("not standard padded base64: {e}")),
    };
    match w[0] {
        "secure" if w.len() == 3 && is_hex(w[1], 40) && is_hex(w[2], 16) => Ok(()),
        "secure" => Err("expected `secure <40 lowercase hex> <16 lowercase hex>`".into()),
        "insecure" | "finished" | "smp-success" | "smp-failure" | "smp-aborted" if w.len() == 1 => Ok(()),
        "msg" if w.len() == 3 && (w[1] == "encrypted" || w[1] == "plain") => b64_text(w[2]),
        "msg" => Err("expected `msg encrypted|plain <b64>`".into()),
        "smp-request" if w.len() == 2 && w[1] == "-" => Ok(()),
        "smp-request" if w.len() == 2 => b64_text(w[1]),
        "symkey" if w.len() == 2 && is_hex(w[1], 64) => Ok(()),
        "symkey" => Err("expected `symkey <64 lowercase hex>`".into()),
        "error" if w.len() >= 2 && !line["error ".len()..].is_empty() => Ok(()),
        "ready" => Err("`ready` printed twice".into()),
        _ => Err("not an event of the protocol".into()),
    }
}

fn spawn(imp: Imp, side: usize, flags: &[&str], tx: Sender<(usize, Out)>) -> Peer {
    let program = imp.program();
    let mut child = Command::new(&program)
        .args(["--account", ACCOUNTS[side], "--peer", ACCOUNTS[1 - side]])
        .args(flags)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {}: {e}", program.display()));
    let stdout = child.stdout.take().expect("piped stdout");
    let stderr = child.stderr.take().expect("piped stderr");
    let tx_err = tx.clone();
    std::thread::spawn(move || {
        let mut r = BufReader::new(stdout);
        loop {
            let mut buf = Vec::new();
            match r.read_until(b'\n', &mut buf) {
                Ok(0) | Err(_) => {
                    let _ = tx.send((side, Out::Eof));
                    return;
                }
                Ok(_) => {
                    if buf.last() == Some(&b'\n') {
                        buf.pop();
                    }
                    if tx.send((side, Out::Line(buf))).is_err() {
                        return;
                    }
                }
            }
        }
    });
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { return };
            if tx_err.send((side, Out::Stderr(line))).is_err() {
                return;
            }
        }
    });
    let stdin = child.stdin.take();
    Peer { imp, child, stdin, fp: String::new(), events: vec![], barrier: None, hold: false, held: vec![] }
}

impl Duo {
    /// Starts alice and bob with their extra flags and waits for both `ready` lines.
    fn new(imps: [Imp; 2], flags: [&[&str]; 2]) -> Self {
        let (tx, rx) = mpsc::channel();
        let peers = [spawn(imps[A], A, flags[A], tx.clone()), spawn(imps[B], B, flags[B], tx)];
        let mut d = Duo { peers, rx, wire: vec![], log: vec![], syncs: 0 };
        for side in [A, B] {
            let line = format!("started with {flags:?}", flags = flags[side]);
            d.note(side, &line);
        }
        d.wait_until("`ready` from both", |d| d.peers.iter().all(|p| !p.fp.is_empty()));
        if d.peers[A].fp == d.peers[B].fp {
            d.fail("alice and bob have the same fingerprint although each made a fresh key");
        }
        d
    }

    fn who(&self, side: usize) -> String {
        format!("{}({})", ACCOUNTS[side], self.peers[side].imp.name())
    }

    fn note(&mut self, side: usize, what: &str) {
        let who = self.who(side);
        self.log.push(format!("{who} {what}"));
    }

    fn fail(&self, msg: &str) -> ! {
        let skip = self.log.len().saturating_sub(250);
        let mut t = String::new();
        for l in &self.log[skip..] {
            let l: String = l.chars().take(220).collect();
            t.push_str("    ");
            t.push_str(&l);
            t.push('\n');
        }
        panic!("{msg}\n--- transcript (last {} of {} lines):\n{t}", self.log.len() - skip, self.log.len());
    }

    fn write(&mut self, side: usize, line: &str) {
        let Some(stdin) = self.peers[side].stdin.as_mut() else {
            self.fail(&format!("{} has no stdin", self.who(side)))
        };
        if let Err(e) = stdin.write_all(line.as_bytes()).and_then(|()| stdin.write_all(b"\n")) {
            self.fail(&format!("writing to {} failed: {e}", self.who(side)));
        }
        if let Err(e) = stdin.flush() {
            self.fail(&format!("writing to {} failed: {e}", self.who(side)));
        }
    }

    /// Gives `side` one command line.
    fn cmd(&mut self, side: usize, line: &str) {
        let shown = match line.strip_prefix("net ") {
            Some(p) => format!("net {}", B64.decode(p).map(|b| preview(&b)).unwrap_or_else(|_| p.into())),
            None => line.to_string(),
        };
        self.note(side, &format!("<= {shown}"));
        self.write(side, line);
    }

    fn send_text(&mut self, side: usize, text: &str) {
        self.cmd(side, &format!("send {}", b64(text)));
    }

    /// Reads one line from either peer (or fails after [`TIMEOUT`]).
    fn pump(&mut self, waiting_for: &str) {
        match self.rx.recv_timeout(TIMEOUT) {
            Ok((side, Out::Line(bytes))) => self.handle(side, bytes),
            Ok((side, Out::Stderr(l))) => self.note(side, &format!("stderr: {l}")),
            Ok((side, Out::Eof)) => {
                // Collect what it said on stderr on its way out.
                while let Ok((s, o)) = self.rx.recv_timeout(Duration::from_millis(300)) {
                    match o {
                        Out::Stderr(l) => self.note(s, &format!("stderr: {l}")),
                        Out::Line(b) => self.note(s, &format!("=> {}", String::from_utf8_lossy(&b))),
                        Out::Eof => self.note(s, "closed stdout"),
                    }
                }
                let status = self.peers[side].child.try_wait();
                self.fail(&format!(
                    "{} closed stdout (exit status {status:?}) while waiting for {waiting_for}",
                    self.who(side)
                ));
            }
            Err(RecvTimeoutError::Timeout) => self
                .fail(&format!("nothing from either peer for {TIMEOUT:?} while waiting for {waiting_for}")),
            Err(RecvTimeoutError::Disconnected) => self.fail("all reader threads are gone"),
        }
    }

    fn handle(&mut self, side: usize, bytes: Vec<u8>) {
        let Ok(line) = String::from_utf8(bytes.clone()) else {
            self.note(side, &format!("=> (not UTF-8) {bytes:?}"));
            self.fail(&format!("{} printed a line that is not UTF-8", self.who(side)));
        };
        if self.peers[side].fp.is_empty() {
            match line.strip_prefix("ready ") {
                Some(fp) if is_hex(fp, 40) => {
                    self.note(side, &format!("=> {line}"));
                    self.peers[side].fp = fp.to_string();
                    return;
                }
                _ => {
                    self.note(side, &format!("=> {line}"));
                    self.fail(&format!("{}'s first line is not `ready <40 lowercase hex>`", self.who(side)));
                }
            }
        }
        if let Some(p) = line.strip_prefix("net ") {
            let payload = match B64.decode(p) {
                Ok(b) if !b.is_empty() && !b.contains(&0) => b,
                _ => {
                    self.note(side, &format!("=> {line}"));
                    self.fail(&format!(
                        "{} printed a `net` line whose payload is not non-empty, NUL-free, padded base64",
                        self.who(side)
                    ));
                }
            };
            let held = if self.peers[side].hold { " (held)" } else { "" };
            self.note(side, &format!("=> net{held} {}", preview(&payload)));
            self.wire.push((side, payload));
            if self.peers[side].hold {
                self.peers[side].held.push(line);
            } else {
                self.write(1 - side, &line);
            }
            return;
        }
        self.note(side, &format!("=> {line}"));
        if line == "#" || line.starts_with("# ") {
            return;
        }
        if let Some(tok) = &self.peers[side].barrier {
            if line.starts_with("error ") && line.contains(tok.as_str()) {
                self.peers[side].barrier = None;
                return;
            }
        }
        if let Err(e) = validate(&line) {
            self.fail(&format!(
                "{} printed {line:?}, which peer-protocol.md does not allow: {e}",
                self.who(side)
            ));
        }
        self.peers[side].events.push(line);
    }

    fn wait_until(&mut self, what: &str, cond: impl Fn(&Self) -> bool) {
        while !cond(self) {
            self.pump(what);
        }
    }

    /// Waits until both peers handled all their input and nothing is in flight.
    fn settle(&mut self) {
        for _ in 0..200 {
            let wire = self.wire.len();
            for side in [A, B] {
                self.syncs += 1;
                let tok = format!("sync-{:06}", self.syncs);
                self.peers[side].barrier = Some(tok.clone());
                self.write(side, &tok);
            }
            self.wait_until("the reply to an unknown sync command (an `error` line naming it)", |d| {
                d.peers.iter().all(|p| p.barrier.is_none())
            });
            if self.wire.len() == wire {
                return;
            }
        }
        self.fail("the peers never went quiet (200 rounds of net traffic)");
    }

    fn mark(&self) -> Mark {
        Mark { events: [self.peers[A].events.len(), self.peers[B].events.len()], wire: self.wire.len() }
    }

    fn since(&self, side: usize, m: Mark) -> &[String] {
        &self.peers[side].events[m.events[side]..]
    }

    fn wire_since(&self, m: Mark) -> &[(usize, Vec<u8>)] {
        &self.wire[m.wire..]
    }

    /// The `msg` events of `side` since `m`: (kind, text).
    fn msgs(&self, side: usize, m: Mark) -> Vec<(String, Vec<u8>)> {
        self.since(side, m)
            .iter()
            .filter_map(|l| {
                let rest = l.strip_prefix("msg ")?;
                let (kind, text) = rest.split_once(' ')?;
                Some((kind.to_string(), B64.decode(text).ok()?))
            })
            .collect()
    }

    /// Fails unless the events of `side` since `m` are exactly `want`.
    fn expect_events(&self, side: usize, m: Mark, want: &[&str], context: &str) {
        let got = self.since(side, m);
        if got != want {
            self.fail(&format!("{context}: {} printed {got:?}, expected {want:?}", self.who(side)));
        }
    }

    fn expect_no_errors(&self, m: Mark, context: &str) {
        for side in [A, B] {
            if let Some(e) = self.since(side, m).iter().find(|l| l.starts_with("error")) {
                self.fail(&format!("{context}: {} printed {e:?}", self.who(side)));
            }
        }
    }

    fn expect_alive(&mut self, context: &str) {
        for side in [A, B] {
            match self.peers[side].child.try_wait() {
                Ok(None) => {}
                status => {
                    let msg = format!("{context}: {} exited: {status:?}", self.who(side));
                    self.fail(&msg)
                }
            }
        }
    }

    /// The last `secure` event of `side` since `m`, split into (fingerprint, ssid).
    fn last_secure(&self, side: usize, m: Mark) -> Option<(String, String)> {
        self.since(side, m).iter().rev().find_map(|l| {
            let mut w = l.strip_prefix("secure ")?.split(' ');
            Some((w.next()?.to_string(), w.next()?.to_string()))
        })
    }

    /// Both sides printed `secure` since `m`, with each other's fingerprint and one ssid.
    fn expect_secure(&self, m: Mark, context: &str) -> String {
        let mut seen = vec![];
        for side in [A, B] {
            let Some((fp, ssid)) = self.last_secure(side, m) else {
                self.fail(&format!("{context}: {} did not print `secure`", self.who(side)))
            };
            if fp != self.peers[1 - side].fp {
                self.fail(&format!(
                    "{context}: {} printed remote fingerprint {fp}, but {} said `ready {}`",
                    self.who(side),
                    self.who(1 - side),
                    self.peers[1 - side].fp
                ));
            }
            seen.push(ssid);
        }
        if seen[A] != seen[B] {
            self.fail(&format!("{context}: different ssids: alice {} bob {}", seen[A], seen[B]));
        }
        seen.swap_remove(0)
    }

    /// `query` on `initiator`; both go secure (exactly one `secure` each); returns the ssid.
    fn go_secure(&mut self, initiator: usize) -> String {
        let m = self.mark();
        self.cmd(initiator, "query");
        self.settle();
        let context = format!("after `query` on {}", self.who(initiator));
        let ssid = self.expect_secure(m, &context);
        for side in [A, B] {
            let n = self.since(side, m).iter().filter(|l| l.starts_with("secure ")).count();
            if n != 1 {
                self.fail(&format!("{context}: {} printed `secure` {n} times for one AKE", self.who(side)));
            }
        }
        self.expect_no_errors(m, &context);
        ssid
    }

    /// Sends `texts` from `from` (each settled) and checks the other side got exactly them,
    /// encrypted, in order.
    fn exchange(&mut self, plan: &[(usize, &str)], context: &str) {
        let m = self.mark();
        let mut want = [vec![], vec![]];
        for &(from, text) in plan {
            self.send_text(from, text);
            want[1 - from].push(("encrypted".to_string(), text.as_bytes().to_vec()));
            self.settle();
        }
        for side in [A, B] {
            let got = self.msgs(side, m);
            if got != want[side] {
                let show = |v: &[(String, Vec<u8>)]| -> Vec<String> {
                    v.iter().map(|(k, t)| format!("{k} {}", preview(t))).collect()
                };
                self.fail(&format!(
                    "{context}: {} got messages {:?}, expected {:?}",
                    self.who(side),
                    show(&got),
                    show(&want[side])
                ));
            }
        }
        self.expect_no_errors(m, context);
    }
}

/// Message texts in Spanish, Chinese and emoji (and plain ASCII).
fn sample(i: usize) -> String {
    const T: [&str; 4] = [
        "¿Qué tal, señor Muñoz? El pingüino comió ñandú",
        "你好，世界。今天天气很好，我们去公园吧",
        "🎉🔐🙂 emoji 👍🏽 👨‍👩‍👧‍👦 🏳️‍🌈",
        "plain ascii, with punctuation: <b>&amp;</b> ?OTR not a tag",
    ];
    format!("{} #{i}", T[i % T.len()])
}

/// A text of at least `bytes` bytes made of the samples.
fn big_text(i: usize, bytes: usize) -> String {
    let mut s = format!("[{i}] ");
    let mut k = i;
    while s.len() < bytes {
        s.push_str(&sample(k));
        s.push(' ');
        k += 1;
    }
    s
}

// ---------------------------------------------------------------------------------------
// Scenarios, each written once for a pairing (alice's program, bob's program).
// ---------------------------------------------------------------------------------------

/// Scenario 1: `ready` from both; `query` from either side gives both `secure` with one ssid and
/// each other's fingerprint.
fn query_from_either_side(imps: [Imp; 2]) {
    for initiator in [A, B] {
        let mut d = Duo::new(imps, [&[], &[]]);
        d.go_secure(initiator);
    }
}

/// Scenario 10: `--allow-v2` on both sides: queries offer v2 and v3, and v3 is chosen.
fn allow_v2_still_chooses_v3(imps: [Imp; 2]) {
    for initiator in [A, B] {
        let mut d = Duo::new(imps, [&["--allow-v2"], &["--allow-v2"]]);
        d.go_secure(initiator);
        d.exchange(&[(A, "v3 please"), (B, "v3 indeed")], "messages with --allow-v2");
        let offered = d.wire.iter().any(|(_, p)| p.starts_with(b"?OTRv23?"));
        let v2 = d.wire.iter().any(|(_, p)| p.starts_with(b"?OTR:AAI") || p.starts_with(b"?OTR,"));
        if !offered || v2 {
            d.fail(&format!("--allow-v2: query offered v2 and v3: {offered}; a v2 message went out: {v2}"));
        }
    }
}

/// Scenario 2: Messages both ways (Spanish, CJK, emoji) arrive intact, encrypted, in order: 20
/// alternating, then a burst of 10 from each side at once.
fn messages_both_ways(imps: [Imp; 2]) {
    let mut d = Duo::new(imps, [&[], &[]]);
    d.go_secure(A);
    let texts: Vec<String> = (0..20).map(sample).collect();
    let plan: Vec<(usize, &str)> = texts.iter().enumerate().map(|(i, t)| (i % 2, t.as_str())).collect();
    d.exchange(&plan, "20 alternating messages");

    let m = d.mark();
    let burst: [Vec<String>; 2] =
        [(20..30).map(sample).collect(), (30..40).map(|i| format!("{} (bob)", sample(i))).collect()];
    for (a, b) in burst[A].iter().zip(&burst[B]) {
        d.send_text(A, a);
        d.send_text(B, b);
    }
    d.settle();
    for side in [A, B] {
        let got = d.msgs(side, m);
        let want: Vec<(String, Vec<u8>)> =
            burst[1 - side].iter().map(|t| ("encrypted".to_string(), t.clone().into_bytes())).collect();
        if got != want {
            d.fail(&format!("burst: {} got {} messages, not the 10 sent, in order", d.who(side), got.len()));
        }
    }
    d.expect_no_errors(m, "burst of 10 both ways");
    for (from, payload) in d.wire.clone() {
        for t in texts.iter().chain(&burst[A]).chain(&burst[B]) {
            if contains(&payload, t.as_bytes()) {
                d.fail(&format!("{} sent a text in the clear: {}", d.who(from), preview(&payload)));
            }
        }
    }
}

/// Scenario 3: `end` on one side: `insecure` there, `finished` on the other; a `send` there is refused
/// with `error` and nothing goes out; `end` there prints `insecure`; a new `query` gives a
/// new ssid. Done once with alice ending, then with bob ending.
fn end_and_finished(imps: [Imp; 2]) {
    let mut d = Duo::new(imps, [&[], &[]]);
    let mut ssids = vec![d.go_secure(A)];
    for ender in [A, B] {
        let other = 1 - ender;
        let who = d.who(ender);
        let m = d.mark();
        d.cmd(ender, "end");
        d.settle();
        d.expect_events(ender, m, &["insecure"], &format!("`end` on {who}"));
        d.expect_events(other, m, &["finished"], &format!("`end` on {who}"));

        let m = d.mark();
        d.send_text(other, "¿Hay alguien ahí? 🙋 还在吗");
        d.settle();
        let context = format!("`send` on {} in FINISHED", d.who(other));
        let ev = d.since(other, m);
        if ev.len() != 1 || !ev[0].starts_with("error ") {
            d.fail(&format!("{context}: printed {ev:?}, expected one `error ...`"));
        }
        if !d.wire_since(m).is_empty() {
            d.fail(&format!("{context}: {} `net` line(s) appeared", d.wire_since(m).len()));
        }
        d.expect_events(ender, m, &[], &context);

        let m = d.mark();
        d.cmd(other, "end");
        d.settle();
        d.expect_events(other, m, &["insecure"], &format!("`end` on {} in FINISHED", d.who(other)));
        d.expect_events(ender, m, &[], &format!("`end` on {} in FINISHED", d.who(other)));

        // Already PLAINTEXT: `end` prints nothing.
        let m = d.mark();
        d.cmd(ender, "end");
        d.settle();
        d.expect_events(ender, m, &[], &format!("`end` on {who} in PLAINTEXT"));

        let ssid = d.go_secure(other);
        if ssids.contains(&ssid) {
            d.fail(&format!("the new AKE gave an old ssid {ssid} (earlier: {ssids:?})"));
        }
        ssids.push(ssid);
        d.exchange(&[(ender, "de nuevo en privado ✅"), (other, "sí, 好的")], "after the new AKE");
    }
}

const WHITESPACE_BASE: &[u8] = b" \t  \t\t\t\t \t \t \t  ";
const WHITESPACE_V3: &[u8] = b"  \t\t  \t\t";

/// Scenario 4: Opportunistic on both: alice's plaintext arrives as `msg plain` without the tag, and the
/// AKE starts by itself.
fn opportunistic_whitespace_tag(imps: [Imp; 2]) {
    let flags: &[&str] = &["--policy", "opportunistic"];
    let mut d = Duo::new(imps, [flags, flags]);
    let m = d.mark();
    let text = "Hola, ¿qué tal? 你好 🙂";
    d.send_text(A, text);
    d.settle();
    let Some((from, first)) = d.wire_since(m).first().cloned() else {
        d.fail("alice's send put nothing on net")
    };
    if from != A || !contains(&first, text.as_bytes()) || !contains(&first, WHITESPACE_BASE) {
        d.fail(&format!(
            "the first transport message is not alice's text with a whitespace tag: {}",
            preview(&first)
        ));
    }
    if !contains(&first, WHITESPACE_V3) {
        d.fail(&format!("alice's whitespace tag does not offer v3: {}", preview(&first)));
    }
    let got = d.msgs(B, m);
    if got != [("plain".to_string(), text.as_bytes().to_vec())] {
        d.fail(&format!("bob got {got:?}, expected exactly `msg plain` {text:?} (tag stripped)"));
    }
    d.expect_secure(m, "after a tagged plaintext under opportunistic");
    d.expect_no_errors(m, "tagged plaintext under opportunistic");
    d.exchange(&[(A, "ahora en privado 🔒"), (B, "私密 ✔")], "after the automatic AKE");
}

/// Scenario 5: `--policy always` on one side (alice, then bob): its `send` is refused with `error`,
/// the plaintext never goes out, and after the AKE it arrives encrypted.
fn always_never_leaks(imps: [Imp; 2]) {
    for strict in [A, B] {
        let other = 1 - strict;
        let mut flags: [&[&str]; 2] = [&[], &[]];
        flags[strict] = &["--policy", "always"];
        let mut d = Duo::new(imps, flags);
        let m = d.mark();
        let secret = "top secret: la contraseña es 秘密 🔐";
        d.send_text(strict, secret);
        d.settle();
        let context = format!("`send` on {} under --policy always", d.who(strict));
        match d.since(strict, m).first() {
            Some(l) if l.starts_with("error ") => {}
            other => d.fail(&format!("{context}: first event {other:?}, expected `error ...`")),
        }
        for (from, payload) in d.wire_since(m) {
            if contains(payload, secret.as_bytes()) {
                d.fail(&format!(
                    "{context}: the plaintext went out on {}'s net: {}",
                    d.who(*from),
                    preview(payload)
                ));
            }
        }
        d.expect_secure(m, &context);
        let got = d.msgs(other, m);
        if got != [("encrypted".to_string(), secret.as_bytes().to_vec())] {
            let got: Vec<String> = got.iter().map(|(k, t)| format!("{k} {}", preview(t))).collect();
            d.fail(&format!("{context}: {} got {got:?}, expected the text once, encrypted", d.who(other)));
        }
        if !d.msgs(strict, m).is_empty() {
            d.fail(&format!("{context}: {} printed a msg", d.who(strict)));
        }
        d.exchange(&[(other, "recibido ✓"), (strict, "gracias 谢谢")], &context);
    }
}

/// Scenario 6: `symkey 7 file.txt` on either side: both print the same key.
fn extra_symmetric_key(imps: [Imp; 2]) {
    let mut d = Duo::new(imps, [&[], &[]]);
    d.go_secure(A);
    for from in [A, B] {
        let m = d.mark();
        d.cmd(from, &format!("symkey 7 {}", b64("file.txt")));
        d.settle();
        let context = format!("`symkey 7 file.txt` on {}", d.who(from));
        let key = match d.since(from, m) {
            [k] if k.starts_with("symkey ") => k.clone(),
            got => d.fail(&format!("{context}: it printed {got:?}, expected `symkey <64 hex>`")),
        };
        d.expect_events(1 - from, m, &[key.as_str()], &context);
    }
    d.exchange(&[(A, "después de symkey"), (B, "ok 👌")], "after symkey");
}

/// Scenario 7: `--max-msg-size 300` on both: every transport message fits, except libotr's query.
fn fragmented_at_300(imps: [Imp; 2]) {
    let flags: &[&str] = &["--max-msg-size", "300"];
    let mut d = Duo::new(imps, [flags, flags]);
    d.go_secure(A);
    let texts: Vec<[String; 2]> = (0..5)
        .map(|i| {
            let size = 5_000 + i * 1_250;
            [big_text(i, size), big_text(i + 5, size)]
        })
        .collect();
    let plan: Vec<(usize, &str)> =
        texts.iter().flat_map(|[a, b]| [(A, a.as_str()), (B, b.as_str())]).collect();
    d.exchange(&plan, "5 messages of 5-10 KB each way at --max-msg-size 300");
    for (from, payload) in &d.wire {
        // libotr's `query` (shim_query) prints otrl_proto_default_query_msg as is: an OTR
        // Query message is plain text, libotr injects it unfragmented, and its default one
        // (with the HTML explanation) is about 340 bytes (338 for "bob", 340 for "alice").
        // That is the only allowed exception; our query (about 165 bytes) must fit.
        let libotr_query = d.peers[*from].imp == Imp::Libotr && payload.starts_with(b"?OTRv");
        if payload.len() > 300 && !libotr_query {
            d.fail(&format!(
                "{} sent a {}-byte transport message: {}",
                d.who(*from),
                payload.len(),
                preview(payload)
            ));
        }
    }
}

/// Gives `side` an SMP command and settles; fails clearly if the peer lacks SMP.
fn smp_cmd(d: &mut Duo, side: usize, line: &str) -> Mark {
    let m = d.mark();
    d.cmd(side, line);
    d.settle();
    if let Some(e) = d.since(side, m).iter().find(|l| l.starts_with("error ")) {
        if e.contains("not supported") {
            d.fail(&format!(
                "{} does not support SMP yet: `{}` printed {e:?}. These SMP scenarios are meant \
                 to fail until otr-peer implements smp / smpq / smp-answer / smp-abort.",
                d.who(side),
                line.split(' ').next().unwrap_or_default()
            ));
        }
        d.fail(&format!("{}: `{line}` printed {e:?}", d.who(side)));
    }
    m
}

/// Scenario 8: SMP: with a question and the right answer, with a wrong answer, without a question,
/// aborted by the responder and by the initiator, then successful again.
fn socialist_millionaires(imps: [Imp; 2]) {
    let mut d = Duo::new(imps, [&[], &[]]);
    d.go_secure(A);
    let question = "¿Color favorito? 你最喜欢的颜色 🎨";
    let secret = b64("azul 蓝色 💙");
    let wrong = b64("rojo");

    // With a question, right answer.
    let m = smp_cmd(&mut d, A, &format!("smpq {} {secret}", b64(question)));
    d.expect_events(B, m, &[&format!("smp-request {}", b64(question))], "smpq from alice");
    d.expect_events(A, m, &[], "smpq from alice");
    let m = smp_cmd(&mut d, B, &format!("smp-answer {secret}"));
    d.expect_events(A, m, &["smp-success"], "right answer");
    d.expect_events(B, m, &["smp-success"], "right answer");

    // With a question from bob, wrong answer.
    let m = smp_cmd(&mut d, B, &format!("smpq {} {secret}", b64("¿Dónde nos conocimos?")));
    d.expect_events(A, m, &[&format!("smp-request {}", b64("¿Dónde nos conocimos?"))], "smpq from bob");
    let m = smp_cmd(&mut d, A, &format!("smp-answer {wrong}"));
    d.expect_events(A, m, &["smp-failure"], "wrong answer");
    d.expect_events(B, m, &["smp-failure"], "wrong answer");

    // Without a question.
    let m = smp_cmd(&mut d, A, &format!("smp {secret}"));
    d.expect_events(B, m, &["smp-request -"], "smp without a question");
    let m = smp_cmd(&mut d, B, &format!("smp-answer {secret}"));
    d.expect_events(A, m, &["smp-success"], "smp without a question");
    d.expect_events(B, m, &["smp-success"], "smp without a question");

    // Aborted by the responder instead of answering.
    let m = smp_cmd(&mut d, B, &format!("smp {secret}"));
    d.expect_events(A, m, &["smp-request -"], "smp from bob");
    let m = smp_cmd(&mut d, A, "smp-abort");
    d.expect_events(B, m, &["smp-aborted"], "`smp-abort` on the responder");
    d.expect_events(A, m, &[], "`smp-abort` on the responder");

    // Aborted by the initiator after the request arrived.
    let m = smp_cmd(&mut d, A, &format!("smpq {} {secret}", b64(question)));
    d.expect_events(B, m, &[&format!("smp-request {}", b64(question))], "smpq from alice");
    let m = smp_cmd(&mut d, A, "smp-abort");
    d.expect_events(B, m, &["smp-aborted"], "`smp-abort` on the initiator");
    d.expect_events(A, m, &[], "`smp-abort` on the initiator");

    // And it works again.
    let m = smp_cmd(&mut d, B, &format!("smp {secret}"));
    d.expect_events(A, m, &["smp-request -"], "smp after aborts");
    let m = smp_cmd(&mut d, A, &format!("smp-answer {secret}"));
    d.expect_events(A, m, &["smp-success"], "smp after aborts");
    d.expect_events(B, m, &["smp-success"], "smp after aborts");
    d.exchange(&[(A, "verificado ✔"), (B, "验证了")], "after SMP");
}

/// A tiny deterministic generator for garbage bytes.
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// `len` bytes, none of them NUL.
    fn bytes(&mut self, len: usize) -> Vec<u8> {
        (0..len).map(|_| (self.next() % 255) as u8 + 1).collect()
    }
}

/// The body of an OTR-encoded message `?OTR:<b64>.`, decoded.
fn otr_body(payload: &[u8]) -> Option<Vec<u8>> {
    let inner = payload.strip_prefix(b"?OTR:")?;
    let end = inner.iter().position(|&b| b == b'.')?;
    B64.decode(&inner[..end]).ok()
}

fn otr_encode(body: &[u8]) -> Vec<u8> {
    format!("?OTR:{}.", b64(body)).into_bytes()
}

/// Offset of the first byte of the encrypted text in a v3 data message body.
fn ciphertext_offset(body: &[u8]) -> Option<usize> {
    // header 3, instance tags 8, flags 1, keyids 8, then MPI y (4-byte length), ctr 8,
    // then DATA (4-byte length) of ciphertext.
    let y_len = u32::from_be_bytes(body.get(20..24)?.try_into().ok()?) as usize;
    let data = 24 + y_len + 8;
    let c_len = u32::from_be_bytes(body.get(data..data + 4)?.try_into().ok()?) as usize;
    (c_len > 0 && body.len() > data + 4 + c_len).then_some(data + 4)
}

/// Scenario 9: Hostile `net` input while private: no crash, no `msg`, and the conversation goes on.
fn hostile_input(imps: [Imp; 2]) {
    let manual: &[&str] = &["--policy", "manual"];
    let mut d = Duo::new(imps, [manual, manual]);
    d.go_secure(A);
    d.exchange(&[(A, "uno 1️⃣"), (B, "dos 二")], "before the garbage");
    let mut rng = XorShift(0x9e37_79b9_7f4a_7c15);
    for target in [A, B] {
        let source = 1 - target;
        let who = d.who(target);

        // Intercept a fresh data message from the source.
        d.peers[source].hold = true;
        let m = d.mark();
        let genuine_text = format!("interceptado ✉️ 截获 for {who}");
        d.send_text(source, &genuine_text);
        d.settle();
        d.peers[source].hold = false;
        let held = std::mem::take(&mut d.peers[source].held);
        let genuine = match d.wire_since(m) {
            [(_, p)] => p.clone(),
            w => d.fail(&format!(
                "expected one data message from {}, got {} transport messages",
                d.who(source),
                w.len()
            )),
        };
        let Some(body) = otr_body(&genuine).filter(|b| b.len() > 11 && b[..3] == [0, 3, 3]) else {
            d.fail(&format!("not a v3 data message: {}", preview(&genuine)))
        };
        let Some(ct) = ciphertext_offset(&body) else {
            d.fail("cannot find the ciphertext in the data message")
        };
        let tags = (
            u32::from_be_bytes(body[3..7].try_into().expect("4 bytes")),
            u32::from_be_bytes(body[7..11].try_into().expect("4 bytes")),
        );
        let frag = |k: u32, n: u32, piece: &str| -> Vec<u8> {
            format!("?OTR|{:08x}|{:08x},{k:05},{n:05},{piece},", tags.0, tags.1).into_bytes()
        };

        let mut garbage: Vec<(&str, Vec<u8>)> = vec![];
        let mut flipped = body.clone();
        flipped[ct] ^= 0x01;
        garbage.push(("data message with a flipped ciphertext bit", otr_encode(&flipped)));
        let mut flipped_ctr = body.clone();
        flipped_ctr[ct - 5] ^= 0x80;
        garbage.push(("data message with a changed counter", otr_encode(&flipped_ctr)));
        garbage.push(("data message truncated to half", otr_encode(&body[..body.len() / 2])));
        garbage.push(("data message without its MAC", otr_encode(&body[..body.len() - 24])));
        // (The genuine message without its terminating '.' is not garbage: libotr accepts it.
        // It is replayed that way below, after the genuine one was delivered.)
        let flipped_b64 = otr_encode(&flipped);
        garbage.push((
            "tampered data message without its terminating '.'",
            flipped_b64[..flipped_b64.len() - 1].to_vec(),
        ));
        garbage.push(("data message cut in the middle of its base64", genuine[..genuine.len() / 2].to_vec()));
        garbage.push(("data message with extra bytes", otr_encode(&[&body[..], b"extra"].concat())));
        garbage.push(("invalid base64 inside ?OTR:", b"?OTR:!!!not*base64~~.".to_vec()));
        garbage.push(("invalid base64 padding inside ?OTR:", b"?OTR:AAMD=AAA==.".to_vec()));
        garbage.push(("header only", b"?OTR:AAMD.".to_vec()));
        garbage.push(("truncated header", b"?OTR:AAMDAAAAAA==.".to_vec()));
        garbage.push(("v2 data message header", b"?OTR:AAID.".to_vec()));
        garbage.push(("unknown message type", otr_encode(&[0, 3, 0x77, 1, 2, 3, 4, 5, 6, 7, 8])));
        garbage.push(("?OTR: with invalid UTF-8", [&b"?OTR:"[..], &[0xff, 0xfe, 0xc3, 0x28], b"."].concat()));
        garbage.push(("invalid UTF-8", vec![0xff, 0xfe, 0xfd, b' ', b'h', b'i', 0xc3, 0x28, 0xe2, 0x82]));
        garbage.push(("64 KB of zeros in base64", format!("?OTR:{}.", "A".repeat(65_536)).into_bytes()));
        garbage.push(("fragment 1 of 2 never completed", frag(1, 2, "?OTR:AAMD")));
        garbage.push(("fragment 2 of 2 alone", frag(2, 2, "AAAA.")));
        garbage.push(("fragments completing to garbage (1/2)", frag(1, 2, "?OTR:AAMDAAAA")));
        garbage.push(("fragments completing to garbage (2/2)", frag(2, 2, "!!!!.")));
        garbage.push(("fragment with k > n", frag(3, 2, "?OTR:AAMD")));
        garbage.push(("fragment with k = 0", frag(0, 2, "?OTR:AAMD")));
        garbage.push((
            "fragment for other instance tags",
            b"?OTR|00000123|00000456,00001,00001,?OTR:AAMD.,".to_vec(),
        ));
        garbage.push(("malformed fragment header", b"?OTR|zz|,1,,".to_vec()));
        for _ in 0..6 {
            let len = 1 + (rng.next() % 400) as usize;
            garbage.push(("random bytes", rng.bytes(len)));
        }
        for _ in 0..4 {
            let len = 1 + (rng.next() % 300) as usize;
            garbage.push(("?OTR: with random base64", otr_encode(&rng.bytes(len))));
        }

        let m = d.mark();
        for (what, payload) in &garbage {
            d.note(target, &format!("(hostile: {what})"));
            d.cmd(target, &format!("net {}", b64(payload)));
        }
        d.settle();
        d.expect_alive("after hostile input");
        for side in [A, B] {
            if let Some(l) = d.since(side, m).iter().find(|l| l.starts_with("msg ")) {
                d.fail(&format!("hostile input to {who}: {} printed {l:?}", d.who(side)));
            }
        }

        // The genuine message is still accepted, exactly once; a replay is not.
        let m = d.mark();
        for line in held {
            d.cmd(target, &line);
        }
        d.settle();
        let got = d.msgs(target, m);
        if got != [("encrypted".to_string(), genuine_text.clone().into_bytes())] {
            d.fail(&format!("{who} did not deliver the intercepted message after the garbage: {got:?}"));
        }
        let m = d.mark();
        d.cmd(target, &format!("net {}", b64(&genuine)));
        d.cmd(target, &format!("net {}", b64(&genuine[..genuine.len() - 1])));
        d.settle();
        if let Some(l) = d.since(target, m).iter().find(|l| l.starts_with("msg ")) {
            d.fail(&format!("{who} delivered a replayed data message: {l:?}"));
        }
        d.expect_alive("after a replay");
        d.exchange(
            &[(A, "¿sigues ahí? 🤔"), (B, "sí, todo bien 👍"), (A, "我们继续"), (B, "🎉")],
            &format!("after hostile input to {who}"),
        );
    }
}

macro_rules! pairing {
    ($module:ident, $alice:expr, $bob:expr) => {
        mod $module {
            use super::*;

            const IMPS: [Imp; 2] = [$alice, $bob];

            #[test]
            fn s1_query_from_either_side() {
                query_from_either_side(IMPS);
            }

            #[test]
            fn s2_messages_both_ways() {
                messages_both_ways(IMPS);
            }

            #[test]
            fn s3_end_and_finished() {
                end_and_finished(IMPS);
            }

            #[test]
            fn s4_opportunistic_whitespace_tag() {
                opportunistic_whitespace_tag(IMPS);
            }

            #[test]
            fn s5_always_never_leaks() {
                always_never_leaks(IMPS);
            }

            #[test]
            fn s6_extra_symmetric_key() {
                extra_symmetric_key(IMPS);
            }

            #[test]
            fn s7_fragmented_at_300() {
                fragmented_at_300(IMPS);
            }

            #[test]
            fn s8_socialist_millionaires() {
                socialist_millionaires(IMPS);
            }

            #[test]
            fn s9_hostile_input() {
                hostile_input(IMPS);
            }

            #[test]
            fn s10_allow_v2_still_chooses_v3() {
                allow_v2_still_chooses_v3(IMPS);
            }
        }
    };
}

pairing!(ours_alice_libotr_bob, Imp::Ours, Imp::Libotr);
pairing!(libotr_alice_ours_bob, Imp::Libotr, Imp::Ours);
pairing!(ours_alice_ours_bob, Imp::Ours, Imp::Ours);
// A control: libotr against itself checks the expectations of the scenarios.
pairing!(libotr_alice_libotr_bob, Imp::Libotr, Imp::Libotr);
