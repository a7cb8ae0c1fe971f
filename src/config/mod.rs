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
    pub(crate) fn parse(text: &str) -> Result<Self> {
        Ok(match StoreUrl::parse(text)? {
            Some(url) => Target::Url(url),
            None => Target::Local(local_path(text)),
        })
    }

    /// A file named `name` inside this folder or prefix.
    pub(crate) fn join(&self, name: &str) -> Self {
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

    /// The same name with `suffix` before its extension:
    /// `out/interactions.csv` → `out/interactions-00001.csv`.
    pub(crate) fn with_suffix(&self, suffix: &str) -> Self {
        let insert = |name: &str| match name.rfind('.') {
            Some(dot) if !name[dot..].contains('/') => {
                format!("{}{suffix}{}", &name[..dot], &name[dot..])
            }
            _ => format!("{name}{suffix}"),
        };
        match self {
            Target::Local(path) => Target::Local(PathBuf::from(insert(&path.to_string_lossy()))),
            Target::Url(url) => {
                let mut url = url.clone();
                url.key = insert(&url.key);
                Target::Url(url)
            }
        }
    }

    /// The same name with `.ext` added: `state.json` → `state.json.lock`.
    pub(crate) fn with_extension_added(&self, ext: &str) -> Self {
        match self {
            Target::Local(path) => {
                let mut name = path.clone().into_os_string();
                name.push(format!(".{ext}"));
                Target::Local(PathBuf::from(name))
            }
            Target::Url(url) => {
                let mut url = url.clone();
                url.key = format!("{}.{ext}", url.key);
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
    /// `--strict`: warnings of the output check fail the run (exit 3).
    pub strict: bool,
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
    /// Compute the CRC-32 of a single output (a shard's marker records
    /// it); otherwise its part says 0.
    pub checksum: bool,
    pub dry_run: bool,
    pub progress: bool,
    pub quiet: bool,
    /// `--state`: repeated runs into delta folders.
    pub state: Option<StateConfig>,
    /// `--max-file-size`: the CSV in parts of at most this many bytes.
    pub max_file_size: Option<u64>,
    /// `--since` / `--until`, epoch seconds.
    pub window: Window,
}

/// `--state` and what goes with it (SPEC section 11).
#[derive(Debug, Clone)]
pub struct StateConfig {
    /// The manifest file or object.
    pub target: Target,
    /// The folder that gets one subfolder per run: DEST/<dataset>.
    pub runs: Target,
    pub lock_timeout: Option<std::time::Duration>,
    pub break_lock: bool,
    /// The largest run folder (one INCREMENTAL import).
    pub max_import_size: u64,
}

/// `--since` (inclusive) and `--until` (exclusive), epoch seconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Window {
    pub since: Option<i64>,
    pub until: Option<i64>,
}

impl Window {
    pub fn is_open(&self) -> bool {
        self.since.is_none() && self.until.is_none()
    }

    /// Whether `[from, to)` overlaps the window.
    pub fn overlaps(&self, from: i64, to: i64) -> bool {
        self.since.is_none_or(|s| to > s) && self.until.is_none_or(|u| from < u)
    }
}

/// A size: bytes, or with KB MB GB TB (powers of ten) or KiB MiB GiB TiB.
pub fn parse_size(text: &str) -> std::result::Result<u64, String> {
    let t = text.trim();
    let split = t
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(t.len());
    let (number, unit) = (&t[..split], t[split..].trim());
    let factor: u64 = match unit.to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "kb" => 1_000,
        "mb" => 1_000_000,
        "gb" => 1_000_000_000,
        "tb" => 1_000_000_000_000,
        "kib" => 1 << 10,
        "mib" => 1 << 20,
        "gib" => 1 << 30,
        "tib" => 1 << 40,
        _ => {
            return Err(format!(
                "{text}: expected a size such as 500MB, 1GB or 64MiB"
            ));
        }
    };
    let value: f64 = number
        .parse()
        .map_err(|_| format!("{text}: expected a size such as 500MB, 1GB or 64MiB"))?;
    let bytes = value * factor as f64;
    if !(1.0..1.8e19).contains(&bytes) {
        return Err(format!("{text}: a size must be at least one byte"));
    }
    Ok(bytes as u64)
}

/// A duration: seconds, or with s, m, h or d.
pub fn parse_duration(text: &str) -> std::result::Result<std::time::Duration, String> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let n: u64 = t[..split]
        .parse()
        .map_err(|_| format!("{text}: expected a duration such as 90s, 30m, 2h or 1d"))?;
    let factor = match &t[split..] {
        "" | "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => {
            return Err(format!(
                "{text}: expected a duration such as 90s, 30m, 2h or 1d"
            ));
        }
    };
    Ok(std::time::Duration::from_secs(n.saturating_mul(factor)))
}

