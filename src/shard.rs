//! Beyond one machine (SPEC section 12): `plan` lists the sources once,
//! resolves the mapping and cuts the objects into N contiguous shards;
//! `convert --plan RUN --shard I` converts one shard into
//! `RUN/parts/part-IIIII.csv` with a completion marker; `commit` checks the
//! shards against the plan, merges the inferred types, writes the schema
//! and, asked to, assembles one CSV.
//!
//! Every shard converts with the settings the plan wrote down (the
//! resolved mapping as explicit `--map`/`--columns` flags, so no shard
//! resolves names on its own first record), through the same pipeline as
//! a single-machine run. A shard's rows are therefore exactly that run's
//! rows for those objects, and the assembled CSV is byte-identical to it.

use std::io::{BufRead, BufReader, Read};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use clap::Parser;
use serde::{Deserialize, Serialize};

use crate::cli::{Cli, Command, CommitArgs, ConvertArgs, PlanArgs};
use crate::config::{self, ConvertConfig, CsvDest, Target};
use crate::error::{Error, Result};
use crate::mapping::value::format_utc;
use crate::mapping::{self, Mapping};
use crate::pipeline::{self, Io, Layout, Summary};
use crate::source::Object;

const PLAN_FORMAT: &str = "personalize-prep plan 1";
const MARKER_FORMAT: &str = "personalize-prep shard 1";

/// `RUN/plan.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Plan {
    pub format: String,
    /// Unique per plan: a marker of another plan is stale.
    pub id: String,
    pub created: String,
    pub dataset: String,
    pub sources: Vec<String>,
    /// The flags every shard converts with (after `convert`, before its
    /// SOURCEs), the resolved mapping spelled out.
    pub convert_args: Vec<String>,
    pub objects: Vec<Planned>,
    pub shards: Vec<ShardRange>,
}

/// An object of the plan: how errors name it, and where it is (an absolute
/// path or a URL, so shards can run from any folder).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Planned {
    pub name: String,
    pub at: String,
    pub size: u64,
}

/// Objects `first..end` of the plan.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct ShardRange {
    pub first: usize,
    pub end: usize,
    pub bytes: u64,
}

/// `RUN/done/part-IIIII.json`: a shard's part is complete.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Marker {
    pub format: String,
    pub plan: String,
    pub shard: usize,
    pub objects: usize,
    pub bytes_read: u64,
    pub records: u64,
    pub rows: u64,
    pub rejected: u64,
    pub part_bytes: u64,
    pub part_crc32: u32,
    /// The value kinds seen per column (the types it inferred).
    pub seen: Vec<u8>,
    pub finished: String,
}

fn part_name(i: usize) -> String {
    format!("parts/part-{i:05}.csv")
}

fn marker_name(i: usize) -> String {
    format!("done/part-{i:05}.json")
}

fn run_error(run: &Target, message: impl Into<String>) -> Error {
    Error::State {
        target: run.to_string(),
        message: message.into(),
    }
}

/// Cuts objects of these sizes into `n` contiguous ranges of about equal
/// bytes: shard k ends where the running total first reaches k+1 n-ths.
fn cut(sizes: &[u64], n: usize) -> Vec<ShardRange> {
    let total: u64 = sizes.iter().sum();
    let mut ranges = Vec::with_capacity(n);
    let (mut first, mut sum, mut start_sum) = (0, 0u64, 0u64);
    for k in 0..n {
        let goal = (total as u128 * (k as u128 + 1) / n as u128) as u64;
        let mut end = first;
        while end < sizes.len() && (sum < goal || k + 1 == n) {
            sum += sizes[end];
            end += 1;
        }
        ranges.push(ShardRange {
            first,
            end,
            bytes: sum - start_sum,
        });
        first = end;
        start_sum = sum;
    }
    ranges
}

