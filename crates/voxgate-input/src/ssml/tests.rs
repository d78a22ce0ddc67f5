//! Tests of the SSML parser: every refusal with a concrete attack, the positive cases, and
//! property tests of the invariants.

use super::*;
use proptest::prelude::*;

fn lim() -> SsmlLimits {
    SsmlLimits::default()
}

fn ok(input: &str) -> Document {
    match parse(input, &lim()) {
        Ok(doc) => doc,
        Err(e) => panic!("expected Ok, got {e} ({})", e.code()),
    }
}

fn err(input: &str) -> SsmlError {
    match parse(input, &lim()) {
        Ok(doc) => panic!("expected error, got {doc:?}"),
        Err(e) => e,
    }
}

fn kind(input: &str) -> SsmlErrorKind {
    err(input).kind
}

fn text(t: &str, rate: f32) -> Piece {
    Piece::Text {
        text: t.to_owned(),
        rate,
    }
}

fn brk(ms: u32) -> Piece {
    Piece::Break { ms }
}

// ---- attacks: DTD / entities -------------------------------------------------

#[test]
fn doctype_with_internal_entity_is_refused() {
    let e = err(r#"<!DOCTYPE speak [<!ENTITY x "y">]><speak>&x;</speak>"#);
    assert_eq!(e.kind, SsmlErrorKind::DtdRefused);
    assert_eq!(e.code(), "ssml_dtd_refused");
}

#[test]
fn empty_doctype_is_refused_with_line() {
    let e = err("<?xml version=\"1.0\"?>\n<!DOCTYPE speak>\n<speak>hi</speak>");
    assert_eq!(e.kind, SsmlErrorKind::DtdRefused);
    assert_eq!(e.line, Some(2));
}

#[test]
fn billion_laughs_is_refused() {
    let mut s = String::from("<?xml version=\"1.0\"?>\n<!DOCTYPE lolz [\n<!ENTITY lol \"lol\">\n");
    for i in 1..10 {
        let prev = if i == 1 {
            "lol".to_owned()
        } else {
            format!("lol{}", i - 1)
        };
        let refs = format!("&{prev};").repeat(10);
        s.push_str(&format!("<!ENTITY lol{i} \"{refs}\">\n"));
    }
    s.push_str("]>\n<speak>&lol9;</speak>");
    assert_eq!(kind(&s), SsmlErrorKind::DtdRefused);
}

#[test]
fn xxe_is_refused() {
    let s = r#"<?xml version="1.0"?>
<!DOCTYPE speak [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>
<speak>&xxe;</speak>"#;
    assert_eq!(kind(s), SsmlErrorKind::DtdRefused);
    let s = r#"<!DOCTYPE speak SYSTEM "http://evil/x.dtd"><speak>hi</speak>"#;
    assert_eq!(kind(s), SsmlErrorKind::DtdRefused);
}

#[test]
fn undeclared_entity_is_malformed() {
    let e = err("<speak>\n&lol9;</speak>");
    assert_eq!(e.kind, SsmlErrorKind::Malformed);
    assert_eq!(e.line, Some(2));
}

#[test]
fn predefined_and_numeric_entities_become_text() {
    let doc = ok("<speak>&lt;audio src=&quot;x&quot;/&gt; &amp; &#60;&#x3C;&apos;</speak>");
    assert_eq!(doc.pieces, vec![text("<audio src=\"x\"/> & <<'", 1.0)]);
    let out = doc.to_ssml();
    assert!(!out.contains("<audio"), "{out}");
    assert_eq!(ok(&out), doc);
}

#[test]
fn cdata_is_text_not_markup() {
    let doc = ok("<speak><![CDATA[<audio src=\"x\"/>]]></speak>");
    assert_eq!(doc.pieces, vec![text("<audio src=\"x\"/>", 1.0)]);
    assert!(!doc.to_ssml().contains("<audio"));
}

// ---- attacks: elements / attributes / namespaces -----------------------------

#[test]
fn audio_is_not_allowed() {
    let e = err("<speak>\n<audio src=\"http://evil/x.mp3\"/></speak>");
    assert_eq!(e.kind, SsmlErrorKind::ElementNotAllowed);
    assert_eq!(e.line, Some(2));
    assert_eq!(e.code(), "ssml_element_not_allowed");
}

#[test]
fn lexicon_and_other_elements_are_not_allowed() {
    for el in [
        r#"<lexicon uri="http://evil/lex.pls"/>"#,
        r#"<mark name="m"/>"#,
        r#"<voice name="x">hi</voice>"#,
        r#"<phoneme ph="x">hi</phoneme>"#,
        "<metadata/>",
        r#"<meta name="a" content="b"/>"#,
        "<desc>d</desc>",
        r#"<lookup ref="x">hi</lookup>"#,
        "<unknown/>",
        "<speak>nested</speak>",
        "<Speak/>",
    ] {
        let s = format!("<speak>{el}</speak>");
        assert_eq!(kind(&s), SsmlErrorKind::ElementNotAllowed, "{el}");
    }
}

#[test]
fn xml_base_is_not_allowed_anywhere() {
    for s in [
        r#"<speak xml:base="http://evil/">hi</speak>"#,
        r#"<speak><p xml:base="http://evil/">hi</p></speak>"#,
        r#"<speak><break xml:base="http://evil/"/></speak>"#,
    ] {
        assert_eq!(kind(s), SsmlErrorKind::AttributeNotAllowed, "{s}");
    }
}

#[test]
fn unlisted_and_foreign_attributes_are_not_allowed() {
    for s in [
        r#"<speak onload="x">hi</speak>"#,
        r#"<speak xml:space="preserve">hi</speak>"#,
        r#"<speak><emphasis xml:lang="en">hi</emphasis></speak>"#,
        r#"<speak><break time="1s" src="x"/></speak>"#,
        r#"<speak xmlns:x="urn:evil" x:src="y">hi</speak>"#,
        r#"<speak xmlns:s="http://www.w3.org/2001/10/synthesis"><break s:time="1s"/></speak>"#,
    ] {
        assert_eq!(kind(s), SsmlErrorKind::AttributeNotAllowed, "{s}");
    }
}

#[test]
fn namespace_declarations_are_not_attributes() {
    let doc = ok(
        r#"<speak version="1.1" xmlns="http://www.w3.org/2001/10/synthesis"
        xmlns:unused="urn:x" xml:lang="en-US">hi</speak>"#,
    );
    assert_eq!(doc.pieces, vec![text("hi", 1.0)]);
    let doc = ok(
        r#"<s:speak xmlns:s="http://www.w3.org/2001/10/synthesis"><s:break time="1s"/>x</s:speak>"#,
    );
    assert_eq!(doc.pieces, vec![brk(1000), text("x", 1.0)]);
}

#[test]
fn processing_instructions_are_refused() {
    let e = err(r#"<?xml-stylesheet type="text/xsl" href="http://evil/x.xsl"?><speak>hi</speak>"#);
    assert_eq!(e.kind, SsmlErrorKind::ProcessingInstruction);
    assert_eq!(e.code(), "ssml_processing_instruction");
    for s in [
        "<speak>a<?php evil() ?>b</speak>",
        "<speak>hi</speak><?after x?>",
        "<speak><break><?x y?></break></speak>",
        "<speak><sub alias=\"a\"><?x y?></sub></speak>",
    ] {
        assert_eq!(kind(s), SsmlErrorKind::ProcessingInstruction, "{s}");
    }
    // The XML declaration is not a processing instruction.
    ok("<?xml version=\"1.0\" encoding=\"UTF-8\"?><speak>hi</speak>");
}

#[test]
fn foreign_namespace_elements_are_refused() {
    let e = err(r#"<speak xmlns:x="http://evil/ns"><x:break time="1s"/></speak>"#);
    assert_eq!(e.kind, SsmlErrorKind::ForeignNamespace);
    assert_eq!(e.code(), "ssml_foreign_namespace");
    assert_eq!(
        kind(r#"<speak xmlns="http://www.w3.org/1999/xhtml">hi</speak>"#),
        SsmlErrorKind::ForeignNamespace
    );
    assert_eq!(
        kind(r#"<speak><p xmlns="urn:evil">hi</p></speak>"#),
        SsmlErrorKind::ForeignNamespace
    );
}

#[test]
fn root_must_be_speak() {
    for s in ["<html>hi</html>", "<p>hi</p>", "<break/>"] {
        let e = err(s);
        assert_eq!(e.kind, SsmlErrorKind::RootNotSpeak, "{s}");
        assert_eq!(e.code(), "ssml_root_not_speak");
    }
}

#[test]
fn content_inside_break_and_elements_inside_sub_are_refused() {
    assert_eq!(
        kind("<speak><break>text</break></speak>"),
        SsmlErrorKind::ElementNotAllowed
    );
    assert_eq!(
        kind(r#"<speak><sub alias="a"><emphasis>b</emphasis></sub></speak>"#),
        SsmlErrorKind::ElementNotAllowed
    );
    assert_eq!(
        kind(r#"<speak><say-as interpret-as="digits"><break/></say-as></speak>"#),
        SsmlErrorKind::ElementNotAllowed
    );
    ok("<speak><break><!-- fine --></break></speak>");
}

// ---- attacks: resource limits ------------------------------------------------

#[test]
fn deep_nesting_is_refused() {
    let s = format!(
        "<speak>{}x{}</speak>",
        "<emphasis>".repeat(100),
        "</emphasis>".repeat(100)
    );
    let e = err(&s);
    assert_eq!(e.kind, SsmlErrorKind::TooDeep);
    assert_eq!(e.code(), "ssml_too_deep");
    // speak (1) + 15 levels = 16 is fine, 16 levels is not.
    let at_limit = format!(
        "<speak>{}x{}</speak>",
        "<emphasis>".repeat(15),
        "</emphasis>".repeat(15)
    );
    assert_eq!(ok(&at_limit).pieces, vec![text("x", 1.0)]);
    let over = format!(
        "<speak>{}x{}</speak>",
        "<emphasis>".repeat(16),
        "</emphasis>".repeat(16)
    );
    assert_eq!(kind(&over), SsmlErrorKind::TooDeep);
}

#[test]
fn too_many_nodes_is_refused() {
    let s = format!("<speak>{}</speak>", "<break/>".repeat(5000));
    let e = err(&s);
    assert_eq!(e.kind, SsmlErrorKind::TooManyNodes);
    assert_eq!(e.code(), "ssml_too_many_nodes");
}

#[test]
fn too_large_is_refused_before_parsing() {
    let s = format!("<speak>{}</speak>", "a".repeat(100 * 1024));
    let e = err(&s);
    assert_eq!(e.kind, SsmlErrorKind::TooLarge);
    assert_eq!(e.code(), "ssml_too_large");
    // Even garbage: the size check comes first.
    assert_eq!(kind(&"<".repeat(70 * 1024)), SsmlErrorKind::TooLarge);
}

#[test]
fn long_break_is_clamped() {
    let doc = ok(r#"<speak>a<break time="99999s"/>b</speak>"#);
    assert_eq!(doc.pieces, vec![text("a", 1.0), brk(5000), text("b", 1.0)]);
    let doc = ok(r#"<speak>a<break time="99999999999999999999s"/>b</speak>"#);
    assert_eq!(doc.pieces[1], brk(5000));
}

#[test]
fn total_break_time_is_clamped() {
    let s = format!("<speak>{}</speak>", "x<break time=\"4s\"/>".repeat(10));
    let doc = ok(&s);
    let breaks: Vec<u32> = doc
        .pieces
        .iter()
        .filter_map(|p| match p {
            Piece::Break { ms } => Some(*ms),
            Piece::Text { .. } => None,
        })
        .collect();
    // 7 × 4000 = 28000, then 2000, then boundaries (0 ms; the last is trimmed).
    assert_eq!(
        breaks,
        vec![4000, 4000, 4000, 4000, 4000, 4000, 4000, 2000, 0]
    );
    assert_eq!(breaks.iter().sum::<u32>(), 30_000);
    assert_eq!(doc.plain_text(), "x\n".repeat(9) + "x");
}

#[test]
fn invalid_rates_are_rejected() {
    for rate in [
        "NaN", "nan", "inf", "-inf", "-50%", "+50%", "1e309", "1e3", "0", "0%", "1001%", "11", "",
        "%", "fast!", "1.2.3", "0x10", "50 %", "½",
    ] {
        let s = format!(r#"<speak><prosody rate="{rate}">hi</prosody></speak>"#);
        let e = err(&s);
        assert_eq!(e.kind, SsmlErrorKind::InvalidAttributeValue, "{rate}");
        assert_eq!(e.code(), "ssml_invalid_value");
    }
}

#[test]
fn invalid_values_are_rejected() {
    for s in [
        r#"<speak><break time="1h"/></speak>"#,
        r#"<speak><break time="-1s"/></speak>"#,
        r#"<speak><break time="NaNs"/></speak>"#,
        r#"<speak><break strength="loud"/></speak>"#,
        r#"<speak><emphasis level="max">x</emphasis></speak>"#,
        r#"<speak><prosody pitch="sky-high">x</prosody></speak>"#,
        r#"<speak><prosody volume="+5Hz">x</prosody></speak>"#,
        r#"<speak><say-as interpret-as="script">x</say-as></speak>"#,
        r#"<speak><say-as interpret-as="date" format="m/d/y">x</say-as></speak>"#,
        r#"<speak version="2.0">x</speak>"#,
        r#"<speak xml:lang="en US">x</speak>"#,
    ] {
        assert_eq!(kind(s), SsmlErrorKind::InvalidAttributeValue, "{s}");
    }
}

#[test]
fn loose_pitch_and_volume_are_accepted_and_ignored() {
    for (p, v) in [
        ("x-low", "x-soft"),
        ("+10%", "-6dB"),
        ("-2st", "+3dB"),
        ("120Hz", "loud"),
        ("default", "default"),
        ("high", "50"),
    ] {
        let s = format!(r#"<speak><prosody pitch="{p}" volume="{v}">x</prosody></speak>"#);
        assert_eq!(ok(&s).pieces, vec![text("x", 1.0)], "{s}");
    }
}

#[test]
fn sub_without_alias_is_refused() {
    let e = err("<speak><sub>W3C</sub></speak>");
    assert_eq!(e.kind, SsmlErrorKind::MissingAttribute);
    assert_eq!(e.code(), "ssml_missing_attribute");
    assert_eq!(
        kind("<speak><say-as>123</say-as></speak>"),
        SsmlErrorKind::MissingAttribute
    );
}

#[test]
fn unclosed_tags_are_malformed() {
    let e = err("<speak>\n<p>hi\n</speak>");
    assert_eq!(e.kind, SsmlErrorKind::Malformed);
    assert_eq!(e.code(), "ssml_malformed");
    assert_eq!(e.line, Some(3));
    for s in [
        "<speak>hi",
        "<speak><p>hi</p>",
        "",
        "hi",
        "<speak>\u{1}</speak>",
        "<speak>]]></speak>",
    ] {
        assert_eq!(kind(s), SsmlErrorKind::Malformed, "{s:?}");
    }
}

#[test]
fn error_display_names_rule_and_line_but_never_user_text() {
    let name = "evilelementwithaveryveryverylongnamethatgoesonandon";
    let e = err(&format!("<speak>\n\n<{name}>secret</{name}></speak>"));
    let msg = e.to_string();
    assert!(msg.contains("not allowed"), "{msg}");
    assert!(msg.ends_with("(line 3)"), "{msg}");
    assert!(!msg.contains(name) && !msg.contains("secret"), "{msg}");
    let e = err(r#"<speak><prosody rate="SECRET">x</prosody></speak>"#);
    assert!(!e.to_string().contains("SECRET"));
}

#[test]
fn every_kind_has_a_distinct_code() {
    use SsmlErrorKind::*;
    let kinds = [
        TooLarge,
        Malformed,
        DtdRefused,
        TooManyNodes,
        TooDeep,
        RootNotSpeak,
        ElementNotAllowed,
        AttributeNotAllowed,
        InvalidAttributeValue,
        ProcessingInstruction,
        ForeignNamespace,
        MissingAttribute,
    ];
    let codes: std::collections::HashSet<_> = kinds.iter().map(|k| k.code()).collect();
    assert_eq!(codes.len(), kinds.len());
    assert!(codes.iter().all(|c| c.starts_with("ssml_")));
}

// ---- positive ----------------------------------------------------------------

#[test]
fn realistic_document() {
    let s = r#"<?xml version="1.0" encoding="UTF-8"?>
<speak version="1.1" xmlns="http://www.w3.org/2001/10/synthesis" xml:lang="en-US"><!-- greeting
--><p><s>Hello <emphasis level="strong">world</emphasis>.</s><s>Call <say-as interpret-as="telephone">555-0100</say-as> now.</s></p><break time="1.5s"/><p><prosody rate="slow" pitch="+5%">The <sub alias="World Wide Web Consortium">W3C</sub> code is <say-as interpret-as="characters">SSML</say-as>, PIN <say-as interpret-as="digits">1234</say-as>.</prosody></p><break strength="weak"/><p xml:lang="de"><prosody rate="fast">Danke</prosody></p></speak>"#;
    let doc = ok(s);
    assert_eq!(
        doc.pieces,
        vec![
            text("Hello world.", 1.0),
            brk(0),
            text("Call 555-0100 now.", 1.0),
            brk(1500),
            text(
                "The World Wide Web Consortium code is S S M L, PIN 1 2 3 4.",
                0.75
            ),
            brk(250),
            text("Danke", 1.25),
        ]
    );
    assert_eq!(
        doc.plain_text(),
        "Hello world.\nCall 555-0100 now.\n\
         The World Wide Web Consortium code is S S M L, PIN 1 2 3 4.\nDanke"
    );
    assert_eq!(doc.text_chars(), doc.plain_text().chars().count() - 3);
    assert_eq!(
        doc.to_ssml(),
        "<speak>Hello world.<break time=\"0ms\"/>Call 555-0100 now.<break time=\"1500ms\"/>\
         <prosody rate=\"75%\">The World Wide Web Consortium code is S S M L, PIN 1 2 3 4.\
         </prosody><break time=\"250ms\"/><prosody rate=\"125%\">Danke</prosody></speak>"
    );
    assert_eq!(ok(&doc.to_ssml()), doc);
}

#[test]
fn boundaries_between_sentences_and_around_text() {
    let doc = ok("<speak>Intro<p>Para</p>Outro<s>S</s></speak>");
    assert_eq!(
        doc.pieces,
        vec![
            text("Intro", 1.0),
            brk(0),
            text("Para", 1.0),
            brk(0),
            text("Outro", 1.0),
            brk(0),
            text("S", 1.0)
        ]
    );
    // Leading/trailing boundaries are dropped; a break absorbs boundaries.
    let doc = ok(r#"<speak><p><s>a</s></p><p><break time="200ms"/></p><p>b</p></speak>"#);
    assert_eq!(doc.pieces, vec![text("a", 1.0), brk(200), text("b", 1.0)]);
    // Leading real pause is kept.
    let doc = ok(r#"<speak><break time="300ms"/>a</speak>"#);
    assert_eq!(doc.pieces, vec![brk(300), text("a", 1.0)]);
    assert!(ok("<speak/>").pieces.is_empty());
    assert!(ok("<speak><p/><s></s></speak>").pieces.is_empty());
}

#[test]
fn break_variants() {
    let doc = ok(
        r#"<speak>a<break/>b<break strength="none"/>c<break time="250ms" strength="x-strong"/>d<break time="0.25s"/>e<break time="2.5ms"/></speak>"#,
    );
    assert_eq!(
        doc.pieces,
        vec![
            text("a", 1.0),
            brk(500),
            text("b", 1.0),
            brk(0),
            text("c", 1.0),
            brk(250),
            text("d", 1.0),
            brk(250),
            text("e", 1.0),
            brk(3),
        ]
    );
}

#[test]
fn nested_prosody_multiplies_and_clamps() {
    let cases = [
        (
            r#"<prosody rate="150%"><prosody rate="0.5">a</prosody></prosody>"#,
            0.75,
        ),
        (
            r#"<prosody rate="x-fast"><prosody rate="x-fast">a</prosody></prosody>"#,
            2.0,
        ),
        (
            r#"<prosody rate="x-slow"><prosody rate="slow">a</prosody></prosody>"#,
            0.5,
        ),
        (r#"<prosody rate="1000%">a</prosody>"#, 2.0),
        (r#"<prosody rate="1%">a</prosody>"#, 0.5),
        (r#"<prosody rate="123.4%">a</prosody>"#, 1.23),
        // The enclosing *effective* (clamped) rate is multiplied.
        (
            r#"<prosody rate="400%"><prosody rate="50%">a</prosody></prosody>"#,
            1.0,
        ),
        (
            r#"<prosody rate="fast"><prosody pitch="high">a</prosody></prosody>"#,
            1.25,
        ),
    ];
    for (inner, want) in cases {
        let doc = ok(&format!("<speak>{inner}</speak>"));
        assert_eq!(doc.pieces, vec![text("a", want)], "{inner}");
    }
    let doc =
        ok(r#"<speak>a<prosody rate="fast">b<prosody rate="80%">c</prosody>d</prosody>e</speak>"#);
    assert_eq!(
        doc.pieces,
        vec![
            text("a", 1.0),
            text("b", 1.25),
            text("c", 1.0),
            text("d", 1.25),
            text("e", 1.0)
        ]
    );
}

#[test]
fn rate_respects_custom_limits() {
    let limits = SsmlLimits {
        min_rate: 0.8,
        max_rate: 1.1,
        ..SsmlLimits::default()
    };
    let doc = parse(
        r#"<speak><prosody rate="x-fast">a</prosody><prosody rate="x-slow">b</prosody></speak>"#,
        &limits,
    )
    .expect("valid");
    assert_eq!(doc.pieces, vec![text("a", 1.1), text("b", 0.8)]);
}

#[test]
fn say_as_rendering() {
    let doc = ok(
        r#"<speak><say-as interpret-as="spell-out">a b&amp;c</say-as> <say-as interpret-as="verbatim">e&#x301;x</say-as> <say-as interpret-as="date" format="mdy" detail="1">1/2/2025</say-as></speak>"#,
    );
    assert_eq!(doc.pieces, vec![text("a b & c e\u{301} x 1/2/2025", 1.0)]);
}

#[test]
fn whitespace_and_unicode_are_kept_as_is() {
    let doc = ok("<speak>  a\n\tb  <p> ＜script＞ </p></speak>");
    assert_eq!(
        doc.pieces,
        vec![text("  a\n\tb  ", 1.0), brk(0), text(" ＜script＞ ", 1.0)]
    );
}

#[test]
fn escape_text_round_trip() {
    let attack = r#"</speak><audio src="x"/>"#;
    let escaped = escape_text(attack);
    assert_eq!(escaped, "&lt;/speak&gt;&lt;audio src=&quot;x&quot;/&gt;");
    let wrapped = plain_to_ssml(attack);
    assert_eq!(wrapped, format!("<speak>{escaped}</speak>"));
    let doc = ok(&wrapped);
    assert_eq!(doc.pieces, vec![text(attack, 1.0)]);
    assert_eq!(escape_text("it's & \"q\""), "it&apos;s &amp; &quot;q&quot;");
    assert_eq!(
        ok(&plain_to_ssml("a\r\nb")).pieces,
        vec![text("a\r\nb", 1.0)]
    );
    assert_eq!(escape_text("a\u{0}b\u{1b}c\u{FFFF}"), "abc");
}

#[test]
fn default_limits() {
    let l = SsmlLimits::default();
    assert_eq!(
        (
            l.max_nodes,
            l.max_depth,
            l.max_break_ms,
            l.max_total_break_ms,
            l.max_bytes
        ),
        (2000, 16, 5000, 30_000, 65_536)
    );
    assert_eq!((l.min_rate, l.max_rate), (0.5, 2.0));
}

// ---- properties --------------------------------------------------------------

/// Runs the builder over arbitrary pieces to get the canonical form.
fn canonicalize(pieces: &[Piece], limits: &SsmlLimits) -> Vec<Piece> {
    let mut b = Builder::new(limits);
    for p in pieces {
        match p {
            Piece::Text { text, rate } => b.push_text(text, *rate),
            Piece::Break { ms } => b.push_break(*ms),
        }
    }
    b.finish()
}

fn check_invariants(doc: &Document, limits: &SsmlLimits) {
    let mut total = 0u64;
    let mut prev: Option<&Piece> = None;
    for p in &doc.pieces {
        match p {
            Piece::Text { text, rate } => {
                assert!(!text.is_empty());
                assert!(
                    *rate >= limits.min_rate && *rate <= limits.max_rate,
                    "{rate}"
                );
                if let Some(Piece::Text { rate: r, .. }) = prev {
                    assert_ne!(r, rate, "unmerged text");
                }
            }
            Piece::Break { ms } => {
                assert!(*ms <= limits.max_break_ms);
                total += u64::from(*ms);
                if let Some(Piece::Break { ms: m }) = prev {
                    assert!(*m != 0 && *ms != 0, "boundary next to break");
                }
            }
        }
        prev = Some(p);
    }
    assert!(total <= u64::from(limits.max_total_break_ms));
    assert_ne!(doc.pieces.first(), Some(&Piece::Break { ms: 0 }));
    assert_ne!(doc.pieces.last(), Some(&Piece::Break { ms: 0 }));
}

fn fragment() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("<speak>".to_owned()),
        Just("</speak>".to_owned()),
        Just("<p>".to_owned()),
        Just("</p>".to_owned()),
        Just("<s>".to_owned()),
        Just("</s>".to_owned()),
        Just("<break time=\"4s\"/>".to_owned()),
        Just("<break time=\"99999s\"/>".to_owned()),
        Just("<break strength=\"x-strong\"/>".to_owned()),
        Just("<prosody rate=\"x-fast\">".to_owned()),
        Just("<prosody rate=\"30%\">".to_owned()),
        Just("<prosody rate=\"1e309\">".to_owned()),
        Just("</prosody>".to_owned()),
        Just("<emphasis>".to_owned()),
        Just("</emphasis>".to_owned()),
        Just("<say-as interpret-as=\"characters\">".to_owned()),
        Just("</say-as>".to_owned()),
        Just("<sub alias=\"x\">".to_owned()),
        Just("</sub>".to_owned()),
        Just("<audio/>".to_owned()),
        Just("<!DOCTYPE x>".to_owned()),
        Just("<?pi x?>".to_owned()),
        Just("<!-- c -->".to_owned()),
        Just("<![CDATA[<b>]]>".to_owned()),
        Just("&amp;".to_owned()),
        Just("&x;".to_owned()),
        Just("&#0;".to_owned()),
        "[a-z <>&;\"'=/\n]{0,6}",
    ]
}

/// Well-formed SSML trees with a mix of valid and invalid attribute values.
fn tree() -> impl Strategy<Value = String> {
    let leaf = prop_oneof![
        "[a-zA-Z0-9 .,!?＜&<>]{1,8}".prop_map(|s| escape_text(&s)),
        prop_oneof![
            Just("1s"),
            Just("4.5s"),
            Just("99999s"),
            Just("0ms"),
            Just("700ms"),
            Just("bogus")
        ]
        .prop_map(|t| format!("<break time=\"{t}\"/>")),
        prop_oneof![Just("none"), Just("x-strong"), Just("medium")]
            .prop_map(|t| format!("<break strength=\"{t}\"/>")),
        "[A-Z0-9]{1,5}".prop_map(|t| format!("<say-as interpret-as=\"characters\">{t}</say-as>")),
        "[a-z]{0,5}".prop_map(|t| format!("<sub alias=\"{t}\">x</sub>")),
    ];
    leaf.prop_recursive(6, 64, 5, |inner| {
        (
            prop_oneof![
                Just("p".to_owned()),
                Just("s".to_owned()),
                Just("emphasis".to_owned()),
                prop_oneof![
                    Just("x-slow"),
                    Just("slow"),
                    Just("fast"),
                    Just("x-fast"),
                    Just("10%"),
                    Just("333%"),
                    Just("0.7"),
                    Just("NaN"),
                    Just("-5%")
                ]
                .prop_map(|r| format!("prosody rate=\"{r}\"")),
            ],
            prop::collection::vec(inner, 0..5),
        )
            .prop_map(|(open, kids)| {
                let name = open.split(' ').next().unwrap_or("p").to_owned();
                format!("<{open}>{}</{name}>", kids.concat())
            })
    })
}

fn piece() -> impl Strategy<Value = Piece> {
    prop_oneof![
        ("[a-zA-Z0-9 \t\n\r<>&\"'.,é＜]{1,10}", 50u32..=200).prop_map(|(t, pct)| Piece::Text {
            text: t,
            rate: pct as f32 / 100.0
        }),
        (0u32..=5000).prop_map(|ms| Piece::Break { ms }),
    ]
}

proptest! {
    #[test]
    fn parse_never_panics_on_arbitrary_strings(s in any::<String>()) {
        let _ = parse(&s, &lim());
    }

    #[test]
    fn parse_never_panics_on_fragments(frags in prop::collection::vec(fragment(), 0..40)) {
        let limits = lim();
        let s = frags.concat();
        if let Ok(doc) = parse(&s, &limits) {
            check_invariants(&doc, &limits);
        }
        let wrapped = format!("<speak>{s}</speak>");
        if let Ok(doc) = parse(&wrapped, &limits) {
            check_invariants(&doc, &limits);
            prop_assert_eq!(parse(&doc.to_ssml(), &limits).ok(), Some(doc));
        }
    }

    #[test]
    fn well_formed_trees_satisfy_invariants(kids in prop::collection::vec(tree(), 0..6)) {
        let limits = lim();
        let s = format!("<speak>{}</speak>", kids.concat());
        match parse(&s, &limits) {
            Ok(doc) => {
                check_invariants(&doc, &limits);
                prop_assert_eq!(parse(&doc.to_ssml(), &limits).ok(), Some(doc));
            }
            Err(e) => prop_assert!(matches!(
                e.kind,
                SsmlErrorKind::InvalidAttributeValue | SsmlErrorKind::TooDeep
                    | SsmlErrorKind::TooManyNodes | SsmlErrorKind::TooLarge
            ), "{:?}", e),
        }
    }

    #[test]
    fn custom_limits_hold(
        kids in prop::collection::vec(tree(), 0..6),
        min_rate in 0.05f32..1.0,
        max_rate in 1.0f32..4.0,
        max_break_ms in 0u32..6000,
        max_total_break_ms in 0u32..20_000,
        max_depth in 0usize..10,
        max_nodes in 0u32..300,
    ) {
        let limits = SsmlLimits {
            max_nodes, max_depth, max_break_ms, max_total_break_ms, min_rate, max_rate,
            ..SsmlLimits::default()
        };
        let s = format!("<speak>{}</speak>", kids.concat());
        if let Ok(doc) = parse(&s, &limits) {
            check_invariants(&doc, &limits);
        }
    }

    #[test]
    fn to_ssml_round_trips_generated_documents(
        pieces in prop::collection::vec(piece(), 0..12)
    ) {
        let limits = lim();
        let canonical = Document { pieces: canonicalize(&pieces, &limits) };
        check_invariants(&canonical, &limits);
        let reparsed = parse(&canonical.to_ssml(), &limits);
        prop_assert_eq!(reparsed.as_ref().ok(), Some(&canonical));
        // Raw (non-canonical) documents canonicalize on the way through.
        let raw = Document { pieces };
        prop_assert_eq!(parse(&raw.to_ssml(), &limits).ok(), Some(canonical));
    }

    #[test]
    fn escaped_plain_text_round_trips(s in "\\PC{1,40}") {
        let s: String = s.chars().filter(|&c| is_xml_char(c)).collect();
        prop_assume!(!s.is_empty());
        let doc = parse(&plain_to_ssml(&s), &lim()).expect("escaped text parses");
        prop_assert_eq!(doc.pieces, vec![Piece::Text { text: s, rate: 1.0 }]);
    }
}
