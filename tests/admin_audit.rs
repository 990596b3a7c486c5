//! The audit trail over the admin API: only auditors (bearer token, auditor group) read it,
//! every read is recorded, exports stream and verify.

use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use tollgate::admin::audit::AuditAccess;
use tollgate::admin::{AdminState, serve};
use tollgate::audit::record::{PublicKey, Signer};
use tollgate::audit::store::Location;
use tollgate::audit::writer::{Recorder, Settings};
use tollgate::audit::{Event, Outcome, SessionId, Store, Who, kind, verify};
use tollgate::auth::dev::{self, DevIssuer};

mod common;
use tollgate::auth::oidc::Validator;
use tollgate::config::Config;

#[tokio::test]
async fn auditors_read_sessions_and_exports_and_every_read_is_recorded() {
    let dir = tempfile::tempdir().unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let issuer_url = format!("{base}/dev");
    let issuer = Arc::new(DevIssuer::open(dir.path(), &issuer_url).unwrap());
    let config = Config::parse(
        &format!(
            "
identity:
  allow_plaintext_loopback: true
  issuers:
    - issuer: {issuer_url}
      audiences: [{aud}]
      algorithms: [EdDSA]
targets:
  - name: x
    address: 127.0.0.1:5432
    user: postgres
",
            aud = dev::AUDIENCE
        ),
        "test.yaml",
    )
    .unwrap();
    let validator = Arc::new(Validator::new(config.identity.as_ref().unwrap()).unwrap());

    let db = dir.path().join("audit.db");
    let signer = Signer::from_pkcs8(Signer::generate_pem().as_bytes()).unwrap();
    let key = PublicKey::from_bytes(signer.public_key());
    let key_id = signer.key_id().to_owned();
    let recorder = Recorder::start(
        Settings {
            checkpoint_interval: Duration::from_millis(200),
            queue_size: 1024,
            ..common::recorder_settings(Location::Sqlite(db.clone()), "api")
        },
        signer,
    )
    .unwrap();
    let session = SessionId::random();
    let who = Arc::new(Who {
        session: Some(session.clone()),
        subject: Some("ci-agent".into()),
        groups: vec!["ai-agents".into()],
        target: Some("payments".into()),
        ..Who::default()
    });
    for (k, detail) in [
        (kind::SESSION_START, json!({})),
        (
            kind::STATEMENT,
            json!({"sql": "select 1", "decision": {"action": "allow"}}),
        ),
        (kind::SESSION_END, json!({"reason": "ClientClosed"})),
    ] {
        recorder
            .record(Event::new(k, Outcome::Success, who.clone(), detail))
            .unwrap();
    }
    recorder.flush().await.unwrap();

    let state = Arc::new(AdminState {
        dev_issuer: Some(Arc::clone(&issuer)),
        validator: Some(validator),
        auditor_groups: vec!["auditors".into()],
        audit: Some(AuditAccess {
            location: Location::Sqlite(db.clone()),
            recorder: recorder.clone(),
            key_id,
        }),
        ..AdminState::default()
    });
    tokio::spawn(serve(listener, state, std::future::pending()));

    let http = reqwest::Client::new();
    let get = |path: &str, token: Option<&str>| {
        let mut r = http.get(format!("{base}{path}"));
        if let Some(t) = token {
            r = r.bearer_auth(t);
        }
        r.send()
    };
    // No token, an agent's token, a forged token: refused.
    let r = get("/audit/sessions", None).await.unwrap();
    assert_eq!(r.status(), 401);
    let agent = issuer
        .mint("ci-agent", &["ai-agents".into()], Duration::from_secs(300))
        .unwrap();
    let r = get("/audit/sessions", Some(&agent)).await.unwrap();
    assert_eq!(r.status(), 403);
    let r = get("/audit/sessions", Some("eyJhbGciOiJub25lIn0.e30."))
        .await
        .unwrap();
    assert_eq!(r.status(), 401);

    let alice = issuer
        .mint("alice", &["auditors".into()], Duration::from_secs(300))
        .unwrap();
    let r = get("/audit/sessions?since=1h", Some(&alice)).await.unwrap();
    assert_eq!(r.status(), 200);
    let list: serde_json::Value = r.json().await.unwrap();
    assert_eq!(list[0]["id"], session.0.as_str());
    assert_eq!(list[0]["statements"], 1);
    let r = get(&format!("/audit/sessions/{}", session.0), Some(&alice))
        .await
        .unwrap();
    let steps: serde_json::Value = r.json().await.unwrap();
    assert_eq!(steps.as_array().unwrap().len(), 3);
    assert_eq!(steps[1]["detail"]["sql"], "select 1");
    let r = get("/audit/sessions/nope", Some(&alice)).await.unwrap();
    assert_eq!(r.status(), 404);
    let r = get("/audit/export?format=xml", Some(&alice)).await.unwrap();
    assert_eq!(r.status(), 400);

    recorder.flush().await.unwrap();
    let r = get("/audit/export?format=bundle", Some(&alice))
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let bundle = r.bytes().await.unwrap();
    let reports = verify::bundle(&bundle[..], &key).unwrap();
    assert!(reports[0].ok(), "{:?}", reports[0].problems);

    // Each read above is in the trail, with who read it.
    recorder.flush().await.unwrap();
    let mut store = Store::open(&Location::Sqlite(db), false).await.unwrap();
    let reads = store
        .of_types(&[kind::AUDIT_READ, kind::AUDIT_EXPORT], "", "9999")
        .await
        .unwrap();
    assert!(reads.len() >= 4, "{}", reads.len());
    assert!(
        reads
            .iter()
            .all(|r| r.body.contains("\"subject\":\"api:alice\""))
    );
    assert!(reads.iter().any(|r| r.kind == kind::AUDIT_EXPORT));
}
