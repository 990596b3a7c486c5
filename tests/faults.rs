//! Issue #21: faults mid-stream end cleanly. A small TCP relay the test controls sits between
//! tollgate and the real server (PostgreSQL 127.0.0.1:5432, MariaDB 127.0.0.1:3306): it
//! closes the upstream connection in the middle of a result or a COPY, or stalls it (TCP open,
//! nothing sent). Each time the client gets the protocol's error, the session's end is
//! recorded with its reason, and other connections and the daemon carry on. The audit store on
//! a full or read-only filesystem (a size-limited tmpfs) refuses statements with 58030 and
//! recovers.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::time::{Duration, Instant};

use common::{Proxy, Raw, error_field, frame, startup_packet};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tollgate::audit::store::Location;
use tollgate::audit::writer::Recorder;
use tollgate::audit::{Store, kind};
use tollgate::pipeline::Stages;
use tollgate::protocol::mysql::handshake::caps;
use tollgate::protocol::mysql::{packet, wire};

/// What the relay does to the connections it carries, from the moment it is set.
#[derive(Default)]
struct Faults {
    /// Bytes the server may still send before the relay closes both sides (< 0: no limit).
    server_budget: AtomicI64,
    /// Bytes the client may still send before the relay closes both sides (< 0: no limit).
    client_budget: AtomicI64,
    /// The server's bytes are no longer passed on (both sockets stay open).
    stall: AtomicBool,
}

/// A TCP relay in front of `upstream` whose faults the test switches on.
struct Relay {
    addr: SocketAddr,
    faults: Arc<Faults>,
}

impl Relay {
    async fn start(upstream: &str) -> Relay {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let faults = Arc::new(Faults::default());
        faults.server_budget.store(-1, Ordering::Relaxed);
        faults.client_budget.store(-1, Ordering::Relaxed);
        let upstream = upstream.to_owned();
        let f = Arc::clone(&faults);
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let Ok(server) = TcpStream::connect(&upstream).await else {
                    continue;
                };
                let f = Arc::clone(&f);
                tokio::spawn(async move {
                    let (crd, cwr) = client.into_split();
                    let (srd, swr) = server.into_split();
                    let up = pump(crd, swr, Arc::clone(&f), false);
                    let down = pump(srd, cwr, f, true);
                    // Either direction ending (or cut) closes both.
                    tokio::select! { _ = up => {}, _ = down => {} }
                });
            }
        });
        Relay { addr, faults }
    }

    /// Closes the connections once the server has sent `bytes` more.
    fn close_after_server_bytes(&self, bytes: i64) {
        self.faults.server_budget.store(bytes, Ordering::SeqCst);
    }

    /// Closes the connections once the client has sent `bytes` more.
    fn close_after_client_bytes(&self, bytes: i64) {
        self.faults.client_budget.store(bytes, Ordering::SeqCst);
    }

    fn stall(&self) {
        self.faults.stall.store(true, Ordering::SeqCst);
    }
}

async fn pump(
    mut rd: tokio::net::tcp::OwnedReadHalf,
    mut wr: tokio::net::tcp::OwnedWriteHalf,
    faults: Arc<Faults>,
    from_server: bool,
) {
    let budget = if from_server {
        &faults.server_budget
    } else {
        &faults.client_budget
    };
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = match rd.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        if from_server && faults.stall.load(Ordering::SeqCst) {
            // Hold everything: the connection stays open and silent.
            std::future::pending::<()>().await;
        }
        let left = budget.load(Ordering::SeqCst);
        if left >= 0 {
            let pass = (left as usize).min(n);
            budget.store(left - pass as i64, Ordering::SeqCst);
            let _ = wr.write_all(&buf[..pass]).await;
            if pass < n {
                budget.store(-1, Ordering::SeqCst);
                // Cut: both sockets are dropped when this returns.
                return;
            }
            continue;
        }
        if wr.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}

struct Setup {
    proxy: Proxy,
    relay: Relay,
    recorder: Recorder,
    db: std::path::PathBuf,
}

