//! Signed checkpoints of the audit log: a C2SP tlog-checkpoint body (c2sp.org/tlog-checkpoint)
//! carried in a C2SP signed note (c2sp.org/signed-note) with Ed25519 signatures.
//!
//! - Body (tlog-checkpoint, "Note text"): origin, tree size in decimal, root hash in standard
//!   base64, one per line. We write no extension lines and [`Checkpoint::parse`] refuses them.
//!   Our origins double as the key name (tlog-checkpoint, "Signatures": the key name SHOULD
//!   match the origin), so they are held to the key-name rules; a foreign log whose origin
//!   has a space is refused, which is fine for a module that reads only our own log.
//! - Note (signed-note, "Format"): the body, a blank line, then lines `— <key name>
//!   <base64(key id ‖ signature)>`. [`open`] splits at the last blank line, caps the size
//!   and the number of signatures, skips other keys' lines, rejects the note if a line of the
//!   expected key fails to verify, and requires at least one that verifies ("Signatures").
//! - Key id (signed-note, "Ed25519 signatures"): SHA-256(name ‖ 0x0A ‖ 0x01 ‖ public
//!   key)[..4]. Verifier keys `<name>+<hex key id>+<base64(0x01 ‖ public key)>` are the
//!   format of golang.org/x/mod/sumdb/note, which the C2SP tools share.
//!
//! Parsing is strict: every value has one canonical spelling (decimal without leading zeros,
//! padded base64 without stray bits, lowercase hex), and control characters are refused
//! (C0 except newline, as the spec says, and also DEL and C1). Nothing here does I/O.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use ed25519_dalek::{Signature, Signer as _, SigningKey, VerifyingKey};
use sha2::{Digest as _, Sha256};

use super::merkle::Hash;
use crate::util::hex;

/// Longest note [`open`] reads.
pub const MAX_NOTE_BYTES: usize = 1 << 20;
/// Most signature lines [`open`] reads.
pub const MAX_SIGNATURES: usize = 100;
/// A signature line starts with U+2014 EM DASH and a space.
const SIG_PREFIX: &str = "\u{2014} ";
/// The signature type byte of Ed25519 in key ids and verifier keys.
const ALG_ED25519: u8 = 0x01;

/// Why a note or checkpoint is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum NoteError {
    /// Not a well-formed signed note (the reason names the rule broken).
    #[error("malformed note: {0}")]
    Malformed(&'static str),
    /// Well formed, but no signature line by the expected key.
    #[error("the note carries no signature by the expected key")]
    NotSigned,
    /// A signature line names the expected key but does not verify: forged or tampered.
    #[error("a signature by the expected key does not verify")]
    BadSignature,
    /// Signed, but the body is not a checkpoint (or, when signing, the origin is invalid).
    #[error("malformed checkpoint: {0}")]
    Checkpoint(&'static str),
}

/// Why a key name or verifier key is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    /// Key names are non-empty, without whitespace, control characters or '+'.
    #[error("invalid key name")]
    Name,
    /// Not `<name>+<8 lowercase hex>+<base64(0x01 ‖ 32-byte key)>` with a matching key id.
    #[error("invalid verifier key")]
    VerifierKey,
}

/// A log checkpoint: the tree of `size` leaves with root `root`, in the log named `origin`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    /// The log's name, by convention a schema-less URL such as `example.com/audit`.
    pub origin: String,
    /// The number of leaves.
    pub size: u64,
    /// The Merkle Tree Hash of those leaves.
    pub root: Hash,
}

impl Checkpoint {
    /// The note text: `"<origin>\n<size>\n<base64 root>\n"` (tlog-checkpoint, "Note text").
    pub fn body(&self) -> String {
        format!(
            "{}\n{}\n{}\n",
            self.origin,
            self.size,
            STANDARD.encode(self.root)
        )
    }

