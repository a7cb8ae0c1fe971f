//! The stages on in-memory bytes, for the criterion benches
//! (`benches/stages.rs`). Not a stable API: it exists so that benches
//! measure the code the binary runs, without a runtime or files.

use std::path::Path;

use crate::decode::json::{Capture, Scanner, Selector, Splitter, Top};
use crate::decode::parquet::ParquetSource;
use crate::decode::structural::Index;
use crate::decode::{Chunk, Compression, decompress};
use crate::mapping::{self, Mapping, MappingSpec, RowOptions};
use crate::schema::Dataset;
use crate::sink::csv::{Dialect, push_field};
use crate::validate::RowRules;

/// Scans every JSON record in `buf`, capturing `paths`, after one UTF-8
/// check of the whole buffer as `convert` makes; the records found.
/// `indexed`: through the structural index, as `convert` reads.
pub fn scan_json(buf: &[u8], paths: &[&str], indexed: bool) -> usize {
    let selector = Selector::new(paths);
    let mut caps = vec![Capture::default(); selector.slots()];
    let mut scanner = Scanner::new(buf, Top::Between);
    if simdutf8::basic::from_utf8(buf).is_ok() {
        scanner = scanner.utf8_checked();
    }
    if indexed {
        scanner = scanner.indexed(Index::default());
    }
    let mut records = 0;
    while let Ok(Some(_)) = scanner.next_record(&selector, &mut caps) {
        records += 1;
    }
    records
}

/// Builds the structural index of `buf` as the walk does, window by
/// window; the positions found (0 where the walk would not take `buf`).
pub fn index_json(buf: &[u8]) -> usize {
    Index::default().count_all(buf).unwrap_or(0)
}

/// Finds the last record boundary in `buf`, as the reader does to cut
/// chunks.
pub fn split_json(buf: &[u8]) -> usize {
    Splitter::default().scan(buf).map_or(0, |(cut, _)| cut)
}

/// Decompresses a gzip stream; the bytes out.
pub fn gunzip(gz: &[u8]) -> usize {
    let mut out = decompress(
        Box::new(std::io::Cursor::new(gz.to_vec())),
        Compression::Gzip,
    )
    .expect("gzip starts");
    std::io::copy(&mut out, &mut std::io::sink()).expect("valid gzip") as usize
}

/// An interactions mapping, `(FIELD, PATH)` pairs, as `convert` resolves
/// it, with or without the output check each row gets.
pub struct Converter {
    mapping: Mapping,
    rules: Option<RowRules>,
}

impl Converter {
    pub fn interactions(maps: &[(&str, &str)], check: bool) -> Self {
        let mut spec = MappingSpec::new(Dataset::Interactions);
        spec.maps = maps
            .iter()
            .map(|(f, p)| (f.to_string(), p.to_string()))
            .collect();
        let mapping = mapping::resolve(&spec, None).expect("a valid mapping");
        let rules = check.then(|| RowRules::for_output("bench.csv", &mapping.schema(&[])));
        Converter { mapping, rules }
    }

    /// Converts a buffer of JSON records into CSV rows; the CSV bytes.
    pub fn convert_json(&self, buf: &[u8]) -> usize {
        let chunk = Chunk {
            bytes: buf.to_vec(),
            base: 0,
            top: Top::Between,
            last: true,
            guessed: false,
            end_top: Top::Between,
            utf8: None,
            deferred: None,
            more: bytes::Bytes::new(),
        };
        let done = self
            .mapping
            .convert_json(&chunk, "bench", false, self.opts())
            .expect("valid records");
        done.csv.len()
    }

    /// Converts every row group of a Parquet file into CSV rows; the CSV
    /// bytes.
    pub fn convert_parquet(&self, file: &ParquetFile) -> usize {
        (0..file.0.row_groups())
            .map(|group| {
                let done = self
                    .mapping
                    .convert_parquet(&file.0, group, "bench", self.opts())
                    .expect("valid rows");
                done.csv.len()
            })
            .sum()
    }

    fn opts(&self) -> RowOptions<'_> {
        RowOptions {
            dialect: Dialect::Personalize,
            skip: false,
            rules: self.rules.as_ref(),
        }
    }
}

/// A Parquet file opened as `convert` opens one (metadata read once).
pub struct ParquetFile(ParquetSource);

impl ParquetFile {
    pub fn open(path: &Path) -> Self {
        ParquetFile(ParquetSource::open(path.to_path_buf(), None).expect("a readable Parquet file"))
    }
}

/// Encodes rows of text fields as CSV in the Personalize dialect; the
/// bytes written.
pub fn write_csv(rows: &[Vec<String>], out: &mut Vec<u8>) -> usize {
    out.clear();
    for row in rows {
        for (i, field) in row.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            push_field(out, field, Dialect::Personalize);
        }
        out.push(b'\n');
    }
    out.len()
}
