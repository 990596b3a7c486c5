//! Issue #17: false positives stay rare on realistic PAN-free data (timestamps, UUIDs, phone
//! numbers, IBANs, order and tracking numbers, amounts, addresses, floats, ids, sentences).
//! The rate is asserted; `cargo bench --bench mask` reports it beside the throughput.

#[path = "support/corpus.rs"]
mod corpus;

use std::collections::BTreeMap;

use tollgate::mask::pan;

#[test]
fn false_positive_rate_is_under_one_in_100_000() {
    const N: usize = 1_000_000;
    let values = corpus::values(N);
    let mut hits: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    for (kind, v) in &values {
        if !pan::find_all(v.as_bytes()).is_empty() {
            hits.entry(kind).or_default().push(v.clone());
        }
    }
    let total: usize = hits.values().map(Vec::len).sum();
    let rate = total as f64 / N as f64;
    println!("false positives: {total} of {N} values ({rate:.2e})");
    for (kind, found) in &hits {
        println!(
            "  {kind}: {} e.g. {:?}",
            found.len(),
            &found[..found.len().min(3)]
        );
    }
    assert!(rate < 1e-5, "false-positive rate {rate:.2e}: {hits:?}");
}
