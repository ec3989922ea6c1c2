//! Characters: decoding UTF-8 and JSON escapes at a byte position (forwards and backwards), the
//! invisible characters the guard looks for, and the folding the phrase matcher reads words with
//! (case, light leetspeak, homoglyphs).

/// U+FFFD, for bytes that do not decode.
pub(crate) const REPLACEMENT: u32 = 0xFFFD;

fn hex4(buf: &[u8], at: usize) -> Option<u32> {
    let digits = buf.get(at..at + 4)?;
    let mut v = 0u32;
    for &d in digits {
        v = v << 4
            | match d {
                b'0'..=b'9' => d - b'0',
                b'a'..=b'f' => d - b'a' + 10,
                b'A'..=b'F' => d - b'A' + 10,
                _ => return None,
            } as u32;
    }
    Some(v)
}

/// The character starting at byte `i` and the position after it. UTF-8 is decoded (a byte that
/// does not start a valid sequence reads as U+FFFD, one byte long); with `json`, so are the
/// escapes of JSON strings: `\n`, `\"`, ... and `\uXXXX`, surrogate pairs joined (a lone
/// surrogate reads as U+FFFD). A backslash starting no escape reads as itself.
pub(crate) fn next_char(buf: &[u8], i: usize, json: bool) -> (u32, usize) {
    let b = buf[i];
    if b < 0x80 {
        if json && b == b'\\' {
            return escape(buf, i);
        }
        return (b as u32, i + 1);
    }
    let (len, init) = match b {
        0xC2..=0xDF => (2, (b & 0x1F) as u32),
        0xE0..=0xEF => (3, (b & 0x0F) as u32),
        0xF0..=0xF4 => (4, (b & 0x07) as u32),
        _ => return (REPLACEMENT, i + 1),
    };
    let Some(tail) = buf.get(i + 1..i + len) else {
        return (REPLACEMENT, i + 1);
    };
    let mut cp = init;
    for &c in tail {
        if c & 0xC0 != 0x80 {
            return (REPLACEMENT, i + 1);
        }
        cp = cp << 6 | (c & 0x3F) as u32;
    }
    (cp, i + len)
}

/// The JSON escape starting at `i` (a backslash).
fn escape(buf: &[u8], i: usize) -> (u32, usize) {
    let Some(&e) = buf.get(i + 1) else {
        return (b'\\' as u32, i + 1);
    };
    let simple = match e {
        b'n' => b'\n',
        b't' => b'\t',
        b'r' => b'\r',
        b'b' => 0x08,
        b'f' => 0x0C,
        b'"' | b'\\' | b'/' => e,
        b'u' => {
            let Some(v) = hex4(buf, i + 2) else {
                return (b'\\' as u32, i + 1);
            };
            return match v {
                0xD800..=0xDBFF => {
                    let lo = (buf.get(i + 6) == Some(&b'\\') && buf.get(i + 7) == Some(&b'u'))
                        .then(|| hex4(buf, i + 8))
                        .flatten();
                    match lo {
                        Some(lo @ 0xDC00..=0xDFFF) => {
                            (0x10000 + ((v - 0xD800) << 10) + (lo - 0xDC00), i + 12)
                        }
                        _ => (REPLACEMENT, i + 6),
                    }
                }
                0xDC00..=0xDFFF => (REPLACEMENT, i + 6),
                _ => (v, i + 6),
            };
        }
        _ => return (b'\\' as u32, i + 1),
    };
    (simple as u32, i + 2)
}

/// True when the backslash at `p` starts an escape: an even number of backslashes precede it.
/// (Counting stops after 64, enough for any text that is not an attack on this function.)
pub(crate) fn starts_escape(buf: &[u8], p: usize) -> bool {
    let run = buf[..p]
        .iter()
        .rev()
        .take(64)
        .take_while(|&&b| b == b'\\')
        .count();
    run % 2 == 0
}

/// The `\uXXXX` escape ending at `end`, if one does.
fn u_escape_ending_at(buf: &[u8], end: usize) -> Option<u32> {
    let start = end.checked_sub(6)?;
    (buf[start] == b'\\' && buf[start + 1] == b'u' && starts_escape(buf, start))
        .then(|| hex4(buf, start + 2))
        .flatten()
}

