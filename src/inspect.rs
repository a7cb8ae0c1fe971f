//! `inspect`: what the sources hold and how it maps — the Glue crawler's
//! answer, done locally.
//!
//! Every record is scanned (or the first `--sample N` of each object); for
//! every field path, nested ones dotted, it counts the value types, the null
//! and missing shares, an approximate distinct count (exact below 1,024
//! values), the minimum and maximum and three examples. It then matches the
//! top-level names against the dataset's reserved fields and can print a
//! complete TOML config for `convert --config`.

use std::collections::{BTreeMap, BTreeSet};
use std::hash::BuildHasher;

use serde_json::{Value, json};

use crate::config::InspectConfig;
use crate::decode::{Compression, Format};
use crate::error::Result;
use crate::mapping::Cell;
use crate::mapping::value::{Scratch, number_shape, scalar_or_list};
use crate::pipeline::{self, Visit};
use crate::schema::{Dataset, normalize_name};
use crate::source::Object;

/// Distinct values counted exactly up to this many, estimated past it.
const SKETCH: usize = 1024;

/// A k-minimum-values sketch: the `SKETCH` smallest 64-bit hashes seen.
/// Candidates collect unsorted and are compacted now and then, so adding
/// a value is a compare and a push.
#[derive(Clone)]
pub(crate) struct Distinct {
    /// The sketch, then candidates below `bound` (duplicates possible)
    /// until the next compaction.
    kept: Vec<u64>,
    /// The largest hash in a full sketch; `u64::MAX` until it is full.
    bound: u64,
    /// More than `SKETCH` distinct hashes were seen.
    saturated: bool,
}

impl Default for Distinct {
    fn default() -> Self {
        Distinct {
            kept: Vec::new(),
            bound: u64::MAX,
            saturated: false,
        }
    }
}

impl Distinct {
    /// An empty sketch that keeps only hashes below `bound`, the largest
    /// hash of a full sketch these values will be merged into: the others
    /// cannot be among its smallest (a hash above it only marks the count
    /// as past the sketch, as it would there).
    pub fn below(bound: u64) -> Self {
        Distinct {
            bound,
            ..Distinct::default()
        }
    }

    /// The largest hash kept once the sketch is full, else `u64::MAX`.
    pub fn bound(&self) -> u64 {
        self.bound
    }

    #[inline]
    pub fn add(&mut self, text: &str) {
        self.add_hash(Distinct::hash(text));
    }

    /// The hash `add` keeps of a value: foldhash's quality variant with a
    /// fixed seed, so estimates are the same from run to run.
    pub fn hash(text: &str) -> u64 {
        foldhash::quality::FixedState::with_seed(0x5EED).hash_one(text)
    }

    #[inline]
    pub fn add_hash(&mut self, hash: u64) {
        if hash > self.bound {
            // Not among the smallest kept: one more distinct value.
            self.saturated = true;
        } else if hash < self.bound {
            self.kept.push(hash);
            if self.kept.len() >= 4 * SKETCH {
                self.compact();
            }
        }
    }

    /// Folds in a sketch of other values: the same as adding them here.
    pub fn merge(&mut self, other: Distinct) {
        self.saturated |= other.saturated;
        for hash in other.kept {
            self.add_hash(hash);
        }
    }

    fn compact(&mut self) {
        self.kept.sort_unstable();
        self.kept.dedup();
        if self.kept.len() > SKETCH {
            self.kept.truncate(SKETCH);
            self.saturated = true;
        }
        if self.kept.len() == SKETCH {
            self.bound = self.kept[SKETCH - 1];
        }
    }

    /// The count, and whether it is exact.
    pub fn estimate(&self) -> (u64, bool) {
        let mut sketch = self.kept.clone();
        sketch.sort_unstable();
        sketch.dedup();
        let saturated = self.saturated || sketch.len() > SKETCH;
        sketch.truncate(SKETCH);
        match (saturated, sketch.last()) {
            (true, Some(&kth)) => {
                let share = kth as f64 / u64::MAX as f64;
                (((SKETCH - 1) as f64 / share).round() as u64, false)
            }
            _ => (sketch.len() as u64, true),
        }
    }
}

