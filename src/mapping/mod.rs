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

mod columns;
pub(crate) mod value;

use crate::decode::Chunk;
use crate::decode::csv::Header;
use crate::decode::json::{self, Capture, Selector};
use crate::decode::parquet::{self, ParquetSource};
use crate::decode::structural::{Index, plain_number_at};
use crate::error::{BadRecord, Error, Origin, Result};
use crate::schema::{AvroType, Dataset, Rule, Schema, SchemaField, normalize_name};
use crate::sink::csv::{Dialect, push_field, push_plain_within};
use crate::validate::{RowRules, Tally};
use arrow_array::RecordBatch;
pub(crate) use value::Cell;
use value::{Scratch, inferred_type};

thread_local! {
    /// Each decoding thread's structural index, kept from chunk to chunk.
    static INDEX: std::cell::Cell<Index> = std::cell::Cell::default();
}

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
    /// No `--type`: any scalar or array of scalars (joined with `|` when
    /// `join`); the type is inferred.
    Inferred {
        join: bool,
    },
}

impl ValueRule {
    /// The field is written as a number.
    fn is_numeric(self) -> bool {
        matches!(
            self,
            ValueRule::MetaInt { .. }
                | ValueRule::MetaFloat
                | ValueRule::Reserved(Rule::Number | Rule::Integer | Rule::Timestamp)
        )
    }
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
    /// What of `rule` decides which values convert as written.
    written: Written,
}

/// The rules under which a JSON value can convert as written (see
/// `Mapping::json_as_written`), told apart by one byte: matching on
/// `ValueRule` and its inner rule took a dozen instructions a value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Written {
    Never,
    Id,
    Text,
    Timestamp,
    Number,
}

impl Written {
    fn of(rule: ValueRule) -> Self {
        match rule {
            ValueRule::Reserved(Rule::Id) => Written::Id,
            ValueRule::Reserved(Rule::Text) => Written::Text,
            ValueRule::Reserved(Rule::Timestamp) => Written::Timestamp,
            ValueRule::MetaFloat | ValueRule::Reserved(Rule::Number) => Written::Number,
            _ => Written::Never,
        }
    }
}

/// A resolved mapping: the columns in order and how to fill them.
#[derive(Debug)]
pub struct Mapping {
    pub dataset: Dataset,
    pub fields: Vec<Field>,
    pub timestamp_unit: Option<TimeUnit>,
    pub warnings: Vec<String>,
    /// The source path of each selector slot.
    paths: Vec<String>,
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
    /// The field names of a CSV header.
    pub fn from_names(names: &[String]) -> Self {
        FirstRecord {
            keys: names.to_vec(),
            paths: names.to_vec(),
        }
    }

    pub fn from_json(record: &[u8]) -> Option<Self> {
        // serde_json refuses some valid JSON (1e400, a lone \ud800); the
        // keys are still there, read by the scanner.
        let Ok(value) = serde_json::from_slice::<serde_json::Value>(record) else {
            let keys = json::top_level_keys(record);
            return Some(FirstRecord::from_names(&keys));
        };
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
                written: Written::Never,
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
            written: Written::Never,
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
        f.written = Written::of(f.rule);
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
        paths,
    })
}