/// tollgate with an audit store, PostgreSQL targets `faulty` (through a relay) and `plain`
/// (direct), and `limits` merged into its config.
async fn setup_pg(limits: &str) -> Setup {
    setup_pg_with_store(limits, None).await
}

/// [`setup_pg`] with the audit store's SQLite file at `db` (else in the test's folder).
async fn setup_pg_with_store(limits: &str, db: Option<&std::path::Path>) -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let relay = Relay::start("127.0.0.1:5432").await;
    let db = db.map_or_else(|| dir.path().join("audit.db"), |d| d.to_owned());
    let (recorder, db, audit) = audit_store(dir.path(), &db);
    let pw = dir.path().join("agent-password");
    std::fs::write(&pw, common::AGENT_PASSWORD).unwrap();
    let yaml = format!(
        "
limits: {{ {limits} }}
{audit}
targets:
  - name: faulty
    address: {relay}
    database: test
    user: postgres
    client_auth: {{ method: password, user: agent, password: {{ file: {pw} }} }}
  - name: plain
    address: 127.0.0.1:5432
    database: test
    user: postgres
    client_auth: {{ method: password, user: agent, password: {{ file: {pw} }} }}
",
        relay = relay.addr,
        pw = pw.display()
    );
    let stages = Stages {
        record: Some(recorder.clone()),
        ..Stages::default()
    };
    Setup {
        proxy: Proxy::start_yaml(dir, &yaml, stages).await,
        relay,
        recorder,
        db,
    }
}

/// A recorder on a SQLite store at `db`, and the config's `audit` section for it.
fn audit_store(
    dir: &std::path::Path,
    db: &std::path::Path,
) -> (Recorder, std::path::PathBuf, String) {
    let (signer, key_file) = common::signing_key(dir);
    let recorder = Recorder::start(
        common::recorder_settings(Location::Sqlite(db.to_owned()), "test"),
        signer,
    )
    .unwrap();
    let audit = format!(
        "audit:\n  sqlite: {}\n  signing_key: {{ file: {} }}\n  results: full\n",
        db.display(),
        key_file.display()
    );
    (recorder, db.to_owned(), audit)
}

/// Logs in to `database` with the cleartext password.
async fn pg_login(addr: SocketAddr, database: &str) -> Raw {
    let mut raw = Raw::connect(addr).await;
    raw.send(&startup_packet(&[
        ("user", "agent"),
        ("database", database),
    ]))
    .await;
    raw.read().await.expect("auth request");
    raw.send(&frame(
        b'p',
        format!("{}\0", common::AGENT_PASSWORD).as_bytes(),
    ))
    .await;
    raw.until_ready().await;
    raw
}

/// The messages up to the end of the stream; fails if it does not end within 10 s.
async fn pg_until_closed(raw: &mut Raw) -> Vec<(u8, Vec<u8>)> {
    let mut seen = Vec::new();
    while let Some(m) = raw.read().await {
        seen.push(m);
    }
    seen
}

fn last_error(seen: &[(u8, Vec<u8>)]) -> (String, String) {
    let (_, body) = seen
        .iter()
        .rev()
        .find(|(t, _)| *t == b'E')
        .unwrap_or_else(|| panic!("an ErrorResponse among {} messages", seen.len()));
    (
        error_field(body, b'C').unwrap_or_default(),
        error_field(body, b'M').unwrap_or_default(),
    )
}

/// Other connections and new ones are served: the fault stayed on its connection.
async fn pg_still_serves(s: &Setup, other: &mut Raw) {
    other.send(&frame(b'Q', b"select 'other'\0")).await;
    let seen = other.until_ready().await;
    assert!(
        seen.iter()
            .any(|(t, b)| *t == b'D' && b.ends_with(b"other"))
    );
    let mut fresh = pg_login(s.proxy.addr, "plain").await;
    fresh.send(&frame(b'Q', b"select 'fresh'\0")).await;
    let seen = fresh.until_ready().await;
    assert!(
        seen.iter()
            .any(|(t, b)| *t == b'D' && b.ends_with(b"fresh"))
    );
}

