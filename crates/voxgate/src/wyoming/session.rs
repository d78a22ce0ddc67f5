//! One Wyoming connection: frames in, service calls, frames out.
//!
//! Events are handled one at a time in arrival order (the protocol is a conversation: a
//! client waits for `audio-stop`, `synthesize-stopped` or `transcript`). Every request event
//! resolves the bound key again (through the authentication cache) and passes
//! `Services::authorize` (rate limits, then the scope) before the service runs it, so a
//! revoked key, a spent quota or a missing scope is an `error` event, the conversation goes
//! on, and nothing was charged. A watchdog re-checks the key four times per `auth.cache_ttl_ms` and
//! closes the connection when it stops working, even in the middle of a long synthesis.
//!
//! Closing errors (the connection ends after the `error` event): a frame that does not parse
//! or is over a cap, more events per second than allowed, a connection silent for
//! `idle_secs`, an utterance longer than `max_audio_secs` of audio or `utterance_secs` of
//! time, streamed text over `max_pending_chars` without a sentence end.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt as _;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::watch;
use tokio::time::Instant;
use voxgate_engine::sentences;
use voxgate_wyoming::event::{self as out, AudioFormat, Event, EventError, Voice};
use voxgate_wyoming::frame::{self, Frame, FrameError, Limits};
use voxgate_wyoming::pcm;

use super::describe::{self, MODEL_VOICE_SEPARATOR, PROGRAM};
use crate::audio::{AudioFormat as Encoding, OUTPUT_RATE};
use crate::config::{Scope, WyomingConfig};
use crate::error::{Code, Error};
use crate::identity::auth::Principal;
use crate::service::Services;
use crate::service::speech::{SpeechOrder, VoiceChoice};
use crate::service::transcription::{AudioInput, TranscriptionOrder};

/// What voxgate sends: 16-bit mono at the output rate.
const OUTPUT: AudioFormat = AudioFormat {
    rate: OUTPUT_RATE,
    width: 2,
    channels: 1,
};

/// Largest `audio-chunk` payload voxgate sends (about 170 ms).
const MAX_CHUNK_BYTES: usize = 8 * 1024;

/// Why a connection ends.
enum Close {
    /// The client closed it.
    Gone,
    /// An `error` event, then the close.
    With(Error),
}

impl From<Error> for Close {
    fn from(err: Error) -> Self {
        Close::With(err)
    }
}

/// A streamed synthesis in progress.
struct Streaming {
    voice: Option<Voice>,
    /// An SSML document: spoken whole at `synthesize-stop` (markup is not split into
    /// sentences).
    ssml: bool,
    /// Text received that does not end a sentence yet.
    pending: String,
    deadline: Instant,
}

/// Audio being received for a transcription.
struct Utterance {
    model: String,
    language: Option<String>,
    format: Option<AudioFormat>,
    /// Mono, 16-bit, at the client's rate (half the memory of floats).
    samples: Vec<i16>,
    deadline: Instant,
}

pub(super) struct Session {
    listener: Arc<str>,
    config: Arc<WyomingConfig>,
    services: Arc<Services>,
    peer: IpAddr,
}

/// The two halves of the connection, what has been read but not yet decoded, and what
/// can end the conversation from outside.
struct Conn {
    reader: OwnedReadHalf,
    writer: OwnedWriteHalf,
    buf: Vec<u8>,
    /// The size of the frame at the front of `buf`, once its header line is known: no
    /// decoding until that many bytes are there.
    want: Option<usize>,
    /// Set (with the key's refusal) by the watchdog once the bound key stops working; read
    /// between frames and between audio chunks, so no frame is ever cut in two.
    revoked: watch::Receiver<Option<Code>>,
    /// The process is stopping: an idle connection closes.
    stopped: watch::Receiver<bool>,
}

impl Conn {
    fn revocation(&self) -> Option<Close> {
        (*self.revoked.borrow()).map(|code| Close::With(Error::from_code(code)))
    }
}

/// The route a key's checks see: a Wyoming request counts as the HTTP request it stands for,
/// so a rate-limit rule for `/v1/audio/speech` holds on every front door.
const ROUTE_CONNECTION: &str = "wyoming";
const ROUTE_DESCRIBE: &str = "/v1/models";
const ROUTE_SYNTHESIZE: &str = "/v1/audio/speech";
const ROUTE_TRANSCRIBE: &str = "/v1/audio/transcriptions";

