//! CSV encoding in the Personalize dialect (SPEC section 5).
//!
//! A field is quoted only when it must be; inside quotes Personalize wants
//! `"` and `\` escaped with a backslash, not doubled as RFC 4180 does. CR and
//! LF become spaces because Personalize reads one record per line.

use std::str::FromStr;

/// How quotes are escaped inside a quoted field.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Dialect {
    /// Backslash escapes; quote when a field holds `,`, `"` or `\`.
    #[default]
    Personalize,
    /// Doubled quotes; quote when a field holds `,` or `"`.
    Rfc4180,
}

impl FromStr for Dialect {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "personalize" => Ok(Dialect::Personalize),
            "rfc4180" => Ok(Dialect::Rfc4180),
            _ => Err(format!(
                "unknown CSV dialect {s:?}; expected personalize or rfc4180"
            )),
        }
    }
}

/// Bytes a field cannot hold as they are, per dialect: bit 0 in the
/// Personalize dialect, bit 1 in RFC 4180. One table lookup per byte.
const SPECIAL: [u8; 256] = {
    let mut t = [0u8; 256];
    t[b',' as usize] = 3;
    t[b'"' as usize] = 3;
    t[b'\r' as usize] = 3;
    t[b'\n' as usize] = 3;
    t[b'\\' as usize] = 1;
    t
};

/// Appends one field's text to a row. Line breaks become spaces, so a row
/// is always one line (the output check counts lines by rows).
#[inline]
pub(crate) fn push_field(out: &mut Vec<u8>, text: &str, dialect: Dialect) {
    let bytes = text.as_bytes();
    let mask = match dialect {
        Dialect::Personalize => 1,
        Dialect::Rfc4180 => 2,
    };
    if bytes.iter().any(|&b| SPECIAL[b as usize] & mask != 0) {
        push_special(out, bytes, dialect);
    } else {
        push_plain(out, bytes);
    }
}

/// Appends bytes that need no quoting. Up to 16 of them (most fields) take
/// two fixed-size copies that may overlap, where `extend_from_slice` would
/// call `memcpy` for a length it does not know.
#[inline(always)]
pub(crate) fn push_plain(out: &mut Vec<u8>, bytes: &[u8]) {
    let n = bytes.len();
    if n > 16 {
        out.extend_from_slice(bytes);
        return;
    }
    out.reserve(16);
    let len = out.len();
    // SAFETY: `reserve` made room for 16 bytes past `len`. Each copy of k
    // bytes starts at 0 or at n - k, with k <= n <= 16: it reads inside
    // `bytes` and writes inside the first n of those 16. The new length
    // covers the n bytes written.
    unsafe {
        let (src, dst) = (bytes.as_ptr(), out.as_mut_ptr().add(len));
        if n >= 8 {
            std::ptr::copy_nonoverlapping(src, dst, 8);
            std::ptr::copy_nonoverlapping(src.add(n - 8), dst.add(n - 8), 8);
        } else if n >= 4 {
            std::ptr::copy_nonoverlapping(src, dst, 4);
            std::ptr::copy_nonoverlapping(src.add(n - 4), dst.add(n - 4), 4);
        } else {
            for i in 0..n {
                *dst.add(i) = *src.add(i);
            }
        }
        out.set_len(len + n);
    }
}

