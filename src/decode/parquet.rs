//! Parquet sources, row group by row group.
//!
//! Only the columns under a mapped path are decoded (a projection mask over
//! the leaves), so memory is bounded by one row group's mapped columns, not
//! the file. Nested struct columns are reached by dotted path; a top-level
//! column whose name contains dots wins over the walk, as for JSON. Each
//! typed value becomes a `Cell`, so the value rules are the JSON ones; a
//! batch is converted a column at a time where it can be
//! (`mapping/columns.rs`), each distinct value once.

use std::borrow::Cow;
use std::fs::File;
use std::path::PathBuf;
use std::sync::Arc;

use arrow_array::cast::AsArray;
use arrow_array::types::*;
use arrow_array::{Array, ArrayRef, RecordBatch, StructArray};
use arrow_schema::{DataType, Fields, Schema, TimeUnit};
use parquet::arrow::ProjectionMask;
use parquet::arrow::arrow_reader::{
    ArrowReaderMetadata, ArrowReaderOptions, ParquetRecordBatchReaderBuilder,
};
use parquet::basic::Encoding;
use parquet::file::metadata::RowGroupMetaData;

use crate::mapping::Cell;

/// The rows of a batch at most.
const BATCH_ROWS: usize = 1 << 17;

/// About how many bytes of a row group's mapped columns a batch holds at
/// most (by their uncompressed size in the file).
const BATCH_BYTES: u64 = 256 << 20;

/// The rows of a batch of `group`'s `mask` columns: the whole group when it
/// is small enough, so that a value shared by rows is converted once for
/// more rows (`Mapping::convert_columns`); at most `BATCH_ROWS`, and fewer
/// when the columns are large, as a string column's offsets are 32-bit
/// (2 GiB a batch); at least 8,192.
fn batch_rows(group: &RowGroupMetaData, mask: &ProjectionMask) -> usize {
    let rows = u64::try_from(group.num_rows()).unwrap_or(0);
    let bytes: u64 = (0..group.num_columns())
        .filter(|&i| mask.leaf_included(i))
        .map(|i| u64::try_from(group.column(i).uncompressed_size()).unwrap_or(0))
        .sum();
    let fit = rows.saturating_mul(BATCH_BYTES) / bytes.max(1);
    let rows = usize::try_from(rows.min(fit)).unwrap_or(BATCH_ROWS);
    rows.clamp(8192, BATCH_ROWS)
}

/// An opened Parquet file: its metadata, read once, shared by the workers
/// that decode its row groups.
pub(crate) struct ParquetSource {
    /// Each read opens its own handle: handles cloned from one file share
    /// its position, and workers read row groups at the same time.
    path: PathBuf,
    metadata: ArrowReaderMetadata,
    /// A temporary copy of a remote object, removed on drop.
    _spool: Option<tempfile::TempPath>,
}

impl ParquetSource {
    pub fn open(path: PathBuf, spool: Option<tempfile::TempPath>) -> Result<Self, String> {
        let file = File::open(&path).map_err(|e| format!("cannot open: {e}"))?;
        let metadata = ArrowReaderMetadata::load(&file, Default::default())
            .map_err(|e| format!("not a readable Parquet file: {e}"))?;
        let metadata = keep_dictionaries(metadata);
        Ok(ParquetSource {
            path,
            metadata,
            _spool: spool,
        })
    }

    pub fn row_groups(&self) -> usize {
        self.metadata.metadata().num_row_groups()
    }

    /// The rows of row group `group`.
    pub fn group_rows(&self, group: usize) -> usize {
        let rows = self.metadata.metadata().row_group(group).num_rows();
        usize::try_from(rows).unwrap_or(0)
    }

    /// Top-level column names, and every path (nested ones dotted).
    pub fn names(&self) -> (Vec<String>, Vec<String>) {
        let fields = self.metadata.schema().fields();
        let keys = fields.iter().map(|f| f.name().clone()).collect();
        let mut paths = Vec::new();
        fn walk(prefix: &str, fields: &Fields, out: &mut Vec<String>) {
            for f in fields {
                let path = if prefix.is_empty() {
                    f.name().clone()
                } else {
                    format!("{prefix}.{}", f.name())
                };
                out.push(path.clone());
                if let DataType::Struct(inner) = f.data_type() {
                    walk(&path, inner, out);
                }
            }
        }
        walk("", fields, &mut paths);
        (keys, paths)
    }