impl Session {
    pub(super) fn new(
        listener: Arc<str>,
        config: Arc<WyomingConfig>,
        services: Arc<Services>,
        peer: IpAddr,
    ) -> Self {
        Self {
            listener,
            config,
            services,
            peer,
        }
    }

    fn limits(&self) -> Limits {
        let l = &self.config.limits;
        Limits {
            max_header_bytes: l.max_header_bytes,
            max_data_bytes: l.max_data_bytes,
            max_payload_bytes: l.max_payload_bytes,
        }
    }

    /// Serves the connection until the client leaves or an error closes it.
    pub(super) async fn serve(self, stream: TcpStream, stopped: watch::Receiver<bool>) {
        let _ = stream.set_nodelay(true);
        let (reader, writer) = stream.into_split();
        let (revoke, revoked) = watch::channel(None);
        let mut conn = Conn {
            reader,
            writer,
            buf: Vec::with_capacity(8 * 1024),
            want: None,
            revoked,
            stopped,
        };
        let closed = {
            let work = self.converse(&mut conn);
            let watchdog = async {
                let code = self.watch_key().await;
                let _ = revoke.send(Some(code));
                std::future::pending::<()>().await;
            };
            tokio::select! {
                closed = work => closed,
                () = watchdog => Close::Gone,
            }
        };
        if let Close::With(err) = closed {
            self.send_error(&mut conn, &err).await;
            let _ = conn.writer.shutdown().await;
            linger(&mut conn.reader).await;
        } else {
            let _ = conn.writer.shutdown().await;
        }
    }

    /// The bound key for a request on `route`, checked now (a cache hit within
    /// `auth.cache_ttl_ms`).
    async fn principal(&self, route: &str) -> Result<Principal, Error> {
        self.services
            .bound_caller(&self.config.key_id, self.peer, route, true)
            .await
    }

    /// Whether the bound key still works (not a use of it).
    async fn key_works(&self) -> Result<Principal, Error> {
        self.services
            .bound_caller(&self.config.key_id, self.peer, ROUTE_CONNECTION, false)
            .await
    }

    /// Returns (with the reason) once the bound key stops working.
    async fn watch_key(&self) -> Code {
        // A quarter of the cache's lifetime: a key refused anywhere is seen here within
        // the cache bound plus a quarter of it.
        let every = Duration::from_millis((self.services.config.auth.cache_ttl_ms / 4).max(50));
        loop {
            tokio::time::sleep(every).await;
            if let Err(err) = self.key_works().await
                && !matches!(err, Error::Internal(_))
            {
                tracing::warn!(target: "voxgate::security", event = "wyoming_key_refused", listener = %self.listener, code = err.code().as_str().unwrap_or("server_error"), "the listener's bound key no longer works; closing the connection");
                return err.code();
            }
        }
    }

