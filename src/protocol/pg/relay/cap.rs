//! Result caps on the server-to-client path (`pipeline::ResultCap`, a rule's `result_cap`).
//!
//! Rows (DataRow, and CopyData of COPY TO STDOUT) are counted against the cap of the Query or
//! Execute they answer (`results::Expect`): a simple Query's rows together, an extended-protocol
//! portal's rows across all its Executes (a client fetching 100 rows at a time counts them
//! all) until the portal is bound again. Nothing is buffered: each row costs a compare.
//!
//! At the cap the row is withheld and the relay cancels the statement upstream
//! (CancelRequest with the upstream BackendKeyData). From then until ReadyForQuery, rows, copy
//! data and the statement's other answers are withheld; the first end of the statement
//! (CommandComplete, PortalSuspended, EmptyQueryResponse, or the server's own error, such as
//! its 57014 for the cancel) becomes tollgate's ErrorResponse 57014 naming the rule, and the
//! server's ReadyForQuery passes unchanged: its transaction status is the truth (a statement
//! cancelled inside a transaction block aborts it).

use std::collections::HashMap;
use std::sync::Arc;

use crate::pipeline::{CapLimit, ResultCap};
use crate::protocol::pg::messages::{Severity, put_error};
use crate::protocol::pg::results::{CapOf, Tracker};

/// Portals counted at once, at most; past it the counts start over (named portals live until
/// their transaction ends, so a client cannot hold many).
const MAX_PORTALS: usize = 10_000;

/// What becomes of one server message.
pub(super) enum Step {
    Pass,
    /// Not forwarded (nor recorded): the cap was reached before it.
    Withhold,
    /// Forwarded as this message instead (tollgate's error naming the cap).
    Replace(Vec<u8>),
    /// This row passed the cap: it is withheld, and the statement must be cancelled.
    Reached(Reached),
}

/// A cap reached: which limit, and what had been counted (the row that passed it included).
pub(super) struct Reached {
    pub what: &'static str,
    pub limit: CapLimit,
    pub rows: u64,
    pub bytes: u64,
}

/// One connection's counts against its statements' caps.
#[derive(Default)]
pub(super) struct Capping {
    /// The cap of the rows arriving now: `None` until looked up after a statement ends.
    current: Option<Option<CapOf>>,
    /// A simple Query's rows and bytes (until ReadyForQuery).
    query: (u64, u64),
    /// Each capped portal's rows and bytes (until it is bound again).
    portals: HashMap<Arc<str>, (u64, u64)>,
    /// The cap was reached in this unit: the error to send at the statement's end, until it
    /// is sent (`Some(None)` afterwards), up to ReadyForQuery.
    tripped: Option<Option<Vec<u8>>>,
}

impl Capping {
    /// Runs before the message's own stages (the tracker still shows what it answers).
    pub fn step(&mut self, tag: u8, body: &[u8], tracker: &Tracker) -> Step {
        match tag {
            b'D' | b'd' => {
                if self.tripped.is_some() {
                    return Step::Withhold;
                }
                let current = self.current.get_or_insert_with(|| tracker.current_cap());
                let Some((cap, portal)) = current else {
                    return Step::Pass;
                };
                let count = match portal {
                    None => &mut self.query,
                    Some(p) => {
                        if !self.portals.contains_key(p) && self.portals.len() >= MAX_PORTALS {
                            self.portals.clear();
                        }
                        self.portals.entry(Arc::clone(p)).or_default()
                    }
                };
                count.0 += 1;
                count.1 += body.len() as u64;
                let (rows, bytes) = *count;
                match cap.exceeded(rows, bytes) {
                    None => Step::Pass,
                    Some((what, limit)) => {
                        let mut error = Vec::new();
                        put_error(
                            &mut error,
                            Severity::Error,
                            "57014",
                            &ResultCap::message(what, limit),
                        );
                        self.tripped = Some(Some(error));
                        Step::Reached(Reached {
                            what,
                            limit: limit.clone(),
                            rows,
                            bytes,
                        })
                    }
                }
            }
            // The end of a statement (or of one Execute).
            b'C' | b's' | b'I' | b'E' => {
                self.current = None;
                match &mut self.tripped {
                    None => Step::Pass,
                    Some(error @ Some(_)) => Step::Replace(error.take().unwrap_or_default()),
                    // Errors after tollgate's own are the server's word: passed.
                    Some(None) if tag == b'E' => Step::Pass,
                    Some(None) => Step::Withhold,
                }
            }
            b'Z' => {
                self.current = None;
                self.query = (0, 0);
                let ended = self.tripped.take();
                // Outside a transaction block the server has dropped every portal.
                if body.first() == Some(&b'I') {
                    self.portals.clear();
                }
                match ended {
                    // The statement never ended before ReadyForQuery: the error goes first.
                    Some(Some(error)) => {
                        let mut out = error;
                        crate::protocol::pg::frame::put_message(&mut out, b'Z', body);
                        Step::Replace(out)
                    }
                    _ => Step::Pass,
                }
            }
            // BindComplete: the portal's count starts over.
            b'2' => {
                if !self.portals.is_empty()
                    && let Some(p) = tracker.bound_portal()
                {
                    self.portals.remove(&p);
                }
                self.withheld_after_cap()
            }
            // Notices, parameter changes and notifications are the session's, not the result's.
            b'N' | b'S' | b'A' => Step::Pass,
            _ => self.withheld_after_cap(),
        }
    }

