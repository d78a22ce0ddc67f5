//! The transcription service: an order and its audio → a transcript, metered.
//!
//! [`Services::prepare_transcription`] validates the order (model and tier, language,
//! prompt); [`Services::transcribe`] runs it:
//!
//! 1. the caller's slots and a reservation of one request and one second are taken before
//!    the upload is decoded, so a caller without quota costs no decoding;
//! 2. the audio is decoded (an upload through the probe: magic bytes, polyglots, a real
//!    decode with the duration counted from decoded frames) and its exact seconds reserved;
//! 3. recognition runs in its own task, which holds the slots until the recogniser really
//!    returns (a blocking Whisper job cannot be cancelled) and charges the audio once it is
//!    recognised, even when the caller stopped waiting (the response timeout).

use std::sync::Arc;

use voxgate_engine::{Task, TextSink, Transcriber, Transcript, TranscriptionRequest};
use voxgate_input::probe::{self, ProbeLimits, Probed};
use voxgate_input::text;

use super::Services;
use crate::audio::Resampler;
use crate::audio::vad::{self, TurnDetection};
use crate::config::Metric;
use crate::data::spool::SpooledFile;
use crate::engines::ModelKind;
use crate::error::{Code, Error};
use crate::identity::auth::Principal;
use crate::limits::quota::Amounts;

/// What a front door asks to be transcribed, before validation.
#[derive(Debug, Clone, Default)]
pub struct TranscriptionOrder {
    pub model: String,
    /// An ISO 639-1 code, or `None` to detect.
    pub language: Option<String>,
    /// Checked (text pipeline, length); not used by Whisper here.
    pub prompt: Option<String>,
    /// 0 (default, beam search) to 1 (sampling).
    pub temperature: Option<f32>,
    /// Whether segment (and word) timings are wanted.
    pub timestamps: bool,
    /// Transcribe, or translate into English (then `language` must be `None`).
    pub task: Task,
    /// Where text goes as the recogniser finishes each stretch of audio (streaming front
    /// doors); the whole transcript is returned either way.
    pub partial: Option<TextSink>,
    /// Recognise only the stretches voice activity detection finds speech in, one by one
    /// (`chunking_strategy`); `None`: the whole audio at once.
    pub chunking: Option<Chunking>,
}

/// `chunking_strategy`: how the audio is cut before recognition.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Chunking {
    /// Loudness normalised for the detector, then the default turn detection.
    Auto,
    /// OpenAI's `server_vad` with the caller's settings.
    ServerVad(TurnDetection),
}

/// A validated order.
#[derive(Debug, Clone)]
pub struct TranscriptionJob {
    pub engine_id: String,
    engine: Arc<dyn Transcriber>,
    pub language: Option<String>,
    pub temperature: f32,
    timestamps: bool,
    pub task: Task,
    partial: Option<TextSink>,
    chunking: Option<Chunking>,
}

/// The audio to transcribe.
#[derive(Debug)]
pub enum AudioInput {
    /// A spooled upload, decoded after admission (the `param` it came in names refusals).
    Upload {
        file: SpooledFile,
        param: &'static str,
    },
    /// Mono samples in [-1, 1] at `rate`.
    Samples { samples: Vec<f32>, rate: u32 },
}

/// What the recogniser heard, and how much audio that was.
#[derive(Debug)]
pub struct Transcribed {
    pub transcript: Transcript,
    /// Seconds of decoded input audio (what quotas and usage count).
    pub duration_secs: f64,
    /// The engine that served (`x-voxgate-engine`).
    pub engine: String,
}

/// The operation name tier denials are audited under.
const OPERATION: &str = "transcription";

impl Services {
    /// Validates an order: the model and the tier's gates (audited when they deny), the
    /// language against the recogniser's list, the prompt through the text pipeline.
    pub async fn prepare_transcription(
        &self,
        principal: &Principal,
        order: TranscriptionOrder,
    ) -> Result<TranscriptionJob, Error> {
        let job = self.validate_transcription(principal, order);
        if let Err(err) = &job {
            self.audit_denial(principal, OPERATION, err).await;
        }
        job
    }

