//! The tamper-evident audit log end to end: events written through the real `Audit` writer
//! and checkpointed by `Tlog`, the database then tampered with in each of the ways an
//! attacker with database access could, and `voxgate audit verify` (the real binary) must
//! name the first bad position every time.

use std::path::Path;
use std::process::Command;
use std::sync::Arc;

use voxgate::config::Config;
use voxgate::data::audit::tlog::{Tlog, leaf_hex};
use voxgate::data::audit::{Actor, Audit, AuditEvent};

/// 40 events, checkpoints at 30 and 40 (in the database and the witness directory).
async fn setup(data: &Path) {
    let mut config = Config::defaults().expect("config");
    config.data_dir = data.to_owned();
    voxgate::service::prepare_data_dir(&config.data_dir).expect("data dir");
    let store = voxgate::data::store::open("", data).await.expect("store");
    let audit = Audit::new(Arc::clone(&store));
    let tlog = Tlog::open(&config.audit, data, Arc::clone(&store)).expect("tlog");
    for i in 0..40 {
        audit
            .record(
                Actor::Key(format!("key{i}")),
                None,
                AuditEvent::AccessDenied {
                    keyid: format!("key{i}"),
                    route: "/v1/audio/speech".into(),
                    reason: "scope",
                },
            )
            .await;
        if i == 29 || i == 39 {
            tlog.checkpoint().await.expect("checkpoint");
        }
    }
}

async fn sql(data: &Path, statements: &[&str]) {
    let url = format!("sqlite://{}", data.join("voxgate.db").display());
    let pool = sqlx::SqlitePool::connect(&url).await.expect("db");
    for statement in statements {
        // Test-only tampering statements, written in this file.
        sqlx::raw_sql(sqlx::AssertSqlSafe(*statement))
            .execute(&pool)
            .await
            .expect(statement);
    }
    pool.close().await;
}

/// Runs `voxgate audit verify`; returns (success, stdout).
fn verify(data: &Path) -> (bool, String) {
    verify_with(data, &[], &[])
}

/// `voxgate audit verify` with more arguments and environment.
fn verify_with(data: &Path, args: &[&str], env: &[(&str, &str)]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_voxgate"))
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .env("VOXGATE_DATA_DIR", data)
        .envs(env.iter().copied())
        .args(["audit", "verify"])
        .args(args)
        .output()
        .expect("run");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
    )
}

