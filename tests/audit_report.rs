//! The PCI DSS evidence report over a store with known activity: every section's figures and
//! verdicts, the card number planted in a record found, the unnamed reader flagged, a day's
//! review recorded by a reader named by a validated token, and the HTML printed in Chromium
//! with one page per requirement group.

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use serde_json::{Value, json};
use tollgate::audit::record::{Signer, hash};
use tollgate::audit::store::{Encoded, Location, Store};
use tollgate::audit::{Event, Outcome, SessionId, Who, kind};

mod common;
use common::cli::{BIN, keygen};
use common::identity::{TestIssuer, key, sign};

/// `YYYY-MM-DD` of `n` days ago and the time `hh:mm` on it.
fn day(n: u64) -> String {
    let t = SystemTime::now() - Duration::from_secs(n * 86_400);
    humantime::format_rfc3339_seconds(t).to_string()[..10].to_owned()
}

fn at(n: u64, hhmm: &str, sec: u32) -> String {
    format!("{}T{hhmm}:{sec:02}.000000Z", day(n))
}

struct Chain {
    name: String,
    records: Vec<Encoded>,
    prev: String,
}

impl Chain {
    fn new(name: &str) -> Chain {
        Chain {
            name: name.into(),
            records: Vec::new(),
            prev: tollgate::audit::record::GENESIS.into(),
        }
    }

    /// Appends `event` at `ts`; `plant` rewrites the encoded body before it is hashed (a
    /// record the masker never saw, as a bug or a hand-made insert would leave it).
    fn push(&mut self, ts: &str, event: Event, plant: Option<(&str, &str)>) {
        let seq = self.records.len() as u64 + 1;
        let mut body = event.encode(&self.name, seq, &self.prev, ts);
        if let Some((from, to)) = plant {
            assert!(body.contains(from));
            body = body.replace(from, to);
        }
        let h = hash(&body);
        self.prev = h.clone();
        self.records.push(Encoded {
            seq,
            ts: ts.into(),
            kind: event.kind,
            outcome: match event.outcome {
                Outcome::Success => "success",
                Outcome::Failure => "failure",
                Outcome::Refused => "refused",
                Outcome::Held => "held",
                Outcome::Info => "info",
            },
            session: event.who.session.as_ref().map(|s| s.0.clone()),
            body,
            hash: h,
        });
    }

    async fn write(self, store: &mut Store, signer: &Signer) {
        store.append(&self.name, &self.records).await.unwrap();
        let last = self.records.last().unwrap();
        let c = signer.sign(&self.name, last.seq, &last.hash, &last.ts);
        store.add_checkpoint(&c).await.unwrap();
    }
}

fn who(subject: Option<&str>, session: &str, addr: Option<&str>, role: &str) -> Arc<Who> {
    Arc::new(Who {
        session: Some(SessionId(session.into())),
        subject: subject.map(str::to_owned),
        groups: vec!["ai-agents".into()],
        client_id: Some("ci-agent-client".into()),
        issuer: Some("https://idp.example".into()),
        upstream_role: Some(role.into()),
        client_addr: addr.map(str::to_owned),
        application_name: Some("claude".into()),
        target: Some("pay".into()),
        database: Some("pay".into()),
        ..Who::default()
    })
}

fn ev(kind: &'static str, outcome: Outcome, who: &Arc<Who>, detail: Value) -> Event {
    Event::new(kind, outcome, Arc::clone(who), detail)
}

fn statement(
    who: &Arc<Who>,
    outcome: Outcome,
    sql: &str,
    rule: &str,
    action: &str,
    kinds: &[&str],
) -> Event {
    let mut e = ev(
        kind::STATEMENT,
        outcome,
        who,
        json!({"sql": sql, "origin": "simple", "kinds": kinds,
               "decision": {"action": action, "decided": action, "rule": rule, "reason": "", "dry_run": false}}),
    );
    e.tables = vec!["public.orders".into()];
    e
}

