//! Remote providers: engines that send text (or audio) to another server.
//!
//! Every provider talks through one hardened client ([`client`]): no redirects (a 3xx is a
//! failure, so a provider cannot bounce us to an internal address), no proxy from the
//! environment, connect/read/total timeouts, TLS unless a local server is explicitly allowed,
//! and a resolver that refuses non-public addresses unless `allow_local` is set (SSRF,
//! [`crate::engines::egress`]). Because reqwest connects to exactly the addresses the resolver hands
//! back, a name that resolves to a private address (DNS rebinding included) is never reached.
//! Bodies are read with a size cap and, for audio, a content-type check; a provider's own
//! error text goes to the log, never to the client.
//!
//! - [`openai`]: OpenAI-compatible speech and transcription upstreams.
//! - [`elevenlabs`]: ElevenLabs streaming TTS and instant voice cloning.
//! - [`pollinations`]: Pollinations' GET text-to-speech (MP3, decoded here).

pub(crate) mod elevenlabs;
pub(crate) mod openai;
pub(crate) mod pollinations;

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use bytes::Bytes;
use futures::{Stream, StreamExt};
use reqwest::Url;
use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use voxgate_engine::{EncodedStream, EngineError, PcmChunk, PcmStream, RelayFormat, VoiceInfo};

use crate::audio::meter::StreamMeter;
use crate::config::HttpConfig;

/// Installs the process-wide rustls crypto provider (ring) once; reqwest and the TLS listener
/// both use it.
pub fn install_crypto() {
    // Err means one is installed already, which is what we want.
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// Checks a provider's base URL: https (or http when `allow_http`), a host, no credentials,
/// query or fragment, and an IP-literal host must be public unless `allow_local`.
pub fn check_base_url(base: &str, http: &HttpConfig) -> Result<Url, String> {
    let url = Url::parse(base).map_err(|e| format!("not a URL: {e}"))?;
    match url.scheme() {
        "https" => {}
        "http" if http.allow_http => {}
        "http" => return Err("must be https (set http.allow_http for a local server)".into()),
        other => return Err(format!("scheme `{other}` is not allowed")),
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err("must not carry credentials (use api_key_env)".into());
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err("must not have a query or fragment".into());
    }
    let host = url.host().ok_or("must have a host")?;
    let literal = match host {
        url::Host::Ipv4(ip) => Some(IpAddr::V4(ip)),
        url::Host::Ipv6(ip) => Some(IpAddr::V6(ip)),
        url::Host::Domain(_) => None,
    };
    if let Some(ip) = literal
        && !http.allow_local
        && !crate::engines::egress::is_public(ip)
    {
        return Err(format!(
            "{ip} is not a public address (set http.allow_local for a server on this host or network)"
        ));
    }
    Ok(url)
}

/// `base` joined with more path segments (`base` may end in `/v1` or `/v1/`).
pub fn endpoint(base: &Url, segments: &[&str]) -> Url {
    let mut url = base.clone();
    if let Ok(mut path) = url.path_segments_mut() {
        path.pop_if_empty();
        for segment in segments {
            path.push(segment);
        }
    }
    url
}

/// The one outbound HTTP client of a provider.
pub fn client(provider: &str, http: &HttpConfig) -> Result<reqwest::Client, reqwest::Error> {
    install_crypto();
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .connect_timeout(http.connect_timeout())
        .read_timeout(http.read_timeout())
        .timeout(http.total_timeout())
        .https_only(!http.allow_http)
        .user_agent(concat!("voxgate/", env!("CARGO_PKG_VERSION")))
        .dns_resolver(Arc::new(EgressResolver {
            provider: provider.to_owned(),
            allow_local: http.allow_local,
        }))
        .build()
}

/// Resolves names with the system resolver and drops every address the egress policy
/// refuses; if none is left, the connection fails and a security event is logged.
#[derive(Debug)]
struct EgressResolver {
    provider: String,
    allow_local: bool,
}

impl Resolve for EgressResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let host = name.as_str().to_owned();
        let provider = self.provider.clone();
        let allow_local = self.allow_local;
        Box::pin(async move {
            let found: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let allowed: Vec<SocketAddr> = found
                .iter()
                .copied()
                .filter(|a| allow_local || crate::engines::egress::is_public(a.ip()))
                .collect();
            if allowed.is_empty() {
                tracing::warn!(target: "voxgate::security", event = "egress_refused", provider = %provider, addresses = found.len(), "a provider's name resolved only to addresses outside the egress policy");
                return Err(Box::new(EgressRefused) as Box<dyn std::error::Error + Send + Sync>);
            }
            Ok(Box::new(allowed.into_iter()) as Addrs)
        })
    }
}

