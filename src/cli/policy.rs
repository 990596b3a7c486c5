//! `tollgate policy`: policy files checked, decisions explained.

use std::path::PathBuf;

use anyhow::Context as _;
use clap::Subcommand;
use tollgate::auth::Identity;
use tollgate::config::Config;
use tollgate::policy::classify::SqlDialect;
use tollgate::policy::{Policy, RuleSet};

#[derive(Subcommand)]
pub enum PolicyCommand {
    /// Validate policy files: every problem with file:line:column; exits 1 if any.
    Check {
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// Run fixture cases (identity, database, dialect, statement -> expected decision, rule
    /// and result cap) through the policy engine, offline; prints each mismatch with its
    /// file:line; exits 1 on any mismatch or unreadable file.
    Test {
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// Policy files (default: each cases file's `policies:`).
        #[arg(long = "policy")]
        policies: Vec<PathBuf>,
    },
    /// Decide the statements recorded in the audit store again under other policy files,
    /// offline: counts per old -> new decision and rule, with samples (masked). Recorded as a
    /// read of the trail.
    Backtest {
        /// The policy files to decide with.
        #[arg(long = "policy", required = true)]
        policies: Vec<PathBuf>,
        /// From when: an RFC 3339 time, a date, or a duration back from now.
        #[arg(long, default_value = "7d", value_parser = tollgate::audit::parse_time)]
        since: String,
        #[arg(long, value_parser = tollgate::audit::parse_time)]
        until: Option<String>,
        #[command(flatten)]
        store: super::StoreArgs,
    },
    /// How a statement is classified, which rules match, and the decision.
    Explain {
        /// Policy files (default: those of --config / TOLLGATE_CONFIG).
        #[arg(long = "policy")]
        policies: Vec<PathBuf>,
        #[arg(long, env = "TOLLGATE_CONFIG")]
        config: Option<PathBuf>,
        #[arg(long)]
        sub: String,
        #[arg(long, value_delimiter = ',')]
        groups: Vec<String>,
        #[arg(long)]
        client_id: Option<String>,
        #[arg(long, default_value = "")]
        issuer: String,
        #[arg(long)]
        database: String,
        #[arg(long)]
        sql: String,
        /// The SQL dialect: the protocol of the target the statement would reach.
        #[arg(long, value_enum, default_value = "postgres")]
        dialect: DialectArg,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Clone, Copy, clap::ValueEnum)]
pub enum DialectArg {
    Postgres,
    Mysql,
}

pub fn policy_command(command: PolicyCommand) -> anyhow::Result<()> {
    match command {
        PolicyCommand::Check { files } => match RuleSet::load(&files) {
            Ok(set) => {
                println!("{} file(s), {} rule(s): ok", files.len(), set.rules.len());
                Ok(())
            }
            Err(errors) => {
                for e in &errors {
                    eprintln!("{e}");
                }
                std::process::exit(1);
            }
        },
        PolicyCommand::Test { files, policies } => {
            if !super::policy_test::run(&files, &policies) {
                std::process::exit(1);
            }
            Ok(())
        }
        PolicyCommand::Backtest {
            policies,
            since,
            until,
            store,
        } => super::runtime()?.block_on(async {
            let t = super::open_trail(&store).await?;
            let (since, until) = super::backtest::bounds(Some(since), until);
            super::backtest::run(&t, &policies, &since, &until).await
        }),
        PolicyCommand::Explain {
            policies,
            config,
            sub,
            groups,
            client_id,
            issuer,
            database,
            sql,
            dialect,
            json,
        } => {
            let files = if policies.is_empty() {
                let config = config.context("give --policy FILE or --config FILE")?;
                Config::load(&config)?.policies
            } else {
                policies
            };
            let rules = match RuleSet::load(&files) {
                Ok(r) => r,
                Err(errors) => {
                    for e in &errors {
                        eprintln!("{e}");
                    }
                    std::process::exit(1);
                }
            };
            let identity = Identity {
                subject: sub,
                groups,
                client_id,
                issuer,
                expires_at: None,
                actor: None,
            };
            let policy = Policy::new(rules);
            let dialect = match dialect {
                DialectArg::Postgres => SqlDialect::Postgres,
                DialectArg::Mysql => SqlDialect::MySql,
            };
            let report = policy.decide_stated(&identity, &database, &sql, dialect, None);
            if json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                print!("{}", tollgate::policy::engine::explain_text(&report));
            }
            Ok(())
        }
    }
}