/// The character ending just before byte `i`, decoded as [`next_char`] would have; `None` at the
/// start of the text.
pub(crate) fn prev_char(buf: &[u8], i: usize, json: bool) -> Option<u32> {
    prev_char_at(buf, i, json).map(|(cp, _)| cp)
}

/// [`prev_char`], and the byte where that character starts.
pub(crate) fn prev_char_at(buf: &[u8], i: usize, json: bool) -> Option<(u32, usize)> {
    let b = *buf[..i].last()?;
    if b >= 0x80 {
        // Back to the lead byte (at most three continuation bytes).
        let start = (i.saturating_sub(4)..i)
            .rev()
            .find(|&p| buf[p] & 0xC0 != 0x80)
            .unwrap_or(i - 1);
        let (cp, end) = next_char(buf, start, false);
        return Some(if end == i {
            (cp, start)
        } else {
            (REPLACEMENT, i - 1)
        });
    }
    if json {
        if let Some(v) = u_escape_ending_at(buf, i) {
            return Some(match v {
                0xDC00..=0xDFFF => match u_escape_ending_at(buf, i - 6) {
                    Some(hi @ 0xD800..=0xDBFF) => {
                        (0x10000 + ((hi - 0xD800) << 10) + (v - 0xDC00), i - 12)
                    }
                    _ => (REPLACEMENT, i - 6),
                },
                _ => (v, i - 6),
            });
        }
        if i >= 2 && buf[i - 2] == b'\\' && starts_escape(buf, i - 2) {
            let (cp, end) = escape(buf, i - 2);
            if end == i {
                return Some((cp, i - 2));
            }
        }
    }
    Some((b as u32, i - 1))
}

/// The invisible characters the guard reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Hidden {
    /// U+E0000-U+E007F: invisible copies of ASCII ("ASCII smuggling").
    Tag,
    /// U+200B-U+200D, U+2060, U+FEFF.
    ZeroWidth,
    /// Embeddings, overrides and isolates: U+202A-U+202E, U+2066-U+2069.
    Bidi,
    /// Other invisible format characters: invisible operators, deprecated format characters,
    /// interlinear annotation, Mongolian vowel separator, Hangul fillers, shorthand controls.
    Invisible,
    /// U+FE00-U+FE0F, U+E0100-U+E01EF.
    VariationSelector,
}

/// The kind of invisible character `cp` is, if it is one.
pub(crate) fn hidden(cp: u32) -> Option<Hidden> {
    Some(match cp {
        0xE0000..=0xE007F => Hidden::Tag,
        0x200B..=0x200D | 0x2060 | 0xFEFF => Hidden::ZeroWidth,
        0x202A..=0x202E | 0x2066..=0x2069 => Hidden::Bidi,
        0x2061..=0x2064
        | 0x206A..=0x206F
        | 0xFFF9..=0xFFFB
        | 0x180E
        | 0x3164
        | 0xFFA0
        | 0x1BCA0..=0x1BCA3 => Hidden::Invisible,
        0xFE00..=0xFE0F | 0xE0100..=0xE01EF => Hidden::VariationSelector,
        _ => return None,
    })
}

/// Characters dropped when reading words, beyond [`hidden`]: soft hyphen, left-to-right and
/// right-to-left marks, combining grapheme joiner. They are ordinary in text (so not reported),
/// but can split a word in two.
pub(crate) fn ignorable(cp: u32) -> bool {
    matches!(cp, 0xAD | 0x200E | 0x200F | 0x034F) || hidden(cp).is_some()
}

/// A CJK ideograph (what an ideographic variation selector, U+E0100-U+E01EF, may follow).
pub(crate) fn ideograph(cp: u32) -> bool {
    matches!(cp, 0x3400..=0x4DBF | 0x4E00..=0x9FFF | 0xF900..=0xFAFF | 0x20000..=0x3FFFF)
}