fn metadata_field(spec: &MappingSpec, name: &str, path: &str) -> Field {
    let has = |list: &[String]| list.iter().any(|n| n == name);
    let textual = has(&spec.textual);
    let not_categorical = has(&spec.not_categorical);
    // Asking for categorical or textual is asking for a string.
    let stringy = textual || has(&spec.categorical);
    let ty = spec
        .types
        .iter()
        .rev()
        .find(|(n, _)| n == name)
        .map(|(_, t)| *t)
        .or(stringy.then_some(AvroType::String));
    let rule = match ty {
        None => ValueRule::Inferred {
            join: !not_categorical,
        },
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
        written: Written::Never,
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

/// A bad value: the field index and the reason.
pub(crate) type ValueError = (usize, String);

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

    /// Appends one CSV row; `cell` gives the source value of a selector slot
    /// (`None` when the record has none), and `as_written` the text of a
    /// field where it knows it to be what converting the cell gives,
    /// and whether it knows the text to hold no byte the CSV must quote or
    /// escape; `within` is the buffer such texts are sliced from (empty for
    /// none), which lets a short one be copied 16 bytes at once. On a bad
    /// value nothing is appended. With `row.keep`, the row's values stay in
    /// `row` for the output check.
    pub(crate) fn write_row<'c>(
        &self,
        (mut cell, mut as_written, within): (
            impl FnMut(usize) -> Option<Cell<'c>>,
            impl FnMut(&Field) -> Option<(&'c str, bool)>,
            &[u8],
        ),
        row: &mut RowBuf,
        out: &mut Vec<u8>,
        seen: &mut [u8],
        dialect: Dialect,
        mut check: impl FnMut(usize, &str),
    ) -> Result<(), ValueError> {
        let row_start = out.len();
        row.texts.clear();
        row.ends.clear();
        // The cell of the last value converted, kept while its text is in
        // use: a value found as written leaves it alone, so that it costs
        // neither a cell's setting nor a look at it after.
        let mut value: Option<Cell<'c>> = None;
        for (i, field) in self.fields.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            let (text, plain) = match as_written(field) {
                Some(found) => found,
                None => {
                    if let Some(cell) = value.take() {
                        cell.discard();
                    }
                    value = field.slot.and_then(&mut cell);
                    row.scratch.clear();
                    match self.convert(field, value.as_ref(), &mut row.scratch, &mut seen[i]) {
                        Ok(Some(text)) => (text, false),
                        Ok(None) => {
                            check(i, "");
                            row.ends.push(row.texts.len());
                            continue;
                        }
                        Err(reason) => {
                            out.truncate(row_start);
                            return Err((i, reason));
                        }
                    }
                }
            };
            if plain || field.rule.is_numeric() {
                // Digits, sign, point and exponent, or a text known to be
                // plain: nothing to quote or escape.
                debug_assert!(!text.contains([',', '"', '\\', '\n', '\r']), "{text}");
                push_plain_within(out, text.as_bytes(), within);
            } else {
                push_field(out, text, dialect);
            }
            check(i, text);
            if row.keep {
                row.texts.push_str(text);
                row.ends.push(row.texts.len());
            }
        }
        if let Some(cell) = value {
            cell.discard();
        }
        out.push(b'\n');
        Ok(())
    }

    /// The text `convert` gives the JSON value `v` in `field`, found
    /// without a cell, when `v` is one that converts as written: an
    /// unescaped string or an integer as an id, an unescaped string as
    /// text, an integer of epoch seconds, a plain decimal as a number;
    /// and whether the text holds no byte the CSV must quote or escape.
    /// `None`: convert a cell of it. `text` is the chunk.
    #[inline(always)]
    fn json_as_written<'t>(
        &self,
        field: &Field,
        v: json::Value,
        text: &'t str,
    ) -> Option<(&'t str, bool)> {
        use json::Kind;
        let s = text.as_bytes().get(v.start..v.end)?;
        // SAFETY: `text` is valid UTF-8, and a value's span starts and ends
        // beside ASCII bytes (quotes, digits, the blank or structural byte
        // after a number), so on character boundaries.
        let s = unsafe { std::str::from_utf8_unchecked(s) };
        let found = match (field.written, v.kind) {
            (Written::Id, Kind::Str | Kind::Integer) => {
                // Bytes bound characters from above.
                (!s.is_empty() && s.len() <= 256).then_some(s)
            }
            (Written::Text, Kind::Str) => (!s.is_empty() || field.nullable).then_some(s),
            (Written::Timestamp, Kind::Integer) => match plain_in(text, v) {
                Some(true) if s.len() <= 10 => {
                    matches!(self.timestamp_unit, None | Some(TimeUnit::Seconds)).then_some(s)
                }
                _ => value::seconds_as_written_text(s, self.timestamp_unit),
            },
            (Written::Number, Kind::Integer | Kind::Float) => {
                // At most 15 digits, less the zeros ending a fraction (and
                // then a bare point), as `Display` writes the number.
                match plain_in(text, v) {
                    Some(true) => (s.len() <= 15).then_some(s),
                    Some(false) => {
                        let s = s.trim_end_matches('0');
                        Some(s.strip_suffix('.').unwrap_or(s))
                    }
                    None => value::shortest_as_written_text(s),
                }
            }
            _ => None,
        };
        // A number is digits, sign, point and exponent. A JSON string
        // without an escape holds no quote, backslash or line break (control
        // characters must be escaped): only a comma can make the CSV quote it.
        let number = matches!(v.kind, Kind::Integer | Kind::Float);
        found.map(|s| (s, number || comma_free(text.as_bytes(), v.start, s.len())))
    }

    /// The text `convert` gives a CSV field of text `s` in `field`, found
    /// without a cell, when it is the text as written: a non-empty id of at
    /// most 256 bytes or text, epoch seconds of at most 10 digits, a plain
    /// decimal. `None`: convert a cell of it. `plain`: the record's fields hold
    /// nothing to quote (`Records::plain`).
    #[inline(always)]
    fn csv_as_written<'t>(
        &self,
        field: &Field,
        s: &'t str,
        plain: bool,
    ) -> Option<(&'t str, bool)> {
        if s.is_empty() {
            return None;
        }
        let found = match field.written {
            Written::Id => (s.len() <= 256).then_some(s),
            Written::Text => Some(s),
            Written::Timestamp => value::seconds_as_written_text(s, self.timestamp_unit),
            Written::Number => value::shortest_as_written_text(s),
            Written::Never => None,
        };
        // A number's digits, sign and point need no quoting.
        found.map(|t| {
            (
                t,
                plain || !matches!(field.written, Written::Id | Written::Text),
            )
        })
    }

    /// The CSV text of one field, `None` for an empty field.
    fn convert<'s>(
        &self,
        field: &Field,
        value: Option<&'s Cell<'s>>,
        scratch: &'s mut Scratch,
        seen: &mut u8,
    ) -> Result<Option<&'s str>, String> {
        let cell = match value {
            Some(c) if !c.is_null() => c,
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
        let text = match field.rule {
            ValueRule::Inferred { join } => {
                *seen |= value::seen_kind(cell);
                value::scalar_or_list(cell, scratch, join)?
            }
            ValueRule::MetaString { join } => value::scalar_or_list(cell, scratch, join)?,
            ValueRule::MetaInt { bits32 } => {
                let n = value::integer(cell, scratch)?;
                if bits32 && i32::try_from(n).is_err() {
                    return Err(format!(
                        "{n} does not fit an int (32 bits); use --type {}=long",
                        field.name
                    ));
                }
                write_int(scratch, n)
            }
            ValueRule::MetaFloat | ValueRule::Reserved(Rule::Number) => {
                match value::shortest_as_written(cell) {
                    Some(text) => text,
                    None => {
                        let x = value::float(cell, scratch)?;
                        write_float(scratch, x)
                    }
                }
            }
            ValueRule::Reserved(Rule::Integer) => {
                let n = value::integer(cell, scratch)?;
                write_int(scratch, n)
            }
            ValueRule::Reserved(Rule::Timestamp) => {
                match value::seconds_as_written(cell, self.timestamp_unit) {
                    Some(text) => text,
                    None => {
                        let secs = value::timestamp(cell, scratch, self.timestamp_unit)?;
                        write_int(scratch, secs)
                    }
                }
            }
            ValueRule::Reserved(Rule::Id) => {
                let id = value::id(cell, scratch)?;
                if id.is_empty() {
                    return Err("empty, but an id needs 1 to 256 characters".into());
                }
                // Bytes bound characters from above: count past 256 only.
                let chars = if id.len() <= 256 {
                    id.len()
                } else {
                    id.chars().count()
                };
                if chars > 256 {
                    return Err(format!(
                        "the id has {chars} characters; Personalize allows at most 256"
                    ));
                }
                id
            }
            ValueRule::Reserved(Rule::Text) => {
                let s = value::string(cell, scratch)?;
                if s.is_empty() && !field.nullable {
                    return Err("empty, but a value is required".into());
                }
                s
            }
            ValueRule::Reserved(Rule::List) => value::scalar_or_list(cell, scratch, true)?,
        };
        Ok(Some(text))
    }
}

