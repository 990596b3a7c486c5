//! The MySQL commands client libraries rarely send, byte for byte through tollgate to the
//! machine's MariaDB: COM_STATISTICS, COM_FIELD_LIST, COM_PING, the prepared-statement family
//! (PREPARE, SEND_LONG_DATA, EXECUTE, RESET, CLOSE) and the refused ones (COM_CHANGE_USER,
//! replication, COM_PROCESS_INFO, unknown commands), each followed by a query on the same
//! connection.

mod common;

use std::time::Duration;

use common::Proxy;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tollgate::pipeline::Stages;
use tollgate::protocol::mysql::handshake::caps;
use tollgate::protocol::mysql::{packet, wire};

struct Raw {
    s: TcpStream,
}

impl Raw {
    async fn read(&mut self) -> (u8, Vec<u8>) {
        let mut h = [0u8; 4];
        tokio::time::timeout(Duration::from_secs(10), self.s.read_exact(&mut h))
            .await
            .expect("an answer within 10 s")
            .expect("a packet header");
        let n = usize::from(h[0]) | usize::from(h[1]) << 8 | usize::from(h[2]) << 16;
        let mut p = vec![0; n];
        self.s.read_exact(&mut p).await.unwrap();
        (h[3], p)
    }

    async fn send(&mut self, seq: u8, payload: &[u8]) {
        let mut out = Vec::new();
        packet::put(&mut out, seq, payload);
        self.s.write_all(&out).await.unwrap();
    }

    /// A command, and its answer's packets up to the first OK, ERR or EOF.
    async fn command(&mut self, payload: &[u8]) -> Vec<Vec<u8>> {
        self.send(0, payload).await;
        let mut out = Vec::new();
        loop {
            let (_, p) = self.read().await;
            let end = matches!(p.first(), Some(0x00 | 0xFF)) || wire::is_eof(&p, false);
            out.push(p);
            if end {
                return out;
            }
        }
    }

    async fn select_one(&mut self) {
        self.send(0, b"\x03select 1").await;
        let (_, count) = self.read().await;
        assert_eq!(count, [1], "one column");
        let (_, _def) = self.read().await;
        let (_, eof) = self.read().await;
        assert!(wire::is_eof(&eof, false));
        let (_, row) = self.read().await;
        assert_eq!(row, [1, b'1']);
        let (_, eof) = self.read().await;
        assert!(wire::is_eof(&eof, false));
    }
}

fn err_code(p: &[u8]) -> u16 {
    assert_eq!(p[0], 0xFF, "an ERR: {p:?}");
    u16::from_le_bytes([p[1], p[2]])
}

async fn login(addr: std::net::SocketAddr) -> Raw {
    let mut raw = Raw {
        s: TcpStream::connect(addr).await.unwrap(),
    };
    let (_, hello) = raw.read().await;
    assert_eq!(hello[0], 10);
    // Protocol 4.1 without CLIENT_DEPRECATE_EOF (old-style EOF packets), cleartext password.
    let c = caps::PROTOCOL_41
        | caps::SECURE_CONNECTION
        | caps::PLUGIN_AUTH
        | caps::PLUGIN_AUTH_LENENC
        | caps::CONNECT_WITH_DB
        | caps::MULTI_RESULTS;
    let mut p = Vec::new();
    p.extend_from_slice(&c.to_le_bytes());
    p.extend_from_slice(&(1u32 << 24).to_le_bytes());
    p.push(45);
    p.extend_from_slice(&[0; 23]);
    p.extend_from_slice(b"agent\0");
    wire::put_lenenc_bytes(&mut p, format!("{}\0", common::AGENT_PASSWORD).as_bytes());
    p.extend_from_slice(b"shop\0mysql_clear_password\0");
    raw.send(1, &p).await;
    let (_, ok) = raw.read().await;
    assert_eq!(ok[0], 0x00, "logged in: {ok:?}");
    raw
}

