//! Redaction of personal data before synthesis.
//!
//! ReDoS defence: every pattern here runs on the `regex` crate, which
//! guarantees matching in time linear in the input (finite automata, no
//! backtracking), so no input can make a search blow up. Each pattern is
//! compiled once and with explicit size limits on the compiled program and
//! the lazy DFA cache. Checks that a regular language cannot express well
//! (Luhn, digit counts, the character before a match) are done in Rust on
//! each match.

use std::borrow::Cow;
use std::sync::LazyLock;

use regex::{Match, Regex, RegexBuilder};

/// Placeholder spoken instead of an e-mail address.
pub const REDACTED_EMAIL: &str = "redacted email";
/// Placeholder spoken instead of a phone number.
pub const REDACTED_PHONE: &str = "redacted phone number";
/// Placeholder spoken instead of a payment card number.
pub const REDACTED_CARD: &str = "redacted card number";

const SIZE_LIMIT: usize = 2 << 20;
const DFA_SIZE_LIMIT: usize = 2 << 20;

fn compile(pattern: &str) -> Regex {
    RegexBuilder::new(pattern)
        .size_limit(SIZE_LIMIT)
        .dfa_size_limit(DFA_SIZE_LIMIT)
        .build()
        .expect("the built-in PII patterns compile within their size limits")
}

/// `local@domain.tld`: the local part of word characters and `.%+-`, a
/// domain of at least two dot-separated labels.
static EMAIL: LazyLock<Regex> = LazyLock::new(|| compile(r"[\w.%+\-]+@[\w\-]+(?:\.[\w\-]+)+"));

/// 13–19 digits, each optionally separated from the next by one space or
/// dash. Luhn and context are checked per match.
static CARD: LazyLock<Regex> =
    LazyLock::new(|| compile(r"(?-u:\b)[0-9](?:[ \-]?[0-9]){12,18}(?-u:\b)"));

/// Phone numbers; the digit count (7–15, the E.164 maximum) and context are
/// checked per match.
static PHONE: LazyLock<Regex> = LazyLock::new(|| {
    compile(concat!(
        // International: "+" and a 1–3 digit country code, then 1–6 groups of
        // 1–4 digits separated by an optional space, dot or dash; a group may
        // be parenthesised. "+1 415 555 2671", "+44 (0)20 7946 0958",
        // "+33 1 23 45 67 89", "+4915112345678".
        r"\+[0-9]{1,3}(?:[ .\-]?(?:\([0-9]{1,4}\)|[0-9]{1,4})){1,6}(?-u:\b)",
        // North American, parenthesised area code: "(415) 555-2671",
        // "1 (415) 555 2671".
        r"|(?:(?-u:\b)1[ .\-]?)?\([0-9]{3}\)[ .\-]?[0-9]{3}[ .\-][0-9]{4}(?-u:\b)",
        // North American, separated groups: "415-555-2671", "415.555.2671",
        // "415 555 2671", "1-800-555-0199".
        r"|(?-u:\b)(?:1[ .\-])?[0-9]{3}[ .\-][0-9]{3}[ .\-][0-9]{4}(?-u:\b)",
        // European national format: trunk prefix 0, an area code of 2–5 more
        // digits, then 1–3 groups of 2–8 digits, separated by an optional
        // space, slash or dash: "030 1234567", "089/1234567",
        // "0171-1234567", "020 7946 0958", "0301234567".
        r"|(?-u:\b)0[1-9][0-9]{1,4}(?:[ /\-]?[0-9]{2,8}){1,3}(?-u:\b)",
    ))
});

