//! What the user typed, resolved: defaults filled in, contradictions
//! rejected as usage errors before any data is read. Nothing below this
//! module sees clap. A `--config` file is merged under the flags first.

mod file;

use std::io::IsTerminal;
use std::path::PathBuf;

use crate::cli::{ConvertArgs, InputArgs, InspectArgs, MappingArgs, SchemaArgs};
use crate::decode::{Compression, Format};
use crate::error::{Error, Result};
use crate::mapping::{MappingSpec, TimeUnit};
use crate::schema::{AvroType, Dataset};
use crate::sink::csv::Dialect;
use crate::source::store::StoreUrl;
use crate::source::{KeyFilter, local_path};

/// A file to write: a local path or an object-store URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    Local(PathBuf),
    Url(StoreUrl),
}

impl Target {
    fn parse(text: &str) -> Result<Self> {
        Ok(match StoreUrl::parse(text)? {
            Some(url) => Target::Url(url),
            None => Target::Local(local_path(text)),
        })
    }

    /// A file named `name` inside this folder or prefix.
    fn join(&self, name: &str) -> Self {
        match self {
            Target::Local(dir) => Target::Local(dir.join(name)),
            Target::Url(url) => {
                let mut url = url.clone();
                let dir = url.key.trim_end_matches('/');
                url.key = if dir.is_empty() {
                    name.to_string()
                } else {
                    format!("{dir}/{name}")
                };
                Target::Url(url)
            }
        }
    }

    /// The same file with the `.avsc` extension in place of `.csv`.
    fn schema_beside(&self) -> Self {
        match self {
            Target::Local(path) => Target::Local(path.with_extension("avsc")),
            Target::Url(url) => {
                let mut url = url.clone();
                let stem = url.key.len().saturating_sub(".csv".len());
                url.key = format!("{}.avsc", &url.key[..stem]);
                Target::Url(url)
            }
        }
    }
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Target::Local(path) => write!(f, "{}", path.display()),
            Target::Url(url) => f.write_str(&url.at(&url.key)),
        }
    }
}

/// Where the CSV of a run goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CsvDest {
    Stdout,
    File(Target),
}

/// `--max-errors`: a count, or a share of the records read.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum MaxErrors {
    Count(u64),
    Percent(f64),
}

impl MaxErrors {
    fn parse(text: &str) -> Result<Self> {
        let bad = || {
            Error::usage(format!(
                "--max-errors {text}: expected a count (10) or a share (2.5%)"
            ))
        };
        match text.strip_suffix('%') {
            Some(p) => p
                .parse::<f64>()
                .ok()
                .filter(|p| (0.0..=100.0).contains(p))
                .map(MaxErrors::Percent)
                .ok_or_else(bad),
            None => text.parse().map(MaxErrors::Count).map_err(|_| bad()),
        }
    }

    /// Whether `rejected` of `records` is past the limit; a share is
    /// judged once 1000 records have been read, or at the end.
    pub fn exceeded(self, rejected: u64, records: u64, at_end: bool) -> bool {
        match self {
            MaxErrors::Count(n) => rejected > n,
            MaxErrors::Percent(p) => {
                (at_end || records >= 1000)
                    && records > 0
                    && rejected as f64 * 100.0 / records as f64 > p
            }
        }
    }
}

/// A resolved `convert`.
#[derive(Debug, Clone)]
pub struct ConvertConfig {
    pub sources: Vec<String>,
    pub filter: KeyFilter,
    pub format: Option<Format>,
    pub compression: Option<Compression>,
    /// The delimiter of CSV sources, when not detected.
    pub delimiter: Option<u8>,
    pub mapping: MappingSpec,
    /// `None` only with `--dry-run`.
    pub csv: Option<CsvDest>,
    pub schema_out: Option<Target>,
    pub dialect: Dialect,
    /// `--on-error skip`: bad records are set aside, not fatal.
    pub skip: bool,
    pub rejects: Option<Target>,
    pub max_errors: Option<MaxErrors>,
    /// `--dedupe`.
    pub dedupe: bool,
    /// `--domain`: its rules join the output check.
    pub domain: Option<crate::validate::Domain>,
    /// `--report`: `None` for stdout.
    pub report: Option<Option<Target>>,
    pub threads: usize,
    /// Objects fetched from object storage at once.
    pub concurrency: usize,
    /// `--storage-option` pairs, passed to every store.
    pub storage_options: Vec<(String, String)>,
    /// Retries of a failed object-store request, and how long to keep trying.
    pub retries: usize,
    pub retry_timeout: std::time::Duration,
    /// Bytes per part of a multipart upload.
    pub part_bytes: usize,
    /// Bytes of (decompressed) input per decoding chunk.
    pub chunk_bytes: usize,
    pub dry_run: bool,
    pub progress: bool,
    pub quiet: bool,
}