#[derive(Default)]
struct FieldStats {
    present: u64,
    nulls: u64,
    types: BTreeMap<&'static str, u64>,
    distinct: Distinct,
    min_num: Option<f64>,
    max_num: Option<f64>,
    min_text: Option<String>,
    max_text: Option<String>,
    examples: Vec<String>,
}

fn type_name(cell: &Cell) -> &'static str {
    match cell {
        Cell::Null => "null",
        Cell::Str(_) | Cell::JsonStr(_) => "string",
        Cell::Field(text) => match number_shape(text) {
            Some(true) => "integer",
            Some(false) => "float",
            None => "string",
        },
        Cell::Number { integer: true, .. } | Cell::Int(_) => "integer",
        Cell::Number { .. } | Cell::Float(_) => "float",
        Cell::Bool(_) => "boolean",
        Cell::Seconds(_) => "timestamp",
        Cell::JsonArray(_) | Cell::List(_) => "array",
        Cell::Object => "object",
    }
}

/// What inspect found.
#[derive(Default)]
pub struct Inspection {
    objects: u64,
    bytes: u64,
    records: u64,
    encodings: BTreeMap<String, u64>,
    /// In order of first appearance.
    order: Vec<String>,
    fields: BTreeMap<String, FieldStats>,
}

impl Visit for Inspection {
    fn object(&mut self, object: &Object, format: Format, compression: Compression) {
        self.objects += 1;
        self.bytes += object.size;
        let encoding = match compression {
            Compression::None => format.to_string(),
            c => format!("{format}+{}", c.name()),
        };
        *self.encodings.entry(encoding).or_default() += 1;
    }

    fn record(&mut self, fields: Vec<(String, Cell<'static>)>) {
        self.records += 1;
        for (path, cell) in fields {
            if !self.fields.contains_key(&path) {
                self.order.push(path.clone());
            }
            let stats = self.fields.entry(path).or_default();
            if cell.is_null() {
                stats.nulls += 1;
                continue;
            }
            stats.present += 1;
            *stats.types.entry(type_name(&cell)).or_default() += 1;
            let text = match &cell {
                Cell::Object => "{…}".to_string(),
                _ => {
                    let mut scratch = Scratch::default();
                    scalar_or_list(&cell, &mut scratch, true)
                        .unwrap_or_default()
                        .to_string()
                }
            };
            stats.distinct.add(&text);
            let number = match &cell {
                Cell::Number { text, .. } => text.parse::<f64>().ok(),
                Cell::Field(text) if number_shape(text).is_some() => text.parse::<f64>().ok(),
                Cell::Int(n) | Cell::Seconds(n) => Some(*n as f64),
                Cell::Float(x) => Some(*x),
                _ => None,
            };
            if let Some(x) = number {
                stats.min_num = Some(stats.min_num.map_or(x, |m| m.min(x)));
                stats.max_num = Some(stats.max_num.map_or(x, |m| m.max(x)));
            } else if matches!(cell, Cell::Str(_) | Cell::JsonStr(_) | Cell::Field(_)) {
                if stats.min_text.as_ref().is_none_or(|m| text < *m) {
                    stats.min_text = Some(text.clone());
                }
                if stats.max_text.as_ref().is_none_or(|m| text > *m) {
                    stats.max_text = Some(text.clone());
                }
            }
            if stats.examples.len() < 3 && !stats.examples.contains(&text) {
                stats.examples.push(text);
            }
        }
    }
}

/// Shortens a value for display.
fn short(text: &str) -> String {
    if text.chars().count() > 40 {
        format!("{}…", text.chars().take(39).collect::<String>())
    } else {
        text.to_string()
    }
}

fn number_json(x: f64) -> Value {
    if x.fract() == 0.0 && x.abs() < 9e15 {
        json!(x as i64)
    } else {
        json!(x)
    }
}

/// How the dataset's reserved fields match the top-level source names.
fn matches(dataset: Dataset, paths: &[String]) -> Vec<(&'static str, bool, Vec<String>)> {
    dataset
        .reserved()
        .iter()
        .map(|r| {
            let wanted = normalize_name(r.name);
            let candidates = paths
                .iter()
                .filter(|p| !p.contains('.') && normalize_name(p) == wanted)
                .cloned()
                .collect();
            (r.name, r.required, candidates)
        })
        .collect()
}

impl Inspection {
    fn share(&self, n: u64) -> f64 {
        if self.records == 0 {
            0.0
        } else {
            (n as f64 / self.records as f64 * 10_000.0).round() / 10_000.0
        }
    }

