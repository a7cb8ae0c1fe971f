//! The JSON family in one reader: objects back to back with or without
//! whitespace between them (`}{`), NDJSON, a top-level array of objects, or a
//! mix of these.
//!
//! Two passes share one set of lexical rules. `Splitter` only tracks strings
//! and nesting depth, so the reader can cut a stream into chunks at record
//! boundaries cheaply and hand them to parallel decoders. `Scanner` validates
//! every byte of a record but builds nothing for fields nobody asked for: it
//! records the byte span of each selected path (a `Selector`) and skips the
//! rest. Mapping turns those spans into CSV text later. On valid UTF-8 the
//! scanner first lets a walk over a structural index (`super::structural`)
//! read each record, and reads only what that walk gives back.

use super::structural::Index;

/// The top-level state at a chunk boundary: between records, or inside a
/// top-level array.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Top {
    Between,
    /// Just after the `[` of a top-level array: an element or `]` comes next.
    ArrayStart,
    /// After an element of a top-level array: `,` or `]` comes next.
    ArrayAfterElement,
}

/// What kind of JSON value a span holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// A string without a backslash; the span is the content between the
    /// quotes.
    Str,
    /// A string with an escape in it.
    EscapedStr,
    /// A number without a fraction or an exponent.
    Integer,
    /// A number with a fraction or an exponent.
    Float,
    True,
    False,
    Null,
    Array,
    Object,
}

/// One value inside the scanned buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Value {
    pub start: usize,
    pub end: usize,
    pub kind: Kind,
}

impl Kind {
    pub fn string(escaped: bool) -> Kind {
        if escaped { Kind::EscapedStr } else { Kind::Str }
    }

    pub fn number(integer: bool) -> Kind {
        if integer { Kind::Integer } else { Kind::Float }
    }
}

impl Value {
    pub fn bytes<'a>(&self, buf: &'a [u8]) -> &'a [u8] {
        &buf[self.start..self.end]
    }
}

/// The value captured for one selected path in the current record, if any.
///
/// A value's fields, not a `Value`, and a fieldless `Kind`: a copy of a
/// whole `Value` (or of a kind with fields) also copied its padding,
/// through loads wider than the stores that had just written it, and the
/// stall cost about 3% of the whole conversion.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Capture {
    start: usize,
    end: usize,
    /// `None` until a value is captured.
    kind: Option<Kind>,
    priority: u8,
}

impl Capture {
    /// Forgets the value: the span of one not captured is never read.
    #[inline(always)]
    pub fn clear(&mut self) {
        self.kind = None;
        self.priority = 0;
    }

    pub fn value(&self) -> Option<Value> {
        let (start, end) = (self.start, self.end);
        self.kind.map(|kind| Value { start, end, kind })
    }
}

/// Malformed JSON: where it was found and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SyntaxError {
    /// Start of the record (or of the stray bytes) in the buffer.
    pub record_start: usize,
    /// Where the problem was found in the buffer.
    pub pos: usize,
    /// The top-level key whose value was being read, if any.
    pub key: Option<String>,
    pub kind: SyntaxKind,
    /// The reason alone, without position.
    pub message: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SyntaxKind {
    /// Bytes that are not JSON.
    Invalid,
    /// The input ends inside a record or the top-level array.
    Truncated,
    /// Valid JSON, but a top-level value that is not an object.
    NotAnObject,
}

impl SyntaxKind {
    /// The stable name of the reason, for counting rejects.
    pub fn name(self) -> &'static str {
        match self {
            SyntaxKind::Invalid => "invalid-json",
            SyntaxKind::Truncated => "truncated-json",
            SyntaxKind::NotAnObject => "not-a-record",
        }
    }
}

impl SyntaxError {
    /// The full reason for a user, with `base` the stream offset of the
    /// scanned buffer's first byte.
    pub fn describe(&self, base: u64) -> String {
        let in_key = match &self.key {
            Some(k) => format!(" (reading {k:?})"),
            None => String::new(),
        };
        match self.kind {
            SyntaxKind::Invalid => format!(
                "invalid JSON at byte {}{in_key}: {}",
                base + self.pos as u64,
                self.message
            ),
            SyntaxKind::Truncated => {
                format!("truncated JSON: the input ends {}{in_key}", self.message)
            }
            SyntaxKind::NotAnObject => format!("not a record: {}", self.message),
        }
    }
}

/// The source paths to capture, as a trie over keys. Node 0 is the record.
#[derive(Debug)]
pub(crate) struct Selector {
    nodes: Vec<Vec<Entry>>,
    /// Per node, by `bucket` of a key's length and first byte.
    buckets: Vec<[Bucket; 64]>,
    slots: usize,
    /// Some key holds a backslash (so a raw key equal to it holds an
    /// escape, and matches only unescaped).
    escapes: bool,
}

/// Where a node's keys of one `bucket` are. The one key that falls there
/// is described inline (length, first and last eight bytes), so that a
/// lookup waits on this one load rather than on a bucket's number and
/// then its entry, and only loads the entry once the key matched.
#[derive(Debug, Clone, Copy)]
struct Bucket {
    /// The key's length, or `EMPTY` when no key falls here, or `SHARED`
    /// when several do (the node's entries are then searched).
    len: usize,
    head: u64,
    tail: u64,
    entry: usize,
}

/// No key is this long (a slice holds at most `isize::MAX` bytes).
const EMPTY: usize = usize::MAX;
const SHARED: usize = usize::MAX - 1;

impl Bucket {
    const NONE: Bucket = Bucket {
        len: EMPTY,
        head: 0,
        tail: 0,
        entry: 0,
    };
}

/// The bucket of a key `len` bytes long whose first byte is `first` (0 for
/// the empty key).
#[inline(always)]
fn bucket(len: usize, first: u8) -> usize {
    (len.wrapping_mul(7) + usize::from(first)) & 63
}

#[derive(Debug)]
pub(crate) struct Entry {
    key: Box<[u8]>,
    /// The key's first eight bytes (see `head`).
    head: u64,
    /// (slot, priority): an exact top-level key beats a dotted path.
    slots: Vec<(usize, u8)>,
    /// The slot when it is the key's only one and an exact top-level key
    /// (the usual case): nothing outranks it, so `capture` stores without
    /// a look at the slot's priority, a load that each capture waited on.
    only_exact: Option<usize>,
    pub child: Option<usize>,
}

