//! Strict SSML parser for TTS input.
//!
//! User SSML is parsed with `roxmltree` (no DTD, bounded node count), checked
//! against a small allow-list of elements and attributes, and reduced to a flat
//! list of [`Piece`]s. Nothing the user wrote is ever forwarded verbatim: a
//! provider that accepts SSML receives [`Document::to_ssml`], which is
//! regenerated from the validated pieces with all text XML-escaped.
//!
//! Unicode normalization is deliberately *not* applied here; the caller runs it
//! on the extracted text afterwards, so that e.g. fullwidth `＜` (which NFKC
//! maps to `<`) can never turn into markup.

use std::fmt;

use roxmltree::{Node, NodeType, ParsingOptions};

/// The SSML namespace; elements must be in it or in no namespace.
pub const SSML_NAMESPACE: &str = "http://www.w3.org/2001/10/synthesis";

/// The namespace bound to the reserved `xml:` prefix.
const XML_NAMESPACE: &str = "http://www.w3.org/XML/1998/namespace";

/// Longest attribute value (in bytes) that is inspected as a number or keyword.
const MAX_VALUE_LEN: usize = 32;

/// Resource limits applied by [`parse`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SsmlLimits {
    /// Maximum number of XML nodes (elements, text, comments, PIs, the root).
    pub max_nodes: u32,
    /// Maximum element nesting depth; `<speak>` is depth 1.
    pub max_depth: usize,
    /// Longest single break in milliseconds; longer breaks are clamped.
    pub max_break_ms: u32,
    /// Sum of all breaks in milliseconds; breaks beyond it are shortened to 0.
    pub max_total_break_ms: u32,
    /// Slowest effective speaking rate (multiplier of normal).
    pub min_rate: f32,
    /// Fastest effective speaking rate (multiplier of normal).
    pub max_rate: f32,
    /// Maximum input size in bytes, checked before any parsing.
    pub max_bytes: usize,
}

impl Default for SsmlLimits {
    fn default() -> Self {
        Self {
            max_nodes: 2000,
            max_depth: 16,
            max_break_ms: 5000,
            max_total_break_ms: 30_000,
            min_rate: 0.5,
            max_rate: 2.0,
            max_bytes: 64 * 1024,
        }
    }
}

/// One unit of validated speech.
#[derive(Debug, Clone, PartialEq)]
pub enum Piece {
    /// Text to speak at `rate` (multiplier of normal, quantized to whole percent).
    Text {
        /// The text, entity-decoded, whitespace as written, not normalized.
        text: String,
        /// Effective speaking rate, within `[min_rate, max_rate]`.
        rate: f32,
    },
    /// A pause. `ms == 0` marks a sentence/paragraph boundary.
    Break {
        /// Pause length in milliseconds.
        ms: u32,
    },
}

/// A validated SSML document in canonical form.
///
/// [`parse`] guarantees: no empty text pieces, no two adjacent text pieces
/// with the same rate, no `Break { ms: 0 }` next to another break or at either
/// end of the document.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Document {
    /// The pieces in speaking order.
    pub pieces: Vec<Piece>,
}

impl Document {
    /// Text pieces concatenated; every break (including sentence and
    /// paragraph boundaries) becomes `"\n"`.
    pub fn plain_text(&self) -> String {
        let mut out = String::new();
        for piece in &self.pieces {
            match piece {
                Piece::Text { text, .. } => out.push_str(text),
                Piece::Break { .. } => out.push('\n'),
            }
        }
        out
    }

    /// Canonical SSML regenerated from the pieces: `<speak>`, one
    /// `<prosody rate="N%">` per text piece whose rate is not 1, and
    /// `<break time="Nms"/>`; all text goes through [`escape_text`].
    pub fn to_ssml(&self) -> String {
        let mut out = String::from("<speak>");
        for piece in &self.pieces {
            match piece {
                Piece::Text { text, rate } => {
                    let pct = rate_to_percent(*rate);
                    if pct == 100 {
                        out.push_str(&escape_text(text));
                    } else {
                        out.push_str(&format!("<prosody rate=\"{pct}%\">"));
                        out.push_str(&escape_text(text));
                        out.push_str("</prosody>");
                    }
                }
                Piece::Break { ms } => out.push_str(&format!("<break time=\"{ms}ms\"/>")),
            }
        }
        out.push_str("</speak>");
        out
    }

