//! The preamble (magic, version, header length) and the header: a Python dict literal
//! naming the dtype, the order and the shape.

use crate::{NpyError, format_err};
use std::fmt::Write as _;

/// The first six bytes of every `.npy` file.
pub(crate) const MAGIC: &[u8; 6] = b"\x93NUMPY";

/// Real headers nest at most a few levels (structured dtypes); the bound only exists so a
/// hostile header of a million `(` cannot overflow the stack.
pub(crate) const MAX_DEPTH: usize = 32;
/// Untrusted text quoted in an error message is cut to this many characters.
pub(crate) const EXCERPT_CHARS: usize = 40;

/// Python's `repr` of a shape tuple: `()`, `(5,)`, `(2, 3)`.
pub(crate) fn shape_repr(shape: &[usize]) -> String {
    let mut s = String::from("(");
    for (i, d) in shape.iter().enumerate() {
        if i > 0 {
            s.push_str(", ");
        }
        let _ = write!(s, "{d}");
    }
    if shape.len() == 1 {
        s.push(',');
    }
    s.push(')');
    s
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Dtype {
    F16,
    F32,
    F64,
}

impl Dtype {
    pub(crate) fn itemsize(self) -> usize {
        match self {
            Dtype::F16 => 2,
            Dtype::F32 => 4,
            Dtype::F64 => 8,
        }
    }
}

#[derive(Debug)]
pub(crate) struct Header {
    pub(crate) dtype: Dtype,
    pub(crate) big_endian: bool,
    pub(crate) fortran_order: bool,
    pub(crate) shape: Vec<usize>,
}

/// Checks magic and version; returns the major version, where the header starts and its
/// length. `bytes` is the start of the input (all of it, if shorter than 12 bytes).
pub(crate) fn parse_preamble(bytes: &[u8]) -> Result<(u8, usize, usize), NpyError> {
    let truncated = || {
        format_err(format!(
            "truncated preamble: only {} bytes (not a complete .npy file)",
            bytes.len()
        ))
    };
    if bytes.is_empty() {
        return Err(format_err("empty file (not a .npy file)"));
    }
    match bytes.get(..MAGIC.len()) {
        Some(magic) if magic == MAGIC => {}
        None if MAGIC.starts_with(bytes) => return Err(truncated()),
        _ => return Err(format_err("not a .npy file (bad magic bytes)")),
    }
    let (major, minor) = match bytes.get(6..8) {
        Some(&[major, minor]) => (major, minor),
        _ => return Err(truncated()),
    };
    match (major, minor) {
        (1, 0) => match bytes.get(8..10) {
            Some(&[a, b]) => Ok((major, 10, usize::from(u16::from_le_bytes([a, b])))),
            _ => Err(truncated()),
        },
        (2 | 3, 0) => match bytes.get(8..12) {
            Some(&[a, b, c, d]) => {
                let n = u32::from_le_bytes([a, b, c, d]);
                // On a 16-bit target the length cannot fit; on others this always succeeds.
                let n = usize::try_from(n).map_err(|_| header_past_end(n, bytes.len()))?;
                Ok((major, 12, n))
            }
            _ => Err(truncated()),
        },
        _ => Err(format_err(format!(
            "unsupported .npy format version {major}.{minor} (expected 1.0, 2.0 or 3.0)"
        ))),
    }
}

/// The header's text: UTF-8 in version 3, latin-1 before.
pub(crate) fn header_text(major: u8, raw: &[u8]) -> Result<String, NpyError> {
    if major == 3 {
        Ok(std::str::from_utf8(raw)
            .map_err(|_| format_err("header is not valid UTF-8"))?
            .to_owned())
    } else {
        // Versions 1 and 2 are latin-1, whose bytes are exactly the first 256 code points.
        Ok(raw.iter().map(|&b| char::from(b)).collect())
    }
}

pub(crate) fn header_past_end(
    len: impl std::fmt::Display,
    file_len: impl std::fmt::Display,
) -> NpyError {
    format_err(format!(
        "header length {len} runs past the end of the file ({file_len} bytes)"
    ))
}

/// Validates the header dict and extracts what the reader needs.
pub(crate) fn parse_header(text: &str) -> Result<Header, NpyError> {
    let mut p = Parser { s: text, pos: 0 };
    p.skip_ws();
    if p.peek() != Some(b'{') {
        return Err(p.err("expected the header to be a dict '{...}'"));
    }
    let dict = p.value(0)?;
    p.skip_ws();
    if p.pos < text.len() {
        return Err(p.err("unexpected text after the header dict"));
    }
    let Value::Dict(entries) = dict.value else {
        return Err(p.err("expected the header to be a dict '{...}'"));
    };

    let mut descr = None;
    let mut fortran = None;
    let mut shape = None;
    for (key, value) in entries {
        let Value::Str(name) = &key.value else {
            return Err(format_err(format!(
                "malformed .npy header: key {} is not a string",
                excerpt(p.text(&key))
            )));
        };
        let slot = match name.as_str() {
            "descr" => &mut descr,
            "fortran_order" => &mut fortran,
            "shape" => &mut shape,
            other => {
                return Err(format_err(format!(
                    "unknown key '{}' in .npy header (expected 'descr', 'fortran_order' and 'shape')",
                    excerpt(other)
                )));
            }
        };
        if slot.is_some() {
            return Err(format_err(format!(
                "duplicate key '{}' in .npy header",
                excerpt(name)
            )));
        }
        *slot = Some(value);
    }
    let missing = |k: &str| format_err(format!(".npy header has no '{k}' key"));
    let descr = descr.ok_or_else(|| missing("descr"))?;
    let fortran = fortran.ok_or_else(|| missing("fortran_order"))?;
    let shape = shape.ok_or_else(|| missing("shape"))?;

    let (dtype, big_endian) = parse_descr(&descr, &p)?;
    let Value::Bool(fortran_order) = fortran.value else {
        return Err(format_err(format!(
            "'fortran_order' must be True or False, got {}",
            excerpt(p.text(&fortran))
        )));
    };
    let bad_shape = || {
        format_err(format!(
            "'shape' must be a tuple of non-negative integers, got {}",
            excerpt(p.text(&shape))
        ))
    };
    let Value::Tuple(items) = &shape.value else {
        return Err(bad_shape());
    };
    let mut dims = Vec::with_capacity(items.len());
    for item in items {
        let too_large = || format_err(format!("shape {} too large", excerpt(p.text(&shape))));
        match item.value {
            // `-0` is still a Python zero.
            Value::Int {
                negative,
                magnitude: Some(m),
            } if !negative || m == 0 => dims.push(usize::try_from(m).map_err(|_| too_large())?),
            Value::Int {
                negative: false,
                magnitude: None,
            } => return Err(too_large()),
            _ => return Err(bad_shape()),
        }
    }
    Ok(Header {
        dtype,
        big_endian,
        fortran_order,
        shape: dims,
    })
}

pub(crate) fn parse_descr(descr: &Node, p: &Parser<'_>) -> Result<(Dtype, bool), NpyError> {
    const EXPECTED: &str = "(expected float16, float32 or float64)";
    let Value::Str(s) = &descr.value else {
        // A list here is a structured (record) dtype.
        return Err(format_err(format!(
            "unsupported dtype {} {EXPECTED}",
            excerpt(p.text(descr))
        )));
    };
    let native_big = cfg!(target_endian = "big");
    let (big, code) = match s.as_bytes() {
        [b'<', rest @ ..] => (false, rest),
        [b'>', rest @ ..] => (true, rest),
        [b'=', rest @ ..] => (native_big, rest),
        _ => (false, &b"?"[..]),
    };
    let dtype = match code {
        b"f2" => Dtype::F16,
        b"f4" => Dtype::F32,
        b"f8" => Dtype::F64,
        _ => {
            return Err(format_err(format!(
                "unsupported dtype '{}' {EXPECTED}",
                excerpt(s)
            )));
        }
    };
    Ok((dtype, big))
}

/// Untrusted text made safe for a one-line message: shortened, control characters escaped.
pub(crate) fn excerpt(s: &str) -> String {
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i == EXCERPT_CHARS {
            out.push('…');
            break;
        }
        if c == ' ' || !(c.is_control() || c.is_whitespace()) {
            out.push(c);
        } else {
            out.extend(c.escape_default());
        }
    }
    out
}

