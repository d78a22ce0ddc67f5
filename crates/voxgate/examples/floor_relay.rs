//! The floor of voxgate's HTTP stack, for `scripts/bench-hop`: the same server (axum on
//! hyper, HTTP/1.1, Nagle off, the same Tokio runtime) and the same client (reqwest) relaying
//! `POST /{name}/v1/audio/speech` to upstream `name` behind a constant bearer check (as
//! the bench's nginx proxy routes its locations), with nothing else: no keys, limits,
//! quotas, audit, logs, metrics or middleware. What voxgate costs above this is its
//! security stack; what this costs above nginx is the stack itself.
//!
//!   floor_relay LISTEN_ADDR TOKEN NAME=UPSTREAM_URL...

use std::collections::HashMap;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse as _, Response};
use axum::routing::post;
use axum::serve::ListenerExt as _;

struct Relay {
    client: reqwest::Client,
    upstreams: HashMap<String, String>,
    bearer: String,
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [listen, token, upstreams @ ..] = args.as_slice() else {
        anyhow::bail!("usage: floor_relay LISTEN_ADDR TOKEN NAME=UPSTREAM_URL...");
    };
    let mut routes = HashMap::new();
    for upstream in upstreams {
        let Some((name, url)) = upstream.split_once('=') else {
            anyhow::bail!("an upstream is NAME=URL, not {upstream:?}");
        };
        let url = format!("{}/v1/audio/speech", url.trim_end_matches('/'));
        routes.insert(name.to_owned(), url);
    }
    // The client's TLS provider, as voxgate installs it (the upstream here is plain HTTP).
    voxgate::engines::providers::install_crypto();
    let relay = std::sync::Arc::new(Relay {
        client: reqwest::Client::builder().no_proxy().build()?,
        upstreams: routes,
        bearer: format!("Bearer {token}"),
    });
    // voxgate's runtime, as its main.rs builds it.
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .max_blocking_threads(64)
        .build()?
        .block_on(async move {
            let app = axum::Router::new()
                .route("/{name}/v1/audio/speech", post(speech))
                .with_state(relay);
            // Nagle off on every connection, as voxgate's server does (else a response's
            // last piece can wait for a delayed acknowledgement, about 40 ms).
            let listener = tokio::net::TcpListener::bind(listen.as_str())
                .await?
                .tap_io(|stream| {
                    let _ = stream.set_nodelay(true);
                });
            axum::serve(listener, app).await?;
            Ok(())
        })
}

async fn speech(
    State(relay): State<std::sync::Arc<Relay>>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let authorized = headers
        .get(header::AUTHORIZATION)
        .is_some_and(|v| v.as_bytes() == relay.bearer.as_bytes());
    if !authorized {
        return StatusCode::UNAUTHORIZED.into_response();
    }
    let Some(url) = relay.upstreams.get(&name) else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let upstream = relay
        .client
        .post(url)
        .header(header::CONTENT_TYPE, "application/json")
        .body(body)
        .send()
        .await;
    match upstream {
        Ok(answer) if answer.status().is_success() => {
            let kind = answer.headers().get(header::CONTENT_TYPE).cloned();
            let mut response = Response::new(Body::from_stream(answer.bytes_stream()));
            if let Some(kind) = kind {
                response.headers_mut().insert(header::CONTENT_TYPE, kind);
            }
            response
        }
        _ => StatusCode::BAD_GATEWAY.into_response(),
    }
}
