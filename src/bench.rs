//! The stages on in-memory bytes, for the criterion benches
//! (`benches/stages.rs`). Not a stable API: it exists so that benches
//! measure the code the binary runs, without a runtime or files.

use crate::decode::json::{Capture, Scanner, Selector, Splitter, Top};
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
        };
        let opts = RowOptions {
            dialect: Dialect::Personalize,
            skip: false,
            rules: self.rules.as_ref(),
        };
        let done = self
            .mapping
            .convert_json(&chunk, "bench", false, opts)
            .expect("valid records");
        done.csv.len()
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
