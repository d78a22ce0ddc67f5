//! Rate limits as clients see them: headers, 429s with Retry-After, account-wide buckets,
//! stricter limits without a key, repeat violators, and two gateways sharing Redis.

use std::time::Duration;

use crate::helpers::{client_with, create_key, error_of, spawn_app_with};

const STRICT: &str = r#"
[limits]
per_ip = [{ period = "second", limit = 100000 }]
per_ip_unauthenticated = [{ period = "minute", limit = 3 }]
violations_before_block = 5
block_secs = 60
[tiers.guest]
rate_limits = [{ per = "account", period = "minute", limit = 4 }]
[tiers.basic]
rate_limits = [{ per = "account", period = "minute", limit = 4 }]
"#;

#[tokio::test]
async fn successes_carry_openai_rate_limit_headers() {
    let app = spawn_app_with(STRICT).await;
    let (_, key) = create_key(&app.state, "basic", None, None).await;
    let response = client_with(Some(&key))
        .get(app.url("/v1/models"))
        .send()
        .await
        .expect("send");
    assert_eq!(response.status(), 200);
    let h = response.headers();
    assert_eq!(h["x-ratelimit-limit-requests"], "4");
    assert_eq!(h["x-ratelimit-remaining-requests"], "3");
    let reset = h["x-ratelimit-reset-requests"].to_str().expect("ascii");
    assert_eq!(reset, "15s", "one request is 15 s of a 4-per-minute bucket");
}

#[tokio::test]
async fn the_limit_is_per_account_across_keys() {
    let app = spawn_app_with(STRICT).await;
    let (account, key) = create_key(&app.state, "basic", None, None).await;
    let second = app
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
    let a = client_with(Some(&key));
    let b = client_with(Some(secrecy::ExposeSecret::expose_secret(&second.secret)));
    let mut statuses = Vec::new();
    for i in 0..6 {
        let client = if i % 2 == 0 { &a } else { &b };
        statuses.push(
            client
                .get(app.url("/v1/models"))
                .send()
                .await
                .expect("send"),
        );
    }
    let codes: Vec<u16> = statuses.iter().map(|r| r.status().as_u16()).collect();
    assert_eq!(
        codes,
        [200, 200, 200, 200, 429, 429],
        "two keys share one account bucket"
    );
    let last = statuses.pop().expect("response");
    let retry: u64 = last.headers()["retry-after"]
        .to_str()
        .expect("ascii")
        .parse()
        .expect("seconds");
    assert!((1..=15).contains(&retry), "retry after {retry}s");
    assert_eq!(last.headers()["x-ratelimit-remaining-requests"], "0");
    let (status, code, _) = error_of(last).await;
    assert_eq!(
        (status, code.as_deref()),
        (429, Some("rate_limit_exceeded"))
    );
    // Another account is unaffected.
    let (_, other) = create_key(&app.state, "basic", None, None).await;
    assert_eq!(
        client_with(Some(&other))
            .get(app.url("/v1/models"))
            .send()
            .await
            .expect("send")
            .status(),
        200
    );
}

#[tokio::test]
async fn requests_without_a_valid_key_hit_the_stricter_address_limit() {
    let app = spawn_app_with(STRICT).await;
    let mut codes = Vec::new();
    for _ in 0..5 {
        codes.push(
            app.anonymous
                .get(app.url("/v1/models"))
                .send()
                .await
                .expect("send")
                .status()
                .as_u16(),
        );
    }
    assert_eq!(codes, [401, 401, 401, 429, 429]);
    // Public routes are not limited.
    assert_eq!(
        app.anonymous
            .get(app.url("/healthz"))
            .send()
            .await
            .expect("send")
            .status(),
        200
    );
}

#[tokio::test]
async fn repeat_violators_are_blocked() {
    let app = spawn_app_with(STRICT).await;
    let (_, key) = create_key(&app.state, "basic", None, None).await;
    let client = client_with(Some(&key));
    let mut last_retry = 0;
    for _ in 0..12 {
        let response = client
            .get(app.url("/v1/models"))
            .send()
            .await
            .expect("send");
        if response.status() == 429 {
            last_retry = response.headers()["retry-after"]
                .to_str()
                .expect("ascii")
                .parse()
                .expect("seconds");
        }
    }
    // Four allowed, then violations; the fifth violation blocks the key for 60 s.
    assert!(
        last_retry >= 50,
        "blocked for the block period, got {last_retry}s"
    );
}