    /// Number of `char`s in all text pieces.
    pub fn text_chars(&self) -> usize {
        self.pieces
            .iter()
            .map(|p| match p {
                Piece::Text { text, .. } => text.chars().count(),
                Piece::Break { .. } => 0,
            })
            .sum()
    }
}

/// Which SSML rule was broken.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SsmlErrorKind {
    /// Input is larger than `max_bytes`.
    TooLarge,
    /// Not well-formed XML (includes undefined entity references).
    Malformed,
    /// A `<!DOCTYPE ...>` (and so any entity declaration) was present.
    DtdRefused,
    /// More than `max_nodes` XML nodes.
    TooManyNodes,
    /// Elements nested deeper than `max_depth`.
    TooDeep,
    /// The root element is not `<speak>`.
    RootNotSpeak,
    /// Element (or content) not on the allow-list at this position.
    ElementNotAllowed,
    /// Attribute not on the allow-list for its element.
    AttributeNotAllowed,
    /// Attribute value outside its grammar.
    InvalidAttributeValue,
    /// A processing instruction (`<?...?>`) was present.
    ProcessingInstruction,
    /// Element in a namespace other than none or the SSML namespace.
    ForeignNamespace,
    /// A required attribute is missing.
    MissingAttribute,
}

impl SsmlErrorKind {
    /// Stable machine-readable error code, e.g. `ssml_malformed`.
    pub fn code(self) -> &'static str {
        match self {
            Self::TooLarge => "ssml_too_large",
            Self::Malformed => "ssml_malformed",
            Self::DtdRefused => "ssml_dtd_refused",
            Self::TooManyNodes => "ssml_too_many_nodes",
            Self::TooDeep => "ssml_too_deep",
            Self::RootNotSpeak => "ssml_root_not_speak",
            Self::ElementNotAllowed => "ssml_element_not_allowed",
            Self::AttributeNotAllowed => "ssml_attribute_not_allowed",
            Self::InvalidAttributeValue => "ssml_invalid_value",
            Self::ProcessingInstruction => "ssml_processing_instruction",
            Self::ForeignNamespace => "ssml_foreign_namespace",
            Self::MissingAttribute => "ssml_missing_attribute",
        }
    }

    /// Fixed human-readable description of the rule; never contains user input.
    pub fn message(self) -> &'static str {
        match self {
            Self::TooLarge => "SSML document exceeds the size limit",
            Self::Malformed => "SSML is not well-formed XML",
            Self::DtdRefused => "SSML must not contain a DOCTYPE or entity declarations",
            Self::TooManyNodes => "SSML document has too many nodes",
            Self::TooDeep => "SSML elements are nested too deeply",
            Self::RootNotSpeak => "SSML root element must be speak",
            Self::ElementNotAllowed => {
                "SSML element or content not allowed here (allowed: speak, p, s, break, \
                 emphasis, prosody, say-as, sub; break is empty; say-as and sub hold text only)"
            }
            Self::AttributeNotAllowed => "SSML attribute not allowed on this element",
            Self::InvalidAttributeValue => "SSML attribute has an invalid value",
            Self::ProcessingInstruction => "SSML must not contain processing instructions",
            Self::ForeignNamespace => "SSML element is in a foreign namespace",
            Self::MissingAttribute => "SSML element is missing a required attribute",
        }
    }
}

/// A rejected SSML document: the broken rule and, where known, its 1-based line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SsmlError {
    /// Which rule was broken.
    pub kind: SsmlErrorKind,
    /// 1-based line of the offending construct, if known.
    pub line: Option<u32>,
}

impl SsmlError {
    fn new(kind: SsmlErrorKind, line: Option<u32>) -> Self {
        Self { kind, line }
    }

    /// Stable machine-readable error code, e.g. `ssml_malformed`.
    pub fn code(&self) -> &'static str {
        self.kind.code()
    }
}

