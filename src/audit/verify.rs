//! Chain verification, over a store or an export bundle.
//!
//! For each chain, in sequence order: every record's hash is recomputed from its body; the
//! body must agree with the columns stored beside it; sequence numbers must have no gap; each
//! `prev` must be the hash of the record before. A chain that does not start at 1 (pruned, or
//! a bundle of a period) must start right after a checkpoint whose hash is its first `prev`.
//! Every checkpoint must carry a valid signature by the given key and match the record at its
//! position; a checkpoint beyond the last record means the tail was cut.

use std::collections::BTreeMap;

use super::record::{self, Body, Checkpoint, GENESIS, PublicKey};
use super::store::StoredRecord;

/// One finding, naming the first record it concerns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub chain: String,
    pub seq: u64,
    pub message: String,
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "chain {} record {}: {}",
            self.chain, self.seq, self.message
        )
    }
}

/// What was checked of one chain.
#[derive(Debug, Clone, Default)]
pub struct ChainReport {
    pub chain: String,
    pub records: u64,
    pub first_seq: Option<u64>,
    pub last_seq: Option<u64>,
    pub checkpoints: usize,
    pub last_checkpoint: Option<u64>,
    pub problems: Vec<Problem>,
    /// Records after the last checkpoint (verified as a chain, not yet signed).
    pub unsigned_tail: u64,
}

impl ChainReport {
    pub fn ok(&self) -> bool {
        self.problems.is_empty()
    }
}

/// Verifies one chain: records and checkpoints fed merged in sequence order (a checkpoint
/// right after the record at its position, or first when it anchors a chain that starts
/// later), so a chain of any length is checked in bounded memory.
pub struct ChainVerifier<'k> {
    report: ChainReport,
    key: &'k PublicKey,
    /// The checkpoint fed before the first record.
    anchor: Option<Checkpoint>,
    prev: Option<(u64, String)>,
    /// The highest checkpoint position seen, and the highest at or below the last record.
    max_checkpoint: u64,
    signed_through: u64,
    /// A chain in a store may start after 1 only where a recorded pruning says so.
    require_pruning: bool,
    /// `through_seq` of every `audit_pruned` record seen.
    pruned_through: std::collections::BTreeSet<u64>,
}

/// At most this many problems are listed per chain (the first is what matters).
const MAX_PROBLEMS: usize = 20;