/// The flags a shard converts with: the resolved mapping spelled out, and
/// every setting that shapes the rows.
fn convert_args(args: &ConvertArgs, mapping: &Mapping) -> Vec<String> {
    let mut v: Vec<String> = vec!["--dataset".into(), mapping.dataset.cli_name().into()];
    for f in &mapping.fields {
        if let Some(path) = &f.path {
            v.extend(["--map".into(), format!("{}={path}", f.name)]);
        }
    }
    let names: Vec<&str> = mapping.fields.iter().map(|f| f.name.as_str()).collect();
    v.extend(["--columns".into(), names.join(",")]);
    let m = &args.mapping;
    for (flag, values) in [
        ("--textual", &m.textual),
        ("--categorical", &m.categorical),
        ("--not-categorical", &m.not_categorical),
        ("--type", &m.types),
    ] {
        for value in values {
            v.extend([flag.to_string(), value.clone()]);
        }
    }
    let i = &args.input;
    for (flag, value) in [
        ("--format", &i.format),
        ("--compression", &i.compression),
        ("--delimiter", &i.delimiter),
        ("--timestamp-unit", &i.timestamp_unit),
        ("--csv-dialect", &args.csv_dialect),
        ("--on-error", &args.on_error),
        ("--max-errors", &args.max_errors),
    ] {
        if let Some(value) = value {
            v.extend([flag.to_string(), value.clone()]);
        }
    }
    v
}

/// The configuration a shard (or the commit) converts with: the plan's
/// flags, writing to `output`.
fn shard_config(plan: &Plan, output: &str, quiet: bool) -> Result<ConvertConfig> {
    let mut argv: Vec<String> = vec!["personalize-prep".into(), "convert".into()];
    argv.extend(plan.sources.iter().cloned());
    argv.extend(["-o".into(), output.into()]);
    argv.extend(plan.convert_args.iter().cloned());
    let cli = Cli::try_parse_from(&argv)
        .map_err(|e| Error::usage(format!("the plan's convert_args do not parse: {e}")))?;
    let Command::Convert(args) = cli.command else {
        unreachable!("parsed as convert")
    };
    ConvertConfig::from_args(&args, quiet)
}

fn load_plan(io: &Io, run: &Target) -> Result<Plan> {
    let target = run.join("plan.json");
    let bytes = io.read_small(&target)?.ok_or_else(|| {
        run_error(
            run,
            "no plan.json: make the run folder with `personalize-prep plan`",
        )
    })?;
    let plan: Plan = serde_json::from_slice(&bytes)
        .map_err(|e| run_error(run, format!("plan.json is not a plan: {e}")))?;
    if plan.format != PLAN_FORMAT {
        return Err(run_error(
            run,
            format!(
                "plan.json has format {:?}; this version reads {PLAN_FORMAT:?}",
                plan.format
            ),
        ));
    }
    Ok(plan)
}

fn now_secs() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// How many shards the plan in `run` has.
pub fn shard_count(run: &str) -> Result<usize> {
    let io = Io::new(&[])?;
    Ok(load_plan(&io, &Target::parse(run)?)?.shards.len())
}

