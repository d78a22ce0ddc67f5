//! Text to Piper phoneme ids, reproducing piper-phonemize's eSpeak path without linking eSpeak.
//!
//! piper-phonemize asks `espeak_TextToPhonemes` (IPA mode, no separators) for one clause at a
//! time, removes eSpeak's `(lang)` switch flags, decomposes the result to Unicode NFD, appends
//! the clause's punctuation (`.`, `?`, `!` alone; `,`, `:`, `;` followed by a space) and maps
//! every codepoint through the voice's `phoneme_id_map`. Here the clauses are split on our side
//! (the eSpeak command line drops punctuation) and the [`Phonemizer`] runs the `espeak-ng`
//! program on each, closed by an SSML break so that its output is the library's (see
//! [`espeak_input`]). Checked against piper-phonemize's algorithm over the same eSpeak NG 1.51
//! library on 206 sentence pieces of English prose: 203 identical; the others differ where
//! Piper ends a sentence after an abbreviation ("Dr.", "no.", appending `.`) that the sentence
//! splitter here keeps inside, and after a dash, where eSpeak ends a clause that Piper glues
//! to the next without a space and this crate joins with one.

use std::collections::HashMap;
use std::fmt::Debug;
use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use unicode_normalization::UnicodeNormalization;
use voxgate_engine::EngineError;

/// Where [`CommandPhonemizer`] finds eSpeak NG by default (Debian's `espeak-ng` package).
pub const ESPEAK_NG: &str = "/usr/bin/espeak-ng";

/// Runs eSpeak NG on one clause: the IPA for it, as eSpeak's rules give it.
///
/// The contract is exactly `espeak-ng` run with [`espeak_args`], `input` written verbatim to
/// its standard input, and its standard output returned: IPA without separators or ties, one
/// line per clause eSpeak found (usually one; the lines are joined with a space). `input`
/// comes from [`espeak_input`]. eSpeak NG is GPL-3.0, so this crate never links it:
/// implementations run it as a separate process (the gateway: in a sandbox). Called on a
/// blocking thread.
pub trait Phonemizer: Send + Sync + Debug {
    /// The IPA for `input` in the eSpeak voice `voice` (e.g. `en-us`).
    fn phonemize(&self, input: &str, voice: &str) -> Result<String, EngineError>;
}

/// The fixed arguments for `espeak-ng`, the text coming on standard input: quiet (no audio),
/// SSML input (for the `<break/>` of [`espeak_input`]), UTF-8, IPA output (`--ipa` without
/// `=N`: no separators, no tie bars, as `espeak_TextToPhonemes` in `espeakPHONEMES_IPA` mode
/// gives Piper), the voice, the whole input at once.
///
/// `voice` must be a plain eSpeak voice name (letters, digits, `-`, `_`, `+`), never an option.
pub fn espeak_args(voice: &str) -> Result<[&str; 8], EngineError> {
    let plain = voice
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'+'));
    if voice.is_empty() || voice.len() > 32 || voice.starts_with('-') || !plain {
        return Err(EngineError::Internal(format!("bad eSpeak voice {voice:?}")));
    }
    Ok(["-q", "-m", "-b", "1", "--ipa", "-v", voice, "--stdin"])
}

/// The standard input for one clause: its text (without its punctuation) escaped for SSML and
/// closed by `<break/>`.
///
/// Why the break: the command line prints phonemes after eSpeak's intonation pass, which
/// gives a clause ended by `.`, `,`, `?`... without any primary stress one on its last
/// stressed syllable ("is it?" becomes `ɪz ˈɪt`). `espeak_TextToPhonemes`, which Piper's
/// voices were trained with, never runs that pass (`ɪz ɪt`). A clause ended by a break has
/// no intonation type, so the pass leaves its stresses alone.
pub fn espeak_input(text: &str) -> String {
    let mut input = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        match c {
            '&' => input.push_str("&amp;"),
            '<' => input.push_str("&lt;"),
            '>' => input.push_str("&gt;"),
            c => input.push(c),
        }
    }
    input.push_str("<break/>");
    input
}