impl Entry {
    /// Captures `value` into this entry's slots, unless a slot holds a
    /// value of higher priority.
    #[inline(always)]
    pub fn capture(&self, value: Value, caps: &mut [Capture]) {
        if let Some(slot) = self.only_exact {
            caps[slot] = Capture {
                start: value.start,
                end: value.end,
                kind: Some(value.kind),
                priority: EXACT,
            };
            return;
        }
        for &(slot, priority) in &self.slots {
            let cap = &mut caps[slot];
            if priority >= cap.priority {
                *cap = Capture {
                    start: value.start,
                    end: value.end,
                    kind: Some(value.kind),
                    priority,
                };
            }
        }
    }
}

impl Default for Selector {
    /// Captures nothing: scanning then only validates.
    fn default() -> Self {
        Selector::new::<&str>(&[])
    }
}

const EXACT: u8 = 2;
const WALKED: u8 = 1;

impl Selector {
    /// A selector for `paths`; the i-th path fills capture slot i. A path is
    /// an exact top-level key, or failing that a dotted walk into objects.
    pub fn new<S: AsRef<str>>(paths: &[S]) -> Self {
        let mut sel = Selector {
            nodes: vec![Vec::new()],
            buckets: Vec::new(),
            slots: paths.len(),
            escapes: paths.iter().any(|p| p.as_ref().contains('\\')),
        };
        for (slot, path) in paths.iter().enumerate() {
            let path = path.as_ref();
            let root = sel.entry(0, path.as_bytes());
            sel.nodes[0][root].slots.push((slot, EXACT));
            let segments: Vec<&str> = path.split('.').collect();
            if segments.len() > 1 && segments.iter().all(|s| !s.is_empty()) {
                let mut node = 0;
                for (i, seg) in segments.iter().enumerate() {
                    let e = sel.entry(node, seg.as_bytes());
                    if i + 1 == segments.len() {
                        sel.nodes[node][e].slots.push((slot, WALKED));
                    } else {
                        node = match sel.nodes[node][e].child {
                            Some(child) => child,
                            None => {
                                sel.nodes.push(Vec::new());
                                let child = sel.nodes.len() - 1;
                                sel.nodes[node][e].child = Some(child);
                                child
                            }
                        };
                    }
                }
            }
        }
        for entry in sel.nodes.iter_mut().flatten() {
            entry.only_exact = match entry.slots[..] {
                [(slot, EXACT)] => Some(slot),
                _ => None,
            };
        }
        for entries in &sel.nodes {
            let mut buckets = [Bucket::NONE; 64];
            for (i, e) in entries.iter().enumerate() {
                let b = &mut buckets[bucket(e.key.len(), e.key.first().copied().unwrap_or(0))];
                *b = match b.len {
                    EMPTY => Bucket {
                        len: e.key.len(),
                        head: e.head,
                        tail: last8(&e.key),
                        entry: i,
                    },
                    _ => Bucket {
                        len: SHARED,
                        ..Bucket::NONE
                    },
                };
            }
            sel.buckets.push(buckets);
        }
        sel
    }

    pub fn slots(&self) -> usize {
        self.slots
    }

    /// Whether some key holds a backslash: a key found by its raw bytes
    /// then needs a look at whether they hold an escape. Asked of the
    /// selector, not of the entry found, so that a lookup's answer does
    /// not wait on a load of the entry.
    pub fn escapes(&self) -> bool {
        self.escapes
    }

    fn entry(&mut self, node: usize, key: &[u8]) -> usize {
        if let Some(i) = self.nodes[node].iter().position(|e| &*e.key == key) {
            return i;
        }
        self.nodes[node].push(Entry {
            key: key.into(),
            head: head(key),
            slots: Vec::new(),
            only_exact: None,
            child: None,
        });
        self.nodes[node].len() - 1
    }

    pub fn find(&self, node: usize, key: &[u8]) -> Option<&Entry> {
        self.find_headed(node, key, head(key))
    }

    /// `find` for the key `buf[start..end]`, reading its first eight bytes
    /// in one load where the buffer goes on that far.
    #[inline(always)]
    pub fn find_in(&self, node: usize, buf: &[u8], start: usize, end: usize) -> Option<&Entry> {
        let key = &buf[start..end];
        let first = match buf.get(start..start + 8) {
            Some(word) if key.len() < 8 => {
                let word = u64::from_le_bytes(word.try_into().expect("eight bytes"));
                word & ((1 << (8 * key.len())) - 1)
            }
            _ => head(key),
        };
        self.find_headed(node, key, first)
    }

    /// `find`, given `head(key)`.
    #[inline(always)]
    fn find_headed(&self, node: usize, key: &[u8], first: u64) -> Option<&Entry> {
        // The first eight bytes, the length, then the last eight: keys of
        // up to 16 bytes are told apart without a call to memcmp.
        let entries = &self.nodes[node];
        let b = &self.buckets[node][bucket(key.len(), first as u8)];
        if b.len == key.len() {
            let same = b.head == first
                && (key.len() <= 8
                    || (b.tail == last8(key)
                        && (key.len() <= 16 || entries[b.entry].key[..] == key[..])));
            return same.then(|| &entries[b.entry]);
        }
        if b.len != SHARED {
            return None;
        }
        entries.iter().find(|e| {
            e.head == first
                && e.key.len() == key.len()
                && (key.len() <= 8
                    || (last8(&e.key) == last8(key) && (key.len() <= 16 || e.key[..] == key[..])))
        })
    }
}

/// The last eight bytes of `key` (at least eight long) as a word.
#[inline(always)]
fn last8(key: &[u8]) -> u64 {
    key.last_chunk::<8>()
        .map_or(0, |word| u64::from_le_bytes(*word))
}

/// The first eight bytes of `key` as a word, zeros past its end.
#[inline(always)]
fn head(key: &[u8]) -> u64 {
    match key.first_chunk::<8>() {
        Some(word) => u64::from_le_bytes(*word),
        // A loop, not a copy: a copy of unknown length calls memcpy.
        None => key
            .iter()
            .enumerate()
            .fold(0, |word, (i, &b)| word | u64::from(b) << (8 * i)),
    }
}

// Byte classes inside strings: 0 plain, 1 quote, 2 backslash, 3 control, 4 non-ASCII.
const STRING_CLASS: [u8; 256] = {
    let mut t = [0u8; 256];
    let mut i = 0;
    while i < 256 {
        t[i] = if i < 0x20 {
            3
        } else if i == b'"' as usize {
            1
        } else if i == b'\\' as usize {
            2
        } else if i >= 0x80 {
            4
        } else {
            0
        };
        i += 1;
    }
    t
};

