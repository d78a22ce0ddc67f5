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

mod values;
use values::*;

#[cfg(test)]
mod tests;

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
