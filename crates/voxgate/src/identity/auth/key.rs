//! API keys: `vg_<keyid>_<secret>_<checksum>`, like GitHub's tokens.
//!
//! - `keyid`: 120 random bits, base32 (24 characters), public: shown in lists and logs.
//! - `secret`: 256 bits from the OS CSPRNG, base32 (52 characters), shown once.
//! - `checksum`: CRC32 of everything before it, base32 (7 characters), so leaked keys are
//!   machine-findable and typos are rejected before any lookup.
//!
//! Stored: `HMAC-SHA-256(pepper, secret)` with a version number; the pepper never touches
//! the database. See SECURITY.md for why a fast keyed hash is right here.

use hmac::{Hmac, KeyInit as _, Mac as _};
use secrecy::{ExposeSecret as _, SecretString};
use sha2::Sha256;

/// Prefix of every key.
pub const PREFIX: &str = "vg_";
/// Prefix of an ephemeral client secret (the same shape: id, secret, checksum). It opens
/// realtime sessions only, and only while the key that minted it works.
pub const EPHEMERAL_PREFIX: &str = "ek_";
/// The digest scheme in use: HMAC-SHA-256 keyed with the pepper.
pub const DIGEST_VERSION: i16 = 1;

const KEYID_BYTES: usize = 15;
const SECRET_BYTES: usize = 32;
const KEYID_LEN: usize = 24;
const SECRET_LEN: usize = 52;
const CHECKSUM_LEN: usize = 7;
const ALPHABET: &[u8; 32] = b"abcdefghijklmnopqrstuvwxyz234567";

/// A key's parts after format and checksum checks. The secret stays secret.
pub struct ParsedKey {
    pub keyid: String,
    secret: SecretString,
}

impl std::fmt::Debug for ParsedKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ParsedKey")
            .field("keyid", &self.keyid)
            .finish_non_exhaustive()
    }
}

/// A freshly generated key: the full text (shown once) and what to store.
pub struct NewKey {
    pub keyid: String,
    /// The complete key, to show the user once.
    pub full: SecretString,
    /// HMAC-SHA-256(pepper, secret).
    pub digest: Vec<u8>,
}

impl std::fmt::Debug for NewKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NewKey")
            .field("keyid", &self.keyid)
            .finish_non_exhaustive()
    }
}

/// Why a presented key was refused before any lookup.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum KeyFormatError {
    #[error("not a voxgate key")]
    Malformed,
    #[error("checksum mismatch")]
    BadChecksum,
}

/// The secret HMAC key that turns key secrets into stored digests.
pub struct Pepper(SecretString);

impl std::fmt::Debug for Pepper {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Pepper(…)")
    }
}

impl Pepper {
    /// A pepper must carry at least 32 bytes.
    pub fn new(secret: SecretString) -> Option<Self> {
        (secret.expose_secret().len() >= 32).then_some(Self(secret))
    }

    /// HMAC-SHA-256(pepper, secret).
    pub fn digest(&self, secret: &str) -> Vec<u8> {
        self.mac(secret).finalize().into_bytes().to_vec()
    }

    /// Constant-time comparison of HMAC(pepper, secret) with `expected`.
    pub fn verify(&self, secret: &str, expected: &[u8]) -> bool {
        self.mac(secret).verify_slice(expected).is_ok()
    }

    fn mac(&self, secret: &str) -> Hmac<Sha256> {
        let mut mac = <Hmac<Sha256>>::new_from_slice(self.0.expose_secret().as_bytes())
            .unwrap_or_else(|_| unreachable!("HMAC accepts keys of any length"));
        mac.update(secret.as_bytes());
        mac
    }
}

impl ParsedKey {
    pub fn secret(&self) -> &str {
        self.secret.expose_secret()
    }
}

/// Generates a key.
pub fn generate(pepper: &Pepper) -> NewKey {
    generate_prefixed(PREFIX, pepper)
}

/// Generates an ephemeral client secret (`ek_…`).
pub fn generate_ephemeral(pepper: &Pepper) -> NewKey {
    generate_prefixed(EPHEMERAL_PREFIX, pepper)
}

fn generate_prefixed(prefix: &str, pepper: &Pepper) -> NewKey {
    let keyid = base32(&crate::util::random_bytes::<KEYID_BYTES>());
    let secret = base32(&crate::util::random_bytes::<SECRET_BYTES>());
    let body = format!("{prefix}{keyid}_{secret}");
    let full = format!("{body}_{}", checksum(&body));
    NewKey {
        digest: pepper.digest(&secret),
        keyid,
        full: SecretString::from(full),
    }
}

/// A well-formed key made of `keyid` and `secret` (lower-case base32 of the right lengths),
/// with its checksum: for measurements and tests that need a key the store does not hold.
pub fn compose(keyid: &str, secret: &str) -> String {
    let body = format!("{PREFIX}{keyid}_{secret}");
    format!("{body}_{}", checksum(&body))
}

/// Checks the format and checksum; no lookup happens before this passes.
pub fn parse(text: &str) -> Result<ParsedKey, KeyFormatError> {
    parse_prefixed(PREFIX, text)
}

/// [`parse`] for an ephemeral client secret (`ek_…`).
pub fn parse_ephemeral(text: &str) -> Result<ParsedKey, KeyFormatError> {
    parse_prefixed(EPHEMERAL_PREFIX, text)
}

