//! The trail's own sections (PCI DSS 10.3–10.7): integrity and backups, daily reviews,
//! retention, time, failures.

use std::time::{Duration, SystemTime};

use serde_json::json;

use super::gather::{Evidence, Review, StoreFacts};
use super::sections::{generic_subject, judge, locations, section, time};
use super::{Inputs, Section, Table, Verdict};
use crate::audit::export::Period;
use crate::audit::verify::ChainReport;

/// A signed bundle older than this is an attention finding (10.3.3: promptly backed up).
const BUNDLE_MAX_AGE: Duration = Duration::from_secs(86_400);
/// A clock further off than this from a target's is an attention finding (10.6.1).
const SKEW_LIMIT_MS: f64 = 1000.0;
/// PCI DSS 10.5.1: a year of history, the last three months at hand.
const RETENTION_DAYS: u32 = 365;
const AT_HAND_DAYS: u64 = 92;

pub(super) fn integrity(chains: &[ChainReport], f: &StoreFacts, inputs: &Inputs) -> Section {
    let mut s = section(
        "10",
        "10.3.3 / 10.3.4",
        "Trail protected from change, backed up as signed bundles",
    );
    let ok = chains.iter().all(ChainReport::ok);
    s.facts.push(format!(
        "Chain verification: {} ({} chain(s)).",
        if ok { "PASSED" } else { "FAILED" },
        chains.len()
    ));
    s.tables.push(Table {
        caption: "Chains".into(),
        columns: vec![
            "chain",
            "records",
            "checkpoints",
            "last signed record",
            "unsigned tail",
            "status",
        ],
        rows: chains
            .iter()
            .map(|c| {
                vec![
                    c.chain.clone(),
                    format!("{}–{}", c.first_seq.unwrap_or(0), c.last_seq.unwrap_or(0)),
                    c.checkpoints.to_string(),
                    c.last_checkpoint.map_or("never".into(), |s| s.to_string()),
                    c.unsigned_tail.to_string(),
                    match c.problems.first() {
                        None => "intact".to_owned(),
                        Some(p) => format!("first problem: {p}"),
                    },
                ]
            })
            .collect(),
    });
    // How far back-to-back complete bundles carry the trail from its oldest record: a bundle
    // counts only if it starts where the coverage so far ends (or covers everything).
    let mut covered: Option<String> = None;
    let mut disconnected = 0;
    for b in &f.bundles {
        let end = b
            .until
            .clone()
            .map_or(b.ts.clone(), |u| u.min(b.ts.clone()));
        let connects = match (&b.since, &covered) {
            (None, _) => true,
            (Some(since), Some(c)) => since <= c,
            (Some(since), None) => f.oldest.as_ref().is_none_or(|o| since <= o),
        };
        if connects {
            covered = Some(covered.map_or(end.clone(), |c| c.max(end)));
        } else {
            disconnected += 1;
        }
    }
    let last = f.bundles.last();
    let age = covered.as_deref().and_then(time).map(|t| {
        time(&inputs.now)
            .and_then(|now| now.duration_since(t).ok())
            .unwrap_or(Duration::ZERO)
    });
    s.facts.push(match last {
        Some(b) => format!(
            "Last complete signed bundle: {} by {}, records from {} to {} ({} records){}.",
            b.ts,
            b.by,
            b.since.as_deref().unwrap_or("the beginning"),
            b.until.as_deref().unwrap_or("its export"),
            b.records,
            b.out.as_deref().map(|o| format!(", written to {o}")).unwrap_or_default()
        ),
        None => "Never exported to its end as a signed bundle (`tollgate audit export --format bundle`).".into(),
    });
    s.facts.push(match (&covered, age) {
        (Some(c), Some(age)) => format!(
            "Complete bundles carry the trail without a gap from its oldest record up to {c} ({} hours before this report); {disconnected} bundle(s) start after a gap and extend nothing.",
            age.as_secs() / 3600
        ),
        _ => "No complete bundle carries the trail from its oldest record.".into(),
    });
    s.tables.push(Table {
        caption: "Complete signed bundles".into(),
        columns: vec!["completed", "by", "from", "to", "records", "file"],
        rows: f
            .bundles
            .iter()
            .map(|b| {
                vec![
                    b.ts.clone(),
                    b.by.clone(),
                    b.since.clone().unwrap_or_else(|| "the beginning".into()),
                    b.until.clone().unwrap_or_else(|| "its export".into()),
                    b.records.to_string(),
                    b.out.clone().unwrap_or_else(|| "standard output".into()),
                ]
            })
            .collect(),
    });
    s.figures = json!({"chains": chains.len(), "intact": ok, "last_bundle": last, "covered_until": covered, "bundle_age_s": age.map(|a| a.as_secs()), "disconnected_bundles": disconnected});
    if !ok {
        judge(
            &mut s,
            Verdict::Attention,
            "chain verification FAILED: see the first problem of each chain",
        );
    } else if chains.is_empty() {
        judge(&mut s, Verdict::NotEvidenced, "the store holds no chain");
    } else {
        match age {
            None => judge(
                &mut s,
                Verdict::Attention,
                "chains intact, but no complete signed bundle carries the trail from its oldest record",
            ),
            Some(a) if a > BUNDLE_MAX_AGE => judge(
                &mut s,
                Verdict::Attention,
                "chains intact, but the signed bundles stop more than a day before this report",
            ),
            Some(_) => judge(
                &mut s,
                Verdict::Met,
                "chains intact, and complete signed bundles carry the trail to within a day of this report",
            ),
        }
    }
    s
}