/// Finding the next byte of interest eight bytes at a time (SWAR): each
/// mask has the high bit set in bytes that match, and the lowest such byte
/// is always a true match (a borrow only ever marks bytes above one).
mod swar {
    const LO: u64 = 0x0101_0101_0101_0101;
    const HI: u64 = 0x8080_8080_8080_8080;

    fn zero(v: u64) -> u64 {
        v.wrapping_sub(LO) & !v & HI
    }

    fn eq(w: u64, b: u8) -> u64 {
        zero(w ^ (LO * u64::from(b)))
    }

    /// The index of the first byte in `bytes` for which `mask` marks a
    /// match, checking the tail byte by byte with `slow`.
    #[inline(always)]
    fn find(bytes: &[u8], mask: impl Fn(u64) -> u64, slow: impl Fn(u8) -> bool) -> Option<usize> {
        let mut words = bytes.chunks_exact(8);
        let mut at = 0;
        for word in &mut words {
            let m = mask(u64::from_le_bytes(word.try_into().expect("eight bytes")));
            if m != 0 {
                return Some(at + (m.trailing_zeros() / 8) as usize);
            }
            at += 8;
        }
        words
            .remainder()
            .iter()
            .position(|&b| slow(b))
            .map(|i| at + i)
    }

    /// The first byte in a string that is not plain ASCII text: a quote,
    /// a backslash, a control character or a non-ASCII byte.
    pub fn string_special(bytes: &[u8]) -> Option<usize> {
        let from = match super::sse::string_blocks(bytes, false) {
            Ok(i) => return Some(i),
            Err(from) => from,
        };
        find(
            &bytes[from..],
            |w| eq(w, b'"') | eq(w, b'\\') | (w.wrapping_sub(LO * 0x20) & !w & HI) | (w & HI),
            |b| b == b'"' || b == b'\\' || !(0x20..0x80).contains(&b),
        )
        .map(|i| from + i)
    }

    /// As `string_special`, in text known to be valid UTF-8: a quote, a
    /// backslash or a control character.
    pub fn string_special_ascii_ok(bytes: &[u8]) -> Option<usize> {
        let from = match super::sse::string_blocks(bytes, true) {
            Ok(i) => return Some(i),
            Err(from) => from,
        };
        find(
            &bytes[from..],
            |w| eq(w, b'"') | eq(w, b'\\') | (w.wrapping_sub(LO * 0x20) & !w & HI),
            |b| b == b'"' || b == b'\\' || b < 0x20,
        )
        .map(|i| from + i)
    }

    /// The first quote or backslash.
    pub fn quote_or_backslash(bytes: &[u8]) -> Option<usize> {
        find(
            bytes,
            |w| eq(w, b'"') | eq(w, b'\\'),
            |b| b == b'"' || b == b'\\',
        )
    }

    /// The first quote or bracket (`[` and `]` become `{` and `}` once bit
    /// 5 is set; no other byte does).
    pub fn quote_or_bracket(bytes: &[u8]) -> Option<usize> {
        find(
            bytes,
            |w| {
                let folded = w | (LO * 0x20);
                eq(w, b'"') | eq(folded, b'{') | eq(folded, b'}')
            },
            |b| matches!(b, b'"' | b'{' | b'}' | b'[' | b']'),
        )
    }
}

/// The string search sixteen bytes at a time where SSE2 is there (every
/// x86_64 CPU): whole 16-byte blocks only, the tail left to the SWAR code.
mod sse {
    /// `Ok(i)`: the first quote, backslash or control byte (or, unless
    /// `utf8_ok`, non-ASCII byte) is at `i`. `Err(from)`: none in the
    /// whole blocks before `from`.
    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    pub fn string_blocks(bytes: &[u8], utf8_ok: bool) -> Result<usize, usize> {
        use std::arch::x86_64::*;
        let mut at = 0;
        // SAFETY: SSE2 is part of the x86_64 baseline, and every load reads
        // 16 bytes inside `bytes` (at + 16 <= len).
        unsafe {
            let quote = _mm_set1_epi8(b'"' as i8);
            let backslash = _mm_set1_epi8(b'\\' as i8);
            let control = _mm_set1_epi8(0x1f);
            while at + 16 <= bytes.len() {
                let v = _mm_loadu_si128(bytes.as_ptr().add(at).cast::<__m128i>());
                let hits = _mm_or_si128(
                    _mm_or_si128(_mm_cmpeq_epi8(v, quote), _mm_cmpeq_epi8(v, backslash)),
                    // min(v, 0x1f) == v exactly for the bytes 0x00..=0x1f.
                    _mm_cmpeq_epi8(_mm_min_epu8(v, control), v),
                );
                let mut mask = _mm_movemask_epi8(hits) as u32;
                if !utf8_ok {
                    mask |= _mm_movemask_epi8(v) as u32;
                }
                if mask != 0 {
                    return Ok(at + mask.trailing_zeros() as usize);
                }
                at += 16;
            }
        }
        Err(at)
    }

    #[cfg(not(target_arch = "x86_64"))]
    #[inline(always)]
    pub fn string_blocks(_bytes: &[u8], _utf8_ok: bool) -> Result<usize, usize> {
        Err(0)
    }
}

/// Reads records out of one buffer that starts at a record boundary.
pub(crate) struct Scanner<'a> {
    buf: &'a [u8],
    pos: usize,
    top: Top,
    record_start: usize,
    key: Option<(usize, usize)>,
    stack: Vec<u8>,
    scratch: Vec<u8>,
    /// The whole buffer is known to be valid UTF-8: strings need no check.
    utf8_valid: bool,
    /// The structural index of the buffer, when records are read through
    /// it: `fast` until the scanner has reported an error or the walk met
    /// what it cannot take.
    index: Option<Index>,
    fast: bool,
}

type Res<T> = Result<T, SyntaxError>;

fn is_ws(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | b'\r')
}

fn describe(b: u8) -> String {
    if b.is_ascii_graphic() {
        format!("'{}'", b as char)
    } else {
        format!("byte 0x{b:02x}")
    }
}

impl<'a> Scanner<'a> {
    pub fn new(buf: &'a [u8], top: Top) -> Self {
        Scanner {
            buf,
            pos: 0,
            top,
            record_start: 0,
            key: None,
            stack: Vec::new(),
            scratch: Vec::new(),
            utf8_valid: false,
            index: None,
            fast: false,
        }
    }