/// Runs `espeak-ng` with [`espeak_args`], an empty environment and the input on standard
/// input. No sandbox: for tests and trusted tools; the gateway brings its own [`Phonemizer`].
#[derive(Debug, Clone)]
pub struct CommandPhonemizer {
    program: PathBuf,
}

impl CommandPhonemizer {
    /// Runs `program` (an `espeak-ng` binary).
    pub fn new(program: impl Into<PathBuf>) -> Self {
        Self {
            program: program.into(),
        }
    }
}

impl Default for CommandPhonemizer {
    fn default() -> Self {
        Self::new(ESPEAK_NG)
    }
}

impl Phonemizer for CommandPhonemizer {
    fn phonemize(&self, input: &str, voice: &str) -> Result<String, EngineError> {
        let mut child = Command::new(&self.program)
            .args(espeak_args(voice)?)
            .env_clear()
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| {
                EngineError::Unavailable(format!("cannot run {}: {e}", self.program.display()))
            })?;
        let stdin = child.stdin.take();
        // Write from a second thread so a large output can never deadlock against the input.
        let output = std::thread::scope(|scope| {
            scope.spawn(move || stdin.map(|mut s| s.write_all(input.as_bytes())));
            child.wait_with_output()
        })
        .map_err(|e| EngineError::Internal(format!("espeak-ng: {e}")))?;
        if !output.status.success() {
            let stderr = String::from_utf8_lossy(&output.stderr);
            return Err(EngineError::Internal(format!(
                "espeak-ng failed ({}): {}",
                output.status,
                stderr.trim()
            )));
        }
        String::from_utf8(output.stdout)
            .map_err(|_| EngineError::Internal("espeak-ng wrote invalid UTF-8".into()))
    }
}

/// A clause of a sentence and the punctuation that ended it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Clause<'a> {
    /// The clause's words, without the punctuation and closing quotes that end it.
    pub text: &'a str,
    /// One of `.,;:!?`, re-appended after the clause's phonemes.
    pub punctuation: Option<char>,
}

/// Splits one sentence (a piece from [`voxgate_engine::sentences::split`]) into clauses: after
/// `,` `;` `:` followed by whitespace, and at the end, whose `.` `!` `?` (or `…`, read as `.`)
/// is the sentence's terminator. A `.` inside the piece is an abbreviation or a number
/// (the sentence splitter already cut at real full stops), so it does not end a clause.
pub fn split_clauses(sentence: &str) -> Vec<Clause<'_>> {
    let mut clauses = Vec::new();
    let mut start = 0;
    let mut chars = sentence.char_indices().peekable();
    while let Some((i, c)) = chars.next() {
        let at_break = chars.peek().is_none_or(|&(_, n)| n.is_whitespace());
        if matches!(c, ',' | ';' | ':') && at_break {
            push_clause(&sentence[start..i + c.len_utf8()], &mut clauses);
            start = i + c.len_utf8();
        }
    }
    push_clause(&sentence[start..], &mut clauses);
    clauses
}

/// Pushes `text` as a clause, its closing run of punctuation and quotes taken off; the last
/// clause mark in that run is its punctuation.
fn push_clause<'a>(text: &'a str, out: &mut Vec<Clause<'a>>) {
    let text = text.trim();
    let words = text.trim_end_matches([
        '.', ',', ';', ':', '!', '?', '…', '"', '\'', '”', '’', '»', ')', ']',
    ]);
    let punctuation = text[words.len()..].chars().rev().find_map(|c| match c {
        '.' | '…' => Some('.'),
        '!' | '?' | ',' | ';' | ':' => Some(c),
        _ => None,
    });
    let words = words.trim_end();
    if !words.is_empty() || punctuation.is_some() {
        out.push(Clause {
            text: words,
            punctuation,
        });
    }
}

