use std::borrow::Cow;
use std::sync::Arc;
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use proptest::prelude::*;
use unicode_normalization::{UnicodeNormalization, is_nfkc};

use super::*;

fn policy() -> TextPolicy {
    TextPolicy::default()
}

fn with_zero_width(zero_width: ZeroWidth) -> TextPolicy {
    TextPolicy {
        zero_width,
        ..TextPolicy::default()
    }
}

fn reject(input: &str) -> TextError {
    normalize(input, &policy()).expect_err("input must be rejected")
}

fn accept(input: &str) -> String {
    normalize(input, &policy()).expect("input must be accepted")
}

// ---------------------------------------------------------------- rejections

#[test]
fn nul_is_a_control_character() {
    let e = reject("hello\0world");
    assert_eq!(e.code(), "control_character");
    assert_eq!(e.kind, TextErrorKind::ControlCharacter);
    assert_eq!(e.position, Some(5));
    assert_eq!(e.codepoint, Some('\0'));
}

#[test]
fn ansi_escape_sequence_is_rejected() {
    let e = reject("\u{1b}[2J\u{1b}[31mred");
    assert_eq!(e.code(), "control_character");
    assert_eq!(e.position, Some(0));
    assert_eq!(e.codepoint, Some('\u{1b}'));
}

#[test]
fn c1_next_line_del_vt_ff_are_rejected() {
    for (input, c) in [
        ("line\u{85}break", '\u{85}'),
        ("a\u{7f}b", '\u{7f}'),
        ("a\u{0b}b", '\u{0b}'),
        ("a\u{0c}b", '\u{0c}'),
        ("a\u{9b}31m", '\u{9b}'),
    ] {
        let e = reject(input);
        assert_eq!(e.code(), "control_character", "U+{:04X}", u32::from(c));
        assert_eq!(e.codepoint, Some(c));
    }
}

#[test]
fn tab_is_allowed_and_collapsed() {
    assert_eq!(accept("a\t\tb"), "a b");
}

#[test]
fn trojan_source_rlo_is_rejected() {
    // The classic "trojan source" early-return: RLO + LRI reorder what a
    // reviewer sees.
    let input = "access_level != \"user\u{202E} \u{2066}// Check if admin\u{2069} \u{2066}\"";
    let e = reject(input);
    assert_eq!(e.code(), "bidi_control");
    assert_eq!(e.codepoint, Some('\u{202E}'));
    assert_eq!(e.position, Some(21));
}

#[test]
fn every_bidi_control_is_rejected() {
    for c in ('\u{202A}'..='\u{202E}').chain('\u{2066}'..='\u{2069}') {
        let e = reject(&format!("x{c}y"));
        assert_eq!(e.code(), "bidi_control");
        assert_eq!(e.position, Some(1));
        assert_eq!(e.codepoint, Some(c));
    }
}

#[test]
fn lri_isolate_is_rejected() {
    assert_eq!(reject("\u{2066}abc").code(), "bidi_control");
}

#[test]
fn tag_characters_ascii_smuggling_is_rejected() {
    // "hi" followed by invisible tag characters spelling "ignore".
    let smuggled: String = "hi"
        .chars()
        .chain("ignore".chars().map(|c| {
            char::from_u32(0xE0000 + u32::from(c)).expect("tag characters are valid scalars")
        }))
        .collect();
    let e = reject(&smuggled);
    assert_eq!(e.code(), "tag_character");
    assert_eq!(e.position, Some(2));
    assert_eq!(e.codepoint, Some('\u{E0069}'));
    for c in ['\u{E0000}', '\u{E0001}', '\u{E007F}'] {
        assert_eq!(reject(&format!("a{c}")).code(), "tag_character");
    }
}

