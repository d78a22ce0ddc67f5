//! `GET /v1/me/export` and `DELETE /v1/me`: an account's own data, exported or erased
//! (see [`crate::privacy`]). Both act on the caller's account only.

use axum::extract::State;
use axum::http::Method;
use axum::{Extension, Json};

use super::{AppState, Routes};
use crate::audit::{Actor, AuditEvent};
use crate::auth::Principal;
use crate::error::ApiError;
use crate::privacy::{self, AccountExport, Erased};

pub fn routes() -> Routes {
    Routes::default()
        .add(Method::GET, "/v1/me/export", export)
        .add(Method::DELETE, "/v1/me", erase)
}

#[utoipa::path(get, path = "/v1/me/export", tag = "account",
    responses((status = 200, description = "Everything voxgate keeps about the caller's account", body = AccountExport)))]
pub async fn export(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
) -> Result<Json<AccountExport>, ApiError> {
    let export = privacy::export(&state, &principal.account_id).await?;
    state
        .auth
        .audit()
        .record(
            Actor::Key(principal.keyid.clone()),
            Some(principal.source),
            AuditEvent::AccountExported {
                account_id: principal.account_id.clone(),
            },
        )
        .await;
    Ok(Json(export))
}

#[utoipa::path(delete, path = "/v1/me", tag = "account",
    responses((status = 200, description = "The caller's account erased: artifacts deleted, keys revoked, data key destroyed", body = Erased)))]
pub async fn erase(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
) -> Result<Json<Erased>, ApiError> {
    privacy::erase(
        &state,
        Actor::Key(principal.keyid.clone()),
        Some(principal.source),
        &principal.account_id,
    )
    .await
    .map(Json)
}
