//! One realtime transcription session: client events in, turns recognised in order, server
//! events out.
//!
//! Three parts run together. The reader handles client events one at a time (each audio
//! append is metered by `Services::live_audio` before it is buffered, and run through
//! voice activity detection when the session has `server_vad`). Committed turns go to a
//! recogniser task that transcribes them one after another, so audio keeps flowing while a
//! turn is recognised. Server events go through one bounded queue to the writer: a client
//! that stops reading fills it, and the session is closed (memory stays bounded).
//!
//! The session ends when the client closes, after `idle_secs` without a client event (pings
//! do not count), at `max_session_secs`, when its key stops working (checked four times per
//! authentication cache lifetime), when its quota is spent, when the store has been away
//! long enough for its reservation to lapse, when the process stops, or on a protocol
//! error; every end but the client's own is an `error` event first. Then it is settled:
//! one request and the audio it received, less what could not be recognised.

use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use futures::{SinkExt as _, StreamExt as _};
use serde_json::{Value, json};
use tokio::sync::{Notify, mpsc};
use tokio::time::Instant;
use voxgate_engine::TextSink;

use super::wire::{self, InputFormat, SessionConfig};
use crate::audio::Resampler;
use crate::audio::g711;
use crate::audio::vad::{self, Turn, Turns};
use crate::error::{Code, Error};
use crate::identity::auth::Principal;
use crate::service::Services;
use crate::service::live::{LiveSession, Unrecognised};
use crate::service::transcription::TranscriptionJob;

/// The route a session's checks are made for.
pub const ROUTE: &str = "/v1/realtime";

/// Shortest turn a client may commit (OpenAI's bound).
const MIN_COMMIT_MS: usize = 100;
/// Turns waiting for the recogniser before a new one is failed instead of queued.
const MAX_QUEUED_TURNS: usize = 4;
/// Client events per second before the session is closed.
const MAX_EVENTS_PER_SEC: u32 = 400;

/// What the handler hands the session once the connection is upgraded.
pub struct Opened {
    /// `sess_…`: the client secret's, or random.
    pub session_id: String,
    pub services: Arc<Services>,
    pub principal: Principal,
    pub config: SessionConfig,
    pub job: TranscriptionJob,
    pub live: LiveSession,
    pub source: IpAddr,
}

/// Server events on their way to the writer: numbered, and never blocking the sender.
#[derive(Clone)]
struct Out {
    tx: mpsc::Sender<Message>,
    next: Arc<AtomicU64>,
    /// Set (and `overflowed` notified) when the queue was full: the client is not reading.
    full: Arc<AtomicBool>,
    overflowed: Arc<Notify>,
}

impl Out {
    fn id(&self, prefix: &str) -> String {
        format!("{prefix}_{:06}", self.next.fetch_add(1, Ordering::Relaxed))
    }

    /// Queues `event` (its `event_id` added).
    fn send(&self, mut event: Value) {
        if let Some(fields) = event.as_object_mut() {
            fields.insert("event_id".into(), Value::String(self.id("event")));
        }
        let text = Utf8Bytes::from(event.to_string());
        if self.tx.try_send(Message::Text(text)).is_err() && !self.full.swap(true, Ordering::SeqCst)
        {
            self.overflowed.notify_one();
        }
    }

    fn error(&self, err: Error, event_id: Option<&str>) {
        let event = wire::error_event(self.id("event"), err, event_id);
        let text = Utf8Bytes::from(event.to_string());
        if self.tx.try_send(Message::Text(text)).is_err() && !self.full.swap(true, Ordering::SeqCst)
        {
            self.overflowed.notify_one();
        }
    }
}

/// A committed turn on its way to the recogniser.
struct Committed {
    item_id: String,
    /// Mono, 16 kHz.
    samples: Vec<f32>,
    job: TranscriptionJob,
    /// Where the seconds of a turn that is not recognised go.
    unrecognised: Unrecognised,
}

/// Why the reader stopped.
enum End {
    /// The client closed or went away: nothing more to say.
    Gone,
    /// An `error` event, then a close.
    With(Error),
    /// The client does not read: closed at once (there is no room for an `error` event).
    NotReading,
}