/// The reasons recorded in the store's `session_end` records.
async fn ends_recorded(s: &Setup) -> Vec<String> {
    s.recorder.flush().await.unwrap();
    let mut store = Store::open(&Location::Sqlite(s.db.clone()), false)
        .await
        .unwrap();
    let ends = store
        .of_types(&[kind::SESSION_END], "", "9999")
        .await
        .unwrap();
    store.close().await;
    ends.into_iter().map(|r| r.body).collect()
}

/// Waits (up to 5 s) until a session end naming `reason` is recorded.
async fn assert_end_recorded(s: &Setup, reason: &str) {
    for _ in 0..50 {
        if ends_recorded(s).await.iter().any(|b| b.contains(reason)) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("no session_end with {reason}: {:?}", ends_recorded(s).await);
}

#[tokio::test]
async fn pg_upstream_closed_mid_result() {
    let s = setup_pg("").await;
    let mut other = pg_login(s.proxy.addr, "plain").await;
    let mut agent = pg_login(s.proxy.addr, "faulty").await;
    s.relay.close_after_server_bytes(200_000);
    agent
        .send(&frame(
            b'Q',
            b"select g, repeat('x', 100) from generate_series(1, 100000) g\0",
        ))
        .await;
    let seen = pg_until_closed(&mut agent).await;
    let rows = seen.iter().filter(|(t, _)| *t == b'D').count();
    assert!(rows > 100 && rows < 100_000, "rows before the cut: {rows}");
    assert!(!seen.iter().any(|(t, _)| *t == b'Z'), "no ReadyForQuery");
    let (code, message) = last_error(&seen);
    assert_eq!(code, "08006", "{message}");
    assert!(message.contains("closed the connection"), "{message}");
    pg_still_serves(&s, &mut other).await;
    assert_end_recorded(&s, "ServerClosed").await;
}

#[tokio::test]
async fn pg_upstream_closed_mid_copy() {
    let s = setup_pg("").await;
    let mut other = pg_login(s.proxy.addr, "plain").await;
    // COPY TO STDOUT: the server's stream is cut.
    let mut agent = pg_login(s.proxy.addr, "faulty").await;
    s.relay.close_after_server_bytes(100_000);
    agent
        .send(&frame(
            b'Q',
            b"copy (select g, repeat('y', 100) from generate_series(1, 100000) g) to stdout\0",
        ))
        .await;
    let seen = pg_until_closed(&mut agent).await;
    assert!(seen.iter().any(|(t, _)| *t == b'H'), "CopyOutResponse");
    assert!(seen.iter().filter(|(t, _)| *t == b'd').count() > 100);
    assert_eq!(last_error(&seen).0, "08006");
    // COPY FROM STDIN: the client's stream is cut on its way to the server.
    let mut agent = pg_login(s.proxy.addr, "faulty").await;
    agent
        .send(&frame(b'Q', b"create temp table sink (g int, t text)\0"))
        .await;
    agent.until_ready().await;
    agent.send(&frame(b'Q', b"copy sink from stdin\0")).await;
    let (tag, _) = agent.read().await.expect("CopyInResponse");
    assert_eq!(tag, b'G');
    s.relay.close_after_client_bytes(50_000);
    let line = format!("1\t{}\n", "z".repeat(1000));
    let mut answer = Vec::new();
    'send: for _ in 0..200 {
        if agent
            .stream
            .write_all(&frame(b'd', line.as_bytes()))
            .await
            .is_err()
        {
            break;
        }
        // Stop sending as soon as tollgate says something.
        let mut chunk = [0u8; 4096];
        match tokio::time::timeout(Duration::from_millis(5), agent.stream.read(&mut chunk)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break 'send,
            Ok(Ok(n)) => {
                answer.extend_from_slice(&chunk[..n]);
                break 'send;
            }
            Err(_) => {}
        }
    }
    let mut rest = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), agent.stream.read_to_end(&mut rest)).await;
    answer.extend_from_slice(&rest);
    assert_eq!(answer.first(), Some(&b'E'), "an ErrorResponse: {answer:?}");
    assert_eq!(error_field(&answer[5..], b'C').as_deref(), Some("08006"));
    pg_still_serves(&s, &mut other).await;
    assert_end_recorded(&s, "ServerClosed").await;
}

