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
/// outside quotes (`,` on a tie or when none occurs). Blank lines before
/// it are passed over, as the header's reader passes them.
pub(crate) fn detect_delimiter(line: &[u8]) -> u8 {
    let blanks = line
        .iter()
        .take_while(|&&b| matches!(b, b'\r' | b'\n'))
        .count();
    let line = &line[blanks..];
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

/// Reads the header record at the start of `buf` (a chunk, which ends at a
/// record boundary): the header and the bytes it takes, line end included.
/// `None` when there is no record at all.
pub(crate) fn read_header(
    buf: &[u8],
    delimiter: u8,
) -> Result<Option<(Arc<Header>, usize)>, String> {
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
    let mut names = Vec::with_capacity(record.len());
    for field in record.iter() {
        let name = std::str::from_utf8(field)
            .map_err(|_| "the header row is not valid UTF-8".to_string())?;
        names.push(name.to_string());
    }
    Ok(Some((Arc::new(Header { names, delimiter }), end)))
}

/// The records of a CSV chunk (after the header) as the `csv` crate reads
/// them, each with its span: flexible field counts, RFC 4180 quotes, CR,
/// LF or CRLF line ends, blank lines skipped into the next record's span.
/// A record with none of the bytes `SPECIAL` marks (most) is split at its
/// delimiters here from bit masks of the chunk, its fields slices of it;
/// any other goes through `csv_core`, the `csv` crate's parser. Through
/// `csv_core` alone, parsing every record was a third of a CSV run's CPU;
/// found by `memchr`, line ends and delimiters took a fifth. A UTF-8 BOM is
/// not taken off a chunk's start (the stream's is, before chunks are cut).
pub(crate) struct Records<'a> {
    buf: &'a [u8],
    masks: Vec<[u64; 3]>,
    /// Where the next record's span starts: where the last one's ended.
    pos: usize,
    /// The first special byte at or after where it was last looked for
    /// (`usize::MAX` for none): they may be megabytes apart.
    special: usize,
    core: csv_core::Reader,
    /// The fields `csv_core` wrote, and their ends.
    out: Vec<u8>,
    ends: Vec<usize>,
    /// The current record's fields: spans of `buf`, or of `out` when it
    /// went through `csv_core`.
    fields: Vec<(usize, usize)>,
    parsed: bool,
}

/// The masks' kinds: line ends, delimiters, and the bytes that send a
/// record to `csv_core` or that the output may have to quote or escape
/// (quotes, CRs, backslashes, and commas when they do not separate fields).
const LINE_END: usize = 0;
const DELIMITER: usize = 1;
const SPECIAL: usize = 2;

/// A word of each mask kind for every 64 bytes of `buf`.
fn masks(buf: &[u8], delimiter: u8) -> Vec<[u64; 3]> {
    let comma = delimiter != b',';
    let mut masks = Vec::with_capacity(buf.len().div_ceil(64));
    let mut blocks = buf.chunks_exact(64);
    for block in &mut blocks {
        masks.push(block_masks(block, delimiter, comma));
    }
    let rest = blocks.remainder();
    if !rest.is_empty() {
        masks.push(bytes_masks(rest, delimiter, comma));
    }
    masks
}

/// The masks of up to 64 bytes, a byte at a time.
fn bytes_masks(bytes: &[u8], delimiter: u8, comma: bool) -> [u64; 3] {
    let mut m = [0u64; 3];
    for (i, &b) in bytes.iter().enumerate() {
        m[LINE_END] |= u64::from(b == b'\n') << i;
        m[DELIMITER] |= u64::from(b == delimiter) << i;
        let special = matches!(b, b'"' | b'\r' | b'\\') || (comma && b == b',');
        m[SPECIAL] |= u64::from(special) << i;
    }
    m
}

