//! Bytes to records: compression and format detection, and cutting an
//! object's (decompressed) stream into chunks at record boundaries so that
//! chunks can be decoded in parallel while rows keep their object order.
//!
//! Detection follows SPEC section 2: a known extension decides; an object
//! without one (Firehose output has none) is recognised by its magic bytes,
//! and JSON by its first non-blank byte after an optional UTF-8 BOM.

pub(crate) mod csv;
pub(crate) mod json;
pub(crate) mod parquet;
pub(crate) mod structural;

use std::fmt;
use std::io::{self, Read};
use std::str::FromStr;

use bytes::Bytes;

use crate::source::FileRanges;
use json::Top;

/// Compression of a source object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    None,
    Gzip,
    Zstd,
}

impl Compression {
    pub fn name(self) -> &'static str {
        match self {
            Compression::None => "none",
            Compression::Gzip => "gzip",
            Compression::Zstd => "zstd",
        }
    }
}

impl FromStr for Compression {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "none" => Ok(Compression::None),
            "gzip" | "gz" => Ok(Compression::Gzip),
            "zstd" | "zst" => Ok(Compression::Zstd),
            _ => Err(format!(
                "unknown compression {s:?}; expected none, gzip or zstd"
            )),
        }
    }
}

/// Format of a source object's (decompressed) content.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Json,
    Parquet,
    Csv,
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Format::Json => "json",
            Format::Parquet => "parquet",
            Format::Csv => "csv",
        })
    }
}

impl FromStr for Format {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "json" => Ok(Format::Json),
            "parquet" => Ok(Format::Parquet),
            "csv" => Ok(Format::Csv),
            _ => Err(format!(
                "unknown format {s:?}; expected json, parquet or csv"
            )),
        }
    }
}

const BOM: &[u8] = b"\xEF\xBB\xBF";

/// The extension of the last path segment, lowercased.
fn extension(name: &str) -> Option<String> {
    let base = name.rsplit('/').next().unwrap_or(name);
    let (stem, ext) = base.rsplit_once('.')?;
    (!stem.is_empty()).then(|| ext.to_ascii_lowercase())
}

/// The name without a compression extension.
fn strip_compression(name: &str) -> &str {
    match extension(name).as_deref() {
        Some("gz" | "gzip" | "zst" | "zstd") => &name[..name.rfind('.').unwrap_or(name.len())],
        _ => name,
    }
}

/// Compression by extension, else by magic bytes in `head`.
pub(crate) fn detect_compression(name: &str, head: &[u8]) -> Compression {
    match extension(name).as_deref() {
        Some("gz" | "gzip") => Compression::Gzip,
        Some("zst" | "zstd") => Compression::Zstd,
        Some("json" | "jsonl" | "ndjson" | "parquet" | "csv" | "tsv") => Compression::None,
        _ if head.starts_with(&[0x1f, 0x8b]) => Compression::Gzip,
        _ if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) => Compression::Zstd,
        _ => Compression::None,
    }
}

/// Format by extension (after any compression extension), else by content.
pub(crate) fn detect_format(name: &str, head: &[u8]) -> Format {
    match extension(strip_compression(name)).as_deref() {
        Some("json" | "jsonl" | "ndjson") => return Format::Json,
        Some("parquet" | "parq") => return Format::Parquet,
        Some("csv" | "tsv") => return Format::Csv,
        _ => {}
    }
    if head.starts_with(b"PAR1") {
        return Format::Parquet;
    }
    let body = head.strip_prefix(BOM).unwrap_or(head);
    match body.iter().find(|b| !b.is_ascii_whitespace()) {
        Some(b'{' | b'[') => Format::Json,
        // Only blanks so far: nothing suggests CSV, and an empty JSON stream
        // converts to no records.
        None => Format::Json,
        Some(_) => Format::Csv,
    }
}

/// A stream the chunk reader reads, which may append to a buffer without
/// `read_to_end`'s zeroing: std fills a `Vec`'s spare room with zeros
/// before handing it to a reader's `read` (only files and std's own types
/// read into it as it is), and for a stream from object storage that
/// zeroing was 3% of the run's samples.
pub(crate) trait Source: Read + Send {
    /// Appends up to `limit` bytes to `buf`, fewer only at the end of the
    /// stream, and says how many.
    fn append(&mut self, buf: &mut Vec<u8>, limit: usize) -> io::Result<usize> {
        Read::take(&mut *self, limit as u64).read_to_end(buf)
    }

    /// The local file this stream is, from its start, for reads at an
    /// offset (`ChunkReader::ranged`).
    fn ranges(&self) -> Option<FileRanges> {
        None
    }

    /// Whether the stream comes in pieces that `piece` hands over without
    /// a copy (a body received from object storage).
    fn pieces(&self) -> bool {
        false
    }

    /// The stream's next piece as received, shared rather than copied;
    /// empty at the end of the stream. Only for a stream with `pieces`.
    fn piece(&mut self) -> io::Result<Bytes> {
        Err(io::Error::other("internal: this stream has no pieces"))
    }
}

impl Source for std::fs::File {}
impl Source for &[u8] {}
impl<T: AsRef<[u8]> + Send> Source for io::Cursor<T> {}
impl<R: Read + Send> Source for flate2::read::MultiGzDecoder<R> {}
impl<R: io::BufRead + Send> Source for zstd::stream::read::Decoder<'_, R> {}