    async fn converse(&self, conn: &mut Conn) -> Close {
        let limits = self.limits();
        let idle = Duration::from_secs(self.config.limits.idle_secs);
        let mut streaming: Option<Streaming> = None;
        let mut utterance: Option<Utterance> = None;
        let mut window = (Instant::now(), 0u32);
        // The bound key must work before anything is served.
        if let Err(err) = self.key_works().await {
            return Close::With(err);
        }
        loop {
            // Waiting for the next event: the idle bound, or the open utterance's deadline
            // (also when its events are already buffered).
            let utterance_deadline = streaming
                .as_ref()
                .map(|s| s.deadline)
                .or(utterance.as_ref().map(|u| u.deadline));
            if utterance_deadline.is_some_and(|d| d <= Instant::now()) {
                return Close::With(Error::refused(
                    Code::Timeout,
                    format!(
                        "The utterance took longer than {} s.",
                        self.config.limits.utterance_secs
                    ),
                ));
            }
            let wait_until = match utterance_deadline {
                Some(d) => d.min(Instant::now() + idle),
                None => Instant::now() + idle,
            };
            let frame = match next_frame(conn, &limits, wait_until).await {
                Ok(Some(frame)) => frame,
                Ok(None) => return Close::Gone,
                Err(ReadError::Frame(err)) => {
                    tracing::info!(listener = %self.listener, error = %err, "malformed Wyoming frame; closing");
                    let code = if err.is_too_large() {
                        Code::EventTooLarge
                    } else {
                        Code::InvalidEvent
                    };
                    return Close::With(Error::refused(code, err.to_string()));
                }
                Err(ReadError::Io | ReadError::Stopped) => return Close::Gone,
                Err(ReadError::Revoked(close)) => return close,
                Err(ReadError::Deadline) => {
                    let message = if utterance_deadline.is_some_and(|d| d <= Instant::now()) {
                        format!(
                            "The utterance took longer than {} s.",
                            self.config.limits.utterance_secs
                        )
                    } else {
                        format!("No event for {} s.", self.config.limits.idle_secs)
                    };
                    return Close::With(Error::refused(Code::Timeout, message));
                }
            };
            // Events per second, per connection, over the time spent waiting for them (time
            // spent answering is not counted: events a client sent meanwhile arrive at once).
            if window.0.elapsed() >= Duration::from_secs(1) {
                window = (Instant::now(), 0);
            }
            window.1 += 1;
            if window.1 > self.config.limits.max_events_per_sec {
                return Close::With(Error::from_code(Code::TooManyEvents));
            }
            let event = match Event::parse(frame) {
                Ok(event) => event,
                Err(err) => {
                    // Well framed but malformed: the stream is still in step; say so and go on.
                    self.send_error(conn, &event_error(&err)).await;
                    continue;
                }
            };
            self.services
                .metrics
                .wyoming_events
                .inc(&self.listener, event.name());
            // A request on its own (not a sentence of a streamed synthesis) ends the
            // connection when it is refused: Home Assistant reads until `audio-stop` or
            // `transcript` and would otherwise wait for them until the idle bound.
            let one_shot = streaming.is_none()
                && matches!(
                    event,
                    Event::Describe
                        | Event::Synthesize { .. }
                        | Event::Transcribe { .. }
                        | Event::AudioStart(_)
                        | Event::AudioChunk { .. }
                        | Event::AudioStop
                );
            let answering = Instant::now();
            let handled = match event {
                Event::Describe => self.describe(conn).await,
                Event::Ping { text } => send(conn, &out::pong(text.as_deref())).await,
                Event::SelectProgram { name } => {
                    if name == PROGRAM {
                        Ok(())
                    } else {
                        Err(Step::Refused(Error::invalid(
                            "name",
                            Code::InvalidValue,
                            format!("The only program here is `{PROGRAM}`."),
                        )))
                    }
                }
                // Inside a streamed synthesis, `synthesize` repeats the text for clients
                // that do not stream: ignored, as the reference does.
                Event::Synthesize { .. } if streaming.is_some() => Ok(()),
                Event::Synthesize { text, voice, ssml } => {
                    self.synthesize(conn, &text, voice.as_ref(), ssml).await
                }
                Event::SynthesizeStart { voice, ssml } => {
                    streaming = Some(Streaming {
                        voice,
                        ssml,
                        pending: String::new(),
                        deadline: Instant::now()
                            + Duration::from_secs(self.config.limits.utterance_secs),
                    });
                    Ok(())
                }
                Event::SynthesizeChunk { text } => match streaming.as_mut() {
                    None => Err(Step::Refused(Error::refused(
                        Code::InvalidEvent,
                        "`synthesize-chunk` outside `synthesize-start` … `synthesize-stop`.",
                    ))),
                    Some(stream) => self.stream_chunk(conn, stream, &text).await,
                },
                Event::SynthesizeStop => match streaming.take() {
                    None => Err(Step::Refused(Error::refused(
                        Code::InvalidEvent,
                        "`synthesize-stop` without `synthesize-start`.",
                    ))),
                    Some(stream) => self.stream_stop(conn, stream).await,
                },
                Event::Transcribe { name, language } => {
                    match self.transcribe_request(name, language).await {
                        Ok(next) => {
                            utterance = Some(next);
                            Ok(())
                        }
                        Err(err) => Err(Step::Refused(err)),
                    }
                }
                Event::AudioStart(format) => {
                    let u = utterance.get_or_insert_with(|| self.default_utterance());
                    u.format = Some(format);
                    u.samples.clear();
                    Ok(())
                }
                Event::AudioChunk { format, audio } => {
                    let u = utterance.get_or_insert_with(|| self.default_utterance());
                    self.audio_chunk(u, format, &audio)
                }
                Event::AudioStop => match utterance.take() {
                    None => Err(Step::Refused(Error::refused(
                        Code::InvalidEvent,
                        "`audio-stop` without audio.",
                    ))),
                    Some(u) => self.finish_utterance(conn, u).await,
                },
                Event::Other(kind) => {
                    let shown: String = kind.chars().filter(|c| !c.is_control()).take(64).collect();
                    Err(Step::Refused(Error::refused(
                        Code::UnsupportedEvent,
                        format!("This listener does not serve `{shown}` events."),
                    )))
                }
            };
            window.0 += answering.elapsed();
            match handled {
                Ok(()) => {}
                Err(Step::Refused(err)) if one_shot => return Close::With(err),
                Err(Step::Refused(err)) => self.send_error(conn, &err).await,
                Err(Step::Close(close)) => return close,
            }
        }
    }

