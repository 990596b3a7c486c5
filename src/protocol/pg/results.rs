//! Which columns (types and formats) the DataRows arriving from the server have.
//!
//! The simple protocol announces them (RowDescription before the rows). The extended protocol
//! often does not: a client describes a statement once (types, formats still unknown), binds
//! it with result formats, and executes it many times. So the client-to-server loop records, in
//! order, what the server will answer ([`Expect`]), with the formats each Bind chose; the
//! server-to-client loop pops those expectations as the answers arrive and learns statement
//! column types from the RowDescriptions that answer Describe. After an error in an extended
//! batch the server skips to Sync, and so do the expectations.
//!
//! tollgate does not trust the client's sequence for binary results: after every Bind that
//! asks for a binary result column it sends the server its own Describe of that portal
//! ([`Expect::OwnDescribe`]) and takes the answer for itself, so the rows of a binary portal
//! always arrive with the server's own word on their types. Caches by name are dropped when
//! the server confirms a Parse, Bind or Close of that name ([`Expect::Forget`]). Should the
//! columns of a binary result still be unknown, its values are withheld (fail closed).

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use crate::pipeline::{CapLimit, ResultCap};

/// A result column: its type and the format its values come in (0 text, 1 binary).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Column {
    pub type_oid: u32,
    pub format: i16,
    /// A column rule names it: its values are masked whatever they hold.
    pub masked: bool,
    /// The table OID and attribute number it comes from (zeros: computed, or not known).
    pub source: (u32, i16),
}

/// What the server will answer, in order.
#[derive(Debug, Clone)]
pub enum Expect {
    /// A simple Query: done at ReadyForQuery. `cap`: its result cap (set once it is ruled on).
    Query {
        cap: Option<Arc<ResultCap>>,
    },
    /// A FunctionCall (its function and whether it asked for a binary result): done at
    /// ReadyForQuery.
    Call {
        function: u32,
        binary: bool,
    },
    DescribeStatement(Arc<str>),
    DescribePortal(Arc<str>),
    /// tollgate's own Describe of a portal just bound: its answer is not the client's.
    OwnDescribe(Arc<str>),
    /// A Parse, Bind or Close: at its completion, what was known by that name is stale.
    Forget {
        statement: Option<Arc<str>>,
        portal: Option<Arc<str>>,
    },
    Execute {
        portal: Arc<str>,
        statement: Option<Arc<str>>,
        formats: Arc<[i16]>,
        /// The result cap of the statement the portal was bound to.
        cap: Option<Arc<ResultCap>>,
    },
    Sync,
}

/// A result cap and the portal whose rows count against it (`None`: a simple Query's rows).
pub type CapOf = (Arc<ResultCap>, Option<Arc<str>>);

/// Per-connection bookkeeping shared by the two loops.
#[derive(Default)]
pub struct Tracker {
    queue: Mutex<VecDeque<Expect>>,
}

/// How many expectations a connection may have outstanding; past this tracking is dropped
/// (values are then scanned as bytes only).
const MAX_OUTSTANDING: usize = 100_000;

impl Tracker {
    pub fn push(&self, e: Expect) {
        let mut q = self.queue.lock().unwrap_or_else(|p| p.into_inner());
        if q.len() < MAX_OUTSTANDING {
            q.push_back(e);
        }
    }

    /// Takes back the last `n` Syncs: the server ignored them (they came during COPY FROM).
    pub fn retract_syncs(&self, mut n: u64) {
        let mut q = self.queue.lock().unwrap_or_else(|p| p.into_inner());
        let mut i = q.len();
        while n > 0 && i > 0 {
            i -= 1;
            if matches!(q[i], Expect::Sync) {
                q.remove(i);
                n -= 1;
            }
        }
    }

    /// Sets the result cap of the simple Query pushed last (it is ruled on after it is
    /// tracked).
    pub fn cap_last_query(&self, cap: Arc<ResultCap>) {
        let mut q = self.queue.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(Expect::Query { cap: slot }) = q.back_mut() {
            *slot = Some(cap);
        }
    }

    /// What the rows arriving now count against: the result cap of the Query or Execute
    /// answered now, and the portal (`None` for a simple Query).
    pub fn current_cap(&self) -> Option<CapOf> {
        match self.queue.lock().unwrap_or_else(|p| p.into_inner()).front() {
            Some(Expect::Query { cap: Some(cap) }) => Some((Arc::clone(cap), None)),
            Some(Expect::Execute {
                cap: Some(cap),
                portal,
                ..
            }) => Some((Arc::clone(cap), Some(Arc::clone(portal)))),
            _ => None,
        }
    }

