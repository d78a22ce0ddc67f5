//! Every error kind reaches the client in the OpenAI envelope with the right status, code and
//! param; bad input changes nothing.

use std::time::Duration;

use serde_json::{Value, json};

use crate::helpers::{error_of, spawn_app};

fn base() -> Value {
    json!({"model": "tts-1", "input": "Hello.", "voice": "alloy"})
}

fn with(key: &str, value: Value) -> Value {
    let mut body = base();
    body[key] = value;
    body
}

fn without(key: &str) -> Value {
    let mut body = base();
    body.as_object_mut().expect("object").remove(key);
    body
}

#[tokio::test]
async fn validation_errors_name_the_parameter() {
    let app = spawn_app().await;
    let cases: Vec<(Value, u16, &str, &str)> = vec![
        (without("model"), 400, "missing_required_parameter", "model"),
        (without("input"), 400, "missing_required_parameter", "input"),
        (without("voice"), 400, "missing_required_parameter", "voice"),
        (with("extra", json!(1)), 400, "unknown_parameter", "extra"),
        (with("speed", json!(0)), 400, "invalid_value", "speed"),
        (with("speed", json!(-1)), 400, "invalid_value", "speed"),
        (with("speed", json!(0.2)), 400, "invalid_value", "speed"),
        (with("speed", json!(4.01)), 400, "invalid_value", "speed"),
        (with("speed", json!("fast")), 400, "invalid_value", "speed"),
        (with("input", json!("")), 400, "empty_input", "input"),
        (with("input", json!("   ")), 400, "empty_input", "input"),
        (
            with("input", json!("a".repeat(4097))),
            400,
            "input_too_long",
            "input",
        ),
        (with("input", json!(42)), 400, "invalid_value", "input"),
        (
            with("input", json!("a\u{0}b")),
            400,
            "control_character",
            "input",
        ),
        (
            with("voice", json!("nobody")),
            400,
            "voice_not_found",
            "voice",
        ),
        (
            with("voice", json!("../../etc/passwd")),
            400,
            "voice_not_found",
            "voice",
        ),
        (
            with("voice", json!("/etc/passwd")),
            400,
            "voice_not_found",
            "voice",
        ),
        (
            with("voice", json!("．．／alloy")),
            400,
            "voice_not_found",
            "voice",
        ),
        (
            with("voice", json!("..%2falloy")),
            400,
            "voice_not_found",
            "voice",
        ),
        (
            with("voice", json!("alloy\u{0}")),
            400,
            "voice_not_found",
            "voice",
        ),
        (
            with("voice", json!({"id": "voice_123"})),
            404,
            "voice_not_found",
            "voice",
        ),
        (
            with("voice", json!({"id": "voice_123", "x": 1})),
            400,
            "invalid_value",
            "voice",
        ),
        (with("voice", json!(7)), 400, "invalid_value", "voice"),
        (
            with("response_format", json!("ogg")),
            400,
            "invalid_value",
            "response_format",
        ),
        (
            with("stream_format", json!("chunks")),
            400,
            "invalid_value",
            "stream_format",
        ),
        (
            with("instructions", json!("x".repeat(4097))),
            400,
            "instructions_too_long",
            "instructions",
        ),
        (
            with("model", json!("no-such-model")),
            404,
            "model_not_found",
            "model",
        ),
        (
            with("model", json!("../../etc/passwd")),
            404,
            "model_not_found",
            "model",
        ),
    ];
    for (body, status, code, param) in cases {
        let response = app.speech(body.clone()).await;
        assert_ne!(
            response.status(),
            200,
            "accepted: {}",
            body.to_string().chars().take(120).collect::<String>()
        );
        let got = error_of(response).await;
        assert_eq!(
            got,
            (status, Some(code.to_owned()), Some(param.to_owned())),
            "{body}"
        );
    }
}

#[tokio::test]
async fn instructions_can_be_refused_per_model() {
    let app = crate::helpers::spawn_app_with(
        "[models.strict]\nengine = \"flite\"\ninstructions = \"reject\"",
    )
    .await;
    let body =
        json!({"model": "strict", "input": "Hi.", "voice": "slt", "instructions": "Whisper."});
    let got = error_of(app.speech(body).await).await;
    assert_eq!(
        got,
        (
            400,
            Some("instructions_not_supported".into()),
            Some("instructions".into())
        )
    );
}

#[tokio::test]
#[cfg(not(feature = "aac"))]
async fn aac_refusal_lists_the_available_formats() {
    let app = spawn_app().await;
    let response = app.speech(with("response_format", json!("aac"))).await;
    assert_eq!(response.status(), 400);
    let body: Value = response.json().await.expect("json");
    assert_eq!(body["error"]["code"], "unsupported_response_format");
    assert_eq!(body["error"]["param"], "response_format");
    let message = body["error"]["message"].as_str().expect("message");
    assert!(message.contains("mp3, opus, flac, wav, pcm"), "{message}");
}

