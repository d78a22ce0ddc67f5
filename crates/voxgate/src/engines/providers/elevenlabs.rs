//! ElevenLabs: `POST {base}/v1/text-to-speech/{voice_id}/stream?output_format=pcm_…` with the
//! `xi-api-key` header, streamed as raw PCM; instant voice cloning uploads a stored reference
//! (`POST {base}/v1/voices/add`, named by an opaque label) and speaks with the voice id it
//! gets back, which the gateway keeps; `DELETE {base}/v1/voices/{id}` removes it, and
//! `GET {base}/v1/voices` finds voices by label when an id was never recorded.

use futures::StreamExt;
use reqwest::Url;
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use voxgate_engine::{EngineError, PcmStream, SynthesisRequest, Synthesizer, VoiceInfo};

use super::{check_base_url, check_content_type, check_status, endpoint, read_capped, upstream};
use crate::config::{ElevenLabsConfig, elevenlabs_pcm_rate};

/// ElevenLabs accepts speeds in this range only.
const SPEED_RANGE: (f32, f32) = (0.7, 1.2);

#[derive(Debug)]
pub struct ElevenLabs {
    id: String,
    client: reqwest::Client,
    base: Url,
    model_id: String,
    key: Option<SecretString>,
    voices: Vec<VoiceInfo>,
    output_format: String,
    sample_rate: u32,
    cloning: bool,
    max_bytes: u64,
    first_byte: std::time::Duration,
}

impl ElevenLabs {
    pub fn new(id: &str, config: &ElevenLabsConfig) -> Result<Self, String> {
        let base = check_base_url(&config.base_url, &config.http)?;
        let sample_rate = elevenlabs_pcm_rate(&config.output_format)
            .ok_or("output_format must be a pcm_ format")?;
        Ok(Self {
            id: id.to_owned(),
            client: super::client(id, &config.http).map_err(|e| e.to_string())?,
            base,
            model_id: config.model_id.clone(),
            key: config.api_key.clone(),
            voices: super::remote_voices(config.voices.values()),
            output_format: config.output_format.clone(),
            sample_rate,
            cloning: config.cloning,
            max_bytes: config.http.max_response_bytes,
            first_byte: config.http.first_byte_timeout(),
        })
    }
}

#[derive(serde::Serialize)]
struct TtsBody<'a> {
    text: &'a str,
    model_id: &'a str,
    voice_settings: VoiceSettings,
}

#[derive(serde::Serialize)]
struct VoiceSettings {
    speed: f32,
}

#[derive(Deserialize)]
struct Added {
    voice_id: String,
}

#[derive(Deserialize)]
struct Listed {
    voices: Vec<ListedVoice>,
}

#[derive(Deserialize)]
struct ListedVoice {
    voice_id: String,
    #[serde(default)]
    name: String,
}

/// What one call needs, moved into its future.
struct Call {
    id: String,
    client: reqwest::Client,
    base: Url,
    key: Option<SecretString>,
    max_bytes: u64,
    first_byte: std::time::Duration,
}

impl Call {
    fn post(&self, url: Url) -> reqwest::RequestBuilder {
        self.keyed(self.client.post(url))
    }

    fn keyed(&self, call: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match &self.key {
            Some(key) => call.header("xi-api-key", key.expose_secret()),
            None => call,
        }
    }

    /// Deletes one voice; one already gone (deleted at ElevenLabs directly) counts.
    async fn delete(&self, voice_id: &str) -> Result<(), EngineError> {
        if !crate::engines::is_valid_name(voice_id) {
            return Err(upstream("implausible clone id"));
        }
        let url = endpoint(&self.base, &["v1", "voices", voice_id]);
        let response = self
            .keyed(self.client.delete(url))
            .send()
            .await
            .map_err(super::transport)?;
        if response.status() == reqwest::StatusCode::NOT_FOUND {
            return Ok(());
        }
        check_status(&self.id, response).await.map(|_| ())
    }

    /// Deletes every voice of the account named `label`.
    async fn delete_named(&self, label: &str) -> Result<(), EngineError> {
        let url = endpoint(&self.base, &["v1", "voices"]);
        let response = self
            .keyed(self.client.get(url))
            .send()
            .await
            .map_err(super::transport)?;
        let response = check_status(&self.id, response).await?;
        check_content_type(&self.id, &response, &["application/json"])?;
        let body = read_capped(&self.id, response, 8 * 1024 * 1024).await?;
        let listed: Listed = serde_json::from_slice(&body)
            .map_err(|_| upstream(format!("{}: malformed voices answer", self.id)))?;
        for voice in listed.voices.iter().filter(|v| v.name == label) {
            self.delete(&voice.voice_id).await?;
        }
        Ok(())
    }