#[derive(Debug, thiserror::Error)]
#[error("the provider resolved to a non-public address")]
struct EgressRefused;

/// The voices a remote engine offers: the distinct upstream ids its aliases name.
pub fn remote_voices<'a>(natives: impl Iterator<Item = &'a String>) -> Vec<VoiceInfo> {
    let mut ids: Vec<&String> = natives.collect();
    ids.sort();
    ids.dedup();
    ids.into_iter()
        .map(|id| VoiceInfo {
            id: id.clone(),
            name: id.clone(),
            language: "und".into(),
        })
        .collect()
}

/// A provider failure for the log (never shown to clients).
pub fn upstream(message: impl Into<String>) -> EngineError {
    EngineError::Upstream(message.into().into())
}

/// Sends a speech request and waits at most `first_byte` for the response's head: a
/// provider that accepts the connection and never answers is a timeout then (so the chain
/// falls back within seconds), not after the read timeout. The body is read under the
/// read timeout as before.
pub async fn send_within(
    call: reqwest::RequestBuilder,
    first_byte: std::time::Duration,
) -> Result<reqwest::Response, EngineError> {
    match tokio::time::timeout(first_byte, call.send()).await {
        Ok(sent) => sent.map_err(transport),
        Err(_) => Err(EngineError::Timeout),
    }
}

/// Maps a transport error: timeouts are [`EngineError::Timeout`], the rest upstream failures.
/// The URL is stripped first: a provider's path or query may carry the request's text
/// (Pollinations puts it in the path), and the error ends up in the log.
pub fn transport(err: reqwest::Error) -> EngineError {
    let err = err.without_url();
    if err.is_timeout() {
        EngineError::Timeout
    } else {
        EngineError::Upstream(Box::new(err))
    }
}

/// Checks a response's status. 2xx passes; 429 is an overload with the provider's
/// `Retry-After` and 408 a timeout; a redirect is refused (and logged as a security event);
/// 400, 413, 415 and 422 say the request's content is what the provider refused: a client
/// error, which neither counts against the provider's breaker (one tenant's text cannot open
/// it for everyone) nor moves a chain on; anything else (401, 403, 404, 5xx…: the provider or
/// its configuration) is an upstream failure. The provider's body is never forwarded.
pub async fn check_status(
    provider: &str,
    response: reqwest::Response,
) -> Result<reqwest::Response, EngineError> {
    let status = response.status();
    if status.is_success() {
        return Ok(response);
    }
    if status.is_redirection() {
        tracing::warn!(target: "voxgate::security", event = "egress_redirect_refused", provider, status = status.as_u16(), "a provider answered with a redirect, which is never followed");
        return Err(upstream(format!("{provider}: redirect {status} refused")));
    }
    if status == reqwest::StatusCode::TOO_MANY_REQUESTS {
        let retry_after = response
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(std::time::Duration::from_secs);
        return Err(EngineError::Overloaded { retry_after });
    }
    if status == reqwest::StatusCode::REQUEST_TIMEOUT {
        return Err(EngineError::Timeout);
    }
    if matches!(status.as_u16(), 400 | 413 | 415 | 422) {
        tracing::debug!(
            provider,
            status = status.as_u16(),
            "the provider refused the request's content"
        );
        return Err(EngineError::Unsupported("the provider refused this input"));
    }
    Err(upstream(format!("{provider}: HTTP {status}")))
}