impl<S: Source + ?Sized> Source for Box<S> {
    fn append(&mut self, buf: &mut Vec<u8>, limit: usize) -> io::Result<usize> {
        (**self).append(buf, limit)
    }

    fn ranges(&self) -> Option<FileRanges> {
        (**self).ranges()
    }

    fn pieces(&self) -> bool {
        (**self).pieces()
    }

    fn piece(&mut self) -> io::Result<Bytes> {
        (**self).piece()
    }
}

/// Bytes already read (a peek at the stream's start), then the rest.
impl<S: Source> Source for io::Chain<io::Cursor<Vec<u8>>, S> {
    fn append(&mut self, buf: &mut Vec<u8>, limit: usize) -> io::Result<usize> {
        let (head, rest) = self.get_mut();
        let at = usize::try_from(head.position()).unwrap_or(usize::MAX);
        let left = head.get_ref().get(at..).unwrap_or_default();
        let n = left.len().min(limit);
        buf.extend_from_slice(&left[..n]);
        head.set_position((at.min(head.get_ref().len()) + n) as u64);
        if n == limit {
            return Ok(n);
        }
        Ok(n + rest.append(buf, limit - n)?)
    }

    fn pieces(&self) -> bool {
        self.get_ref().1.pieces()
    }

    /// What is left of the head (copied: at most a peek), then the rest's.
    fn piece(&mut self) -> io::Result<Bytes> {
        let (head, rest) = self.get_mut();
        let at = usize::try_from(head.position()).unwrap_or(usize::MAX);
        match head.get_ref().get(at..) {
            Some(left) if !left.is_empty() => {
                let piece = Bytes::copy_from_slice(left);
                head.set_position(head.get_ref().len() as u64);
                Ok(piece)
            }
            _ => rest.piece(),
        }
    }
}

/// Opens the decompressed stream over `raw`.
pub(crate) fn decompress<'a>(
    raw: Box<dyn Source + 'a>,
    compression: Compression,
) -> io::Result<Box<dyn Source + 'a>> {
    Ok(match compression {
        Compression::None => raw,
        Compression::Gzip => Box::new(flate2::read::MultiGzDecoder::new(raw)),
        Compression::Zstd => Box::new(zstd::stream::read::Decoder::new(raw)?),
    })
}

/// A run of whole records from one object.
#[derive(Debug)]
pub(crate) struct Chunk {
    pub bytes: Vec<u8>,
    /// Offset of `bytes[0]` in the object's (decompressed) stream.
    pub base: u64,
    /// The top-level state where the chunk starts.
    pub top: Top,
    /// The chunk ends the object: an unfinished record in it is truncated.
    pub last: bool,
    /// The chunk ends at a guessed boundary (see `Boundaries::Guess`): an
    /// unfinished record at its end goes on in the next chunk.
    pub guessed: bool,
    /// The top-level state assumed where the chunk ends (the next chunk's
    /// `top`); a guessed chunk that ends in another state is read again
    /// with the next one.
    pub end_top: Top,
    /// Whether `bytes` is valid UTF-8, found by the reader while they are
    /// still in its cache; `None` when not checked. Whoever changes `bytes`
    /// sets it to `None`: `text` trusts it.
    pub utf8: Option<bool>,
    /// The bytes are still to be read (`ChunkReader::ranged`): `fill`
    /// reads them.
    pub deferred: Option<Deferred>,
    /// The chunk's records after `bytes`, in a piece of the stream as it
    /// was received (`ChunkReader::next_pieces`), not copied. When not
    /// empty, `bytes` ends at a guessed boundary between two objects.
    pub more: Bytes,
}

/// A chunk's bytes to be read: `len` of them, from the chunk's `base` on.
#[derive(Debug)]
pub(crate) struct Deferred {
    ranges: FileRanges,
    len: usize,
}

/// A ranged file ended before a length taken of it.
fn shrank() -> io::Error {
    io::Error::new(
        io::ErrorKind::UnexpectedEof,
        "the file shrank while it was read",
    )
}

impl Chunk {
    /// Reads the bytes of a deferred chunk (`ChunkReader::ranged`); their
    /// UTF-8 is checked when first needed, while they are in this core's
    /// cache.
    pub fn fill(&mut self) -> Result<(), ReadError> {
        let Some(Deferred { ranges, len }) = self.deferred.take() else {
            return Ok(());
        };
        let read = ranges.read_range(self.base, len, &mut self.bytes);
        self.utf8 = None;
        match read {
            Ok(n) if n == len => Ok(()),
            Ok(_) => Err(shrank()),
            Err(e) => Err(e),
        }
        .map_err(|error| ReadError {
            offset: self.base + self.bytes.len() as u64,
            error,
        })
    }

    /// Joins `more` to `bytes`, for whoever needs the chunk in one piece.
    pub fn flatten(&mut self) {
        if !self.more.is_empty() {
            self.bytes
                .extend_from_slice(&std::mem::take(&mut self.more));
            self.utf8 = None;
        }
    }

