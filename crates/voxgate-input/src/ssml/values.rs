//! The grammars of SSML attribute values: times, strengths, rates, pitch and volume,
//! `say-as` kinds, tokens and language tags, and the `say-as` spelling.

use super::{Interpret, MAX_VALUE_LEN, SsmlLimits};

/// Unsigned decimal: digits with at most one `.`, at least one digit, short.
pub(super) fn parse_decimal(s: &str) -> Option<f64> {
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
pub(super) fn parse_time_ms(value: &str) -> Option<u32> {
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
pub(super) fn strength_ms(value: &str) -> Option<u32> {
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
pub(super) fn rate_factor(value: &str) -> Option<f64> {
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
pub(super) fn effective_rate(parent: f32, factor: f64, limits: &SsmlLimits) -> f32 {
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
pub(super) fn percent_rate(pct: f64) -> f32 {
    (pct as f32) / 100.0
}

pub(super) fn rate_to_percent(rate: f32) -> u32 {
    // Finite by construction; `as` saturates for anything odd a caller built.
    (f64::from(rate) * 100.0).round() as u32
}

/// Loose grammar shared by pitch and volume: optional sign, decimal, unit.
pub(super) fn is_signed_quantity(v: &str, units: &[&str]) -> bool {
    let v = v.strip_prefix(['+', '-']).unwrap_or(v);
    units.iter().any(|u| {
        v.strip_suffix(u)
            .is_some_and(|n| parse_decimal(n).is_some())
    })
}

pub(super) fn is_pitch(value: &str) -> bool {
    let v = value.trim();
    matches!(
        v,
        "x-low" | "low" | "medium" | "high" | "x-high" | "default"
    ) || is_signed_quantity(v, &["%", "Hz", "st"])
}

pub(super) fn is_volume(value: &str) -> bool {
    let v = value.trim();
    matches!(
        v,
        "silent" | "x-soft" | "soft" | "medium" | "loud" | "x-loud" | "default"
    ) || is_signed_quantity(v, &["%", "dB", ""])
}

pub(super) fn interpret_as(value: &str) -> Option<Interpret> {
    Some(match value.trim() {
        "characters" | "spell-out" | "verbatim" | "digits" => Interpret::Spell,
        "cardinal" | "number" | "ordinal" | "date" | "time" | "telephone" => Interpret::Plain,
        _ => return None,
    })
}

/// `say-as format` / `detail`: short ASCII token.
pub(super) fn is_simple_token(value: &str) -> bool {
    !value.is_empty()
        && value.len() <= MAX_VALUE_LEN
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

pub(super) fn is_version(value: &str) -> bool {
    matches!(value.trim(), "1.0" | "1.1")
}

/// BCP 47-ish: ASCII letters first, then letters, digits and `-`.
pub(super) fn is_language_tag(value: &str) -> bool {
    let v = value.trim();
    !v.is_empty()
        && v.len() <= 35
        && v.as_bytes()[0].is_ascii_alphabetic()
        && v.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
}

/// Non-whitespace characters separated by single spaces; combining marks
/// and ZWJ sequences stay attached to their base character.
pub(super) fn spell_out(text: &str) -> String {
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
