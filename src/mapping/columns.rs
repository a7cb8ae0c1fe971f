//! Parquet batches converted a column at a time. The distinct values of a
//! dictionary column, or of a 64-bit integer or double column, are
//! converted, encoded and checked once each, and the rows only pick their
//! value's bytes; other columns are converted row by row with the same
//! rules. The rows are then put together in order.
//!
//! This path only takes a batch whose every value converts and passes the
//! output check without a finding. On the first value that does not, it
//! gives the batch back untouched and the row path converts it, so errors,
//! skipped records and findings are exactly the row path's.

use std::mem::MaybeUninit;

use super::{Converted, Mapping, RowOptions, Scratch};
use crate::decode::parquet::Column;
use crate::mapping::Cell;
use crate::sink::csv::{Dialect, push_field};
use crate::validate::{RowRules, Tally};

/// One field's CSV text for each row of a batch.
struct Part {
    texts: Texts,
    /// Each row's text: an index into `texts`, or `None` when every row
    /// has its own, in order.
    rows: Option<Vec<u32>>,
}

/// The longest text, separators included, that a `Texts::Short` holds.
const WIDTH: usize = 32;

/// A part's short texts picked by slot, checked for `write_short_rows`.
struct Short<'a> {
    padded: &'a [[u8; WIDTH]],
    lens: &'a [u8],
    picks: &'a [u32],
}

/// A field's encoded texts, each with the separators around it in the row
/// (a comma before all but the first field, a line break after the last).
enum Texts {
    /// Texts zero-padded to `WIDTH` bytes, and their lengths: one
    /// fixed-size copy writes one.
    Short(Vec<[u8; WIDTH]>, Vec<u8>),
    /// The texts one after another, where each ends, and the longest.
    Long(Vec<u8>, Vec<usize>, usize),
}

impl Part {
    /// The part of field `i` of `fields` from its texts (without their
    /// separators), one after another in `bytes`, ending at `ends`. Texts
    /// of one per row are not padded: that would take 33 bytes a row.
    fn new(
        bytes: Vec<u8>,
        ends: Vec<usize>,
        rows: Option<Vec<u32>>,
        (i, fields): (usize, usize),
    ) -> Self {
        let lead: &[u8] = if i > 0 { b"," } else { b"" };
        let tail: &[u8] = if i + 1 == fields { b"\n" } else { b"" };
        let starts = std::iter::once(0).chain(ends.iter().copied());
        let texts = starts.zip(&ends).map(|(a, &b)| &bytes[a..b]);
        let longest = texts.clone().map(<[u8]>::len).max().unwrap_or(0) + lead.len() + tail.len();
        let texts = if longest <= WIDTH && rows.is_some() {
            let mut padded = Vec::with_capacity(ends.len());
            let mut lens = Vec::with_capacity(ends.len());
            for text in texts {
                let mut out = [0u8; WIDTH];
                let mut at = 0;
                for piece in [lead, text, tail] {
                    out[at..at + piece.len()].copy_from_slice(piece);
                    at += piece.len();
                }
                padded.push(out);
                lens.push(at as u8);
            }
            Texts::Short(padded, lens)
        } else {
            let mut joined = Vec::with_capacity(bytes.len() + ends.len() * 2);
            let mut joined_ends = Vec::with_capacity(ends.len());
            for text in texts {
                for piece in [lead, text, tail] {
                    joined.extend_from_slice(piece);
                }
                joined_ends.push(joined.len());
            }
            Texts::Long(joined, joined_ends, longest)
        };
        Part { texts, rows }
    }

