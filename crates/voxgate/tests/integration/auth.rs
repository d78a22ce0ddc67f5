//! Identity and access: the authorization matrix, brute force, tiers and scopes, the admin
//! API, secrets at rest and in logs, revocation across instances.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::time::Duration;

use reqwest::Method;
use secrecy::ExposeSecret as _;
use serde_json::{Value, json};
use voxgate::data::store::{KeyRecord, now};
use voxgate::identity::auth::{Scope, key};

use crate::helpers::{
    TestApp, client_with, create_key, error_of, file_part, spawn_app_with, tone_wav,
};

/// Every public route, with a request that succeeds given the scope (the test's own table;
/// it must equal the server's).
const ROUTES: &[(&str, &str, Option<&str>)] = &[
    ("POST", "/v1/audio/speech", Some("speech")),
    ("GET", "/v1/models", Some("models.read")),
    ("GET", "/v1/models/{id}", Some("models.read")),
    ("GET", "/v1/audio/voices", Some("models.read")),
    ("POST", "/v1/audio/voices", Some("voices.manage")),
    ("GET", "/v1/audio/voices/{voice_id}", Some("voices.manage")),
    (
        "DELETE",
        "/v1/audio/voices/{voice_id}",
        Some("voices.manage"),
    ),
    ("POST", "/v1/audio/transcriptions", Some("transcription")),
    ("POST", "/v1/audio/translations", Some("transcription")),
    ("GET", "/v1/realtime", Some("transcription")),
    ("POST", "/v1/realtime/client_secrets", Some("transcription")),
    ("GET", "/v1/me/export", Some("account.read")),
    ("DELETE", "/v1/me", Some("delete")),
    ("GET", "/healthz", None),
    ("GET", "/readyz", None),
    ("GET", "/openapi.json", None),
];

fn concrete(path: &str, voice_id: &str) -> String {
    path.replace("{id}", "tts-1")
        .replace("{voice_id}", voice_id)
}

async fn call(
    client: &reqwest::Client,
    app: &TestApp,
    method: &str,
    path: &str,
) -> reqwest::Response {
    call_on(
        client,
        app,
        method,
        path,
        "voice_00000000000000000000000000000000",
    )
    .await
}

/// One request per route: a small valid body for the POST routes, `voice_id` for the
/// stored-voice routes.
async fn call_on(
    client: &reqwest::Client,
    app: &TestApp,
    method: &str,
    path: &str,
    voice_id: &str,
) -> reqwest::Response {
    use reqwest::multipart::Form;
    let method = Method::from_bytes(method.as_bytes()).expect("method");
    let mut request = client.request(method.clone(), app.url(&concrete(path, voice_id)));
    request = match (method.as_str(), path) {
        // A WebSocket handshake: success is 101.
        ("GET", "/v1/realtime") => client
            .get(app.url("/v1/realtime?intent=transcription"))
            .header("connection", "upgrade")
            .header("upgrade", "websocket")
            .header("sec-websocket-version", "13")
            .header("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ=="),
        ("POST", "/v1/realtime/client_secrets") => request.json(&json!({})),
        ("POST", "/v1/audio/transcriptions") => request.multipart(
            Form::new()
                .text("model", "whisper-1")
                .text("language", "en")
                .part("file", file_part(tone_wav(1.0, 16_000), "a.wav")),
        ),
        ("POST", "/v1/audio/translations") => request.multipart(
            Form::new()
                .text("model", "whisper-1")
                .part("file", file_part(tone_wav(1.0, 16_000), "a.wav")),
        ),
        ("POST", "/v1/audio/voices") => request.multipart(
            Form::new()
                .text("name", "v")
                .text("consent", "true")
                .part("audio_sample", file_part(tone_wav(6.0, 16_000), "a.wav")),
        ),
        ("POST", _) => request.json(
            &json!({"model": "tts-1", "input": "Hi.", "voice": "alloy", "response_format": "pcm"}),
        ),
        _ => request,
    };
    request.send().await.expect("send")
}

/// A key stored directly, for states the admin functions refuse to create (already
/// expired, rotated past its grace period).
async fn raw_key(app: &TestApp, tweak: impl FnOnce(&mut KeyRecord)) -> String {
    let pepper =
        voxgate::identity::auth::load_pepper(&app.state.config.auth, &app.state.config.data_dir)
            .expect("pepper");
    let generated = key::generate(&pepper);
    let mut record = KeyRecord {
        keyid: generated.keyid.clone(),
        account_id: app.account.clone(),
        name: "raw".into(),
        digest_version: key::DIGEST_VERSION,
        digest: generated.digest,
        tier: None,
        scopes: None,
        created_at: now(),
        expires_at: None,
        revoked_at: None,
        grace_until: None,
        replaced_by: None,
        request_count: 0,
        last_used_at: None,
        last_ip: None,
        origins: None,
    };
    tweak(&mut record);
    app.state
        .store
        .create_key(&record)
        .await
        .expect("store key");
    generated.full.expose_secret().to_owned()
}

