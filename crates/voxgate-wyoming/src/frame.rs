//! Framing: one JSON header line (`type`, `data`, `data_length`, `payload_length`,
//! `version`), then `data_length` bytes of JSON merged over the header's `data`, then
//! `payload_length` bytes of payload.
//!
//! [`decode`] reads one frame from the front of a buffer, refusing before anything is
//! allocated for it a header line, a data segment or a payload over its [`Limits`]: the
//! lengths are checked as soon as the header line is complete, so a client announcing
//! 2^40 bytes is refused at once, not after the server waited for them.

use serde_json::{Map, Value};

use crate::PROTOCOL_VERSION;

/// The largest pieces a frame may have.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// The header line, newline excluded.
    pub max_header_bytes: usize,
    /// The data segment.
    pub max_data_bytes: usize,
    /// The payload (audio).
    pub max_payload_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_header_bytes: 16 * 1024,
            max_data_bytes: 64 * 1024,
            max_payload_bytes: 256 * 1024,
        }
    }
}

impl Limits {
    /// The most bytes one frame can take (what a reader may have to buffer).
    pub fn max_frame_bytes(&self) -> usize {
        self.max_header_bytes
            .saturating_add(1)
            .saturating_add(self.max_data_bytes)
            .saturating_add(self.max_payload_bytes)
    }
}

/// One event on the wire: its type, its data (header `data` with the data segment merged
/// over it) and its payload.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Frame {
    pub kind: String,
    pub data: Map<String, Value>,
    pub payload: Vec<u8>,
}

impl Frame {
    pub fn new(kind: &str) -> Self {
        Self {
            kind: kind.to_owned(),
            ..Self::default()
        }
    }

    pub fn with_data(kind: &str, data: Value) -> Self {
        Self {
            kind: kind.to_owned(),
            data: match data {
                Value::Object(map) => map,
                _ => Map::new(),
            },
            payload: Vec::new(),
        }
    }
}

/// Why bytes are not a frame. Every one of them ends the connection: after a bad frame the
/// stream cannot be resynchronised.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("the header line is longer than {0} bytes")]
    HeaderTooLong(usize),
    #[error("the data segment ({0} bytes) is over the limit")]
    DataTooLong(u64),
    #[error("the payload ({0} bytes) is over the limit")]
    PayloadTooLong(u64),
    #[error("the header line is not a JSON object")]
    BadHeader,
    #[error("the data segment is not a JSON object")]
    BadData,
    #[error("the event has no type")]
    NoType,
    #[error("`{0}` is not a length")]
    BadLength(&'static str),
}

impl FrameError {
    /// Whether the frame was refused for its size (rather than its shape).
    pub fn is_too_large(&self) -> bool {
        matches!(
            self,
            FrameError::HeaderTooLong(_)
                | FrameError::DataTooLong(_)
                | FrameError::PayloadTooLong(_)
        )
    }
}

/// Longest event type accepted (the protocol's are short words).
const MAX_TYPE_CHARS: usize = 64;

/// A complete, checked header line.
struct Head {
    kind: String,
    header: Map<String, Value>,
    /// Where the data segment starts (after the newline).
    body: usize,
    data_len: usize,
    payload_len: usize,
}

impl Head {
    fn total(&self) -> usize {
        self.body + self.data_len + self.payload_len
    }
}

/// The header line at the front of `buf`, once it is complete (`None` before), with its
/// lengths checked against `limits`.
fn head(buf: &[u8], limits: &Limits) -> Result<Option<Head>, FrameError> {
    let window = &buf[..buf.len().min(limits.max_header_bytes.saturating_add(1))];
    let Some(newline) = window.iter().position(|&b| b == b'\n') else {
        if buf.len() > limits.max_header_bytes {
            return Err(FrameError::HeaderTooLong(limits.max_header_bytes));
        }
        return Ok(None);
    };
    let header: Value =
        serde_json::from_slice(&buf[..newline]).map_err(|_| FrameError::BadHeader)?;
    let Value::Object(mut header) = header else {
        return Err(FrameError::BadHeader);
    };
    let kind = match header.remove("type") {
        Some(Value::String(kind)) if !kind.is_empty() && kind.chars().count() <= MAX_TYPE_CHARS => {
            kind
        }
        _ => return Err(FrameError::NoType),
    };
    let data_len = length(&header, "data_length")?;
    if data_len > limits.max_data_bytes as u64 {
        return Err(FrameError::DataTooLong(data_len));
    }
    let payload_len = length(&header, "payload_length")?;
    if payload_len > limits.max_payload_bytes as u64 {
        return Err(FrameError::PayloadTooLong(payload_len));
    }
    // Both fit in usize: they are at most the limits, which are usizes.
    Ok(Some(Head {
        kind,
        header,
        body: newline + 1,
        data_len: data_len as usize,
        payload_len: payload_len as usize,
    }))
}

