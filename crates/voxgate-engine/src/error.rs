//! Typed engine errors, classified by who is at fault and whether a retry helps.

use std::time::Duration;

/// Who is at fault for an [`EngineError`], which decides the status the gateway answers with
/// and whether another engine in a fallback chain may be tried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorClass {
    /// The request cannot be served by this engine as asked (unknown voice, text it refuses).
    Client,
    /// A remote provider failed or answered nonsense.
    Upstream,
    /// The engine is saturated; retrying later may succeed.
    Overload,
    /// The engine took too long.
    Timeout,
    /// The engine cannot run on this server (its model files are missing or fail their
    /// checksums, or it was not compiled in); another engine may serve.
    Unavailable,
    /// A bug or an unexpected local failure.
    Internal,
}

/// Why an engine could not produce audio.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// The voice id is not one of the engine's voices.
    #[error("unknown voice")]
    UnknownVoice,
    /// The engine refuses this input (e.g. text it cannot pronounce at all).
    #[error("the engine cannot synthesize this input: {0}")]
    Unsupported(&'static str),
    /// The engine is saturated.
    #[error("engine overloaded")]
    Overloaded {
        /// When a retry is sensible.
        retry_after: Option<Duration>,
    },
    /// The engine did not finish in time.
    #[error("engine timed out")]
    Timeout,
    /// A remote provider failed. The provider's own text is kept for logs only.
    #[error("upstream provider failed")]
    Upstream(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// The engine cannot run here; the reason is for the operator's log.
    #[error("engine unavailable: {0}")]
    Unavailable(String),
    /// Anything else: a bug or a local failure.
    #[error("internal engine failure: {0}")]
    Internal(String),
}

impl EngineError {
    /// The class that decides the HTTP status and retry behaviour.
    pub fn class(&self) -> ErrorClass {
        match self {
            EngineError::UnknownVoice | EngineError::Unsupported(_) => ErrorClass::Client,
            EngineError::Overloaded { .. } => ErrorClass::Overload,
            EngineError::Timeout => ErrorClass::Timeout,
            EngineError::Upstream(_) => ErrorClass::Upstream,
            EngineError::Unavailable(_) => ErrorClass::Unavailable,
            EngineError::Internal(_) => ErrorClass::Internal,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_variant_has_its_class() {
        let io = std::io::Error::other("boom");
        let cases = [
            (EngineError::UnknownVoice, ErrorClass::Client),
            (EngineError::Unsupported("x"), ErrorClass::Client),
            (
                EngineError::Overloaded { retry_after: None },
                ErrorClass::Overload,
            ),
            (EngineError::Timeout, ErrorClass::Timeout),
            (EngineError::Upstream(Box::new(io)), ErrorClass::Upstream),
            (
                EngineError::Unavailable("x".into()),
                ErrorClass::Unavailable,
            ),
            (EngineError::Internal("x".into()), ErrorClass::Internal),
        ];
        for (err, class) in cases {
            assert_eq!(err.class(), class, "{err:?}");
        }
    }
}
