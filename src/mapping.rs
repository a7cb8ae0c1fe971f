//! Source paths to Personalize fields: which source value fills which
//! column, and the value rules of SPEC section 4 that turn a JSON value into
//! CSV text (ids as strings, timestamps to epoch seconds, shortest numbers,
//! `|`-joined lists, `True`/`False`).
//!
//! A `MappingSpec` is what the user asked for; `resolve` turns it into a
//! `Mapping` once the first record's field names are known (reserved fields
//! are matched by name on them). After that a mapping is fixed for the run:
//! every record is read through the same `Selector`, so a field that first
//! appears late is never lost. Metadata types not given with `--type` are
//! inferred over all records; the CSV text of a value never depends on the
//! inferred type, so the schema can be written last.

use std::fmt::Write as _;
use std::str::FromStr;

use crate::decode::Chunk;
use crate::decode::json::{self, Capture, Kind, Selector, Value};
use crate::error::{Error, Origin, Result};
use crate::schema::{AvroType, Dataset, Rule, Schema, SchemaField, normalize_name};
use crate::sink::csv::{Dialect, push_field};

/// The unit of numeric timestamps, or ISO 8601 strings only.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimeUnit {
    Seconds,
    Millis,
    Micros,
    Nanos,
    Iso,
}

impl FromStr for TimeUnit {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "s" => Ok(TimeUnit::Seconds),
            "ms" => Ok(TimeUnit::Millis),
            "us" => Ok(TimeUnit::Micros),
            "ns" => Ok(TimeUnit::Nanos),
            "iso" => Ok(TimeUnit::Iso),
            _ => Err(format!(
                "unknown timestamp unit {s:?}; expected s, ms, us, ns or iso"
            )),
        }
    }
}

/// The mapping as the user gave it (flags, later a config file).
#[derive(Debug, Clone)]
pub struct MappingSpec {
    pub dataset: Dataset,
    /// `--map FIELD=PATH`, in the order given.
    pub maps: Vec<(String, String)>,
    pub columns: Option<Vec<String>>,
    pub textual: Vec<String>,
    pub categorical: Vec<String>,
    pub not_categorical: Vec<String>,
    pub types: Vec<(String, AvroType)>,
    pub timestamp_unit: Option<TimeUnit>,
}

impl MappingSpec {
    pub fn new(dataset: Dataset) -> Self {
        MappingSpec {
            dataset,
            maps: Vec::new(),
            columns: None,
            textual: Vec::new(),
            categorical: Vec::new(),
            not_categorical: Vec::new(),
            types: Vec::new(),
            timestamp_unit: None,
        }
    }

    /// Rejects contradictions before any data is read (usage errors).
    pub fn check(&self) -> Result<()> {
        let d = self.dataset;
        let mut seen: Vec<(String, String)> = Vec::new();
        for (field, path) in &self.maps {
            if !is_avro_name(field) {
                return Err(Error::usage(format!(
                    "--map {field}={path}: {field:?} is not a valid field name \
                     (letters, digits and _, not starting with a digit)"
                )));
            }
            if path.is_empty() {
                return Err(Error::usage(format!(
                    "--map {field}=: the source path is empty"
                )));
            }
            let canonical = canonical_name(d, field);
            let norm = normalize_name(&canonical);
            if let Some((other, _)) = seen.iter().find(|(_, n)| *n == norm) {
                return Err(Error::usage(format!(
                    "--map {field}: the field is mapped twice (as {other} too); Personalize \
                     compares names ignoring case and non-alphanumerics"
                )));
            }
            seen.push((field.clone(), norm));
        }
        let metadata = |name: &str, flag: &str| -> Result<()> {
            if let Some(r) = d.reserved_named(name) {
                return Err(Error::usage(format!(
                    "{flag} {name}: {} is a reserved field of {d} with a fixed type",
                    r.name
                )));
            }
            if !self.maps.iter().any(|(f, _)| f == name) {
                return Err(Error::usage(format!(
                    "{flag} {name}: no --map {name}=<path> gives that field"
                )));
            }
            Ok(())
        };
        for name in &self.textual {
            if d != Dataset::Items {
                return Err(Error::usage(format!(
                    "--textual {name}: textual fields exist only in the items dataset"
                )));
            }
            metadata(name, "--textual")?;
            if self.categorical.contains(name) {
                return Err(Error::usage(format!(
                    "--textual {name}: a field cannot be both textual and categorical"
                )));
            }
        }
        for name in &self.categorical {
            metadata(name, "--categorical")?;
            if self.not_categorical.contains(name) {
                return Err(Error::usage(format!(
                    "--categorical {name}: also given with --not-categorical"
                )));
            }
        }
        for name in &self.not_categorical {
            metadata(name, "--not-categorical")?;
        }
        for (name, ty) in &self.types {
            metadata(name, "--type")?;
            let stringy = self.textual.contains(name) || self.categorical.contains(name);
            if stringy && *ty != AvroType::String {
                return Err(Error::usage(format!(
                    "--type {name}={}: a textual or categorical field is a string",
                    ty.as_str()
                )));
            }
        }
        if let Some(columns) = &self.columns {
            let mut listed = Vec::new();
            for c in columns {
                let name = canonical_name(d, c);
                if listed.contains(&name) {
                    return Err(Error::usage(format!("--columns: {c} is listed twice")));
                }
                let mapped = self.maps.iter().any(|(f, _)| canonical_name(d, f) == name);
                if d.reserved_named(c).is_none() && !mapped {
                    return Err(Error::usage(format!(
                        "--columns: {c} is neither a reserved field of {d} nor given by --map"
                    )));
                }
                listed.push(name);
            }
            for r in d.reserved().iter().filter(|r| r.required) {
                if !listed.iter().any(|n| n == r.name) {
                    return Err(Error::usage(format!(
                        "--columns: {} is required in {d} and must be listed",
                        r.name
                    )));
                }
            }
            for (field, path) in &self.maps {
                if !listed.contains(&canonical_name(d, field)) {
                    return Err(Error::usage(format!(
                        "--columns: {field} is mapped (--map {field}={path}) but not listed"
                    )));
                }
            }
        }
        Ok(())
    }
}

