//! Agent identity end to end: a real OIDC issuer served over HTTP by this test process
//! (discovery + JWKS), tollgate validating tokens against it, the machine's PostgreSQL behind.

mod common;

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64URL;
use common::identity::*;
use common::{Proxy, sqlstate};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};
use tollgate::pipeline::Stages;

#[tokio::test]
async fn valid_tokens_of_every_algorithm_connect_with_group_credentials() {
    let (rsa, ec, ed) = (key("rsa", "rsa-1"), key("ec", "ec-1"), key("ed", "ed-1"));
    let issuer = TestIssuer::start(&[&rsa, &ec, &ed]).await;
    let proxy = proxy(&issuer, "").await;
    let agent = issuer.claims("agent-7", |_| {});
    for (token, what) in [
        (sign(&rsa, &agent), "RS256"),
        (sign_as(&rsa, Algorithm::PS256, &agent), "PS256"),
        (sign(&ec, &agent), "ES256"),
        (sign(&ed, &agent), "EdDSA"),
        (
            sign(
                &rsa,
                &issuer.claims("agent-7", |c| c["aud"] = json!(["x", "other-audience"])),
            ),
            "second audience",
        ),
    ] {
        let client = connect(&proxy, &token)
            .await
            .unwrap_or_else(|e| panic!("{what}: {e}"));
        let who: String = client
            .query_one("select current_user::text", &[])
            .await
            .unwrap()
            .get(0);
        assert_eq!(
            who, "postgres",
            "{what}: agents use the target's default role"
        );
    }
    // The break-glass group gets the other upstream role (scripts/setup-postgres.sh made it).
    let token = sign(
        &ec,
        &issuer.claims("oncall-1", |c| {
            c["realm_access"]["roles"] = json!(["break-glass"])
        }),
    );
    let client = connect(&proxy, &token).await.unwrap();
    let who: String = client
        .query_one("select current_user::text", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(who, "tollgate_scram");
    let log = log_text();
    assert!(
        log.contains("subject=\"agent-7\""),
        "the identity is logged"
    );
    assert!(log.contains("client_id=\"ci-agent-client\""));
}

#[tokio::test]
async fn refused_tokens_get_28p01_and_the_precise_reason_in_the_log() {
    let (rsa, ec) = (key("rsa", "rsa-1"), key("ec", "ec-1"));
    let stranger = key("ec", "ec-1"); // same kid, other key
    let unpublished = key("rsa", "rsa-9");
    let issuer = TestIssuer::start(&[&rsa, &ec]).await;
    let proxy = proxy(&issuer, "").await;
    let now = now();
    let good = sign(&rsa, &issuer.claims("a", |_| {}));
    let tamper_payload = {
        let parts: Vec<&str> = good.split('.').collect();
        let mut claims = issuer.claims("a", |_| {});
        claims["sub"] = json!("admin");
        format!(
            "{}.{}.{}",
            parts[0],
            B64URL.encode(claims.to_string()),
            parts[2]
        )
    };
    let tamper_signature = {
        let (head, sig) = good.rsplit_once('.').unwrap();
        let mut bytes = B64URL.decode(sig).unwrap();
        bytes[10] ^= 1;
        format!("{head}.{}", B64URL.encode(bytes))
    };
    let alg_none = format!(
        "{}.{}.",
        B64URL.encode(r#"{"alg":"none","typ":"JWT"}"#),
        B64URL.encode(issuer.claims("a", |_| {}).to_string())
    );
    let hs256_confusion = {
        let mut header = Header::new(Algorithm::HS256);
        header.kid = Some("rsa-1".into());
        jsonwebtoken::encode(
            &header,
            &issuer.claims("a", |_| {}),
            &EncodingKey::from_secret(rsa.public_pem.as_bytes()),
        )
        .unwrap()
    };
    let huge = sign(
        &rsa,
        &issuer.claims("a", |c| c["padding"] = json!("x".repeat(20_000))),
    );
    let cases: Vec<(&str, String, &str)> = vec![
        (
            "expired",
            sign(&rsa, &issuer.claims("a", |c| c["exp"] = json!(now - 60))),
            "token expired",
        ),
        (
            "not yet valid",
            sign(&rsa, &issuer.claims("a", |c| c["nbf"] = json!(now + 600))),
            "token not yet valid",
        ),
        (
            "issued in the future",
            sign(&rsa, &issuer.claims("a", |c| c["iat"] = json!(now + 600))),
            "issued in the future",
        ),
        (
            "wrong issuer",
            sign(
                &rsa,
                &issuer.claims("a", |c| c["iss"] = json!("https://evil.example")),
            ),
            "unknown issuer",
        ),
        (
            "wrong audience",
            sign(
                &rsa,
                &issuer.claims("a", |c| c["aud"] = json!("someone-else")),
            ),
            "wrong audience",
        ),
        (
            "no audience",
            sign(
                &rsa,
                &issuer.claims("a", |c| {
                    c.as_object_mut()
                        .unwrap()
                        .remove("aud")
                        .map(|_| ())
                        .unwrap()
                }),
            ),
            "missing claim",
        ),
        (
            "no expiry",
            sign(
                &rsa,
                &issuer.claims("a", |c| {
                    c.as_object_mut()
                        .unwrap()
                        .remove("exp")
                        .map(|_| ())
                        .unwrap()
                }),
            ),
            "missing claim",
        ),
        ("alg none", alg_none, "algorithm \"none\" is not allowed"),
        (
            "HS256 with the RSA public key",
            hs256_confusion,
            "algorithm \"HS256\" is not allowed",
        ),
        (
            "unknown kid",
            sign(&unpublished, &issuer.claims("a", |_| {})),
            "unknown signing key \"rsa-9\"",
        ),
        (
            "key not the published one",
            sign(&stranger, &issuer.claims("a", |_| {})),
            "bad signature",
        ),
        ("tampered payload", tamper_payload, "bad signature"),
        ("tampered signature", tamper_signature, "bad signature"),
        (
            "RS256 header on the ES256 key",
            relabel(
                &sign(&ec, &issuer.claims("a", |_| {})),
                r#"{"alg":"RS256","kid":"ec-1"}"#,
            ),
            "does not fit the algorithm",
        ),
        // Issue #19, item 4: time claims no arithmetic can overflow on. Before, an `exp` of
        // 2^63 or more panicked the connection task.
        (
            "exp 2^63",
            sign(&rsa, &issuer.claims("a", |c| c["exp"] = json!(1u64 << 63))),
            "exp out of range",
        ),
        (
            "exp u64::MAX",
            sign(&rsa, &issuer.claims("a", |c| c["exp"] = json!(u64::MAX))),
            "exp out of range",
        ),
        (
            "exp after the year 9999",
            sign(
                &rsa,
                &issuer.claims("a", |c| c["exp"] = json!(1_000_000_000_000u64)),
            ),
            "exp out of range",
        ),
        (
            "exp 1e15, a float",
            sign(&rsa, &issuer.claims("a", |c| c["exp"] = json!(1e15))),
            "exp out of range",
        ),
        (
            "exp 1e300",
            sign(&rsa, &issuer.claims("a", |c| c["exp"] = json!(1e300))),
            "missing claim \"exp\"",
        ),
        (
            "exp negative",
            sign(&rsa, &issuer.claims("a", |c| c["exp"] = json!(-1))),
            "missing claim \"exp\"",
        ),
        (
            "exp a string",
            sign(&rsa, &issuer.claims("a", |c| c["exp"] = json!("never"))),
            "missing claim \"exp\"",
        ),
        (
            "nbf u64::MAX",
            sign(&rsa, &issuer.claims("a", |c| c["nbf"] = json!(u64::MAX))),
            "token not yet valid",
        ),
        (
            "iat u64::MAX",
            sign(&rsa, &issuer.claims("a", |c| c["iat"] = json!(u64::MAX))),
            "issued in the future",
        ),
        (
            "iat a string",
            sign(&rsa, &issuer.claims("a", |c| c["iat"] = json!("now"))),
            "iat is not a number",
        ),
        // Issue #19, item 5: RFC 7515 §4.1.11.
        (
            "crit header",
            sign_crit(
                &rsa,
                &["urn:example:must-understand"],
                &issuer.claims("a", |_| {}),
            ),
            "critical header extensions not understood: [\"urn:example:must-understand\"]",
        ),
        ("garbage", "not.a.token".into(), "malformed token"),
        ("garbage without dots", "garbage".into(), "malformed token"),
        ("empty password", String::new(), "empty token"),
        ("20 KB token", huge, "too large"),
    ];
    for (what, token, reason) in cases {
        let before = log_text().len();
        let err = connect(&proxy, &token)
            .await
            .err()
            .unwrap_or_else(|| panic!("{what}: accepted"));
        assert_eq!(sqlstate(&err), "28P01", "{what}: {err:?}");
        let message = err.as_db_error().unwrap().message().to_owned();
        assert_eq!(
            message, "password authentication failed for user \"agent\"",
            "{what}: the client learns nothing more"
        );
        let new_log = log_text()[before..].to_owned();
        assert!(
            new_log.contains(reason),
            "{what}: expected {reason:?} in the log, got:\n{new_log}"
        );
        if !token.is_empty() {
            assert!(
                !log_text().contains(&token),
                "{what}: the token reached the log"
            );
        }
    }
    // The good token still works after all that.
    connect(&proxy, &good).await.unwrap();
    assert!(!log_text().contains(&good));
    assert!(!log_text().contains(UPSTREAM_PASSWORD));
}

#[tokio::test]
async fn key_rotation_needs_no_restart_and_removed_keys_stop_working() {
    let (old, new) = (key("rsa", "2026-01"), key("ed", "2026-02"));
    let issuer = TestIssuer::start(&[&old]).await;
    let proxy = proxy_with(&issuer, "", "      key_refresh: 500ms").await;
    let claims = issuer.claims("rotating-agent", |_| {});
    connect(&proxy, &sign(&old, &claims)).await.unwrap();
    // The IdP publishes a new key and starts signing with it: fetched on the unknown kid.
    issuer.publish(&[&old, &new]);
    connect(&proxy, &sign(&new, &claims))
        .await
        .expect("new key picked up without restart");
    // The old key is withdrawn; at the next scheduled refresh its tokens stop working.
    issuer.publish(&[&new]);
    tokio::time::sleep(Duration::from_millis(600)).await;
    let err = connect(&proxy, &sign(&old, &claims))
        .await
        .expect_err("withdrawn key refused");
    assert_eq!(sqlstate(&err), "28P01");
    assert!(log_text().contains("unknown signing key \"2026-01\""));
    connect(&proxy, &sign(&new, &claims)).await.unwrap();
}

#[tokio::test]
async fn junk_key_ids_cannot_hammer_the_issuer() {
    let rsa = key("rsa", "real");
    let issuer = TestIssuer::start(&[&rsa]).await;
    let proxy = proxy(&issuer, "  min_key_refresh: 30s\n").await;
    let good = sign(&rsa, &issuer.claims("a", |_| {}));
    connect(&proxy, &good).await.unwrap();
    let after_first = issuer.fetches();
    for i in 0..20 {
        let junk = key("ed", &format!("junk-{i}"));
        let err = connect(&proxy, &sign(&junk, &issuer.claims("a", |_| {})))
            .await
            .err()
            .unwrap();
        assert_eq!(sqlstate(&err), "28P01");
    }
    let extra = issuer.fetches() - after_first;
    assert!(extra <= 1, "{extra} key-set fetches for 20 junk tokens");
    connect(&proxy, &good).await.unwrap();
}

#[tokio::test]
async fn a_session_outliving_its_token_is_cut_at_the_next_statement() {
    let ed = key("ed", "k");
    let issuer = TestIssuer::start(&[&ed]).await;
    let proxy = proxy(&issuer, "").await;
    let token = sign(
        &ed,
        &issuer.claims("short-lived", |c| c["exp"] = json!(now() + 2)),
    );
    let client = connect(&proxy, &token).await.unwrap();
    client.query_one("select 1", &[]).await.unwrap();
    tokio::time::sleep(Duration::from_millis(2600)).await;
    let err = client.query_one("select 1", &[]).await.unwrap_err();
    assert_eq!(sqlstate(&err), "28000", "{err:?}");
    assert!(
        err.as_db_error()
            .unwrap()
            .message()
            .contains("token has expired")
    );
    assert!(client.is_closed() || client.query_one("select 1", &[]).await.is_err());
}

#[tokio::test]
async fn tokens_only_over_tls_unless_loopback_plaintext_is_allowed() {
    let ed = key("ed", "k");
    let issuer = TestIssuer::start(&[&ed]).await;
    let dir = tempfile::tempdir().unwrap();
    let ck = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let (cert, keyfile) = (dir.path().join("c.pem"), dir.path().join("k.pem"));
    std::fs::write(&cert, ck.cert.pem()).unwrap();
    std::fs::write(&keyfile, ck.signing_key.serialize_pem()).unwrap();
    let yaml = format!(
        "
tls: {{ cert: {}, key: {} }}
identity:
  failure_delay: 0s
  issuers:
    - issuer: {}
      audiences: [{AUDIENCE}]
targets:
  - name: test
    address: 127.0.0.1:5432
    user: postgres
",
        cert.display(),
        keyfile.display(),
        issuer.url
    );
    let proxy = Proxy::start_yaml(dir, &yaml, Stages::default()).await;
    let token = sign(&ed, &issuer.claims("tls-agent", |_| {}));
    let err = connect(&proxy, &token)
        .await
        .expect_err("plaintext refused");
    assert_eq!(sqlstate(&err), "28000");
    let out = tokio::process::Command::new("psql")
        .arg(format!(
            "host=localhost hostaddr=127.0.0.1 port={} user=agent dbname=test sslmode=verify-full sslrootcert={}",
            proxy.addr.port(),
            cert.display()
        ))
        .args(["-Atc", "select 'token over tls'"])
        .env("PGPASSWORD", &token)
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "token over tls"
    );
}

#[tokio::test]
async fn repeated_failures_from_one_address_are_slowed_down() {
    let ed = key("ed", "k");
    let issuer = TestIssuer::start(&[&ed]).await;
    let proxy = proxy(
        &issuer,
        "  failure_delay: 100ms\n  max_failure_delay: 400ms\n",
    )
    .await;
    let mut took = Vec::new();
    for _ in 0..4 {
        let started = Instant::now();
        assert!(connect(&proxy, "garbage").await.is_err());
        took.push(started.elapsed());
    }
    for (got, floor) in took.iter().zip([100, 200, 400, 400]) {
        assert!(*got >= Duration::from_millis(floor), "{took:?}");
    }
    // A success does not wipe the count: one valid token cannot reset the delay between guesses.
    connect(&proxy, &sign(&ed, &issuer.claims("a", |_| {})))
        .await
        .unwrap();
    let started = Instant::now();
    assert!(connect(&proxy, "garbage").await.is_err());
    assert!(
        started.elapsed() >= Duration::from_millis(200),
        "{:?}",
        started.elapsed()
    );
}

/// Issue #19, item 4: a correctly signed token whose `exp` is 2^63 panicked the connection task
/// during login, and the failed login went unrecorded. It is refused with 28P01 like any invalid
/// token, the audit trail records why, and the daemon serves the next login.
#[tokio::test]
async fn an_expiry_beyond_any_date_is_refused_and_recorded() {
    use tollgate::audit::record::Signer;
    use tollgate::audit::store::Location;
    use tollgate::audit::writer::{Recorder, Settings};
    use tollgate::audit::{Store, kind};
    let ed = key("ed", "k");
    let issuer = TestIssuer::start(&[&ed]).await;
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("audit.db");
    let key_file = dir.path().join("audit-signing.pem");
    std::fs::write(&key_file, Signer::generate_pem()).unwrap();
    let recorder = Recorder::start(
        Settings {
            checkpoint_interval: Duration::from_secs(1),
            linger: Duration::from_millis(1),
            ..common::recorder_settings(Location::Sqlite(db.clone()), "t")
        },
        Signer::from_pkcs8(&std::fs::read(&key_file).unwrap()).unwrap(),
    )
    .unwrap();
    let top = format!(
        "audit:\n  sqlite: {}\n  signing_key: {{ file: {} }}\n",
        db.display(),
        key_file.display()
    );
    let stages = Stages {
        record: Some(recorder.clone()),
        ..Stages::default()
    };
    let proxy = proxy_in(dir, &issuer, "", "", &top, stages).await;
    let absurd = sign(
        &ed,
        &issuer.claims("overflow-agent", |c| c["exp"] = json!(1u64 << 63)),
    );
    let err = connect(&proxy, &absurd).await.expect_err("refused");
    assert_eq!(sqlstate(&err), "28P01", "{err:?}");
    let client = connect(&proxy, &sign(&ed, &issuer.claims("overflow-agent", |_| {})))
        .await
        .unwrap();
    let v: i32 = client.query_one("select 19", &[]).await.unwrap().get(0);
    assert_eq!(v, 19);
    recorder.flush().await.unwrap();
    let mut store = Store::open(&Location::Sqlite(db), false).await.unwrap();
    let auth: Vec<Value> = store
        .of_types(&[kind::AUTH], "", "9999")
        .await
        .unwrap()
        .iter()
        .map(|r| serde_json::from_str(&r.body).unwrap())
        .collect();
    let failed: Vec<&Value> = auth.iter().filter(|r| r["outcome"] == "failure").collect();
    assert_eq!(failed.len(), 1, "{auth:?}");
    assert_eq!(failed[0]["detail"]["reason_kind"], "malformed");
    assert_eq!(
        failed[0]["detail"]["reason"],
        "malformed token: exp out of range"
    );
    assert_eq!(auth.len(), 2, "the good login is recorded too: {auth:?}");
    assert!(!serde_json::to_string(&auth).unwrap().contains(&absurd));
}

/// Issue #19, item 6: one expiry rule, leeway included, at login and at every message. A token
/// that expired a second ago logs in under a 3 s leeway and works until the leeway runs out
/// (before, its first statement got FATAL); then the next statement is cut. Past the leeway the
/// login itself is refused.
#[tokio::test]
async fn the_clock_skew_leeway_counts_the_same_at_login_and_after() {
    let ed = key("ed", "k");
    let issuer = TestIssuer::start(&[&ed]).await;
    let proxy = proxy(&issuer, "  leeway: 3s\n").await;
    let t0 = now();
    let late = sign(&ed, &issuer.claims("skewed", |c| c["exp"] = json!(t0 - 1)));
    let client = connect(&proxy, &late).await.expect("within the leeway");
    let v: i32 = client.query_one("select 6", &[]).await.unwrap().get(0);
    assert_eq!(v, 6);
    // The leeway ends at exp + 3 s = t0 + 2 s.
    let end = UNIX_EPOCH + Duration::from_secs(t0 + 2) + Duration::from_millis(200);
    tokio::time::sleep(end.duration_since(SystemTime::now()).unwrap_or_default()).await;
    let err = client.query_one("select 1", &[]).await.unwrap_err();
    assert_eq!(sqlstate(&err), "28000", "{err:?}");
    assert!(
        err.as_db_error()
            .unwrap()
            .message()
            .contains("token has expired")
    );
    let before = log_text().len();
    let stale = sign(
        &ed,
        &issuer.claims("skewed", |c| c["exp"] = json!(now() - 4)),
    );
    let err = connect(&proxy, &stale).await.expect_err("past the leeway");
    assert_eq!(sqlstate(&err), "28P01");
    assert!(log_text()[before..].contains("token expired"));
}
