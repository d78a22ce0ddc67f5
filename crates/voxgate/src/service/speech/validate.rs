//! An order (what a front door was asked for) → a [`SpeechJob`]: every parameter checked,
//! model and voice resolved by table lookup, the tier's gates applied (403s with a distinct
//! code), the text through the one text pipeline (or SSML, parsed first), PII redacted when
//! text may leave for a remote provider.

use std::sync::Arc;

use tokio::time::Instant;
use voxgate_engine::VoiceReference;
use voxgate_input::ssml;
use voxgate_input::text::{self, TextPolicy};

use super::pipeline::{Part, SpeechJob};
use super::{SpeechOrder, VoiceChoice};
use crate::config::{InstructionsPolicy, TierConfig};
use crate::engines::{self, ModelKind};
use crate::error::{Code, Error};
use crate::identity::auth::Principal;
use crate::service::Services;

/// Checks every parameter and resolves model and voice by table lookup.
pub(super) async fn job(
    services: &Services,
    principal: &Principal,
    order: SpeechOrder,
) -> Result<SpeechJob, Error> {
    let reference = match &order.voice {
        VoiceChoice::Stored(id) => Some(stored_voice(services, principal, id).await?),
        VoiceChoice::Name(_) => None,
    };
    validate(services, &principal.tier, order, reference)
}

pub(super) fn validate(
    services: &Services,
    tier: &TierConfig,
    order: SpeechOrder,
    reference: Option<Arc<VoiceReference>>,
) -> Result<SpeechJob, Error> {
    let limits = &services.config.speech;
    let max_input_chars = limits.max_input_chars.min(tier.max_input_chars);
    let model = if engines::is_valid_name(&order.model) {
        services.catalog.model(&order.model)
    } else {
        None
    }
    .ok_or_else(|| {
        Error::invalid(
            "model",
            Code::ModelNotFound,
            format!("The model `{}` does not exist.", clip(&order.model)),
        )
    })?;
    if !tier.allows_model(&model.id) {
        return Err(Error::refused(
            Code::ModelNotAllowed,
            format!("Your tier does not include the model `{}`.", model.id),
        ));
    }
    if model.kind != ModelKind::Speech {
        return Err(Error::invalid(
            "model",
            Code::UnsupportedModel,
            format!("The model `{}` does not produce speech.", model.id),
        ));
    }
    if let Some(instructions) = &order.instructions {
        let policy = TextPolicy {
            max_chars: limits.max_instructions_chars,
            ..services.text_policy(tier, usize::MAX)
        };
        match text::normalize(instructions, &policy) {
            // Empty instructions are no instructions.
            Ok(_) => {}
            Err(e) if e.kind == text::TextErrorKind::Empty => {}
            Err(e) => {
                return Err(match e.kind {
                    text::TextErrorKind::TooLong { max, .. } => Error::invalid(
                        "instructions",
                        Code::InstructionsTooLong,
                        format!("'instructions' is longer than {max} characters."),
                    ),
                    _ => Error::text("instructions", &e),
                });
            }
        }
        if model.instructions == InstructionsPolicy::Reject {
            return Err(Error::invalid(
                "instructions",
                Code::InstructionsNotSupported,
                Code::InstructionsNotSupported.spec().message,
            ));
        }
    }
    let format = order.format;
    if !format.is_available() {
        return Err(Error::invalid(
            "response_format",
            Code::UnsupportedResponseFormat,
            format!(
                "The response format `{}` is not available in this build; available formats: {}.",
                format.as_str(),
                crate::audio::AudioFormat::available_list()
            ),
        ));
    }
    let speed = order.speed.unwrap_or(1.0);
    if !speed.is_finite() || !(0.25..=4.0).contains(&speed) {
        return Err(Error::invalid(
            "speed",
            Code::InvalidValue,
            "'speed' must be between 0.25 and 4.0.",
        ));
    }
    let candidates = match &order.voice {
        VoiceChoice::Name(voice) => {
            let candidates = if engines::is_valid_name(voice) {
                services.catalog.resolve(model, voice)
            } else {
                Vec::new()
            };
            if candidates.is_empty() {
                return Err(Error::invalid(
                    "voice",
                    Code::VoiceNotFound,
                    format!(
                        "The voice `{}` is not available for this model.",
                        clip(voice)
                    ),
                ));
            }
            if !tier.allows_voice(voice) {
                return Err(Error::refused(
                    Code::VoiceNotAllowed,
                    format!("Your tier does not include the voice `{voice}`."),
                ));
            }
            candidates
        }
        VoiceChoice::Stored(_) => {
            let candidates = services.catalog.cloners(model);
            if candidates.is_empty() {
                return Err(Error::invalid(
                    "voice",
                    Code::VoiceCloningUnsupported,
                    Code::VoiceCloningUnsupported.spec().message,
                ));
            }
            candidates
        }
    };
    // The tier's engines filter the chain; nothing left is a denial.
    let candidates: Vec<_> = candidates
        .into_iter()
        .filter(|c| tier.allows_engine(&c.engine_id))
        .collect();
    if candidates.is_empty() {
        return Err(Error::from_code(Code::EngineNotAllowed));
    }
    let speed = speed as f32;
    let policy = services.text_policy(tier, max_input_chars);
    let (mut script, characters) = if order.ssml {
        if !tier.ssml {
            return Err(Error::from_code(Code::SsmlNotAllowed));
        }
        ssml_script(&order.input, &limits.ssml.limits(), &policy, speed)?
    } else {
        let text = text::normalize(&order.input, &policy).map_err(|e| Error::text("input", &e))?;
        let characters = text.chars().count();
        (vec![Part::Say { text, speed }], characters)
    };
    // Text may leave this machine if any engine of the chain is remote.
    if tier.redact_pii && candidates.iter().any(|c| c.engine.remote()) {
        for part in &mut script {
            if let Part::Say { text, .. } = part
                && let std::borrow::Cow::Owned(redacted) = text::redact_pii(text)
            {
                *text = redacted;
            }
        }
    }
    let voice = match order.voice {
        VoiceChoice::Name(name) => name,
        VoiceChoice::Stored(id) => id,
    };
    Ok(SpeechJob {
        model: model.id.clone(),
        voice,
        candidates,
        reference,
        script,
        characters,
        speed,
        format,
        deadline: Instant::now() + services.config.server.stream_timeout(),
    })
}