/// The reserved name for `name` if it is one (ignoring case and
/// punctuation), else `name` itself.
fn canonical_name(d: Dataset, name: &str) -> String {
    d.reserved_named(name)
        .map(|r| r.name.to_string())
        .unwrap_or_else(|| name.to_string())
}

fn is_avro_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// How one column's values are converted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ValueRule {
    Reserved(Rule),
    /// A metadata string: scalars as text, arrays joined with `|` when
    /// `join` (categorical).
    MetaString {
        join: bool,
    },
    MetaInt {
        bits32: bool,
    },
    MetaFloat,
    /// No `--type`: any scalar or array of scalars; the type is inferred.
    Inferred,
}

/// How a field got its source path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FieldSource {
    /// `--map`.
    Mapped,
    /// A reserved field matched by name on the first record.
    MatchedByName,
    /// Nothing provides it (no records were read).
    Unresolved,
}

/// One output column.
#[derive(Debug, Clone)]
pub struct Field {
    pub name: String,
    pub path: Option<String>,
    pub source: FieldSource,
    rule: ValueRule,
    /// The Avro type, or `None` while it is inferred from the data.
    pub ty: Option<AvroType>,
    pub nullable: bool,
    pub categorical: bool,
    pub textual: bool,
    /// The capture slot of `path` in the selector.
    slot: Option<usize>,
}

/// A resolved mapping: the columns in order and how to fill them.
#[derive(Debug)]
pub struct Mapping {
    pub dataset: Dataset,
    pub fields: Vec<Field>,
    pub timestamp_unit: Option<TimeUnit>,
    pub warnings: Vec<String>,
    selector: Selector,
}

/// What the first record offers for matching and suggestions.
#[derive(Debug, Default)]
pub struct FirstRecord {
    /// Top-level keys, in record order.
    pub keys: Vec<String>,
    /// Every path, nested ones dotted, for "closest" suggestions.
    pub paths: Vec<String>,
}

impl FirstRecord {
    pub fn from_json(record: &[u8]) -> Option<Self> {
        let value: serde_json::Value = serde_json::from_slice(record).ok()?;
        let obj = value.as_object()?;
        let mut first = FirstRecord {
            keys: obj.keys().cloned().collect(),
            paths: Vec::new(),
        };
        fn walk(
            prefix: &str,
            obj: &serde_json::Map<String, serde_json::Value>,
            out: &mut Vec<String>,
        ) {
            for (k, v) in obj {
                let path = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                out.push(path.clone());
                if let Some(inner) = v.as_object() {
                    walk(&path, inner, out);
                }
            }
        }
        walk("", obj, &mut first.paths);
        Some(first)
    }
}