    /// Reads records through a structural index of the buffer, built in
    /// `index`, once `utf8_checked` has said the buffer is valid UTF-8 (else
    /// the scanner reads alone). The scanner reads what the walk does not
    /// take and reports every error: records, captures and errors are the
    /// same either way.
    pub fn indexed(mut self, mut index: Index) -> Self {
        self.fast = self.utf8_valid && index.reset(self.buf);
        self.index = Some(index);
        self
    }

    /// The index given to `indexed`, to build the next one in.
    pub fn into_index(self) -> Option<Index> {
        self.index
    }

    /// The caller checked that the whole buffer is valid UTF-8, so strings
    /// are scanned without checking it again.
    pub fn utf8_checked(mut self) -> Self {
        self.utf8_valid = true;
        self
    }

    /// After a syntax error in the record (or stray bytes) at `start`, found
    /// at `at`: skips the bad record whole when its brackets balance (so an
    /// object nested in it is never read as a record), else to the next `{`
    /// after `at`. Returns where scanning goes on.
    pub fn resync(&mut self, start: usize, at: usize) -> usize {
        let in_array = self.top != Top::Between;
        let whole = (self.buf.get(start) == Some(&b'{'))
            .then(|| Splitter::default().first_end(&self.buf[start..]))
            .flatten()
            .filter(|&len| start + len > at);
        let (next, skipped_close) = match whole {
            Some(len) => (start + len, false),
            None => {
                let from = (at.max(start + 1)).min(self.buf.len());
                let next =
                    memchr::memchr(b'{', &self.buf[from..]).map_or(self.buf.len(), |i| from + i);
                (next, memchr::memchr(b']', &self.buf[start..next]).is_some())
            }
        };
        self.pos = next;
        self.top = match (in_array, whole.is_some(), skipped_close) {
            (false, _, _) | (true, false, true) => Top::Between,
            (true, true, _) => Top::ArrayAfterElement,
            (true, false, false) => Top::ArrayStart,
        };
        self.key = None;
        self.pos
    }

    /// The top-level state where scanning stopped.
    pub fn top(&self) -> Top {
        self.top
    }

    /// Where scanning stopped.
    pub fn pos(&self) -> usize {
        self.pos
    }

    /// The next record: fills `caps` (one per selector slot) and returns the
    /// record's span, or `None` at the end of the buffer.
    pub fn next_record(
        &mut self,
        sel: &Selector,
        caps: &mut [Capture],
    ) -> Res<Option<(usize, usize)>> {
        let buf = self.buf;
        let Some(index) = self.index.as_mut().filter(|_| self.fast) else {
            return self.scan_record(sel, caps);
        };
        if let Some(found) = index
            .walk(buf)
            .next_record(&mut self.top, &mut self.pos, sel, caps)
        {
            return Ok(found);
        }
        let found = self.scan_record(sel, caps);
        self.fast = match (&found, self.index.as_mut()) {
            (Ok(_), Some(index)) => index.walk(buf).seek(self.pos),
            // Past an error, string boundaries in the index may be off.
            _ => false,
        };
        found
    }

    /// `next_record` by the scanner alone.
    fn scan_record(&mut self, sel: &Selector, caps: &mut [Capture]) -> Res<Option<(usize, usize)>> {
        loop {
            self.skip_ws();
            self.key = None;
            self.record_start = self.pos;
            let Some(&b) = self.buf.get(self.pos) else {
                return Ok(None);
            };
            match (self.top, b) {
                (Top::Between, b'[') => {
                    self.pos += 1;
                    self.top = Top::ArrayStart;
                }
                (Top::ArrayStart | Top::ArrayAfterElement, b']') => {
                    self.pos += 1;
                    self.top = Top::Between;
                }
                (Top::ArrayAfterElement, b',') => {
                    self.pos += 1;
                    self.skip_ws();
                    self.record_start = self.pos;
                    match self.buf.get(self.pos) {
                        Some(b'{') => return self.record(sel, caps).map(Some),
                        Some(&b) => return Err(self.not_an_object(b)),
                        None => return Err(self.eof("inside the top-level array")),
                    }
                }
                (Top::Between | Top::ArrayStart, b'{') => return self.record(sel, caps).map(Some),
                (Top::ArrayAfterElement, b'{') => {
                    return Err(self.err("expected ',' or ']' between array elements"));
                }
                (_, b) => return Err(self.not_an_object(b)),
            }
        }
    }

    fn record(&mut self, sel: &Selector, caps: &mut [Capture]) -> Res<(usize, usize)> {
        caps.iter_mut().for_each(Capture::clear);
        let start = self.pos;
        self.object(Some(0), sel, caps, true)?;
        if self.top != Top::Between {
            self.top = Top::ArrayAfterElement;
        }
        self.key = None;
        Ok((start, self.pos))
    }

    fn not_an_object(&self, b: u8) -> SyntaxError {
        let what = match b {
            b'"' => "a string".to_string(),
            b'-' | b'0'..=b'9' => "a number".to_string(),
            b't' | b'f' => "a boolean".to_string(),
            b'n' => "null".to_string(),
            b'[' => "an array".to_string(),
            _ => describe(b),
        };
        let mut e = self.err(&format!("expected a JSON object, found {what}"));
        e.kind = SyntaxKind::NotAnObject;
        e
    }

    fn skip_ws(&mut self) {
        while let Some(&b) = self.buf.get(self.pos) {
            if !is_ws(b) {
                break;
            }
            self.pos += 1;
        }
    }

    fn err(&self, message: &str) -> SyntaxError {
        let key = self
            .key
            .map(|(s, e)| String::from_utf8_lossy(&self.buf[s..e]).into_owned());
        SyntaxError {
            record_start: self.record_start,
            pos: self.pos,
            key,
            kind: SyntaxKind::Invalid,
            message: message.to_string(),
        }
    }

    fn eof(&self, where_: &str) -> SyntaxError {
        let mut e = self.err(where_);
        e.kind = SyntaxKind::Truncated;
        e
    }

    fn expect(&mut self, want: u8, what: &str) -> Res<()> {
        self.skip_ws();
        match self.buf.get(self.pos) {
            Some(&b) if b == want => {
                self.pos += 1;
                Ok(())
            }
            Some(&b) => Err(self.err(&format!("expected {what}, found {}", describe(b)))),
            None => Err(self.eof("inside a record")),
        }
    }

