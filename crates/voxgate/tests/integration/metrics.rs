//! `GET /metrics` on the admin listener: request counts by route template and status,
//! response-head histograms, the engine real-time factor and the active-stream gauge; no
//! label ever carries what a client sent.

use serde_json::json;

use crate::helpers::spawn_app;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_latency_rtf_and_streams_are_measured_without_user_data() {
    let app = spawn_app().await;
    let canary = "metrics-canary-4f9c";
    let response = app
        .speech(json!({"model": "tts-1", "input": format!("Hello {canary}."), "voice": "alloy"}))
        .await;
    assert_eq!(response.status(), 200);
    let _ = response.bytes().await.expect("body");
    let missing = app.get(&format!("/v1/{canary}")).await;
    assert_eq!(missing.status(), 404);
    let text = app
        .client
        .get(app.admin_url("/metrics"))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    assert!(
        text.contains("voxgate_http_requests_total{route=\"/v1/audio/speech\",status=\"200\"} 1"),
        "{text}"
    );
    assert!(
        text.contains("voxgate_http_requests_total{route=\"unmatched\",status=\"404\"} 1"),
        "{text}"
    );
    assert!(text.contains(
        "voxgate_http_response_seconds_bucket{route=\"/v1/audio/speech\",le=\"+Inf\"} 1"
    ));
    let rtf_count = text
        .lines()
        .find(|l| l.starts_with("voxgate_engine_rtf_count{engine=\"flite\"}"))
        .unwrap_or_else(|| panic!("no engine RTF in {text}"));
    assert!(rtf_count.ends_with(" 1"), "{rtf_count}");
    assert!(
        text.contains("\nvoxgate_speech_streams_active 0\n"),
        "stream ended: {text}"
    );
    assert!(
        text.contains("voxgate_engine_queue_depth{engine=\"flite\"} 0"),
        "{text}"
    );
    assert!(!text.contains(canary), "no user data in metrics");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alerts_fire_on_failure_rates_and_the_admin_health_view_says_so() {
    let app = crate::helpers::spawn_app_with(
        "[alerts]\ninterval_secs = 1\nauth_failures_per_min = 5\n[auth]\nfailure_threshold = 1000",
    )
    .await;
    let health: serde_json::Value = app
        .client
        .get(app.admin_url("/admin/health"))
        .send()
        .await
        .expect("health")
        .json()
        .await
        .expect("json");
    assert_eq!(health["status"], "ok", "{health}");
    assert!(
        health["engines"]
            .as_array()
            .expect("engines")
            .iter()
            .any(|e| e["id"] == "flite" && e["ready"] == true)
    );
    let wrong = crate::helpers::client_with(Some("vg_wrong"));
    for _ in 0..20 {
        let _ = wrong.get(app.url("/v1/models")).send().await;
    }
    let mut firing = false;
    for _ in 0..30 {
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        let text = app
            .client
            .get(app.admin_url("/metrics"))
            .send()
            .await
            .expect("metrics")
            .text()
            .await
            .expect("text");
        if text.contains("voxgate_alert_firing{alert=\"auth_failure_rate\",severity=\"warning\"} 1")
        {
            firing = true;
            break;
        }
    }
    assert!(firing, "the authentication-failure alert fired");
    let health: serde_json::Value = app
        .client
        .get(app.admin_url("/admin/health"))
        .send()
        .await
        .expect("health")
        .json()
        .await
        .expect("json");
    assert_eq!(health["status"], "degraded", "{health}");
    assert!(
        health["alerts_firing"]
            .as_array()
            .expect("alerts")
            .iter()
            .any(|a| a == "auth_failure_rate")
    );
    let public: serde_json::Value = app
        .anonymous
        .get(app.url("/readyz"))
        .send()
        .await
        .expect("readyz")
        .json()
        .await
        .expect("json");
    assert_eq!(
        public,
        serde_json::json!({"status": "ready"}),
        "public probes stay detail-free"
    );
}