    async fn describe(&self, conn: &mut Conn) -> Result<(), Step> {
        let principal = self.authorized(ROUTE_DESCRIBE, Scope::ModelsRead).await?;
        let info = describe::info(&self.services, &principal).await?;
        send(conn, &info).await
    }

    /// The bound key, its rate limits and `scope`, as for an HTTP request on `route`.
    async fn authorized(&self, route: &str, scope: Scope) -> Result<Principal, Step> {
        let principal = self.principal(route).await?;
        self.services
            .authorize(&principal, route, scope, None)
            .await
            .map_err(|refusal| Step::Refused(refusal.error))?;
        Ok(principal)
    }

    /// Speaks `text`: `audio-start`, an `audio-chunk` for each piece as the engine produces
    /// it (sentence by sentence), `audio-stop`.
    async fn synthesize(
        &self,
        conn: &mut Conn,
        text: &str,
        voice: Option<&Voice>,
        ssml: bool,
    ) -> Result<(), Step> {
        let principal = self.authorized(ROUTE_SYNTHESIZE, Scope::Speech).await?;
        let (model, voice) = self.resolve_voice(&principal, voice).await?;
        let order = SpeechOrder {
            model,
            input: text.to_owned(),
            voice: VoiceChoice::Name(voice),
            instructions: None,
            format: Encoding::Pcm,
            speed: None,
            ssml,
        };
        let mut speech =
            until_revoked(conn, self.services.speak_order(&principal, order)).await??;
        send(conn, &out::audio_start(OUTPUT)).await?;
        loop {
            let piece: Bytes = match until_revoked(conn, speech.next()).await? {
                None => break,
                Some(Ok(piece)) => piece,
                // After `audio-start` the client cannot be told where this audio ends:
                // the error, then the close.
                Some(Err(err)) => return Err(Step::Close(Close::With(err))),
            };
            for chunk in piece.chunks(MAX_CHUNK_BYTES) {
                send(conn, &out::audio_chunk(OUTPUT, chunk.to_vec())).await?;
            }
        }
        send(conn, &out::audio_stop()).await
    }

    /// A Wyoming voice → (model, voice name): `model/voice`, a bare voice for the listener's
    /// `tts_model`, a language (the first voice of the model that speaks it), or nothing
    /// (the model's first voice).
    async fn resolve_voice(
        &self,
        principal: &Principal,
        voice: Option<&Voice>,
    ) -> Result<(String, String), Error> {
        if let Some(name) = voice.and_then(|v| v.name.as_deref()) {
            return Ok(match name.split_once(MODEL_VOICE_SEPARATOR) {
                Some((model, voice)) => (model.to_owned(), voice.to_owned()),
                None => (self.config.tts_model.clone(), name.to_owned()),
            });
        }
        let model = self.config.tts_model.clone();
        let (voices, _) = self.services.voices_for(principal).await?;
        let wanted = voice
            .and_then(|v| v.language.as_deref())
            .map(|l| l.replace('_', "-").to_ascii_lowercase());
        let pick = voices
            .iter()
            .filter(|v| v.models.contains(&model))
            .find(|v| {
                wanted.as_deref().is_none_or(|w| {
                    let lang = v.language.to_ascii_lowercase();
                    lang == w
                        || lang.starts_with(&format!("{w}-"))
                        || w.starts_with(&format!("{lang}-"))
                })
            })
            .ok_or_else(|| {
                Error::invalid(
                    "voice",
                    Code::VoiceNotFound,
                    "No voice of this listener's model speaks that language.",
                )
            })?;
        Ok((model, pick.id.clone()))
    }

