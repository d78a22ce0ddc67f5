//! OpenAI's realtime transcription API: `GET /v1/realtime?intent=transcription` (a
//! WebSocket) and `POST /v1/realtime/client_secrets` (ephemeral keys for browsers).
//!
//! Everything that can be refused before the socket opens is refused as an HTTP error with
//! the usual envelope: the caller (a key, or a client secret, checked by the access
//! middleware), the query, the session configuration, the tier's model, the session cap,
//! the caller's concurrency and the first quota increment. Only then is the connection
//! upgraded and the session run ([`session`]).

mod session;
mod wire;

use axum::extract::ws::WebSocketUpgrade;
use axum::extract::{Query, State};
use axum::http::Method;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use secrecy::ExposeSecret as _;
use serde::Deserialize;
use serde_json::{Value, json};

use super::{ApiError, ApiJson, AppState, Routes};
use crate::engines::ModelKind;
use crate::error::{Code, Error};
use crate::identity::auth::Principal;
use crate::service::Services;
use crate::service::transcription::TranscriptionOrder;
use wire::SessionConfig;

pub use session::ROUTE;

/// The client secret a caller presented (set by the access middleware): its public id
/// and the session configuration it was minted with.
#[derive(Debug, Clone)]
pub struct SecretSession {
    pub id: String,
    pub session: String,
}

pub fn routes() -> Routes {
    Routes::default().add(Method::GET, ROUTE, connect).add(
        Method::POST,
        "/v1/realtime/client_secrets",
        mint,
    )
}

/// The token a browser offers in `Sec-WebSocket-Protocol` the way OpenAI's clients do
/// (`openai-insecure-api-key.<token>`), if any.
pub fn offered_token(protocols: &str) -> Option<&str> {
    protocols
        .split(',')
        .map(str::trim)
        .find_map(|p| p.strip_prefix("openai-insecure-api-key."))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ConnectQuery {
    intent: Option<String>,
    model: Option<String>,
}

async fn connect(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    secret: Option<Extension<SecretSession>>,
    query: Result<Query<ConnectQuery>, axum::extract::rejection::QueryRejection>,
    upgrade: Result<WebSocketUpgrade, axum::extract::ws::rejection::WebSocketUpgradeRejection>,
) -> Result<Response, ApiError> {
    let Ok(Query(query)) = query else {
        return Err(ApiError::invalid(
            "intent",
            Code::UnknownParameter,
            "The query accepts `intent=transcription` only.",
        ));
    };
    if query.model.is_some() || query.intent.as_deref() != Some("transcription") {
        return Err(ApiError::invalid(
            "intent",
            Code::InvalidValue,
            "Only transcription sessions are served: connect with `?intent=transcription`.",
        ));
    }
    let Ok(upgrade) = upgrade else {
        return Err(ApiError::new(Code::WebSocketRequired));
    };
    let limits = &state.config.transcription.realtime;
    if !limits.enabled {
        return Err(ApiError::new(Code::UnknownUrl));
    }
    let base = SessionConfig::new(default_model(&state, &principal));
    let (config, session_id) = match secret {
        // The id the secret's mint response announced.
        Some(Extension(SecretSession { id, session })) => {
            let stored: Value = serde_json::from_str(&session).map_err(ApiError::internal)?;
            (base.update(&stored)?, session_id(&id))
        }
        None => (
            base,
            session_id(&crate::util::hex(&crate::util::random_bytes::<12>())),
        ),
    };
    if config.turn_detection.is_some() {
        // Known before the socket opens: a host without Silero refuses server VAD here.
        state.vad().await?;
    }
    let job = state
        .prepare_transcription(&principal, order(&config))
        .await
        .map_err(at_transcription)?;
    let live = state.open_live(&principal).await?;
    let source = principal.source;
    let opened = session::Opened {
        session_id,
        services: std::sync::Arc::clone(&state),
        principal,
        config,
        job,
        live,
        source,
    };
    let max = limits.max_event_bytes;
    Ok(upgrade
        .protocols(["realtime"])
        .max_message_size(max)
        .max_frame_size(max)
        .on_upgrade(move |socket| session::run(socket, opened))
        .into_response())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct MintRequest {
    expires_after: Option<ExpiresAfter>,
    session: Option<Value>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ExpiresAfter {
    anchor: Option<String>,
    seconds: Option<u64>,
}

/// `POST /v1/realtime/client_secrets`: a short-lived secret that opens one kind of session
/// for the caller's account, never with more rights than the caller's key.
async fn mint(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    ApiJson(request): ApiJson<MintRequest>,
) -> Result<Json<Value>, ApiError> {
    let limits = &state.config.transcription.realtime;
    if !limits.enabled {
        return Err(ApiError::new(Code::UnknownUrl));
    }
    let expires = request.expires_after.unwrap_or(ExpiresAfter {
        anchor: None,
        seconds: None,
    });
    if expires.anchor.as_deref().is_some_and(|a| a != "created_at") {
        return Err(ApiError::invalid(
            "expires_after.anchor",
            Code::InvalidValue,
            "The only anchor is `created_at`.",
        ));
    }
    let base = SessionConfig::new(default_model(&state, &principal));
    let config = match &request.session {
        None => base,
        Some(session) => {
            if session.get("type").and_then(Value::as_str) != Some("transcription") {
                return Err(ApiError::invalid(
                    "session.type",
                    Code::InvalidValue,
                    "Only `transcription` sessions are served here.",
                ));
            }
            base.update(session)?
        }
    };
    state
        .prepare_transcription(&principal, order(&config))
        .await
        .map_err(at_transcription)?;
    let stored = config.json();
    let minted = state
        .mint_client_secret(&principal, expires.seconds, stored.to_string())
        .await?;
    let mut session = stored;
    session["id"] = json!(session_id(&minted.record.id));
    session["expires_at"] = json!(minted.record.expires_at);
    Ok(Json(json!({
        "value": minted.value.expose_secret(),
        "expires_at": minted.record.expires_at,
        "session": session,
    })))
}

/// The public id of a session: `sess_` and the secret's id, or a random one.
fn session_id(id: &str) -> String {
    format!("sess_{id}")
}

/// The model a session starts with: `whisper-1` where the caller's tier has it, or the
/// first transcription model it has.
fn default_model(services: &Services, principal: &Principal) -> String {
    let mut models = services
        .models_for(principal)
        .filter(|m| m.kind == ModelKind::Transcription)
        .map(|m| m.id.clone());
    let first = models.next();
    if first.as_deref() == Some("whisper-1") || models.any(|id| id == "whisper-1") {
        return "whisper-1".into();
    }
    first.unwrap_or_else(|| "whisper-1".into())
}

/// The transcription order a session configuration stands for.
fn order(config: &SessionConfig) -> TranscriptionOrder {
    TranscriptionOrder {
        model: config.model.clone(),
        language: config.language.clone(),
        prompt: config.prompt.clone(),
        ..TranscriptionOrder::default()
    }
}

/// A refusal of the transcription settings names their place in the session.
fn at_transcription(err: Error) -> Error {
    match err {
        Error::Refused {
            code,
            param: Some(param),
            message,
        } => Error::Refused {
            code,
            param: Some(format!("session.audio.input.transcription.{param}").into()),
            message,
        },
        other => other,
    }
}