impl fmt::Display for SsmlError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.kind.message())?;
        if let Some(line) = self.line {
            write!(f, " (line {line})")?;
        }
        Ok(())
    }
}

impl std::error::Error for SsmlError {}

/// XML-escapes `& < > " '` (and `\r`, which XML would otherwise fold into
/// `\n`). Characters that XML 1.0 cannot represent at all (C0 controls other
/// than tab/LF/CR, U+FFFE, U+FFFF) are dropped.
pub fn escape_text(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + text.len() / 8);
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            '\r' => out.push_str("&#13;"),
            c if is_xml_char(c) => out.push(c),
            _ => {}
        }
    }
    out
}

/// Wraps plain text as SSML: `"<speak>" + escape_text(text) + "</speak>"`.
pub fn plain_to_ssml(text: &str) -> String {
    format!("<speak>{}</speak>", escape_text(text))
}

/// Parses and validates user SSML into a canonical [`Document`].
///
/// Order of checks: size, XML well-formedness (no DTD, node limit), then a
/// depth-bounded iterative walk enforcing the element/attribute allow-lists.
pub fn parse(input: &str, limits: &SsmlLimits) -> Result<Document, SsmlError> {
    if input.len() > limits.max_bytes {
        return Err(SsmlError::new(SsmlErrorKind::TooLarge, None));
    }
    let options = ParsingOptions {
        allow_dtd: false,
        nodes_limit: limits.max_nodes,
        ..ParsingOptions::default()
    };
    let doc = roxmltree::Document::parse_with_options(input, options)
        .map_err(|e| map_xml_error(input, &e))?;

    let mut root_element = None;
    for child in doc.root().children() {
        match child.node_type() {
            NodeType::PI => return Err(node_error(SsmlErrorKind::ProcessingInstruction, child)),
            NodeType::Element => root_element = Some(child),
            // Comments are ignored; roxmltree emits no text outside the root.
            _ => {}
        }
    }
    let root = root_element.ok_or(SsmlError::new(SsmlErrorKind::Malformed, None))?;
    if root.tag_name().name() != "speak" {
        return Err(node_error(SsmlErrorKind::RootNotSpeak, root));
    }

    let mut builder = Builder::new(limits);
    let mut stack: Vec<Task<'_, '_>> = vec![Task::Visit {
        node: root,
        depth: 1,
        rate: 1.0,
    }];
    while let Some(task) = stack.pop() {
        match task {
            Task::Boundary => builder.push_break_raw(0),
            Task::Visit { node, depth, rate } => {
                visit(node, depth, rate, limits, &mut builder, &mut stack)?;
            }
        }
    }
    Ok(Document {
        pieces: builder.finish(),
    })
}

/// Work item of the iterative walk.
enum Task<'a, 'input> {
    Visit {
        node: Node<'a, 'input>,
        depth: usize,
        rate: f32,
    },
    Boundary,
}