/// A point in time, epoch seconds: RFC 3339 (no zone means UTC), or a
/// Firehose partition `YYYY/MM/DD/HH` (or `YYYY/MM/DD`), UTC.
pub fn parse_time(text: &str) -> std::result::Result<i64, String> {
    let bad = || format!("{text}: expected RFC 3339 (2024-01-10T20:00:00Z) or YYYY/MM/DD/HH");
    if text.contains('/') {
        let parts: Vec<&str> = text.trim_end_matches('/').split('/').collect();
        let digits = |s: &str, n: usize| s.len() == n && s.bytes().all(|b| b.is_ascii_digit());
        let ok = matches!(parts.len(), 3 | 4)
            && digits(parts[0], 4)
            && parts[1..].iter().all(|p| digits(p, 2));
        if !ok {
            return Err(bad());
        }
        let iso = format!(
            "{}-{}-{}T{}:00:00Z",
            parts[0],
            parts[1],
            parts[2],
            parts.get(3).unwrap_or(&"00")
        );
        return crate::mapping::value::parse_iso8601(&iso).ok_or_else(bad);
    }
    crate::mapping::value::parse_iso8601(text).ok_or_else(bad)
}

/// A resolved `schema`.
#[derive(Debug, Clone)]
pub struct SchemaConfig {
    pub mapping: MappingSpec,
    pub output: Option<Target>,
    pub storage_options: Vec<(String, String)>,
}

fn input_time(text: &Option<String>, flag: &str) -> Result<Option<i64>> {
    text.as_deref()
        .map(|t| parse_time(t).map_err(|e| Error::usage(format!("{flag} {e}"))))
        .transpose()
}

fn parse<T: std::str::FromStr<Err = String>>(value: &str) -> Result<T> {
    value.parse().map_err(Error::Usage)
}

fn delimiter(text: &str) -> Result<u8> {
    match text {
        "\\t" | "\t" | "tab" => Ok(b'\t'),
        // A quote or a line end cannot separate fields.
        _ if text.len() == 1 && text.is_ascii() && !matches!(text, "\"" | "\n" | "\r") => {
            Ok(text.as_bytes()[0])
        }
        _ => Err(Error::usage(format!(
            "--delimiter {text:?}: expected one ASCII character other than a quote or a line end (or tab)"
        ))),
    }
}

/// `--storage-option` pairs; a key no store knows is a usage error, found
/// before any data is read.
pub(crate) fn storage_options(pairs: &[String]) -> Result<Vec<(String, String)>> {
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

/// `args` with its `--config` file merged under the flags.
pub(crate) fn merged_args(args: &ConvertArgs) -> Result<ConvertArgs> {
    let mut merged = args.clone();
    if let Some(path) = &args.mapping.config {
        file::FileConfig::load(path)?.merge_convert(&mut merged);
    }
    Ok(merged)
}

impl ConvertConfig {
    pub fn from_args(args: &ConvertArgs, quiet: bool) -> Result<Self> {
        let merged = merged_args(args)?;
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
        let state = match &args.state {
            None => None,
            Some(state) => {
                let dest = match args.output.as_deref() {
                    Some(o) if o != "-" && !o.to_ascii_lowercase().ends_with(".csv") => {
                        Target::parse(o)?
                    }
                    _ => {
                        return Err(Error::usage(
                            "--state writes a folder per run: -o DEST must be a folder or prefix",
                        ));
                    }
                };
                Some(StateConfig {
                    target: Target::parse(state)?,
                    runs: dest.join(&dataset.to_string()),
                    lock_timeout: args
                        .lock_timeout
                        .as_deref()
                        .map(|t| {
                            parse_duration(t)
                                .map_err(|e| Error::usage(format!("--lock-timeout {e}")))
                        })
                        .transpose()?,
                    break_lock: args.break_lock,
                    max_import_size: match args.max_import_size.as_deref() {
                        None => 1_000_000_000,
                        Some(t) => parse_size(t)
                            .map_err(|e| Error::usage(format!("--max-import-size {e}")))?,
                    },
                })
            }
        };
        let max_file_size = args
            .max_file_size
            .as_deref()
            .map(|t| parse_size(t).map_err(|e| Error::usage(format!("--max-file-size {e}"))))
            .transpose()?;
        if max_file_size.is_some() && matches!(csv, Some(CsvDest::Stdout)) {
            return Err(Error::usage(
                "--max-file-size splits files: it cannot go with -o -",
            ));
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
            strict: args.strict,
            report,
            domain: args.domain.as_deref().map(parse).transpose()?,
            threads,
            part_bytes: args.part_bytes.unwrap_or(8 << 20).max(1),
            chunk_bytes: args.chunk_bytes.unwrap_or(1 << 20).max(1),
            checksum: false,
            dry_run: args.dry_run,
            progress,
            quiet,
            state,
            max_file_size,
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
            strict: false,
            report: None,
            domain: None,
            threads: 1,
            concurrency: input.concurrency.unwrap_or(8),
            storage_options: storage_options(&input.storage_options)?,
            retries: input.retries,
            retry_timeout: std::time::Duration::from_secs(input.retry_timeout),
            part_bytes: 8 << 20,
            chunk_bytes: 1 << 20,
            checksum: false,
            dry_run: false,
            progress: false,
            quiet: false,
            state: None,
            max_file_size: None,
            window: Window {
                since: input_time(&input.since, "--since")?,
                until: input_time(&input.until, "--until")?,
            },
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
