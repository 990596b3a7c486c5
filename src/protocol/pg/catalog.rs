//! Which table column a result column comes from, for the masking column rules.
//!
//! A RowDescription gives each column's table OID and attribute number (zero for computed
//! columns). Their names come from `pg_attribute`, asked on a side connection of the session's
//! own upstream role, opened the first time a session meets a column it does not know, and
//! cached per target and database for every session. A lookup that fails masks the columns
//! it was for (fail closed).

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::{Arc, Mutex};

use tracing::warn;

use super::PgContext;
use super::binary::{self, Shape};
use super::frame::Message;
use super::messages::{self, Backend};
use super::results::Column;
use super::startup::Conn;
use super::upstream::connect_upstream;
use crate::auth::Identity;
use crate::conn::TargetRuntime;
use crate::mask::columns::SourceColumn;

type Key = (Arc<str>, Arc<str>, u32, i16);

/// A type in a target's database: (target, upstream database, type OID).
type TypeKey = (Arc<str>, Arc<str>, u32);

/// Entries kept at most; the cache is cleared when full.
const MAX_ENTRIES: usize = 200_000;

/// Source columns by (target, upstream database, table OID, attribute number), and the shapes
/// of user-defined types by (target, upstream database, type OID).
#[derive(Default)]
pub struct Cache {
    map: Mutex<HashMap<Key, Option<Arc<SourceColumn>>>>,
    types: Mutex<HashMap<TypeKey, Shape>>,
}

impl Cache {
    fn get(&self, key: &Key) -> Option<Option<Arc<SourceColumn>>> {
        self.map
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(key)
            .cloned()
    }

    fn put(&self, entries: impl IntoIterator<Item = (Key, Option<Arc<SourceColumn>>)>) {
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        if map.len() >= MAX_ENTRIES {
            map.clear();
        }
        map.extend(entries);
    }
}

/// One RowDescription field.
struct Field<'a> {
    name: &'a str,
    table: u32,
    attnum: i16,
}

fn fields(body: &[u8]) -> Option<Vec<Field<'_>>> {
    let count = usize::try_from(i16::from_be_bytes(body.get(..2)?.try_into().ok()?)).ok()?;
    let mut rest = &body[2..];
    let mut out = Vec::with_capacity(count);
    for _ in 0..count {
        let end = rest.iter().position(|&b| b == 0)?;
        let name = std::str::from_utf8(&rest[..end]).ok()?;
        let fixed = rest.get(end + 1..end + 1 + 18)?;
        out.push(Field {
            name,
            table: u32::from_be_bytes(fixed[0..4].try_into().ok()?),
            attnum: i16::from_be_bytes(fixed[4..6].try_into().ok()?),
        });
        rest = &rest[end + 1 + 18..];
    }
    Some(out)
}

/// A session's use of the catalog.
pub struct ConnCatalog<'a> {
    ctx: &'a PgContext,
    target: Arc<TargetRuntime>,
    identity: &'a Identity,
    /// The database the client asked for (the upstream one follows from the target).
    requested: String,
    database: Arc<str>,
    conn: Option<Conn>,
    /// The user-defined types this connection has met, by OID (binary values are decoded
    /// through them).
    pub types: binary::Types,
    /// Functions' declared return types, by function OID.
    returns: HashMap<u32, u32>,
}

