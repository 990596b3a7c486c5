//! The PAN detector and masker over typical row text: bytes per second on data without PANs
//! (the common case, which must cost almost nothing) and with PANs.

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use std::hint::black_box;
use tollgate::mask::{Format, Masker, pan};

#[path = "../tests/support/corpus.rs"]
mod corpus;

fn rows(with_pans: bool) -> Vec<u8> {
    let mut out = Vec::new();
    for i in 0..10_000u64 {
        let card = if with_pans && i % 4 == 0 {
            "4111111111111111"
        } else {
            "n/a"
        };
        out.extend_from_slice(
            format!(
                "{i}\tcustomer {i}\t{{\"city\": \"Lyon\", \"orders\": {}, \"since\": 1700000000000}}\t{card}\t2026-11-26 05:03:06+00\n",
                i * 7
            )
            .as_bytes(),
        );
    }
    out
}

fn bench(c: &mut Criterion) {
    let masker = Masker::new(Format::BinLast4, None);
    let mut group = c.benchmark_group("mask");
    for (name, data) in [("no-pan", rows(false)), ("pans", rows(true))] {
        group.throughput(Throughput::Bytes(data.len() as u64));
        group.bench_function(name, |b| {
            b.iter(|| black_box(masker.mask(black_box(&data)).len()))
        });
    }
    // Per DataRow value, as the relay calls it: many short values.
    let values: Vec<Vec<u8>> = (0..1000u64)
        .map(|i| format!("value {i} of 1000").into_bytes())
        .collect();
    group.throughput(Throughput::Bytes(
        values.iter().map(|v| v.len() as u64).sum(),
    ));
    group.bench_function("short-values", |b| {
        b.iter(|| {
            values
                .iter()
                .map(|v| masker.mask(black_box(v)).len())
                .sum::<usize>()
        })
    });
    // Issue #17: the PAN-free corpus of realistic values (timestamps, UUIDs, phone numbers,
    // IBANs, order and tracking numbers, amounts, addresses, floats, ids, sentences), one value
    // per line; its false-positive rate is printed beside the throughput.
    let values = corpus::values(200_000);
    let found = values
        .iter()
        .filter(|(_, v)| !pan::find_all(v.as_bytes()).is_empty())
        .count();
    println!(
        "false positives on the PAN-free corpus: {found} of {} values",
        values.len()
    );
    let text: Vec<u8> = values
        .iter()
        .flat_map(|(_, v)| v.bytes().chain(std::iter::once(b'\n')))
        .collect();
    group.throughput(Throughput::Bytes(text.len() as u64));
    group.bench_function("corpus", |b| {
        b.iter(|| black_box(masker.mask(black_box(&text)).len()))
    });
    // Prose without digits: the fast path, no copy.
    let prose = "The quick brown fox jumps over the lazy dog; cafés and naïve résumés too. "
        .repeat(14_000)
        .into_bytes();
    group.throughput(Throughput::Bytes(prose.len() as u64));
    group.bench_function("prose", |b| {
        b.iter(|| black_box(masker.mask(black_box(&prose)).len()))
    });
    // Every spelling of the issue, one in four rows.
    let spelled: Vec<u8> = (0..20_000)
        .flat_map(|i| {
            let card = match i % 16 {
                0 => "4111.1111.1111.1111",
                4 => "４１１１１１１１１１１１１１１１",
                8 => "4111\u{200b}1111\u{200b}1111\u{200b}1111",
                12 => "41111111111111111225",
                _ => "n/a",
            };
            format!("{i}\tcustomer {i}\t{card}\t2026-11-26 05:03:06+00\n").into_bytes()
        })
        .collect();
    group.throughput(Throughput::Bytes(spelled.len() as u64));
    group.bench_function("spellings", |b| {
        b.iter(|| black_box(masker.mask(black_box(&spelled)).len()))
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