    fn validate_transcription(
        &self,
        principal: &Principal,
        order: TranscriptionOrder,
    ) -> Result<TranscriptionJob, Error> {
        let tier = &principal.tier;
        let model = crate::engines::is_valid_name(&order.model)
            .then(|| self.catalog.model(&order.model))
            .flatten()
            .ok_or_else(|| {
                Error::invalid(
                    "model",
                    Code::ModelNotFound,
                    format!("The model `{}` does not exist.", clip(&order.model)),
                )
            })?;
        if model.kind != ModelKind::Transcription {
            return Err(Error::invalid(
                "model",
                Code::UnsupportedModel,
                format!("The model `{}` does not transcribe speech.", model.id),
            ));
        }
        if !tier.allows_model(&model.id) || !tier.allows_engine(&model.engine_id) {
            return Err(Error::refused(
                Code::ModelNotAllowed,
                format!("Your tier does not include the model `{}`.", model.id),
            ));
        }
        let engine = self
            .catalog
            .transcriber(model)
            .ok_or(Error::EngineUnavailable)?;
        if order.task == Task::Translate && !engine.translates() {
            return Err(Error::invalid(
                "model",
                Code::UnsupportedModel,
                format!("The model `{}` does not translate speech.", model.id),
            ));
        }
        let temperature = order.temperature.unwrap_or(0.0);
        if !temperature.is_finite() || !(0.0..=1.0).contains(&temperature) {
            return Err(Error::invalid(
                "temperature",
                Code::InvalidValue,
                "'temperature' must be a number between 0 and 1.",
            ));
        }
        if order.task == Task::Translate && order.language.is_some() {
            return Err(Error::invalid(
                "language",
                Code::UnknownParameter,
                "A translation detects the spoken language; 'language' is not accepted.",
            ));
        }
        let language = match order.language.as_deref() {
            None | Some("") => None,
            Some(code) if engine.languages().contains(&code) => Some(code.to_owned()),
            Some(_) => {
                return Err(Error::invalid(
                    "language",
                    Code::UnsupportedLanguage,
                    "'language' must be an ISO 639-1 code the model knows (e.g. en, de, fr).",
                ));
            }
        };
        if let Some(prompt) = &order.prompt {
            let policy = text::TextPolicy {
                max_chars: self.config.transcription.max_prompt_chars,
                ..self.text_policy(tier, usize::MAX)
            };
            if let Err(e) = text::normalize(prompt, &policy)
                && e.kind != text::TextErrorKind::Empty
            {
                return Err(Error::text("prompt", &e));
            }
        }
        Ok(TranscriptionJob {
            engine_id: model.engine_id.clone(),
            engine,
            language,
            temperature,
            timestamps: order.timestamps,
            task: order.task,
            partial: order.partial,
            chunking: order.chunking,
        })
    }

    /// Runs a validated job on `audio` through its metered life (see the module
    /// documentation); the caller waits at most the response timeout.
    pub async fn transcribe(
        self: &Arc<Self>,
        principal: &Principal,
        job: TranscriptionJob,
        audio: AudioInput,
    ) -> Result<Transcribed, Error> {
        // Samples a front door received are judged as an upload's decoded audio would be
        // (the tier's duration cap, the probe's minimum), before anything is admitted.
        if let AudioInput::Samples { samples, rate } = &audio {
            let secs = samples.len() as f64 / f64::from((*rate).max(1));
            let max_secs = principal.tier.max_upload_secs;
            if secs > f64::from(max_secs) {
                return Err(Error::invalid(
                    "audio",
                    Code::AudioTooLong,
                    format!("The audio is longer than {max_secs} s, the most this key may send."),
                ));
            }
            let min_secs = ProbeLimits::default().min_duration_secs;
            if secs < min_secs {
                return Err(Error::invalid(
                    "audio",
                    Code::AudioTooShort,
                    format!("The audio is shorter than {min_secs} s."),
                ));
            }
        }
        let in_flight = self.admit(principal)?;
        // Admitted and reserved before the upload is decoded: the exact seconds follow.
        let at_least = Amounts {
            requests: 1,
            transcribed_seconds: 1,
            ..Amounts::default()
        };
        let mut hold = self.reserve(principal, at_least).await?;
        let services = Arc::clone(self);
        let max_secs = principal.tier.max_upload_secs;
        let max_bytes = principal.tier.max_upload_bytes;
        let work = tokio::spawn(async move {
            // Held until the recogniser returns, whoever is still waiting.
            let _in_flight = in_flight;
            let (samples, rate, duration_secs) = match audio {
                AudioInput::Upload { file, param } => {
                    let limits = ProbeLimits {
                        max_bytes,
                        max_duration_secs: f64::from(max_secs),
                        ..ProbeLimits::default()
                    };
                    let probed = decode_upload(&file, param, limits).await?;
                    (probed.samples, probed.sample_rate, probed.duration_secs)
                }
                AudioInput::Samples { samples, rate } => {
                    let secs = samples.len() as f64 / f64::from(rate.max(1));
                    (samples, rate, secs)
                }
            };
            let seconds = duration_secs.ceil() as i64;
            let extended = hold
                .extend(Metric::TranscribedSeconds, seconds - 1)
                .await
                .map_err(Error::internal)?;
            if !extended {
                let retry_after = std::time::Duration::from_secs(60);
                return Err(services.quota_refused(retry_after));
            }
            let target = job.engine.sample_rate();
            let samples = services
                .encoders
                .run(move || resample(&samples, rate, target))
                .await??;
            let regions = match job.chunking {
                None => None,
                Some(chunking) => Some(services.speech_regions(&samples, target, chunking).await?),
            };
            // Recognition starts: what it recognises is charged, whoever still waits.
            let recognised = match regions {
                None => {
                    let request = TranscriptionRequest {
                        samples,
                        language: job.language.clone(),
                        temperature: job.temperature,
                        timestamps: job.timestamps,
                        task: job.task,
                        partial: job.partial.clone(),
                    };
                    job.engine.transcribe(request).await
                }
                Some(regions) => recognise_regions(&job, &samples, target, regions).await,
            };
            match recognised {
                Ok(transcript) => {
                    hold.settle(Amounts {
                        requests: 1,
                        transcribed_seconds: seconds,
                        ..Amounts::default()
                    })
                    .await;
                    Ok(Transcribed {
                        transcript,
                        duration_secs,
                        engine: job.engine_id,
                    })
                }
                // Nothing was recognised: the reservation goes back.
                Err(err) => {
                    hold.refund().await;
                    Err(err.into())
                }
            }
        });
        let deadline = self.config.server.request_timeout();
        match tokio::time::timeout(deadline, work).await {
            Ok(Ok(result)) => result,
            Ok(Err(join)) => Err(Error::internal(join)),
            Err(_) => Err(Error::Timeout),
        }
    }
}

