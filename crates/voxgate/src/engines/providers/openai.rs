//! OpenAI-compatible upstreams (OpenAI, Kokoro-FastAPI, speaches, Chatterbox and Qwen3-TTS
//! servers): `POST {base}/audio/speech` streamed as raw PCM (or a WAV file), or relayed in
//! the client's format (`pcm` at 24 kHz, `mp3`) as it arrives, and
//! `POST {base}/audio/transcriptions` with a WAV upload.

use futures::StreamExt;
use reqwest::Url;
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use voxgate_engine::{
    EncodedStream, EngineError, PcmStream, RelayFormat, SynthesisRequest, Synthesizer, Task,
    Transcriber, Transcript, TranscriptSegment, TranscriptWord, TranscriptionFuture,
    TranscriptionRequest, VoiceInfo, WHISPER_LANGUAGES,
};

use super::{check_base_url, check_content_type, check_status, endpoint, read_capped, upstream};
use crate::config::{OpenAiConfig, RemoteAudio};

/// Text-to-speech through an OpenAI-compatible server.
#[derive(Debug)]
pub struct OpenAiSpeech {
    id: String,
    client: reqwest::Client,
    url: Url,
    model: String,
    key: Option<SecretString>,
    voices: Vec<VoiceInfo>,
    audio: RemoteAudio,
    sample_rate: u32,
    /// What it may relay (see `OpenAiConfig::relay`).
    relays: Vec<RelayFormat>,
    max_bytes: u64,
    first_byte: std::time::Duration,
}

impl OpenAiSpeech {
    pub fn new(id: &str, config: &OpenAiConfig) -> Result<Self, String> {
        let base = check_base_url(&config.base_url, &config.http)?;
        Ok(Self {
            id: id.to_owned(),
            client: super::client(id, &config.http).map_err(|e| e.to_string())?,
            url: endpoint(&base, &["audio", "speech"]),
            model: config.model.clone(),
            key: config.api_key.clone(),
            voices: super::remote_voices(config.voices.values()),
            audio: config.audio,
            sample_rate: config.sample_rate,
            // PCM only from an upstream that sends it (`audio = "pcm"`) at the output rate.
            relays: match (config.relay, config.audio, config.sample_rate) {
                (false, _, _) => Vec::new(),
                (true, RemoteAudio::Pcm, 24_000) => vec![RelayFormat::Pcm24k, RelayFormat::Mp3],
                (true, _, _) => vec![RelayFormat::Mp3],
            },
            max_bytes: config.http.max_response_bytes,
            first_byte: config.http.first_byte_timeout(),
        })
    }
}

#[derive(serde::Serialize)]
struct SpeechBody<'a> {
    model: &'a str,
    input: &'a str,
    voice: &'a str,
    response_format: &'static str,
    speed: f32,
}

impl Synthesizer for OpenAiSpeech {
    fn id(&self) -> &str {
        &self.id
    }

    fn voices(&self) -> &[VoiceInfo] {
        &self.voices
    }

    fn remote(&self) -> bool {
        true
    }

    fn synthesize(&self, request: SynthesisRequest) -> Result<PcmStream, EngineError> {
        let call = self.call(
            &request,
            match self.audio {
                RemoteAudio::Pcm => "pcm",
                RemoteAudio::Wav => "wav",
            },
        )?;
        let (id, audio, rate, max, first_byte) = (
            self.id.clone(),
            self.audio,
            self.sample_rate,
            self.max_bytes,
            self.first_byte,
        );
        // Nothing is sent until the stream is polled.
        let answer = async move {
            let response = super::send_within(call, first_byte).await?;
            let response = check_status(&id, response).await?;
            match audio {
                RemoteAudio::Pcm => {
                    check_content_type(&id, &response, &["audio/*", "application/octet-stream"])?;
                    super::pcm_stream(id, response, rate, max)
                }
                RemoteAudio::Wav => {
                    check_content_type(&id, &response, &["audio/*", "application/octet-stream"])?;
                    let bytes = read_capped(&id, response, max).await?;
                    let chunk = super::decode_wav(&id, &bytes)?;
                    Ok(futures::stream::once(async move { Ok(chunk) }).boxed())
                }
            }
        };
        Ok(Box::pin(futures::stream::once(answer).flat_map(
            |result| match result {
                Ok(stream) => stream,
                Err(e) => futures::stream::once(async move { Err(e) }).boxed(),
            },
        )))
    }

    fn relay_formats(&self) -> &[RelayFormat] {
        &self.relays
    }