    /// An object at `pos`; `node` selects which keys to capture.
    fn object(
        &mut self,
        node: Option<usize>,
        sel: &Selector,
        caps: &mut [Capture],
        top: bool,
    ) -> Res<()> {
        self.pos += 1; // '{'
        self.skip_ws();
        if self.buf.get(self.pos) == Some(&b'}') {
            self.pos += 1;
            return Ok(());
        }
        loop {
            self.skip_ws();
            match self.buf.get(self.pos) {
                Some(b'"') => {}
                Some(&b) => {
                    return Err(self.err(&format!("expected a key string, found {}", describe(b))));
                }
                None => return Err(self.eof("inside a record")),
            }
            let (ks, ke, escaped) = self.string()?;
            if top {
                self.key = Some((ks, ke));
            }
            self.expect(b':', "':' after a key")?;
            self.skip_ws();
            let entry = match node {
                Some(n) if escaped => {
                    let mut scratch = std::mem::take(&mut self.scratch);
                    scratch.clear();
                    let ok = unescape_into(&self.buf[ks..ke], &mut scratch);
                    let found = if ok { sel.find(n, &scratch) } else { None };
                    self.scratch = scratch;
                    found
                }
                Some(n) => sel.find(n, &self.buf[ks..ke]),
                None => None,
            };
            match entry {
                None => {
                    self.value()?;
                }
                Some(entry) => {
                    let start = self.pos;
                    let value = match (entry.child, self.buf.get(self.pos)) {
                        (Some(child), Some(b'{')) => {
                            self.object(Some(child), sel, caps, false)?;
                            Value {
                                start,
                                end: self.pos,
                                kind: Kind::Object,
                            }
                        }
                        _ => self.value()?,
                    };
                    entry.capture(value, caps);
                }
            }
            if top {
                self.key = None;
            }
            self.skip_ws();
            match self.buf.get(self.pos) {
                Some(b',') => self.pos += 1,
                Some(b'}') => {
                    self.pos += 1;
                    return Ok(());
                }
                Some(&b) => {
                    return Err(self.err(&format!(
                        "expected ',' or '}}' after a value, found {}",
                        describe(b)
                    )));
                }
                None => return Err(self.eof("inside a record")),
            }
        }
    }

    /// Any value at `pos`, validated and skipped; its span and kind.
    fn value(&mut self) -> Res<Value> {
        let start = self.pos;
        let Some(&b) = self.buf.get(self.pos) else {
            return Err(self.eof("before a value"));
        };
        let kind = match b {
            b'"' => {
                let (s, e, escaped) = self.string()?;
                return Ok(Value {
                    start: s,
                    end: e,
                    kind: Kind::string(escaped),
                });
            }
            b'-' | b'0'..=b'9' => Kind::number(self.number()?),
            b't' => {
                self.literal(b"true")?;
                Kind::True
            }
            b'f' => {
                self.literal(b"false")?;
                Kind::False
            }
            b'n' => {
                self.literal(b"null")?;
                Kind::Null
            }
            b'{' => {
                self.container()?;
                Kind::Object
            }
            b'[' => {
                self.container()?;
                Kind::Array
            }
            b => return Err(self.err(&format!("expected a value, found {}", describe(b)))),
        };
        Ok(Value {
            start,
            end: self.pos,
            kind,
        })
    }

    fn literal(&mut self, word: &[u8]) -> Res<()> {
        let end = self.pos + word.len();
        if self.buf.len() >= end && &self.buf[self.pos..end] == word {
            self.pos = end;
            Ok(())
        } else if self.buf.len() < end && word.starts_with(&self.buf[self.pos..]) {
            self.pos = self.buf.len();
            Err(self.eof("inside a record"))
        } else {
            Err(self.err(
                "expected a value (true, false, null, a number, a string, an object or an array)",
            ))
        }
    }

    /// A number; returns whether it is an integer (no fraction, no exponent).
    fn number(&mut self) -> Res<bool> {
        match number_len(&self.buf[self.pos..]) {
            Ok((len, integer)) => {
                self.pos += len;
                Ok(integer)
            }
            Err((at, message)) => {
                self.pos += at;
                Err(self.err(message))
            }
        }
    }

    /// A string at `pos` (the opening quote): the content span and whether it
    /// holds escapes. Checks escapes and UTF-8.
    fn string(&mut self) -> Res<(usize, usize, bool)> {
        self.pos += 1;
        let start = self.pos;
        let mut escaped = false;
        loop {
            let rest = &self.buf[self.pos..];
            let special = if self.utf8_valid {
                swar::string_special_ascii_ok(rest)
            } else {
                swar::string_special(rest)
            };
            self.pos += special.unwrap_or(rest.len());
            let Some(&b) = self.buf.get(self.pos) else {
                return Err(self.eof("inside a string"));
            };
            match STRING_CLASS[b as usize] {
                1 => {
                    let end = self.pos;
                    self.pos += 1;
                    return Ok((start, end, escaped));
                }
                2 => {
                    escaped = true;
                    match self.buf.get(self.pos + 1) {
                        Some(b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't') => {
                            self.pos += 2
                        }
                        Some(b'u') => {
                            let hex = self.buf.get(self.pos + 2..self.pos + 6);
                            match hex {
                                Some(h) if h.iter().all(u8::is_ascii_hexdigit) => self.pos += 6,
                                Some(_) => return Err(self.err("invalid \\u escape in a string")),
                                None => return Err(self.eof("inside a string")),
                            }
                        }
                        Some(_) => return Err(self.err("invalid escape in a string")),
                        None => return Err(self.eof("inside a string")),
                    }
                }
                3 => {
                    return Err(self.err(&format!(
                        "control character U+{b:04X} in a string (JSON requires it escaped)"
                    )));
                }
                _ => {
                    let width = match b {
                        0xC2..=0xDF => 2,
                        0xE0..=0xEF => 3,
                        0xF0..=0xF4 => 4,
                        _ => 0,
                    };
                    let seq = self.buf.get(self.pos..self.pos + width);
                    match seq {
                        Some(seq) if width > 0 && std::str::from_utf8(seq).is_ok() => {
                            self.pos += width
                        }
                        None if width > 0
                            && std::str::from_utf8(&self.buf[self.pos..])
                                .err()
                                .is_some_and(|e| e.error_len().is_none()) =>
                        {
                            return Err(self.eof("inside a string"));
                        }
                        _ => return Err(self.err("invalid UTF-8 in a string")),
                    }
                }
            }
        }
    }