/// How many bytes the frame at the front of `buf` takes, once its header line is complete
/// (`None` before): a reader waiting for a long payload need not decode again until that
/// many bytes are there.
pub fn frame_len(buf: &[u8], limits: &Limits) -> Result<Option<usize>, FrameError> {
    Ok(head(buf, limits)?.map(|h| h.total()))
}

/// Reads one frame from the front of `buf`: `Ok(Some((frame, used)))` with the bytes it
/// took, `Ok(None)` when more bytes are needed (never when what is there is already over a
/// limit), or the reason the bytes cannot be a frame.
pub fn decode(buf: &[u8], limits: &Limits) -> Result<Option<(Frame, usize)>, FrameError> {
    let Some(Head {
        kind,
        mut header,
        body,
        data_len,
        payload_len,
    }) = head(buf, limits)?
    else {
        return Ok(None);
    };
    let total = body + data_len + payload_len;
    if buf.len() < total {
        return Ok(None);
    }
    let mut data = match header.remove("data") {
        None | Some(Value::Null) => Map::new(),
        Some(Value::Object(map)) => map,
        Some(_) => return Err(FrameError::BadData),
    };
    if data_len > 0 {
        let extra: Value =
            serde_json::from_slice(&buf[body..body + data_len]).map_err(|_| FrameError::BadData)?;
        let Value::Object(extra) = extra else {
            return Err(FrameError::BadData);
        };
        data.extend(extra);
    }
    let payload = buf[body + data_len..total].to_vec();
    Ok(Some((
        Frame {
            kind,
            data,
            payload,
        },
        total,
    )))
}

/// A length field: absent or null is 0; otherwise a non-negative integer.
fn length(header: &Map<String, Value>, field: &'static str) -> Result<u64, FrameError> {
    match header.get(field) {
        None | Some(Value::Null) => Ok(0),
        Some(Value::Number(n)) => n.as_u64().ok_or(FrameError::BadLength(field)),
        Some(_) => Err(FrameError::BadLength(field)),
    }
}

