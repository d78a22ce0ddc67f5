//! The OpenAPI 3.1 document of the public API, generated from the handler and wire types and
//! served as JSON at `GET /openapi.json`.

use axum::routing::get;
use axum::{Json, Router};
use utoipa::OpenApi;

use super::AppState;

#[derive(Debug, OpenApi)]
#[openapi(
    info(title = "voxgate", description = "OpenAI-compatible speech gateway"),
    paths(
        super::speech::create_speech,
        super::models::list_models,
        super::models::get_model,
        super::voices::list_voices,
        super::health::healthz,
        super::health::readyz,
    ),
    components(schemas(
        crate::error::ErrorEnvelope,
        crate::error::ErrorBody,
        super::speech::AudioDelta,
        super::speech::AudioDone,
        super::speech::Usage,
    ))
)]
pub struct ApiDoc;

pub fn router() -> Router<AppState> {
    Router::new().route("/openapi.json", get(|| async { Json(ApiDoc::openapi()) }))
}
