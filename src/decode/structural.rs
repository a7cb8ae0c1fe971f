//! The fast path of the JSON scanner, in the manner of simdjson: a first
//! pass finds, 64 bytes at a time, every byte that matters outside strings
//! (brackets, colons, commas, the quotes around strings and the first byte
//! of each number or literal); a second pass walks only those positions.
//!
//! The walk accepts exactly what `json::Scanner` accepts, or gives up: any
//! record it does not take is read again by the scanner, which alone reports
//! errors, so every error keeps its wording and offset. Where the first
//! pass meets a control character inside a string or a backslash that
//! escapes nothing valid (inside a string or not, a `\u` cut short by the
//! end of the buffer included), the walk stops, and the scanner reads the
//! rest of the buffer; so it does after any error it reports.

use std::mem::MaybeUninit;

use super::json::{Capture, Kind, Selector, Splitter, Top, Value, number_len, unescape_into};

/// The structural positions of one buffer, built a window at a time as the
/// walk needs them (so the positions stay in cache and few whatever the
/// buffer's size), and which of the buffer's strings hold a backslash (a
/// bit on each one's closing quote, for all of the buffer).
#[derive(Debug, Default)]
pub(crate) struct Index {
    /// Positions not yet walked past, in order.
    pos: Vec<u32>,
    /// One word per 64 bytes indexed, a bit per closing quote of a string
    /// that holds a backslash.
    escaped: Vec<u64>,
    scratch: Vec<u8>,
    /// Bytes indexed so far (a multiple of 64 until the end).
    built: usize,
    /// The length of the buffer indexed: every position is below it.
    len: usize,
    /// Where the last walk stopped in `pos`.
    cursor: usize,
    /// What the next block inherits: an escape, a string (and whether it
    /// holds a backslash so far), a scalar.
    escape_carry: u64,
    in_string: u64,
    escaped_carry: u64,
    scalar_carry: u64,
    /// The buffer holds what the walk cannot take (see `reset`).
    bad: bool,
    simd: Simd,
}

/// The instructions the index is built with, the widest the CPU has.
#[derive(Debug, Default, Clone, Copy, PartialEq)]
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
enum Simd {
    /// SSE2 alone (part of every x86_64), or no vectors off x86_64.
    #[default]
    Base,
    Avx2,
    /// 64 bytes a compare, each straight to a mask.
    Avx512,
}

impl Simd {
    /// The widest the CPU has.
    fn detect() -> Simd {
        #[cfg(target_arch = "x86_64")]
        {
            let avx2 = is_x86_feature_detected!("avx2")
                && is_x86_feature_detected!("bmi1")
                && is_x86_feature_detected!("popcnt")
                && is_x86_feature_detected!("pclmulqdq");
            if avx2 && is_x86_feature_detected!("avx512f") && is_x86_feature_detected!("avx512bw") {
                return Simd::Avx512;
            }
            if avx2 {
                return Simd::Avx2;
            }
        }
        Simd::Base
    }
}

/// Bytes indexed at a time (small in unit tests, so that they cross
/// windows).
const WINDOW: usize = if cfg!(test) { 128 } else { 16 << 10 };

/// Bit masks of one 64-byte block, bit i for byte i.
#[derive(Default)]
struct Block {
    quote: u64,
    backslash: u64,
    space: u64,
    op: u64,
    control: u64,
}

/// Bytes an escape may name after a backslash (`u` takes four hex digits).
const ESCAPABLE: [bool; 256] = {
    let mut t = [false; 256];
    let names = b"\"\\/bfnrtu";
    let mut i = 0;
    while i < names.len() {
        t[names[i] as usize] = true;
        i += 1;
    }
    t
};

#[cfg(target_arch = "x86_64")]
#[inline(always)]
fn classify_sse2(block: &[u8; 64]) -> Block {
    use std::arch::x86_64::*;
    // SAFETY: SSE2 is part of the x86_64 baseline; every load reads 16 of
    // the block's 64 bytes.
    unsafe {
        let quote = _mm_set1_epi8(b'"' as i8);
        let backslash = _mm_set1_epi8(b'\\' as i8);
        let space = _mm_set1_epi8(b' ' as i8);
        let tab = _mm_set1_epi8(b'\t' as i8);
        let lf = _mm_set1_epi8(b'\n' as i8);
        let cr = _mm_set1_epi8(b'\r' as i8);
        let bit5 = _mm_set1_epi8(0x20);
        let open = _mm_set1_epi8(b'{' as i8);
        let close = _mm_set1_epi8(b'}' as i8);
        let colon = _mm_set1_epi8(b':' as i8);
        let comma = _mm_set1_epi8(b',' as i8);
        let control = _mm_set1_epi8(0x1f);
        let mut out = Block::default();
        for k in 0..4 {
            let v = _mm_loadu_si128(block.as_ptr().add(16 * k).cast::<__m128i>());
            let mask = |m: __m128i| u64::from(_mm_movemask_epi8(m) as u16) << (16 * k);
            out.quote |= mask(_mm_cmpeq_epi8(v, quote));
            out.backslash |= mask(_mm_cmpeq_epi8(v, backslash));
            out.space |= mask(_mm_or_si128(
                _mm_or_si128(_mm_cmpeq_epi8(v, space), _mm_cmpeq_epi8(v, tab)),
                _mm_or_si128(_mm_cmpeq_epi8(v, lf), _mm_cmpeq_epi8(v, cr)),
            ));
            // `[` and `]` become `{` and `}` once bit 5 is set; no other byte does.
            let folded = _mm_or_si128(v, bit5);
            out.op |= mask(_mm_or_si128(
                _mm_or_si128(_mm_cmpeq_epi8(folded, open), _mm_cmpeq_epi8(folded, close)),
                _mm_or_si128(_mm_cmpeq_epi8(v, colon), _mm_cmpeq_epi8(v, comma)),
            ));
            // min(v, 0x1f) == v exactly for the bytes 0x00..=0x1f.
            out.control |= mask(_mm_cmpeq_epi8(_mm_min_epu8(v, control), v));
        }
        out
    }
}

/// `x`, hidden from the optimiser: without it LLVM turns the masks back
/// into vectors of booleans and builds them bit by bit.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
fn opaque(mut x: u64) -> u64 {
    // SAFETY: an empty instruction block that reads and writes one register.
    unsafe {
        std::arch::asm!("/* {0} */", inout(reg) x, options(pure, nomem, nostack, preserves_flags));
    }
    x
}

/// Tables for lookups by a byte's low four bits (simdjson's
/// classification): a byte is a blank when `BLANKS` holds it at its low
/// four bits, and `{ } : ,` (with `[ ]` folded onto the braces) likewise in
/// `OPS`. A byte with its high bit set looks up 0. `OPS` also matches two
/// control bytes (0x0c, 0x1a), taken out again by the control mask.
#[cfg(target_arch = "x86_64")]
const BLANKS: [u8; 16] = [
    b' ', 100, 100, 100, 17, 100, 113, 2, 100, b'\t', b'\n', 112, 100, b'\r', 100, 100,
];
#[cfg(target_arch = "x86_64")]
const OPS: [u8; 16] = [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, b':', b'{', b',', b'}', 0, 0];

