//! The PAN detector and masker over typical row text: bytes per second on data without PANs
//! (the common case, which must cost almost nothing) and with PANs.

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use std::hint::black_box;
use tollgate::mask::{Format, Masker};

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
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