/// Resolves `spec` against the first record (`None` when there is none, as
/// for `schema` or an empty input: unmatched fields then stay empty).
pub fn resolve(spec: &MappingSpec, first: Option<&FirstRecord>) -> Result<Mapping, String> {
    let d = spec.dataset;
    let mut explicit: Vec<Field> = Vec::new();
    for (name, path) in &spec.maps {
        let field = match d.reserved_named(name) {
            Some(r) => Field {
                name: r.name.to_string(),
                path: Some(path.clone()),
                source: FieldSource::Mapped,
                rule: ValueRule::Reserved(r.rule),
                ty: Some(r.ty),
                nullable: r.nullable,
                categorical: false,
                textual: false,
                slot: None,
            },
            None => metadata_field(spec, name, path),
        };
        explicit.push(field);
    }
    let listed = |name: &str| {
        spec.columns
            .as_ref()
            .is_none_or(|cols| cols.iter().any(|c| canonical_name(d, c) == name))
    };
    let mut auto: Vec<Field> = Vec::new();
    for r in d.reserved() {
        if explicit.iter().any(|f| f.name == r.name) || !listed(r.name) {
            continue;
        }
        let wanted = normalize_name(r.name);
        let candidates: Vec<&String> = first
            .map(|f| {
                f.keys
                    .iter()
                    .filter(|k| normalize_name(k) == wanted)
                    .collect()
            })
            .unwrap_or_default();
        let path = match candidates.as_slice() {
            [] => None,
            [one] => Some((*one).clone()),
            many => {
                let names: Vec<String> = many.iter().map(|k| format!("{k:?}")).collect();
                return Err(format!(
                    "{} matches several source fields ({}); choose one with --map {}=<path>",
                    r.name,
                    names.join(", "),
                    r.name
                ));
            }
        };
        let in_columns = spec.columns.is_some();
        if path.is_none() && (first.is_some() || !(r.required || in_columns)) {
            if let Some(first) = first.filter(|_| r.required || in_columns) {
                let closest = closest(r.name, &first.paths);
                let hint = if closest.is_empty() {
                    String::new()
                } else {
                    format!("; closest: {}", closest.join(", "))
                };
                let why = if r.required {
                    ""
                } else {
                    " (it is listed in --columns)"
                };
                return Err(format!(
                    "no source field matches {}{why}{hint} — add --map {}=<path>",
                    r.name, r.name
                ));
            }
            continue;
        }
        auto.push(Field {
            name: r.name.to_string(),
            source: if path.is_some() {
                FieldSource::MatchedByName
            } else {
                FieldSource::Unresolved
            },
            path,
            rule: ValueRule::Reserved(r.rule),
            ty: Some(r.ty),
            nullable: r.nullable,
            categorical: false,
            textual: false,
            slot: None,
        });
    }
    let mut fields: Vec<Field> = auto.into_iter().chain(explicit).collect();
    if let Some(columns) = &spec.columns {
        let order = |f: &Field| {
            columns
                .iter()
                .position(|c| canonical_name(d, c) == f.name)
                .unwrap_or(usize::MAX)
        };
        fields.sort_by_key(order);
    }
    let mut paths: Vec<String> = Vec::new();
    for f in &mut fields {
        if let Some(path) = &f.path {
            f.slot = Some(paths.iter().position(|p| p == path).unwrap_or_else(|| {
                paths.push(path.clone());
                paths.len() - 1
            }));
        }
    }
    let warnings = spec
        .not_categorical
        .iter()
        .map(|n| {
            format!(
                "{n} is neither categorical nor textual: Personalize ignores such a string \
                 field in training"
            )
        })
        .collect();
    Ok(Mapping {
        dataset: d,
        fields,
        timestamp_unit: spec.timestamp_unit,
        warnings,
        selector: Selector::new(&paths),
    })
}

fn metadata_field(spec: &MappingSpec, name: &str, path: &str) -> Field {
    let has = |list: &[String]| list.iter().any(|n| n == name);
    let textual = has(&spec.textual);
    let not_categorical = has(&spec.not_categorical);
    let ty = spec
        .types
        .iter()
        .rev()
        .find(|(n, _)| n == name)
        .map(|(_, t)| *t)
        .or(textual.then_some(AvroType::String));
    let rule = match ty {
        None => ValueRule::Inferred,
        Some(AvroType::String) => ValueRule::MetaString {
            join: !textual && !not_categorical,
        },
        Some(AvroType::Int) => ValueRule::MetaInt { bits32: true },
        Some(AvroType::Long) => ValueRule::MetaInt { bits32: false },
        Some(AvroType::Float | AvroType::Double) => ValueRule::MetaFloat,
    };
    Field {
        name: name.to_string(),
        path: Some(path.to_string()),
        source: FieldSource::Mapped,
        rule,
        ty,
        nullable: true,
        categorical: !textual && !not_categorical,
        textual,
        slot: None,
    }
}

/// Up to three source paths closest to `field`, best first.
fn closest(field: &str, paths: &[String]) -> Vec<String> {
    let want = normalize_name(field);
    let mut scored: Vec<(usize, &String)> = paths
        .iter()
        .map(|p| {
            let last = p.rsplit('.').next().unwrap_or(p);
            let n = normalize_name(last);
            let mut score = edit_distance(&want, &n);
            // A shared stem ("user" in "userid_hash") counts as close.
            if !n.is_empty() && (want.contains(&n) || n.contains(&want)) {
                score = score.min(want.len().abs_diff(n.len()).min(2));
            }
            (score, p)
        })
        .filter(|(score, _)| *score <= (want.len() / 3).max(1))
        .collect();
    scored.sort_by(|a, b| a.0.cmp(&b.0).then_with(|| a.1.cmp(b.1)));
    scored.into_iter().take(3).map(|(_, p)| p.clone()).collect()
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let sub = prev[j] + usize::from(ca != *cb);
            cur.push(sub.min(prev[j + 1] + 1).min(cur[j] + 1));
        }
        prev = cur;
    }
    prev[b.len()]
}

/// Value kinds seen in a field whose type is inferred.
pub(crate) const SEEN_INT: u8 = 1;
pub(crate) const SEEN_FLOAT: u8 = 2;
pub(crate) const SEEN_STRING: u8 = 4;