#[test]
fn noncharacters_are_rejected() {
    for c in [
        '\u{FFFE}',
        '\u{FFFF}',
        '\u{FDD0}',
        '\u{FDEF}',
        '\u{1FFFE}',
        '\u{10FFFF}',
    ] {
        let e = reject(&format!("ab{c}"));
        assert_eq!(e.code(), "noncharacter", "U+{:04X}", u32::from(c));
        assert_eq!(e.position, Some(2));
        assert_eq!(e.codepoint, Some(c));
    }
    // Neighbours of the noncharacter ranges are ordinary characters.
    assert!(normalize("\u{FDCF}", &policy()).is_ok());
    assert!(normalize("\u{FDF0}", &policy()).is_ok());
    assert!(normalize("\u{FFFD}", &policy()).is_ok());
}

#[test]
fn bom_under_each_zero_width_policy() {
    let input = "\u{FEFF}a\u{FEFF}b";
    let e = normalize(input, &with_zero_width(ZeroWidth::Reject)).expect_err("reject");
    assert_eq!(e.code(), "zero_width_character");
    assert_eq!(e.position, Some(0));
    assert_eq!(e.codepoint, Some('\u{FEFF}'));
    assert_eq!(
        normalize(input, &with_zero_width(ZeroWidth::Strip)),
        Ok("ab".to_owned())
    );
    assert_eq!(
        normalize(input, &with_zero_width(ZeroWidth::Allow)),
        Ok(input.to_owned())
    );
}

#[test]
fn zwj_under_each_zero_width_policy() {
    let input = "a\u{200D}b";
    let e = normalize(input, &with_zero_width(ZeroWidth::Reject)).expect_err("reject");
    assert_eq!(e.kind, TextErrorKind::ZeroWidthCharacter);
    assert_eq!(e.position, Some(1));
    assert_eq!(e.codepoint, Some('\u{200D}'));
    assert_eq!(
        normalize(input, &with_zero_width(ZeroWidth::Strip)),
        Ok("ab".to_owned())
    );
    assert_eq!(
        normalize(input, &with_zero_width(ZeroWidth::Allow)),
        Ok(input.to_owned())
    );
    assert_eq!(ZeroWidth::default(), ZeroWidth::Strip);
}

#[test]
fn every_zero_width_character_is_governed() {
    for c in [
        '\u{200B}', '\u{200C}', '\u{200D}', '\u{200E}', '\u{200F}', '\u{2060}', '\u{FEFF}',
        '\u{180E}', '\u{061C}',
    ] {
        let input = format!("a{c}b");
        let e = normalize(&input, &with_zero_width(ZeroWidth::Reject)).expect_err("reject");
        assert_eq!(e.code(), "zero_width_character", "U+{:04X}", u32::from(c));
        assert_eq!(
            normalize(&input, &with_zero_width(ZeroWidth::Strip)),
            Ok("ab".to_owned())
        );
    }
}

#[test]
fn stripping_recomposes_to_nfkc() {
    // After the ZWJ is removed, "e" and U+0301 meet and must compose to "é".
    let out = normalize("e\u{200D}\u{301}", &policy()).expect("accepted");
    assert_eq!(out, "\u{E9}");
    assert!(is_nfkc(&out));
}

#[test]
fn first_offending_character_wins() {
    let e = reject("ok\u{202E}\0");
    assert_eq!(e.code(), "bidi_control");
    assert_eq!(e.position, Some(2));
}

// ------------------------------------------------------------ NFKC and length

#[test]
fn nfkc_expansion_is_counted_after_normalization() {
    // U+FDFA ARABIC LIGATURE SALLALLAHOU ALAYHE WASALLAM: one char in, 18 out.
    let input = "\u{FDFA}";
    assert_eq!(input.chars().count(), 1);
    assert_eq!(input.nfkc().count(), 18);
    let small = TextPolicy {
        max_chars: 10,
        ..TextPolicy::default()
    };
    let e = normalize(input, &small).expect_err("18 > 10");
    assert_eq!(e.code(), "input_too_long");
    assert_eq!(
        e.kind,
        TextErrorKind::TooLong {
            max: 10,
            actual: 18
        }
    );
    let roomy = TextPolicy {
        max_chars: 18,
        ..TextPolicy::default()
    };
    assert_eq!(normalize(input, &roomy).map(|s| s.chars().count()), Ok(18));
}

