//! Shared by the integration tests: a tollgate started in-process on a free port in front of
//! the machine's real PostgreSQL (127.0.0.1:5432), and a raw protocol client.
#![allow(dead_code)]

pub mod approvals;
pub mod cli;
pub mod identity;
pub mod mysql;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tollgate::config::Config;
use tollgate::daemon::Daemon;
use tollgate::pipeline::Stages;

pub const AGENT_PASSWORD: &str = "agent-secret";

/// Targets every test config has: `test` (SCRAM client login) and `plain` (cleartext client
/// login, for raw-protocol tests), both in front of the local `test` database.
pub fn targets(dir: &std::path::Path) -> String {
    let pw = dir.join("agent-password");
    std::fs::write(&pw, format!("{AGENT_PASSWORD}\n")).unwrap();
    format!(
        "
targets:
  - name: test
    address: 127.0.0.1:5432
    user: postgres
    client_auth: {{ method: scram-sha-256, user: agent, password: {{ file: {pw} }} }}
  - name: plain
    address: 127.0.0.1:5432
    database: test
    user: postgres
    client_auth: {{ method: password, user: agent, password: {{ file: {pw} }} }}
",
        pw = pw.display()
    )
}

pub struct Proxy {
    pub addr: SocketAddr,
    /// The MySQL listener, when started with one.
    pub mysql: Option<SocketAddr>,
    pub dir: tempfile::TempDir,
    shutdown: Option<oneshot::Sender<()>>,
    pub handle: Option<JoinHandle<std::io::Result<()>>>,
}

impl Proxy {
    /// Starts tollgate with the default targets and `extra` YAML (top-level keys).
    pub async fn start(extra: &str) -> Proxy {
        Proxy::start_with(extra, "", Stages::default()).await
    }

    /// `extra_targets` is appended to the target list (YAML list items).
    pub async fn start_with(extra: &str, extra_targets: &str, stages: Stages) -> Proxy {
        let dir = tempfile::tempdir().unwrap();
        let yaml = format!("{extra}\n{}{extra_targets}", targets(dir.path()));
        Proxy::start_yaml(dir, &yaml, stages).await
    }

    pub async fn start_yaml(dir: tempfile::TempDir, yaml: &str, stages: Stages) -> Proxy {
        Proxy::start_listeners(dir, yaml, stages, false).await
    }

    /// Starts tollgate with a MySQL listener too (on its own free port).
    pub async fn start_mysql(dir: tempfile::TempDir, yaml: &str, stages: Stages) -> Proxy {
        Proxy::start_listeners(dir, yaml, stages, true).await
    }

    async fn start_listeners(
        dir: tempfile::TempDir,
        yaml: &str,
        stages: Stages,
        mysql: bool,
    ) -> Proxy {
        let config = Arc::new(Config::parse(yaml, "test.yaml").expect("test config"));
        let daemon = Daemon::with_stages(config, stages).expect("daemon");
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let my = if mysql {
            Some(TcpListener::bind("127.0.0.1:0").await.unwrap())
        } else {
            None
        };
        let mysql = my.as_ref().map(|l| l.local_addr().unwrap());
        let (tx, rx) = oneshot::channel();
        let handle = tokio::spawn(async move {
            daemon
                .serve(listener, my, async {
                    let _ = rx.await;
                })
                .await
        });
        Proxy {
            addr,
            mysql,
            dir,
            shutdown: Some(tx),
            handle: Some(handle),
        }
    }

    pub fn url(&self, database: &str) -> String {
        format!(
            "host=127.0.0.1 port={} user=agent password={AGENT_PASSWORD} dbname={database} sslmode=disable",
            self.addr.port()
        )
    }

    /// A tokio-postgres client through tollgate, its connection driven in the background.
    pub async fn connect(&self) -> tokio_postgres::Client {
        let (client, connection) =
            tokio_postgres::connect(&self.url("test"), tokio_postgres::NoTls)
                .await
                .expect("connect through tollgate");
        tokio::spawn(connection);
        client
    }

