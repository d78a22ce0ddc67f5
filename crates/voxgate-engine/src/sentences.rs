//! Splits text into sentence-sized pieces so engines can synthesize and stream piece by piece.
//!
//! Invariants (property-tested below): every piece is non-empty and trimmed, no piece is
//! longer than the limit, and the pieces hold exactly the input's non-whitespace characters
//! in order: nothing is dropped, duplicated or reordered.

/// Longest piece, in characters, that [`split`] returns with the default limit.
pub const DEFAULT_MAX_CHARS: usize = 240;

/// Words after which a full stop does not end a sentence.
const ABBREVIATIONS: &[&str] = &[
    "mr", "mrs", "ms", "dr", "prof", "sr", "jr", "st", "vs", "etc", "e.g", "i.e", "no", "fig",
    "mt", "inc", "ltd", "co", "approx",
];

/// Splits `text` at sentence boundaries; pieces longer than [`DEFAULT_MAX_CHARS`] are split
/// further at clause punctuation or whitespace.
pub fn split(text: &str) -> Vec<String> {
    split_with_limit(text, DEFAULT_MAX_CHARS)
}

/// Like [`split`] with an explicit limit (at least 1 character).
pub fn split_with_limit(text: &str, max_chars: usize) -> Vec<String> {
    let max_chars = max_chars.max(1);
    let mut pieces = Vec::new();
    for sentence in sentences(text) {
        cap_length(sentence, max_chars, &mut pieces);
    }
    pieces
}

/// Sentence spans of `text`, trimmed and non-empty.
fn sentences(text: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut start = 0;
    let mut chars = text.char_indices().peekable();
    while let Some((i, c)) = chars.next() {
        let end = i + c.len_utf8();
        let boundary = match c {
            '\n' => true,
            '!' | '?' | '…' | '。' | '！' | '？' => true,
            '.' => !is_abbreviation(&text[start..i]),
            _ => false,
        };
        if !boundary {
            continue;
        }
        // Keep closing quotes and brackets and runs of terminators with the sentence.
        let mut end = end;
        while let Some(&(j, next)) = chars.peek() {
            if matches!(
                next,
                '.' | '!' | '?' | '"' | '\'' | ')' | ']' | '”' | '’' | '»'
            ) {
                end = j + next.len_utf8();
                chars.next();
            } else {
                break;
            }
        }
        // A boundary needs whitespace (or the end) after it: "3.14" and "a.b" stay whole.
        let at_end = chars.peek().is_none();
        let space_follows = chars.peek().is_some_and(|&(_, n)| n.is_whitespace());
        if c == '\n' || at_end || space_follows || matches!(c, '。' | '！' | '？') {
            push_trimmed(&text[start..end], &mut out);
            start = end;
        }
    }
    push_trimmed(&text[start..], &mut out);
    out
}

fn is_abbreviation(before: &str) -> bool {
    let word = before
        .rsplit(|c: char| c.is_whitespace())
        .next()
        .unwrap_or("")
        .trim_start_matches(['(', '"', '\'']);
    let lower = word.to_lowercase();
    // A single letter ("J. Smith") or a listed abbreviation.
    (word.chars().count() == 1 && word.chars().all(char::is_alphabetic))
        || ABBREVIATIONS.contains(&lower.as_str())
}

fn push_trimmed<'a>(piece: &'a str, out: &mut Vec<&'a str>) {
    let piece = piece.trim();
    if !piece.is_empty() {
        out.push(piece);
    }
}

/// Splits `sentence` into pieces of at most `max` characters, preferring clause punctuation,
/// then whitespace, then any character boundary.
fn cap_length(sentence: &str, max: usize, out: &mut Vec<String>) {
    let mut rest = sentence;
    while rest.chars().count() > max {
        // Byte offset just past the `max`-th character.
        let limit = rest.char_indices().nth(max).map_or(rest.len(), |(i, _)| i);
        let window = &rest[..limit];
        let cut = window
            .rfind([',', ';', ':', '—'])
            .map(|i| i + window[i..].chars().next().map_or(1, char::len_utf8))
            .filter(|&i| i > limit / 3)
            .or_else(|| window.rfind(char::is_whitespace).filter(|&i| i > 0))
            .unwrap_or(limit);
        let (head, tail) = rest.split_at(cut);
        let head = head.trim();
        if !head.is_empty() {
            out.push(head.to_owned());
        }
        rest = tail.trim_start();
    }
    let rest = rest.trim();
    if !rest.is_empty() {
        out.push(rest.to_owned());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn without_whitespace(s: &str) -> String {
        s.chars().filter(|c| !c.is_whitespace()).collect()
    }

    #[test]
    fn splits_at_sentence_ends() {
        assert_eq!(
            split("Hello there. This is voxgate! Is it? Yes."),
            ["Hello there.", "This is voxgate!", "Is it?", "Yes."]
        );
    }

    #[test]
    fn keeps_numbers_abbreviations_and_quotes_together() {
        assert_eq!(
            split("Dr. Smith paid 3.14 dollars. \"Really?\" she asked."),
            ["Dr. Smith paid 3.14 dollars.", "\"Really?\"", "she asked."]
        );
    }

    #[test]
    fn newlines_end_pieces() {
        assert_eq!(split("a list\nof lines\n\n"), ["a list", "of lines"]);
    }

    #[test]
    fn long_sentences_are_capped_at_clauses_or_words() {
        let text = "one two three, four five six seven eight nine ten eleven twelve";
        let pieces = split_with_limit(text, 20);
        assert_eq!(pieces[0], "one two three,");
        assert!(pieces.iter().all(|p| p.chars().count() <= 20), "{pieces:?}");
    }

    #[test]
    fn empty_and_blank_input_give_no_pieces() {
        assert!(split("").is_empty());
        assert!(split(" \n\t ").is_empty());
    }

    proptest! {
        #[test]
        fn pieces_preserve_text_and_respect_the_limit(text in "\\PC{0,400}", max in 1usize..300) {
            let pieces = split_with_limit(&text, max);
            for piece in &pieces {
                prop_assert!(!piece.is_empty());
                prop_assert_eq!(piece.trim(), piece.as_str());
                prop_assert!(piece.chars().count() <= max);
            }
            prop_assert_eq!(without_whitespace(&pieces.concat()), without_whitespace(&text));
        }

        #[test]
        fn sentence_like_text_round_trips(words in prop::collection::vec("[a-zA-Z]{1,12}[.!?,]? ?", 0..80)) {
            let text = words.concat();
            let pieces = split(&text);
            prop_assert_eq!(without_whitespace(&pieces.concat()), without_whitespace(&text));
        }
    }
}