    /// Adds streamed text; speaks every sentence it completes.
    async fn stream_chunk(
        &self,
        conn: &mut Conn,
        stream: &mut Streaming,
        text: &str,
    ) -> Result<(), Step> {
        stream.pending.push_str(text);
        let (complete, rest) = if stream.ssml {
            (Vec::new(), std::mem::take(&mut stream.pending))
        } else {
            complete_sentences(&stream.pending)
        };
        stream.pending = rest;
        if stream.pending.chars().count() > self.config.limits.max_pending_chars {
            return Err(Step::Close(Close::With(Error::refused(
                Code::InputTooLong,
                format!(
                    "Streamed text waiting to be spoken ran past {} characters.",
                    self.config.limits.max_pending_chars
                ),
            ))));
        }
        for sentence in complete {
            self.speak_sentence(conn, &sentence, stream.voice.as_ref(), false)
                .await?;
        }
        Ok(())
    }

    /// Speaks what is left, then `synthesize-stopped`.
    async fn stream_stop(&self, conn: &mut Conn, stream: Streaming) -> Result<(), Step> {
        let rest = stream.pending.trim();
        if !rest.is_empty() {
            self.speak_sentence(conn, rest, stream.voice.as_ref(), stream.ssml)
                .await?;
        }
        send(conn, &out::synthesize_stopped()).await
    }

    /// One sentence of a streamed synthesis: a refusal (a spent quota, a rate limit) is an
    /// `error` event and the stream goes on with the next sentence; a closing condition
    /// closes.
    async fn speak_sentence(
        &self,
        conn: &mut Conn,
        sentence: &str,
        voice: Option<&Voice>,
        ssml: bool,
    ) -> Result<(), Step> {
        match self.synthesize(conn, sentence, voice, ssml).await {
            Err(Step::Refused(err)) => {
                self.send_error(conn, &err).await;
                Ok(())
            }
            other => other,
        }
    }

    fn default_utterance(&self) -> Utterance {
        Utterance {
            model: self.config.asr_model.clone(),
            language: None,
            format: None,
            samples: Vec::new(),
            deadline: Instant::now() + Duration::from_secs(self.config.limits.utterance_secs),
        }
    }

    /// `transcribe`: the model and language of the next utterance. A key that may not
    /// transcribe is refused now (audited), before any audio is taken.
    async fn transcribe_request(
        &self,
        name: Option<String>,
        language: Option<String>,
    ) -> Result<Utterance, Error> {
        let mut u = self.default_utterance();
        if let Some(name) = name.filter(|n| n != PROGRAM) {
            u.model = name;
        }
        u.language = language.map(|l| l.split(['_', '-']).next().unwrap_or("").to_owned());
        let principal = self.principal(ROUTE_TRANSCRIBE).await?;
        if !principal.has(Scope::Transcription) {
            // Refused (and audited) by the same check the request itself would meet.
            if let Err(refusal) = self
                .services
                .authorize(&principal, ROUTE_TRANSCRIBE, Scope::Transcription, None)
                .await
            {
                return Err(refusal.error);
            }
        }
        Ok(u)
    }

    fn audio_chunk(
        &self,
        u: &mut Utterance,
        format: AudioFormat,
        audio: &[u8],
    ) -> Result<(), Step> {
        let expected = *u.format.get_or_insert(format);
        if format.rate != expected.rate {
            return Err(Step::Close(Close::With(Error::invalid(
                "rate",
                Code::UnsupportedSampleRate,
                "Every audio-chunk of an utterance must have the rate of its audio-start.",
            ))));
        }
        u.samples.extend(
            pcm::to_mono(audio, format)
                .into_iter()
                .map(|s| (s * 32_767.0).round() as i16),
        );
        let max_secs = self.config.limits.max_audio_secs;
        let secs = u.samples.len() as f64 / f64::from(expected.rate);
        if secs > f64::from(max_secs) {
            return Err(Step::Close(Close::With(Error::invalid(
                "audio",
                Code::AudioTooLong,
                format!("An utterance may carry at most {max_secs} s of audio."),
            ))));
        }
        Ok(())
    }