#[tokio::test]
async fn pg_upstream_stalled_past_the_timeout() {
    let s = setup_pg("upstream_timeout: 1s").await;
    let mut other = pg_login(s.proxy.addr, "plain").await;
    let mut agent = pg_login(s.proxy.addr, "faulty").await;
    // An idle session is not a stall: nothing runs on it.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    agent.send(&frame(b'Q', b"select 1\0")).await;
    agent.until_ready().await;
    // Nor is a COPY FROM STDIN whose client pauses: the server waits for the client.
    agent
        .send(&frame(b'Q', b"create temp table sink (g int)\0"))
        .await;
    agent.until_ready().await;
    agent.send(&frame(b'Q', b"copy sink from stdin\0")).await;
    assert_eq!(agent.read().await.expect("CopyInResponse").0, b'G');
    agent.send(&frame(b'd', b"1\n")).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    agent.send(&frame(b'd', b"2\n")).await;
    agent.send(&frame(b'c', b"")).await;
    let seen = agent.until_ready().await;
    assert!(
        seen.iter()
            .any(|(t, b)| *t == b'C' && b.starts_with(b"COPY 2")),
        "{seen:?}"
    );
    s.relay.stall();
    let started = Instant::now();
    agent.send(&frame(b'Q', b"select 2\0")).await;
    let seen = pg_until_closed(&mut agent).await;
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(900) && waited < Duration::from_millis(2500),
        "cut after {waited:?}"
    );
    let (code, message) = last_error(&seen);
    assert_eq!(code, "08006", "{message}");
    assert!(message.contains("upstream_timeout"), "{message}");
    pg_still_serves(&s, &mut other).await;
    assert_end_recorded(&s, "ServerStalled").await;
}

/// tollgate with an audit store and MySQL targets `faulty` (through a relay) and `shop`.
async fn setup_mysql(limits: &str) -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let relay = Relay::start("127.0.0.1:3306").await;
    let (recorder, db, audit) = audit_store(dir.path(), &dir.path().join("audit.db"));
    let pw = dir.path().join("pw");
    std::fs::write(&pw, common::AGENT_PASSWORD).unwrap();
    let yaml = format!(
        "
limits: {{ {limits} }}
{audit}
targets:
  - name: faulty
    protocol: mysql
    address: {relay}
    database: test
    user: root
    client_auth: {{ method: password, user: agent, password: {{ file: {pw} }} }}
  - name: shop
    protocol: mysql
    address: 127.0.0.1:3306
    database: test
    user: root
    client_auth: {{ method: password, user: agent, password: {{ file: {pw} }} }}
",
        relay = relay.addr,
        pw = pw.display()
    );
    let stages = Stages {
        record: Some(recorder.clone()),
        ..Stages::default()
    };
    Setup {
        proxy: Proxy::start_mysql(dir, &yaml, stages).await,
        relay,
        recorder,
        db,
    }
}

struct My {
    s: TcpStream,
}

impl My {
    async fn login(addr: SocketAddr, database: &str) -> My {
        let mut my = My {
            s: TcpStream::connect(addr).await.unwrap(),
        };
        my.read().await.expect("greeting");
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
        p.extend_from_slice(database.as_bytes());
        p.extend_from_slice(b"\0mysql_clear_password\0");
        my.send(1, &p).await;
        let ok = my.read().await.expect("login answer");
        assert_eq!(ok[0], 0x00, "logged in: {ok:?}");
        my
    }

    async fn send(&mut self, seq: u8, payload: &[u8]) {
        let mut out = Vec::new();
        packet::put(&mut out, seq, payload);
        self.s.write_all(&out).await.unwrap();
    }

    async fn read(&mut self) -> Option<Vec<u8>> {
        let mut h = [0u8; 4];
        tokio::time::timeout(Duration::from_secs(10), self.s.read_exact(&mut h))
            .await
            .expect("an answer within 10 s")
            .ok()?;
        let n = usize::from(h[0]) | usize::from(h[1]) << 8 | usize::from(h[2]) << 16;
        let mut p = vec![0; n];
        self.s.read_exact(&mut p).await.ok()?;
        Some(p)
    }