fn keyid_of(full: &str) -> String {
    key::parse(full).expect("parses").keyid
}

/// Replaces the secret part, keeping a valid checksum: the right key id, the wrong secret.
fn with_wrong_secret(full: &str) -> String {
    let keyid = keyid_of(full);
    let other = format!("vg_{keyid}_{}", "a".repeat(52));
    let crc = crc32(&other);
    format!("{other}_{crc}")
}

fn crc32(body: &str) -> String {
    // Mirror of the key format's checksum: CRC32, base32, 7 characters.
    let crc = crc32fast::hash(body.as_bytes()).to_be_bytes();
    let alphabet = b"abcdefghijklmnopqrstuvwxyz234567";
    let mut out = String::new();
    let (mut buffer, mut bits) = (0u32, 0u32);
    for byte in crc {
        buffer = (buffer << 8) | u32::from(byte);
        bits += 8;
        while bits >= 5 {
            bits -= 5;
            out.push(char::from(alphabet[((buffer >> bits) & 31) as usize]));
        }
    }
    out.push(char::from(alphabet[((buffer << (5 - bits)) & 31) as usize]));
    out.truncate(7);
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn authorization_matrix() {
    let app = spawn_app_with("[auth]\nfailure_threshold = 100000").await;

    // The test's table is the server's table, and covers every documented operation.
    let server: BTreeSet<(String, String)> = voxgate::http::access::PUBLIC_ROUTES
        .iter()
        .map(|r| (r.method.to_string(), r.path.to_owned()))
        .collect();
    let ours: BTreeSet<(String, String)> = ROUTES
        .iter()
        .map(|(m, p, _)| ((*m).to_owned(), (*p).to_owned()))
        .collect();
    assert_eq!(
        server, ours,
        "the access table and this test's table differ"
    );
    // What the router really serves is exactly what the table lists.
    let served: BTreeSet<(String, String)> = voxgate::http::public_routes(&app.state)
        .registered()
        .iter()
        .map(|(m, p)| (m.to_string(), (*p).to_owned()))
        .collect();
    assert_eq!(
        served, ours,
        "the router serves a route the access table lacks (or the reverse)"
    );
    let doc: Value = app.get("/openapi.json").await.json().await.expect("json");
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for method in item.as_object().expect("operations").keys() {
            let row = (method.to_uppercase(), path.clone());
            assert!(
                ours.contains(&row),
                "{row:?} is served but missing from the access table"
            );
        }
    }

    let good = app.key.clone();
    let mut no_checksum = good.clone();
    no_checksum.pop();
    no_checksum.push(if good.ends_with('a') { 'b' } else { 'a' });
    let unknown = {
        let body = format!("vg_{}_{}", "b".repeat(24), "c".repeat(52));
        format!("{body}_{}", crc32(&body))
    };
    let expired = raw_key(&app, |k| k.expires_at = Some(now() - 10)).await;
    let revoked = raw_key(&app, |k| k.revoked_at = Some(now() - 10)).await;
    let rotated = raw_key(&app, |k| {
        k.grace_until = Some(now() - 10);
        k.replaced_by = Some("newer".into());
    })
    .await;
    let (inactive_account, inactive) = create_key(&app.state, "admin", None, None).await;
    app.state
        .accounts
        .deactivate_account(voxgate::data::audit::Actor::Cli, &inactive_account)
        .await
        .expect("deactivate");
    let (_, speech_only) = create_key(&app.state, "admin", None, Some(vec![Scope::Speech])).await;
    let (_, models_only) =
        create_key(&app.state, "admin", None, Some(vec![Scope::ModelsRead])).await;
    let (_, transcription_only) =
        create_key(&app.state, "admin", None, Some(vec![Scope::Transcription])).await;
    let (_, voices_only) =
        create_key(&app.state, "admin", None, Some(vec![Scope::VoicesManage])).await;
    let (_, delete_only) = create_key(&app.state, "admin", None, Some(vec![Scope::Delete])).await;
    let (_, account_only) =
        create_key(&app.state, "admin", None, Some(vec![Scope::AccountRead])).await;
    let created: Value = call(
        &client_with(Some(&voices_only)),
        &app,
        "POST",
        "/v1/audio/voices",
    )
    .await
    .json()
    .await
    .expect("voice");
    let voice_id = created["id"].as_str().expect("voice id").to_owned();

    let states: Vec<(&str, Option<String>, &str)> = vec![
        ("no key", None, "missing_api_key"),
        (
            "malformed",
            Some("Bearer not-a-key".into()),
            "invalid_api_key",
        ),
        (
            "not bearer",
            Some(format!("Basic {good}")),
            "invalid_api_key",
        ),
        (
            "bad checksum",
            Some(format!("Bearer {no_checksum}")),
            "invalid_api_key",
        ),
        (
            "unknown key",
            Some(format!("Bearer {unknown}")),
            "invalid_api_key",
        ),
        (
            "wrong secret",
            Some(format!("Bearer {}", with_wrong_secret(&good))),
            "invalid_api_key",
        ),
        (
            "expired",
            Some(format!("Bearer {expired}")),
            "expired_api_key",
        ),
        (
            "revoked",
            Some(format!("Bearer {revoked}")),
            "revoked_api_key",
        ),
        (
            "rotated past grace",
            Some(format!("Bearer {rotated}")),
            "revoked_api_key",
        ),
        (
            "deactivated account",
            Some(format!("Bearer {inactive}")),
            "account_inactive",
        ),
    ];
    for (method, path, scope) in ROUTES {
        for (state, header, code) in &states {
            let mut headers = reqwest::header::HeaderMap::new();
            if let Some(h) = header {
                headers.insert("authorization", h.parse().expect("header"));
            }
            let client = reqwest::Client::builder()
                .default_headers(headers)
                .build()
                .expect("client");
            let response = call(&client, &app, method, path).await;
            if scope.is_none() {
                assert_eq!(
                    response.status(),
                    200,
                    "{method} {path} is public ({state})"
                );
                continue;
            }
            let challenge = response
                .headers()
                .get("www-authenticate")
                .map(|v| v.to_str().expect("ascii").to_owned());
            let (status, got, _) = error_of(response).await;
            assert_eq!(
                (status, got.as_deref()),
                (401, Some(*code)),
                "{method} {path} with {state}"
            );
            assert!(
                challenge.is_some_and(|c| c.starts_with("Bearer")),
                "{method} {path}: WWW-Authenticate"
            );
        }
        // Wrong scope → 403; right scope → success.
        let Some(scope) = scope else { continue };
        let (wrong, right) = match *scope {
            "speech" => (&models_only, &speech_only),
            "models.read" => (&speech_only, &models_only),
            "transcription" => (&speech_only, &transcription_only),
            "voices.manage" => (&speech_only, &voices_only),
            "delete" => (&speech_only, &delete_only),
            // A list-only key (what a browser carries) cannot read the account's export.
            "account.read" => (&models_only, &account_only),
            other => panic!("no key for scope {other}"),
        };
        let (status, code, _) =
            error_of(call_on(&client_with(Some(wrong)), &app, method, path, &voice_id).await).await;
        assert_eq!(
            (status, code.as_deref()),
            (403, Some("insufficient_scope")),
            "{method} {path} wrong scope"
        );
        let response = call_on(&client_with(Some(right)), &app, method, path, &voice_id).await;
        let success = if *path == "/v1/realtime" { 101 } else { 200 };
        assert_eq!(response.status(), success, "{method} {path} right scope");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn brute_force_throttles_the_source_not_the_key() {
    let app = spawn_app_with("").await;
    let attacker = reqwest::Client::builder()
        .local_address(IpAddr::from([127, 0, 0, 1]))
        .build()
        .expect("client");
    let mut throttled = 0;
    for i in 0..1000 {
        // 1000 distinct well-formed keys (digits spelled as letters a–j).
        let secret: String = format!("{i:052}")
            .bytes()
            .map(|d| char::from(b'a' + (d - b'0')))
            .collect();
        let bad = format!("vg_{}_{secret}", "d".repeat(24));
        let response = attacker
            .get(app.url("/v1/models"))
            .bearer_auth(format!("{bad}_{}", crc32(&bad)))
            .send()
            .await
            .expect("send");
        match response.status().as_u16() {
            401 => {}
            429 => {
                assert!(response.headers().contains_key("retry-after"));
                throttled += 1;
            }
            other => panic!("unexpected {other}"),
        }
    }
    assert!(
        throttled >= 900,
        "the source is throttled: {throttled} of 1000"
    );
    // The good key from the throttled address is refused while the block lasts…
    let response = attacker
        .get(app.url("/v1/models"))
        .bearer_auth(&app.key)
        .send()
        .await
        .expect("send");
    assert_eq!(response.status(), 429);
    // …but the key itself is not locked: from another address it works.
    let other = reqwest::Client::builder()
        .local_address(IpAddr::from([127, 0, 0, 2]))
        .build()
        .expect("client");
    let response = other
        .get(app.url("/v1/models"))
        .bearer_auth(&app.key)
        .send()
        .await
        .expect("send");
    assert_eq!(response.status(), 200);
    // Failures and the block are audited, without secrets.
    let events = app.state.store.audit_events(2000).await.expect("events");
    assert!(
        events
            .iter()
            .any(|e| e.kind == "auth_blocked" && e.source.as_deref() == Some("127.0.0.1"))
    );
    assert!(events.iter().any(|e| e.kind == "auth_failed"));
}

#[tokio::test]
async fn tiers_gate_models_voices_and_length() {
    let app = spawn_app_with("").await;
    let (_, guest) = create_key(&app.state, "guest", None, None).await;
    let client = client_with(Some(&guest));
    let speech = |body: Value| client.post(app.url("/v1/audio/speech")).json(&body).send();
    let cases = [
        (
            json!({"model": "tts-1-hd", "input": "Hi.", "voice": "alloy"}),
            403,
            "model_not_allowed",
        ),
        (
            json!({"model": "tts-1", "input": "Hi.", "voice": "onyx"}),
            403,
            "voice_not_allowed",
        ),
        (
            json!({"model": "tts-1", "input": "a".repeat(501), "voice": "alloy"}),
            400,
            "input_too_long",
        ),
    ];
    for (body, status, code) in cases {
        let (s, c, _) = error_of(speech(body).await.expect("send")).await;
        assert_eq!((s, c.as_deref()), (status, Some(code)));
    }
    let ok = speech(
        json!({"model": "tts-1", "input": "Hi.", "voice": "nova", "response_format": "pcm"}),
    )
    .await
    .expect("send");
    assert_eq!(ok.status(), 200);

    let models: Value = client
        .get(app.url("/v1/models"))
        .send()
        .await
        .expect("send")
        .json()
        .await
        .expect("json");
    let ids: Vec<&str> = models["data"]
        .as_array()
        .expect("data")
        .iter()
        .map(|m| m["id"].as_str().expect("id"))
        .collect();
    assert_eq!(ids, ["tts-1"]);
    let (status, code, _) = error_of(
        client
            .get(app.url("/v1/models/tts-1-hd"))
            .send()
            .await
            .expect("send"),
    )
    .await;
    assert_eq!((status, code.as_deref()), (403, Some("model_not_allowed")));
    let voices: Value = client
        .get(app.url("/v1/audio/voices"))
        .send()
        .await
        .expect("send")
        .json()
        .await
        .expect("json");
    let mut names: Vec<&str> = voices["voices"]
        .as_array()
        .expect("voices")
        .iter()
        .map(|v| v["id"].as_str().expect("id"))
        .collect();
    names.sort_unstable();
    assert_eq!(names, ["alloy", "echo", "nova"]);
}

#[tokio::test]
async fn keys_narrow_never_widen() {
    let app = spawn_app_with("").await;
    let account = app
        .state
        .accounts
        .create_account(
            voxgate::data::audit::Actor::Cli,
            "Basic user",
            None,
            "basic",
        )
        .await
        .expect("account");
    let request =
        |tier: Option<&str>, scopes: Option<Vec<Scope>>| voxgate::identity::accounts::KeyRequest {
            name: String::new(),
            tier: tier.map(str::to_owned),
            scopes,
            expires_at: None,
            origins: None,
        };
    let admin = &app.state.accounts;
    let widen_tier = admin
        .create_key(
            voxgate::data::audit::Actor::Cli,
            &account.id,
            request(Some("premium"), None),
            None,
        )
        .await;
    assert!(matches!(
        widen_tier,
        Err(voxgate::identity::accounts::AdminError::WidensTier)
    ));
    let widen_scope = admin
        .create_key(
            voxgate::data::audit::Actor::Cli,
            &account.id,
            request(None, Some(vec![Scope::Admin])),
            None,
        )
        .await;
    assert!(matches!(
        widen_scope,
        Err(voxgate::identity::accounts::AdminError::WidensScopes(_))
    ));
    // A guest-tier key of a basic account gets guest limits.
    let narrowed = admin
        .create_key(
            voxgate::data::audit::Actor::Cli,
            &account.id,
            request(Some("guest"), None),
            None,
        )
        .await
        .expect("narrowing is allowed");
    let client = client_with(Some(narrowed.secret.expose_secret()));
    let response = client
        .post(app.url("/v1/audio/speech"))
        .json(&json!({"model": "tts-1-hd", "input": "Hi.", "voice": "alloy"}))
        .send()
        .await
        .expect("send");
    assert_eq!(
        error_of(response).await.1.as_deref(),
        Some("model_not_allowed")
    );
}

#[tokio::test]
async fn keys_outside_the_authorization_header_are_refused() {
    let app = spawn_app_with("").await;
    let cases = [
        (
            app.anonymous
                .get(app.url(&format!("/v1/models?api_key={}", app.key))),
            "credentials_in_query",
        ),
        (
            app.client
                .get(app.url(&format!("/v1/models?x={}", app.key))),
            "credentials_in_query",
        ),
        (
            app.client.get(app.url("/v1/models?token=abc")),
            "credentials_in_query",
        ),
        (
            app.anonymous
                .get(app.url("/v1/models"))
                .header("cookie", format!("session={}", app.key)),
            "credentials_in_cookie",
        ),
    ];
    for (request, code) in cases {
        let (status, got, _) = error_of(request.send().await.expect("send")).await;
        assert_eq!((status, got.as_deref()), (401, Some(code)));
    }
    // In the body, even with a valid header: as a parameter or inside the text.
    for body in [
        json!({"model": "tts-1", "input": "x", "voice": "alloy", "api_key": app.key}),
        json!({"model": "tts-1", "input": format!("my key is {}", app.key), "voice": "alloy"}),
    ] {
        let response = app
            .client
            .post(app.url("/v1/audio/speech"))
            .json(&body)
            .send()
            .await
            .expect("send");
        let (status, code, _) = error_of(response).await;
        assert_eq!(
            (status, code.as_deref()),
            (401, Some("credentials_in_body"))
        );
    }
    let events = app.state.store.audit_events(20).await.expect("events");
    assert!(
        events
            .iter()
            .any(|e| e.detail.contains("credentials_in_query")),
        "misplaced keys are audited"
    );
    assert!(
        events.iter().any(|e| e.kind == "access_denied"
            && e.detail.contains("credentials_in_body")
            && e.actor.as_deref() == Some(keyid_of(&app.key).as_str())),
        "a key in a body is audited against the caller's key: {events:#?}"
    );
}

#[tokio::test]
async fn the_admin_api_lives_on_its_own_listener() {
    let app = spawn_app_with("").await;
    // Not on the public listener, and public routes are not on the admin one.
    assert_eq!(
        app.client
            .get(app.url("/admin/accounts"))
            .send()
            .await
            .expect("send")
            .status(),
        404
    );
    assert_eq!(
        app.client
            .get(app.admin_url("/v1/models"))
            .send()
            .await
            .expect("send")
            .status(),
        404
    );
    // A non-admin key is refused.
    let (_, basic) = create_key(&app.state, "basic", None, None).await;
    let response = client_with(Some(&basic))
        .get(app.admin_url("/admin/accounts"))
        .send()
        .await
        .expect("send");
    assert_eq!(error_of(response).await.0, 403);
    assert_eq!(
        app.anonymous
            .get(app.admin_url("/admin/accounts"))
            .send()
            .await
            .expect("send")
            .status(),
        401
    );

    // Create an account and a key; the key is shown once and works.
    let account: Value = app
        .client
        .post(app.admin_url("/admin/accounts"))
        .json(&json!({"name": "Grace", "tier": "basic"}))
        .send()
        .await
        .expect("send")
        .json()
        .await
        .expect("json");
    let id = account["id"].as_str().expect("id");
    let created = app
        .client
        .post(app.admin_url("/admin/keys"))
        .json(&json!({"account_id": id, "name": "ci", "scopes": "speech,models.read", "expires_in": "30d"}))
        .send()
        .await
        .expect("send");
    assert_eq!(created.status(), 201);
    let created: Value = created.json().await.expect("json");
    let new_key = created["key"].as_str().expect("key").to_owned();
    assert!(created.get("digest").is_none());
    assert_eq!(
        client_with(Some(&new_key))
            .get(app.url("/v1/models"))
            .send()
            .await
            .expect("send")
            .status(),
        200
    );

    // Listings never show digests or full keys.
    let listing = app
        .client
        .get(app.admin_url("/admin/keys"))
        .send()
        .await
        .expect("send")
        .text()
        .await
        .expect("body");
    assert!(
        !listing.contains(&new_key) && !listing.contains("digest"),
        "{listing}"
    );

    // Writable fields are allow-listed.
    let response = app
        .client
        .post(app.admin_url("/admin/accounts"))
        .json(&json!({"name": "Eve", "tier": "admin", "active": true, "id": "acct_mine"}))
        .send()
        .await
        .expect("send");
    assert_eq!(
        error_of(response).await.1.as_deref(),
        Some("unknown_parameter")
    );

    // An admin cannot deactivate its own account (and lock itself out) through the API.
    let own = app
        .client
        .post(app.admin_url(&format!("/admin/accounts/{}/deactivate", app.account)))
        .send()
        .await
        .expect("send");
    assert_eq!(error_of(own).await.1.as_deref(), Some("own_account"));

    // Revocation takes effect at once on this instance.
    let keyid = created["keyid"].as_str().expect("keyid");
    let revoke = app
        .client
        .post(app.admin_url(&format!("/admin/keys/{keyid}/revoke")))
        .send()
        .await
        .expect("send");
    assert_eq!(revoke.status(), 204);
    let (status, code, _) = error_of(
        client_with(Some(&new_key))
            .get(app.url("/v1/models"))
            .send()
            .await
            .expect("send"),
    )
    .await;
    assert_eq!((status, code.as_deref()), (401, Some("revoked_api_key")));

    // Rotation: the new key works, the old one keeps working through its grace period.
    let (_, old) = create_key(&app.state, "basic", None, None).await;
    let rotated: Value = app
        .client
        .post(app.admin_url(&format!("/admin/keys/{}/rotate", keyid_of(&old))))
        .send()
        .await
        .expect("send")
        .json()
        .await
        .expect("json");
    let replacement = rotated["key"].as_str().expect("key");
    for key in [old.as_str(), replacement] {
        assert_eq!(
            client_with(Some(key))
                .get(app.url("/v1/models"))
                .send()
                .await
                .expect("send")
                .status(),
            200
        );
    }

    // Every change is audited.
    let audit: Value = app
        .client
        .get(app.admin_url("/admin/audit?limit=50"))
        .send()
        .await
        .expect("send")
        .json()
        .await
        .expect("json");
    let kinds: Vec<&str> = audit
        .as_array()
        .expect("events")
        .iter()
        .map(|e| e["kind"].as_str().expect("kind"))
        .collect();
    for kind in [
        "account_created",
        "key_created",
        "key_revoked",
        "key_rotated",
        "access_denied",
    ] {
        assert!(kinds.contains(&kind), "{kind} missing from {kinds:?}");
    }
}

#[tokio::test]
async fn the_database_holds_digests_never_secrets() {
    let app = spawn_app_with("").await;
    let (_, other) = create_key(&app.state, "basic", None, None).await;
    assert_eq!(app.get("/v1/models").await.status(), 200);
    tokio::time::sleep(Duration::from_millis(200)).await; // usage tracking is written off the request path
    let pepper =
        voxgate::identity::auth::load_pepper(&app.state.config.auth, &app.state.config.data_dir)
            .expect("pepper");
    for full in [&app.key, &other] {
        let parsed = key::parse(full).expect("parses");
        let (record, _) = app
            .state
            .store
            .key_with_account(&parsed.keyid)
            .await
            .expect("lookup")
            .expect("stored");
        assert_eq!(
            record.digest,
            pepper.digest(parsed.secret()),
            "stored digest = HMAC(pepper, secret)"
        );
        assert_eq!(record.digest_version, 1);
        let mut raw = Vec::new();
        for file in ["voxgate.db", "voxgate.db-wal"] {
            if let Ok(bytes) = std::fs::read(app.state.config.data_dir.join(file)) {
                raw.extend(bytes);
            }
        }
        let haystack = String::from_utf8_lossy(&raw);
        assert!(haystack.contains(&parsed.keyid), "the key id is stored");
        assert!(
            !haystack.contains(parsed.secret()),
            "the secret must never be stored"
        );
    }
}

/// Two instances share PostgreSQL (and the pepper): a key revoked on one stops on the other
/// within the cache bound (1 s).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revocation_reaches_every_instance_within_a_second() {
    let db = crate::store::PgDatabase::create().await;
    let toml = format!(
        "[database]\nurl = \"{}\"\n[auth]\npepper = \"{}\"",
        db.url,
        "s".repeat(40)
    );
    let a = spawn_app_with(&toml).await;
    let b = spawn_app_with(&toml).await;
    let (_, key) = create_key(&a.state, "basic", None, None).await;
    let on_b = client_with(Some(&key));
    assert_eq!(
        on_b.get(b.url("/v1/models"))
            .send()
            .await
            .expect("send")
            .status(),
        200,
        "B accepts A's key"
    );
    let revoke = a
        .client
        .post(a.admin_url(&format!("/admin/keys/{}/revoke", keyid_of(&key))))
        .send()
        .await
        .expect("send");
    assert_eq!(revoke.status(), 204);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let (status, code, _) =
        error_of(on_b.get(b.url("/v1/models")).send().await.expect("send")).await;
    assert_eq!((status, code.as_deref()), (401, Some("revoked_api_key")));
    drop((a, b));
    db.drop_now().await;
}

#[tokio::test]
async fn usage_is_tracked_with_truncated_addresses() {
    let app = spawn_app_with("").await;
    for _ in 0..3 {
        assert_eq!(app.get("/v1/models").await.status(), 200);
    }
    app.state.auth.flush_usage().await;
    let keyid = keyid_of(&app.key);
    let (record, _) = app
        .state
        .store
        .key_with_account(&keyid)
        .await
        .expect("lookup")
        .expect("stored");
    assert_eq!(record.request_count, 3);
    assert!(record.last_used_at.is_some_and(|t| (t - now()).abs() < 60));
    assert_eq!(
        record.last_ip.as_deref(),
        Some("127.0.0.0"),
        "truncated to /24 by default"
    );
}

#[tokio::test]
async fn a_narrowed_admin_key_cannot_mint_a_wider_one() {
    let app = spawn_app_with("").await;
    // An admin-tier account's key narrowed to the admin scope alone.
    let (account, narrow) = create_key(&app.state, "admin", None, Some(vec![Scope::Admin])).await;
    let admin = client_with(Some(&narrow));
    let attempts = [
        json!({"account_id": account, "scopes": "admin,speech"}),
        json!({"account_id": account}),
    ];
    for body in attempts {
        let response = admin
            .post(app.admin_url("/admin/keys"))
            .json(&body)
            .send()
            .await
            .expect("send");
        let (status, code, _) = error_of(response).await;
        assert_eq!(
            (status, code.as_deref()),
            (403, Some("exceeds_caller")),
            "{body}"
        );
    }
    // Nor can it rotate a wider key of its account to learn a new secret for it.
    let wide = app
        .state
        .accounts
        .create_key(
            voxgate::data::audit::Actor::Cli,
            &account,
            voxgate::identity::accounts::KeyRequest::default(),
            None,
        )
        .await
        .expect("key");
    let response = admin
        .post(app.admin_url(&format!("/admin/keys/{}/rotate", wide.record.keyid)))
        .send()
        .await
        .expect("send");
    assert_eq!(
        error_of(response).await.1.as_deref(),
        Some("exceeds_caller")
    );
    // Within its own rights it may create keys.
    let ok = admin
        .post(app.admin_url("/admin/keys"))
        .json(&json!({"account_id": account, "scopes": "admin"}))
        .send()
        .await
        .expect("send");
    assert_eq!(ok.status(), 201);
    // Every refused escalation is in the audit log, with who tried.
    let refused: Vec<_> = app
        .state
        .store
        .audit_events(50)
        .await
        .expect("events")
        .into_iter()
        .filter(|e| e.kind == "admin_refused")
        .collect();
    assert_eq!(
        refused.len(),
        3,
        "two creations and a rotation: {refused:#?}"
    );
    assert!(refused.iter().all(|e| e.detail.contains("exceeds_caller")
        && e.actor.as_deref() == Some(keyid_of(&narrow).as_str())));
    assert!(refused.iter().any(|e| e.detail.contains("key_rotate")));
    // A tier wider than the account's is refused and audited too.
    let (basic_account, _) = create_key(&app.state, "basic", None, None).await;
    let response = app
        .client
        .post(app.admin_url("/admin/keys"))
        .json(&json!({"account_id": basic_account, "tier": "premium"}))
        .send()
        .await
        .expect("send");
    assert_eq!(error_of(response).await.1.as_deref(), Some("tier_widening"));
    // So are scopes the account's tier lacks.
    let response = app
        .client
        .post(app.admin_url("/admin/keys"))
        .json(&json!({"account_id": basic_account, "scopes": "speech voices.manage"}))
        .send()
        .await
        .expect("send");
    assert_eq!(
        error_of(response).await.1.as_deref(),
        Some("scope_widening")
    );
    // Reads by an administrator are audited as well.
    let export = format!("/admin/accounts/{basic_account}/export");
    for path in [
        "/admin/accounts",
        "/admin/keys",
        "/admin/audit?limit=5",
        &export,
    ] {
        let response = app
            .client
            .get(app.admin_url(path))
            .send()
            .await
            .expect("send");
        assert_eq!(response.status(), 200, "{path}");
    }
    let events = app.state.store.audit_events(20).await.expect("events");
    for reason in ["tier_widening", "scope_widening"] {
        assert!(
            events
                .iter()
                .any(|e| e.kind == "admin_refused" && e.detail.contains(reason)),
            "{reason}"
        );
    }
    assert!(
        events.iter().any(|e| e.kind == "account_exported"
            && e.account_id.as_deref() == Some(basic_account.as_str())
            && e.actor.as_deref() == Some(keyid_of(&app.key).as_str())),
        "the admin's export of another account is audited, by the admin's key"
    );
    let reads: Vec<&str> = events
        .iter()
        .filter(|e| e.kind == "admin_read")
        .map(|e| e.detail.as_str())
        .collect();
    for what in ["accounts", "keys", "audit"] {
        assert!(
            reads
                .iter()
                .any(|d| d.contains(&format!("\"what\":\"{what}\""))),
            "{what}: {reads:?}"
        );
    }
}

/// The admin listener's table, for every credential state that matters there.
#[tokio::test]
async fn admin_authorization_matrix() {
    let app = spawn_app_with("[auth]\nfailure_threshold = 100000").await;
    let (_, basic) = create_key(&app.state, "basic", None, None).await;
    let (_, revoked) = create_key(&app.state, "admin", None, None).await;
    app.state
        .accounts
        .revoke_key(voxgate::data::audit::Actor::Cli, &keyid_of(&revoked))
        .await
        .expect("revoke");
    let served: BTreeSet<(String, String)> = voxgate::http::admin::routes()
        .registered()
        .iter()
        .map(|(m, p)| (m.to_string(), (*p).to_owned()))
        .collect();
    let table: BTreeSet<(String, String)> = voxgate::http::access::ADMIN_ROUTES
        .iter()
        .map(|r| (r.method.to_string(), r.path.to_owned()))
        .collect();
    assert_eq!(
        served, table,
        "the admin router and its access table differ"
    );
    let (other_account, _) = create_key(&app.state, "basic", None, None).await;
    let body = json!({"name": "x", "tier": "basic"});
    for route in voxgate::http::access::ADMIN_ROUTES {
        let path = route
            .path
            .replace("{id}", &other_account)
            .replace("{keyid}", "nokey");
        let send = |client: reqwest::Client| {
            let mut request = client.request(route.method.clone(), app.admin_url(&path));
            if route.method == Method::POST {
                request = request.json(&body);
            }
            request.send()
        };
        let anonymous = send(client_with(None)).await.expect("send");
        assert_eq!(
            anonymous.status(),
            401,
            "{} {path} without a key",
            route.method
        );
        let revoked = send(client_with(Some(&revoked))).await.expect("send");
        assert_eq!(
            revoked.status(),
            401,
            "{} {path} with a revoked key",
            route.method
        );
        let basic = send(client_with(Some(&basic))).await.expect("send");
        assert_eq!(
            basic.status(),
            403,
            "{} {path} without the admin scope",
            route.method
        );
        let admin = send(client_with(Some(&app.key))).await.expect("send");
        assert!(
            ![401, 403, 405].contains(&admin.status().as_u16()),
            "{} {path} with the admin scope: {}",
            route.method,
            admin.status()
        );
    }
}

/// A flood of requests without a valid key — no key at all, or a key in the query string on
/// a public route — is throttled by the per-address limits before anything is written, and
/// what is written is bounded per source: the first failure of each reason in full, the
/// rest counted (one summary per minute). A missing key counts towards the source's budget.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anonymous_floods_write_a_bounded_log() {
    let app = spawn_app_with(
        "[limits]\nper_ip_unauthenticated = [{ period = \"minute\", limit = 20 }]\n[auth]\nfailure_threshold = 1000\n",
    )
    .await;
    let from = |last: u8| {
        reqwest::Client::builder()
            .local_address(IpAddr::from([127, 0, 0, last]))
            .build()
            .expect("client")
    };
    let (keyless, query) = (from(11), from(12));
    let mut statuses = std::collections::BTreeMap::<u16, usize>::new();
    for _ in 0..150 {
        let status = keyless
            .get(app.url("/v1/models"))
            .send()
            .await
            .expect("send")
            .status()
            .as_u16();
        *statuses.entry(status).or_default() += 1;
    }
    assert_eq!(statuses.get(&401), Some(&20), "{statuses:?}");
    assert_eq!(statuses.get(&429), Some(&130), "{statuses:?}");
    let key = app.key.clone();
    let mut throttled = 0;
    for _ in 0..150 {
        let response = query
            .get(app.url(&format!("/healthz?api_key={key}")))
            .send()
            .await
            .expect("send");
        match response.status().as_u16() {
            401 => {}
            429 => throttled += 1,
            other => panic!("unexpected {other}"),
        }
    }
    assert_eq!(throttled, 130, "the query-key flood is throttled too");
    let events = app.state.store.audit_events(1000).await.expect("events");
    for source in ["127.0.0.11", "127.0.0.12"] {
        let rows = events
            .iter()
            .filter(|e| e.source.as_deref() == Some(source))
            .count();
        assert_eq!(
            rows, 1,
            "one record for the flood from {source}: {events:#?}"
        );
    }

    // A missing key is a failure like any other: past the threshold the source is blocked.
    let app = spawn_app_with("[auth]\nfailure_threshold = 5\n").await;
    let keyless = from(13);
    let mut codes = Vec::new();
    for _ in 0..6 {
        let response = keyless
            .get(app.url("/v1/models"))
            .send()
            .await
            .expect("send");
        codes.push(error_of(response).await.1.unwrap_or_default());
    }
    assert_eq!(codes[..5], ["missing_api_key"; 5]);
    assert_eq!(codes[5], "too_many_failed_authentications");
}
