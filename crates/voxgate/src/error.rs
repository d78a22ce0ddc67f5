//! The error vocabulary every front door speaks, and the domain error services return.
//!
//! - [`Code`] is the one table of refusals and failures: each row is a stable code string,
//!   OpenAI's error `type`, the status an HTTP client receives and a default message. The
//!   HTTP edge reads status and type from it, the realtime and Wyoming front doors send the
//!   code and type in their `error` events. No code string is written anywhere else (the
//!   `tidy` test checks that); input-check codes from `voxgate-input` map onto rows here.
//! - [`Error`] is what services return: a refusal with its code, a limit with its wait, or
//!   a failure classified by [`ErrorClass`] (a fallback chain moves on for upstream,
//!   timeout, unavailable and overload failures, never for a client's mistake).
//!
//! Nothing here knows HTTP: the status is a number in the table, used by the HTTP edge
//! only (as meilisearch keeps code, type and status in one shared table).

use std::borrow::Cow;
use std::time::Duration;

use voxgate_engine::{EngineError, ErrorClass};
use voxgate_input::probe::ProbeErrorKind;
use voxgate_input::ssml::SsmlErrorKind;
use voxgate_input::text::TextErrorKind;

/// Any error, boxed, for sources kept for the log.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// OpenAI's error types.
const INVALID: &str = "invalid_request_error";
const AUTHENTICATION: &str = "authentication_error";
const PERMISSION: &str = "permission_error";
const RATE_LIMIT: &str = "rate_limit_error";
const QUOTA: &str = "insufficient_quota";
const SERVER: &str = "server_error";

/// One row of the table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Spec {
    /// The HTTP status (429 and 503 always carry `Retry-After`).
    pub status: u16,
    /// OpenAI's `type`.
    pub kind: &'static str,
    /// The `code` clients match on; `None` only for internal failures (OpenAI sends null).
    pub code: Option<&'static str>,
    /// What the client reads when nothing more precise is said.
    pub message: &'static str,
}

