//! Issue #20's rule fields as tables of cases, without a server: `require_reason` (a leading
//! comment or the session's reason satisfies it, a comment elsewhere does not; the statement is
//! classified as before), `actor` / `actors` against the identity's actor, and `policy check`'s
//! complaints about the new fields.

use std::net::SocketAddr;
use std::sync::Arc;

use tollgate::auth::Identity;
use tollgate::conn::policy_files::PolicyInspector;
use tollgate::pipeline::{ConnId, ConnInfo, Inspect, Origin, Statement, Verdict};
use tollgate::policy::classify::SqlDialect;
use tollgate::policy::inspect::PolicyStage;
use tollgate::policy::{Action, Policy, RuleSet};

const POLICY: &str = "
default: deny
rules:
  - id: reads
    match: { groups: [ai-agents], kinds: [read] }
    action: allow
  - id: writes-with-a-reason
    match: { groups: [ai-agents], kinds: [write] }
    action: allow
    require_reason: true
  - id: no-drops-for-anyone-but-people
    match: { groups: [ai-agents], kinds: [ddl], actor: absent }
    action: deny
    reason: schema changes only on behalf of a person
  - id: ddl-for-our-people
    match: { groups: [ai-agents], kinds: [ddl], actors: ['*@example.com'] }
    action: allow
  - id: unparsed-with-a-reason
    match: { groups: [ai-agents], unparsed: true }
    action: allow
    require_reason: true
";

fn identity(actor: Option<&str>) -> Identity {
    Identity {
        subject: "agent-1".into(),
        groups: vec!["ai-agents".into()],
        client_id: None,
        issuer: "https://idp.example".into(),
        expires_at: None,
        actor: actor.map(str::to_owned),
    }
}

fn conn(actor: Option<&str>, session_reason: Option<&str>, mysql: bool) -> ConnInfo {
    ConnInfo {
        id: ConnId(1),
        client_addr: SocketAddr::from(([127, 0, 0, 1], 5000)),
        user: "agent".into(),
        identity: Arc::new(identity(actor)),
        target: "app".into(),
        database: "app".into(),
        application_name: None,
        who: Arc::new(tollgate::audit::Who::default()),
        protocol: if mysql {
            tollgate::config::Protocol::Mysql
        } else {
            tollgate::config::Protocol::Postgres
        },
        user_functions: Default::default(),
        session_reason: session_reason.map(str::to_owned),
    }
}

fn stage() -> PolicyStage {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("p.yaml");
    std::fs::write(&file, POLICY).unwrap();
    let inspector = PolicyInspector::load(vec![file], SqlDialect::Postgres).unwrap();
    PolicyStage(Arc::new(inspector))
}

#[test]
fn a_required_reason_comes_from_the_leading_comment_or_the_session() {
    let stage = stage();
    // (sql, session reason, MySQL, refused)
    let cases: &[(&str, Option<&str>, bool, bool)] = &[
        ("delete from t where id = 1", None, false, true),
        (
            "/* reason: INC-1 */ delete from t where id = 1",
            None,
            false,
            false,
        ),
        (
            "-- reason: INC-1\ndelete from t where id = 1",
            None,
            false,
            false,
        ),
        (
            "delete from t where id = 1 /* reason: late */",
            None,
            false,
            true,
        ),
        (
            "/* reason: */ delete from t where id = 1",
            None,
            false,
            true,
        ),
        ("delete from t where id = 1", Some("INC-2"), false, false),
        // SQL tollgate cannot parse, allowed only by an unparsed rule: its reason is required.
        ("selec 1", None, false, true),
        ("selec 1", Some("INC-4"), false, false),
        ("delete from t where id = 1", Some("   "), false, true),
        // Reads need none; a reason does not make a denied statement pass.
        ("select 1", None, false, false),
        ("/* reason: please */ drop table t", None, false, true),
        // A reason is no SQL: a comment cannot hide a second statement from the classifier.
        ("/* reason: x */ select 1; drop table t", None, false, true),
        // MySQL: `#` comments; executable comments are SQL, not reasons.
        (
            "# reason: INC-3\ndelete from t where id = 1",
            None,
            true,
            false,
        ),
        (
            "/*! reason: x */ delete from t where id = 1",
            None,
            true,
            true,
        ),
    ];
    for (sql, session, mysql, refused) in cases {
        let info = conn(None, *session, *mysql);
        let mut state = stage.connect(&info);
        let ruling = state.inspect(
            &info,
            &Statement {
                sql,
                origin: Origin::Simple,
            },
        );
        assert_eq!(
            matches!(ruling.verdict, Verdict::Refuse { .. }),
            *refused,
            "{sql} {session:?}: {ruling:?}"
        );
        if let Verdict::Refuse { sqlstate, message } = &ruling.verdict
            && matches!(
                ruling.rule.as_deref(),
                Some("writes-with-a-reason" | "unparsed-with-a-reason")
            )
        {
            assert_eq!(sqlstate, "42501");
            assert!(message.contains("a reason is required"), "{message}");
        }
    }
}

