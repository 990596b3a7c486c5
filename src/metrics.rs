//! Prometheus metrics, served by the admin interface at `/metrics`.
//!
//! The code records through the `metrics` facade; `serve` installs the Prometheus recorder
//! (without its own listener: the admin router renders it). Without a recorder installed
//! (tests in-process, `check-config`), recording costs next to nothing.

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

pub const CONNECTIONS_OPEN: &str = "tollgate_connections_open";
pub const CONNECTIONS: &str = "tollgate_connections_total";
pub const AUTH_FAILURES: &str = "tollgate_auth_failures_total";
pub const STATEMENTS: &str = "tollgate_statements_total";
pub const MASKED: &str = "tollgate_masked_values_total";
pub const APPROVALS_PENDING: &str = "tollgate_approvals_pending";
pub const APPROVAL_WAIT: &str = "tollgate_approval_wait_seconds";
pub const AUDIT_QUEUE: &str = "tollgate_audit_queue_depth";
pub const AUDIT_WRITE: &str = "tollgate_audit_write_seconds";
pub const AUDIT_RECORDS: &str = "tollgate_audit_records_total";
pub const AUDIT_REFUSED: &str = "tollgate_audit_refused_total";
pub const AUDIT_BACKPRESSURE: &str = "tollgate_audit_backpressure_total";
pub const AUDIT_FAILING: &str = "tollgate_audit_store_failing";
pub const UPSTREAM_CONNECT: &str = "tollgate_upstream_connect_seconds";
pub const POLICY_RELOADS: &str = "tollgate_policy_reloads_total";
/// Statements whose result reached a rule's `result_cap` (labels: protocol, limit, rule).
pub const RESULT_CAPPED: &str = "tollgate_result_capped_total";

/// Installs the process-wide recorder; the handle renders the text format.
pub fn install() -> Result<PrometheusHandle, String> {
    let handle = PrometheusBuilder::new()
        .set_buckets_for_metric(
            Matcher::Suffix("_seconds".into()),
            &[
                0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                10.0, 30.0, 60.0, 300.0, 900.0,
            ],
        )
        .map_err(|e| e.to_string())?
        .install_recorder()
        .map_err(|e| e.to_string())?;
    describe();
    Ok(handle)
}

fn describe() {
    use metrics::{describe_counter, describe_gauge, describe_histogram};
    describe_gauge!(CONNECTIONS_OPEN, "Client connections open now.");
    describe_counter!(
        CONNECTIONS,
        "Client connections by outcome: accepted, refused (limits), evicted (unauthenticated, dropped to make room for newer ones)."
    );
    describe_counter!(AUTH_FAILURES, "Failed client logins by reason.");
    describe_counter!(
        STATEMENTS,
        "Statements by decision (allow, deny, require_approval, refused_audit) and rule."
    );
    describe_counter!(
        MASKED,
        "Messages toward clients in which card numbers were masked."
    );
    describe_gauge!(APPROVALS_PENDING, "Statements waiting for approval now.");
    describe_histogram!(
        APPROVAL_WAIT,
        "How long held statements waited, by outcome (approved, denied, timed_out, cancelled)."
    );
    describe_gauge!(AUDIT_QUEUE, "Records waiting for the audit store.");
    describe_histogram!(AUDIT_WRITE, "Time to append one batch to the audit store.");
    describe_counter!(AUDIT_RECORDS, "Records written to the audit store.");
    describe_counter!(
        AUDIT_REFUSED,
        "Records the audit stage could not take (queue full or store failing)."
    );
    describe_counter!(
        AUDIT_BACKPRESSURE,
        "Times the relay waited for room in a full audit queue (the writer behind)."
    );
    describe_gauge!(AUDIT_FAILING, "1 while the audit store fails to write.");
    describe_histogram!(
        UPSTREAM_CONNECT,
        "Time to open and log in an upstream connection, by target."
    );
    describe_counter!(POLICY_RELOADS, "Policy reloads by outcome.");
    describe_counter!(
        RESULT_CAPPED,
        "Statements whose result reached a rule's result_cap, by protocol, limit and rule."
    );
}