/// The same masks with AVX2, 32 bytes at a time.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn classify_avx2(block: &[u8; 64]) -> Block {
    use std::arch::x86_64::*;
    // SAFETY: the loads read the block's two halves.
    let (lo, hi) = unsafe {
        (
            _mm256_loadu_si256(block.as_ptr().cast::<__m256i>()),
            _mm256_loadu_si256(block.as_ptr().add(32).cast::<__m256i>()),
        )
    };
    let eq = |v: __m256i, b: u8| _mm256_cmpeq_epi8(v, _mm256_set1_epi8(b as i8));
    let bits = |f: &dyn Fn(__m256i) -> __m256i| {
        let (l, h) = (_mm256_movemask_epi8(f(lo)), _mm256_movemask_epi8(f(hi)));
        opaque(u64::from(l as u32) | (u64::from(h as u32) << 32))
    };
    let table = |t: [u8; 16]| {
        // SAFETY: reads the 16 bytes of `t`.
        let half = unsafe { _mm_loadu_si128(t.as_ptr().cast::<__m128i>()) };
        _mm256_broadcastsi128_si256(half)
    };
    let (blanks, ops) = (table(BLANKS), table(OPS));
    let control = bits(&|v| _mm256_cmpeq_epi8(_mm256_min_epu8(v, _mm256_set1_epi8(0x1f)), v));
    let op = bits(&|v| {
        let folded = _mm256_or_si256(v, _mm256_set1_epi8(0x20));
        _mm256_cmpeq_epi8(_mm256_shuffle_epi8(ops, v), folded)
    });
    Block {
        quote: bits(&|v| eq(v, b'"')),
        backslash: bits(&|v| eq(v, b'\\')),
        space: bits(&|v| _mm256_cmpeq_epi8(_mm256_shuffle_epi8(blanks, v), v)),
        op: op & !control,
        control,
    }
}

/// The same masks with AVX-512, the whole block in one register: each
/// compare gives its mask.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw")]
fn classify_avx512(block: &[u8; 64]) -> Block {
    use std::arch::x86_64::*;
    // SAFETY: the load reads the block's 64 bytes.
    let v = unsafe { _mm512_loadu_si512(block.as_ptr().cast()) };
    let eq = |b: u8| _mm512_cmpeq_epi8_mask(v, _mm512_set1_epi8(b as i8));
    // The tables in each 16-byte lane.
    let table = |t: [u8; 16]| {
        // SAFETY: reads the 16 bytes of `t`.
        let lane = unsafe { _mm_loadu_si128(t.as_ptr().cast::<__m128i>()) };
        _mm512_broadcast_i32x4(lane)
    };
    let (blanks, ops) = (table(BLANKS), table(OPS));
    let control = _mm512_cmple_epu8_mask(v, _mm512_set1_epi8(0x1f));
    let folded = _mm512_or_si512(v, _mm512_set1_epi8(0x20));
    let op = _mm512_cmpeq_epi8_mask(_mm512_shuffle_epi8(ops, v), folded);
    Block {
        quote: eq(b'"'),
        backslash: eq(b'\\'),
        space: _mm512_cmpeq_epi8_mask(_mm512_shuffle_epi8(blanks, v), v),
        op: op & !control,
        control,
    }
}

#[cfg(not(target_arch = "x86_64"))]
fn classify_bytes(block: &[u8; 64]) -> Block {
    let mut out = Block::default();
    for (i, &b) in block.iter().enumerate() {
        let bit = 1u64 << i;
        match b {
            b'"' => out.quote |= bit,
            b'\\' => out.backslash |= bit,
            b' ' => out.space |= bit,
            b'\t' | b'\n' | b'\r' => out.space |= bit,
            b'{' | b'}' | b'[' | b']' | b':' | b',' => out.op |= bit,
            _ => {}
        }
        if b < 0x20 {
            out.control |= bit;
        }
    }
    out
}

/// `prefix_xor` as one carry-less multiplication by all ones.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "pclmulqdq")]
fn prefix_xor_clmul(x: u64) -> u64 {
    use std::arch::x86_64::*;
    let product = _mm_clmulepi64_si128(_mm_set_epi64x(0, x as i64), _mm_set1_epi8(-1), 0);
    _mm_cvtsi128_si64(product) as u64
}

/// Bit i set when an odd number of bits at or below i are set in `x`.
fn prefix_xor(mut x: u64) -> u64 {
    x ^= x << 1;
    x ^= x << 2;
    x ^= x << 4;
    x ^= x << 8;
    x ^= x << 16;
    x ^= x << 32;
    x
}

/// The bytes a backslash escapes (the byte after each odd-length run of
/// backslashes), carrying a run that crosses into the next block in
/// `carry` (simdjson's branchless method).
fn escaped(backslash: u64, carry: &mut u64) -> u64 {
    const EVEN: u64 = 0x5555_5555_5555_5555;
    let backslash = backslash & !*carry;
    let follows = (backslash << 1) | *carry;
    let odd_starts = backslash & !EVEN & !follows;
    let (even_runs, overflow) = odd_starts.overflowing_add(backslash);
    *carry = u64::from(overflow);
    (EVEN ^ (even_runs << 1)) & follows
}

/// What `Splitter` reads of one 64-byte block: quotes, backslashes, and
/// brackets opening (`{` `[`) and closing (`}` `]`).
struct Marks {
    quote: u64,
    backslash: u64,
    open: u64,
    close: u64,
}