/// Who can read the store outside tollgate (PCI DSS 10.3.1): the SQLite file's owner and mode.
pub(super) fn access(inputs: &Inputs) -> Section {
    use std::os::unix::fs::MetadataExt;
    let mut s = section("10", "10.3.1 / 10.3.2", "Read access to the trail limited");
    let Some(file) = &inputs.store_file else {
        s.facts.push("The store is a PostgreSQL database: who can read it is decided by its grants and pg_hba.conf, outside what tollgate records.".into());
        judge(
            &mut s,
            Verdict::NotEvidenced,
            "review the store database's grants (only tollgate's role and the auditors' should read audit_records)",
        );
        return s;
    };
    let mut open_to_others = Vec::new();
    let mut rows = Vec::new();
    for suffix in ["", "-wal", "-shm"] {
        let path = std::path::PathBuf::from(format!("{}{suffix}", file.display()));
        let Ok(m) = std::fs::metadata(&path) else {
            continue;
        };
        let mode = m.mode() & 0o777;
        if mode & 0o077 != 0 {
            open_to_others.push(path.display().to_string());
        }
        rows.push(vec![
            path.display().to_string(),
            format!("{mode:04o}"),
            m.uid().to_string(),
            m.gid().to_string(),
        ]);
    }
    s.facts.push("tollgate creates the SQLite store readable and writable by its own account only (0600); anyone who can read the file reads the trail without being recorded.".into());
    s.tables.push(Table {
        caption: "Store files".into(),
        columns: vec!["file", "mode", "owner uid", "group gid"],
        rows,
    });
    s.figures = json!({"open_to_others": open_to_others});
    if open_to_others.is_empty() {
        judge(
            &mut s,
            Verdict::Met,
            "the store's files are readable by their owner only",
        );
    } else {
        judge(
            &mut s,
            Verdict::Attention,
            format!(
                "readable or writable beyond their owner: {}",
                open_to_others.join(", ")
            ),
        );
    }
    s
}

/// `YYYY-MM-DD` of the day after.
fn next_day(day: &str) -> Option<String> {
    let t = humantime::parse_rfc3339_weak(&format!("{day}T00:00:00Z")).ok()?
        + Duration::from_secs(86_400);
    Some(humantime::format_rfc3339_seconds(t).to_string()[..10].to_owned())
}