#[test]
fn rules_match_the_person_an_agent_acts_for() {
    let rules = RuleSet::parse(&[("p.yaml".into(), POLICY.into())]).unwrap();
    let policy = Policy::new(rules);
    let decide = |actor: Option<&str>| {
        policy
            .decide(
                &identity(actor),
                "app",
                "drop table t",
                SqlDialect::Postgres,
            )
            .decision
    };
    let none = decide(None);
    assert_eq!(none.action, Action::Deny);
    assert_eq!(none.rule.as_deref(), Some("no-drops-for-anyone-but-people"));
    assert_eq!(decide(Some("alice@example.com")).action, Action::Allow);
    // Present but not one of ours: no rule allows it, the default denies.
    let other = decide(Some("mallory@elsewhere.test"));
    assert_eq!((other.action, other.rule), (Action::Deny, None));
}

#[test]
fn policy_check_names_the_new_fields_misused() {
    for (yaml, needle) in [
        (
            "rules:\n  - id: a\n    action: deny\n    require_reason: true\n",
            "require_reason only applies",
        ),
        (
            "rules:\n  - id: a\n    action: allow\n    match: { actor: absent, actors: [x] }\n",
            "can never match",
        ),
        (
            "rules:\n  - id: a\n    action: allow\n    match: { actors: [] }\n",
            "match.actors is an empty list",
        ),
        (
            "rules:\n  - id: a\n    action: allow\n    match: { actor: maybe }\n",
            "maybe",
        ),
    ] {
        let errors = RuleSet::parse(&[("p.yaml".into(), yaml.into())]).unwrap_err();
        assert!(
            errors.iter().any(|e| e.to_string().contains(needle)),
            "{yaml}: {errors:?}"
        );
    }
}

/// `policy explain`, `policy test` and `policy backtest` decide as the proxy does: a statement
/// a `require_reason` rule matches is refused unless it states a reason.
#[test]
fn the_tools_see_the_requirement_too() {
    let rules = RuleSet::parse(&[("p.yaml".into(), POLICY.into())]).unwrap();
    let policy = Policy::new(rules);
    let decide = |sql: &str, session: Option<&str>| {
        policy
            .decide_stated(&identity(None), "app", sql, SqlDialect::Postgres, session)
            .decision
    };
    let bare = decide("delete from t where id = 1", None);
    assert_eq!(bare.action, Action::Deny);
    assert_eq!(bare.rule.as_deref(), Some("writes-with-a-reason"));
    assert!(bare.message().contains("a reason is required"));
    assert_eq!(
        decide("/* reason: INC-1 */ delete from t where id = 1", None).action,
        Action::Allow
    );
    assert_eq!(
        decide("delete from t where id = 1", Some("INC-1")).action,
        Action::Allow
    );
    assert_eq!(decide("select 1", None).action, Action::Allow);
}