    /// Decodes one row group, only the leaves under `paths`.
    pub fn read_row_group(
        &self,
        index: usize,
        paths: &[String],
    ) -> Result<Vec<RecordBatch>, String> {
        let descr = self.metadata.metadata().file_metadata().schema_descr();
        let leaves = (0..descr.num_columns()).filter(|&i| {
            let leaf = descr.column(i).path().string();
            paths.iter().any(|p| {
                leaf == *p
                    || leaf.starts_with(&format!("{p}."))
                    // A walk may stop at a struct whose name has dots.
                    || p.starts_with(&format!("{leaf}."))
            })
        });
        let mask = ProjectionMask::leaves(descr, leaves.collect::<Vec<_>>());
        let file = File::open(&self.path).map_err(|e| format!("cannot reopen: {e}"))?;
        let batch = batch_rows(self.metadata.metadata().row_group(index), &mask);
        let reader =
            ParquetRecordBatchReaderBuilder::new_with_metadata(file, self.metadata.clone())
                .with_row_groups(vec![index])
                .with_projection(mask)
                .with_batch_size(batch)
                .build()
                .map_err(|e| format!("cannot read row group {index}: {e}"))?;
        reader
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| format!("cannot decode row group {index}: {e}"))
    }
}

/// The metadata with the top-level string columns whose every data page is
/// dictionary encoded read as dictionary arrays: each distinct value is then
/// decoded, converted and checked once per batch instead of once per row
/// (`Mapping::convert_columns`). A column whose pages fell back to plain
/// encoding would be hashed back into a dictionary value by value, so it
/// stays as it is; that is known from the page encodings the writer
/// recorded (most writers record them, arrow-rs among them), and a chunk
/// without that record counts as dictionary encoded when it has a
/// dictionary page.
fn keep_dictionaries(metadata: ArrowReaderMetadata) -> ArrowReaderMetadata {
    let parquet = metadata.metadata();
    let descr = parquet.file_metadata().schema_descr();
    let encoded = |name: &str| {
        let top = |i: usize| descr.column(i).path().parts() == [name];
        let Some(leaf) = (0..descr.num_columns()).find(|&i| top(i)) else {
            return false;
        };
        parquet.row_groups().iter().all(|g| {
            let chunk = g.column(leaf);
            chunk.dictionary_page_offset().is_some()
                && chunk.page_encoding_stats_mask().is_none_or(|pages| {
                    pages.is_only(Encoding::RLE_DICTIONARY)
                        || pages.is_only(Encoding::PLAIN_DICTIONARY)
                })
        })
    };
    let mut changed = false;
    let fields: Vec<_> = metadata
        .schema()
        .fields()
        .iter()
        .map(|f| match f.data_type() {
            DataType::Utf8 | DataType::LargeUtf8 if encoded(f.name()) => {
                changed = true;
                let ty = DataType::Dictionary(
                    Box::new(DataType::Int32),
                    Box::new(f.data_type().clone()),
                );
                Arc::new(f.as_ref().clone().with_data_type(ty))
            }
            _ => f.clone(),
        })
        .collect();
    if !changed {
        return metadata;
    }
    let schema = Arc::new(Schema::new_with_metadata(
        fields,
        metadata.schema().metadata().clone(),
    ));
    let options = ArrowReaderOptions::new().with_schema(schema);
    ArrowReaderMetadata::try_new(parquet.clone(), options).unwrap_or(metadata)
}

/// The column of `path` in a batch: an exact top-level name, else a walk
/// through struct columns.
pub(crate) fn column<'a>(batch: &'a RecordBatch, path: &str) -> Option<Column<'a>> {
    if let Some(a) = batch.column_by_name(path) {
        return Some(Column::new(a));
    }
    let mut parts = path.split('.');
    let mut array: &ArrayRef = batch.column_by_name(parts.next()?)?;
    let mut parents: Vec<&'a StructArray> = Vec::new();
    for part in parts {
        let s = array.as_struct_opt()?;
        parents.push(s);
        array = s.column_by_name(part)?;
    }
    let mut col = Column::new(array);
    col.nulls |= parents.iter().any(|p| p.null_count() > 0);
    col.parents = parents;
    Some(col)
}

