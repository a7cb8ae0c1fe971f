//! personalize-prep turns raw event, user and item data into exactly what
//! Amazon Personalize imports: one CSV plus the matching Avro schema.
//!
//! The pipeline, stage by stage:
//!
//! - `source`: list objects (files, folders, object-store prefixes) in key
//!   order and open them;
//! - `decode`: detect compression and format, cut each stream into chunks
//!   at record boundaries (JSON, CSV) or read it by row group (Parquet), and
//!   scan JSON records for the mapped paths only;
//! - `mapping`: resolve which source path fills which Personalize field and
//!   apply the value rules (ids, epoch seconds, numbers, lists);
//! - `sink`: encode rows in the Personalize CSV dialect and write outputs
//!   atomically;
//! - `schema`: the dataset rules and the Avro schema JSON;
//! - `pipeline`: the only module that decides threads and order;
//! - `validate`: Personalize's import rules over a written CSV and schema;
//! - `inspect`: what the sources hold, for the `inspect` command.
//!
//! `cli` is what the user typed, `config` turns it into resolved settings,
//! and `run` ties a parsed command line to the library.

#[doc(hidden)]
pub mod bench;
pub mod cli;
pub mod config;
pub mod decode;
pub mod error;
pub mod failpoint;
pub mod inspect;
pub mod mapping;
pub mod pipeline;
pub mod progress;
pub mod schema;
pub mod shard;
pub mod sink;
pub mod source;
pub mod spark;
pub mod state;
pub mod validate;

use std::io::Write;

pub use error::{Error, Result};

use cli::{Cli, Command};
use config::{ConvertConfig, InspectConfig, SchemaConfig};

/// Checks the CSV output against Personalize's rules after `convert`
/// (SPEC section 7), printing the findings on stderr (`-q` keeps only
/// errors). The workers checked every row as they wrote it; only a
/// deduplicated output is read back (locally, or through the local copy
/// the run kept of an output on stdout or object storage).
fn check_output(
    cfg: &ConvertConfig,
    summary: &mut pipeline::Summary,
    mode: validate::ImportMode,
) -> Result<Option<validate::Report>> {
    let split = summary.parts.len() > 1;
    let name = match summary.parts.as_slice() {
        [one] => one.name.clone(),
        _ => String::new(),
    };
    // Each folder is one import: the size limit applies to the largest.
    let mut folders = std::collections::BTreeMap::new();
    for p in &summary.parts {
        *folders.entry(p.folder).or_insert(0u64) += p.bytes;
    }
    let bytes = folders.values().copied().max().unwrap_or(0);
    let validator = validate::Validator {
        dataset: Some(cfg.mapping.dataset),
        dialect: Some(cfg.dialect),
        domain: cfg.domain,
        mode,
        limits: validate::Limits::default(),
    };
    let mut report = if let Some(tally) = summary.tally.take() {
        validator.after_convert(&name, &summary.schema, tally, bytes, cfg.dialect)
    } else {
        let path = match (&cfg.csv, &summary.copy) {
            (_, Some(copy)) => copy.to_path_buf(),
            (Some(config::CsvDest::File(config::Target::Local(path))), _) => path.clone(),
            _ => return Ok(None),
        };
        validator.run_named(&[(path, name)], Some(&summary.schema))?
    };
    if split {
        // Lines were counted over the rows of the whole run under one
        // header: name the part and its own line.
        for f in &mut report.findings {
            for at in &mut f.examples {
                let row = at.line.saturating_sub(2);
                if let Some(p) = summary.parts.iter().rev().find(|p| p.first_row <= row) {
                    at.file = p.name.clone();
                    at.line = row - p.first_row + 2;
                }
            }
        }
    }
    for f in &report.findings {
        if !cfg.quiet || f.severity == validate::Severity::Error {
            eprintln!("personalize-prep: {f}");
        }
    }
    Ok(Some(report))
}