/// The type for what was seen: strings win, then fractions, then integers;
/// a field with no value at all is a string.
pub(crate) fn inferred_type(seen: u8) -> AvroType {
    if seen & SEEN_STRING != 0 || seen == 0 {
        AvroType::String
    } else if seen & SEEN_FLOAT != 0 {
        AvroType::Double
    } else {
        AvroType::Long
    }
}

/// A bad value: the field index and the reason.
pub(crate) type ValueError = (usize, String);

/// Reused buffers for converting one record.
#[derive(Default)]
pub(crate) struct Scratch {
    text: String,
    bytes: Vec<u8>,
}

impl Mapping {
    /// The schema, with inferred types taken from `seen` (one per field).
    pub fn schema(&self, seen: &[u8]) -> Schema {
        let fields = self
            .fields
            .iter()
            .enumerate()
            .map(|(i, f)| {
                let ty =
                    f.ty.unwrap_or_else(|| inferred_type(seen.get(i).copied().unwrap_or(0)));
                SchemaField {
                    name: f.name.clone(),
                    ty,
                    nullable: f.nullable,
                    categorical: f.categorical && ty == AvroType::String,
                    textual: f.textual,
                }
            })
            .collect();
        Schema {
            dataset: self.dataset,
            fields,
        }
    }

    /// Appends one CSV row for the record whose values `caps` captured in
    /// `buf`. On a bad value nothing is appended.
    pub(crate) fn write_row(
        &self,
        buf: &[u8],
        caps: &[Capture],
        out: &mut Vec<u8>,
        seen: &mut [u8],
        scratch: &mut Scratch,
        dialect: Dialect,
    ) -> Result<(), ValueError> {
        let row_start = out.len();
        for (i, field) in self.fields.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            let value = field.slot.and_then(|s| caps[s].value);
            match self.convert(field, value, buf, scratch, &mut seen[i]) {
                Ok(Some(text)) => push_field(out, text, dialect),
                Ok(None) => {}
                Err(reason) => {
                    out.truncate(row_start);
                    return Err((i, reason));
                }
            }
        }
        out.push(b'\n');
        Ok(())
    }

    fn convert<'b>(
        &self,
        field: &Field,
        value: Option<Value>,
        buf: &'b [u8],
        scratch: &'b mut Scratch,
        seen: &mut u8,
    ) -> Result<Option<&'b str>, String> {
        let value = match value {
            Some(v) if v.kind != Kind::Null => v,
            missing => {
                if field.nullable {
                    return Ok(None);
                }
                return Err(match (missing, &field.path) {
                    (Some(_), _) => "null, but a value is required".to_string(),
                    (None, Some(path)) => {
                        format!("missing: the record has no {path:?}, and a value is required")
                    }
                    (None, None) => "missing: no source field provides it".to_string(),
                });
            }
        };
        let Scratch { text, bytes } = scratch;
        text.clear();
        let rule = match field.rule {
            ValueRule::Reserved(r) => r,
            ValueRule::Inferred => {
                *seen |= match value.kind {
                    Kind::Num { integer: true } => {
                        // Integers past i64 are doubles to every reader.
                        if std::str::from_utf8(value.bytes(buf))
                            .ok()
                            .and_then(|s| s.parse::<i64>().ok())
                            .is_some()
                        {
                            SEEN_INT
                        } else {
                            SEEN_FLOAT
                        }
                    }
                    Kind::Num { integer: false } => SEEN_FLOAT,
                    _ => SEEN_STRING,
                };
                return scalar_or_list(value, buf, text, bytes, true).map(Some);
            }
            ValueRule::MetaString { join } => {
                return scalar_or_list(value, buf, text, bytes, join).map(Some);
            }
            ValueRule::MetaInt { bits32 } => {
                let n = integer(value, buf, bytes)?;
                if bits32 && i32::try_from(n).is_err() {
                    return Err(format!(
                        "{n} does not fit an int (32 bits); use --type {}=long",
                        field.name
                    ));
                }
                let _ = write!(text, "{n}");
                return Ok(Some(text));
            }
            ValueRule::MetaFloat => {
                let x = float(value, buf, bytes)?;
                let _ = write!(text, "{x}");
                return Ok(Some(text));
            }
        };
        match rule {
            Rule::Id => {
                let id = id(value, buf, text, bytes)?;
                let chars = id.chars().count();
                if chars == 0 {
                    return Err("empty, but an id needs 1 to 256 characters".into());
                }
                if chars > 256 {
                    return Err(format!(
                        "the id has {chars} characters; Personalize allows at most 256"
                    ));
                }
                Ok(Some(id))
            }
            Rule::Timestamp => {
                let secs = timestamp(value, buf, bytes, self.timestamp_unit)?;
                let _ = write!(text, "{secs}");
                Ok(Some(text))
            }
            Rule::Number => {
                let x = float(value, buf, bytes)?;
                let _ = write!(text, "{x}");
                Ok(Some(text))
            }
            Rule::Integer => {
                let n = integer(value, buf, bytes)?;
                let _ = write!(text, "{n}");
                Ok(Some(text))
            }
            Rule::Text => {
                let Kind::Str { .. } = value.kind else {
                    return Err(format!("{} where a string is required", shown(value, buf)));
                };
                let s = string(value, buf, text, bytes)?;
                if s.is_empty() && !field.nullable {
                    return Err("empty, but a value is required".into());
                }
                Ok(Some(s))
            }
            Rule::List => scalar_or_list(value, buf, text, bytes, true).map(Some),
        }
    }
}