/// A column with what reading one row needs: the array (a dictionary's
/// values) downcast once per batch for the common types, dictionary keys
/// resolved once, and the structs around it (a null struct nulls its
/// fields).
pub(crate) struct Column<'a> {
    array: &'a ArrayRef,
    /// A dictionary's values, else `array`.
    values: &'a ArrayRef,
    /// A dictionary's key for each row.
    keys: Option<Vec<usize>>,
    typed: Typed<'a>,
    parents: Vec<&'a StructArray>,
    /// Some value of the column or of a struct around it is null.
    nulls: bool,
    /// A dictionary without values: every row is null.
    empty: bool,
}

/// The array of the usual event columns, downcast once per batch instead
/// of once per value.
enum Typed<'a> {
    Utf8(&'a arrow_array::StringArray),
    Int64(&'a arrow_array::Int64Array),
    Float64(&'a arrow_array::Float64Array),
    Other,
}

impl<'a> Column<'a> {
    fn new(array: &'a ArrayRef) -> Self {
        let (keys, values) = match array.as_any_dictionary_opt() {
            // No values: every row is null (`normalized_keys` would panic).
            Some(d) if d.values().is_empty() => (Some(vec![0; array.len()]), d.values()),
            Some(d) => (Some(d.normalized_keys()), d.values()),
            None => (None, array),
        };
        // A null among a dictionary's values is seen through `cell`.
        let typed = match values.data_type() {
            _ if keys.is_some() && values.null_count() > 0 => Typed::Other,
            DataType::Utf8 => Typed::Utf8(values.as_string::<i32>()),
            DataType::Int64 => Typed::Int64(values.as_primitive::<Int64Type>()),
            DataType::Float64 => Typed::Float64(values.as_primitive::<Float64Type>()),
            _ => Typed::Other,
        };
        // A dictionary without values has only nulls; a malformed file
        // that says otherwise reads as nulls too, never past the values.
        let empty = keys.is_some() && values.is_empty();
        Column {
            array,
            values,
            keys,
            typed,
            parents: Vec::new(),
            nulls: empty || array.logical_null_count() > 0,
            empty,
        }
    }

    /// Whether the value at `row`, or a struct around it, is null (a null
    /// among a dictionary's values is not seen here).
    #[inline]
    pub fn is_null(&self, row: usize) -> bool {
        self.nulls
            && (self.empty
                || self.array.is_null(row)
                || self.parents.iter().any(|p| p.is_null(row)))
    }

    /// A dictionary column's key for each row, and how many values it has.
    pub fn dictionary(&self) -> Option<(&[usize], usize)> {
        Some((self.keys.as_deref()?, self.values.len()))
    }

    /// Whether some row may be null (false: none is).
    pub fn has_nulls(&self) -> bool {
        self.nulls
    }

    /// The values of a plain 64-bit number column, a row each, as their
    /// bits (equal bits, equal values); `None` for other columns.
    pub fn words(&self) -> Option<&'a [u64]> {
        let (values, len) = match self.typed {
            _ if self.keys.is_some() => return None,
            Typed::Int64(a) => (a.values().as_ptr().cast::<u64>(), a.len()),
            Typed::Float64(a) => (a.values().as_ptr().cast::<u64>(), a.len()),
            _ => return None,
        };
        // SAFETY: the array's `len` values from that pointer; `i64` and
        // `f64` have the size and alignment of `u64`, and any bits are a
        // `u64`.
        Some(unsafe { std::slice::from_raw_parts(values, len) })
    }

    pub fn cell(&self, row: usize) -> Cell<'a> {
        if self.is_null(row) {
            return Cell::Null;
        }
        let i = self.keys.as_ref().map_or(row, |keys| keys[row]);
        match self.typed {
            Typed::Utf8(a) => Cell::Str(Cow::Borrowed(a.value(i))),
            Typed::Int64(a) => Cell::Int(a.value(i)),
            Typed::Float64(a) => Cell::Float(a.value(i)),
            Typed::Other => {
                let values: &'a ArrayRef = self.values;
                cell(values.as_ref(), i)
            }
        }
    }
}

fn owned_number<'a>(text: String, integer: bool) -> Cell<'a> {
    Cell::Number {
        text: Cow::Owned(text),
        integer,
    }
}

