//! memcached's text and meta protocols without I/O: requests are appended to a buffer, and
//! replies are parsed one item at a time from the bytes received so far.
//!
//! The text protocol carries the data (`get`, `set`, `delete`: every memcached speaks it); the
//! meta protocol of memcached 1.6 carries the lock, because only it can store, extend and delete
//! on a CAS value, which makes "only if it is still ours" atomic on the server.
//!
//! Parsing never trusts the server: a reply that is not one of the forms below, a line longer
//! than [`MAX_LINE`], a value longer than [`MAX_VALUE`] or a value not followed by `\r\n` is a
//! [`ProtocolError`]; the caller then drops the connection (its stream can no longer be read in
//! step).

use std::fmt;

/// The longest reply line accepted: a `VALUE` line holds a key of at most 250 bytes and three
/// numbers, a meta line a few flags.
pub(crate) const MAX_LINE: usize = 4096;
/// The largest value accepted: memcached's item size limit can be raised to 1 GiB, no further.
pub(crate) const MAX_VALUE: usize = 1 << 30;

/// A reply the server sent that cannot be understood: the connection is out of step.
#[derive(Debug)]
pub(crate) struct ProtocolError(pub(crate) String);

impl fmt::Display for ProtocolError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ProtocolError {}

/// Quotes at most 60 bytes of what the server sent, escaped, for an error message.
pub(crate) fn quote(bytes: &[u8]) -> String {
    let shown = &bytes[..bytes.len().min(60)];
    let more = if bytes.len() > shown.len() { "…" } else { "" };
    format!("\"{}{more}\"", shown.escape_ascii())
}

/// One reply item.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Item<'a> {
    /// `VALUE <key> <flags> <bytes> [<cas>]` and its data.
    Value { key: &'a [u8], data: &'a [u8] },
    /// `END`: the end of a `get` reply.
    End,
    /// `STORED`, `NOT_STORED`, `EXISTS`, `NOT_FOUND`, `DELETED`, `TOUCHED`.
    Status(&'a [u8]),
    /// `VERSION …`: the reply that ends a pipeline of `noreply` commands.
    Version,
    /// A meta reply: its two-letter code (`VA` with its data, `HD`, `EN`, `NF`, `NS`, `EX`,
    /// `MN`), and its return flags.
    Meta {
        code: [u8; 2],
        flags: &'a [u8],
        data: Option<&'a [u8]>,
    },
    /// `ERROR`, `CLIENT_ERROR …` or `SERVER_ERROR …`: the whole line.
    Error(&'a [u8]),
}

impl Item<'_> {
    /// The value of return flag `flag` of a meta reply (`c` gives the CAS value).
    pub(crate) fn meta_flag(&self, flag: u8) -> Option<u64> {
        let Item::Meta { flags, .. } = self else {
            return None;
        };
        flags
            .split(|b| *b == b' ')
            .find(|t| t.first() == Some(&flag))
            .and_then(|t| parse_u64(&t[1..]))
    }
}

fn parse_u64(digits: &[u8]) -> Option<u64> {
    if digits.is_empty() || digits.len() > 20 {
        return None;
    }
    let mut n: u64 = 0;
    for d in digits {
        if !d.is_ascii_digit() {
            return None;
        }
        n = n.checked_mul(10)?.checked_add(u64::from(d - b'0'))?;
    }
    Some(n)
}

fn unexpected(line: &[u8]) -> ProtocolError {
    ProtocolError(format!("unexpected reply {}", quote(line)))
}

/// Reads a decimal number of 1 to 19 digits (so it cannot overflow) at the start of `buf`: the
/// number and the byte after it, or `None` (no digit, too many, or the end of `buf`).
#[inline]
fn digits_then(buf: &[u8]) -> Option<(u64, usize, u8)> {
    let mut n: u64 = 0;
    for (i, &b) in buf[..buf.len().min(20)].iter().enumerate() {
        if b.is_ascii_digit() {
            if i == 19 {
                return None;
            }
            n = n * 10 + u64::from(b - b'0');
        } else if i == 0 {
            return None;
        } else {
            return Some((n, i, b));
        }
    }
    None
}