/// Parses SSML into a script: each text piece goes through the text pipeline after parsing
/// (normalising first could turn fullwidth `＜` into markup), breaks become pauses, prosody
/// rates multiply the request's speed. The length limit counts the text of all pieces.
fn ssml_script(
    input: &str,
    limits: &ssml::SsmlLimits,
    policy: &TextPolicy,
    speed: f32,
) -> Result<(Vec<Part>, usize), Error> {
    let doc = ssml::parse(input, limits).map_err(|e| {
        Error::invalid(
            "input",
            e.kind.into(),
            format!("'input' is not acceptable SSML: {e}."),
        )
    })?;
    let piece_policy = TextPolicy {
        max_chars: usize::MAX,
        ..policy.clone()
    };
    let mut script = Vec::new();
    let mut characters = 0usize;
    for piece in doc.pieces {
        match piece {
            ssml::Piece::Text { text, rate } => match text::normalize(&text, &piece_policy) {
                Ok(text) => {
                    characters += text.chars().count();
                    let speed = (speed * rate).clamp(0.25, 4.0);
                    script.push(Part::Say { text, speed });
                }
                Err(e) if e.kind == text::TextErrorKind::Empty => {}
                Err(e) => return Err(Error::text("input", &e)),
            },
            ssml::Piece::Break { ms } if ms > 0 => script.push(Part::Pause { ms }),
            ssml::Piece::Break { .. } => {}
        }
    }
    if characters == 0 {
        return Err(Error::text("input", &text::TextErrorKind::Empty.into()));
    }
    if characters > policy.max_chars {
        let too_long = text::TextErrorKind::TooLong {
            max: policy.max_chars,
            actual: characters,
        };
        return Err(Error::text("input", &too_long.into()));
    }
    Ok((script, characters))
}