/// Piper's phoneme string for one sentence: for each clause, the IPA eSpeak gives for its
/// [`espeak_input`] (lines joined with a space, `(lang)` switch flags removed), then its
/// punctuation, plus a space after `,;:`.
///
/// All clauses of the sentence go to eSpeak in one run, each closed by a double break: a
/// break ends eSpeak's clause (so each is phonemized exactly as on its own) and the second one
/// makes it print an empty line after every clause's lines. When the groups of lines do not
/// match the clauses one to one (a clause that eSpeak turns into nothing), each clause is
/// phonemized on its own instead. One process per sentence, not per clause: punctuation can
/// no longer multiply process spawns.
pub fn sentence_phonemes(
    sentence: &str,
    voice: &str,
    phonemizer: &dyn Phonemizer,
) -> Result<String, EngineError> {
    let clauses = split_clauses(sentence);
    let spoken: Vec<&str> = clauses
        .iter()
        .map(|c| c.text)
        .filter(|t| !t.is_empty())
        .collect();
    let mut ipa_of = match spoken.len() {
        0 => Vec::new(),
        1 => vec![phonemizer.phonemize(&espeak_input(spoken[0]), voice)?],
        _ => {
            let batch = spoken
                .iter()
                .map(|t| espeak_input(t))
                .collect::<Vec<_>>()
                .join("<break/>");
            let groups = line_groups(&phonemizer.phonemize(&format!("{batch}<break/>"), voice)?);
            if groups.len() == spoken.len() {
                groups
            } else {
                spoken
                    .iter()
                    .map(|t| phonemizer.phonemize(&espeak_input(t), voice))
                    .collect::<Result<_, _>>()?
            }
        }
    }
    .into_iter();
    let mut phonemes = String::new();
    for clause in clauses {
        let ipa = if clause.text.is_empty() {
            String::new()
        } else {
            ipa_of.next().unwrap_or_default()
        };
        let joined = ipa
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .collect::<Vec<_>>()
            .join(" ");
        let mut in_flag = false;
        for c in joined.chars() {
            match (in_flag, c) {
                (false, '(') => in_flag = true,
                (true, ')') => in_flag = false,
                (false, c) => phonemes.push(c),
                (true, _) => {}
            }
        }
        match clause.punctuation {
            Some(p @ ('.' | '!' | '?')) => phonemes.push(p),
            Some(p) => {
                phonemes.push(p);
                phonemes.push(' ');
            }
            None => {}
        }
    }
    Ok(phonemes)
}

/// eSpeak's output for a batch, cut at its empty lines: each group holds one clause's lines.
fn line_groups(output: &str) -> Vec<String> {
    let mut groups = Vec::new();
    let mut current: Vec<&str> = Vec::new();
    for line in output.lines().map(str::trim) {
        if line.is_empty() {
            groups.push(current.join("\n"));
            current.clear();
        } else {
            current.push(line);
        }
    }
    if !current.is_empty() {
        groups.push(current.join("\n"));
    }
    // eSpeak ends its output with one more empty line.
    while groups.last().is_some_and(String::is_empty) {
        groups.pop();
    }
    groups
}

/// A voice's `phoneme_id_map`: codepoint to ids, with pad `_`, BOS `^` and EOS `$`.
#[derive(Debug, Clone)]
pub struct PhonemeIdMap {
    map: HashMap<char, Vec<i64>>,
    pad: Vec<i64>,
    bos: Vec<i64>,
    eos: Vec<i64>,
}

impl PhonemeIdMap {
    /// Fails when `_`, `^` or `$` is missing.
    pub fn new(map: HashMap<char, Vec<i64>>) -> Result<Self, EngineError> {
        let get = |c: char| {
            map.get(&c)
                .cloned()
                .ok_or_else(|| EngineError::Unavailable(format!("phoneme_id_map lacks {c:?}")))
        };
        Ok(Self {
            pad: get('_')?,
            bos: get('^')?,
            eos: get('$')?,
            map,
        })
    }