/// Audio received since the last commit, at 16 kHz, and what turn detection knows of it.
struct Buffer {
    /// Samples of the uncommitted buffer; `samples[0]` is sample `start` of the session.
    samples: Vec<f32>,
    start: usize,
    /// Session samples received (at 16 kHz).
    total: usize,
    /// Converts the client's rate to 16 kHz.
    resampler: Option<Resampler>,
    resampler_rate: u32,
    /// Samples not yet judged by the detector (less than a frame).
    pending: Vec<f32>,
    vad: Option<voxgate_piper::vad::VadStream>,
    turns: Option<Turns>,
    /// Session sample where the detector's frame count starts.
    turns_origin: usize,
    /// The turn under way: its item id and the session sample it started at (padding
    /// included).
    speaking: Option<(String, usize)>,
}

impl Buffer {
    fn new() -> Self {
        Self {
            samples: Vec::new(),
            start: 0,
            total: 0,
            resampler: None,
            resampler_rate: 0,
            pending: Vec::new(),
            vad: None,
            turns: None,
            turns_origin: 0,
            speaking: None,
        }
    }

    /// Empties the buffer and restarts turn detection (a commit, a clear, new settings).
    fn reset(&mut self, config: &SessionConfig) {
        self.samples.clear();
        self.resampler = None;
        self.start = self.total;
        self.pending.clear();
        self.speaking = None;
        self.turns = config.turn_detection.map(Turns::new);
        self.turns_origin = self.total;
        self.vad = None;
    }

    fn ms(samples: usize) -> u64 {
        (samples * 1000 / vad::RATE) as u64
    }
}

struct Reader {
    services: Arc<Services>,
    principal: Principal,
    config: SessionConfig,
    job: TranscriptionJob,
    live: LiveSession,
    out: Out,
    turns: mpsc::Sender<Committed>,
    buffer: Buffer,
    /// The item committed last (`previous_item_id` of the next).
    previous_item: Option<String>,
    window: (Instant, u32),
}

/// Serves an upgraded connection until it ends, then settles the session.
pub async fn run(socket: WebSocket, opened: Opened) {
    let Opened {
        session_id,
        services,
        principal,
        config,
        job,
        live,
        source,
    } = opened;
    let limits = services.config.transcription.realtime.clone();
    let (mut sink, mut stream) = socket.split();
    let (tx, mut rx) = mpsc::channel::<Message>(limits.send_buffer_events);
    let out = Out {
        tx,
        next: Arc::new(AtomicU64::new(1)),
        full: Arc::new(AtomicBool::new(false)),
        overflowed: Arc::new(Notify::new()),
    };
    let writer = tokio::spawn(async move {
        while let Some(message) = rx.recv().await {
            let closing = matches!(message, Message::Close(_));
            if sink.send(message).await.is_err() || closing {
                break;
            }
        }
        let _ = sink.close().await;
    });
    let (turn_tx, turn_rx) = mpsc::channel::<Committed>(MAX_QUEUED_TURNS);
    let stopping = Arc::new(AtomicBool::new(false));
    let recogniser = tokio::spawn(recognise(
        Arc::clone(&services),
        turn_rx,
        out.clone(),
        Arc::clone(&stopping),
    ));
    let expires_at = crate::util::now() + i64::try_from(limits.max_session_secs).unwrap_or(0);
    let mut session = config.json();
    session["id"] = json!(session_id);
    session["expires_at"] = json!(expires_at);
    out.send(json!({"type": "session.created", "session": session}));
    let mut buffer = Buffer::new();
    buffer.reset(&config);
    let mut reader = Reader {
        services: Arc::clone(&services),
        principal,
        config,
        job,
        live,
        out: out.clone(),
        turns: turn_tx,
        buffer,
        previous_item: None,
        window: (Instant::now(), 0),
    };
    let deadline = Instant::now() + Duration::from_secs(limits.max_session_secs);
    let idle = Duration::from_secs(limits.idle_secs);
    let keyid = reader.principal.keyid.clone();
    let end = {
        let events = reader.read(&mut stream, deadline, idle, &session_id, expires_at);
        let watchdog = watch_key(&services, &keyid, source);
        tokio::select! {
            biased;
            // A permit is stored when nobody waits yet: an overflow is never missed.
            () = out.overflowed.notified() => End::NotReading,
            () = services.live_stopping() => End::With(Error::limited(Code::ShuttingDown, Duration::from_secs(5))),
            err = watchdog => End::With(err),
            end = events => end,
        }
    };
    // Turns not yet started are dropped; the one being recognised finishes (a blocking
    // recogniser cannot be interrupted) before the session's slots are given back.
    stopping.store(true, Ordering::SeqCst);
    let Reader { live, turns, .. } = reader;
    drop(turns);
    let not_reading = matches!(end, End::NotReading);
    let closing = matches!(end, End::With(_));
    match end {
        End::With(err) => {
            let code = err.code();
            if matches!(err, Error::Internal(_)) {
                tracing::warn!(error = %err, source = ?std::error::Error::source(&err), "realtime session failed");
            }
            out.error(err, None);
            out.send_close(close_code(code), code.as_str().unwrap_or("server_error"));
        }
        End::NotReading => {
            tracing::info!(target: "voxgate::security", event = "realtime_client_not_reading", "realtime session closed: the client stopped reading");
        }
        End::Gone => {}
    }
    let mut writer = writer;
    if not_reading {
        // Its socket goes now: the writer may be stuck on a full send buffer.
        writer.abort();
    }
    // The closing handshake: what the client still sends is read (and dropped) until its
    // close frame, so its socket is not reset before it reads ours.
    let drain = async {
        if closing {
            let _ = tokio::time::timeout(Duration::from_secs(2), async {
                while let Some(Ok(message)) = stream.next().await {
                    if matches!(message, Message::Close(_)) {
                        break;
                    }
                }
            })
            .await;
        }
    };
    let ((), _) = tokio::join!(drain, recogniser);
    let received = services.close_live(live).await;
    tracing::info!(session = %session_id, audio_secs = received, "realtime session ended");
    drop(out);
    if tokio::time::timeout(Duration::from_secs(5), &mut writer)
        .await
        .is_err()
    {
        writer.abort();
    }
}

