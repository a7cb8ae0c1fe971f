//! Personalize's import rules, checked before an upload: `validate`.
//!
//! A finding has a stable rule id, a severity (error: Personalize would
//! reject the import; warning: the import works but training fails or
//! quality suffers), a message that says how to fix it, and for row-level
//! rules the first examples (file, line, column) with the total count.
//! Background and sources for each rule: PERSONALIZE.md.
//!
//! Checked here: the schema itself (record name, namespace, field types,
//! the reserved fields' types, categorical and textual rules, size), the
//! CSV against it (header, field counts, nulls, types, lengths), the field
//! limits per dataset, event types, the training minimums (not for an
//! incremental import), timestamps that look like milliseconds, and the
//! import size limits.

use std::collections::HashMap;
use std::fmt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};

use serde_json::Value;

use crate::error::{Error, Result};
use crate::inspect::Distinct;
use crate::mapping::value::number_shape;
use crate::schema::{AvroType, Dataset, normalize_name};
use crate::sink::csv::Dialect;
use std::io::Read;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Severity {
    Error,
    Warning,
}

/// Where a row-level finding was seen (1-based line and column).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Location {
    pub file: String,
    pub line: u64,
    pub column: usize,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Finding {
    pub rule: &'static str,
    pub severity: Severity,
    pub message: String,
    pub examples: Vec<Location>,
    pub count: u64,
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let level = match self.severity {
            Severity::Error => "error",
            Severity::Warning => "warning",
        };
        write!(f, "{level}[{}]: {}", self.rule, self.message)?;
        for at in &self.examples {
            write!(f, "\n  at {}:{}:{}", at.file, at.line, at.column)?;
        }
        if !self.examples.is_empty() && self.count > self.examples.len() as u64 {
            write!(f, "\n  ({} in all)", self.count)?;
        }
        Ok(())
    }
}

/// FULL replaces the dataset; INCREMENTAL adds to it (no minimums then).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImportMode {
    Full,
    Incremental,
}

/// Limits Personalize applies; sizes can be lowered for tests.
#[derive(Debug, Clone)]
pub struct Limits {
    pub full_import_bytes: u64,
    pub incremental_import_bytes: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            full_import_bytes: 100_000_000_000,
            incremental_import_bytes: 1_000_000_000,
        }
    }
}

/// One schema field as the validator needs it.
#[derive(Debug, Clone)]
struct Field {
    name: String,
    ty: AvroType,
    nullable: bool,
    categorical: bool,
    textual: bool,
}

/// Collects findings, keeping the first few examples of each rule.
#[derive(Default)]
struct Findings {
    list: Vec<Finding>,
    index: HashMap<(&'static str, String), usize>,
}

const EXAMPLES: usize = 3;

impl Findings {
    fn add(&mut self, rule: &'static str, severity: Severity, message: String) {
        self.list.push(Finding {
            rule,
            severity,
            message,
            examples: Vec::new(),
            count: 1,
        });
    }

    /// A row-level finding, merged by rule and message.
    fn at(&mut self, rule: &'static str, severity: Severity, message: String, at: Location) {
        let key = (rule, message.clone());
        match self.index.get(&key) {
            Some(&i) => {
                let f = &mut self.list[i];
                f.count += 1;
                if f.examples.len() < EXAMPLES {
                    f.examples.push(at);
                }
            }
            None => {
                self.index.insert(key, self.list.len());
                self.list.push(Finding {
                    rule,
                    severity,
                    message,
                    examples: vec![at],
                    count: 1,
                });
            }
        }
    }
}

impl Findings {
    /// Folds in the findings of a later stretch of rows, whose lines are
    /// counted from `line_base`: the same as finding them here in order.
    fn merge(&mut self, other: Findings, line_base: u64) {
        for mut f in other.list {
            for at in &mut f.examples {
                at.line += line_base;
            }
            let key = (f.rule, f.message);
            match self.index.get(&key) {
                Some(&i) => {
                    let mine = &mut self.list[i];
                    mine.count += f.count;
                    let room = EXAMPLES.saturating_sub(mine.examples.len());
                    mine.examples.extend(f.examples.into_iter().take(room));
                }
                None => {
                    let (rule, message) = key;
                    self.index.insert((rule, message.clone()), self.list.len());
                    self.list.push(Finding { rule, message, ..f });
                }
            }
        }
    }
}

/// What a stretch of rows showed: the row-level findings and the counts
/// behind the dataset-wide rules. `convert`'s workers keep one per chunk
/// and the writer folds them together in order.
#[derive(Default)]
pub(crate) struct Tally {
    findings: Findings,
    stats: Stats,
}

impl fmt::Debug for Tally {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tally")
            .field("rows", &self.stats.rows)
            .field("findings", &self.findings.list.len())
            .finish_non_exhaustive()
    }
}

impl Tally {
    /// Everything the tally holds, in a fixed order (for tests comparing
    /// two ways of counting the same rows).
    #[cfg(test)]
    pub(crate) fn summary(&mut self, rules: &RowRules) -> String {
        self.stats.settle();
        let s = &self.stats;
        let mut users: Vec<_> = s.per_user.iter().collect();
        users.sort();
        let mut events: Vec<_> = s.event_counts.iter().collect();
        events.sort();
        format!(
            "{:?}\n{}\n{users:?} {events:?} {:?} {}",
            self.findings.list,
            s.to_json(&rules.fields),
            s.empty,
            s.users_capped
        )
    }

    /// Folds in a later stretch whose lines are counted from `line_base`.
    pub(crate) fn merge(&mut self, other: Tally, line_base: u64) {
        let empty = self.findings.list.is_empty() && self.findings.index.is_empty();
        if line_base == 0 && self.stats.rows == 0 && empty {
            // Nothing here yet, and no lines to shift: take it whole.
            *self = other;
            return;
        }
        self.findings.merge(other.findings, line_base);
        self.stats.merge(other.stats);
    }
}

/// The rules on each value of a row, for one file and schema.
pub(crate) struct RowRules {
    file: String,
    fields: Vec<Field>,
    /// What each column is to the rules, resolved once.
    roles: Vec<Role>,
    /// The values were written by `convert` in their field's type (its
    /// value rules parse and format every number), so `value-type` cannot
    /// fail and is not parsed for again.
    typed: bool,
    /// The bound of the run's item sketch so far, published by the writer
    /// as it folds tallies in: a new tally starts from it, so a chunk keeps
    /// only the hashes that can still count.
    items_bound: AtomicU64,
}

/// A column's part in the rules.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Role {
    UserId,
    /// ITEM_ID or ACTION_ID.
    ItemId,
    Timestamp,
    CreationTimestamp,
    EventType,
    OtherReserved,
    Metadata,
}

impl RowRules {
    fn new(file: &str, fields: Vec<Field>, dataset: Dataset) -> Self {
        let roles = fields
            .iter()
            .map(|f| match dataset.reserved_named(&f.name).map(|r| r.name) {
                Some("USER_ID") => Role::UserId,
                Some("ITEM_ID" | "ACTION_ID") => Role::ItemId,
                Some("TIMESTAMP") => Role::Timestamp,
                Some("CREATION_TIMESTAMP") => Role::CreationTimestamp,
                Some("EVENT_TYPE") => Role::EventType,
                Some(_) => Role::OtherReserved,
                None => Role::Metadata,
            })
            .collect();
        RowRules {
            file: file.to_string(),
            fields,
            roles,
            typed: false,
            items_bound: AtomicU64::new(u64::MAX),
        }
    }

    /// The rules for the rows `convert` writes under `schema` (inferred
    /// types still open count as strings: inference only ever settles on
    /// a type every value written has).
    pub(crate) fn for_output(file: &str, schema: &crate::schema::Schema) -> Self {
        let fields = schema
            .fields
            .iter()
            .map(|f| Field {
                name: f.name.clone(),
                ty: f.ty,
                nullable: f.nullable,
                categorical: f.categorical,
                textual: f.textual,
            })
            .collect();
        RowRules {
            typed: true,
            ..RowRules::new(file, fields, schema.dataset)
        }
    }

    /// An empty tally for a stretch of rows of this run, with room for
    /// about `users` users met (at most `USERS_MET`).
    pub(crate) fn tally(&self, users: usize) -> Tally {
        let mut tally = Tally::default();
        tally.stats.items = Distinct::below(self.items_bound.load(Ordering::Relaxed));
        tally.stats.met = Vec::with_capacity(users.min(USERS_MET));
        tally
    }

    /// Publishes the item sketch's bound of the run's tally so far.
    pub(crate) fn publish(&self, run: &Tally) {
        self.items_bound
            .store(run.stats.items.bound(), Ordering::Relaxed);
    }

    pub(crate) fn columns(&self) -> usize {
        self.fields.len()
    }

