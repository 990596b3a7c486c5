//! Unit tests of the configuration.

use super::*;

const MINIMAL: &str = "
targets:
  - name: app
    address: 127.0.0.1:5432
    user: postgres
    client_auth:
      method: scram-sha-256
      password: { env: AGENT_PW }
";

const OIDC: &str = "
identity:
  issuers:
    - issuer: https://idp.example/tenant
      audiences: [api://tollgate]
      algorithms: [RS256]
";

#[test]
fn identity_config_and_group_credentials() {
    let text = format!(
        "{OIDC}
targets:
  - name: \"*\"
    address: 127.0.0.1:5432
    user: agent_ro
    credentials:
      - groups: [break-glass]
        user: agent_rw
        password: {{ file: /run/secrets/rw }}
"
    );
    let c = Config::parse(&text, "t.yaml").unwrap();
    let issuer = &c.identity.as_ref().unwrap().issuers[0];
    assert_eq!(issuer.groups_claim, "groups");
    assert_eq!(issuer.algorithms, vec![JwtAlgorithm::RS256]);
    let t = c.target("*").unwrap();
    assert_eq!(t.client_auth.method, ClientAuthMethod::Oidc);
    assert_eq!(t.upstream_database("sales"), "sales");
    assert_eq!(t.credentials_for("i", &["ai-agents".into()]).0, "agent_ro");
    assert_eq!(
        t.credentials_for("i", &["x".into(), "break-glass".into()])
            .0,
        "agent_rw"
    );
    assert!(url_allowed("http://127.0.0.1:9090/dev"));
    assert!(url_allowed("http://localhost/x"));
    assert!(!url_allowed("http://127.0.0.1.evil.example/x"));
    assert!(!url_allowed("ftp://idp"));
}

#[test]
fn minimal_config_gets_defaults() {
    let c = Config::parse(MINIMAL, "t.yaml").unwrap();
    assert_eq!(c.listen.postgres, "127.0.0.1:15432".parse().unwrap());
    assert_eq!(c.limits.startup_timeout, Duration::from_secs(10));
    let t = c.target("app").unwrap();
    assert_eq!(t.upstream_database("app"), "app");
    assert_eq!(t.tls.mode, TlsMode::Disable);
    assert_eq!(t.client_auth.password, Some(Secret::Env("AGENT_PW".into())));
}

#[test]
fn unknown_field_names_file_line_and_field() {
    let text = MINIMAL.replace("    user: postgres", "    user: postgres\n    pasword: x");
    let err = Config::parse(&text, "t.yaml").unwrap_err().to_string();
    assert!(err.starts_with("t.yaml:6:"), "{err}");
    assert!(err.contains("pasword"), "{err}");
}

#[test]
fn bad_values_are_refused_with_their_place() {
    let cases = [
        (MINIMAL.replace("127.0.0.1:5432", "nowhere"), "address"),
        (MINIMAL.replace("scram-sha-256", "md5"), "md5"),
        (format!("{MINIMAL}{}", &MINIMAL[9..]), "duplicate"),
        (
            format!("{MINIMAL}shutdown_grace: soon\n"),
            "invalid duration",
        ),
        (
            MINIMAL.replace(
                "    user: postgres",
                "    user: postgres\n    tls: { mode: verify-full }",
            ),
            "ca_file",
        ),
        ("targets: []\n".to_string(), "at least one target"),
        (
            MINIMAL.replace("method: scram-sha-256", "method: oidc"),
            "identity",
        ),
        (
            MINIMAL.replace("      password: { env: AGENT_PW }\n", ""),
            "password: required",
        ),
        (
            format!("{MINIMAL}{OIDC}").replace("https://idp", "http://idp"),
            "https",
        ),
        (
            format!("{MINIMAL}{OIDC}").replace("RS256", "HS256"),
            "HS256",
        ),
        (
            format!("{MINIMAL}{OIDC}").replace("[api://tollgate]", "[]"),
            "audience",
        ),
    ];
    for (text, needle) in cases {
        let err = Config::parse(&text, "t.yaml").unwrap_err().to_string();
        assert!(err.starts_with("t.yaml:"), "{err}");
        assert!(err.contains(needle), "{needle}: {err}");
    }
}

#[test]
fn secrets_never_show_in_debug_output() {
    let c = Config::parse(MINIMAL, "t.yaml").unwrap();
    let text = format!("{c:?}");
    assert!(text.contains("Secret::Env(AGENT_PW)"));
}

#[test]
fn file_secret_drops_trailing_newline() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("pw");
    std::fs::write(&path, "s3cret\n").unwrap();
    assert_eq!(Secret::File(path).read().unwrap(), "s3cret");
    assert!(Secret::Env("TOLLGATE_SURELY_UNSET".into()).read().is_err());
}

#[test]
fn host_port_splitting() {
    assert_eq!(split_host_port("db:5432"), Some(("db", 5432)));
    assert_eq!(split_host_port("[::1]:5432"), Some(("::1", 5432)));
    assert_eq!(split_host_port(":5432"), None);
    assert_eq!(split_host_port("db"), None);
}