impl Out {
    fn send_close(&self, code: u16, reason: &str) {
        let frame = CloseFrame {
            code,
            reason: Utf8Bytes::from(reason.to_owned()),
        };
        let _ = self.tx.try_send(Message::Close(Some(frame)));
    }
}

/// The WebSocket close code for an ending error: normal (1000) for idleness, going away
/// (1001) at shutdown, policy (1008) for refusals of the caller, too big (1009), try again
/// later (1013) for limits, internal (1011) otherwise.
fn close_code(code: Code) -> u16 {
    match code {
        // Idleness ends a session normally; a stopping server goes away.
        Code::Timeout => return 1000,
        Code::ShuttingDown => return 1001,
        _ => {}
    }
    match code.spec().status {
        413 => 1009,
        429 | 503 => 1013,
        400..=499 => 1008,
        _ => 1011,
    }
}

/// Returns (with the refusal) once the session's key stops working: revoked, expired, or its
/// account deactivated, seen through the authentication cache.
async fn watch_key(services: &Services, keyid: &str, source: IpAddr) -> Error {
    let every = Duration::from_millis((services.config.auth.cache_ttl_ms / 4).max(50));
    loop {
        tokio::time::sleep(every).await;
        if let Err(err) = services.bound_caller(keyid, source, ROUTE, false).await
            && !matches!(err, Error::Internal(_))
        {
            tracing::info!(target: "voxgate::security", event = "realtime_key_refused", keyid, code = err.code().as_str().unwrap_or("server_error"), "the session's key no longer works; closing the session");
            return err;
        }
    }
}

