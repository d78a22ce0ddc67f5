//! `GET /v1/models` and `GET /v1/models/{id}`.

use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::{Extension, Json};
use serde::Serialize;

use super::AppState;
use super::Routes;
use crate::auth::Principal;
use crate::engines::Model;
use crate::error::ApiError;
use axum::http::Method;

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
            .catalog
            .models()
            .filter(|m| principal.tier.allows_model(&m.id))
            .map(|m| object(m, created))
            .collect(),
    })
}

#[utoipa::path(get, path = "/v1/models/{id}", tag = "models",
    params(("id" = String, Path, description = "A model id")),
    responses(
        (status = 200, description = "The model", body = ModelObject),
        (status = 404, description = "No such model", body = crate::error::ErrorEnvelope),
    ))]
pub async fn get_model(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    id: Result<Path<String>, PathRejection>,
) -> Result<Json<ModelObject>, ApiError> {
    let Path(id) = id.map_err(|_| ApiError::invalid("id", "invalid_value", "Invalid model id."))?;
    let model = state.catalog.model(&id).ok_or_else(|| {
        ApiError::ModelNotFound(id.chars().filter(|c| !c.is_control()).take(64).collect())
    })?;
    if !principal.tier.allows_model(&model.id) {
        let err = ApiError::Forbidden {
            code: "model_not_allowed",
            message: format!("Your tier does not include the model `{}`.", model.id),
        };
        super::access::audit_denial(&state.auth, &principal, "/v1/models/{id}", &err).await;
        return Err(err);
    }
    Ok(Json(object(model, state.catalog.created)))
}