/// `push_plain` for bytes that may lie inside `within`, the buffer they
/// were sliced from: when the 16 bytes from their start do, one 16-byte
/// copy whatever their length (at most 16), without `push_plain`'s
/// branches on it, which a column of values of mixed lengths mispredicts.
#[inline(always)]
pub(crate) fn push_plain_within(out: &mut Vec<u8>, bytes: &[u8], within: &[u8]) {
    let n = bytes.len();
    // Past the end of `within` (or before its start, wrapping) unless
    // `bytes` starts inside it.
    let at = (bytes.as_ptr() as usize).wrapping_sub(within.as_ptr() as usize);
    let window = at
        .checked_add(16)
        .and_then(|end| within.get(at..end))
        .filter(|_| n <= 16);
    let Some(window) = window else {
        return push_plain(out, bytes);
    };
    out.reserve(16);
    let len = out.len();
    // SAFETY: `reserve` made room for 16 bytes past `len`, and `window` is
    // 16 bytes long. It starts at the address `bytes` does, so its first
    // n <= 16 bytes are those of `bytes`: the new length covers them.
    unsafe {
        std::ptr::copy_nonoverlapping(window.as_ptr(), out.as_mut_ptr().add(len), 16);
        out.set_len(len + n);
    }
}

/// `push_field` for a field holding a byte it must quote, escape or
/// replace.
#[cold]
fn push_special(out: &mut Vec<u8>, bytes: &[u8], dialect: Dialect) {
    let quote = bytes
        .iter()
        .any(|&b| b == b',' || b == b'"' || (b == b'\\' && dialect == Dialect::Personalize));
    if quote {
        out.push(b'"');
    }
    for &b in bytes {
        match b {
            b'\r' | b'\n' => out.push(b' '),
            b'"' if dialect == Dialect::Rfc4180 => out.extend_from_slice(b"\"\""),
            b'"' | b'\\' if dialect == Dialect::Personalize => {
                out.push(b'\\');
                out.push(b);
            }
            _ => out.push(b),
        }
    }
    if quote {
        out.push(b'"');
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn enc(text: &str, dialect: Dialect) -> String {
        let mut out = Vec::new();
        push_field(&mut out, text, dialect);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn quotes_only_when_needed() {
        let p = Dialect::Personalize;
        assert_eq!(enc("plain text", p), "plain text");
        assert_eq!(enc("a,b", p), "\"a,b\"");
        assert_eq!(enc(r#"say "hi""#, p), r#""say \"hi\"""#);
        assert_eq!(enc(r"C:\dir", p), r#""C:\\dir""#);
        assert_eq!(enc("two\r\nlines\n", p), "two  lines ");
        assert_eq!(enc("", p), "");
    }

    #[test]
    fn plain_fields_of_every_short_length_are_appended_whole() {
        let text = "0123456789abcdefghijklmnopqrstuv";
        for dialect in [Dialect::Personalize, Dialect::Rfc4180] {
            for n in 0..=text.len() {
                let mut out = b"row,".to_vec();
                push_field(&mut out, &text[..n], dialect);
                push_field(&mut out, &text[n..], dialect);
                assert_eq!(out, format!("row,{text}").as_bytes(), "{n}");
            }
        }
    }

    #[test]
    fn plain_bytes_from_within_a_buffer_are_appended_whole() {
        let buf = b"0123456789abcdefghijklmnopqrstuv";
        let other = b"ZYXWVUTSRQPONMLKJIHGFEDCBA".to_vec();
        for start in 0..=buf.len() {
            for n in 0..=(buf.len() - start).min(20) {
                let bytes = &buf[start..start + n];
                // Inside the buffer (near its end too, where no 16 bytes
                // follow), outside it, and inside a part of it that ends
                // before the bytes do.
                let part = &buf[..start + n / 2];
                for within in [&buf[..], &other[..], part, &[]] {
                    let mut out = b"row,".to_vec();
                    push_plain_within(&mut out, bytes, within);
                    out.push(b'|');
                    let want = [b"row,", bytes, b"|"].concat();
                    assert_eq!(out, want, "{start} {n}");
                }
            }
        }
    }

    #[test]
    fn rfc4180_doubles_quotes_and_keeps_backslashes() {
        let r = Dialect::Rfc4180;
        assert_eq!(enc(r#"say "hi", ok"#, r), r#""say ""hi"", ok""#);
        assert_eq!(enc(r"C:\dir", r), r"C:\dir");
    }
}