    /// This part's padded texts, their lengths and each row's pick, when
    /// its texts are short and picked by slot, every pick names a text and
    /// there is one for each of `rows` rows.
    fn short(&self, rows: usize) -> Option<Short<'_>> {
        let (Texts::Short(padded, lens), Some(picks)) = (&self.texts, &self.rows) else {
            return None;
        };
        let picks = picks.get(..rows)?;
        let count = padded.len().min(lens.len());
        // The largest pick, in one pass, instead of a check a row and part.
        let named = picks.iter().fold(0, |m, &t| m.max(t)) < count as u32 || rows == 0;
        named.then_some(Short {
            padded,
            lens,
            picks,
        })
    }

    /// The most bytes a row's text takes in `write_rows`.
    fn room(&self) -> usize {
        match &self.texts {
            Texts::Short(..) => WIDTH,
            Texts::Long(_, _, longest) => *longest,
        }
    }

    /// Writes the text of `row` at `at` in `out`, which has `room()` bytes
    /// from there (a short text is written as `WIDTH` bytes); gives where
    /// the text ends.
    #[inline(always)]
    fn put(&self, row: usize, out: &mut [MaybeUninit<u8>], at: usize) -> usize {
        let t = self.rows.as_ref().map_or(row, |rows| rows[row] as usize);
        let text: &[u8] = match &self.texts {
            Texts::Short(padded, lens) => {
                out[at..at + WIDTH].write_copy_of_slice(&padded[t]);
                return at + usize::from(lens[t]);
            }
            Texts::Long(bytes, ends, _) => {
                let start = if t == 0 { 0 } else { ends[t - 1] };
                &bytes[start..ends[t]]
            }
        };
        out[at..at + text.len()].write_copy_of_slice(text);
        at + text.len()
    }
}

/// What converting the values of a batch takes and finds out besides
/// their text.
struct Seen<'r> {
    dialect: Dialect,
    scratch: Scratch,
    /// Value kinds per field (for inferred types).
    kinds: Vec<u8>,
    /// The output check's counts for the batch, with its rules.
    check: Option<(&'r RowRules, Tally)>,
}

impl Mapping {
    /// Converts the `rows` rows of a batch whose mapped columns are
    /// `columns` (one per selector slot) a column at a time. `false`, with
    /// `done` untouched, when some value fails its rule or the check.
    pub(super) fn convert_columns(
        &self,
        columns: &[Option<Column>],
        rows: usize,
        done: &mut Converted,
        opts: RowOptions,
    ) -> bool {
        let Ok(count) = u32::try_from(rows) else {
            return false;
        };
        if rows == 0 {
            return true;
        }
        let mut seen = Seen {
            dialect: opts.dialect,
            scratch: Scratch::default(),
            kinds: vec![0; self.fields.len()],
            check: opts.rules.map(|rules| (rules, rules.tally(2048))),
        };
        if let Some((rules, tally)) = &mut seen.check {
            rules.begin_rows(u64::from(count), tally);
        }
        let n = self.fields.len();
        let mut parts = Vec::with_capacity(n);
        for i in 0..n {
            let column = self.fields[i].slot.and_then(|s| columns[s].as_ref());
            let part = match column {
                Some(c) => match distinct(c, rows) {
                    Some(shared) => self.by_value((i, n), c, shared, &mut seen),
                    None => self.by_row((i, n), |row| Some(c.cell(row)), rows, &mut seen),
                },
                // No column gives the field: the same text on every row.
                None => {
                    let mut bytes = Vec::new();
                    self.convert_one(i, None, rows as u64, &mut bytes, &mut seen)
                        .map(|()| {
                            let ends = vec![bytes.len()];
                            Part::new(bytes, ends, Some(vec![0; rows]), (i, n))
                        })
                }
            };
            match part {
                Some(p) => parts.push(p),
                None => return false,
            }
        }
        write_rows(&parts, rows, &mut done.csv);
        for (mine, kinds) in done.seen.iter_mut().zip(seen.kinds) {
            *mine |= kinds;
        }
        if let (Some(tally), Some((_, batch))) = (&mut done.tally, seen.check) {
            tally.merge(batch, done.rows);
        }
        done.records += u64::from(count);
        done.rows += u64::from(count);
        true
    }