/// Handles one node; pushes follow-up work for allowed container elements.
fn visit<'a, 'input>(
    node: Node<'a, 'input>,
    depth: usize,
    rate: f32,
    limits: &SsmlLimits,
    builder: &mut Builder<'_>,
    stack: &mut Vec<Task<'a, 'input>>,
) -> Result<(), SsmlError> {
    match node.node_type() {
        NodeType::Text => {
            builder.push_text(node.text().unwrap_or(""), rate);
            return Ok(());
        }
        NodeType::Comment => return Ok(()),
        NodeType::PI => return Err(node_error(SsmlErrorKind::ProcessingInstruction, node)),
        NodeType::Root => return Err(node_error(SsmlErrorKind::Malformed, node)),
        NodeType::Element => {}
    }

    if depth > limits.max_depth {
        return Err(node_error(SsmlErrorKind::TooDeep, node));
    }
    let tag = node.tag_name();
    match tag.namespace() {
        None => {}
        Some(ns) if ns == SSML_NAMESPACE => {}
        Some(_) => return Err(node_error(SsmlErrorKind::ForeignNamespace, node)),
    }
    let name = tag.name();
    let is_root = depth == 1;
    let element = match name {
        "speak" if is_root => Element::Speak,
        "p" | "s" if !is_root => Element::Boundary,
        "break" if !is_root => Element::Break,
        "emphasis" if !is_root => Element::Emphasis,
        "prosody" if !is_root => Element::Prosody,
        "say-as" if !is_root => Element::SayAs,
        "sub" if !is_root => Element::Sub,
        _ => return Err(node_error(SsmlErrorKind::ElementNotAllowed, node)),
    };

    let mut attrs = Attrs::default();
    for attr in node.attributes() {
        let err = |kind| SsmlError::new(kind, Some(line_of(node, attr.range().start)));
        let value = attr.value();
        match attr.namespace() {
            Some(XML_NAMESPACE) => {
                let lang_ok = matches!(element, Element::Speak | Element::Boundary);
                if attr.name() != "lang" || !lang_ok {
                    return Err(err(SsmlErrorKind::AttributeNotAllowed));
                }
                if !is_language_tag(value) {
                    return Err(err(SsmlErrorKind::InvalidAttributeValue));
                }
            }
            Some(_) => return Err(err(SsmlErrorKind::AttributeNotAllowed)),
            None => {
                let ok = match (element, attr.name()) {
                    (Element::Speak, "version") => is_version(value),
                    (Element::Break, "time") => {
                        attrs.time = parse_time_ms(value);
                        attrs.time.is_some()
                    }
                    (Element::Break, "strength") => {
                        attrs.strength = strength_ms(value);
                        attrs.strength.is_some()
                    }
                    (Element::Emphasis, "level") => {
                        matches!(value.trim(), "strong" | "moderate" | "none" | "reduced")
                    }
                    (Element::Prosody, "rate") => {
                        attrs.rate = rate_factor(value);
                        attrs.rate.is_some()
                    }
                    (Element::Prosody, "pitch") => is_pitch(value),
                    (Element::Prosody, "volume") => is_volume(value),
                    (Element::SayAs, "interpret-as") => {
                        attrs.interpret = interpret_as(value);
                        attrs.interpret.is_some()
                    }
                    (Element::SayAs, "format" | "detail") => is_simple_token(value),
                    (Element::Sub, "alias") => {
                        attrs.alias = Some(value);
                        true
                    }
                    _ => return Err(err(SsmlErrorKind::AttributeNotAllowed)),
                };
                if !ok {
                    return Err(err(SsmlErrorKind::InvalidAttributeValue));
                }
            }
        }
    }

    match element {
        Element::Speak | Element::Emphasis => push_children(node, depth, rate, stack),
        Element::Boundary => {
            builder.push_break_raw(0);
            stack.push(Task::Boundary);
            push_children(node, depth, rate, stack);
        }
        Element::Prosody => {
            let rate = match attrs.rate {
                Some(factor) => effective_rate(rate, factor, limits),
                None => rate,
            };
            push_children(node, depth, rate, stack);
        }
        Element::Break => {
            if let Some(child) = node.children().find(|c| !c.is_comment()) {
                return Err(content_error(child));
            }
            let ms = match (attrs.time, attrs.strength) {
                (Some(ms), _) => ms,
                (_, Some(ms)) => ms,
                _ => 500,
            };
            builder.push_break(ms);
        }
        Element::SayAs => {
            let Some(interpret) = attrs.interpret else {
                return Err(node_error(SsmlErrorKind::MissingAttribute, node));
            };
            let text = text_only_content(node)?;
            match interpret {
                Interpret::Spell => builder.push_text(&spell_out(&text), rate),
                Interpret::Plain => builder.push_text(&text, rate),
            }
        }
        Element::Sub => {
            let Some(alias) = attrs.alias else {
                return Err(node_error(SsmlErrorKind::MissingAttribute, node));
            };
            // Validate the content even though it is replaced.
            text_only_content(node)?;
            builder.push_text(alias, rate);
        }
    }
    Ok(())
}

/// The allowed elements, grouped by behaviour.
#[derive(Debug, Clone, Copy)]
enum Element {
    Speak,
    /// `p` or `s`.
    Boundary,
    Break,
    Emphasis,
    Prosody,
    SayAs,
    Sub,
}

