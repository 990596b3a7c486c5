//! docs/configuration.md lists exactly the fields the parser accepts, section by section. The
//! parser itself names them: a probe field at each level is refused with the list of fields
//! that section expects.

use std::collections::{BTreeMap, BTreeSet};

use tollgate::config::Config;

const TARGET: &str = "{ name: t, address: \"127.0.0.1:5432\", user: u, client_auth: { method: password, password: { env: X } } }";

/// A config with `zz_probe` inserted in one section, and that section's documented path.
fn probes() -> Vec<(&'static str, String)> {
    let t = TARGET;
    vec![
        ("Top level", format!("targets: [{t}]\nzz_probe: 1\n")),
        (
            "listen",
            format!("listen: {{ zz_probe: 1 }}\ntargets: [{t}]\n"),
        ),
        (
            "limits",
            format!("limits: {{ zz_probe: 1 }}\ntargets: [{t}]\n"),
        ),
        ("tls", format!("tls: {{ zz_probe: 1 }}\ntargets: [{t}]\n")),
        (
            "admin",
            format!("admin: {{ zz_probe: 1 }}\ntargets: [{t}]\n"),
        ),
        (
            "masking",
            format!("masking: {{ zz_probe: 1 }}\ntargets: [{t}]\n"),
        ),
        (
            "masking.groups[]",
            format!("masking: {{ groups: [{{ zz_probe: 1 }}] }}\ntargets: [{t}]\n"),
        ),
        (
            "identity",
            format!("identity: {{ zz_probe: 1 }}\ntargets: [{t}]\n"),
        ),
        (
            "identity.issuers[]",
            format!("identity: {{ issuers: [{{ zz_probe: 1 }}] }}\ntargets: [{t}]\n"),
        ),
        ("targets[]", "targets: [{ zz_probe: 1 }]\n".to_owned()),
        (
            "targets[].credentials[]",
            "targets: [{ credentials: [{ zz_probe: 1 }] }]\n".to_owned(),
        ),
        (
            "targets[].tls",
            "targets: [{ tls: { zz_probe: 1 } }]\n".to_owned(),
        ),
        (
            "targets[].client_auth",
            "targets: [{ client_auth: { zz_probe: 1 } }]\n".to_owned(),
        ),
        (
            "audit",
            format!("audit: {{ zz_probe: 1 }}\ntargets: [{t}]\n"),
        ),
        (
            "approvals",
            format!("approvals: {{ zz_probe: 1 }}\ntargets: [{t}]\n"),
        ),
        (
            "approvals.webhook",
            format!("approvals: {{ webhook: {{ zz_probe: 1 }} }}\ntargets: [{t}]\n"),
        ),
        (
            "approvals.login",
            format!("approvals: {{ login: {{ zz_probe: 1 }} }}\ntargets: [{t}]\n"),
        ),
    ]
}

/// The names after "expected one of" in the parser's unknown-field error.
fn expected_fields(message: &str) -> BTreeSet<String> {
    const MARK: &str = "expected one of ";
    let at = message
        .find(MARK)
        .unwrap_or_else(|| panic!("not an unknown-field error: {message}"));
    message[at + MARK.len()..]
        .split(',')
        .map(|f| f.trim().trim_matches('`').to_owned())
        .filter(|f| !f.is_empty())
        .collect()
}

/// Fields per section as the document lists them.
fn documented() -> BTreeMap<String, BTreeSet<String>> {
    let doc = std::fs::read_to_string("docs/configuration.md").unwrap();
    let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut section = None;
    for line in doc.lines() {
        if let Some(h) = line
            .strip_prefix("## ")
            .or_else(|| line.strip_prefix("### "))
        {
            section = Some(h.trim_matches('`').to_owned());
        } else if let (Some(s), Some(row)) = (&section, line.strip_prefix("| `")) {
            let field = row.split('`').next().unwrap().to_owned();
            out.entry(s.clone()).or_default().insert(field);
        }
    }
    out
}

#[test]
fn the_configuration_reference_lists_exactly_the_parsers_fields() {
    let documented = documented();
    let mut seen = BTreeSet::new();
    for (section, yaml) in probes() {
        let err = Config::parse(&yaml, "probe.yaml")
            .expect_err("a probe field is refused")
            .to_string();
        assert!(err.contains("zz_probe"), "{section}: {err}");
        let fields = expected_fields(&err);
        let listed = documented
            .get(section)
            .unwrap_or_else(|| panic!("docs/configuration.md has no section {section}"));
        assert_eq!(
            listed, &fields,
            "docs/configuration.md section {section} differs from what the parser accepts"
        );
        seen.insert(section.to_owned());
    }
    let extra: Vec<_> = documented.keys().filter(|k| !seen.contains(*k)).collect();
    assert!(
        extra.is_empty(),
        "documented sections nobody checks: {extra:?}"
    );
}
