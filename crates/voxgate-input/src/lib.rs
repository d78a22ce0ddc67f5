//! voxgate's input checks, kept apart from the gateway so they can be fuzzed quickly and
//! reasoned about alone: everything here is pure (no network, no database, no clock).
//!
//! - [`text`]: the one text pipeline every spoken or transcribed string goes through
//!   (NFKC, then refusals, then whitespace, then the length check), plus the optional PII
//!   redaction, word list and spam checks.
//! - [`ssml`]: a strict SSML subset parser (no DTDs, an element and attribute allow-list,
//!   clamped values) that turns markup into text pieces and pauses.
//! - [`probe`]: decides whether uploaded bytes are really audio of an allowed kind and
//!   decodes them, counting duration from decoded frames.

pub mod probe;
pub mod ssml;
pub mod text;