    /// The bytes as text when they are valid UTF-8, checked once (SIMD)
    /// for the whole chunk, by the reader when it could.
    pub fn text(&self) -> Option<&str> {
        match self.utf8 {
            // SAFETY: the reader found these bytes valid UTF-8, and a
            // change to them resets `utf8`.
            Some(true) => Some(unsafe { std::str::from_utf8_unchecked(&self.bytes) }),
            Some(false) => None,
            None => simdutf8::basic::from_utf8(&self.bytes).ok(),
        }
    }
}

/// A record may not grow past this: a stream that never closes its first
/// object must not take all memory.
pub(crate) const MAX_RECORD: usize = 128 << 20;

/// The error for a record past `MAX_RECORD`.
pub(crate) fn record_too_large() -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!(
            "a record is larger than {} MiB (are quotes or brackets unbalanced?)",
            MAX_RECORD >> 20
        ),
    )
}

/// How record boundaries are found in a stream.
pub(crate) enum Boundaries {
    /// Every byte tracked: exact, but one pass over the stream while the
    /// reading worker holds the feeder's lock.
    Json(json::Splitter),
    /// Objects back to back or one per line: cut after the last `}` that
    /// whitespace and a `{` follow, found from the end of the buffer. Such
    /// a cut is a boundary unless it sits inside a string (text holding
    /// `}{`); then the chunk ends inside a record, which its decoder
    /// reports, and the record is decoded again with the next chunk.
    Guess,
    Csv(csv::Splitter),
}

impl Boundaries {
    /// Boundaries of `format`; CSV needs its delimiter.
    pub fn for_format(format: Format, delimiter: u8) -> Self {
        match format {
            Format::Csv => Boundaries::Csv(csv::Splitter::new(delimiter)),
            _ => Boundaries::Json(json::Splitter::default()),
        }
    }

    /// The last boundary in `buf[from..]`, continuing from earlier calls.
    fn scan(&mut self, buf: &[u8], from: usize) -> Option<(usize, Top)> {
        match self {
            Boundaries::Json(s) => s.scan(&buf[from..]).map(|(cut, top)| (from + cut, top)),
            Boundaries::Guess => guess_cut(buf, from),
            Boundaries::Csv(s) => s.scan(&buf[from..]).map(|cut| (from + cut, Top::Between)),
        }
    }
}

/// Just after the last `}` in `buf` that whitespace and a `{` at or past
/// `from` follow.
/// Between two elements of a top-level array (`},{`) the cut goes before
/// the comma, and what follows starts after an element.
fn guess_cut(buf: &[u8], from: usize) -> Option<(usize, Top)> {
    let last_solid = |upto: usize| {
        buf[..upto]
            .iter()
            .rposition(|&b| !matches!(b, b' ' | b'\t' | b'\n' | b'\r'))
    };
    let mut end = buf.len();
    while let Some(open) = memchr::memrchr(b'{', &buf[from..end]).map(|i| from + i) {
        match last_solid(open).map(|i| (i, buf[i])) {
            Some((close, b'}')) => return Some((close + 1, Top::Between)),
            Some((comma, b',')) => {
                if let Some(close) = last_solid(comma).filter(|&i| buf[i] == b'}') {
                    return Some((close + 1, Top::ArrayAfterElement));
                }
            }
            _ => {}
        }
        end = open;
    }
    None
}

/// Just after the first `}` in `buf` that whitespace and a `{` follow.
fn first_cut(buf: &[u8]) -> Option<usize> {
    let mut from = 0;
    while let Some(close) = memchr::memchr(b'}', &buf[from..]).map(|i| from + i) {
        let after = close + 1;
        match buf[after..]
            .iter()
            .find(|&&b| !matches!(b, b' ' | b'\t' | b'\n' | b'\r'))
        {
            Some(b'{') => return Some(after),
            Some(_) => from = after,
            None => return None,
        }
    }
    None
}

/// Cuts a stream into chunks of about `target` bytes at record boundaries.
pub(crate) struct ChunkReader<R> {
    inner: R,
    target: usize,
    splitter: Boundaries,
    carry: Vec<u8>,
    /// Last record boundary found in `carry`, with the state there.
    cut: Option<(usize, Top)>,
    base: u64,
    top: Top,
    started: bool,
    done: bool,
    /// Guess JSON boundaries when the stream starts with an object.
    guess: bool,
    /// The stream's first byte was seen and the boundaries chosen.
    chosen: bool,
    /// The stream starts with an object (not an array).
    objects: bool,
    /// The stream is this local file (uncompressed), and its length as
    /// last taken: see `ranged`.
    ranged: Option<(FileRanges, u64)>,
    /// The end of a chunk read to find its cut (`next_range`).
    tail: Vec<u8>,
    /// The stream comes in pieces (`Source::pieces`): see `next_pieces`.
    pieces: bool,
}

/// A received piece at least this long (or a chunk's target, if shorter)
/// goes into a chunk uncopied (`next_pieces`); a shorter one is copied,
/// which costs less than the chunk it would take to carry it alone.
const PIECE: usize = 64 << 10;

/// How much of a ranged chunk's end is read to find its cut: a record
/// longer than this across the end has the whole chunk read instead.
const TAIL: u64 = 4096;

/// Reading failed at this offset of the stream.
#[derive(Debug)]
pub(crate) struct ReadError {
    pub offset: u64,
    pub error: io::Error,
}