/// How `say-as` renders its text.
#[derive(Debug, Clone, Copy)]
enum Interpret {
    /// Characters separated by spaces.
    Spell,
    /// Text passed through.
    Plain,
}

/// Attribute values collected while validating one element.
#[derive(Debug, Default)]
struct Attrs<'a> {
    time: Option<u32>,
    strength: Option<u32>,
    rate: Option<f64>,
    interpret: Option<Interpret>,
    alias: Option<&'a str>,
}

fn push_children<'a, 'input>(
    node: Node<'a, 'input>,
    depth: usize,
    rate: f32,
    stack: &mut Vec<Task<'a, 'input>>,
) {
    for child in node.children().rev() {
        stack.push(Task::Visit {
            node: child,
            depth: depth + 1,
            rate,
        });
    }
}

/// Concatenated text of an element that may hold only text and comments.
fn text_only_content(node: Node<'_, '_>) -> Result<String, SsmlError> {
    let mut text = String::new();
    for child in node.children() {
        match child.node_type() {
            NodeType::Text => text.push_str(child.text().unwrap_or("")),
            NodeType::Comment => {}
            _ => return Err(content_error(child)),
        }
    }
    Ok(text)
}

fn content_error(child: Node<'_, '_>) -> SsmlError {
    let kind = if child.is_pi() {
        SsmlErrorKind::ProcessingInstruction
    } else {
        SsmlErrorKind::ElementNotAllowed
    };
    node_error(kind, child)
}

/// Builds the canonical piece list.
struct Builder<'l> {
    limits: &'l SsmlLimits,
    pieces: Vec<Piece>,
    total_break_ms: u32,
}

impl<'l> Builder<'l> {
    fn new(limits: &'l SsmlLimits) -> Self {
        Self {
            limits,
            pieces: Vec::new(),
            total_break_ms: 0,
        }
    }

    /// Appends text, merging with a preceding text piece of the same rate.
    fn push_text(&mut self, text: &str, rate: f32) {
        if text.is_empty() {
            return;
        }
        if let Some(Piece::Text {
            text: last,
            rate: r,
        }) = self.pieces.last_mut()
            && *r == rate
        {
            last.push_str(text);
            return;
        }
        self.pieces.push(Piece::Text {
            text: text.to_owned(),
            rate,
        });
    }

    /// Appends a user break, clamped to the per-break and total budgets.
    fn push_break(&mut self, ms: u32) {
        let remaining = self
            .limits
            .max_total_break_ms
            .saturating_sub(self.total_break_ms);
        let ms = ms.min(self.limits.max_break_ms).min(remaining);
        self.total_break_ms += ms;
        self.push_break_raw(ms);
    }

    /// Appends a break without budget accounting; a 0 ms break (boundary) is
    /// absorbed by an adjacent break and dropped at the document start.
    fn push_break_raw(&mut self, ms: u32) {
        match self.pieces.last_mut() {
            None if ms == 0 => {}
            Some(Piece::Break { .. }) if ms == 0 => {}
            Some(Piece::Break { ms: last }) if *last == 0 => *last = ms,
            _ => self.pieces.push(Piece::Break { ms }),
        }
    }

    fn finish(mut self) -> Vec<Piece> {
        if let Some(Piece::Break { ms: 0 }) = self.pieces.last() {
            self.pieces.pop();
        }
        self.pieces
    }
}

/// Maps a roxmltree error to an [`SsmlError`] with the best available line.
fn map_xml_error(input: &str, e: &roxmltree::Error) -> SsmlError {
    use roxmltree::Error as E;
    match e {
        E::DtdDetected => {
            let line = input
                .find("<!DOCTYPE")
                .map(|at| line_at(input, at))
                .or(Some(1));
            SsmlError::new(SsmlErrorKind::DtdRefused, line)
        }
        E::NodesLimitReached => SsmlError::new(SsmlErrorKind::TooManyNodes, None),
        E::NoRootNode
        | E::UnclosedRootNode
        | E::UnexpectedEndOfStream
        | E::AttributesLimitReached
        | E::NamespacesLimitReached => SsmlError::new(SsmlErrorKind::Malformed, None),
        other => SsmlError::new(SsmlErrorKind::Malformed, Some(other.pos().row)),
    }
}

