//! The text pipeline for text-to-speech input.
//!
//! [`normalize`] turns untrusted request text into the canonical form that is
//! handed to a speech engine, or rejects it with a [`TextError`] whose
//! [`code`](TextError::code) is stable and whose `Display` never echoes the
//! user's text.
//!
//! The pipeline, in this exact order:
//!
//! 1. Unicode NFKC (compatibility composition).
//! 2. Scan the NFKC text and reject control characters, bidirectional
//!    controls, tag characters and noncharacters; handle zero-width
//!    characters per [`ZeroWidth`].
//! 3. Collapse whitespace and trim both ends.
//! 4. Reject empty text, then text longer than [`TextPolicy::max_chars`].
//!    Length is measured *after* NFKC on purpose: NFKC can expand one
//!    character into up to 18 (U+FDFA).
//! 5. Optionally reject spam ([`check_spam`]) and blocked words ([`WordList`]).
//!
//! The module also offers [`redact_pii`], which replaces e-mail addresses,
//! phone numbers and payment card numbers with speakable placeholders.

use std::fmt;
use std::sync::Arc;

use unicode_normalization::{UnicodeNormalization, is_nfkc};

mod pii;
mod spam;
#[cfg(test)]
mod tests;
mod wordlist;

pub use pii::{REDACTED_CARD, REDACTED_EMAIL, REDACTED_PHONE, redact_pii};
pub use spam::{MAX_LINKS, MAX_REPEATED_CHARS, MAX_REPEATED_WORDS, SpamKind, check_spam};
pub use wordlist::WordList;

/// Default for [`TextPolicy::max_chars`]: 4096 characters, the input limit of
/// the OpenAI speech API.
pub const DEFAULT_MAX_CHARS: usize = 4096;

/// What [`normalize`] does with zero-width and invisible formatting characters:
/// U+200B, U+200C, U+200D, U+200E, U+200F, U+2060, U+FEFF, U+180E and U+061C.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ZeroWidth {
    /// Reject the input with [`TextErrorKind::ZeroWidthCharacter`].
    Reject,
    /// Remove the characters silently (the default).
    #[default]
    Strip,
    /// Keep the characters (needed by some scripts, e.g. ZWJ/ZWNJ in Indic
    /// and Persian text, and by emoji sequences).
    Allow,
}

/// The limits [`normalize`] enforces.
#[derive(Debug, Clone)]
pub struct TextPolicy {
    /// Maximum number of Unicode scalar values (`chars().count()`) after
    /// NFKC, filtering and whitespace collapse.
    pub max_chars: usize,
    /// Treatment of zero-width characters.
    pub zero_width: ZeroWidth,
    /// Blocked words; `None` disables the check.
    pub profanity: Option<Arc<WordList>>,
    /// Whether to run [`check_spam`] on the normalized text.
    pub spam: bool,
}

impl Default for TextPolicy {
    /// [`DEFAULT_MAX_CHARS`], [`ZeroWidth::Strip`], no word list, spam check on.
    fn default() -> Self {
        TextPolicy {
            max_chars: DEFAULT_MAX_CHARS,
            zero_width: ZeroWidth::default(),
            profanity: None,
            spam: true,
        }
    }
}

/// Why text was rejected. The messages never contain user text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TextErrorKind {
    /// The bytes are not valid UTF-8.
    #[error("input is not valid UTF-8")]
    InvalidUtf8,
    /// A C0 or C1 control character other than tab, line feed and carriage
    /// return, or DEL.
    #[error("input contains a disallowed control character")]
    ControlCharacter,
    /// A bidirectional embedding, override or isolate (U+202A–U+202E,
    /// U+2066–U+2069), as used in "trojan source" attacks.
    #[error("input contains a bidirectional embedding, override or isolate control")]
    BidiControl,
    /// A zero-width or invisible formatting character under
    /// [`ZeroWidth::Reject`].
    #[error("input contains a zero-width or invisible formatting character")]
    ZeroWidthCharacter,
    /// A Unicode tag character (U+E0000–U+E007F), used to smuggle invisible
    /// ASCII.
    #[error("input contains an invisible Unicode tag character")]
    TagCharacter,
    /// A Unicode noncharacter (U+FDD0–U+FDEF or U+xFFFE/U+xFFFF).
    #[error("input contains a Unicode noncharacter")]
    Noncharacter,
    /// Nothing is left after normalization.
    #[error("input is empty after normalization")]
    Empty,
    /// More than `max` characters after normalization.
    #[error("input is too long after normalization: {actual} characters, the maximum is {max}")]
    TooLong {
        /// The policy's limit.
        max: usize,
        /// The character count after normalization.
        actual: usize,
    },
    /// A word from the policy's [`WordList`].
    #[error("input contains a blocked word")]
    Profanity,
    /// The text looks like spam.
    #[error("input looks like spam: {0}")]
    Spam(SpamKind),
}

