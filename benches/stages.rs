//! Criterion benches of each stage on generated in-memory input, reported
//! in bytes per second: `cargo bench --bench stages`.
//!
//! - decode: the JSON scanner capturing the five mapped paths (alone and
//!   through the structural index), the splitter that finds chunk
//!   boundaries, gzip;
//! - mapping: a chunk of JSON records into CSV rows, with and without the
//!   output check the workers make, and a Parquet file of the same kind of
//!   events (per byte of the file);
//! - csv: encoding rows in the Personalize dialect.

use std::hint::black_box;
use std::io::Write;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use personalize_prep::bench;

const MAPS: [(&str, &str); 5] = [
    ("USER_ID", "user_id"),
    ("ITEM_ID", "item_id"),
    ("EVENT_TYPE", "event_type"),
    ("EVENT_VALUE", "event_value"),
    ("TIMESTAMP", "ts"),
];

/// About `bytes` of Firehose-style concatenated JSON: two producers (one
/// with `", "` separators and integer ids, one compact with string ids),
/// fields to drop, free text with escapes and UTF-8, ids needing quotes.
fn events(bytes: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(bytes + 512);
    let mut x = 0x9E37_79B9_7F4A_7C15u64;
    let mut i = 0u64;
    while out.len() < bytes {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let (user, item) = (x % 50_000, (x >> 20) % 20_000);
        let kind = ["click", "view", "purchase", "rating", "add-to-cart"][(x >> 40) as usize % 5];
        let item = if x.is_multiple_of(200) {
            format!("sku {item}, blue")
        } else {
            format!("i-{item}")
        };
        let ts = 1_767_225_600 + i / 50;
        if x.is_multiple_of(4) {
            write!(
                out,
                r#"{{"event_type":"{kind}","ts":{ts},"user_id":"u-{user}","item_id":"{item}","event_value":{}.{:02},"note":"caf\u00e9 \"ok\", }}{{","session_id":"{:x}"}}"#,
                x % 100,
                (x >> 8) % 100,
                x >> 40
            )
        } else {
            write!(
                out,
                r#"{{"user_id": {user}, "item_id": "{item}", "event_type": "{kind}", "event_value": {}, "ts": {ts}, "session_id": "{:x}", "device": {{"os": "android"}}, "note": "línea\nnext, \\ back"}}"#,
                1 + x % 5,
                x >> 40
            )
        }
        .expect("writing to a Vec");
        i += 1;
    }
    out
}

fn decode(c: &mut Criterion) {
    let input = events(4 << 20);
    let paths: Vec<&str> = MAPS.iter().map(|(_, p)| *p).collect();
    let mut group = c.benchmark_group("decode");
    group.throughput(Throughput::Bytes(input.len() as u64));
    group.bench_function("scan_json", |b| {
        b.iter(|| bench::scan_json(black_box(&input), &paths, false))
    });
    group.bench_function("scan_json_indexed", |b| {
        b.iter(|| bench::scan_json(black_box(&input), &paths, true))
    });
    group.bench_function("index_json", |b| {
        b.iter(|| bench::index_json(black_box(&input)))
    });
    group.bench_function("split_json", |b| {
        b.iter(|| bench::split_json(black_box(&input)))
    });
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(&input).expect("in memory");
    let gz = gz.finish().expect("in memory");
    group.bench_function("gunzip", |b| b.iter(|| bench::gunzip(black_box(&gz))));
    group.finish();
}

fn mapping(c: &mut Criterion) {
    let input = events(4 << 20);
    let mut group = c.benchmark_group("mapping");
    group.throughput(Throughput::Bytes(input.len() as u64));
    for (name, check) in [("convert_json", false), ("convert_json_checked", true)] {
        let converter = bench::Converter::interactions(&MAPS, check);
        group.bench_function(name, |b| {
            b.iter(|| converter.convert_json(black_box(&input)))
        });
    }
    group.finish();
    let file = events_parquet(400_000);
    let bytes = file.as_file().metadata().expect("a file").len();
    let parquet = bench::ParquetFile::open(file.path());
    let mut group = c.benchmark_group("mapping");
    group.throughput(Throughput::Bytes(bytes));
    for (name, check) in [
        ("convert_parquet", false),
        ("convert_parquet_checked", true),
    ] {
        let converter = bench::Converter::interactions(&MAPS, check);
        group.bench_function(name, |b| {
            b.iter(|| converter.convert_parquet(black_box(&parquet)))
        });
    }
    group.finish();
}

/// `rows` events as a Parquet file, as `examples/gen_events.rs` writes
/// them: arrow-rs's dictionary encoding, row groups of 131,072 rows, string
/// ids, one item id in 200 needing quotes.
fn events_parquet(rows: usize) -> tempfile::NamedTempFile {
    use std::sync::Arc;

    use arrow_array::{ArrayRef, Float64Array, Int64Array, RecordBatch, StringArray};
    use parquet::arrow::ArrowWriter;
    use parquet::file::properties::WriterProperties;

    let mut x = 0x9E37_79B9_7F4A_7C15u64;
    let mut columns: [Vec<String>; 3] = Default::default();
    let (mut values, mut times) = (Vec::with_capacity(rows), Vec::with_capacity(rows));
    for i in 0..rows as u64 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let item = (x >> 20) % 20_000;
        columns[0].push(format!("u-{}", x % 50_000));
        columns[1].push(if x.is_multiple_of(200) {
            format!("sku {item}, blue")
        } else {
            format!("i-{item}")
        });
        columns[2].push(
            ["click", "view", "purchase", "rating", "add-to-cart"][(x >> 40) as usize % 5]
                .to_string(),
        );
        values.push((x % 10_000) as f64 / 100.0);
        times.push(1_767_225_600 + (i / 50) as i64);
    }
    let [users, items, kinds] = columns.map(|c| Arc::new(StringArray::from(c)) as ArrayRef);
    let batch = RecordBatch::try_from_iter([
        ("user_id", users),
        ("item_id", items),
        ("event_type", kinds),
        (
            "event_value",
            Arc::new(Float64Array::from(values)) as ArrayRef,
        ),
        ("ts", Arc::new(Int64Array::from(times)) as ArrayRef),
    ])
    .expect("columns of one length");
    let file = tempfile::NamedTempFile::new().expect("a temporary file");
    let props = WriterProperties::builder()
        .set_max_row_group_row_count(Some(131_072))
        .build();
    let mut writer = ArrowWriter::try_new(
        file.reopen().expect("reopened"),
        batch.schema(),
        Some(props),
    )
    .expect("a Parquet writer");
    writer.write(&batch).expect("rows written");
    writer.close().expect("footer written");
    file
}

fn csv(c: &mut Criterion) {
    let rows: Vec<Vec<String>> = (0..100_000u64)
        .map(|i| {
            vec![
                if i % 4 == 0 {
                    format!("u-{i}")
                } else {
                    i.to_string()
                },
                if i % 200 == 0 {
                    format!("sku {i}, blue")
                } else {
                    format!("i-{}", i % 20_000)
                },
                "view".to_string(),
                format!("{}.{:02}", i % 100, i % 97),
                (1_767_225_600 + i).to_string(),
            ]
        })
        .collect();
    let mut out = Vec::new();
    let bytes = bench::write_csv(&rows, &mut out);
    let mut group = c.benchmark_group("csv");
    group.throughput(Throughput::Bytes(bytes as u64));
    group.bench_function("write_rows", |b| {
        b.iter(|| bench::write_csv(black_box(&rows), &mut out))
    });
    group.finish();
}

criterion_group!(stages, decode, mapping, csv);
criterion_main!(stages);