/// The rows of one chunk, ready for the writer.
#[derive(Debug, Default)]
pub(crate) struct Converted {
    pub csv: Vec<u8>,
    pub records: u64,
    pub rows: u64,
    /// Value kinds seen per field (for inferred types).
    pub seen: Vec<u8>,
}

impl Mapping {
    /// Decodes a chunk of JSON records and converts each into a CSV row. The
    /// first bad record ends the chunk with an error naming its origin.
    pub(crate) fn convert_json(
        &self,
        chunk: &Chunk,
        object: &str,
        decompressed: bool,
        dialect: Dialect,
    ) -> Result<Converted> {
        let buf = chunk.bytes.as_slice();
        let mut done = Converted {
            csv: Vec::with_capacity(buf.len() / 2),
            seen: vec![0; self.fields.len()],
            ..Converted::default()
        };
        let mut caps = vec![Capture::default(); self.selector.slots()];
        let mut scratch = Scratch::default();
        let mut scanner = json::Scanner::new(buf, chunk.top);
        let origin = |at: usize, row: u64| Origin {
            key: object.to_string(),
            offset: chunk.base + at as u64,
            row,
            decompressed,
        };
        loop {
            let span = match scanner.next_record(&self.selector, &mut caps) {
                Ok(Some(span)) => span,
                Ok(None) => break,
                Err(e) => {
                    return Err(Error::record(
                        origin(e.record_start, done.records),
                        None,
                        e.describe(chunk.base),
                    ));
                }
            };
            let row = done.records;
            done.records += 1;
            if let Err((i, reason)) = self.write_row(
                buf,
                &caps,
                &mut done.csv,
                &mut done.seen,
                &mut scratch,
                dialect,
            ) {
                let name = self.fields[i].name.clone();
                return Err(Error::record(origin(span.0, row), Some(name), reason));
            }
            done.rows += 1;
        }
        if chunk.last && scanner.top() != json::Top::Between {
            let at = scanner.pos();
            return Err(Error::record(
                origin(at, done.records),
                None,
                "truncated JSON: the input ends inside the top-level array",
            ));
        }
        Ok(done)
    }
}

/// How a value is shown in an error: the JSON text, shortened.
fn shown(value: Value, buf: &[u8]) -> String {
    match value.kind {
        Kind::Object => "an object".into(),
        Kind::Array => "an array".into(),
        _ => {
            let (s, e) = match value.kind {
                Kind::Str { .. } => (value.start - 1, value.end + 1),
                _ => (value.start, value.end),
            };
            let raw = String::from_utf8_lossy(&buf[s..e]);
            if raw.chars().count() > 60 {
                let cut: String = raw.chars().take(57).collect();
                format!("{cut}...")
            } else {
                raw.into_owned()
            }
        }
    }
}

/// The text of a string value, unescaped when needed.
fn string<'b>(
    value: Value,
    buf: &'b [u8],
    text: &'b mut String,
    bytes: &mut Vec<u8>,
) -> Result<&'b str, String> {
    let raw = value.bytes(buf);
    match value.kind {
        Kind::Str { escaped: false } => {
            std::str::from_utf8(raw).map_err(|_| "invalid UTF-8 in a string".to_string())
        }
        _ => {
            bytes.clear();
            if !json::unescape_into(raw, bytes) {
                return Err(format!("{} holds an invalid \\u escape", shown(value, buf)));
            }
            let s =
                std::str::from_utf8(bytes).map_err(|_| "invalid UTF-8 in a string".to_string())?;
            text.push_str(s);
            Ok(text)
        }
    }
}

/// The text of a number token (validated JSON, so ASCII).
fn number_text(value: Value, buf: &[u8]) -> &str {
    std::str::from_utf8(value.bytes(buf)).unwrap_or("")
}

/// A number as CSV text: integers with their exact digits, others in the
/// shortest form that reads back to the same double (`2.50` is `2.5`,
/// `1e2` is `100`). A number past the double range keeps its digits.
fn number_csv<'b>(value: Value, buf: &'b [u8], out: &'b mut String) -> &'b str {
    let raw = number_text(value, buf);
    if matches!(value.kind, Kind::Num { integer: true }) {
        return raw;
    }
    match raw.parse::<f64>() {
        Ok(x) if x.is_finite() => {
            let _ = write!(out, "{x}");
            out
        }
        _ => raw,
    }
}