fn first_bad(output: &str) -> u64 {
    output
        .split("first bad index ")
        .nth(1)
        .and_then(|rest| rest.split(':').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no first bad index in {output:?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_untouched_log_verifies() {
    let dir = tempfile::tempdir().expect("dir");
    setup(dir.path()).await;
    let (ok, out) = verify(dir.path());
    assert!(ok, "{out}");
    assert!(
        out.contains("40 entries") && out.contains("40 entries covered"),
        "{out}"
    );
    let witness = dir.path().join("audit-witness");
    assert!(witness.join("checkpoint-000000000040.note").exists());
    let note = std::fs::read_to_string(witness.join("checkpoint-000000000040.note")).expect("note");
    assert!(note.starts_with("voxgate/audit\n40\n"), "{note}");
    assert!(note.contains("\n\n— voxgate/audit "), "{note}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_tampering_is_detected_at_its_position() {
    let cases: [(&str, Vec<String>, u64); 5] = [
        (
            "edited field",
            vec!["UPDATE audit_events SET detail = '{\"kind\":\"access_denied\",\"keyid\":\"other\"}' WHERE idx = 17".into()],
            17,
        ),
        (
            "deleted row",
            vec!["DELETE FROM audit_events WHERE idx = 25".into()],
            25,
        ),
        (
            "reordered pair",
            vec![
                "UPDATE audit_events SET idx = -1 WHERE idx = 5".into(),
                "UPDATE audit_events SET idx = 5 WHERE idx = 6".into(),
                "UPDATE audit_events SET idx = 6 WHERE idx = -1".into(),
            ],
            5,
        ),
        (
            "truncated tail",
            vec!["DELETE FROM audit_events WHERE idx >= 35".into()],
            35,
        ),
        (
            "rollback to an older state (a restored backup)",
            vec![
                "DELETE FROM audit_events WHERE idx >= 30".into(),
                "DELETE FROM audit_checkpoints WHERE size > 30".into(),
            ],
            30,
        ),
    ];
    for (what, statements, expected) in cases {
        let dir = tempfile::tempdir().expect("dir");
        setup(dir.path()).await;
        let statements: Vec<&str> = statements.iter().map(String::as_str).collect();
        sql(dir.path(), &statements).await;
        let (ok, out) = verify(dir.path());
        assert!(!ok, "{what}: {out}");
        assert_eq!(first_bad(&out), expected, "{what}: {out}");
    }
}

/// An attacker rewrites an entry, recomputes its leaf hash and signs new checkpoints with a
/// key of their own: the signatures fail, and the witness copies (outside the database)
/// place the damage after the last checkpoint that still agrees.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chain_rewritten_without_the_key_is_detected() {
    let dir = tempfile::tempdir().expect("dir");
    setup(dir.path()).await;
    let url = format!("sqlite://{}", dir.path().join("voxgate.db").display());
    let pool = sqlx::SqlitePool::connect(&url).await.expect("db");
    let store = voxgate::data::store::open("", dir.path())
        .await
        .expect("store");
    let mut row = store
        .audit_log()
        .await
        .expect("log")
        .into_iter()
        .find(|r| r.idx == Some(33))
        .expect("row 33");
    row.detail = r#"{"kind":"access_denied","keyid":"innocent"}"#.into();
    sqlx::query("UPDATE audit_events SET detail = ?1, leaf_hash = ?2 WHERE idx = 33")
        .bind(&row.detail)
        .bind(leaf_hex(&row))
        .execute(&pool)
        .await
        .expect("rewrite");
    // Forged checkpoints from another key replace the database's own.
    let forger =
        voxgate::data::audit::checkpoint::Signer::from_seed("voxgate/audit", [7; 32]).expect("key");
    let log = store.audit_log().await.expect("log");
    let leaves: Vec<_> = log
        .iter()
        .map(|r| {
            voxgate::data::audit::merkle::leaf_hash(&voxgate::data::audit::tlog::entry_bytes(r))
        })
        .collect();
    let forged = forger
        .sign(&voxgate::data::audit::checkpoint::Checkpoint {
            origin: "voxgate/audit".into(),
            size: 40,
            root: voxgate::data::audit::merkle::root(&leaves),
        })
        .expect("sign");
    sqlx::query("DELETE FROM audit_checkpoints")
        .execute(&pool)
        .await
        .expect("delete");
    sqlx::query("INSERT INTO audit_checkpoints (size, at, note) VALUES (40, 0, ?1)")
        .bind(&forged)
        .execute(&pool)
        .await
        .expect("forge");
    pool.close().await;
    let (ok, out) = verify(dir.path());
    assert!(!ok, "{out}");
    let bad = first_bad(&out);
    assert!(
        (30..=33).contains(&bad),
        "placed after the last good checkpoint (30): {out}"
    );
}

/// Someone with the database and the data dir rewrites the log and deletes every checkpoint
/// and witness note: with nothing left to contradict it, the log is not vouched for — more
/// entries than `checkpoint_every` plus a grace are covered by no checkpoint (exit 1).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_log_without_its_checkpoints_is_not_vouched_for() {
    let dir = tempfile::tempdir().expect("dir");
    setup(dir.path()).await;
    // With checkpoints every 10 events, a lag of 40 is suspicious.
    let every = [("VOXGATE_AUDIT__CHECKPOINT_EVERY", "10")];
    let (ok, out) = verify_with(dir.path(), &[], &every);
    assert!(ok, "{out}");
    sql(dir.path(), &["DELETE FROM audit_checkpoints"]).await;
    for entry in std::fs::read_dir(dir.path().join("audit-witness")).expect("witness") {
        let path = entry.expect("entry").path();
        if path.extension().is_some_and(|e| e == "note") {
            std::fs::remove_file(path).expect("remove");
        }
    }
    let (ok, out) = verify_with(dir.path(), &[], &every);
    assert!(!ok, "{out}");
    assert!(out.contains("NOT VOUCHED FOR"), "{out}");
    assert!(out.contains("covers 0 of 40 entries"), "{out}");
}

/// `--require-witness`: only the witness copy (kept off this host) vouches; database
/// checkpoints alone are not enough once it is required.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_required_witness_must_hold_the_checkpoints() {
    let dir = tempfile::tempdir().expect("dir");
    setup(dir.path()).await;
    let witness = dir.path().join("audit-witness");
    let off_host = dir.path().join("off-host");
    std::fs::create_dir(&off_host).expect("mkdir");
    for entry in std::fs::read_dir(&witness).expect("witness") {
        let path = entry.expect("entry").path();
        std::fs::copy(&path, off_host.join(path.file_name().expect("name"))).expect("copy");
    }
    let every = [("VOXGATE_AUDIT__CHECKPOINT_EVERY", "10")];
    let off = off_host.to_str().expect("utf-8");
    let (ok, out) = verify_with(dir.path(), &["--witness", off, "--require-witness"], &every);
    assert!(ok, "{out}");
    // The off-host copy lost its notes (only the key remains): the database's own
    // checkpoints do not vouch when the witness is required.
    for entry in std::fs::read_dir(&off_host).expect("copy") {
        let path = entry.expect("entry").path();
        if path.extension().is_some_and(|e| e == "note") {
            std::fs::remove_file(path).expect("remove");
        }
    }
    let (ok, out) = verify_with(dir.path(), &["--witness", off], &every);
    assert!(
        ok,
        "database checkpoints suffice unless the witness is required: {out}"
    );
    let (ok, out) = verify_with(dir.path(), &["--witness", off, "--require-witness"], &every);
    assert!(!ok, "{out}");
    assert!(out.contains("witness checkpoint"), "{out}");
}
