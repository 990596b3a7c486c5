//! `tollgate discover --target NAME`: the columns of a target that hold card numbers, found by
//! sampling (bounded, read-only, through the target's own upstream login), and the column rules
//! that would protect them, for an operator to adopt.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context as _, bail};
use tollgate::auth::Identity;
use tollgate::config::{Config, Protocol};
use tollgate::conn::Context;
use tollgate::pipeline::Stages;
use tollgate::protocol::pg::PgContext;
use tollgate::protocol::pg::discover::discover;

#[derive(clap::Args, Debug)]
pub struct DiscoverArgs {
    #[arg(long, env = "TOLLGATE_CONFIG")]
    config: PathBuf,
    /// The target to sample (a PostgreSQL target).
    #[arg(long)]
    target: String,
    /// Rows sampled per table, at most.
    #[arg(long, default_value_t = 1000)]
    sample: u32,
    /// Groups whose upstream role samples (the target's credentials for them); the target's
    /// default role without.
    #[arg(long, value_delimiter = ',')]
    groups: Vec<String>,
    /// Where to write the column rules found (YAML for `masking.columns`).
    #[arg(long)]
    write: Option<PathBuf>,
}

pub async fn discover_command(args: DiscoverArgs) -> anyhow::Result<()> {
    let config = Arc::new(Config::load(&args.config)?);
    let target = config
        .targets
        .iter()
        .find(|t| t.value.name == args.target)
        .with_context(|| format!("no target named {}", args.target))?;
    if target.value.protocol != Protocol::Postgres {
        bail!("tollgate discover samples PostgreSQL targets only (so far)");
    }
    let ctx = Arc::new(Context::new(Arc::clone(&config), Stages::default())?);
    let runtime = ctx
        .targets
        .get(&args.target)
        .cloned()
        .context("the target did not start")?;
    let pg = PgContext::new(ctx);
    let identity = Identity::static_login("tollgate-discover", &args.groups);
    let findings = discover(&pg, &runtime, &identity, args.sample)
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let holding: Vec<&str> = findings
        .iter()
        .filter(|f| f.with_pan > 0)
        .map(|f| f.column.as_str())
        .collect();
    for f in &findings {
        println!(
            "{}\t{} of {} sampled values hold a card number{}",
            f.column,
            f.with_pan,
            f.sampled,
            if f.with_pan > 0 { "\tPROTECT" } else { "" }
        );
    }
    println!(
        "{} of {} columns hold card numbers (at most {} rows sampled per table)",
        holding.len(),
        findings.len(),
        args.sample
    );
    if let Some(path) = args.write {
        let mut yaml = format!(
            "# tollgate discover --target {}: columns found holding card numbers.\n# Adopt under `masking.columns` in the tollgate config.\nmasking:\n  columns:\n",
            args.target
        );
        for c in &holding {
            yaml.push_str(&format!("    - {c}\n"));
        }
        if holding.is_empty() {
            yaml = yaml.replace("  columns:\n", "  columns: []\n");
        }
        std::fs::write(&path, yaml).with_context(|| format!("writing {}", path.display()))?;
        println!("column rules written to {}", path.display());
    }
    Ok(())
}