/// The subset of Python literals that can appear in a `.npy` header.
#[derive(Debug, PartialEq)]
pub(crate) enum Value {
    Str(String),
    /// `magnitude` is `None` when the digits overflow u64.
    Int {
        negative: bool,
        magnitude: Option<u64>,
    },
    Bool(bool),
    None,
    Tuple(Vec<Node>),
    List(Vec<Node>),
    Dict(Vec<(Node, Node)>),
}

/// A value and where its source text lies, so errors can quote what the file said.
#[derive(Debug, PartialEq)]
pub(crate) struct Node {
    value: Value,
    start: usize,
    end: usize,
}

pub(crate) struct Parser<'a> {
    s: &'a str,
    pos: usize,
}

impl<'a> Parser<'a> {
    fn peek(&self) -> Option<u8> {
        self.s.as_bytes().get(self.pos).copied()
    }

    fn text(&self, node: &Node) -> &'a str {
        self.s.get(node.start..node.end).unwrap_or("?")
    }

    fn err(&self, what: &str) -> NpyError {
        let found = match self.s.get(self.pos..).and_then(|r| r.chars().next()) {
            Some(c) => format!("`{}`", excerpt(&c.to_string())),
            None => "the end".to_owned(),
        };
        format_err(format!(
            "malformed .npy header: {what} (found {found} at offset {})",
            self.pos
        ))
    }

    fn skip_ws(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r' | b'\x0b' | b'\x0c') = self.peek() {
            self.pos += 1;
        }
    }

    fn value(&mut self, depth: usize) -> Result<Node, NpyError> {
        if depth > MAX_DEPTH {
            return Err(self.err("nested too deeply"));
        }
        self.skip_ws();
        let start = self.pos;
        let value = match self.peek() {
            Some(q @ (b'\'' | b'"')) => Value::Str(self.string(q)?),
            Some(b'0'..=b'9' | b'-' | b'+') => self.int()?,
            Some(b'(') => {
                self.pos += 1;
                let (mut items, trailing_comma) = self.items(b')', depth)?;
                // `(x)` is just `x` in Python; only a comma (or nothing) makes a tuple.
                match items.pop() {
                    Some(only) if items.is_empty() && !trailing_comma => only.value,
                    Some(last) => {
                        items.push(last);
                        Value::Tuple(items)
                    }
                    None => Value::Tuple(items),
                }
            }
            Some(b'[') => {
                self.pos += 1;
                Value::List(self.items(b']', depth)?.0)
            }
            Some(b'{') => {
                self.pos += 1;
                self.dict(depth)?
            }
            Some(b'A'..=b'Z' | b'a'..=b'z' | b'_') => {
                let word_start = self.pos;
                while let Some(b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'_') = self.peek() {
                    self.pos += 1;
                }
                match self.s.get(word_start..self.pos) {
                    Some("True") => Value::Bool(true),
                    Some("False") => Value::Bool(false),
                    Some("None") => Value::None,
                    _ => {
                        self.pos = word_start;
                        return Err(self.err("expected a Python literal"));
                    }
                }
            }
            _ => return Err(self.err("expected a Python literal")),
        };
        Ok(Node {
            value,
            start,
            end: self.pos,
        })
    }

    /// Comma-separated values up to `close`; also says whether a comma preceded it.
    fn items(&mut self, close: u8, depth: usize) -> Result<(Vec<Node>, bool), NpyError> {
        let mut items = Vec::new();
        let mut trailing_comma = false;
        loop {
            self.skip_ws();
            if self.peek() == Some(close) {
                self.pos += 1;
                return Ok((items, trailing_comma));
            }
            items.push(self.value(depth + 1)?);
            self.skip_ws();
            match self.peek() {
                Some(b',') => {
                    self.pos += 1;
                    trailing_comma = true;
                }
                Some(c) if c == close => trailing_comma = false,
                _ => {
                    return Err(self.err(&format!("expected ',' or '{}'", char::from(close))));
                }
            }
        }
    }

    fn dict(&mut self, depth: usize) -> Result<Value, NpyError> {
        let mut entries = Vec::new();
        loop {
            self.skip_ws();
            if self.peek() == Some(b'}') {
                self.pos += 1;
                return Ok(Value::Dict(entries));
            }
            let key = self.value(depth + 1)?;
            self.skip_ws();
            if self.peek() != Some(b':') {
                return Err(self.err("expected ':' after a dict key"));
            }
            self.pos += 1;
            let value = self.value(depth + 1)?;
            entries.push((key, value));
            self.skip_ws();
            match self.peek() {
                Some(b',') => self.pos += 1,
                Some(b'}') => {}
                _ => return Err(self.err("expected ',' or '}'")),
            }
        }
    }

    fn string(&mut self, quote: u8) -> Result<String, NpyError> {
        let open = self.pos;
        self.pos += 1;
        let mut out = String::new();
        let mut chars = self.s.get(self.pos..).unwrap_or("").char_indices();
        while let Some((i, c)) = chars.next() {
            match c {
                _ if c == char::from(quote) => {
                    self.pos += i + 1;
                    return Ok(out);
                }
                '\n' | '\r' => break,
                '\\' => match chars.next() {
                    Some((_, e @ ('\\' | '\'' | '"'))) => out.push(e),
                    Some((_, 'n')) => out.push('\n'),
                    Some((_, 't')) => out.push('\t'),
                    // Other escapes cannot matter for a float dtype; keep them verbatim.
                    Some((_, e)) => {
                        out.push('\\');
                        out.push(e);
                    }
                    None => break,
                },
                _ => out.push(c),
            }
        }
        self.pos = open;
        Err(self.err("unterminated string"))
    }

    fn int(&mut self) -> Result<Value, NpyError> {
        let mut negative = false;
        if let Some(sign @ (b'-' | b'+')) = self.peek() {
            negative = sign == b'-';
            self.pos += 1;
        }
        let digits_start = self.pos;
        let mut magnitude = Some(0u64);
        while let Some(d @ b'0'..=b'9') = self.peek() {
            magnitude = magnitude
                .and_then(|m| m.checked_mul(10))
                .and_then(|m| m.checked_add(u64::from(d - b'0')));
            self.pos += 1;
        }
        if self.pos == digits_start {
            return Err(self.err("expected digits"));
        }
        // Python 2 wrote long integers as `3L`; NumPy still reads such files.
        if let Some(b'L' | b'l') = self.peek() {
            self.pos += 1;
        }
        Ok(Value::Int {
            negative,
            magnitude,
        })
    }
}