#[cfg(target_arch = "x86_64")]
#[inline(always)]
fn marks_sse2(block: &[u8; 64]) -> Marks {
    use std::arch::x86_64::*;
    let mut out = Marks {
        quote: 0,
        backslash: 0,
        open: 0,
        close: 0,
    };
    // SAFETY: SSE2 is part of the x86_64 baseline; every load reads 16 of
    // the block's 64 bytes.
    unsafe {
        for k in 0..4 {
            let v = _mm_loadu_si128(block.as_ptr().add(16 * k).cast::<__m128i>());
            let mask = |m: __m128i| u64::from(_mm_movemask_epi8(m) as u16) << (16 * k);
            let eq = |b: u8| _mm_cmpeq_epi8(v, _mm_set1_epi8(b as i8));
            // `[` and `]` become `{` and `}` once bit 5 is set; no other byte does.
            let folded = _mm_or_si128(v, _mm_set1_epi8(0x20));
            let folded_eq = |b: u8| _mm_cmpeq_epi8(folded, _mm_set1_epi8(b as i8));
            out.quote |= mask(eq(b'"'));
            out.backslash |= mask(eq(b'\\'));
            out.open |= mask(folded_eq(b'{'));
            out.close |= mask(folded_eq(b'}'));
        }
    }
    out
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn marks_avx2(block: &[u8; 64]) -> Marks {
    use std::arch::x86_64::*;
    // SAFETY: the loads read the block's two halves.
    let (lo, hi) = unsafe {
        (
            _mm256_loadu_si256(block.as_ptr().cast::<__m256i>()),
            _mm256_loadu_si256(block.as_ptr().add(32).cast::<__m256i>()),
        )
    };
    let bits = |f: &dyn Fn(__m256i) -> __m256i| {
        let (l, h) = (_mm256_movemask_epi8(f(lo)), _mm256_movemask_epi8(f(hi)));
        opaque(u64::from(l as u32) | (u64::from(h as u32) << 32))
    };
    let eq = |b: u8| move |v: __m256i| _mm256_cmpeq_epi8(v, _mm256_set1_epi8(b as i8));
    let folded_eq = |b: u8| {
        move |v: __m256i| {
            let folded = _mm256_or_si256(v, _mm256_set1_epi8(0x20));
            _mm256_cmpeq_epi8(folded, _mm256_set1_epi8(b as i8))
        }
    };
    Marks {
        quote: bits(&eq(b'"')),
        backslash: bits(&eq(b'\\')),
        open: bits(&folded_eq(b'{')),
        close: bits(&folded_eq(b'}')),
    }
}

impl Splitter {
    /// `scan` over the whole 64-byte blocks at the start of `bytes`, from
    /// bit masks as the index is built: the bytes read, and the last cut
    /// in them. A block holding a backslash outside strings (which JSON
    /// does not allow, and the byte-by-byte reading takes as a plain byte)
    /// is read byte by byte, so both readings cut alike on any input.
    pub(super) fn blocks(&mut self, bytes: &[u8]) -> (usize, Option<(usize, Top)>) {
        #[cfg(target_arch = "x86_64")]
        {
            if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("pclmulqdq") {
                // SAFETY: the features the function is built for are there.
                return unsafe { self.blocks_avx2(bytes) };
            }
            self.blocks_with(bytes, marks_sse2, prefix_xor)
        }
        #[cfg(not(target_arch = "x86_64"))]
        (0, None)
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,pclmulqdq")]
    fn blocks_avx2(&mut self, bytes: &[u8]) -> (usize, Option<(usize, Top)>) {
        self.blocks_with(bytes, |block| marks_avx2(block), |x| prefix_xor_clmul(x))
    }

    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    fn blocks_with(
        &mut self,
        bytes: &[u8],
        marks: impl Fn(&[u8; 64]) -> Marks,
        prefix_xor: impl Fn(u64) -> u64,
    ) -> (usize, Option<(usize, Top)>) {
        let mut cut = None;
        let mut base = 0;
        for block in bytes.chunks_exact(64) {
            let block: &[u8; 64] = block.try_into().expect("64 bytes");
            let m = marks(block);
            let mut carry = u64::from(self.escape);
            let quote = m.quote & !escaped(m.backslash, &mut carry);
            // Set from an opening quote up to (not including) its closing one.
            let inside = prefix_xor(quote) ^ 0u64.wrapping_sub(u64::from(self.in_string));
            if m.backslash & !inside != 0 {
                cut = self.scan_bytes(&bytes[..base + 64], base).or(cut);
                base += 64;
                continue;
            }
            self.in_string = inside >> 63 == 1;
            self.escape = carry == 1;
            let open = m.open & !inside;
            let mut brackets = open | (m.close & !inside);
            while brackets != 0 {
                let i = brackets.trailing_zeros() as usize;
                if open >> i & 1 == 1 {
                    if self.depth == 0 && block[i] == b'[' {
                        self.in_array = true;
                    }
                    self.depth += 1;
                } else if self.depth > 0 {
                    self.depth -= 1;
                    if self.depth == 0 {
                        self.in_array = false;
                        cut = Some((base + i + 1, Top::Between));
                    } else if self.depth == 1 && self.in_array {
                        cut = Some((base + i + 1, Top::ArrayAfterElement));
                    }
                }
                brackets &= brackets - 1;
            }
            base += 64;
        }
        (base, cut)
    }
}

/// Slots past the positions' length that one block's flattening may
/// write (junk past its positions, which the length leaves out).
const SPARE: usize = 72;

/// Writes `base + i` for each bit i set in `bits`, in order, to the first
/// of `spare`'s slots. Eight positions a round, without a branch for each
/// (as simdjson does).
#[inline(always)]
fn flatten(spare: &mut [MaybeUninit<u32>; SPARE], mut bits: u64, base: usize) {
    let count = bits.count_ones() as usize;
    let mut n = 0;
    while n < count {
        for k in 0..8 {
            let at = base + bits.trailing_zeros() as usize;
            spare[(n + k) & 63].write(at as u32);
            bits &= bits.wrapping_sub(1);
        }
        n += 8;
    }
}

/// The positions of the bits set in each byte value, in order, padded.
const BIT_INDEX: [[u8; 8]; 256] = {
    let mut table = [[0u8; 8]; 256];
    let mut byte = 0;
    while byte < 256 {
        let (mut bit, mut n) = (0, 0);
        while bit < 8 {
            if byte >> bit & 1 == 1 {
                table[byte][n] = bit as u8;
                n += 1;
            }
            bit += 1;
        }
        byte += 1;
    }
    table
};

/// `flatten` a byte of `bits` at a time, without a loop that runs as many
/// rounds as there are positions (its last round, mispredicted, cost a
/// stall a block): each byte's positions come from `BIT_INDEX`, eight
/// widened and stored at once, and the next byte's go just past them.
///
/// # Safety
///
/// The CPU has AVX2 and POPCNT.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,popcnt")]
unsafe fn flatten_avx2(spare: &mut [MaybeUninit<u32>; SPARE], bits: u64, base: usize) {
    use std::arch::x86_64::*;
    let mut at = _mm256_set1_epi32(base as i32);
    let eight = _mm256_set1_epi32(8);
    let mut n = 0;
    for k in 0..8 {
        let byte = (bits >> (8 * k)) as u8;
        let index = u64::from_le_bytes(BIT_INDEX[usize::from(byte)]);
        let v = _mm256_add_epi32(_mm256_cvtepu8_epi32(_mm_cvtsi64_si128(index as i64)), at);
        // SAFETY: at most 56 positions come before the last byte's, so the
        // eight slots from `n` lie within the 72.
        unsafe { _mm256_storeu_si256(spare.as_mut_ptr().add(n).cast(), v) };
        n += byte.count_ones() as usize;
        at = _mm256_add_epi32(at, eight);
    }
}

/// `flatten` sixteen bits at a time: the positions of each sixteen
/// packed into a register (`vpcompressd`, kept off memory, where it is
/// slow on some CPUs) and stored at once, the next sixteen's just past
/// them.
///
/// # Safety
///
/// The CPU has AVX-512F and POPCNT.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,popcnt")]
unsafe fn flatten_avx512(spare: &mut [MaybeUninit<u32>; SPARE], bits: u64, base: usize) {
    use std::arch::x86_64::*;
    let iota = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
    let mut at = _mm512_add_epi32(iota, _mm512_set1_epi32(base as i32));
    let sixteen = _mm512_set1_epi32(16);
    let mut n = 0;
    for k in 0..4 {
        let some = (bits >> (16 * k)) as u16;
        let v = _mm512_maskz_compress_epi32(some, at);
        // SAFETY: at most 48 positions come before the last sixteen bits',
        // so the sixteen slots from `n` lie within the 72.
        unsafe { _mm512_storeu_si512(spare.as_mut_ptr().add(n).cast(), v) };
        n += some.count_ones() as usize;
        at = _mm512_add_epi32(at, sixteen);
    }
}

impl Index {
    /// Starts indexing `buf`, which starts outside any string. False when
    /// the walk cannot take it because it is over 4 GiB; the walk also
    /// stops at a control character inside a string or an invalid escape.
    /// Either way the scanner reads on alone.
    pub fn reset(&mut self, buf: &[u8]) -> bool {
        self.pos.clear();
        self.escaped.clear();
        (self.built, self.cursor, self.len) = (0, 0, buf.len());
        (
            self.escape_carry,
            self.in_string,
            self.escaped_carry,
            self.scalar_carry,
        ) = (0, 0, 0, 0);
        self.bad = u32::try_from(buf.len()).is_err();
        self.simd = Simd::detect();
        !self.bad
    }

    /// Indexes the next window of `buf`. False when all of it is indexed,
    /// or it holds what the walk cannot take (`bad` then says so).
    fn extend(&mut self, buf: &[u8]) -> bool {
        if self.bad || self.built >= buf.len() {
            return false;
        }
        #[cfg(target_arch = "x86_64")]
        match self.simd {
            // SAFETY: `reset` found the features the functions are built for.
            Simd::Avx512 => unsafe { self.extend_avx512(buf) },
            Simd::Avx2 => unsafe { self.extend_avx2(buf) },
            Simd::Base => self.extend_with(buf, classify_sse2, prefix_xor, flatten),
        }
        #[cfg(not(target_arch = "x86_64"))]
        self.extend_with(buf, classify_bytes, prefix_xor, flatten);
        !self.bad
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,bmi1,popcnt,pclmulqdq")]
    fn extend_avx2(&mut self, buf: &[u8]) {
        self.extend_with(
            buf,
            |block| classify_avx2(block),
            |x| prefix_xor_clmul(x),
            // SAFETY: `reset` found AVX2 and POPCNT, which it needs.
            |spare, bits, base| unsafe { flatten_avx2(spare, bits, base) },
        )
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f,avx512bw,bmi1,popcnt,pclmulqdq")]
    fn extend_avx512(&mut self, buf: &[u8]) {
        self.extend_with(
            buf,
            |block| classify_avx512(block),
            |x| prefix_xor_clmul(x),
            // SAFETY: `reset` found AVX-512F and POPCNT, which it needs.
            |spare, bits, base| unsafe { flatten_avx512(spare, bits, base) },
        )
    }

    #[inline(always)]
    fn extend_with(
        &mut self,
        buf: &[u8],
        classify: impl Fn(&[u8; 64]) -> Block,
        prefix_xor: impl Fn(u64) -> u64,
        flatten: impl Fn(&mut [MaybeUninit<u32>; SPARE], u64, usize),
    ) {
        let end = (self.built + WINDOW).min(buf.len());
        let mut blocks = buf[self.built..end].chunks_exact(64);
        let mut tail = [b' '; 64];
        let rest = blocks.remainder();
        tail[..rest.len()].copy_from_slice(rest);
        // Padding past the end is blank, so nothing there is indexed.
        let last = (!rest.is_empty()).then_some(&tail[..]);
        let base = self.built;
        // The positions' masks, flattened once all are found (the walk
        // takes none of a window that holds what it cannot take), and the
        // closing quotes of strings that hold a backslash.
        let mut found = [0u64; WINDOW / 64];
        let mut escaped_strings = [0u64; WINDOW / 64];
        let mut blocks_done = 0;
        // The carries from block to block, in registers: kept in `self`,
        // each block's store and the next one's load of it stood in the
        // chain from block to block.
        let (mut escape_carry, mut in_string, mut escaped_carry, mut scalar_carry) = (
            self.escape_carry,
            self.in_string,
            self.escaped_carry,
            self.scalar_carry,
        );
        for block in (&mut blocks).chain(last) {
            let block: &[u8; 64] = block.try_into().expect("64 bytes");
            let m = classify(block);
            let escaped = escaped(m.backslash, &mut escape_carry);
            let quote = m.quote & !escaped;
            // Set from an opening quote up to (not including) its closing one.
            let inside = prefix_xor(quote) ^ in_string;
            in_string = 0u64.wrapping_sub(inside >> 63);
            if m.control & inside != 0 {
                self.bad = true;
                return;
            }
            let mut esc = escaped;
            while esc != 0 {
                let at = base + 64 * blocks_done + esc.trailing_zeros() as usize;
                let ok = match buf.get(at) {
                    Some(b'u') => buf
                        .get(at + 1..at + 5)
                        .is_some_and(|h| h.iter().all(u8::is_ascii_hexdigit)),
                    Some(&b) => ESCAPABLE[b as usize],
                    None => true,
                };
                if !ok {
                    self.bad = true;
                    return;
                }
                esc &= esc - 1;
            }
            let string = inside | quote;
            let scalar = !(m.space | m.op | string);
            let scalar_start = scalar & !((scalar << 1) | scalar_carry);
            scalar_carry = scalar >> 63;
            found[blocks_done] = (m.op & !string) | quote | scalar_start;
            // A string's backslashes added to its run of `inside` bits carry
            // out of the run onto its closing quote, whatever their number;
            // out of the word when the string goes on into the next block,
            // whose first bit then takes the carry.
            let held = (m.backslash & inside) | escaped_carry;
            let (sum, on) = inside.overflowing_add(held);
            escaped_strings[blocks_done] = sum & !inside;
            escaped_carry = u64::from(on);
            blocks_done += 1;
        }
        (
            self.escape_carry,
            self.in_string,
            self.escaped_carry,
            self.scalar_carry,
        ) = (escape_carry, in_string, escaped_carry, scalar_carry);
        self.escaped
            .extend_from_slice(&escaped_strings[..blocks_done]);
        // Flattened once the window's masks are all found: each block's
        // positions then wait on nothing of the blocks before. Room for
        // all of them at once, and for the junk past the last.
        let found = &found[..blocks_done];
        let total: usize = found.iter().map(|bits| bits.count_ones() as usize).sum();
        self.pos.reserve(total + SPARE);
        let mut len = self.pos.len();
        for (k, &bits) in found.iter().enumerate() {
            // SAFETY: `len` is at most the length before plus `total`, and
            // the room reserved goes `SPARE` slots past that.
            let spare = unsafe {
                &mut *self
                    .pos
                    .as_mut_ptr()
                    .add(len)
                    .cast::<[MaybeUninit<u32>; SPARE]>()
            };
            flatten(spare, bits, base + 64 * k);
            len += bits.count_ones() as usize;
        }
        // SAFETY: `flatten` wrote each block's positions, `count_ones` of
        // them, one block's after the other's.
        unsafe { self.pos.set_len(len) };
        self.built = end;
    }

    /// Indexes all of `buf` a window at a time, dropping each window's
    /// positions once counted (the criterion benches' index stage): the
    /// positions found, or `None` where the walk could not take `buf`.
    pub fn count_all(&mut self, buf: &[u8]) -> Option<usize> {
        self.reset(buf);
        let mut found = 0;
        while self.extend(buf) {
            found += self.pos.len();
            self.pos.clear();
        }
        (!self.bad).then_some(found)
    }

    /// A walk over `buf` (the buffer indexed) from where the last one
    /// stopped.
    pub fn walk<'a>(&'a mut self, buf: &'a [u8]) -> Walk<'a> {
        // What makes `Walk::at`'s unchecked read sound.
        assert_eq!(buf.len(), self.len, "a walk over the buffer indexed");
        Walk {
            buf,
            i: self.cursor,
            pos: self.pos.as_ptr(),
            len: self.pos.len(),
            index: self,
        }
    }
}

/// Whether the string whose closing quote is at `close` holds a
/// backslash, given the index's bits of such quotes.
#[inline(always)]
fn holds_backslash(escaped: &[u64], close: usize) -> bool {
    escaped[close / 64] >> (close % 64) & 1 != 0
}

/// For `run`, which starts with a digit 1 to 9 (no leading zero):
/// `Some(true)` when it is all digits, `Some(false)` when one point stands
/// between two of its digits, `None` for anything else.
#[inline(always)]
fn plain_number(run: &[u8]) -> Option<bool> {
    let mut point = false;
    for (i, &b) in run.iter().enumerate() {
        if !b.is_ascii_digit() {
            if b != b'.' || point || i + 1 == run.len() {
                return None;
            }
            point = true;
        }
    }
    Some(!point)
}

/// `plain_number(&buf[start..start + len])`, from one 16-byte load when
/// the run is at most 16 bytes long and the load stays inside `buf`.
#[inline(always)]
pub(crate) fn plain_number_at(buf: &[u8], start: usize, len: usize) -> Option<bool> {
    #[cfg(target_arch = "x86_64")]
    if (1..=16).contains(&len) && buf.len() >= 16 && start <= buf.len() - 16 {
        use std::arch::x86_64::*;
        // SAFETY: SSE2 is part of the x86_64 baseline; the load reads
        // `buf[start..start + 16]`, inside `buf` as checked above.
        let (digits, points) = unsafe {
            let v = _mm_loadu_si128(buf.as_ptr().add(start).cast::<__m128i>());
            // A digit less '0' is 0 to 9, and no other byte is.
            let d = _mm_sub_epi8(v, _mm_set1_epi8(b'0' as i8));
            let digit = _mm_cmpeq_epi8(_mm_min_epu8(d, _mm_set1_epi8(9)), d);
            let point = _mm_cmpeq_epi8(v, _mm_set1_epi8(b'.' as i8));
            (
                _mm_movemask_epi8(digit) as u32,
                _mm_movemask_epi8(point) as u32,
            )
        };
        let other = !digits & ((1 << len) - 1);
        if other == 0 {
            return Some(true);
        }
        // One byte is not a digit: a point, not the last byte.
        let one_point = other & (other - 1) == 0 && other & points != 0;
        return (one_point && other < 1 << (len - 1)).then_some(false);
    }
    plain_number(&buf[start..start + len])
}

/// A walk over an index from a position of it on.
///
/// The walking functions take the next position to read (`i`) as an
/// argument and hand it back rather than keep it in `self`: a position
/// stored through `self` at every step and loaded again at the next made
/// each step wait for the store.
pub(crate) struct Walk<'a> {
    buf: &'a [u8],
    index: &'a mut Index,
    /// The next position to read in `index.pos`, between walks.
    i: usize,
    /// `index.pos` as it is until `more` or `seek` changes it, kept here
    /// so that a read needs no trip through `index`.
    pos: *const u32,
    len: usize,
}

impl Drop for Walk<'_> {
    fn drop(&mut self) {
        self.index.cursor = self.i;
    }
}

/// Containers nested deeper than this (past selected objects) are left to
/// the scanner, which has no limit.
const MAX_DEPTH: u32 = 64;

/// How far past its key's opening quote a member of a selected object
/// reads when its value is a string or a scalar: the key's closing quote,
/// the colon, the value's first position and the one after it. A
/// container value's reading checks its own.
const MEMBER: usize = 4;

impl Walk<'_> {
    /// The k-th position from the i-th, and the byte there (`i` moves back
    /// when positions walked past are dropped).
    #[inline(always)]
    fn at(&mut self, i: &mut usize, k: usize) -> Option<(usize, u8)> {
        self.read::<true>(i, k)
    }

    /// `at`; unless `CHECKED`, the caller has made sure that the k-th
    /// position from the i-th is there (`i + k < len`).
    #[inline(always)]
    fn read<const CHECKED: bool>(&mut self, i: &mut usize, k: usize) -> Option<(usize, u8)> {
        debug_assert!(CHECKED || *i + k < self.len);
        if CHECKED && *i + k >= self.len {
            // The positions walked past are dropped whether or not the
            // k-th comes: the next one is then the first left.
            self.i = *i;
            *i = 0;
            if !self.more(k) {
                return None;
            }
        }
        // SAFETY: `pos` and `len` are those of `index.pos` (`refresh`
        // follows every change to it), and `more` returns only with the
        // k-th position there (unchecked, the caller saw it there). Every
        // position is below the length of the buffer indexed (padding past
        // its end is blank), which `walk` found equal to the length of
        // `buf`.
        unsafe {
            let p = *self.pos.add(*i + k) as usize;
            Some((p, *self.buf.get_unchecked(p)))
        }
    }

    /// Takes `index.pos` as it now is.
    #[inline(always)]
    fn refresh(&mut self) {
        (self.pos, self.len) = (self.index.pos.as_ptr(), self.index.pos.len());
    }

    /// Indexes windows until the k-th position from the next one (at
    /// `self.i`) is there, dropping the positions walked past. False at
    /// the end of the buffer, or where the walk cannot go on.
    #[cold]
    #[inline(never)]
    fn more(&mut self, k: usize) -> bool {
        self.index.pos.drain(..self.i);
        self.i = 0;
        let more = loop {
            if k < self.index.pos.len() {
                break true;
            }
            if !self.index.extend(self.buf) {
                break false;
            }
        };
        self.refresh();
        more
    }

    /// Moves to the first position at or past byte `pos`, up to which the
    /// scanner has read. False when the walk cannot go on from there.
    pub fn seek(&mut self, pos: usize) -> bool {
        loop {
            let k = self.index.pos.partition_point(|&p| (p as usize) < pos);
            if k < self.index.pos.len() || self.index.built >= self.buf.len() {
                self.i = k;
                self.refresh();
                return true;
            }
            self.index.pos.clear();
            self.i = 0;
            let more = self.index.extend(self.buf);
            self.refresh();
            if !more && self.index.bad {
                return false;
            }
        }
    }

    /// The next record, as `Scanner::next_record` reads it from byte `pos`
    /// in the top-level state `top`; both move on only when the walk takes
    /// the record. `Some(None)`: only blanks remain.
    pub fn next_record(
        &mut self,
        top: &mut Top,
        pos: &mut usize,
        sel: &Selector,
        caps: &mut [Capture],
    ) -> Option<Option<(usize, usize)>> {
        let mut i = self.i;
        let mut state = *top;
        let start = loop {
            let Some((p, b)) = self.at(&mut i, 0) else {
                if self.index.bad {
                    return None;
                }
                self.i = i;
                *top = state;
                *pos = self.buf.len();
                return Some(None);
            };
            match (state, b) {
                (Top::Between, b'[') => state = Top::ArrayStart,
                (Top::ArrayStart | Top::ArrayAfterElement, b']') => state = Top::Between,
                (Top::ArrayAfterElement, b',') => match self.at(&mut i, 1)? {
                    (p, b'{') => {
                        i += 1;
                        break p;
                    }
                    _ => return None,
                },
                (Top::Between | Top::ArrayStart, b'{') => break p,
                _ => return None,
            }
            i += 1;
        };
        caps.iter_mut().for_each(Capture::clear);
        let (i, end) = self.object(i, Some(0), sel, caps)?;
        self.i = i;
        *top = if state == Top::Between {
            Top::Between
        } else {
            Top::ArrayAfterElement
        };
        *pos = end;
        Some(Some((start, end)))
    }

    /// The object whose `{` is the i-th position, its selected paths
    /// captured into `caps`: the next position past it, and the byte just
    /// past its `}`. `None`: the walk does not take it.
    fn object(
        &mut self,
        mut i: usize,
        node: Option<usize>,
        sel: &Selector,
        caps: &mut [Capture],
    ) -> Option<(usize, usize)> {
        i += 1; // '{'
        if let (p, b'}') = self.at(&mut i, 0)? {
            return Some((i + 1, p + 1));
        }
        loop {
            // A member whose value is a string or a scalar reads at most
            // `MEMBER` positions past its first: one check for all of them.
            if i + MEMBER < self.len || self.ahead(std::mem::take(&mut i)) {
                self.take_member::<false>(&mut i, node, sel, caps)?;
            } else {
                self.take_member::<true>(&mut i, node, sel, caps)?;
            }
            let (p, b) = self.at(&mut i, 0)?;
            i += 1;
            match b {
                b',' => {}
                b'}' => return Some((i, p + 1)),
                _ => return None,
            }
        }
    }

    /// Indexes on until the `MEMBER`-th position from the i-th is there,
    /// which is then the first; false at the end of the buffer. (`i` by
    /// value: a reference to the walk's position would keep it in memory
    /// for all of `object`.)
    #[cold]
    #[inline(never)]
    fn ahead(&mut self, i: usize) -> bool {
        self.i = i;
        self.more(MEMBER)
    }

    /// The member of a selected object whose key is the i-th position,
    /// up to the byte after its value, its value captured when its path is
    /// selected. Unless `CHECKED`, the `MEMBER`-th position from the i-th
    /// is there.
    #[inline(always)]
    fn take_member<const CHECKED: bool>(
        &mut self,
        i: &mut usize,
        node: Option<usize>,
        sel: &Selector,
        caps: &mut [Capture],
    ) -> Option<()> {
        let (ks, ke) = self.string::<CHECKED>(i)?;
        if self.read::<CHECKED>(i, 0)?.1 != b':' {
            return None;
        }
        *i += 1;
        let entry = match node {
            // A key with an escape matches in its unescaped form.
            Some(n) => match sel.find_in(n, self.buf, ks, ke) {
                // Equal bytes, and no path has an escape: neither has
                // the key.
                Some(entry) if !sel.escapes() => Some(entry),
                found if !holds_backslash(&self.index.escaped, ke) => found,
                _ => {
                    let key = &mut self.index.scratch;
                    key.clear();
                    if unescape_into(&self.buf[ks..ke], key) {
                        sel.find(n, key)
                    } else {
                        None
                    }
                }
            },
            None => None,
        };
        match entry {
            None => self.skip::<CHECKED>(i),
            Some(entry) => {
                let (start, b) = self.read::<CHECKED>(i, 0)?;
                let value = match (entry.child, b) {
                    (Some(child), b'{') => {
                        let (next, end) = self.object(*i, Some(child), sel, caps)?;
                        *i = next;
                        Value {
                            start,
                            end,
                            kind: Kind::Object,
                        }
                    }
                    _ => self.value::<CHECKED>(i, start, b)?,
                };
                entry.capture(value, caps);
                Some(())
            }
        }
    }

    /// A string at the i-th position: its content's span.
    #[inline(always)]
    fn string<const CHECKED: bool>(&mut self, i: &mut usize) -> Option<(usize, usize)> {
        match self.read::<CHECKED>(i, 0)? {
            (open, b'"') => self.string_from::<CHECKED>(i, open),
            _ => None,
        }
    }

    /// The string whose opening quote is the i-th position, at `open`.
    #[inline(always)]
    fn string_from<const CHECKED: bool>(
        &mut self,
        i: &mut usize,
        open: usize,
    ) -> Option<(usize, usize)> {
        let (close, c) = self.read::<CHECKED>(i, 1)?;
        if c != b'"' {
            return None;
        }
        *i += 2;
        Some((open + 1, close))
    }

    /// The value whose first byte `b` is the i-th position, at `start`.
    #[inline(always)]
    fn value<const CHECKED: bool>(&mut self, i: &mut usize, start: usize, b: u8) -> Option<Value> {
        match b {
            b'"' => {
                let (start, end) = self.string_from::<CHECKED>(i, start)?;
                let escaped = holds_backslash(&self.index.escaped, end);
                Some(Value {
                    start,
                    end,
                    kind: Kind::string(escaped),
                })
            }
            b'{' | b'[' => {
                let (next, end) = self.skip_container(*i)?;
                *i = next;
                Some(Value {
                    start,
                    end,
                    kind: if b == b'{' { Kind::Object } else { Kind::Array },
                })
            }
            b'}' | b']' | b':' | b',' => None,
            _ => self.scalar::<CHECKED>(i, start, b),
        }
    }

    /// The value at the i-th position, validated and skipped.
    #[inline(always)]
    fn skip<const CHECKED: bool>(&mut self, i: &mut usize) -> Option<()> {
        match self.read::<CHECKED>(i, 0)? {
            (p, b'"') => self.string_from::<CHECKED>(i, p).map(drop),
            (_, b'{' | b'[') => {
                *i = self.skip_container(*i)?.0;
                Some(())
            }
            (_, b'}' | b']' | b':' | b',') => None,
            (p, b) => self.scalar::<CHECKED>(i, p, b).map(drop),
        }
    }

    /// A number or literal whose first byte `b` is the i-th position, at
    /// `start`: it must fill the run of bytes up to the next blank or
    /// structural byte.
    #[inline(always)]
    fn scalar<const CHECKED: bool>(&mut self, i: &mut usize, start: usize, b: u8) -> Option<Value> {
        *i += 1;
        // No next position: the end of the buffer, or a block the first
        // pass could not take, where the caller's next read fails anyway.
        let next = self
            .read::<CHECKED>(i, 0)
            .map_or(self.buf.len(), |(p, _)| p);
        let run = &self.buf[start..next];
        let (len, kind) = match b {
            // Digits up to the next structural byte, with at most one point
            // between two of them: the common numbers, without the
            // grammar's steps.
            b'1'..=b'9' if let Some(integer) = plain_number_at(self.buf, start, run.len()) => {
                (run.len(), Kind::number(integer))
            }
            _ => scalar_len(run, b)?,
        };
        // Only blanks may follow before the next structural byte.
        if !run[len..]
            .iter()
            .all(|&b| matches!(b, b' ' | b'\t' | b'\n' | b'\r'))
        {
            return None;
        }
        Some(Value {
            start,
            end: start + len,
            kind,
        })
    }

    /// A container at the i-th position, validated and skipped: the next
    /// position past it, and the byte just past its close. The common one,
    /// holding only strings and scalars, in one loop; one holding another
    /// container goes on in `skip_nested` from there.
    fn skip_container(&mut self, mut i: usize) -> Option<(usize, usize)> {
        let (_, open) = self.at(&mut i, 0)?;
        let object = open == b'{';
        let close = if object { b'}' } else { b']' };
        i += 1;
        let (p, b) = self.at(&mut i, 0)?;
        if b == close {
            return Some((i + 1, p + 1));
        }
        loop {
            if self.member(&mut i, object)? {
                return self.skip_nested(i, u64::from(object), 1);
            }
            let (p, b) = self.at(&mut i, 0)?;
            i += 1;
            match b {
                b',' => {}
                _ if b == close => return Some((i, p + 1)),
                _ => return None,
            }
        }
    }

    /// `skip_container` without recursion from a container opening at the
    /// i-th position, inside `depth` open ones (bit d of `objects` set:
    /// the one at depth d is an object).
    #[inline(never)]
    fn skip_nested(
        &mut self,
        mut i: usize,
        mut objects: u64,
        mut depth: u32,
    ) -> Option<(usize, usize)> {
        'open: loop {
            let (_, open) = self.at(&mut i, 0)?;
            if depth == MAX_DEPTH {
                return None;
            }
            let object = open == b'{';
            objects = (objects & !(1 << depth)) | (u64::from(object) << depth);
            depth += 1;
            i += 1;
            let close = if object { b'}' } else { b']' };
            let (p, b) = self.at(&mut i, 0)?;
            let mut end = p + 1;
            if b == close {
                i += 1;
                depth -= 1;
            } else if self.member(&mut i, object)? {
                continue 'open;
            }
            // After a value inside the innermost open container.
            loop {
                if depth == 0 {
                    return Some((i, end));
                }
                let object = objects >> (depth - 1) & 1 == 1;
                let (p, b) = self.at(&mut i, 0)?;
                i += 1;
                match b {
                    b',' => {
                        if self.member(&mut i, object)? {
                            continue 'open;
                        }
                    }
                    b'}' if object => {
                        depth -= 1;
                        end = p + 1;
                    }
                    b']' if !object => {
                        depth -= 1;
                        end = p + 1;
                    }
                    _ => return None,
                }
            }
        }
    }

    /// One member of a container being skipped: a key and `:` in an object,
    /// then a value. True when the value opens a container, left at the
    /// i-th position.
    #[inline(always)]
    fn member(&mut self, i: &mut usize, object: bool) -> Option<bool> {
        if object {
            self.string::<true>(i)?;
            if self.at(i, 0)?.1 != b':' {
                return None;
            }
            *i += 1;
        }
        match self.at(i, 0)? {
            (_, b'{' | b'[') => Some(true),
            (p, b'"') => self.string_from::<true>(i, p).map(|_| false),
            (p, b) => self.scalar::<true>(i, p, b).map(|_| false),
        }
    }
}

