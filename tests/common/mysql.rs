//! Helpers for the MySQL listener's tests: tollgate in front of the machine's MariaDB.
#![allow(unused_imports)]

use std::sync::Arc;
use std::time::Duration;

use super::Proxy;
use mysql_async::prelude::*;
use mysql_async::{Conn, OptsBuilder, SslOpts};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tollgate::admin::AdminState;
use tollgate::approval::Approvals;
use tollgate::audit::record::{PublicKey, Signer};
use tollgate::audit::store::Location;
use tollgate::audit::writer::{Recorder, Settings};
use tollgate::audit::{Store, verify};
use tollgate::auth::dev::{self, DevIssuer};
use tollgate::auth::oidc::Validator;
use tollgate::config::Config;
use tollgate::conn::policy_files::PolicyInspector;
use tollgate::pipeline::Stages;
use tollgate::policy::classify::SqlDialect;
use tollgate::policy::inspect::PolicyStage;

pub const PANS: &[&str] = &["4111111111111111", "5555555555554444", "378282246310005"];

pub struct Setup {
    pub proxy: Proxy,
    pub admin: String,
    pub issuer: Arc<DevIssuer>,
    pub recorder: Recorder,
    pub db: std::path::PathBuf,
    pub key: PublicKey,
    pub table: String,
    pub http: reqwest::Client,
}

/// A connection straight to MariaDB (not through tollgate), for fixtures.
pub async fn direct() -> Conn {
    Conn::new(
        OptsBuilder::default()
            .ip_or_hostname("127.0.0.1")
            .tcp_port(3306)
            .user(Some("root"))
            .db_name(Some("test")),
    )
    .await
    .expect("MariaDB on 127.0.0.1:3306")
}

pub async fn setup(name: &str) -> Setup {
    setup_with(name, "").await
}

/// `extra_targets`: YAML list items appended to the targets (`{dir}` is the test's folder).
pub async fn setup_with(name: &str, extra_targets: &str) -> Setup {
    setup_policy(name, extra_targets, None, true).await
}

/// As [`setup_with`], under the policy file `policy_file` instead of the test policy, and
/// without approvals when `approvals` is false (held statements are then refused).
pub async fn setup_policy(
    name: &str,
    extra_targets: &str,
    policy_file: Option<&std::path::Path>,
    approvals: bool,
) -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let extra_targets = extra_targets.replace("{dir}", &dir.path().display().to_string());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let admin = format!("http://{}", listener.local_addr().unwrap());
    let issuer_url = format!("{admin}/dev");
    let issuer = Arc::new(DevIssuer::open(dir.path(), &issuer_url).unwrap());
    let table = format!("my_{name}_{}", std::process::id());
    let mut d = direct().await;
    d.query_drop(format!(
        "drop table if exists {table};
         create table {table} (id bigint primary key, pan varchar(40), num bigint, amount decimal(22,2), doc json, note varchar(80), unique key (pan));
         insert into {table} values
           (1, '4111111111111111', 5555555555554444, 4111111111111111.00, '{{\"card\": \"378282246310005\"}}', 'call 4111 1111 1111 1111 now'),
           (2, 'none', 7, 1.50, '{{}}', 'plain')"
    ))
    .await
    .unwrap();
    drop(d);
    let policy = dir.path().join("policy.yaml");
    std::fs::write(
        &policy,
        format!(
            "default: deny
rules:
  - id: read
    match: {{ groups: [ai-agents], kinds: [read, session, transaction] }}
    action: allow
  - id: writes
    match: {{ groups: [ai-agents], kinds: [write], tables: [{table}] }}
    action: require_approval
    reason: data changes by agents are approved by a DBA
    approval: {{ group: dba, timeout: 60s }}
  - id: no-schema-change
    match: {{ kinds: [ddl] }}
    action: deny
    reason: schema changes go through migrations
  - id: operators
    match: {{ groups: [operators], kinds: [admin, read, write, call] }}
    action: allow
  - id: loaders
    match: {{ groups: [loaders], unparsed: true, kinds: [admin] }}
    action: allow
  - id: held-ops
    match: {{ groups: [held-ops], kinds: [write] }}
    action: require_approval
    approval: {{ group: dba, timeout: 60s }}
  - id: held-ops-admin
    match: {{ groups: [held-ops], kinds: [admin, read] }}
    action: allow
"
        ),
    )
    .unwrap();
    let ck = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let cert = dir.path().join("server.crt");
    let tls_key = dir.path().join("server.key");
    std::fs::write(&cert, ck.cert.pem()).unwrap();
    std::fs::write(&tls_key, ck.signing_key.serialize_pem()).unwrap();
    let yaml = format!(
        "
admin: {{ listen: 127.0.0.1:0 }}
approvals: {{ page_url: {admin}/approvals/ui }}
tls: {{ cert: {cert}, key: {tls_key} }}
masking:
  columns: [secret_pan]
identity:
  allow_plaintext_loopback: true
  failure_delay: 0s
  issuers:
    - issuer: {issuer_url}
      audiences: [{aud}]
      algorithms: [EdDSA]
targets:
  - name: test
    address: 127.0.0.1:5432
    user: postgres
  - name: shop
    protocol: mysql
    address: 127.0.0.1:3306
    database: test
    user: root
{extra_targets}",
        aud = dev::AUDIENCE,
        cert = cert.display(),
        tls_key = tls_key.display(),
    );
    let config = Config::parse(&yaml, "test.yaml").unwrap();
    let db = dir.path().join("audit.db");
    let signer = Signer::from_pkcs8(Signer::generate_pem().as_bytes()).unwrap();
    let key = PublicKey::from_bytes(signer.public_key());
    let recorder = Recorder::start(
        Settings {
            location: Location::Sqlite(db.clone()),
            chain: "t".into(),
            checkpoint_interval: Duration::from_millis(500),
            batch_size: 64,
            queue_size: 8192,
            queue_bytes: 4 << 20,
            queue_wait: Duration::from_secs(2),
            retention_days: 0,
            linger: Duration::from_millis(1),
        },
        signer,
    )
    .unwrap();
    let approvals_on = approvals;
    let approvals = Approvals::new(
        tollgate::approval::Settings {
            page_url: Some(format!("{admin}/approvals/ui")),
            webhook: None,
            max_pending: 100,
            max_pending_per_identity: 50,
        },
        Some(recorder.clone()),
    );
    let policy = policy_file.map_or(policy, std::path::Path::to_path_buf);
    let inspector = Arc::new(PolicyInspector::load(vec![policy], SqlDialect::Postgres).unwrap());
    let stages = Stages {
        inspect: Arc::new(PolicyStage(inspector)),
        record: Some(recorder.clone()),
        approvals: approvals_on.then(|| Arc::clone(&approvals)),
    };
    let validator = Arc::new(Validator::new(config.identity.as_ref().unwrap()).unwrap());
    let state = Arc::new(AdminState {
        dev_issuer: Some(Arc::clone(&issuer)),
        validator: Some(validator),
        approvals: Some(approvals),
        ..AdminState::default()
    });
    tokio::spawn(tollgate::admin::serve(
        listener,
        state,
        std::future::pending(),
    ));
    let proxy = Proxy::start_mysql(dir, &yaml, stages).await;
    Setup {
        proxy,
        admin,
        issuer,
        recorder,
        db,
        key,
        table,
        http: reqwest::Client::new(),
    }
}

