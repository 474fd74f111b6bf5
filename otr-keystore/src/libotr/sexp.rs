//! A bounded reader and a writer for the part of libgcrypt's S-expression syntax that libotr's
//! `otr.private_key` file uses.
//!
//! libotr reads the file with `gcry_sexp_new`, which accepts libgcrypt's "advanced" syntax:
//! lists in parentheses; tokens (a letter or one of `-./_:*+=`, then letters, digits and those
//! characters); quoted strings with C-like escapes; hex strings `#…#` (whitespace allowed
//! inside); base64 strings `|…|`; and verbatim strings `N:bytes`. It writes the advanced format
//! with `gcry_sexp_sprint(GCRYSEXP_FMT_ADVANCED)`. Display hints (`[…]`) never appear in key
//! files and are refused.
//!
//! The reader is iterative (an explicit stack, never recursion on input), bounded in input
//! size, nesting depth, atom length and node count, and reports the byte offset of what it
//! could not read.

use base64::Engine as _;
use zeroize::Zeroizing;

use super::LibotrFileError;

/// Largest input accepted (1 MiB: a key file holds about 1.3 KiB per account).
pub const MAX_INPUT: usize = 1 << 20;
/// Deepest nesting accepted (libotr's file nests 5 deep).
pub const MAX_DEPTH: usize = 32;
/// Longest single atom accepted, in bytes after decoding.
pub const MAX_ATOM: usize = 16 * 1024;
/// Most atoms and lists in one file.
const MAX_NODES: usize = 200_000;

/// One S-expression: an atom (a byte string, zeroized on drop since it may be a secret
/// exponent) or a list.
#[derive(Debug, Clone)]
pub enum Sexp {
    /// A byte string (token, quoted, hex, base64 or verbatim: the encoding is not kept).
    Atom(Zeroizing<Vec<u8>>),
    /// A parenthesized list.
    List(Vec<Sexp>),
}

impl Sexp {
    /// The first element when it is an atom (the list's "token", in libgcrypt's words).
    pub fn head(&self) -> Option<&[u8]> {
        match self {
            Sexp::List(items) => match items.first() {
                Some(Sexp::Atom(a)) => Some(a.as_slice()),
                _ => None,
            },
            Sexp::Atom(_) => None,
        }
    }

    /// The `n`th element when it is an atom (libgcrypt's `gcry_sexp_nth_data`).
    pub fn nth_atom(&self, n: usize) -> Option<&[u8]> {
        match self {
            Sexp::List(items) => match items.get(n) {
                Some(Sexp::Atom(a)) => Some(a.as_slice()),
                _ => None,
            },
            Sexp::Atom(_) => None,
        }
    }

    /// The elements of a list (empty for an atom).
    pub fn items(&self) -> &[Sexp] {
        match self {
            Sexp::List(items) => items,
            Sexp::Atom(_) => &[],
        }
    }

    /// The first list, depth first and this one included, whose head is `token`: the search
    /// `gcry_sexp_find_token` does. Iterative; the tree's depth is bounded by the parser.
    pub fn find_token(&self, token: &[u8]) -> Option<&Sexp> {
        let mut stack = vec![self];
        while let Some(node) = stack.pop() {
            if node.head() == Some(token) {
                return Some(node);
            }
            // Push children in reverse so the leftmost is visited first.
            stack.extend(node.items().iter().rev().filter(|c| matches!(c, Sexp::List(_))));
        }
        None
    }
}

fn syntax(offset: usize, problem: &'static str) -> LibotrFileError {
    LibotrFileError::Syntax { offset, problem }
}

fn is_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | b'\r' | 0x0b | 0x0c)
}

const TOKEN_SPECIALS: &[u8] = b"-./_:*+=";

fn is_token_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || TOKEN_SPECIALS.contains(&b)
}