#[test]
fn fullwidth_path_becomes_ascii_dot_dot_slash() {
    // Pins NFKC behaviour: fullwidth "．．／" is "../" after normalization.
    // Here it is only text to speak; anything treating it as a path must
    // work on the normalized form.
    assert_eq!(accept("．．／etc／passwd"), "../etc/passwd");
}

#[test]
fn length_limit_is_inclusive_and_after_collapse() {
    let p = TextPolicy {
        max_chars: 5,
        ..TextPolicy::default()
    };
    assert_eq!(normalize("abcde", &p), Ok("abcde".to_owned()));
    assert_eq!(
        normalize("abcdef", &p).map_err(|e| e.kind),
        Err(TextErrorKind::TooLong { max: 5, actual: 6 })
    );
    // Whitespace runs count as one character after collapsing.
    assert_eq!(normalize("  a          b  ", &p), Ok("a b".to_owned()));
}

// ------------------------------------------------------------ line breaks

#[test]
fn carriage_returns_become_line_feeds() {
    assert_eq!(accept("a\r\nb"), "a\nb");
    assert_eq!(accept("a\rb"), "a\nb");
    assert_eq!(accept("a\n\rb"), "a\nb");
    assert_eq!(accept("one\r\n\r\ntwo\r\n"), "one\ntwo");
}

#[test]
fn whitespace_collapses() {
    assert_eq!(accept("  hello   \t world  "), "hello world");
    assert_eq!(accept("a\u{A0}\u{A0}b"), "a b");
    assert_eq!(accept("a\u{3000}\u{2003}b"), "a b");
    assert_eq!(accept("a \n \t b"), "a\nb");
    assert_eq!(accept("a\u{2028}b"), "a\nb");
    assert_eq!(accept("a \u{2029} b"), "a\nb");
    assert_eq!(accept("\n\npara\n\n\npara\n"), "para\npara");
    // Stripped zero-width characters do not split a whitespace run.
    assert_eq!(accept("a \u{200B} b"), "a b");
}

#[test]
fn empty_and_blank_inputs_are_empty() {
    for input in [
        "",
        " ",
        "\n\t \r\n",
        "\u{A0}\u{3000}\u{2028}",
        "\u{200B}\u{FEFF}",
    ] {
        let e = reject(input);
        assert_eq!(e.kind, TextErrorKind::Empty);
        assert_eq!(e.code(), "empty_input");
        assert_eq!(e.position, None);
    }
}

// ------------------------------------------------------------ bytes

#[test]
fn invalid_utf8_is_checked_first() {
    for bytes in [
        &b"abc\xff"[..],
        b"\xc3\x28",
        b"\xed\xa0\x80",
        b"\0\xff",
        b"\xf8\x88\x80\x80\x80",
    ] {
        let e = normalize_bytes(bytes, &policy()).expect_err("invalid UTF-8");
        assert_eq!(e.kind, TextErrorKind::InvalidUtf8);
        assert_eq!(e.code(), "invalid_utf8");
    }
    assert_eq!(
        normalize_bytes("  ﬁne ".as_bytes(), &policy()),
        Ok("fine".to_owned())
    );
    assert_eq!(
        normalize_bytes(b"a\0", &policy()).map_err(|e| e.code()),
        Err("control_character")
    );
}

// ------------------------------------------------------------ spam & profanity

#[test]
fn spam_and_profanity_through_normalize() {
    let mut p = TextPolicy {
        profanity: Some(Arc::new(WordList::new(["darn"]))),
        ..TextPolicy::default()
    };
    let e = normalize(&"!".repeat(41), &p).expect_err("spam");
    assert_eq!(e.kind, TextErrorKind::Spam(SpamKind::RepeatedCharacters));
    assert_eq!(e.code(), "spam");
    let e = normalize("Oh DARN it", &p).expect_err("profanity");
    assert_eq!(e.kind, TextErrorKind::Profanity);
    assert_eq!(e.code(), "profanity");
    assert_eq!(normalize("darned socks", &p), Ok("darned socks".to_owned()));
    p.spam = false;
    p.profanity = None;
    assert!(normalize(&"!".repeat(41), &p).is_ok());
    assert!(normalize("Oh DARN it", &p).is_ok());
}