/// Two days of activity on the daemon's chain and the CLI's.
async fn build_store(dir: &Path) {
    let signer = Signer::from_pkcs8(&std::fs::read(dir.join("signing.pem")).unwrap()).unwrap();
    let location = Location::parse(dir.join("audit.db").to_str().unwrap());
    let mut store = Store::open(&location, true).await.unwrap();
    let daemon = Who::daemon();
    let alice = who(
        Some("alice@example.com"),
        "sAlice",
        Some("10.0.0.5:50000"),
        "app_ro",
    );
    let agent = who(Some("agent"), "sAgent", Some("10.0.0.6:50000"), "postgres");
    let nobody = who(None, "sMallory", Some("10.0.0.7:50000"), "");
    let mut c = Chain::new("t1");
    c.push(
        &at(2, "09:00", 0),
        ev(
            kind::DAEMON_START,
            Outcome::Info,
            &daemon,
            json!({"previous_stop": "clean"}),
        ),
        None,
    );
    c.push(
        &at(2, "10:00", 0),
        ev(
            kind::AUTH,
            Outcome::Success,
            &alice,
            json!({"method": "oidc", "user": "alice"}),
        ),
        None,
    );
    c.push(
        &at(2, "10:00", 1),
        ev(
            kind::SESSION_START,
            Outcome::Success,
            &alice,
            json!({"clock": {"skew_ms": 2.5, "rtt_ms": 0.3}}),
        ),
        None,
    );
    c.push(
        &at(2, "10:00", 2),
        statement(
            &alice,
            Outcome::Success,
            "select * from orders",
            "read-orders",
            "allow",
            &["read"],
        ),
        None,
    );
    c.push(
        &at(2, "10:00", 3),
        statement(
            &alice,
            Outcome::Refused,
            "drop table orders",
            "no-ddl",
            "deny",
            &["ddl"],
        ),
        None,
    );
    c.push(
        &at(2, "10:00", 4),
        statement(
            &alice,
            Outcome::Success,
            "delete from orders where id = 1",
            "deletes-need-approval",
            "require_approval",
            &["write"],
        ),
        None,
    );
    let approval = json!({"approval": "apAAA", "requester": "alice@example.com", "rule": "deletes-need-approval",
        "sql": "delete from orders where id = 1", "reason": "deletes are reviewed", "approver_group": "dba",
        "created": at(2, "10:00", 4)});
    c.push(
        &at(2, "10:00", 5),
        ev(kind::APPROVAL, Outcome::Held, &alice, approval.clone()),
        None,
    );
    let mut decided = approval.clone();
    decided["decision"] = "approved".into();
    decided["approver"] = "bob@example.com".into();
    decided["window_s"] = 600.into();
    c.push(
        &at(2, "10:01", 0),
        ev(kind::APPROVAL, Outcome::Success, &alice, decided),
        None,
    );
    c.push(
        &at(2, "10:01", 1),
        ev(
            kind::SERVER_FRAMES,
            Outcome::Info,
            &alice,
            json!({"masked": 3, "rows": 5}),
        ),
        None,
    );
    // A card number the masker never saw, in the statement text and in a table name (in
    // fullwidth digits).
    c.push(
        &at(2, "10:02", 0),
        statement(
            &alice,
            Outcome::Success,
            "select 'PLANTED'",
            "read-orders",
            "allow",
            &["read"],
        ),
        Some(("PLANTED", "4111-1111-1111-1111")),
    );
    let mut e = statement(
        &alice,
        Outcome::Success,
        "select 1",
        "read-orders",
        "allow",
        &["read"],
    );
    e.tables = vec!["public.PLANTED".into()];
    c.push(
        &at(2, "10:02", 1),
        e,
        Some(("PLANTED", "４１１１１１１１１１１１１１１１")),
    );
    c.push(
        &at(2, "11:00", 0),
        ev(
            kind::AUTH,
            Outcome::Failure,
            &nobody,
            json!({"method": "oidc", "user": "mallory", "reason_kind": "bad_signature"}),
        ),
        None,
    );
    c.push(
        &at(2, "12:00", 0),
        ev(
            kind::AUTH,
            Outcome::Success,
            &agent,
            json!({"method": "static", "user": "agent"}),
        ),
        None,
    );
    c.push(
        &at(2, "12:00", 1),
        ev(
            kind::SESSION_START,
            Outcome::Success,
            &agent,
            json!({"clock": {"skew_ms": -7.25, "rtt_ms": 0.4}}),
        ),
        None,
    );
    // A statement recorded without its origin: a 10.2.2 gap.
    let bare = who(Some("agent"), "sAgent", None, "postgres");
    c.push(
        &at(2, "12:00", 2),
        statement(
            &bare,
            Outcome::Success,
            "select 2",
            "read-orders",
            "allow",
            &["read"],
        ),
        None,
    );
    c.push(
        &at(1, "03:00", 0),
        ev(
            kind::STORE_FAILURE,
            Outcome::Failure,
            &daemon,
            json!({"error": "disk full", "since": at(1, "02:59", 0)}),
        ),
        None,
    );
    c.push(&at(1, "04:00", 0), ev(kind::AUDIT_PRUNED, Outcome::Info, &daemon, json!({"through_seq": 0, "removed": 0, "older_than": at(31, "04:00", 0), "retention_days": 30})), None);
    c.write(&mut store, &signer).await;

    let reader = |subject: &str| {
        Arc::new(Who {
            subject: Some(subject.into()),
            client_addr: Some("cli@host".into()),
            ..Who::default()
        })
    };
    let mut cli = Chain::new("t1-cli");
    cli.push(
        &at(2, "13:00", 0),
        ev(
            kind::AUDIT_READ,
            Outcome::Success,
            &reader("cli:unknown"),
            json!({"command": "sessions list"}),
        ),
        None,
    );
    let alice_reader = reader("alice@example.com");
    let src = "token";
    // A bundle export that failed (no completion record), then one written to its end.
    for (t, detail) in [
        (
            at(2, "13:30", 0),
            json!({"format": "bundle", "reader_source": src}),
        ),
        (
            at(2, "14:00", 0),
            json!({"format": "bundle", "reader_source": src}),
        ),
        (
            at(2, "14:00", 5),
            json!({"format": "bundle", "reader_source": src, "completed": true, "records": 20}),
        ),
    ] {
        cli.push(
            &t,
            ev(kind::AUDIT_EXPORT, Outcome::Success, &alice_reader, detail),
            None,
        );
    }
    // The day before yesterday reviewed by a named reviewer once it had ended; yesterday
    // "reviewed" by root before it had: not accepted.
    let dana = reader("dana@example.com");
    let review = json!({"date": day(2), "reader_source": src, "note": "nothing unusual"});
    cli.push(
        &at(1, "08:00", 0),
        ev(kind::AUDIT_REVIEW, Outcome::Success, &dana, review),
        None,
    );
    let root = reader("os:root");
    let review = json!({"date": day(1), "reader_source": "os_user"});
    cli.push(
        &at(1, "09:00", 0),
        ev(kind::AUDIT_REVIEW, Outcome::Success, &root, review),
        None,
    );
    cli.write(&mut store, &signer).await;
    store.close().await;
}