    /// Checks one row of `columns()` values (`""` for an empty field) on
    /// `line`.
    pub(crate) fn row<'t>(
        &self,
        values: impl Iterator<Item = &'t str>,
        tally: &mut Tally,
        line: u64,
    ) {
        self.begin_row(tally);
        for (col, text) in values.enumerate() {
            self.value(col, text, tally, line);
        }
    }

    /// Counts a row whose values `value` then checks one by one.
    pub(crate) fn begin_row(&self, tally: &mut Tally) {
        self.begin_rows(1, tally);
    }

    /// Counts `n` rows whose values are then checked or counted.
    pub(crate) fn begin_rows(&self, n: u64, tally: &mut Tally) {
        tally.stats.rows += n;
        if tally.stats.empty.len() < self.fields.len() {
            tally.stats.empty.resize(self.fields.len(), 0);
        }
    }

    /// Checks the value in column `col` (`""` for an empty field) of the
    /// row on `line`.
    #[inline]
    pub(crate) fn value(&self, col: usize, text: &str, tally: &mut Tally, line: u64) {
        match self.quick(col, text) {
            Some(passed) => self.count(col, text, passed, 1, tally),
            None => self.judge_value(col, text, tally, line),
        }
    }

    /// `value` for a value that `quick` could not pass.
    #[inline(never)]
    fn judge_value(&self, col: usize, text: &str, tally: &mut Tally, line: u64) {
        let out = &mut tally.findings;
        let passed = self.judge(col, text, |rule, severity, message| {
            let at = Location {
                file: self.file.clone(),
                line,
                column: col + 1,
            };
            out.at(rule, severity, message, at);
        });
        self.count(col, text, passed, 1, tally);
    }

    /// What counting `text` in column `col` takes when the rules pass it
    /// without a finding; `None` when `value` would report one.
    pub(crate) fn passes(&self, col: usize, text: &str) -> Option<Passed> {
        let mut clean = true;
        let passed = self.judge(col, text, |_, _, _| clean = false);
        clean.then_some(passed)
    }

    /// Makes room at once for `distinct` more users when column `col` holds
    /// user ids, about to be counted a distinct value at a time.
    pub(crate) fn expect(&self, col: usize, distinct: usize, tally: &mut Tally) {
        if self.roles[col] == Role::UserId {
            let stats = &mut tally.stats;
            stats
                .met
                .reserve(distinct.min(USERS_MET.saturating_sub(stats.met.len())));
        }
    }

    /// Counts `n` values `text` that `judge` passed in column `col`.
    #[inline(always)]
    pub(crate) fn count(&self, col: usize, text: &str, passed: Passed, n: u64, tally: &mut Tally) {
        let stats = &mut tally.stats;
        if text.is_empty() {
            stats.empty[col] += n;
            return;
        }
        if !passed.typed {
            return;
        }
        match self.roles[col] {
            Role::UserId => stats.user(text, n),
            Role::ItemId => stats.items.add(text),
            Role::Timestamp => {
                if let Some(t) = passed.long {
                    let (lo, hi) = stats.time_range.unwrap_or((t, t));
                    stats.time_range = Some((lo.min(t), hi.max(t)));
                }
            }
            Role::EventType => stats.event_counts.add(text, n),
            _ => {}
        }
    }

    /// What `judge` gives a value that it passes without a finding for
    /// sure, found at less cost: a value that `convert` wrote in its
    /// field's type, of 1 to 256 bytes (every length limit is past 256
    /// characters), and for a timestamp an integer under the milliseconds
    /// bound. `None`: ask `judge`.
    #[inline(always)]
    fn quick(&self, col: usize, text: &str) -> Option<Passed> {
        if !self.typed || text.is_empty() || text.len() > 256 {
            return None;
        }
        match self.roles[col] {
            Role::Timestamp | Role::CreationTimestamp => {
                let t = match plain_digits(text.as_bytes()) {
                    Some(t) => t,
                    None => text.parse::<i64>().ok()?,
                };
                (t.unsigned_abs() < MILLISECONDS).then_some(Passed {
                    typed: true,
                    long: Some(t),
                })
            }
            _ => Some(Passed {
                typed: true,
                long: None,
            }),
        }
    }

    /// The rules on one value: each finding goes to `report`, and what
    /// counting the value takes comes back.
    #[inline(always)]
    fn judge(
        &self,
        col: usize,
        text: &str,
        mut report: impl FnMut(&'static str, Severity, String),
    ) -> Passed {
        use Severity::Error as E;
        let field = &self.fields[col];
        if text.is_empty() {
            if !field.nullable {
                report(
                    "required-value",
                    E,
                    format!("{}: empty, but the field cannot be null", field.name),
                );
            }
            return Passed::default();
        }
        // Every limit below is 256 characters or more, and bytes bound
        // characters from above: count them only past 256 bytes.
        let chars = if text.len() <= 256 {
            text.len()
        } else {
            text.chars().count()
        };
        let role = self.roles[col];
        let timestamp = matches!(role, Role::Timestamp | Role::CreationTimestamp);
        let integer = !self.typed && matches!(field.ty, AvroType::Int | AvroType::Long);
        let long = (timestamp || integer)
            .then(|| text.parse::<i64>().ok())
            .flatten();
        let parses = self.typed
            || match field.ty {
                AvroType::Int => long.is_some_and(|n| i32::try_from(n).is_ok()),
                AvroType::Long => long.is_some(),
                AvroType::Float | AvroType::Double => number_shape(text).is_some(),
                AvroType::String => true,
            };
        if !parses {
            report(
                "value-type",
                E,
                format!(
                    "{}: a value that is not a {}",
                    field.name,
                    field.ty.as_str()
                ),
            );
            return Passed::default();
        }
        match role {
            Role::UserId | Role::ItemId if chars > 256 => {
                report(
                    "id-length",
                    E,
                    format!("{}: an id over 256 characters", field.name),
                );
            }
            _ if timestamp && long.is_some_and(|t| t.unsigned_abs() >= MILLISECONDS) => {
                report(
                    "timestamp-milliseconds",
                    Severity::Warning,
                    format!(
                        "{}: looks like milliseconds; Personalize wants epoch seconds (convert with --timestamp-unit ms)",
                        field.name
                    ),
                );
            }
            _ => {}
        }
        if field.textual && chars > 20_000 {
            report(
                "textual-length",
                Severity::Warning,
                format!(
                    "{}: text over 20,000 characters is truncated by Personalize",
                    field.name
                ),
            );
        } else if field.ty == AvroType::String
            && !field.textual
            && role == Role::Metadata
            && chars > 1000
        {
            let rule = if field.categorical {
                "categorical-length"
            } else {
                "string-length"
            };
            report(
                rule,
                E,
                format!(
                    "{}: a value over 1,000 characters (separators included); the import job fails",
                    field.name
                ),
            );
        }
        Passed { typed: true, long }
    }
}

/// Epoch seconds this large are taken for milliseconds (the year 5138).
const MILLISECONDS: u64 = 100_000_000_000;

/// The number that 1 to 16 ASCII digits spell, as `parse::<i64>` reads
/// them: the first eight as one word, the rest a byte at a time. `None`
/// for any other text (a sign, more digits: `parse` then reads it). A
/// timestamp's form, read once a row.
#[inline(always)]
fn plain_digits(text: &[u8]) -> Option<i64> {
    /// Whether the eight bytes of `w` are all ASCII digits (simdjson's
    /// test: a carry out of a byte only comes from one that fails it).
    fn eight_digits(w: u64) -> bool {
        const HIGH: u64 = 0xF0F0_F0F0_F0F0_F0F0;
        (w & HIGH) | (((w.wrapping_add(0x0606_0606_0606_0606)) & HIGH) >> 4)
            == 0x3333_3333_3333_3333
    }
    /// The number eight digits spell, the first byte the most significant.
    fn eight_value(w: u64) -> u64 {
        let w = ((w & 0x0F0F_0F0F_0F0F_0F0F).wrapping_mul(2561)) >> 8;
        let w = ((w & 0x00FF_00FF_00FF_00FF).wrapping_mul(6_553_601)) >> 16;
        ((w & 0x0000_FFFF_0000_FFFF).wrapping_mul(42_949_672_960_001)) >> 32
    }
    if text.is_empty() || text.len() > 16 {
        return None;
    }
    let mut n = 0u64;
    let mut rest = text;
    if let Some((head, tail)) = rest.split_first_chunk::<8>() {
        let w = u64::from_le_bytes(*head);
        if !eight_digits(w) {
            return None;
        }
        n = eight_value(w);
        rest = tail;
    }
    for &b in rest {
        let d = b.wrapping_sub(b'0');
        if d > 9 {
            return None;
        }
        n = n * 10 + u64::from(d);
    }
    // At most 16 digits: below 10^16, well inside an i64.
    Some(n as i64)
}

/// A value as the rules saw it, for `RowRules::count`.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Passed {
    /// It has its field's type, so it counts toward the dataset figures.
    typed: bool,
    /// Its integer, for a timestamp.
    long: Option<i64>,
}

