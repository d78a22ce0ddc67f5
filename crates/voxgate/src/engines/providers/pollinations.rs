//! Pollinations' text-to-speech (the seeds' provider): `GET {base}/{text}?model=…&voice=…`,
//! answered with an MP3 file, which is decoded here (bounded) into PCM. The text travels in
//! the URL path as one escaped segment, so it is capped at `max_chars`.

use futures::StreamExt;
use reqwest::Url;
use secrecy::{ExposeSecret, SecretString};
use voxgate_engine::{EngineError, PcmStream, SynthesisRequest, Synthesizer, VoiceInfo};

use super::{check_base_url, check_content_type, check_status, endpoint, read_capped};
use crate::config::PollinationsConfig;

#[derive(Debug)]
pub struct Pollinations {
    id: String,
    client: reqwest::Client,
    base: Url,
    model: String,
    key: Option<SecretString>,
    voices: Vec<VoiceInfo>,
    max_chars: usize,
    max_bytes: u64,
    first_byte: std::time::Duration,
}

impl Pollinations {
    pub fn new(id: &str, config: &PollinationsConfig) -> Result<Self, String> {
        Ok(Self {
            id: id.to_owned(),
            client: super::client(id, &config.http).map_err(|e| e.to_string())?,
            base: check_base_url(&config.base_url, &config.http)?,
            model: config.model.clone(),
            key: config.api_key.clone(),
            voices: super::remote_voices(config.voices.values()),
            max_chars: config.max_chars,
            max_bytes: config.http.max_response_bytes,
            // Pollinations answers only once the whole clip is made: its head comes late.
            first_byte: config.http.read_timeout(),
        })
    }
}

impl Synthesizer for Pollinations {
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
        if !self.voices.iter().any(|v| v.id == request.voice) {
            return Err(EngineError::UnknownVoice);
        }
        if request.text.chars().count() > self.max_chars {
            return Err(EngineError::Unsupported(
                "text longer than this provider accepts",
            ));
        }
        let mut url = endpoint(&self.base, &[&request.text]);
        url.query_pairs_mut()
            .append_pair("model", &self.model)
            .append_pair("voice", &request.voice);
        let mut call = self.client.get(url);
        if let Some(key) = &self.key {
            call = call.bearer_auth(key.expose_secret());
        }
        let (id, max, first_byte) = (self.id.clone(), self.max_bytes, self.first_byte);
        let answer = async move {
            let response = super::send_within(call, first_byte).await?;
            let response = check_status(&id, response).await?;
            check_content_type(&id, &response, &["audio/mpeg", "audio/mp3"])?;
            let bytes = read_capped(&id, response, max).await?;
            tokio::task::spawn_blocking(move || super::decode_compressed(&id, &bytes, "mp3", max))
                .await
                .map_err(|e| EngineError::Internal(e.to_string()))?
        };
        Ok(Box::pin(futures::stream::once(answer).boxed()))
    }
}