fn config(dir: &std::path::Path, extra: &str) -> String {
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

#[tokio::test]
async fn idle_sessions_are_closed_and_shutdown_tells_idle_clients() {
    let dir = tempfile::tempdir().unwrap();
    let yaml = config(
        dir.path(),
        "limits: { idle_timeout: 1s }\nshutdown_grace: 5s",
    );
    let mut proxy = Proxy::start_mysql(dir, &yaml, Stages::default()).await;
    let addr = proxy.mysql.unwrap();
    // Idle past the timeout: ERR 4031, then the connection closes.
    let mut idle = login(addr).await;
    let (_, e) = idle.read().await;
    assert_eq!(err_code(&e), 4031);
    let mut rest = Vec::new();
    let n = tokio::time::timeout(Duration::from_secs(5), idle.s.read_to_end(&mut rest))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(n, 0, "closed");
    // Shutdown: an idle client is told (ERR 1053) and the daemon stops.
    let mut waiting = login(addr).await;
    waiting.select_one().await;
    let server = proxy.shutdown();
    let (_, e) = waiting.read().await;
    assert_eq!(err_code(&e), 1053);
    tokio::time::timeout(Duration::from_secs(10), server)
        .await
        .expect("the daemon stops")
        .unwrap()
        .unwrap();
}

#[tokio::test]
async fn rarely_used_commands_are_relayed_or_refused_and_the_connection_carries_on() {
    let dir = tempfile::tempdir().unwrap();
    let pw = dir.path().join("pw");
    std::fs::write(&pw, common::AGENT_PASSWORD).unwrap();
    let table = format!("cmd_{}", std::process::id());
    let yaml = format!(
        "
targets:
  - name: shop
    protocol: mysql
    address: 127.0.0.1:3306
    database: test
    user: root
    client_auth: {{ method: password, user: agent, password: {{ file: {pw} }} }}
",
        pw = pw.display()
    );
    let proxy = Proxy::start_mysql(dir, &yaml, Stages::default()).await;
    let mut raw = login(proxy.mysql.unwrap()).await;
    let create = format!(
        "\x03create or replace table {table} (id int, pan varchar(20) default '4111111111111111', doc blob)"
    );
    let r = raw.command(create.as_bytes()).await;
    assert_eq!(r[0][0], 0x00);

    // COM_STATISTICS: one line of text.
    raw.send(0, &[0x09]).await;
    let (_, stats) = raw.read().await;
    assert!(
        String::from_utf8_lossy(&stats).contains("Uptime"),
        "{stats:?}"
    );

    // COM_FIELD_LIST: the table's columns (with their default, masked), then EOF.
    let mut field_list = vec![0x04];
    field_list.extend_from_slice(table.as_bytes());
    field_list.push(0);
    let defs = raw.command(&field_list).await;
    assert_eq!(defs.len(), 4, "three columns and EOF");
    let pan = wire::parse_column(&defs[1]).unwrap();
    assert_eq!(pan.name, "pan");
    let text = String::from_utf8_lossy(&defs[1]);
    assert!(
        !text.contains("4111111111111111"),
        "the default is masked: {text}"
    );

    // COM_PING.
    let r = raw.command(&[0x0E]).await;
    assert_eq!(r[0][0], 0x00);

    // Prepared statements: PREPARE, SEND_LONG_DATA for the blob, EXECUTE, RESET, CLOSE.
    let prepare = format!("\x16insert into {table} (id, doc) values (?, ?)");
    raw.send(0, prepare.as_bytes()).await;
    let (_, ok) = raw.read().await;
    assert_eq!(ok[0], 0x00);
    let id = u32::from_le_bytes([ok[1], ok[2], ok[3], ok[4]]);
    let params = u16::from_le_bytes([ok[7], ok[8]]);
    assert_eq!(params, 2);
    for _ in 0..params {
        raw.read().await;
    }
    let (_, eof) = raw.read().await;
    assert!(wire::is_eof(&eof, false));
    let mut long = vec![0x18];
    long.extend_from_slice(&id.to_le_bytes());
    long.extend_from_slice(&1u16.to_le_bytes());
    long.extend_from_slice(b"long data, card 5555555555554444");
    raw.send(0, &long).await; // no answer
    let mut execute = vec![0x17];
    execute.extend_from_slice(&id.to_le_bytes());
    execute.push(0); // no cursor
    execute.extend_from_slice(&1u32.to_le_bytes());
    execute.push(0); // null bitmap
    execute.push(1); // new params bound
    execute.extend_from_slice(&[0x03, 0, 0xFC, 0]); // LONG, BLOB
    execute.extend_from_slice(&7i32.to_le_bytes()); // the blob came as long data
    let r = raw.command(&execute).await;
    assert_eq!(r[0][0], 0x00, "executed: {:?}", r[0]);
    let mut reset = vec![0x1A];
    reset.extend_from_slice(&id.to_le_bytes());
    let r = raw.command(&reset).await;
    assert_eq!(r[0][0], 0x00);
    let mut close = vec![0x19];
    close.extend_from_slice(&id.to_le_bytes());
    raw.send(0, &close).await; // no answer
    // Executing a closed (or never prepared) statement: refused by tollgate itself.
    let r = raw.command(&execute).await;
    assert_eq!(err_code(&r[0]), 1243);

    // The stored row comes back masked.
    raw.send(
        0,
        format!("\x03select doc from {table} where id = 7").as_bytes(),
    )
    .await;
    let (_, count) = raw.read().await;
    assert_eq!(count, [1]);
    raw.read().await;
    let (_, eof) = raw.read().await;
    assert!(wire::is_eof(&eof, false));
    let mut rows = Vec::new();
    loop {
        let (_, p) = raw.read().await;
        if wire::is_eof(&p, false) {
            break;
        }
        rows.extend_from_slice(&p);
    }
    let rows = String::from_utf8_lossy(&rows).into_owned();
    assert!(rows.contains("long data, card 555555******4444"), "{rows}");

    // Refused outright, each answered with an ERR; the connection carries on.
    for (payload, code) in [
        (&b"\x11agent\0"[..], 1227u16),
        (&b"\x12\x04\0\0\0\0\0\x01\0\0\0"[..], 1227),
        (&b"\x0A"[..], 1227),
        (&b"\x08\0"[..], 1227),
        (&b"\x60"[..], 1047),
    ] {
        raw.send(0, payload).await;
        let (_, e) = raw.read().await;
        assert_eq!(err_code(&e), code, "command 0x{:02x}", payload[0]);
        raw.select_one().await;
    }
    // A database another target would serve is not reachable by COM_INIT_DB.
    let r = raw.command(b"\x02mysql").await;
    assert_eq!(err_code(&r[0]), 1044);
    // The target's own name is, and is mapped to its database upstream.
    let r = raw.command(b"\x02shop").await;
    assert_eq!(r[0][0], 0x00, "{:?}", r[0]);
    raw.select_one().await;
    let r = raw
        .command(format!("\x03drop table {table}").as_bytes())
        .await;
    assert_eq!(r[0][0], 0x00);
    raw.send(0, &[0x01]).await;
}

/// Issue #19, item 8: a login that stalls past `startup_timeout` gets an ERR saying so (1159,
/// MySQL's "Got timeout reading communication packets"), then the connection closes; a prompt
/// login meanwhile is served.
#[tokio::test]
async fn a_stalled_login_is_told_it_timed_out() {
    let dir = tempfile::tempdir().unwrap();
    let yaml = config(dir.path(), "limits: { startup_timeout: 500ms }");
    let proxy = Proxy::start_mysql(dir, &yaml, Stages::default()).await;
    let addr = proxy.mysql.unwrap();
    let started = std::time::Instant::now();
    let mut silent = Raw {
        s: TcpStream::connect(addr).await.unwrap(),
    };
    let (seq, hello) = silent.read().await;
    assert_eq!((seq, hello[0]), (0, 10), "the greeting");
    let (seq, e) = silent.read().await;
    assert_eq!(seq, 1, "the ERR follows the greeting");
    assert_eq!(err_code(&e), 1159);
    assert_eq!(&e[3..9], b"#08S01");
    assert_eq!(
        String::from_utf8_lossy(&e[9..]),
        "Got timeout reading communication packets (tollgate: the login did not finish within startup_timeout (500ms))"
    );
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(450) && took < Duration::from_secs(3),
        "{took:?}"
    );
    let mut rest = Vec::new();
    let n = tokio::time::timeout(Duration::from_secs(5), silent.s.read_to_end(&mut rest))
        .await
        .expect("closed")
        .unwrap();
    assert_eq!(n, 0, "nothing after the ERR");
    login(addr).await.select_one().await;
}
