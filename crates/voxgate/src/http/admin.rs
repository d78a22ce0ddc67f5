//! The admin API (accounts, keys, usage, audit) on its own listener, loopback by default,
//! behind the `admin` scope. It calls the same `accounts::Admin` functions as the CLI.
//! Writable fields are allow-listed; responses never include digests or the pepper.

use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::{Extension, Json};
use secrecy::ExposeSecret as _;
use serde::{Deserialize, Serialize};

use axum::http::Method;

use super::{ApiError, ApiJson, AppState, Routes};
use crate::data::audit::Actor;
use crate::data::store::{Account, AuditRecord, KeyRecord};
use crate::error::Code;
use crate::identity::accounts::{AdminError, Ceiling, KeyRequest, parse_expiry};
use crate::identity::auth::{Principal, parse_scopes};

/// The admin listener's routes (without middleware).
pub fn routes() -> Routes {
    Routes::default()
        .add(Method::GET, "/admin/accounts", list_accounts)
        .add(Method::POST, "/admin/accounts", create_account)
        .add(Method::GET, "/admin/accounts/{id}", show_account)
        .add(
            Method::POST,
            "/admin/accounts/{id}/deactivate",
            deactivate_account,
        )
        .add(Method::DELETE, "/admin/accounts/{id}", erase_account)
        .add(Method::GET, "/admin/accounts/{id}/export", export_account)
        .add(Method::GET, "/admin/keys", list_keys)
        .add(Method::POST, "/admin/keys", create_key)
        .add(Method::POST, "/admin/keys/{keyid}/revoke", revoke_key)
        .add(Method::POST, "/admin/keys/{keyid}/rotate", rotate_key)
        .add(Method::GET, "/admin/audit", audit)
        .add(Method::GET, "/admin/audit/verify", verify_audit)
        .add(Method::GET, "/admin/accounts/{id}/usage", usage)
        .add(Method::GET, "/metrics", metrics)
        .add(Method::GET, "/admin/health", health)
}

/// The same handlers under the console's path, where a browser session reaches them (see
/// `console::CONSOLE_ROUTES` for what each requires).
pub fn console_routes() -> Routes {
    Routes::default()
        .add(Method::GET, "/console/api/accounts", list_accounts)
        .add(Method::POST, "/console/api/accounts", create_account)
        .add(Method::GET, "/console/api/accounts/{id}", show_account)
        .add(
            Method::POST,
            "/console/api/accounts/{id}/deactivate",
            deactivate_account,
        )
        .add(Method::DELETE, "/console/api/accounts/{id}", erase_account)
        .add(
            Method::GET,
            "/console/api/accounts/{id}/export",
            export_account,
        )
        .add(Method::GET, "/console/api/accounts/{id}/usage", usage)
        .add(Method::GET, "/console/api/keys", list_keys)
        .add(Method::POST, "/console/api/keys", create_key)
        .add(Method::POST, "/console/api/keys/{keyid}/revoke", revoke_key)
        .add(Method::POST, "/console/api/keys/{keyid}/rotate", rotate_key)
        .add(Method::GET, "/console/api/audit", audit)
        .add(Method::GET, "/console/api/audit/verify", verify_audit)
        .add(Method::GET, "/console/api/metrics", metrics)
        .add(Method::GET, "/console/api/health", health)
}

#[derive(Debug, Serialize)]
pub struct AccountView {
    id: String,
    name: String,
    contact: Option<String>,
    tier: String,
    active: bool,
    created_at: i64,
    updated_at: i64,
}

impl From<Account> for AccountView {
    fn from(a: Account) -> Self {
        Self {
            id: a.id,
            name: a.name,
            contact: a.contact,
            tier: a.tier,
            active: a.active,
            created_at: a.created_at,
            updated_at: a.updated_at,
        }
    }
}

/// A key without its digest.
#[derive(Debug, Serialize)]
pub struct KeyView {
    keyid: String,
    account_id: String,
    name: String,
    tier: Option<String>,
    scopes: Option<String>,
    created_at: i64,
    expires_at: Option<i64>,
    revoked_at: Option<i64>,
    grace_until: Option<i64>,
    replaced_by: Option<String>,
    request_count: i64,
    last_used_at: Option<i64>,
    last_ip: Option<String>,
}