/// The length and kind of the number or literal starting `run` (its first
/// byte `b`) off the plain-number path. Out of line: rare, and large.
#[inline(never)]
fn scalar_len(run: &[u8], b: u8) -> Option<(usize, Kind)> {
    match b {
        b'-' | b'0'..=b'9' => match number_len(run) {
            Ok((len, integer)) => Some((len, Kind::number(integer))),
            Err(_) => None,
        },
        b't' if run.starts_with(b"true") => Some((4, Kind::True)),
        b'f' if run.starts_with(b"false") => Some((5, Kind::False)),
        b'n' if run.starts_with(b"null") => Some((4, Kind::Null)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decode::json::{Scanner, SyntaxError};
    use crate::testing::below;

    /// Everything a scanner reports over a buffer, resynchronising after
    /// each error as decoding does.
    fn reading(buf: &[u8], top: Top, index: Option<Index>) -> Vec<String> {
        let sel = Selector::new(&["id", "n.p", "n", "g", "d.e", "x y", "kA", r"b\n"]);
        let mut caps = vec![Capture::default(); sel.slots()];
        let mut scanner = Scanner::new(buf, top);
        if simdutf8::basic::from_utf8(buf).is_ok() {
            scanner = scanner.utf8_checked();
        }
        if let Some(index) = index {
            scanner = scanner.indexed(index);
        }
        let mut out = Vec::new();
        loop {
            match scanner.next_record(&sel, &mut caps) {
                Ok(Some(span)) => {
                    let values: Vec<_> = caps.iter().map(|c| c.value()).collect();
                    out.push(format!("{span:?} {values:?}"));
                }
                Ok(None) => break,
                Err(e) => {
                    let SyntaxError {
                        record_start, pos, ..
                    } = e;
                    out.push(format!("{e:?} {}", e.describe(0)));
                    scanner.resync(record_start, pos);
                }
            }
            out.push(format!("{} {:?}", scanner.pos(), scanner.top()));
        }
        out
    }

    /// The walk takes a record only as the scanner reads it, and leaves it
    /// every other one: the same records, captures, errors and positions,
    /// on valid input and on thousands of corruptions of it.
    /// Numbers and near-numbers, captured and skipped, in objects and
    /// arrays, with and without blanks after them.
    #[test]
    fn plain_numbers_read_from_one_load_as_byte_by_byte() {
        let alphabet = b"0123456789..-e ,";
        let mut next = below(0x2545_F491_4F6C_DD1Du64);
        for _ in 0..20_000 {
            // Mostly digits, so that runs of up to 16 bytes and past are
            // plain numbers, or nearly.
            let len = 1 + next(24);
            let buf: Vec<u8> = (0..len)
                .map(|_| match next(4) {
                    0 => alphabet[next(alphabet.len())],
                    _ => b'1' + next(9) as u8,
                })
                .collect();
            for start in 0..buf.len() {
                for end in start + 1..=buf.len() {
                    let got = plain_number_at(&buf[..], start, end - start);
                    let want = plain_number(&buf[start..end]);
                    assert_eq!(got, want, "{:?}", String::from_utf8_lossy(&buf[start..end]));
                }
            }
        }
    }

    #[test]
    fn numbers_are_walked_as_the_scanner_reads_them() {
        let long = "9".repeat(30);
        let numbers = [
            "0", "00", "01", "-0", "-01", "10", "1", "123", "1.5", "1.", ".5", "-", "--1", "1e",
            "1e5", "1E+5", "1e-", "0x1", "1a", "1 2", "1.5.5", "+1", "0.0", "-0.0e-0", &long,
            "87.35", "10.0", "1..2", "1.x", "1.5e3", "1.5E", "12.", "3.-1", "1.5 .5",
        ];
        for n in numbers {
            for blank in ["", " ", "\t\n"] {
                for record in [
                    format!("{{\"id\":{n}{blank}}}"),
                    format!("{{\"zz\":{n}{blank},\"id\":1}}"),
                    format!("{{\"g\":[{n}{blank},{n}]}}"),
                ] {
                    let input = record.as_bytes();
                    let want = reading(input, Top::Between, None);
                    let got = reading(input, Top::Between, Some(Index::default()));
                    assert_eq!(got, want, "{record:?}");
                }
            }
        }
    }

    #[test]
    fn the_indexed_scanner_reads_as_the_scanner_does() {
        let seeds: [&[u8]; 6] = [
            br#"{"id":1,"ts":"2019-01-10T22:34:04.5+01:00","g":["a",null,2,true,{"q":[[]]}],"n":{"p":1.5e3,"z":{}},"d":"x\"\u00e9\ud83d\ude00\n","c":-0.5E-3}"#,
            b"[{\"id\":\"a\",\"n\":{\"p\":\"7\"},\"g\":false} , {\"x y\":2.0,\"d\":{\"e\":null}}]\n{\"k\\u0041\":1}",
            b"{\"id\":\"\xc3\xa9\",\"n\":1e400}\n{\"id\":18446744073709551616,\"n\":{\"p\":{\"p\":1}}}\r\n\t{ }",
            b"{\"id\" : [ 1 , 2 ] , \"n\" : { \"p\" : true } }{\"id\":\"\\\\\",\"g\":\"}{\"}",
            br#"{"a":"0123456789012345678901234567890123456789012345678901234567890","id":"\\\"\\","n":{"p":"\\"},"g":[{"h":[1,{"i":"]"}]}]}"#,
            br#"{"b\\n":1,"b\n":2}{"b\n":3}{"b\u005cn":[4]}"#,
        ];
        let noise = b"{}[]\\\",:0-1eE.tfnu \n\t\x01\xff\xc3";
        let mut next = below(0x2545_F491_4F6C_DD1Du64);
        for round in 0..6000 {
            let mut input = seeds[round % seeds.len()].to_vec();
            if round >= seeds.len() {
                // Repeated so that records cross 64-byte blocks anywhere.
                for _ in 0..next(3) {
                    input.extend_from_within(..);
                }
                for _ in 0..1 + next(4) {
                    let at = next(input.len() + 1);
                    match next(5) {
                        0 if at < input.len() => input[at] = noise[next(noise.len())],
                        1 => input.insert(at, noise[next(noise.len())]),
                        2 if at < input.len() => {
                            input.remove(at);
                        }
                        3 => input.truncate(at),
                        _ => input.insert(at, b' '),
                    }
                }
            }
            for top in [Top::Between, Top::ArrayStart, Top::ArrayAfterElement] {
                let want = reading(&input, top, None);
                let got = reading(&input, top, Some(Index::default()));
                assert_eq!(
                    got,
                    want,
                    "{:?} from {top:?}",
                    String::from_utf8_lossy(&input)
                );
            }
        }
    }

    #[test]
    fn the_splitter_cuts_by_blocks_as_byte_by_byte() {
        let seeds: [&[u8]; 4] = [
            br#"{"id":1,"s":"}{ \"}{\" \\","g":["a",{"q":[[]]}],"n":{"p":"]\\\\"}}"#,
            b"[{\"id\":\"a\",\"n\":{\"p\":\"7\"}} , {\"x\":[2.0,{}]}]\n{\"k\\u0041\":\"\\\\\\\"}\"}",
            br#"{"a":"0123456789012345678901234567890123456789012345678901234567890"}{"b":"\\"}"#,
            b"[[1],[2],{\"a\":[{},{}]}]\n[{\"c\":\"],[\"},{\"d\":1}]",
        ];
        let noise = b"{}[]\\\\\\\"\",: a\n";
        let mut next = below(0x9E37_79B9_7F4A_7C15u64);
        for round in 0..4000 {
            let mut input = seeds[round % seeds.len()].to_vec();
            for _ in 0..1 + next(4) {
                input.extend_from_within(..);
            }
            if round >= seeds.len() {
                for _ in 0..next(6) {
                    let at = next(input.len() + 1);
                    match next(3) {
                        0 if at < input.len() => input[at] = noise[next(noise.len())],
                        1 if at < input.len() => {
                            input.remove(at);
                        }
                        _ => input.insert(at, noise[next(noise.len())]),
                    }
                }
            }
            // The stream in up to four calls, each state carried on.
            let mut cuts = vec![0, input.len()];
            for _ in 0..next(4) {
                cuts.push(next(input.len() + 1));
            }
            cuts.sort_unstable();
            let (mut fast, mut slow) = (Splitter::default(), Splitter::default());
            #[cfg(target_arch = "x86_64")]
            let mut sse2 = Splitter::default();
            for piece in cuts.windows(2).map(|w| &input[w[0]..w[1]]) {
                let want = slow.scan_bytes(piece, 0);
                let shown = String::from_utf8_lossy(piece);
                assert_eq!(fast.scan(piece), want, "{shown:?}");
                assert_eq!(fast, slow, "{shown:?}");
                #[cfg(target_arch = "x86_64")]
                {
                    let (from, cut) = sse2.blocks_with(piece, marks_sse2, prefix_xor);
                    assert_eq!(sse2.scan_bytes(piece, from).or(cut), want, "{shown:?}");
                    assert_eq!(sse2, slow, "{shown:?}");
                }
            }
        }
    }

    /// The instruction sets this CPU can build the index with.
    fn levels() -> Vec<Simd> {
        let widest = Simd::detect();
        [Simd::Base, Simd::Avx2, Simd::Avx512]
            .into_iter()
            .filter(|&l| l == Simd::Base || l == Simd::Avx2 && widest != Simd::Base || l == widest)
            .collect()
    }

    /// Indexes all of `buf` with the instructions of `simd`; false if the
    /// walk cannot take it.
    fn whole(index: &mut Index, buf: &[u8], simd: Simd) -> bool {
        index.reset(buf);
        index.simd = simd;
        while index.extend(buf) {}
        !index.bad
    }

    /// The structural positions as a byte-by-byte reading finds them, and
    /// the closing quotes of the strings that hold a backslash. A
    /// backslash escapes the next byte outside strings too (an escaped quote
    /// there is part of a scalar).
    fn reference(buf: &[u8]) -> (Vec<u32>, Vec<u32>) {
        let (mut out, mut escaped_strings) = (Vec::new(), Vec::new());
        let (mut in_string, mut escape, mut in_scalar, mut held) = (false, false, false, false);
        for (i, &b) in buf.iter().enumerate() {
            let escaped = std::mem::take(&mut escape);
            escape = b == b'\\' && !escaped;
            if in_string {
                held |= b == b'\\';
                if b == b'"' && !escaped {
                    in_string = false;
                    out.push(i as u32);
                    if held {
                        escaped_strings.push(i as u32);
                    }
                }
                continue;
            }
            match b {
                b'"' if !escaped => {
                    (in_string, held) = (true, false);
                    in_scalar = false;
                    out.push(i as u32);
                }
                b'{' | b'}' | b'[' | b']' | b':' | b',' => {
                    in_scalar = false;
                    out.push(i as u32);
                }
                b' ' | b'\t' | b'\n' | b'\r' => in_scalar = false,
                _ => {
                    if !in_scalar {
                        in_scalar = true;
                        out.push(i as u32);
                    }
                }
            }
        }
        (out, escaped_strings)
    }

    /// The bits set in `words`, as positions.
    fn bit_positions(words: &[u64]) -> Vec<u32> {
        let mut out = Vec::new();
        for (k, &w) in words.iter().enumerate() {
            out.extend(
                (0..64)
                    .filter(|b| w >> b & 1 == 1)
                    .map(|b| (64 * k + b) as u32),
            );
        }
        out
    }

    #[test]
    fn the_index_matches_a_byte_by_byte_reading() {
        let tokens: [&[u8]; 20] = [
            b"{", b"}", b"[", b"]", b":", b",", b"\"", b"\"", b"\\\\", b"\\\"", b"\\n", b"\\",
            b" ", b"\n", b"1", b"ab", b"-2.5e3", b"\\u00e9", b"true", b"x",
        ];
        let mut x = 0x9E37_79B9_7F4A_7C15u64;
        let mut built = 0;
        for round in 0..4000 {
            let mut buf = Vec::new();
            while buf.len() < round % 200 + 1 {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                buf.extend_from_slice(tokens[(x % tokens.len() as u64) as usize]);
            }
            let mut index = Index::default();
            if whole(&mut index, &buf, Simd::Base) {
                built += 1;
                let text = String::from_utf8_lossy(&buf);
                let got = (index.pos.clone(), bit_positions(&index.escaped));
                assert_eq!(got, reference(&buf), "{text:?}");
                // With wider instructions, the same.
                for simd in levels() {
                    let mut wide = Index::default();
                    assert!(whole(&mut wide, &buf, simd), "{simd:?}");
                    assert_eq!(
                        (&wide.pos, &wide.escaped),
                        (&index.pos, &index.escaped),
                        "{simd:?}"
                    );
                }
            }
        }
        assert!(built > 500, "only {built} inputs were indexed");
    }

    #[test]
    fn every_byte_outside_strings_is_classified_as_read() {
        for b in 0..=255u8 {
            for at in [1, 31, 32, 63, 64, 100] {
                let mut buf = b"[".to_vec();
                buf.resize(at, b' ');
                // A digit after it: one scalar with it, or a scalar of its own.
                buf.push(b);
                buf.extend_from_slice(b"1 ,\"a\":1]");
                for simd in levels() {
                    let mut index = Index::default();
                    // `\1` escapes nothing valid: left to the scanner.
                    let indexed = whole(&mut index, &buf, simd);
                    assert_eq!(indexed, b != b'\\', "byte {b:#x} at {at}, {simd:?}");
                    if indexed {
                        let (want, _) = reference(&buf);
                        assert_eq!(index.pos, want, "byte {b:#x} at {at}, {simd:?}");
                    }
                }
            }
        }
    }

    #[test]
    fn backslash_runs_cross_blocks() {
        for run in 1..140 {
            let mut buf = b"{\"k\":\"".to_vec();
            buf.resize(buf.len() + 60, b'a');
            buf.extend(std::iter::repeat_n(b'\\', run));
            buf.extend_from_slice(b"\"}");
            if run % 2 == 1 {
                buf.extend_from_slice(b"\"}");
            }
            for simd in levels() {
                let mut index = Index::default();
                assert!(whole(&mut index, &buf, simd));
                let got = (index.pos, bit_positions(&index.escaped));
                assert_eq!(got, reference(&buf), "run of {run}, {simd:?}");
            }
        }
    }

    #[test]
    fn flattening_writes_each_bit_position_in_order() {
        let mut x = 0x2545_F491_4F6C_DD1Du64;
        let mut patterns = vec![0, u64::MAX, 1, 1 << 63, 0xFF00_FF00_FF00_FF00];
        for _ in 0..10_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            // Dense, sparse and in between.
            patterns.extend([x, x & x.rotate_left(17), x | x.rotate_left(29)]);
        }
        for bits in patterns {
            let base = (x as usize) & 0xFFFF_FFC0;
            let want: Vec<u32> = (0..64)
                .filter(|i| bits >> i & 1 == 1)
                .map(|i| (base + i) as u32)
                .collect();
            type Flatten = fn(&mut [MaybeUninit<u32>; SPARE], u64, usize);
            let mut flatteners: Vec<(&str, Flatten)> = vec![("loop", flatten)];
            #[cfg(target_arch = "x86_64")]
            if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("popcnt") {
                // SAFETY: the features were just found.
                flatteners.push(("avx2", |s, b, at| unsafe { flatten_avx2(s, b, at) }));
            }
            #[cfg(target_arch = "x86_64")]
            if Simd::detect() == Simd::Avx512 {
                // SAFETY: the features were just found.
                flatteners.push(("avx512", |s, b, at| unsafe { flatten_avx512(s, b, at) }));
            }
            for (name, flatten) in flatteners {
                let mut spare = [MaybeUninit::new(u32::MAX); SPARE];
                flatten(&mut spare, bits, base);
                // SAFETY: every slot was initialised above.
                let got: Vec<u32> = spare[..want.len()]
                    .iter()
                    .map(|v| unsafe { v.assume_init() })
                    .collect();
                assert_eq!(got, want, "{name} {bits:#x}");
            }
        }
    }
}
