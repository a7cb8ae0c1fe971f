//! The value rules of SPEC section 4, for a value from any source format.
//!
//! Decoders hand over a `Cell`: JSON spans stay borrowed (and unescaped only
//! when a field needs the text), CSV fields arrive as text classified as
//! numbers or strings, columnar sources as typed values. Each rule turns a
//! cell into the CSV text of its field, or says why it cannot.

use std::borrow::Cow;
use std::fmt::Write as _;

use crate::decode::json::{self, Kind, Value};
use crate::schema::AvroType;

use super::TimeUnit;

/// One source value.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Cell<'a> {
    Null,
    /// A string, ready to use.
    Str(Cow<'a, str>),
    /// A JSON string's content with its escapes still in it.
    JsonStr(&'a [u8]),
    /// A text field (CSV): a number where its shape is one (for inference
    /// and the number rules), kept exactly as written where text is needed
    /// (ids, strings).
    Field(Cow<'a, str>),
    /// A number as written in the source; `integer` when it has neither a
    /// fraction nor an exponent.
    Number {
        text: Cow<'a, str>,
        integer: bool,
    },
    Int(i64),
    Float(f64),
    Bool(bool),
    /// Epoch seconds already (typed timestamps and dates).
    Seconds(i64),
    /// A valid JSON array, as written.
    JsonArray(&'a [u8]),
    /// A list from a typed source.
    List(Vec<Cell<'a>>),
    Object,
}

impl<'a> Cell<'a> {
    /// The cell for a JSON value the scanner found in `buf`.
    pub fn from_json(value: Value, buf: &'a [u8]) -> Self {
        Cell::from_json_in(value, buf, None)
    }

    /// As `from_json`, with `text` the whole of `buf` when it is known to
    /// be valid UTF-8, so that values are sliced from it without another
    /// check.
    pub fn from_json_in(value: Value, buf: &'a [u8], text: Option<&'a str>) -> Self {
        let raw = value.bytes(buf);
        let as_text = || match text.and_then(|t| t.get(value.start..value.end)) {
            Some(s) => Some(s),
            None => std::str::from_utf8(raw).ok(),
        };
        match value.kind {
            Kind::Str => match as_text() {
                Some(s) => Cell::Str(Cow::Borrowed(s)),
                None => Cell::JsonStr(raw),
            },
            Kind::EscapedStr => Cell::JsonStr(raw),
            Kind::Integer | Kind::Float => Cell::Number {
                text: Cow::Borrowed(as_text().unwrap_or("")),
                integer: value.kind == Kind::Integer,
            },
            Kind::True => Cell::Bool(true),
            Kind::False => Cell::Bool(false),
            Kind::Null => Cell::Null,
            Kind::Array => Cell::JsonArray(raw),
            Kind::Object => Cell::Object,
        }
    }

    /// Drops the cell, inline when it owns nothing, as most cells do: the
    /// generic drop is a call that matches every variant.
    #[inline(always)]
    pub fn discard(self) {
        match self {
            Cell::Null
            | Cell::JsonStr(_)
            | Cell::Str(Cow::Borrowed(_))
            | Cell::Field(Cow::Borrowed(_))
            | Cell::Number {
                text: Cow::Borrowed(_),
                ..
            }
            | Cell::Int(_)
            | Cell::Float(_)
            | Cell::Bool(_)
            | Cell::Seconds(_)
            | Cell::JsonArray(_)
            | Cell::Object => std::mem::forget(self),
            owned => drop(owned),
        }
    }

    /// A text field (CSV): empty is null.
    pub fn from_text(text: &'a str) -> Self {
        if text.is_empty() {
            Cell::Null
        } else {
            Cell::Field(Cow::Borrowed(text))
        }
    }

    pub fn is_null(&self) -> bool {
        matches!(self, Cell::Null)
    }

    /// The same value, borrowing nothing.
    pub fn into_owned(self) -> Cell<'static> {
        match self {
            Cell::Str(s) => Cell::Str(Cow::Owned(s.into_owned())),
            Cell::Field(s) => Cell::Field(Cow::Owned(s.into_owned())),
            Cell::Number { text, integer } => Cell::Number {
                text: Cow::Owned(text.into_owned()),
                integer,
            },
            Cell::JsonStr(raw) => {
                let mut bytes = Vec::new();
                let text = if json::unescape_into(raw, &mut bytes) {
                    String::from_utf8_lossy(&bytes).into_owned()
                } else {
                    String::from_utf8_lossy(raw).into_owned()
                };
                Cell::Str(Cow::Owned(text))
            }
            Cell::JsonArray(_) | Cell::Object => Cell::Object,
            Cell::List(items) => Cell::List(items.into_iter().map(Cell::into_owned).collect()),
            Cell::Null => Cell::Null,
            Cell::Int(n) => Cell::Int(n),
            Cell::Float(x) => Cell::Float(x),
            Cell::Bool(b) => Cell::Bool(b),
            Cell::Seconds(s) => Cell::Seconds(s),
        }
    }
}

/// `Some(integer)` when `text` is a JSON-style decimal number.
pub(crate) fn number_shape(text: &str) -> Option<bool> {
    let b = text.as_bytes();
    let mut i = usize::from(b.first() == Some(&b'-'));
    let digits = |i: &mut usize| {
        let s = *i;
        while b.get(*i).is_some_and(u8::is_ascii_digit) {
            *i += 1;
        }
        *i - s
    };
    if digits(&mut i) == 0 {
        return None;
    }
    let mut integer = true;
    if b.get(i) == Some(&b'.') {
        i += 1;
        integer = false;
        if digits(&mut i) == 0 {
            return None;
        }
    }
    if matches!(b.get(i), Some(b'e' | b'E')) {
        i += 1;
        integer = false;
        if matches!(b.get(i), Some(b'+' | b'-')) {
            i += 1;
        }
        if digits(&mut i) == 0 {
            return None;
        }
    }
    (i == b.len()).then_some(integer)
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

/// What a non-null cell adds to an inferred type.
pub(crate) fn seen_kind(cell: &Cell) -> u8 {
    match cell {
        // Integers past i64 are doubles to every reader.
        Cell::Number {
            text,
            integer: true,
        } if text.parse::<i64>().is_ok() => SEEN_INT,
        Cell::Number { .. } | Cell::Float(_) => SEEN_FLOAT,
        Cell::Int(_) | Cell::Seconds(_) => SEEN_INT,
        Cell::Field(text) => match number_shape(text) {
            Some(true) if text.parse::<i64>().is_ok() => SEEN_INT,
            Some(_) => SEEN_FLOAT,
            None => SEEN_STRING,
        },
        _ => SEEN_STRING,
    }
}

/// Reused buffers for converting one value.
#[derive(Default)]
pub(crate) struct Scratch {
    pub text: String,
    bytes: Vec<u8>,
}

impl Scratch {
    pub fn clear(&mut self) {
        self.text.clear();
        self.bytes.clear();
    }
}

/// How a value is shown in an error: as the source wrote it, shortened.
pub(crate) fn shown(cell: &Cell) -> String {
    let raw = match cell {
        Cell::Null => "null".to_string(),
        Cell::Str(s) | Cell::Field(s) => serde_json::to_string(s).unwrap_or_default(),
        Cell::JsonStr(raw) => format!("\"{}\"", String::from_utf8_lossy(raw)),
        Cell::Number { text, .. } => text.to_string(),
        Cell::Int(n) | Cell::Seconds(n) => n.to_string(),
        Cell::Float(x) => x.to_string(),
        Cell::Bool(b) => b.to_string(),
        Cell::JsonArray(_) | Cell::List(_) => return "an array".into(),
        Cell::Object => return "an object".into(),
    };
    if raw.chars().count() > 60 {
        let cut: String = raw.chars().take(57).collect();
        format!("{cut}...")
    } else {
        raw
    }
}

/// The text of a string cell, unescaped when needed (into `scratch`).
pub(crate) fn string<'s>(cell: &'s Cell, scratch: &'s mut Scratch) -> Result<&'s str, String> {
    match cell {
        Cell::Str(s) | Cell::Field(s) => Ok(s),
        Cell::JsonStr(raw) => {
            scratch.bytes.clear();
            if !json::unescape_into(raw, &mut scratch.bytes) {
                return Err(format!("{} holds an invalid \\u escape", shown(cell)));
            }
            let s = std::str::from_utf8(&scratch.bytes)
                .map_err(|_| "invalid UTF-8 in a string".to_string())?;
            scratch.text.push_str(s);
            Ok(&scratch.text)
        }
        _ => Err(format!("{} where a string is required", shown(cell))),
    }
}

/// A number as CSV text: integers with their exact digits, others in the
/// shortest form that reads back to the same double (`2.50` is `2.5`,
/// `1e2` is `100`). A number past the double range keeps its digits.
fn number_text<'s>(text: &'s str, integer: bool, out: &'s mut String) -> &'s str {
    if integer {
        return text;
    }
    match text.parse::<f64>() {
        Ok(x) if x.is_finite() => {
            let _ = write!(out, "{x}");
            out
        }
        _ => text,
    }
}

/// An id: a string kept exactly, or an integer without decimals.
pub(crate) fn id<'s>(cell: &'s Cell, scratch: &'s mut Scratch) -> Result<&'s str, String> {
    let integral = |x: f64, scratch: &'s mut Scratch| {
        if x.fract() == 0.0 && x.abs() <= 9_007_199_254_740_992.0 {
            let _ = write!(scratch.text, "{}", x as i64);
            Ok(scratch.text.as_str())
        } else {
            Err(format!("{} is not an integer id", shown(cell)))
        }
    };
    match cell {
        Cell::Str(_) | Cell::JsonStr(_) | Cell::Field(_) => string(cell, scratch),
        Cell::Number {
            text,
            integer: true,
        } => Ok(text),
        Cell::Number { text, .. } => integral(text.parse().unwrap_or(f64::NAN), scratch),
        Cell::Int(n) => {
            let _ = write!(scratch.text, "{n}");
            Ok(&scratch.text)
        }
        Cell::Float(x) => integral(*x, scratch),
        _ => Err(format!(
            "{} where an id (a string or an integer) is required",
            shown(cell)
        )),
    }
}

pub(crate) fn float(cell: &Cell, scratch: &mut Scratch) -> Result<f64, String> {
    let x = match cell {
        Cell::Number { text, .. } => text.parse::<f64>().ok(),
        Cell::Int(n) => Some(*n as f64),
        Cell::Float(x) => Some(*x),
        Cell::Field(text) => text.parse::<f64>().ok(),
        Cell::Str(_) | Cell::JsonStr(_) => string(cell, scratch).ok().and_then(|s| s.parse().ok()),
        _ => None,
    };
    match x {
        Some(x) if x.is_finite() => Ok(x),
        _ => Err(format!("{} is not a number", shown(cell))),
    }
}

/// A JSON integer's text when it is already the epoch seconds that
/// `timestamp` then formatting would write: at most 10 digits (below 1e11,
/// so seconds whatever the unit guess), without a leading zero (JSON has
/// none but `0` itself) and not `-0`. Saves a parse and a format per
/// record on the usual event timestamp.
pub(crate) fn seconds_as_written<'s>(cell: &'s Cell, unit: Option<TimeUnit>) -> Option<&'s str> {
    let Cell::Number {
        text,
        integer: true,
    } = cell
    else {
        return None;
    };
    seconds_as_written_text(text, unit)
}

/// `seconds_as_written` for the text of an integer.
pub(crate) fn seconds_as_written_text(text: &str, unit: Option<TimeUnit>) -> Option<&str> {
    if !matches!(unit, None | Some(TimeUnit::Seconds)) {
        return None;
    }
    let digits = text.strip_prefix('-').unwrap_or(text).as_bytes();
    let plain = !digits.is_empty()
        && digits.len() <= 10
        && digits.iter().all(u8::is_ascii_digit)
        && (digits[0] != b'0' || (digits.len() == 1 && text.len() == 1));
    plain.then_some(text)
}

/// What `float` then `Display` would write of a number whose text is
/// plain decimal digits, no exponent, at most 15 significant digits (which
/// an f64 keeps exactly, so the shortest form is these digits): the text
/// less the zeros ending its fraction, and less the point when only zeros
/// followed it. Saves a parse and a format on the common case.
pub(crate) fn shortest_as_written<'s>(cell: &'s Cell) -> Option<&'s str> {
    match cell {
        Cell::Number { text, .. } | Cell::Field(text) => shortest_as_written_text(text),
        _ => None,
    }
}