/// The bytes of `frame` on the wire, as the reference writes them: the data in its own
/// segment after the header line.
pub fn encode(frame: &Frame) -> Vec<u8> {
    let mut header = Map::new();
    header.insert("type".into(), Value::String(frame.kind.clone()));
    header.insert("version".into(), Value::String(PROTOCOL_VERSION.into()));
    let data = if frame.data.is_empty() {
        Vec::new()
    } else {
        // Serializing a map of JSON values cannot fail.
        serde_json::to_vec(&frame.data).unwrap_or_default()
    };
    if !data.is_empty() {
        header.insert("data_length".into(), Value::from(data.len()));
    }
    if !frame.payload.is_empty() {
        header.insert("payload_length".into(), Value::from(frame.payload.len()));
    }
    let mut out = serde_json::to_vec(&header).unwrap_or_default();
    out.push(b'\n');
    out.extend_from_slice(&data);
    out.extend_from_slice(&frame.payload);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    fn limits() -> Limits {
        Limits {
            max_header_bytes: 256,
            max_data_bytes: 256,
            max_payload_bytes: 1024,
        }
    }

    #[test]
    fn reads_what_the_reference_writes() {
        // The reference puts `data` in its own segment and counts it in `data_length`.
        let data = br#"{"text":"Hi.","voice":{"name":"alloy"}}"#;
        let mut wire = format!(
            "{{\"type\":\"synthesize\",\"version\":\"1.10.2\",\"data_length\":{}}}\n",
            data.len()
        )
        .into_bytes();
        wire.extend_from_slice(data);
        wire.extend_from_slice(b"{\"type\":\"ping\"}\n");
        let (frame, used) = decode(&wire, &limits()).expect("frame").expect("complete");
        assert_eq!(frame.kind, "synthesize");
        assert_eq!(frame.data["voice"]["name"], "alloy");
        let (next, _) = decode(&wire[used..], &limits())
            .expect("frame")
            .expect("complete");
        assert_eq!(next.kind, "ping");
    }

    #[test]
    fn the_frame_length_is_known_once_the_header_line_is() {
        let wire = b"{\"type\":\"audio-chunk\",\"data_length\":2,\"payload_length\":4}\n{}abcd";
        let header_end = wire.iter().position(|&b| b == b'\n').expect("newline");
        assert_eq!(frame_len(&wire[..header_end], &limits()), Ok(None));
        for end in header_end + 1..wire.len() {
            assert_eq!(frame_len(&wire[..end], &limits()), Ok(Some(wire.len())));
            assert_eq!(decode(&wire[..end], &limits()), Ok(None));
        }
        let (frame, used) = decode(wire, &limits()).expect("frame").expect("complete");
        assert_eq!((frame.payload.as_slice(), used), (&b"abcd"[..], wire.len()));
        // Numbers come back as written.
        let wire = b"{\"type\":\"x\",\"data\":{\"a\":123456789012345678901234567890e-40}}\n";
        let (frame, _) = decode(wire, &limits()).expect("frame").expect("complete");
        let (again, _) = decode(&encode(&frame), &limits())
            .expect("frame")
            .expect("complete");
        assert_eq!(again, frame);
    }

    #[test]
    fn the_data_segment_is_merged_over_the_header_data() {
        let wire = b"{\"type\":\"x\",\"data\":{\"a\":1,\"b\":2},\"data_length\":7}\n{\"b\":3}";
        let (frame, _) = decode(wire, &limits()).expect("frame").expect("complete");
        assert_eq!(Value::Object(frame.data), json!({"a": 1, "b": 3}));
    }

    #[test]
    fn lengths_over_a_limit_are_refused_before_their_bytes_arrive() {
        let huge = b"{\"type\":\"audio-chunk\",\"payload_length\":1099511627776}\n";
        assert_eq!(
            decode(huge, &limits()),
            Err(FrameError::PayloadTooLong(1 << 40))
        );
        let data = b"{\"type\":\"x\",\"data_length\":257}\n";
        assert_eq!(decode(data, &limits()), Err(FrameError::DataTooLong(257)));
        let negative = b"{\"type\":\"x\",\"payload_length\":-1}\n";
        assert_eq!(
            decode(negative, &limits()),
            Err(FrameError::BadLength("payload_length"))
        );
    }

    #[test]
    fn a_header_line_over_the_limit_is_refused_without_its_end() {
        let long = vec![b'{'; 257];
        assert_eq!(
            decode(&long, &limits()),
            Err(FrameError::HeaderTooLong(256))
        );
        // Exactly at the limit with no newline yet: wait for more.
        assert_eq!(decode(&long[..256], &limits()), Ok(None));
    }

    #[test]
    fn shapes_that_are_not_frames_are_refused() {
        for (wire, err) in [
            (&b"not json\n"[..], FrameError::BadHeader),
            (b"[1,2]\n", FrameError::BadHeader),
            (b"{\"data\":{}}\n", FrameError::NoType),
            (b"{\"type\":\"\"}\n", FrameError::NoType),
            (b"{\"type\":7}\n", FrameError::NoType),
            (b"{\"type\":\"x\",\"data\":[1]}\n", FrameError::BadData),
            (
                b"{\"type\":\"x\",\"data_length\":3}\n[1]",
                FrameError::BadData,
            ),
            (
                b"{\"type\":\"x\",\"data_length\":\"3\"}\n",
                FrameError::BadLength("data_length"),
            ),
        ] {
            assert_eq!(
                decode(wire, &limits()),
                Err(err),
                "{}",
                String::from_utf8_lossy(wire)
            );
        }
    }

    proptest! {
        /// Whatever is encoded decodes to itself, from any split of its bytes.
        #[test]
        fn encode_then_decode_is_identity(
            kind in "[a-z][a-z-]{0,20}",
            text in ".{0,40}",
            payload in proptest::collection::vec(any::<u8>(), 0..300),
            cut in 0usize..400,
        ) {
            let frame = Frame {
                kind,
                data: match json!({"text": text}) { Value::Object(m) => m, _ => Map::new() },
                payload,
            };
            let wire = encode(&frame);
            let cut = cut.min(wire.len());
            if cut < wire.len() {
                prop_assert_eq!(decode(&wire[..cut], &limits()), Ok(None));
            }
            let (back, used) = decode(&wire, &limits()).expect("frame").expect("complete");
            prop_assert_eq!(used, wire.len());
            prop_assert_eq!(back, frame);
        }

        /// Arbitrary bytes never panic, and a frame never takes more than the limits allow.
        #[test]
        fn arbitrary_bytes_are_a_frame_an_error_or_a_wait(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
            if let Ok(Some((_, used))) = decode(&bytes, &limits()) {
                prop_assert!(used <= limits().max_frame_bytes());
            }
        }
    }
}