    pub fn to_json(&self, dataset: Dataset) -> Value {
        let fields: Vec<Value> = self
            .order
            .iter()
            .map(|path| {
                let s = &self.fields[path];
                let missing = self.records - s.present - s.nulls;
                let (distinct, exact) = s.distinct.estimate();
                let (min, max) = match (s.min_num, s.max_num) {
                    (Some(lo), Some(hi)) => (number_json(lo), number_json(hi)),
                    _ => (json!(s.min_text), json!(s.max_text)),
                };
                json!({
                    "path": path,
                    "types": s.types,
                    "present": s.present,
                    "null_share": self.share(s.nulls),
                    "missing_share": self.share(missing),
                    "distinct": distinct,
                    "distinct_exact": exact,
                    "min": min,
                    "max": max,
                    "examples": s.examples,
                })
            })
            .collect();
        let matched: Vec<Value> = matches(dataset, &self.order)
            .into_iter()
            .map(|(name, required, candidates)| {
                json!({"field": name, "required": required, "sources": candidates})
            })
            .collect();
        json!({
            "objects": self.objects,
            "bytes": self.bytes,
            "records": self.records,
            "encodings": self.encodings,
            "fields": fields,
            "dataset": dataset.cli_name(),
            "matches": matched,
        })
    }

    pub fn to_text(&self, dataset: Dataset) -> String {
        let encodings: Vec<String> = self
            .encodings
            .iter()
            .map(|(k, n)| format!("{n} {k}"))
            .collect();
        let mut out = format!(
            "{} object{} ({}), {} bytes, {} records\n\nfields:\n",
            self.objects,
            if self.objects == 1 { "" } else { "s" },
            encodings.join(", "),
            self.bytes,
            self.records
        );
        for path in &self.order {
            let s = &self.fields[path];
            let missing = self.records - s.present - s.nulls;
            let types: Vec<String> = s.types.iter().map(|(t, n)| format!("{t} {n}")).collect();
            let (distinct, exact) = s.distinct.estimate();
            let range = match (s.min_num, s.max_num, &s.min_text, &s.max_text) {
                (Some(lo), Some(hi), _, _) => format!("{lo} .. {hi}"),
                (_, _, Some(lo), Some(hi)) => format!("{} .. {}", short(lo), short(hi)),
                _ => "-".into(),
            };
            let examples: Vec<String> = s.examples.iter().map(|e| short(e)).collect();
            out.push_str(&format!(
                "  {path}\n    types: {}; null {:.1}%, missing {:.1}%; {}{distinct} distinct; range {range}\n    examples: {}\n",
                if types.is_empty() { "none".into() } else { types.join(", ") },
                self.share(s.nulls) * 100.0,
                self.share(missing) * 100.0,
                if exact { "" } else { "~" },
                examples.join(" | ")
            ));
        }
        out.push_str(&format!("\nreserved fields of {dataset}:\n"));
        for (name, required, candidates) in matches(dataset, &self.order) {
            let found = match candidates.as_slice() {
                [] if required => "no match (required: add --map)".to_string(),
                [] => "no match".to_string(),
                [one] => format!("<- {one}"),
                many => format!("several: {} (choose one with --map)", many.join(", ")),
            };
            out.push_str(&format!("  {name:<26} {found}\n"));
        }
        out
    }