impl<R: Source> ChunkReader<R> {
    pub fn new(inner: R, target: usize, boundaries: Boundaries) -> Self {
        ChunkReader {
            target: target.max(1),
            splitter: boundaries,
            carry: Vec::new(),
            cut: None,
            base: 0,
            top: Top::Between,
            started: false,
            done: false,
            guess: false,
            chosen: false,
            objects: false,
            ranged: None,
            tail: Vec::new(),
            pieces: inner.pieces(),
            inner,
        }
    }

    /// Once boundaries are guessed, cut the chunks of `ranges` (the file
    /// `inner` reads, uncompressed, from its start) by reading only their
    /// ends, and leave their bytes to whoever converts them (`Chunk::fill`)
    /// after leaving the feeder's lock: reading whole chunks under it took
    /// a fifth of each worker's time on the benchmark's JSON set (which
    /// caps a run at about five workers), reading their ends 1-7%. The
    /// file is read to its length as taken when a chunk would reach it
    /// (it may grow meanwhile); a read that finds it shorter than a length
    /// taken fails.
    pub fn ranged(mut self, ranges: FileRanges) -> Self {
        if let Ok(len) = ranges.len() {
            self.ranged = Some((ranges, len));
        }
        self
    }

    /// Guess JSON boundaries (`Boundaries::Guess`) from the next chunk on,
    /// when the stream starts with an object. Until told, chunks are cut
    /// exactly, so that the run's first record can be read from the first
    /// one.
    pub fn guess_from_now(&mut self) {
        self.guess = true;
        if self.chosen && self.objects {
            self.splitter = Boundaries::Guess;
        }
    }

    fn check_utf8(&self, buf: &[u8]) -> Option<bool> {
        match self.splitter {
            Boundaries::Csv(_) => None,
            _ => Some(simdutf8::basic::from_utf8(buf).is_ok()),
        }
    }

    /// Chooses the boundaries of a ranged file guessed from the start from
    /// its first bytes (skipping a BOM), when they show an object; else
    /// leaves the stream to be read from `inner`.
    fn start_ranged(&mut self) -> Result<(), ReadError> {
        let (ranges, _) = self.ranged.as_ref().expect("ranged");
        self.tail.clear();
        ranges
            .read_range(0, TAIL as usize, &mut self.tail)
            .map_err(|error| ReadError {
                offset: self.tail.len() as u64,
                error,
            })?;
        let bom = if self.tail.starts_with(BOM) {
            BOM.len()
        } else {
            0
        };
        if let Boundaries::Json(_) = self.splitter
            && let Some(&b'{') = self.tail[bom..].iter().find(|b| !b.is_ascii_whitespace())
        {
            (self.started, self.chosen, self.objects) = (true, true, true);
            self.base = bom as u64;
            self.splitter = Boundaries::Guess;
        }
        Ok(())
    }

    /// An empty chunk from where the last one ended, to end at a guessed
    /// boundary.
    fn guessed_chunk(&self) -> Chunk {
        Chunk {
            bytes: Vec::new(),
            base: self.base,
            top: self.top,
            last: false,
            guessed: true,
            end_top: Top::Between,
            utf8: None,
            deferred: None,
            more: Bytes::new(),
        }
    }

    /// The next chunk of a ranged file (see `ranged`), its bytes deferred
    /// when its cut is found in its last `TAIL` bytes.
    fn next_range(&mut self) -> Result<Option<Chunk>, ReadError> {
        let (ranges, mut len) = self.ranged.clone().expect("ranged");
        let failed = |offset: u64, error| ReadError { offset, error };
        // Bytes read past the last cut are read again with their chunk.
        self.carry = Vec::new();
        let start = self.base;
        let end = start.saturating_add(self.target as u64);
        if end >= len {
            // The file's length now: it may have grown since it was taken.
            len = ranges.len().map_err(|e| failed(start, e))?;
            if len < start {
                return Err(failed(len, shrank()));
            }
            if let Some((_, taken)) = &mut self.ranged {
                *taken = len;
            }
        }
        let deferred = |len: u64| Deferred {
            ranges: ranges.clone(),
            len: len as usize,
        };
        let mut chunk = self.guessed_chunk();
        if end >= len {
            self.done = true;
            chunk.deferred = Some(deferred(len - start));
            (chunk.last, chunk.guessed) = (true, false);
            return Ok(Some(chunk));
        }
        let from = end.saturating_sub(TAIL).max(start);
        self.tail.clear();
        let read = ranges.read_range(from, (end - from) as usize, &mut self.tail);
        let read = read.map_err(|e| failed(from + self.tail.len() as u64, e))?;
        if read as u64 != end - from {
            return Err(failed(from + read as u64, shrank()));
        }
        if let Some((cut, top)) = guess_cut(&self.tail, 0) {
            let cut = from + cut as u64;
            chunk.deferred = Some(deferred(cut - start));
            chunk.end_top = top;
            self.base = cut;
            self.top = top;
            return Ok(Some(chunk));
        }
        // No cut in the tail: the chunk read whole here, as without ranges.
        let mut buf = Vec::new();
        loop {
            let scanned = buf.len();
            let at = start + scanned as u64;
            let read = ranges
                .read_range(at, self.target, &mut buf)
                .map_err(|e| failed(start + buf.len() as u64, e))?;
            if read < self.target {
                let upto = start + buf.len() as u64;
                if upto < len {
                    return Err(failed(upto, shrank()));
                }
                self.done = true;
                chunk.utf8 = self.check_utf8(&buf);
                chunk.bytes = buf;
                (chunk.last, chunk.guessed) = (true, false);
                return Ok(Some(chunk));
            }
            if let Some((cut, top)) = guess_cut(&buf, scanned) {
                buf.truncate(cut);
                chunk.utf8 = self.check_utf8(&buf);
                chunk.bytes = buf;
                chunk.end_top = top;
                self.base += cut as u64;
                self.top = top;
                return Ok(Some(chunk));
            }
            if buf.len() > MAX_RECORD {
                return Err(ReadError {
                    offset: start,
                    error: record_too_large(),
                });
            }
        }
    }