#[test]
fn codes_are_stable() {
    let cases = [
        (TextErrorKind::InvalidUtf8, "invalid_utf8"),
        (TextErrorKind::ControlCharacter, "control_character"),
        (TextErrorKind::BidiControl, "bidi_control"),
        (TextErrorKind::ZeroWidthCharacter, "zero_width_character"),
        (TextErrorKind::TagCharacter, "tag_character"),
        (TextErrorKind::Noncharacter, "noncharacter"),
        (TextErrorKind::Empty, "empty_input"),
        (
            TextErrorKind::TooLong { max: 1, actual: 2 },
            "input_too_long",
        ),
        (TextErrorKind::Profanity, "profanity"),
        (TextErrorKind::Spam(SpamKind::TooManyLinks), "spam"),
    ];
    for (kind, code) in cases {
        assert_eq!(TextError::from(kind).code(), code);
    }
}

#[test]
fn display_never_echoes_input() {
    const MARK: &str = "Quixotrelmark";
    let marked = |s: &str| format!("{MARK} {s} {MARK}");
    let strict = TextPolicy {
        max_chars: 40,
        zero_width: ZeroWidth::Reject,
        profanity: Some(Arc::new(WordList::new([MARK]))),
        spam: true,
    };
    let no_words = TextPolicy {
        profanity: None,
        ..strict.clone()
    };
    let roomy = TextPolicy {
        max_chars: 1000,
        ..no_words.clone()
    };
    let links = format!("{MARK} {}", "http://x.example ".repeat(6));
    let words = format!("{MARK} {}", "spam ".repeat(13));
    let inputs: Vec<(String, &TextPolicy, &str)> = vec![
        (marked("\0"), &strict, "control_character"),
        (marked("\u{202E}"), &strict, "bidi_control"),
        (marked("\u{200D}"), &strict, "zero_width_character"),
        (marked("\u{E0041}"), &strict, "tag_character"),
        (marked("\u{FFFE}"), &strict, "noncharacter"),
        (marked(&"x".repeat(50)), &no_words, "input_too_long"),
        (marked("hello"), &strict, "profanity"),
        (marked(&"z".repeat(41)), &roomy, "spam"),
        (words, &roomy, "spam"),
        (links, &roomy, "spam"),
    ];
    for (input, p, code) in &inputs {
        let e = normalize(input, p).expect_err("rejected");
        assert_eq!(e.code(), *code, "wrong code for a {code} input");
        let message = e.to_string();
        assert!(
            !message.contains(MARK),
            "{code}: message echoes input: {message}"
        );
        assert!(
            !message.to_lowercase().contains("quixotrel"),
            "{code}: {message}"
        );
        assert!(!message.is_empty());
    }
    // Invalid UTF-8 with the marker around it.
    let mut bytes = MARK.as_bytes().to_vec();
    bytes.push(0xff);
    bytes.extend_from_slice(MARK.as_bytes());
    let e = normalize_bytes(&bytes, &strict).expect_err("invalid");
    assert!(!e.to_string().contains(MARK));
    // Empty: nothing to echo, but the message must still be meaningful.
    assert_eq!(
        reject("  ").to_string(),
        "input is empty after normalization"
    );
}

#[test]
fn display_names_code_point_and_position() {
    let e = reject("ab\u{202E}");
    assert_eq!(
        e.to_string(),
        "input contains a bidirectional embedding, override or isolate control (U+202E at character 2)"
    );
    let e = reject("\0");
    assert!(e.to_string().ends_with("(U+0000 at character 0)"), "{e}");
    let e = normalize(
        "\u{FDFA}",
        &TextPolicy {
            max_chars: 10,
            ..TextPolicy::default()
        },
    )
    .expect_err("too long");
    assert_eq!(
        e.to_string(),
        "input is too long after normalization: 18 characters, the maximum is 10"
    );
}

