//! `tollgate approvals`: held statements listed, approved and denied through the admin API.

use anyhow::Context as _;
use clap::Subcommand;

#[derive(Subcommand)]
pub enum ApprovalsCommand {
    /// The pending requests you may decide.
    List {
        #[arg(long)]
        json: bool,
    },
    /// Approve a request, optionally for a window (same identity, statement and target).
    Approve {
        id: String,
        /// Like 10m or 1h.
        #[arg(long)]
        window: Option<String>,
    },
    /// Deny a request.
    Deny {
        id: String,
        #[arg(long)]
        reason: String,
    },
}

pub async fn approvals_command(
    url: &str,
    token: Option<String>,
    command: ApprovalsCommand,
) -> anyhow::Result<()> {
    let token = token.context("an approver token is needed: --token or TOLLGATE_TOKEN")?;
    let http = reqwest::Client::new();
    let base = url.trim_end_matches('/');
    let response = match &command {
        ApprovalsCommand::List { .. } => http.get(format!("{base}/approvals")),
        ApprovalsCommand::Approve { id, window } => http
            .post(format!("{base}/approvals/{id}/approve"))
            .json(&serde_json::json!({ "window": window })),
        ApprovalsCommand::Deny { id, reason } => http
            .post(format!("{base}/approvals/{id}/deny"))
            .json(&serde_json::json!({ "reason": reason })),
    }
    .bearer_auth(token)
    .send()
    .await
    .with_context(|| format!("reaching {base}"))?;
    let status = response.status();
    let body: serde_json::Value = response.json().await.unwrap_or_default();
    if !status.is_success() {
        anyhow::bail!(
            "{status}: {}",
            body["error"].as_str().unwrap_or("request failed")
        );
    }
    match command {
        ApprovalsCommand::List { json: true } => {
            println!("{}", serde_json::to_string_pretty(&body)?)
        }
        ApprovalsCommand::List { json: false } => {
            let mut t = comfy_table::Table::new();
            t.set_header(["id", "requester", "target", "statement", "rule", "expires"]);
            for r in body.as_array().into_iter().flatten() {
                // The requester's additions, under what they qualify.
                let mut requester = r["subject"].as_str().unwrap_or_default().to_owned();
                if let Some(actor) = r["actor"].as_str() {
                    requester.push_str(&format!("\nfor {actor}"));
                }
                let mut statement = r["sql"].as_str().unwrap_or_default().to_owned();
                if let Some(reason) = r["agent_reason"].as_str() {
                    statement.push_str(&format!("\nreason: {reason}"));
                }
                if let Ok(p) = serde_json::from_value::<tollgate::approval::preview::Preview>(
                    r["preview"].clone(),
                ) && r["preview"].is_object()
                {
                    statement.push_str(&format!("\nimpact: {}", p.summary()));
                }
                t.add_row([
                    r["id"].as_str().unwrap_or_default().to_owned(),
                    requester,
                    r["target"].as_str().unwrap_or_default().to_owned(),
                    statement,
                    r["rule"].as_str().unwrap_or("default").to_owned(),
                    r["expires"].as_str().unwrap_or_default().to_owned(),
                ]);
            }
            println!("{t}");
        }
        _ => println!(
            "{} {}",
            body["id"].as_str().unwrap_or_default(),
            body["decision"].as_str().unwrap_or_default()
        ),
    }
    Ok(())
}