/// The masks of 64 bytes, 16 at a time (SSE2, part of x86_64).
#[cfg(target_arch = "x86_64")]
#[inline(always)]
fn block_masks(block: &[u8], delimiter: u8, comma: bool) -> [u64; 3] {
    use std::arch::x86_64::*;
    assert_eq!(block.len(), 64);
    let mut m = [0u64; 3];
    // SAFETY: SSE2 is part of the x86_64 baseline; each load reads 16 of
    // the block's 64 bytes.
    unsafe {
        let splat = |b: u8| _mm_set1_epi8(b as i8);
        let (lf, dl, q, cr, bs, cm) = (
            splat(b'\n'),
            splat(delimiter),
            splat(b'"'),
            splat(b'\r'),
            splat(b'\\'),
            splat(b','),
        );
        for k in 0..4 {
            let v = _mm_loadu_si128(block.as_ptr().add(16 * k).cast::<__m128i>());
            let bits = |x: __m128i| u64::from(_mm_movemask_epi8(x) as u16) << (16 * k);
            m[LINE_END] |= bits(_mm_cmpeq_epi8(v, lf));
            m[DELIMITER] |= bits(_mm_cmpeq_epi8(v, dl));
            let mut special = _mm_or_si128(_mm_cmpeq_epi8(v, q), _mm_cmpeq_epi8(v, cr));
            special = _mm_or_si128(special, _mm_cmpeq_epi8(v, bs));
            if comma {
                special = _mm_or_si128(special, _mm_cmpeq_epi8(v, cm));
            }
            m[SPECIAL] |= bits(special);
        }
    }
    m
}

#[cfg(not(target_arch = "x86_64"))]
fn block_masks(block: &[u8], delimiter: u8, comma: bool) -> [u64; 3] {
    bytes_masks(block, delimiter, comma)
}

impl<'a> Records<'a> {
    pub fn new(buf: &'a [u8], delimiter: u8) -> Self {
        let mut core = csv_core::ReaderBuilder::new().delimiter(delimiter).build();
        // A blank line: nothing, but the reader's first read, after which
        // it no longer takes a BOM off what it reads.
        let _ = core.read_record(b"\n", &mut [], &mut []);
        let mut records = Records {
            buf,
            masks: masks(buf, delimiter),
            pos: 0,
            special: usize::MAX,
            core,
            out: vec![0; 256],
            ends: vec![0; 16],
            fields: Vec::new(),
            parsed: false,
        };
        records.special = records.next(SPECIAL, 0).unwrap_or(usize::MAX);
        records
    }

    /// The first byte of kind `kind` at or after `from`.
    #[inline(always)]
    fn next(&self, kind: usize, from: usize) -> Option<usize> {
        let mut w = from / 64;
        let mut word = self.masks.get(w)?[kind] & (u64::MAX << (from % 64));
        while word == 0 {
            w += 1;
            word = self.masks.get(w)?[kind];
        }
        Some(w * 64 + word.trailing_zeros() as usize)
    }

    /// The next record's span in the chunk (blank lines before it
    /// included, its line end too); `None` at the end.
    pub fn next_span(&mut self) -> Option<(usize, usize)> {
        let (buf, start) = (self.buf, self.pos);
        let Some(first) = buf[start..].iter().position(|&b| b != b'\n') else {
            self.pos = buf.len();
            return None;
        };
        let first = start + first;
        let end = self.next(LINE_END, first).unwrap_or(buf.len());
        if self.special < first {
            self.special = self.next(SPECIAL, first).unwrap_or(usize::MAX);
        }
        if self.special < end {
            return self.parse(start);
        }
        self.fields.clear();
        let mut from = first;
        while let Some(at) = self.next(DELIMITER, from).filter(|&at| at < end) {
            self.fields.push((from, at));
            from = at + 1;
        }
        self.fields.push((from, end));
        self.parsed = false;
        self.pos = (end + 1).min(buf.len());
        Some((start, self.pos))
    }

    /// The next record through `csv_core`, from `start`.
    fn parse(&mut self, start: usize) -> Option<(usize, usize)> {
        use csv_core::ReadRecordResult::*;
        let (mut at, mut written, mut fields) = (start, 0, 0);
        loop {
            // At the end of the chunk, an empty input: the end of input.
            let (res, read, wrote, ended) = self.core.read_record(
                &self.buf[at..],
                &mut self.out[written..],
                &mut self.ends[fields..],
            );
            (at, written, fields) = (at + read, written + wrote, fields + ended);
            match res {
                InputEmpty => {}
                OutputFull => self.out.resize(self.out.len() * 2, 0),
                OutputEndsFull => self.ends.resize(self.ends.len() * 2, 0),
                Record => break,
                End => {
                    self.pos = self.buf.len();
                    return None;
                }
            }
        }
        self.fields.clear();
        let mut from = 0;
        for &end in &self.ends[..fields] {
            self.fields.push((from, end));
            from = end;
        }
        self.parsed = true;
        self.pos = at;
        Some((start, at))
    }