/// Letters that look like ASCII ones (lowercase result). `always` is true for those that never
/// appear among ASCII words by accident (fullwidth, mathematical, enclosed, small capitals): any
/// of them makes the guard read the text again normalised. Cyrillic and Greek ones only do when
/// next to an ASCII letter (a mixed-script word), so Russian or Greek text costs nothing extra.
pub(crate) fn confusable(cp: u32) -> Option<(u8, bool)> {
    let ascii = |c: u8| Some((c.to_ascii_lowercase(), true));
    match cp {
        0xFF21..=0xFF3A => ascii(b'a' + (cp - 0xFF21) as u8),
        0xFF41..=0xFF5A => ascii(b'a' + (cp - 0xFF41) as u8),
        0xFF10..=0xFF19 => ascii(b'0' + (cp - 0xFF10) as u8),
        0x1D400..=0x1D6A3 => ascii(b'a' + ((cp - 0x1D400) % 26) as u8),
        0x1D7CE..=0x1D7FF => ascii(b'0' + ((cp - 0x1D7CE) % 10) as u8),
        0x249C..=0x24B5 => ascii(b'a' + (cp - 0x249C) as u8),
        0x24B6..=0x24CF => ascii(b'a' + (cp - 0x24B6) as u8),
        0x24D0..=0x24E9 => ascii(b'a' + (cp - 0x24D0) as u8),
        _ => {
            let c = match cp {
                // Small capitals.
                0x1D00 => b'a',
                0x0299 => b'b',
                0x1D04 => b'c',
                0x1D05 => b'd',
                0x1D07 => b'e',
                0x0262 => b'g',
                0x029C => b'h',
                0x026A => b'i',
                0x1D0A => b'j',
                0x1D0B => b'k',
                0x029F => b'l',
                0x1D0D => b'm',
                0x0274 => b'n',
                0x1D0F => b'o',
                0x1D18 => b'p',
                0x0280 => b'r',
                0xA731 => b's',
                0x1D1B => b't',
                0x1D1C => b'u',
                0x1D20 => b'v',
                0x1D21 => b'w',
                0x028F => b'y',
                0x1D22 => b'z',
                _ => return cyrillic_greek(cp).map(|c| (c, false)),
            };
            Some((c, true))
        }
    }
}

fn cyrillic_greek(cp: u32) -> Option<u8> {
    Some(match cp {
        // Cyrillic, lower and upper case.
        0x0430 | 0x0410 => b'a',
        0x0412 | 0x0432 => b'b',
        0x0435 | 0x0415 | 0x0454 => b'e',
        0x041A | 0x043A => b'k',
        0x041C | 0x043C => b'm',
        0x041D | 0x043D | 0x04BB | 0x04BA => b'h',
        0x041E | 0x043E => b'o',
        0x0420 | 0x0440 => b'p',
        0x0421 | 0x0441 => b'c',
        0x0422 | 0x0442 => b't',
        0x0423 | 0x0443 | 0x04AF | 0x04AE => b'y',
        0x0425 | 0x0445 => b'x',
        0x0406 | 0x0456 | 0x04C0 | 0x04CF => b'i',
        0x0408 | 0x0458 => b'j',
        0x0405 | 0x0455 => b's',
        0x0501 => b'd',
        0x051B => b'q',
        0x051D => b'w',
        0x0261 => b'g',
        // Greek.
        0x0391 | 0x03B1 => b'a',
        0x0392 | 0x03B2 => b'b',
        0x0395 | 0x03B5 => b'e',
        0x0396 => b'z',
        0x0397 => b'h',
        0x0399 | 0x03B9 => b'i',
        0x039A | 0x03BA => b'k',
        0x039C => b'm',
        0x039D | 0x03BD => b'n',
        0x039F | 0x03BF => b'o',
        0x03A1 | 0x03C1 => b'p',
        0x03A4 | 0x03C4 => b't',
        0x03A5 | 0x03C5 => b'u',
        0x03A7 | 0x03C7 => b'x',
        _ => return None,
    })
}

/// A character as the phrase matcher reads it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Folded {
    /// Part of a word: a lowercase ASCII letter.
    Letter(u8),
    /// `:`, which makes a header (`new instructions:`).
    Colon,
    /// Sentence punctuation (`.`, `,`, `!`, `?`, `;`): phrases do not run across it.
    Stop,
    /// Invisible: read as if absent, so it cannot split a word.
    Skip,
    /// Anything else separates words.
    Sep,
}