/// The common case of a batch reply, a well-formed `VALUE <key> <flags> <bytes> [<cas>]\r\n`
/// line, read in one pass: `None` for anything else, which [`parse`] then reads (and judges)
/// the general way. It accepts nothing that the general way refuses.
#[inline]
fn value_fast(buf: &[u8]) -> Option<Result<Option<(Item<'_>, usize)>, ProtocolError>> {
    let rest = buf.strip_prefix(b"VALUE ")?;
    // The key: up to its space, within the longest line the general way accepts.
    let key_len = rest[..rest.len().min(MAX_LINE - 6)]
        .iter()
        .position(|&b| b == b' ' || b == b'\r' || b == b'\n')?;
    if key_len == 0 || rest[key_len] != b' ' {
        return None;
    }
    let key = &rest[..key_len];
    let mut at = 6 + key_len + 1;
    let (_flags, n, b) = digits_then(&buf[at..])?;
    if b != b' ' {
        return None;
    }
    at += n + 1;
    let (len, n, mut b) = digits_then(&buf[at..])?;
    at += n;
    if b == b' ' {
        let (_cas, n, after) = digits_then(&buf[at + 1..])?;
        at += 1 + n;
        b = after;
    }
    if b != b'\r' || buf.get(at + 1) != Some(&b'\n') || at + 2 > MAX_LINE + 2 {
        return None;
    }
    let len = usize::try_from(len).ok().filter(|n| *n <= MAX_VALUE)?;
    let after_line = at + 2;
    let end = after_line + len + 2;
    if buf.len() < end {
        return Some(Ok(None));
    }
    if &buf[end - 2..end] != b"\r\n" {
        return None;
    }
    Some(Ok(Some((
        Item::Value {
            key,
            data: &buf[after_line..end - 2],
        },
        end,
    ))))
}

/// Parses the first item of `buf`: `Ok(None)` when more bytes are needed, or the item and how
/// many bytes it took.
pub(crate) fn parse(buf: &[u8]) -> Result<Option<(Item<'_>, usize)>, ProtocolError> {
    match value_fast(buf) {
        Some(fast) => fast,
        None => parse_general(buf),
    }
}

/// [`parse`] for every form of reply, and the judge of every malformed one.
fn parse_general(buf: &[u8]) -> Result<Option<(Item<'_>, usize)>, ProtocolError> {
    // The line scan is half of a batch reply's parsing done a byte at a time: `memchr` does it
    // a word (or a vector) at a time.
    let Some(nl) = memchr::memchr(b'\n', &buf[..buf.len().min(MAX_LINE + 2)]) else {
        if buf.len() > MAX_LINE {
            return Err(ProtocolError(format!(
                "a reply line longer than {MAX_LINE} bytes: {}",
                quote(buf)
            )));
        }
        return Ok(None);
    };
    if nl == 0 || buf[nl - 1] != b'\r' {
        return Err(ProtocolError(format!(
            "a reply line not ended by \\r\\n: {}",
            quote(&buf[..=nl])
        )));
    }
    let line = &buf[..nl - 1];
    let after_line = nl + 1;
    let (word, rest) = match line.iter().position(|b| *b == b' ') {
        Some(i) => (&line[..i], &line[i + 1..]),
        None => (line, &line[line.len()..]),
    };
    // A value's data follows its line: `len` bytes and `\r\n`.
    let with_data = |len: &[u8]| -> Result<Option<(&[u8], usize)>, ProtocolError> {
        let len = parse_u64(len)
            .and_then(|n| usize::try_from(n).ok())
            .filter(|n| *n <= MAX_VALUE)
            .ok_or_else(|| unexpected(line))?;
        let end = after_line + len + 2;
        if buf.len() < end {
            return Ok(None);
        }
        if &buf[end - 2..end] != b"\r\n" {
            return Err(ProtocolError(format!(
                "a value of {len} bytes not followed by \\r\\n after {}",
                quote(line)
            )));
        }
        Ok(Some((&buf[after_line..end - 2], end)))
    };
    let item = match word {
        b"VALUE" => {
            let mut fields = rest.split(|b| *b == b' ');
            let (Some(key), Some(flags), Some(len)) = (fields.next(), fields.next(), fields.next())
            else {
                return Err(unexpected(line));
            };
            let cas_ok = fields.next().is_none_or(|c| parse_u64(c).is_some());
            if key.is_empty() || parse_u64(flags).is_none() || !cas_ok || fields.next().is_some() {
                return Err(unexpected(line));
            }
            return Ok(with_data(len)?.map(|(data, end)| (Item::Value { key, data }, end)));
        }
        b"END" if rest.is_empty() => Item::End,
        b"STORED" | b"NOT_STORED" | b"EXISTS" | b"NOT_FOUND" | b"DELETED" | b"TOUCHED"
            if rest.is_empty() =>
        {
            Item::Status(word)
        }
        b"VERSION" => Item::Version,
        b"ERROR" | b"CLIENT_ERROR" | b"SERVER_ERROR" => Item::Error(line),
        b"VA" => {
            let (len, flags) = match rest.iter().position(|b| *b == b' ') {
                Some(i) => (&rest[..i], &rest[i + 1..]),
                None => (rest, &rest[rest.len()..]),
            };
            return Ok(with_data(len)?.map(|(data, end)| {
                (
                    Item::Meta {
                        code: *b"VA",
                        flags,
                        data: Some(data),
                    },
                    end,
                )
            }));
        }
        [a, b] if matches!(word, b"HD" | b"EN" | b"NF" | b"NS" | b"EX" | b"MN") => Item::Meta {
            code: [*a, *b],
            flags: rest,
            data: None,
        },
        _ => return Err(unexpected(line)),
    };
    Ok(Some((item, after_line)))
}