    /// piper-phonemize's `phonemes_to_ids` with pad interspersed, after NFD: `^ _`, then each
    /// phoneme's ids followed by `_`, then `$`. Unknown phonemes are skipped and counted.
    pub fn ids(&self, phonemes: &str) -> (Vec<i64>, usize) {
        let mut ids = self.bos.clone();
        ids.extend(&self.pad);
        let mut missing = 0;
        for phoneme in phonemes.nfd() {
            match self.map.get(&phoneme) {
                Some(mapped) => {
                    ids.extend(mapped);
                    ids.extend(&self.pad);
                }
                None => missing += 1,
            }
        }
        ids.extend(&self.eos);
        (ids, missing)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A hand-written map: `_`=0 `^`=1 `$`=2 space=3 `a`=4 `c`=5 cedilla=6 `.`=7 `,`=8 `ˈ`=9.
    fn tiny_map() -> PhonemeIdMap {
        let pairs = [
            ('_', 0),
            ('^', 1),
            ('$', 2),
            (' ', 3),
            ('a', 4),
            ('c', 5),
            ('\u{327}', 6),
            ('.', 7),
            (',', 8),
            ('ˈ', 9),
        ];
        PhonemeIdMap::new(pairs.into_iter().map(|(c, id)| (c, vec![id])).collect()).unwrap()
    }

    #[test]
    fn ids_are_framed_by_bos_pad_and_eos() {
        let (ids, missing) = tiny_map().ids("ˈa c.");
        assert_eq!(ids, [1, 0, 9, 0, 4, 0, 3, 0, 5, 0, 7, 0, 2]);
        assert_eq!(missing, 0);
        let (ids, _) = tiny_map().ids("");
        assert_eq!(ids, [1, 0, 2]);
    }

    #[test]
    fn precomposed_characters_are_decomposed_first() {
        // U+00E7 is not in the map; NFD gives `c` + U+0327, which are.
        let (ids, missing) = tiny_map().ids("\u{e7}a");
        assert_eq!(ids, [1, 0, 5, 0, 6, 0, 4, 0, 2]);
        assert_eq!(missing, 0);
    }

    #[test]
    fn unknown_phonemes_are_skipped_and_counted() {
        let (ids, missing) = tiny_map().ids("aʒxa");
        assert_eq!(ids, [1, 0, 4, 0, 4, 0, 2]);
        assert_eq!(missing, 2);
    }

    #[test]
    fn a_map_without_framing_symbols_is_refused() {
        let map = [('_', vec![0]), ('^', vec![1])].into_iter().collect();
        assert!(matches!(
            PhonemeIdMap::new(map),
            Err(EngineError::Unavailable(_))
        ));
    }

    #[test]
    fn clauses_keep_their_punctuation() {
        let clauses = split_clauses("Hello, world; Dr. Smith paid 3.14: yes, really?!\"");
        let got: Vec<_> = clauses.iter().map(|c| (c.text, c.punctuation)).collect();
        assert_eq!(
            got,
            [
                ("Hello", Some(',')),
                ("world", Some(';')),
                ("Dr. Smith paid 3.14", Some(':')),
                ("yes", Some(',')),
                ("really", Some('!')),
            ]
        );
        let got: Vec<_> = split_clauses("no stop, 1,000 at 5% (or so)")
            .into_iter()
            .map(|c| (c.text, c.punctuation))
            .collect();
        assert_eq!(got, [("no stop", Some(',')), ("1,000 at 5% (or so", None)]);
        assert_eq!(split_clauses("Wait…")[0].punctuation, Some('.'));
        assert_eq!(
            split_clauses("?!")[0],
            Clause {
                text: "",
                punctuation: Some('!')
            }
        );
        assert!(split_clauses("  ").is_empty());
    }

    #[test]
    fn espeak_input_is_escaped_and_ends_with_a_break() {
        assert_eq!(espeak_input("a<b>&c"), "a&lt;b&gt;&amp;c<break/>");
    }

    /// Answers like eSpeak: IPA without punctuation, sometimes on two lines or with a flag.
    #[derive(Debug)]
    struct Fake;

    impl Phonemizer for Fake {
        fn phonemize(&self, input: &str, voice: &str) -> Result<String, EngineError> {
            assert_eq!(voice, "en-us");
            Ok(match input {
                "Hello<break/><break/>café au lait<break/><break/>" => {
                    "həlˈoʊ\n\nkæfˈeɪ\n(fr)o lɛ(en)\n\n".into()
                }
                other => panic!("unexpected input {other:?}"),
            })
        }
    }

    #[test]
    fn sentence_phonemes_reappend_punctuation_and_drop_language_flags() {
        let phonemes = sentence_phonemes("Hello, café au lait!", "en-us", &Fake).unwrap();
        assert_eq!(phonemes, "həlˈoʊ, kæfˈeɪ o lɛ!");
    }

    /// A batch whose output does not split into one group per clause is done clause by
    /// clause instead.
    #[test]
    fn a_batch_that_does_not_line_up_falls_back_to_single_clauses() {
        #[derive(Debug, Default)]
        struct Counting(std::sync::Mutex<Vec<String>>);
        impl Phonemizer for Counting {
            fn phonemize(&self, input: &str, _: &str) -> Result<String, EngineError> {
                self.0.lock().unwrap().push(input.to_owned());
                Ok(if input.matches("<break/>").count() > 1 {
                    "ˈeɪ\n\n\n\nbˈiː\n\n".into() // "..." gave nothing: 3 groups for 2
                } else {
                    format!("{}\n", input.trim_end_matches("<break/>"))
                })
            }
        }
        let counting = Counting::default();
        let phonemes = sentence_phonemes("a, b", "en-us", &counting).unwrap();
        assert_eq!(phonemes, "a, b");
        assert_eq!(
            counting.0.lock().unwrap().len(),
            3,
            "one batch, then one per clause"
        );
    }

    /// One eSpeak run for a sentence however many clauses it has, and the same phonemes as
    /// clause by clause.
    #[test]
    fn batches_give_the_phonemes_of_single_clauses_in_one_run() {
        #[derive(Debug)]
        struct Runs(CommandPhonemizer, std::sync::atomic::AtomicUsize);
        impl Phonemizer for Runs {
            fn phonemize(&self, input: &str, voice: &str) -> Result<String, EngineError> {
                self.1.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                self.0.phonemize(input, voice)
            }
        }
        let espeak = Runs(CommandPhonemizer::default(), Default::default());
        for sentence in [
            "Hello, world; is it: yes, really?",
            "a, a, a, a, a, a, a, a.",
            "The quick brown fox, the lazy dog, Tom & Jerry <3, and café au lait!",
            "Wait, Dr. Smith paid 3.14: no, 1,000 at 5% (or so), didn't he?",
        ] {
            let before = espeak.1.load(std::sync::atomic::Ordering::SeqCst);
            let batched = sentence_phonemes(sentence, "en-us", &espeak).expect("espeak-ng");
            let runs = espeak.1.load(std::sync::atomic::Ordering::SeqCst) - before;
            assert_eq!(runs, 1, "{sentence}");
            let mut single = String::new();
            for clause in split_clauses(sentence) {
                let alone = sentence_phonemes(
                    &format!(
                        "{}{}",
                        clause.text,
                        clause.punctuation.map(String::from).unwrap_or_default()
                    ),
                    "en-us",
                    &espeak,
                )
                .expect("espeak-ng");
                single.push_str(&alone);
            }
            assert_eq!(batched.trim_end(), single.trim_end(), "{sentence}");
        }
    }

    #[test]
    fn voices_that_look_like_options_are_refused() {
        assert_eq!(espeak_args("en-us").unwrap()[6], "en-us");
        for bad in ["", "-w/tmp/x", "en us", "../x", "en;rm"] {
            assert!(espeak_args(bad).is_err(), "{bad:?}");
        }
    }

    /// What `espeak_TextToPhonemes` gives for these clauses: no stress added on "it".
    #[test]
    fn espeak_ng_gives_the_library_ipa() {
        let espeak = CommandPhonemizer::default();
        let ipa = |text| {
            espeak
                .phonemize(&espeak_input(text), "en-us")
                .expect("espeak-ng must be installed (apt-get install espeak-ng)")
        };
        assert_eq!(ipa("The quick brown fox").trim(), "ðə kwˈɪk bɹˈaʊn fˈɑːks");
        assert_eq!(ipa("is it").trim(), "ɪz ɪt");
        assert_eq!(ipa("Tom & Jerry <3").trim(), "tˈɑːm ænd dʒˈɛɹi θɹˈiː");
    }
}