impl Reader {
    async fn read(
        &mut self,
        stream: &mut futures::stream::SplitStream<WebSocket>,
        deadline: Instant,
        idle: Duration,
        session_id: &str,
        expires_at: i64,
    ) -> End {
        // Only client events keep a session alive: pings and binary frames do not.
        let mut last_event = Instant::now();
        loop {
            let wait = deadline.min(last_event + idle);
            let message = match tokio::time::timeout_at(wait, stream.next()).await {
                Ok(Some(Ok(message))) => message,
                Ok(None) => return End::Gone,
                Ok(Some(Err(err))) => return self.transport_error(&err),
                Err(_) if Instant::now() >= deadline => {
                    return End::With(Error::refused(
                        Code::SessionExpired,
                        "The session reached its maximum length.",
                    ));
                }
                Err(_) => {
                    return End::With(Error::refused(
                        Code::Timeout,
                        format!("No event for {} s: the session is closed.", idle.as_secs()),
                    ));
                }
            };
            if let Some(end) = self.count_event() {
                return end;
            }
            let text = match message {
                Message::Text(text) => text,
                Message::Close(_) => return End::Gone,
                Message::Ping(_) | Message::Pong(_) => continue,
                Message::Binary(_) => {
                    self.out.error(
                        Error::refused(
                            Code::InvalidEvent,
                            "Events are JSON text messages; binary messages are not accepted.",
                        ),
                        None,
                    );
                    continue;
                }
            };
            last_event = Instant::now();
            if let Some(end) = self.event(text.as_str(), session_id, expires_at).await {
                return end;
            }
        }
    }

    fn transport_error(&self, err: &axum::Error) -> End {
        // tungstenite reports a message over the size cap as a capacity error.
        let text = err.to_string();
        if text.contains("too long") || text.contains("too big") || text.contains("Space limit") {
            return End::With(Error::refused(
                Code::EventTooLarge,
                format!(
                    "An event is larger than {} bytes.",
                    self.services.config.transcription.realtime.max_event_bytes
                ),
            ));
        }
        tracing::debug!(error = %text, "realtime connection ended");
        End::Gone
    }

    fn count_event(&mut self) -> Option<End> {
        let (started, count) = &mut self.window;
        if started.elapsed() >= Duration::from_secs(1) {
            *started = Instant::now();
            *count = 0;
        }
        *count += 1;
        (*count > MAX_EVENTS_PER_SEC)
            .then(|| End::With(Error::limited(Code::TooManyEvents, Duration::from_secs(1))))
    }

    /// Handles one client event; `Some` ends the session.
    async fn event(&mut self, text: &str, session_id: &str, expires_at: i64) -> Option<End> {
        let Ok(event) = serde_json::from_str::<Value>(text) else {
            self.out.error(
                Error::refused(Code::InvalidEvent, "The event is not valid JSON."),
                None,
            );
            return None;
        };
        let event_id = event.get("event_id").and_then(Value::as_str);
        let kind = event.get("type").and_then(Value::as_str).unwrap_or("");
        let done = match kind {
            "session.update" => self.update(&event, session_id, expires_at).await,
            "input_audio_buffer.append" => return self.append(&event, event_id).await,
            "input_audio_buffer.commit" => self.commit(),
            "input_audio_buffer.clear" => {
                self.buffer.reset(&self.config);
                self.out.send(json!({"type": "input_audio_buffer.cleared"}));
                Ok(())
            }
            "" => Err(Error::invalid(
                "type",
                Code::InvalidEvent,
                "Every event needs a `type`.",
            )),
            "response.create"
            | "response.cancel"
            | "conversation.item.create"
            | "conversation.item.delete"
            | "conversation.item.retrieve"
            | "conversation.item.truncate"
            | "output_audio_buffer.clear" => Err(Error::invalid(
                "type",
                Code::UnsupportedEvent,
                "A transcription session has no responses or conversation items to change.",
            )),
            _ => Err(Error::invalid(
                "type",
                Code::InvalidEvent,
                "Unknown event type.",
            )),
        };
        if let Err(err) = done {
            self.out.error(err, event_id);
        }
        None
    }