// ------------------------------------------------------------ WordList

#[test]
fn wordlist_matches_whole_words_only() {
    let list = WordList::new(["cunt", "darn"]);
    assert!(!list.contains_in("Scunthorpe is a town"));
    assert!(!list.contains_in("darned"));
    assert!(list.contains_in("oh, DARN!"));
    assert!(list.contains_in("darn"));
    assert!(list.contains_in("x-darn-x"));
    assert!(list.contains_in("ＤＡＲＮ")); // fullwidth, via NFKC
    assert!(!list.contains_in(""));
    // Documented limitation: separated letters are not matched.
    assert!(!list.contains_in("d.a.r.n"));
}

#[test]
fn wordlist_phrases_sizes_and_debug() {
    let list = WordList::new(["bad word", "Darn", "darn", "", "  ", "!!", "ÉCOLE"]);
    assert_eq!(list.len(), 3);
    assert!(!list.is_empty());
    assert!(list.contains_in("a BAD   word here"));
    assert!(list.contains_in("bad-word"));
    assert!(!list.contains_in("bad words"));
    assert!(!list.contains_in("word bad"));
    assert!(list.contains_in("l'école"));
    let empty = WordList::new(Vec::<String>::new());
    assert!(empty.is_empty());
    assert_eq!(empty.len(), 0);
    assert!(!empty.contains_in("anything"));
    let debug = format!("{list:?}");
    assert!(!debug.contains("darn"), "{debug}");
    let collected: WordList = ["a", "b"].into_iter().collect();
    assert_eq!(collected.len(), 2);
}

// ------------------------------------------------------------ check_spam

#[test]
fn spam_repeated_characters() {
    assert_eq!(check_spam(&"a".repeat(MAX_REPEATED_CHARS)), None);
    assert_eq!(
        check_spam(&"a".repeat(MAX_REPEATED_CHARS + 1)),
        Some(SpamKind::RepeatedCharacters)
    );
    assert_eq!(
        check_spam(&format!("wow{}", "!".repeat(41))),
        Some(SpamKind::RepeatedCharacters)
    );
    // Whitespace is not counted, and breaks runs.
    assert_eq!(check_spam(&" ".repeat(500)), None);
    assert_eq!(
        check_spam(&format!("{}b{}", "a".repeat(40), "a".repeat(40))),
        None
    );
    assert_eq!(
        check_spam(&format!("{} {}", "a".repeat(40), "a".repeat(40))),
        None
    );
    // Case-sensitive: "aA" alternation is not one run.
    assert_eq!(check_spam(&"aA".repeat(30)), None);
}

#[test]
fn spam_repeated_words() {
    assert_eq!(check_spam(&"buy ".repeat(MAX_REPEATED_WORDS)), None);
    assert_eq!(
        check_spam(&"buy ".repeat(13)),
        Some(SpamKind::RepeatedWords)
    );
    assert_eq!(
        check_spam(&"Buy, BUY! buy ".repeat(5)),
        Some(SpamKind::RepeatedWords)
    );
    assert_eq!(check_spam(&"buy now ".repeat(20)), None);
    assert_eq!(check_spam("the cat sat on the mat"), None);
}

#[test]
fn spam_links() {
    let five = "see http://a.example https://b.example www.c.example HTTPS://www.d.example http://e.example";
    assert_eq!(check_spam(five), None);
    let six = format!("{five} www.f.example");
    assert_eq!(check_spam(&six), Some(SpamKind::TooManyLinks));
    assert_eq!(check_spam("awww. awww. awww. awww. awww. awww."), None);
    assert_eq!(check_spam("Hello, world."), None);
}

// ------------------------------------------------------------ redact_pii

#[test]
fn redacts_emails() {
    assert_eq!(
        redact_pii("Mail jane.doe+tts@example.co.uk now."),
        "Mail redacted email now."
    );
    assert_eq!(
        redact_pii("a@b.de, c_d@mail.example"),
        "redacted email, redacted email"
    );
    assert_eq!(redact_pii("müller@bücher.example"), "redacted email");
    assert_eq!(redact_pii("meet @ noon"), "meet @ noon");
    assert_eq!(redact_pii("user@localhost"), "user@localhost");
}