impl<'a> ConnCatalog<'a> {
    pub fn new(
        ctx: &'a PgContext,
        target: Arc<TargetRuntime>,
        identity: &'a Identity,
        requested: &str,
    ) -> ConnCatalog<'a> {
        let database: Arc<str> = target.config.upstream_database(requested).into();
        ConnCatalog {
            ctx,
            target,
            identity,
            requested: requested.to_owned(),
            database,
            conn: None,
            types: binary::Types::new(),
            returns: HashMap::new(),
        }
    }

    /// The `schema.table.column` a result column comes from (its table OID and attribute
    /// number), from the cache or the catalog.
    pub async fn source_name(&mut self, table: u32, attnum: i16) -> Option<String> {
        if table == 0 {
            return None;
        }
        let target: Arc<str> = self.target.config.name.as_str().into();
        let key = (target, self.database.clone(), table, attnum);
        let src = match self.ctx.catalog.get(&key) {
            Some(found) => found,
            None => {
                let found = self.lookup(&[(table, attnum)]).await.ok()?;
                let src = found.get(&(table, attnum)).cloned();
                self.ctx.catalog.put([(key, src.clone())]);
                src
            }
        }?;
        Some(format!("{}.{}.{}", src.schema, src.table, src.column))
    }

    /// Sets `masked` on the columns the rules name. `columns` are the decoded `body`'s.
    pub async fn mark(&mut self, body: &[u8], columns: &mut [Column]) {
        let rules = &self.ctx.column_rules;
        let Some(fields) = fields(body) else {
            // Not readable, so not checkable: mask everything.
            columns.iter_mut().for_each(|c| c.masked = true);
            return;
        };
        let target: Arc<str> = self.target.config.name.as_str().into();
        let mut missing = Vec::new();
        for (i, f) in fields.iter().enumerate() {
            let Some(c) = columns.get_mut(i) else { break };
            c.masked = rules.output_name(f.name);
            if c.masked || f.table == 0 {
                continue;
            }
            let key = (target.clone(), self.database.clone(), f.table, f.attnum);
            match self.ctx.catalog.get(&key) {
                Some(Some(src)) => c.masked = rules.source(&src),
                Some(None) => {}
                None => missing.push((i, f.table, f.attnum)),
            }
        }
        if missing.is_empty() {
            return;
        }
        let wanted: Vec<(u32, i16)> = missing.iter().map(|&(_, t, a)| (t, a)).collect();
        match self.lookup(&wanted).await {
            Ok(found) => {
                self.ctx.catalog.put(found.iter().map(|(&(t, a), src)| {
                    (
                        (target.clone(), self.database.clone(), t, a),
                        Some(Arc::clone(src)),
                    )
                }));
                for (i, t, a) in missing {
                    columns[i].masked = match found.get(&(t, a)) {
                        Some(src) => rules.source(src),
                        // Not visible to the side connection (a table created in the
                        // session's open transaction, say): unknown, so masked, and asked
                        // again next time.
                        None => true,
                    };
                }
            }
            Err(e) => {
                warn!(error = %crate::mask::for_log(&e), "column lookup failed; masking the columns it was for");
                self.conn = None;
                for (i, _, _) in missing {
                    columns[i].masked = true;
                }
            }
        }
    }

    /// Makes the user-defined types of these binary result columns (and the types they are
    /// made of) known in [`Self::types`]: from the target's cache, else from `pg_type`. A type
    /// the catalog does not describe (not visible, or a base type from an extension) stays
    /// unknown, and its values are withheld.
    pub async fn resolve_types(&mut self, roots: impl IntoIterator<Item = u32>) {
        let mut wanted = binary::unresolved(roots, &self.types);
        let target: Arc<str> = self.target.config.name.as_str().into();
        for _ in 0..=binary::MAX_DEPTH {
            if wanted.is_empty() {
                return;
            }
            let mut ask = Vec::new();
            {
                let cache = self
                    .ctx
                    .catalog
                    .types
                    .lock()
                    .unwrap_or_else(|p| p.into_inner());
                for oid in wanted.drain(..) {
                    match cache.get(&(target.clone(), self.database.clone(), oid)) {
                        Some(shape) => {
                            self.types.insert(oid, shape.clone());
                        }
                        None => ask.push(oid),
                    }
                }
            }
            if !ask.is_empty() {
                match self.shapes(&ask).await {
                    Ok(found) => {
                        let mut cache = self
                            .ctx
                            .catalog
                            .types
                            .lock()
                            .unwrap_or_else(|p| p.into_inner());
                        if cache.len() >= MAX_ENTRIES {
                            cache.clear();
                        }
                        for (oid, shape) in found {
                            cache.insert(
                                (target.clone(), self.database.clone(), oid),
                                shape.clone(),
                            );
                            self.types.insert(oid, shape);
                        }
                    }
                    Err(e) => {
                        warn!(error = %crate::mask::for_log(&e), "type lookup failed; the values of those types are withheld");
                        return;
                    }
                }
            }
            // What the new shapes are made of; a type asked about and not found is not asked
            // again in this round.
            wanted = binary::unresolved(
                self.types
                    .values()
                    .flat_map(|s| s.parts().to_vec())
                    .collect::<Vec<_>>(),
                &self.types,
            );
            wanted.retain(|o| !ask.contains(o));
        }
    }

    /// A function's declared return type, from `pg_proc` (`None`: not readable).
    pub async fn return_type(&mut self, function: u32) -> Option<u32> {
        if let Some(&t) = self.returns.get(&function) {
            return Some(t);
        }
        let sql =
            format!("SELECT prorettype::int8 FROM pg_catalog.pg_proc WHERE oid = {function}::oid");
        match self.query(sql).await {
            Ok(rows) => {
                let t = rows.first()?.first()?.as_deref()?.parse().ok()?;
                if self.returns.len() >= 10_000 {
                    self.returns.clear();
                }
                self.returns.insert(function, t);
                Some(t)
            }
            Err(e) => {
                warn!(error = %crate::mask::for_log(&e), "function lookup failed; its binary result is withheld");
                None
            }
        }
    }

    /// The shapes `pg_type` gives the types `oids`.
    async fn shapes(&mut self, oids: &[u32]) -> Result<Vec<(u32, Shape)>, String> {
        // Only numbers go into the text.
        let mut sql = String::from(
            "SELECT t.oid::int8, t.typtype, t.typbasetype::int8, t.typelem::int8, \
             t.typcategory, t.typlen::int4, \
             (SELECT pg_catalog.string_agg(a.atttypid::text, ',' ORDER BY a.attnum) \
                FROM pg_catalog.pg_attribute a \
                WHERE a.attrelid = t.typrelid AND a.attnum > 0 AND NOT a.attisdropped), \
             (SELECT r.rngsubtype::int8 FROM pg_catalog.pg_range r WHERE r.rngtypid = t.oid), \
             (SELECT r.rngtypid::int8 FROM pg_catalog.pg_range r WHERE r.rngmultitypid = t.oid) \
             FROM pg_catalog.pg_type t WHERE t.oid IN (",
        );
        for (i, oid) in oids.iter().enumerate() {
            if i > 0 {
                sql.push(',');
            }
            let _ = write!(sql, "{oid}::oid");
        }
        sql.push(')');
        let num = |v: &Option<String>| v.as_deref().and_then(|v| v.parse::<u32>().ok());
        let mut out = Vec::new();
        for row in self.query(sql).await? {
            let (Some(oid), Some(kind)) = (num(&row[0]), row.get(1).cloned().flatten()) else {
                continue;
            };
            let field = |i: usize| row.get(i).and_then(num);
            let shape = match kind.as_str() {
                "e" => Shape::Enum,
                "d" => match field(2) {
                    Some(base) if base != 0 => Shape::Domain(base),
                    _ => continue,
                },
                "c" => {
                    let attrs = row.get(6).cloned().flatten().unwrap_or_default();
                    let parsed: Option<Vec<u32>> = attrs
                        .split(',')
                        .filter(|a| !a.is_empty())
                        .map(|a| a.parse().ok())
                        .collect();
                    match parsed {
                        Some(fields) => Shape::Composite(fields),
                        None => continue,
                    }
                }
                "r" => match field(7) {
                    Some(sub) => Shape::Range(sub),
                    None => continue,
                },
                "m" => match field(8) {
                    Some(range) => Shape::Multirange(range),
                    None => continue,
                },
                // An array: variable length, element type, category A.
                "b" if row.get(4).cloned().flatten().as_deref() == Some("A")
                    && row.get(5).cloned().flatten().as_deref() == Some("-1") =>
                {
                    match field(3) {
                        Some(elem) if elem != 0 => Shape::Array(elem),
                        _ => continue,
                    }
                }
                // Base types from extensions, pseudo-types: not known for certain.
                _ => continue,
            };
            out.push((oid, shape));
        }
        Ok(out)
    }

    async fn lookup(
        &mut self,
        wanted: &[(u32, i16)],
    ) -> Result<HashMap<(u32, i16), Arc<SourceColumn>>, String> {
        // Only numbers go into the text.
        let mut sql = String::from(
            "SELECT a.attrelid::int8, a.attnum::int4, n.nspname, c.relname, a.attname \
             FROM pg_catalog.pg_attribute a \
             JOIN pg_catalog.pg_class c ON c.oid = a.attrelid \
             JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
             WHERE (a.attrelid, a.attnum) IN (",
        );
        for (i, (t, a)) in wanted.iter().enumerate() {
            if i > 0 {
                sql.push(',');
            }
            let _ = write!(sql, "({t}::oid,{a}::int2)");
        }
        sql.push(')');
        let mut found = HashMap::new();
        for values in self.query(sql).await? {
            let [Some(t), Some(a), Some(s), Some(r), Some(c)] = &values[..] else {
                continue;
            };
            let (Ok(t), Ok(a)) = (t.parse::<u32>(), a.parse::<i16>()) else {
                continue;
            };
            found.insert(
                (t, a),
                Arc::new(SourceColumn {
                    schema: s.clone(),
                    table: r.clone(),
                    column: c.clone(),
                }),
            );
        }
        Ok(found)
    }

    /// Runs one catalog query on the side connection (opened on first use) and returns its
    /// rows' text values.
    pub(super) async fn query(&mut self, sql: String) -> Result<Vec<Vec<Option<String>>>, String> {
        if self.conn.is_none() {
            let (conn, _) = connect_upstream(
                self.ctx,
                &self.target,
                self.identity,
                &self.requested,
                &[("application_name", "tollgate-catalog")],
            )
            .await
            .map_err(|(e, _)| e.to_string())?;
            self.conn = Some(conn);
        }
        let result = self.query_open(sql).await;
        if result.is_err() {
            self.conn = None;
        }
        result
    }

    async fn query_open(&mut self, sql: String) -> Result<Vec<Vec<Option<String>>>, String> {
        let conn = self.conn.as_mut().ok_or("no catalog connection")?;
        let mut body = sql.into_bytes();
        body.push(0);
        let mut out = Vec::new();
        super::frame::put_message(&mut out, b'Q', &body);
        conn.send(&out).await.map_err(|e| e.to_string())?;
        let mut rows = Vec::new();
        let mut error = None;
        loop {
            let frame = conn
                .read_message(self.ctx.config.limits.max_server_frame)
                .await
                .map_err(|e| e.to_string())?;
            let m = Message::from_frame(&frame);
            match m.tag {
                b'D' => {
                    let values = row(m.body).ok_or("malformed catalog row")?;
                    rows.push(values.into_iter().map(|v| v.map(str::to_owned)).collect());
                }
                b'E' => {
                    if let Ok(Backend::ErrorResponse(f)) = messages::decode_backend(m.tag, m.body) {
                        error = Some(f.get(b'M').unwrap_or("error").to_owned());
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
}

/// A text-format DataRow's values.
fn row(body: &[u8]) -> Option<Vec<Option<&str>>> {
    let count = usize::try_from(i16::from_be_bytes(body.get(..2)?.try_into().ok()?)).ok()?;
    let mut rest = &body[2..];
    let mut out = Vec::with_capacity(count);
    for _ in 0..count {
        let len = i32::from_be_bytes(rest.get(..4)?.try_into().ok()?);
        rest = &rest[4..];
        if len < 0 {
            out.push(None);
        } else {
            let len = len as usize;
            out.push(std::str::from_utf8(rest.get(..len)?).ok());
            rest = &rest[len..];
        }
    }
    Some(out)
}
