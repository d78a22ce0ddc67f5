//! `GET /v1/me/export` and `DELETE /v1/me`: an account's own data, exported or erased
//! (see [`crate::service::privacy`]). Both act on the caller's account only.

use axum::extract::State;
use axum::http::Method;
use axum::{Extension, Json};

use super::{ApiError, AppState, Routes};
use crate::data::audit::Actor;
use crate::identity::auth::Principal;
use crate::service::privacy::{AccountExport, Erased};

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
    let export = state
        .export_account(
            Actor::Key(principal.keyid.clone()),
            Some(principal.source),
            &principal.account_id,
        )
        .await?;
    Ok(Json(export))
}

#[utoipa::path(delete, path = "/v1/me", tag = "account",
    responses((status = 200, description = "The caller's account erased: artifacts deleted, keys revoked, data key destroyed", body = Erased)))]
pub async fn erase(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
) -> Result<Json<Erased>, ApiError> {
    let erased = state
        .erase_account(
            Actor::Key(principal.keyid.clone()),
            Some(principal.source),
            &principal.account_id,
        )
        .await?;
    Ok(Json(erased))
}