/// `plan`: lists once, resolves the mapping, writes RUN/plan.json.
pub fn plan(args: &PlanArgs, quiet: bool) -> Result<String> {
    let conv = config::merged_args(&args.convert)?;
    if args.shards == 0 {
        return Err(Error::usage("--shards must be at least 1"));
    }
    for (given, flag) in [
        (conv.state.is_some(), "--state"),
        (conv.dedupe, "--dedupe"),
        (conv.plan.is_some(), "--plan"),
        (conv.rejects.is_some(), "--rejects"),
        (conv.report.is_some(), "--report"),
        (conv.max_file_size.is_some(), "--max-file-size"),
        (conv.dry_run, "--dry-run"),
    ] {
        if given {
            return Err(Error::usage(format!(
                "{flag} is not available with shards (plan)"
            )));
        }
    }
    let run_text = conv
        .output
        .clone()
        .ok_or_else(|| Error::usage("plan needs -o RUN, the run folder"))?;
    let run = Target::parse(&run_text)?;
    let cfg = ConvertConfig::from_args(&conv, quiet)?;
    let io = Io::with_retries(&cfg.storage_options, cfg.retries, cfg.retry_timeout)?;
    // Parts of an earlier plan would be committed with this one's.
    if io.size(&run.join("plan.json"))?.is_some() {
        return Err(Error::usage(format!(
            "{run} already holds a plan: plan into a new run folder (or remove this one)"
        )));
    }
    let mut objects = io.list_all(&cfg)?;
    let run_prefix = format!("{}/", run.to_string().trim_end_matches('/'));
    objects
        .retain(|o| crate::source::in_window(o, &cfg.window) && !o.name.starts_with(&run_prefix));
    let mapping = pipeline::resolve_on(&cfg, &io, &objects)?;
    let planned = objects
        .iter()
        .map(|o| {
            let at = match &o.location {
                crate::source::Location::Local(path) => std::fs::canonicalize(path)
                    .map_err(|source| Error::Read {
                        key: o.name.clone(),
                        what: "cannot resolve the path".into(),
                        source,
                    })?
                    .display()
                    .to_string(),
                crate::source::Location::Remote { .. } => o.name.clone(),
            };
            Ok(Planned {
                name: o.name.clone(),
                at,
                size: o.size,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    let sizes: Vec<u64> = planned.iter().map(|p| p.size).collect();
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let plan = Plan {
        format: PLAN_FORMAT.to_string(),
        id: format!(
            "{}-{}-{:09}",
            format_utc(now.as_secs() as i64).replace(['-', ':'], ""),
            std::process::id(),
            now.subsec_nanos()
        ),
        created: format_utc(now.as_secs() as i64),
        dataset: mapping.dataset.cli_name().to_string(),
        sources: cfg.sources.clone(),
        convert_args: convert_args(&conv, &mapping),
        objects: planned,
        shards: cut(&sizes, args.shards),
    };
    let mut text = serde_json::to_string_pretty(&plan).expect("a plan serialises");
    text.push('\n');
    io.write_small(&run.join("plan.json"), text.as_bytes())?;
    let mut out = format!(
        "planned {} objects ({} bytes) in {} shards: {}\n",
        plan.objects.len(),
        sizes.iter().sum::<u64>(),
        plan.shards.len(),
        run.join("plan.json")
    );
    for (i, s) in plan.shards.iter().enumerate() {
        out.push_str(&format!(
            "  shard {i}: objects {}..{} ({} bytes)\n",
            s.first, s.end, s.bytes
        ));
    }
    Ok(out)
}

/// `convert --plan RUN --shard I`.
pub fn convert_shard(args: &ConvertArgs, quiet: bool) -> Result<(Summary, String)> {
    let (run_text, shard) = (
        args.plan.as_deref().expect("a shard run"),
        args.shard.expect("clap requires --shard with --plan"),
    );
    let run = Target::parse(run_text)?;
    let storage = config::storage_options(&args.input.storage_options)?;
    let io = Io::new(&storage)?;
    let plan = load_plan(&io, &run)?;
    let Some(range) = plan.shards.get(shard).copied() else {
        return Err(Error::usage(format!(
            "--shard {shard}: the plan has {} shards (0 to {})",
            plan.shards.len(),
            plan.shards.len().saturating_sub(1)
        )));
    };
    let part = run.join(&part_name(shard));
    let mut cfg = shard_config(&plan, &part.to_string(), quiet)?;
    cfg.schema_out = None;
    cfg.storage_options = storage;
    if let Some(threads) = args.threads {
        cfg.threads = threads.max(1);
    }
    if let Some(n) = args.input.concurrency {
        cfg.concurrency = n.max(1);
    }
    if let Some(bytes) = args.chunk_bytes {
        cfg.chunk_bytes = bytes.max(1);
    }
    cfg.progress = !quiet && args.progress == "always";
    cfg.checksum = true;
    let objects = plan.objects[range.first..range.end]
        .iter()
        .map(|p| io.object_at(&p.name, &Target::parse(&p.at)?, p.size))
        .collect::<Result<Vec<Object>>>()?;
    let summary = pipeline::convert_objects(&cfg, &io, &objects, Layout::One(CsvDest::File(part)))?;
    let written = &summary.parts[0];
    let marker = Marker {
        format: MARKER_FORMAT.to_string(),
        plan: plan.id.clone(),
        shard,
        objects: objects.len(),
        bytes_read: summary.bytes,
        records: summary.records,
        rows: summary.rows,
        rejected: summary.rejected.values().sum(),
        part_bytes: written.bytes,
        part_crc32: written.crc32,
        seen: summary.seen.clone(),
        finished: format_utc(now_secs()),
    };
    let mut text = serde_json::to_string_pretty(&marker).expect("a marker serialises");
    text.push('\n');
    let marker_target = run.join(&marker_name(shard));
    io.write_small(&marker_target, text.as_bytes())?;
    Ok((
        summary,
        format!(
            "shard {shard} of {} complete: {marker_target}\n",
            plan.shards.len()
        ),
    ))
}

/// `commit RUN [-o DEST]`.
pub fn commit(args: &CommitArgs, quiet: bool) -> Result<String> {
    let started = Instant::now();
    let run = Target::parse(&args.run)?;
    let io = Io::new(&config::storage_options(&args.storage_options)?)?;
    let plan = load_plan(&io, &run)?;
    let mut missing = Vec::new();
    let mut markers = Vec::with_capacity(plan.shards.len());
    for (i, range) in plan.shards.iter().enumerate() {
        let Some(bytes) = io.read_small(&run.join(&marker_name(i)))? else {
            missing.push(i.to_string());
            continue;
        };
        let marker: Marker = serde_json::from_slice(&bytes)
            .map_err(|e| run_error(&run, format!("{}: not a marker: {e}", marker_name(i))))?;
        let rerun = format!(
            "rerun `personalize-prep convert --plan {} --shard {i}`",
            args.run
        );
        if marker.plan != plan.id {
            return Err(run_error(
                &run,
                format!(
                    "shard {i} is stale: its marker was made for plan {}, this plan is {}; {rerun}",
                    marker.plan, plan.id
                ),
            ));
        }
        if marker.shard != i
            || marker.objects != range.end - range.first
            || marker.bytes_read != range.bytes
        {
            return Err(run_error(
                &run,
                format!(
                    "shard {i} does not agree with the plan: its marker says shard {}, {} objects, \
                     {} bytes; the plan says {} objects, {} bytes; {rerun}",
                    marker.shard,
                    marker.objects,
                    marker.bytes_read,
                    range.end - range.first,
                    range.bytes
                ),
            ));
        }
        let part = run.join(&part_name(i));
        match io.size(&part)? {
            Some(size) if size == marker.part_bytes => {}
            found => {
                return Err(run_error(
                    &run,
                    format!(
                        "{}: {}, but its marker says {} bytes; {rerun}",
                        part_name(i),
                        found.map_or("missing".to_string(), |s| format!("{s} bytes")),
                        marker.part_bytes
                    ),
                ));
            }
        }
        markers.push(marker);
    }
    if !missing.is_empty() {
        let which = match missing.len() {
            1 => format!("shard {} is", missing[0]),
            _ => format!("shards {} are", missing.join(", ")),
        };
        return Err(run_error(
            &run,
            format!(
                "{which} not complete (no marker in done/) of {} shards: run \
                 `personalize-prep convert --plan {} --shard I` for each",
                plan.shards.len(),
                args.run
            ),
        ));
    }
    let output = args.output.clone();
    let cfg = shard_config(&plan, output.as_deref().unwrap_or(&run.to_string()), quiet)?;
    let mapping = mapping::resolve(&cfg.mapping, None).map_err(Error::Usage)?;
    let mut seen = vec![0u8; mapping.fields.len()];
    for m in &markers {
        if m.seen.len() != seen.len() {
            return Err(run_error(
                &run,
                format!(
                    "shard {}'s marker has {} columns, the plan {}",
                    m.shard,
                    m.seen.len(),
                    seen.len()
                ),
            ));
        }
        for (s, c) in seen.iter_mut().zip(&m.seen) {
            *s |= c;
        }
    }
    let schema = mapping.schema(&seen);
    let header = format!("{}\n", schema.header());
    let schema_json = schema.to_json();
    let mut outputs = Vec::new();
    match (&output, &cfg.csv) {
        (Some(_), Some(dest)) => {
            assemble(&io, &run, &markers, dest, &header)?;
            outputs.push(match dest {
                CsvDest::File(t) => t.to_string(),
                CsvDest::Stdout => "<stdout>".to_string(),
            });
            if let Some(target) = &cfg.schema_out {
                io.write_small(target, schema_json.as_bytes())?;
                outputs.push(target.to_string());
            }
        }
        _ => {
            let target = run.join(&format!("{}.avsc", plan.dataset));
            io.write_small(&target, schema_json.as_bytes())?;
            outputs.push(format!("{}/ (parts)", run.join("parts")));
            outputs.push(target.to_string());
        }
    }
    let rows: u64 = markers.iter().map(|m| m.rows).sum();
    let records: u64 = markers.iter().map(|m| m.records).sum();
    let bytes: u64 = markers.iter().map(|m| m.bytes_read).sum();
    Ok(format!(
        "committed {} shards: {} objects ({bytes} bytes), {records} records read, {rows} rows \
         written in {:.2} s\n  outputs: {}\n",
        markers.len(),
        plan.objects.len(),
        started.elapsed().as_secs_f64(),
        outputs.join(", ")
    ))
}

/// Streams the parts, each without its header, after one header into
/// `dest`; each part is checked against its marker's size and CRC as it
/// goes, and the output lands only if all of them agree.
fn assemble(io: &Io, run: &Target, markers: &[Marker], dest: &CsvDest, header: &str) -> Result<()> {
    let parts = markers
        .iter()
        .map(|m| {
            let target = run.join(&part_name(m.shard));
            io.object_at(&target.to_string(), &target, m.part_bytes)
        })
        .collect::<Result<Vec<Object>>>()?;
    let mut out = io.csv_out(dest, 8 << 20, false)?;
    out.write_all(header.as_bytes())?;
    let mut streams = io.reader(&parts);
    let mut buf = vec![0u8; 1 << 20];
    for (i, (m, part)) in markers.iter().zip(&parts).enumerate() {
        let read_err = |source| Error::Read {
            key: part.name.clone(),
            what: "cannot read".into(),
            source,
        };
        let mut reader = BufReader::with_capacity(1 << 20, streams.open(i)?);
        let mut first = Vec::new();
        reader.read_until(b'\n', &mut first).map_err(read_err)?;
        if first != header.as_bytes() {
            return Err(run_error(
                run,
                format!(
                    "{}: its header is not the plan's ({:?}); rerun shard {}",
                    part_name(m.shard),
                    String::from_utf8_lossy(&first).trim_end(),
                    m.shard
                ),
            ));
        }
        let mut crc = flate2::Crc::new();
        crc.update(&first);
        let mut size = first.len() as u64;
        loop {
            let n = reader.read(&mut buf).map_err(read_err)?;
            if n == 0 {
                break;
            }
            crc.update(&buf[..n]);
            size += n as u64;
            out.write_all(&buf[..n])?;
        }
        if size != m.part_bytes || crc.sum() != m.part_crc32 {
            return Err(run_error(
                run,
                format!(
                    "{}: {size} bytes with CRC-32 {:08x}, its marker says {} bytes, {:08x}: rerun \
                     shard {}",
                    part_name(m.shard),
                    crc.sum(),
                    m.part_bytes,
                    m.part_crc32,
                    m.shard
                ),
            ));
        }
    }
    out.commit()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cuts_contiguous_ranges_of_about_equal_bytes() {
        let ranges = |sizes: &[u64], n| -> Vec<(usize, usize)> {
            cut(sizes, n).iter().map(|r| (r.first, r.end)).collect()
        };
        assert_eq!(ranges(&[10; 8], 4), [(0, 2), (2, 4), (4, 6), (6, 8)]);
        assert_eq!(ranges(&[100, 1, 1, 1, 1], 2), [(0, 1), (1, 5)]);
        // More shards than objects: the rest are empty, none is lost.
        assert_eq!(ranges(&[5, 5], 3), [(0, 1), (1, 2), (2, 2)]);
        assert_eq!(ranges(&[], 2), [(0, 0), (0, 0)]);
        let r = cut(&[3, 4, 5, 6, 7], 2);
        assert_eq!(r.iter().map(|r| r.bytes).sum::<u64>(), 25);
    }
}