    /// Parses exactly what [`Checkpoint::body`] writes for a valid origin, and nothing else.
    pub fn parse(body: &str) -> Result<Self, NoteError> {
        let lines = body
            .strip_suffix('\n')
            .ok_or(NoteError::Checkpoint("no final newline"))?;
        let mut lines = lines.split('\n');
        let (Some(origin), Some(size), Some(root), None) =
            (lines.next(), lines.next(), lines.next(), lines.next())
        else {
            return Err(NoteError::Checkpoint("not exactly three lines"));
        };
        check_origin(origin)?;
        Ok(Self {
            origin: origin.to_owned(),
            size: parse_size(size)?,
            root: decode_canonical(root)
                .and_then(|b| b.try_into().ok())
                .ok_or(NoteError::Checkpoint("root is not base64 of 32 bytes"))?,
        })
    }
}

/// The origin must be non-empty; we also hold it to the key-name rules (see the module doc).
fn check_origin(origin: &str) -> Result<(), NoteError> {
    if is_valid_name(origin) {
        Ok(())
    } else {
        Err(NoteError::Checkpoint("invalid origin"))
    }
}

/// Canonical decimal only: digits, no sign, no leading zero (except "0"), fits in u64.
fn parse_size(size: &str) -> Result<u64, NoteError> {
    let canonical = !size.is_empty()
        && size.bytes().all(|b| b.is_ascii_digit())
        && (size == "0" || !size.starts_with('0'));
    let bad = NoteError::Checkpoint("size is not a canonical decimal");
    if !canonical {
        return Err(bad);
    }
    size.parse().map_err(|_| bad)
}

/// Standard padded base64 that re-encodes to the same text (no stray bits, no whitespace).
fn decode_canonical(text: &str) -> Option<Vec<u8>> {
    let bytes = STANDARD.decode(text).ok()?;
    (STANDARD.encode(&bytes) == text).then_some(bytes)
}

/// A note key name (signed-note, "Format"): non-empty, no Unicode whitespace, no '+';
/// we also refuse control characters, which a note may not contain anyway.
fn is_valid_name(name: &str) -> bool {
    !name.is_empty()
        && !name
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || c == '+')
}

/// The key id of an Ed25519 key: SHA-256(name ‖ 0x0A ‖ 0x01 ‖ key)[..4].
fn key_id(name: &str, key: &VerifyingKey) -> [u8; 4] {
    let digest = Sha256::new()
        .chain_update(name)
        .chain_update([b'\n', ALG_ED25519])
        .chain_update(key.as_bytes())
        .finalize();
    [digest[0], digest[1], digest[2], digest[3]]
}

/// Exactly eight lowercase hex digits.
fn parse_key_id(text: &str) -> Option<[u8; 4]> {
    let lower_hex = text.len() == 8
        && text
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    if !lower_hex {
        return None;
    }
    u32::from_str_radix(text, 16).ok().map(u32::to_be_bytes)
}

/// Signs checkpoints under one named Ed25519 key.
pub struct Signer {
    name: String,
    key: SigningKey,
    key_id: [u8; 4],
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Signer({}+{}, ..)", self.name, hex(&self.key_id))
    }
}

impl Signer {
    /// The signer named `name` with the Ed25519 key whose 32-byte seed is `seed`.
    pub fn from_seed(name: &str, seed: [u8; 32]) -> Result<Self, KeyError> {
        if !is_valid_name(name) {
            return Err(KeyError::Name);
        }
        let mut seed = seed;
        let key = SigningKey::from_bytes(&seed);
        seed.fill(0);
        let key_id = key_id(name, &key.verifying_key());
        Ok(Self {
            name: name.to_owned(),
            key,
            key_id,
        })
    }

    /// The key name that signature lines carry.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The verifier key string `<name>+<hex key id>+<base64(0x01 ‖ public key)>`.
    pub fn verifier_key(&self) -> String {
        self.verifier().to_string()
    }

    /// The verifier of this signer's notes.
    pub fn verifier(&self) -> Verifier {
        Verifier {
            name: self.name.clone(),
            key_id: self.key_id,
            key: self.key.verifying_key(),
        }
    }

    /// The signed note of `checkpoint`: its body, a blank line and one signature line.
    /// Refuses an origin that [`open`] would refuse.
    pub fn sign(&self, checkpoint: &Checkpoint) -> Result<String, NoteError> {
        check_origin(&checkpoint.origin)?;
        Ok(self.sign_text(&checkpoint.body()))
    }