    /// The next chunk of a stream received in pieces (`Source::pieces`),
    /// once boundaries are guessed, `buf` read of it so far: a piece of at
    /// least `PIECE` bytes goes into the chunk uncopied (`Chunk::more`),
    /// from just after its first guessed boundary to its last; only the
    /// record across each of its ends is copied. Copying pieces into the
    /// chunk took 7% of a run's CPU time from S3. Shorter pieces are
    /// copied and cut as a stream's.
    fn next_pieces(&mut self, mut buf: Vec<u8>) -> Result<Option<Chunk>, ReadError> {
        let mut chunk = self.guessed_chunk();
        // Where a boundary may start that no earlier scan has looked at.
        let mut from = 0;
        loop {
            let piece = self.inner.piece().map_err(|error| ReadError {
                offset: self.base + buf.len() as u64,
                error,
            })?;
            if piece.is_empty() {
                self.done = true;
                (chunk.last, chunk.guessed) = (true, false);
                chunk.bytes = buf;
                return Ok(Some(chunk));
            }
            if piece.len() >= PIECE.min(self.target)
                && let Some(first) = first_cut(&piece)
                && let Some((last, top)) = guess_cut(&piece, first).filter(|&(l, _)| l > first)
            {
                buf.extend_from_slice(&piece[..first]);
                self.carry = piece[last..].to_vec();
                chunk.more = piece.slice(first..last);
                chunk.end_top = top;
                self.base += (buf.len() + chunk.more.len()) as u64;
                self.top = top;
                chunk.bytes = buf;
                return Ok(Some(chunk));
            }
            buf.extend_from_slice(&piece);
            if buf.len() >= self.target {
                if let Some((cut, top)) = guess_cut(&buf, from) {
                    self.carry = buf[cut..].to_vec();
                    buf.truncate(cut);
                    chunk.end_top = top;
                    self.base += cut as u64;
                    self.top = top;
                    chunk.bytes = buf;
                    return Ok(Some(chunk));
                }
                from = buf.len();
            }
            if buf.len() > MAX_RECORD {
                return Err(ReadError {
                    offset: self.base,
                    error: record_too_large(),
                });
            }
        }
    }