impl TextErrorKind {
    /// The stable machine-readable code, e.g. `"bidi_control"`.
    pub fn code(&self) -> &'static str {
        match self {
            TextErrorKind::InvalidUtf8 => "invalid_utf8",
            TextErrorKind::ControlCharacter => "control_character",
            TextErrorKind::BidiControl => "bidi_control",
            TextErrorKind::ZeroWidthCharacter => "zero_width_character",
            TextErrorKind::TagCharacter => "tag_character",
            TextErrorKind::Noncharacter => "noncharacter",
            TextErrorKind::Empty => "empty_input",
            TextErrorKind::TooLong { .. } => "input_too_long",
            TextErrorKind::Profanity => "profanity",
            TextErrorKind::Spam(_) => "spam",
        }
    }
}

/// A rejection by [`normalize`] or [`normalize_bytes`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TextError {
    /// What was wrong.
    pub kind: TextErrorKind,
    /// For character-level rejections: the index (in `char`s) of the
    /// offending character in the NFKC-normalized text.
    pub position: Option<usize>,
    /// For character-level rejections: the offending code point.
    pub codepoint: Option<char>,
}

impl TextError {
    /// The stable machine-readable code, e.g. `"bidi_control"`.
    pub fn code(&self) -> &'static str {
        self.kind.code()
    }

    fn at(kind: TextErrorKind, position: usize, codepoint: char) -> Self {
        TextError {
            kind,
            position: Some(position),
            codepoint: Some(codepoint),
        }
    }
}

impl From<TextErrorKind> for TextError {
    fn from(kind: TextErrorKind) -> Self {
        TextError {
            kind,
            position: None,
            codepoint: None,
        }
    }
}

impl fmt::Display for TextError {
    /// The kind's message, then the code point as `U+XXXX` and the character
    /// position when known. Never prints the text itself.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.kind)?;
        match (self.codepoint, self.position) {
            (Some(c), Some(p)) => write!(f, " (U+{:04X} at character {p})", u32::from(c)),
            (Some(c), None) => write!(f, " (U+{:04X})", u32::from(c)),
            (None, Some(p)) => write!(f, " (at character {p})"),
            (None, None) => Ok(()),
        }
    }
}

impl std::error::Error for TextError {}

/// C0/C1 controls and DEL, except `\t`, `\n` and `\r` (the latter is a line
/// break, see [`normalize`]).
fn is_forbidden_control(c: char) -> bool {
    matches!(c, '\0'..='\u{1f}' | '\u{7f}'..='\u{9f}') && !matches!(c, '\t' | '\n' | '\r')
}