/// Appends `get k1 k2 …\r\n`: one command for every key of one server, so the server answers
/// the whole batch in one reply ended by one `END`.
pub(crate) fn get(out: &mut Vec<u8>, keys: &mut dyn Iterator<Item = &str>) {
    out.extend_from_slice(b"get");
    for k in keys {
        out.push(b' ');
        out.extend_from_slice(k.as_bytes());
    }
    out.extend_from_slice(b"\r\n");
}

/// Appends `set <key> 0 <exptime> <len> [noreply]\r\n<data>\r\n`.
pub(crate) fn set(out: &mut Vec<u8>, key: &str, exptime: u32, data: &[u8], noreply: bool) {
    out.extend_from_slice(b"set ");
    out.extend_from_slice(key.as_bytes());
    out.extend_from_slice(b" 0 ");
    push_num(out, u64::from(exptime));
    out.push(b' ');
    push_num(out, data.len() as u64);
    if noreply {
        out.extend_from_slice(b" noreply");
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(data);
    out.extend_from_slice(b"\r\n");
}

/// Appends `delete <key> [noreply]\r\n`.
pub(crate) fn delete(out: &mut Vec<u8>, key: &str, noreply: bool) {
    out.extend_from_slice(b"delete ");
    out.extend_from_slice(key.as_bytes());
    out.extend_from_slice(if noreply { b" noreply\r\n" } else { b"\r\n" });
}

/// Appends `version\r\n`: the one reply a pipeline of `noreply` commands waits for. memcached
/// answers in order, so once it arrives every command before it has been done; a failed one
/// still sends its error line before it.
pub(crate) fn version(out: &mut Vec<u8>) {
    out.extend_from_slice(b"version\r\n");
}

/// Appends `ms <key> <len> T<ttl> c [ME | C<cas>]\r\n<data>\r\n`: add (`cas` = `None`: store
/// only if absent) or compare-and-set (store only if the CAS value is still `cas`), replying
/// with the new CAS value.
pub(crate) fn meta_set(out: &mut Vec<u8>, key: &str, data: &[u8], ttl: u32, cas: Option<u64>) {
    out.extend_from_slice(b"ms ");
    out.extend_from_slice(key.as_bytes());
    out.push(b' ');
    push_num(out, data.len() as u64);
    out.extend_from_slice(b" T");
    push_num(out, u64::from(ttl));
    out.extend_from_slice(b" c");
    match cas {
        None => out.extend_from_slice(b" ME"),
        Some(cas) => {
            out.extend_from_slice(b" C");
            push_num(out, cas);
        }
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(data);
    out.extend_from_slice(b"\r\n");
}

/// Appends `mg <key> [v c]\r\n`: whether the key exists (`HD`/`EN`), or its value and CAS.
pub(crate) fn meta_get(out: &mut Vec<u8>, key: &str, value_and_cas: bool) {
    out.extend_from_slice(b"mg ");
    out.extend_from_slice(key.as_bytes());
    out.extend_from_slice(if value_and_cas { b" v c\r\n" } else { b"\r\n" });
}

/// Appends `md <key> C<cas>\r\n`: deletes the key only if its CAS value is still `cas`.
pub(crate) fn meta_delete(out: &mut Vec<u8>, key: &str, cas: u64) {
    out.extend_from_slice(b"md ");
    out.extend_from_slice(key.as_bytes());
    out.extend_from_slice(b" C");
    push_num(out, cas);
    out.extend_from_slice(b"\r\n");
}

fn push_num(out: &mut Vec<u8>, n: u64) {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    let mut n = n;
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[i..]);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(buf: &[u8]) -> Item<'_> {
        let (item, n) = parse(buf).unwrap().unwrap();
        assert_eq!(n, buf.len(), "{buf:?}");
        item
    }

    #[test]
    fn replies_parse() {
        assert_eq!(
            one(b"VALUE k 0 3\r\nabc\r\n"),
            Item::Value {
                key: b"k",
                data: b"abc"
            }
        );
        assert_eq!(
            one(b"VALUE k 5 0 77\r\n\r\n"),
            Item::Value {
                key: b"k",
                data: b""
            }
        );
        assert_eq!(one(b"END\r\n"), Item::End);
        assert_eq!(one(b"STORED\r\n"), Item::Status(b"STORED"));
        assert_eq!(one(b"VERSION 1.6.18\r\n"), Item::Version);
        assert_eq!(
            one(b"SERVER_ERROR out of memory\r\n"),
            Item::Error(b"SERVER_ERROR out of memory")
        );
        let va = one(b"VA 3 c42 t9\r\ntok\r\n");
        assert_eq!(va.meta_flag(b'c'), Some(42));
        assert_eq!(va.meta_flag(b't'), Some(9));
        assert!(matches!(
            va,
            Item::Meta {
                code: [b'V', b'A'],
                data: Some(b"tok"),
                ..
            }
        ));
        let hd = one(b"HD c7\r\n");
        assert_eq!(hd.meta_flag(b'c'), Some(7));
        assert_eq!(
            one(b"EN\r\n"),
            Item::Meta {
                code: *b"EN",
                flags: b"",
                data: None
            }
        );
    }

    #[test]
    fn partial_replies_wait_for_more() {
        for partial in [
            &b"VAL"[..],
            b"VALUE k 0 3\r\nab",
            b"VALUE k 0 3\r\nabc\r",
            b"END\r",
        ] {
            assert!(parse(partial).unwrap().is_none(), "{partial:?}");
        }
        let (item, n) = parse(b"END\r\nVALUE").unwrap().unwrap();
        assert_eq!((item, n), (Item::End, 5));
    }

    #[test]
    fn garbage_is_an_error_never_a_panic() {
        for bad in [
            &b"HELLO\r\n"[..],
            b"END\n",
            b"\n",
            b"VALUE k 0 3\r\nabcXY",
            b"VALUE k 0 99999999999999999999999\r\n",
            b"VALUE k 0 1073741825\r\n",
            b"VALUE k x 3\r\nabc\r\n",
            b"VALUE  0 3\r\nabc\r\n",
            b"VALUE k 0\r\n",
            b"VALUE k 0 3 4 5\r\nabc\r\n",
            b"VA x\r\n",
            b"END extra\r\n",
        ] {
            assert!(parse(bad).is_err(), "{bad:?}");
        }
        let long = vec![b'x'; MAX_LINE + 10];
        let err = parse(&long).unwrap_err().to_string();
        assert!(err.contains("longer than"), "{err}");
    }

    #[test]
    fn the_fast_value_path_agrees_with_the_general_one() {
        // Well-formed replies, then every cut and every one-byte change of them: wherever the
        // fast path answers, the general parser gives the same answer.
        let good: [&[u8]; 5] = [
            b"VALUE k 0 3\r\nabc\r\nEND\r\n",
            b"VALUE user:1 4294967295 0 99\r\n\r\n",
            b"VALUE a 1 5 1234567890123456789\r\nhello\r\n",
            b"VALUE k 00 0003\r\nabc\r\n",
            b"VALUE k 0 12345678901234567890\r\n",
        ];
        let mut answered = 0;
        let mut check = |buf: &[u8]| {
            if let Some(fast) = value_fast(buf) {
                answered += 1;
                let general = parse_general(buf);
                assert_eq!(
                    format!("{fast:?}"),
                    format!("{general:?}"),
                    "{:?}",
                    buf.escape_ascii().to_string()
                );
            }
        };
        for g in good {
            for cut in 0..=g.len() {
                check(&g[..cut]);
            }
            for at in 0..g.len() {
                for b in [b' ', b'\r', b'\n', b'0', b'9', b'x', 0, 0xff] {
                    let mut changed = g.to_vec();
                    changed[at] = b;
                    check(&changed);
                }
            }
        }
        let long_key = [&b"VALUE "[..], &vec![b'k'; MAX_LINE], b" 0 1\r\nx\r\n"].concat();
        check(&long_key);
        assert!(parse(&long_key).is_err());
        assert!(answered > 100, "{answered}");
    }

    #[test]
    fn the_fast_value_path_agrees_with_the_general_one_on_random_replies() {
        // Replies built at random from the pieces of a `VALUE` line (and bytes that break it),
        // by a fixed generator so a failure repeats: the fast path never answers differently.
        let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = move |n: usize| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state % n as u64) as usize
        };
        let numbers: [&[u8]; 7] = [
            b"0",
            b"3",
            b"007",
            b"99999",
            b"1234567890123456789",
            b"18446744073709551616",
            b"",
        ];
        let noise = [b' ', b'\r', b'\n', b'0', b'x', 0xff];
        let mut answered = 0;
        for _ in 0..100_000 {
            // A line of well-formed shape, its data, the end; then up to two bytes changed
            // and perhaps a cut.
            let mut buf = b"VALUE ".to_vec();
            buf.extend_from_slice([&b"k"[..], b"key:1", b"", b"a\rb"][next(4)]);
            let fields = 2 + next(3);
            for _ in 0..fields {
                buf.push(b' ');
                buf.extend_from_slice(numbers[next(numbers.len())]);
            }
            buf.extend_from_slice(b"\r\n");
            buf.extend(std::iter::repeat_n(b'd', next(5)));
            buf.extend_from_slice(b"\r\nEND\r\n");
            for _ in 0..next(3) {
                let at = next(buf.len());
                buf[at] = noise[next(noise.len())];
            }
            if next(2) == 0 {
                buf.truncate(next(buf.len() + 1));
            }
            if let Some(fast) = value_fast(&buf) {
                answered += 1;
                assert_eq!(
                    format!("{fast:?}"),
                    format!("{:?}", parse_general(&buf)),
                    "{}",
                    buf.escape_ascii()
                );
            }
        }
        assert!(answered > 1_000, "{answered}");
    }

    #[test]
    fn requests_are_written_as_the_protocol_says() {
        let mut out = Vec::new();
        get(&mut out, &mut ["a", "b"].into_iter());
        set(&mut out, "k", 0, b"xy", true);
        delete(&mut out, "k", false);
        version(&mut out);
        meta_set(&mut out, "_lockk", b"t", 30, None);
        meta_set(&mut out, "_lockk", b"t", 30, Some(12));
        meta_get(&mut out, "_lockk", true);
        meta_delete(&mut out, "_lockk", 12);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "get a b\r\nset k 0 0 2 noreply\r\nxy\r\ndelete k\r\nversion\r\n\
             ms _lockk 1 T30 c ME\r\nt\r\nms _lockk 1 T30 c C12\r\nt\r\nmg _lockk v c\r\nmd _lockk C12\r\n"
        );
    }
}