    /// Signs note text that the caller has checked (ends in '\n', no control characters).
    fn sign_text(&self, text: &str) -> String {
        let signature = self.key.sign(text.as_bytes());
        let mut blob = Vec::with_capacity(4 + 64);
        blob.extend_from_slice(&self.key_id);
        blob.extend_from_slice(&signature.to_bytes());
        format!(
            "{text}\n{SIG_PREFIX}{} {}\n",
            self.name,
            STANDARD.encode(blob)
        )
    }
}

/// Checks notes signed by one named Ed25519 key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verifier {
    name: String,
    key_id: [u8; 4],
    key: VerifyingKey,
}

impl Verifier {
    /// The key name signature lines must carry.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The four-byte key id signature lines must carry.
    pub fn key_id(&self) -> [u8; 4] {
        self.key_id
    }
}

impl std::str::FromStr for Verifier {
    type Err = KeyError;

    /// Parses `<name>+<hex key id>+<base64(0x01 ‖ public key)>`; the key id must be the one
    /// computed from the name and key, and the key must not be of small order.
    fn from_str(vkey: &str) -> Result<Self, KeyError> {
        // Names hold no '+', so the first two separate the fields; base64 may hold more.
        let (name, rest) = vkey.split_once('+').ok_or(KeyError::VerifierKey)?;
        let (id, key) = rest.split_once('+').ok_or(KeyError::VerifierKey)?;
        if !is_valid_name(name) {
            return Err(KeyError::Name);
        }
        let key_id = parse_key_id(id).ok_or(KeyError::VerifierKey)?;
        let key = decode_canonical(key)
            .and_then(|bytes| match bytes.split_first() {
                Some((&ALG_ED25519, key)) => <[u8; 32]>::try_from(key).ok(),
                _ => None,
            })
            .and_then(|key| VerifyingKey::from_bytes(&key).ok())
            .filter(|key| !key.is_weak())
            .ok_or(KeyError::VerifierKey)?;
        if key_id != self::key_id(name, &key) {
            return Err(KeyError::VerifierKey);
        }
        Ok(Self {
            name: name.to_owned(),
            key_id,
            key,
        })
    }
}

impl std::fmt::Display for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut key = vec![ALG_ED25519];
        key.extend_from_slice(self.key.as_bytes());
        write!(
            f,
            "{}+{}+{}",
            self.name,
            hex(&self.key_id),
            STANDARD.encode(key)
        )
    }
}

/// Opens a signed checkpoint: checks the note, requires a valid signature by `verifier`,
/// then parses the body. The caller still checks that `origin` is the log it expects.
pub fn open(note: &str, verifier: &Verifier) -> Result<Checkpoint, NoteError> {
    Checkpoint::parse(open_text(note, verifier)?)
}