    fn relay(
        &self,
        request: SynthesisRequest,
        format: RelayFormat,
    ) -> Result<EncodedStream, EngineError> {
        if !self.relays.contains(&format) {
            return Err(EngineError::Unsupported(
                "this engine does not relay this format",
            ));
        }
        let (name, accepted): (&str, &[&str]) = match format {
            RelayFormat::Pcm24k => (
                "pcm",
                &["audio/pcm", "audio/l16", "application/octet-stream"],
            ),
            RelayFormat::Mp3 => (
                "mp3",
                &["audio/mpeg", "audio/mp3", "application/octet-stream"],
            ),
        };
        let call = self.call(&request, name)?;
        let (id, max, first_byte) = (self.id.clone(), self.max_bytes, self.first_byte);
        // Nothing is sent until the stream is polled.
        let answer = async move {
            let response = super::send_within(call, first_byte).await?;
            let response = check_status(&id, response).await?;
            check_content_type(&id, &response, accepted)?;
            super::relay_body(id, response, max, format)
        };
        Ok(Box::pin(futures::stream::once(answer).flat_map(
            |result| match result {
                Ok(stream) => stream,
                Err(e) => futures::stream::once(async move { Err(e) }).boxed(),
            },
        )))
    }
}

impl OpenAiSpeech {
    /// The upstream call for `request` in `response_format`.
    fn call(
        &self,
        request: &SynthesisRequest,
        response_format: &'static str,
    ) -> Result<reqwest::RequestBuilder, EngineError> {
        if !self.voices.iter().any(|v| v.id == request.voice) {
            return Err(EngineError::UnknownVoice);
        }
        let body = SpeechBody {
            model: &self.model,
            input: &request.text,
            voice: &request.voice,
            response_format,
            speed: request.speed,
        };
        let mut call = self.client.post(self.url.clone()).json(&body);
        if let Some(key) = &self.key {
            call = call.bearer_auth(key.expose_secret());
        }
        Ok(call)
    }
}

/// Speech-to-text through an OpenAI-compatible server (`whisper-1`, speaches, …).
#[derive(Debug)]
pub struct OpenAiTranscriber {
    id: String,
    client: reqwest::Client,
    url: Url,
    translate_url: Url,
    model: String,
    key: Option<SecretString>,
    languages: Vec<&'static str>,
    max_bytes: u64,
}

/// The sample rate voxgate uploads at (what Whisper listens at).
const STT_RATE: u32 = 16_000;

impl OpenAiTranscriber {
    pub fn new(id: &str, config: &OpenAiConfig) -> Result<Self, String> {
        let base = check_base_url(&config.base_url, &config.http)?;
        let languages = if config.languages.is_empty() {
            WHISPER_LANGUAGES.to_vec()
        } else {
            // Leaked once at start-up so the trait can hand out `&[&str]`.
            config
                .languages
                .iter()
                .map(|l| &*Box::leak(l.clone().into_boxed_str()))
                .collect()
        };
        Ok(Self {
            id: id.to_owned(),
            client: super::client(id, &config.http).map_err(|e| e.to_string())?,
            url: endpoint(&base, &["audio", "transcriptions"]),
            translate_url: endpoint(&base, &["audio", "translations"]),
            model: config.model.clone(),
            key: config.api_key.clone(),
            languages,
            max_bytes: config.http.max_response_bytes,
        })
    }
}

#[derive(Deserialize)]
struct Answer {
    text: String,
    #[serde(default)]
    language: Option<String>,
    #[serde(default)]
    segments: Vec<AnswerSegment>,
    #[serde(default)]
    words: Vec<AnswerWord>,
}

#[derive(Deserialize)]
struct AnswerSegment {
    start: f32,
    end: f32,
    text: String,
}

#[derive(Deserialize)]
struct AnswerWord {
    word: String,
    start: f32,
    end: f32,
}

impl Answer {
    fn into_transcript(self) -> Transcript {
        let mut segments: Vec<TranscriptSegment> = self
            .segments
            .into_iter()
            .map(|s| TranscriptSegment {
                start: s.start,
                end: s.end,
                text: s.text.trim().to_owned(),
                words: Vec::new(),
            })
            .collect();
        // Words are listed for the whole clip; each goes to the segment that holds it.
        for w in self.words {
            let word = TranscriptWord {
                word: w.word.trim().to_owned(),
                start: w.start,
                end: w.end,
            };
            if let Some(seg) = segments
                .iter_mut()
                .find(|s| word.start >= s.start && word.start < s.end.max(s.start + 0.001))
                .or(None)
            {
                seg.words.push(word);
            } else if let Some(last) = segments.last_mut() {
                last.words.push(word);
            }
        }
        Transcript {
            text: self.text.trim().to_owned(),
            language: self.language,
            segments,
        }
    }
}

