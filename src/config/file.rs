//! The TOML config file (`--config FILE`): every `convert` setting for a
//! cron job, merged under the flags (a flag always wins).
//!
//! Fields are an array of tables, so their order in the file is the column
//! order:
//!
//! ```toml
//! dataset = "items"
//! sources = ["s3://raw/items/"]
//! output = "s3://prep/items/"
//!
//! [[field]]
//! name = "ITEM_ID"
//! path = "sku"
//!
//! [[field]]
//! name = "GENRES"
//! path = "genres"
//! ```

use std::collections::BTreeMap;

use serde::Deserialize;

use crate::cli::{ConvertArgs, MappingArgs};
use crate::error::{Error, Result};
use crate::schema::Dataset;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FileConfig {
    dataset: Option<String>,
    sources: Option<Vec<String>>,
    include: Option<Vec<String>>,
    exclude: Option<Vec<String>>,
    format: Option<String>,
    compression: Option<String>,
    delimiter: Option<String>,
    timestamp_unit: Option<String>,
    output: Option<String>,
    schema_out: Option<String>,
    csv_dialect: Option<String>,
    threads: Option<usize>,
    concurrency: Option<usize>,
    storage_options: Option<BTreeMap<String, String>>,
    #[serde(default)]
    field: Vec<FieldConfig>,
}

/// One output column.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FieldConfig {
    name: String,
    /// The source path; a reserved field without one is matched by name.
    path: Option<String>,
    #[serde(rename = "type")]
    ty: Option<String>,
    categorical: Option<bool>,
    textual: Option<bool>,
}

impl FileConfig {
    /// Reads and parses `path`; errors name the file and the line.
    pub fn load(path: &str) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| Error::usage(format!("--config {path}: {e}")))?;
        Self::parse(path, &text)
    }

    fn parse(path: &str, text: &str) -> Result<Self> {
        toml::from_str(text).map_err(|e| {
            let line = e
                .span()
                .map(|span| text[..span.start.min(text.len())].matches('\n').count() + 1);
            let message = e.message().trim_end().replace('\n', " ");
            match line {
                Some(line) => Error::usage(format!("{path}: line {line}: {message}")),
                None => Error::usage(format!("{path}: {message}")),
            }
        })
    }

    /// Fills what the mapping flags left unset.
    pub fn merge_mapping(self, args: &mut MappingArgs) {
        if args.dataset.is_none() {
            args.dataset = self.dataset;
        }
        if self.field.is_empty() {
            return;
        }
        let flagged = |list: &[String], name: &str| list.iter().any(|n| n == name);
        let mapped: Vec<String> = args
            .maps
            .iter()
            .filter_map(|m| m.split_once('=').map(|(f, _)| f.to_string()))
            .collect();
        let mut columns = Vec::new();
        let mut maps = Vec::new();
        for f in &self.field {
            columns.push(f.name.clone());
            if let Some(path) = &f.path
                && !mapped.contains(&f.name)
            {
                maps.push(format!("{}={path}", f.name));
            }
            if let Some(ty) = &f.ty
                && !args
                    .types
                    .iter()
                    .any(|t| t.starts_with(&format!("{}=", f.name)))
            {
                args.types.push(format!("{}={ty}", f.name));
            }
            let chosen = flagged(&args.categorical, &f.name)
                || flagged(&args.not_categorical, &f.name)
                || flagged(&args.textual, &f.name);
            if !chosen {
                match (f.textual, f.categorical) {
                    (Some(true), _) => args.textual.push(f.name.clone()),
                    (_, Some(true)) => args.categorical.push(f.name.clone()),
                    (_, Some(false)) => args.not_categorical.push(f.name.clone()),
                    _ => {}
                }
            }
        }
        // The file's fields come first, in its order; flags add after them.
        for m in &mapped {
            if !columns.contains(m) {
                columns.push(m.clone());
            }
        }
        // Required fields the file leaves out lead, matched by name.
        let dataset = args.dataset.as_deref().unwrap_or("interactions");
        if let Ok(dataset) = dataset.parse::<Dataset>() {
            let listed = |name: &str| {
                columns
                    .iter()
                    .any(|c| dataset.reserved_named(c).is_some_and(|r| r.name == name))
            };
            let missing: Vec<String> = dataset
                .reserved()
                .iter()
                .filter(|r| r.required && !listed(r.name))
                .map(|r| r.name.to_string())
                .collect();
            columns.splice(0..0, missing);
        }
        maps.append(&mut args.maps);
        args.maps = maps;
        if args.columns.is_none() {
            args.columns = Some(columns);
        }
    }

    /// Fills what the `convert` flags left unset.
    pub fn merge_convert(mut self, args: &mut ConvertArgs) {
        fn fill<T>(flag: &mut Option<T>, file: Option<T>) {
            if flag.is_none() {
                *flag = file;
            }
        }
        fn fill_list(flag: &mut Vec<String>, file: Option<Vec<String>>) {
            if flag.is_empty() {
                *flag = file.unwrap_or_default();
            }
        }
        fill_list(&mut args.input.sources, self.sources.take());
        fill_list(&mut args.input.include, self.include.take());
        fill_list(&mut args.input.exclude, self.exclude.take());
        fill(&mut args.input.format, self.format.take());
        fill(&mut args.input.compression, self.compression.take());
        fill(&mut args.input.delimiter, self.delimiter.take());
        fill(&mut args.input.timestamp_unit, self.timestamp_unit.take());
        fill(&mut args.output, self.output.take());
        fill(&mut args.schema_out, self.schema_out.take());
        fill(&mut args.csv_dialect, self.csv_dialect.take());
        fill(&mut args.threads, self.threads.take());
        fill(&mut args.input.concurrency, self.concurrency.take());
        let flagged: Vec<String> = args
            .input
            .storage_options
            .iter()
            .filter_map(|o| o.split_once('=').map(|(k, _)| k.to_string()))
            .collect();
        for (k, v) in self.storage_options.take().unwrap_or_default() {
            if !flagged.contains(&k) {
                args.input.storage_options.push(format!("{k}={v}"));
            }
        }
        self.merge_mapping(&mut args.mapping);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_name_the_line() {
        let e = FileConfig::parse("c.toml", "dataset = \"items\"\n\nthreds = 2\n").unwrap_err();
        assert_eq!(
            e.to_string(),
            "c.toml: line 3: unknown field `threds`, expected one of `dataset`, `sources`, \
             `include`, `exclude`, `format`, `compression`, `delimiter`, `timestamp_unit`, \
             `output`, `schema_out`, `csv_dialect`, `threads`, `concurrency`, \
             `storage_options`, `field`"
        );
        let e = FileConfig::parse("c.toml", "threads = \"two\"\n").unwrap_err();
        assert_eq!(
            e.to_string(),
            "c.toml: line 1: invalid type: string \"two\", expected usize"
        );
        let e = FileConfig::parse("c.toml", "[[field]]\nname = \"A\"\npth = \"a\"\n").unwrap_err();
        assert!(
            e.to_string()
                .starts_with("c.toml: line 3: unknown field `pth`"),
            "{e}"
        );
    }
}
