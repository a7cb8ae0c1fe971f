//! Generates the benchmark data set deterministically: Firehose-style
//! event files under `OUT/<format>/YYYY/MM/DD/HH/`, the same events in
//! every format asked for.
//!
//! ```sh
//! cargo run --release --example gen_events -- OUT --events 8000000 --formats json,ndjson,gz,parquet,csv
//! ```
//!
//! Two producers write the events: one with `", "` separators and an
//! integer `user_id`, the other (about a quarter) compact JSON in another
//! key order with a string id `"u-1234"`. `event_value` is a float except
//! for ratings (a JSON integer); one item id in 200 holds a comma (the
//! output must quote it); `note` is free text to drop, with commas,
//! quotes, backslashes, newlines, UTF-8 and, once in 100,000 events, `}{`.
//! Files are cut at 1.5–5.2 MB, like a Firehose buffer; Parquet and CSV
//! files (RFC 4180 quoting, a header, the note's line breaks inside quotes)
//! hold a million events each. With
//! `--unique-users`, each event has a user of its own (the memory case
//! with many users).

use std::fs::{self, File};
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow_array::{ArrayRef, Float64Array, Int64Array, RecordBatch, StringArray};
use arrow_schema::{DataType, Field, Schema};
use parquet::arrow::ArrowWriter;
use parquet::basic::Compression;
use parquet::file::properties::WriterProperties;

const START: i64 = 1_767_225_600; // 2026-01-01T00:00:00Z
const SPAN: i64 = 48 * 3600;
const USERS: u64 = 50_000;
const ITEMS: u64 = 20_000;
const TYPES: [&str; 5] = ["click", "view", "purchase", "rating", "add-to-cart"];
const WORDS: [&str; 12] = [
    "great",
    "okay,",
    "\"quoted\"",
    "back\\slash",
    "line\nbreak",
    "café",
    "日本",
    "naïve",
    "a, b",
    "tab\there",
    "emoji 🎧",
    "plain",
];

/// splitmix64: small, fast and the same on every machine.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    /// Power-law-ish: small values far more often.
    fn skewed(&mut self, n: u64) -> u64 {
        let u = (self.next() >> 11) as f64 / (1u64 << 53) as f64;
        ((n as f64).powf(u) as u64).min(n - 1)
    }
}

struct Event {
    user: u64,
    string_user: bool,
    item: String,
    kind: &'static str,
    value: String,
    ts: i64,
    session: u64,
    note: String,
}

fn event(rng: &mut Rng, i: u64, n: u64, unique_users: bool) -> Event {
    // Drawn either way, so that the other fields are the usual set's.
    let user = rng.skewed(USERS);
    let user = if unique_users { USERS + i } else { user };
    let item_n = rng.skewed(ITEMS);
    let item = if rng.below(200) == 0 {
        format!("sku {item_n}, blue")
    } else {
        format!("i-{item_n}")
    };
    let kind = TYPES[rng.below(5) as usize];
    let value = if kind == "rating" {
        (1 + rng.below(5)).to_string()
    } else {
        format!("{}.{:02}", rng.below(100), rng.below(100))
    };
    let mut note = String::new();
    for _ in 0..1 + rng.below(2) {
        note.push_str(WORDS[rng.below(WORDS.len() as u64) as usize]);
        note.push(' ');
    }
    if rng.below(100_000) == 0 {
        note.push_str("}{");
    }
    Event {
        user,
        string_user: rng.below(100) < 26,
        item,
        kind,
        value,
        ts: START + (i as i128 * SPAN as i128 / n.max(1) as i128) as i64,
        session: rng.next() >> 32,
        note,
    }
}

fn json_string(s: &str, out: &mut Vec<u8>) {
    serde_json::to_writer(&mut *out, s).expect("a string always serialises");
}

/// One event as JSON, in its producer's style.
fn json(e: &Event, out: &mut Vec<u8>) {
    if e.string_user {
        out.extend_from_slice(b"{\"event_type\":");
        json_string(e.kind, out);
        write!(
            out,
            ",\"ts\":{},\"user_id\":\"u-{}\",\"item_id\":",
            e.ts, e.user
        )
        .unwrap();
        json_string(&e.item, out);
        write!(out, ",\"event_value\":{},\"note\":", e.value).unwrap();
        json_string(&e.note, out);
        write!(out, ",\"session_id\":\"{:x}\"}}", e.session).unwrap();
    } else {
        write!(out, "{{\"user_id\": {}, \"item_id\": ", e.user).unwrap();
        json_string(&e.item, out);
        out.extend_from_slice(b", \"event_type\": ");
        json_string(e.kind, out);
        write!(
            out,
            ", \"event_value\": {}, \"ts\": {}, \"session_id\": \"{:x}\", \"device\": {{\"os\": \"android\"}}, \"note\": ",
            e.value, e.ts, e.session
        )
        .unwrap();
        json_string(&e.note, out);
        out.push(b'}');
    }
}

struct Options {
    out: PathBuf,
    events: u64,
    formats: Vec<String>,
    seed: u64,
    unique_users: bool,
}

