//! Issue #21: unauthenticated clients cannot lock agents out. Floods of half-open connections
//! from ten loopback addresses (127.0.0.10-19) are held, and renewed as tollgate drops them,
//! while an agent from another address logs in and queries within one second; a startup that
//! trickles bytes is cut at `startup_timeout`; authenticated sessions have their own budget.
//! Everything stays on loopback and every wait is bounded.

mod common;

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::{Proxy, Raw, frame, startup_packet};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tollgate::pipeline::Stages;
use tollgate::protocol::mysql::handshake::caps;
use tollgate::protocol::mysql::{packet, wire};

/// The flood tests run one at a time: two floods at once on a small machine measure the
/// machine, not tollgate.
static ONE_FLOOD_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Half-open connections in a flood, and the addresses they come from.
const FLOOD: usize = 1000;
const FLOOD_ADDRESSES: u8 = 10;

/// A TCP connection to `to` from the loopback address `from` (all of 127.0.0.0/8 is local).
async fn connect_from(from: IpAddr, to: SocketAddr) -> std::io::Result<TcpStream> {
    let socket = TcpSocket::new_v4()?;
    socket.bind(SocketAddr::new(from, 0))?;
    socket.connect(to).await
}

/// What a flood did: connections tollgate closed, connections open now.
#[derive(Default)]
struct FloodStats {
    dropped: AtomicUsize,
    open: AtomicUsize,
}

/// Holds `FLOOD` connections from ten addresses, each sending `first` and nothing more; each
/// one tollgate closes is opened again until `stop`. Returns once all are open (or 10 s).
async fn flood(to: SocketAddr, first: &'static [u8], stop: Arc<AtomicBool>) -> Arc<FloodStats> {
    let stats = Arc::new(FloodStats::default());
    for n in 0..FLOOD {
        let from = IpAddr::from([127, 0, 0, 10 + (n % usize::from(FLOOD_ADDRESSES)) as u8]);
        let (stats, stop) = (Arc::clone(&stats), Arc::clone(&stop));
        tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let Ok(mut s) = connect_from(from, to).await else {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                };
                let _ = s.write_all(first).await;
                stats.open.fetch_add(1, Ordering::Relaxed);
                // Read (and ignore: a MySQL greeting) until tollgate closes it or the test ends.
                let mut sink = [0u8; 256];
                loop {
                    tokio::select! {
                        r = s.read(&mut sink) => if matches!(r, Ok(0) | Err(_)) { break },
                        _ = tokio::time::sleep(Duration::from_millis(100)) => {
                            if stop.load(Ordering::Relaxed) { break }
                        }
                    }
                }
                stats.open.fetch_sub(1, Ordering::Relaxed);
                if !stop.load(Ordering::Relaxed) {
                    stats.dropped.fetch_add(1, Ordering::Relaxed);
                }
            }
        });
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while stats.open.load(Ordering::Relaxed) + stats.dropped.load(Ordering::Relaxed) < FLOOD
        && Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    stats
}

