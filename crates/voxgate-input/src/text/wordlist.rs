//! Blocked-word lists matched on whole words.

use std::collections::HashSet;
use std::fmt;

use unicode_normalization::UnicodeNormalization;

/// Splits NFKC text into lowercase words: maximal runs of alphanumeric
/// characters.
fn words(text: &str) -> Vec<String> {
    let nfkc: String = text.nfkc().collect();
    nfkc.split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(str::to_lowercase)
        .collect()
}

/// A set of blocked words or phrases, matched case-insensitively on whole
/// words.
///
/// Both the entries and the searched text are NFKC-normalized, split into
/// words at every non-alphanumeric character and lowercased. An entry
/// matches when its words occur consecutively in the text, so `"cunt"` does
/// not match `"Scunthorpe"`, and the entry `"bad word"` matches `"BAD-word"`.
/// Deliberate obfuscation such as `"b.a.d"` (letters separated by dots) is
/// not detected. Matching is plain hashing: linear in the text length.
#[derive(Clone, Default)]
pub struct WordList {
    entries: HashSet<Vec<String>>,
    /// Distinct word counts of the entries, ascending.
    lengths: Vec<usize>,
}

impl WordList {
    /// Builds a list; entries without any alphanumeric character are ignored
    /// and duplicates (after normalization) are merged.
    pub fn new<I, S>(words_in: I) -> WordList
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let entries: HashSet<Vec<String>> = words_in
            .into_iter()
            .map(|w| words(w.as_ref()))
            .filter(|w| !w.is_empty())
            .collect();
        let mut lengths: Vec<usize> = entries.iter().map(Vec::len).collect();
        lengths.sort_unstable();
        lengths.dedup();
        WordList { entries, lengths }
    }

    /// Whether `text` contains any entry as whole words.
    pub fn contains_in(&self, text: &str) -> bool {
        if self.entries.is_empty() {
            return false;
        }
        let text_words = words(text);
        (0..text_words.len()).any(|start| {
            self.lengths.iter().any(|&n| {
                text_words
                    .get(start..start + n)
                    .is_some_and(|window| self.entries.contains(window))
            })
        })
    }

    /// The number of distinct entries.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the list has no entries.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

impl<S: AsRef<str>> FromIterator<S> for WordList {
    fn from_iter<I: IntoIterator<Item = S>>(iter: I) -> Self {
        WordList::new(iter)
    }
}

impl fmt::Debug for WordList {
    /// Prints only the size, so that logs never contain the blocked words.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WordList")
            .field("len", &self.entries.len())
            .finish_non_exhaustive()
    }
}