    /// The portal a BindComplete arriving now completes, if that is what comes next.
    pub fn bound_portal(&self) -> Option<Arc<str>> {
        match self.queue.lock().unwrap_or_else(|p| p.into_inner()).front() {
            Some(Expect::Forget {
                portal: Some(p),
                statement: None,
            }) => Some(Arc::clone(p)),
            _ => None,
        }
    }

    /// The FunctionCall whose answer comes next, if that is what comes next: its function and
    /// whether it asked for a binary result.
    pub fn call(&self) -> Option<(u32, bool)> {
        match self.queue.lock().unwrap_or_else(|p| p.into_inner()).front() {
            Some(Expect::Call { function, binary }) => Some((*function, *binary)),
            _ => None,
        }
    }

    fn front(&self) -> Option<Expect> {
        self.queue
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .front()
            .cloned()
    }

    #[cfg(test)]
    pub fn pop_for_tests(&self) {
        self.pop();
    }

    fn pop(&self) {
        self.queue
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .pop_front();
    }

    /// After an error in an extended batch: drop everything up to (not including) the Sync.
    fn skip_to_sync(&self) {
        let mut q = self.queue.lock().unwrap_or_else(|p| p.into_inner());
        while let Some(front) = q.front() {
            if matches!(
                front,
                Expect::Sync | Expect::Query { .. } | Expect::Call { .. }
            ) {
                break;
            }
            q.pop_front();
        }
    }

    /// At ReadyForQuery: drop everything up to and including the Sync or Query it ends.
    fn ready(&self) {
        let mut q = self.queue.lock().unwrap_or_else(|p| p.into_inner());
        while let Some(front) = q.pop_front() {
            if matches!(
                front,
                Expect::Sync | Expect::Query { .. } | Expect::Call { .. }
            ) {
                break;
            }
        }
    }
}

/// A portal's statement and the result formats its Bind asked for.
type Portal = (Arc<str>, Arc<[i16]>);

/// The client side: remembers each portal's statement and result formats from Bind, and the
/// result caps of statements (from their Parse's ruling) and of the portals bound to them.
#[derive(Default)]
pub struct ClientSide {
    portals: HashMap<Arc<str>, Portal>,
    statement_caps: HashMap<Arc<str>, Arc<ResultCap>>,
    portal_caps: HashMap<Arc<str>, Arc<ResultCap>>,
    /// Set once caps were dropped to bound memory (more than `MAX_NAMES` names): a statement
    /// or portal whose cap is not known then gets this one (fail closed: a capped name must not
    /// lose its cap because the client made many).
    dropped: Option<Arc<ResultCap>>,
    /// The tightest cap of every statement ruled on in the session: what an Execute of a
    /// portal no Bind of this session made (an SQL cursor from DECLARE, run by its name)
    /// counts against, since the statement that made it is not known here.
    cursor_cap: Option<Arc<ResultCap>>,
}

const MAX_NAMES: usize = 10_000;

/// The most columns a PostgreSQL result can have.
const MAX_COLUMNS: usize = 1664;

impl ClientSide {
    /// A statement was ruled on: its cap joins the tightest the session has seen.
    pub fn ruled(&mut self, cap: Option<&ResultCap>) {
        let Some(cap) = cap else { return };
        let tightens = |seen: &Option<CapLimit>, new: &Option<CapLimit>| match (seen, new) {
            (_, None) => false,
            (None, Some(_)) => true,
            (Some(s), Some(n)) => n.max < s.max,
        };
        // Every statement of a capped rule comes here: nothing is built unless it tightens.
        let tightest = match &self.cursor_cap {
            None => cap.clone(),
            Some(seen)
                if !tightens(&seen.rows, &cap.rows) && !tightens(&seen.bytes, &cap.bytes) =>
            {
                return;
            }
            Some(seen) => {
                let pick = |s: &Option<CapLimit>, n: &Option<CapLimit>| {
                    if tightens(s, n) { n.clone() } else { s.clone() }
                };
                ResultCap {
                    rows: pick(&seen.rows, &cap.rows),
                    bytes: pick(&seen.bytes, &cap.bytes),
                }
            }
        };
        self.cursor_cap = Some(Arc::new(tightest));
    }

