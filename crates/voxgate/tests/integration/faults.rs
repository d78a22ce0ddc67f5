//! Reliability under faults, against real parts: a `voxgate serve` process killed with
//! SIGKILL mid-stream (its quota reservations are settled at what it delivered once their
//! lease runs out), and a real PostgreSQL cut off behind a TCP relay the test controls
//! (requests get 503 `store_unavailable` at once, verified keys keep reading, recovery
//! needs no restart).

use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde_json::json;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use voxgate::data::store::{SqliteStore, Store as _};

use crate::helpers::{Serving, client_with, create_key, error_of, run_ok, serving, spawn_app_with};
use crate::store::PgDatabase;

fn voxgate(data_dir: &std::path::Path, config: &std::path::Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_voxgate"));
    cmd.env_clear()
        .env("PATH", "/usr/bin:/bin")
        .env("VOXGATE_DATA_DIR", data_dir)
        .env("VOXGATE_ADMIN__ENABLED", "false")
        .arg("--config")
        .arg(config);
    cmd
}

/// Starts `voxgate serve` and returns it with its address; its log is drained meanwhile.
fn serve(data: &std::path::Path, config: &std::path::Path) -> (std::process::Child, String) {
    let Serving {
        child,
        addr,
        mut stderr,
        ..
    } = serving(voxgate(data, config).args(["serve", "--bind", "127.0.0.1:0"]));
    // Keep draining the log so the server never blocks on it.
    std::thread::spawn(move || std::io::copy(&mut stderr, &mut std::io::sink()));
    (child, addr)
}