/// A resolved `schema`.
#[derive(Debug, Clone)]
pub struct SchemaConfig {
    pub mapping: MappingSpec,
    pub output: Option<Target>,
    pub storage_options: Vec<(String, String)>,
}

fn parse<T: std::str::FromStr<Err = String>>(value: &str) -> Result<T> {
    value.parse().map_err(Error::Usage)
}

fn delimiter(text: &str) -> Result<u8> {
    match text {
        "\\t" | "\t" | "tab" => Ok(b'\t'),
        _ if text.len() == 1 && text.is_ascii() && text != "\"" => Ok(text.as_bytes()[0]),
        _ => Err(Error::usage(format!(
            "--delimiter {text:?}: expected one ASCII character (or tab)"
        ))),
    }
}

/// `--storage-option` pairs; a key no store knows is a usage error, found
/// before any data is read.
fn storage_options(pairs: &[String]) -> Result<Vec<(String, String)>> {
    use object_store::{aws::AmazonS3ConfigKey, azure::AzureConfigKey, gcp::GoogleConfigKey};
    pairs
        .iter()
        .map(|p| {
            let (k, v) = p.split_once('=').ok_or_else(|| {
                Error::usage(format!(
                    "--storage-option {p}: expected KEY=VALUE, e.g. aws_region=eu-west-1"
                ))
            })?;
            let key = k.to_ascii_lowercase();
            let known = key.parse::<AmazonS3ConfigKey>().is_ok()
                || key.parse::<AzureConfigKey>().is_ok()
                || key.parse::<GoogleConfigKey>().is_ok();
            if !known {
                return Err(Error::usage(format!(
                    "--storage-option {k}: no object store knows this option \
                     (see object_store's AmazonS3ConfigKey, AzureConfigKey, GoogleConfigKey)"
                )));
            }
            Ok((k.to_string(), v.to_string()))
        })
        .collect()
}

fn mapping_spec(args: &MappingArgs) -> Result<MappingSpec> {
    let dataset = args.dataset.as_deref().unwrap_or("interactions");
    let mut spec = MappingSpec::new(parse::<Dataset>(dataset)?);
    for m in &args.maps {
        let (field, path) = m.split_once('=').ok_or_else(|| {
            Error::usage(format!(
                "--map {m}: expected FIELD=PATH, e.g. --map USER_ID=user.id"
            ))
        })?;
        spec.maps.push((field.to_string(), path.to_string()));
    }
    for t in &args.types {
        let (name, ty) = t.split_once('=').ok_or_else(|| {
            Error::usage(format!(
                "--type {t}: expected NAME=TYPE, e.g. --type PRICE=float"
            ))
        })?;
        let ty = parse::<AvroType>(ty).map_err(|e| Error::usage(format!("--type {t}: {e}")))?;
        spec.types.push((name.to_string(), ty));
    }
    spec.columns = args.columns.clone();
    spec.textual = args.textual.clone();
    spec.categorical = args.categorical.clone();
    spec.not_categorical = args.not_categorical.clone();
    Ok(spec)
}