    /// A Parse was ruled on: the statement's result cap (`None`: none), until its next Parse.
    pub fn parsed(&mut self, statement: &str, cap: Option<ResultCap>) {
        match cap {
            Some(cap) => {
                if self.statement_caps.len() >= MAX_NAMES {
                    self.dropped = self.statement_caps.values().next().cloned();
                    self.statement_caps.clear();
                }
                self.statement_caps.insert(statement.into(), Arc::new(cap));
            }
            None => {
                self.statement_caps.remove(statement);
            }
        }
    }

    pub fn bind(
        &mut self,
        portal: &str,
        statement: &str,
        formats: impl Iterator<Item = i16> + Clone,
    ) {
        // The portal runs the statement as parsed now, whatever a later Parse of the name.
        let cap = self
            .statement_caps
            .get(statement)
            .or(self.dropped.as_ref())
            .cloned();
        match cap {
            Some(cap) => {
                if self.portal_caps.len() >= MAX_NAMES {
                    self.dropped = self.portal_caps.values().next().cloned();
                    self.portal_caps.clear();
                }
                self.portal_caps.insert(portal.into(), cap);
            }
            None => {
                self.portal_caps.remove(portal);
            }
        }
        // The same portal bound to the same statement again (every Execute of a prepared
        // statement): nothing to allocate.
        if let Some((s, f)) = self.portals.get(portal)
            && &**s == statement
            && f.iter().copied().eq(formats.clone())
        {
            return;
        }
        if self.portals.len() >= MAX_NAMES {
            self.portals.clear();
        }
        self.portals
            .insert(portal.into(), (statement.into(), formats.collect()));
    }

    pub fn close_portal(&mut self, portal: &str) {
        self.portals.remove(portal);
        self.portal_caps.remove(portal);
    }

    pub fn execute(&self, portal: &str) -> Expect {
        let bound = self.portals.contains_key(portal);
        let cap = self
            .portal_caps
            .get(portal)
            .or(self.dropped.as_ref())
            .or(if bound {
                None
            } else {
                self.cursor_cap.as_ref()
            })
            .cloned();
        match self.portals.get_key_value(portal) {
            Some((name, (statement, formats))) => Expect::Execute {
                portal: Arc::clone(name),
                statement: Some(Arc::clone(statement)),
                formats: Arc::clone(formats),
                cap,
            },
            None => Expect::Execute {
                portal: portal.into(),
                statement: None,
                formats: Arc::from(Vec::new()),
                cap,
            },
        }
    }
}

/// The server side: column types learnt from RowDescriptions, and the columns of the rows now
/// arriving.
#[derive(Default)]
pub struct ServerSide {
    /// A described statement's column types, and whether a column rule masks each.
    statement_types: HashMap<Arc<str>, Arc<[(u32, bool)]>>,
    portal_columns: HashMap<Arc<str>, Arc<[Column]>>,
    /// From a simple query's RowDescription, or worked out at an Execute's first row (so the
    /// rows after it cost no lookup).
    current: Option<Arc<[Column]>>,
}

/// A RowDescription's columns.
pub fn decode_row_description(body: &[u8]) -> Option<Vec<Column>> {
    let count = usize::try_from(i16::from_be_bytes(body.get(..2)?.try_into().ok()?)).ok()?;
    let mut rest = &body[2..];
    let mut out = Vec::with_capacity(count);
    for _ in 0..count {
        let name_end = rest.iter().position(|&b| b == 0)?;
        let fixed = rest.get(name_end + 1..name_end + 1 + 18)?;
        let type_oid = u32::from_be_bytes(fixed[6..10].try_into().ok()?);
        let format = i16::from_be_bytes(fixed[16..18].try_into().ok()?);
        let table = u32::from_be_bytes(fixed[0..4].try_into().ok()?);
        let attnum = i16::from_be_bytes(fixed[4..6].try_into().ok()?);
        out.push(Column {
            type_oid,
            format,
            masked: false,
            source: (table, attnum),
        });
        rest = &rest[name_end + 1 + 18..];
    }
    rest.is_empty().then_some(out)
}