/// The value at `row` of a (non-dictionary) array.
pub(crate) fn cell(array: &dyn Array, row: usize) -> Cell<'_> {
    if array.is_null(row) {
        return Cell::Null;
    }
    macro_rules! int {
        ($t:ty) => {
            Cell::Int(i64::from(array.as_primitive::<$t>().value(row)))
        };
    }
    match array.data_type() {
        DataType::Null => Cell::Null,
        DataType::Boolean => Cell::Bool(array.as_boolean().value(row)),
        DataType::Int8 => int!(Int8Type),
        DataType::Int16 => int!(Int16Type),
        DataType::Int32 => int!(Int32Type),
        DataType::Int64 => int!(Int64Type),
        DataType::UInt8 => int!(UInt8Type),
        DataType::UInt16 => int!(UInt16Type),
        DataType::UInt32 => int!(UInt32Type),
        DataType::UInt64 => {
            let v = array.as_primitive::<UInt64Type>().value(row);
            match i64::try_from(v) {
                Ok(v) => Cell::Int(v),
                Err(_) => owned_number(v.to_string(), true),
            }
        }
        // A float's shortest form is its own, not its double's (0.1f32 is
        // 0.1, not 0.10000000149011612).
        DataType::Float16 => owned_number(
            array.as_primitive::<Float16Type>().value(row).to_string(),
            false,
        ),
        DataType::Float32 => owned_number(
            array.as_primitive::<Float32Type>().value(row).to_string(),
            false,
        ),
        DataType::Float64 => Cell::Float(array.as_primitive::<Float64Type>().value(row)),
        DataType::Decimal32(_, s) => decimal(
            i128::from(array.as_primitive::<Decimal32Type>().value(row)),
            *s,
        ),
        DataType::Decimal64(_, s) => decimal(
            i128::from(array.as_primitive::<Decimal64Type>().value(row)),
            *s,
        ),
        DataType::Decimal128(_, s) => {
            decimal(array.as_primitive::<Decimal128Type>().value(row), *s)
        }
        DataType::Utf8 => Cell::Str(Cow::Borrowed(array.as_string::<i32>().value(row))),
        DataType::LargeUtf8 => Cell::Str(Cow::Borrowed(array.as_string::<i64>().value(row))),
        DataType::Utf8View => Cell::Str(Cow::Borrowed(array.as_string_view().value(row))),
        DataType::Binary => binary(array.as_binary::<i32>().value(row)),
        DataType::LargeBinary => binary(array.as_binary::<i64>().value(row)),
        DataType::BinaryView => binary(array.as_binary_view().value(row)),
        DataType::Timestamp(unit, _) => {
            let per_second = match unit {
                TimeUnit::Second => 1,
                TimeUnit::Millisecond => 1_000,
                TimeUnit::Microsecond => 1_000_000,
                TimeUnit::Nanosecond => 1_000_000_000,
            };
            let v = match unit {
                TimeUnit::Second => array.as_primitive::<TimestampSecondType>().value(row),
                TimeUnit::Millisecond => {
                    array.as_primitive::<TimestampMillisecondType>().value(row)
                }
                TimeUnit::Microsecond => {
                    array.as_primitive::<TimestampMicrosecondType>().value(row)
                }
                TimeUnit::Nanosecond => array.as_primitive::<TimestampNanosecondType>().value(row),
            };
            Cell::Seconds(v / per_second)
        }
        DataType::Date32 => {
            Cell::Seconds(i64::from(array.as_primitive::<Date32Type>().value(row)) * 86_400)
        }
        DataType::Date64 => Cell::Seconds(array.as_primitive::<Date64Type>().value(row) / 1_000),
        DataType::List(_) => list(array.as_list::<i32>().value(row)),
        DataType::LargeList(_) => list(array.as_list::<i64>().value(row)),
        DataType::Dictionary(_, _) => {
            let d = array.as_any_dictionary();
            let key = d.normalized_keys()[row];
            // A dictionary inside a list: rare enough to resolve per value.
            cell(d.values().as_ref(), key).into_owned()
        }
        DataType::Struct(_) | DataType::Map(_, _) => Cell::Object,
        other => Cell::Str(Cow::Owned(format!("<unsupported Parquet type {other}>"))),
    }
}

/// A list value's elements (the list array outlives them via `owned`).
fn list<'a>(values: ArrayRef) -> Cell<'a> {
    let cells = (0..values.len())
        .map(|i| cell(values.as_ref(), i).into_owned())
        .collect();
    Cell::List(cells)
}

fn binary(bytes: &[u8]) -> Cell<'_> {
    match std::str::from_utf8(bytes) {
        Ok(s) => Cell::Str(Cow::Borrowed(s)),
        Err(_) => Cell::Str(Cow::Owned(String::from_utf8_lossy(bytes).into_owned())),
    }
}