/// Parses and checks a schema; the fields are `None` when it is unusable.
fn check_schema(
    text: &str,
    dataset: Option<Dataset>,
    out: &mut Findings,
) -> Option<(Dataset, Vec<Field>)> {
    use Severity::Error as E;
    if text.chars().count() > 20_000 {
        out.add(
            "schema-size",
            E,
            format!(
                "the schema has {} characters; Personalize accepts at most 20,000",
                text.chars().count()
            ),
        );
    }
    let value: Value = match serde_json::from_str(text) {
        Ok(v) => v,
        Err(e) => {
            out.add(
                "schema-json",
                E,
                format!("the schema is not valid JSON: {e}"),
            );
            return None;
        }
    };
    if value["type"] != "record" {
        out.add(
            "schema-record",
            E,
            "the schema's \"type\" must be \"record\"".into(),
        );
    }
    let name = value["name"].as_str().unwrap_or_default();
    let named = Dataset::ALL.into_iter().find(|d| d.record_name() == name);
    let dataset = match (dataset, named) {
        (Some(d), _) => {
            if d.record_name() != name {
                out.add(
                    "schema-record-name",
                    E,
                    format!(
                        "the record name is {name:?}; a {d} schema must be named {:?}",
                        d.record_name()
                    ),
                );
            }
            d
        }
        (None, Some(d)) => d,
        (None, None) => {
            out.add("schema-record-name", E, format!(
                "the record name {name:?} is not a dataset type (Interactions, Users, Items, Actions, ActionInteractions); or pass --dataset"
            ));
            Dataset::Interactions
        }
    };
    if value["namespace"] != "com.amazonaws.personalize.schema" {
        out.add(
            "schema-namespace",
            E,
            "the namespace must be \"com.amazonaws.personalize.schema\"".into(),
        );
    }
    let mut fields = Vec::new();
    for f in value["fields"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
    {
        let name = f["name"].as_str().unwrap_or_default().to_string();
        let types: Vec<&str> = match &f["type"] {
            Value::String(t) => vec![t.as_str()],
            Value::Array(ts) => ts.iter().filter_map(Value::as_str).collect(),
            _ => Vec::new(),
        };
        let nullable = types.contains(&"null");
        let main: Vec<&str> = types.iter().copied().filter(|t| *t != "null").collect();
        let ty = match main.as_slice() {
            [t] => match *t {
                "string" | "boolean" => Some(AvroType::String),
                "int" => Some(AvroType::Int),
                "long" => Some(AvroType::Long),
                "float" => Some(AvroType::Float),
                "double" => Some(AvroType::Double),
                _ => None,
            },
            _ => None,
        };
        let Some(ty) = ty else {
            out.add("schema-type", E, format!(
                "{name}: type {} is not one Personalize accepts (string, int, long, float, double, boolean, each optionally with null)",
                f["type"]
            ));
            continue;
        };
        let categorical = f["categorical"] == true;
        let textual = f["textual"] == true;
        if (categorical || textual) && ty != AvroType::String {
            out.add(
                "schema-categorical",
                E,
                format!("{name}: only a string field can be categorical or textual"),
            );
        }
        if textual && dataset != Dataset::Items {
            out.add(
                "schema-textual",
                E,
                format!("{name}: textual fields exist only in Items datasets"),
            );
        }
        if let Some(r) = dataset.reserved_named(&name) {
            if r.ty != ty || (nullable && !r.nullable) {
                let want = if r.nullable {
                    format!("[\"null\", \"{}\"]", r.ty.as_str())
                } else {
                    format!("\"{}\"", r.ty.as_str())
                };
                out.add(
                    "schema-reserved-type",
                    E,
                    format!("{name}: a reserved field of {dataset} must have the type {want}"),
                );
            }
        } else if ty == AvroType::String && !categorical && !textual {
            out.add("schema-unused-string", Severity::Warning, format!(
                "{name}: a string field that is neither categorical nor textual is ignored in training; add \"categorical\": true"
            ));
        }
        fields.push(Field {
            name,
            ty,
            nullable,
            categorical,
            textual,
        });
    }
    Some((dataset, fields))
}

/// The dataset-wide rules on the field list.
fn check_fields(dataset: Dataset, fields: &[Field], out: &mut Findings) {
    use Severity::Error as E;
    for r in dataset.reserved().iter().filter(|r| r.required) {
        if !fields.iter().any(|f| f.name == r.name) {
            out.add("required-field", E, format!("{} is required in {dataset} and missing; Personalize answers \"Input CSV is missing the following columns\"", r.name));
        }
    }
    let mut seen = HashMap::new();
    for f in fields {
        if let Some(other) = seen.insert(normalize_name(&f.name), f.name.clone()) {
            out.add("field-names-unique", E, format!(
                "{} and {other} are the same name once non-alphanumerics are removed; rename one",
                f.name
            ));
        }
    }
    let metadata = fields
        .iter()
        .filter(|f| dataset.reserved_named(&f.name).is_none())
        .count();
    let max = match dataset {
        Dataset::Interactions | Dataset::ActionInteractions => 5,
        Dataset::Users => 25,
        Dataset::Items => 100,
        Dataset::Actions => 10,
    };
    if metadata > max {
        out.add(
            "metadata-count",
            E,
            format!("{metadata} metadata fields; {dataset} datasets allow at most {max}"),
        );
    }
    if matches!(dataset, Dataset::Users | Dataset::Items | Dataset::Actions) && metadata == 0 {
        out.add("metadata-required", E, format!("{dataset} datasets need at least one metadata field besides the id; add one with --map"));
    }
    if fields.iter().filter(|f| f.textual).count() > 1 {
        out.add(
            "textual-count",
            E,
            "more than one textual field; an Items dataset allows one".into(),
        );
    }
}

/// What `validate` found.
pub struct Report {
    pub findings: Vec<Finding>,
    /// Each file and the CSV dialect it was read in.
    pub dialects: Vec<(String, &'static str)>,
    /// The dataset figures (users, items, time range, …) for `--report`.
    pub figures: Value,
}

impl Report {
    pub fn errors(&self) -> usize {
        self.findings
            .iter()
            .filter(|f| f.severity == Severity::Error)
            .count()
    }

    pub fn text(&self) -> String {
        let mut out = String::new();
        for (file, dialect) in &self.dialects {
            out.push_str(&format!("{file}: read with {dialect}\n"));
        }
        for f in &self.findings {
            out.push_str(&format!("{f}\n"));
        }
        let errors = self.errors();
        out.push_str(&format!(
            "{errors} error{}, {} warning{}\n",
            if errors == 1 { "" } else { "s" },
            self.findings.len() - errors,
            if self.findings.len() - errors == 1 {
                ""
            } else {
                "s"
            }
        ));
        out
    }
}

/// Checks CSV files (and their schema) against Personalize's rules.
pub struct Validator {
    pub dataset: Option<Dataset>,
    /// The CSV dialect when known (after `convert`); guessed otherwise.
    pub dialect: Option<Dialect>,
    /// A domain dataset group's extra rules.
    pub domain: Option<Domain>,
    pub mode: ImportMode,
    pub limits: Limits,
}

/// The domain dataset groups (PERSONALIZE.md section 2.4).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Domain {
    Ecommerce,
    VideoOnDemand,
}

impl std::str::FromStr for Domain {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match normalize_name(s).as_str() {
            "ecommerce" => Ok(Domain::Ecommerce),
            "videoondemand" | "vod" => Ok(Domain::VideoOnDemand),
            _ => Err(format!(
                "unknown domain {s:?}; expected ecommerce or video-on-demand"
            )),
        }
    }
}

impl Domain {
    fn name(self) -> &'static str {
        match self {
            Domain::Ecommerce => "ECOMMERCE",
            Domain::VideoOnDemand => "VIDEO_ON_DEMAND",
        }
    }

    /// Fields the domain requires beyond the custom rules, with what kind.
    fn required(self, dataset: Dataset) -> &'static [(&'static str, &'static str)] {
        match (self, dataset) {
            (_, Dataset::Interactions) => &[("EVENT_TYPE", "string")],
            (Domain::Ecommerce, Dataset::Items) => {
                &[("PRICE", "float"), ("CATEGORY_L1", "categorical")]
            }
            (Domain::VideoOnDemand, Dataset::Items) => {
                &[("GENRES", "categorical"), ("CREATION_TIMESTAMP", "long")]
            }
            _ => &[],
        }
    }

    /// The event types whose counts the domain's use cases need.
    fn event_types(self) -> [&'static str; 2] {
        match self {
            Domain::Ecommerce => ["view", "purchase"],
            Domain::VideoOnDemand => ["watch", "click"],
        }
    }
}

/// A domain's rules on the field list.
fn check_domain(domain: Domain, dataset: Dataset, fields: &[Field], out: &mut Findings) {
    use Severity::Error as E;
    if matches!(dataset, Dataset::Actions | Dataset::ActionInteractions) {
        out.add(
            "domain-dataset",
            E,
            format!(
                "{dataset} datasets do not exist in a {} domain dataset group; use a custom one",
                domain.name()
            ),
        );
        return;
    }
    for (name, kind) in domain.required(dataset) {
        let field = fields.iter().find(|f| f.name == *name);
        let ok = match (field, *kind) {
            (None, _) => false,
            (Some(f), "categorical") => f.ty == AvroType::String && f.categorical,
            (Some(f), "float") => matches!(f.ty, AvroType::Float | AvroType::Double),
            (Some(f), "long") => f.ty == AvroType::Long,
            (Some(f), _) => f.ty == AvroType::String,
        };
        if !ok {
            out.add(
                "domain-required-field",
                E,
                format!("{} {dataset} need a {kind} field {name}", domain.name()),
            );
        }
    }
}

impl Validator {
    /// The findings, errors first, and the dialect of each file.
    pub fn run(&self, files: &[PathBuf], schema: Option<&str>) -> Result<Report> {
        let named: Vec<(PathBuf, String)> = files
            .iter()
            .map(|p| (p.clone(), p.display().to_string()))
            .collect();
        self.run_named(&named, schema)
    }

