//! `GET /v1/models` and `GET /v1/models/{id}`.

use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::{Extension, Json};
use serde::Serialize;

use axum::http::Method;

use super::{ApiError, AppState, Routes};
use crate::engines::Model;
use crate::error::Code;
use crate::identity::auth::Principal;

pub fn routes() -> Routes {
    Routes::default()
        .add(Method::GET, "/v1/models", list_models)
        .add(Method::GET, "/v1/models/{id}", get_model)
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ModelObject {
    pub id: String,
    /// Always `model`.
    pub object: &'static str,
    /// Seconds since the epoch.
    pub created: u64,
    pub owned_by: &'static str,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ModelList {
    /// Always `list`.
    pub object: &'static str,
    pub data: Vec<ModelObject>,
}

fn object(model: &Model, created: u64) -> ModelObject {
    ModelObject {
        id: model.id.clone(),
        object: "model",
        created,
        owned_by: "voxgate",
    }
}

#[utoipa::path(get, path = "/v1/models", tag = "models",
    responses((status = 200, description = "The models", body = ModelList)))]
pub async fn list_models(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
) -> Json<ModelList> {
    let created = state.catalog.created;
    Json(ModelList {
        object: "list",
        data: state
            .models_for(&principal)
            .map(|m| object(m, created))
            .collect(),
    })
}

#[utoipa::path(get, path = "/v1/models/{id}", tag = "models",
    params(("id" = String, Path, description = "A model id")),
    responses(
        (status = 200, description = "The model", body = ModelObject),
        (status = 404, description = "No such model", body = super::error::ErrorEnvelope),
    ))]
pub async fn get_model(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    id: Result<Path<String>, PathRejection>,
) -> Result<Json<ModelObject>, ApiError> {
    let Path(id) =
        id.map_err(|_| ApiError::invalid("id", Code::InvalidValue, "Invalid model id."))?;
    let model = state.model_for(&principal, &id).await?;
    Ok(Json(object(model, state.catalog.created)))
}