/// The file descriptors this test process needs: the flood, the proxy's side of what it keeps.
fn check_fd_limit(needed: u64) {
    let limits = std::fs::read_to_string("/proc/self/limits").unwrap_or_default();
    let soft = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .and_then(|l| l.split_whitespace().nth(3))
        .and_then(|n| n.parse::<u64>().ok());
    if let Some(soft) = soft {
        assert!(
            soft >= needed,
            "this test needs {needed} file descriptors; raise the limit (ulimit -n {needed})"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pg_half_open_flood_does_not_lock_out_an_agent() {
    let _alone = ONE_FLOOD_AT_A_TIME.lock().await;
    check_fd_limit(3 * FLOOD as u64);
    // Limits at their defaults: 1,000 sessions, 100 per address, startup timeout 10 s.
    let proxy = Proxy::start("").await;
    let stop = Arc::new(AtomicBool::new(false));
    // Two bytes of a startup packet's length, and nothing more.
    let stats = flood(proxy.addr, &[0, 0], Arc::clone(&stop)).await;
    // The flood is held (and renewed) while the agent logs in from its own address.
    tokio::time::sleep(Duration::from_millis(200)).await;
    for attempt in 0..3 {
        let started = Instant::now();
        let mut agent = Raw::from_stream(
            connect_from(IpAddr::from([127, 0, 0, 2]), proxy.addr)
                .await
                .unwrap(),
        );
        agent
            .send(&startup_packet(&[("user", "agent"), ("database", "plain")]))
            .await;
        let (tag, _) = agent.read().await.expect("asked for a password");
        assert_eq!(tag, b'R');
        agent
            .send(&frame(
                b'p',
                format!("{}\0", common::AGENT_PASSWORD).as_bytes(),
            ))
            .await;
        agent.until_ready().await;
        agent.send(&frame(b'Q', b"select 42\0")).await;
        let answer = agent.until_ready().await;
        let elapsed = started.elapsed();
        assert!(
            answer.iter().any(|(t, b)| *t == b'D' && b.ends_with(b"42")),
            "the agent's row: {answer:?}"
        );
        assert!(
            elapsed < Duration::from_secs(1),
            "attempt {attempt}: login and query took {elapsed:?} under the flood"
        );
        eprintln!(
            "attempt {attempt}: agent served in {elapsed:?}; flood open {}, dropped {}",
            stats.open.load(Ordering::Relaxed),
            stats.dropped.load(Ordering::Relaxed)
        );
    }
    // tollgate kept at most its unauthenticated budget (100) of the flood and dropped the rest.
    let dropped = stats.dropped.load(Ordering::Relaxed);
    assert!(
        dropped >= FLOOD - 100,
        "the flood's connections were dropped: {dropped}"
    );
    stop.store(true, Ordering::Relaxed);
}

/// A MySQL login with a cleartext password to the `shop` target, from `from`.
async fn mysql_login_and_query(from: IpAddr, to: SocketAddr) -> Vec<u8> {
    let mut s = connect_from(from, to).await.unwrap();
    let hello = read_packet(&mut s).await.expect("greeting");
    assert_eq!(hello[0], 10);
    let c = caps::PROTOCOL_41
        | caps::SECURE_CONNECTION
        | caps::PLUGIN_AUTH
        | caps::PLUGIN_AUTH_LENENC
        | caps::CONNECT_WITH_DB;
    let mut p = Vec::new();
    p.extend_from_slice(&c.to_le_bytes());
    p.extend_from_slice(&(1u32 << 24).to_le_bytes());
    p.push(45);
    p.extend_from_slice(&[0; 23]);
    p.extend_from_slice(b"agent\0");
    wire::put_lenenc_bytes(&mut p, format!("{}\0", common::AGENT_PASSWORD).as_bytes());
    p.extend_from_slice(b"shop\0mysql_clear_password\0");
    let mut out = Vec::new();
    packet::put(&mut out, 1, &p);
    s.write_all(&out).await.unwrap();
    let ok = read_packet(&mut s).await.expect("login answer");
    assert_eq!(ok[0], 0x00, "logged in: {ok:?}");
    let mut out = Vec::new();
    packet::put(&mut out, 0, b"\x03select 42");
    s.write_all(&out).await.unwrap();
    // Column count, definition, EOF, then the row.
    for _ in 0..3 {
        read_packet(&mut s).await.expect("result set");
    }
    read_packet(&mut s).await.expect("row")
}

/// One MySQL packet's payload, or `None` once the connection is closed; fails after 10 s.
async fn read_packet(s: &mut TcpStream) -> Option<Vec<u8>> {
    let mut h = [0u8; 4];
    tokio::time::timeout(Duration::from_secs(10), s.read_exact(&mut h))
        .await
        .expect("an answer within 10 s")
        .ok()?;
    let n = usize::from(h[0]) | usize::from(h[1]) << 8 | usize::from(h[2]) << 16;
    let mut p = vec![0; n];
    s.read_exact(&mut p).await.ok()?;
    Some(p)
}

fn mysql_config(dir: &std::path::Path, extra: &str) -> String {
    let pw = dir.join("pw");
    std::fs::write(&pw, common::AGENT_PASSWORD).unwrap();
    format!(
        "{extra}
targets:
  - name: shop
    protocol: mysql
    address: 127.0.0.1:3306
    database: test
    user: root
    client_auth: {{ method: password, user: agent, password: {{ file: {pw} }} }}
",
        pw = pw.display()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mysql_half_open_flood_does_not_lock_out_an_agent() {
    let _alone = ONE_FLOOD_AT_A_TIME.lock().await;
    check_fd_limit(3 * FLOOD as u64);
    let dir = tempfile::tempdir().unwrap();
    let yaml = mysql_config(dir.path(), "");
    let proxy = Proxy::start_mysql(dir, &yaml, Stages::default()).await;
    let to = proxy.mysql.unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    // Two bytes of a handshake response's header, and nothing more.
    let stats = flood(to, &[0x20, 0], Arc::clone(&stop)).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    for attempt in 0..3 {
        let started = Instant::now();
        let row = mysql_login_and_query(IpAddr::from([127, 0, 0, 2]), to).await;
        let elapsed = started.elapsed();
        assert_eq!(row, b"\x0242");
        assert!(
            elapsed < Duration::from_secs(1),
            "attempt {attempt}: login and query took {elapsed:?} under the flood"
        );
        eprintln!(
            "attempt {attempt}: agent served in {elapsed:?}; flood open {}, dropped {}",
            stats.open.load(Ordering::Relaxed),
            stats.dropped.load(Ordering::Relaxed)
        );
    }
    let dropped = stats.dropped.load(Ordering::Relaxed);
    assert!(
        dropped >= FLOOD - 100,
        "the flood's connections were dropped: {dropped}"
    );
    stop.store(true, Ordering::Relaxed);
}

/// A client that sends its startup one byte every 100 ms is cut at `startup_timeout` (1 s):
/// the bytes do not restart the clock.
#[tokio::test]
async fn a_trickled_startup_is_cut_at_startup_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let yaml = mysql_config(dir.path(), "limits: { startup_timeout: 1s }")
        + &common::targets(dir.path()).replace("targets:\n", "");
    let proxy = Proxy::start_mysql(dir, &yaml, Stages::default()).await;
    let long_name = "x".repeat(200);
    let pg_startup = startup_packet(&[
        ("user", "agent"),
        ("database", "plain"),
        ("application_name", &long_name),
    ]);
    let mut my_response = vec![0x00, 0x01, 0x00, 0x01];
    my_response.extend_from_slice(&[0x0d; 256]);
    for (name, to, bytes) in [
        ("PostgreSQL", proxy.addr, pg_startup),
        ("MySQL", proxy.mysql.unwrap(), my_response),
    ] {
        let started = Instant::now();
        let mut s = TcpStream::connect(to).await.unwrap();
        let mut sent = 0;
        let closed_after = loop {
            if sent < bytes.len() && s.write_all(&bytes[sent..=sent]).await.is_err() {
                break started.elapsed();
            }
            sent += 1;
            // Whatever arrives (a greeting, an error) is read; the end of the stream ends it.
            let mut sink = [0u8; 1024];
            match tokio::time::timeout(Duration::from_millis(100), s.read(&mut sink)).await {
                Ok(Ok(0)) | Ok(Err(_)) => break started.elapsed(),
                _ => {}
            }
            assert!(
                started.elapsed() < Duration::from_secs(3),
                "{name}: a trickling client still connected after 3 s"
            );
        };
        assert!(sent < bytes.len(), "{name}: the whole startup went through");
        assert!(
            closed_after >= Duration::from_millis(900)
                && closed_after < Duration::from_millis(1600),
            "{name}: closed after {closed_after:?}, {sent} bytes trickled"
        );
    }
}

/// Authenticated sessions have `max_connections` to themselves: connections still logging in
/// do not take them, and a login past it is refused (53300) only once authenticated.
#[tokio::test]
async fn sessions_and_unauthenticated_connections_have_separate_budgets() {
    let proxy = Proxy::start("limits: { max_connections: 2, max_unauthenticated: 3 }").await;
    // Three unauthenticated connections fill their budget but no session slot.
    let mut waiting = Vec::new();
    for _ in 0..3 {
        let mut s = TcpStream::connect(proxy.addr).await.unwrap();
        s.write_all(&[0, 0]).await.unwrap();
        waiting.push(s);
    }
    let mut one = Raw::login(proxy.addr).await;
    let _two = Raw::login(proxy.addr).await;
    // The third session is refused after its password, with PostgreSQL's words.
    let mut three = Raw::connect(proxy.addr).await;
    three
        .send(&startup_packet(&[("user", "agent"), ("database", "plain")]))
        .await;
    three.read().await.expect("asked for a password");
    three
        .send(&frame(
            b'p',
            format!("{}\0", common::AGENT_PASSWORD).as_bytes(),
        ))
        .await;
    let (tag, body) = three.read().await.expect("an error");
    assert_eq!(tag, b'E');
    assert_eq!(common::error_field(&body, b'C').as_deref(), Some("53300"));
    // The logins displaced the oldest waiting connections; the sessions work.
    one.send(&frame(b'Q', b"select 1\0")).await;
    one.until_ready().await;
    let mut closed = 0;
    for mut s in waiting {
        let mut b = [0u8; 16];
        if let Ok(Ok(0)) = tokio::time::timeout(Duration::from_millis(500), s.read(&mut b)).await {
            closed += 1;
        }
    }
    // The first login arrived with the budget full: the oldest waiting connection made room.
    assert_eq!(closed, 1, "connections dropped to make room");
}