    /// As `run`, with each file named in findings as the caller says (the
    /// output a local copy stands for).
    pub fn run_named(&self, files: &[(PathBuf, String)], schema: Option<&str>) -> Result<Report> {
        let read_err = |p: &PathBuf, source| Error::Read {
            key: p.display().to_string(),
            what: "cannot read".into(),
            source,
        };
        let mut tally = Tally::default();
        let (mut dataset, mut fields) = self.start(schema, &mut tally);
        let mut total_bytes = 0u64;
        let mut dialects = Vec::new();
        for (path, name) in files {
            // Streamed: only the first MiBs are held, to tell the dialect.
            let mut file = std::fs::File::open(path).map_err(|e| read_err(path, e))?;
            total_bytes += file.metadata().map_err(|e| read_err(path, e))?.len();
            let mut head = Vec::new();
            (&mut file)
                .take(4 << 20)
                .read_to_end(&mut head)
                .map_err(|e| read_err(path, e))?;
            let (backslash, dialect) = match self.dialect {
                Some(d) => (d == Dialect::Personalize, dialect_name(d)),
                None => match (
                    uses_backslash_escapes(&head),
                    memchr::memmem::find(&head, b"\"\""),
                ) {
                    (true, _) => (true, dialect_name(Dialect::Personalize)),
                    (false, Some(_)) => (false, dialect_name(Dialect::Rfc4180)),
                    (false, None) => (false, "no escaped quotes (both dialects read it alike)"),
                },
            };
            dialects.push((name.clone(), dialect));
            let bom = head.starts_with(b"\xEF\xBB\xBF");
            let body = std::io::Cursor::new(head).chain(file);
            check_csv(
                name,
                bom,
                backslash,
                body,
                &mut dataset,
                &mut fields,
                &mut tally,
            );
        }
        Ok(self.conclude(dataset, fields, tally, total_bytes, dialects))
    }

    /// The report on what `convert` wrote: its schema, the rows' tally
    /// its workers kept, and the CSV's size.
    pub(crate) fn after_convert(
        &self,
        file: &str,
        schema: &str,
        rows: Tally,
        bytes: u64,
        dialect: Dialect,
    ) -> Report {
        let mut tally = Tally::default();
        let (dataset, fields) = self.start(Some(schema), &mut tally);
        // The workers held inferred fields to the string rules (their type
        // was open); a field inferred as a number is not held to them.
        let numbers: Vec<String> = fields
            .iter()
            .flatten()
            .filter(|f| f.ty != AvroType::String)
            .map(|f| format!("{}: ", f.name))
            .collect();
        let mut rows = rows;
        rows.findings.list.retain(|f| {
            !(matches!(f.rule, "categorical-length" | "string-length")
                && numbers.iter().any(|n| f.message.starts_with(n.as_str())))
        });
        tally.merge(rows, 0);
        let dialects = vec![(file.to_string(), dialect_name(dialect))];
        self.conclude(dataset, fields, tally, bytes, dialects)
    }

    /// Checks the schema, if any: the dataset and fields it gives.
    fn start(
        &self,
        schema: Option<&str>,
        tally: &mut Tally,
    ) -> (Option<Dataset>, Option<Vec<Field>>) {
        match schema.and_then(|text| check_schema(text, self.dataset, &mut tally.findings)) {
            Some((d, f)) => (Some(d), Some(f)),
            None => (self.dataset, None),
        }
    }

    /// The dataset-wide rules once every row is counted, and the report.
    fn conclude(
        &self,
        dataset: Option<Dataset>,
        fields: Option<Vec<Field>>,
        tally: Tally,
        total_bytes: u64,
        dialects: Vec<(String, &'static str)>,
    ) -> Report {
        let Tally {
            findings: mut out,
            mut stats,
        } = tally;
        stats.settle();
        let dataset = dataset.unwrap_or(Dataset::Interactions);
        if let Some(fields) = &fields {
            check_fields(dataset, fields, &mut out);
            if let Some(domain) = self.domain {
                check_domain(domain, dataset, fields, &mut out);
            }
        }
        stats.finish(
            dataset,
            self.mode,
            fields.as_deref().unwrap_or_default(),
            &mut out,
        );
        if let (Some(domain), Dataset::Interactions, ImportMode::Full) =
            (self.domain, dataset, self.mode)
        {
            let [a, b] = domain.event_types();
            let count = |t: &str| -> u64 {
                stats
                    .event_counts
                    .iter()
                    .filter(|(k, _)| k.eq_ignore_ascii_case(t))
                    .map(|(_, n)| n)
                    .sum()
            };
            if count(a) < 1000 && count(b) < 1000 {
                out.add("domain-event-types", Severity::Warning, format!(
                    "{} recommenders need at least 1,000 events of type {a} or {b} (case ignored); this data has {} and {}",
                    domain.name(),
                    count(a),
                    count(b)
                ));
            }
        }
        let (limit, mode) = match self.mode {
            ImportMode::Full => (self.limits.full_import_bytes, "FULL"),
            ImportMode::Incremental => (self.limits.incremental_import_bytes, "INCREMENTAL"),
        };
        if total_bytes > limit {
            out.add("import-size", Severity::Error, format!(
                "{total_bytes} bytes in all; one {mode} import job takes at most {limit} bytes: split the data into several imports"
            ));
        }
        let figures = stats.to_json(fields.as_deref().unwrap_or_default());
        let mut findings = out.list;
        findings.sort_by_key(|f| f.severity);
        Report {
            findings,
            dialects,
            figures,
        }
    }
}

fn dialect_name(dialect: Dialect) -> &'static str {
    match dialect {
        Dialect::Personalize => "backslash escapes (the Personalize dialect)",
        Dialect::Rfc4180 => "doubled quotes (RFC 4180)",
    }
}

/// Reads one CSV file and checks its header and every row.
fn check_csv(
    name: &str,
    bom: bool,
    backslash: bool,
    body: impl Read,
    dataset: &mut Option<Dataset>,
    fields: &mut Option<Vec<Field>>,
    tally: &mut Tally,
) {
    use Severity::Error as E;
    let out = &mut tally.findings;
    let mut reader = ::csv::ReaderBuilder::new();
    reader.has_headers(false).flexible(true);
    if backslash {
        reader.escape(Some(b'\\')).double_quote(false);
    }
    let mut reader = reader.from_reader(body);
    let mut record = ::csv::ByteRecord::new();
    let header: Vec<String> = match reader.read_byte_record(&mut record) {
        Ok(true) => record
            .iter()
            .map(|f| String::from_utf8_lossy(f).into_owned())
            .collect(),
        _ => {
            out.add("csv-header", E, format!("{name}: no header row"));
            return;
        }
    };
    if bom {
        out.add("csv-bom", E, format!("{name}: starts with a UTF-8 BOM, which makes Personalize miss the first column; save without BOM"));
    }
    let fields = fields.get_or_insert_with(|| {
        // No schema: reserved fields by name, metadata as strings.
        let d = dataset.get_or_insert(Dataset::Interactions);
        header
            .iter()
            .map(|h| match d.reserved_named(h) {
                Some(r) => Field {
                    name: h.clone(),
                    ty: r.ty,
                    nullable: r.nullable,
                    categorical: false,
                    textual: false,
                },
                None => Field {
                    name: h.clone(),
                    ty: AvroType::String,
                    nullable: true,
                    categorical: true,
                    textual: false,
                },
            })
            .collect()
    });
    let want: Vec<&str> = fields.iter().map(|f| f.name.as_str()).collect();
    if header != want {
        out.add(
            "header-matches-schema",
            E,
            format!(
                "{name}: the header is {} but the schema's fields are {}, in this order",
                header.join(","),
                want.join(",")
            ),
        );
        return;
    }
    let rules = RowRules::new(
        name,
        fields.clone(),
        dataset.unwrap_or(Dataset::Interactions),
    );
    let mut line = 1u64;
    loop {
        line += 1;
        let Ok(more) = reader.read_byte_record(&mut record) else {
            let at = Location {
                file: name.into(),
                line,
                column: 1,
            };
            tally
                .findings
                .at("csv-syntax", E, format!("{name}: not valid CSV"), at);
            break;
        };
        if !more {
            break;
        }
        line = record.position().map_or(line, |p| p.line());
        if record.len() != rules.columns() {
            let at = Location {
                file: name.into(),
                line,
                column: record.len(),
            };
            let message = format!("rows must have {} fields", rules.columns());
            tally.findings.at("csv-field-count", E, message, at);
            continue;
        }
        let values: Vec<std::borrow::Cow<str>> =
            record.iter().map(String::from_utf8_lossy).collect();
        rules.row(values.iter().map(|v| v.as_ref()), tally, line);
    }
}

/// A file uses backslash escapes when a quoted field holds `\"`, and RFC
/// 4180 doubling when one holds `""` (the first seen decides).
pub fn uses_backslash_escapes(bytes: &[u8]) -> bool {
    let backslash = memchr::memmem::find(bytes, b"\\\"");
    let doubled = memchr::memmem::find(bytes, b"\"\"");
    match (backslash, doubled) {
        (Some(b), Some(d)) => b < d,
        (Some(_), None) => true,
        _ => false,
    }
}

/// Dataset-wide counts for the training minimums.
#[derive(Default)]
struct Stats {
    rows: u64,
    /// Interactions per user, up to `USERS_TRACKED` users.
    /// Keyed by the top 60 bits of the id's hash: two of 2 Mi ids share a
    /// key with a chance near one in 500,000, and the table stays small
    /// and cheap to merge.
    per_user: UserCounts,
    /// The users met since, in order, each with its count: added to
    /// `per_user` by `settle`, when they reach `USERS_MET`, or when the
    /// writer merges them into the run's tally. A chunk's rows seldom
    /// meet a user twice, so counting them in a table of the chunk's own
    /// and merging that cost twice the work (and the table a quarter of
    /// the core's cache): a worker only lists them, and the writer counts
    /// each in the run's table.
    met: Vec<(u64, u32)>,
    users_capped: bool,
    /// The users `per_user` refused, past `USERS_TRACKED`: with the users
    /// it holds, they make the distinct users' sketch (`users`). Every
    /// user counted sketched as well cost each row a second look-up.
    refused: Distinct,
    items: Distinct,
    /// Events per type (domain use cases count them).
    event_counts: EventCounts,
    time_range: Option<(i64, i64)>,
    /// Empty values per column (the others are filled: counting those cost
    /// every value a count, an empty one is rare).
    empty: Vec<u64>,
}