impl ServerSide {
    /// A RowDescription arrived (`columns`: its decoded columns, marked by the column rules).
    /// Returns true when it answers tollgate's own Describe (not to be forwarded).
    pub fn row_description(&mut self, tracker: &Tracker, columns: Option<Vec<Column>>) -> bool {
        let columns: Option<Arc<[Column]>> = columns.map(Arc::from);
        match tracker.front() {
            Some(Expect::OwnDescribe(name)) => {
                match columns {
                    Some(c) => {
                        if self.portal_columns.len() >= MAX_NAMES {
                            self.portal_columns.clear();
                        }
                        self.portal_columns.insert(name, c);
                    }
                    None => {
                        self.portal_columns.remove(&name);
                    }
                }
                tracker.pop();
                return true;
            }
            Some(Expect::DescribeStatement(name)) => {
                if let Some(c) = &columns {
                    if self.statement_types.len() >= MAX_NAMES {
                        self.statement_types.clear();
                    }
                    self.statement_types
                        .insert(name, c.iter().map(|c| (c.type_oid, c.masked)).collect());
                }
                tracker.pop();
            }
            Some(Expect::DescribePortal(name)) => {
                if let Some(c) = columns {
                    if self.portal_columns.len() >= MAX_NAMES {
                        self.portal_columns.clear();
                    }
                    self.portal_columns.insert(name, c);
                }
                tracker.pop();
            }
            _ => self.current = columns,
        }
        false
    }

    /// NoData arrived (a Describe of something that returns no rows). Returns true when it
    /// answers tollgate's own Describe.
    pub fn no_data(&mut self, tracker: &Tracker) -> bool {
        match tracker.front() {
            Some(Expect::OwnDescribe(name)) => {
                self.portal_columns.remove(&name);
                tracker.pop();
                true
            }
            Some(Expect::DescribeStatement(_) | Expect::DescribePortal(_)) => {
                tracker.pop();
                false
            }
            _ => false,
        }
    }

    /// ParseComplete, BindComplete or CloseComplete: what was known by that name is stale.
    pub fn completed(&mut self, tracker: &Tracker) {
        if let Some(Expect::Forget { statement, portal }) = tracker.front() {
            if let Some(s) = statement {
                self.statement_types.remove(&s);
            }
            if let Some(p) = portal {
                self.portal_columns.remove(&p);
            }
            tracker.pop();
        }
    }

    /// The columns of a DataRow arriving now, if known.
    pub fn row_columns(&mut self, tracker: &Tracker) -> Option<Arc<[Column]>> {
        if self.current.is_none() {
            self.current = self.lookup(tracker);
        }
        self.current.clone()
    }

    fn lookup(&self, tracker: &Tracker) -> Option<Arc<[Column]>> {
        match tracker.front() {
            Some(Expect::Execute {
                portal,
                statement,
                formats,
                ..
            }) => {
                if let Some(c) = self.portal_columns.get(&portal) {
                    return Some(Arc::clone(c));
                }
                let Some(types) = statement.as_ref().and_then(|s| self.statement_types.get(s))
                else {
                    // Types unknown: binary columns are withheld (type 0 is no type).
                    return formats.contains(&1).then(|| {
                        let n = if formats.len() == 1 {
                            MAX_COLUMNS
                        } else {
                            formats.len()
                        };
                        (0..n)
                            .map(|i| Column {
                                type_oid: 0,
                                format: if formats.len() == 1 {
                                    formats[0]
                                } else {
                                    formats[i]
                                },
                                masked: false,
                                source: (0, 0),
                            })
                            .collect()
                    });
                };
                let format = |i: usize| match formats.len() {
                    0 => 0,
                    1 => formats[0],
                    _ => formats.get(i).copied().unwrap_or(0),
                };
                Some(
                    types
                        .iter()
                        .enumerate()
                        .map(|(i, &(type_oid, masked))| Column {
                            source: (0, 0),
                            type_oid,
                            format: format(i),
                            masked,
                        })
                        .collect(),
                )
            }
            _ => None,
        }
    }

    /// CommandComplete, PortalSuspended or EmptyQueryResponse: an Execute (or one statement of
    /// a simple query) is done; the next rows are described afresh.
    pub fn execute_done(&mut self, tracker: &Tracker) {
        if matches!(tracker.front(), Some(Expect::Execute { .. })) {
            tracker.pop();
        }
        self.current = None;
    }

    pub fn error(&mut self, tracker: &Tracker) {
        if !matches!(
            tracker.front(),
            Some(Expect::Query { .. } | Expect::Call { .. })
        ) {
            tracker.skip_to_sync();
        }
        self.current = None;
    }

