//! `tollgate sessions`: recorded sessions listed, shown and replayed (each read recorded).

use super::{PeriodArgs, StoreArgs, open_store, open_trail, record_read};
use clap::Subcommand;
use tollgate::audit;

#[derive(Subcommand)]
pub enum SessionsCommand {
    /// Sessions that started in a period: identity, target, start, duration, statements.
    List {
        #[command(flatten)]
        store: StoreArgs,
        #[command(flatten)]
        period: PeriodArgs,
        #[arg(long)]
        json: bool,
    },
    /// Every record of one session.
    Show {
        id: String,
        #[command(flatten)]
        store: StoreArgs,
        #[arg(long)]
        json: bool,
    },
    /// A session as a timeline: statements, decisions, masked rows, errors.
    Replay {
        id: String,
        #[command(flatten)]
        store: StoreArgs,
        /// Play at the session's own pace times this factor (1 = real time).
        #[arg(long)]
        speed: Option<f64>,
    },
}

pub async fn sessions_command(command: SessionsCommand) -> anyhow::Result<()> {
    match command {
        SessionsCommand::List {
            store,
            period,
            json,
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
                serde_json::json!({"command": "sessions list", "since": period.since, "until": period.until}),
            )
            .await?;
            let mut st = open_store(setup).await?;
            let list = audit::sessions::list(&mut st, &period).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&list)?);
            } else {
                println!("{}", audit::sessions::table(&list));
            }
            Ok(())
        }
        SessionsCommand::Show { id, store, json } => {
            let t = open_trail(&store).await?;
            let setup = &t.setup;
            record_read(
                setup,
                &t.reader,
                audit::kind::AUDIT_READ,
                serde_json::json!({"command": "sessions show", "session": id}),
            )
            .await?;
            let mut st = open_store(setup).await?;
            let steps = audit::sessions::timeline(&mut st, &id).await?;
            anyhow::ensure!(!steps.is_empty(), "no session {id:?} in the store");
            if json {
                println!("{}", serde_json::to_string_pretty(&steps)?);
            } else {
                for s in &steps {
                    println!(
                        "{}  {:<15} {:<8} {}:{}  {}",
                        s.ts, s.kind, s.outcome, s.chain, s.seq, s.detail
                    );
                }
            }
            Ok(())
        }
        SessionsCommand::Replay { id, store, speed } => {
            let t = open_trail(&store).await?;
            let setup = &t.setup;
            record_read(
                setup,
                &t.reader,
                audit::kind::AUDIT_READ,
                serde_json::json!({"command": "sessions replay", "session": id}),
            )
            .await?;
            let mut st = open_store(setup).await?;
            let steps = audit::sessions::timeline(&mut st, &id).await?;
            anyhow::ensure!(!steps.is_empty(), "no session {id:?} in the store");
            audit::sessions::replay(&steps, speed, &mut std::io::stdout()).await?;
            Ok(())
        }
    }
}