/// Events per type: a short list searched in order while the types are
/// few (training takes at most 10), a map past that. Hashing every row's
/// type for the map took 2% of the JSON benchmark's samples; the list,
/// its types told apart by length first, costs a few compares.
///
/// Past `TYPES_TRACKED` types the others are only sketched, for the count
/// of distinct types: a column of ids mapped as the event type by mistake
/// (6 million distinct, 556 MB at peak when each was counted) takes no
/// more memory than a few types.
#[derive(Default)]
struct EventCounts {
    few: Vec<(String, u64)>,
    many: HashMap<String, u64, foldhash::fast::RandomState>,
    /// The types past `TYPES_TRACKED`, when there were any.
    others: Option<Box<Distinct>>,
}

/// Event types counted one by one (training takes at most 10).
const TYPES_TRACKED: usize = 1_000;

/// `a == b`, without a call to `memcmp` for texts of up to 16 bytes: one
/// was made for each row's type (3% of the JSON benchmark's samples).
#[inline(always)]
fn same_text(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    if a.len() != b.len() {
        return false;
    }
    // Two loads that overlap when the text is shorter than both.
    match a.len() {
        8..=16 => a.first_chunk::<8>() == b.first_chunk() && a.last_chunk::<8>() == b.last_chunk(),
        4..=7 => a.first_chunk::<4>() == b.first_chunk() && a.last_chunk::<4>() == b.last_chunk(),
        _ => a == b,
    }
}

/// Types the short list holds before all move to the map.
const FEW_TYPES: usize = 16;

impl EventCounts {
    #[inline(always)]
    fn add(&mut self, kind: &str, n: u64) {
        if self.many.is_empty() {
            let found = self.few.iter_mut().find(|(k, _)| same_text(k, kind));
            if let Some((_, count)) = found {
                *count += n;
                return;
            }
            if self.few.len() < FEW_TYPES {
                self.few.push((kind.to_string(), n));
                return;
            }
            self.many.extend(self.few.drain(..));
        }
        let room = self.many.len() < TYPES_TRACKED;
        match self.many.get_mut(kind) {
            Some(count) => *count += n,
            None if room => {
                self.many.insert(kind.to_string(), n);
            }
            None => self.others.get_or_insert_default().add(kind),
        }
    }

    fn merge_from(&mut self, other: &EventCounts) {
        for (kind, n) in other.iter() {
            self.add(kind, n);
        }
        if let Some(others) = &other.others {
            let mine = self.others.get_or_insert_default();
            mine.merge(Distinct::clone(others));
        }
    }

    /// The distinct types, counted or (past `TYPES_TRACKED`) estimated,
    /// and whether the count is exact.
    fn distinct(&self) -> (u64, bool) {
        let Some(others) = &self.others else {
            return ((self.few.len() + self.many.len()) as u64, true);
        };
        // A type sketched in one chunk may be counted from another: the
        // sketch of them all counts each once.
        let mut all = Distinct::clone(others);
        for (kind, _) in self.iter() {
            all.add(kind);
        }
        (all.estimate().0, false)
    }

    fn iter(&self) -> impl Iterator<Item = (&str, u64)> {
        let few = self.few.iter().map(|(k, n)| (k.as_str(), *n));
        few.chain(self.many.iter().map(|(k, n)| (k.as_str(), *n)))
    }
}

/// Counts by user hash, a word a user: the hash's top 60 bits, and below
/// them its count, which stops at 15 (the figures tell counts apart up to
/// 10). An open table, linear probing, at most half full, 0 marking a free
/// slot. At 8 bytes a user, the 2 Mi users counted at most take 32 MiB
/// (at 16 bytes and 5 million users it took 256 MiB, and a run over 6
/// million users peaked at 450 MB), and the benchmark's 100,000 users 2
/// MiB. The run's table outgrows the cache, and a merge that
/// looked each user up in it waited on memory for most of them (4% of a
/// two-thread run's samples, 0.6 CPU s on the benchmark): `add_all` asks
/// for each slot a few users ahead, which a map type does not let it do.
#[derive(Default)]
struct UserCounts {
    slots: Vec<u64>,
    len: usize,
}

/// The bits of a slot that hold its count.
const COUNT: u64 = 0xf;

/// The slot's key for a user hash: never 0, no count bits.
#[inline(always)]
fn user_key(hash: u64) -> u64 {
    (hash & !COUNT).max(COUNT + 1)
}

impl UserCounts {
    /// Room for `users` without growing.
    fn with_capacity(users: usize) -> Self {
        UserCounts {
            slots: vec![0; (users * 2).next_power_of_two()],
            len: 0,
        }
    }

    fn len(&self) -> usize {
        self.len
    }

    /// Adds `n` to the count of user `hash`. False, adding nothing, when
    /// the user is new and `limit` users are counted already.
    #[inline(always)]
    fn add(&mut self, hash: u64, n: u32, limit: usize) -> bool {
        if self.slots.is_empty() {
            self.grow();
        }
        let key = user_key(hash);
        let mask = self.slots.len() - 1;
        let mut i = self.home(key);
        loop {
            let slot = &mut self.slots[i];
            if *slot & !COUNT == key {
                *slot = key | ((*slot & COUNT) + u64::from(n)).min(COUNT);
                return true;
            }
            if *slot == 0 {
                if self.len >= limit {
                    return false;
                }
                *slot = key | u64::from(n).min(COUNT);
                self.len += 1;
                if self.len * 2 > self.slots.len() {
                    self.grow();
                }
                return true;
            }
            i = (i + 1) & mask;
        }
    }

    #[cold]
    #[inline(never)]
    fn grow(&mut self) {
        self.resize(self.slots.len().max(8));
    }

    /// The counts moved into a table with room for `users`.
    fn resize(&mut self, users: usize) {
        let old = std::mem::replace(self, UserCounts::with_capacity(users));
        for (key, n) in old.iter() {
            self.add(key, n, usize::MAX);
        }
    }

    /// The slot where the search for `key` starts (the table not empty).
    #[inline(always)]
    fn home(&self, key: u64) -> usize {
        (key >> 4) as usize & (self.slots.len() - 1)
    }

    /// Adds every count of `counts` (a hash of 0 is no user, skipped),
    /// asking for each slot a few ahead. False when a new user was refused
    /// at `limit`; those refused go to `refused` (by key).
    fn add_all(&mut self, counts: &[(u64, u32)], limit: usize, refused: &mut Distinct) -> bool {
        // Far enough for a load from memory to arrive before its user
        // comes up: at 16 users ahead, the load of the slot still took
        // 56% of the merge's samples; at 48 the merge took 2.5-2.7% of a
        // one-core run's samples instead of 3.5-3.6% (32: 3.0-3.7%, 96:
        // 2.7-3.5%).
        const AHEAD: usize = 48;
        let mut all = true;
        for (i, &(hash, n)) in counts.iter().enumerate() {
            if let Some(&(ahead, _)) = counts.get(i + AHEAD)
                && ahead != 0
            {
                self.prefetch(ahead);
            }
            if hash != 0 && !self.add(hash, n, limit) {
                refused.add_hash(user_key(hash));
                all = false;
            }
        }
        all
    }

    /// Starts loading the slot where the search for `hash` starts.
    #[inline(always)]
    fn prefetch(&self, hash: u64) {
        #[cfg(target_arch = "x86_64")]
        if !self.slots.is_empty() {
            use std::arch::x86_64::{_MM_HINT_T0, _mm_prefetch};
            let slot = &self.slots[self.home(user_key(hash))];
            // SAFETY: a prefetch reads nothing the program sees; the
            // address is that of a slot of the table.
            unsafe { _mm_prefetch::<_MM_HINT_T0>(std::ptr::from_ref(slot).cast()) };
        }
    }

    /// Each user's key and count.
    fn iter(&self) -> impl Iterator<Item = (u64, u32)> + '_ {
        self.slots
            .iter()
            .filter(|&&slot| slot != 0)
            .map(|&slot| (slot & !COUNT, (slot & COUNT) as u32))
    }

    fn values(&self) -> impl Iterator<Item = u32> + '_ {
        self.iter().map(|(_, n)| n)
    }
}

/// Users whose interactions are counted one by one; past this the per-user
/// buckets cover the first ones only (and say so). The table then has 4 Mi
/// slots (32 MiB), half of them taken.
const USERS_TRACKED: usize = 2 << 20;

/// Users a tally lists as met (`Stats::met`) before it counts them in its
/// own table: 256 KiB, more than a JSON chunk's rows.
const USERS_MET: usize = 16_384;

impl Stats {
    /// Counts `n` interactions of user `id`.
    #[inline]
    fn user(&mut self, id: &str, n: u64) {
        let hash = Distinct::hash(id);
        // A hash of 0 marks a free slot in `per_user`.
        self.met
            .push((hash.max(1), u32::try_from(n).unwrap_or(u32::MAX)));
        if self.met.len() >= USERS_MET {
            self.settle();
        }
    }

    /// Counts the users met: `per_user` and `users_capped` are then whole.
    #[inline(never)]
    fn settle(&mut self) {
        let refused = &mut self.refused;
        self.users_capped |= !self.per_user.add_all(&self.met, USERS_TRACKED, refused);
        self.met.clear();
    }

    /// The sketch of the distinct users: those counted and those refused.
    fn users(&self) -> Distinct {
        let mut users = self.refused.clone();
        for (hash, _) in self.per_user.iter() {
            users.add_hash(hash);
        }
        users
    }