fn parse_args() -> Result<Options, String> {
    let mut args = std::env::args().skip(1);
    let mut o = Options {
        out: PathBuf::new(),
        events: 1_000_000,
        formats: vec!["json".into()],
        seed: 42,
        unique_users: false,
    };
    while let Some(a) = args.next() {
        let mut value = || args.next().ok_or(format!("{a} needs a value"));
        match a.as_str() {
            "--events" => o.events = value()?.parse().map_err(|e| format!("--events: {e}"))?,
            "--seed" => o.seed = value()?.parse().map_err(|e| format!("--seed: {e}"))?,
            "--formats" => o.formats = value()?.split(',').map(String::from).collect(),
            "--unique-users" => o.unique_users = true,
            _ if o.out.as_os_str().is_empty() && !a.starts_with('-') => o.out = a.into(),
            _ => return Err(format!("unexpected argument {a}")),
        }
    }
    if o.out.as_os_str().is_empty() {
        return Err(
            "usage: gen_events OUT [--events N] [--formats json,ndjson,gz,parquet,csv] [--seed S] [--unique-users]"
                .into(),
        );
    }
    Ok(o)
}

/// The Firehose key of a file whose first event is at `ts`.
fn key(ts: i64, n: usize, ext: &str) -> PathBuf {
    let days = ts.div_euclid(86_400);
    let secs = ts.rem_euclid(86_400);
    // Civil date from days since 1970 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    let (h, mi, s) = (secs / 3600, secs / 60 % 60, secs % 60);
    PathBuf::from(format!(
        "{y:04}/{m:02}/{d:02}/{h:02}/events-1-{y:04}-{m:02}-{d:02}-{h:02}-{mi:02}-{s:02}-{n:08x}{ext}"
    ))
}

trait Sink {
    fn event(&mut self, e: &Event) -> io::Result<()>;
    fn finish(self: Box<Self>) -> io::Result<()>;
}

/// JSON files (concatenated, NDJSON or gzip), cut like a Firehose buffer.
struct JsonFiles {
    dir: PathBuf,
    newline: bool,
    gzip: bool,
    rng: Rng,
    buf: Vec<u8>,
    limit: usize,
    first_ts: i64,
    files: usize,
}

impl JsonFiles {
    fn flush(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let ext = if self.gzip { ".gz" } else { "" };
        let path = self.dir.join(key(self.first_ts, self.files, ext));
        fs::create_dir_all(path.parent().expect("keys have folders"))?;
        let file = BufWriter::new(File::create(&path)?);
        if self.gzip {
            let mut gz = flate2::write::GzEncoder::new(file, flate2::Compression::fast());
            gz.write_all(&self.buf)?;
            gz.finish()?.flush()?;
        } else {
            let mut file = file;
            file.write_all(&self.buf)?;
            file.flush()?;
        }
        self.buf.clear();
        self.files += 1;
        self.limit = 1_500_000 + self.rng.below(3_700_000) as usize;
        Ok(())
    }
}

impl Sink for JsonFiles {
    fn event(&mut self, e: &Event) -> io::Result<()> {
        if self.buf.is_empty() {
            self.first_ts = e.ts;
        }
        json(e, &mut self.buf);
        if self.newline {
            self.buf.push(b'\n');
        }
        if self.buf.len() >= self.limit {
            self.flush()?;
        }
        Ok(())
    }
    fn finish(mut self: Box<Self>) -> io::Result<()> {
        self.flush()
    }
}

/// Parquet files of a million events, row groups of 128 Ki rows.
struct ParquetFiles {
    dir: PathBuf,
    rows: Vec<(String, String, &'static str, f64, i64, String)>,
    files: usize,
}

impl ParquetFiles {
    fn flush(&mut self) -> io::Result<()> {
        if self.rows.is_empty() {
            return Ok(());
        }
        let schema = Arc::new(Schema::new(vec![
            Field::new("user_id", DataType::Utf8, false),
            Field::new("item_id", DataType::Utf8, false),
            Field::new("event_type", DataType::Utf8, false),
            Field::new("event_value", DataType::Float64, false),
            Field::new("ts", DataType::Int64, false),
            Field::new("note", DataType::Utf8, false),
        ]));
        let rows = std::mem::take(&mut self.rows);
        let columns: Vec<ArrayRef> = vec![
            Arc::new(StringArray::from_iter_values(rows.iter().map(|r| &r.0))),
            Arc::new(StringArray::from_iter_values(rows.iter().map(|r| &r.1))),
            Arc::new(StringArray::from_iter_values(rows.iter().map(|r| r.2))),
            Arc::new(Float64Array::from_iter_values(rows.iter().map(|r| r.3))),
            Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.4))),
            Arc::new(StringArray::from_iter_values(rows.iter().map(|r| &r.5))),
        ];
        let batch = RecordBatch::try_new(Arc::clone(&schema), columns).map_err(io::Error::other)?;
        let path = self.dir.join(key(rows[0].4, self.files, ".parquet"));
        fs::create_dir_all(path.parent().expect("keys have folders"))?;
        let props = WriterProperties::builder()
            .set_compression(Compression::SNAPPY)
            .set_max_row_group_row_count(Some(128 * 1024))
            .build();
        let mut w = ArrowWriter::try_new(File::create(&path)?, schema, Some(props))
            .map_err(io::Error::other)?;
        w.write(&batch).map_err(io::Error::other)?;
        w.close().map_err(io::Error::other)?;
        self.files += 1;
        Ok(())
    }
}