    async fn update(
        &mut self,
        event: &Value,
        session_id: &str,
        expires_at: i64,
    ) -> Result<(), Error> {
        let Some(session) = event.get("session") else {
            return Err(Error::invalid(
                "session",
                Code::MissingRequiredParameter,
                "`session.update` needs a `session`.",
            ));
        };
        let next = self.config.update(session)?;
        if next.turn_detection.is_some() {
            self.services.vad().await?;
        }
        let job = self
            .services
            .prepare_transcription(&self.principal, super::order(&next))
            .await
            .map_err(super::at_transcription)?;
        let detection_changed = next.turn_detection != self.config.turn_detection;
        let format_changed = next.format != self.config.format;
        self.config = next;
        self.job = job;
        if detection_changed || format_changed {
            // Buffered audio stays (a client may switch to manual commits mid-turn); turn
            // detection restarts from here.
            self.buffer.speaking = None;
            self.buffer.turns = self.config.turn_detection.map(Turns::new);
            self.buffer.turns_origin = self.buffer.total;
            self.buffer.pending.clear();
            self.buffer.vad = None;
        }
        let mut session = self.config.json();
        session["id"] = json!(session_id);
        session["expires_at"] = json!(expires_at);
        self.out
            .send(json!({"type": "session.updated", "session": session}));
        Ok(())
    }

    /// `input_audio_buffer.append`: decoded, metered, buffered, run through turn detection.
    async fn append(&mut self, event: &Value, event_id: Option<&str>) -> Option<End> {
        let samples = match self.decode(event) {
            Ok(samples) => samples,
            Err(err) => {
                self.out.error(err, event_id);
                return None;
            }
        };
        if samples.is_empty() {
            return None;
        }
        let rate = self.config.format.rate();
        let secs = samples.len() as f64 / f64::from(rate);
        let max_turn = self.services.config.transcription.realtime.max_turn_secs as usize;
        let incoming = samples.len() * vad::RATE / rate as usize;
        if self.config.turn_detection.is_none()
            && self.buffer.samples.len() + incoming > max_turn * vad::RATE
        {
            self.out.error(
                Error::invalid(
                    "audio",
                    Code::AudioTooLong,
                    format!(
                        "The input audio buffer holds at most {max_turn} s; commit or clear it."
                    ),
                ),
                event_id,
            );
            return None;
        }
        if let Err(err) = self.services.live_audio(&mut self.live, secs).await {
            return Some(End::With(err));
        }
        let resampled = match self.resample(&samples, rate) {
            Ok(resampled) => resampled,
            Err(err) => return Some(End::With(err)),
        };
        if let Err(err) = self.take(resampled).await {
            return Some(End::With(err));
        }
        None
    }

    fn decode(&self, event: &Value) -> Result<Vec<i16>, Error> {
        let Some(audio) = event.get("audio").and_then(Value::as_str) else {
            return Err(Error::invalid(
                "audio",
                Code::MissingRequiredParameter,
                "`input_audio_buffer.append` needs `audio` (base64).",
            ));
        };
        let bytes = BASE64.decode(audio).map_err(|_| {
            Error::invalid("audio", Code::InvalidAudio, "`audio` is not valid base64.")
        })?;
        let format = self.config.format;
        if bytes.len() % format.width() != 0 {
            return Err(Error::invalid(
                "audio",
                Code::InvalidAudio,
                "`audio/pcm` is 16-bit samples: an even number of bytes.",
            ));
        }
        Ok(match format {
            InputFormat::Pcm => bytes
                .chunks_exact(2)
                .map(|b| i16::from_le_bytes([b[0], b[1]]))
                .collect(),
            InputFormat::Pcmu => bytes.iter().copied().map(g711::ulaw).collect(),
            InputFormat::Pcma => bytes.iter().copied().map(g711::alaw).collect(),
        })
    }

    /// The client's samples at 16 kHz, in [-1, 1].
    fn resample(&mut self, samples: &[i16], rate: u32) -> Result<Vec<f32>, Error> {
        let b = &mut self.buffer;
        if b.resampler.is_none() || b.resampler_rate != rate {
            b.resampler = Some(Resampler::new(rate, vad::RATE as u32).map_err(Error::internal)?);
            b.resampler_rate = rate;
        }
        let resampler = b
            .resampler
            .as_mut()
            .ok_or_else(|| Error::internal(std::io::Error::other("no resampler")))?;
        let out = resampler.push(samples).map_err(Error::internal)?;
        Ok(out
            .into_iter()
            .map(|s| f32::from(s) / f32::from(i16::MAX))
            .collect())
    }