fn node_error(kind: SsmlErrorKind, node: Node<'_, '_>) -> SsmlError {
    SsmlError::new(kind, Some(line_of(node, node.range().start)))
}

fn line_of(node: Node<'_, '_>, byte: usize) -> u32 {
    node.document().text_pos_at(byte).row
}

fn line_at(input: &str, byte: usize) -> u32 {
    let newlines = input.as_bytes()[..byte]
        .iter()
        .filter(|&&b| b == b'\n')
        .count();
    u32::try_from(newlines).unwrap_or(u32::MAX - 1) + 1
}

/// XML 1.0 `Char` production (Rust strings already exclude surrogates).
fn is_xml_char(c: char) -> bool {
    matches!(c, '\t' | '\n' | '\r' | '\u{20}'..='\u{D7FF}' | '\u{E000}'..='\u{FFFD}')
        || c >= '\u{10000}'
}

/// Unsigned decimal: digits with at most one `.`, at least one digit, short.
fn parse_decimal(s: &str) -> Option<f64> {
    if s.is_empty() || s.len() > MAX_VALUE_LEN {
        return None;
    }
    let mut dots = 0;
    let mut digits = 0;
    for b in s.bytes() {
        match b {
            b'0'..=b'9' => digits += 1,
            b'.' => dots += 1,
            _ => return None,
        }
    }
    if digits == 0 || dots > 1 {
        return None;
    }
    s.parse::<f64>().ok().filter(|v| v.is_finite())
}

/// `break time`: `Nms` or `Ns` (decimals allowed), rounded to whole ms.
/// Values beyond `u32` saturate; clamping happens in the builder.
fn parse_time_ms(value: &str) -> Option<u32> {
    let v = value.trim();
    let ms = if let Some(n) = v.strip_suffix("ms") {
        parse_decimal(n)?
    } else if let Some(n) = v.strip_suffix('s') {
        parse_decimal(n)? * 1000.0
    } else {
        return None;
    };
    // Finite and non-negative; `as` saturates at u32::MAX.
    Some(ms.round() as u32)
}

/// `break strength` keyword to milliseconds.
fn strength_ms(value: &str) -> Option<u32> {
    Some(match value.trim() {
        "none" => 0,
        "x-weak" => 100,
        "weak" => 250,
        "medium" => 500,
        "strong" => 750,
        "x-strong" => 1000,
        _ => return None,
    })
}

/// `prosody rate` as a multiplier: keyword, `N%` (1–1000) or a positive
/// plain number (0.01–10). Signed values, NaN, infinities and exponents are
/// rejected.
fn rate_factor(value: &str) -> Option<f64> {
    let v = value.trim();
    let factor = match v {
        "x-slow" => 0.5,
        "slow" => 0.75,
        "medium" | "default" => 1.0,
        "fast" => 1.25,
        "x-fast" => 1.5,
        _ => {
            if let Some(pct) = v.strip_suffix('%') {
                let pct = parse_decimal(pct)?;
                if !(1.0..=1000.0).contains(&pct) {
                    return None;
                }
                pct / 100.0
            } else {
                let m = parse_decimal(v)?;
                if !(0.01..=10.0).contains(&m) {
                    return None;
                }
                m
            }
        }
    };
    Some(factor)
}

/// Enclosing rate × factor, quantized to whole percent and clamped to the
/// limits (quantization makes `to_ssml` → `parse` exact).
fn effective_rate(parent: f32, factor: f64, limits: &SsmlLimits) -> f32 {
    let pct = (f64::from(parent) * factor * 100.0).round();
    let (min, max) = (limits.min_rate, limits.max_rate);
    // Smallest / largest whole percent whose f32 value lies within the limits.
    let mut lo = (f64::from(min) * 100.0).round().max(1.0);
    if percent_rate(lo) < min {
        lo += 1.0;
    }
    let mut hi = (f64::from(max) * 100.0).round();
    if percent_rate(hi) > max {
        hi -= 1.0;
    }
    let pct = if lo <= hi { pct.clamp(lo, hi) } else { 100.0 };
    percent_rate(pct)
}