    /// Field `i` from a column whose rows share values: each value some
    /// row holds is converted once, in the order rows first hold them.
    fn by_value(
        &self,
        (i, n): (usize, usize),
        column: &Column,
        (picks, firsts): (Vec<u32>, Vec<usize>),
        seen: &mut Seen,
    ) -> Option<Part> {
        let mut counts = vec![0u64; firsts.len()];
        for &s in &picks {
            counts[s as usize] += 1;
        }
        if let Some((rules, tally)) = &mut seen.check {
            rules.expect(i, firsts.len(), tally);
        }
        let mut bytes = Vec::new();
        let mut ends = Vec::with_capacity(firsts.len());
        for (&row, &count) in firsts.iter().zip(&counts) {
            self.convert_one(i, Some(&column.cell(row)), count, &mut bytes, seen)?;
            ends.push(bytes.len());
        }
        Some(Part::new(bytes, ends, Some(picks), (i, n)))
    }

    /// Field `i` converted row by row.
    fn by_row<'c>(
        &self,
        (i, n): (usize, usize),
        cell: impl Fn(usize) -> Option<Cell<'c>>,
        rows: usize,
        seen: &mut Seen,
    ) -> Option<Part> {
        let mut bytes = Vec::with_capacity(rows * 8);
        let mut ends = Vec::with_capacity(rows);
        for row in 0..rows {
            self.convert_one(i, cell(row).as_ref(), 1, &mut bytes, seen)?;
            ends.push(bytes.len());
        }
        Some(Part::new(bytes, ends, None, (i, n)))
    }

    /// Appends the CSV text of `value` in field `i` to `out` and counts it
    /// `n` times for the check; `None` when it fails its rule or the
    /// check finds something.
    fn convert_one(
        &self,
        i: usize,
        value: Option<&Cell>,
        n: u64,
        out: &mut Vec<u8>,
        seen: &mut Seen,
    ) -> Option<()> {
        let field = &self.fields[i];
        seen.scratch.clear();
        let text = self
            .convert(field, value, &mut seen.scratch, &mut seen.kinds[i])
            .ok()?
            .unwrap_or("");
        if let Some((rules, tally)) = &mut seen.check {
            let passed = rules.passes(i, text)?;
            rules.count(i, text, passed, n, tally);
        }
        if field.rule.is_numeric() {
            out.extend_from_slice(text.as_bytes());
        } else {
            push_field(out, text, seen.dialect);
        }
        Some(())
    }
}

/// Appends the `rows` rows that `parts` make: a block of rows at a time,
/// into room for the most the block can take, most texts as one
/// fixed-size copy.
fn write_rows(parts: &[Part], rows: usize, out: &mut Vec<u8>) {
    if let Some(short) = parts
        .iter()
        .map(|p| p.short(rows))
        .collect::<Option<Vec<_>>>()
    {
        return write_short_rows(&short, rows, out);
    }
    let room: usize = parts.iter().map(Part::room).sum();
    // About 1 MiB of room a block.
    let block = ((1 << 20) / room.max(1)).clamp(1, 4096);
    for first in (0..rows).step_by(block) {
        let end = rows.min(first + block);
        let len = out.len();
        out.reserve((end - first) * room);
        let spare = out.spare_capacity_mut();
        let mut at = 0;
        for row in first..end {
            for part in parts {
                at = part.put(row, spare, at);
            }
        }
        // SAFETY: the `at` bytes past the length were written just above,
        // one text after another from the first.
        unsafe { out.set_len(len + at) };
    }
}

/// `write_rows` where every part is a `Short` one picked by slot (`Part::short`):
/// one fixed-size copy and a length a field, without a bounds check.
fn write_short_rows(parts: &[Short], rows: usize, out: &mut Vec<u8>) {
    // About 1 MiB of room a block.
    let room = WIDTH * parts.len().max(1);
    let block = ((1 << 20) / room).clamp(1, 4096);
    for first in (0..rows).step_by(block) {
        let end = rows.min(first + block);
        let len = out.len();
        out.reserve((end - first) * room);
        let spare = out.spare_capacity_mut().as_mut_ptr().cast::<u8>();
        let mut at = 0;
        for row in first..end {
            for part in parts {
                // SAFETY: `Part::short` found `row` below the picks' length
                // and every pick below the texts' (and lengths') count;
                // `at` stays within the room reserved above, `WIDTH` a
                // field, as a text is never longer.
                unsafe {
                    let t = *part.picks.get_unchecked(row) as usize;
                    let text = part.padded.get_unchecked(t);
                    std::ptr::copy_nonoverlapping(text.as_ptr(), spare.add(at), WIDTH);
                    at += usize::from(*part.lens.get_unchecked(t));
                }
            }
        }
        // SAFETY: the `at` bytes past the length were written just above,
        // one text after another from the first.
        unsafe { out.set_len(len + at) };
    }
}