fn config(dir: &Path, issuer: &str) -> std::path::PathBuf {
    let path = dir.join("tollgate.yaml");
    std::fs::write(
        &path,
        format!(
            "listen: {{ postgres: 127.0.0.1:{port} }}
identity:
  allow_plaintext_loopback: true
  min_key_refresh: 0s
  issuers:
    - issuer: {issuer}
      audiences: [{aud}]
      groups_claim: realm_access.roles
audit:
  sqlite: audit.db
  signing_key: {{ file: signing.pem }}
  chain: t1
  retention_days: 30
targets:
  - name: pay
    address: 127.0.0.1:5432
    user: postgres
  - name: legacy
    address: 127.0.0.1:5432
    user: postgres
    client_auth: {{ method: scram-sha-256, groups: [ai-agents], password: {{ env: TOLLGATE_LEGACY_PASSWORD }} }}
",
            port = common::cli::free_port(),
            aud = common::identity::AUDIENCE,
        ),
    )
    .unwrap();
    path
}

fn run(args: &[&str], config: &Path, token: Option<&str>) -> std::process::Output {
    let mut cmd = Command::new(BIN);
    cmd.args(args)
        .arg("--config")
        .arg(config)
        .env("TOLLGATE_LEGACY_PASSWORD", "pw")
        .env_remove("TOLLGATE_TOKEN");
    if let Some(t) = token {
        cmd.env("TOLLGATE_TOKEN", t);
    }
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn report(config: &Path) -> Value {
    let out = run(&["audit", "report", "--format", "json"], config, None);
    serde_json::from_slice(&out.stdout).unwrap()
}

fn section<'a>(r: &'a Value, req: &str) -> &'a Value {
    r["sections"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["requirements"].as_str().unwrap().starts_with(req))
        .unwrap_or_else(|| panic!("no section {req}"))
}

fn verdict(r: &Value, req: &str) -> String {
    section(r, req)["verdict"].as_str().unwrap().to_owned()
}