fn parse_prefixed(prefix: &str, text: &str) -> Result<ParsedKey, KeyFormatError> {
    let rest = text.strip_prefix(prefix).ok_or(KeyFormatError::Malformed)?;
    let mut parts = rest.split('_');
    let (Some(keyid), Some(secret), Some(check), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(KeyFormatError::Malformed);
    };
    let valid = |s: &str, len: usize| s.len() == len && s.bytes().all(|b| ALPHABET.contains(&b));
    if !valid(keyid, KEYID_LEN) || !valid(secret, SECRET_LEN) || !valid(check, CHECKSUM_LEN) {
        return Err(KeyFormatError::Malformed);
    }
    let body = &text[..text.len() - CHECKSUM_LEN - 1];
    if checksum(body) != check {
        return Err(KeyFormatError::BadChecksum);
    }
    Ok(ParsedKey {
        keyid: keyid.to_owned(),
        secret: SecretString::from(secret.to_owned()),
    })
}

/// Whether `text` contains something shaped like a voxgate key or client secret (for
/// refusing credentials sent in query strings, cookies or bodies).
pub fn looks_like_key(text: &str) -> bool {
    [PREFIX, EPHEMERAL_PREFIX].iter().any(|prefix| {
        text.match_indices(prefix).any(|(i, _)| {
            let tail = &text[i + prefix.len()..];
            tail.len() >= KEYID_LEN && tail.bytes().take(KEYID_LEN).all(|b| ALPHABET.contains(&b))
        })
    })
}

fn checksum(body: &str) -> String {
    let crc = crc32fast::hash(body.as_bytes());
    let mut out = base32(&crc.to_be_bytes());
    out.truncate(CHECKSUM_LEN);
    out
}

/// RFC 4648 base32, lower case, no padding.
fn base32(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() * 8 / 5 + 1);
    let (mut buffer, mut bits) = (0u32, 0u32);
    for &byte in bytes {
        buffer = (buffer << 8) | u32::from(byte);
        bits += 8;
        while bits >= 5 {
            bits -= 5;
            out.push(char::from(ALPHABET[((buffer >> bits) & 31) as usize]));
        }
    }
    if bits > 0 {
        out.push(char::from(ALPHABET[((buffer << (5 - bits)) & 31) as usize]));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn pepper() -> Pepper {
        Pepper::new(SecretString::from("p".repeat(32))).expect("pepper")
    }

    #[test]
    fn client_secrets_are_not_keys_and_keys_are_not_client_secrets() {
        let pepper = pepper();
        let secret = generate_ephemeral(&pepper);
        let text = secret.full.expose_secret();
        assert!(text.starts_with(EPHEMERAL_PREFIX));
        let parsed = parse_ephemeral(text).expect("parses");
        assert_eq!(parsed.keyid, secret.keyid);
        assert!(pepper.verify(parsed.secret(), &secret.digest));
        assert_eq!(parse(text).unwrap_err(), KeyFormatError::Malformed);
        let key = generate(&pepper);
        let key = key.full.expose_secret();
        assert_eq!(parse_ephemeral(key).unwrap_err(), KeyFormatError::Malformed);
        assert!(looks_like_key(&format!("client_secret={text}")));
    }

    #[test]
    fn generated_keys_parse_and_verify() {
        let pepper = pepper();
        let key = generate(&pepper);
        let full = key.full.expose_secret();
        assert_eq!(
            full.len(),
            3 + KEYID_LEN + 1 + SECRET_LEN + 1 + CHECKSUM_LEN
        );
        let parsed = parse(full).expect("parses");
        assert_eq!(parsed.keyid, key.keyid);
        assert!(pepper.verify(parsed.secret(), &key.digest));
        assert_eq!(key.digest, pepper.digest(parsed.secret()));
        assert!(looks_like_key(&format!("token={full}")));
    }

    #[test]
    fn two_keys_share_nothing() {
        let pepper = pepper();
        let (a, b) = (generate(&pepper), generate(&pepper));
        assert_ne!(a.keyid, b.keyid);
        assert_ne!(a.digest, b.digest);
    }

    #[test]
    fn typos_fail_the_checksum_before_any_lookup() {
        let key = generate(&pepper());
        let full = key.full.expose_secret().to_owned();
        let mut chars: Vec<char> = full.chars().collect();
        let i = 3 + KEYID_LEN + 5;
        chars[i] = if chars[i] == 'a' { 'b' } else { 'a' };
        let typo: String = chars.into_iter().collect();
        assert_eq!(parse(&typo).unwrap_err(), KeyFormatError::BadChecksum);
        for bad in [
            "",
            "vg_",
            "sk-abc",
            &full[..full.len() - 1],
            &format!("{full}_x"),
            &full.to_uppercase(),
        ] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_different_pepper_gives_a_different_digest() {
        let key = generate(&pepper());
        let other = Pepper::new(SecretString::from("q".repeat(32))).expect("pepper");
        let parsed = parse(key.full.expose_secret()).expect("parses");
        assert!(!other.verify(parsed.secret(), &key.digest));
        assert!(Pepper::new(SecretString::from("short".to_owned())).is_none());
    }

    #[test]
    fn base32_matches_rfc4648() {
        assert_eq!(base32(b"foobar"), "mzxw6ytboi");
        assert_eq!(base32(b"f"), "my");
    }

    proptest! {
        #[test]
        fn arbitrary_text_never_panics(text in "\\PC{0,120}") {
            let _ = parse(&text);
            let _ = looks_like_key(&text);
        }
    }
}
