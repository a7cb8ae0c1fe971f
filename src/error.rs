//! The error type of the library, and `Origin`: where a row came from.
//!
//! Every failure names the place it happened (object, byte offset, field) so
//! that a user can open the file at that spot. Bad records are their own
//! variant (`Error::Record`) because skip-and-quarantine and validation work
//! record by record and need the reason as data, not only as text.

use std::fmt;
use std::path::PathBuf;

/// Where rows came from; passed along unchanged so any later error can name
/// the object and the byte offset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    /// The object as the user knows it: a path or a URL.
    pub key: String,
    /// Byte offset of the record's first byte in the (decompressed) stream.
    pub offset: u64,
    /// 0-based record number within the object.
    pub row: u64,
    /// Offsets count bytes of the decompressed stream.
    pub decompressed: bool,
    /// For Parquet: the row group, with `row` counted within it (and no
    /// byte offset).
    pub row_group: Option<usize>,
}

impl Origin {
    /// A record at byte `offset` of a JSON or CSV object's stream.
    pub(crate) fn in_stream(key: &str, offset: u64, row: u64, decompressed: bool) -> Self {
        Origin {
            key: key.to_string(),
            offset,
            row,
            decompressed,
            row_group: None,
        }
    }
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(group) = self.row_group {
            return write!(f, "{}: row group {group}, row {}", self.key, self.row);
        }
        write!(f, "{}: byte {}", self.key, self.offset)?;
        if self.decompressed {
            f.write_str(" of the decompressed stream")?;
        }
        Ok(())
    }
}

/// Why one record cannot be converted. Kept as data so that a later skip mode
/// can count rejects by reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadRecord {
    pub origin: Origin,
    /// The Personalize field (`TIMESTAMP`) or, for malformed JSON, the source
    /// key that was being read when the error was found.
    pub field: Option<String>,
    /// A stable short name of the reason (`not-a-timestamp`), for counting.
    pub kind: &'static str,
    pub reason: String,
}

impl fmt::Display for BadRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: ", self.origin)?;
        if let Some(field) = &self.field {
            write!(f, "{field}: ")?;
        }
        f.write_str(&self.reason)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// What the user typed cannot work; found before any data is read.
    #[error("{0}")]
    Usage(String),

    /// A record that breaks a value rule or is not valid JSON.
    #[error("{0}")]
    Record(Box<BadRecord>),

    /// More records were rejected than `--max-errors` allows.
    #[error("{0}")]
    TooManyRejects(String),

    /// A required Personalize field that no source field provides.
    #[error("{key}: {message}")]
    Mapping { key: String, message: String },

    /// Reading a source failed (I/O, corrupt compression).
    #[error("{key}: {what}")]
    Read {
        key: String,
        what: String,
        #[source]
        source: std::io::Error,
    },

    /// Writing an output failed.
    #[error("{}: {what}", path.display())]
    Write {
        path: PathBuf,
        what: &'static str,
        #[source]
        source: std::io::Error,
    },

    /// An object-store request failed (after its retries).
    #[error("{url}: {what}")]
    Store {
        url: String,
        what: String,
        #[source]
        source: object_store::Error,
    },

    /// An object that cannot be decoded as a whole (not a readable Parquet
    /// file, a row group that fails to decode).
    #[error("{key}: {message}")]
    Decode { key: String, message: String },

    /// The `--state` of repeated runs cannot be used (held by another run,
    /// unreadable, for another dataset, a pending run that cannot be redone).
    #[error("{target}: {message}")]
    State { target: String, message: String },

    /// The process could not set up what a run needs (the I/O runtime).
    #[error("{what}")]
    Setup {
        what: &'static str,
        #[source]
        source: std::io::Error,
    },
}

impl Error {
    /// The process exit code for this error (SPEC section 9).
    pub fn exit_code(&self) -> i32 {
        match self {
            Error::Usage(_) => 2,
            _ => 1,
        }
    }

    pub(crate) fn usage(message: impl Into<String>) -> Self {
        Error::Usage(message.into())
    }

    pub(crate) fn record(
        origin: Origin,
        field: Option<String>,
        kind: &'static str,
        reason: impl Into<String>,
    ) -> Self {
        Error::Record(Box::new(BadRecord {
            origin,
            field,
            kind,
            reason: reason.into(),
        }))
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