fn rows(s: &Value, table: usize) -> Vec<Vec<String>> {
    serde_json::from_value(s["tables"][table]["rows"].clone()).unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn the_report_answers_every_section_over_known_activity() {
    let dir = tempfile::tempdir().unwrap();
    keygen(dir.path());
    build_store(dir.path()).await;
    let signing = key("RS256", "k1");
    let issuer = TestIssuer::start(&[&signing]).await;
    let config = config(dir.path(), &issuer.url);
    let r = report(&config);

    // 3.4.1 / 3.5.1: both planted card numbers found and located; the masked counts.
    let s = section(&r, "3.4.1");
    assert_eq!(s["verdict"], "attention", "{s}");
    assert_eq!(s["figures"]["clear_pans"], 2);
    assert_eq!(s["figures"]["masked_values"], 3);
    let found = rows(s, 0);
    assert_eq!(found.len(), 2);
    assert_eq!(
        (found[0][0].as_str(), found[0][4].as_str()),
        ("t1", "detail.sql")
    );
    assert_eq!(found[1][4], "tables[0]");
    // The report itself shows no clear card number.
    common::cli::assert_no_pan(r.to_string().as_bytes(), "the JSON report");

    // 6.5.1 / 8.2.2: the held statement, its approver and window.
    let s = section(&r, "6.5.1");
    assert_eq!(s["verdict"], "met", "{s}");
    let held = rows(s, 0);
    assert_eq!(held.len(), 1);
    let h = &held[0];
    assert_eq!(
        (
            h[1].as_str(),
            h[3].as_str(),
            h[7].as_str(),
            h[8].as_str(),
            h[11].as_str()
        ),
        (
            "alice@example.com",
            "deletes-need-approval",
            "approved",
            "bob@example.com",
            "600"
        )
    );
    assert_eq!(h[5], "deletes are reviewed");

    // 7.2: the access review table.
    let s = section(&r, "7.2");
    assert_eq!(s["verdict"], "met", "{s}");
    assert_eq!(s["figures"]["statements"], 6);
    assert_eq!(
        s["figures"]["decisions"],
        json!({"allowed": 4, "refused": 1, "refused_unrecorded": 0, "held_ran": 1, "held_refused": 0})
    );
    let ids = rows(s, 0);
    let alice = ids.iter().find(|r| r[0] == "alice@example.com").unwrap();
    assert_eq!(alice[1], "ai-agents");
    assert_eq!(alice[2], "https://idp.example");
    assert_eq!(alice[3], "ci-agent-client");
    assert_eq!(alice[4], "oidc");
    assert_eq!(alice[5], "not recorded");
    assert_eq!((alice[8].as_str(), alice[9].as_str()), ("1", "3"));
    assert_eq!(alice[10], "no-ddl: 1");
    assert_eq!(alice[11], "deletes-need-approval: 1");
    assert_eq!(alice[12], "app_ro");
    assert_eq!(alice[13], "pay");
    assert!(alice[14].starts_with("public.orders"), "{}", alice[14]);
    assert!(ids.iter().any(|r| r[0] == "agent"));

    // 8.2: the generic subject and the static-password target and logins.
    let s = section(&r, "8.2.1");
    assert_eq!(s["verdict"], "attention");
    assert_eq!(s["figures"]["generic"], json!(["agent"]));
    assert_eq!(s["figures"]["static_targets"], json!(["legacy"]));
    assert_eq!(
        s["figures"]["logins_by_method"],
        json!({"oidc": 1, "static": 1})
    );
    assert_eq!(s["figures"]["logins_failed"], 1);
    assert_eq!(s["figures"]["superuser_roles"], json!(["postgres"]));
    let targets = rows(s, 0);
    let legacy: Vec<String> = [
        "legacy",
        "scram-sha-256",
        "postgres",
        "none (trust or a client certificate upstream)",
    ]
    .map(str::to_owned)
    .to_vec();
    assert!(targets.contains(&legacy), "{targets:?}");

    // 10.2.1.x.
    let s = section(&r, "10.2.1.1");
    assert_eq!(s["verdict"], "met");
    assert_eq!(s["figures"]["logins_failed"], 1);
    assert_eq!(s["figures"]["schema_changes"], 1);
    assert_eq!(s["figures"]["pruned"], 1);

    // 10.2.1.3: the unnamed reader flagged; the token-named one is not.
    let s = section(&r, "10.2.1.3");
    assert_eq!(s["verdict"], "attention");
    let unnamed: Vec<String> = serde_json::from_value(s["figures"]["unnamed"].clone()).unwrap();
    assert!(unnamed.contains(&"cli:unknown".to_owned()), "{unnamed:?}");
    assert!(!unnamed.contains(&"alice@example.com".to_owned()));
    // alice also ran statements as a database client: reading her own trail is flagged.
    assert_eq!(s["figures"]["also_clients"], json!(["alice@example.com"]));

    // 10.2.2: the one record without its origin.
    let s = section(&r, "10.2.2");
    assert_eq!(s["verdict"], "attention");
    assert_eq!(s["figures"]["incomplete"], 1);
    let gaps = rows(s, 1);
    assert_eq!(gaps.len(), 1);
    assert_eq!(
        (gaps[0][3].as_str(), gaps[0][4].as_str()),
        ("statement", "origin")
    );
    assert_eq!(s["figures"]["share"]["user"], 100.0);

    // 10.3.1: the store made by tollgate is its owner's alone.
    assert_eq!(verdict(&r, "10.3.1"), "met");
    // 10.3.3: intact, but the last complete bundle is two days old (the failed one does not
    // count).
    let s = section(&r, "10.3.3");
    assert_eq!(s["verdict"], "attention", "{s}");
    assert_eq!(s["figures"]["intact"], true);
    assert_eq!(s["figures"]["last_bundle"]["records"], 20);
    assert_eq!(s["figures"]["covered_until"], json!(at(2, "14:00", 5)));
    assert!(s["figures"]["bundle_age_s"].as_u64().unwrap() > 86_400);

    // 10.4.1: yesterday, with an outage, was not reviewed.
    let s = section(&r, "10.4.1");
    assert_eq!(s["verdict"], "attention");
    assert_eq!(s["figures"]["unreviewed"], json!([day(1)]));
    assert_eq!(s["figures"]["unreviewed_with_events"], json!([day(1)]));
    assert_eq!(s["figures"]["rejected_reviews"], 1);

    // 10.5.1: 30 days of retention is under a year.
    let s = section(&r, "10.5.1");
    assert_eq!(s["verdict"], "attention");
    assert_eq!(s["figures"]["prunings"], 1);
    assert_eq!(s["figures"]["retention_days"], 30);
    assert_eq!(s["figures"]["recent"].as_array().unwrap().len(), 3);

    // 10.6: two samples, the largest -7.25 ms.
    let s = section(&r, "10.6");
    assert_eq!(s["verdict"], "met");
    assert_eq!(s["figures"]["samples"], 2);
    assert_eq!(s["figures"]["worst_skew_ms"], -7.25);

    // 10.7: the outage.
    let s = section(&r, "10.7");
    assert_eq!(s["verdict"], "attention");
    assert_eq!(s["figures"]["store_failures"], 1);

    // Yesterday reviewed by a reader named by a validated token: recorded under the token's
    // subject, and the review section is met.
    let token = sign(&signing, &issuer.claims("carol@example.com", |_| {}));
    let out = run(
        &[
            "audit",
            "review",
            "--date",
            &day(1),
            "--note",
            "outage reviewed",
        ],
        &config,
        Some(&token),
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("1 audit store outages") && text.contains("disk full"),
        "{text}"
    );
    assert!(text.contains("by carol@example.com"), "{text}");
    // The day with the planted card numbers: counted for the reviewer, never shown in clear.
    let out = run(
        &["audit", "review", "--date", &day(2)],
        &config,
        Some(&token),
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("2 clear card numbers found"), "{text}");
    common::cli::assert_no_pan(&out.stdout, "the review's output");
    // Today cannot be reviewed yet.
    let today = Command::new(BIN)
        .args(["audit", "review", "--date", &day(0), "--config"])
        .arg(&config)
        .env("TOLLGATE_LEGACY_PASSWORD", "pw")
        .output()
        .unwrap();
    assert!(!today.status.success());
    assert!(String::from_utf8_lossy(&today.stderr).contains("has not ended"));
    // An export that fails is no backup; one written to its end is.
    let failed = Command::new(BIN)
        .args([
            "audit",
            "export",
            "--format",
            "bundle",
            "--out",
            "/nonexistent/dir/b.jsonl",
            "--config",
        ])
        .arg(&config)
        .env("TOLLGATE_LEGACY_PASSWORD", "pw")
        .output()
        .unwrap();
    assert!(!failed.status.success());
    assert_eq!(verdict(&report(&config), "10.3.3"), "attention");
    let bundle = dir.path().join("bundle.jsonl");
    run(
        &[
            "audit",
            "export",
            "--format",
            "bundle",
            "--out",
            bundle.to_str().unwrap(),
        ],
        &config,
        Some(&token),
    );
    let r = report(&config);
    assert_eq!(verdict(&r, "10.3.3"), "met", "{}", section(&r, "10.3.3"));
    assert_eq!(verdict(&r, "10.4.1"), "met", "{}", section(&r, "10.4.1"));
    let readers = rows(section(&r, "10.2.1.3"), 0);
    assert!(
        readers
            .iter()
            .any(|r| r[0] == "carol@example.com" && r[1] == "token"),
        "{readers:?}"
    );
    // Without a token the operating-system account is the reader, never `$USER`.
    assert!(
        readers
            .iter()
            .any(|r| r[0].starts_with("os:") && r[1] == "os_user"),
        "{readers:?}"
    );
    assert!(!readers.iter().any(|r| r[0].contains("auditor")));

    // A token that does not validate refuses the read.
    let bad = Command::new(BIN)
        .args(["audit", "report", "--config"])
        .arg(&config)
        .env("TOLLGATE_LEGACY_PASSWORD", "pw")
        .env("TOLLGATE_TOKEN", "not.a.token")
        .output()
        .unwrap();
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("not valid"));

    // Markdown carries the same verdicts.
    let md = run(&["audit", "report"], &config, None);
    let md = String::from_utf8_lossy(&md.stdout);
    assert!(
        md.contains("### 3.4.1 / 3.5.1") && md.contains("**Verdict: attention.**"),
        "{md}"
    );
    common::cli::assert_no_pan(md.as_bytes(), "the Markdown report");

    // The HTML in Chromium: every group a printed page of its own.
    let html_path = dir.path().join("report.html");
    run(
        &[
            "audit",
            "report",
            "--format",
            "html",
            "--out",
            html_path.to_str().unwrap(),
        ],
        &config,
        None,
    );
    chromium_pages(&html_path, dir.path());
}