/// Whether a response's content type is one of `accepted` (`audio/*` matches any audio
/// type). A missing type is refused.
pub fn check_content_type(
    provider: &str,
    response: &reqwest::Response,
    accepted: &[&str],
) -> Result<(), EngineError> {
    let value = response
        .headers()
        .get(reqwest::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let essence = value
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    let ok = accepted.iter().any(|a| match a.strip_suffix("/*") {
        Some(top) => essence.split('/').next() == Some(top) && essence.contains('/'),
        None => essence == *a,
    });
    if ok {
        Ok(())
    } else {
        Err(upstream(format!(
            "{provider}: unexpected content type `{}`",
            value.chars().take(64).collect::<String>()
        )))
    }
}

/// Reads a whole body, refusing it once it passes `max` bytes (a declared length above the
/// cap is refused before reading).
pub async fn read_capped(
    provider: &str,
    response: reqwest::Response,
    max: u64,
) -> Result<Vec<u8>, EngineError> {
    if response.content_length().is_some_and(|len| len > max) {
        return Err(upstream(format!(
            "{provider}: response larger than {max} bytes"
        )));
    }
    let mut body = Vec::new();
    let mut stream = response.bytes_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(transport)?;
        if (body.len() + chunk.len()) as u64 > max {
            return Err(upstream(format!(
                "{provider}: response larger than {max} bytes"
            )));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// Bytes gathered before the first chunk leaves (100 ms of PCM at 24 kHz), so a body that
/// is empty, malformed or cut short is refused before any audio reaches the client (and
/// the next engine of the chain can still answer).
const FIRST_CHUNK_BYTES: usize = 4_800;

/// Turns a streamed body of 16-bit little-endian mono PCM into [`PcmChunk`]s as it arrives,
/// with a total size cap (a declared length above it is refused before reading). An odd byte
/// is carried to the next piece; one left at the end, or an empty body, is malformed audio.
pub fn pcm_stream(
    provider: String,
    response: reqwest::Response,
    sample_rate: u32,
    max: u64,
) -> Result<PcmStream, EngineError> {
    if response.content_length().is_some_and(|len| len > max) {
        return Err(upstream(format!(
            "{provider}: response larger than {max} bytes"
        )));
    }
    Ok(Box::pin(pcm_chunks(
        provider,
        response.bytes_stream(),
        sample_rate,
        max,
    )))
}

fn pcm_chunks(
    provider: String,
    body: impl Stream<Item = Result<Bytes, reqwest::Error>> + Send + 'static,
    sample_rate: u32,
    max: u64,
) -> impl Stream<Item = Result<PcmChunk, EngineError>> + Send + 'static {
    struct State<S> {
        body: std::pin::Pin<Box<S>>,
        pending: Vec<u8>,
        total: u64,
        started: bool,
        done: bool,
    }
    let state = State {
        body: Box::pin(body),
        pending: Vec::new(),
        total: 0,
        started: false,
        done: false,
    };
    let chunk = move |pending: &mut Vec<u8>| {
        let even = pending.len() - pending.len() % 2;
        let samples = pending[..even]
            .chunks_exact(2)
            .map(|b| i16::from_le_bytes([b[0], b[1]]))
            .collect();
        pending.drain(..even);
        PcmChunk {
            sample_rate,
            samples,
        }
    };
    futures::stream::unfold(state, move |mut st| {
        let provider = provider.clone();
        async move {
            if st.done {
                return None;
            }
            loop {
                match st.body.next().await {
                    Some(Ok(bytes)) => {
                        st.total += bytes.len() as u64;
                        if st.total > max {
                            st.done = true;
                            let err =
                                upstream(format!("{provider}: audio longer than {max} bytes"));
                            return Some((Err(err), st));
                        }
                        st.pending.extend_from_slice(&bytes);
                        let wanted = if st.started { 2 } else { FIRST_CHUNK_BYTES };
                        if st.pending.len() < wanted {
                            continue;
                        }
                        st.started = true;
                        let piece = chunk(&mut st.pending);
                        return Some((Ok(piece), st));
                    }
                    Some(Err(e)) => {
                        st.done = true;
                        return Some((Err(transport(e)), st));
                    }
                    None => {
                        st.done = true;
                        if st.pending.len() % 2 == 1 || st.total == 0 {
                            let err =
                                upstream(format!("{provider}: malformed PCM (odd or empty body)"));
                            return Some((Err(err), st));
                        }
                        if st.pending.is_empty() {
                            return None;
                        }
                        let piece = chunk(&mut st.pending);
                        return Some((Ok(piece), st));
                    }
                }
            }
        }
    })
}

/// Passes a streamed body on unchanged (a relay), checked as it goes by a
/// [`StreamMeter`]: a body that is not what its format says (or is empty) is an upstream
/// failure, seen by the breaker like any other. A declared length above `max` is refused
/// before reading, a longer body when it gets there. The start is held back until it is
/// known to be audio (PCM: [`FIRST_CHUNK_BYTES`]; MP3: its first frame header) or the body
/// ends, so a malformed answer fails before anything reaches the client (and the next
/// engine of the chain can still answer). PCM pieces hold whole samples (an odd byte waits
/// for the next piece).
pub fn relay_body(
    provider: String,
    response: reqwest::Response,
    max: u64,
    format: RelayFormat,
) -> Result<EncodedStream, EngineError> {
    if response.content_length().is_some_and(|len| len > max) {
        return Err(upstream(format!(
            "{provider}: response larger than {max} bytes"
        )));
    }
    struct State<S> {
        body: std::pin::Pin<Box<S>>,
        meter: StreamMeter,
        /// What is held back: the start until it is known to be audio, an odd PCM byte.
        held: Vec<u8>,
        started: bool,
        total: u64,
        done: bool,
    }
    let state = State {
        body: Box::pin(response.bytes_stream()),
        meter: StreamMeter::new(format),
        held: Vec::new(),
        started: false,
        total: 0,
        done: false,
    };
    let pcm = format == RelayFormat::Pcm24k;
    Ok(Box::pin(futures::stream::unfold(state, move |mut st| {
        let provider = provider.clone();
        async move {
            if st.done {
                return None;
            }
            let malformed =
                |e: crate::audio::meter::MeterError| upstream(format!("{provider}: {e}"));
            loop {
                match st.body.next().await {
                    Some(Ok(bytes)) => {
                        st.total += bytes.len() as u64;
                        if st.total > max {
                            st.done = true;
                            let err =
                                upstream(format!("{provider}: audio longer than {max} bytes"));
                            return Some((Err(err), st));
                        }
                        if let Err(e) = st.meter.push(&bytes) {
                            st.done = true;
                            return Some((Err(malformed(e)), st));
                        }
                        let ready = st.started
                            || if pcm {
                                st.held.len() + bytes.len() >= FIRST_CHUNK_BYTES
                            } else {
                                st.meter.output_samples() > 0
                            };
                        if !ready {
                            st.held.extend_from_slice(&bytes);
                            continue;
                        }
                        st.started = true;
                        // Zero copies for the usual piece: nothing held, whole samples.
                        let piece = if st.held.is_empty() && (!pcm || bytes.len() % 2 == 0) {
                            bytes
                        } else {
                            let mut joined = std::mem::take(&mut st.held);
                            joined.extend_from_slice(&bytes);
                            if pcm && joined.len() % 2 == 1 {
                                st.held.extend(joined.pop());
                            }
                            Bytes::from(joined)
                        };
                        if piece.is_empty() {
                            continue;
                        }
                        return Some((Ok(piece), st));
                    }
                    Some(Err(e)) => {
                        st.done = true;
                        return Some((Err(transport(e)), st));
                    }
                    None => {
                        st.done = true;
                        if let Err(e) = st.meter.finish() {
                            return Some((Err(malformed(e)), st));
                        }
                        let rest = std::mem::take(&mut st.held);
                        return (!rest.is_empty()).then(|| (Ok(Bytes::from(rest)), st));
                    }
                }
            }
        }
    })))
}

/// Decodes a complete WAV file of 16-bit PCM (mono or the first channel of several) into one
/// chunk; anything else is malformed audio.
pub fn decode_wav(provider: &str, bytes: &[u8]) -> Result<PcmChunk, EngineError> {
    let malformed = |why: &str| upstream(format!("{provider}: malformed WAV ({why})"));
    let mut reader =
        hound::WavReader::new(std::io::Cursor::new(bytes)).map_err(|_| malformed("header"))?;
    let spec = reader.spec();
    if spec.sample_format != hound::SampleFormat::Int
        || spec.bits_per_sample != 16
        || spec.channels == 0
        || !(8_000..=48_000).contains(&spec.sample_rate)
    {
        return Err(malformed("not 16-bit PCM at 8–48 kHz"));
    }
    let channels = usize::from(spec.channels);
    let samples: Vec<i16> = reader
        .samples::<i16>()
        .step_by(channels)
        .collect::<Result<_, _>>()
        .map_err(|_| malformed("data"))?;
    if samples.is_empty() {
        return Err(malformed("no samples"));
    }
    Ok(PcmChunk {
        sample_rate: spec.sample_rate,
        samples,
    })
}

/// Decodes compressed audio (MP3 and the other formats uploads accept) with the upload
/// prober's decoders, bounded in size and duration.
pub fn decode_compressed(
    provider: &str,
    bytes: &[u8],
    extension: &str,
    max_bytes: u64,
) -> Result<PcmChunk, EngineError> {
    let limits = voxgate_input::probe::ProbeLimits {
        max_bytes,
        max_duration_secs: 1800.0,
        ..Default::default()
    };
    let probed = voxgate_input::probe::probe_bytes(bytes, &format!("answer.{extension}"), &limits)
        .map_err(|e| upstream(format!("{provider}: malformed audio ({})", e.code())))?;
    let samples = probed
        .samples
        .iter()
        .map(|s| (s.clamp(-1.0, 1.0) * 32767.0).round() as i16)
        .collect();
    Ok(PcmChunk {
        sample_rate: probed.sample_rate,
        samples,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn http(allow_local: bool, allow_http: bool) -> HttpConfig {
        HttpConfig {
            allow_local,
            allow_http,
            ..HttpConfig::default()
        }
    }

    #[test]
    fn base_urls_are_checked() {
        assert!(check_base_url("https://api.openai.com/v1", &http(false, false)).is_ok());
        for (bad, why) in [
            ("http://api.openai.com/v1", "https"),
            ("ftp://x/", "scheme"),
            ("https://user:pw@api.openai.com/v1", "credentials"),
            ("https://api.openai.com/v1?x=1", "query"),
            ("https://127.0.0.1/v1", "public"),
            ("https://169.254.169.254/", "public"),
            ("https://[::1]/", "public"),
            ("https://[::ffff:10.0.0.1]/", "public"),
            ("not a url", "URL"),
        ] {
            let err = check_base_url(bad, &http(false, false)).unwrap_err();
            assert!(err.contains(why), "{bad}: {err}");
        }
        assert!(check_base_url("http://127.0.0.1:8880/v1", &http(true, true)).is_ok());
        assert!(check_base_url("http://127.0.0.1:8880/v1", &http(true, false)).is_err());
    }

    #[test]
    fn endpoints_join_segments_and_escape_them() {
        let base = Url::parse("https://h/v1/").expect("url");
        assert_eq!(
            endpoint(&base, &["audio", "speech"]).as_str(),
            "https://h/v1/audio/speech"
        );
        let base = Url::parse("https://h").expect("url");
        assert_eq!(
            endpoint(&base, &["v1", "text-to-speech", "a/../b?c"]).as_str(),
            "https://h/v1/text-to-speech/a%2F..%2Fb%3Fc"
        );
    }

    #[tokio::test]
    async fn pcm_bodies_split_at_any_byte_and_odd_tails_are_malformed() {
        let pieces: Vec<Result<Bytes, reqwest::Error>> = vec![
            Ok(Bytes::from_static(&[1, 0, 2])),
            Ok(Bytes::from_static(&[0, 3, 0])),
        ];
        let chunks: Vec<_> = pcm_chunks("p".into(), futures::stream::iter(pieces), 24_000, 100)
            .collect()
            .await;
        let samples: Vec<i16> = chunks
            .into_iter()
            .flat_map(|c| c.expect("chunk").samples)
            .collect();
        assert_eq!(samples, [1, 2, 3]);

        // Short bodies are gathered: the first chunk leaves at FIRST_CHUNK_BYTES or the end.
        let pieces: Vec<Result<Bytes, reqwest::Error>> =
            (0..10).map(|_| Ok(Bytes::from(vec![0u8; 1000]))).collect();
        let sizes: Vec<usize> =
            pcm_chunks("p".into(), futures::stream::iter(pieces), 24_000, 1 << 20)
                .map(|c| c.expect("chunk").samples.len())
                .collect()
                .await;
        assert_eq!(sizes, [2500, 500, 500, 500, 500, 500]);

        let odd: Vec<Result<Bytes, reqwest::Error>> = vec![Ok(Bytes::from_static(&[1, 0, 2]))];
        let last = pcm_chunks("p".into(), futures::stream::iter(odd), 24_000, 100)
            .collect::<Vec<_>>()
            .await
            .pop()
            .expect("item");
        assert!(matches!(last, Err(EngineError::Upstream(_))));

        let big: Vec<Result<Bytes, reqwest::Error>> = vec![Ok(Bytes::from(vec![0u8; 102]))];
        let first = pcm_chunks("p".into(), futures::stream::iter(big), 24_000, 100)
            .collect::<Vec<_>>()
            .await
            .remove(0);
        assert!(matches!(first, Err(EngineError::Upstream(_))), "cap");

        let empty: Vec<Result<Bytes, reqwest::Error>> = vec![];
        let items = pcm_chunks("p".into(), futures::stream::iter(empty), 24_000, 100)
            .collect::<Vec<_>>()
            .await;
        assert!(matches!(items.as_slice(), [Err(EngineError::Upstream(_))]));
    }

    #[test]
    fn wav_answers_must_be_16_bit_pcm() {
        let mut good = std::io::Cursor::new(Vec::new());
        {
            let spec = hound::WavSpec {
                channels: 1,
                sample_rate: 22_050,
                bits_per_sample: 16,
                sample_format: hound::SampleFormat::Int,
            };
            let mut w = hound::WavWriter::new(&mut good, spec).expect("writer");
            for s in [1i16, -1, 5] {
                w.write_sample(s).expect("sample");
            }
            w.finalize().expect("finalize");
        }
        let chunk = decode_wav("p", good.get_ref()).expect("decodes");
        assert_eq!((chunk.sample_rate, chunk.samples), (22_050, vec![1, -1, 5]));
        assert!(decode_wav("p", b"RIFF\0\0\0\0WAVEjunk").is_err());
        assert!(decode_wav("p", b"<html>error</html>").is_err());
    }
}
