//! Fuzzes the text pipeline: `normalize_bytes` under every zero-width mode with the spam
//! check on, checking the documented output invariants, plus `redact_pii` and
//! `check_spam` on arbitrary (lossily decoded) text.

#![no_main]

use libfuzzer_sys::fuzz_target;
use voxgate_input::text::{self, TextPolicy, ZeroWidth};

const MODES: [ZeroWidth; 3] = [ZeroWidth::Reject, ZeroWidth::Strip, ZeroWidth::Allow];

fuzz_target!(|data: &[u8]| {
    for zero_width in MODES {
        let policy = TextPolicy {
            zero_width,
            spam: true,
            ..TextPolicy::default()
        };
        let Ok(out) = text::normalize_bytes(data, &policy) else {
            continue;
        };
        // A fixed point: normalizing the output again returns it unchanged.
        assert_eq!(
            text::normalize(&out, &policy),
            Ok(out.clone()),
            "normalize is not idempotent under {zero_width:?}"
        );
        assert!(
            out.chars().count() <= policy.max_chars,
            "output longer than max_chars under {zero_width:?}"
        );
        assert!(!out.is_empty(), "empty output under {zero_width:?}");
        assert!(
            !out.chars()
                .any(|c| c.is_control() && c != '\n' && c != '\t'),
            "control character in the output under {zero_width:?}"
        );
        assert_eq!(out.trim(), out, "output not trimmed under {zero_width:?}");
    }

    let lossy = String::from_utf8_lossy(data);
    let _ = text::redact_pii(&lossy);
    let _ = text::check_spam(&lossy);
});