    /// Buffers 16 kHz samples and, with server VAD, judges each whole frame.
    async fn take(&mut self, samples: Vec<f32>) -> Result<(), Error> {
        let Some(settings) = self.config.turn_detection else {
            self.buffer.total += samples.len();
            self.buffer.samples.extend(samples);
            return Ok(());
        };
        self.buffer.pending.extend_from_slice(&samples);
        self.buffer.total += samples.len();
        self.buffer.samples.extend(samples);
        let whole = self.buffer.pending.len() / vad::FRAME * vad::FRAME;
        if whole > 0 {
            let frames: Vec<f32> = self.buffer.pending.drain(..whole).collect();
            let stream = match self.buffer.vad.take() {
                Some(stream) => stream,
                None => self.services.vad().await?.stream(),
            };
            let (stream, probabilities) = self
                .services
                .encoders
                .run(move || {
                    let mut stream = stream;
                    let p: Result<Vec<f32>, _> =
                        frames.chunks(vad::FRAME).map(|f| stream.push(f)).collect();
                    (stream, p)
                })
                .await?;
            self.buffer.vad = Some(stream);
            for probability in probabilities? {
                let turn = match self.buffer.turns.as_mut() {
                    Some(turns) => turns.push(probability),
                    None => break,
                };
                match turn {
                    Some(Turn::Started(at)) => self
                        .speech_started(self.buffer.turns_origin + at, settings.prefix_padding_ms),
                    // The turn keeps some of the silence after it, never more than the
                    // silence that ended it (the next turn's padding starts there).
                    Some(Turn::Stopped(at)) => self.speech_stopped(
                        self.buffer.turns_origin + at,
                        settings.prefix_padding_ms.min(settings.silence_duration_ms),
                    ),
                    None => {}
                }
            }
        }
        let max_turn =
            self.services.config.transcription.realtime.max_turn_secs as usize * vad::RATE;
        match &self.buffer.speaking {
            // A turn as long as Whisper hears is cut here; detection goes on.
            Some((_, started)) if self.buffer.total - started >= max_turn => {
                let end = self.buffer.total;
                self.speech_stopped(end, 0);
                self.buffer.turns = self.config.turn_detection.map(Turns::new);
                self.buffer.turns_origin = self.buffer.total - self.buffer.pending.len();
            }
            Some(_) => {}
            None => {
                // Outside a turn only the padding a turn would start with is kept.
                let keep = settings.prefix_padding_ms as usize * vad::RATE / 1000 + vad::FRAME;
                let b = &mut self.buffer;
                if b.samples.len() > keep {
                    let drop = b.samples.len() - keep;
                    b.samples.drain(..drop);
                    b.start += drop;
                }
            }
        }
        Ok(())
    }

    fn speech_started(&mut self, at: usize, padding_ms: u32) {
        let item_id = self.out.id("item");
        let from = at
            .saturating_sub(padding_ms as usize * vad::RATE / 1000)
            .max(self.buffer.start);
        self.out.send(json!({
            "type": "input_audio_buffer.speech_started",
            "audio_start_ms": Buffer::ms(at),
            "item_id": item_id,
        }));
        self.buffer.speaking = Some((item_id, from));
    }

    fn speech_stopped(&mut self, at: usize, padding_ms: u32) {
        let Some((item_id, from)) = self.buffer.speaking.take() else {
            return;
        };
        let end = (at + padding_ms as usize * vad::RATE / 1000).min(self.buffer.total);
        self.out.send(json!({
            "type": "input_audio_buffer.speech_stopped",
            "audio_end_ms": Buffer::ms(at),
            "item_id": item_id,
        }));
        let b = &mut self.buffer;
        let lo = from.saturating_sub(b.start).min(b.samples.len());
        let hi = end.saturating_sub(b.start).min(b.samples.len());
        let samples = b.samples[lo..hi].to_vec();
        b.samples.drain(..hi);
        b.start += hi;
        self.committed(item_id, samples);
    }