    /// An object or array at `pos`, skipped without recursion so any nesting
    /// depth is safe.
    fn container(&mut self) -> Res<()> {
        self.stack.clear();
        'open: loop {
            let open = self.buf[self.pos];
            self.stack.push(open);
            self.pos += 1;
            self.skip_ws();
            let close = if open == b'{' { b'}' } else { b']' };
            if self.buf.get(self.pos) == Some(&close) {
                self.pos += 1;
                self.stack.pop();
            } else if self.member()? {
                continue 'open;
            }
            // After a value inside the innermost open container.
            loop {
                let Some(&inner) = self.stack.last() else {
                    return Ok(());
                };
                self.skip_ws();
                let close = if inner == b'{' { b'}' } else { b']' };
                match self.buf.get(self.pos) {
                    Some(b',') => {
                        self.pos += 1;
                        if self.member()? {
                            continue 'open;
                        }
                    }
                    Some(&b) if b == close => {
                        self.pos += 1;
                        self.stack.pop();
                    }
                    Some(&b) => {
                        return Err(self.err(&format!(
                            "expected ',' or '{}' after a value, found {}",
                            close as char,
                            describe(b)
                        )));
                    }
                    None => return Err(self.eof("inside a record")),
                }
            }
        }
    }

    /// One member of the innermost container: a key and ':' inside an
    /// object, then a value. True when the value opens a container, which is
    /// left at `pos` for the caller to enter.
    fn member(&mut self) -> Res<bool> {
        if self.stack.last() == Some(&b'{') {
            self.skip_ws();
            match self.buf.get(self.pos) {
                Some(b'"') => {
                    self.string()?;
                }
                Some(&b) => {
                    return Err(self.err(&format!("expected a key string, found {}", describe(b))));
                }
                None => return Err(self.eof("inside a record")),
            }
            self.expect(b':', "':' after a key")?;
        }
        self.skip_ws();
        match self.buf.get(self.pos) {
            Some(b'{' | b'[') => Ok(true),
            _ => self.value().map(|_| false),
        }
    }
}

/// The length of the number at the start of `bytes` and whether it is an
/// integer (no fraction, no exponent); or where it goes wrong, and why.
pub(crate) fn number_len(bytes: &[u8]) -> Result<(usize, bool), (usize, &'static str)> {
    let digits = |pos: &mut usize| {
        let s = *pos;
        while bytes.get(*pos).is_some_and(u8::is_ascii_digit) {
            *pos += 1;
        }
        *pos - s
    };
    let mut pos = 0;
    if bytes.first() == Some(&b'-') {
        pos += 1;
    }
    match bytes.get(pos) {
        Some(b'0') => pos += 1,
        Some(b'1'..=b'9') => {
            digits(&mut pos);
        }
        _ => return Err((pos, "invalid number: a digit must follow '-'")),
    }
    let mut integer = true;
    if bytes.get(pos) == Some(&b'.') {
        pos += 1;
        integer = false;
        if digits(&mut pos) == 0 {
            return Err((pos, "invalid number: a digit must follow '.'"));
        }
    }
    if matches!(bytes.get(pos), Some(b'e' | b'E')) {
        pos += 1;
        integer = false;
        if matches!(bytes.get(pos), Some(b'+' | b'-')) {
            pos += 1;
        }
        if digits(&mut pos) == 0 {
            return Err((pos, "invalid number: the exponent has no digits"));
        }
    }
    Ok((pos, integer))
}

/// The top-level keys of one valid record, in order.
pub(crate) fn top_level_keys(record: &[u8]) -> Vec<String> {
    let mut keys = Vec::new();
    if record.first() != Some(&b'{') {
        return keys;
    }
    let mut sc = Scanner::new(record, Top::Between);
    sc.pos = 1;
    loop {
        sc.skip_ws();
        if record.get(sc.pos) != Some(&b'"') {
            return keys;
        }
        let Ok((start, end, escaped)) = sc.string() else {
            return keys;
        };
        let mut key = Vec::new();
        if !escaped || !unescape_into(&record[start..end], &mut key) {
            key = record[start..end].to_vec();
        }
        keys.push(String::from_utf8_lossy(&key).into_owned());
        if sc.expect(b':', "':'").is_err() {
            return keys;
        }
        sc.skip_ws();
        if sc.value().is_err() {
            return keys;
        }
        sc.skip_ws();
        if record.get(sc.pos) != Some(&b',') {
            return keys;
        }
        sc.pos += 1;
    }
}

/// The elements of one valid JSON array, as the scanner captured it; spans
/// are relative to `array`.
pub(crate) fn array_elements(array: &[u8]) -> Result<Vec<Value>, SyntaxError> {
    let mut sc = Scanner::new(array, Top::Between);
    sc.pos = 1;
    let mut out = Vec::new();
    loop {
        sc.skip_ws();
        match array.get(sc.pos) {
            Some(b']') | None => return Ok(out),
            Some(b',') => sc.pos += 1,
            Some(_) => out.push(sc.value()?),
        }
    }
}

/// Appends the unescaped form of a JSON string's content (already validated
/// by the scanner). False when a `\u` escape is a lone surrogate.
pub(crate) fn unescape_into(raw: &[u8], out: &mut Vec<u8>) -> bool {
    let mut i = 0;
    while i < raw.len() {
        let Some(off) = memchr::memchr(b'\\', &raw[i..]) else {
            out.extend_from_slice(&raw[i..]);
            break;
        };
        out.extend_from_slice(&raw[i..i + off]);
        i += off;
        let esc = raw[i + 1];
        i += 2;
        let c = match esc {
            b'"' => b'"',
            b'\\' => b'\\',
            b'/' => b'/',
            b'b' => 0x08,
            b'f' => 0x0c,
            b'n' => b'\n',
            b'r' => b'\r',
            b't' => b'\t',
            _ => {
                let hi = hex4(&raw[i..i + 4]);
                i += 4;
                let code = if (0xD800..0xDC00).contains(&hi) {
                    if raw.get(i..i + 2) != Some(b"\\u") || raw.len() < i + 6 {
                        return false;
                    }
                    let lo = hex4(&raw[i + 2..i + 6]);
                    if !(0xDC00..0xE000).contains(&lo) {
                        return false;
                    }
                    i += 6;
                    0x10000 + ((hi - 0xD800) << 10) + (lo - 0xDC00)
                } else {
                    hi
                };
                let Some(ch) = char::from_u32(code) else {
                    return false;
                };
                let mut tmp = [0u8; 4];
                out.extend_from_slice(ch.encode_utf8(&mut tmp).as_bytes());
                continue;
            }
        };
        out.push(c);
    }
    true
}

fn hex4(h: &[u8]) -> u32 {
    h.iter().fold(0, |acc, &b| {
        acc * 16 + (b as char).to_digit(16).unwrap_or(0)
    })
}

