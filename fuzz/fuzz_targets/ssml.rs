//! Fuzzes the SSML parser: arbitrary UTF-8 into `parse`; every accepted document must
//! survive a round trip through its canonical form and keep its rates within the limits.

#![no_main]

use libfuzzer_sys::fuzz_target;
use voxgate_input::ssml::{self, Piece, SsmlLimits};

fuzz_target!(|data: &[u8]| {
    let Ok(input) = std::str::from_utf8(data) else {
        return;
    };
    let limits = SsmlLimits::default();
    let Ok(doc) = ssml::parse(input, &limits) else {
        return;
    };

    for piece in &doc.pieces {
        match piece {
            Piece::Text { text, rate } => {
                assert!(!text.is_empty(), "empty text piece");
                assert!(
                    *rate >= limits.min_rate && *rate <= limits.max_rate,
                    "rate {rate} outside [{}, {}]",
                    limits.min_rate,
                    limits.max_rate
                );
            }
            Piece::Break { ms } => {
                assert!(
                    *ms <= limits.max_break_ms,
                    "break of {ms} ms over the limit"
                );
            }
        }
    }
    let total_ms: u64 = doc
        .pieces
        .iter()
        .map(|p| match p {
            Piece::Break { ms } => u64::from(*ms),
            Piece::Text { .. } => 0,
        })
        .sum();
    assert!(
        total_ms <= u64::from(limits.max_total_break_ms),
        "total break {total_ms} ms over the limit"
    );

    // Round trip. Escaping can make the canonical form longer than the input, so the
    // re-parse lifts only the byte limit; every other limit stays as it was.
    let canonical = doc.to_ssml();
    let relaxed = SsmlLimits {
        max_bytes: usize::MAX,
        ..limits
    };
    assert_eq!(
        ssml::parse(&canonical, &relaxed),
        Ok(doc.clone()),
        "round trip changed the document"
    );
    let _ = doc.plain_text();
});