impl Services {
    /// Recognises one turn of a live session: `samples` (mono, at `rate`), its text handed
    /// to `partial` as the recogniser finishes it. The session already holds the caller's
    /// slots and has reserved and charged this audio (`service::live`); nothing is metered
    /// here. At most `server.request_timeout_secs`.
    pub async fn recognise_turn(
        &self,
        job: &TranscriptionJob,
        samples: Vec<f32>,
        rate: u32,
        partial: Option<TextSink>,
    ) -> Result<Transcript, Error> {
        let target = job.engine.sample_rate();
        let samples = self
            .encoders
            .run(move || resample(&samples, rate, target))
            .await??;
        let request = TranscriptionRequest {
            samples,
            language: job.language.clone(),
            temperature: job.temperature,
            timestamps: false,
            task: job.task,
            partial,
        };
        // As long as a whole transcription may take; a recogniser that hangs ends the turn.
        let deadline = self.config.server.request_timeout();
        match tokio::time::timeout(deadline, job.engine.transcribe(request)).await {
            Ok(heard) => Ok(heard?),
            Err(_) => Err(Error::Timeout),
        }
    }

    /// Silero VAD, loaded (checksums first) on first use.
    pub async fn vad(&self) -> Result<voxgate_piper::vad::SileroVad, Error> {
        let config = &self.config.transcription;
        let (model, runtime) = (
            config.vad_model_dir.clone(),
            config.onnx_runtime_dir.clone(),
        );
        let loaded = self
            .vad
            .get_or_init(|| async move {
                let loaded = tokio::task::spawn_blocking(move || {
                    voxgate_piper::vad::SileroVad::load(&model, &runtime)
                })
                .await;
                match loaded {
                    Ok(Ok(vad)) => Ok(vad),
                    Ok(Err(e)) => Err(e.to_string()),
                    Err(e) => Err(e.to_string()),
                }
            })
            .await;
        loaded.clone().map_err(|reason| {
            tracing::warn!(error = %reason, "voice activity detection is unavailable");
            Error::EngineUnavailable
        })
    }

    /// The stretches of `samples` (at `rate`) that hold speech, at most 30 s each.
    async fn speech_regions(
        &self,
        samples: &[f32],
        rate: u32,
        chunking: Chunking,
    ) -> Result<Vec<std::ops::Range<usize>>, Error> {
        let vad = self.vad().await?;
        let settings = match chunking {
            Chunking::Auto => TurnDetection::default(),
            Chunking::ServerVad(settings) => settings,
        };
        let input = samples.to_vec();
        let len = samples.len();
        let probabilities = self
            .encoders
            .run(move || {
                let mut heard = resample(&input, rate, vad::RATE as u32)?;
                if chunking == Chunking::Auto {
                    normalise(&mut heard);
                }
                vad.probabilities(&heard).map_err(Error::from)
            })
            .await??;
        // Regions in the detector's samples, then in the recogniser's.
        let at_vad_rate = len * vad::RATE / rate.max(1) as usize;
        let window = 30 * vad::RATE;
        Ok(
            vad::speech_regions(&probabilities, &settings, at_vad_rate, window)
                .into_iter()
                .map(|r| {
                    let scale = |i: usize| (i * rate as usize / vad::RATE).min(len);
                    scale(r.start)..scale(r.end)
                })
                .filter(|r| !r.is_empty())
                .collect(),
        )
    }
}