/// Finds record boundaries in a stream without validating it, so that a
/// reader can cut chunks that decoders can take in parallel.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Splitter {
    pub(super) in_string: bool,
    pub(super) escape: bool,
    pub(super) depth: u32,
    /// The outermost open container is a top-level array.
    pub(super) in_array: bool,
}

impl Splitter {
    /// The length of the first complete value in `bytes` (which start one),
    /// by bracket balance only.
    pub fn first_end(mut self, bytes: &[u8]) -> Option<usize> {
        self.depth = 0;
        self.end_in(bytes, true)
    }

    /// `first_end` of a value whose bytes come in pieces, this call's
    /// piece continuing the previous ones (the state starts at a value's
    /// start): where the value ends in `bytes`, or `None` when it does not
    /// end in them. Where `first_end` would give up on a close with
    /// nothing open, this reads on: it may find an end that `first_end`
    /// would not, never miss one that it finds.
    pub fn value_end(&mut self, bytes: &[u8]) -> Option<usize> {
        self.end_in(bytes, false)
    }

    fn end_in(&mut self, bytes: &[u8], strict: bool) -> Option<usize> {
        for (i, &b) in bytes.iter().enumerate() {
            if self.in_string {
                if self.escape {
                    self.escape = false;
                } else if b == b'\\' {
                    self.escape = true;
                } else if b == b'"' {
                    self.in_string = false;
                }
                continue;
            }
            match b {
                b'"' => self.in_string = true,
                b'{' | b'[' => self.depth += 1,
                b'}' | b']' if self.depth == 0 && strict => return None,
                b'}' | b']' if self.depth > 0 => {
                    self.depth -= 1;
                    if self.depth == 0 {
                        return Some(i + 1);
                    }
                }
                _ => {}
            }
        }
        None
    }

    /// Scans `bytes`, which continue the stream from the previous call, and
    /// returns the offset in `bytes` just after the last record that ends in
    /// them, with the top-level state there.
    pub fn scan(&mut self, bytes: &[u8]) -> Option<(usize, Top)> {
        // Whole 64-byte blocks with bit masks, the rest byte by byte.
        let (from, cut) = self.blocks(bytes);
        self.scan_bytes(bytes, from).or(cut)
    }