    /// `audio-stop`: transcribes what was heard; `transcript-start`, a `transcript-chunk`
    /// per segment, `transcript-stop`, then `transcript` with the whole text (the chunks
    /// concatenated).
    async fn finish_utterance(&self, conn: &mut Conn, u: Utterance) -> Result<(), Step> {
        let principal = self
            .authorized(ROUTE_TRANSCRIBE, Scope::Transcription)
            .await?;
        let Some(format) = u.format else {
            return Err(Step::Refused(Error::refused(
                Code::InvalidEvent,
                "`audio-stop` without audio.",
            )));
        };
        let order = TranscriptionOrder {
            model: u.model,
            language: u.language,
            timestamps: true,
            ..TranscriptionOrder::default()
        };
        let job = self
            .services
            .prepare_transcription(&principal, order)
            .await?;
        let samples = u.samples.iter().map(|&s| f32::from(s) / 32_768.0).collect();
        drop(u.samples);
        let heard = until_revoked(
            conn,
            self.services.transcribe(
                &principal,
                job,
                AudioInput::Samples {
                    samples,
                    rate: format.rate,
                },
            ),
        )
        .await??;
        let transcript = heard.transcript;
        let language = transcript.language.as_deref();
        // The chunks add up to the transcript: segments after the first carry the space
        // that separates them.
        let mut chunks: Vec<String> = transcript
            .segments
            .iter()
            .map(|s| s.text.trim())
            .filter(|t| !t.is_empty())
            .enumerate()
            .map(|(i, t)| {
                if i == 0 {
                    t.to_owned()
                } else {
                    format!(" {t}")
                }
            })
            .collect();
        if chunks.is_empty() {
            chunks.push(transcript.text.trim().to_owned());
        }
        send(conn, &out::transcript_start(language)).await?;
        for chunk in &chunks {
            send(conn, &out::transcript_chunk(chunk)).await?;
        }
        send(conn, &out::transcript_stop()).await?;
        send(conn, &out::transcript(&chunks.concat(), language)).await
    }

    async fn send_error(&self, conn: &mut Conn, err: &Error) {
        let code = err.code().as_str().unwrap_or("server_error");
        self.services
            .metrics
            .wyoming_errors
            .inc(&self.listener, code);
        if matches!(err, Error::Internal(_) | Error::Upstream(_)) {
            tracing::warn!(listener = %self.listener, error = %err, source = ?std::error::Error::source(err), "Wyoming request failed");
        }
        let _ = send(conn, &out::error(&err.to_string(), code)).await;
    }
}

/// A handled event that did not succeed.
enum Step {
    /// An `error` event; the conversation goes on.
    Refused(Error),
    /// The connection ends (after an `error` event, if any).
    Close(Close),
}

impl From<Error> for Step {
    fn from(err: Error) -> Self {
        Step::Refused(err)
    }
}

fn event_error(err: &EventError) -> Error {
    let code = match err {
        EventError::Rate => Code::UnsupportedSampleRate,
        EventError::Channels => Code::UnsupportedChannels,
        EventError::Width | EventError::PartialFrame => Code::InvalidAudio,
        EventError::Missing(_) | EventError::Invalid(_) => Code::InvalidEvent,
    };
    Error::refused(code, err.to_string())
}

/// The sentences `text` completes, and what is left waiting for an end. A sentence is
/// complete when more text follows it, or when it ends the text with its punctuation and
/// whitespace after it.
fn complete_sentences(text: &str) -> (Vec<String>, String) {
    let mut pieces = sentences::split(text);
    let Some(last) = pieces.last().cloned() else {
        return (Vec::new(), text.to_owned());
    };
    let ended = text.ends_with(char::is_whitespace)
        && last.ends_with([
            '.', '!', '?', '…', '。', '！', '？', '"', '\'', ')', '”', '’', '»',
        ]);
    if ended {
        return (pieces, String::new());
    }
    pieces.pop();
    let rest = text
        .rfind(last.as_str())
        .map_or_else(|| last.clone(), |at| text[at..].to_owned());
    (pieces, rest)
}