    fn withheld_after_cap(&self) -> Step {
        if self.tripped.is_some() {
            Step::Withhold
        } else {
            Step::Pass
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::pg::results::{ClientSide, Expect};

    fn cap(rows: u64) -> ResultCap {
        ResultCap {
            rows: Some(CapLimit {
                max: rows,
                rule: "r".into(),
            }),
            bytes: None,
        }
    }

    fn name(step: &Step) -> &'static str {
        match step {
            Step::Pass => "pass",
            Step::Withhold => "withhold",
            Step::Replace(_) => "replace",
            Step::Reached(_) => "reached",
        }
    }

    #[test]
    fn a_query_stops_at_its_cap_and_its_end_becomes_the_error() {
        let tracker = Tracker::default();
        tracker.push(Expect::Query { cap: None });
        tracker.cap_last_query(Arc::new(cap(2)));
        let mut c = Capping::default();
        let steps: Vec<&str> = [
            (b'T', &b""[..]),
            (b'D', b"row"),
            (b'D', b"row"),
            (b'D', b"row"),
            (b'D', b"row"),
            (b'C', b"SELECT 4\0"),
            (b'N', b"notice"),
            (b'Z', b"I"),
        ]
        .iter()
        .map(|(tag, body)| name(&c.step(*tag, body, &tracker)))
        .collect();
        assert_eq!(
            steps,
            [
                "pass", "pass", "pass", "reached", "withhold", "replace", "pass", "pass"
            ]
        );
        // The next Query starts from nothing.
        tracker.pop_for_tests();
        tracker.push(Expect::Query { cap: None });
        tracker.cap_last_query(Arc::new(cap(2)));
        assert_eq!(name(&c.step(b'D', b"row", &tracker)), "pass");
    }

    #[test]
    fn a_portal_counts_across_its_executes_until_it_is_bound_again() {
        let tracker = Tracker::default();
        let mut client = ClientSide::default();
        client.parsed("s", Some(cap(3)));
        client.bind("p", "s", std::iter::empty());
        let mut c = Capping::default();
        // Execute(p, 2) twice, each ending in PortalSuspended.
        for (i, expected) in [["pass", "pass", "pass"], ["pass", "reached", "replace"]]
            .iter()
            .enumerate()
        {
            tracker.push(client.execute("p"));
            let got = [
                name(&c.step(b'D', b"r", &tracker)),
                name(&c.step(b'D', b"r", &tracker)),
                name(&c.step(b's', b"", &tracker)),
            ];
            assert_eq!(&got, expected, "execute {i}");
            tracker.pop_for_tests();
        }
        assert_eq!(name(&c.step(b'Z', b"T", &tracker)), "pass");
        // Bound again (BindComplete): the count starts over.
        tracker.push(Expect::Forget {
            statement: None,
            portal: Some("p".into()),
        });
        assert_eq!(name(&c.step(b'2', b"", &tracker)), "pass");
        tracker.pop_for_tests();
        tracker.push(client.execute("p"));
        assert_eq!(name(&c.step(b'D', b"r", &tracker)), "pass");
        // A statement parsed without a cap: its portals are not counted.
        client.parsed("s", None);
        client.bind("q", "s", std::iter::empty());
        tracker.pop_for_tests();
        tracker.push(client.execute("q"));
        c.step(b'C', b"", &tracker);
        for _ in 0..10 {
            assert_eq!(name(&c.step(b'D', b"r", &tracker)), "pass");
        }
    }
}
