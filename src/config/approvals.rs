//! `approvals`: how held statements reach approvers (the page, its sign-in, the webhook).

use std::time::Duration;

use serde::Deserialize;

use super::duration;
use super::identity::default_groups_claim;
use super::{Secret, url_allowed};

/// How held statements reach approvers.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApprovalsConfig {
    /// The approvals page approvers open (named in the client's notice and the webhook).
    #[serde(default)]
    pub page_url: Option<String>,
    /// A webhook told about every held statement (JSON POST, Slack-compatible `text`).
    #[serde(default)]
    pub webhook: Option<WebhookConfig>,
    /// Statements waiting at once, at most; more are refused.
    #[serde(default = "default_max_pending")]
    pub max_pending: usize,
    /// Statements of one identity waiting at once, at most.
    #[serde(default = "default_max_pending_per_identity")]
    pub max_pending_per_identity: usize,
    /// The approvals page's sign-in (OIDC authorization code with PKCE). Without it the page
    /// is off and approvers use the CLI or the API.
    #[serde(default)]
    pub login: Option<LoginConfig>,
}

/// How approvers sign in to the approvals page.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoginConfig {
    /// The OIDC issuer (https; http only for loopback); its discovery document is read.
    pub issuer: String,
    /// The client registered for the page; ID tokens must name it as their audience.
    pub client_id: String,
    /// Its secret, for providers that require one with PKCE.
    #[serde(default)]
    pub client_secret: Option<Secret>,
    /// Where the provider sends approvers back: `<admin base URL>/approvals/callback`.
    pub redirect_url: String,
    /// The ID token claim holding groups (dotted path).
    #[serde(default = "default_groups_claim")]
    pub groups_claim: String,
    /// How long a sign-in lasts, at most (never beyond the ID token's expiry).
    #[serde(default = "default_session_ttl", with = "duration")]
    pub session_ttl: Duration,
}

fn default_session_ttl() -> Duration {
    Duration::from_secs(8 * 3600)
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    pub url: String,
    /// Each attempt's limit.
    #[serde(default = "default_webhook_timeout", with = "duration")]
    pub timeout: Duration,
    /// Attempts after the first, with growing pauses.
    #[serde(default = "default_webhook_retries")]
    pub retries: u32,
}

fn default_max_pending() -> usize {
    1000
}

fn default_max_pending_per_identity() -> usize {
    20
}

fn default_webhook_timeout() -> Duration {
    Duration::from_secs(5)
}

fn default_webhook_retries() -> u32 {
    3
}

impl ApprovalsConfig {
    /// Checks the section; `has_admin` tells whether the config has an `admin` section.
    pub(super) fn validate(&self, has_admin: bool) -> Result<(), String> {
        if !has_admin {
            return Err(
                "approvals: approvers decide through the admin API, so an `admin` section is needed"
                    .into(),
            );
        }
        if let Some(l) = &self.login {
            for (field, url) in [("issuer", &l.issuer), ("redirect_url", &l.redirect_url)] {
                if !url_allowed(url) {
                    return Err(format!(
                        "approvals.login.{field}: {url:?} must be an https URL (http only for loopback)"
                    ));
                }
            }
        }
        if let Some(w) = &self.webhook
            && !url_allowed(&w.url)
        {
            return Err(format!(
                "approvals.webhook.url: {:?} must be an https URL (http only for loopback)",
                w.url
            ));
        }
        Ok(())
    }
}