    /// Uploads a reference for instant voice cloning; returns the new voice's id.
    async fn clone_voice(
        &self,
        reference: &voxgate_engine::VoiceReference,
        label: &str,
    ) -> Result<String, EngineError> {
        let file = reqwest::multipart::Part::bytes(reference.wav.clone())
            .file_name("reference.wav")
            .mime_str("audio/wav")
            .map_err(|e| EngineError::Internal(e.to_string()))?;
        // The name carries no user text: the gateway's opaque label only.
        let form = reqwest::multipart::Form::new()
            .text("name", label.to_owned())
            .part("files", file);
        let response = self
            .post(endpoint(&self.base, &["v1", "voices", "add"]))
            .multipart(form)
            .send()
            .await
            .map_err(super::transport)?;
        let response = check_status(&self.id, response).await?;
        check_content_type(&self.id, &response, &["application/json"])?;
        let body = read_capped(&self.id, response, 64 * 1024).await?;
        let added: Added = serde_json::from_slice(&body)
            .map_err(|_| upstream(format!("{}: malformed voices/add answer", self.id)))?;
        if !crate::engines::is_valid_name(&added.voice_id) {
            return Err(upstream(format!("{}: implausible voice id", self.id)));
        }
        Ok(added.voice_id)
    }
}

impl ElevenLabs {
    fn call(&self) -> Call {
        Call {
            id: self.id.clone(),
            client: self.client.clone(),
            base: self.base.clone(),
            key: self.key.clone(),
            max_bytes: self.max_bytes,
            first_byte: self.first_byte,
        }
    }
}

impl Synthesizer for ElevenLabs {
    fn id(&self) -> &str {
        &self.id
    }

    fn voices(&self) -> &[VoiceInfo] {
        &self.voices
    }

    fn remote(&self) -> bool {
        true
    }

    fn supports_cloning(&self) -> bool {
        self.cloning
    }

    fn clone_voice(
        &self,
        reference: &voxgate_engine::VoiceReference,
        label: &str,
    ) -> voxgate_engine::CloneFuture {
        if !self.cloning {
            return Box::pin(async { Err(EngineError::Unsupported("voice cloning is off")) });
        }
        let call = self.call();
        let (reference, label) = (reference.clone(), label.to_owned());
        Box::pin(async move { call.clone_voice(&reference, &label).await })
    }

    /// Deletes an ElevenLabs voice made from a stored reference.
    fn delete_clone(&self, clone_id: &str) -> voxgate_engine::ForgetFuture {
        let call = self.call();
        let voice_id = clone_id.to_owned();
        Box::pin(async move { call.delete(&voice_id).await })
    }

    fn delete_clones_named(&self, label: &str) -> voxgate_engine::ForgetFuture {
        let call = self.call();
        let label = label.to_owned();
        Box::pin(async move { call.delete_named(&label).await })
    }

    fn synthesize(&self, request: SynthesisRequest) -> Result<PcmStream, EngineError> {
        // With a stored reference, `voice` is the clone the gateway made for it.
        match &request.reference {
            Some(_) if !self.cloning => {
                return Err(EngineError::Unsupported("voice cloning is off"));
            }
            Some(_) if !crate::engines::is_valid_name(&request.voice) => {
                return Err(EngineError::Internal(
                    "no clone for the stored voice".into(),
                ));
            }
            Some(_) => {}
            None if !self.voices.iter().any(|v| v.id == request.voice) => {
                return Err(EngineError::UnknownVoice);
            }
            None => {}
        }
        let call = self.call();
        let cloned = request.reference.is_some();
        let voice = request.voice;
        let body = serde_json::to_vec(&TtsBody {
            text: &request.text,
            model_id: &self.model_id,
            voice_settings: VoiceSettings {
                speed: request.speed.clamp(SPEED_RANGE.0, SPEED_RANGE.1),
            },
        })
        .map_err(|e| EngineError::Internal(e.to_string()))?;
        let (format, rate) = (self.output_format.clone(), self.sample_rate);
        let answer = async move {
            let mut url = endpoint(&call.base, &["v1", "text-to-speech", &voice, "stream"]);
            url.query_pairs_mut().append_pair("output_format", &format);
            let request = call
                .post(url)
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(body);
            let response = super::send_within(request, call.first_byte).await?;
            // A clone ElevenLabs no longer knows (deleted there): the gateway forgets its
            // record and makes a new one.
            if cloned && response.status() == reqwest::StatusCode::NOT_FOUND {
                return Err(EngineError::UnknownVoice);
            }
            let response = check_status(&call.id, response).await?;
            check_content_type(
                &call.id,
                &response,
                &["audio/*", "application/octet-stream"],
            )?;
            super::pcm_stream(call.id.clone(), response, rate, call.max_bytes)
        };
        Ok(Box::pin(futures::stream::once(answer).flat_map(
            |result| match result {
                Ok(stream) => stream,
                Err(e) => futures::stream::once(async move { Err(e) }).boxed(),
            },
        )))
    }
}