/// `shortest_as_written` for the text of a number.
pub(crate) fn shortest_as_written_text(text: &str) -> Option<&str> {
    // Short texts only: far from 1 an f64 cannot hold the digits (0.000…1
    // past 1e-308 is 0), and the common values are short.
    if text.len() > 24 {
        return None;
    }
    let digits = text.strip_prefix('-').unwrap_or(text).as_bytes();
    // One pass: digits and at most one point (one compare a digit).
    let mut dot = usize::MAX;
    for (i, &b) in digits.iter().enumerate() {
        if b.wrapping_sub(b'0') > 9 {
            if b != b'.' || dot != usize::MAX {
                return None;
            }
            dot = i;
        }
    }
    let dot = (dot != usize::MAX).then_some(dot);
    let (int, frac) = match dot {
        Some(dot) => (&digits[..dot], &digits[dot + 1..]),
        None => (digits, &b""[..]),
    };
    let int_ok = int == b"0" || int.first().is_some_and(|&b| b != b'0');
    if !int_ok || (dot.is_some() && frac.is_empty()) {
        return None;
    }
    let zeros = frac.iter().rev().take_while(|&&d| d == b'0').count();
    let frac = &frac[..frac.len() - zeros];
    // Leading zeros do not count: only "0." can start with one.
    let significant = if int == b"0" {
        frac.iter().skip_while(|&&d| d == b'0').count()
    } else {
        int.len() + frac.len()
    };
    let point = usize::from(dot.is_some() && frac.is_empty());
    (significant <= 15).then(|| &text[..text.len() - zeros - point])
}