fn hex_value(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

fn check_atom_len(len: usize, offset: usize) -> Result<(), LibotrFileError> {
    if len > MAX_ATOM { Err(LibotrFileError::AtomTooLong { offset, limit: MAX_ATOM }) } else { Ok(()) }
}

/// Parses one top-level list (surrounding whitespace allowed, nothing else).
///
/// # Errors
/// [`LibotrFileError::TooLarge`], [`LibotrFileError::TooDeep`],
/// [`LibotrFileError::AtomTooLong`] or [`LibotrFileError::Syntax`] with the offending offset.
pub fn parse(input: &[u8]) -> Result<Sexp, LibotrFileError> {
    if input.len() > MAX_INPUT {
        return Err(LibotrFileError::TooLarge { limit: MAX_INPUT });
    }
    let mut stack: Vec<Vec<Sexp>> = Vec::new();
    let mut root: Option<Sexp> = None;
    let mut nodes = 0usize;
    let mut i = 0usize;
    while let Some(&c) = input.get(i) {
        let start = i;
        let node = match c {
            _ if is_space(c) => {
                i += 1;
                continue;
            }
            b'(' => {
                if root.is_some() {
                    return Err(syntax(i, "data after the end of the top-level list"));
                }
                if stack.len() >= MAX_DEPTH {
                    return Err(LibotrFileError::TooDeep { offset: i, limit: MAX_DEPTH });
                }
                stack.push(Vec::new());
                i += 1;
                continue;
            }
            b')' => {
                let list = stack.pop().ok_or_else(|| syntax(i, "unbalanced: ')' without a matching '('"))?;
                i += 1;
                Sexp::List(list)
            }
            b'"' => {
                let (atom, next) = quoted(input, i)?;
                i = next;
                Sexp::Atom(atom)
            }
            b'#' => {
                let (atom, next) = hex(input, i)?;
                i = next;
                Sexp::Atom(atom)
            }
            b'|' => {
                let (atom, next) = base64(input, i)?;
                i = next;
                Sexp::Atom(atom)
            }
            b'0'..=b'9' => {
                let (atom, next) = verbatim(input, i)?;
                i = next;
                Sexp::Atom(atom)
            }
            b'[' => return Err(syntax(i, "display hints ('[...]') are not supported in key files")),
            _ if is_token_char(c) => {
                let len =
                    input.get(i..).unwrap_or_default().iter().take_while(|&&b| is_token_char(b)).count();
                check_atom_len(len, i)?;
                let atom = Zeroizing::new(input.get(i..i + len).unwrap_or_default().to_vec());
                i += len;
                Sexp::Atom(atom)
            }
            _ => return Err(syntax(i, "unexpected character")),
        };
        nodes += 1;
        if nodes > MAX_NODES {
            return Err(syntax(start, "too many elements"));
        }
        match stack.last_mut() {
            Some(top) => top.push(node),
            None if matches!(node, Sexp::List(_)) => root = Some(node),
            None => return Err(syntax(start, "an atom outside any list; the file must be one list")),
        }
    }
    if !stack.is_empty() {
        return Err(syntax(input.len(), "unbalanced: the input ends before a ')' closes every '('"));
    }
    root.ok_or_else(|| syntax(0, "the input holds no S-expression"))
}

/// A quoted string starting at `input[at] == '"'`; returns the bytes and the offset after it.
fn quoted(input: &[u8], at: usize) -> Result<(Zeroizing<Vec<u8>>, usize), LibotrFileError> {
    let mut out = Zeroizing::new(Vec::new());
    let mut i = at + 1;
    loop {
        let b = *input.get(i).ok_or_else(|| syntax(at, "unterminated quoted string"))?;
        i += 1;
        match b {
            b'"' => return Ok((out, i)),
            b'\\' => {
                let e = *input.get(i).ok_or_else(|| syntax(at, "unterminated quoted string"))?;
                i += 1;
                let v = match e {
                    b'b' => Some(0x08),
                    b't' => Some(b'\t'),
                    b'v' => Some(0x0b),
                    b'n' => Some(b'\n'),
                    b'f' => Some(0x0c),
                    b'r' => Some(b'\r'),
                    b'"' | b'\'' | b'\\' => Some(e),
                    b'0'..=b'7' => {
                        let digits =
                            input.get(i - 1..i + 2).ok_or_else(|| syntax(i - 1, "short octal escape"))?;
                        let mut v: u16 = 0;
                        for &d in digits {
                            if !(b'0'..=b'7').contains(&d) {
                                return Err(syntax(i - 1, "an octal escape needs three octal digits"));
                            }
                            v = v * 8 + u16::from(d - b'0');
                        }
                        i += 2;
                        Some(u8::try_from(v).map_err(|_| syntax(i - 3, "octal escape above \\377"))?)
                    }
                    b'x' => {
                        let hi = input.get(i).copied().and_then(hex_value);
                        let lo = input.get(i + 1).copied().and_then(hex_value);
                        let (Some(hi), Some(lo)) = (hi, lo) else {
                            return Err(syntax(i - 1, "a \\x escape needs two hex digits"));
                        };
                        i += 2;
                        Some(hi << 4 | lo)
                    }
                    // Line continuation: backslash, then a line end (\n, \r, \n\r or \r\n).
                    b'\n' | b'\r' => {
                        let other = if e == b'\n' { b'\r' } else { b'\n' };
                        if input.get(i) == Some(&other) {
                            i += 1;
                        }
                        None
                    }
                    _ => return Err(syntax(i - 1, "unknown escape in quoted string")),
                };
                out.extend(v);
            }
            _ => out.push(b),
        }
        check_atom_len(out.len(), at)?;
    }
}

/// A hex string starting at `input[at] == '#'`.
fn hex(input: &[u8], at: usize) -> Result<(Zeroizing<Vec<u8>>, usize), LibotrFileError> {
    let mut out = Zeroizing::new(Vec::new());
    let mut pending: Option<u8> = None;
    let mut i = at + 1;
    loop {
        let b = *input
            .get(i)
            .ok_or_else(|| syntax(at, "unterminated hex string ('#' without its closing '#')"))?;
        i += 1;
        if b == b'#' {
            if pending.is_some() {
                return Err(syntax(at, "hex string with an odd number of digits"));
            }
            return Ok((out, i));
        }
        if is_space(b) {
            continue;
        }
        let v = hex_value(b).ok_or_else(|| syntax(i - 1, "non-hex character in a hex string"))?;
        match pending.take() {
            Some(hi) => {
                out.push(hi << 4 | v);
                check_atom_len(out.len(), at)?;
            }
            None => pending = Some(v),
        }
    }
}

/// A base64 string starting at `input[at] == '|'`.
fn base64(input: &[u8], at: usize) -> Result<(Zeroizing<Vec<u8>>, usize), LibotrFileError> {
    let rest = input.get(at + 1..).unwrap_or_default();
    let len = rest.iter().position(|&b| b == b'|').ok_or_else(|| syntax(at, "unterminated base64 string"))?;
    check_atom_len(len / 4 * 3, at)?;
    let text: Zeroizing<Vec<u8>> = Zeroizing::new(
        rest.get(..len).unwrap_or_default().iter().copied().filter(|&b| !is_space(b)).collect(),
    );
    let out = base64::engine::general_purpose::STANDARD
        .decode(&*text)
        .map_err(|_| syntax(at, "invalid base64 string"))?;
    Ok((Zeroizing::new(out), at + len + 2))
}

/// A verbatim string `N:bytes` starting at a digit.
fn verbatim(input: &[u8], at: usize) -> Result<(Zeroizing<Vec<u8>>, usize), LibotrFileError> {
    let digits = input.get(at..).unwrap_or_default().iter().take_while(|b| b.is_ascii_digit()).count();
    if digits > 9 {
        return Err(LibotrFileError::AtomTooLong { offset: at, limit: MAX_ATOM });
    }
    let mut n = 0usize;
    for &d in input.get(at..at + digits).unwrap_or_default() {
        n = n * 10 + usize::from(d - b'0');
    }
    let colon = at + digits;
    if input.get(colon) != Some(&b':') {
        return Err(syntax(
            colon,
            "a length prefix must be followed by ':' (other length-prefixed forms are not supported)",
        ));
    }
    check_atom_len(n, at)?;
    let bytes = input
        .get(colon + 1..colon + 1 + n)
        .ok_or_else(|| syntax(at, "verbatim string longer than the input"))?;
    Ok((Zeroizing::new(bytes.to_vec()), colon + 1 + n))
}

/// How libgcrypt prints an atom in the advanced format (`suitable_encoding`): 2 = token,
/// 1 = quoted string, 0 = hex.
fn encoding(bytes: &[u8]) -> u8 {
    let Some(&first) = bytes.first() else { return 1 };
    if first & 0x80 != 0 || first == 0 {
        return 0;
    }
    let mut token = true;
    for &b in bytes {
        if (b < 0x20 || (0x7f..=0xa0).contains(&b)) && !b"\x08\t\x0b\n\x0c\r\"'\\".contains(&b) {
            return 0;
        }
        if !is_token_char(b) {
            token = false;
        }
    }
    if token && !first.is_ascii_digit() { 2 } else { 1 }
}

fn push_hex(out: &mut Vec<u8>, bytes: &[u8]) {
    const DIGITS: &[u8; 16] = b"0123456789ABCDEF";
    out.push(b'#');
    for &b in bytes {
        out.push(DIGITS[usize::from(b >> 4)]);
        out.push(DIGITS[usize::from(b & 0x0f)]);
    }
    out.push(b'#');
}

/// Appends `bytes` as libgcrypt's advanced format would print the atom.
pub fn push_atom(out: &mut Vec<u8>, bytes: &[u8]) {
    match encoding(bytes) {
        2 => out.extend_from_slice(bytes),
        1 => {
            out.push(b'"');
            for &b in bytes {
                match b {
                    0x08 => out.extend_from_slice(b"\\b"),
                    b'\t' => out.extend_from_slice(b"\\t"),
                    0x0b => out.extend_from_slice(b"\\v"),
                    b'\n' => out.extend_from_slice(b"\\n"),
                    0x0c => out.extend_from_slice(b"\\f"),
                    b'\r' => out.extend_from_slice(b"\\r"),
                    b'"' => out.extend_from_slice(b"\\\""),
                    b'\'' => out.extend_from_slice(b"\\'"),
                    b'\\' => out.extend_from_slice(b"\\\\"),
                    _ => out.push(b),
                }
            }
            out.push(b'"');
        }
        _ => push_hex(out, bytes),
    }
}

/// Appends a non-negative integer (minimal big-endian magnitude) as libgcrypt prints an MPI:
/// upper-case hex, with a `00` byte in front when the top bit is set (its signed format).
pub fn push_mpi(out: &mut Vec<u8>, magnitude: &[u8]) {
    let start = magnitude.iter().position(|&b| b != 0).unwrap_or(magnitude.len());
    let m = magnitude.get(start..).unwrap_or_default();
    if m.first().is_some_and(|&b| b & 0x80 != 0) || m.is_empty() {
        let mut with_zero = Zeroizing::new(Vec::with_capacity(m.len() + 1));
        with_zero.push(0);
        with_zero.extend_from_slice(m);
        push_hex(out, &with_zero);
    } else {
        push_hex(out, m);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn atom(s: &Sexp) -> Vec<u8> {
        match s {
            Sexp::Atom(a) => a.to_vec(),
            Sexp::List(_) => panic!("not an atom"),
        }
    }

    #[test]
    fn every_atom_form() {
        let s = parse(b" (a \"q\\x41\\101\\n\\\"\" #41 42# |QUI=| 3:a)b tok-en.x )\n").unwrap();
        let items = s.items();
        assert_eq!(atom(&items[0]), b"a");
        assert_eq!(atom(&items[1]), b"qAA\n\"");
        assert_eq!(atom(&items[2]), b"AB");
        assert_eq!(atom(&items[3]), b"AB");
        assert_eq!(atom(&items[4]), b"a)b");
        assert_eq!(atom(&items[5]), b"tok-en.x");
    }

    #[test]
    fn line_continuation_in_quotes() {
        let s = parse(b"(\"ab\\\r\ncd\")").unwrap();
        assert_eq!(atom(&s.items()[0]), b"abcd");
    }

    #[test]
    fn find_token_is_depth_first() {
        let s = parse(b"(a (b (c 1:x)) (c 1:y))").unwrap();
        assert_eq!(s.find_token(b"c").unwrap().nth_atom(1), Some(&b"x"[..]));
        assert!(s.find_token(b"d").is_none());
    }

    #[test]
    fn malformed_inputs_are_errors() {
        let cases: &[&[u8]] = &[
            b"",
            b"   ",
            b"(",
            b"(a",
            b")",
            b"(a))",
            b"(a) (b)",
            b"atom",
            b"(\"unterminated)",
            b"(#414#)",
            b"(#4G#)",
            b"(#41)",
            b"(|!!|)",
            b"(5:ab)",
            b"(12345678901:a)",
            b"(3\"abc\")",
            b"([hint] a)",
            b"(\"\\q\")",
            b"(\"\\400\")",
            b"(\"\\x4\")",
            b"(a \x01)",
        ];
        for case in cases {
            assert!(parse(case).is_err(), "{:?} parsed", String::from_utf8_lossy(case));
        }
    }

    #[test]
    fn limits_hold() {
        let deep = [vec![b'('; 10_000], vec![b')'; 10_000]].concat();
        assert!(matches!(parse(&deep), Err(LibotrFileError::TooDeep { .. })));
        let mut ok = [vec![b'('; MAX_DEPTH], vec![b')'; MAX_DEPTH]].concat();
        assert!(parse(&ok).is_ok());
        ok.insert(0, b'(');
        ok.push(b')');
        assert!(matches!(parse(&ok), Err(LibotrFileError::TooDeep { .. })));
        let long = [b"(#".to_vec(), vec![b'A'; 2 * MAX_ATOM + 2], b"#)".to_vec()].concat();
        assert!(matches!(parse(&long), Err(LibotrFileError::AtomTooLong { .. })));
        let huge = vec![b' '; MAX_INPUT + 1];
        assert!(matches!(parse(&huge), Err(LibotrFileError::TooLarge { .. })));
    }

    #[test]
    fn writer_matches_libgcrypt_choices() {
        let enc = |b: &[u8]| {
            let mut v = Vec::new();
            push_atom(&mut v, b);
            String::from_utf8(v).unwrap()
        };
        assert_eq!(enc(b"xmpp"), "xmpp");
        assert_eq!(enc(b"prpl-jabber"), "prpl-jabber");
        assert_eq!(enc(b"alice@example.com"), "\"alice@example.com\"");
        assert_eq!(enc(b"1abc"), "\"1abc\"");
        assert_eq!(enc(b"a\"b\n"), "\"a\\\"b\\n\"");
        assert_eq!(enc(b""), "\"\"");
        assert_eq!(enc("é".as_bytes()), "#C3A9#");
        assert_eq!(enc(b"\x01"), "#01#");
        for s in [&b"xmpp"[..], b"a b", b"\"'\\\t", "ünï".as_bytes(), b"9"] {
            let text = format!("({})", enc(s));
            assert_eq!(atom(&parse(text.as_bytes()).unwrap().items()[0]), s);
        }
        let mut v = Vec::new();
        push_mpi(&mut v, &[0x00, 0x80, 0x01]);
        push_mpi(&mut v, &[0x7f]);
        assert_eq!(v, b"#008001##7F#");
    }
}