/// Two gateways share one Redis: hammered together, they admit exactly the account's limit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_gateways_sharing_redis_admit_exactly_the_limit() {
    let db = crate::store::PgDatabase::create().await;
    let toml = format!(
        "{STRICT}\n[database]\nurl = \"{}\"\n[auth]\npepper = \"{}\"\n",
        db.url,
        "r".repeat(40)
    );
    let toml = toml.replace(
        "[limits]\n",
        "[limits]\nbackend = \"redis://127.0.0.1:6379\"\n",
    );
    let a = spawn_app_with(&toml).await;
    let b = spawn_app_with(&toml).await;
    for trial in 0..5 {
        let (_, key) = create_key(&a.state, "basic", None, None).await;
        let client = client_with(Some(&key));
        let requests = (0..20).map(|i| {
            let url = if i % 2 == 0 {
                a.url("/v1/models")
            } else {
                b.url("/v1/models")
            };
            let client = client.clone();
            async move {
                client
                    .get(url)
                    .send()
                    .await
                    .expect("send")
                    .status()
                    .as_u16()
            }
        });
        let codes = futures::future::join_all(requests).await;
        let admitted = codes.iter().filter(|c| **c == 200).count();
        assert_eq!(admitted, 4, "trial {trial}: {codes:?}");
        assert!(
            codes.iter().all(|c| *c == 200 || *c == 429),
            "no 5xx: {codes:?}"
        );
    }
    drop((a, b));
    tokio::time::sleep(Duration::from_millis(100)).await;
    db.drop_now().await;
}

#[tokio::test]
async fn forwarded_addresses_count_only_from_trusted_proxies() {
    // A direct client rotating X-Forwarded-For is still one client.
    let app = spawn_app_with(STRICT).await;
    let mut codes = Vec::new();
    for i in 0..5 {
        let response = app
            .anonymous
            .get(app.url("/v1/models"))
            .header("x-forwarded-for", format!("198.51.100.{i}"))
            .send()
            .await
            .expect("send");
        codes.push(response.status().as_u16());
    }
    assert_eq!(
        codes,
        [401, 401, 401, 429, 429],
        "spoofed headers are ignored"
    );

    // Behind a trusted proxy (here: loopback), the forwarded client address counts.
    let app = spawn_app_with(&format!(
        "{STRICT}\n[server]\ntrusted_proxies = [\"127.0.0.1/32\"]\n"
    ))
    .await;
    let mut codes = Vec::new();
    for i in 0..5 {
        let response = app
            .anonymous
            .get(app.url("/v1/models"))
            .header("x-forwarded-for", format!("198.51.100.{i}"))
            .send()
            .await
            .expect("send");
        codes.push(response.status().as_u16());
    }
    assert_eq!(codes, [401; 5], "five different clients behind the proxy");
    let mut codes = Vec::new();
    for _ in 0..4 {
        let response = app
            .anonymous
            .get(app.url("/v1/models"))
            .header("x-forwarded-for", "6.6.6.6, 203.0.113.50")
            .send()
            .await
            .expect("send");
        codes.push(response.status().as_u16());
    }
    assert_eq!(
        codes,
        [401, 401, 401, 429],
        "one client, the rightmost untrusted hop"
    );
}

/// A speech request whose body is not read: backpressure stalls its stream, so it keeps its
/// slots until the response is dropped.
async fn held_stream(app: &crate::helpers::TestApp, key: &str) -> reqwest::Response {
    let text = "This sentence is spoken slowly so the stream lasts. ".repeat(38);
    let response = client_with(Some(key))
        .post(app.url("/v1/audio/speech"))
        .json(&serde_json::json!({"model": "tts-1", "input": text, "voice": "alloy", "response_format": "pcm", "speed": 0.25}))
        .send()
        .await
        .expect("send");
    assert_eq!(response.status(), 200);
    response
}