pub(crate) fn integer(cell: &Cell, scratch: &mut Scratch) -> Result<i64, String> {
    let n = match cell {
        Cell::Number {
            text,
            integer: true,
        } => text.parse::<i64>().ok(),
        Cell::Int(n) => Some(*n),
        Cell::Field(text) if text.parse::<i64>().is_ok() => text.parse().ok(),
        Cell::Number { .. } | Cell::Float(_) | Cell::Str(_) | Cell::JsonStr(_) | Cell::Field(_) => {
            float(cell, scratch)
                .ok()
                .filter(|x| x.fract() == 0.0 && x.abs() < 9.2e18)
                .map(|x| x as i64)
        }
        _ => None,
    };
    n.ok_or_else(|| format!("{} is not an integer", shown(cell)))
}

/// Scalars as text (booleans as `True`/`False`); lists of scalars joined
/// with `|` when `join`.
pub(crate) fn scalar_or_list<'s>(
    cell: &'s Cell,
    scratch: &'s mut Scratch,
    join: bool,
) -> Result<&'s str, String> {
    match cell {
        Cell::Str(_) | Cell::JsonStr(_) => string(cell, scratch),
        Cell::Field(text) => Ok(match number_shape(text) {
            Some(integer) => number_text(text, integer, &mut scratch.text),
            None => text,
        }),
        Cell::Number { text, integer } => Ok(number_text(text, *integer, &mut scratch.text)),
        Cell::Int(n) | Cell::Seconds(n) => {
            let _ = write!(scratch.text, "{n}");
            Ok(&scratch.text)
        }
        Cell::Float(x) => {
            let _ = write!(scratch.text, "{x}");
            Ok(&scratch.text)
        }
        Cell::Bool(true) => Ok("True"),
        Cell::Bool(false) => Ok("False"),
        Cell::Null => Ok(""),
        Cell::Object => Err("an object where a value is required".into()),
        Cell::JsonArray(_) | Cell::List(_) if !join => {
            Err("an array where a single value is required".into())
        }
        Cell::JsonArray(body) => {
            let elements = json::array_elements(body).map_err(|e| e.describe(0))?;
            let cells: Vec<Cell> = elements.iter().map(|v| Cell::from_json(*v, body)).collect();
            join_list(&cells, scratch)?;
            Ok(&scratch.text)
        }
        Cell::List(cells) => {
            join_list(cells, scratch)?;
            Ok(&scratch.text)
        }
    }
}