    /// Sends a query and reads packets until the connection ends: (packets, last ERR code).
    async fn query_until_closed(&mut self, sql: &str) -> (usize, Option<(u16, String)>) {
        let mut payload = vec![0x03];
        payload.extend_from_slice(sql.as_bytes());
        self.send(0, &payload).await;
        let (mut n, mut err) = (0, None);
        while let Some(p) = self.read().await {
            n += 1;
            if p.first() == Some(&0xFF) {
                err = Some((
                    u16::from_le_bytes([p[1], p[2]]),
                    String::from_utf8_lossy(&p[9..]).into_owned(),
                ));
            }
        }
        (n, err)
    }

    async fn select_one(&mut self) {
        self.send(0, b"\x03select 'still'").await;
        for _ in 0..3 {
            self.read().await.expect("result set");
        }
        assert_eq!(self.read().await.expect("row"), b"\x05still");
        self.read().await.expect("EOF");
    }
}

#[tokio::test]
async fn mysql_upstream_closed_mid_result_and_stalled() {
    let s = setup_mysql("upstream_timeout: 1s").await;
    let mut other = My::login(s.proxy.mysql.unwrap(), "shop").await;
    let mut agent = My::login(s.proxy.mysql.unwrap(), "faulty").await;
    s.relay.close_after_server_bytes(100_000);
    let (packets, err) = agent
        .query_until_closed("select seq, repeat('x', 100) from seq_1_to_100000")
        .await;
    assert!(packets > 100, "rows before the cut: {packets}");
    let (code, message) = err.expect("an ERR before the end");
    assert_eq!(code, 2013, "{message}");
    other.select_one().await;
    assert_end_recorded(&s, "ServerClosed").await;

    let mut agent = My::login(s.proxy.mysql.unwrap(), "faulty").await;
    s.relay.stall();
    let started = Instant::now();
    let (_, err) = agent.query_until_closed("select 1").await;
    let waited = started.elapsed();
    let (code, message) = err.expect("an ERR before the end");
    assert_eq!(code, 2013, "{message}");
    assert!(message.contains("upstream_timeout"), "{message}");
    assert!(
        waited >= Duration::from_millis(900) && waited < Duration::from_millis(2500),
        "cut after {waited:?}"
    );
    other.select_one().await;
    My::login(s.proxy.mysql.unwrap(), "shop")
        .await
        .select_one()
        .await;
    assert_end_recorded(&s, "ServerStalled").await;
}

/// A small ext4 filesystem on a loop device, mounted for the test and unmounted (lazily: the
/// audit writer may still hold its files) when dropped.
struct SmallDisk {
    mount: std::path::PathBuf,
    image: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

impl SmallDisk {
    /// `None` (with the reason) when this machine cannot mount one (not root, no loop device).
    fn mount(megabytes: u32) -> Result<SmallDisk, String> {
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let image = dir.path().join("disk.img");
        let mount = dir.path().join("mnt");
        std::fs::create_dir(&mount).map_err(|e| e.to_string())?;
        let run = |cmd: &str, args: &[&std::ffi::OsStr]| -> Result<(), String> {
            let out = std::process::Command::new(cmd)
                .args(args)
                .output()
                .map_err(|e| format!("{cmd}: {e}"))?;
            if out.status.success() {
                Ok(())
            } else {
                Err(format!(
                    "{cmd}: {}",
                    String::from_utf8_lossy(&out.stderr).trim()
                ))
            }
        };
        std::fs::File::create(&image)
            .and_then(|f| f.set_len(u64::from(megabytes) << 20))
            .map_err(|e| e.to_string())?;
        run(
            "mkfs.ext4",
            &[
                "-q".as_ref(),
                "-F".as_ref(),
                "-m".as_ref(),
                "0".as_ref(),
                image.as_os_str(),
            ],
        )?;
        run(
            "mount",
            &[
                "-o".as_ref(),
                "loop,errors=remount-ro".as_ref(),
                image.as_os_str(),
                mount.as_os_str(),
            ],
        )?;
        Ok(SmallDisk {
            mount,
            image,
            _dir: dir,
        })
    }