/// An id: a string kept exactly, or an integer without decimals.
fn id<'b>(
    value: Value,
    buf: &'b [u8],
    text: &'b mut String,
    bytes: &mut Vec<u8>,
) -> Result<&'b str, String> {
    match value.kind {
        Kind::Str { .. } => string(value, buf, text, bytes),
        Kind::Num { integer: true } => Ok(number_text(value, buf)),
        Kind::Num { integer: false } => {
            let x: f64 = number_text(value, buf).parse().unwrap_or(f64::NAN);
            if x.fract() == 0.0 && x.abs() <= 9_007_199_254_740_992.0 {
                let _ = write!(text, "{}", x as i64);
                Ok(text)
            } else {
                Err(format!("{} is not an integer id", shown(value, buf)))
            }
        }
        _ => Err(format!(
            "{} where an id (a string or an integer) is required",
            shown(value, buf)
        )),
    }
}

fn float(value: Value, buf: &[u8], bytes: &mut Vec<u8>) -> Result<f64, String> {
    let x = match value.kind {
        Kind::Num { .. } => number_text(value, buf).parse::<f64>().ok(),
        Kind::Str { .. } => {
            let mut t = String::new();
            string(value, buf, &mut t, bytes)
                .ok()
                .and_then(|s| s.parse::<f64>().ok())
        }
        _ => None,
    };
    match x {
        Some(x) if x.is_finite() => Ok(x),
        _ => Err(format!("{} is not a number", shown(value, buf))),
    }
}

fn integer(value: Value, buf: &[u8], bytes: &mut Vec<u8>) -> Result<i64, String> {
    let n = match value.kind {
        Kind::Num { integer: true } => number_text(value, buf).parse::<i64>().ok(),
        Kind::Num { integer: false } | Kind::Str { .. } => {
            let x = float(value, buf, bytes).ok();
            x.filter(|x| x.fract() == 0.0 && x.abs() < 9.2e18)
                .map(|x| x as i64)
        }
        _ => None,
    };
    n.ok_or_else(|| format!("{} is not an integer", shown(value, buf)))
}

/// Scalars as text (booleans as `True`/`False`); arrays of scalars joined
/// with `|` when `join`.
fn scalar_or_list<'b>(
    value: Value,
    buf: &'b [u8],
    text: &'b mut String,
    bytes: &mut Vec<u8>,
    join: bool,
) -> Result<&'b str, String> {
    match value.kind {
        Kind::Str { .. } => string(value, buf, text, bytes),
        Kind::Num { .. } => Ok(number_csv(value, buf, text)),
        Kind::True => Ok("True"),
        Kind::False => Ok("False"),
        Kind::Null => Ok(""),
        Kind::Object => Err("an object where a value is required".into()),
        Kind::Array if !join => Err("an array where a single value is required".into()),
        Kind::Array => {
            let body = &buf[value.start..value.end];
            let elements = json::array_elements(body).map_err(|e| e.describe(0))?;
            let mut first = true;
            for elem in elements {
                let part: String = match elem.kind {
                    Kind::Null => continue,
                    Kind::Str { .. } => {
                        let mut t = String::new();
                        string(elem, body, &mut t, bytes)?.to_string()
                    }
                    Kind::Num { .. } => number_csv(elem, body, &mut String::new()).to_string(),
                    Kind::True => "True".into(),
                    Kind::False => "False".into(),
                    Kind::Array | Kind::Object => {
                        return Err("a nested array or object in a list of values".into());
                    }
                };
                if !first {
                    text.push('|');
                }
                first = false;
                text.push_str(&part);
            }
            Ok(text)
        }
    }
}

/// Epoch seconds from a number (unit by magnitude unless forced), a numeric
/// string, or an ISO 8601 / RFC 3339 string.
fn timestamp(
    value: Value,
    buf: &[u8],
    bytes: &mut Vec<u8>,
    unit: Option<TimeUnit>,
) -> Result<i64, String> {
    let bad = || format!("{} is not a timestamp", shown(value, buf));
    let text = match value.kind {
        Kind::Num { .. } => number_text(value, buf).to_string(),
        Kind::Str { .. } => {
            let mut t = String::new();
            string(value, buf, &mut t, bytes)?.to_string()
        }
        _ => return Err(bad()),
    };
    if unit != Some(TimeUnit::Iso)
        && let Some(secs) = numeric_timestamp(&text, unit)
    {
        return Ok(secs);
    }
    if matches!(value.kind, Kind::Str { .. })
        && let Some(secs) = parse_iso8601(&text)
    {
        return Ok(secs);
    }
    Err(bad())
}