fn is_bidi_control(c: char) -> bool {
    matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

fn is_tag_character(c: char) -> bool {
    matches!(c, '\u{e0000}'..='\u{e007f}')
}

fn is_noncharacter(c: char) -> bool {
    let u = u32::from(c);
    (0xfdd0..=0xfdef).contains(&u) || u & 0xfffe == 0xfffe
}

/// Whether `c` is one of the zero-width characters governed by [`ZeroWidth`].
pub fn is_zero_width(c: char) -> bool {
    matches!(
        c,
        '\u{200b}'..='\u{200f}' | '\u{2060}' | '\u{feff}' | '\u{180e}' | '\u{061c}'
    )
}

fn is_line_break(c: char) -> bool {
    matches!(c, '\n' | '\r' | '\u{2028}' | '\u{2029}')
}

/// The rejection for a character that is never allowed, if any.
fn forbidden_kind(c: char) -> Option<TextErrorKind> {
    if is_forbidden_control(c) {
        Some(TextErrorKind::ControlCharacter)
    } else if is_bidi_control(c) {
        Some(TextErrorKind::BidiControl)
    } else if is_tag_character(c) {
        Some(TextErrorKind::TagCharacter)
    } else if is_noncharacter(c) {
        Some(TextErrorKind::Noncharacter)
    } else {
        None
    }
}

/// Steps 1–3: NFKC, scan, whitespace collapse. Returns the text and whether a
/// zero-width character was stripped.
fn nfkc_scan_collapse(input: &str, zero_width: ZeroWidth) -> Result<(String, bool), TextError> {
    let mut out = String::with_capacity(input.len());
    // The separator owed before the next visible character: ' ' or '\n'.
    let mut pending: Option<char> = None;
    let mut stripped = false;
    for (position, c) in input.nfkc().enumerate() {
        if let Some(kind) = forbidden_kind(c) {
            return Err(TextError::at(kind, position, c));
        }
        if is_zero_width(c) {
            match zero_width {
                ZeroWidth::Reject => {
                    return Err(TextError::at(
                        TextErrorKind::ZeroWidthCharacter,
                        position,
                        c,
                    ));
                }
                ZeroWidth::Strip => {
                    stripped = true;
                    continue;
                }
                ZeroWidth::Allow => {}
            }
        }
        if c.is_whitespace() {
            if is_line_break(c) {
                pending = Some('\n');
            } else if pending.is_none() {
                pending = Some(' ');
            }
            continue;
        }
        // Taking the separator also drops it at the start (leading trim).
        if let Some(separator) = pending.take()
            && !out.is_empty()
        {
            out.push(separator);
        }
        out.push(c);
    }
    Ok((out, stripped))
}

/// Normalizes untrusted text for speech synthesis, or rejects it.
///
/// Steps, in order:
/// 1. Unicode NFKC. All later steps, including the length limit, see the NFKC
///    text; error positions are `char` indices into it.
/// 2. Reject C0/C1 control characters and DEL (`control_character`), except
///    tab and line feed. **Decision:** carriage return is not rejected; `\r`
///    and `\r\n` are treated as a line break and end up as `\n`. Reject
///    bidi embeddings, overrides and isolates (`bidi_control`), tag characters
///    (`tag_character`) and noncharacters (`noncharacter`). Zero-width
///    characters are rejected, removed or kept per [`TextPolicy::zero_width`].
/// 3. Collapse every run of Unicode whitespace (including NBSP, U+2028 and
///    U+2029) into one `"\n"` if the run contains a line break (`\n`, `\r`,
///    U+2028, U+2029), else into one `" "`; trim both ends. If zero-width
///    characters were stripped, the result is NFKC-normalized again so that
///    characters brought together by the removal are composed; the output is
///    always in NFKC.
/// 4. Reject empty text (`empty_input`), then text of more than
///    [`TextPolicy::max_chars`] characters (`input_too_long`).
/// 5. If [`TextPolicy::spam`], reject spam (`spam`); if a word list is set,
///    reject text containing one of its words (`profanity`).
///
/// The result is a fixed point: normalizing it again returns it unchanged.
/// Memory use is proportional to the NFKC text (at most 18 times the input's
/// characters), so callers should cap the request body size.
pub fn normalize(input: &str, policy: &TextPolicy) -> Result<String, TextError> {
    let (mut text, stripped) = nfkc_scan_collapse(input, policy.zero_width)?;
    if stripped && !is_nfkc(&text) {
        text = text.nfkc().collect();
    }
    let actual = text.chars().count();
    if actual == 0 {
        return Err(TextErrorKind::Empty.into());
    }
    if actual > policy.max_chars {
        return Err(TextErrorKind::TooLong {
            max: policy.max_chars,
            actual,
        }
        .into());
    }
    if policy.spam
        && let Some(kind) = check_spam(&text)
    {
        return Err(TextErrorKind::Spam(kind).into());
    }
    if let Some(list) = &policy.profanity
        && list.contains_in(&text)
    {
        return Err(TextErrorKind::Profanity.into());
    }
    Ok(text)
}

/// Checks that `input` is UTF-8 (rejecting with `invalid_utf8` otherwise,
/// before any other check), then runs [`normalize`].
pub fn normalize_bytes(input: &[u8], policy: &TextPolicy) -> Result<String, TextError> {
    let text =
        std::str::from_utf8(input).map_err(|_| TextError::from(TextErrorKind::InvalidUtf8))?;
    normalize(text, policy)
}