/// Writes `value` as the scratch text and returns it.
fn write_text(scratch: &mut Scratch, value: impl std::fmt::Display) -> &str {
    scratch.text.clear();
    let _ = write!(scratch.text, "{value}");
    &scratch.text
}

fn write_int(scratch: &mut Scratch, n: i64) -> &str {
    scratch.text.clear();
    scratch.text.push_str(itoa::Buffer::new().format(n));
    &scratch.text
}

/// A finite float as `Display` writes it (shortest digits, never an
/// exponent, no `.0`), through ryu's faster shortest-digit search.
fn write_float(scratch: &mut Scratch, x: f64) -> &str {
    if let Some((m, k)) = few_decimals(x) {
        scratch.text.clear();
        if x < 0.0 {
            scratch.text.push('-');
        }
        let mut digits = itoa::Buffer::new();
        let digits = digits.format(m);
        if k > 0 {
            // `m` is not a multiple of ten (else a smaller `k` had fit).
            let (int, frac) = if digits.len() > k {
                digits.split_at(digits.len() - k)
            } else {
                ("0", digits)
            };
            scratch.text.push_str(int);
            scratch.text.push('.');
            for _ in digits.len()..k {
                scratch.text.push('0');
            }
            scratch.text.push_str(frac);
        } else {
            scratch.text.push_str(digits);
        }
        return &scratch.text;
    }
    let mut buf = ryu::Buffer::new();
    let text = buf.format_finite(x);
    // With 16 digits or more the two may pick different digits among
    // equally short ones, and ryu writes exponents: Display decides then.
    let digits = text.bytes().filter(u8::is_ascii_digit).count();
    if digits >= 16 || text.contains('e') {
        return write_text(scratch, x);
    }
    scratch.text.clear();
    scratch
        .text
        .push_str(text.strip_suffix(".0").unwrap_or(text));
    &scratch.text
}

/// `x` as `|m| / 10^k` with the fewest decimals `k` (at most 4), when that
/// decimal reads back as exactly `x` and `|m|` < 2^50: it is then the
/// shortest text of `x`, as `Display` writes it (any text with fewer digits
/// would have fewer decimals, and below 2^50 the values a double rounds
/// from span less than 10^-k, so no other `k`-decimal text reads back as
/// it). Prices, ratings and scores mostly take this path instead of ryu.
fn few_decimals(x: f64) -> Option<(u64, usize)> {
    const POW: [f64; 5] = [1.0, 10.0, 100.0, 1_000.0, 10_000.0];
    const LIMIT: f64 = (1u64 << 50) as f64;
    if x == 0.0 || !x.is_finite() {
        return None; // -0 keeps its sign through Display
    }
    let a = x.abs();
    for (k, &p) in POW.iter().enumerate() {
        let m = (a * p).round();
        if m >= LIMIT {
            return None;
        }
        // `m` and `p` are exact, so `m / p` is the double nearest the
        // decimal, which is what reading the text gives.
        if m / p == a {
            return Some((m as u64, k));
        }
    }
    None
}

/// Fails with `bad`, or keeps it with its text when skipping.
fn reject(done: &mut Converted, opts: RowOptions, bad: BadRecord, raw: &[u8]) -> Result<()> {
    if !opts.skip {
        return Err(Error::Record(Box::new(bad)));
    }
    let cut = raw.len().min(RAW_LIMIT);
    done.rejects.push(Reject {
        bad,
        raw: String::from_utf8_lossy(&raw[..cut]).into_owned(),
    });
    Ok(())
}