#[test]
fn redacts_phone_numbers() {
    for phone in [
        "+1 415 555 2671",
        "+14155552671",
        "+1-415-555-2671",
        "+44 20 7946 0958",
        "+44 (0)20 7946 0958",
        "+49 30 1234567",
        "+33 1 23 45 67 89",
        "(415) 555-2671",
        "1 (415) 555 2671",
        "415-555-2671",
        "415.555.2671",
        "1-800-555-0199",
        "030 1234567",
        "030/1234567",
        "0171-1234567",
        "020 7946 0958",
    ] {
        assert_eq!(
            redact_pii(&format!("Call {phone} today")),
            "Call redacted phone number today",
            "{phone}"
        );
    }
}

#[test]
fn leaves_ordinary_numbers_alone() {
    for text in [
        "Order 12345 shipped",
        "On 2024-05-12 at 10:30",
        "Version 1.2.3",
        "Pi is 3.0301234567",
        "It costs 1,000,000 dollars",
        "The year 1999",
        "Room +12",
        "05.12.2024",
        "ID A0301234567",
    ] {
        assert!(matches!(redact_pii(text), Cow::Borrowed(_)), "{text}");
    }
}

#[test]
fn redacts_luhn_valid_cards_only() {
    assert_eq!(
        redact_pii("card 4111 1111 1111 1111 ok"),
        "card redacted card number ok"
    );
    assert_eq!(redact_pii("4111-1111-1111-1111"), "redacted card number");
    assert_eq!(redact_pii("4111111111111111"), "redacted card number");
    assert_eq!(
        redact_pii("amex 3782 822463 10005"),
        "amex redacted card number"
    );
    assert_eq!(redact_pii("5555555555554444."), "redacted card number.");
    let invalid = "card 4111 1111 1111 1112 ok";
    assert!(matches!(redact_pii(invalid), Cow::Borrowed(s) if s == invalid));
    assert!(matches!(redact_pii("4111111111111112"), Cow::Borrowed(_)));
    // 20 digits is too long for a card.
    assert!(matches!(
        redact_pii("41111111111111111110"),
        Cow::Borrowed(_)
    ));
}

#[test]
fn redacts_everything_together_and_borrows_when_clean() {
    let text = "Reach me at bob@example.com or +1 415 555 2671, card 4111 1111 1111 1111.";
    assert_eq!(
        redact_pii(text),
        "Reach me at redacted email or redacted phone number, card redacted card number."
    );
    assert!(matches!(
        redact_pii("plain text, nothing here"),
        Cow::Borrowed(_)
    ));
    assert!(matches!(redact_pii(""), Cow::Borrowed(_)));
}

#[test]
fn luhn_checksum() {
    assert!(pii::luhn_valid(&[
        4, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1
    ]));
    assert!(!pii::luhn_valid(&[
        4, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 2
    ]));
    assert!(pii::luhn_valid(&[7, 9, 9, 2, 7, 3, 9, 8, 7, 1, 3]));
    assert!(!pii::luhn_valid(&[7, 9, 9, 2, 7, 3, 9, 8, 7, 1, 4]));
}

// ------------------------------------------------------------ ReDoS

/// Runs `f` in its own thread and fails if it does not finish within a very
/// generous bound. All matching is linear-time (the `regex` crate has no
/// backtracking, the rest is plain scanning), so each call finishes in
/// milliseconds even in debug builds; the 30 s bound only catches a hang.
fn assert_terminates(name: &str, f: impl FnOnce() + Send + 'static) {
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        f();
        let _ = tx.send(());
    });
    match rx.recv_timeout(Duration::from_secs(30)) {
        Ok(()) => {}
        Err(mpsc::RecvTimeoutError::Timeout) => panic!("{name} did not finish within 30 s"),
        Err(mpsc::RecvTimeoutError::Disconnected) => panic!("{name} panicked"),
    }
}