/// For a dictionary or 64-bit number column, each row's slot among the
/// distinct values of the column, and the first row holding each; `None`
/// for other columns. Null rows share a slot.
fn distinct(column: &Column, rows: usize) -> Option<(Vec<u32>, Vec<usize>)> {
    let mut firsts = Vec::new();
    // The slot of the value at `row`, given its entry in a table: a new
    // one when the entry has none yet.
    let mut pick = |slot: &mut u32, row: usize| {
        if *slot == u32::MAX {
            *slot = firsts.len() as u32;
            firsts.push(row);
        }
        *slot
    };
    // Each loop collects from an iterator of known length (no check of
    // the room left a row), and the one without nulls asks no row.
    let picks = if let Some((keys, values)) = column.dictionary() {
        // The null slot comes after the dictionary's values.
        let mut slots = vec![u32::MAX; values + 1];
        let keys = keys.iter().take(rows).enumerate();
        if column.has_nulls() {
            keys.map(|(row, &key)| {
                let key = if column.is_null(row) { values } else { key };
                pick(&mut slots[key], row)
            })
            .collect()
        } else {
            keys.map(|(row, &key)| pick(&mut slots[key], row)).collect()
        }
    } else if let Some(words) = column.words().filter(|_| rows > 0) {
        let mut slots = Slots::default();
        let mut null = u32::MAX;
        let words = words.iter().take(rows).enumerate();
        if column.has_nulls() {
            words
                .map(|(row, &bits)| match column.is_null(row) {
                    true => pick(&mut null, row),
                    false => pick(slots.get(bits), row),
                })
                .collect()
        } else {
            words
                .map(|(row, &bits)| pick(slots.get(bits), row))
                .collect()
        }
    } else {
        return None;
    };
    Some((picks, firsts))
}

/// A slot per distinct 64-bit value: open addressing with linear probing,
/// grown to keep it at most half full. Cheaper than a general map for a
/// lookup per row; a key and its slot share a cache line.
#[derive(Default)]
struct Slots {
    /// (key, slot), the slot `u32::MAX` for a free entry (and for a key
    /// given no slot yet). The length is a power of two, or 0.
    entries: Vec<(u64, u32)>,
    len: usize,
}

impl Slots {
    /// The slot of `key`, `u32::MAX` while it has none.
    #[inline(always)]
    fn get(&mut self, key: u64) -> &mut u32 {
        if 2 * (self.len + 1) > self.entries.len() {
            self.grow();
        }
        let at = self.find(key);
        let entry = &mut self.entries[at];
        if entry.1 == u32::MAX {
            entry.0 = key;
            self.len += 1;
        }
        &mut entry.1
    }

    /// Where `key` is, or the free entry where it goes (the table is not
    /// full).
    #[inline(always)]
    fn find(&self, key: u64) -> usize {
        let mask = self.entries.len() - 1;
        // Fibonacci hashing: the top bits of the product, which depend on
        // every bit of the key (decimal fractions repeat in the low bits).
        let shift = 64 - self.entries.len().trailing_zeros();
        let mut at = (key.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> shift) as usize;
        loop {
            // SAFETY: `at` is masked to below the length, a power of two.
            let &(k, slot) = unsafe { self.entries.get_unchecked(at & mask) };
            if slot == u32::MAX || k == key {
                return at & mask;
            }
            at += 1;
        }
    }

