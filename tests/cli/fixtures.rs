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
    sample_readme => "sample-readme",
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