#[test]
fn pathological_inputs_terminate() {
    const N: usize = 100_000;
    let inputs: Vec<(&str, String)> = vec![
        ("a*", "a".repeat(N)),
        ("@*", "@".repeat(N)),
        ("a@*", "a@".repeat(N / 2)),
        ("a@a.*", "a@a.".repeat(N / 4)),
        ("a.*", "a.".repeat(N / 2)),
        (".*", ".".repeat(N)),
        ("-*", "-".repeat(N)),
        ("1*", "1".repeat(N)),
        ("1 *", "1 ".repeat(N / 2)),
        ("1-*", "1-".repeat(N / 2)),
        ("+1-*", "+1-".repeat(N / 3)),
        ("+*", "+".repeat(N)),
        ("(1)*", "(1)".repeat(N / 3)),
        ("0 *", "0 ".repeat(N / 2)),
        ("0/*", "0/".repeat(N / 2)),
        ("http://*", "http://".repeat(N / 7)),
        ("www.*", "www.".repeat(N / 4)),
        ("é@*", "é@".repeat(N / 2)),
        ("word *", "word ".repeat(N / 5)),
        ("x1 *", "x1 ".repeat(N / 3)),
        ("U+FDFA*", "\u{FDFA}".repeat(N / 10)),
        ("a\u{301}*", "a\u{301}".repeat(N / 2)),
        ("zwj*", "a\u{200D}".repeat(N / 2)),
    ];
    let list = Arc::new(WordList::new(["darn", "bad word", "a a a b"]));
    let lax = Arc::new(TextPolicy {
        max_chars: usize::MAX,
        zero_width: ZeroWidth::Strip,
        profanity: Some(Arc::clone(&list)),
        spam: true,
    });
    for (name, input) in inputs {
        let input: Arc<str> = input.into();
        let i = Arc::clone(&input);
        assert_terminates(&format!("redact_pii({name})"), move || {
            let _ = redact_pii(&i);
        });
        let i = Arc::clone(&input);
        assert_terminates(&format!("check_spam({name})"), move || {
            let _ = check_spam(&i);
        });
        let (i, l) = (Arc::clone(&input), Arc::clone(&list));
        assert_terminates(&format!("WordList::contains_in({name})"), move || {
            let _ = l.contains_in(&i);
        });
        let (i, p) = (Arc::clone(&input), Arc::clone(&lax));
        assert_terminates(&format!("normalize({name})"), move || {
            let _ = normalize(&i, &p);
        });
    }
}

// ------------------------------------------------------------ properties

/// Code points that exercise every branch of the pipeline.
fn interesting_char() -> impl Strategy<Value = char> {
    prop_oneof![
        6 => proptest::char::range('a', 'e'),
        2 => Just(' '),
        1 => proptest::char::any(),
        6 => proptest::sample::select(vec![
            '\n', '\t', '\r', '\0', '\u{1b}', '\u{7f}', '\u{85}', '\u{9f}', '\u{0b}', '\u{0c}',
            '\u{a0}', '\u{3000}', '\u{2003}', '\u{1680}', '\u{2028}', '\u{2029}',
            '\u{202a}', '\u{202e}', '\u{2066}', '\u{2069}',
            '\u{200b}', '\u{200c}', '\u{200d}', '\u{200e}', '\u{200f}', '\u{2060}', '\u{feff}',
            '\u{180e}', '\u{061c}',
            '\u{e0000}', '\u{e0041}', '\u{e007f}', '\u{fffe}', '\u{ffff}', '\u{fdd0}', '\u{1fffe}',
            '\u{fdfa}', '\u{ff0e}', '\u{ff0f}', '\u{ff21}', '\u{ff41}', '\u{fb01}', '\u{2126}',
            '\u{212b}', '\u{b4}', '\u{a8}', '\u{301}', '\u{308}', '\u{316}', '\u{345}', '\u{327}',
            '\u{1100}', '\u{1161}', '\u{11a8}', '\u{ac00}', '\u{3131}', '\u{e9}', '\u{1e0b}',
            '\u{2460}', '\u{32ff}', '\u{1d400}', 'A', 'E', '!', '.', '/',
        ]),
    ]
}

