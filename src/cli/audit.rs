//! `tollgate audit`: the trail verified, exported and reported on; signing keys.

use std::path::PathBuf;

use super::{PeriodArgs, ReaderArgs, StoreArgs, audit_setup, open_store, open_trail, record_read};
use anyhow::Context as _;
use clap::{Subcommand, ValueEnum};
use tollgate::audit;
use tollgate::config::Config;

#[derive(Clone, Copy, ValueEnum)]
pub enum ReportFormat {
    Markdown,
    Html,
    Json,
}

#[derive(Subcommand)]
pub enum AuditCommand {
    /// Verify every chain of the store (with --config) or an export bundle (with --bundle);
    /// exits 1 naming the first bad record.
    Verify {
        #[arg(long, env = "TOLLGATE_CONFIG", conflicts_with = "bundle")]
        config: Option<PathBuf>,
        #[command(flatten)]
        reader: ReaderArgs,
        /// An export bundle (`audit export --format bundle`).
        #[arg(long)]
        bundle: Option<PathBuf>,
        /// The checkpoint public key (base64 or hex, or a file holding it); with --config it
        /// defaults to the configured signing key's.
        #[arg(long)]
        public_key: Option<String>,
    },
    /// Export records of a period as JSONL, OCSF, CSV, or a verifiable bundle.
    Export {
        #[command(flatten)]
        store: StoreArgs,
        #[arg(long, value_enum)]
        format: tollgate::audit::export::Format,
        #[command(flatten)]
        period: PeriodArgs,
        /// The output file (default: standard output).
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Record that you reviewed a day's security events (PCI DSS 10.4.1): prints the day's
    /// refusals, failed logins, approvals and outages, then records the review under your
    /// name (a validated TOLLGATE_TOKEN's subject, else your operating-system account).
    Review {
        #[command(flatten)]
        store: StoreArgs,
        /// The day reviewed, `YYYY-MM-DD` (UTC).
        #[arg(long, value_parser = review_date)]
        date: String,
        /// What the review found or did (recorded, masked).
        #[arg(long)]
        note: Option<String>,
    },
    /// The PCI DSS evidence report of a period: per requirement, the evidence and a verdict.
    Report {
        #[command(flatten)]
        store: StoreArgs,
        #[command(flatten)]
        period: PeriodArgs,
        #[arg(long, value_enum, default_value_t = ReportFormat::Markdown)]
        format: ReportFormat,
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Write a new checkpoint signing key (PKCS#8 PEM, mode 0600) and print its public key.
    Keygen {
        #[arg(long)]
        out: PathBuf,
    },
    /// Print the public key of the configured signing key.
    PublicKey {
        #[arg(long, env = "TOLLGATE_CONFIG")]
        config: Option<PathBuf>,
    },
}

/// Prints verification reports; true when every chain is intact.
pub fn print_reports(reports: &[audit::verify::ChainReport]) -> bool {
    let mut ok = true;
    for r in reports {
        if r.ok() {
            println!(
                "chain {}: ok, records {}..{}, {} checkpoint(s), {} unsigned at the tail",
                r.chain,
                r.first_seq.unwrap_or(0),
                r.last_seq.unwrap_or(0),
                r.checkpoints,
                r.unsigned_tail
            );
        } else {
            ok = false;
            println!("chain {}: FAILED", r.chain);
            for p in &r.problems {
                println!("  {p}");
            }
        }
    }
    if reports.is_empty() {
        println!("no chains to verify");
    }
    ok
}

/// A `YYYY-MM-DD` day that has ended (UTC): a day is reviewed once all of it is recorded.
fn review_date(text: &str) -> Result<String, String> {
    let ok =
        text.len() == 10 && humantime::parse_rfc3339_weak(&format!("{text}T00:00:00Z")).is_ok();
    if !ok {
        return Err(format!("{text:?} is not a date (YYYY-MM-DD)"));
    }
    if text >= &audit::now_ts()[..10] {
        return Err(format!(
            "{text} has not ended yet (UTC): review it once it has"
        ));
    }
    Ok(text.to_owned())
}

/// A configured target as the report shows it: client login, upstream role, where the
/// upstream password is read (never the password).
fn target_facts(t: &tollgate::config::Target) -> audit::report::TargetFacts {
    use tollgate::config::{ClientAuthMethod, Secret};
    audit::report::TargetFacts {
        name: t.name.clone(),
        client_login: match t.client_auth.method {
            ClientAuthMethod::Oidc => "oidc",
            ClientAuthMethod::ScramSha256 => "scram-sha-256",
            ClientAuthMethod::Password => "password",
        }
        .into(),
        upstream_role: t.user.clone(),
        credential: match &t.password {
            Some(Secret::Env(name)) => format!("env {name}"),
            Some(Secret::File(path)) => format!("file {}", path.display()),
            None => "none (trust or a client certificate upstream)".into(),
        },
    }
}

pub fn public_key_arg(text: &str) -> anyhow::Result<audit::record::PublicKey> {
    let text = match std::fs::read_to_string(text) {
        Ok(file) => file,
        Err(_) => text.to_owned(),
    };
    Ok(audit::record::PublicKey::parse(&text)?)
}

pub async fn audit_command(command: AuditCommand) -> anyhow::Result<()> {
    match command {
        AuditCommand::Keygen { out } => {
            use std::io::Write;
            use std::os::unix::fs::OpenOptionsExt;
            let pem = audit::record::Signer::generate_pem();
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&out)
                .with_context(|| format!("creating {}", out.display()))?;
            f.write_all(pem.as_bytes())?;
            let signer = audit::record::Signer::from_pkcs8(pem.as_bytes())?;
            println!(
                "{}",
                audit::record::PublicKey::from_bytes(signer.public_key()).base64()
            );
            Ok(())
        }
        AuditCommand::PublicKey { config } => {
            let setup = audit_setup(&super::load_config(config.as_deref())?)?;
            println!(
                "{}",
                audit::record::PublicKey::from_bytes(setup.signer.public_key()).base64()
            );
            Ok(())
        }
        AuditCommand::Verify {
            config,
            reader,
            bundle,
            public_key,
        } => {
            let config = match (&bundle, config) {
                (None, config) => Some(super::config_path(config.as_deref())?),
                (Some(_), config) => config,
            };
            let reports = match (bundle, config) {
                (Some(bundle), _) => {
                    let key = public_key_arg(
                        public_key
                            .as_deref()
                            .context("--bundle needs --public-key")?,
                    )?;
                    let file = std::fs::File::open(&bundle)
                        .with_context(|| format!("opening {}", bundle.display()))?;
                    audit::verify::bundle(std::io::BufReader::new(file), &key)
                        .map_err(|e| anyhow::anyhow!("{}: {e}", bundle.display()))?
                }
                (None, Some(config)) => {
                    let config = Config::load(&config)?;
                    let setup = audit_setup(&config)?;
                    let reader = super::reader(&config, &reader).await?;
                    let key = match public_key {
                        Some(k) => public_key_arg(&k)?,
                        None => audit::record::PublicKey::from_bytes(setup.signer.public_key()),
                    };
                    let mut st = open_store(&setup).await?;
                    let reports = audit::verify::store(&mut st, &key).await?;
                    st.close().await;
                    record_read(
                        &setup,
                        &reader,
                        audit::kind::AUDIT_READ,
                        serde_json::json!({
                            "command": "audit verify",
                            "chains": reports.len(),
                            "intact": reports.iter().all(|r| r.ok()),
                        }),
                    )
                    .await?;
                    reports
                }
                (None, None) => anyhow::bail!("give --config FILE or --bundle FILE"),
            };
            if !print_reports(&reports) {
                std::process::exit(1);
            }
            Ok(())
        }
        AuditCommand::Export {
            store,
            format,
            period,
            out,
        } => {
            let t = open_trail(&store).await?;
            let setup = &t.setup;
            let period = audit::export::Period {
                since: period.since,
                until: period.until,
            };
            let what = serde_json::json!({
                "format": format!("{format:?}").to_lowercase(),
                "since": period.since,
                "until": period.until,
                "out": out.as_ref().map(|p| p.display().to_string()),
            });
            record_read(setup, &t.reader, audit::kind::AUDIT_EXPORT, what.clone()).await?;
            let mut st = open_store(setup).await?;
            let (since, until) = period.bounds();
            let total = st.count(since, until).await?;
            let bar = indicatif::ProgressBar::new(total);
            if out.is_none() {
                bar.set_draw_target(indicatif::ProgressDrawTarget::hidden());
            }
            let key_id = Some(setup.signer.key_id().to_owned());
            let n = match &out {
                Some(path) => {
                    let file = tokio::fs::File::create(path)
                        .await
                        .with_context(|| format!("creating {}", path.display()))?;
                    let mut w = tokio::io::BufWriter::new(file);
                    audit::export::write(&mut st, format, &period, key_id, &mut w, &|n| {
                        bar.set_position(n)
                    })
                    .await?
                }
                None => {
                    let mut w = tokio::io::BufWriter::new(tokio::io::stdout());
                    audit::export::write(&mut st, format, &period, key_id, &mut w, &|_| {}).await?
                }
            };
            bar.finish_and_clear();
            // Written to its end: what the report counts as a backup (10.3.3).
            let mut done = what;
            done["completed"] = true.into();
            done["records"] = n.into();
            record_read(setup, &t.reader, audit::kind::AUDIT_EXPORT, done).await?;
            eprintln!("{n} record(s) exported");
            Ok(())
        }
        AuditCommand::Review { store, date, note } => {
            let t = open_trail(&store).await?;
            let next = audit::parse_time(&date)
                .ok()
                .and_then(|d| humantime::parse_rfc3339_weak(&d).ok())
                .map(|d| d + std::time::Duration::from_secs(86_400))
                .map(|d| humantime::format_rfc3339_micros(d).to_string())
                .context("the day after")?;
            let period = audit::export::Period {
                since: Some(audit::parse_time(&date).map_err(anyhow::Error::msg)?),
                until: Some(next),
            };
            let mut st = open_store(&t.setup).await?;
            let e = audit::report::gather(&mut st, &period).await?;
            st.close().await;
            let events = audit::report::gather::day_events(&e);
            // Recorded before anything of the trail is shown (10.2.1.3); what is shown passes
            // the sink masker, whatever a record holds.
            record_read(
                &t.setup,
                &t.reader,
                audit::kind::AUDIT_REVIEW,
                serde_json::json!({
                    "date": date,
                    "events": events,
                    "note": note.as_deref().map(tollgate::mask::for_log),
                }),
            )
            .await?;
            println!("Security events of {date} (UTC):");
            for line in audit::report::gather::day_lines(&e) {
                println!("  {}", tollgate::mask::for_log(&line));
            }
            println!("Review of {date} recorded, by {}.", t.reader.subject);
            Ok(())
        }
        AuditCommand::Report {
            store,
            period,
            format,
            out,
        } => {
            let t = open_trail(&store).await?;
            let setup = &t.setup;
            let period = audit::export::Period {
                since: period.since,
                until: period.until,
            };
            record_read(
                setup,
                &t.reader,
                audit::kind::AUDIT_READ,
                serde_json::json!({"command": "audit report", "since": period.since, "until": period.until}),
            )
            .await?;
            let mut st = open_store(setup).await?;
            let key = audit::record::PublicKey::from_bytes(setup.signer.public_key());
            let chains = audit::verify::store(&mut st, &key).await?;
            let evidence = audit::report::gather(&mut st, &period).await?;
            let now = audit::now_ts();
            let facts = audit::report::store_facts(&mut st, &now).await?;
            st.close().await;
            let inputs = audit::report::Inputs {
                now,
                retention_days: setup.settings.retention_days,
                targets: t
                    .config
                    .targets
                    .iter()
                    .map(|t| target_facts(&t.value))
                    .collect(),
                store_file: match &setup.settings.location {
                    audit::store::Location::Sqlite(path) => Some(path.clone()),
                    audit::store::Location::Postgres(_) => None,
                },
            };
            let report = audit::report::build(&evidence, &facts, &chains, &period, &inputs);
            let text = match format {
                ReportFormat::Markdown => audit::report::markdown(&report),
                ReportFormat::Html => audit::report::html(&report),
                ReportFormat::Json => audit::report::json(&report),
            };
            match out {
                Some(path) => std::fs::write(&path, text)
                    .with_context(|| format!("writing {}", path.display()))?,
                None => print!("{text}"),
            }
            Ok(())
        }
    }
}