/// Why reading the next frame stopped.
enum ReadError {
    Frame(FrameError),
    Io,
    Deadline,
    Revoked(Close),
    Stopped,
}

/// `work`, unless the bound key stops working first (then the connection closes with the
/// key's refusal; dropping `work` is how a service call learns its caller left).
async fn until_revoked<T>(
    conn: &mut Conn,
    work: impl std::future::Future<Output = T>,
) -> Result<T, Step> {
    if let Some(close) = conn.revocation() {
        return Err(Step::Close(close));
    }
    tokio::select! {
        done = work => Ok(done),
        Ok(()) = conn.revoked.changed() => {
            Err(Step::Close(conn.revocation().unwrap_or(Close::Gone)))
        }
    }
}

/// The next frame, read until `deadline`; `None` when the client closed the connection
/// between frames.
async fn next_frame(
    conn: &mut Conn,
    limits: &Limits,
    deadline: Instant,
) -> Result<Option<Frame>, ReadError> {
    loop {
        if let Some(close) = conn.revocation() {
            return Err(ReadError::Revoked(close));
        }
        // A frame whose size is known is decoded once all of it is here, not at every read.
        if conn.want.is_none_or(|want| conn.buf.len() >= want) {
            match frame::decode(&conn.buf, limits) {
                Ok(Some((frame, used))) => {
                    conn.buf.drain(..used);
                    conn.want = None;
                    return Ok(Some(frame));
                }
                Ok(None) => {
                    conn.want = frame::frame_len(&conn.buf, limits).map_err(ReadError::Frame)?;
                }
                Err(err) => return Err(ReadError::Frame(err)),
            }
        }
        if conn.buf.capacity() - conn.buf.len() < 4096 {
            conn.buf.reserve(16 * 1024);
        }
        let between_frames = conn.buf.is_empty();
        tokio::select! {
            read = tokio::time::timeout_at(deadline, conn.reader.read_buf(&mut conn.buf)) => {
                match read {
                    Err(_) => return Err(ReadError::Deadline),
                    Ok(Err(_)) => return Err(ReadError::Io),
                    Ok(Ok(0)) => return Ok(None),
                    Ok(Ok(_)) => {}
                }
            }
            Ok(()) = conn.revoked.changed() => {}
            Ok(()) = conn.stopped.changed(), if between_frames => return Err(ReadError::Stopped),
        }
    }
}

/// After an `error` event: reads (and drops) what the client is still sending, for at most
/// a second and 1 MiB, so that closing does not answer its unread bytes with a reset that
/// could discard the `error` event before the client has read it.
async fn linger(reader: &mut OwnedReadHalf) {
    let drain = async {
        let mut scratch = vec![0u8; 16 * 1024];
        let mut left = 1024 * 1024usize;
        while left > 0 {
            match reader.read(&mut scratch).await {
                Ok(0) | Err(_) => break,
                Ok(n) => left = left.saturating_sub(n),
            }
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(1), drain).await;
}

/// Writes one frame; a client that stops reading for long is dropped.
async fn send(conn: &mut Conn, frame: &Frame) -> Result<(), Step> {
    let bytes = frame::encode(frame);
    match tokio::time::timeout(Duration::from_secs(30), conn.writer.write_all(&bytes)).await {
        Ok(Ok(())) => Ok(()),
        _ => Err(Step::Close(Close::Gone)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streamed_text_is_spoken_sentence_by_sentence() {
        assert_eq!(
            complete_sentences("Hello there. How are"),
            (vec!["Hello there.".to_owned()], "How are".to_owned())
        );
        assert_eq!(
            complete_sentences("One. Two! "),
            (vec!["One.".to_owned(), "Two!".to_owned()], String::new())
        );
        // A full stop at the very end may still be an abbreviation or a number: wait.
        assert_eq!(
            complete_sentences("It is 3."),
            (Vec::new(), "It is 3.".to_owned())
        );
        assert_eq!(complete_sentences(""), (Vec::new(), String::new()));
    }
}