fn interesting_string() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<String>(),
        proptest::collection::vec(interesting_char(), 0..80).prop_map(String::from_iter),
    ]
}

fn any_policy() -> impl Strategy<Value = TextPolicy> {
    (
        1usize..120,
        prop_oneof![
            Just(ZeroWidth::Reject),
            Just(ZeroWidth::Strip),
            Just(ZeroWidth::Allow)
        ],
        any::<bool>(),
        any::<bool>(),
    )
        .prop_map(|(max_chars, zero_width, spam, words)| TextPolicy {
            max_chars,
            zero_width,
            profanity: words.then(|| Arc::new(WordList::new(["abc", "dd ee"]))),
            spam,
        })
}

fn is_forbidden_output(c: char, zero_width: ZeroWidth) -> bool {
    (c.is_control() && c != '\n' && c != '\t')
        || is_bidi_control(c)
        || is_tag_character(c)
        || is_noncharacter(c)
        || (zero_width != ZeroWidth::Allow && is_zero_width(c))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn prop_idempotent(input in interesting_string(), p in any_policy()) {
        if let Ok(once) = normalize(&input, &p) {
            prop_assert_eq!(normalize(&once, &p), Ok(once.clone()));
        }
    }

    #[test]
    fn prop_no_forbidden_characters(input in interesting_string(), p in any_policy()) {
        if let Ok(out) = normalize(&input, &p) {
            for c in out.chars() {
                prop_assert!(!is_forbidden_output(c, p.zero_width), "U+{:04X}", u32::from(c));
            }
            prop_assert!(!out.contains('\r'));
            prop_assert!(!out.contains('\t'), "tabs are whitespace and collapse to spaces");
        }
    }

    #[test]
    fn prop_within_length(input in interesting_string(), p in any_policy()) {
        match normalize(&input, &p) {
            Ok(out) => {
                let n = out.chars().count();
                prop_assert!((1..=p.max_chars).contains(&n));
            }
            Err(TextError { kind: TextErrorKind::TooLong { max, actual }, .. }) => {
                prop_assert_eq!(max, p.max_chars);
                prop_assert!(actual > max);
            }
            Err(_) => {}
        }
    }

    #[test]
    fn prop_whitespace_is_collapsed(input in interesting_string(), p in any_policy()) {
        if let Ok(out) = normalize(&input, &p) {
            prop_assert!(!out.starts_with(char::is_whitespace));
            prop_assert!(!out.ends_with(char::is_whitespace));
            let chars: Vec<char> = out.chars().collect();
            for pair in chars.windows(2) {
                prop_assert!(!(pair[0].is_whitespace() && pair[1].is_whitespace()));
            }
            for c in chars {
                prop_assert!(!c.is_whitespace() || c == ' ' || c == '\n', "U+{:04X}", u32::from(c));
            }
        }
    }

    #[test]
    fn prop_output_is_nfkc(input in interesting_string(), p in any_policy()) {
        if let Ok(out) = normalize(&input, &p) {
            prop_assert!(is_nfkc(&out));
        }
    }

    #[test]
    fn prop_never_panics(input in interesting_string(), bytes in proptest::collection::vec(any::<u8>(), 0..64), p in any_policy()) {
        let _ = normalize(&input, &p);
        let _ = normalize_bytes(&bytes, &p);
        let _ = normalize_bytes(input.as_bytes(), &p);
        let _ = redact_pii(&input);
        let _ = check_spam(&input);
        if let Err(e) = normalize(&input, &p) {
            prop_assert!(!e.to_string().is_empty());
        }
    }

    #[test]
    fn prop_redaction_is_borrowed_or_changed(input in interesting_string()) {
        match redact_pii(&input) {
            Cow::Borrowed(s) => prop_assert_eq!(s, input.as_str()),
            Cow::Owned(s) => prop_assert_ne!(s, input),
        }
    }
}