impl Transcriber for OpenAiTranscriber {
    fn id(&self) -> &str {
        &self.id
    }

    fn sample_rate(&self) -> u32 {
        STT_RATE
    }

    fn languages(&self) -> &[&str] {
        &self.languages
    }

    fn word_timestamps(&self) -> bool {
        true
    }

    /// OpenAI-compatible recognisers translate at `/audio/translations` (no language, no
    /// word timings there).
    fn translates(&self) -> bool {
        true
    }

    fn transcribe(&self, request: TranscriptionRequest) -> TranscriptionFuture {
        let translate = request.task == Task::Translate;
        let wav = to_wav(&request.samples);
        let mut form = reqwest::multipart::Form::new()
            .text("model", self.model.clone())
            .text("temperature", request.temperature.to_string())
            .text(
                "response_format",
                if request.timestamps {
                    "verbose_json"
                } else {
                    "json"
                },
            );
        if request.timestamps && !translate {
            form = form
                .text("timestamp_granularities[]", "segment")
                .text("timestamp_granularities[]", "word");
        }
        if let Some(language) = request.language.filter(|_| !translate) {
            form = form.text("language", language);
        }
        let file = reqwest::multipart::Part::bytes(wav)
            .file_name("audio.wav")
            .mime_str("audio/wav");
        let url = if translate {
            &self.translate_url
        } else {
            &self.url
        };
        let mut call = self.client.post(url.clone());
        if let Some(key) = &self.key {
            call = call.bearer_auth(key.expose_secret());
        }
        let (id, max) = (self.id.clone(), self.max_bytes);
        Box::pin(async move {
            let file = file.map_err(|e| EngineError::Internal(e.to_string()))?;
            let response = call
                .multipart(form.part("file", file))
                .send()
                .await
                .map_err(super::transport)?;
            let response = check_status(&id, response).await?;
            check_content_type(&id, &response, &["application/json"])?;
            let body = read_capped(&id, response, max).await?;
            let answer: Answer = serde_json::from_slice(&body)
                .map_err(|_| upstream(format!("{id}: malformed transcription JSON")))?;
            Ok(answer.into_transcript())
        })
    }
}

/// Samples in [-1, 1] as a 16-bit mono WAV at [`STT_RATE`].
fn to_wav(samples: &[f32]) -> Vec<u8> {
    let data_len = (samples.len() * 2) as u32;
    let mut out = Vec::with_capacity(44 + samples.len() * 2);
    out.extend_from_slice(b"RIFF");
    out.extend_from_slice(&(36 + data_len).to_le_bytes());
    out.extend_from_slice(b"WAVEfmt ");
    out.extend_from_slice(&16u32.to_le_bytes());
    out.extend_from_slice(&1u16.to_le_bytes());
    out.extend_from_slice(&1u16.to_le_bytes());
    out.extend_from_slice(&STT_RATE.to_le_bytes());
    out.extend_from_slice(&(STT_RATE * 2).to_le_bytes());
    out.extend_from_slice(&2u16.to_le_bytes());
    out.extend_from_slice(&16u16.to_le_bytes());
    out.extend_from_slice(b"data");
    out.extend_from_slice(&data_len.to_le_bytes());
    for s in samples {
        let v = (s.clamp(-1.0, 1.0) * 32767.0).round() as i16;
        out.extend_from_slice(&v.to_le_bytes());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_go_to_the_segment_that_holds_them() {
        let answer: Answer = serde_json::from_str(
            r#"{"text":" Hello there. Bye. ","language":"english",
                "segments":[{"start":0.0,"end":1.0,"text":" Hello there."},{"start":1.0,"end":2.0,"text":" Bye."}],
                "words":[{"word":"Hello","start":0.1,"end":0.4},{"word":"there","start":0.5,"end":0.9},{"word":"Bye","start":1.2,"end":1.5}]}"#,
        )
        .expect("json");
        let t = answer.into_transcript();
        assert_eq!(t.text, "Hello there. Bye.");
        assert_eq!(t.segments.len(), 2);
        assert_eq!(t.segments[0].words.len(), 2);
        assert_eq!(t.segments[1].words[0].word, "Bye");
    }

    #[test]
    fn uploads_are_valid_wav() {
        let wav = to_wav(&[0.0, 0.5, -1.0]);
        let reader = hound::WavReader::new(std::io::Cursor::new(wav)).expect("wav");
        assert_eq!(reader.spec().sample_rate, STT_RATE);
        let samples: Vec<i16> = reader.into_samples().map(|s| s.expect("s")).collect();
        assert_eq!(samples, [0, 16384, -32767]);
    }
}