impl Converted {
    fn new(fields: usize, input_bytes: usize, opts: RowOptions) -> Self {
        Converted {
            csv: Vec::with_capacity(input_bytes / 2),
            seen: vec![0; fields],
            // Room up front for a user per 256 bytes: a MiB of the
            // benchmark's JSON holds about 6,200 rows of 3,100 users. Room
            // for twice as many was slower: the table outgrew the cache,
            // and merging reads every slot. A chunk of more users grows it.
            tally: opts.rules.map(|rules| rules.tally(input_bytes / 256)),
            row: RowBuf {
                // Copies of the values for the check: with skip only.
                keep: opts.rules.is_some() && opts.skip,
                ..RowBuf::default()
            },
            ..Converted::default()
        }
    }
}

/// The rows of one chunk, ready for the writer.
#[derive(Default)]
pub(crate) struct Converted {
    pub csv: Vec<u8>,
    pub records: u64,
    pub rows: u64,
    /// Value kinds seen per field (for inferred types).
    pub seen: Vec<u8>,
    /// Bad records set aside (`--on-error skip`).
    pub rejects: Vec<Reject>,
    /// The output check over these rows, lines counted from the chunk's
    /// first (with `RowOptions::rules`). A row is one line: `push_field`
    /// writes line breaks in values as spaces.
    pub tally: Option<Tally>,
    /// Where an unfinished record starts at the end of a chunk whose end
    /// was guessed, and the top-level state there: it goes on in the next
    /// chunk.
    pub tail: Option<(usize, json::Top)>,
    row: RowBuf,
}

/// Buffers reused from row to row: the value being converted and, for the
/// output check, the row's values.
#[derive(Default)]
pub(crate) struct RowBuf {
    scratch: Scratch,
    keep: bool,
    texts: String,
    ends: Vec<usize>,
}

impl RowBuf {
    /// The values of the last row written, `""` for an empty field.
    fn values(&self) -> impl Iterator<Item = &str> {
        let starts = std::iter::once(0).chain(self.ends.iter().copied());
        starts.zip(&self.ends).map(|(a, &b)| &self.texts[a..b])
    }
}

/// A bad record set aside with `--on-error skip`: why, and its text.
#[derive(Debug)]
pub(crate) struct Reject {
    pub bad: BadRecord,
    /// The record as it was in the source, cut at `RAW_LIMIT` bytes.
    pub raw: String,
}

/// How much of a rejected record's text is kept.
const RAW_LIMIT: usize = 1024;

/// How rows are made: the CSV dialect, and whether a bad record stops the
/// run (the default) or is set aside.
#[derive(Clone, Copy)]
pub(crate) struct RowOptions<'a> {
    pub dialect: Dialect,
    pub skip: bool,
    /// Check each row written against these (the output check).
    pub rules: Option<&'a RowRules>,
}

/// For the number `v` in `text` that starts with a digit 1 to 9 and is
/// at most 16 bytes long: `Some(true)` when it is all digits, `Some(false)`
/// when one point stands between two of them (from one 16-byte load);
/// `None` for any other number, left to the byte-by-byte rules.
#[inline(always)]
fn plain_in(text: &str, v: json::Value) -> Option<bool> {
    let len = v.end - v.start;
    let first = *text.as_bytes().get(v.start)?;
    if !first.is_ascii_digit() || first == b'0' || len > 16 {
        return None;
    }
    plain_number_at(text.as_bytes(), v.start, len)
}

/// Whether `buf[start..start + len]` holds no comma: from one 16-byte
/// load when it is at most 16 bytes long and the load stays inside `buf`.
#[inline(always)]
fn comma_free(buf: &[u8], start: usize, len: usize) -> bool {
    #[cfg(target_arch = "x86_64")]
    if len <= 16 && buf.len() >= 16 && start <= buf.len() - 16 {
        use std::arch::x86_64::*;
        // SAFETY: SSE2 is part of the x86_64 baseline; the load reads
        // `buf[start..start + 16]`, inside `buf` as checked above.
        let commas = unsafe {
            let v = _mm_loadu_si128(buf.as_ptr().add(start).cast::<__m128i>());
            _mm_movemask_epi8(_mm_cmpeq_epi8(v, _mm_set1_epi8(b',' as i8))) as u32
        };
        return commas & ((1 << len) - 1) == 0;
    }
    !buf[start..start + len].contains(&b',')
}

/// The stable name of a value error, from its message (the messages come
/// from `value`, so the names stay in step with them).
fn value_kind(reason: &str) -> &'static str {
    const KINDS: &[(&str, &str)] = &[
        ("missing:", "missing"),
        ("null, but", "null"),
        ("empty,", "empty"),
        ("is not a timestamp", "not-a-timestamp"),
        ("is not an integer id", "not-an-integer-id"),
        ("is not an integer", "not-an-integer"),
        ("is not a number", "not-a-number"),
        ("the id has", "id-too-long"),
        ("where an id", "not-an-id"),
        ("where a string is required", "not-a-string"),
        ("an object where", "object-not-allowed"),
        ("an array where", "array-not-allowed"),
        ("nested array or object", "nested-list"),
        ("does not fit an int", "int-overflow"),
        ("\\u escape", "invalid-escape"),
        ("invalid UTF-8", "invalid-utf8"),
    ];
    KINDS
        .iter()
        .find(|(text, _)| reason.contains(text))
        .map_or("invalid-value", |(_, kind)| kind)
}