    pub fn next_chunk(&mut self) -> Result<Option<Chunk>, ReadError> {
        if self.done {
            return Ok(None);
        }
        if self.ranged.is_some() && !self.started && self.guess {
            self.start_ranged()?;
        }
        if self.ranged.is_some() && matches!(self.splitter, Boundaries::Guess) {
            return self.next_range();
        }
        let mut buf = std::mem::take(&mut self.carry);
        loop {
            if self.pieces && self.started && matches!(self.splitter, Boundaries::Guess) {
                return self.next_pieces(buf);
            }
            let scanned = buf.len();
            // The first read takes enough bytes to see a whole BOM; from a
            // JSON stream in pieces, no more, so that its pieces from then
            // on are not copied when boundaries are guessed.
            let want = match (self.started, self.pieces, &self.splitter) {
                (true, _, _) => self.target,
                (false, true, Boundaries::Json(_)) => 4,
                (false, _, _) => self.target.max(4),
            };
            // Room for the whole read up front: no growing by copies.
            buf.reserve(want.saturating_add(64).min(MAX_RECORD));
            let read = self
                .inner
                .append(&mut buf, want)
                .map_err(|error| ReadError {
                    offset: self.base + buf.len() as u64,
                    error,
                })?;
            let mut scan_from = scanned;
            if !self.started {
                self.started = true;
                if buf.starts_with(BOM) {
                    buf.drain(..BOM.len());
                    self.base += BOM.len() as u64;
                }
                scan_from = 0;
            }
            if read < want {
                self.done = true;
                let utf8 = self.check_utf8(&buf);
                return Ok(Some(Chunk {
                    bytes: buf,
                    base: self.base,
                    top: self.top,
                    last: true,
                    guessed: false,
                    end_top: Top::Between,
                    utf8,
                    deferred: None,
                    more: Bytes::new(),
                }));
            }
            if !self.chosen
                && let Boundaries::Json(_) = self.splitter
                && let Some(&first) = buf.iter().find(|b| !b.is_ascii_whitespace())
            {
                // Objects: boundaries can be guessed. Arrays are split exactly.
                self.chosen = true;
                self.objects = first == b'{';
                if self.objects && self.guess {
                    self.splitter = Boundaries::Guess;
                }
            }
            if let Some(cut) = self.splitter.scan(&buf, scan_from) {
                self.cut = Some(cut);
            }
            if let Some((cut, top)) = self.cut.take() {
                self.carry = buf[cut..].to_vec();
                buf.truncate(cut);
                let utf8 = self.check_utf8(&buf);
                let chunk = Chunk {
                    bytes: buf,
                    base: self.base,
                    top: self.top,
                    last: false,
                    guessed: matches!(self.splitter, Boundaries::Guess),
                    end_top: top,
                    utf8,
                    deferred: None,
                    more: Bytes::new(),
                };
                self.base += cut as u64;
                self.top = top;
                return Ok(Some(chunk));
            }
            if buf.len() > MAX_RECORD {
                return Err(ReadError {
                    offset: self.base,
                    error: record_too_large(),
                });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detects_by_extension_then_content() {
        assert_eq!(detect_compression("a/b.json.gz", b"{"), Compression::Gzip);
        assert_eq!(
            detect_compression("a/stream-1", b"\x1f\x8b\x08"),
            Compression::Gzip
        );
        assert_eq!(
            detect_compression("a/x", b"\x28\xb5\x2f\xfd"),
            Compression::Zstd
        );
        assert_eq!(
            detect_compression("a/x.json", b"\x1f\x8b"),
            Compression::None
        );
        assert_eq!(detect_format("a/b.json.gz", b"x"), Format::Json);
        assert_eq!(detect_format("a/b.parquet", b""), Format::Parquet);
        assert_eq!(detect_format("a/.hidden", b"PAR1"), Format::Parquet);
        assert_eq!(
            detect_format("a/stream-1", b"\xEF\xBB\xBF \n[{}]"),
            Format::Json
        );
        assert_eq!(detect_format("a/stream-1", b"user,item\n"), Format::Csv);
        assert_eq!(detect_format("a/x.data", b"{"), Format::Json);
    }

    fn chunks(input: &[u8], target: usize) -> Vec<Chunk> {
        let mut reader = ChunkReader::new(input, target, Boundaries::Json(Default::default()));
        let mut out = Vec::new();
        while let Some(c) = reader.next_chunk().unwrap() {
            out.push(c);
        }
        out
    }

    #[test]
    fn a_stream_of_objects_is_guessed_once_told_to() {
        let objects: &[u8] = b"{\"a\":1} {\"b\":\"}{\"}{\"c\":[2]}\n{\"d\":3}{\"e\":4}";
        let array: &[u8] = b"[{\"a\":1},{\"b\":\"}{\"},{\"c\":[2]},{\"d\":3}]";
        for (input, guessed) in [(objects, true), (array, false)] {
            let mut reader = ChunkReader::new(input, 9, Boundaries::Json(Default::default()));
            let first = reader.next_chunk().unwrap().unwrap();
            assert!(!first.guessed);
            reader.guess_from_now();
            let mut joined = first.bytes.clone();
            let mut rest = 0;
            while let Some(c) = reader.next_chunk().unwrap() {
                assert_eq!(c.base, joined.len() as u64);
                if !c.last {
                    assert_eq!(
                        c.guessed,
                        guessed,
                        "{:?}",
                        String::from_utf8_lossy(&c.bytes)
                    );
                    rest += 1;
                }
                joined.extend_from_slice(&c.bytes);
            }
            assert_eq!(joined, input);
            assert!(rest >= 2, "{rest} chunks between the first and the last");
        }
    }

    /// A stream in pieces, as from object storage.
    struct Pieces(std::collections::VecDeque<Bytes>);

    impl Read for Pieces {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            let Some(piece) = self.0.front_mut() else {
                return Ok(0);
            };
            let n = buf.len().min(piece.len());
            buf[..n].copy_from_slice(&piece.split_to(n));
            if piece.is_empty() {
                self.0.pop_front();
            }
            Ok(n)
        }
    }

    impl Source for Pieces {
        fn pieces(&self) -> bool {
            true
        }

        fn piece(&mut self) -> io::Result<Bytes> {
            Ok(self.0.pop_front().unwrap_or_default())
        }
    }

    /// Once boundaries are guessed, a piece at least a chunk long (or
    /// `PIECE`) goes into a chunk uncopied from its first guessed cut to
    /// its last, and the chunks' bytes are the stream's (after its BOM,
    /// and after a peeked head), each starting in the state the one before
    /// ended in, whatever the pieces' sizes; a shorter piece is copied and
    /// cut as a stream's.
    #[test]
    fn a_stream_in_pieces_keeps_long_pieces_uncopied() {
        let mut input = b"\xEF\xBB\xBF".to_vec();
        for i in 0..3000 {
            let gap = ["", " ", "\n", "\r\n\t"][i % 4];
            input
                .extend(format!("{{\"i\":{i},\"s\":\"}}{{{}\"}}{gap}", "x".repeat(i % 37)).bytes());
        }
        let input = Bytes::from(input);
        let patterns = [&[1, 5, 300][..], &[64, 2000, 17, 9], &[7000], &[70_000, 3]];
        for (sizes, head) in patterns.into_iter().zip([0, 2, 700, 1024]) {
            for target in [16, 100, 1000, 1 << 20] {
                let mut pieces = std::collections::VecDeque::new();
                let mut at = head;
                for &size in sizes.iter().cycle() {
                    if at == input.len() {
                        break;
                    }
                    let end = (at + size).min(input.len());
                    pieces.push_back(input.slice(at..end));
                    at = end;
                }
                let spans: Vec<_> = pieces.iter().map(|p| p.as_ptr_range()).collect();
                let peeked = io::Cursor::new(input[..head].to_vec());
                let mut reader = ChunkReader::new(
                    Read::chain(peeked, Pieces(pieces)),
                    target,
                    Boundaries::Json(Default::default()),
                );
                reader.guess_from_now();
                let (mut joined, mut uncopied, mut top) = (Vec::new(), 0, Top::Between);
                while let Some(c) = reader.next_chunk().unwrap() {
                    assert_eq!(c.base, 3 + joined.len() as u64);
                    assert_eq!(c.guessed, !c.last);
                    assert_eq!(c.top, top);
                    top = c.end_top;
                    joined.extend_from_slice(&c.bytes);
                    // Past the head, the stream's own pieces (the head's
                    // rest is handed on as a piece of its own, copied).
                    let end = (c.base as usize) + c.bytes.len() + c.more.len();
                    if !c.more.is_empty() && end > head {
                        let more = c.more.as_ptr_range();
                        assert!(
                            spans
                                .iter()
                                .any(|s| s.start <= more.start && more.end <= s.end)
                        );
                        assert!(
                            c.bytes.ends_with(b"}"),
                            "{:?}",
                            String::from_utf8_lossy(&c.bytes)
                        );
                        assert!(c.more.ends_with(b"}"));
                        uncopied += c.more.len();
                    }
                    joined.extend_from_slice(&c.more);
                }
                assert_eq!(
                    joined,
                    input[3..],
                    "pieces of {sizes:?}, chunks of {target}"
                );
                let long = sizes.iter().any(|&s| s >= target.min(PIECE));
                assert_eq!(
                    uncopied > 0,
                    long,
                    "pieces of {sizes:?}, chunks of {target}"
                );
            }
        }
    }

    /// A file read by ranges once boundaries are guessed: the chunks'
    /// bytes are deferred unless no cut is in their last `TAIL` bytes, and
    /// filled, they are the file's bytes after its BOM, cut where the
    /// guess cuts; each guessed, the last not.
    #[cfg(target_os = "linux")]
    #[test]
    fn a_ranged_file_is_cut_by_its_chunks_ends() {
        let long = "x".repeat(3 * TAIL as usize);
        let mut input = b"\xEF\xBB\xBF".to_vec();
        for i in 0..3000 {
            let pad = if i % 500 == 7 { long.as_str() } else { "" };
            input.extend(format!("{{\"i\":{i},\"s\":\"}} {{{pad}\"}}\n").bytes());
        }
        let file = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(file.path(), &input).unwrap();
        for guess_first in [true, false] {
            for target in [64, 1000, 5000, 1 << 20] {
                let open = || crate::source::LocalFile::new(file.reopen().unwrap());
                let ranges = open().ranges().unwrap();
                let mut reader =
                    ChunkReader::new(open(), target, Boundaries::Json(Default::default()))
                        .ranged(ranges);
                if guess_first {
                    reader.guess_from_now();
                }
                let (mut joined, mut deferred, mut whole) = (Vec::new(), 0, 0);
                while let Some(mut c) = reader.next_chunk().unwrap() {
                    reader.guess_from_now();
                    assert_eq!(c.base, 3 + joined.len() as u64);
                    if c.deferred.is_some() {
                        deferred += 1;
                    } else {
                        whole += 1;
                    }
                    c.fill().unwrap();
                    assert!(c.deferred.is_none());
                    assert_eq!(c.guessed, !c.last && (guess_first || c.base > 3));
                    if !c.last {
                        assert_eq!(*c.bytes.last().unwrap(), b'}');
                    }
                    joined.extend_from_slice(&c.bytes);
                }
                assert_eq!(joined, &input[3..], "target {target}");
                if target == 1 << 20 {
                    // One chunk: read by ranges only when guessed at once.
                    let one = if guess_first { (1, 0) } else { (0, 1) };
                    assert_eq!((deferred, whole), one);
                } else {
                    // Chunks cut in a long record are read whole.
                    assert!(deferred > 0 && whole > 0, "{target}: {deferred} {whole}");
                }
            }
        }
    }

    /// A file holding `input`, and a reader of it by 4 KiB ranges.
    #[cfg(target_os = "linux")]
    fn ranged_reader(
        input: &str,
    ) -> (
        tempfile::NamedTempFile,
        ChunkReader<crate::source::LocalFile>,
    ) {
        let file = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(file.path(), input).unwrap();
        let local = crate::source::LocalFile::new(file.reopen().unwrap());
        let ranges = local.ranges().unwrap();
        let mut reader =
            ChunkReader::new(local, 4096, Boundaries::Json(Default::default())).ranged(ranges);
        reader.guess_from_now();
        (file, reader)
    }

    /// A ranged chunk of a file that shrank since it was opened fails to
    /// fill, at the byte where the file now ends.
    #[cfg(target_os = "linux")]
    #[test]
    fn a_ranged_chunk_of_a_shrunk_file_fails_where_it_ends() {
        let input = "{\"a\":1}\n".repeat(1000);
        let (file, mut reader) = ranged_reader(&input);
        let mut first = reader.next_chunk().unwrap().unwrap();
        assert!(first.deferred.is_some());
        file.as_file().set_len(100).unwrap();
        let e = first.fill().unwrap_err();
        assert_eq!(e.offset, 100);
        assert_eq!(e.error.to_string(), "the file shrank while it was read");
        // Found by the reader: the next chunk starts past the file's end.
        file.as_file().set_len(3000).unwrap();
        let e = reader.next_chunk().unwrap_err();
        assert_eq!(e.offset, 3000);
        assert_eq!(e.error.to_string(), "the file shrank while it was read");
    }

    /// A ranged file that grows while it is read is read to its end as
    /// found when the chunks reach it.
    #[cfg(target_os = "linux")]
    #[test]
    fn a_ranged_file_that_grows_is_read_to_its_new_end() {
        use std::io::Write;
        let input = "{\"a\":1}\n".repeat(1000);
        let (file, mut reader) = ranged_reader(&input);
        let mut joined = Vec::new();
        let mut first = reader.next_chunk().unwrap().unwrap();
        first.fill().unwrap();
        joined.extend(first.bytes);
        let mut more = std::fs::OpenOptions::new()
            .append(true)
            .open(file.path())
            .unwrap();
        more.write_all("{\"b\":2}\n".repeat(1000).as_bytes())
            .unwrap();
        while let Some(mut c) = reader.next_chunk().unwrap() {
            c.fill().unwrap();
            joined.extend(c.bytes);
        }
        assert_eq!(
            joined,
            format!("{input}{}", "{\"b\":2}\n".repeat(1000)).as_bytes()
        );
    }

    #[test]
    fn a_peeked_head_is_read_again_as_the_streams_start() {
        let input = br#"{"a":1}{"b":"xy"} {"c":[1,2]}{"d":{}}"#;
        for head in 0..=input.len() {
            for target in 1..=9 {
                let stream = Read::chain(io::Cursor::new(input[..head].to_vec()), &input[head..]);
                let mut reader =
                    ChunkReader::new(stream, target, Boundaries::Json(Default::default()));
                let mut got = Vec::new();
                while let Some(c) = reader.next_chunk().unwrap() {
                    got.push((c.bytes, c.base, c.last));
                }
                let want: Vec<_> = chunks(input, target)
                    .into_iter()
                    .map(|c| (c.bytes, c.base, c.last))
                    .collect();
                assert_eq!(got, want, "head {head}, target {target}");
            }
        }
    }

    #[test]
    fn json_chunks_come_with_their_utf8_checked() {
        // A byte that is not UTF-8 in the middle record only.
        let input: &[u8] = b"{\"a\":\"\xC3\xA9\"}{\"b\":\"\xFF\"}{\"c\":1}";
        for guess in [false, true] {
            let mut reader = ChunkReader::new(input, 4, Boundaries::Json(Default::default()));
            if guess {
                reader.guess_from_now();
            }
            let mut seen = Vec::new();
            while let Some(c) = reader.next_chunk().unwrap() {
                seen.push(c.utf8);
                assert_eq!(c.utf8, Some(std::str::from_utf8(&c.bytes).is_ok()));
            }
            assert_eq!(seen, [Some(true), Some(false), Some(true)]);
        }
        let csv = ChunkReader::new(
            &b"a\n\xFF\n"[..],
            2,
            Boundaries::Csv(csv::Splitter::new(b',')),
        )
        .next_chunk()
        .unwrap()
        .unwrap();
        assert_eq!(csv.utf8, None);
    }

    #[test]
    fn guesses_a_cut_after_the_last_object_followed_by_another() {
        let buf = b"{\"a\":1}{\"b\":\"x\"} \n {\"c\":2}{\"d\":\"}{";
        let between = |at| Some((at, Top::Between));
        // The last `}{` is inside a string: a wrong guess, which the
        // decoder of that chunk reports as a record cut short.
        assert_eq!(guess_cut(buf, 0), between(33));
        assert_eq!(guess_cut(&buf[..28], 0), between(26));
        // Whitespace may stand between the objects.
        assert_eq!(guess_cut(&buf[..25], 0), between(16));
        assert_eq!(guess_cut(b"{\"a\":1}", 0), None);
        // Only an opening brace at or past `from` counts.
        assert_eq!(guess_cut(&buf[..30], 12), between(26));
        assert_eq!(guess_cut(&buf[..30], 27), None);
        // Between array elements: before the comma.
        assert_eq!(
            guess_cut(b"[{\"a\":1}, {\"b\":2}", 0),
            Some((8, Top::ArrayAfterElement))
        );
    }

    #[test]
    fn cuts_at_record_boundaries_and_keeps_offsets() {
        let input = b"\xEF\xBB\xBF{\"a\":\"}{\"}{\"a\":2}\n[{\"a\":3},{\"a\":4}]";
        for target in 1..input.len() + 2 {
            let got = chunks(input, target);
            let joined: Vec<u8> = got.iter().flat_map(|c| c.bytes.clone()).collect();
            assert_eq!(joined, &input[3..], "target {target}");
            let mut offset = 3;
            for c in &got {
                assert_eq!(c.base, offset);
                offset += c.bytes.len() as u64;
            }
            assert!(got.last().unwrap().last);
            for c in &got[..got.len() - 1] {
                assert!(
                    matches!(c.bytes.last(), Some(b'}' | b']')),
                    "target {target}"
                );
            }
        }
    }
}