    /// `scan` over `bytes[from..]`, a byte at a time (a cut is an offset
    /// in `bytes`).
    pub(super) fn scan_bytes(&mut self, bytes: &[u8], from: usize) -> Option<(usize, Top)> {
        let mut cut = None;
        let mut i = from;
        while i < bytes.len() {
            if self.in_string {
                if self.escape {
                    self.escape = false;
                    i += 1;
                    continue;
                }
                match swar::quote_or_backslash(&bytes[i..]) {
                    None => return cut,
                    Some(off) => {
                        i += off;
                        if bytes[i] == b'"' {
                            self.in_string = false;
                        } else {
                            self.escape = true;
                        }
                        i += 1;
                    }
                }
                continue;
            }
            match swar::quote_or_bracket(&bytes[i..]) {
                None => return cut,
                Some(off) => i += off,
            }
            match bytes[i] {
                b'"' => self.in_string = true,
                b'{' => self.depth += 1,
                b'[' => {
                    if self.depth == 0 {
                        self.in_array = true;
                    }
                    self.depth += 1;
                }
                b'}' | b']' if self.depth > 0 => {
                    self.depth -= 1;
                    if self.depth == 0 {
                        self.in_array = false;
                        cut = Some((i + 1, Top::Between));
                    } else if self.depth == 1 && self.in_array {
                        cut = Some((i + 1, Top::ArrayAfterElement));
                    }
                }
                _ => {}
            }
            i += 1;
        }
        cut
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn records(input: &str, paths: &[&str]) -> Vec<Vec<Option<String>>> {
        let sel = Selector::new(paths);
        let mut caps = vec![Capture::default(); sel.slots()];
        let mut sc = Scanner::new(input.as_bytes(), Top::Between);
        let mut out = Vec::new();
        while sc.next_record(&sel, &mut caps).unwrap().is_some() {
            out.push(
                caps.iter()
                    .map(|c| c.value().map(|v| input[v.start..v.end].to_string()))
                    .collect(),
            );
        }
        assert_eq!(sc.top(), Top::Between);
        out
    }

    #[test]
    fn a_selector_finds_each_of_its_keys_and_nothing_else() {
        // Keys that share buckets (same length and first byte, or a
        // collision of the two), the empty key, long keys, a dotted walk,
        // and many keys, most of them sharing a bucket.
        let mut paths: Vec<String> = Vec::from(
            [
                "",
                "a",
                "b",
                "ab",
                "ba",
                "user_id",
                "item_id",
                "user_ix",
                "session_id",
                "event_type",
                "event_value",
                "a_key_longer_than_16",
                "a_key_longer_than_17",
                "ts",
                "d.e",
                "d.f",
            ]
            .map(String::from),
        );
        paths.extend((0..300).map(|i| format!("k{i}")));
        let sel = Selector::new(&paths);
        let probes = paths.iter().map(String::as_str).chain([
            "k300",
            "user_iz",
            "c",
            "tz",
            "d",
            "e",
            "a_key_longer_than_18",
            "d.g",
        ]);
        for key in probes {
            let want = sel.nodes[0].iter().find(|e| &*e.key == key.as_bytes());
            let got = sel.find(0, key.as_bytes());
            assert_eq!(got.map(|e| &e.key), want.map(|e| &e.key), "{key:?}");
            let mut buf = key.as_bytes().to_vec();
            buf.extend_from_slice(b"\"}padding");
            let got = sel.find_in(0, &buf, 0, key.len());
            assert_eq!(
                got.map(|e| &e.key),
                want.map(|e| &e.key),
                "{key:?} in a buffer"
            );
        }
        let d = sel.find(0, b"d").and_then(|e| e.child).expect("d walks on");
        assert!(sel.find(d, b"e").is_some() && sel.find(d, b"f").is_some());
        assert!(sel.find(d, b"g").is_none() && sel.find(d, b"d").is_none());
    }

    fn error(input: &str) -> SyntaxError {
        let sel = Selector::new(&["a"]);
        let mut caps = vec![Capture::default(); 1];
        let mut sc = Scanner::new(input.as_bytes(), Top::Between);
        loop {
            match sc.next_record(&sel, &mut caps) {
                Ok(Some(_)) => continue,
                Ok(None) => panic!("no error in {input:?}"),
                Err(e) => return e,
            }
        }
    }

    #[test]
    fn reads_every_shape_of_the_family() {
        let want = vec![vec![Some("1".to_string())], vec![Some("2".to_string())]];
        for input in [
            r#"{"a":1}{"a":2}"#,
            "{\"a\":1}\n{\"a\":2}\n",
            r#"[{"a":1},{"a":2}]"#,
            " [ {\"a\":1} ,\n {\"a\":2} ] ",
        ] {
            assert_eq!(records(input, &["a"]), want, "{input}");
        }
        let mixed = r#"{"a":1}[{"a":2},{"a":3}]{"a":4}"#;
        assert_eq!(records(mixed, &["a"]).len(), 4);
        assert!(records("[]", &["a"]).is_empty());
    }

    #[test]
    fn captures_nested_paths_and_prefers_exact_keys() {
        let input =
            r#"{"d":{"u":{"id":"x\"y"},"n":[1,{"k":2}]},"z":true}{"d.u.id":7,"d":{"u":{"id":8}}}"#;
        let got = records(input, &["d.u.id", "z", "d.n", "missing"]);
        assert_eq!(got[0][0].as_deref(), Some(r#"x\"y"#));
        assert_eq!(got[0][1].as_deref(), Some("true"));
        assert_eq!(got[0][2].as_deref(), Some(r#"[1,{"k":2}]"#));
        assert_eq!(got[0][3], None);
        assert_eq!(got[1][0].as_deref(), Some("7"));
    }

    #[test]
    fn escaped_keys_match_their_unescaped_form() {
        let got = records(r#"{"us\u0065r":5}"#, &["user"]);
        assert_eq!(got[0][0].as_deref(), Some("5"));
    }

    #[test]
    fn reports_malformed_input_with_position_and_key() {
        let e = error(r#"{"a":1}{"b":[1,2"#);
        assert_eq!(e.record_start, 7);
        assert_eq!(e.key.as_deref(), Some("b"));
        assert_eq!(
            e.describe(100),
            "truncated JSON: the input ends inside a record (reading \"b\")"
        );
        let e = error(r#"{"a":1,"#);
        assert_eq!(
            e.describe(0),
            "truncated JSON: the input ends inside a record"
        );

        let e = error("{\"a\":\"\u{e9}\"}{\"a\": \"x\u{1}\"}");
        assert_eq!(e.record_start, 10);
        assert!(
            e.message.contains("control character U+0001"),
            "{}",
            e.message
        );

        let bad_utf8 = b"{\"a\":\"\xff\"}";
        let sel = Selector::new(&["a"]);
        let mut caps = vec![Capture::default(); 1];
        let e = Scanner::new(bad_utf8, Top::Between)
            .next_record(&sel, &mut caps)
            .unwrap_err();
        assert_eq!(
            e.describe(10),
            "invalid JSON at byte 16 (reading \"a\"): invalid UTF-8 in a string"
        );

        assert_eq!(
            error(r#"{"a":01}"#).describe(0),
            "invalid JSON at byte 6: expected ',' or '}' after a value, found '1'"
        );
        assert_eq!(
            error("5").describe(0),
            "not a record: expected a JSON object, found a number"
        );
        assert_eq!(
            error(r#"{"a":{"b":[1,}]}}"#).describe(0),
            "invalid JSON at byte 13 (reading \"a\"): expected a value, found '}'"
        );
        let sel = Selector::new(&["a"]);
        let mut caps = vec![Capture::default(); 1];
        let mut sc = Scanner::new(br#"[{"a":1}"#, Top::Between);
        assert!(sc.next_record(&sel, &mut caps).unwrap().is_some());
        assert_eq!(sc.next_record(&sel, &mut caps).unwrap(), None);
        assert_eq!(sc.top(), Top::ArrayAfterElement);
    }

    #[test]
    fn deep_nesting_is_skipped_without_recursion() {
        let deep = format!("{{\"x\":{}{}}}", "[".repeat(100_000), "]".repeat(100_000));
        assert_eq!(records(&deep, &["a"]), vec![vec![None]]);
    }

    #[test]
    fn unescapes_strings() {
        let mut out = Vec::new();
        assert!(unescape_into(br#"a\"b\\c\n\u00e9\ud83d\ude00"#, &mut out));
        assert_eq!(String::from_utf8(out).unwrap(), "a\"b\\c\n\u{e9}\u{1f600}");
        assert!(!unescape_into(br#"\ud800x"#, &mut Vec::new()));
    }

    #[test]
    fn swar_finds_the_first_byte_of_interest() {
        type Find = fn(&[u8]) -> Option<usize>;
        type Slow = fn(u8) -> bool;
        let cases: [(Find, Slow); 4] = [
            (swar::string_special, |b| STRING_CLASS[b as usize] != 0),
            (swar::string_special_ascii_ok, |b| {
                matches!(STRING_CLASS[b as usize], 1..=3)
            }),
            (swar::quote_or_backslash, |b| b == b'"' || b == b'\\'),
            (swar::quote_or_bracket, |b| b"\"{}[]".contains(&b)),
        ];
        let mut x = 0x2545_F491_4F6C_DD1Du64;
        for (find, slow) in cases {
            for b in 0..=255u8 {
                for at in 0..40 {
                    // Plain filler, the byte, then random bytes after it.
                    let mut buf = vec![b'a'; at];
                    buf.push(b);
                    for _ in 0..12 {
                        x ^= x << 13;
                        x ^= x >> 7;
                        x ^= x << 17;
                        buf.push(x as u8);
                    }
                    let want = buf.iter().position(|&c| slow(c));
                    assert_eq!(find(&buf), want, "byte {b:#x} at {at}: {buf:?}");
                }
            }
        }
    }

    #[test]
    fn splitter_cuts_after_complete_records_only() {
        let input = br#"{"a":"}{"}{"b":[{}]}[{"c":1},{"c":"]"}]{"d"#;
        let mut sp = Splitter::default();
        let (cut, top) = sp.scan(input).unwrap();
        assert_eq!(&input[..cut], br#"{"a":"}{"}{"b":[{}]}[{"c":1},{"c":"]"}]"#);
        assert_eq!(top, Top::Between);

        let mut sp = Splitter::default();
        let (cut, top) = sp.scan(br#"[{"c":1},{"c"#).unwrap();
        assert_eq!(cut, 8);
        assert_eq!(top, Top::ArrayAfterElement);
        // The state carries over: the rest of the stream continues it.
        assert_eq!(sp.scan(br#"":2}]"#), Some((5, Top::Between)));
    }
}