/// The signed-note rules: at most [`MAX_NOTE_BYTES`]; no control character but '\n'; text
/// and signatures split at the last blank line; every signature line `— <name> <base64>`
/// with a valid name and at least five bytes (key id and signature); at most
/// [`MAX_SIGNATURES`] of them. Lines of other keys (another name, or the same name with
/// another key id) are skipped; every line of `verifier`'s key must verify, and there must
/// be at least one.
fn open_text<'a>(note: &'a str, verifier: &Verifier) -> Result<&'a str, NoteError> {
    if note.len() > MAX_NOTE_BYTES {
        return Err(NoteError::Malformed("note too large"));
    }
    if note.chars().any(|c| c.is_control() && c != '\n') {
        return Err(NoteError::Malformed("control character"));
    }
    let split = note
        .rfind("\n\n")
        .ok_or(NoteError::Malformed("no blank line before the signatures"))?;
    let (text, signatures) = (&note[..=split], &note[split + 2..]);
    let signatures = signatures
        .strip_suffix('\n')
        .ok_or(NoteError::Malformed("signatures do not end in a newline"))?;
    let mut verified = false;
    for (count, line) in signatures.split('\n').enumerate() {
        if count == MAX_SIGNATURES {
            return Err(NoteError::Malformed("too many signatures"));
        }
        let (name, blob) = line
            .strip_prefix(SIG_PREFIX)
            .and_then(|rest| rest.split_once(' '))
            .ok_or(NoteError::Malformed("not a signature line"))?;
        let blob = decode_canonical(blob)
            .filter(|blob| blob.len() >= 5 && is_valid_name(name))
            .ok_or(NoteError::Malformed("not a signature line"))?;
        if name != verifier.name || blob[..4] != verifier.key_id {
            continue;
        }
        let signature = <[u8; 64]>::try_from(&blob[4..]).map_err(|_| NoteError::BadSignature)?;
        verifier
            .key
            .verify_strict(text.as_bytes(), &Signature::from_bytes(&signature))
            .map_err(|_| NoteError::BadSignature)?;
        verified = true;
    }
    if verified {
        Ok(text)
    } else {
        Err(NoteError::NotSigned)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ORIGIN: &str = "voxgate.example/audit";

    fn signer(seed: u8) -> Signer {
        Signer::from_seed(ORIGIN, [seed; 32]).expect("valid name")
    }

    fn checkpoint() -> Checkpoint {
        Checkpoint {
            origin: ORIGIN.to_owned(),
            size: 42,
            root: super::super::merkle::leaf_hash(b"root"),
        }
    }

    #[test]
    fn body_has_the_checkpoint_format() {
        let c = Checkpoint {
            origin: "example.com/log".to_owned(),
            size: 7,
            root: [0xab; 32],
        };
        let body = "example.com/log\n7\nq6urq6urq6urq6urq6urq6urq6urq6urq6urq6urq6s=\n";
        assert_eq!(c.body(), body);
        assert_eq!(Checkpoint::parse(body), Ok(c));
    }

    #[test]
    fn round_trips() {
        let s = signer(1);
        let c = checkpoint();
        let note = s.sign(&c).expect("valid origin");
        assert!(note.starts_with(&format!("{}\n\u{2014} {ORIGIN} ", c.body())));
        assert_eq!(open(&note, &s.verifier()), Ok(c.clone()));
        let verifier: Verifier = s.verifier_key().parse().expect("own key");
        assert_eq!(verifier, s.verifier());
        assert_eq!(open(&note, &verifier), Ok(c));
    }

    #[test]
    fn another_key_is_not_enough() {
        let note = signer(2).sign(&checkpoint()).expect("sign");
        // Same name, another key: another key id, so the line is skipped.
        assert_eq!(
            open(&note, &signer(1).verifier()),
            Err(NoteError::NotSigned)
        );
        let other = Signer::from_seed("other.example", [2; 32]).expect("name");
        let note = other.sign(&checkpoint()).expect("sign");
        assert_eq!(
            open(&note, &signer(2).verifier()),
            Err(NoteError::NotSigned)
        );
    }

    #[test]
    fn a_forged_signature_with_our_key_id_is_rejected() {
        let (ours, theirs) = (signer(1), signer(2));
        let note = theirs.sign(&checkpoint()).expect("sign");
        let (body, line) = note.rsplit_once("\n\n").expect("split");
        let blob = STANDARD
            .decode(line.rsplit_once(' ').expect("line").1.trim_end())
            .expect("b64");
        let mut forged = ours.key_id.to_vec();
        forged.extend_from_slice(&blob[4..]);
        let note = format!("{body}\n\n\u{2014} {ORIGIN} {}\n", STANDARD.encode(forged));
        assert_eq!(open(&note, &ours.verifier()), Err(NoteError::BadSignature));
    }

    #[test]
    fn every_one_byte_edit_of_the_body_is_rejected() {
        let s = signer(3);
        let note = s.sign(&checkpoint()).expect("sign");
        let body_len = checkpoint().body().len();
        for i in 0..body_len {
            let mut bytes = note.clone().into_bytes();
            bytes[i] = if bytes[i] == b'A' { b'B' } else { b'A' };
            let edited = String::from_utf8(bytes).expect("ascii edit");
            assert!(open(&edited, &s.verifier()).is_err(), "byte {i}");
        }
    }

    #[test]
    fn other_signers_lines_are_skipped() {
        let s = signer(4);
        let note = s.sign(&checkpoint()).expect("sign");
        let witness = "\u{2014} witness.example AAAAAAAAAAAAAAA=\n";
        // Same name, unknown key id: skipped, like any other key's line.
        let stranger = format!("\u{2014} {ORIGIN} {}\n", STANDARD.encode([9u8; 68]));
        let with_others = format!("{note}{witness}{stranger}");
        assert_eq!(open(&with_others, &s.verifier()), Ok(checkpoint()));
        let (body, _) = note.rsplit_once("\n\n").expect("split");
        let only_others = format!("{body}\n\n{witness}{stranger}");
        assert_eq!(open(&only_others, &s.verifier()), Err(NoteError::NotSigned));
    }

    #[test]
    fn malformed_notes_are_rejected() {
        let s = signer(5);
        let note = s.sign(&checkpoint()).expect("sign");
        let (body, line) = note.rsplit_once("\n\n").expect("split");
        let blob = line.rsplit_once(' ').expect("line").1.trim_end();
        let cases = [
            String::new(),
            body.to_owned(),
            note.trim_end().to_owned(),
            note.replacen('\u{2014}', "-", 1),
            note.replacen('\u{2014}', "\u{2014}\u{2014}", 1),
            note.replacen(&format!(" {blob}"), "", 1),
            note.replacen(&format!(" {blob}"), " ", 1),
            note.replacen(blob, &blob[..blob.len() - 1], 1),
            note.replacen(blob, "AAAA", 1),
            format!("{body}\n\n\u{2014} voxgate+audit {blob}\n"),
            format!("{note}\n"),
            format!("{note}\u{2014} x\n"),
            note.replacen('\n', "\r\n", 1),
            note.replacen("\n\n", "\n\t\n", 1),
            format!("{}{note}", " ".repeat(MAX_NOTE_BYTES)),
            format!("{note}{}", "\u{2014} w AAAAAAA=\n".repeat(MAX_SIGNATURES)),
        ];
        for (i, bad) in cases.iter().enumerate() {
            assert!(
                matches!(open(bad, &s.verifier()), Err(NoteError::Malformed(_))),
                "case {i}: {:?}",
                open(bad, &s.verifier())
            );
        }
        let ninety_nine = "\u{2014} w AAAAAAA=\n".repeat(MAX_SIGNATURES - 1);
        assert!(open(&format!("{note}{ninety_nine}"), &s.verifier()).is_ok());
    }

    #[test]
    fn signed_bodies_that_are_not_checkpoints_are_rejected() {
        let s = signer(6);
        let root = STANDARD.encode([7u8; 32]);
        let short_root = STANDARD.encode([7u8; 31]);
        let bodies = [
            format!("{ORIGIN}\n5\n{root}\nextension line\n"),
            format!("{ORIGIN}\n5\n"),
            format!("{ORIGIN}\n05\n{root}\n"),
            format!("{ORIGIN}\n+5\n{root}\n"),
            format!("{ORIGIN}\n-5\n{root}\n"),
            format!("{ORIGIN}\n 5\n{root}\n"),
            format!("{ORIGIN}\n18446744073709551616\n{root}\n"),
            format!("{ORIGIN}\n5\n{short_root}\n"),
            format!("{ORIGIN}\n5\n{}\n", root.trim_end_matches('=')),
            format!("{ORIGIN}\n5\n{}\n", root.replacen('H', "*", 1)),
            format!("{ORIGIN}\n5\nBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwd=\n"),
            format!("\n5\n{root}\n"),
            format!("my log\n5\n{root}\n"),
            format!("{ORIGIN}\u{a0}\n5\n{root}\n"),
        ];
        for body in &bodies {
            let note = s.sign_text(body);
            assert!(
                matches!(open(&note, &s.verifier()), Err(NoteError::Checkpoint(_))),
                "{body:?}: {:?}",
                open(&note, &s.verifier())
            );
        }
        let zero = format!("{ORIGIN}\n0\n{root}\n");
        assert_eq!(
            open(&s.sign_text(&zero), &s.verifier()).map(|c| c.size),
            Ok(0)
        );
        let max = format!("{ORIGIN}\n18446744073709551615\n{root}\n");
        let opened = open(&s.sign_text(&max), &s.verifier()).map(|c| c.size);
        assert_eq!(opened, Ok(u64::MAX));
        assert!(Checkpoint::parse(&format!("{ORIGIN}\n5\n{root}")).is_err());
        let mut bad = checkpoint();
        bad.origin = "two\nlines".to_owned();
        assert!(matches!(s.sign(&bad), Err(NoteError::Checkpoint(_))));
    }

    #[test]
    fn bad_names_and_verifier_keys_are_rejected() {
        for name in ["", "a b", "a+b", "a\nb", "tab\t"] {
            assert_eq!(Signer::from_seed(name, [1; 32]).err(), Some(KeyError::Name));
        }
        let good = signer(7).verifier_key();
        let (name_and_id, key) = good.rsplit_once('+').expect("key");
        let other_key = signer(8).verifier_key();
        let wrong_id = good.replacen(&hex(&signer(7).key_id), "00000000", 1);
        // Key ids are written in lowercase; the same id in uppercase (with a letter) is refused.
        let id = hex(&signer(7).key_id);
        let upper = good.replacen(&id, &id.to_uppercase(), 1);
        assert!(
            id.bytes().any(|b| b.is_ascii_alphabetic()),
            "pick another seed"
        );
        let mut alg2 = STANDARD.decode(key).expect("b64");
        alg2[0] = 2;
        let cases = [
            String::new(),
            ORIGIN.to_owned(),
            name_and_id.to_owned(),
            format!("{name_and_id}+"),
            format!("{name_and_id}+{}", STANDARD.encode(&alg2)),
            format!("{name_and_id}+{}", &key[1..]),
            format!("{name_and_id}+{key}A"),
            format!("{name_and_id}+{}", other_key.rsplit_once('+').expect("k").1),
            wrong_id,
            upper,
            good.replacen(ORIGIN, "other.example", 1),
            format!("{name_and_id}+{}", STANDARD.encode([1u8; 33])),
        ];
        for vkey in &cases {
            assert!(vkey.parse::<Verifier>().is_err(), "{vkey:?}");
        }
        assert_eq!(good.parse::<Verifier>().map(|v| v.to_string()), Ok(good));
    }

    /// The example of c2sp.org/signed-note and golang.org/x/mod/sumdb/note: key
    /// "PeterNeumann" (seed from the package doc's PRIVATE+KEY string). Our key id, verifier
    /// key and signature must match Go's byte for byte (Ed25519 is deterministic).
    #[test]
    fn go_sumdb_note_vector() {
        const VKEY: &str = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW";
        const SKEY_B64: &str = "AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz";
        const TEXT: &str = "If you think cryptography is the answer to your problem,\n\
                            then you don't know what your problem is.\n";
        const NOTE_SIG: &str = "x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM=";

        let skey = STANDARD.decode(SKEY_B64).expect("b64");
        assert_eq!(skey[0], ALG_ED25519);
        let seed: [u8; 32] = skey[1..].try_into().expect("32 bytes");
        let s = Signer::from_seed("PeterNeumann", seed).expect("name");
        assert_eq!(s.verifier_key(), VKEY);
        let note = format!("{TEXT}\n\u{2014} PeterNeumann {NOTE_SIG}\n");
        assert_eq!(s.sign_text(TEXT), note);
        let verifier: Verifier = VKEY.parse().expect("Go's key");
        assert_eq!(open_text(&note, &verifier), Ok(TEXT));
        let tampered = note.replacen("cryptography", "cryptographY", 1);
        assert_eq!(
            open_text(&tampered, &verifier),
            Err(NoteError::BadSignature)
        );

        // The key id again, by hand over one buffer: SHA-256("PeterNeumann\n" ‖ 0x01 ‖ key).
        let mut buf = b"PeterNeumann\n".to_vec();
        buf.extend_from_slice(&STANDARD.decode(&VKEY[22..]).expect("b64"));
        let digest = Sha256::digest(&buf);
        assert_eq!(hex(&digest[..4]), "c74f20a3");
        assert_eq!(verifier.key_id(), [0xc7, 0x4f, 0x20, 0xa3]);
    }
}