    /// A TOML config that `convert --config` accepts as it is.
    pub fn suggest(&self, dataset: Dataset, sources: &[String]) -> String {
        let quoted: Vec<String> = sources
            .iter()
            .map(|s| serde_json::to_string(s).unwrap_or_default())
            .collect();
        let mut out = format!(
            "# Suggested by personalize-prep inspect from {} records in {} object(s).\n\
             dataset = \"{}\"\nsources = [{}]\noutput = \"out/\"\n",
            self.records,
            self.objects,
            dataset.cli_name(),
            quoted.join(", ")
        );
        let mut used = BTreeSet::new();
        for (name, required, candidates) in matches(dataset, &self.order) {
            match candidates.as_slice() {
                [one] => {
                    used.insert(one.clone());
                    out.push_str(&format!(
                        "\n[[field]]\nname = \"{name}\"\npath = {}\n",
                        serde_json::to_string(one).unwrap_or_default()
                    ));
                }
                [] if required => out.push_str(&format!(
                    "\n# No source field matches {name}: add it as\n# [[field]]\n# name = \"{name}\"\n# path = \"...\"\n"
                )),
                [] => {}
                many => out.push_str(&format!(
                    "\n# {name} matches several fields ({}): add the right one as\n# [[field]]\n# name = \"{name}\"\n# path = \"...\"\n",
                    many.join(", ")
                )),
            }
        }
        // Users, items and actions need metadata; for events it is a choice.
        let needs_metadata = matches!(dataset, Dataset::Users | Dataset::Items | Dataset::Actions);
        let mut names = BTreeSet::new();
        for path in &self.order {
            let s = &self.fields[path];
            if used.contains(path) || s.types.contains_key("object") || s.types.is_empty() {
                continue;
            }
            let mut name: String = path
                .chars()
                .map(|c| {
                    if c.is_ascii_alphanumeric() {
                        c.to_ascii_uppercase()
                    } else {
                        '_'
                    }
                })
                .collect();
            if name.starts_with(|c: char| c.is_ascii_digit()) {
                name.insert(0, '_');
            }
            if dataset.reserved_named(&name).is_some() || !names.insert(normalize_name(&name)) {
                continue;
            }
            let ty = if s.types.keys().all(|t| *t == "integer" || *t == "timestamp") {
                "\ntype = \"long\""
            } else if s.types.keys().all(|t| *t == "integer" || *t == "float") {
                "\ntype = \"double\""
            } else {
                ""
            };
            let entry = format!(
                "[[field]]\nname = \"{name}\"\npath = {}{ty}\n",
                serde_json::to_string(path).unwrap_or_default()
            );
            if needs_metadata {
                out.push('\n');
                out.push_str(&entry);
            } else {
                let commented: Vec<String> = entry.lines().map(|l| format!("# {l}")).collect();
                out.push_str(&format!("\n{}\n", commented.join("\n")));
            }
        }
        out
    }
}

/// Runs `inspect` and returns what to print.
pub fn run(cfg: &InspectConfig) -> Result<String> {
    let mut inspection = Inspection::default();
    pipeline::scan_records(&cfg.read, cfg.sample, &mut inspection)?;
    let dataset = cfg.read.mapping.dataset;
    Ok(if cfg.suggest {
        inspection.suggest(dataset, &cfg.read.sources)
    } else if cfg.json {
        let mut text =
            serde_json::to_string_pretty(&inspection.to_json(dataset)).unwrap_or_default();
        text.push('\n');
        text
    } else {
        inspection.to_text(dataset)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn distinct_counts_are_exact_then_estimated() {
        let mut d = Distinct::default();
        for i in 0..500 {
            d.add(&format!("v{}", i % 100));
        }
        assert_eq!(d.estimate(), (100, true));
        let mut d = Distinct::default();
        for i in 0..50_000 {
            d.add(&format!("v{i}"));
        }
        let (n, exact) = d.estimate();
        assert!(!exact);
        assert!((45_000..55_000).contains(&n), "{n}");
    }

    #[test]
    fn chunks_below_the_run_bound_give_the_same_sketch() {
        // Exactly SKETCH distinct values (still exact), then many more.
        for distinct in [SKETCH, 30_000] {
            let values: Vec<String> = (0..3 * distinct)
                .map(|i| format!("v{}", (i * 7919) % distinct))
                .collect();
            let mut whole = Distinct::default();
            values.iter().for_each(|v| whole.add(v));
            let mut run = Distinct::default();
            for chunk in values.chunks(700) {
                let mut part = Distinct::below(run.bound());
                chunk.iter().for_each(|v| part.add(v));
                run.merge(part);
            }
            assert_eq!(run.estimate(), whole.estimate(), "{distinct}");
        }
    }
}
