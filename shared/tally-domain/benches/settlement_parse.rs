//! The per-record path of a settlement ingest on one core: each line through
//! `SettlementReader::push` (parse, validate, normalise) plus the shard of its
//! transaction ID. Criterion's `thrpt` line gives records/s in
//! `settlement_parse` and bytes/s in `settlement_parse_bytes`. A second
//! function times the standalone `parse_detail` (what a second pass uses).
//! Target: at least 1,000,000 records/s. Prints figures; asserts nothing.

use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use std::time::Duration;
use tally_domain::currency::Currency;
use tally_domain::recon::settlement::{
    format_detail, format_header, format_trailer, lines, parse_detail, Detail, Header, Record,
    SettlementReader, Trailer,
};
use tally_domain::recon::shard::{recon_shard, RECON_SHARD_COUNT_DEFAULT};
use tally_domain::recon::{ObjectKey, Sign, Txn, TxnType};
use tally_domain::{Decimal, NaiveDate};

const DETAILS: u64 = 200_000;

/// A valid file of `n` details, `\n`-separated, in memory.
fn file(n: u64) -> Vec<u8> {
    let file_date = NaiveDate::from_ymd_opt(2026, 11, 20).unwrap();
    let header = Header {
        created_at: file_date.and_hms_opt(23, 59, 0).unwrap(),
        program_id: "ACME".into(),
        file_date,
        file_sequence: 1,
        format_version: "001".into(),
        sender: "VISA".into(),
    };
    let ccys = ["USD", "EUR", "JPY", "BHD", "GBP"].map(|c| Currency::parse(c).unwrap());
    let mut trailer = Trailer {
        detail_count: n,
        debit_total_minor: 0,
        credit_total_minor: 0,
        fee_total_minor: 0,
    };
    let mut out = format_header(&header).into_bytes();
    for i in 1..=n {
        let currency = ccys[(i % 5) as usize];
        let amount_minor = (i * 7919) % 5_000_000;
        let fee_minor = amount_minor / 100;
        let sign = if i % 7 == 0 {
            Sign::Credit
        } else {
            Sign::Debit
        };
        match sign {
            Sign::Debit => trailer.debit_total_minor += u128::from(amount_minor),
            Sign::Credit => trailer.credit_total_minor += u128::from(amount_minor),
        }
        trailer.fee_total_minor += u128::from(fee_minor);
        let d = Detail {
            record_sequence: i,
            txn: Txn {
                transaction_id: format!("20261119ACME{i:012}"),
                auth_code: format!("{:06}", i % 1_000_000),
                masked_pan: "411111******1111".into(),
                transaction_date: file_date.pred_opt().unwrap(),
                transaction_type: if sign == Sign::Debit {
                    TxnType::Sale
                } else {
                    TxnType::Refund
                },
                currency,
                amount: Decimal::new(amount_minor as i64, currency.exponent()),
                sign,
            },
            settlement_date: file_date,
            fee: Decimal::new(fee_minor as i64, currency.exponent()),
            fee_sign: Sign::Credit,
            merchant_id: format!("MID{:012}", i % 5000),
            mcc: 5411,
            merchant_name: "CORNER GROCERY".into(),
        };
        out.push(b'\n');
        out.extend_from_slice(format_detail(&d).as_bytes());
    }
    out.push(b'\n');
    out.extend_from_slice(format_trailer(&trailer).as_bytes());
    out.push(b'\n');
    out
}

/// The ingest's pass: every line through the reader, every detail sharded.
fn ingest(key: &ObjectKey, data: &[u8]) -> u64 {
    let mut reader = SettlementReader::new(key);
    let mut shards = 0u64;
    for line in lines(data) {
        if let Record::Detail(d) = reader.push(line).expect("the bench file is valid") {
            shards += u64::from(recon_shard(
                &d.txn.transaction_id,
                RECON_SHARD_COUNT_DEFAULT,
            ));
        }
    }
    let summary = reader.finish().expect("the bench file is valid");
    shards + summary.details + summary.duplicate_suspects.len() as u64
}

/// Details only, each through the standalone parser.
fn reparse(data: &[u8]) -> u64 {
    let mut shards = 0u64;
    for (i, line) in lines(data).enumerate() {
        if line.first() == Some(&b'D') {
            let d = parse_detail(line, i as u64 + 1).expect("the bench file is valid");
            shards += u64::from(recon_shard(
                &d.txn.transaction_id,
                RECON_SHARD_COUNT_DEFAULT,
            ));
        }
    }
    shards
}

fn settlement_parse(c: &mut Criterion) {
    let key = ObjectKey::parse("settlement/ACME/2026-11-20/bench.dat").unwrap();
    let data = file(DETAILS);
    println!("settlement file: {DETAILS} details, {} bytes", data.len());

    let mut group = c.benchmark_group("settlement_parse");
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(8));
    group.throughput(Throughput::Elements(DETAILS));
    group.bench_function("reader_push_and_shard", |b| {
        b.iter(|| black_box(ingest(&key, black_box(&data))))
    });
    group.bench_function("parse_detail_and_shard", |b| {
        b.iter(|| black_box(reparse(black_box(&data))))
    });
    group.finish();

    let mut group = c.benchmark_group("settlement_parse_bytes");
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(8));
    group.throughput(Throughput::Bytes(data.len() as u64));
    group.bench_function("reader_push_and_shard", |b| {
        b.iter(|| black_box(ingest(&key, black_box(&data))))
    });
    group.finish();
}

criterion_group!(benches, settlement_parse);
criterion_main!(benches);