    /// `input_audio_buffer.commit`: the whole buffer becomes a turn.
    fn commit(&mut self) -> Result<(), Error> {
        // What the resampler still holds belongs to this turn.
        if let Some(mut resampler) = self.buffer.resampler.take() {
            let tail = resampler.finish().map_err(Error::internal)?;
            let b = &mut self.buffer;
            b.total += tail.len();
            b.samples
                .extend(tail.into_iter().map(|s| f32::from(s) / f32::from(i16::MAX)));
        }
        let b = &mut self.buffer;
        if b.samples.len() < MIN_COMMIT_MS * vad::RATE / 1000 {
            return Err(Error::refused(
                Code::InputAudioBufferCommitEmpty,
                format!(
                    "The input audio buffer holds {} ms; at least {MIN_COMMIT_MS} ms are needed.",
                    Buffer::ms(b.samples.len())
                ),
            ));
        }
        let item_id = match b.speaking.take() {
            Some((item_id, _)) => item_id,
            None => self.out.id("item"),
        };
        let samples = std::mem::take(&mut self.buffer.samples);
        self.buffer.reset(&self.config);
        self.committed(item_id, samples);
        Ok(())
    }

    fn committed(&mut self, item_id: String, samples: Vec<f32>) {
        self.out.send(json!({
            "type": "input_audio_buffer.committed",
            "item_id": item_id,
            "previous_item_id": self.previous_item,
        }));
        self.previous_item = Some(item_id.clone());
        let turn = Committed {
            item_id: item_id.clone(),
            samples,
            job: self.job.clone(),
            unrecognised: self.live.unrecognised(),
        };
        if let Err(refused) = self.turns.try_send(turn) {
            let turn = refused.into_inner();
            turn.unrecognised.add(turn.secs());
            self.out.send(failed(
                &item_id,
                Error::limited(Code::Overloaded, Duration::from_secs(1)),
            ));
        }
    }
}

/// The recogniser: committed turns, one at a time, in order.
async fn recognise(
    services: Arc<Services>,
    mut turns: mpsc::Receiver<Committed>,
    out: Out,
    stopping: Arc<AtomicBool>,
) {
    while let Some(turn) = turns.recv().await {
        let secs = turn.secs();
        if stopping.load(Ordering::SeqCst) {
            // Dropped unheard: not charged.
            turn.unrecognised.add(secs);
            continue;
        }
        let streamed = Arc::new(Mutex::new(false));
        let sink = {
            let (out, item_id, streamed) =
                (out.clone(), turn.item_id.clone(), Arc::clone(&streamed));
            TextSink::new(move |text| {
                let mut sent = streamed.lock().unwrap_or_else(|e| e.into_inner());
                // Pieces are joined by one space, so the deltas add up to the transcript.
                let delta = if *sent {
                    format!(" {text}")
                } else {
                    text.to_owned()
                };
                *sent = true;
                out.send(json!({
                    "type": "conversation.item.input_audio_transcription.delta",
                    "item_id": item_id,
                    "content_index": 0,
                    "delta": delta,
                }));
            })
        };
        let heard = services
            .recognise_turn(&turn.job, turn.samples, vad::RATE as u32, Some(sink))
            .await;
        match heard {
            Ok(transcript) => {
                let streamed = *streamed.lock().unwrap_or_else(|e| e.into_inner());
                if !streamed && !transcript.text.is_empty() {
                    out.send(json!({
                        "type": "conversation.item.input_audio_transcription.delta",
                        "item_id": turn.item_id,
                        "content_index": 0,
                        "delta": transcript.text,
                    }));
                }
                out.send(json!({
                    "type": "conversation.item.input_audio_transcription.completed",
                    "item_id": turn.item_id,
                    "content_index": 0,
                    "transcript": transcript.text,
                    "usage": wire::duration_usage(secs),
                }));
            }
            Err(err) => {
                if matches!(err, Error::Internal(_)) {
                    tracing::warn!(error = %err, "a realtime turn failed");
                }
                turn.unrecognised.add(secs);
                out.send(failed(&turn.item_id, err));
            }
        }
    }
}

impl Committed {
    fn secs(&self) -> f64 {
        self.samples.len() as f64 / vad::RATE as f64
    }
}

fn failed(item_id: &str, err: Error) -> Value {
    json!({
        "type": "conversation.item.input_audio_transcription.failed",
        "item_id": item_id,
        "content_index": 0,
        "error": wire::error_body(err),
    })
}
