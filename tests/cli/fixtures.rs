//! One test per folder in `fixtures/`: copy it to a workdir, run the binary
//! with the arguments in `args` (one per line), and compare what it wrote.
//!
//! A case folder holds:
//! - `args`: the command line, one argument per line (paths are relative to
//!   the case folder; outputs go under `out/`);
//! - `input/`: the source data;
//! - `expected/`: every file the run must leave in `out/`, byte for byte
//!   (no other file may appear there);
//! - optional `expected.stdout`, `expected.stderr`: exact texts;
//! - optional `expected.exit`: the exit code (default 0).
//!
//! Every `.avsc` produced is parsed with apache-avro, and its field names
//! must equal the header of the CSV beside it.

use std::fs;
use std::path::Path;

use crate::workdir::{Workdir, fixtures_dir};

fn run_fixture(name: &str) {
    let case = fixtures_dir().join(name);
    let wd = Workdir::new();
    wd.copy_tree(&case);
    let args_text = fs::read_to_string(case.join("args")).expect("the case has an args file");
    let args: Vec<&str> = args_text.lines().filter(|l| !l.is_empty()).collect();
    let run = wd.run(&args);

    let want_code: i32 = fs::read_to_string(case.join("expected.exit"))
        .map(|s| s.trim().parse().expect("expected.exit holds a number"))
        .unwrap_or(0);
    run.assert_code(want_code);
    if let Ok(want) = fs::read_to_string(case.join("expected.stderr")) {
        assert_eq!(run.stderr, want, "stderr differs\n{}", run.describe());
    }
    if let Ok(want) = fs::read(case.join("expected.stdout")) {
        assert_eq!(
            String::from_utf8_lossy(&run.stdout),
            String::from_utf8_lossy(&want),
            "stdout differs\n{}",
            run.describe()
        );
    }

    let expected_dir = case.join("expected");
    let mut want_files = Vec::new();
    if expected_dir.is_dir() {
        let exp = Workdir::new();
        exp.copy_tree(&expected_dir);
        want_files = exp.files("");
    }
    let got_files = wd.files("out");
    assert_eq!(got_files, want_files, "files in out/\n{}", run.describe());
    for file in &got_files {
        let got = fs::read(wd.path().join("out").join(file)).unwrap();
        let want = fs::read(expected_dir.join(file)).unwrap();
        assert_eq!(
            String::from_utf8_lossy(&got),
            String::from_utf8_lossy(&want),
            "out/{file} differs\n{}",
            run.describe()
        );
        if file.ends_with(".avsc") {
            check_schema(&wd.path().join("out"), file);
        }
    }
}

/// The schema parses as Avro and names the CSV's columns in order.
fn check_schema(out: &Path, file: &str) {
    let text = fs::read_to_string(out.join(file)).unwrap();
    let schema = apache_avro::Schema::parse_str(&text)
        .unwrap_or_else(|e| panic!("{file} is not a valid Avro schema: {e}\n{text}"));
    let apache_avro::Schema::Record(record) = schema else {
        panic!("{file} is not a record schema");
    };
    let names: Vec<&str> = record.fields.iter().map(|f| f.name.as_str()).collect();
    let csv = out.join(file.replace(".avsc", ".csv"));
    if let Ok(csv) = fs::read_to_string(csv) {
        let header = csv.lines().next().unwrap_or("");
        assert_eq!(
            header,
            names.join(","),
            "{file}: header and schema disagree"
        );
    }
}

macro_rules! fixtures {
    ($($test:ident => $dir:literal,)*) => {
        $(
            #[test]
            fn $test() {
                run_fixture($dir);
            }
        )*
        const LISTED: &[&str] = &[$($dir),*];
    };
}