#[tokio::test]
async fn body_level_errors() {
    let app = spawn_app().await;
    let post = |body: &'static str, content_type: Option<&'static str>| {
        let mut request = app.client.post(app.url("/v1/audio/speech")).body(body);
        if let Some(ct) = content_type {
            request = request.header("content-type", ct);
        }
        request.send()
    };
    let json_ct = Some("application/json");
    let cases = [
        (
            post("{", json_ct).await.expect("send"),
            400,
            Some("invalid_json"),
        ),
        (
            post("", json_ct).await.expect("send"),
            400,
            Some("invalid_json"),
        ),
        (
            post(r#"{"model":"tts-1"} {}"#, json_ct)
                .await
                .expect("send"),
            400,
            Some("invalid_json"),
        ),
        (
            post(
                r#"{"model":"tts-1","model":"tts-1","input":"a","voice":"alloy"}"#,
                json_ct,
            )
            .await
            .expect("send"),
            400,
            Some("duplicate_parameter"),
        ),
        (
            post(r#"["model"]"#, json_ct).await.expect("send"),
            400,
            Some("invalid_type"),
        ),
        (
            post(r#"{"model":"tts-1"}"#, Some("text/plain"))
                .await
                .expect("send"),
            415,
            Some("unsupported_media_type"),
        ),
        (
            post(r#"{"model":"tts-1"}"#, None).await.expect("send"),
            415,
            Some("unsupported_media_type"),
        ),
        (
            post(r#"model=tts-1"#, Some("application/x-www-form-urlencoded"))
                .await
                .expect("send"),
            415,
            Some("unsupported_media_type"),
        ),
    ];
    for (response, status, code) in cases {
        let (s, c, _) = error_of(response).await;
        assert_eq!((s, c.as_deref()), (status, code));
    }
}

#[tokio::test]
async fn oversized_bodies_get_413_before_being_buffered() {
    let app = spawn_app_small_limit().await;
    let big = json!({"model": "tts-1", "input": "a".repeat(5000), "voice": "alloy"});
    let (status, code, _) = error_of(app.speech(big).await).await;
    assert_eq!((status, code.as_deref()), (413, Some("payload_too_large")));
    // Without Content-Length (chunked), the limit is enforced while reading.
    let stream = futures::stream::iter((0..10).map(|_| Ok::<_, std::io::Error>(vec![b' '; 1024])));
    let response = app
        .client
        .post(app.url("/v1/audio/speech"))
        .header("content-type", "application/json")
        .body(reqwest::Body::wrap_stream(stream))
        .send()
        .await
        .expect("send");
    let (status, code, _) = error_of(response).await;
    assert_eq!((status, code.as_deref()), (413, Some("payload_too_large")));
}

async fn spawn_app_small_limit() -> crate::helpers::TestApp {
    crate::helpers::spawn_app_with("[server]\njson_body_limit_bytes = 4096").await
}

#[tokio::test]
async fn routing_errors() {
    let app = spawn_app().await;
    let (status, code, _) = error_of(app.get("/v1/nothing").await).await;
    assert_eq!((status, code.as_deref()), (404, Some("unknown_url")));

    let response = app.get("/v1/audio/speech").await;
    let allow = response
        .headers()
        .get("allow")
        .expect("Allow header")
        .to_str()
        .expect("ascii")
        .to_owned();
    assert!(allow.contains("POST"), "{allow}");
    let (status, code, _) = error_of(response).await;
    assert_eq!((status, code.as_deref()), (405, Some("method_not_allowed")));

    let response = app
        .client
        .request(reqwest::Method::TRACE, app.url("/v1/models"))
        .send()
        .await
        .expect("send");
    assert_eq!(response.status(), 405);
    let response = app
        .client
        .delete(app.url("/v1/models/tts-1"))
        .send()
        .await
        .expect("send");
    assert_eq!(error_of(response).await.0, 405);
}

#[tokio::test]
async fn the_query_string_is_never_echoed() {
    let app = spawn_app().await;
    let response = app.get("/v1/unknown?key=vg_secret_value").await;
    let text = response.text().await.expect("body");
    assert!(!text.contains("vg_secret_value"), "{text}");
}

#[tokio::test]
async fn every_response_has_a_request_id() {
    let app = spawn_app().await;
    let responses = [
        app.get("/healthz").await,
        app.get("/nope").await,
        app.speech(without("model")).await,
        app.speech(base()).await,
    ];
    let mut ids = Vec::new();
    for response in responses {
        let id = response
            .headers()
            .get("x-request-id")
            .expect("x-request-id")
            .to_str()
            .expect("ascii")
            .to_owned();
        assert_eq!(id.len(), 36, "a UUID: {id}");
        ids.push(id);
    }
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 4, "unique per request");
}

#[tokio::test]
async fn bad_requests_leave_the_server_serving() {
    let app = spawn_app().await;
    for _ in 0..20 {
        let _ = app.speech(with("speed", json!(1e308))).await;
        let _ = app
            .raw(b"GARBAGE\r\n\r\n", Duration::from_millis(200))
            .await;
    }
    let bytes = app.speech_bytes(base()).await;
    assert!(!bytes.is_empty());
}