/// Scales the audio so its peak is at 0.9 (quiet recordings reach the detector's range).
fn normalise(samples: &mut [f32]) {
    let peak = samples.iter().fold(0f32, |m, s| m.max(s.abs()));
    if peak > 1e-4 {
        let gain = 0.9 / peak;
        samples.iter_mut().for_each(|s| *s *= gain);
    }
}

/// Recognises each region on its own, in order: its text goes to the job's sink when it is
/// done, its timings are moved to where it starts in the audio, and the texts are joined.
/// No region (silence only): an empty transcript.
async fn recognise_regions(
    job: &TranscriptionJob,
    samples: &[f32],
    rate: u32,
    regions: Vec<std::ops::Range<usize>>,
) -> Result<Transcript, voxgate_engine::EngineError> {
    let mut transcript = Transcript {
        language: job.language.clone(),
        ..Transcript::default()
    };
    let mut texts = Vec::new();
    for region in regions {
        let offset = region.start as f32 / rate.max(1) as f32;
        let request = TranscriptionRequest {
            samples: samples[region].to_vec(),
            language: job.language.clone(),
            temperature: job.temperature,
            timestamps: job.timestamps,
            task: job.task,
            partial: None,
        };
        let heard = job.engine.transcribe(request).await?;
        if let Some(sink) = &job.partial {
            sink.send(&heard.text);
        }
        if transcript.language.is_none() {
            transcript.language = heard.language;
        }
        if !heard.text.is_empty() {
            texts.push(heard.text);
        }
        transcript
            .segments
            .extend(heard.segments.into_iter().map(|mut segment| {
                segment.start += offset;
                segment.end += offset;
                for word in &mut segment.words {
                    word.start += offset;
                    word.end += offset;
                }
                segment
            }));
    }
    transcript.text = texts.join(" ");
    Ok(transcript)
}

/// Checks and decodes a spooled upload on a blocking thread (see `voxgate_input::probe`):
/// extension allow-list, magic bytes, polyglot checks, a real decode with the duration
/// counted from decoded frames.
pub async fn decode_upload(
    file: &SpooledFile,
    param: &'static str,
    limits: ProbeLimits,
) -> Result<Probed, Error> {
    let path = file.temp.path().to_path_buf();
    let (len, filename) = (file.len, file.filename.clone());
    let probed = tokio::task::spawn_blocking(move || {
        let handle = std::fs::File::open(path).map_err(Error::internal)?;
        Ok::<_, Error>(probe::probe_file(handle, len, &filename, &limits))
    })
    .await
    .map_err(Error::internal)??;
    probed.map_err(|err| match Code::from(err.kind()) {
        Code::Internal => Error::internal(err),
        code => Error::invalid(param, code, err.to_string()),
    })
}

/// Client-sent names are echoed in messages only in a short, printable form.
fn clip(name: &str) -> String {
    name.chars().filter(|c| !c.is_control()).take(64).collect()
}

/// Converts decoded mono audio to the recogniser's rate.
pub fn resample(samples: &[f32], from: u32, to: u32) -> Result<Vec<f32>, Error> {
    if from == to {
        return Ok(samples.to_vec());
    }
    let pcm: Vec<i16> = samples
        .iter()
        .map(|s| (s.clamp(-1.0, 1.0) * f32::from(i16::MAX)) as i16)
        .collect();
    let mut resampler = Resampler::new(from, to).map_err(Error::internal)?;
    let mut out = resampler.push(&pcm).map_err(Error::internal)?;
    out.extend(resampler.finish().map_err(Error::internal)?);
    Ok(out
        .into_iter()
        .map(|s| f32::from(s) / f32::from(i16::MAX))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resampling_keeps_the_duration() {
        let tone: Vec<f32> = (0..48_000).map(|i| (i as f32 * 0.05).sin() * 0.5).collect();
        let out = resample(&tone, 48_000, 16_000).expect("resample");
        assert!((out.len() as i64 - 16_000).abs() < 200, "{}", out.len());
    }
}