/// ASCII bytes as words are read: letters lowercased, the digits and signs of light leetspeak
/// (`1gn0r3`, `@ll`) read as the letters they stand for; 0 for every other byte.
pub(crate) const ASCII_FOLD: [u8; 128] = {
    let mut t = [0u8; 128];
    let mut c = b'a';
    while c <= b'z' {
        t[c as usize] = c;
        t[(c - 32) as usize] = c;
        c += 1;
    }
    t[b'0' as usize] = b'o';
    t[b'1' as usize] = b'i';
    t[b'3' as usize] = b'e';
    t[b'4' as usize] = b'a';
    t[b'5' as usize] = b's';
    t[b'7' as usize] = b't';
    t[b'@' as usize] = b'a';
    t[b'$' as usize] = b's';
    t
};

/// How the phrase matcher reads `cp`.
pub(crate) fn fold(cp: u32) -> Folded {
    if cp < 0x80 {
        let f = ASCII_FOLD[cp as usize];
        return if f != 0 {
            Folded::Letter(f)
        } else {
            match cp as u8 {
                b':' => Folded::Colon,
                b'.' | b',' | b'!' | b'?' | b';' => Folded::Stop,
                _ => Folded::Sep,
            }
        };
    }
    if let Some(c) = tag_ascii(cp) {
        // Tag characters spell ASCII invisibly: read what they spell.
        return fold(c as u32);
    }
    if ignorable(cp) {
        return Folded::Skip;
    }
    match confusable(cp) {
        Some((c, _)) => match ASCII_FOLD[c as usize] {
            0 => Folded::Sep,
            f => Folded::Letter(f),
        },
        None => match cp {
            0xFF1A => Folded::Colon,
            0x3002 | 0xFF0C | 0xFF0E | 0xFF01 | 0xFF1F => Folded::Stop,
            _ => Folded::Sep,
        },
    }
}

/// The ASCII character a printable tag character (U+E0020-U+E007E) stands for.
pub(crate) fn tag_ascii(cp: u32) -> Option<u8> {
    (0xE0020..=0xE007E)
        .contains(&cp)
        .then(|| (cp - 0xE0000) as u8)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_escapes_both_ways() {
        let s = br#"a\u00e9\ud83d\ude00\n\"\u200b\\u0041"#;
        let mut i = 0;
        let mut seen = Vec::new();
        while i < s.len() {
            let (cp, next) = next_char(s, i, true);
            assert_eq!(prev_char_at(s, next, true), Some((cp, i)), "at {i}");
            seen.push(cp);
            i = next;
        }
        assert_eq!(
            seen,
            [
                'a' as u32,
                0xE9,
                0x1F600,
                '\n' as u32,
                '"' as u32,
                0x200B,
                '\\' as u32,
                'u' as u32,
                '0' as u32,
                '0' as u32,
                '4' as u32,
                '1' as u32
            ]
        );
        assert_eq!(next_char(br"\ud800x", 0, true), (REPLACEMENT, 6));
        assert_eq!(next_char(br"\uzz", 0, true), ('\\' as u32, 1));
        let emoji = "x\u{1F469}\u{200D}";
        assert_eq!(prev_char(emoji.as_bytes(), 5, false), Some(0x1F469));
        assert_eq!(prev_char(b"", 0, true), None);
    }

    #[test]
    fn folds_homoglyphs_and_leetspeak() {
        let word: String = "іgn0rе"
            .chars()
            .map(|c| match fold(c as u32) {
                Folded::Letter(l) => l as char,
                other => panic!("{c:?} folded to {other:?}"),
            })
            .collect();
        assert_eq!(word, "ignore");
        assert_eq!(fold(0x200B), Folded::Skip);
        assert_eq!(fold(0xE0069), Folded::Letter(b'i'));
        assert_eq!(fold('\u{FF49}' as u32), Folded::Letter(b'i'));
        assert_eq!(fold(':' as u32), Folded::Colon);
        assert_eq!(fold('é' as u32), Folded::Sep);
    }
}