/// A decimal's exact text: `v` scaled by 10^-`scale`.
fn decimal<'a>(v: i128, scale: i8) -> Cell<'a> {
    if scale <= 0 {
        let text = format!("{v}{}", "0".repeat(scale.unsigned_abs() as usize));
        return owned_number(text, true);
    }
    let digits = v.unsigned_abs().to_string();
    let scale = scale as usize;
    let padded = format!("{digits:0>width$}", width = scale + 1);
    let (int, frac) = padded.split_at(padded.len() - scale);
    let sign = if v < 0 { "-" } else { "" };
    owned_number(format!("{sign}{int}.{frac}"), false)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn decimals_keep_their_digits() {
        let text = |c: Cell| match c {
            Cell::Number { text, .. } => text.into_owned(),
            other => panic!("{other:?}"),
        };
        assert_eq!(text(decimal(1250, 2)), "12.50");
        assert_eq!(text(decimal(-5, 3)), "-0.005");
        assert_eq!(text(decimal(7, 0)), "7");
        assert_eq!(text(decimal(7, -2)), "700");
    }

    /// Only string columns whose every page is dictionary encoded are read
    /// as dictionaries; one that fell back to plain pages is not (it would
    /// be hashed back into a dictionary).
    #[test]
    fn only_dictionary_pages_are_kept_as_dictionaries() {
        use arrow_array::StringArray;
        use parquet::arrow::ArrowWriter;
        use parquet::file::properties::WriterProperties;

        let few: StringArray = (0..50_000).map(|i| Some(["a", "b"][i % 2])).collect();
        let many: StringArray = (0..50_000).map(|i| Some(format!("id-{i}"))).collect();
        let batch = RecordBatch::try_from_iter([
            ("few", Arc::new(few) as ArrayRef),
            ("many", Arc::new(many)),
        ])
        .unwrap();
        let file = tempfile::NamedTempFile::new().unwrap();
        // A small dictionary page: the many ids fall back to plain pages.
        let props = WriterProperties::builder()
            .set_dictionary_page_size_limit(4096)
            .build();
        let mut writer =
            ArrowWriter::try_new(file.reopen().unwrap(), batch.schema(), Some(props)).unwrap();
        writer.write(&batch).unwrap();
        writer.close().unwrap();
        let source = ParquetSource::open(file.path().to_path_buf(), None).unwrap();
        let paths = ["few".to_string(), "many".to_string()];
        let read = source.read_row_group(0, &paths).unwrap();
        let types: Vec<_> = read[0]
            .schema()
            .fields()
            .iter()
            .map(|f| f.data_type().clone())
            .collect();
        let dictionary = DataType::Dictionary(Box::new(DataType::Int32), Box::new(DataType::Utf8));
        assert_eq!(types, [dictionary, DataType::Utf8]);
        let few = column(&read[0], "few").unwrap();
        assert_eq!(few.cell(3), Cell::Str(Cow::Borrowed("b")));
    }

    #[test]
    fn dictionary_and_list_columns_become_cells() {
        use arrow_array::{DictionaryArray, ListArray, StringArray};
        let dict: DictionaryArray<Int32Type> = vec!["a", "b", "a"].into_iter().collect();
        let array: ArrayRef = Arc::new(dict);
        let col = Column::new(&array);
        assert_eq!(col.cell(2), Cell::Str(Cow::Borrowed("a")));
        // A dictionary with no values (every row null) reads as nulls.
        let nulls: DictionaryArray<Int32Type> = vec![None::<&str>, None].into_iter().collect();
        let array: ArrayRef = Arc::new(nulls);
        let col = Column::new(&array);
        assert_eq!((col.cell(0), col.cell(1)), (Cell::Null, Cell::Null));
        let list: ListArray = ListArray::from_iter_primitive::<Int32Type, _, _>(vec![
            Some(vec![Some(1), None, Some(3)]),
            None,
        ]);
        let array: ArrayRef = Arc::new(list);
        assert_eq!(
            cell(array.as_ref(), 0),
            Cell::List(vec![Cell::Int(1), Cell::Null, Cell::Int(3)])
        );
        assert_eq!(cell(array.as_ref(), 1), Cell::Null);
        let s: ArrayRef = Arc::new(StringArray::from(vec![Some("x"), None]));
        assert_eq!(cell(s.as_ref(), 1), Cell::Null);
    }
}
