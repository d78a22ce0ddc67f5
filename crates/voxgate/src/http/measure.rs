//! In-process measurements of the HTTP stack for `voxgate bench`: requests driven through
//! the router without a network, so what is measured is the middleware and the handler.

use std::time::Instant;

use axum::body::Body;
use axum::http::Request;
use tower::ServiceExt as _;

use super::AppState;

/// Requests per second on `GET /v1/models` through the whole public router (authentication
/// with `authorization`, limits, handler) and through the same routes and middleware without
/// the access layer (the caller's principal attached directly, as authentication would):
/// `(bare, full)`.
pub async fn stack_throughput(
    state: &AppState,
    authorization: &str,
    n: u32,
) -> anyhow::Result<(f64, f64)> {
    let full = super::router(std::sync::Arc::clone(state));
    let principal = state
        .auth
        .authenticate(Some(authorization), std::net::IpAddr::from([127, 0, 0, 1]))
        .await?;
    let bare = super::with_middleware(
        super::public_routes(state)
            .into_router()
            .with_state(std::sync::Arc::clone(state))
            .layer(axum::Extension(principal)),
        state.config.server.request_timeout(),
        std::sync::Arc::clone(&state.metrics),
    );
    let peer = std::net::SocketAddr::from(([127, 0, 0, 1], 40000));
    let run = |router: axum::Router, auth: Option<String>| async move {
        let start = Instant::now();
        for _ in 0..n {
            let mut request = Request::builder().uri("/v1/models");
            if let Some(auth) = &auth {
                request = request.header("authorization", auth);
            }
            let mut request = request.body(Body::empty())?;
            request
                .extensions_mut()
                .insert(axum::extract::ConnectInfo(peer));
            let response = router.clone().oneshot(request).await?;
            anyhow::ensure!(response.status() == 200, "status {}", response.status());
            let _ = axum::body::to_bytes(response.into_body(), 1 << 20).await?;
        }
        Ok::<f64, anyhow::Error>(f64::from(n) / start.elapsed().as_secs_f64())
    };
    let bare_rps = run(bare, None).await?;
    let full_rps = run(full, Some(authorization.to_owned())).await?;
    Ok((bare_rps, full_rps))
}