pub(super) fn reviews(e: &Evidence, f: &StoreFacts, period: &Period, inputs: &Inputs) -> Section {
    let mut s = section("10", "10.4.1 / 10.4.1.1", "Security events reviewed daily");
    // From the period's start (or its first record) to the day before the report: today is
    // not due yet.
    let start = match (&period.since, &e.first) {
        (Some(since), Some(first)) => since.clone().max(first.clone()),
        (None, Some(first)) => first.clone(),
        _ => String::new(),
    };
    let today = inputs.now.get(..10).unwrap_or_default().to_owned();
    let end = match &period.until {
        Some(u) => u.clone().min(format!("{today}T00:00:00Z")),
        None => format!("{today}T00:00:00Z"),
    };
    let mut days = Vec::new();
    if let Some(mut day) = start.get(..10).map(str::to_owned) {
        while day.as_str() < end.get(..10).unwrap_or_default() && days.len() < 400 {
            days.push(day.clone());
            match next_day(&day) {
                Some(d) => day = d,
                None => break,
            }
        }
    }
    // A review counts when a verified, individual reader who is not one of the period's
    // database clients recorded it after the day had ended.
    let accepted = |r: &Review| {
        r.source != "unverified"
            && !generic_subject(&r.reviewer)
            && e.identities
                .get(&r.reviewer)
                .is_none_or(|i| i.sessions == 0)
            && next_day(&r.day).is_some_and(|end| r.ts >= end)
    };
    let reviewed = |d: &String| f.reviews.get(d).is_some_and(|rs| rs.iter().any(accepted));
    let unreviewed: Vec<&String> = days.iter().filter(|d| !reviewed(d)).collect();
    let with_events: Vec<&&String> = unreviewed
        .iter()
        .filter(|d| e.event_days.contains(**d))
        .collect();
    let rejected = f
        .reviews
        .values()
        .flatten()
        .filter(|r| !accepted(r))
        .count();
    s.facts = vec![
        format!(
            "{} day(s) due in the period, {} reviewed, {} without an accepted review ({} of them with security events: refusals, failed logins, approvals or outages).",
            days.len(),
            days.len() - unreviewed.len(),
            unreviewed.len(),
            with_events.len()
        ),
        format!("{rejected} recorded review(s) not accepted: by an unverified, shared or agent identity, or recorded before the day ended."),
        "A reviewer records a day's review with `tollgate audit review --date YYYY-MM-DD` after reading its security events.".into(),
    ];
    s.tables.push(Table {
        caption: "Days without an accepted review".into(),
        columns: vec!["day", "security events"],
        rows: unreviewed
            .iter()
            .map(|d| {
                vec![
                    (*d).clone(),
                    if e.event_days.contains(*d) {
                        "yes".into()
                    } else {
                        "no".into()
                    },
                ]
            })
            .collect(),
    });
    s.tables.push(Table {
        caption: "Recorded reviews".into(),
        columns: vec![
            "day",
            "reviewer",
            "named by",
            "recorded",
            "accepted",
            "note",
            "claimed as",
        ],
        rows: f
            .reviews
            .values()
            .flatten()
            .map(|r| {
                vec![
                    r.day.clone(),
                    r.reviewer.clone(),
                    r.source.clone(),
                    r.ts.clone(),
                    if accepted(r) {
                        "yes".into()
                    } else {
                        "no".into()
                    },
                    r.note.clone(),
                    r.claimed_as.clone(),
                ]
            })
            .collect(),
    });
    s.figures = json!({"days": days.len(), "unreviewed": unreviewed, "unreviewed_with_events": with_events, "rejected_reviews": rejected});
    if days.is_empty() {
        judge(
            &mut s,
            Verdict::NotEvidenced,
            "no complete day in the period",
        );
    } else if unreviewed.is_empty() {
        judge(
            &mut s,
            Verdict::Met,
            "every day of the period was reviewed after it ended by a named, verified reviewer",
        );
    } else {
        judge(
            &mut s,
            Verdict::Attention,
            format!("{} day(s) without an accepted review", unreviewed.len()),
        );
    }
    s
}

pub(super) fn retention(f: &StoreFacts, inputs: &Inputs) -> Section {
    let mut s = section(
        "10",
        "10.5.1",
        "Audit history kept a year, the last three months at hand",
    );
    let now = time(&inputs.now).unwrap_or_else(SystemTime::now);
    let at_hand_from = now - Duration::from_secs(AT_HAND_DAYS * 86_400);
    let oldest = f.oldest.as_deref().and_then(time);
    // Records younger than three months removed by a pruning.
    let cut_recent = f
        .prunings
        .iter()
        .filter(|(_, older_than)| time(older_than).is_some_and(|t| t > at_hand_from))
        .count();
    let covers = oldest.is_some_and(|o| o <= at_hand_from);
    // Prunings that removed records younger than a year at the time they ran.
    let cut_young = f
        .prunings
        .iter()
        .filter(|(at, older_than)| match (time(at), time(older_than)) {
            (Some(at), Some(cut)) => {
                at.duration_since(cut).unwrap_or_default()
                    < Duration::from_secs(u64::from(RETENTION_DAYS) * 86_400)
            }
            _ => true,
        })
        .count();
    s.facts = vec![
        format!(
            "Oldest record in the store: {}.",
            f.oldest.as_deref().unwrap_or("none")
        ),
        format!(
            "Configured retention: {}.",
            match inputs.retention_days {
                0 => "records are never pruned".to_owned(),
                d => format!("{d} days"),
            }
        ),
        format!(
            "{} retention pruning(s) recorded; {cut_recent} removed records younger than three months.",
            f.prunings.len()
        ),
    ];
    s.tables.push(Table {
        caption: "Records in the last three 30-day windows".into(),
        columns: vec!["from", "to", "records"],
        rows: f
            .recent
            .iter()
            .map(|(a, b, n)| vec![a.clone(), b.clone(), n.to_string()])
            .collect(),
    });
    s.tables.push(Table {
        caption: "Prunings".into(),
        columns: vec!["when", "removed records older than"],
        rows: f
            .prunings
            .iter()
            .map(|(a, b)| vec![a.clone(), b.clone()])
            .collect(),
    });
    s.figures = json!({
        "oldest": f.oldest,
        "retention_days": inputs.retention_days,
        "prunings": f.prunings.len(),
        "three_months_at_hand": covers || (oldest.is_some() && cut_recent == 0),
        "prunings_under_a_year": cut_young,
        "recent": f.recent,
    });
    if oldest.is_none() {
        judge(&mut s, Verdict::NotEvidenced, "the store holds no record");
    } else if inputs.retention_days != 0 && inputs.retention_days < RETENTION_DAYS {
        judge(
            &mut s,
            Verdict::Attention,
            format!(
                "audit.retention_days is {}, under the 12 months PCI DSS asks for (unless older records are kept elsewhere)",
                inputs.retention_days
            ),
        );
    } else if cut_young > 0 {
        judge(
            &mut s,
            Verdict::Attention,
            format!("{cut_young} pruning(s) removed records younger than twelve months"),
        );
    } else if cut_recent > 0 {
        judge(
            &mut s,
            Verdict::Attention,
            "a pruning removed records from the last three months",
        );
    } else if covers {
        judge(
            &mut s,
            Verdict::Met,
            "the last three months are in the store and retention keeps at least twelve",
        );
    } else {
        judge(
            &mut s,
            Verdict::Met,
            "the store holds everything since its first record (younger than three months, nothing pruned from that time); retention keeps at least twelve months",
        );
    }
    s
}