    pub fn ready(&mut self, tracker: &Tracker) {
        tracker.ready();
        self.current = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row_description(cols: &[(u32, i16)]) -> Vec<u8> {
        let mut b = (cols.len() as i16).to_be_bytes().to_vec();
        for (oid, format) in cols {
            b.extend_from_slice(b"c\0");
            b.extend_from_slice(&0u32.to_be_bytes());
            b.extend_from_slice(&0i16.to_be_bytes());
            b.extend_from_slice(&oid.to_be_bytes());
            b.extend_from_slice(&8i16.to_be_bytes());
            b.extend_from_slice(&(-1i32).to_be_bytes());
            b.extend_from_slice(&format.to_be_bytes());
        }
        b
    }

    #[test]
    fn extended_protocol_rows_get_the_bind_formats_and_described_types() {
        let tracker = Tracker::default();
        let mut client = ClientSide::default();
        let mut server = ServerSide::default();
        // Parse/Describe S/Sync, then Bind (binary)/Execute/Sync twice.
        tracker.push(Expect::DescribeStatement("s1".into()));
        tracker.push(Expect::Sync);
        client.bind("", "s1", [1i16].into_iter());
        tracker.push(client.execute(""));
        tracker.push(Expect::Sync);
        server.row_description(
            &tracker,
            decode_row_description(&row_description(&[(20, 0), (25, 0)])),
        );
        server.ready(&tracker);
        let cols = server.row_columns(&tracker).unwrap();
        assert_eq!(
            &*cols,
            &[
                Column {
                    type_oid: 20,
                    format: 1,
                    masked: false,
                    source: (0, 0),
                },
                Column {
                    type_oid: 25,
                    format: 1,
                    masked: false,
                    source: (0, 0),
                }
            ]
        );
        server.execute_done(&tracker);
        server.ready(&tracker);
        assert!(server.row_columns(&tracker).is_none());
    }

    #[test]
    fn caps_dropped_to_bound_memory_fall_back_to_a_cap_never_to_none() {
        let cap = ResultCap {
            rows: Some(crate::pipeline::CapLimit {
                max: 5,
                rule: "r".into(),
            }),
            bytes: None,
        };
        let mut client = ClientSide::default();
        client.parsed("plain", None);
        client.bind("p0", "plain", std::iter::empty());
        assert!(matches!(
            client.execute("p0"),
            Expect::Execute { cap: None, .. }
        ));
        for i in 0..=MAX_NAMES {
            client.parsed(&format!("s{i}"), Some(cap.clone()));
        }
        // "s0" was dropped with the others: its portal is capped all the same.
        client.bind("p1", "s0", std::iter::empty());
        assert!(matches!(
            client.execute("p1"),
            Expect::Execute { cap: Some(_), .. }
        ));
    }

    #[test]
    fn a_cursor_run_by_name_counts_against_the_tightest_cap_seen() {
        let limit = |max: u64, rule: &str| {
            Some(crate::pipeline::CapLimit {
                max,
                rule: rule.into(),
            })
        };
        let cap_of = |client: &ClientSide, portal: &str| match client.execute(portal) {
            Expect::Execute { cap, .. } => cap.map(|c| (c.rows.clone(), c.bytes.clone())),
            _ => unreachable!(),
        };
        let mut client = ClientSide::default();
        assert_eq!(cap_of(&client, "cur"), None);
        client.ruled(Some(&ResultCap {
            rows: limit(100, "a"),
            bytes: None,
        }));
        client.ruled(None);
        client.ruled(Some(&ResultCap {
            rows: limit(500, "b"),
            bytes: limit(9, "b"),
        }));
        client.ruled(Some(&ResultCap {
            rows: limit(50, "c"),
            bytes: None,
        }));
        assert_eq!(
            cap_of(&client, "cur"),
            Some((limit(50, "c"), limit(9, "b")))
        );
        // A portal the client bound to an uncapped statement keeps no cap.
        client.parsed("s", None);
        client.bind("p", "s", std::iter::empty());
        assert_eq!(cap_of(&client, "p"), None);
    }

    #[test]
    fn errors_skip_to_sync_and_simple_queries_use_their_description() {
        let tracker = Tracker::default();
        let mut client = ClientSide::default();
        let mut server = ServerSide::default();
        client.bind("", "s9", std::iter::empty());
        tracker.push(client.execute(""));
        tracker.push(Expect::Sync);
        tracker.push(Expect::Query { cap: None });
        server.error(&tracker);
        server.ready(&tracker);
        server.row_description(
            &tracker,
            decode_row_description(&row_description(&[(1700, 0)])),
        );
        assert_eq!(server.row_columns(&tracker).unwrap()[0].type_oid, 1700);
        server.execute_done(&tracker);
        assert!(server.row_columns(&tracker).is_none());
        server.ready(&tracker);
    }
}
