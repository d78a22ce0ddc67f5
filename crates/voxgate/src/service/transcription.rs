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
            let request = TranscriptionRequest {
                samples,
                language: job.language.clone(),
                temperature: job.temperature,
                timestamps: job.timestamps,
                task: job.task,
                partial: job.partial.clone(),
            };
            // Recognition starts: what it recognises is charged, whoever still waits.
            match job.engine.transcribe(request).await {
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
