//! G.711 (ITU-T): 8-bit μ-law (`audio/pcmu`) and A-law (`audio/pcma`) samples at 8 kHz, as
//! telephony and OpenAI's realtime API send them, expanded to 16-bit linear PCM.

/// One μ-law byte as a linear sample (range ±32,124).
pub fn ulaw(byte: u8) -> i16 {
    let u = !byte;
    let exponent = (u >> 4) & 0x07;
    let mantissa = i32::from(u & 0x0F);
    let magnitude = (((mantissa << 3) + 0x84) << exponent) - 0x84;
    // At most (0xF << 3 + 0x84) << 7 − 0x84 = 32,124: always an i16.
    let sample = if u & 0x80 != 0 { -magnitude } else { magnitude };
    sample as i16
}

/// One A-law byte as a linear sample (range ±32,256).
pub fn alaw(byte: u8) -> i16 {
    let a = byte ^ 0x55;
    let exponent = (a >> 4) & 0x07;
    let mantissa = i32::from(a & 0x0F);
    let magnitude = match exponent {
        0 => (mantissa << 4) + 8,
        e => ((mantissa << 4) + 0x108) << (e - 1),
    };
    let sample = if a & 0x80 != 0 { magnitude } else { -magnitude };
    sample as i16
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_codes_expand_to_the_standard_values() {
        // Silence, and the extremes of each law (ITU-T G.711 tables).
        assert_eq!(ulaw(0xFF), 0);
        assert_eq!(ulaw(0x7F), 0);
        assert_eq!(ulaw(0x80), 32_124);
        assert_eq!(ulaw(0x00), -32_124);
        assert_eq!(alaw(0xD5), 8);
        assert_eq!(alaw(0x55), -8);
        assert_eq!(alaw(0xAA), 32_256);
        assert_eq!(alaw(0x2A), -32_256);
    }

    #[test]
    fn each_half_of_the_codes_is_monotonic_and_symmetric() {
        // μ-law: codes 0x80..=0xFF are positive, falling toward 0xFF; 0x00..=0x7F mirror them.
        for code in 0x80u8..0xFF {
            assert!(ulaw(code) > ulaw(code + 1), "{code:#x}");
            assert_eq!(ulaw(code), -ulaw(code & 0x7F), "{code:#x}");
        }
        // A-law: the positive half (bit 7 set after the 0x55 mask) mirrors the negative one.
        for code in 0u8..=0x7F {
            assert_eq!(alaw(code | 0x80), -alaw(code), "{code:#x}");
        }
        let mut positive: Vec<i16> = (0x80u8..=0xFF).map(alaw).collect();
        positive.sort_unstable();
        positive.dedup();
        assert_eq!(positive.len(), 128, "every positive A-law code is distinct");
    }
}