    /// A client whose notices and notifications arrive on the returned channel.
    pub async fn connect_with_messages(
        &self,
    ) -> (
        tokio_postgres::Client,
        tokio::sync::mpsc::UnboundedReceiver<tokio_postgres::AsyncMessage>,
    ) {
        use futures_util::StreamExt;
        let (client, mut connection) =
            tokio_postgres::connect(&self.url("test"), tokio_postgres::NoTls)
                .await
                .expect("connect through tollgate");
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let stream = futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
        tokio::spawn(stream.for_each(move |m| {
            if let Ok(m) = m {
                let _ = tx.send(m);
            }
            futures_util::future::ready(())
        }));
        (client, rx)
    }

    /// Begins graceful shutdown and returns the server task to await.
    pub fn shutdown(&mut self) -> JoinHandle<std::io::Result<()>> {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        self.handle.take().expect("already shut down")
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}

/// A client speaking the protocol byte by byte, for what real drivers never send.
pub struct Raw {
    pub stream: TcpStream,
    buf: Vec<u8>,
}

pub fn frame(tag: u8, body: &[u8]) -> Vec<u8> {
    let mut v = vec![tag];
    v.extend_from_slice(&((body.len() + 4) as i32).to_be_bytes());
    v.extend_from_slice(body);
    v
}

pub fn startup_packet(params: &[(&str, &str)]) -> Vec<u8> {
    tollgate::protocol::pg::messages::encode_startup(params)
}

impl Raw {
    pub async fn connect(addr: SocketAddr) -> Raw {
        Raw {
            stream: TcpStream::connect(addr).await.unwrap(),
            buf: Vec::new(),
        }
    }

    /// A client over an already connected socket (from a chosen source address, say).
    pub fn from_stream(stream: TcpStream) -> Raw {
        Raw {
            stream,
            buf: Vec::new(),
        }
    }

    /// Connects and logs in to the `plain` target with a cleartext password.
    pub async fn login(addr: SocketAddr) -> Raw {
        let mut raw = Raw::connect(addr).await;
        raw.send(&startup_packet(&[("user", "agent"), ("database", "plain")]))
            .await;
        let (tag, body) = raw.read().await.expect("auth request");
        assert_eq!((tag, &body[..]), (b'R', &3i32.to_be_bytes()[..]));
        raw.send(&frame(b'p', format!("{AGENT_PASSWORD}\0").as_bytes()))
            .await;
        raw.until_ready().await;
        raw
    }

