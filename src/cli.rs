//! What the user typed: the clap derive definitions, grouped by help
//! headings. Nothing here decides anything; `config` resolves it.

use clap::{Args, Parser, Subcommand};

const CONVERT_EXAMPLES: &str = "\
Examples:
  # Firehose output (concatenated JSON, no extensions) to one CSV and schema
  personalize-prep convert raw/useritem/ -o out/

  # From S3 to S3 (credentials as the AWS CLI finds them, e.g. AWS_PROFILE)
  personalize-prep convert s3://raw/useritem/2024/ -o s3://prep/interactions/

  # The AWS sample's column order, with explicit source names
  personalize-prep convert raw/ --map USER_ID=user.id --map ITEM_ID=sku \\
      --columns ITEM_ID,USER_ID,EVENT_TYPE,EVENT_VALUE,TIMESTAMP -o interactions.csv

  # From cron: only what is new since the last run, one folder per run
  # (s3://prep/interactions/<run-id>/part-00000.csv, an INCREMENTAL import)
  personalize-prep convert s3://raw/useritem/ -o s3://prep/ \\
      --state s3://prep/state/interactions.json --lock-timeout 2h

  # Items with metadata: a categorical list, a price, a description
  personalize-prep convert items.ndjson.gz --dataset items --map ITEM_ID=id \\
      --map GENRES=genres --map PRICE=price --type PRICE=float \\
      --map DESCRIPTION=text --textual DESCRIPTION -o items/
";

const INSPECT_EXAMPLES: &str = "\
Examples:
  # What is under a Firehose prefix, and how it maps to interactions
  personalize-prep inspect s3://raw/useritem/2024/01/

  # A ready config for items, from the first 10,000 records of each object
  personalize-prep inspect items/ --dataset items --sample 10000 --suggest > items.toml
";