/// SIGKILL while a stream is being delivered: the reservation outlives the process, and
/// the restarted server settles it at what the killed one reported as delivered (more than
/// nothing, less than what was reserved), leaving nothing reserved and no holder behind.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_server_leaves_no_quota_reserved() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let config = dir.path().join("voxgate.toml");
    std::fs::write(
        &config,
        "[database]\nhold_lease_secs = 2\nhold_renew_secs = 1\n\
         [tiers.basic]\nquotas = [\
           { per = \"account\", metric = \"characters\", period = \"day\", limit = 100000 },\
           { per = \"account\", metric = \"audio_seconds\", period = \"day\", limit = 10000 },\
           { per = \"account\", metric = \"transcribed_seconds\", period = \"day\", limit = 7200 }]\n",
    )
    .expect("config");
    let account = run_ok(
        voxgate(&data, &config).args(["accounts", "create", "--name", "faults", "--tier", "basic"]),
    );
    let key = run_ok(voxgate(&data, &config).args(["keys", "create", "--account", &account]));

    let (mut server, addr) = serve(&data, &config);
    let sentence = "The quick brown fox jumps over the lazy dog while the band plays on. ";
    // Within the basic tier's 2,000 characters, about two minutes of audio.
    let text = sentence.repeat(28).trim_end().to_owned();
    let characters = text.chars().count() as i64;
    // A client whose receive buffer stays small: with the kernel's autotuning (up to 32 MiB
    // on some machines) the whole stream fits in the sockets' buffers, and the server would
    // finish and settle it before the kill.
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket.set_recv_buffer_size(16 * 1024).expect("SO_RCVBUF");
    let mut response = socket
        .connect(addr.parse().expect("address"))
        .await
        .expect("connect");
    let body = json!({"model": "tts-1", "voice": "alloy", "input": text, "response_format": "pcm"})
        .to_string();
    let head = format!(
        "POST /v1/audio/speech HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {key}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    response
        .write_all(format!("{head}{body}").as_bytes())
        .await
        .expect("send");
    let mut read = vec![0u8; 64 * 1024];
    let mut received = Vec::new();
    tokio::time::timeout(Duration::from_secs(120), async {
        while received.len() < 200_000 {
            let n = response.read(&mut read).await.expect("read");
            received.extend_from_slice(&read[..n]);
            let head = String::from_utf8_lossy(&received[..received.len().min(64)]);
            assert!(n > 0, "more audio after {head:?}");
            if received.len() >= 13 {
                assert!(head.starts_with("HTTP/1.1 200 "), "{head:?}");
            }
        }
    })
    .await
    .expect("200 kB of audio within two minutes");
    // The stream is mid-way (the client stopped reading); the renewal runs every second.
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    let store = SqliteStore::open(&data.join("voxgate.db"))
        .await
        .expect("open the database beside the server");
    let subject = format!("acct:{account}");
    let day = {
        let t = voxgate::util::now();
        t - t.rem_euclid(86_400)
    };
    let (_, reserved) = store
        .quota_usage(&subject, "characters", day)
        .await
        .expect("usage");
    assert!(
        reserved > 0 && reserved <= characters,
        "the text is reserved while it streams: {reserved}"
    );
    server.kill().expect("SIGKILL");
    server.wait().expect("reaped");
    drop(response);
    let holds = store.quota_holds().await.expect("holds");
    let delivered = holds
        .iter()
        .find(|h| h.metric == "characters")
        .map(|h| h.delivered)
        .expect("the killed server's hold is still there");
    assert!(
        delivered > 0 && delivered <= reserved,
        "progress was reported: {delivered} of {reserved} characters"
    );

    let (mut restarted, _) = serve(&data, &config);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (used, reserved) = store
            .quota_usage(&subject, "characters", day)
            .await
            .expect("usage");
        if reserved == 0 {
            assert_eq!(used, delivered, "charged at what was delivered");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "reservation still stuck: {reserved}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (audio_used, audio_reserved) = store
        .quota_usage(&subject, "audio_seconds", day)
        .await
        .expect("usage");
    assert_eq!(audio_reserved, 0);
    assert!(audio_used > 0, "delivered audio is charged");
    assert!(store.quota_holds().await.expect("holds").is_empty());
    restarted.kill().expect("kill");
    let _ = restarted.wait();
}

/// A TCP relay to the real PostgreSQL that the test can cut (every connection dropped, new
/// ones refused at once) and restore: a network partition, not an imitation of the server.
struct Relay {
    port: u16,
    cut: Arc<AtomicBool>,
}

impl Relay {
    async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let cut = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&cut);
        tokio::spawn(async move {
            loop {
                let Ok((mut client, _)) = listener.accept().await else {
                    return;
                };
                if flag.load(Ordering::SeqCst) {
                    let _ = client.shutdown().await;
                    continue;
                }
                let flag = Arc::clone(&flag);
                tokio::spawn(async move {
                    let Ok(mut server) = tokio::net::TcpStream::connect("127.0.0.1:5432").await
                    else {
                        return;
                    };
                    let relay = tokio::io::copy_bidirectional(&mut client, &mut server);
                    let watch = async {
                        while !flag.load(Ordering::SeqCst) {
                            tokio::time::sleep(Duration::from_millis(20)).await;
                        }
                    };
                    tokio::select! {
                        _ = relay => {}
                        () = watch => {}
                    }
                });
            }
        });
        Self { port, cut }
    }

    fn url(&self, database_url: &str) -> String {
        database_url.replace(":5432/", &format!(":{}/", self.port))
    }

    fn set_cut(&self, cut: bool) {
        self.cut.store(cut, Ordering::SeqCst);
    }
}