macro_rules! codes {
    ($( $(#[$doc:meta])* $name:ident => ($status:literal, $kind:ident, $code:expr, $message:literal), )*) => {
        /// Every refusal and failure the API can answer with.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum Code {
            $( $(#[$doc])* $name, )*
        }

        impl Code {
            /// Every row, in table order.
            pub const ALL: &'static [Code] = &[$(Code::$name,)*];

            /// The row for this code.
            pub const fn spec(self) -> Spec {
                match self {
                    $( Code::$name => Spec {
                        status: $status,
                        kind: $kind,
                        code: $code,
                        message: $message,
                    }, )*
                }
            }
        }
    };
}

codes! {
    // The request as a whole.
    InvalidJson => (400, INVALID, Some("invalid_json"), "We could not parse the JSON body of your request."),
    InvalidValue => (400, INVALID, Some("invalid_value"), "A parameter has an invalid value."),
    InvalidType => (400, INVALID, Some("invalid_type"), "A parameter has the wrong type."),
    MissingParameter => (400, INVALID, Some("missing_parameter"), "A required parameter is missing."),
    MissingRequiredParameter => (400, INVALID, Some("missing_required_parameter"), "A required parameter is missing."),
    UnknownParameter => (400, INVALID, Some("unknown_parameter"), "Unrecognized request argument supplied."),
    DuplicateParameter => (400, INVALID, Some("duplicate_parameter"), "A parameter was sent more than once."),
    ParameterTooLong => (400, INVALID, Some("parameter_too_long"), "A parameter is too long."),
    InvalidMultipart => (400, INVALID, Some("invalid_multipart"), "The multipart body is malformed."),
    TooManyFields => (400, INVALID, Some("too_many_fields"), "The form has too many fields."),
    UnsupportedMediaType => (415, INVALID, Some("unsupported_media_type"), "The content type is not accepted here."),
    PayloadTooLarge => (413, INVALID, Some("payload_too_large"), "The request body is too large."),
    UnknownUrl => (404, INVALID, Some("unknown_url"), "Invalid URL."),
    MethodNotAllowed => (405, INVALID, Some("method_not_allowed"), "Method not allowed."),
    HttpsRequired => (400, INVALID, Some("https_required"), "This server only speaks HTTPS."),
    // Credentials.
    MissingApiKey => (401, AUTHENTICATION, Some("missing_api_key"), "You didn't provide an API key. Send it as `Authorization: Bearer <key>`."),
    InvalidApiKey => (401, AUTHENTICATION, Some("invalid_api_key"), "Incorrect API key provided."),
    ExpiredApiKey => (401, AUTHENTICATION, Some("expired_api_key"), "This API key has expired."),
    RevokedApiKey => (401, AUTHENTICATION, Some("revoked_api_key"), "This API key has been revoked."),
    AccountInactive => (401, AUTHENTICATION, Some("account_inactive"), "The account of this API key is deactivated."),
    CredentialsInQuery => (401, AUTHENTICATION, Some("credentials_in_query"), "API keys are accepted only in the Authorization header (Bearer)."),
    CredentialsInCookie => (401, AUTHENTICATION, Some("credentials_in_cookie"), "API keys are accepted only in the Authorization header (Bearer)."),
    CredentialsInProtocol => (401, AUTHENTICATION, Some("credentials_in_protocol"), "Only an ephemeral client secret (ek_…) is accepted in Sec-WebSocket-Protocol; mint one with POST /v1/realtime/client_secrets."),
    CredentialsInBody => (401, AUTHENTICATION, Some("credentials_in_body"), "API keys are accepted only in the Authorization header (Bearer)."),
    MissingSession => (401, AUTHENTICATION, Some("missing_session"), "Sign in first: this page's API works only within a session."),
    InvalidSession => (401, AUTHENTICATION, Some("invalid_session"), "The session has ended or is unknown; sign in again."),
    // Permissions.
    CsrfRefused => (403, PERMISSION, Some("csrf_refused"), "A change from a page needs its session's CSRF token (X-CSRF-Token) and must come from the same origin."),
    InsufficientScope => (403, PERMISSION, Some("insufficient_scope"), "This key lacks the scope this route needs."),
    RouteNotAuthorized => (403, PERMISSION, Some("route_not_authorized"), "This route is not available."),
    CorsRefused => (403, PERMISSION, Some("cors_refused"), "This origin may not call this server."),
    OriginNotAllowed => (403, PERMISSION, Some("origin_not_allowed"), "This key works only from the web origins it was created for."),
    ModelNotAllowed => (403, PERMISSION, Some("model_not_allowed"), "Your tier does not include this model."),
    VoiceNotAllowed => (403, PERMISSION, Some("voice_not_allowed"), "Your tier does not include this voice."),
    EngineNotAllowed => (403, PERMISSION, Some("engine_not_allowed"), "Your tier does not include this model's engine."),
    SsmlNotAllowed => (403, PERMISSION, Some("ssml_not_allowed"), "Your tier does not accept SSML input."),
    VoiceLimitReached => (403, PERMISSION, Some("voice_limit_reached"), "Your tier keeps no more stored voices; delete one first."),
    TierWidening => (403, PERMISSION, Some("tier_widening"), "A key cannot have a higher tier than its account."),
    ScopeWidening => (403, PERMISSION, Some("scope_widening"), "A key cannot have scopes its tier lacks."),
    ExceedsCaller => (403, PERMISSION, Some("exceeds_caller"), "A key created or rotated through the API cannot exceed your own key's rights."),
    // Limits (every 429 and 503 carries Retry-After).
    TooManyFailedAuthentications => (429, RATE_LIMIT, Some("too_many_failed_authentications"), "Too many failed authentication attempts; retry later."),
    RateLimitExceeded => (429, RATE_LIMIT, Some("rate_limit_exceeded"), "Rate limit reached; retry after the time in Retry-After."),
    TooManyConcurrentRequests => (429, RATE_LIMIT, Some("too_many_concurrent_requests"), "Too many concurrent requests for this key or account; wait for one to finish."),
    QuotaExceeded => (429, QUOTA, Some("quota_exceeded"), "You exceeded your quota for this period; it resets after the time in Retry-After."),
    Overloaded => (503, SERVER, Some("overloaded"), "The server is overloaded; retry later."),
    StoreUnavailable => (503, SERVER, Some("store_unavailable"), "The server's database is unavailable; retry after the time in Retry-After."),
    StorageFull => (503, SERVER, Some("storage_full"), "The server's storage is full; retry later."),
    ShuttingDown => (503, SERVER, Some("server_shutting_down"), "The server is shutting down; reconnect in a moment."),
    // Objects.
    ModelNotFound => (404, INVALID, Some("model_not_found"), "The model does not exist."),
    /// A voice name the model does not have (a parameter error, as OpenAI answers it).
    VoiceNotFound => (400, INVALID, Some("voice_not_found"), "The voice is not available for this model."),
    /// A stored voice id that is not the caller's (another account's id included).
    StoredVoiceNotFound => (404, INVALID, Some("voice_not_found"), "No stored voice with this id."),
    NotFound => (404, INVALID, Some("not_found"), "No such object."),
    AccountNotFound => (400, INVALID, Some("account_not_found"), "No such account."),
    KeyNotFound => (400, INVALID, Some("key_not_found"), "No such key, or it is already revoked or rotated."),
    UnknownTier => (400, INVALID, Some("unknown_tier"), "No such tier."),
    UnknownScope => (400, INVALID, Some("unknown_scope"), "Unknown scope."),
    /// An administrative change to a deactivated account.
    AccountDeactivated => (400, INVALID, Some("account_inactive"), "The account is deactivated."),
    OwnAccount => (400, INVALID, Some("own_account"), "Deactivate your own account with the command line, not with its own key."),
    // Speech and transcription parameters.
    UnsupportedModel => (400, INVALID, Some("unsupported_model"), "The model does not do this."),
    UnsupportedResponseFormat => (400, INVALID, Some("unsupported_response_format"), "The response format is not available in this build."),
    InstructionsNotSupported => (400, INVALID, Some("instructions_not_supported"), "This model does not take 'instructions'."),
    InstructionsTooLong => (400, INVALID, Some("instructions_too_long"), "'instructions' is too long."),
    VoiceCloningUnsupported => (400, INVALID, Some("voice_cloning_unsupported"), "No engine of this model can speak with a stored voice."),
    UnsupportedInput => (400, INVALID, Some("unsupported_input"), "The engine cannot synthesize this input."),
    UnsupportedLanguage => (400, INVALID, Some("unsupported_language"), "'language' must be an ISO 639-1 code the model knows."),
    ConsentRequired => (400, INVALID, Some("consent_required"), "'consent' must be `true`: confirm the speaker agreed to having their voice cloned."),
    // The text pipeline (voxgate_input::text).
    InvalidUtf8 => (400, INVALID, Some("invalid_utf8"), "The text is not valid UTF-8."),
    ControlCharacter => (400, INVALID, Some("control_character"), "The text contains a control character."),
    BidiControl => (400, INVALID, Some("bidi_control"), "The text contains a bidirectional control character."),
    ZeroWidthCharacter => (400, INVALID, Some("zero_width_character"), "The text contains a zero-width character."),
    TagCharacter => (400, INVALID, Some("tag_character"), "The text contains a tag character."),
    Noncharacter => (400, INVALID, Some("noncharacter"), "The text contains a noncharacter."),
    EmptyInput => (400, INVALID, Some("empty_input"), "The text is empty."),
    InputTooLong => (400, INVALID, Some("input_too_long"), "The text is too long."),
    Profanity => (400, INVALID, Some("profanity"), "The text contains blocked words."),
    Spam => (400, INVALID, Some("spam"), "The text looks like spam."),
    // SSML (voxgate_input::ssml).
    SsmlTooLarge => (400, INVALID, Some("ssml_too_large"), "SSML document exceeds the size limit."),
    SsmlMalformed => (400, INVALID, Some("ssml_malformed"), "SSML is not well-formed XML."),
    SsmlDtdRefused => (400, INVALID, Some("ssml_dtd_refused"), "SSML must not contain a DOCTYPE or entity declarations."),
    SsmlTooManyNodes => (400, INVALID, Some("ssml_too_many_nodes"), "SSML document has too many nodes."),
    SsmlTooDeep => (400, INVALID, Some("ssml_too_deep"), "SSML elements are nested too deeply."),
    SsmlRootNotSpeak => (400, INVALID, Some("ssml_root_not_speak"), "SSML root element must be speak."),
    SsmlElementNotAllowed => (400, INVALID, Some("ssml_element_not_allowed"), "SSML element not allowed."),
    SsmlAttributeNotAllowed => (400, INVALID, Some("ssml_attribute_not_allowed"), "SSML attribute not allowed on this element."),
    SsmlInvalidValue => (400, INVALID, Some("ssml_invalid_value"), "SSML attribute has an invalid value."),
    SsmlProcessingInstruction => (400, INVALID, Some("ssml_processing_instruction"), "SSML must not contain processing instructions."),
    SsmlForeignNamespace => (400, INVALID, Some("ssml_foreign_namespace"), "SSML element is in a foreign namespace."),
    SsmlMissingAttribute => (400, INVALID, Some("ssml_missing_attribute"), "SSML element is missing a required attribute."),
    // Uploads (voxgate_input::probe).
    EmptyFile => (400, INVALID, Some("empty_file"), "The uploaded file is empty."),
    FileTooLarge => (413, INVALID, Some("file_too_large"), "The uploaded file is too large."),
    UnsupportedFileType => (400, INVALID, Some("unsupported_file_type"), "The file type is not accepted."),
    PolyglotFile => (415, INVALID, Some("polyglot_file"), "The file carries more than audio."),
    UnsupportedSampleRate => (400, INVALID, Some("unsupported_sample_rate"), "The audio's sample rate is not supported."),
    UnsupportedChannels => (400, INVALID, Some("unsupported_channels"), "The audio's channel layout is not supported."),
    AudioTooLong => (400, INVALID, Some("audio_too_long"), "The audio is too long."),
    AudioTooShort => (400, INVALID, Some("audio_too_short"), "The audio is too short."),
    InvalidAudio => (400, INVALID, Some("invalid_audio"), "The file is not audio that decodes."),
    // The Wyoming listener's frames and events.
    InvalidEvent => (400, INVALID, Some("invalid_event"), "The event is malformed."),
    EventTooLarge => (413, INVALID, Some("event_too_large"), "The event is larger than this listener accepts."),
    UnsupportedEvent => (400, INVALID, Some("unsupported_event"), "This listener does not serve this event."),
    WebSocketRequired => (426, INVALID, Some("websocket_required"), "This route is a WebSocket: connect with `Upgrade: websocket`."),
    SessionExpired => (400, INVALID, Some("session_expired"), "The session reached its maximum length."),
    InputAudioBufferCommitEmpty => (400, INVALID, Some("input_audio_buffer_commit_empty"), "The input audio buffer holds too little audio to commit."),
    TooManyEvents => (429, RATE_LIMIT, Some("too_many_events"), "Too many events per second on this connection."),
    // Failures on our side or upstream.
    EngineUnavailable => (503, SERVER, Some("engine_unavailable"), "The engine for this model is not available on this server."),
    Timeout => (504, SERVER, Some("timeout"), "The request timed out."),
    UpstreamError => (502, SERVER, Some("upstream_error"), "The upstream speech provider failed."),
    Internal => (500, SERVER, None, "The server had an error while processing your request."),
}

impl Code {
    /// The code string (`None` for internal failures).
    pub fn as_str(self) -> Option<&'static str> {
        self.spec().code
    }

    /// OpenAI's error type.
    pub fn kind(self) -> &'static str {
        self.spec().kind
    }

    /// Whether a client must wait before retrying (a 429 or 503).
    pub fn retry_later(self) -> bool {
        matches!(self.spec().status, 429 | 503)
    }
}

/// The store cannot be reached or written now (down, unreachable, too slow, its breaker
/// open, or its disk full). The store layer puts this in its errors' source chain; wherever
/// such an error surfaces, the answer is a 503 with a wait ([`outage`]), never a 500.
#[derive(Debug, thiserror::Error)]
pub enum StoreOutage {
    #[error("the database is unavailable")]
    Unavailable(#[source] BoxError),
    #[error("the disk holding the database is full; free space on it")]
    DiskFull(#[source] BoxError),
}

/// The 503 an error answers with if it (or its source chain) is a [`StoreOutage`].
pub fn outage(err: &(dyn std::error::Error + 'static)) -> Option<Code> {
    let mut next = Some(err);
    while let Some(e) = next {
        if let Some(outage) = e.downcast_ref::<StoreOutage>() {
            return Some(match outage {
                StoreOutage::Unavailable(_) => Code::StoreUnavailable,
                StoreOutage::DiskFull(_) => Code::StorageFull,
            });
        }
        next = e.source();
    }
    None
}

/// How long a client should wait after an outage refusal: the store's breaker probes again
/// within a second; freeing disk space takes an operator.
pub fn outage_wait(code: Code) -> Duration {
    match code {
        Code::StorageFull => Duration::from_secs(30),
        _ => Duration::from_secs(1),
    }
}

impl From<TextErrorKind> for Code {
    fn from(kind: TextErrorKind) -> Self {
        match kind {
            TextErrorKind::InvalidUtf8 => Code::InvalidUtf8,
            TextErrorKind::ControlCharacter => Code::ControlCharacter,
            TextErrorKind::BidiControl => Code::BidiControl,
            TextErrorKind::ZeroWidthCharacter => Code::ZeroWidthCharacter,
            TextErrorKind::TagCharacter => Code::TagCharacter,
            TextErrorKind::Noncharacter => Code::Noncharacter,
            TextErrorKind::Empty => Code::EmptyInput,
            TextErrorKind::TooLong { .. } => Code::InputTooLong,
            TextErrorKind::Profanity => Code::Profanity,
            TextErrorKind::Spam(_) => Code::Spam,
        }
    }
}

impl From<SsmlErrorKind> for Code {
    fn from(kind: SsmlErrorKind) -> Self {
        match kind {
            SsmlErrorKind::TooLarge => Code::SsmlTooLarge,
            SsmlErrorKind::Malformed => Code::SsmlMalformed,
            SsmlErrorKind::DtdRefused => Code::SsmlDtdRefused,
            SsmlErrorKind::TooManyNodes => Code::SsmlTooManyNodes,
            SsmlErrorKind::TooDeep => Code::SsmlTooDeep,
            SsmlErrorKind::RootNotSpeak => Code::SsmlRootNotSpeak,
            SsmlErrorKind::ElementNotAllowed => Code::SsmlElementNotAllowed,
            SsmlErrorKind::AttributeNotAllowed => Code::SsmlAttributeNotAllowed,
            SsmlErrorKind::InvalidAttributeValue => Code::SsmlInvalidValue,
            SsmlErrorKind::ProcessingInstruction => Code::SsmlProcessingInstruction,
            SsmlErrorKind::ForeignNamespace => Code::SsmlForeignNamespace,
            SsmlErrorKind::MissingAttribute => Code::SsmlMissingAttribute,
        }
    }
}

impl From<ProbeErrorKind> for Code {
    fn from(kind: ProbeErrorKind) -> Self {
        match kind {
            ProbeErrorKind::EmptyFile => Code::EmptyFile,
            ProbeErrorKind::FileTooLarge => Code::FileTooLarge,
            ProbeErrorKind::UnsupportedFileType => Code::UnsupportedFileType,
            ProbeErrorKind::UnsupportedMediaType => Code::UnsupportedMediaType,
            ProbeErrorKind::PolyglotFile => Code::PolyglotFile,
            ProbeErrorKind::UnsupportedSampleRate => Code::UnsupportedSampleRate,
            ProbeErrorKind::UnsupportedChannels => Code::UnsupportedChannels,
            ProbeErrorKind::AudioTooLong => Code::AudioTooLong,
            ProbeErrorKind::AudioTooShort => Code::AudioTooShort,
            ProbeErrorKind::InvalidAudio => Code::InvalidAudio,
            ProbeErrorKind::Io => Code::Internal,
        }
    }
}

/// Why a service refused or could not finish a request.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The request cannot be served as asked: a bad or missing parameter, a denial, an
    /// object the caller does not have. Retrying the same request cannot help.
    #[error("{message}")]
    Refused {
        code: Code,
        param: Option<Cow<'static, str>>,
        message: Cow<'static, str>,
    },
    /// A limit refused the request for now: concurrency, quota, a full engine queue.
    #[error("{}", code.spec().message)]
    Limited { code: Code, retry_after: Duration },
    /// The engine cannot run on this server (model files missing or altered, not built in).
    #[error("{}", Code::EngineUnavailable.spec().message)]
    EngineUnavailable,
    /// The engine, or the whole request, took too long.
    #[error("{}", Code::Timeout.spec().message)]
    Timeout,
    /// A remote provider failed; its own text stays in the log.
    #[error("{}", Code::UpstreamError.spec().message)]
    Upstream(#[source] EngineError),
    /// Anything else; logged once, the client sees a generic message.
    #[error("{}", Code::Internal.spec().message)]
    Internal(#[source] BoxError),
}

impl Error {
    /// A refusal about one parameter.
    pub fn invalid(
        param: impl Into<Cow<'static, str>>,
        code: Code,
        message: impl Into<Cow<'static, str>>,
    ) -> Self {
        Error::Refused {
            code,
            param: Some(param.into()),
            message: message.into(),
        }
    }

    /// A refusal not tied to a parameter, with the table's message or a better one.
    pub fn refused(code: Code, message: impl Into<Cow<'static, str>>) -> Self {
        Error::Refused {
            code,
            param: None,
            message: message.into(),
        }
    }

    /// A refusal with the table's own message.
    pub fn from_code(code: Code) -> Self {
        Error::refused(code, code.spec().message)
    }

    /// A limit: retry after `retry_after`.
    pub fn limited(code: Code, retry_after: Duration) -> Self {
        Error::Limited { code, retry_after }
    }

    /// Wraps an unexpected failure. A store that cannot be reached or written (found
    /// anywhere in the error's chain) is not one: it answers 503 with a wait, never a 500.
    pub fn internal(err: impl std::error::Error + Send + Sync + 'static) -> Self {
        match outage(&err) {
            Some(code) => Error::limited(code, outage_wait(code)),
            None => Error::Internal(Box::new(err)),
        }
    }

    /// A refusal of an input-check failure (text pipeline) naming `param`.
    pub fn text(param: &'static str, err: &voxgate_input::text::TextError) -> Self {
        Error::invalid(param, err.kind.into(), format!("'{param}': {err}."))
    }

    /// The row of the table this error answers with.
    pub fn code(&self) -> Code {
        match self {
            Error::Refused { code, .. } | Error::Limited { code, .. } => *code,
            Error::EngineUnavailable => Code::EngineUnavailable,
            Error::Timeout => Code::Timeout,
            Error::Upstream(_) => Code::UpstreamError,
            Error::Internal(_) => Code::Internal,
        }
    }

    /// The parameter at fault, if one is.
    pub fn param(&self) -> Option<&str> {
        match self {
            Error::Refused { param, .. } => param.as_deref(),
            _ => None,
        }
    }

    /// How long to wait before retrying, for limits.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Error::Limited { retry_after, .. } => Some(*retry_after),
            _ => None,
        }
    }

    /// Who is at fault and whether another engine may help.
    pub fn class(&self) -> ErrorClass {
        match self {
            Error::Refused { .. } => ErrorClass::Client,
            Error::Limited {
                code: Code::Overloaded,
                ..
            } => ErrorClass::Overload,
            Error::Limited { .. } => ErrorClass::Client,
            Error::EngineUnavailable => ErrorClass::Unavailable,
            Error::Timeout => ErrorClass::Timeout,
            Error::Upstream(_) => ErrorClass::Upstream,
            Error::Internal(_) => ErrorClass::Internal,
        }
    }

    /// Whether the next engine of a fallback chain may try: the engine failed, timed out, is
    /// saturated or cannot run (its breaker is open). A client's mistake never falls back.
    pub fn falls_back(&self) -> bool {
        matches!(
            self.class(),
            ErrorClass::Upstream
                | ErrorClass::Timeout
                | ErrorClass::Unavailable
                | ErrorClass::Overload
        )
    }
}

impl From<EngineError> for Error {
    fn from(err: EngineError) -> Self {
        match err.class() {
            ErrorClass::Client => match err {
                EngineError::UnknownVoice => Error::invalid(
                    "voice",
                    Code::VoiceNotFound,
                    Code::VoiceNotFound.spec().message,
                ),
                _ => Error::invalid(
                    "input",
                    Code::UnsupportedInput,
                    Code::UnsupportedInput.spec().message,
                ),
            },
            ErrorClass::Overload => {
                let retry_after = match err {
                    EngineError::Overloaded { retry_after } => retry_after,
                    _ => None,
                };
                Error::limited(
                    Code::Overloaded,
                    retry_after.unwrap_or(Duration::from_secs(1)),
                )
            }
            ErrorClass::Timeout => Error::Timeout,
            ErrorClass::Unavailable => {
                // Logged where it became so (a breaker's transition, a failed model check
                // at start-up), not once per request.
                tracing::debug!(error = %err, "engine unavailable");
                Error::EngineUnavailable
            }
            ErrorClass::Upstream => Error::Upstream(err),
            ErrorClass::Internal => Error::Internal(Box::new(err)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Pins the whole table: changing a status, type or code is a deliberate act, and every
    /// limit or overload answers with a status that carries Retry-After.
    #[test]
    fn the_error_table() {
        let mut seen = std::collections::HashSet::new();
        for code in Code::ALL {
            assert!(seen.insert(*code), "{code:?} listed twice");
            let spec = code.spec();
            assert!(
                matches!(spec.status, 400..=405 | 413 | 415 | 426 | 429 | 500 | 502..=504),
                "{code:?}"
            );
            assert!(!spec.message.is_empty(), "{code:?}");
            match spec.status {
                401 => assert_eq!(spec.kind, AUTHENTICATION, "{code:?}"),
                403 => assert_eq!(spec.kind, PERMISSION, "{code:?}"),
                429 => assert!(spec.kind == RATE_LIMIT || spec.kind == QUOTA, "{code:?}"),
                s if s >= 500 => assert_eq!(spec.kind, SERVER, "{code:?}"),
                _ => assert_eq!(spec.kind, INVALID, "{code:?}"),
            }
            // Codes are snake_case identifiers; only internal failures have none.
            match spec.code {
                Some(c) => assert!(
                    c.bytes()
                        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_'),
                    "{c}"
                ),
                None => assert_eq!(*code, Code::Internal),
            }
        }
        let pinned = [
            (Code::InvalidJson, 400, "invalid_json"),
            (Code::ModelNotFound, 404, "model_not_found"),
            (Code::VoiceNotFound, 400, "voice_not_found"),
            (Code::StoredVoiceNotFound, 404, "voice_not_found"),
            (
                Code::UnsupportedResponseFormat,
                400,
                "unsupported_response_format",
            ),
            (Code::InvalidApiKey, 401, "invalid_api_key"),
            (Code::InsufficientScope, 403, "insufficient_scope"),
            (Code::RateLimitExceeded, 429, "rate_limit_exceeded"),
            (
                Code::TooManyConcurrentRequests,
                429,
                "too_many_concurrent_requests",
            ),
            (Code::QuotaExceeded, 429, "quota_exceeded"),
            (Code::Overloaded, 503, "overloaded"),
            (Code::StoreUnavailable, 503, "store_unavailable"),
            (Code::StorageFull, 503, "storage_full"),
            (Code::EngineUnavailable, 503, "engine_unavailable"),
            (Code::Timeout, 504, "timeout"),
            (Code::UpstreamError, 502, "upstream_error"),
            (Code::InvalidEvent, 400, "invalid_event"),
            (Code::EventTooLarge, 413, "event_too_large"),
            (Code::UnsupportedEvent, 400, "unsupported_event"),
            (Code::TooManyEvents, 429, "too_many_events"),
        ];
        for (code, status, text) in pinned {
            assert_eq!((code.spec().status, code.as_str()), (status, Some(text)));
        }
        assert_eq!(Code::QuotaExceeded.kind(), QUOTA);
        assert_eq!(Code::Internal.spec().status, 500);
    }

    /// The input crates' own codes and statuses agree with the rows they map to.
    #[test]
    fn input_check_codes_are_rows_of_the_table() {
        use ProbeErrorKind as P;
        for kind in [
            P::EmptyFile,
            P::FileTooLarge,
            P::UnsupportedFileType,
            P::UnsupportedMediaType,
            P::PolyglotFile,
            P::UnsupportedSampleRate,
            P::UnsupportedChannels,
            P::AudioTooLong,
            P::AudioTooShort,
            P::InvalidAudio,
        ] {
            let spec = Code::from(kind).spec();
            assert_eq!(spec.code, Some(kind.code()), "{kind:?}");
            assert_eq!(spec.status, kind.status(), "{kind:?}");
        }
        assert_eq!(Code::from(P::Io), Code::Internal);
        use TextErrorKind as T;
        for kind in [
            T::InvalidUtf8,
            T::ControlCharacter,
            T::BidiControl,
            T::ZeroWidthCharacter,
            T::TagCharacter,
            T::Noncharacter,
            T::Empty,
            T::TooLong { max: 1, actual: 2 },
            T::Profanity,
        ] {
            assert_eq!(Code::from(kind).as_str(), Some(kind.code()));
        }
        use SsmlErrorKind as S;
        for kind in [
            S::TooLarge,
            S::Malformed,
            S::DtdRefused,
            S::TooManyNodes,
            S::TooDeep,
            S::RootNotSpeak,
            S::ElementNotAllowed,
            S::AttributeNotAllowed,
            S::InvalidAttributeValue,
            S::ProcessingInstruction,
            S::ForeignNamespace,
            S::MissingAttribute,
        ] {
            assert_eq!(Code::from(kind).as_str(), Some(kind.code()));
        }
    }

    #[test]
    fn engine_errors_map_by_class_and_decide_fallback() {
        let upstream =
            EngineError::Upstream(Box::new(std::io::Error::other("provider said: secret")));
        let cases = [
            (EngineError::UnknownVoice, Code::VoiceNotFound, false),
            (
                EngineError::Overloaded { retry_after: None },
                Code::Overloaded,
                true,
            ),
            (EngineError::Timeout, Code::Timeout, true),
            (
                EngineError::Unavailable("model.bin fails its checksum".into()),
                Code::EngineUnavailable,
                true,
            ),
            (upstream, Code::UpstreamError, true),
            (EngineError::Internal("x".into()), Code::Internal, false),
        ];
        for (err, code, falls_back) in cases {
            let err = Error::from(err);
            assert_eq!(err.code(), code);
            assert_eq!(err.falls_back(), falls_back, "{code:?}");
        }
        assert!(!Error::limited(Code::QuotaExceeded, Duration::from_secs(1)).falls_back());
    }
}
