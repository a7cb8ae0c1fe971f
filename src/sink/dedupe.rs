//! `--dedupe`: identical rows written once (Firehose delivers at least
//! once), or, for users, items and actions, the last row per id.
//!
//! Rows arrive as CSV lines (a value never holds a raw line end), so a row
//! is deduplicated by a 128-bit fingerprint of its bytes, and an id by the
//! fingerprint of its encoded field: the same value always encodes to the
//! same bytes. Memory holds one fingerprint per distinct row or id, as
//! SPEC section 8 allows. Last-per-id needs the whole input seen first:
//! rows are spooled to a temporary file and streamed out at the end.

use std::collections::{HashMap, HashSet};
use std::hash::{Hash, Hasher};
use std::io::{self, BufRead, BufReader, BufWriter, Seek, Write};

use super::csv::Dialect;

/// A 128-bit fingerprint: two SipHashes with different first bytes.
fn fingerprint(bytes: &[u8]) -> u128 {
    let mut a = std::hash::DefaultHasher::new();
    bytes.hash(&mut a);
    let mut b = std::hash::DefaultHasher::new();
    0xA5u8.hash(&mut b);
    bytes.hash(&mut b);
    (u128::from(a.finish()) << 64) | u128::from(b.finish())
}

/// The bytes of field `index` of a CSV line in `dialect`, as encoded.
fn field(line: &[u8], index: usize, dialect: Dialect) -> &[u8] {
    let (mut start, mut n, mut quoted, mut escaped) = (0, 0, false, false);
    for (i, &b) in line.iter().enumerate() {
        if escaped {
            escaped = false;
        } else if quoted && b == b'\\' && dialect == Dialect::Personalize {
            escaped = true;
        } else if b == b'"' {
            quoted = !quoted;
        } else if b == b',' && !quoted {
            if n == index {
                return &line[start..i];
            }
            n += 1;
            start = i + 1;
        }
    }
    if n == index { &line[start..] } else { &[] }
}

pub(crate) enum Dedupe {
    /// Identical rows once.
    Rows { seen: HashSet<u128> },
    /// The last row per id (the field at `column`), rows spooled meanwhile.
    LastPerId {
        column: usize,
        dialect: Dialect,
        last: HashMap<u128, u64>,
        spool: BufWriter<std::fs::File>,
        rows: u64,
    },
}

impl Dedupe {
    pub fn rows() -> Self {
        Dedupe::Rows {
            seen: HashSet::new(),
        }
    }

    pub fn last_per_id(column: usize, dialect: Dialect) -> io::Result<Self> {
        Ok(Dedupe::LastPerId {
            column,
            dialect,
            last: HashMap::new(),
            spool: BufWriter::new(tempfile::tempfile()?),
            rows: 0,
        })
    }

    /// Takes a chunk's lines; returns the bytes to write now and how many
    /// duplicates were dropped.
    pub fn push(&mut self, lines: &[u8]) -> io::Result<(Vec<u8>, u64)> {
        match self {
            Dedupe::Rows { seen } => {
                let mut kept = Vec::with_capacity(lines.len());
                let mut dropped = 0;
                for line in lines.split_inclusive(|&b| b == b'\n') {
                    if seen.insert(fingerprint(line)) {
                        kept.extend_from_slice(line);
                    } else {
                        dropped += 1;
                    }
                }
                Ok((kept, dropped))
            }
            Dedupe::LastPerId {
                column,
                dialect,
                last,
                spool,
                rows,
            } => {
                for line in lines.split_inclusive(|&b| b == b'\n') {
                    let id = field(line.strip_suffix(b"\n").unwrap_or(line), *column, *dialect);
                    last.insert(fingerprint(id), *rows);
                    *rows += 1;
                }
                spool.write_all(lines)?;
                Ok((Vec::new(), 0))
            }
        }
    }

    /// At the end: the spooled rows that are the last of their id, written
    /// through `write`; returns how many were dropped.
    pub fn finish(
        self,
        mut write: impl FnMut(&[u8]) -> crate::error::Result<()>,
    ) -> crate::error::Result<u64> {
        let Dedupe::LastPerId {
            column,
            dialect,
            last,
            spool,
            ..
        } = self
        else {
            return Ok(0);
        };
        let spool_error = |source| crate::error::Error::Setup {
            what: "cannot read back the --dedupe spool file",
            source,
        };
        let mut file = spool
            .into_inner()
            .map_err(|e| spool_error(e.into_error()))?;
        file.rewind().map_err(spool_error)?;
        let mut reader = BufReader::with_capacity(1 << 20, file);
        let (mut row, mut dropped) = (0u64, 0u64);
        let mut line = Vec::new();
        loop {
            line.clear();
            if reader.read_until(b'\n', &mut line).map_err(spool_error)? == 0 {
                return Ok(dropped);
            }
            let id = field(line.strip_suffix(b"\n").unwrap_or(&line), column, dialect);
            if last.get(&fingerprint(id)) == Some(&row) {
                write(&line)?;
            } else {
                dropped += 1;
            }
            row += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_fields_in_both_dialects() {
        let p = Dialect::Personalize;
        assert_eq!(field(br#"a,"x,\"y\",z",c"#, 1, p), br#""x,\"y\",z""#);
        assert_eq!(field(br#"a,"x\\",c"#, 2, p), b"c");
        assert_eq!(field(br#"a,"x ""q"", y",c"#, 2, Dialect::Rfc4180), b"c");
        assert_eq!(field(b"a,b", 5, p), b"");
    }

    #[test]
    fn keeps_the_first_of_identical_rows_and_the_last_row_per_id() {
        let mut d = Dedupe::rows();
        let (kept, dropped) = d.push(b"a,1\nb,2\na,1\n").unwrap();
        assert_eq!((kept.as_slice(), dropped), (&b"a,1\nb,2\n"[..], 1));
        let (kept, dropped) = d.push(b"b,2\nc,3\n").unwrap();
        assert_eq!((kept.as_slice(), dropped), (&b"c,3\n"[..], 1));

        let mut d = Dedupe::last_per_id(0, Dialect::Personalize).unwrap();
        d.push(b"u1,old\nu2,x\n").unwrap();
        d.push(b"u1,new\n").unwrap();
        let mut out = Vec::new();
        let dropped = d
            .finish(|line| {
                out.extend_from_slice(line);
                Ok(())
            })
            .unwrap();
        assert_eq!((out.as_slice(), dropped), (&b"u2,x\nu1,new\n"[..], 1));
    }
}