impl From<KeyRecord> for KeyView {
    fn from(k: KeyRecord) -> Self {
        Self {
            keyid: k.keyid,
            account_id: k.account_id,
            name: k.name,
            tier: k.tier,
            scopes: k.scopes,
            created_at: k.created_at,
            expires_at: k.expires_at,
            revoked_at: k.revoked_at,
            grace_until: k.grace_until,
            replaced_by: k.replaced_by,
            request_count: k.request_count,
            last_used_at: k.last_used_at,
            last_ip: k.last_ip,
        }
    }
}

/// A key just created: the only time its full text is shown.
#[derive(Debug, Serialize)]
pub struct CreatedKeyView {
    key: String,
    #[serde(flatten)]
    record: KeyView,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewAccount {
    name: String,
    #[serde(default)]
    contact: Option<String>,
    tier: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewKey {
    account_id: String,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    tier: Option<String>,
    /// Space- or comma-separated.
    #[serde(default)]
    scopes: Option<String>,
    /// A duration from now: `90d`, `12h`, `30m`, `3600s`.
    #[serde(default)]
    expires_in: Option<String>,
    /// A browser key: the exact web origins it works from.
    #[serde(default)]
    origins: Option<Vec<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyFilter {
    #[serde(default)]
    account_id: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditQuery {
    #[serde(default)]
    limit: Option<i64>,
    /// Events about this account (its own, its keys').
    #[serde(default)]
    account_id: Option<String>,
    /// Events of this kind (`key_revoked`…).
    #[serde(default)]
    kind: Option<String>,
    /// Seconds since the epoch.
    #[serde(default)]
    since: Option<i64>,
    #[serde(default)]
    until: Option<i64>,
    /// The page before this `seq` (newest first).
    #[serde(default)]
    before: Option<i64>,
}

fn admin_error(err: AdminError) -> ApiError {
    match err {
        AdminError::Store(e) => ApiError::internal(e),
        AdminError::NoAccount => ApiError::invalid(
            "account_id",
            Code::AccountNotFound,
            Code::AccountNotFound.spec().message,
        ),
        AdminError::NoKey => {
            ApiError::invalid("keyid", Code::KeyNotFound, Code::KeyNotFound.spec().message)
        }
        AdminError::UnknownTier(_) => {
            ApiError::invalid("tier", Code::UnknownTier, Code::UnknownTier.spec().message)
        }
        AdminError::WidensTier => ApiError::new(Code::TierWidening),
        AdminError::WidensScopes(s) => ApiError::new(Code::ScopeWidening)
            .with_message(format!("A key cannot have scopes its tier lacks: {s}.")),
        AdminError::ExceedsCaller => ApiError::new(Code::ExceedsCaller),
        AdminError::AccountInactive => ApiError::invalid(
            "account_id",
            Code::AccountDeactivated,
            Code::AccountDeactivated.spec().message,
        ),
        AdminError::Invalid(field) => ApiError::invalid(
            field,
            Code::InvalidValue,
            format!("Invalid value for '{field}'."),
        ),
    }
}

fn path_error(_: PathRejection) -> ApiError {
    ApiError::invalid("path", Code::InvalidValue, "Invalid path parameter.")
}

fn actor(principal: &Principal) -> Actor {
    Actor::Key(principal.keyid.clone())
}

async fn list_accounts(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
) -> Result<Json<Vec<AccountView>>, ApiError> {
    let accounts = state
        .accounts
        .list(actor(&principal))
        .await
        .map_err(admin_error)?;
    Ok(Json(accounts.into_iter().map(AccountView::from).collect()))
}

async fn create_account(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    ApiJson(body): ApiJson<NewAccount>,
) -> Result<(StatusCode, Json<AccountView>), ApiError> {
    let account = state
        .accounts
        .create_account(
            actor(&principal),
            &body.name,
            body.contact.as_deref(),
            &body.tier,
        )
        .await
        .map_err(admin_error)?;
    Ok((StatusCode::CREATED, Json(account.into())))
}

#[derive(Debug, Serialize)]
struct AccountDetail {
    #[serde(flatten)]
    account: AccountView,
    keys: Vec<KeyView>,
}

async fn show_account(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    id: Result<Path<String>, PathRejection>,
) -> Result<Json<AccountDetail>, ApiError> {
    let Path(id) = id.map_err(path_error)?;
    let (account, keys) = state
        .accounts
        .show(actor(&principal), &id)
        .await
        .map_err(admin_error)?;
    Ok(Json(AccountDetail {
        account: account.into(),
        keys: keys.into_iter().map(KeyView::from).collect(),
    }))
}

async fn deactivate_account(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    id: Result<Path<String>, PathRejection>,
) -> Result<StatusCode, ApiError> {
    let Path(id) = id.map_err(path_error)?;
    if id == principal.account_id {
        return Err(ApiError::invalid(
            "id",
            Code::OwnAccount,
            Code::OwnAccount.spec().message,
        ));
    }
    state
        .accounts
        .deactivate_account(actor(&principal), &id)
        .await
        .map_err(admin_error)?;
    for key in state.accounts.keys_of(&id).await.map_err(admin_error)? {
        state.auth.invalidate(&key.keyid);
    }
    Ok(StatusCode::NO_CONTENT)
}

async fn list_keys(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    query: Result<Query<KeyFilter>, QueryRejection>,
) -> Result<Json<Vec<KeyView>>, ApiError> {
    let Query(filter) = query
        .map_err(|_| ApiError::invalid("query", Code::InvalidValue, "Invalid query parameters."))?;
    let keys = state
        .accounts
        .keys(actor(&principal), filter.account_id.as_deref())
        .await
        .map_err(admin_error)?;
    Ok(Json(keys.into_iter().map(KeyView::from).collect()))
}

async fn create_key(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    ApiJson(body): ApiJson<NewKey>,
) -> Result<(StatusCode, Json<CreatedKeyView>), ApiError> {
    let scopes = match body.scopes.as_deref() {
        Some(text) => Some(
            parse_scopes(text)
                .ok_or_else(|| ApiError::invalid("scopes", Code::UnknownScope, "Unknown scope."))?,
        ),
        None => None,
    };
    let expires_at = match body.expires_in.as_deref() {
        Some(text) => Some(parse_expiry(text).ok_or_else(|| {
            ApiError::invalid(
                "expires_in",
                Code::InvalidValue,
                "Use a duration like 90d, 12h or 3600s.",
            )
        })?),
        None => None,
    };
    let request = KeyRequest {
        name: body.name.unwrap_or_default(),
        tier: body.tier,
        scopes,
        expires_at,
        origins: body.origins,
    };
    let created = state
        .accounts
        .create_key(
            actor(&principal),
            &body.account_id,
            request,
            Some(&Ceiling::from(&principal)),
        )
        .await
        .map_err(admin_error)?;
    Ok((
        StatusCode::CREATED,
        Json(CreatedKeyView {
            key: created.secret.expose_secret().to_owned(),
            record: created.record.into(),
        }),
    ))
}

async fn revoke_key(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    keyid: Result<Path<String>, PathRejection>,
) -> Result<StatusCode, ApiError> {
    let Path(keyid) = keyid.map_err(path_error)?;
    state
        .accounts
        .revoke_key(actor(&principal), &keyid)
        .await
        .map_err(admin_error)?;
    state.auth.invalidate(&keyid);
    Ok(StatusCode::NO_CONTENT)
}

async fn rotate_key(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    keyid: Result<Path<String>, PathRejection>,
) -> Result<(StatusCode, Json<CreatedKeyView>), ApiError> {
    let Path(keyid) = keyid.map_err(path_error)?;
    let created = state
        .accounts
        .rotate_key(actor(&principal), &keyid, Some(&Ceiling::from(&principal)))
        .await
        .map_err(admin_error)?;
    state.auth.invalidate(&keyid);
    Ok((
        StatusCode::CREATED,
        Json(CreatedKeyView {
            key: created.secret.expose_secret().to_owned(),
            record: created.record.into(),
        }),
    ))
}

/// Prometheus text; only fixed names, never user data.
async fn metrics(
    State(state): State<AppState>,
) -> ([(axum::http::HeaderName, &'static str); 1], String) {
    use std::fmt::Write as _;
    let mut text = state.metrics.render();
    // Gauges read from the live state: each engine's admission queue.
    let _ = writeln!(
        text,
        "# HELP voxgate_engine_queue_depth Requests waiting for an engine slot.\n# TYPE voxgate_engine_queue_depth gauge"
    );
    for (id, _) in state.catalog.engines() {
        if let Some(queue) = state.concurrency.queue(id) {
            let _ = writeln!(
                text,
                "voxgate_engine_queue_depth{{engine=\"{id}\"}} {}",
                queue.depth()
            );
        }
    }
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        text,
    )
}

#[derive(Debug, Serialize)]
struct AuditView {
    seq: i64,
    at: i64,
    kind: String,
    actor: Option<String>,
    account_id: Option<String>,
    subject: Option<String>,
    source: Option<String>,
    detail: serde_json::Value,
}

async fn audit(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    query: Result<Query<AuditQuery>, QueryRejection>,
) -> Result<Json<Vec<AuditView>>, ApiError> {
    let Query(q) = query
        .map_err(|_| ApiError::invalid("query", Code::InvalidValue, "Invalid query parameters."))?;
    let filter = crate::data::store::AuditFilter {
        account_id: q.account_id,
        kind: q.kind,
        since: q.since,
        until: q.until,
        cursor: q.before,
        newest_first: true,
        limit: q.limit.unwrap_or(100).clamp(1, 1000),
    };
    let events = state
        .accounts
        .audit_events(actor(&principal), &filter)
        .await
        .map_err(admin_error)?;
    Ok(Json(
        events
            .into_iter()
            .map(|e: AuditRecord| AuditView {
                seq: e.seq,
                at: e.at,
                kind: e.kind,
                actor: e.actor,
                account_id: e.account_id,
                subject: e.subject,
                source: e.source,
                detail: serde_json::from_str(&e.detail).unwrap_or(serde_json::Value::Null),
            })
            .collect(),
    ))
}

/// `GET /admin/audit/verify`: the whole log checked against its signed checkpoints.
async fn verify_audit(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
) -> Result<Json<crate::service::audit::Verification>, ApiError> {
    Ok(Json(state.verify_audit(actor(&principal)).await?))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UsageQuery {
    /// Windows starting at or after this (seconds since the epoch); default 31 days ago.
    #[serde(default)]
    since: Option<i64>,
}

#[derive(Debug, Serialize)]
struct QuotaView {
    per: crate::config::RateSubject,
    metric: crate::config::Metric,
    period: crate::config::Period,
    limit: u64,
}

#[derive(Debug, Serialize)]
struct KeyUsageView {
    keyid: String,
    name: String,
    tier: String,
    quotas: Vec<QuotaView>,
    windows: Vec<crate::data::store::QuotaWindow>,
}

#[derive(Debug, Serialize)]
struct UsageView {
    account_id: String,
    tier: String,
    /// The quotas of the account's tier counted per account.
    quotas: Vec<QuotaView>,
    windows: Vec<crate::data::store::QuotaWindow>,
    keys: Vec<KeyUsageView>,
}

/// `GET /admin/accounts/{id}/usage`: the account's and its keys' quota counters over time,
/// with the quotas they count against.
async fn usage(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    id: Result<Path<String>, PathRejection>,
    query: Result<Query<UsageQuery>, QueryRejection>,
) -> Result<Json<UsageView>, ApiError> {
    let Path(id) = id.map_err(path_error)?;
    let Query(q) = query
        .map_err(|_| ApiError::invalid("query", Code::InvalidValue, "Invalid query parameters."))?;
    // At most 92 days back: the page charts recent windows, and the read stays bounded.
    let oldest = crate::util::now() - 92 * 86_400;
    let since = q.since.unwrap_or(oldest + 61 * 86_400).max(oldest);
    let usage = state
        .accounts
        .usage(actor(&principal), &id, since)
        .await
        .map_err(admin_error)?;
    let quotas_of = |tier: &str, per: crate::config::RateSubject| -> Vec<QuotaView> {
        state.config.tiers.get(tier).map_or_else(Vec::new, |t| {
            t.quotas
                .iter()
                .filter(|q| q.per == per)
                .map(|q| QuotaView {
                    per: q.per,
                    metric: q.metric,
                    period: q.period,
                    limit: q.limit,
                })
                .collect()
        })
    };
    let account_tier = usage.account.tier.clone();
    Ok(Json(UsageView {
        account_id: usage.account.id,
        quotas: quotas_of(&account_tier, crate::config::RateSubject::Account),
        windows: usage.own,
        keys: usage
            .keys
            .into_iter()
            .map(|(key, windows)| {
                let tier = key.tier.clone().unwrap_or_else(|| account_tier.clone());
                KeyUsageView {
                    quotas: quotas_of(&tier, crate::config::RateSubject::Key),
                    keyid: key.keyid,
                    name: key.name,
                    tier,
                    windows,
                }
            })
            .collect(),
        tier: account_tier,
    }))
}

/// `DELETE /admin/accounts/{id}`: erases an account (see [`crate::service::privacy`]).
async fn erase_account(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    id: Result<Path<String>, PathRejection>,
) -> Result<Json<crate::service::privacy::Erased>, ApiError> {
    let Path(id) = id.map_err(path_error)?;
    let erased = state
        .erase_account(actor(&principal), Some(principal.source), &id)
        .await?;
    Ok(Json(erased))
}

/// `GET /admin/accounts/{id}/export`: what voxgate keeps about an account.
async fn export_account(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    id: Result<Path<String>, PathRejection>,
) -> Result<Json<crate::service::privacy::AccountExport>, ApiError> {
    let Path(id) = id.map_err(path_error)?;
    let export = state
        .export_account(actor(&principal), Some(principal.source), &id)
        .await?;
    Ok(Json(export))
}

/// `GET /admin/health`: the detailed view the public probes never give: every engine's
/// readiness and breaker, the store, the rate-limit backend, the audit log, the cache and the
/// alerts firing now.
async fn health(State(state): State<AppState>) -> Json<serde_json::Value> {
    let metrics = &state.metrics;
    let engines: Vec<serde_json::Value> = state
        .catalog
        .engines()
        .map(|(id, engine)| {
            let breaker = ["closed", "open", "half_open"]
                .into_iter()
                .find(|s| metrics.breaker_state.get(id, s) == 1);
            serde_json::json!({
                "id": id,
                "ready": engine.ready(),
                "remote": engine.remote(),
                "breaker": breaker,
            })
        })
        .collect();
    let store = &state.store;
    let (store_ok, audit_entries) = match store.audit_size().await {
        Ok(size) => (true, Some(size)),
        Err(_) => (false, None),
    };
    let checkpoints = store.checkpoints().await.ok().map(|c| c.len());
    let alerts: Vec<&str> = [
        "auth_failure_rate",
        "rate_limited_rate",
        "provider_failure_rate",
        "disk_headroom",
        "memory_headroom",
    ]
    .into_iter()
    .filter(|a| metrics.alerts.get(a, "warning") == 1)
    .collect();
    let degraded = !store_ok || !state.catalog.ready() || !alerts.is_empty();
    Json(serde_json::json!({
        "status": if degraded { "degraded" } else { "ok" },
        "ready": state.catalog.ready(),
        "engines": engines,
        "store": if store_ok { "ok" } else { "error" },
        "rate_limit_backend": if metrics.limiter_degraded.get() == 1 { "fallback" } else { "ok" },
        "audit": { "entries": audit_entries, "checkpoints": checkpoints },
        "cache": { "entries": state.cache.len(), "bytes": state.cache.total_bytes() },
        "alerts_firing": alerts,
    }))
}