impl<'k> ChainVerifier<'k> {
    pub fn new(chain: &str, key: &'k PublicKey) -> ChainVerifier<'k> {
        ChainVerifier {
            report: ChainReport {
                chain: chain.to_owned(),
                ..ChainReport::default()
            },
            key,
            anchor: None,
            prev: None,
            max_checkpoint: 0,
            signed_through: 0,
            require_pruning: false,
            pruned_through: Default::default(),
        }
    }

    /// For a whole store: a chain that starts after 1 must carry the `audit_pruned` record
    /// of that pruning (a bundle of a period starts where it likes).
    pub fn requiring_pruning_records(mut self) -> Self {
        self.require_pruning = true;
        self
    }

    fn problem(&mut self, seq: u64, message: String) {
        if self.report.problems.len() < MAX_PROBLEMS {
            self.report.problems.push(Problem {
                chain: self.report.chain.clone(),
                seq,
                message,
            });
        }
    }

    /// The next checkpoint, after every record up to its position.
    pub fn checkpoint(&mut self, c: Checkpoint) {
        self.report.checkpoints += 1;
        self.report.last_checkpoint = Some(c.seq);
        self.max_checkpoint = self.max_checkpoint.max(c.seq);
        if c.chain != self.report.chain {
            self.problem(c.seq, format!("checkpoint names chain {:?}", c.chain));
            return;
        }
        if c.key_id != self.key.key_id() {
            self.problem(
                c.seq,
                format!(
                    "checkpoint signed by key {} but the public key given is {}",
                    c.key_id,
                    self.key.key_id()
                ),
            );
            return;
        }
        if !self.key.verifies(&c) {
            self.problem(
                c.seq,
                "checkpoint signature is not valid (checkpoint modified or forged)".into(),
            );
            return;
        }
        match &self.prev {
            None => self.anchor = Some(c),
            Some((seq, hash)) if *seq == c.seq => {
                if *hash != c.hash {
                    self.problem(
                        c.seq,
                        "it differs from what the checkpoint at its position signed (record modified)"
                            .into(),
                    );
                } else {
                    self.signed_through = c.seq;
                }
            }
            // A checkpoint whose record never came: reported as a gap or a cut tail.
            Some(_) => {}
        }
    }

    /// The next stored record.
    pub fn feed(&mut self, r: &StoredRecord) {
        self.report.records += 1;
        self.report.first_seq.get_or_insert(r.seq);
        if record::hash(&r.body) != r.hash {
            self.problem(
                r.seq,
                "its content does not match its hash (record modified)".into(),
            );
        }
        let body = match serde_json::from_str::<Body>(&r.body) {
            Ok(body) => body,
            Err(e) => {
                self.problem(r.seq, format!("its body is not a valid record ({e})"));
                self.prev = Some((r.seq, r.hash.clone()));
                self.report.last_seq = Some(r.seq);
                return;
            }
        };
        if body.kind == super::kind::AUDIT_PRUNED
            && let Some(through) = body.detail["through_seq"].as_u64()
        {
            self.pruned_through.insert(through);
        }
        if body.seq != r.seq
            || body.chain != r.chain
            || body.ts != r.ts
            || body.kind != r.kind
            || body.outcome != r.outcome
            || body.session != r.session
        {
            self.problem(
                r.seq,
                format!(
                    "its stored position or columns disagree with its body (body says seq {}; record moved, swapped or modified)",
                    body.seq
                ),
            );
        }
        match self.prev.clone() {
            None if r.seq == 1 => {
                if body.prev != GENESIS {
                    self.problem(1, "the first record does not start the chain".into());
                }
            }
            None => match &self.anchor {
                Some(c) if c.seq + 1 == r.seq && c.hash == body.prev => {
                    self.signed_through = c.seq;
                }
                Some(c) if c.seq + 1 == r.seq => self.problem(
                    r.seq,
                    format!(
                        "it does not follow the signed checkpoint at {} (records before it modified)",
                        c.seq
                    ),
                ),
                _ => self.problem(
                    r.seq,
                    format!(
                        "records before {} are missing and no checkpoint anchors the rest (deleted)",
                        r.seq
                    ),
                ),
            },
            Some((prev_seq, prev_hash)) => {
                if r.seq <= prev_seq {
                    self.problem(r.seq, format!("it comes after record {prev_seq} (reordered)"));
                } else if r.seq != prev_seq + 1 {
                    self.problem(
                        prev_seq + 1,
                        format!(
                            "missing: the chain jumps from {prev_seq} to {} (deleted)",
                            r.seq
                        ),
                    );
                } else if body.prev != prev_hash {
                    self.problem(
                        prev_seq,
                        format!(
                            "record {} was chained to a different record {prev_seq} (record {prev_seq} modified, inserted or swapped)",
                            r.seq
                        ),
                    );
                }
            }
        }
        self.prev = Some((r.seq, r.hash.clone()));
        self.report.last_seq = Some(r.seq);
    }

    pub fn finish(mut self) -> ChainReport {
        let last = self.report.last_seq.unwrap_or(0);
        if self.max_checkpoint > last {
            let from = last + 1;
            let to = self.max_checkpoint;
            self.problem(
                from,
                format!(
                    "the chain ends at {last} but a checkpoint was signed at {to}: records {from} to {to} are missing (truncated)"
                ),
            );
        }
        if self.require_pruning
            && let Some(first) = self.report.first_seq
            && first > 1
            && !self.pruned_through.contains(&(first - 1))
        {
            self.problem(
                first,
                format!(
                    "records 1 to {} are gone but the chain records no pruning through {} (deleted)",
                    first - 1,
                    first - 1
                ),
            );
        }
        self.report.unsigned_tail = last.saturating_sub(self.signed_through);
        self.report.problems.sort_by_key(|p| p.seq);
        self.report
    }
}

/// Verifies every chain of a store, paging through records and checkpoints.
pub async fn store(
    store: &mut super::Store,
    key: &PublicKey,
) -> Result<Vec<ChainReport>, super::store::Error> {
    const PAGE: usize = 2000;
    let mut reports = Vec::new();
    for chain in store.chains().await? {
        let mut v = ChainVerifier::new(&chain, key).requiring_pruning_records();
        let mut checkpoints = std::collections::VecDeque::new();
        let mut cp_after: Option<u64> = None;
        let mut cp_done = false;
        let mut after = 0;
        loop {
            let page = store.page(&chain, after, PAGE).await?;
            let end = page.last().map(|r| r.seq);
            for r in &page {
                // Checkpoints before this record (anchors and those of earlier records).
                loop {
                    if checkpoints.is_empty() && !cp_done {
                        let more = store.checkpoint_page(&chain, cp_after, PAGE).await?;
                        cp_done = more.len() < PAGE;
                        cp_after = more.last().map(|c: &Checkpoint| c.seq).or(cp_after);
                        checkpoints.extend(more);
                    }
                    match checkpoints.front() {
                        Some(c) if c.seq < r.seq => {
                            let c = checkpoints.pop_front().expect("front exists");
                            v.checkpoint(c);
                        }
                        _ => break,
                    }
                }
                v.feed(r);
            }
            match end {
                Some(seq) => after = seq,
                None => break,
            }
        }
        loop {
            while let Some(c) = checkpoints.pop_front() {
                v.checkpoint(c);
            }
            if cp_done {
                break;
            }
            let more = store.checkpoint_page(&chain, cp_after, PAGE).await?;
            cp_done = more.len() < PAGE;
            cp_after = more.last().map(|c| c.seq).or(cp_after);
            checkpoints.extend(more);
        }
        reports.push(v.finish());
    }
    Ok(reports)
}

/// Verifies an export bundle (see `export`), streaming it line by line.
pub fn bundle(reader: impl std::io::BufRead, key: &PublicKey) -> Result<Vec<ChainReport>, String> {
    use super::export::BundleLine;
    let mut verifiers: BTreeMap<String, ChainVerifier<'_>> = BTreeMap::new();
    let mut header = false;
    for (n, line) in reader.lines().enumerate() {
        let line = line.map_err(|e| e.to_string())?;
        if line.is_empty() {
            continue;
        }
        let parsed: BundleLine = serde_json::from_str(&line)
            .map_err(|e| format!("line {}: not a bundle line: {e}", n + 1))?;
        match parsed {
            BundleLine::Header { format, .. } => {
                if header || n > 0 {
                    return Err(format!("line {}: a second header", n + 1));
                }
                if format != super::export::BUNDLE_FORMAT {
                    return Err(format!("line 1: unknown bundle format {format:?}"));
                }
                header = true;
            }
            _ if !header => return Err("line 1: not a bundle header".into()),
            BundleLine::Record(r) => {
                let stored = r.into_stored();
                verifiers
                    .entry(stored.chain.clone())
                    .or_insert_with(|| ChainVerifier::new(&stored.chain, key))
                    .feed(&stored);
            }
            BundleLine::Checkpoint(c) => verifiers
                .entry(c.chain.clone())
                .or_insert_with(|| ChainVerifier::new(&c.chain, key))
                .checkpoint(c),
        }
    }
    if !header {
        return Err("the bundle is empty".into());
    }
    Ok(verifiers.into_values().map(ChainVerifier::finish).collect())
}