    /// Folds in the counts of later rows: their users are counted after
    /// these, those `other` counted before those it met.
    fn merge(&mut self, other: Stats) {
        self.settle();
        self.rows += other.rows;
        let theirs: Vec<(u64, u32)> = other.per_user.iter().collect();
        for counts in [&theirs, &other.met] {
            let refused = &mut self.refused;
            self.users_capped |= !self.per_user.add_all(counts, USERS_TRACKED, refused);
        }
        self.users_capped |= other.users_capped;
        self.refused.merge(other.refused);
        self.items.merge(other.items);
        self.event_counts.merge_from(&other.event_counts);
        if let Some((lo, hi)) = other.time_range {
            let (a, b) = self.time_range.unwrap_or((lo, hi));
            self.time_range = Some((a.min(lo), b.max(hi)));
        }
        if self.empty.len() < other.empty.len() {
            self.empty.resize(other.empty.len(), 0);
        }
        for (mine, n) in self.empty.iter_mut().zip(other.empty) {
            *mine += n;
        }
    }

    /// The dataset figures for `--report`.
    fn to_json(&self, fields: &[Field]) -> Value {
        let exact = |(n, exact): (u64, bool)| serde_json::json!({"count": n, "exact": exact});
        let mut buckets = [0u64; 4];
        for n in self.per_user.values() {
            let i = match n {
                1 => 0,
                2..=4 => 1,
                5..=9 => 2,
                _ => 3,
            };
            buckets[i] += 1;
        }
        let completeness: serde_json::Map<String, Value> = fields
            .iter()
            .zip(&self.empty)
            .filter(|(f, _)| f.nullable)
            .map(|(f, &empty)| {
                let n = self.rows - empty;
                let share = if self.rows == 0 {
                    0.0
                } else {
                    n as f64 / self.rows as f64
                };
                (
                    f.name.clone(),
                    serde_json::json!((share * 10_000.0).round() / 10_000.0),
                )
            })
            .collect();
        serde_json::json!({
            "rows_checked": self.rows,
            "distinct_users": exact(self.users().estimate()),
            "distinct_items": exact(self.items.estimate()),
            "distinct_event_types": self.event_counts.distinct().0,
            "time_range": self.time_range.map(|(lo, hi)| serde_json::json!({"min": lo, "max": hi})),
            "events_per_user": {
                "1": buckets[0], "2-4": buckets[1], "5-9": buckets[2], "10+": buckets[3],
                "exact": !self.users_capped,
            },
            "completeness": completeness,
        })
    }

