//! `GET /healthz` (the process is alive) and `GET /readyz` (engines can serve and the store
//! answers). Neither says anything about the inside.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::Serialize;

use super::AppState;
use super::Routes;
use axum::http::Method;

pub fn routes() -> Routes {
    Routes::default()
        .add(Method::GET, "/healthz", healthz)
        .add(Method::GET, "/readyz", readyz)
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Status {
    /// `ok`, `ready` or `not_ready`.
    pub status: &'static str,
}

#[utoipa::path(get, path = "/healthz", tag = "health",
    responses((status = 200, description = "Alive", body = Status)))]
pub async fn healthz() -> Json<Status> {
    Json(Status { status: "ok" })
}

#[utoipa::path(get, path = "/readyz", tag = "health",
    responses(
        (status = 200, description = "Ready", body = Status),
        (status = 503, description = "Not ready", body = Status),
    ))]
pub async fn readyz(State(state): State<AppState>) -> (StatusCode, Json<Status>) {
    // Not ready while the store is away: a balancer sends traffic to another instance.
    if state.catalog.ready() && state.store_guard.ready().await {
        (StatusCode::OK, Json(Status { status: "ready" }))
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(Status {
                status: "not_ready",
            }),
        )
    }
}
