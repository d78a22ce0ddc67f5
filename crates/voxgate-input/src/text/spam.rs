//! Heuristic spam checks on normalized text.

use std::sync::LazyLock;

use regex::{Regex, RegexBuilder};

/// A run of the same non-whitespace character longer than this is spam.
pub const MAX_REPEATED_CHARS: usize = 40;
/// A run of the same word (case-insensitive) longer than this is spam.
pub const MAX_REPEATED_WORDS: usize = 12;
/// More links (`http://`, `https://` or `www.`) than this is spam.
pub const MAX_LINKS: usize = 5;

/// Which spam heuristic fired.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
pub enum SpamKind {
    /// The same non-whitespace character more than [`MAX_REPEATED_CHARS`]
    /// times in a row.
    #[error(
        "the same character is repeated more than {} times in a row",
        MAX_REPEATED_CHARS
    )]
    RepeatedCharacters,
    /// The same word more than [`MAX_REPEATED_WORDS`] times in a row.
    #[error(
        "the same word is repeated more than {} times in a row",
        MAX_REPEATED_WORDS
    )]
    RepeatedWords,
    /// More than [`MAX_LINKS`] links.
    #[error("it contains more than {} links", MAX_LINKS)]
    TooManyLinks,
}

/// A link starts with `http://` or `https://` (optionally followed by `www.`,
/// which then belongs to the same link) or with `www.` at a word boundary.
/// The `regex` crate matches in linear time (no backtracking).
static LINK: LazyLock<Regex> = LazyLock::new(|| {
    RegexBuilder::new(r"(?i:https?://(?:www\.)?|(?-u:\b)www\.)")
        .size_limit(1 << 20)
        .dfa_size_limit(1 << 20)
        .build()
        .expect("the built-in link pattern compiles")
});

/// Returns the first spam heuristic that `text` trips, checked in this order:
/// repeated characters, repeated words, too many links.
///
/// Words are maximal runs of alphanumeric characters; anything else separates
/// them, so `"buy, buy, buy"` is the same word three times in a row.
/// Repeated characters are compared exactly (case-sensitive); whitespace is
/// never counted and ends a run.
pub fn check_spam(text: &str) -> Option<SpamKind> {
    if has_repeated_chars(text) {
        Some(SpamKind::RepeatedCharacters)
    } else if has_repeated_words(text) {
        Some(SpamKind::RepeatedWords)
    } else if LINK.find_iter(text).take(MAX_LINKS + 1).count() > MAX_LINKS {
        Some(SpamKind::TooManyLinks)
    } else {
        None
    }
}

fn has_repeated_chars(text: &str) -> bool {
    let mut previous = None;
    let mut run = 0usize;
    for c in text.chars() {
        if c.is_whitespace() {
            previous = None;
            run = 0;
            continue;
        }
        if previous == Some(c) {
            run += 1;
        } else {
            previous = Some(c);
            run = 1;
        }
        if run > MAX_REPEATED_CHARS {
            return true;
        }
    }
    false
}

fn eq_ignore_case(a: &str, b: &str) -> bool {
    a.chars()
        .flat_map(char::to_lowercase)
        .eq(b.chars().flat_map(char::to_lowercase))
}

fn has_repeated_words(text: &str) -> bool {
    let mut previous: Option<&str> = None;
    let mut run = 0usize;
    for word in text
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
    {
        if previous.is_some_and(|p| eq_ignore_case(p, word)) {
            run += 1;
        } else {
            previous = Some(word);
            run = 1;
        }
        if run > MAX_REPEATED_WORDS {
            return true;
        }
    }
    false
}