    /// The current record's number of fields.
    pub fn len(&self) -> usize {
        self.fields.len()
    }

    /// Whether no field of the current record holds a special byte (see
    /// `SPECIAL`): nothing the output must quote or escape.
    pub fn plain(&self) -> bool {
        !self.parsed
    }

    /// The buffer the current record's fields are slices of.
    pub fn within(&self) -> &[u8] {
        if self.parsed { &self.out } else { self.buf }
    }

    /// Field `i` of the current record.
    pub fn field(&self, i: usize) -> &[u8] {
        let (from, to) = self.fields[i];
        &self.within()[from..to]
    }
}

/// Finds record boundaries in a CSV stream: a line end outside a quoted
/// field. A quote opens a quoted field only at the start of a field, and
/// `""` inside one is a quote, exactly as the CSV reader sees them, so a
/// stray quote (`5" tv`) never puts the two out of step.
#[derive(Debug, Clone)]
pub(crate) struct Splitter {
    delimiter: u8,
    state: QuoteState,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum QuoteState {
    FieldStart,
    Unquoted,
    Quoted,
    /// A quote inside a quoted field: the end of it, or the first of `""`.
    QuoteInQuoted,
}

impl Splitter {
    pub fn new(delimiter: u8) -> Self {
        Splitter {
            delimiter,
            state: QuoteState::FieldStart,
        }
    }

    /// Scans `bytes`, which continue the stream, and returns the offset just
    /// after the last line end outside a quoted field. The bytes between
    /// two quotes are skipped whole (`memchr`): outside a quoted field,
    /// the last line end among them is the cut so far, and the state after
    /// them follows from the last; inside one, nothing changes. Byte by
    /// byte this took a fifth of a CSV run's CPU, under the feeder's lock.
    pub fn scan(&mut self, bytes: &[u8]) -> Option<usize> {
        let mut cut = None;
        let mut at = 0;
        while at < bytes.len() {
            let quote = memchr::memchr(b'"', &bytes[at..]).map_or(bytes.len(), |q| at + q);
            let run = &bytes[at..quote];
            if let Some(&last) = run.last()
                && self.state != QuoteState::Quoted
            {
                if let Some(end) = memchr::memrchr(b'\n', run) {
                    cut = Some(at + end + 1);
                }
                self.state = if last == b'\n' || last == self.delimiter {
                    QuoteState::FieldStart
                } else {
                    QuoteState::Unquoted
                };
            }
            if quote == bytes.len() {
                break;
            }
            self.state = match self.state {
                QuoteState::FieldStart | QuoteState::QuoteInQuoted => QuoteState::Quoted,
                QuoteState::Unquoted => QuoteState::Unquoted,
                QuoteState::Quoted => QuoteState::QuoteInQuoted,
            };
            at = quote + 1;
        }
        cut
    }

