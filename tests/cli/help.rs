//! The `--help` texts are checked in (tests/cli/help/*.txt) so that a change
//! to them shows in review. `UPDATE_HELP=1 cargo test --test cli help`
//! rewrites them.

use std::fs;
use std::path::Path;

use clap::CommandFactory;
use personalize_prep::cli::Cli;

use crate::workdir::Workdir;

#[test]
fn clap_definition_is_consistent() {
    Cli::command().debug_assert();
}

fn check_help(args: &[&str], file: &str) {
    let wd = Workdir::new();
    let output = wd
        .command(args)
        .env("COLUMNS", "100")
        .output()
        .expect("the binary runs");
    assert_eq!(output.status.code(), Some(0));
    let got = String::from_utf8(output.stdout).unwrap();
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/cli/help")
        .join(file);
    if std::env::var_os("UPDATE_HELP").is_some() {
        fs::write(&path, &got).unwrap();
    }
    let want = fs::read_to_string(&path).unwrap_or_default();
    assert_eq!(
        got, want,
        "help text changed: rerun with UPDATE_HELP=1 and review the diff"
    );
}

#[test]
fn top_level_help() {
    check_help(&["--help"], "main.txt");
}

#[test]
fn convert_help() {
    check_help(&["convert", "--help"], "convert.txt");
}

#[test]
fn inspect_help() {
    check_help(&["inspect", "--help"], "inspect.txt");
}

#[test]
fn validate_help() {
    check_help(&["validate", "--help"], "validate.txt");
}

#[test]
fn schema_help() {
    check_help(&["schema", "--help"], "schema.txt");
}

#[test]
fn help_lines_fit_79_columns_and_carry_examples() {
    for file in ["convert.txt", "inspect.txt", "schema.txt", "validate.txt"] {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/cli/help")
            .join(file);
        let text = fs::read_to_string(path).unwrap();
        assert!(text.contains("Examples:\n  # "), "{file} has no examples");
        assert!(text.contains("personalize-prep "), "{file}");
    }
}

#[test]
fn version_is_printed() {
    let run = Workdir::new().run(&["--version"]);
    run.assert_code(0);
    assert_eq!(
        run.stdout_text(),
        format!("personalize-prep {}\n", env!("CARGO_PKG_VERSION"))
    );
}