/// Appends the elements' text to `scratch.text`, joined with `|`; nulls are
/// skipped.
fn join_list(cells: &[Cell], scratch: &mut Scratch) -> Result<(), String> {
    let mut first = true;
    for cell in cells {
        if cell.is_null() {
            continue;
        }
        if matches!(cell, Cell::JsonArray(_) | Cell::List(_) | Cell::Object) {
            return Err("a nested array or object in a list of values".into());
        }
        let mut part = Scratch::default();
        let text = scalar_or_list(cell, &mut part, false)?;
        if !first {
            scratch.text.push('|');
        }
        first = false;
        scratch.text.push_str(text);
    }
    Ok(())
}

/// Epoch seconds from a number (unit by magnitude unless forced), a numeric
/// string, an ISO 8601 / RFC 3339 string, or a typed timestamp.
pub(crate) fn timestamp(
    cell: &Cell,
    scratch: &mut Scratch,
    unit: Option<TimeUnit>,
) -> Result<i64, String> {
    let bad = || format!("{} is not a timestamp", shown(cell));
    let numeric = unit != Some(TimeUnit::Iso);
    match cell {
        Cell::Seconds(s) => Ok(*s),
        Cell::Int(n) if numeric => Ok(integer_timestamp(*n, unit)),
        Cell::Float(x) if numeric => numeric_timestamp(&x.to_string(), unit).ok_or_else(bad),
        Cell::Number { text, .. } if numeric => numeric_timestamp(text, unit).ok_or_else(bad),
        Cell::Str(_) | Cell::JsonStr(_) | Cell::Field(_) => {
            let text = string(cell, scratch)?;
            numeric
                .then(|| numeric_timestamp(text, unit))
                .flatten()
                .or_else(|| parse_iso8601(text))
                .ok_or_else(bad)
        }
        _ => Err(bad()),
    }
}