    /// `scan` a byte at a time: what it must agree with.
    #[cfg(test)]
    fn scan_bytes(&mut self, bytes: &[u8]) -> Option<usize> {
        let mut cut = None;
        for (i, &b) in bytes.iter().enumerate() {
            self.state = match (self.state, b) {
                (QuoteState::Quoted, b'"') => QuoteState::QuoteInQuoted,
                (QuoteState::Quoted, _) => QuoteState::Quoted,
                (QuoteState::QuoteInQuoted, b'"') => QuoteState::Quoted,
                (QuoteState::FieldStart, b'"') => QuoteState::Quoted,
                (_, b'\n') => {
                    cut = Some(i + 1);
                    QuoteState::FieldStart
                }
                (_, b) if b == self.delimiter => QuoteState::FieldStart,
                _ => QuoteState::Unquoted,
            };
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
        assert_eq!(detect_delimiter(b"\r\n\na\tb\n"), b'\t');
    }

    #[test]
    fn reads_a_quoted_header() {
        let (h, end) = read_header(b"\"USER,ID\",item\r\n1,2\r\n", b',')
            .unwrap()
            .unwrap();
        assert_eq!(h.names, ["USER,ID", "item"]);
        assert_eq!(end, 16);
        assert_eq!(read_header(b"", b',').unwrap(), None);
        assert_eq!(
            read_header(b"a;b", b';').unwrap().unwrap().0.names,
            ["a", "b"]
        );
    }

    #[test]
    fn splits_outside_quotes_only() {
        let mut s = Splitter::new(b',');
        assert_eq!(s.scan(b"a,\"x\ny\"\nb,c\n\"open\n"), Some(12));
        assert_eq!(s.scan(b"still\"\n"), Some(7));
        assert_eq!(s.scan(b"no end"), None);
        // A quote inside an unquoted field is a character, and "" an
        // escaped quote, as the CSV reader has them.
        let mut s = Splitter::new(b',');
        assert_eq!(s.scan(b"u1,5\" tv\nu2,\"a\"\"b\nc\"\nu3\n"), Some(24));
    }

    /// Records split here or parsed by `csv_core` are the `csv` crate's,
    /// with the same spans, on random text of delimiters, quotes, CRs and
    /// line ends.
    #[test]
    fn records_are_the_csv_crates() {
        // Half the inputs rich in quotes, CRs and backslashes (mostly
        // parsed), half with few (mostly split here, across 64-byte blocks).
        let alphabets: [&[u8]; 2] = [b"ab,;\"\"\n\n\r x\\", b"abcdefgh,,;;\n   xyz\""];
        let mut next = crate::testing::below(0x9E37_79B9_7F4A_7C15);
        for round in 0..5000 {
            let delimiter = [b',', b';'][next(2)];
            let alphabet = alphabets[round % 2];
            let sparse = |b: u8, x: usize| {
                if b == b'"' && !x.is_multiple_of(8) {
                    b'q'
                } else {
                    b
                }
            };
            let input: Vec<u8> = (0..next(300))
                .map(|_| sparse(alphabet[next(alphabet.len())], next(64)))
                .collect();
            let mut want = Vec::new();
            let mut reader = csv::ReaderBuilder::new()
                .has_headers(false)
                .delimiter(delimiter)
                .flexible(true)
                .from_reader(input.as_slice());
            let mut record = csv::ByteRecord::new();
            loop {
                let before = reader.position().byte() as usize;
                if !reader.read_byte_record(&mut record).unwrap() {
                    break;
                }
                let fields: Vec<Vec<u8>> = record.iter().map(<[u8]>::to_vec).collect();
                want.push((before, reader.position().byte() as usize, fields));
            }
            let mut got = Vec::new();
            let mut records = Records::new(&input, delimiter);
            while let Some((start, end)) = records.next_span() {
                let fields = (0..records.len())
                    .map(|i| records.field(i).to_vec())
                    .collect();
                let special =
                    |&b: &u8| matches!(b, b'"' | b'\r' | b'\\') || (b == b',' && delimiter != b',');
                assert!(!records.plain() || !input[start..end].iter().any(special));
                got.push((start, end, fields));
            }
            assert_eq!(got, want, "{:?}", String::from_utf8_lossy(&input));
            if input.first().is_some_and(|b| b"abcdefghxyz ".contains(b)) {
                let mut records = Records::new(&input, delimiter);
                records.next_span();
                let first = &input[..want[0].1];
                assert_eq!(
                    records.plain(),
                    !first
                        .iter()
                        .any(|b| b"\"\r\\".contains(b) || (*b == b',' && delimiter != b',')),
                    "the first record: {first:?}"
                );
            }
        }
    }

    /// Skipping between quotes finds the cuts and states that reading a
    /// byte at a time finds, however the stream is split into scans.
    #[test]
    fn scans_runs_as_it_scans_bytes() {
        let alphabet = b"ab,;\"\"\n\r \"x";
        let mut next = crate::testing::below(0x2545_F491_4F6C_DD1D);
        for _ in 0..3000 {
            let delimiter = [b',', b';'][next(2)];
            let input: Vec<u8> = (0..next(80))
                .map(|_| alphabet[next(alphabet.len())])
                .collect();
            let (mut fast, mut slow) = (Splitter::new(delimiter), Splitter::new(delimiter));
            let mut from = 0;
            while from < input.len() {
                let to = from + 1 + next(input.len() - from);
                let part = &input[from..to];
                assert_eq!(
                    fast.scan(part),
                    slow.scan_bytes(part),
                    "{:?} from {from} to {to}",
                    String::from_utf8_lossy(&input)
                );
                assert_eq!(fast.state, slow.state);
                from = to;
            }
        }
    }
}
