//! Tells approvers about a held statement: a JSON POST with a Slack-compatible `text` field
//! and the request itself, retried with backoff, each attempt bounded by a timeout.

use std::time::Duration;

use super::Request;

#[derive(Debug, Clone)]
pub struct Webhook {
    pub url: String,
    pub timeout: Duration,
    /// Attempts after the first.
    pub retries: u32,
    client: reqwest::Client,
}

impl Webhook {
    pub fn new(url: String, timeout: Duration, retries: u32) -> Result<Webhook, reqwest::Error> {
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .redirect(reqwest::redirect::Policy::none())
            .build()?;
        Ok(Webhook {
            url,
            timeout,
            retries,
            client,
        })
    }

    /// Posts the notification; the status of the accepted attempt, or why every one failed.
    pub async fn notify(&self, r: &Request, page_url: Option<&str>) -> Result<u16, String> {
        let details = r.details.summary();
        let text = format!(
            "tollgate: {} ({}) wants to run on {}: `{}` (rule {}: {}).{} Approver group: {}. Expires {}.{}",
            r.subject,
            r.groups.join(","),
            r.target,
            r.sql,
            r.rule.as_deref().unwrap_or("default"),
            r.reason,
            if details.is_empty() {
                String::new()
            } else {
                format!(" {details}.")
            },
            r.approver_group,
            r.expires,
            page_url.map_or(String::new(), |u| format!(" Decide: {u}"))
        );
        let body = serde_json::json!({
            "text": text,
            "approval": r,
            "page_url": page_url,
        });
        let mut last = String::new();
        let mut backoff = Duration::from_millis(200);
        for attempt in 0..=self.retries {
            if attempt > 0 {
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(10));
            }
            match self.client.post(&self.url).json(&body).send().await {
                Ok(resp) if resp.status().is_success() => return Ok(resp.status().as_u16()),
                Ok(resp) => last = format!("HTTP {}", resp.status()),
                Err(e) => {
                    last = if e.is_timeout() {
                        format!("timed out after {:?}", self.timeout)
                    } else {
                        "could not connect".to_owned()
                    }
                }
            }
        }
        Err(format!(
            "{} attempt(s) failed, last: {last}",
            self.retries + 1
        ))
    }
}
