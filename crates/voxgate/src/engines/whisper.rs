//! Whisper as an engine: [`LazyWhisper`] hashes and loads the model files on the first
//! transcription (not at start-up, so servers that never transcribe never pay for it),
//! once; a failed check is remembered so a broken model cannot be re-hashed per request.
//! [`Unavailable`] stands in when the binary was built without the `whisper` feature.

use voxgate_engine::{EngineError, Transcriber};

/// A recogniser that cannot run in this build.
#[cfg(not(feature = "whisper"))]
#[derive(Debug)]
pub struct Unavailable {
    id: String,
    reason: &'static str,
}

#[cfg(not(feature = "whisper"))]
impl Unavailable {
    pub fn new(id: &str, reason: &'static str) -> Self {
        Self {
            id: id.to_owned(),
            reason,
        }
    }
}

#[cfg(not(feature = "whisper"))]
impl Transcriber for Unavailable {
    fn id(&self) -> &str {
        &self.id
    }
    fn sample_rate(&self) -> u32 {
        16_000
    }
    fn languages(&self) -> &[&str] {
        &[]
    }
    fn word_timestamps(&self) -> bool {
        false
    }
    /// As the engine it stands in for would: the request then fails as unavailable (503),
    /// not as a model that cannot translate.
    fn translates(&self) -> bool {
        true
    }
    fn transcribe(
        &self,
        _request: voxgate_engine::TranscriptionRequest,
    ) -> voxgate_engine::TranscriptionFuture {
        let reason = self.reason;
        Box::pin(async move { Err(EngineError::Unavailable(reason.into())) })
    }
}

#[cfg(feature = "whisper")]
pub use lazy::LazyWhisper;

#[cfg(feature = "whisper")]
mod lazy {
    use std::sync::Arc;

    use super::*;
    use voxgate_whisper::{WhisperEngine, WhisperSettings};

    /// Whisper, verified and loaded on first use.
    #[derive(Debug)]
    pub struct LazyWhisper {
        inner: Arc<Inner>,
    }

    #[derive(Debug)]
    struct Inner {
        id: String,
        settings: WhisperSettings,
        engine: tokio::sync::OnceCell<Result<Arc<WhisperEngine>, String>>,
    }

    impl LazyWhisper {
        pub fn new(id: &str, settings: WhisperSettings) -> Self {
            Self {
                inner: Arc::new(Inner {
                    id: id.to_owned(),
                    settings,
                    engine: tokio::sync::OnceCell::new(),
                }),
            }
        }
    }

    impl Inner {
        async fn engine(&self) -> Result<Arc<WhisperEngine>, EngineError> {
            let loaded = self
                .engine
                .get_or_init(|| async {
                    let (id, settings) = (self.id.clone(), self.settings.clone());
                    let started = std::time::Instant::now();
                    let result =
                        tokio::task::spawn_blocking(move || WhisperEngine::load(&id, &settings))
                            .await;
                    match result {
                        Ok(Ok(engine)) => {
                            tracing::info!(engine = %self.id, load_ms = started.elapsed().as_millis() as u64, "speech recognition model verified and loaded");
                            Ok(Arc::new(engine))
                        }
                        Ok(Err(err)) => {
                            tracing::error!(engine = %self.id, error = %err, "speech recognition engine refused to start");
                            Err(err.to_string())
                        }
                        Err(err) => Err(format!("loading panicked: {err}")),
                    }
                })
                .await;
            loaded.clone().map_err(EngineError::Unavailable)
        }
    }

    impl Transcriber for LazyWhisper {
        fn id(&self) -> &str {
            &self.inner.id
        }
        fn sample_rate(&self) -> u32 {
            voxgate_whisper::SAMPLE_RATE
        }
        fn languages(&self) -> &[&str] {
            voxgate_whisper::LANGUAGES
        }
        fn word_timestamps(&self) -> bool {
            true
        }

        fn translates(&self) -> bool {
            true
        }
        fn transcribe(
            &self,
            request: voxgate_engine::TranscriptionRequest,
        ) -> voxgate_engine::TranscriptionFuture {
            let inner = Arc::clone(&self.inner);
            Box::pin(async move { inner.engine().await?.transcribe(request).await })
        }
    }
}
