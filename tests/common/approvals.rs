//! Helpers for the approval tests: tollgate with approvals and an audit store, and the approvers' API.
#![allow(unused_imports)]

use std::sync::Arc;
use std::time::Duration;

use super::Proxy;
use futures_util::StreamExt;
use tokio_postgres::{AsyncMessage, NoTls};
use tollgate::admin::AdminState;
use tollgate::approval::Approvals;
use tollgate::audit::record::Signer;
use tollgate::audit::store::Location;
use tollgate::audit::writer::{Recorder, Settings};
use tollgate::audit::{Store, kind};
use tollgate::auth::dev::{self, DevIssuer};
use tollgate::auth::oidc::Validator;
use tollgate::config::Config;
use tollgate::conn::policy_files::PolicyInspector;
use tollgate::pipeline::Stages;
use tollgate::policy::classify::SqlDialect;
use tollgate::policy::inspect::PolicyStage;

pub struct Setup {
    pub proxy: Proxy,
    pub admin: String,
    pub issuer: Arc<DevIssuer>,
    pub recorder: Recorder,
    pub db: std::path::PathBuf,
    pub table: String,
    pub quick: String,
    pub http: reqwest::Client,
}

/// Tables the policy holds writes to, made directly on the server (not through tollgate).
pub async fn direct() -> tokio_postgres::Client {
    let (c, conn) = tokio_postgres::connect("host=127.0.0.1 user=postgres dbname=test", NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    c
}

pub async fn setup(name: &str) -> Setup {
    setup_with(name, "").await
}

/// [`setup`] with more rules before the others; `{table}` in them names the test's table.
pub async fn setup_with(name: &str, extra_rules: &str) -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let admin = format!("http://{}", listener.local_addr().unwrap());
    let issuer_url = format!("{admin}/dev");
    let issuer = Arc::new(DevIssuer::open(dir.path(), &issuer_url).unwrap());
    let table = format!("appr_{name}_{}", std::process::id());
    let quick = format!("{table}_quick");
    direct()
        .await
        .batch_execute(&format!(
            "drop table if exists {table}; drop table if exists {quick};
             create table {table} (v int); create table {quick} (v int);
             grant all on {table}, {quick} to public"
        ))
        .await
        .unwrap();
    let policy = dir.path().join("policy.yaml");
    std::fs::write(
        &policy,
        format!(
            "default: deny
rules:
{extra}
  - id: read
    match: {{ groups: [ai-agents], kinds: [read, session, transaction] }}
    action: allow
  - id: writes
    match: {{ groups: [ai-agents], kinds: [write], tables: [{table}] }}
    action: require_approval
    reason: data changes by agents are approved by a DBA
    approval: {{ group: dba, timeout: 60s }}
  - id: quick-writes
    match: {{ groups: [ai-agents], kinds: [write], tables: [{quick}] }}
    action: require_approval
    reason: quick ones
    approval: {{ group: dba, timeout: 1s }}
",
            extra = extra_rules.replace("{table}", &table)
        ),
    )
    .unwrap();
    let yaml = format!(
        "
admin: {{ listen: 127.0.0.1:0 }}
approvals: {{ page_url: {admin}/approvals/ui }}
# Short, so that a hold longer than it shows the server's silence during a hold is no stall.
limits: {{ upstream_timeout: 2s }}
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
",
        aud = dev::AUDIENCE
    );
    let config = Config::parse(&yaml, "test.yaml").unwrap();
    let db = dir.path().join("audit.db");
    let recorder = Recorder::start(
        Settings {
            location: Location::Sqlite(db.clone()),
            chain: "t".into(),
            checkpoint_interval: Duration::from_secs(1),
            batch_size: 64,
            queue_size: 4096,
            queue_bytes: 4 << 20,
            queue_wait: Duration::from_secs(2),
            retention_days: 0,
            linger: Duration::from_millis(1),
        },
        Signer::from_pkcs8(Signer::generate_pem().as_bytes()).unwrap(),
    )
    .unwrap();
    let approvals = Approvals::new(
        tollgate::approval::Settings {
            page_url: Some(format!("{admin}/approvals/ui")),
            webhook: None,
            max_pending: 100,
            max_pending_per_identity: 50,
        },
        Some(recorder.clone()),
    );
    let inspector = Arc::new(PolicyInspector::load(vec![policy], SqlDialect::Postgres).unwrap());
    let stages = Stages {
        inspect: Arc::new(PolicyStage(inspector)),
        record: Some(recorder.clone()),
        approvals: Some(Arc::clone(&approvals)),
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
    let proxy = Proxy::start_yaml(dir, &yaml, stages).await;
    Setup {
        proxy,
        admin,
        issuer,
        recorder,
        db,
        table,
        quick,
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

    /// An agent connection whose notices arrive on the channel.
    pub async fn agent(
        &self,
        sub: &str,
        groups: &[&str],
    ) -> (
        tokio_postgres::Client,
        tokio::sync::mpsc::UnboundedReceiver<AsyncMessage>,
    ) {
        let url = format!(
            "host=127.0.0.1 port={} user={sub} password={} dbname=test sslmode=disable",
            self.proxy.addr.port(),
            self.token(sub, groups)
        );
        self.connect(&url).await
    }

    /// An agent connection from a libpq-style connection string.
    pub async fn connect(
        &self,
        url: &str,
    ) -> (
        tokio_postgres::Client,
        tokio::sync::mpsc::UnboundedReceiver<AsyncMessage>,
    ) {
        let (client, mut connection) = tokio_postgres::connect(url, NoTls).await.unwrap();
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

    pub async fn pending(&self, token: &str) -> Vec<serde_json::Value> {
        let r = self
            .http
            .get(format!("{}/approvals", self.admin))
            .bearer_auth(token)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        r.json::<Vec<serde_json::Value>>().await.unwrap()
    }

    /// Waits until `n` requests are pending for the approver.
    pub async fn wait_pending(&self, token: &str, n: usize) -> Vec<serde_json::Value> {
        for _ in 0..200 {
            let list = self.pending(token).await;
            if list.len() >= n {
                return list;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("{n} pending approvals never appeared");
    }

    pub async fn decide(
        &self,
        token: &str,
        id: &str,
        what: &str,
        body: serde_json::Value,
    ) -> reqwest::Response {
        self.http
            .post(format!("{}/approvals/{id}/{what}", self.admin))
            .bearer_auth(token)
            .json(&body)
            .send()
            .await
            .unwrap()
    }

    pub async fn count(&self) -> i64 {
        direct()
            .await
            .query_one(&format!("select count(*) from {}", self.table), &[])
            .await
            .unwrap()
            .get(0)
    }

    pub async fn approval_records(&self) -> Vec<serde_json::Value> {
        self.recorder.flush().await.unwrap();
        let mut store = Store::open(&Location::Sqlite(self.db.clone()), false)
            .await
            .unwrap();
        store
            .of_types(&[kind::APPROVAL], "", "9999")
            .await
            .unwrap()
            .iter()
            .map(|r| serde_json::from_str(&r.body).unwrap())
            .collect()
    }
}

pub fn code(e: &tokio_postgres::Error) -> String {
    e.code().map(|c| c.code().to_owned()).unwrap_or_default()
}

pub fn message(e: &tokio_postgres::Error) -> String {
    e.as_db_error()
        .map(|d| d.message().to_owned())
        .unwrap_or_default()
}