/// The `--report` JSON: the run's counts, the output's figures and every
/// finding (README, "The report").
fn report_json(
    cfg: &ConvertConfig,
    s: &pipeline::Summary,
    checked: Option<&validate::Report>,
) -> serde_json::Value {
    let findings: Vec<serde_json::Value> = checked
        .map(|r| &r.findings[..])
        .unwrap_or_default()
        .iter()
        .map(|f| {
            let examples: Vec<serde_json::Value> = f
                .examples
                .iter()
                .map(|e| serde_json::json!({"file": e.file, "line": e.line, "column": e.column}))
                .collect();
            serde_json::json!({
                "rule": f.rule,
                "severity": match f.severity {
                    validate::Severity::Error => "error",
                    validate::Severity::Warning => "warning",
                },
                "message": f.message,
                "count": f.count,
                "examples": examples,
            })
        })
        .collect();
    serde_json::json!({
        "dataset": cfg.mapping.dataset.cli_name(),
        "objects": s.objects,
        "bytes": s.bytes,
        "records": s.records,
        "rows": s.rows,
        "rejected": s.rejected.values().sum::<u64>(),
        "rejected_by_reason": s.rejected,
        "duplicates_removed": s.duplicates,
        "outputs": s.outputs,
        "checked": checked.is_some(),
        "figures": checked.map(|r| r.figures.clone()),
        "findings": findings,
    })
}

fn print_stdout(text: &str) -> Result<()> {
    std::io::stdout()
        .write_all(text.as_bytes())
        .map_err(|source| Error::Write {
            path: "<stdout>".into(),
            what: "cannot write",
            source,
        })
}

/// What follows a conversion: the summary, the output check and the
/// report; the exit code (3 when the check found errors, or warnings with
/// `--strict`).
fn finish_convert(
    cfg: &ConvertConfig,
    mut summary: pipeline::Summary,
    run: Option<serde_json::Value>,
) -> Result<i32> {
    for w in &summary.warnings {
        eprintln!("personalize-prep: warning: {w}");
    }
    if !cfg.quiet {
        eprint!("{}", progress::summary_text(&summary));
    }
    // A --state run's folder is one INCREMENTAL import.
    let mode = if run.is_some() {
        validate::ImportMode::Incremental
    } else {
        validate::ImportMode::Full
    };
    // The outputs are committed: what fails from here on is said, and the
    // exit code is 3 (outputs written), never 1.
    let mut after_commit_failed = false;
    let checked = check_output(cfg, &mut summary, mode).unwrap_or_else(|e| {
        eprintln!("personalize-prep: warning: the output check failed: {e}");
        after_commit_failed = true;
        None
    });
    let findings = checked.as_ref().map_or(&[][..], |r| &r.findings[..]);
    let mut errors = findings
        .iter()
        .filter(|f| f.severity == validate::Severity::Error)
        .count();
    if let Some(report) = &cfg.report {
        let mut json = report_json(cfg, &summary, checked.as_ref());
        if let Some(run) = run {
            json["run"] = run;
        }
        let text = format!(
            "{}\n",
            serde_json::to_string_pretty(&json).unwrap_or_default()
        );
        let written = match report {
            None => print_stdout(&text),
            Some(target) => pipeline::Io::new(&cfg.storage_options)
                .and_then(|io| io.write_small(target, text.as_bytes())),
        };
        if let Err(e) = written {
            eprintln!("personalize-prep: warning: the report was not written: {e}");
            after_commit_failed = true;
        }
    }
    if after_commit_failed {
        errors += 1;
    }
    let failing = errors > 0 || (cfg.strict && !findings.is_empty());
    Ok(if failing { 3 } else { 0 })
}

