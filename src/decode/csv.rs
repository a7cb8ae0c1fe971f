//! CSV and TSV sources: a header row, RFC 4180 quoting (quotes doubled
//! inside quoted fields, which may span lines), CRLF or LF line ends, the
//! delimiter detected from the header line (`,` `\t` `|` `;`) unless given.
//!
//! Like JSON, a stream is cut into chunks at record boundaries (a line end
//! outside quotes) so chunks decode in parallel; the header is read once per
//! object and travels with each chunk.

use std::sync::Arc;

/// The header of one CSV object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Header {
    pub names: Vec<String>,
    pub delimiter: u8,
}

impl Header {
    /// The column of each path, `None` where the header has no such name.
    pub fn columns(&self, paths: &[String]) -> Vec<Option<usize>> {
        paths
            .iter()
            .map(|p| self.names.iter().position(|n| n == p))
            .collect()
    }
}

/// The delimiter of a header line: the most frequent of `,` `\t` `|` `;`
/// outside quotes (`,` on a tie or when none occurs).
pub(crate) fn detect_delimiter(line: &[u8]) -> u8 {
    let mut counts = [0usize; 4];
    let candidates = [b',', b'\t', b'|', b';'];
    let mut quoted = false;
    for &b in line {
        match b {
            b'"' => quoted = !quoted,
            b'\n' if !quoted => break,
            _ if !quoted => {
                if let Some(i) = candidates.iter().position(|&c| c == b) {
                    counts[i] += 1;
                }
            }
            _ => {}
        }
    }
    let mut best = 0;
    for i in 1..4 {
        if counts[i] > counts[best] {
            best = i;
        }
    }
    candidates[best]
}

/// Reads the header record at the start of `buf`: the header and the bytes
/// it takes (line end included). `None` when the header is not complete.
pub(crate) fn read_header(
    buf: &[u8],
    delimiter: Option<u8>,
    complete: bool,
) -> Result<Option<(Arc<Header>, usize)>, String> {
    let delimiter = delimiter.unwrap_or_else(|| detect_delimiter(buf));
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(false)
        .delimiter(delimiter)
        .flexible(true)
        .from_reader(buf);
    let mut record = csv::ByteRecord::new();
    match reader.read_byte_record(&mut record) {
        Ok(true) => {}
        Ok(false) => return Ok(None),
        Err(e) => return Err(format!("the header row is not valid CSV: {e}")),
    }
    let mut end = reader.position().byte() as usize;
    // The reader stops after the CR of a CRLF; the LF belongs to the header.
    if end > 0 && buf[end - 1] == b'\r' && buf.get(end) == Some(&b'\n') {
        end += 1;
    }
    // A header that reaches the end of the buffer may go on in the next.
    if end >= buf.len() && !complete {
        return Ok(None);
    }
    let mut names = Vec::with_capacity(record.len());
    for field in record.iter() {
        let name = std::str::from_utf8(field)
            .map_err(|_| "the header row is not valid UTF-8".to_string())?;
        names.push(name.to_string());
    }
    Ok(Some((Arc::new(Header { names, delimiter }), end)))
}

/// Finds record boundaries in a CSV stream: a line end outside quotes.
#[derive(Debug, Clone, Default)]
pub(crate) struct Splitter {
    quoted: bool,
}

impl Splitter {
    /// Scans `bytes`, which continue the stream, and returns the offset just
    /// after the last line end outside quotes.
    pub fn scan(&mut self, bytes: &[u8]) -> Option<usize> {
        let mut cut = None;
        let mut i = 0;
        while let Some(off) = memchr::memchr2(b'"', b'\n', &bytes[i..]) {
            i += off;
            if bytes[i] == b'"' {
                self.quoted = !self.quoted;
            } else if !self.quoted {
                cut = Some(i + 1);
            }
            i += 1;
        }
        cut
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detects_the_delimiter_of_the_header() {
        assert_eq!(detect_delimiter(b"a,b,c\n1;2"), b',');
        assert_eq!(detect_delimiter(b"a\tb\tc,d\n"), b'\t');
        assert_eq!(detect_delimiter(b"\"a;b\"|c|d\n"), b'|');
        assert_eq!(detect_delimiter(b"a;b"), b';');
        assert_eq!(detect_delimiter(b"single"), b',');
    }

    #[test]
    fn reads_a_quoted_header() {
        let (h, end) = read_header(b"\"USER,ID\",item\r\n1,2\r\n", None, false)
            .unwrap()
            .unwrap();
        assert_eq!(h.names, ["USER,ID", "item"]);
        assert_eq!(end, 16);
        assert_eq!(read_header(b"a,b", None, false).unwrap(), None);
        assert!(read_header(b"a,b", None, true).unwrap().is_some());
    }

    #[test]
    fn splits_outside_quotes_only() {
        let mut s = Splitter::default();
        assert_eq!(s.scan(b"a,\"x\ny\"\nb,c\n\"open\n"), Some(12));
        assert_eq!(s.scan(b"still\"\n"), Some(7));
        assert_eq!(s.scan(b"no end"), None);
    }
}