fixtures! {
    validate_domain_ecommerce => "validate-domain-ecommerce",
    validate_domain_vod => "validate-domain-vod",
    report_json => "report-json",
    dedupe_interactions => "dedupe-interactions",
    dedupe_items => "dedupe-items",
    skip_concatenated => "skip-concatenated",
    err_max_errors => "err-max-errors",
    validate_sample => "validate-sample",
    validate_strict => "validate-strict",
    validate_values => "validate-values",
    validate_header => "validate-header",
    validate_schema => "validate-schema",
    first_record_serde_refuses => "first-record-serde-refuses",
    inspect_json => "inspect-json",
    parquet_pyarrow => "parquet-pyarrow",
    err_parquet_null => "err-parquet-null",
    config_file => "config-file",
    err_config_unknown_key => "err-config-unknown-key",
    csv_spreadsheet => "csv-spreadsheet",
    csv_tsv => "csv-tsv",
    csv_delimiter_flag => "csv-delimiter-flag",
    mixed_json_csv => "mixed-json-csv",
    err_csv_field_count => "err-csv-field-count",
    err_csv_invalid_utf8 => "err-csv-invalid-utf8",
    sample_readme => "sample-readme",
    ds_action_interactions => "ds-action-interactions",
    ds_actions => "ds-actions",
    ds_interactions => "ds-interactions",
    ds_items => "ds-items",
    ds_users => "ds-users",
    include_exclude => "include-exclude",
    nested_paths => "nested-paths",
    output_file_name => "output-file-name",
    schema_out => "schema-out",
    shape_array => "shape-array",
    shape_bom => "shape-bom",
    shape_concatenated => "shape-concatenated",
    shape_firehose_tree => "shape-firehose-tree",
    shape_gzip_multimember => "shape-gzip-multimember",
    shape_key_order => "shape-key-order",
    shape_mix => "shape-mix",
    shape_ndjson => "shape-ndjson",
    shape_skip_rules => "shape-skip-rules",
    shape_zstd => "shape-zstd",
    text_personalize => "text-personalize",
    text_rfc4180 => "text-rfc4180",
    timestamp_unit_ms => "timestamp-unit-ms",
    timestamps => "timestamps",
    err_event_value_string => "err-event-value-string",
    err_gzip_bad_timestamp => "err-gzip-bad-timestamp",
    err_id_too_long => "err-id-too-long",
    err_invalid_utf8 => "err-invalid-utf8",
    err_missing_first => "err-missing-first",
    err_missing_later => "err-missing-later",
    err_non_object => "err-non-object",
    err_non_object_in_array => "err-non-object-in-array",
    err_object_for_scalar => "err-object-for-scalar",
    err_truncated => "err-truncated",
    usage_columns_missing_required => "usage-columns-missing-required",
    usage_map_no_equals => "usage-map-no-equals",
    usage_textual_interactions => "usage-textual-interactions",
    categorical_array_scalars => "categorical-array-scalars",
    columns_reorder_metadata => "columns-reorder-metadata",
    ds_actions_full => "ds-actions-full",
    err_event_type_missing_later => "err-event-type-missing-later",
    err_id_fraction => "err-id-fraction",
    err_two_candidates => "err-two-candidates",
    first_record_only_matching => "first-record-only-matching",
    ids_huge_integer => "ids-huge-integer",
    ids_integral => "ids-integral",
    map_order_and_override => "map-order-and-override",
    metadata_inference => "metadata-inference",
    multi_source_order => "multi-source-order",
    reserved_order_all => "reserved-order-all",
    shape_empty_no_ext => "shape-empty-no-ext",
    shape_gz_ext_zstd_magic => "shape-gz-ext-zstd-magic",
    shape_leading_whitespace => "shape-leading-whitespace",
    stdout_output => "stdout-output",
    text_newlines_in_ids => "text-newlines-in-ids",
    timestamps_rfc3339_variants => "timestamps-rfc3339-variants",
    type_and_categorical_flags => "type-and-categorical-flags",
    usage_bad_type => "usage-bad-type",
    ids_float_forms => "ids-float-forms",
    metadata_inferred_double_format => "metadata-inferred-double-format",
    metadata_string_number_format => "metadata-string-number-format",
    usage_columns_missing_mapped => "usage-columns-missing-mapped",
}

#[test]
fn every_fixture_folder_has_a_test() {
    let mut folders: Vec<String> = fs::read_dir(fixtures_dir())
        .unwrap()
        .map(|e| e.unwrap())
        .filter(|e| e.file_type().unwrap().is_dir() && e.path().join("args").exists())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    folders.sort();
    let mut listed: Vec<String> = LISTED.iter().map(|s| s.to_string()).collect();
    listed.sort();
    assert_eq!(folders, listed, "add the new folder to the fixtures! list");
}