pub(super) fn clocks(e: &Evidence) -> Section {
    let mut s = section("10", "10.6.1–10.6.3", "Synchronized time");
    let samples: u64 = e.clocks.values().map(|c| c.samples).sum();
    let failed: u64 = e.clocks.values().map(|c| c.failed).sum();
    let unsampled = e.sessions.saturating_sub(samples + failed);
    let worst = e
        .clocks
        .values()
        .filter(|c| c.samples > 0)
        .map(|c| c.worst_skew_ms)
        .fold(0.0_f64, |a, b| if b.abs() > a.abs() { b } else { a });
    s.facts = vec![
        format!(
            "The skew between tollgate's clock and each target server's is sampled at every session start and recorded: {samples} samples, {failed} failed, {unsampled} session(s) without a sample."
        ),
        if samples == 0 {
            "Largest skew in the period: none sampled.".to_owned()
        } else {
            format!("Largest skew in the period: {worst:.3} ms (server minus tollgate); the limit used here is {SKEW_LIMIT_MS} ms.")
        },
        "Record times are UTC from tollgate's host clock: keep it synchronized (NTP), as the targets' servers.".into(),
    ];
    s.tables.push(Table {
        caption: "Clock skew by target".into(),
        columns: vec!["target", "samples", "failed", "largest skew (ms)", "at"],
        rows: e
            .clocks
            .iter()
            .map(|(t, c)| {
                vec![
                    t.clone(),
                    c.samples.to_string(),
                    c.failed.to_string(),
                    if c.samples == 0 {
                        "—".into()
                    } else {
                        format!("{:.3}", c.worst_skew_ms)
                    },
                    c.worst_at.clone(),
                ]
            })
            .collect(),
    });
    s.figures = json!({"samples": samples, "failed": failed, "unsampled_sessions": unsampled, "worst_skew_ms": if samples == 0 { None } else { Some(worst) }});
    if samples == 0 {
        judge(
            &mut s,
            Verdict::NotEvidenced,
            "no clock sample recorded in the period",
        );
    } else if worst.abs() > SKEW_LIMIT_MS {
        judge(
            &mut s,
            Verdict::Attention,
            format!("a target's clock was {worst:.0} ms off tollgate's"),
        );
    } else if failed + unsampled > 0 {
        judge(
            &mut s,
            Verdict::Attention,
            format!(
                "samples within {SKEW_LIMIT_MS} ms, but {} session(s) have no sample (failed or not taken)",
                failed + unsampled
            ),
        );
    } else {
        judge(
            &mut s,
            Verdict::Met,
            format!("every session's server clock within {SKEW_LIMIT_MS} ms of tollgate's"),
        );
    }
    s
}

pub(super) fn failures(e: &Evidence) -> Section {
    let mut s = section(
        "10",
        "10.7.1 / 10.7.2",
        "Failures of critical security controls",
    );
    s.facts = vec![format!(
        "{} audit store outage(s); while the store failed, statements were refused rather than run unrecorded. {} start(s) after an unclean stop.",
        e.store_failures.len(),
        e.unclean_starts
    )];
    s.tables
        .push(locations("Store outages", &e.store_failures, "error"));
    s.figures =
        json!({"store_failures": e.store_failures.len(), "unclean_starts": e.unclean_starts});
    if e.records == 0 {
        judge(&mut s, Verdict::NotEvidenced, "no records in the period");
    } else if e.store_failures.is_empty() && e.unclean_starts == 0 {
        judge(
            &mut s,
            Verdict::Met,
            "no failure of the trail in the period",
        );
    } else {
        judge(
            &mut s,
            Verdict::Attention,
            "failures were detected and recorded (the data path refused while the trail could not record); confirm each was responded to (10.7.3)",
        );
    }
    s
}