fn short_speech() -> serde_json::Value {
    serde_json::json!({"model": "tts-1", "input": "Hi.", "voice": "alloy", "response_format": "pcm"})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_over_its_concurrency_cap_gets_429() {
    let app = spawn_app_with(
        "[tiers.guest]\nmax_concurrent_per_key = 1\n[tiers.basic]\nmax_concurrent_per_key = 1\n",
    )
    .await;
    let (_, key) = create_key(&app.state, "basic", None, None).await;
    let held = held_stream(&app, &key).await;
    let second = client_with(Some(&key))
        .post(app.url("/v1/audio/speech"))
        .json(&short_speech())
        .send()
        .await
        .expect("send");
    let (status, code, _) = error_of(second).await;
    assert_eq!(
        (status, code.as_deref()),
        (429, Some("too_many_concurrent_requests"))
    );
    drop(held);
    // The slot comes back once the held stream is gone.
    let mut freed = false;
    for _ in 0..50 {
        let response = client_with(Some(&key))
            .post(app.url("/v1/audio/speech"))
            .json(&short_speech())
            .send()
            .await
            .expect("send");
        if response.status() == 200 {
            freed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(freed, "the slot was released");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_engine_queue_answers_503_with_retry_after() {
    let app = spawn_app_with(
        "[limits]\nengine_in_flight = 1\nengine_queue_depth = 0\nengine_queue_wait_ms = 100\n",
    )
    .await;
    let (_, first) = create_key(&app.state, "basic", None, None).await;
    let (_, second) = create_key(&app.state, "basic", None, None).await;
    let held = held_stream(&app, &first).await;
    let response = client_with(Some(&second))
        .post(app.url("/v1/audio/speech"))
        .json(&short_speech())
        .send()
        .await
        .expect("send");
    assert!(response.headers().contains_key("retry-after"));
    let (status, code, _) = error_of(response).await;
    assert_eq!((status, code.as_deref()), (503, Some("overloaded")));
    // Listing models does not need the engine.
    assert_eq!(
        client_with(Some(&second))
            .get(app.url("/v1/models"))
            .send()
            .await
            .expect("send")
            .status(),
        200
    );
    drop(held);
}

/// Parallel requests that together exceed a character quota: what is charged never exceeds
/// the quota, and refusals tell the SDK not to retry.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parallel_requests_never_overspend_a_character_quota() {
    let app = spawn_app_with(
        "[tiers.guest]\nquotas = [{ per = \"account\", metric = \"characters\", period = \"day\", limit = 100 }]\n[tiers.basic]\nquotas = [{ per = \"account\", metric = \"characters\", period = \"day\", limit = 100 }]\n[tiers.premium]\nquotas = [{ per = \"account\", metric = \"characters\", period = \"day\", limit = 100 }]\n",
    )
    .await;
    let (account, key) = create_key(&app.state, "basic", None, None).await;
    let client = client_with(Some(&key));
    let text = "Thirty characters of speech ok"; // 30 characters
    let requests = (0..10).map(|_| {
        let client = client.clone();
        let url = app.url("/v1/audio/speech");
        async move {
            let response = client
                .post(url)
                .json(&serde_json::json!({"model": "tts-1", "input": text, "voice": "alloy", "response_format": "pcm"}))
                .send()
                .await
                .expect("send");
            let status = response.status().as_u16();
            let no_retry = response.headers().get("x-should-retry").map(|v| v.to_str().expect("ascii").to_owned());
            let _ = response.bytes().await;
            (status, no_retry)
        }
    });
    let results = futures::future::join_all(requests).await;
    let served = results.iter().filter(|(s, _)| *s == 200).count();
    // A served request reports the character budget in OpenAI's token headers.
    let (_, other) = create_key(&app.state, "basic", None, None).await;
    let response = client_with(Some(&other))
        .post(app.url("/v1/audio/speech"))
        .json(&serde_json::json!({"model": "tts-1", "input": "Twelve chars", "voice": "alloy", "response_format": "pcm"}))
        .send()
        .await
        .expect("send");
    assert_eq!(response.headers()["x-ratelimit-limit-tokens"], "100");
    assert_eq!(response.headers()["x-ratelimit-remaining-tokens"], "88");
    assert!(response.headers().contains_key("x-ratelimit-reset-tokens"));
    let _ = response.bytes().await;
    assert_eq!(
        served, 3,
        "three 30-character requests fit in 100: {results:?}"
    );
    for (status, no_retry) in &results {
        if *status == 429 {
            assert_eq!(no_retry.as_deref(), Some("false"));
        }
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let now = voxgate::util::now();
    let window = now - now.rem_euclid(86_400);
    let (used, reserved) = app
        .state
        .store
        .quota_usage(&format!("acct:{account}"), "characters", window)
        .await
        .expect("usage");
    assert_eq!((used, reserved), (90, 0), "charged exactly what was served");
    let response = client
        .post(app.url("/v1/audio/speech"))
        .json(&serde_json::json!({"model": "tts-1", "input": "Hello there", "voice": "alloy"}))
        .send()
        .await
        .expect("send");
    let (status, code, _) = error_of(response).await;
    assert_eq!(
        (status, code.as_deref()),
        (429, Some("quota_exceeded")),
        "10 characters left, 11 asked"
    );
}

/// A gateway on Redis keeps serving when Redis stops (the local fallback decides, no 5xx) and
/// uses Redis again when it is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_survives_redis_going_away() {
    let port = crate::limits::free_port();
    let mut redis = crate::limits::OwnRedis::start(port);
    crate::limits::wait_for_redis(port).await;
    let toml = format!(
        "[limits]\nbackend = \"redis://127.0.0.1:{port}\"\nredis_timeout_ms = 200\non_backend_error = \"local\"\n\
         [tiers.guest]\nrate_limits = [{{ per = \"account\", period = \"minute\", limit = 10 }}]\n[tiers.basic]\nrate_limits = [{{ per = \"account\", period = \"minute\", limit = 10 }}]\n"
    );
    let app = spawn_app_with(&toml).await;
    let (_, key) = create_key(&app.state, "basic", None, None).await;
    let client = client_with(Some(&key));
    let mut statuses = Vec::new();
    for _ in 0..4 {
        statuses.push(
            client
                .get(app.url("/v1/models"))
                .send()
                .await
                .expect("send")
                .status()
                .as_u16(),
        );
    }
    redis.stop();
    for _ in 0..12 {
        statuses.push(
            client
                .get(app.url("/v1/models"))
                .send()
                .await
                .expect("send")
                .status()
                .as_u16(),
        );
    }
    assert!(
        statuses.iter().all(|s| *s == 200 || *s == 429),
        "no 5xx storm: {statuses:?}"
    );
    // The local fallback's buckets start empty at the switch and refill at half the
    // limit's rate (5 a minute): nothing is granted within these few seconds, never a
    // fresh burst on top of what Redis already granted.
    let during = &statuses[4..];
    assert_eq!(
        during.iter().filter(|s| **s == 200).count(),
        0,
        "{statuses:?}"
    );
    // The switch is visible as a metric (and logged as a security event).
    let metrics = app
        .client
        .get(app.admin_url("/metrics"))
        .send()
        .await
        .expect("send")
        .text()
        .await
        .expect("body");
    assert!(
        metrics.contains("voxgate_rate_limit_backend_degraded 1"),
        "{metrics}"
    );

    let _restarted = crate::limits::OwnRedis::start(port);
    crate::limits::wait_for_redis(port).await;
    let (_, fresh) = create_key(&app.state, "basic", None, None).await;
    let fresh = client_with(Some(&fresh));
    let mut recovered = false;
    for _ in 0..50 {
        let response = fresh.get(app.url("/v1/models")).send().await.expect("send");
        assert!(response.status() == 200 || response.status() == 429);
        // Back on Redis, the bucket reports the full limit again.
        if response
            .headers()
            .get("x-ratelimit-limit-requests")
            .is_some_and(|v| v == "10")
        {
            recovered = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(recovered, "shared limits are used again once Redis is back");
    let metrics = app
        .client
        .get(app.admin_url("/metrics"))
        .send()
        .await
        .expect("send")
        .text()
        .await
        .expect("body");
    assert!(
        metrics.contains("voxgate_rate_limit_backend_degraded 0"),
        "{metrics}"
    );
    assert!(
        metrics.contains("voxgate_rate_limit_backend_switches_total 2"),
        "{metrics}"
    );
    assert!(!metrics.contains(&key), "no user data in metrics");
}

/// A gateway configured for Redis starts while Redis is down (the fallback decides) and
/// switches to Redis once it appears.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_starts_without_redis_and_picks_it_up_later() {
    let port = crate::limits::free_port();
    let toml = format!(
        "[limits]\nbackend = \"redis://127.0.0.1:{port}\"\nredis_timeout_ms = 200\n\
         [tiers.guest]\nrate_limits = [{{ per = \"account\", period = \"minute\", limit = 10 }}]\n[tiers.basic]\nrate_limits = [{{ per = \"account\", period = \"minute\", limit = 10 }}]\n"
    );
    let app = spawn_app_with(&toml).await;
    let (_, key) = create_key(&app.state, "basic", None, None).await;
    let response = client_with(Some(&key))
        .get(app.url("/v1/models"))
        .send()
        .await
        .expect("send");
    // The fallback decides, with half of the limit, from an empty bucket: an instance that
    // starts (or restarts) while Redis is away grants no burst.
    assert_eq!(response.status(), 429);
    assert!(response.headers().contains_key("retry-after"));

    let _redis = crate::limits::OwnRedis::start(port);
    crate::limits::wait_for_redis(port).await;
    let (_, fresh) = create_key(&app.state, "basic", None, None).await;
    let fresh = client_with(Some(&fresh));
    let mut on_redis = false;
    for _ in 0..50 {
        let response = fresh.get(app.url("/v1/models")).send().await.expect("send");
        if response
            .headers()
            .get("x-ratelimit-limit-requests")
            .is_some_and(|v| v == "10")
        {
            on_redis = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        on_redis,
        "the shared limiter is used once Redis is reachable"
    );
}

/// Work that fails (or a client that leaves) gives its reservation back.
#[tokio::test]
async fn abandoned_work_is_refunded() {
    use voxgate::limits::quota::{self, Amounts};
    let app = spawn_app_with(
        "[tiers.guest]\nquotas = [{ per = \"account\", metric = \"characters\", period = \"day\", limit = 100 }]\n[tiers.basic]\nquotas = [{ per = \"account\", metric = \"characters\", period = \"day\", limit = 100 }]\n[tiers.premium]\nquotas = [{ per = \"account\", metric = \"characters\", period = \"day\", limit = 100 }]\n",
    )
    .await;
    let (account, key) = create_key(&app.state, "basic", None, None).await;
    let principal = app
        .state
        .auth
        .authenticate(
            Some(&format!("Bearer {key}")),
            std::net::IpAddr::from([127, 0, 0, 1]),
        )
        .await
        .expect("principal");
    let store = &app.state.store;
    let estimate = Amounts {
        characters: 80,
        audio_seconds: 0,
        requests: 1,
        transcribed_seconds: 0,
    };
    let hold = quota::reserve(
        store,
        &app.state.holds,
        &principal,
        &principal.tier.quotas,
        estimate,
    )
    .await
    .expect("store")
    .expect("fits");
    let second = quota::reserve(
        store,
        &app.state.holds,
        &principal,
        &principal.tier.quotas,
        estimate,
    )
    .await
    .expect("store");
    assert!(second.is_err(), "80 + 80 > 100 while the first is reserved");
    drop(hold); // the request failed: nothing is charged
    // The refund is written by a task of its own: read until the reservation is gone.
    assert_eq!(
        crate::helpers::settled(&app, &account, "characters").await,
        0,
        "refunded"
    );
    let again = quota::reserve(
        store,
        &app.state.holds,
        &principal,
        &principal.tier.quotas,
        estimate,
    )
    .await
    .expect("store");
    assert!(again.is_ok(), "the budget is whole again");
}

/// Narrowing is monotone: a key narrowed to a lower tier still counts against its account's
/// per-account limits (one bucket per account and rule, whatever the key's tier), and tiers
/// that do not nest on limits, quotas or restrictions are refused at start-up.
#[tokio::test]
async fn a_narrowed_key_never_escapes_its_accounts_limits() {
    let app = spawn_app_with(
        "[tiers.guest]\nrate_limits = [{ per = \"account\", period = \"minute\", limit = 3 }, { per = \"account\", period = \"hour\", limit = 100 }]\n\
         [tiers.basic]\nrate_limits = [{ per = \"account\", period = \"minute\", limit = 5 }, { per = \"account\", period = \"hour\", limit = 100 }]\n",
    )
    .await;
    let (account, basic) = create_key(&app.state, "basic", None, None).await;
    let narrowed = app
        .state
        .accounts
        .create_key(
            voxgate::data::audit::Actor::Cli,
            &account,
            voxgate::identity::accounts::KeyRequest {
                name: "guest".into(),
                tier: Some("guest".into()),
                ..Default::default()
            },
            None,
        )
        .await
        .expect("narrowed key");
    use secrecy::ExposeSecret as _;
    let guest = client_with(Some(narrowed.secret.expose_secret()));
    let basic = client_with(Some(&basic));
    for i in 0..5 {
        let status = basic
            .get(app.url("/v1/models"))
            .send()
            .await
            .expect("send")
            .status();
        assert_eq!(status, 200, "request {i}");
    }
    // The account's 5 a minute are spent; the guest key may not add its own 3.
    let (status, code, _) =
        error_of(guest.get(app.url("/v1/models")).send().await.expect("send")).await;
    assert_eq!(
        (status, code.as_deref()),
        (429, Some("rate_limit_exceeded"))
    );

    for (setting, why) in [
        (
            "[tiers.guest]\nquotas = [{ per = \"account\", metric = \"characters\", period = \"day\", limit = 999999 }]",
            "a higher quota",
        ),
        (
            "[tiers.guest]\nrate_limits = [{ per = \"account\", period = \"minute\", limit = 10 }]",
            "a rate limit missing",
        ),
        ("[tiers.basic]\nredact_pii = true", "less redaction"),
        (
            "[tiers.guest]\ncache = true",
            "a cache the higher tier lacks",
        ),
    ] {
        let err = voxgate::config::Config::from_toml(setting).expect_err(why);
        assert!(err.to_string().contains("tiers.guest"), "{why}: {err}");
    }
}