/// The canonical `f32` rate for a whole percentage.
fn percent_rate(pct: f64) -> f32 {
    (pct as f32) / 100.0
}

fn rate_to_percent(rate: f32) -> u32 {
    // Finite by construction; `as` saturates for anything odd a caller built.
    (f64::from(rate) * 100.0).round() as u32
}

/// Loose grammar shared by pitch and volume: optional sign, decimal, unit.
fn is_signed_quantity(v: &str, units: &[&str]) -> bool {
    let v = v.strip_prefix(['+', '-']).unwrap_or(v);
    units.iter().any(|u| {
        v.strip_suffix(u)
            .is_some_and(|n| parse_decimal(n).is_some())
    })
}

fn is_pitch(value: &str) -> bool {
    let v = value.trim();
    matches!(
        v,
        "x-low" | "low" | "medium" | "high" | "x-high" | "default"
    ) || is_signed_quantity(v, &["%", "Hz", "st"])
}

fn is_volume(value: &str) -> bool {
    let v = value.trim();
    matches!(
        v,
        "silent" | "x-soft" | "soft" | "medium" | "loud" | "x-loud" | "default"
    ) || is_signed_quantity(v, &["%", "dB", ""])
}

fn interpret_as(value: &str) -> Option<Interpret> {
    Some(match value.trim() {
        "characters" | "spell-out" | "verbatim" | "digits" => Interpret::Spell,
        "cardinal" | "number" | "ordinal" | "date" | "time" | "telephone" => Interpret::Plain,
        _ => return None,
    })
}

/// `say-as format` / `detail`: short ASCII token.
fn is_simple_token(value: &str) -> bool {
    !value.is_empty()
        && value.len() <= MAX_VALUE_LEN
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

fn is_version(value: &str) -> bool {
    matches!(value.trim(), "1.0" | "1.1")
}

/// BCP 47-ish: ASCII letters first, then letters, digits and `-`.
fn is_language_tag(value: &str) -> bool {
    let v = value.trim();
    !v.is_empty()
        && v.len() <= 35
        && v.as_bytes()[0].is_ascii_alphabetic()
        && v.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
}

/// Non-whitespace characters separated by single spaces; combining marks
/// and ZWJ sequences stay attached to their base character.
fn spell_out(text: &str) -> String {
    let mut out = String::with_capacity(text.len() * 2);
    let mut joined = false;
    for c in text.chars().filter(|c| !c.is_whitespace()) {
        let attach = joined
            || c == '\u{200D}'
            || unicode_normalization::char::is_combining_mark(c)
            || ('\u{FE00}'..='\u{FE0F}').contains(&c);
        if !attach && !out.is_empty() {
            out.push(' ');
        }
        out.push(c);
        joined = c == '\u{200D}';
    }
    out
}

#[cfg(test)]
mod tests {
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
        let mut s =
            String::from("<?xml version=\"1.0\"?>\n<!DOCTYPE lolz [\n<!ENTITY lol \"lol\">\n");
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
        let e =
            err(r#"<?xml-stylesheet type="text/xsl" href="http://evil/x.xsl"?><speak>hi</speak>"#);
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
            "NaN", "nan", "inf", "-inf", "-50%", "+50%", "1e309", "1e3", "0", "0%", "1001%", "11",
            "", "%", "fast!", "1.2.3", "0x10", "50 %", "½",
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
        let doc = ok(
            r#"<speak>a<prosody rate="fast">b<prosody rate="80%">c</prosody>d</prosody>e</speak>"#,
        );
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
        let doc = parse(r#"<speak><prosody rate="x-fast">a</prosody><prosody rate="x-slow">b</prosody></speak>"#, &limits)
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
            "[A-Z0-9]{1,5}"
                .prop_map(|t| format!("<say-as interpret-as=\"characters\">{t}</say-as>")),
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
}