/// `voice: {"id": ...}`: the id must name one of the caller's stored voices; another
/// account's id is as unknown as a made-up one (404).
async fn stored_voice(
    services: &Services,
    principal: &Principal,
    id: &str,
) -> Result<Arc<VoiceReference>, Error> {
    if !crate::data::voices::is_valid_id(id) {
        return Err(crate::data::voices::not_found(Some("voice")));
    }
    match services.voices.audio(&principal.account_id, id).await? {
        Some(wav) => Ok(Arc::new(VoiceReference {
            id: id.to_owned(),
            owner: principal.account_id.clone(),
            wav,
        })),
        None => Err(crate::data::voices::not_found(Some("voice"))),
    }
}

/// A generous estimate of the audio a text produces (Flite speaks about 14 characters a
/// second; this assumes 8), reserved against audio-second quotas before synthesis.
pub(super) fn estimated_audio_seconds(characters: i64, speed: f32) -> i64 {
    (characters as f64 / 8.0 / f64::from(speed.max(0.25))).ceil() as i64 + 1
}

/// Client-sent names are echoed in messages only in a short, printable form.
fn clip(name: &str) -> String {
    name.chars().filter(|c| !c.is_control()).take(64).collect()
}

#[cfg(test)]
mod tests {
    use std::sync::OnceLock;

    use proptest::prelude::*;

    use super::*;
    use crate::audio::AudioFormat;
    use crate::config::Config;

    fn services() -> &'static Arc<Services> {
        static SERVICES: OnceLock<Arc<Services>> = OnceLock::new();
        SERVICES.get_or_init(|| {
            let dir = Box::leak(Box::new(tempfile::tempdir().expect("tempdir")));
            let mut config = Config::defaults().expect("config");
            config.data_dir = dir.path().to_path_buf();
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(Services::build(config)).expect("services")
        })
    }

    fn order(model: String, input: String, voice: String, speed: Option<f64>) -> SpeechOrder {
        SpeechOrder {
            model,
            input,
            voice: VoiceChoice::Name(voice),
            instructions: None,
            format: AudioFormat::Mp3,
            speed,
            ssml: false,
        }
    }

    proptest! {
        /// Whatever the values, validation accepts or refuses with a 4xx naming a parameter;
        /// accepted names are always table keys, never anything path-like.
        #[test]
        fn validation_accepts_only_table_entries(
            model in prop_oneof![Just("tts-1".to_owned()), "\\PC{0,20}"],
            voice in prop_oneof![Just("alloy".to_owned()), Just("../alloy".to_owned()), "\\PC{0,20}"],
            input in "\\PC{0,50}",
            speed in prop::option::of(prop_oneof![any::<f64>(), -10.0..10.0f64]),
        ) {
            let tokio = tokio::runtime::Builder::new_current_thread().enable_time().build().expect("rt");
            let _guard = tokio.enter();
            let services = services();
            let tier = &services.config.tiers["admin"];
            match validate(services, tier, order(model.clone(), input, voice.clone(), speed), None) {
                Ok(job) => {
                    prop_assert!(services.catalog.model(&model).is_some());
                    prop_assert!(engines::is_valid_name(&voice));
                    prop_assert!(!job.candidates.is_empty());
                    for c in &job.candidates {
                        prop_assert!(c.engine.voices().iter().any(|v| v.id == c.native_voice));
                    }
                    prop_assert!((0.25..=4.0).contains(&job.speed));
                }
                Err(err) => {
                    let status = err.code().spec().status;
                    prop_assert!((400..500).contains(&status), "{err:?}");
                }
            }
        }
    }
}