    fn finish(&self, dataset: Dataset, mode: ImportMode, fields: &[Field], out: &mut Findings) {
        use Severity::Warning as W;
        if dataset != Dataset::Interactions {
            return;
        }
        let metadata = fields
            .iter()
            .filter(|f| dataset.reserved_named(&f.name).is_none())
            .count();
        let (types, exact) = self.event_counts.distinct();
        let about = if exact { "" } else { "about " };
        if types > 10 {
            out.add(
                "event-types-max",
                Severity::Error,
                format!(
                    "{about}{types} distinct event types; training accepts at most 10: filter or merge them"
                ),
            );
        } else if types + metadata as u64 > 10 {
            out.add(
                "event-types-and-metadata-max",
                Severity::Error,
                format!("{types} event types plus {metadata} metadata fields; at most 10 together"),
            );
        }
        if mode == ImportMode::Incremental {
            return;
        }
        if self.rows < 1000 {
            out.add(
                "min-interactions",
                W,
                format!("{} interactions; training needs at least 1,000", self.rows),
            );
        }
        let with_two = self.per_user.values().filter(|&n| n >= 2).count();
        if with_two < 25 {
            out.add("min-users-with-2", W, format!(
                "{with_two} users with at least 2 interactions; training needs at least 25 (\"Dataset has fewer than 25 users with at least 2 interactions each\")"
            ));
        }
        let users = self.per_user.len();
        if users > 0 && (with_two as f64) < users as f64 * 0.01 {
            out.add("min-share-users-with-2", W, format!(
                "{with_two} of {users} users have at least 2 interactions; training needs at least 1%"
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn run(csv: &str, mode: ImportMode, limits: Limits) -> Report {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("i.csv");
        std::fs::write(&path, csv).unwrap();
        let v = Validator {
            dataset: None,
            dialect: None,
            domain: None,
            mode,
            limits,
        };
        v.run(&[path], None).unwrap()
    }

    fn rules(report: &Report) -> Vec<&'static str> {
        report.findings.iter().map(|f| f.rule).collect()
    }

    #[test]
    fn import_size_limits_apply_per_mode() {
        let csv = "USER_ID,ITEM_ID,TIMESTAMP\nu,i,1\n";
        let small = Limits {
            full_import_bytes: 10,
            incremental_import_bytes: 1_000,
        };
        assert!(rules(&run(csv, ImportMode::Full, small.clone())).contains(&"import-size"));
        // Incremental: a larger limit here, and no dataset-wide minimums.
        assert_eq!(
            rules(&run(csv, ImportMode::Incremental, small)),
            Vec::<&str>::new()
        );
    }

    #[test]
    fn too_many_event_types_is_an_error() {
        let mut csv = String::from("USER_ID,ITEM_ID,TIMESTAMP,EVENT_TYPE\n");
        for i in 0..11 {
            csv.push_str(&format!("u,i,1,type{i}\n"));
        }
        let report = run(&csv, ImportMode::Incremental, Limits::default());
        assert_eq!(rules(&report), ["event-types-max"]);
        assert_eq!(report.errors(), 1);
    }

    /// Plain digits read (the first eight as one word) as `parse` reads
    /// them, and every other text left to `parse`.
    #[test]
    fn plain_digits_read_as_parse_reads_them() {
        let alphabet = b"0123456789+-. a/:\xff";
        let mut next = crate::testing::below(0x2545_F491_4F6C_DD1Du64);
        for _ in 0..200_000 {
            let len = next(20);
            let text: Vec<u8> = (0..len)
                .map(|_| match next(8) {
                    0 => alphabet[next(alphabet.len())],
                    _ => b'0' + next(10) as u8,
                })
                .collect();
            let got = plain_digits(&text);
            let want = std::str::from_utf8(&text)
                .ok()
                .and_then(|t| t.parse::<i64>().ok());
            if let Some(n) = got {
                assert_eq!(Some(n), want, "{:?}", String::from_utf8_lossy(&text));
            }
            let plain = (1..=16).contains(&len) && text.iter().all(u8::is_ascii_digit);
            assert_eq!(got.is_some(), plain, "{:?}", String::from_utf8_lossy(&text));
        }
    }

    #[test]
    fn event_counts_add_up_as_a_map_does_past_the_short_list() {
        let sorted = |c: &EventCounts| {
            let mut v: Vec<_> = c.iter().map(|(k, n)| (k.to_string(), n)).collect();
            v.sort();
            v
        };
        let (mut chunk, mut merged) = (EventCounts::default(), EventCounts::default());
        let (mut chunk_map, mut all) = (BTreeMap::new(), BTreeMap::new());
        for round in 0..2_000u64 {
            // 29 types, each new in the first 29 rounds after a merge, then
            // repeating: the list fills and moves to the map at the 17th.
            let kind = format!("t{}", round * 7 % 29);
            chunk.add(&kind, round % 5 + 1);
            *chunk_map.entry(kind.clone()).or_insert(0) += round % 5 + 1;
            *all.entry(kind).or_insert(0) += round % 5 + 1;
            assert_eq!(
                sorted(&chunk),
                chunk_map.clone().into_iter().collect::<Vec<_>>()
            );
            assert_eq!(chunk.distinct(), (chunk_map.len() as u64, true));
            if round == 10 || round == 1_999 {
                // Merged as a chunk's counts are, list or map.
                merged.merge_from(&chunk);
                (chunk, chunk_map) = (EventCounts::default(), BTreeMap::new());
            }
        }
        assert_eq!(sorted(&merged), all.into_iter().collect::<Vec<_>>());
        assert!(merged.distinct().0 > FEW_TYPES as u64 && merged.few.is_empty());
    }

    /// Past `TYPES_TRACKED` types the rest are sketched: the table stops
    /// growing, and a type met in two chunks, counted in one and sketched
    /// in the other, is one type.
    #[test]
    fn event_types_past_the_tracked_ones_are_estimated_once_each() {
        let (mut a, mut b) = (EventCounts::default(), EventCounts::default());
        a.add("t0", 1);
        b.add("t0", 1);
        for k in 1..3 * TYPES_TRACKED {
            a.add(&format!("t{k}"), 1);
        }
        // The same types in another order, then 2,000 more.
        for k in (1..3 * TYPES_TRACKED + 2_000).rev() {
            b.add(&format!("t{k}"), 1);
        }
        assert_eq!(a.many.len(), TYPES_TRACKED);
        a.merge_from(&b);
        assert_eq!(a.many.len(), TYPES_TRACKED);
        let (n, exact) = a.distinct();
        assert!(!exact);
        let want = (3 * TYPES_TRACKED + 2_000) as f64;
        assert!((n as f64 - want).abs() < want * 0.1, "{n}");
        // A type counted in both counts exactly.
        assert_eq!(a.iter().find(|(k, _)| *k == "t0").map(|(_, n)| n), Some(2));
    }

    /// The users a full table refuses, sketched with those it holds, are
    /// sketched as all of them would be.
    #[test]
    fn refused_users_and_counted_ones_sketch_as_all_users() {
        let hashes: Vec<(u64, u32)> = (1..=5000u64)
            .map(|k| (k.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1, 1))
            .collect();
        let mut all = Distinct::default();
        for &(hash, _) in &hashes {
            all.add_hash(user_key(hash));
        }
        let mut table = UserCounts::default();
        let mut refused = Distinct::default();
        assert!(!table.add_all(&hashes, 3000, &mut refused));
        assert_eq!(table.len(), 3000);
        for (hash, _) in table.iter() {
            refused.add_hash(hash);
        }
        assert_eq!(refused.estimate(), all.estimate());
        assert!(!all.estimate().1);
    }

    #[test]
    fn user_counts_add_up_as_a_map_does() {
        let mut x = 0x9E37_79B9_7F4A_7C15u64;
        let mut table = UserCounts::default();
        let mut map = std::collections::BTreeMap::new();
        for round in 0..20_000u32 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            // Few distinct hashes, so most adds find one; 0 among them.
            let hash = match x % 3001 {
                0 => 0,
                k => k.wrapping_mul(0x2545_F491_4F6C_DD1D),
            };
            let n = round % 4 + 1;
            assert!(table.add(hash, n, usize::MAX));
            let count = map.entry(user_key(hash)).or_insert(0);
            *count = (*count + n).min(15);
            if round % 7_000 == 6_999 {
                // Merged into another table, the same counts.
                let before: std::collections::BTreeMap<_, _> = table.iter().collect();
                let mut merged = UserCounts::default();
                let counts: Vec<_> = table.iter().collect();
                assert!(merged.add_all(&counts, usize::MAX, &mut Distinct::default()));
                assert_eq!(
                    merged.iter().collect::<std::collections::BTreeMap<_, _>>(),
                    before
                );
            }
        }
        let mut got: Vec<_> = table.iter().collect();
        got.sort();
        assert_eq!(got, map.into_iter().collect::<Vec<_>>());
        assert_eq!(table.len(), got.len());
        assert!(table.slots.len() >= 2 * table.len());

        // At the limit a new hash is refused, and a known one still counts
        // (up to 15).
        let mut table = UserCounts::with_capacity(2);
        assert!(table.add(7 << 8, 1, 2) && table.add(9 << 8, 1, 2));
        assert!(!table.add(8 << 8, 1, 2));
        assert!(table.add(7 << 8, u32::MAX, 2));
        let mut got: Vec<_> = table.iter().collect();
        got.sort();
        assert_eq!(got, [(7 << 8, 15), (9 << 8, 1)]);
        // The low bits of a hash hold the count: hashes that differ only
        // there are one user, and a hash of 0 is a user too.
        let mut table = UserCounts::default();
        assert!(table.add(0x50, 1, 9) && table.add(0x5f, 2, 9) && table.add(0, 1, 9));
        let mut got: Vec<_> = table.iter().collect();
        got.sort();
        assert_eq!(got, [(0x10, 1), (0x50, 3)]);
    }

    #[test]
    fn texts_are_the_same_only_when_every_byte_is() {
        for len in 0..=20 {
            let a: String = (0..len).map(|i| char::from(b'a' + i as u8)).collect();
            assert!(same_text(&a, &a.clone()), "{a}");
            for at in 0..len {
                let mut b = a.clone().into_bytes();
                b[at] = b'-';
                let b = String::from_utf8(b).expect("ASCII");
                assert!(!same_text(&a, &b), "{a} {b}");
            }
            assert!(!same_text(&a, &format!("{a}x")));
        }
    }

    #[test]
    fn users_met_count_alike_in_one_tally_or_in_merged_stretches() {
        let field = |name: &str, ty| Field {
            name: name.into(),
            ty,
            nullable: false,
            categorical: false,
            textual: false,
        };
        let fields = vec![
            field("USER_ID", AvroType::String),
            field("ITEM_ID", AvroType::String),
        ];
        let rules = RowRules::new("x.csv", fields, Dataset::Interactions);
        // More users than a tally lists before counting them itself, some
        // met again far apart.
        let users: Vec<String> = (0..3 * USERS_MET as u64 + 17)
            .map(|i| format!("u{}", (i * 7_919) % (2 * USERS_MET as u64)))
            .collect();
        let count = |tally: &mut Tally, rows: &[String], first: usize| {
            for (k, user) in rows.iter().enumerate() {
                rules.row([user.as_str(), "i"].into_iter(), tally, (first + k) as u64);
            }
        };
        let mut whole = rules.tally(64);
        count(&mut whole, &users, 1);
        let expected = whole.summary(&rules);
        for stretch in [1_000, USERS_MET - 1, USERS_MET + 1, 3 * USERS_MET] {
            // As the writer folds the workers' tallies in, in order.
            let mut run = Tally::default();
            for (k, rows) in users.chunks(stretch).enumerate() {
                let mut part = rules.tally(stretch);
                count(&mut part, rows, 1);
                run.merge(part, (k * stretch) as u64);
            }
            assert_eq!(run.summary(&rules), expected, "{stretch}");
        }
        let mut buckets = [0; 3];
        for (_, n) in whole.stats.per_user.iter() {
            buckets[(n as usize - 1).min(2)] += 1;
        }
        assert_eq!(whole.stats.per_user.len(), 2 * USERS_MET);
        assert_eq!(buckets, [USERS_MET - 17, USERS_MET + 17, 0]);
    }

    #[test]
    fn quick_passes_only_what_judge_passes_cleanly() {
        let field = |name: &str, ty, textual, categorical| Field {
            name: name.into(),
            ty,
            nullable: true,
            categorical,
            textual,
        };
        use AvroType::*;
        let fields = vec![
            field("USER_ID", String, false, false),
            field("ITEM_ID", String, false, false),
            field("TIMESTAMP", Long, false, false),
            field("CREATION_TIMESTAMP", Long, false, false),
            field("EVENT_TYPE", String, false, false),
            field("EVENT_VALUE", Float, false, false),
            field("GENRES", String, false, true),
            field("DESCRIPTION", String, true, false),
            field("PRICE", Int, false, false),
        ];
        let rules = RowRules {
            typed: true,
            ..RowRules::new("x.csv", fields, Dataset::Interactions)
        };
        let mut texts: Vec<std::string::String> = [
            "",
            "0",
            "-1",
            "1767395367",
            "99999999999",
            "-99999999999",
            "100000000000",
            "-100000000000",
            "9223372036854775807",
            "-9223372036854775808",
            "1.5",
            "a",
            "é",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        for n in [255, 256, 257, 1000, 1001, 20_001] {
            texts.push("a".repeat(n));
            texts.push("é".repeat(n / 2));
        }
        let mut quick = 0;
        for col in 0..rules.fields.len() {
            for t in &texts {
                let mut clean = true;
                let judged = rules.judge(col, t, |_, _, _| clean = false);
                if let Some(p) = rules.quick(col, t) {
                    quick += 1;
                    assert!(clean, "{col} {t:?}");
                    assert_eq!(
                        (p.typed, p.long),
                        (judged.typed, judged.long),
                        "{col} {t:?}"
                    );
                }
            }
        }
        assert!(quick > 60, "{quick}");
    }

    #[test]
    fn detects_the_dialect() {
        assert!(uses_backslash_escapes(br#"a,"say \"hi\"""#));
        assert!(!uses_backslash_escapes(br#"a,"say ""hi""""#));
        assert!(!uses_backslash_escapes(b"a,b"));
    }
}

/// One case per rule: each input breaks exactly that rule and yields
/// exactly that finding.
#[cfg(test)]
mod rules {
    use super::*;

    const SCHEMA_HEAD: &str = r#"{"type": "record", "name": "Interactions", "namespace": "com.amazonaws.personalize.schema", "fields": ["#;
    const BASE_FIELDS: &str = r#"{"name": "USER_ID", "type": "string"}, {"name": "ITEM_ID", "type": "string"}, {"name": "TIMESTAMP", "type": "long"}, {"name": "EVENT_TYPE", "type": "string"}"#;
    const BASE_HEADER: &str = "USER_ID,ITEM_ID,TIMESTAMP,EVENT_TYPE";

    struct Case {
        dataset: Option<Dataset>,
        domain: Option<Domain>,
        mode: ImportMode,
        limits: Limits,
        schema: Option<String>,
        csv: Vec<u8>,
    }

    impl Case {
        /// Interactions with the base fields plus `extra` schema fields and
        /// `extra_header` columns; `row` completes one data row.
        fn interactions(extra: &str, extra_header: &str, row: &str) -> Case {
            let fields = if extra.is_empty() {
                BASE_FIELDS.to_string()
            } else {
                format!("{BASE_FIELDS}, {extra}")
            };
            Case {
                dataset: None,
                domain: None,
                mode: ImportMode::Incremental,
                limits: Limits::default(),
                schema: Some(format!("{SCHEMA_HEAD}{fields}], \"version\": \"1.0\"}}")),
                csv: format!("{BASE_HEADER}{extra_header}\nu1,i1,1700000000,view{row}\n")
                    .into_bytes(),
            }
        }

        fn with_schema(name: &str, fields: &str, csv: &str) -> Case {
            Case {
                schema: Some(format!(
                    r#"{{"type": "record", "name": "{name}", "namespace": "com.amazonaws.personalize.schema", "fields": [{fields}], "version": "1.0"}}"#
                )),
                csv: csv.as_bytes().to_vec(),
                ..Case::interactions("", "", "")
            }
        }

        /// Full mode, `rows` rows of (user, event type).
        fn full(rows: impl Iterator<Item = (String, String)>) -> Case {
            let mut csv = format!("{BASE_HEADER}\n");
            for (i, (user, event)) in rows.enumerate() {
                csv.push_str(&format!(
                    "{user},i{},{},{event}\n",
                    i % 50,
                    1_700_000_000 + i
                ));
            }
            Case {
                mode: ImportMode::Full,
                csv: csv.into_bytes(),
                ..Case::interactions("", "", "")
            }
        }

        fn rules(self) -> Vec<&'static str> {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("data.csv");
            std::fs::write(&path, &self.csv).unwrap();
            let v = Validator {
                dataset: self.dataset,
                dialect: None,
                domain: self.domain,
                mode: self.mode,
                limits: self.limits,
            };
            let report = v.run(&[path], self.schema.as_deref()).unwrap();
            report.findings.iter().map(|f| f.rule).collect()
        }
    }

    fn cat(name: &str) -> String {
        format!(r#"{{"name": "{name}", "type": ["null", "string"], "categorical": true}}"#)
    }

    #[test]
    fn the_base_case_is_clean() {
        assert_eq!(Case::interactions("", "", "").rules(), Vec::<&str>::new());
    }

    #[test]
    fn every_rule_has_a_case_that_breaks_only_it() {
        let long = |n: usize| "x".repeat(n);
        let mut cases: Vec<(&str, Case)> = vec![
            (
                "schema-json",
                Case {
                    schema: Some("{".into()),
                    ..Case::interactions("", "", "")
                },
            ),
            ("schema-size", {
                let mut c = Case::interactions("", "", "");
                c.schema = Some(format!("{}{}", c.schema.unwrap(), " ".repeat(20_000)));
                c
            }),
            ("schema-record", {
                let mut c = Case::interactions("", "", "");
                c.schema = Some(
                    c.schema
                        .unwrap()
                        .replace(r#""type": "record""#, r#""type": "enum""#),
                );
                c
            }),
            (
                "schema-record-name",
                Case {
                    dataset: Some(Dataset::Interactions),
                    ..Case::with_schema(
                        "Interaction",
                        BASE_FIELDS,
                        &format!("{BASE_HEADER}\nu,i,1,v\n"),
                    )
                },
            ),
            ("schema-namespace", {
                let mut c = Case::interactions("", "", "");
                c.schema = Some(
                    c.schema
                        .unwrap()
                        .replace("com.amazonaws.personalize.schema", "x"),
                );
                c
            }),
            (
                "schema-type",
                Case::interactions(r#"{"name": "X", "type": "bytes"}"#, "", ""),
            ),
            (
                "schema-categorical",
                Case::interactions(
                    r#"{"name": "X", "type": ["null", "long"], "categorical": true}"#,
                    ",X",
                    ",1",
                ),
            ),
            (
                "schema-textual",
                Case::interactions(
                    r#"{"name": "X", "type": ["null", "string"], "textual": true}"#,
                    ",X",
                    ",a",
                ),
            ),
            (
                "schema-reserved-type",
                Case::interactions(
                    r#"{"name": "EVENT_VALUE", "type": "string"}"#,
                    ",EVENT_VALUE",
                    ",1",
                ),
            ),
            (
                "schema-unused-string",
                Case::interactions(r#"{"name": "X", "type": ["null", "string"]}"#, ",X", ",a"),
            ),
            (
                "required-field",
                Case::with_schema(
                    "Interactions",
                    r#"{"name": "USER_ID", "type": "string"}, {"name": "ITEM_ID", "type": "string"}"#,
                    "USER_ID,ITEM_ID\nu,i\n",
                ),
            ),
            (
                "field-names-unique",
                Case::interactions(&format!("{}, {}", cat("X_1"), cat("X1")), ",X_1,X1", ",a,b"),
            ),
            (
                "metadata-count",
                Case::interactions(
                    &(1..=6)
                        .map(|i| cat(&format!("M{i}")))
                        .collect::<Vec<_>>()
                        .join(", "),
                    ",M1,M2,M3,M4,M5,M6",
                    ",a,b,c,d,e,f",
                ),
            ),
            (
                "metadata-required",
                Case::with_schema(
                    "Users",
                    r#"{"name": "USER_ID", "type": "string"}"#,
                    "USER_ID\nu\n",
                ),
            ),
            (
                "textual-count",
                Case::with_schema(
                    "Items",
                    r#"{"name": "ITEM_ID", "type": "string"}, {"name": "A", "type": ["null", "string"], "textual": true}, {"name": "B", "type": ["null", "string"], "textual": true}"#,
                    "ITEM_ID,A,B\ni,a,b\n",
                ),
            ),
            (
                "csv-header",
                Case {
                    csv: Vec::new(),
                    ..Case::interactions("", "", "")
                },
            ),
            ("csv-bom", {
                let mut c = Case::interactions("", "", "");
                c.csv.splice(0..0, *b"\xEF\xBB\xBF");
                c
            }),
            (
                "header-matches-schema",
                Case {
                    csv: b"ITEM_ID,USER_ID,TIMESTAMP,EVENT_TYPE\ni,u,1,v\n".to_vec(),
                    ..Case::interactions("", "", "")
                },
            ),
            (
                "csv-field-count",
                Case {
                    csv: format!("{BASE_HEADER}\nu,i,1\n").into_bytes(),
                    ..Case::interactions("", "", "")
                },
            ),
            (
                "required-value",
                Case {
                    csv: format!("{BASE_HEADER}\n,i,1,v\n").into_bytes(),
                    ..Case::interactions("", "", "")
                },
            ),
            (
                "value-type",
                Case {
                    csv: format!("{BASE_HEADER}\nu,i,soon,v\n").into_bytes(),
                    ..Case::interactions("", "", "")
                },
            ),
            (
                "id-length",
                Case {
                    csv: format!("{BASE_HEADER}\n{},i,1,v\n", long(257)).into_bytes(),
                    ..Case::interactions("", "", "")
                },
            ),
            (
                "categorical-length",
                Case::interactions(&cat("X"), ",X", &format!(",{}", long(1001))),
            ),
            (
                "textual-length",
                Case::with_schema(
                    "Items",
                    r#"{"name": "ITEM_ID", "type": "string"}, {"name": "D", "type": ["null", "string"], "textual": true}"#,
                    &format!("ITEM_ID,D\ni,{}\n", long(20_001)),
                ),
            ),
            (
                "timestamp-milliseconds",
                Case {
                    csv: format!("{BASE_HEADER}\nu,i,1700000000000,v\n").into_bytes(),
                    ..Case::interactions("", "", "")
                },
            ),
            (
                "event-types-max",
                Case {
                    csv: format!(
                        "{BASE_HEADER}\n{}",
                        (0..11).map(|i| format!("u,i,1,t{i}\n")).collect::<String>()
                    )
                    .into_bytes(),
                    ..Case::interactions("", "", "")
                },
            ),
            (
                "event-types-and-metadata-max",
                Case {
                    csv: format!(
                        "{BASE_HEADER},M1,M2,M3,M4,M5\n{}",
                        (0..6)
                            .map(|i| format!("u,i,1,t{i},a,b,c,d,e\n"))
                            .collect::<String>()
                    )
                    .into_bytes(),
                    ..Case::interactions(
                        &(1..=5)
                            .map(|i| cat(&format!("M{i}")))
                            .collect::<Vec<_>>()
                            .join(", "),
                        "",
                        "",
                    )
                },
            ),
            // 30 users with 2 events each: only the count is short.
            (
                "min-interactions",
                Case::full((0..60).map(|i| (format!("u{}", i % 30), "view".into()))),
            ),
            // 10 of 990 users have 2 events: over 1 %, but under 25 users.
            (
                "min-users-with-2",
                Case::full((0..1000).map(|i| {
                    (
                        if i < 20 {
                            format!("u{}", i % 10)
                        } else {
                            format!("s{i}")
                        },
                        "view".into(),
                    )
                })),
            ),
            // 25 of 2,625 users have 2 events: 25 users, but under 1 %.
            (
                "min-share-users-with-2",
                Case::full((0..2650).map(|i| {
                    (
                        if i < 50 {
                            format!("u{}", i % 25)
                        } else {
                            format!("s{i}")
                        },
                        "view".into(),
                    )
                })),
            ),
            (
                "import-size",
                Case {
                    limits: Limits {
                        full_import_bytes: 100_000_000_000,
                        incremental_import_bytes: 10,
                    },
                    ..Case::interactions("", "", "")
                },
            ),
            (
                "domain-dataset",
                Case {
                    domain: Some(Domain::Ecommerce),
                    ..Case::with_schema(
                        "Actions",
                        &format!(r#"{{"name": "ACTION_ID", "type": "string"}}, {}"#, cat("K")),
                        "ACTION_ID,K\na,b\n",
                    )
                },
            ),
            (
                "domain-required-field",
                Case {
                    domain: Some(Domain::Ecommerce),
                    ..Case::with_schema(
                        "Items",
                        r#"{"name": "ITEM_ID", "type": "string"}, {"name": "PRICE", "type": ["null", "float"]}"#,
                        "ITEM_ID,PRICE\ni,1.5\n",
                    )
                },
            ),
            // Every minimum met, but no View or Purchase events.
            (
                "domain-event-types",
                Case {
                    domain: Some(Domain::Ecommerce),
                    ..Case::full((0..1200).map(|i| (format!("u{}", i % 40), "click".into())))
                },
            ),
        ];
        // A plain string over 1,000 characters also draws the warning that
        // a plain string is not used in training.
        let plain = Case::interactions(
            r#"{"name": "X", "type": ["null", "string"]}"#,
            ",X",
            &format!(",{}", long(1001)),
        );
        assert_eq!(plain.rules(), ["string-length", "schema-unused-string"]);
        for (rule, case) in cases.drain(..) {
            assert_eq!(case.rules(), [rule], "the case for {rule}");
        }
    }
}