impl Sink for ParquetFiles {
    fn event(&mut self, e: &Event) -> io::Result<()> {
        let user = if e.string_user {
            format!("u-{}", e.user)
        } else {
            e.user.to_string()
        };
        let value = e.value.parse().expect("values are numbers");
        self.rows
            .push((user, e.item.clone(), e.kind, value, e.ts, e.note.clone()));
        if self.rows.len() == 1_000_000 {
            self.flush()?;
        }
        Ok(())
    }
    fn finish(mut self: Box<Self>) -> io::Result<()> {
        self.flush()
    }
}

/// CSV files of a million events: a header, then the user (as its
/// producer wrote it), item, type, value, timestamp and note.
struct CsvFiles {
    dir: PathBuf,
    buf: Vec<u8>,
    rows: usize,
    first_ts: i64,
    files: usize,
}

const CSV_HEADER: &[u8] = b"user_id,item_id,event_type,event_value,ts,note\n";

/// A CSV field, quoted (quotes doubled) when it holds a comma, quote or
/// line break.
fn csv_field(s: &str, out: &mut Vec<u8>) {
    if s.contains([',', '"', '\n', '\r']) {
        out.push(b'"');
        out.extend_from_slice(s.replace('"', "\"\"").as_bytes());
        out.push(b'"');
    } else {
        out.extend_from_slice(s.as_bytes());
    }
}

impl CsvFiles {
    fn flush(&mut self) -> io::Result<()> {
        if self.rows == 0 {
            return Ok(());
        }
        let path = self.dir.join(key(self.first_ts, self.files, ".csv"));
        fs::create_dir_all(path.parent().expect("keys have folders"))?;
        fs::write(&path, &self.buf)?;
        self.buf.clear();
        self.rows = 0;
        self.files += 1;
        Ok(())
    }
}

impl Sink for CsvFiles {
    fn event(&mut self, e: &Event) -> io::Result<()> {
        if self.rows == 0 {
            self.first_ts = e.ts;
            self.buf.extend_from_slice(CSV_HEADER);
        }
        let out = &mut self.buf;
        if e.string_user {
            write!(out, "u-{},", e.user)?;
        } else {
            write!(out, "{},", e.user)?;
        }
        csv_field(&e.item, out);
        write!(out, ",{},{},{},", e.kind, e.value, e.ts)?;
        csv_field(&e.note, out);
        out.push(b'\n');
        self.rows += 1;
        if self.rows == 1_000_000 {
            self.flush()?;
        }
        Ok(())
    }
    fn finish(mut self: Box<Self>) -> io::Result<()> {
        self.flush()
    }
}

fn sink(format: &str, out: &Path, seed: u64) -> Result<Box<dyn Sink>, String> {
    let dir = out.join(format);
    let json = |newline, gzip| -> Box<dyn Sink> {
        Box::new(JsonFiles {
            dir: dir.clone(),
            newline,
            gzip,
            rng: Rng(seed ^ 0xF1E),
            buf: Vec::new(),
            limit: 5_000_000,
            first_ts: 0,
            files: 0,
        })
    };
    Ok(match format {
        "json" => json(false, false),
        "ndjson" => json(true, false),
        "gz" => json(false, true),
        "parquet" => Box::new(ParquetFiles {
            dir: dir.clone(),
            rows: Vec::new(),
            files: 0,
        }),
        "csv" => Box::new(CsvFiles {
            dir: dir.clone(),
            buf: Vec::new(),
            rows: 0,
            first_ts: 0,
            files: 0,
        }),
        other => {
            return Err(format!(
                "unknown format {other}: json, ndjson, gz, parquet or csv"
            ));
        }
    })
}

fn main() {
    let o = parse_args().unwrap_or_else(|e| {
        eprintln!("gen_events: {e}");
        std::process::exit(2);
    });
    let mut sinks: Vec<Box<dyn Sink>> = o
        .formats
        .iter()
        .map(|f| sink(f, &o.out, o.seed))
        .collect::<Result<_, _>>()
        .unwrap_or_else(|e| {
            eprintln!("gen_events: {e}");
            std::process::exit(2);
        });
    let mut rng = Rng(o.seed);
    let written = (0..o.events).try_for_each(|i| {
        let e = event(&mut rng, i, o.events, o.unique_users);
        sinks.iter_mut().try_for_each(|s| s.event(&e))
    });
    let finished = written.and_then(|()| sinks.into_iter().try_for_each(|s| s.finish()));
    if let Err(e) = finished {
        eprintln!("gen_events: {e}");
        std::process::exit(1);
    }
}
