//! A bounded load run: N clients × M messages through one relay on 127.0.0.1.
//!
//! ```text
//! cargo run --release -p otr-relay --example load [-- --clients 50 --messages 200 --bytes 400]
//! ```
//!
//! The relay runs in a child process (this same binary with `--serve`), so the RSS reported
//! is the server's alone. Client i sends to client i+1 (mod N), one message in flight per
//! client, each receiver acks every delivery; latency is send-to-delivery. The whole run is
//! bounded by a 120 s deadline. Accounts use cheap Argon2 parameters so that setup is quick.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use otr_relay::accounts::{self, Argon2Params};
use otr_relay::{Limits, Server, ServerConfig};
use otr_relay_client::ClientConfig;
use otr_relay_client::tokio_client::Client;

fn arg(name: &str, default: usize) -> usize {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let runtime = tokio::runtime::Runtime::new().expect("a tokio runtime");
    if let Some(i) = args.iter().position(|a| a == "--serve") {
        let dir = args.get(i + 1).expect("--serve DIR").clone();
        runtime.block_on(serve(dir));
    } else {
        runtime.block_on(load(arg("--clients", 50), arg("--messages", 200), arg("--bytes", 400)));
    }
}

/// The server side: generous limits, runs until stdin closes.
async fn serve(dir: String) {
    let mut config = ServerConfig::new("127.0.0.1:0".parse().expect("an address"), dir);
    config.limits = Limits {
        messages_per_second: 1_000_000,
        burst: 1_000_000,
        max_connections_per_ip: 10_000,
        queue_max_messages: 1_000_000,
        queue_max_bytes: 1 << 30,
        ..Limits::default()
    };
    config.argon2 = Argon2Params::TEST;
    let server = Server::bind(config).await.expect("bind");
    println!("{}", server.local_addr().expect("address"));
    println!("{}", server.fingerprint());
    let stdin_closed = tokio::task::spawn_blocking(|| {
        let mut sink = String::new();
        while std::io::stdin().read_line(&mut sink).map(|n| n > 0).unwrap_or(false) {}
    });
    server
        .run(async {
            let _ = stdin_closed.await;
        })
        .await
        .expect("server");
}

fn rss_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

async fn load(clients: usize, messages: usize, bytes: usize) {
    let dir = std::env::temp_dir().join(format!("otr-relay-load-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    for i in 0..clients {
        accounts::add_account(&dir, &format!("u{i}"), &format!("secret-of-u{i}"), Argon2Params::TEST)
            .expect("account");
    }
    let mut child = Command::new(std::env::current_exe().expect("own path"))
        .arg("--serve")
        .arg(&dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("server process");
    let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let addr = lines.next().expect("address").expect("address");
    let pin = lines.next().expect("fingerprint").expect("fingerprint").parse().expect("fingerprint");
    let pid = child.id();
    let rss_idle = rss_kib(pid, "VmRSS:");

    let start = Instant::now();
    let mut conns = Vec::new();
    for i in 0..clients {
        let config = ClientConfig::new(addr.clone(), pin, format!("u{i}"), format!("secret-of-u{i}"));
        conns.push(Client::connect(config).await.expect("connect"));
    }
    let connected = start.elapsed();
    let t0 = Instant::now();
    let deadline = Duration::from_secs(120);
    let mut receivers = Vec::new();
    let mut senders = Vec::new();
    for (i, (client, mut inbox)) in conns.into_iter().enumerate() {
        let client = Arc::new(client);
        let c = client.clone();
        receivers.push(tokio::spawn(async move {
            let mut lat = Vec::with_capacity(messages);
            while lat.len() < messages {
                let Ok(Some(Ok(d))) = tokio::time::timeout(deadline, inbox.next()).await else { break };
                let sent: u64 = d.body.get(5..21).and_then(|s| s.parse().ok()).unwrap_or(0);
                let now = u64::try_from(t0.elapsed().as_micros()).unwrap_or(u64::MAX);
                lat.push(now.saturating_sub(sent));
                if c.ack(d.seq).await.is_err() {
                    break;
                }
            }
            lat
        }));
        let to = format!("u{}", (i + 1) % clients);
        senders.push(tokio::spawn(async move {
            for m in 0..messages {
                let now = u64::try_from(t0.elapsed().as_micros()).unwrap_or(u64::MAX);
                let mut body = format!("?OTR:{now:016}");
                body.extend(std::iter::repeat_n('A', bytes.saturating_sub(body.len() + 1)));
                body.push('.');
                if let Err(e) = client.send(&to, m as u64, &body).await {
                    eprintln!("send failed: {e}");
                    break;
                }
            }
        }));
    }
    let mut rss_peak_sample = 0;
    for s in senders {
        let _ = tokio::time::timeout(deadline, s).await;
        rss_peak_sample = rss_peak_sample.max(rss_kib(pid, "VmRSS:"));
    }
    let mut latencies = Vec::new();
    for r in receivers {
        if let Ok(Ok(l)) = tokio::time::timeout(deadline, r).await {
            latencies.extend(l);
        }
    }
    let elapsed = t0.elapsed();
    let hwm = rss_kib(pid, "VmHWM:");
    let rss_end = rss_kib(pid, "VmRSS:");
    drop(child.stdin.take()); // the server shuts down gracefully
    let _ = child.wait();
    let _ = std::fs::remove_dir_all(&dir);

    latencies.sort_unstable();
    let pct = |p: f64| {
        latencies
            .get(((latencies.len() as f64 * p) as usize).min(latencies.len().saturating_sub(1)))
            .copied()
            .unwrap_or(0)
    };
    let total = clients * messages;
    println!(
        "otr-relay load: {clients} clients x {messages} messages of {bytes} bytes, TLS 1.3 on 127.0.0.1"
    );
    println!("  connected and logged in: {:.1} ms", connected.as_secs_f64() * 1e3);
    println!("  delivered:    {} of {total} in {:.2} s", latencies.len(), elapsed.as_secs_f64());
    println!(
        "  throughput:   {:.0} messages/s (stored durably, delivered, acked)",
        latencies.len() as f64 / elapsed.as_secs_f64()
    );
    println!(
        "  latency:      p50 {:.2} ms, p99 {:.2} ms (send to delivery)",
        pct(0.50) as f64 / 1e3,
        pct(0.99) as f64 / 1e3
    );
    println!("  server RSS:   {rss_idle} KiB idle, {rss_end} KiB after, peak {hwm} KiB");
}