impl ConvertConfig {
    pub fn from_args(args: &ConvertArgs, quiet: bool) -> Result<Self> {
        let mut merged = args.clone();
        if let Some(path) = &args.mapping.config {
            file::FileConfig::load(path)?.merge_convert(&mut merged);
        }
        let args = &merged;
        if args.input.sources.is_empty() {
            return Err(Error::usage(
                "no SOURCE given (on the command line or in --config)",
            ));
        }
        if args.output.is_none() && !args.dry_run {
            return Err(Error::usage(
                "no -o DEST given (on the command line or in --config)",
            ));
        }
        let mut mapping = mapping_spec(&args.mapping)?;
        mapping.timestamp_unit = args
            .input
            .timestamp_unit
            .as_deref()
            .map(parse::<TimeUnit>)
            .transpose()?;
        mapping.check()?;
        let dataset = mapping.dataset;
        let csv = match args.output.as_deref() {
            None => None,
            Some("-") => Some(CsvDest::Stdout),
            Some(o) if o.to_ascii_lowercase().ends_with(".csv") => {
                let target = Target::parse(o)?;
                if let Target::Url(url) = &target
                    && url.key.is_empty()
                {
                    return Err(Error::usage(format!(
                        "-o {o}: the URL names a bucket, not a file; use {o}/ for a prefix \
                         or add a key such as {}/interactions.csv",
                        url.root
                    )));
                }
                Some(CsvDest::File(target))
            }
            Some(o) => Some(CsvDest::File(
                Target::parse(o)?.join(&format!("{dataset}.csv")),
            )),
        };
        let schema_out = match (&args.schema_out, &csv) {
            (Some(s), _) if s == "-" => {
                return Err(Error::usage(
                    "--schema-out -: the schema is written to a file; use the schema command to print it",
                ));
            }
            (Some(s), _) => Some(Target::parse(s)?),
            (None, Some(CsvDest::File(target))) => Some(target.schema_beside()),
            (None, _) => None,
        };
        if let (Some(CsvDest::File(csv)), Some(schema)) = (&csv, &schema_out)
            && csv == schema
        {
            return Err(Error::usage(format!(
                "--schema-out {}: the same path as the CSV",
                schema
            )));
        }
        let skip = args.on_error.as_deref() == Some("skip");
        if !skip && (args.rejects.is_some() || args.max_errors.is_some()) {
            return Err(Error::usage(
                "--rejects and --max-errors go with --on-error skip",
            ));
        }
        let report = match args.report.as_deref() {
            None => None,
            Some("-") if matches!(csv, Some(CsvDest::Stdout)) => {
                return Err(Error::usage(
                    "--report - and -o - both want stdout; send one to a file",
                ));
            }
            Some("-") => Some(None),
            Some(path) => Some(Some(Target::parse(path)?)),
        };
        let threads = match args.threads {
            Some(0) => return Err(Error::usage("--threads must be at least 1")),
            Some(n) => n,
            None => std::thread::available_parallelism().map_or(1, |n| n.get()),
        };
        let progress = !quiet
            && match args.progress.as_str() {
                "always" => true,
                "never" => false,
                _ => std::io::stderr().is_terminal(),
            };
        Ok(ConvertConfig {
            csv,
            schema_out,
            dialect: parse(args.csv_dialect.as_deref().unwrap_or("personalize"))?,
            skip,
            rejects: args.rejects.as_deref().map(Target::parse).transpose()?,
            max_errors: args
                .max_errors
                .as_deref()
                .map(MaxErrors::parse)
                .transpose()?,
            dedupe: args.dedupe,
            report,
            domain: args.domain.as_deref().map(parse).transpose()?,
            threads,
            part_bytes: args.part_bytes.unwrap_or(8 << 20).max(1),
            chunk_bytes: args.chunk_bytes.unwrap_or(1 << 20).max(1),
            dry_run: args.dry_run,
            progress,
            quiet,
            ..Self::reading(&args.input, mapping)?
        })
    }

    /// The settings for reading `input` (what `convert` and `inspect`
    /// share), with nothing to write.
    fn reading(input: &InputArgs, mapping: MappingSpec) -> Result<Self> {
        if input.concurrency == Some(0) {
            return Err(Error::usage("--concurrency must be at least 1"));
        }
        Ok(ConvertConfig {
            sources: input.sources.clone(),
            filter: KeyFilter::new(&input.include, &input.exclude)?,
            format: input.format.as_deref().map(parse).transpose()?,
            compression: input.compression.as_deref().map(parse).transpose()?,
            delimiter: input.delimiter.as_deref().map(delimiter).transpose()?,
            mapping,
            csv: None,
            schema_out: None,
            dialect: Dialect::default(),
            skip: false,
            rejects: None,
            max_errors: None,
            dedupe: false,
            report: None,
            domain: None,
            threads: 1,
            concurrency: input.concurrency.unwrap_or(8),
            storage_options: storage_options(&input.storage_options)?,
            retries: input.retries,
            retry_timeout: std::time::Duration::from_secs(input.retry_timeout),
            part_bytes: 8 << 20,
            chunk_bytes: 1 << 20,
            dry_run: false,
            progress: false,
            quiet: false,
        })
    }
}

/// A resolved `inspect`.
#[derive(Debug, Clone)]
pub struct InspectConfig {
    /// How to read the sources (its mapping holds only the dataset).
    pub read: ConvertConfig,
    pub sample: Option<u64>,
    pub json: bool,
    pub suggest: bool,
}

impl InspectConfig {
    pub fn from_args(args: &InspectArgs) -> Result<Self> {
        if args.input.sources.is_empty() {
            return Err(Error::usage("no SOURCE given"));
        }
        let dataset = parse::<Dataset>(args.dataset.as_deref().unwrap_or("interactions"))?;
        let mut read = ConvertConfig::reading(&args.input, MappingSpec::new(dataset))?;
        read.mapping.timestamp_unit = args
            .input
            .timestamp_unit
            .as_deref()
            .map(parse::<TimeUnit>)
            .transpose()?;
        Ok(InspectConfig {
            read,
            sample: args.sample,
            json: args.json,
            suggest: args.suggest,
        })
    }
}

impl SchemaConfig {
    pub fn from_args(args: &SchemaArgs) -> Result<Self> {
        let mut merged = args.mapping.clone();
        if let Some(path) = &args.mapping.config {
            file::FileConfig::load(path)?.merge_mapping(&mut merged);
        }
        let mapping = mapping_spec(&merged)?;
        mapping.check()?;
        Ok(SchemaConfig {
            mapping,
            output: args.output.as_deref().map(Target::parse).transpose()?,
            storage_options: storage_options(&args.storage_options)?,
        })
    }
}
