//! `tollgate discover` on a PostgreSQL target: which columns hold card numbers, found rather
//! than named (issue #17). Through the target's own upstream login (the role the given groups
//! map to), in a read-only session, it lists the columns the role may read, samples at most
//! `sample` rows of each table (every column as text), and counts the values in which the
//! masker finds a card number. Nothing read is kept or printed: only counts.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::PgContext;
use super::frame::{Message, put_message};
use super::messages::{self, Backend};
use super::startup::Conn;
use super::upstream::connect_upstream;
use crate::auth::Identity;
use crate::conn::TargetRuntime;
use crate::mask::Masker;

/// One column's sample.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    /// `schema.table.column`.
    pub column: String,
    /// Non-NULL values sampled, and those holding a card number.
    pub sampled: u64,
    pub with_pan: u64,
}

/// Samples every readable table of the target; the columns, in catalog order, with counts.
pub async fn discover(
    ctx: &PgContext,
    target: &Arc<TargetRuntime>,
    identity: &Identity,
    sample: u32,
) -> Result<Vec<Finding>, String> {
    let database = target.config.upstream_database("").to_owned();
    let (mut conn, _) = connect_upstream(
        ctx,
        target,
        identity,
        &database,
        &[("application_name", "tollgate-discover")],
    )
    .await
    .map_err(|(e, _)| e.to_string())?;
    let max = ctx.config.limits.max_server_frame;
    query(
        &mut conn,
        "SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY",
        max,
    )
    .await?;
    let columns = query(
        &mut conn,
        "SELECT n.nspname, c.relname, a.attname FROM pg_catalog.pg_attribute a \
         JOIN pg_catalog.pg_class c ON c.oid = a.attrelid \
         JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
         WHERE c.relkind IN ('r', 'p', 'm') AND a.attnum > 0 AND NOT a.attisdropped \
         AND n.nspname NOT IN ('pg_catalog', 'information_schema') \
         AND n.nspname NOT LIKE 'pg_toast%' \
         AND has_column_privilege(c.oid, a.attnum, 'SELECT') \
         ORDER BY n.nspname, c.relname, a.attnum",
        max,
    )
    .await?;
    let mut tables: BTreeMap<(String, String), Vec<String>> = BTreeMap::new();
    for row in columns {
        if let [Some(s), Some(t), Some(c)] = &row[..] {
            tables
                .entry((s.clone(), t.clone()))
                .or_default()
                .push(c.clone());
        }
    }
    let masker = Masker::new(crate::mask::Format::BinLast4, None);
    let mut out = Vec::new();
    for ((schema, table), cols) in tables {
        let list: Vec<String> = cols.iter().map(|c| format!("{}::text", ident(c))).collect();
        let sql = format!(
            "SELECT {} FROM {}.{} LIMIT {sample}",
            list.join(", "),
            ident(&schema),
            ident(&table)
        );
        // A table the role cannot read after all: reported as not sampled.
        let rows = query(&mut conn, &sql, max).await.unwrap_or_default();
        for (i, c) in cols.iter().enumerate() {
            let mut f = Finding {
                column: format!("{schema}.{table}.{c}"),
                sampled: 0,
                with_pan: 0,
            };
            for v in rows.iter().filter_map(|r| r.get(i)?.as_deref()) {
                f.sampled += 1;
                if matches!(masker.mask(v.as_bytes()), std::borrow::Cow::Owned(_)) {
                    f.with_pan += 1;
                }
            }
            out.push(f);
        }
    }
    Ok(out)
}

/// A quoted identifier.
fn ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// A simple query's rows, as text; its error as `Err`.
async fn query(conn: &mut Conn, sql: &str, max: usize) -> Result<Vec<Vec<Option<String>>>, String> {
    let mut body = sql.as_bytes().to_vec();
    body.push(0);
    let mut out = Vec::new();
    put_message(&mut out, b'Q', &body);
    conn.send(&out).await.map_err(|e| e.to_string())?;
    let mut rows = Vec::new();
    let mut error = None;
    loop {
        let frame = conn.read_message(max).await.map_err(|e| e.to_string())?;
        let m = Message::from_frame(&frame);
        match m.tag {
            b'D' => {
                let values = super::transform::split_row(m.body).ok_or("malformed row")?;
                rows.push(
                    values
                        .into_iter()
                        .map(|v| v.map(|v| String::from_utf8_lossy(v).into_owned()))
                        .collect(),
                );
            }
            b'E' => {
                if let Ok(Backend::ErrorResponse(f)) = messages::decode_backend(m.tag, m.body) {
                    error = Some(crate::mask::for_log(f.get(b'M').unwrap_or("error")));
                }
            }
            b'Z' => break,
            _ => {}
        }
    }
    match error {
        Some(e) => Err(e),
        None => Ok(rows),
    }
}