/// Replaces e-mail addresses, phone numbers and payment card numbers with
/// speakable placeholders ([`REDACTED_EMAIL`], [`REDACTED_PHONE`],
/// [`REDACTED_CARD`]). Returns `Cow::Borrowed` when nothing was replaced.
///
/// * Card numbers: 13–19 digits with optional single spaces or dashes
///   between digits, redacted only if they pass the Luhn check, so ordinary
///   long numbers are left alone.
/// * Phone numbers, 7–15 digits: international `+` forms; North American
///   `NXX-NXX-XXXX` groupings (with `-`, `.`, space or a parenthesised area
///   code, optional leading `1`); European national numbers with trunk
///   prefix `0` and an area code of at least three digits. Not covered:
///   local numbers without an area code ("555-2671"), French-style
///   "01 23 45 67 89", and undelimited North American "4155552671".
/// * Numbers that continue a decimal number (`3.0301234567`) or follow a
///   letter are not redacted.
///
/// E-mail addresses are replaced first, then cards, then phone numbers.
pub fn redact_pii(text: &str) -> Cow<'_, str> {
    let text = replace_matches(&EMAIL, text, |_, _| true, REDACTED_EMAIL);
    let text = and_then(text, |t| replace_matches(&CARD, t, is_card, REDACTED_CARD));
    and_then(text, |t| {
        replace_matches(&PHONE, t, is_phone, REDACTED_PHONE)
    })
}

/// Applies `step` to the text, keeping the borrow when neither changed it.
fn and_then<'a>(text: Cow<'a, str>, step: impl Fn(&str) -> Cow<'_, str>) -> Cow<'a, str> {
    match text {
        Cow::Borrowed(borrowed) => step(borrowed),
        Cow::Owned(owned) => {
            let replaced = match step(&owned) {
                Cow::Borrowed(_) => None,
                Cow::Owned(new) => Some(new),
            };
            Cow::Owned(replaced.unwrap_or(owned))
        }
    }
}

/// Replaces each match of `re` that `accept` approves with `replacement`.
fn replace_matches<'h>(
    re: &Regex,
    text: &'h str,
    accept: impl Fn(&str, Match<'_>) -> bool,
    replacement: &str,
) -> Cow<'h, str> {
    let mut out: Option<String> = None;
    let mut copied_up_to = 0;
    for m in re.find_iter(text) {
        if accept(text, m) {
            let buffer = out.get_or_insert_with(|| String::with_capacity(text.len()));
            buffer.push_str(&text[copied_up_to..m.start()]);
            buffer.push_str(replacement);
            copied_up_to = m.end();
        }
    }
    match out {
        None => Cow::Borrowed(text),
        Some(mut buffer) => {
            buffer.push_str(&text[copied_up_to..]);
            Cow::Owned(buffer)
        }
    }
}

fn digits(s: &str) -> Vec<u8> {
    s.bytes()
        .filter(u8::is_ascii_digit)
        .map(|b| b - b'0')
        .collect()
}

/// The Luhn checksum used by payment cards.
pub(super) fn luhn_valid(digits: &[u8]) -> bool {
    let sum: u32 = digits
        .iter()
        .rev()
        .enumerate()
        .map(|(i, &d)| {
            let d = u32::from(d);
            if i % 2 == 1 {
                let doubled = d * 2;
                if doubled > 9 { doubled - 9 } else { doubled }
            } else {
                d
            }
        })
        .sum();
    sum.is_multiple_of(10)
}

/// Whether the match is glued to a surrounding number or word: preceded by
/// a letter, or preceded/followed by `.` or `,` next to a digit (a decimal
/// number such as `3.0301234567`).
fn embedded(text: &str, m: Match<'_>) -> bool {
    let mut before = text[..m.start()].chars().rev();
    let mut after = text[m.end()..].chars();
    let b1 = before.next();
    let b2 = before.next();
    let a1 = after.next();
    let a2 = after.next();
    let is_sep = |c: Option<char>| matches!(c, Some('.' | ','));
    let is_digit = |c: Option<char>| c.is_some_and(|c| c.is_ascii_digit());
    b1.is_some_and(char::is_alphanumeric)
        || (is_sep(b1) && is_digit(b2))
        || (is_sep(a1) && is_digit(a2))
}

fn is_card(text: &str, m: Match<'_>) -> bool {
    let d = digits(m.as_str());
    // A number after "+" is an international phone number, not a card.
    let after_plus = text[..m.start()].ends_with('+');
    !after_plus && (13..=19).contains(&d.len()) && luhn_valid(&d) && !embedded(text, m)
}

fn is_phone(text: &str, m: Match<'_>) -> bool {
    let count = digits(m.as_str()).len();
    let after_plus = !m.as_str().starts_with('+') && text[..m.start()].ends_with('+');
    (7..=15).contains(&count) && !after_plus && !embedded(text, m)
}