    /// Fills the filesystem; returns the filler to delete.
    fn fill(&self) -> std::path::PathBuf {
        use std::io::Write;
        let path = self.mount.join("filler");
        let mut f = std::fs::File::create(&path).unwrap();
        let chunk = vec![0u8; 64 * 1024];
        while f.write_all(&chunk).and_then(|_| f.sync_data()).is_ok() {}
        path
    }

    /// Makes the filesystem fail as a disk with errors does: ext4 remounts it read-only.
    fn fail_read_only(&self) {
        let source = std::process::Command::new("findmnt")
            .args(["-n", "-o", "SOURCE"])
            .arg(&self.mount)
            .output()
            .unwrap();
        let device = String::from_utf8_lossy(&source.stdout).trim().to_owned();
        let name = device.rsplit('/').next().unwrap().to_owned();
        std::fs::write(format!("/sys/fs/ext4/{name}/trigger_fs_error"), "1")
            .expect("ext4 error trigger");
        assert!(
            std::fs::File::create(self.mount.join("probe")).is_err(),
            "the filesystem is read-only now"
        );
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.mount)
            .status();
        let _ = std::fs::remove_file(&self.image);
    }
}

/// Runs statements (each recording a sizeable result) until one gets `sqlstate` or 10 s pass.
async fn until_statements_get(raw: &mut Raw, sqlstate: Option<&str>) -> bool {
    for _ in 0..100 {
        raw.send(&frame(
            b'Q',
            b"select g, repeat('r', 20000) from generate_series(1, 20) g\0",
        ))
        .await;
        let seen = raw.until_ready().await;
        let error = seen
            .iter()
            .find(|(t, _)| *t == b'E')
            .and_then(|(_, b)| error_field(b, b'C'));
        if error.as_deref() == sqlstate {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

#[tokio::test]
async fn audit_store_on_a_full_then_read_only_filesystem() {
    let disk = match SmallDisk::mount(32) {
        Ok(d) => d,
        Err(why) => {
            eprintln!(
                "skipped: cannot mount a small filesystem for the audit store ({why}); this test needs root and a loop device"
            );
            return;
        }
    };
    let s = setup_pg_with_store("", Some(&disk.mount.join("audit.db"))).await;
    let mut agent = pg_login(s.proxy.addr, "plain").await;
    let mut other = pg_login(s.proxy.addr, "plain").await;
    assert!(until_statements_get(&mut agent, None).await);

    // Disk full: statements are refused (58030), never forwarded unrecorded; the session
    // stays open, and once there is room again they run.
    let filler = disk.fill();
    assert!(
        until_statements_get(&mut agent, Some("58030")).await,
        "statements refused while the disk is full"
    );
    std::fs::remove_file(&filler).unwrap();
    assert!(
        until_statements_get(&mut agent, None).await,
        "statements run again once there is room"
    );
    assert!(until_statements_get(&mut other, None).await);

    // The filesystem turns read-only (as ext4 does on a disk error): refused again, and new
    // sessions cannot start (FATAL 58030), while the daemon keeps answering.
    disk.fail_read_only();
    assert!(
        until_statements_get(&mut agent, Some("58030")).await,
        "statements refused on a read-only store"
    );
    for _ in 0..2 {
        let mut late = Raw::connect(s.proxy.addr).await;
        late.send(&startup_packet(&[("user", "agent"), ("database", "plain")]))
            .await;
        late.read().await.expect("auth request");
        late.send(&frame(
            b'p',
            format!("{}\0", common::AGENT_PASSWORD).as_bytes(),
        ))
        .await;
        // The session that cannot be recorded never starts: FATAL 58030 in place of its
        // greeting.
        let seen = pg_until_closed(&mut late).await;
        assert_eq!(seen.len(), 1, "only the error: {seen:?}");
        assert_eq!(last_error(&seen).0, "58030");
    }
    // The refusals are themselves answered in the protocol: the session is still usable for
    // the moment the store comes back, and nothing crashed.
    agent.send(&frame(b'Q', b"select 1\0")).await;
    agent.until_ready().await;
}