impl Setup {
    pub fn token(&self, sub: &str, groups: &[&str]) -> String {
        let groups: Vec<String> = groups.iter().map(|g| g.to_string()).collect();
        self.issuer
            .mint(sub, &groups, Duration::from_secs(600))
            .unwrap()
    }

    pub fn opts(&self, sub: &str, groups: &[&str], tls: bool) -> OptsBuilder {
        let addr = self.proxy.mysql.unwrap();
        let mut o = OptsBuilder::default()
            .ip_or_hostname("127.0.0.1")
            .tcp_port(addr.port())
            .user(Some(sub))
            .pass(Some(self.token(sub, groups)))
            .db_name(Some("shop"))
            .prefer_socket(false)
            .enable_cleartext_plugin(true);
        if tls {
            o = o.ssl_opts(Some(
                SslOpts::default()
                    .with_danger_accept_invalid_certs(true)
                    .with_danger_skip_domain_validation(true),
            ));
        }
        o
    }

    pub async fn agent(&self, sub: &str, groups: &[&str]) -> Conn {
        Conn::new(self.opts(sub, groups, true))
            .await
            .expect("agent connection through tollgate")
    }

    /// The approval requests the approver sees.
    pub async fn pending(&self, approver: &str) -> Vec<serde_json::Value> {
        self.http
            .get(format!("{}/approvals", self.admin))
            .bearer_auth(approver)
            .send()
            .await
            .unwrap()
            .json::<Vec<serde_json::Value>>()
            .await
            .unwrap()
    }

    /// Waits for a held statement; returns the first pending request's id.
    pub async fn first_pending(&self, approver: &str) -> String {
        for _ in 0..200 {
            if let Some(x) = self.pending(approver).await.first() {
                return x["id"].as_str().unwrap().to_owned();
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("no statement was held for approval");
    }

    pub async fn store_bytes(&self) -> Vec<u8> {
        self.recorder.flush().await.unwrap();
        super::audit_store_bytes(&self.db).await
    }
}

pub fn code(e: &mysql_async::Error) -> u16 {
    match e {
        mysql_async::Error::Server(s) => s.code,
        other => panic!("not a server error: {other:?}"),
    }
}

pub fn message(e: &mysql_async::Error) -> String {
    match e {
        mysql_async::Error::Server(s) => s.message.clone(),
        other => format!("{other:?}"),
    }
}

pub fn no_pan(text: &str, what: &str) {
    for pan in PANS {
        assert!(!text.contains(pan), "{what} holds {pan}: {text}");
    }
    assert!(
        tollgate::mask::pan::find_all(text.as_bytes()).is_empty(),
        "{what} holds a PAN-like run: {text}"
    );
}