/// Epoch seconds from a decimal number in `unit`, or by magnitude.
pub(crate) fn numeric_timestamp(text: &str, unit: Option<TimeUnit>) -> Option<i64> {
    let divisor = |magnitude: f64| -> i64 {
        match unit {
            Some(TimeUnit::Seconds) => 1,
            Some(TimeUnit::Millis) => 1_000,
            Some(TimeUnit::Micros) => 1_000_000,
            Some(TimeUnit::Nanos) => 1_000_000_000,
            _ if magnitude < 1e11 => 1,
            _ if magnitude < 1e14 => 1_000,
            _ if magnitude < 1e17 => 1_000_000,
            _ => 1_000_000_000,
        }
    };
    if let Ok(n) = text.parse::<i64>() {
        return Some(n / divisor(n.unsigned_abs() as f64));
    }
    let x: f64 = text.parse().ok()?;
    if !x.is_finite() || text.trim() != text {
        return None;
    }
    let secs = (x / divisor(x.abs()) as f64).trunc();
    (secs.abs() < 9.2e18).then_some(secs as i64)
}

/// Epoch seconds from `YYYY-MM-DD[(T| )HH:MM[:SS[.fff]]][Z|±HH[:MM]]`; no
/// zone means UTC; fractions are truncated.
pub(crate) fn parse_iso8601(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    let num = |from: usize, len: usize| -> Option<i64> {
        let part = b.get(from..from + len)?;
        part.iter().all(u8::is_ascii_digit).then(|| {
            part.iter()
                .fold(0i64, |acc, d| acc * 10 + i64::from(d - b'0'))
        })
    };
    let year = num(0, 4)?;
    if b.get(4) != Some(&b'-') || b.get(7) != Some(&b'-') {
        return None;
    }
    let month = num(5, 2)?;
    let day = num(8, 2)?;
    if !(1..=12).contains(&month) || day < 1 || day > days_in_month(year, month) {
        return None;
    }
    let mut secs = days_from_civil(year, month, day) * 86_400;
    let mut i = 10;
    if i == b.len() {
        return Some(secs);
    }
    if !matches!(b[i], b'T' | b't' | b' ') {
        return None;
    }
    let hour = num(i + 1, 2)?;
    if b.get(i + 3) != Some(&b':') {
        return None;
    }
    let minute = num(i + 4, 2)?;
    i += 6;
    let mut second = 0;
    if b.get(i) == Some(&b':') {
        second = num(i + 1, 2)?;
        i += 3;
        if matches!(b.get(i), Some(b'.' | b',')) {
            i += 1;
            let start = i;
            while b.get(i).is_some_and(u8::is_ascii_digit) {
                i += 1;
            }
            if i == start {
                return None;
            }
        }
    }
    if hour > 23 || minute > 59 || second > 60 {
        return None;
    }
    secs += hour * 3600 + minute * 60 + second;
    match b.get(i) {
        None => Some(secs),
        Some(b'Z' | b'z') if i + 1 == b.len() => Some(secs),
        Some(&sign @ (b'+' | b'-')) => {
            let oh = num(i + 1, 2)?;
            let om = match b.len() - (i + 3) {
                0 => 0,
                2 => num(i + 3, 2)?,
                3 if b[i + 3] == b':' => num(i + 4, 2)?,
                _ => return None,
            };
            if oh > 23 || om > 59 {
                return None;
            }
            let offset = oh * 3600 + om * 60;
            Some(if sign == b'+' {
                secs - offset
            } else {
                secs + offset
            })
        }
        _ => None,
    }
}