/// What a number in `unit` is divided by to give seconds; without a unit
/// the magnitude decides.
fn divisor(unit: Option<TimeUnit>, magnitude: f64) -> i64 {
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
}

/// Epoch seconds from an integer in `unit`, or by magnitude.
fn integer_timestamp(n: i64, unit: Option<TimeUnit>) -> i64 {
    n / divisor(unit, n.unsigned_abs() as f64)
}

/// Epoch seconds from a decimal number in `unit`, or by magnitude.
pub(crate) fn numeric_timestamp(text: &str, unit: Option<TimeUnit>) -> Option<i64> {
    if let Ok(n) = text.parse::<i64>() {
        return Some(integer_timestamp(n, unit));
    }
    let x: f64 = text.parse().ok()?;
    if !x.is_finite() || text.trim() != text {
        return None;
    }
    let secs = (x / divisor(unit, x.abs()) as f64).trunc();
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

/// `YYYY-MM-DDTHH:MM:SSZ` of epoch seconds (Howard Hinnant's algorithm).
pub(crate) fn format_utc(secs: i64) -> String {
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

/// Days since 1970-01-01 (Howard Hinnant's algorithm).
pub(crate) fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
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
    fn formats_epoch_seconds_as_rfc3339_and_back() {
        for secs in [0, 951_782_400, 1_547_159_644, 4_107_542_399, -86_401] {
            assert_eq!(parse_iso8601(&format_utc(secs)), Some(secs), "{secs}");
        }
        assert_eq!(format_utc(1_547_159_644), "2019-01-10T22:34:04Z");
    }

    /// Whenever a timestamp is taken as written, it is what parsing and
    /// formatting would write.
    #[test]
    fn seconds_as_written_are_what_conversion_writes() {
        let texts = [
            "0",
            "-0",
            "7",
            "-7",
            "00",
            "01",
            "1547159644",
            "-1547159644",
            "9999999999",
            "10000000000",
            "99999999999",
            "100000000000",
            "1547159644123",
            "",
            "-",
            "1a",
            "+5",
            "1.5",
            "1e3",
            " 1",
        ];
        let mut taken = 0;
        for text in texts {
            for integer in [true, false] {
                for unit in [None, Some(TimeUnit::Seconds), Some(TimeUnit::Millis)] {
                    let cell = Cell::Number {
                        text: Cow::Borrowed(text),
                        integer,
                    };
                    if let Some(fast) = seconds_as_written(&cell, unit) {
                        taken += 1;
                        let secs = timestamp(&cell, &mut Scratch::default(), unit);
                        assert_eq!(Ok(fast.to_string()), secs.map(|n| n.to_string()), "{text}");
                    }
                }
            }
        }
        // 0, 7, -7 and the three of 10 digits, as seconds or by magnitude.
        assert_eq!(taken, 6 * 2);
    }

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
    fn a_number_kept_as_written_is_what_display_writes() {
        fn number(text: &str) -> Cell<'_> {
            Cell::Number {
                text: text.into(),
                integer: !text.contains(['.', 'e']),
            }
        }
        let mut texts: Vec<String> = [
            "0",
            "-0",
            "7",
            "50.62",
            "0.05",
            "-12.5",
            "123456789012345",
            "0.000000001",
            "1234567890.12345",
            "1.0",
            "0.10",
            "00.5",
            "1e3",
            "-",
            "1.",
            ".5",
            "1234567890123456",
            "0.1234567890123456",
            "9007199254740993",
        ]
        .map(String::from)
        .to_vec();
        // And a sweep of generated decimals of every length up to 17 digits.
        let mut x = 0x9E37_79B9_7F4A_7C15u64;
        for _ in 0..20_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let digits = format!("{}", x % 10u64.pow((x % 17 + 1) as u32));
            let point = (x >> 40) as usize % (digits.len() + 1);
            let (a, b) = digits.split_at(point);
            texts.push(if b.is_empty() {
                a.to_string()
            } else {
                format!("{}.{b}", if a.is_empty() { "0" } else { a })
            });
        }
        // The first way this was written, which the one pass must agree with.
        fn reference(text: &str) -> Option<&str> {
            let digits = text.strip_prefix('-').unwrap_or(text).as_bytes();
            let (int, frac) = match memchr::memchr(b'.', digits) {
                Some(dot) => (&digits[..dot], Some(&digits[dot + 1..])),
                None => (digits, None),
            };
            let plain = |d: &[u8]| d.iter().all(u8::is_ascii_digit);
            let int_ok = int == b"0" || (!int.is_empty() && int[0] != b'0' && plain(int));
            let frac_ok = frac.is_none_or(|f| !f.is_empty() && plain(f));
            if !int_ok || !frac_ok {
                return None;
            }
            // Zeros ending the fraction go, and the point if nothing is left.
            let text = match frac {
                Some(_) if text.len() > 24 => return None,
                Some(_) => text.trim_end_matches('0').trim_end_matches('.'),
                None => text,
            };
            let frac =
                frac.map(|f| &f[..f.len() - f.iter().rev().take_while(|&&d| d == b'0').count()]);
            let all = int.iter().chain(frac.unwrap_or_default());
            let significant = all.skip_while(|&&d| d == b'0').count();
            (significant <= 15 && text.len() <= 24).then_some(text)
        }
        for odd in [
            "",
            "-",
            ".",
            "-.",
            "0.",
            ".5",
            "1..2",
            "1.2.3",
            "00.5",
            "-0",
            "-0.0",
            "0.000",
            "0.00012",
            "-0.5",
            "1e5",
            "1.5e3",
            "+1",
            "1,5",
            "12345678901234.5",
            "0.000000000000000000001",
        ] {
            texts.push(odd.to_string());
            texts.push(format!("-{odd}"));
        }
        for text in &texts {
            let cell = number(text);
            let kept = shortest_as_written(&cell);
            assert_eq!(kept, reference(text), "{text}");
            if let Some(kept) = kept {
                let shown = format!("{}", text.parse::<f64>().unwrap());
                assert_eq!(kept, shown, "{text}");
            }
        }
        assert_eq!(shortest_as_written(&number("50.62")), Some("50.62"));
        assert_eq!(shortest_as_written(&number("1.0")), Some("1"));
        assert_eq!(shortest_as_written(&number("-13.50")), Some("-13.5"));
        assert_eq!(shortest_as_written(&number("100.00")), Some("100"));
        assert_eq!(shortest_as_written(&number("0.0")), Some("0"));
        assert_eq!(shortest_as_written(&number("1.")), None);
        assert_eq!(shortest_as_written(&number("1234567890123456")), None);
    }

    #[test]
    fn infers_the_widest_type() {
        assert_eq!(inferred_type(SEEN_INT), AvroType::Long);
        assert_eq!(inferred_type(SEEN_INT | SEEN_FLOAT), AvroType::Double);
        assert_eq!(inferred_type(SEEN_INT | SEEN_STRING), AvroType::String);
        assert_eq!(inferred_type(0), AvroType::String);
    }

    #[test]
    fn text_fields_are_classified() {
        assert_eq!(Cell::from_text(""), Cell::Null);
        assert_eq!(seen_kind(&Cell::from_text("007")), SEEN_INT);
        assert_eq!(seen_kind(&Cell::from_text("-2.5e3")), SEEN_FLOAT);
        for text in ["1.", ".5", "1e", "12a", "true", " 1"] {
            assert_eq!(seen_kind(&Cell::from_text(text)), SEEN_STRING, "{text}");
        }
        // Ids from text keep their spelling; numbers take the number rules.
        let mut s = Scratch::default();
        assert_eq!(id(&Cell::from_text("1.0"), &mut s), Ok("1.0"));
        let mut s = Scratch::default();
        assert_eq!(id(&Cell::from_text("3.14"), &mut s), Ok("3.14"));
        let mut s = Scratch::default();
        assert_eq!(
            scalar_or_list(&Cell::from_text("2.50"), &mut s, true),
            Ok("2.5")
        );
        let mut s = Scratch::default();
        assert_eq!(float(&Cell::from_text("1e2"), &mut s), Ok(100.0));
    }

    #[test]
    fn typed_cells_follow_the_same_rules() {
        let mut s = Scratch::default();
        assert_eq!(id(&Cell::Int(42), &mut s), Ok("42"));
        let mut s = Scratch::default();
        assert_eq!(
            timestamp(&Cell::Int(1547159644123), &mut s, None),
            Ok(1547159644)
        );
        assert_eq!(timestamp(&Cell::Seconds(5), &mut s, None), Ok(5));
        let list = Cell::List(vec![Cell::Str("a".into()), Cell::Null, Cell::Float(2.5)]);
        let mut s = Scratch::default();
        assert_eq!(scalar_or_list(&list, &mut s, true), Ok("a|2.5"));
    }
}