/// PostgreSQL unreachable: requests that need the store answer 503 `store_unavailable`
/// with Retry-After within a second (never a hang, never a 500); a key verified before the
/// outage keeps reading; a key never seen is refused with the same 503, not a 401;
/// `/readyz` says not ready while `/healthz` stays alive; when the database is reachable
/// again everything works without a restart, and settlements written meanwhile arrive.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_outage_degrades_and_recovers_without_restart() {
    let db = PgDatabase::create().await;
    let relay = Relay::start().await;
    // Leases far longer than the test: whatever settles a hold here is its own settlement
    // (journaled, replayed), never reconciliation.
    let app = spawn_app_with(&format!(
        "[database]\nurl = \"{}\"\nhold_lease_secs = 600\nhold_renew_secs = 1\n\
         [tiers.basic]\nquotas = [{{ per = \"account\", metric = \"characters\", period = \"day\", limit = 100000 }}, {{ per = \"account\", metric = \"transcribed_seconds\", period = \"day\", limit = 7200 }}]\n",
        relay.url(&db.url)
    ))
    .await;
    let (account, basic) = create_key(&app.state, "basic", None, None).await;
    let (_, unseen) = create_key(&app.state, "basic", None, None).await;
    let client = client_with(Some(&basic));
    let speak = || {
        client
            .post(app.url("/v1/audio/speech"))
            .json(&json!({"model": "tts-1", "voice": "alloy", "input": "Hello there.", "response_format": "wav"}))
            .send()
    };
    let first = speak().await.expect("send");
    assert_eq!(first.status(), 200);
    assert!(!first.bytes().await.expect("audio").is_empty());
    assert_eq!(app.get("/readyz").await.status(), 200);

    // A stream that is under way when the database goes: it finishes, and its settlement
    // waits in the journal.
    let text = "The quick brown fox jumps over the lazy dog. ".repeat(20);
    let mut streaming = client
        .post(app.url("/v1/audio/speech"))
        .json(&json!({"model": "tts-1", "voice": "alloy", "input": text.trim_end(), "response_format": "pcm"}))
        .send()
        .await
        .expect("send");
    assert_eq!(streaming.status(), 200);
    let first = streaming.chunk().await.expect("chunk").expect("audio");
    assert!(!first.is_empty());

    relay.set_cut(true);
    // The relay drops its connections within a few of its 20 ms checks: wait (bounded)
    // until the gateway's readiness, a live check of the store that spends no quota,
    // sees the outage.
    let deadline = Instant::now() + Duration::from_secs(10);
    while app.get("/readyz").await.status() != 503 {
        assert!(Instant::now() < deadline, "the outage is never noticed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for _ in 0..5 {
        let started = Instant::now();
        let response = speak().await.expect("send");
        let waited = started.elapsed();
        assert!(
            waited < Duration::from_secs(3),
            "answered in {waited:?}, not after a stall"
        );
        let retry = response.headers().contains_key("retry-after");
        assert_eq!(
            error_of(response).await,
            (503, Some("store_unavailable".into()), None)
        );
        assert!(retry, "a 503 says when to retry");
    }
    let models = client
        .get(app.url("/v1/models"))
        .send()
        .await
        .expect("send");
    assert_eq!(models.status(), 200, "a verified key keeps reading");
    let refused = client_with(Some(&unseen))
        .get(app.url("/v1/models"))
        .send()
        .await
        .expect("send");
    assert_eq!(
        error_of(refused).await.0,
        503,
        "an unverifiable key is not called invalid"
    );
    assert_eq!(app.get("/readyz").await.status(), 503);
    assert_eq!(app.get("/healthz").await.status(), 200);

    while let Some(chunk) = streaming.chunk().await.expect("the stream finishes") {
        assert!(!chunk.is_empty());
    }
    let journal = app.state.config.data_dir.join("journal/settlements.jsonl");
    let waiting = {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let len = std::fs::metadata(&journal).map_or(0, |m| m.len());
            if len > 0 || Instant::now() > deadline {
                break len;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    assert!(waiting > 0, "the settlement waits in the journal");
    let day = {
        let t = voxgate::util::now();
        t - t.rem_euclid(86_400)
    };

    relay.set_cut(false);
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let response = speak().await.expect("send");
        if response.status() == 200 {
            assert!(!response.bytes().await.expect("audio").is_empty());
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no recovery: {}",
            response.status()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert_eq!(app.get("/readyz").await.status(), 200);
    // The journal is replayed: nothing stays reserved, the streamed text is charged.
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let (used, reserved) = app
            .state
            .store
            .quota_usage(&format!("acct:{account}"), "characters", day)
            .await
            .expect("usage");
        if reserved == 0 {
            let charged = text.trim_end().chars().count() as i64 + 2 * "Hello there.".len() as i64;
            assert!(
                used >= text.trim_end().chars().count() as i64 && used <= charged,
                "charged {used}"
            );
            break;
        }
        assert!(Instant::now() < deadline, "still reserved: {reserved}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(
        app.state
            .store
            .quota_holds()
            .await
            .expect("holds")
            .is_empty()
    );
    assert_eq!(std::fs::metadata(&journal).map_or(0, |m| m.len()), 0);
    db.drop_now().await;
}

/// An instance with no live holds still notices an outage in its upkeep: renewing nothing
/// is a round trip too. Every upkeep while the database is cut fails, so the outage never
/// counts as time the store was reachable (reconciling waits until the store has been
/// reachable for a lease and a renewal: the holders' time to replay their journals), and
/// the upkeep recovers by itself when the database returns. When renewing nothing answered
/// `Ok` without asking the database, the second upkeep in the outage "succeeded", and the
/// instance could reconcile the moment the database returned, before a holder replayed its
/// settlement (the occasional failure of the test below).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instance_without_holds_notices_an_outage() {
    let db = PgDatabase::create().await;
    let relay = Relay::start().await;
    // Renewals far apart: only this test's own upkeep calls run during it.
    let app = spawn_app_with(&format!(
        "[database]\nurl = \"{}\"\nhold_lease_secs = 1200\nhold_renew_secs = 600\n",
        relay.url(&db.url)
    ))
    .await;
    let store = &app.state.store;
    let book = &app.state.holds;
    assert_eq!(book.upkeep(store).await.expect("the store answers"), 0);

    relay.set_cut(true);
    // The relay drops its connections within a few of its 20 ms checks; from the first
    // upkeep that fails on, every one does.
    let deadline = Instant::now() + Duration::from_secs(10);
    while book.upkeep(store).await.is_ok() {
        assert!(Instant::now() < deadline, "the outage is noticed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for round in 1..4 {
        assert!(
            book.upkeep(store).await.is_err(),
            "upkeep {round} during the outage reported the store reachable"
        );
    }

    relay.set_cut(false);
    let deadline = Instant::now() + Duration::from_secs(10);
    while book.upkeep(store).await.is_err() {
        assert!(Instant::now() < deadline, "the store is back");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    db.drop_now().await;
}

/// Two instances on one PostgreSQL database that goes away for longer than two leases:
/// a stream that finished during the outage has its settlement journaled, and when the
/// database returns the other instance does not reconcile that hold at an older report
/// before its holder replays the journal. The streamed text is charged exactly once, in
/// full.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_journaled_settlement_is_not_reconciled_by_another_instance() {
    let db = PgDatabase::create().await;
    let relay = Relay::start().await;
    let config = format!(
        "[database]\nurl = \"{}\"\nhold_lease_secs = 6\nhold_renew_secs = 1\n\
         [tiers.basic]\nquotas = [{{ per = \"account\", metric = \"characters\", period = \"day\", limit = 100000 }}, {{ per = \"account\", metric = \"transcribed_seconds\", period = \"day\", limit = 7200 }}]\n",
        relay.url(&db.url)
    );
    let holder = spawn_app_with(&config).await;
    let other = spawn_app_with(&config).await;
    let (account, key) = create_key(&holder.state, "basic", None, None).await;
    let text = "The quick brown fox jumps over the lazy dog. ".repeat(20);
    let text = text.trim_end();
    let mut streaming = client_with(Some(&key))
        .post(holder.url("/v1/audio/speech"))
        .json(&json!({"model": "tts-1", "voice": "alloy", "input": text, "response_format": "pcm"}))
        .send()
        .await
        .expect("send");
    assert_eq!(streaming.status(), 200);
    assert!(
        !streaming
            .chunk()
            .await
            .expect("chunk")
            .expect("audio")
            .is_empty()
    );

    relay.set_cut(true);
    while let Some(chunk) = streaming.chunk().await.expect("the stream finishes") {
        assert!(!chunk.is_empty());
    }
    let journal = holder
        .state
        .config
        .data_dir
        .join("journal/settlements.jsonl");
    let deadline = Instant::now() + Duration::from_secs(5);
    while std::fs::metadata(&journal).map_or(0, |m| m.len()) == 0 {
        assert!(Instant::now() < deadline, "the settlement is journaled");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Over two leases without the database: the hold is reconcilable when it returns.
    tokio::time::sleep(Duration::from_secs(13)).await;
    relay.set_cut(false);

    let day = {
        let t = voxgate::util::now();
        t - t.rem_euclid(86_400)
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let usage = other
            .state
            .store
            .quota_usage(&format!("acct:{account}"), "characters", day)
            .await;
        if let Ok((used, 0)) = usage {
            assert_eq!(used, text.chars().count() as i64, "charged in full, once");
            break;
        }
        assert!(Instant::now() < deadline, "still reserved: {usage:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(std::fs::metadata(&journal).map_or(0, |m| m.len()), 0);
    db.drop_now().await;
}
