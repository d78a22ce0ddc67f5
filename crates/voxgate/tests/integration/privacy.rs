//! Data protection: an account exports what voxgate keeps about it and erases itself (or an
//! admin erases it): artifacts deleted, keys revoked, the data key destroyed so that copies of
//! its sealed objects no longer open. Another account's data is never reachable or touched.

use reqwest::multipart::Form;
use serde_json::{Value, json};

use crate::helpers::{client_with, create_key, file_part, spawn_app_with, tone_wav};

async fn store_voice(
    app: &crate::helpers::TestApp,
    client: &reqwest::Client,
    name: &str,
) -> String {
    let form = Form::new()
        .text("name", name.to_owned())
        .text("consent", "true")
        .part("audio_sample", file_part(tone_wav(6.0, 22_050), "me.wav"));
    let created: Value = client
        .post(app.url("/v1/audio/voices"))
        .multipart(form)
        .send()
        .await
        .expect("send")
        .json()
        .await
        .expect("json");
    created["id"].as_str().expect("id").to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn export_and_erasure_touch_only_the_callers_account() {
    let app = spawn_app_with("[tiers.admin]\ncache = true").await;
    let (a, a_key) = create_key(&app.state, "admin", None, None).await;
    let (b, b_key) = create_key(&app.state, "admin", None, None).await;
    let (alice, bob) = (client_with(Some(&a_key)), client_with(Some(&b_key)));
    let a_voice = store_voice(&app, &alice, "Alice's voice").await;
    let b_voice = store_voice(&app, &bob, "Bob's voice").await;
    let spoken = alice
        .post(app.url("/v1/audio/speech"))
        .json(&json!({"model": "tts-1", "input": "Cache this for Alice.", "voice": "alloy"}))
        .send()
        .await
        .expect("speech");
    assert_eq!(spoken.headers()["x-voxgate-cache"], "miss");
    let _ = spoken.bytes().await;
    assert_eq!(app.state.cache.len(), 1);

    // Export: Alice's data only, no secrets.
    let export: Value = alice
        .get(app.url("/v1/me/export"))
        .send()
        .await
        .expect("export")
        .json()
        .await
        .expect("json");
    assert_eq!(export["object"], "account.export");
    assert_eq!(export["account"]["id"], a.as_str());
    let text = export.to_string();
    assert!(
        text.contains(&a_voice) && !text.contains(&b_voice),
        "{text}"
    );
    assert!(!text.contains(&b) && !text.contains("digest"), "{text}");
    assert!(
        !text.contains(a_key.split('_').nth(2).expect("secret")),
        "no key secret"
    );
    assert!(
        export["audit"]
            .as_array()
            .expect("audit")
            .iter()
            .any(|e| e["kind"] == "voice_created")
    );

    // A copy of Alice's sealed voice, as a backup would keep it.
    let sealed = app
        .state
        .store
        .voice(&a, &a_voice)
        .await
        .expect("read")
        .expect("voice")
        .sealed;

    let erased: Value = alice
        .delete(app.url("/v1/me"))
        .send()
        .await
        .expect("erase")
        .json()
        .await
        .expect("json");
    assert_eq!(erased["deleted"], true);
    assert_eq!(erased["voices_deleted"], 1);
    assert!(erased["keys_revoked"].as_u64().expect("n") >= 1);

    // Her key no longer works; her voices and cached speech are gone; her data key is
    // destroyed, so the backup copy cannot be opened even with the master key.
    let after = alice.get(app.url("/v1/models")).send().await.expect("send");
    assert_eq!(after.status(), 401);
    assert!(app.state.store.voices(&a).await.expect("voices").is_empty());
    assert_eq!(app.state.cache.len(), 0);
    assert!(
        app.state
            .vault
            .existing_key(&a)
            .await
            .expect("read")
            .is_none()
    );
    assert!(matches!(
        app.state.vault.open(&a, None, "voice", &a_voice, &sealed),
        Err(voxgate::data::vault::VaultError::Shredded)
    ));
    let account = app
        .state
        .store
        .account(&a)
        .await
        .expect("read")
        .expect("row");
    assert!(!account.active && account.name == "(erased)" && account.contact.is_none());
    let log = app.state.store.audit_log().await.expect("log");
    assert!(
        log.iter()
            .any(|r| r.kind == "account_erased" && r.account_id.as_deref() == Some(a.as_str()))
    );

    // Bob is untouched: his key, his voice (still readable), his export.
    let response = bob
        .get(app.url(&format!("/v1/audio/voices/{b_voice}")))
        .send()
        .await
        .expect("get");
    assert_eq!(response.status(), 200);
    assert!(
        app.state
            .voices
            .audio(&b, &b_voice)
            .await
            .expect("open")
            .is_some()
    );

    // The admin equivalent erases Bob.
    let erased = app
        .client
        .delete(app.admin_url(&format!("/admin/accounts/{b}")))
        .send()
        .await
        .expect("admin erase");
    assert_eq!(erased.status(), 200);
    assert_eq!(
        bob.get(app.url("/v1/models"))
            .send()
            .await
            .expect("send")
            .status(),
        401
    );
    let missing = app
        .client
        .delete(app.admin_url("/admin/accounts/acct_doesnotexist"))
        .send()
        .await
        .expect("send");
    assert_eq!(missing.status(), 404);
}

/// Sets a file's modification time into the past (touch -d).
fn age(path: &std::path::Path, ago: &str) {
    let status = std::process::Command::new("touch")
        .arg("-d")
        .arg(ago)
        .arg(path)
        .status()
        .expect("touch");
    assert!(status.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sweeper_enforces_retention_per_kind() {
    let app = spawn_app_with(
        "[retention]\nvoice_days = 1\n[tiers.admin]\ncache = true\n[cache]\nttl_secs = 60\nstale_if_error_secs = 60",
    )
    .await;
    let old = store_voice(&app, &app.client, "Old").await;
    let fresh = store_voice(&app, &app.client, "Fresh").await;
    // The old voice was made two days ago.
    let url = format!(
        "sqlite://{}",
        app.state.config.data_dir.join("voxgate.db").display()
    );
    let pool = sqlx::SqlitePool::connect(&url).await.expect("db");
    sqlx::query("UPDATE voice_references SET created_at = created_at - 172800 WHERE id = ?1")
        .bind(&old)
        .execute(&pool)
        .await
        .expect("backdate");
    pool.close().await;
    // One cached response, aged past its TTL and stale window; one abandoned upload.
    let _ = app
        .speech_bytes(json!({"model": "tts-1", "input": "Keep me briefly.", "voice": "alloy"}))
        .await;
    assert_eq!(app.state.cache.len(), 1);
    let cache_dir = app.state.config.data_dir.join("cache");
    for owner in std::fs::read_dir(&cache_dir).expect("cache") {
        for entry in std::fs::read_dir(owner.expect("owner").path()).expect("entries") {
            age(&entry.expect("entry").path(), "3 minutes ago");
        }
    }
    let spool = app.state.uploads.path().join("abandoned.upload");
    std::fs::write(&spool, b"partial upload").expect("spool");
    age(&spool, "2 hours ago");
    let recent = app.state.uploads.path().join("recent.upload");
    std::fs::write(&recent, b"in flight").expect("spool");

    let swept = voxgate::service::retention::sweep(&app.state)
        .await
        .expect("sweep");
    assert_eq!(
        (swept.voices, swept.cache_entries, swept.uploads),
        (1, 1, 1),
        "{swept:?}"
    );
    let store = &app.state.store;
    assert!(
        store
            .voice(&app.account, &old)
            .await
            .expect("read")
            .is_none()
    );
    assert!(
        store
            .voice(&app.account, &fresh)
            .await
            .expect("read")
            .is_some()
    );
    assert_eq!(app.state.cache.len(), 0);
    assert!(!spool.exists() && recent.exists());
    // What the sweeper deleted is in the audit log, by the retention job.
    let events = store.audit_events(20).await.expect("events");
    assert!(
        events.iter().any(|e| e.kind == "voice_deleted"
            && e.subject.as_deref() == Some(old.as_str())
            && e.actor.as_deref() == Some("system:retention")),
        "{events:#?}"
    );
}

/// A response still streaming while its account is erased never leaves a cache entry
/// behind: the data key goes first, and an entry finished after it is discarded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_that_outlives_an_erasure_leaves_no_cache_entry() {
    let app = spawn_app_with("[tiers.premium]\ncache = true\n[tiers.admin]\ncache = true").await;
    let (account, key) = crate::helpers::create_key(&app.state, "premium", None, None).await;
    let text = "A long answer that keeps streaming while its account goes away. ".repeat(20);
    let mut response = crate::helpers::client_with(Some(&key))
        .post(app.url("/v1/audio/speech"))
        .json(&json!({"model": "tts-1", "input": text, "voice": "alloy", "response_format": "pcm"}))
        .send()
        .await
        .expect("send");
    assert_eq!(response.headers()["x-voxgate-cache"], "miss");
    let first = response.chunk().await.expect("chunk").expect("audio");
    assert!(!first.is_empty());
    let erased = app
        .client
        .delete(app.admin_url(&format!("/admin/accounts/{account}")))
        .send()
        .await
        .expect("erase");
    assert_eq!(erased.status(), 200);
    // The rest of the stream arrives (it was admitted before the erasure) …
    while let Some(chunk) = response.chunk().await.expect("chunk") {
        let _ = chunk;
    }
    // … but nothing is kept for the erased account.
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    assert_eq!(app.state.cache.len(), 0);
    let dir = app.state.config.data_dir.join("cache");
    let files: usize = std::fs::read_dir(&dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|owner| owner.path().is_dir())
        .map(|owner| std::fs::read_dir(owner.path()).map_or(0, |e| e.count()))
        .sum();
    assert_eq!(files, 0, "no sealed file left in the cache");
}