    pub async fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).await.unwrap();
    }

    /// The next message, or `None` at end of stream; fails the test after 10 s.
    pub async fn read(&mut self) -> Option<(u8, Vec<u8>)> {
        loop {
            if self.buf.len() >= 5 {
                let len = i32::from_be_bytes(self.buf[1..5].try_into().unwrap()) as usize;
                if self.buf.len() > len {
                    let msg: Vec<u8> = self.buf.drain(..len + 1).collect();
                    return Some((msg[0], msg[5..].to_vec()));
                }
            }
            let mut chunk = [0u8; 8192];
            let n = tokio::time::timeout(Duration::from_secs(10), self.stream.read(&mut chunk))
                .await
                .expect("no answer within 10 s")
                .unwrap_or(0);
            if n == 0 {
                return None;
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    /// Reads up to and including ReadyForQuery; returns the messages before it.
    pub async fn until_ready(&mut self) -> Vec<(u8, Vec<u8>)> {
        let mut seen = Vec::new();
        loop {
            let (tag, body) = self
                .read()
                .await
                .expect("connection closed before ReadyForQuery");
            if tag == b'Z' {
                return seen;
            }
            seen.push((tag, body));
        }
    }
}

/// A field of an ErrorResponse/NoticeResponse body.
pub fn error_field(body: &[u8], code: u8) -> Option<String> {
    let mut rest = body;
    while let Some((&c, tail)) = rest.split_first() {
        if c == 0 {
            return None;
        }
        let end = tail.iter().position(|&b| b == 0)?;
        if c == code {
            return Some(String::from_utf8_lossy(&tail[..end]).into_owned());
        }
        rest = &tail[end + 1..];
    }
    None
}

/// The SQLSTATE of a tokio-postgres error (from the server or from tollgate).
pub fn sqlstate(e: &tokio_postgres::Error) -> String {
    e.code()
        .map(|c| c.code().to_owned())
        .unwrap_or_else(|| format!("no SQLSTATE: {e}"))
}

/// Every byte of a SQLite audit store's files, with the store's own digests (record hashes,
/// chain links, checkpoint hashes and signatures) blanked: hex digests can hold digit runs that
/// read as card numbers. Everything else, records' content included, is left to be scanned.
pub async fn audit_store_bytes(db: &std::path::Path) -> Vec<u8> {
    use std::collections::HashSet;
    use tollgate::audit::Store;
    use tollgate::audit::store::Location;
    let mut all = Vec::new();
    let name = db.file_name().unwrap().to_string_lossy().into_owned();
    for e in std::fs::read_dir(db.parent().unwrap()).unwrap() {
        let p = e.unwrap().path();
        if p.file_name().unwrap().to_string_lossy().starts_with(&name) {
            all.extend(std::fs::read(&p).unwrap());
        }
    }
    let mut digests: HashSet<Vec<u8>> = HashSet::new();
    let mut store = Store::open(&Location::Sqlite(db.to_owned()), false)
        .await
        .unwrap();
    for chain in store.chains().await.unwrap() {
        let mut after = 0;
        loop {
            let page = store.page(&chain, after, 1000).await.unwrap();
            let Some(last) = page.last() else { break };
            after = last.seq;
            digests.extend(page.iter().map(|r| r.hash.clone().into_bytes()));
        }
        let mut cp_after = None;
        loop {
            let page = store.checkpoint_page(&chain, cp_after, 1000).await.unwrap();
            let Some(last) = page.last() else { break };
            cp_after = Some(last.seq);
            for c in &page {
                digests.insert(c.hash.clone().into_bytes());
                digests.insert(c.signature.clone().into_bytes());
            }
        }
    }
    store.close().await;
    // Maximal runs of lowercase hex that are known digests become 'x'.
    let hex = |b: u8| b.is_ascii_digit() || (b'a'..=b'f').contains(&b);
    let mut i = 0;
    while i < all.len() {
        if !hex(all[i]) {
            i += 1;
            continue;
        }
        let start = i;
        while i < all.len() && hex(all[i]) {
            i += 1;
        }
        if digests.contains(&all[start..i]) {
            all[start..i].fill(b'x');
        }
    }
    all
}

/// Recorder settings the tests share: a store at `location`, chain `chain`, checkpoints every
/// 500 ms, no retention pruning, queues large enough that only a test that means to fill them
/// does. Change a field with `Settings { field: …, ..recorder_settings(…) }`.
pub fn recorder_settings(
    location: tollgate::audit::store::Location,
    chain: &str,
) -> tollgate::audit::writer::Settings {
    tollgate::audit::writer::Settings {
        location,
        chain: chain.into(),
        checkpoint_interval: Duration::from_millis(500),
        batch_size: 64,
        queue_size: 4096,
        queue_bytes: 4 << 20,
        queue_wait: Duration::from_secs(2),
        retention_days: 0,
        linger: Duration::from_millis(2),
    }
}

/// A fresh checkpoint signing key written to `dir/signing.pem`, and the signer it loads as.
pub fn signing_key(dir: &std::path::Path) -> (tollgate::audit::record::Signer, PathBuf) {
    use tollgate::audit::record::Signer;
    let file = dir.join("signing.pem");
    std::fs::write(&file, Signer::generate_pem()).unwrap();
    (
        Signer::from_pkcs8(&std::fs::read(&file).unwrap()).unwrap(),
        file,
    )
}