/// Prints the page to PDF in headless Chromium and counts its pages: at least one per
/// requirement group (five); the DOM Chromium built holds every section with its verdict.
fn chromium_pages(html: &Path, dir: &Path) {
    let pdf = dir.join("report.pdf");
    let url = format!("file://{}", html.display());
    let chromium = |args: &[&str]| {
        Command::new("chromium")
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--no-pdf-header-footer",
            ])
            .args(args)
            .arg(&url)
            .output()
            .expect("chromium (Debian package chromium) is installed")
    };
    let out = chromium(&[&format!("--print-to-pdf={}", pdf.display())]);
    assert!(pdf.exists(), "{}", String::from_utf8_lossy(&out.stderr));
    let bytes = std::fs::read(&pdf).unwrap();
    let text = String::from_utf8_lossy(&bytes);
    let pages = text.matches("/Type /Page\n").count()
        + text.matches("/Type /Page ").count()
        + text.matches("/Type/Page/").count()
        + text.matches("/Type /Page/").count()
        + text.matches("/Type/Page\n").count()
        + text.matches("/Type/Page>>").count()
        + text.matches("/Type /Page>>").count();
    let count = text
        .split("/Type /Pages")
        .nth(1)
        .or_else(|| text.split("/Type/Pages").nth(1))
        .and_then(|rest| rest.split("/Count ").nth(1))
        .and_then(|c| c.split(|ch: char| !ch.is_ascii_digit()).next())
        .and_then(|c| c.parse::<usize>().ok())
        .unwrap_or(pages);
    assert!(count >= 5, "{count} pages for five requirement groups");
    let dom = chromium(&["--dump-dom"]);
    let dom = String::from_utf8_lossy(&dom.stdout);
    for req in [
        "3.4.1", "6.5.1", "7.2.1", "8.2.1", "10.2.2", "10.3.1", "10.4.1", "10.5.1", "10.6.1",
        "10.7.1",
    ] {
        assert!(
            dom.contains(&format!("data-requirements=\"{req}")),
            "{req} missing from the DOM"
        );
    }
    assert_eq!(dom.matches("<section class=\"group\"").count(), 5);
    assert!(dom.contains("data-verdict=\"attention\"") && dom.contains("data-verdict=\"met\""));
}