const VALIDATE_EXAMPLES: &str = "\
Examples:
  # The CSV and schema of a conversion, as a CI gate (warnings fail too)
  personalize-prep validate out/interactions.csv --schema out/interactions.avsc --strict

  # A delta for an INCREMENTAL import: no dataset-wide minimums
  personalize-prep validate delta/*.csv --schema interactions.avsc --import-mode incremental
";

const SCHEMA_EXAMPLES: &str = "\
Examples:
  # The schema for interactions with an EVENT_TYPE column
  personalize-prep schema --dataset interactions --columns USER_ID,ITEM_ID,TIMESTAMP,EVENT_TYPE

  # Users with two metadata fields, written to a file
  personalize-prep schema --dataset users --map AGE=age --type AGE=int \\
      --map TIER=plan.tier -o users.avsc
";

/// Turn raw event, user and item data into the CSV files and Avro schema
/// that Amazon Personalize imports.
#[derive(Debug, Parser)]
#[command(name = "personalize-prep", version, propagate_version = true)]
#[command(about = "Turn raw event, user and item data into Amazon Personalize CSV + Avro schema")]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,

    /// Print debug messages on stderr (never secrets).
    #[arg(short, long, global = true)]
    pub verbose: bool,

    /// Print nothing on stderr but errors and warnings.
    #[arg(short, long, global = true)]
    pub quiet: bool,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Convert JSON sources into one Personalize CSV plus its Avro schema.
    #[command(after_long_help = CONVERT_EXAMPLES)]
    Convert(Box<ConvertArgs>),
    /// Report what the sources hold and how it maps, like a Glue crawler.
    #[command(after_long_help = INSPECT_EXAMPLES)]
    Inspect(Box<InspectArgs>),
    /// Check CSV files (and their schema) against Personalize's import rules.
    #[command(after_long_help = VALIDATE_EXAMPLES)]
    Validate(Box<ValidateArgs>),
    /// Print the Avro schema for a dataset and mapping, reading no data.
    #[command(after_long_help = SCHEMA_EXAMPLES)]
    Schema(Box<SchemaArgs>),
    /// Split a big run across machines: list once, resolve the mapping and
    /// cut the objects into N shards (then `convert --plan RUN --shard I`).
    #[command(after_long_help = PLAN_EXAMPLES)]
    #[command(mut_arg("output", |a| a.help(
        "The run folder (local or object storage) that gets plan.json, the \
         shards' parts and their completion markers"
    )))]
    Plan(Box<PlanArgs>),
    /// Finish a sharded run: check every shard, merge the inferred types,
    /// write the schema, and with -o assemble one CSV.
    Commit(Box<CommitArgs>),
    /// Write a PySpark driver that runs plan, the shards on executors and
    /// commit, with the personalize-prep binary doing all the I/O.
    SparkJob(Box<SparkJobArgs>),
}

const PLAN_EXAMPLES: &str = "\
Examples:
  # Eight shards of a Firehose prefix, run anywhere, then one CSV
  personalize-prep plan s3://raw/useritem/ -o s3://prep/run-1/ --shards 8
  personalize-prep convert --plan s3://prep/run-1/ --shard 0    # ... to 7
  personalize-prep commit s3://prep/run-1/ -o s3://prep/interactions.csv
";

/// `plan`: the options of `convert` (what to read, how to map it), -o the
/// run folder, and the number of shards.
#[derive(Debug, Clone, Args)]
pub struct PlanArgs {
    #[command(flatten)]
    pub convert: ConvertArgs,

    /// How many shards: contiguous key ranges of about equal bytes.
    #[arg(long, value_name = "N", required = true, help_heading = "Run")]
    pub shards: usize,
}

#[derive(Debug, Clone, Args)]
pub struct CommitArgs {
    /// The run folder given to plan.
    #[arg(value_name = "RUN")]
    pub run: String,

    /// Assemble one CSV here (a FILE.csv, or a folder that gets
    /// <dataset>.csv; the schema beside it), byte-identical to a
    /// single-machine convert. Without it the parts are the output (a
    /// folder import) and the schema goes into RUN.
    #[arg(short, long, value_name = "DEST")]
    pub output: Option<String>,

    /// Pass an object_store option to every store (repeatable).
    #[arg(long = "storage-option", value_name = "KEY=VALUE")]
    pub storage_options: Vec<String>,
}

#[derive(Debug, Clone, Args)]
pub struct SparkJobArgs {
    /// Bake this run folder into the driver: it converts and commits an
    /// existing plan instead of running plan itself.
    #[arg(long, value_name = "RUN")]
    pub plan: Option<String>,

    /// Write the driver to FILE instead of stdout.
    #[arg(short, long, value_name = "FILE")]
    pub output: Option<String>,
}

#[derive(Debug, Clone, Args)]
pub struct ConvertArgs {
    #[command(flatten)]
    pub input: InputArgs,

    #[command(flatten)]
    pub mapping: MappingArgs,

    /// Where the CSV goes: a FILE.csv (schema beside it as FILE.avsc), a
    /// folder or prefix (gets <dataset>.csv and <dataset>.avsc), or - for
    /// stdout. Local paths and object-store URLs alike.
    #[arg(
        short,
        long,
        value_name = "DEST",
        help_heading = "Output",
        required_unless_present_any = ["dry_run", "config", "plan"]
    )]
    pub output: Option<String>,

    /// Write the Avro schema here instead of beside the CSV.
    #[arg(long, value_name = "FILE", help_heading = "Output")]
    pub schema_out: Option<String>,

    /// Quote escaping: personalize (backslash, as Personalize documents; the
    /// default) or rfc4180 (doubled quotes, for other consumers).
    #[arg(long, value_name = "DIALECT", value_parser = ["personalize", "rfc4180"], help_heading = "Output")]
    pub csv_dialect: Option<String>,

    /// Decoding threads (default: every core).
    #[arg(long, value_name = "N", help_heading = "Run")]
    pub threads: Option<usize>,

    /// Bytes per part of a multipart upload (for tests; at least 5 MiB on S3).
    #[arg(long, value_name = "BYTES", hide = true)]
    pub part_bytes: Option<usize>,

    /// Bytes of input per decoding chunk (for tests of chunk boundaries).
    #[arg(long, value_name = "BYTES", hide = true)]
    pub chunk_bytes: Option<usize>,

    /// What a bad record does: fail (the default) stops the run, nothing
    /// written; skip sets it aside, counted by reason, and goes on.
    #[arg(long, value_name = "WHAT", value_parser = ["fail", "skip"], help_heading = "Run")]
    pub on_error: Option<String>,

    /// With skip: write each bad record (where, why, its text) as NDJSON
    /// to FILE.
    #[arg(long, value_name = "FILE", help_heading = "Run")]
    pub rejects: Option<String>,

    /// With skip: fail after more than N bad records, or more than P% of
    /// the records read (judged from 1000 records on, and at the end).
    #[arg(long, value_name = "N|P%", help_heading = "Run")]
    pub max_errors: Option<String>,

    /// Write a JSON report of the run (counts, users, items, time range,
    /// findings) to FILE, or - for stdout.
    #[arg(long, value_name = "FILE|-", help_heading = "Output")]
    pub report: Option<String>,

    /// Write identical rows once (Firehose delivers at least once); for
    /// users, items and actions keep the last row per id.
    #[arg(long, help_heading = "Run")]
    pub dedupe: bool,

    /// Check the output against a domain dataset group's rules too:
    /// ecommerce or video-on-demand.
    #[arg(long, value_name = "DOMAIN", value_parser = ["ecommerce", "video-on-demand"], help_heading = "Mapping")]
    pub domain: Option<String>,

    /// Exit 3 when the output check finds warnings too (for CI gates).
    #[arg(long, help_heading = "Run")]
    pub strict: bool,

    /// List the objects and the resolved mapping; write nothing.
    #[arg(long, help_heading = "Run")]
    pub dry_run: bool,

    /// Keep a manifest of converted objects in FILE or URL: each run converts
    /// only new objects, into its own folder DEST/<dataset>/<run-id>/ (one
    /// INCREMENTAL import), and redoes a run a crash left pending first.
    #[arg(long, value_name = "FILE|URL", help_heading = "Repeated runs")]
    pub state: Option<String>,

    /// Take over a lock on --state older than this (e.g. 30m, 2h, 1d).
    #[arg(
        long,
        value_name = "DURATION",
        requires = "state",
        help_heading = "Repeated runs"
    )]
    pub lock_timeout: Option<String>,

    /// Remove the lock on --state, whoever holds it, then run.
    #[arg(long, requires = "state", help_heading = "Repeated runs")]
    pub break_lock: bool,

    /// With --state: cut a delta into run folders of at most SIZE each
    /// (default 1GB, Personalize's INCREMENTAL import limit).
    #[arg(
        long,
        value_name = "SIZE",
        requires = "state",
        help_heading = "Repeated runs"
    )]
    pub max_import_size: Option<String>,

    /// Split the CSV into parts of at most SIZE, each with the header
    /// (KB MB GB are powers of ten, KiB MiB GiB of two).
    #[arg(long, value_name = "SIZE", help_heading = "Output")]
    pub max_file_size: Option<String>,

    /// Convert one shard of a plan (see the plan command) into
    /// RUN/parts/part-NNNNN.csv with its completion marker; the sources,
    /// mapping and output come from the plan, and flags that would change
    /// them are refused.
    #[arg(long, value_name = "RUN", requires = "shard", help_heading = "Shards",
        conflicts_with_all = [
            "sources", "include", "exclude", "since", "until", "format", "delimiter",
            "compression", "timestamp_unit", "config", "dataset", "maps", "columns", "textual",
            "categorical", "not_categorical", "types", "output", "schema_out", "csv_dialect",
            "on_error", "rejects", "max_errors", "report", "dedupe", "domain", "strict",
            "dry_run", "state", "max_file_size",
        ])]
    pub plan: Option<String>,

    /// The shard to convert, 0-based.
    #[arg(long, value_name = "I", requires = "plan", help_heading = "Shards")]
    pub shard: Option<usize>,

    /// Progress bar on stderr: auto shows it when stderr is a terminal.
    #[arg(long, value_name = "WHEN", default_value = "auto", value_parser = ["auto", "always", "never"], help_heading = "Run")]
    pub progress: String,
}

/// Where the data is and how to read it (convert and inspect).
#[derive(Debug, Clone, Args)]
pub struct InputArgs {
    /// Files, folders or object-store prefixes (s3://, gs://, az://,
    /// abfs[s]://, file://) to convert, read recursively in key order.
    /// Hidden files, _SUCCESS, _temporary/, *.crc and empty files are
    /// skipped.
    #[arg(value_name = "SOURCE", help_heading = "Input")]
    pub sources: Vec<String>,

    /// Only convert objects whose key under SOURCE matches GLOB
    /// (repeatable; `*` also matches `/`).
    #[arg(long, value_name = "GLOB", help_heading = "Input")]
    pub include: Vec<String>,

    /// Skip objects whose key under SOURCE matches GLOB (repeatable).
    #[arg(long, value_name = "GLOB", help_heading = "Input")]
    pub exclude: Vec<String>,

    /// Only objects from this time on (inclusive): RFC 3339 or YYYY/MM/DD/HH,
    /// matched against the Firehose hour partition in the key
    /// (.../YYYY/MM/DD/HH/...), else the object's modification time.
    #[arg(long, value_name = "TIME", help_heading = "Input")]
    pub since: Option<String>,

    /// Only objects before this time (exclusive); as --since.
    #[arg(long, value_name = "TIME", help_heading = "Input")]
    pub until: Option<String>,

    /// Objects fetched from object storage at once (default 8).
    #[arg(long, value_name = "N", help_heading = "Input")]
    pub concurrency: Option<usize>,

    /// Pass an object_store option to every store, e.g. aws_region=eu-west-1
    /// or azure_storage_account_name=acct (repeatable).
    #[arg(
        long = "storage-option",
        value_name = "KEY=VALUE",
        help_heading = "Input"
    )]
    pub storage_options: Vec<String>,

    /// Retries of a failed object-store request (throttling, 5xx, dropped
    /// connections), with exponential backoff.
    #[arg(long, value_name = "N", default_value_t = 10, help_heading = "Input")]
    pub retries: usize,

    /// Give up retrying a request after this many seconds.
    #[arg(
        long,
        value_name = "SECS",
        default_value_t = 180,
        help_heading = "Input"
    )]
    pub retry_timeout: u64,

    /// Read every object as this format instead of detecting it.
    #[arg(long, value_name = "FORMAT", value_parser = ["json", "parquet", "csv"], help_heading = "Input")]
    pub format: Option<String>,

    /// Field delimiter of CSV sources (default: detected from the header
    /// line among , tab | ;). `\t` or `tab` for a tab.
    #[arg(long, value_name = "C", help_heading = "Input")]
    pub delimiter: Option<String>,

    /// Read every object with this compression instead of detecting it.
    #[arg(long, value_name = "C", value_parser = ["none", "gzip", "zstd"], help_heading = "Input")]
    pub compression: Option<String>,

    /// Unit of numeric timestamps (default: by magnitude, per value); `iso`
    /// accepts ISO 8601 strings only.
    #[arg(long, value_name = "UNIT", value_parser = ["s", "ms", "us", "ns", "iso"], help_heading = "Input")]
    pub timestamp_unit: Option<String>,
}

#[derive(Debug, Clone, Args)]
pub struct InspectArgs {
    #[command(flatten)]
    pub input: InputArgs,

    /// The Personalize dataset type whose reserved fields are matched:
    /// interactions (the default), users, items, actions or
    /// action-interactions.
    #[arg(short, long, value_name = "DATASET", value_parser = ["interactions", "users", "items", "actions", "action-interactions"], help_heading = "Mapping")]
    pub dataset: Option<String>,

    /// Stop after N records per object (default: scan every record).
    #[arg(long, value_name = "N", help_heading = "Run")]
    pub sample: Option<u64>,

    /// Print the report as JSON, for machines.
    #[arg(long, help_heading = "Output", conflicts_with = "suggest")]
    pub json: bool,

    /// Print a complete TOML config that `convert --config` accepts.
    #[arg(long, help_heading = "Output")]
    pub suggest: bool,
}

#[derive(Debug, Clone, Args)]
pub struct ValidateArgs {
    /// CSV files to check (one import: a file or the files of a folder).
    #[arg(value_name = "CSV", required = true, help_heading = "Input")]
    pub files: Vec<String>,

    /// The Avro schema the files are imported with; it is checked too.
    #[arg(long, value_name = "FILE", help_heading = "Input")]
    pub schema: Option<String>,

    /// The dataset type (default: from the schema's record name, else
    /// interactions).
    #[arg(short, long, value_name = "DATASET", value_parser = ["interactions", "users", "items", "actions", "action-interactions"], help_heading = "Input")]
    pub dataset: Option<String>,

    /// Check a domain dataset group's rules too: ecommerce or
    /// video-on-demand.
    #[arg(long, value_name = "DOMAIN", value_parser = ["ecommerce", "video-on-demand"], help_heading = "Input")]
    pub domain: Option<String>,

    /// full (the default) or incremental: an incremental import skips the
    /// dataset-wide minimums and has a 1 GB limit.
    #[arg(long, value_name = "MODE", value_parser = ["full", "incremental"], default_value = "full", help_heading = "Run")]
    pub import_mode: String,

    /// Count warnings as errors (exit 3), for CI gates.
    #[arg(long, help_heading = "Run")]
    pub strict: bool,
}

#[derive(Debug, Clone, Args)]
pub struct SchemaArgs {
    #[command(flatten)]
    pub mapping: MappingArgs,

    /// Write the schema to FILE (a path or an object-store URL) instead of
    /// stdout.
    #[arg(short, long, value_name = "FILE", help_heading = "Output")]
    pub output: Option<String>,

    /// Pass an object_store option to the store of FILE (repeatable).
    #[arg(
        long = "storage-option",
        value_name = "KEY=VALUE",
        help_heading = "Output"
    )]
    pub storage_options: Vec<String>,
}

/// Which source values fill which Personalize fields.
#[derive(Debug, Clone, Args)]
pub struct MappingArgs {
    /// Read settings from a TOML file (see the README); flags win over it.
    #[arg(long, value_name = "FILE", help_heading = "Mapping")]
    pub config: Option<String>,

    /// The Personalize dataset type: interactions (the default), users,
    /// items, actions or action-interactions.
    #[arg(short, long, value_name = "DATASET", value_parser = ["interactions", "users", "items", "actions", "action-interactions"], help_heading = "Mapping")]
    pub dataset: Option<String>,

    /// Fill FIELD from the source PATH (repeatable); PATH is a key or a
    /// dotted path into nested objects. A FIELD that is not reserved becomes
    /// a metadata field. Unmapped reserved fields are matched by name.
    #[arg(
        short,
        long = "map",
        value_name = "FIELD=PATH",
        help_heading = "Mapping"
    )]
    pub maps: Vec<String>,

    /// The output columns, in this order (comma-separated).
    #[arg(
        long,
        value_name = "A,B,C",
        value_delimiter = ',',
        help_heading = "Mapping"
    )]
    pub columns: Option<Vec<String>>,

    /// Mark a mapped items field as textual (free text; items only).
    #[arg(long, value_name = "NAME", help_heading = "Mapping")]
    pub textual: Vec<String>,

    /// Mark a mapped string field as categorical (the default for strings).
    #[arg(long, value_name = "NAME", help_heading = "Mapping")]
    pub categorical: Vec<String>,

    /// Keep a mapped string field plain (Personalize will not train on it).
    #[arg(long, value_name = "NAME", help_heading = "Mapping")]
    pub not_categorical: Vec<String>,

    /// Fix a metadata field's type: int, long, float, double or string
    /// (default: inferred over all records).
    #[arg(long = "type", value_name = "NAME=TYPE", help_heading = "Mapping")]
    pub types: Vec<String>,
}