impl Mapping {
    /// Counts one record and appends its row (`as_written` and `within` as
    /// `write_row` takes them); a bad value fails the run or sets the
    /// record aside (`raw` is its source text).
    fn push_row<'c>(
        &self,
        done: &mut Converted,
        cell: impl FnMut(usize) -> Option<Cell<'c>>,
        (as_written, within): (impl FnMut(&Field) -> Option<(&'c str, bool)>, &[u8]),
        opts: RowOptions,
        origin: impl FnOnce() -> Origin,
        raw: &[u8],
    ) -> Result<()> {
        done.records += 1;
        // One line per row: the chunk's first row is its line 1.
        let line = done.rows + 1;
        // Without skip, a bad value ends the run and its tally with it, so
        // values are checked as they are written, without a copy; with
        // skip, only once the whole row is good.
        let mut inline = if opts.skip {
            None
        } else {
            opts.rules.zip(done.tally.as_mut())
        };
        if let Some((rules, tally)) = &mut inline {
            rules.begin_row(tally);
        }
        let written = self.write_row(
            (cell, as_written, within),
            &mut done.row,
            &mut done.csv,
            &mut done.seen,
            opts.dialect,
            |col, text| {
                if let Some((rules, tally)) = &mut inline {
                    rules.value(col, text, tally, line);
                }
            },
        );
        match written {
            Ok(()) => {
                done.rows += 1;
                // The values were kept for the check (skip mode only).
                if let (true, Some(rules), Some(tally)) =
                    (done.row.keep, opts.rules, &mut done.tally)
                {
                    rules.row(done.row.values(), tally, line);
                }
                Ok(())
            }
            Err((i, reason)) => {
                let field = Some(self.fields[i].name.clone());
                let bad = BadRecord {
                    origin: origin(),
                    field,
                    kind: value_kind(&reason),
                    reason,
                };
                reject(done, opts, bad, raw)
            }
        }
    }

    /// Decodes a chunk of CSV records (after the header) and converts each
    /// into a row; a source path names a header column.
    pub(crate) fn convert_csv(
        &self,
        chunk: &Chunk,
        header: &Header,
        object: &str,
        decompressed: bool,
        opts: RowOptions,
    ) -> Result<Converted> {
        let buf = chunk.bytes.as_slice();
        let mut done = Converted::new(self.fields.len(), buf.len(), opts);
        let columns = header.columns(&self.paths);
        // One check of the whole chunk instead of one per field.
        let utf8 = chunk.text().is_some();
        let origin =
            |at: u64, row: u64| Origin::in_stream(object, chunk.base + at, row, decompressed);
        let mut records = crate::decode::csv::Records::new(buf, header.delimiter);
        while let Some((start, end)) = records.next_span() {
            let raw = &buf[start..end];
            let before = start as u64;
            let bad = |kind, field: Option<String>, reason: String, row| BadRecord {
                origin: origin(before, row),
                field,
                kind,
                reason,
            };
            if records.len() == 1 && records.field(0).is_empty() {
                continue;
            }
            if records.len() != header.names.len() {
                let reason = format!(
                    "the row has {} fields; the header has {}",
                    records.len(),
                    header.names.len()
                );
                let b = bad("csv-field-count", None, reason, done.records);
                done.records += 1;
                reject(&mut done, opts, b, raw)?;
                continue;
            }
            if !utf8 {
                // The last such field, as when each was checked in turn.
                let invalid = columns
                    .iter()
                    .flatten()
                    .rev()
                    .find(|&&c| std::str::from_utf8(records.field(c)).is_err());
                if let Some(&c) = invalid {
                    let name = Some(format!("{:?}", header.names[c]));
                    let b = bad("invalid-utf8", name, "invalid UTF-8".into(), done.records);
                    done.records += 1;
                    reject(&mut done, opts, b, raw)?;
                    continue;
                }
            }
            let text = |slot: usize| {
                let field = records.field(columns[slot]?);
                // SAFETY: checked just above, or a part of a chunk that is
                // valid UTF-8 cut at ASCII bytes (delimiters, quotes, line
                // ends), which never fall inside a character.
                Some(unsafe { std::str::from_utf8_unchecked(field) })
            };
            let cell = |slot: usize| text(slot).map(Cell::from_text);
            let plain = records.plain();
            let as_written = |field: &Field| self.csv_as_written(field, text(field.slot?)?, plain);
            let row = done.records;
            self.push_row(
                &mut done,
                cell,
                (as_written, records.within()),
                opts,
                || origin(before, row),
                raw,
            )?;
        }
        Ok(done)
    }

    /// Decodes one Parquet row group (its mapped columns only) and converts
    /// its rows: a batch a column at a time when `convert_columns` takes it,
    /// else row by row.
    pub(crate) fn convert_parquet(
        &self,
        source: &ParquetSource,
        group: usize,
        object: &str,
        opts: RowOptions,
    ) -> Result<Converted> {
        let origin = |row: u64| Origin {
            key: object.to_string(),
            offset: 0,
            row,
            decompressed: false,
            row_group: Some(group),
        };
        let batches = source
            .read_row_group(group, &self.paths)
            .map_err(|e| Error::Decode {
                key: object.to_string(),
                message: e,
            })?;
        let rows: usize = batches.iter().map(RecordBatch::num_rows).sum();
        let mut done = Converted::new(self.fields.len(), rows * 96, opts);
        for batch in &batches {
            let columns: Vec<_> = self
                .paths
                .iter()
                .map(|p| parquet::column(batch, p))
                .collect();
            if self.convert_columns(&columns, batch.num_rows(), &mut done, opts) {
                continue;
            }
            for row in 0..batch.num_rows() {
                let cell = |slot: usize| columns[slot].as_ref().map(|c| c.cell(row));
                let at = done.records;
                self.push_row(&mut done, cell, (|_| None, &[]), opts, || origin(at), b"")?;
            }
        }
        Ok(done)
    }

    /// Decodes a chunk of JSON records and converts each into a CSV row. A
    /// bad record ends the chunk with an error naming its origin, or with
    /// `skip` is set aside and the scanner resynchronises after it.
    /// What `convert_json` gives a guessed chunk that holds nothing but
    /// the start of one record, at its beginning, in the top-level state
    /// `top`: no rows, and that record to read again with the next chunk.
    pub(crate) fn carried(&self, top: json::Top, opts: RowOptions) -> Converted {
        let mut done = Converted::new(self.fields.len(), 0, opts);
        done.tail = Some((0, top));
        done
    }

    pub(crate) fn convert_json(
        &self,
        chunk: &Chunk,
        object: &str,
        decompressed: bool,
        opts: RowOptions,
    ) -> Result<Converted> {
        let len = chunk.bytes.len() + chunk.more.len();
        let mut done = Converted::new(self.fields.len(), len, opts);
        let mut caps = vec![Capture::default(); self.selector.slots()];
        let whole = Part {
            buf: &chunk.bytes,
            // One check of the whole chunk instead of one per string.
            text: chunk.text(),
            base: chunk.base,
            at: 0,
            top: chunk.top,
            guessed: chunk.guessed,
            end_top: chunk.end_top,
            last: chunk.last,
        };
        if chunk.more.is_empty() {
            self.convert_part(&mut done, &mut caps, whole, object, decompressed, opts)?;
            return Ok(done);
        }
        // `bytes` ends at a guessed boundary between objects: when it is
        // not one, the chunk is converted again in one piece.
        let head = Part {
            guessed: true,
            end_top: json::Top::Between,
            last: false,
            ..whole
        };
        self.convert_part(&mut done, &mut caps, head, object, decompressed, opts)?;
        if done.tail.is_some() {
            let mut bytes = Vec::with_capacity(len);
            bytes.extend_from_slice(&chunk.bytes);
            bytes.extend_from_slice(&chunk.more);
            let joined = Chunk {
                bytes,
                utf8: None,
                deferred: None,
                more: bytes::Bytes::new(),
                ..*chunk
            };
            return self.convert_json(&joined, object, decompressed, opts);
        }
        let more = Part {
            buf: &chunk.more,
            text: simdutf8::basic::from_utf8(&chunk.more).ok(),
            base: chunk.base + chunk.bytes.len() as u64,
            at: chunk.bytes.len(),
            top: json::Top::Between,
            ..whole
        };
        self.convert_part(&mut done, &mut caps, more, object, decompressed, opts)?;
        Ok(done)
    }

    /// Converts the records of one part of a chunk into `done`.
    fn convert_part(
        &self,
        done: &mut Converted,
        caps: &mut [Capture],
        part: Part,
        object: &str,
        decompressed: bool,
        opts: RowOptions,
    ) -> Result<()> {
        let Part { buf, text, .. } = part;
        let mut scanner = json::Scanner::new(buf, part.top);
        if text.is_some() {
            scanner = scanner.utf8_checked();
        }
        scanner = scanner.indexed(INDEX.take());
        let origin = |at: usize, row: u64| {
            Origin::in_stream(object, part.base + at as u64, row, decompressed)
        };
        loop {
            let span = match scanner.next_record(&self.selector, caps) {
                Ok(Some(span)) => span,
                Ok(None) => break,
                // The guessed end cut a record (it ends inside it, or the
                // record does not close before it): the record is read
                // again with the next chunk, as an element when it is one.
                Err(e)
                    if part.guessed
                        && (e.kind == json::SyntaxKind::Truncated
                            || json::Splitter::default()
                                .first_end(&buf[e.record_start..])
                                .is_none()) =>
                {
                    let top = match scanner.top() {
                        json::Top::Between => json::Top::Between,
                        _ => json::Top::ArrayStart,
                    };
                    done.tail = Some((part.at + e.record_start, top));
                    break;
                }
                Err(e) => {
                    let bad = BadRecord {
                        origin: origin(e.record_start, done.records),
                        field: None,
                        kind: e.kind.name(),
                        reason: e.describe(part.base),
                    };
                    done.records += 1;
                    // Resynchronise at the next object after the bad start.
                    let next = scanner.resync(e.record_start, e.pos);
                    reject(done, opts, bad, &buf[e.record_start..next])?;
                    continue;
                }
            };
            let cell = |slot: usize| caps[slot].value().map(|v| Cell::from_json_in(v, buf, text));
            let as_written =
                |field: &Field| self.json_as_written(field, caps[field.slot?].value()?, text?);
            let row = done.records;
            let raw = &buf[span.0..span.1];
            self.push_row(
                done,
                cell,
                (as_written, buf),
                opts,
                || origin(span.0, row),
                raw,
            )?;
        }
        if done.tail.is_none() && part.guessed && scanner.top() != part.end_top {
            // The guess assumed another state where the chunk ends (an
            // array opened or closed): what follows is read again from here.
            done.tail = Some((part.at + scanner.pos(), scanner.top()));
        } else if part.last && scanner.top() != json::Top::Between {
            let at = scanner.pos();
            let bad = BadRecord {
                origin: origin(at, done.records),
                field: None,
                kind: "truncated-json",
                reason: "truncated JSON: the input ends inside the top-level array".into(),
            };
            done.records += 1;
            reject(done, opts, bad, b"")?;
        }
        INDEX.set(scanner.into_index().unwrap_or_default());
        Ok(())
    }
}

/// A run of a chunk's records in one buffer (`Chunk::bytes` or
/// `Chunk::more`), with what the chunk says of its ends.
#[derive(Clone, Copy)]
struct Part<'a> {
    buf: &'a [u8],
    text: Option<&'a str>,
    /// Offset of `buf[0]` in the object's stream, and in the chunk.
    base: u64,
    at: usize,
    top: json::Top,
    guessed: bool,
    end_top: json::Top,
    last: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn floats_are_written_as_display_writes_them() {
        let mut x = 0x853C_49E6_748F_EA9Bu64;
        let mut values = vec![
            0.0,
            -0.0,
            1.0,
            4.0,
            0.1,
            50.62,
            1e15,
            1e16,
            1e-5,
            1e-7,
            1e300,
            f64::MAX,
        ];
        for _ in 0..100_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let v = f64::from_bits(x);
            if v.is_finite() {
                values.push(v);
            }
            // Random bits within the range ryu serves, at every exponent.
            let exp = (x >> 52) % 80;
            values.push(f64::from_bits(
                (x & 0x000F_FFFF_FFFF_FFFF) | ((1023 - 20 + exp) << 52),
            ));
            values.push((x % 1_000_000) as f64 / 100.0);
            // Few decimals (the fast path) and its edges, both signs.
            for p in [1.0, 10.0, 1_000.0, 10_000.0, 100_000.0] {
                let v = (x % 10_000_000_000) as f64 / p;
                values.extend([v, -v, v * 1e6, v / 1e6]);
            }
        }
        let mut scratch = Scratch::default();
        for v in values {
            assert_eq!(write_float(&mut scratch, v), format!("{v}"));
        }
    }

    /// Whatever the JSON value and the field's rule, a text found as
    /// written is the one conversion of the value's cell gives.
    #[test]
    fn json_values_as_written_are_what_conversion_writes() {
        let long = |n: usize| format!("\"{}\"", "a".repeat(n));
        let mut values: Vec<String> = [
            r#""u-1""#,
            r#""""#,
            r#"" ""#,
            r#""a\"b""#,
            r#""\u00e9""#,
            r#""é""#,
            r#""1,2""#,
            "169",
            "-5",
            "0",
            "-0",
            "1767395367",
            "-1767395367",
            "9999999999",
            "17673953670",
            "1767395367123",
            "63.30",
            "13.50",
            "100.00",
            "7.0",
            "0.50",
            "-13.50",
            "1.000000000000000",
            "92.48",
            "3",
            "1e5",
            "1E-2",
            "-0.5",
            "0.000001",
            "0.1234567890123456",
            "123456789012345678901234",
            "true",
            "false",
            "null",
            "[1]",
            r#"{"a":1}"#,
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        values.extend([long(256), long(257)]);
        // Commas at every place in strings of 1 to 20 bytes, and none.
        for len in 1..=20 {
            values.push(format!("\"{}\"", "b".repeat(len)));
            for at in 0..len {
                let mut text = "b".repeat(len);
                text.replace_range(at..=at, ",");
                values.push(format!("\"{text}\""));
            }
        }
        let mut taken = 0;
        for unit in [None, Some(TimeUnit::Seconds), Some(TimeUnit::Millis)] {
            let fields = [
                "USER_ID",
                "ITEM_ID",
                "EVENT_TYPE",
                "EVENT_VALUE",
                "TIMESTAMP",
                "PRICE",
                "NOTE",
            ];
            let maps: Vec<_> = fields.iter().map(|&f| (f, "k")).collect();
            let mut spec = spec_of(Dataset::Interactions, &maps);
            spec.types.push(("PRICE".into(), AvroType::Float));
            spec.timestamp_unit = unit;
            let m = resolve(&spec, None).unwrap();
            // The value near the end of the buffer, then far from it.
            let padded = values.iter().flat_map(|v| [(v, 0), (v, 20)]);
            for (value, pad) in padded {
                let record = format!(r#"{{"k": {value}}}{}"#, " ".repeat(pad));
                let buf = record.as_bytes();
                let sel = Selector::new(&["k"]);
                let mut caps = vec![Capture::default(); sel.slots()];
                let mut scanner = json::Scanner::new(buf, json::Top::Between);
                scanner.next_record(&sel, &mut caps).unwrap();
                let v = caps[0].value().unwrap();
                for field in &m.fields {
                    let Some((fast, plain)) = m.json_as_written(field, v, &record) else {
                        continue;
                    };
                    taken += 1;
                    let cell = Cell::from_json_in(v, buf, Some(&record));
                    let mut scratch = Scratch::default();
                    let slow = m.convert(field, Some(&cell), &mut scratch, &mut 0);
                    assert_eq!(slow, Ok(Some(fast)), "{} {value} {unit:?}", field.name);
                    // Plain exactly when nothing needs quoting.
                    let special = fast.contains([',', '"', '\\', '\n', '\r']);
                    assert_eq!(plain, !special, "{} {value} {pad}", field.name);
                }
            }
        }
        assert!(taken > 40, "{taken}");
    }

    /// Numbers taken as written from one load (a timestamp, a number)
    /// are exactly those the byte-by-byte rules take, whether the load
    /// fits in the buffer or the number ends it.
    #[test]
    fn numbers_as_written_from_one_load_follow_the_byte_rules() {
        let alphabet = b"0123456789.-eE+";
        let mut next = crate::testing::below(0x853C_49E6_748F_EA9Bu64);
        let mut checked = [0usize; 2];
        for unit in [None, Some(TimeUnit::Seconds), Some(TimeUnit::Millis)] {
            let maps = [("EVENT_VALUE", "k"), ("TIMESTAMP", "k"), ("PRICE", "k")];
            let mut spec = spec_of(Dataset::Interactions, &maps);
            spec.types.push(("PRICE".into(), AvroType::Float));
            spec.timestamp_unit = unit;
            let m = resolve(&spec, None).unwrap();
            for _ in 0..20_000 {
                let len = 1 + next(20);
                let number: String = (0..len)
                    .map(|_| match next(6) {
                        0 => alphabet[next(alphabet.len())] as char,
                        1 => '0',
                        _ => (b'1' + next(9) as u8) as char,
                    })
                    .collect();
                let pad = " ".repeat(next(2) * 20);
                let record = format!(r#"{{"k":{number}}}{pad}"#);
                let sel = Selector::new(&["k"]);
                let mut caps = vec![Capture::default(); sel.slots()];
                let mut scanner = json::Scanner::new(record.as_bytes(), json::Top::Between);
                if scanner.next_record(&sel, &mut caps).is_err() {
                    continue;
                }
                let v = caps[0].value().unwrap();
                let integer = match v.kind {
                    json::Kind::Integer => true,
                    json::Kind::Float => false,
                    _ => continue,
                };
                for field in &m.fields {
                    let want = match field.rule {
                        ValueRule::Reserved(Rule::Timestamp) if integer => {
                            value::seconds_as_written_text(&number, unit)
                        }
                        ValueRule::Reserved(Rule::Timestamp) => None,
                        ValueRule::Reserved(Rule::Number) | ValueRule::MetaFloat => {
                            value::shortest_as_written_text(&number)
                        }
                        _ => continue,
                    };
                    let got = m.json_as_written(field, v, &record).map(|(s, plain)| {
                        assert!(plain, "{number:?}");
                        s
                    });
                    assert_eq!(got, want, "{} {number:?} {unit:?}", field.name);
                    checked[usize::from(got.is_some())] += 1;
                }
            }
        }
        // Both answers came up often.
        assert!(checked.iter().all(|&n| n > 5_000), "{checked:?}");
    }

    #[test]
    fn closest_names_share_a_stem() {
        let paths: Vec<String> = ["user", "userid_hash", "item", "ts", "detail.user_name"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        assert_eq!(closest("USER_ID", &paths), ["user", "userid_hash"]);
    }

    /// A small deterministic generator, so the tests need no extra crate.
    pub(super) struct Lcg(pub(super) u64);
    impl Lcg {
        pub(super) fn next(&mut self) -> usize {
            self.0 = self
                .0
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (self.0 >> 33) as usize
        }

        /// A number below `n`.
        pub(super) fn below(&mut self, n: usize) -> usize {
            self.next() % n
        }
    }

    fn opts(skip: bool) -> RowOptions<'static> {
        RowOptions {
            dialect: Dialect::Personalize,
            skip,
            rules: None,
        }
    }

    /// A spec of `dataset` with `maps` as `--map FIELD=PATH` flags.
    pub(super) fn spec_of(dataset: Dataset, maps: &[(&str, &str)]) -> MappingSpec {
        let mut spec = MappingSpec::new(dataset);
        spec.maps = maps.iter().map(|&(f, p)| (f.into(), p.into())).collect();
        spec
    }

    fn mapping_for_fuzz() -> Mapping {
        let mut spec = spec_of(
            Dataset::Items,
            &[
                ("ITEM_ID", "id"),
                ("CREATION_TIMESTAMP", "ts"),
                ("GENRES", "g"),
                ("PRICE", "n.p"),
                ("DESC", "d"),
                ("COUNT", "c"),
            ],
        );
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
            let mut reader = crate::decode::ChunkReader::new(
                input.as_slice(),
                target,
                crate::decode::Boundaries::Json(Default::default()),
            );
            while let Ok(Some(chunk)) = reader.next_chunk() {
                if mapping
                    .convert_json(&chunk, "fuzz", false, opts(round % 2 == 0))
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
            let mut reader = crate::decode::ChunkReader::new(
                &input[..],
                target,
                crate::decode::Boundaries::Json(Default::default()),
            );
            let mut csv = Vec::new();
            while let Some(chunk) = reader.next_chunk().unwrap() {
                let done = mapping
                    .convert_json(&chunk, "t", false, opts(false))
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
}