    fn grow(&mut self) {
        let size = (self.entries.len() * 2).max(1024);
        let old = std::mem::replace(&mut self.entries, vec![(0, u32::MAX); size]);
        for (key, slot) in old {
            if slot != u32::MAX {
                let at = self.find(key);
                self.entries[at] = (key, slot);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow_array::types::Int32Type;
    use arrow_array::{ArrayRef, DictionaryArray, Float64Array, Int64Array, RecordBatch};

    use super::*;
    use crate::decode::parquet;
    use crate::error::Origin;
    use crate::mapping::resolve;
    use crate::mapping::tests::{Lcg, spec_of};
    use crate::schema::Dataset;

    /// A batch of interactions: users and event types in dictionaries,
    /// items and timestamps as 64-bit integers, values as doubles, and a
    /// categorical metadata column; now and then a value that fails its
    /// rule (a null user, an empty event type) or that the check reports
    /// (a timestamp in milliseconds, an overlong device name).
    fn batch(rng: &mut Lcg, rows: usize, bad: bool) -> RecordBatch {
        let rare = |rng: &mut Lcg| bad && rng.below(rows * 2 + 1) == 0;
        let users: Vec<Option<String>> = (0..rows)
            .map(|_| match rng.below(40) {
                _ if rare(rng) => None,
                0 => Some("u,\"q\"".to_string()),
                n => Some(format!("user-{n}")),
            })
            .collect();
        let users: DictionaryArray<Int32Type> = users.iter().map(Option::as_deref).collect();
        let events: DictionaryArray<Int32Type> = (0..rows)
            .map(|_| match rng.below(4) {
                _ if rare(rng) => "",
                0 => "click",
                1 => "view",
                2 => "a much longer event type",
                _ => "buy",
            })
            .collect();
        let devices: Vec<Option<String>> = (0..rows)
            .map(|_| match rng.below(5) {
                _ if rare(rng) => Some("d".repeat(1001)),
                0 => None,
                1 => Some("a device whose name takes more than 32 bytes".into()),
                n => Some(format!("device {n}")),
            })
            .collect();
        let devices: DictionaryArray<Int32Type> = devices.iter().map(Option::as_deref).collect();
        let items: Int64Array = (0..rows)
            .map(|_| (!rare(rng)).then(|| rng.below(30) as i64))
            .collect();
        let values: Float64Array = (0..rows)
            .map(|_| (rng.below(3) > 0).then(|| rng.below(500) as f64 / 8.0))
            .collect();
        let times: Int64Array = (0..rows)
            .map(|_| match rng.below(50) {
                _ if rare(rng) => 1_700_000_000_000,
                n => 1_700_000_000 + n as i64,
            })
            .map(Some)
            .collect();
        let columns: [(&str, ArrayRef); 6] = [
            ("u", Arc::new(users)),
            ("e", Arc::new(events)),
            ("d", Arc::new(devices)),
            ("i", Arc::new(items)),
            ("v", Arc::new(values)),
            ("t", Arc::new(times)),
        ];
        RecordBatch::try_from_iter(columns).unwrap()
    }

    fn mapping() -> Mapping {
        let mut spec = spec_of(
            Dataset::Interactions,
            &[
                ("USER_ID", "u"),
                ("ITEM_ID", "i"),
                ("EVENT_TYPE", "e"),
                ("EVENT_VALUE", "v"),
                ("TIMESTAMP", "t"),
                ("DEVICE", "d"),
                // No column gives it: empty on every row.
                ("SESSION", "s"),
            ],
        );
        spec.categorical.push("DEVICE".into());
        resolve(&spec, None).unwrap()
    }

    /// Whatever a batch holds, a column at a time gives exactly the rows,
    /// inferred kinds and check tally of the row path, or leaves the batch
    /// to it untouched.
    #[test]
    fn only_parts_whose_picks_name_their_texts_are_written_unchecked() {
        // Two texts, "a" and "bc".
        let part = |picks: Vec<u32>| Part::new(b"abc".to_vec(), vec![1, 3], Some(picks), (0, 1));
        assert!(part(vec![0, 1, 1]).short(3).is_some());
        assert!(
            part(vec![0, 2, 1]).short(3).is_none(),
            "a pick past the texts"
        );
        assert!(part(vec![0, 1]).short(3).is_none(), "fewer picks than rows");
        assert!(part(vec![]).short(0).is_some());
        let mut out = Vec::new();
        let (a, b) = (part(vec![1, 0]), part(vec![0, 0]));
        write_rows(&[a, b], 2, &mut out);
        assert_eq!(out, b"bc\na\na\na\n");
        // Texts one per row are not padded: the checked path writes them.
        let long = Part::new(b"abc".to_vec(), vec![1, 3], None, (0, 1));
        assert!(long.short(2).is_none());
    }

    #[test]
    fn slots_give_each_key_one_slot_as_a_map_does() {
        let mut slots = Slots::default();
        let mut map = std::collections::HashMap::new();
        // Keys that share low bits, high bits or nothing, over several
        // growths, each asked for more than once.
        let keys: Vec<u64> = (0..3000u64)
            .flat_map(|i| [i, i << 40, (i as f64 * 0.01).to_bits(), u64::MAX - i % 7])
            .collect();
        for round in 0..2 {
            for &key in &keys {
                let slot = slots.get(key);
                let next = map.len() as u32;
                let want = *map.entry(key).or_insert(next);
                if *slot == u32::MAX {
                    assert_eq!(round, 0, "{key:#x} lost its slot");
                    *slot = want;
                }
                assert_eq!(*slot, want, "{key:#x}");
            }
        }
        assert_eq!(slots.len, map.len());
        assert!(2 * slots.len <= slots.entries.len());
    }

    #[test]
    fn columns_convert_as_rows_do() {
        let mapping = mapping();
        let rules = RowRules::for_output("out.csv", &mapping.schema(&[]));
        let mut rng = Lcg(11);
        let (mut taken, mut left) = (0, 0);
        for round in 0..300 {
            let rows = match round % 50 {
                // More rows than `write_rows` puts in one block.
                0 => 9_000,
                // An empty batch changes nothing.
                25 => 0,
                _ => 1 + rng.below(200),
            };
            let batch = batch(&mut rng, rows, round % 2 == 1);
            let columns: Vec<_> = mapping
                .paths
                .iter()
                .map(|p| parquet::column(&batch, p))
                .collect();
            for (skip, check) in [(false, Some(&rules)), (true, Some(&rules)), (false, None)] {
                let opts = RowOptions {
                    dialect: if round % 3 == 0 {
                        Dialect::Rfc4180
                    } else {
                        Dialect::Personalize
                    },
                    skip,
                    rules: check,
                };
                // A stretch already converted before this batch.
                let start = |opts| {
                    let mut done = Converted::new(mapping.fields.len(), 0, opts);
                    done.csv.extend_from_slice(b"earlier\n");
                    done.records = 1;
                    done.rows = 1;
                    done
                };
                let mut by_columns = start(opts);
                let mut by_rows = start(opts);
                let rows_result = (0..rows).try_for_each(|row| {
                    let cell = |slot: usize| columns[slot].as_ref().map(|c| c.cell(row));
                    let origin = || Origin::in_stream("x", 0, row as u64, false);
                    mapping.push_row(&mut by_rows, cell, (|_| None, &[]), opts, origin, b"")
                });
                let summary = |done: &mut Converted| {
                    let tally = done.tally.as_mut().map(|t| t.summary(&rules));
                    let csv = String::from_utf8_lossy(&done.csv).into_owned();
                    (csv, done.records, done.rows, done.seen.clone(), tally)
                };
                if mapping.convert_columns(&columns, rows, &mut by_columns, opts) {
                    taken += 1;
                    assert!(rows_result.is_ok(), "round {round}");
                    assert!(by_rows.rejects.is_empty(), "round {round}");
                    assert_eq!(
                        summary(&mut by_columns),
                        summary(&mut by_rows),
                        "round {round}"
                    );
                } else {
                    left += 1;
                    assert_eq!(
                        summary(&mut by_columns),
                        summary(&mut start(opts)),
                        "round {round}"
                    );
                }
            }
        }
        // Both ways were taken often.
        assert!(taken > 300 && left > 150, "{taken} taken, {left} left");
    }
}