fn days_in_month(year: i64, month: i64) -> i64 {
    match month {
        2 if (year % 4 == 0 && year % 100 != 0) || year % 400 == 0 => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_by_magnitude_and_unit() {
        assert_eq!(numeric_timestamp("1547159644", None), Some(1547159644));
        assert_eq!(numeric_timestamp("1547159644123", None), Some(1547159644));
        assert_eq!(
            numeric_timestamp("1547159644123456", None),
            Some(1547159644)
        );
        assert_eq!(
            numeric_timestamp("1547159644123456789", None),
            Some(1547159644)
        );
        assert_eq!(numeric_timestamp("1547159644.9", None), Some(1547159644));
        assert_eq!(numeric_timestamp("1547159644123.7", None), Some(1547159644));
        assert_eq!(
            numeric_timestamp("1547159644", Some(TimeUnit::Millis)),
            Some(1547159)
        );
        assert_eq!(numeric_timestamp("5", Some(TimeUnit::Seconds)), Some(5));
        assert_eq!(numeric_timestamp("yesterday", None), None);
        assert_eq!(numeric_timestamp("1e400", None), None);
    }

    #[test]
    fn iso_timestamps() {
        assert_eq!(parse_iso8601("2019-01-10T22:34:04Z"), Some(1547159644));
        assert_eq!(parse_iso8601("2019-01-10T22:34:04.999Z"), Some(1547159644));
        assert_eq!(parse_iso8601("2019-01-10 22:34:04"), Some(1547159644));
        assert_eq!(parse_iso8601("2019-01-11T00:34:04+02:00"), Some(1547159644));
        assert_eq!(parse_iso8601("2019-01-10T17:34:04-0500"), Some(1547159644));
        assert_eq!(parse_iso8601("2019-01-10T22:34Z"), Some(1547159640));
        assert_eq!(parse_iso8601("2019-01-10"), Some(1547078400));
        assert_eq!(parse_iso8601("1969-12-31T23:59:59Z"), Some(-1));
        assert_eq!(parse_iso8601("2020-02-29T00:00:00Z"), Some(1582934400));
        for bad in [
            "2019-02-29",
            "2019-13-01",
            "2019-01-10T24:00:00",
            "2019-01-10X",
            "20190110",
            "2019-01-10T22:34:04Zjunk",
        ] {
            assert_eq!(parse_iso8601(bad), None, "{bad}");
        }
    }

    #[test]
    fn closest_names_share_a_stem() {
        let paths: Vec<String> = ["user", "userid_hash", "item", "ts", "detail.user_name"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        assert_eq!(closest("USER_ID", &paths), ["user", "userid_hash"]);
    }

    /// A small deterministic generator, so the test needs no extra crate.
    struct Lcg(u64);
    impl Lcg {
        fn next(&mut self) -> usize {
            self.0 = self
                .0
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (self.0 >> 33) as usize
        }
    }

    fn mapping_for_fuzz() -> Mapping {
        let mut spec = MappingSpec::new(Dataset::Items);
        for (f, p) in [
            ("ITEM_ID", "id"),
            ("CREATION_TIMESTAMP", "ts"),
            ("GENRES", "g"),
            ("PRICE", "n.p"),
            ("DESC", "d"),
            ("COUNT", "c"),
        ] {
            spec.maps.push((f.into(), p.into()));
        }
        spec.textual.push("DESC".into());
        spec.types.push(("COUNT".into(), AvroType::Int));
        resolve(&spec, None).unwrap()
    }

    /// Mutated and truncated inputs never panic, at any chunk size: every
    /// outcome is rows or an error.
    #[test]
    fn no_input_makes_it_panic() {
        let mapping = mapping_for_fuzz();
        let seeds: [&[u8]; 3] = [
            br#"{"id":1,"ts":"2019-01-10T22:34:04.5+01:00","g":["a",null,2,true],"n":{"p":1.5e3},"d":"x\"\u00e9\ud83d\ude00\n","c":7}"#,
            b"\xEF\xBB\xBF[{\"id\":\"a\",\"ts\":1547159644123,\"g\":\"x|y\",\"c\":-1},\n{\"id\":2.0,\"ts\":\"99\",\"n\":{\"p\":\"7\"}}]",
            b"{\"id\":\"\xc3\xa9\",\"ts\":1e400}{\"id\":18446744073709551616,\"ts\":-5,\"c\":2147483648}",
        ];
        let noise = b"{}[]\\\",:0-1eE.tfnu \n\xff\xc3";
        let mut rng = Lcg(7);
        for round in 0..4000 {
            let mut input = seeds[round % seeds.len()].to_vec();
            for _ in 0..1 + rng.next() % 4 {
                let at = rng.next() % (input.len() + 1);
                match rng.next() % 4 {
                    0 if at < input.len() => input[at] = noise[rng.next() % noise.len()],
                    1 => input.insert(at, noise[rng.next() % noise.len()]),
                    2 if at < input.len() => {
                        input.remove(at);
                    }
                    _ => input.truncate(at),
                }
            }
            let target = 1 + rng.next() % 64;
            let mut reader = crate::decode::ChunkReader::new(input.as_slice(), target);
            while let Ok(Some(chunk)) = reader.next_chunk() {
                if mapping
                    .convert_json(&chunk, "fuzz", false, Dialect::Personalize)
                    .is_err()
                {
                    break;
                }
            }
        }
    }

    /// The same valid input gives the same rows whatever the chunk size.
    #[test]
    fn chunking_never_changes_the_rows() {
        let mapping = mapping_for_fuzz();
        let input = br#"{"id":1,"ts":5,"g":["a","b"]} [{"id":"x}{","ts":"1970-01-01T00:00:09Z","d":"q\"\\"},{"id":3,"ts":7}]{"id":4,"ts":8,"n":{"p":0.1}}"#;
        let rows = |target: usize| {
            let mut reader = crate::decode::ChunkReader::new(&input[..], target);
            let mut csv = Vec::new();
            while let Some(chunk) = reader.next_chunk().unwrap() {
                let done = mapping
                    .convert_json(&chunk, "t", false, Dialect::Personalize)
                    .unwrap();
                csv.extend(done.csv);
            }
            String::from_utf8(csv).unwrap()
        };
        let want = r#"1,5,a|b,,,
x}{,9,,,"q\"\\",
3,7,,,,
4,8,,0.1,,
"#;
        for target in 1..input.len() + 2 {
            assert_eq!(rows(target), want, "chunks of {target} bytes");
        }
    }

    #[test]
    fn infers_the_widest_type() {
        assert_eq!(inferred_type(SEEN_INT), AvroType::Long);
        assert_eq!(inferred_type(SEEN_INT | SEEN_FLOAT), AvroType::Double);
        assert_eq!(inferred_type(SEEN_INT | SEEN_STRING), AvroType::String);
        assert_eq!(inferred_type(0), AvroType::String);
    }
}