/// Runs a parsed command line; the exit code on success.
pub fn run(cli: &Cli) -> Result<i32> {
    progress::init_logging(cli.verbose);
    match &cli.command {
        Command::Convert(args) if args.plan.is_some() => {
            let (summary, done) = shard::convert_shard(args, cli.quiet)?;
            for w in &summary.warnings {
                eprintln!("personalize-prep: warning: {w}");
            }
            if !cli.quiet {
                eprint!("{}{done}", progress::summary_text(&summary));
            }
            Ok(0)
        }
        Command::Plan(args) => {
            let text = shard::plan(args, cli.quiet)?;
            if !cli.quiet {
                eprint!("{text}");
            }
            Ok(0)
        }
        Command::Commit(args) => {
            let text = shard::commit(args, cli.quiet)?;
            if !cli.quiet {
                eprint!("{text}");
            }
            Ok(0)
        }
        Command::SparkJob(args) => {
            let planned = match &args.plan {
                Some(run) => Some((run.as_str(), shard::shard_count(run)?)),
                None => None,
            };
            let driver = spark::driver(planned);
            match &args.output {
                Some(path) => sink::write_atomic(std::path::Path::new(path), driver.as_bytes())?,
                None => print_stdout(&driver)?,
            }
            Ok(0)
        }
        Command::Convert(args) => {
            let cfg = ConvertConfig::from_args(args, cli.quiet)?;
            if cfg.dry_run && cfg.state.is_some() {
                print_stdout(&state::dry_run(&cfg)?)?;
                return Ok(0);
            }
            if cfg.dry_run {
                pipeline::dry_run(&cfg, &mut std::io::stdout().lock())?;
                return Ok(0);
            }
            if cfg.state.is_some() {
                let outcome = state::convert(&cfg)?;
                for w in &outcome.warnings {
                    eprintln!("personalize-prep: warning: {w}");
                }
                if outcome.runs.is_empty() {
                    if !cfg.quiet {
                        eprintln!(
                            "personalize-prep: nothing new in {} since the last run \
                             ({} converted in {}); nothing written",
                            cfg.sources.join(", "),
                            counted(outcome.known_objects, "object"),
                            counted(outcome.known_runs, "run")
                        );
                    }
                    return Ok(0);
                }
                let mut code = 0;
                for run in outcome.runs {
                    if !cfg.quiet {
                        eprintln!(
                            "personalize-prep: run {}{}: {}",
                            run.id,
                            if run.redone { " (pending, redone)" } else { "" },
                            run.folders.join(", ")
                        );
                    }
                    let info = serde_json::json!({
                        "id": run.id,
                        "redone": run.redone,
                        "folders": run.folders,
                    });
                    code = code.max(finish_convert(&cfg, run.summary, Some(info))?);
                }
                return Ok(code);
            }
            let summary = pipeline::convert(&cfg)?;
            finish_convert(&cfg, summary, None)
        }
        Command::Inspect(args) => {
            let cfg = InspectConfig::from_args(args)?;
            let text = inspect::run(&cfg)?;
            print_stdout(&text)?;
            Ok(0)
        }
        Command::Validate(args) => {
            let dataset = args
                .dataset
                .as_deref()
                .map(str::parse::<schema::Dataset>)
                .transpose()
                .map_err(Error::Usage)?;
            let schema = args
                .schema
                .as_ref()
                .map(|p| {
                    std::fs::read_to_string(p).map_err(|source| Error::Read {
                        key: p.clone(),
                        what: "cannot read".into(),
                        source,
                    })
                })
                .transpose()?;
            let validator = validate::Validator {
                dataset,
                dialect: None,
                domain: args
                    .domain
                    .as_deref()
                    .map(str::parse)
                    .transpose()
                    .map_err(Error::Usage)?,
                mode: if args.import_mode == "incremental" {
                    validate::ImportMode::Incremental
                } else {
                    validate::ImportMode::Full
                },
                limits: validate::Limits::default(),
            };
            let files: Vec<std::path::PathBuf> = args.files.iter().map(Into::into).collect();
            let report = validator.run(&files, schema.as_deref())?;
            print_stdout(&report.text())?;
            let failing = report.errors() > 0 || (args.strict && !report.findings.is_empty());
            Ok(if failing { 3 } else { 0 })
        }
        Command::Schema(args) => {
            let cfg = SchemaConfig::from_args(args)?;
            let mapping = mapping::resolve(&cfg.mapping, None).map_err(Error::Usage)?;
            let json = mapping.schema(&[]).to_json();
            match &cfg.output {
                Some(target) => {
                    pipeline::Io::new(&cfg.storage_options)?.write_small(target, json.as_bytes())?
                }
                None => print_stdout(&json)?,
            }
            Ok(0)
        }
    }
}

/// `n` and the noun, plural unless `n` is 1.
fn counted(n: usize, noun: &str) -> String {
    format!("{n} {noun}{}", if n == 1 { "" } else { "s" })
}

/// Helpers shared by unit tests.
#[cfg(test)]
pub(crate) mod testing {
    /// Pseudo-random numbers below the bound asked for (xorshift).
    pub(crate) fn below(seed: u64) -> impl FnMut(usize) -> usize {
        let mut x = seed;
        move |n| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x % n as u64) as usize
        }
    }
}
