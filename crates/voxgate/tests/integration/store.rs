//! The store contract: one story, run against SQLite and against the machine's real
//! PostgreSQL (a missing PostgreSQL is a failure, not a skip).

use std::sync::Arc;

use voxgate::data::store::{
    Account, AuditRecord, HoldProgress, HoldTag, KeyRecord, PostgresStore, QuotaAsk, QuotaCell,
    SqliteStore, Store, StoreError, now,
};

/// The PostgreSQL server the suite uses; `TEST_POSTGRES_URL` overrides it.
#[allow(
    clippy::disallowed_methods,
    reason = "test harness configuration, not server config"
)]
fn postgres_admin_url() -> String {
    std::env::var("TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

/// A fresh PostgreSQL database for one test, dropped by the returned guard's owner.
pub struct PgDatabase {
    pub url: String,
    name: String,
}

impl PgDatabase {
    pub async fn create() -> Self {
        use sqlx::Connection as _;
        let admin = postgres_admin_url();
        let name = format!("voxgate_test_{}", uuid::Uuid::new_v4().simple());
        let mut conn = sqlx::PgConnection::connect(&admin).await.expect(
            "PostgreSQL must be running on 127.0.0.1:5432 (scripts/test and .ci/run start it)",
        );
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&mut conn)
            .await
            .expect("create database");
        let base = admin
            .rsplit_once('/')
            .map_or(admin.as_str(), |(b, _)| b)
            .to_owned();
        Self {
            url: format!("{base}/{name}"),
            name,
        }
    }

    pub async fn drop_now(self) {
        use sqlx::Connection as _;
        let mut conn = sqlx::PgConnection::connect(&postgres_admin_url())
            .await
            .expect("connect");
        let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
            "DROP DATABASE IF EXISTS {} WITH (FORCE)",
            self.name
        )))
        .execute(&mut conn)
        .await;
    }
}

fn account(id: &str) -> Account {
    Account {
        id: id.into(),
        name: "Ada".into(),
        contact: Some("ada@example.org".into()),
        tier: "basic".into(),
        active: true,
        created_at: now(),
        updated_at: now(),
    }
}

fn key(keyid: &str, account_id: &str) -> KeyRecord {
    KeyRecord {
        keyid: keyid.into(),
        account_id: account_id.into(),
        name: "laptop".into(),
        digest_version: 1,
        digest: vec![7; 32],
        tier: None,
        scopes: Some("speech models.read".into()),
        created_at: now(),
        expires_at: Some(now() + 3600),
        revoked_at: None,
        grace_until: None,
        replaced_by: None,
        request_count: 0,
        last_used_at: None,
        last_ip: None,
        origins: None,
    }
}

async fn story(store: Arc<dyn Store>) {
    // `open`/`connect` do not migrate; `migrate` is idempotent.
    store.migrate().await.expect("migrate");
    store.migrate().await.expect("migrations are idempotent");

    // Accounts.
    let a = account("acct_a");
    store.create_account(&a).await.expect("create");
    assert!(matches!(
        store.create_account(&a).await,
        Err(StoreError::Conflict)
    ));
    assert_eq!(store.account("acct_a").await.expect("get"), Some(a));
    assert_eq!(store.account("acct_missing").await.expect("get"), None);
    store
        .create_account(&account("acct_b"))
        .await
        .expect("create");
    let ids: Vec<String> = store
        .accounts()
        .await
        .expect("list")
        .into_iter()
        .map(|a| a.id)
        .collect();
    assert_eq!(ids.len(), 2);

    // Keys: one indexed lookup returns key and account.
    let k1 = key("k1", "acct_a");
    store.create_key(&k1).await.expect("create key");
    assert!(matches!(
        store.create_key(&k1).await,
        Err(StoreError::Conflict)
    ));
    let (found, owner) = store
        .key_with_account("k1")
        .await
        .expect("lookup")
        .expect("found");
    assert_eq!(found, k1);
    assert_eq!(owner.id, "acct_a");
    assert!(
        store
            .key_with_account("nope")
            .await
            .expect("lookup")
            .is_none()
    );
    store
        .create_key(&key("k2", "acct_b"))
        .await
        .expect("create key");
    assert_eq!(store.keys(Some("acct_a")).await.expect("keys").len(), 1);
    assert_eq!(store.keys(None).await.expect("keys").len(), 2);
    assert!(
        store.create_key(&key("k9", "acct_missing")).await.is_err(),
        "foreign key enforced"
    );

    // Usage.
    store
        .record_key_use("k1", 1, 1_000, Some("203.0.113.0"))
        .await
        .expect("use");
    store
        .record_key_use("k1", 2, 2_000, Some("203.0.113.0"))
        .await
        .expect("use");
    let (used, _) = store
        .key_with_account("k1")
        .await
        .expect("lookup")
        .expect("found");
    assert_eq!(
        (
            used.request_count,
            used.last_used_at,
            used.last_ip.as_deref()
        ),
        (3, Some(2_000), Some("203.0.113.0"))
    );

    // Revocation.
    assert!(store.revoke_key("k1", 5_000).await.expect("revoke"));
    assert!(!store.revoke_key("k1", 6_000).await.expect("revoke twice"));
    assert_eq!(
        store
            .key_with_account("k1")
            .await
            .expect("lookup")
            .expect("found")
            .0
            .revoked_at,
        Some(5_000)
    );

    // Rotation is one transaction.
    let k3 = key("k3", "acct_b");
    assert!(store.rotate_key("k2", &k3, 9_000).await.expect("rotate"));
    let (old, _) = store
        .key_with_account("k2")
        .await
        .expect("lookup")
        .expect("found");
    assert_eq!(
        (old.grace_until, old.replaced_by.as_deref()),
        (Some(9_000), Some("k3"))
    );
    assert!(
        store
            .key_with_account("k3")
            .await
            .expect("lookup")
            .is_some()
    );
    assert!(
        !store
            .rotate_key("k2", &key("k4", "acct_b"), 9_000)
            .await
            .expect("rotate twice"),
        "already rotated"
    );
    assert!(
        !store
            .rotate_key("k1", &key("k5", "acct_a"), 9_000)
            .await
            .expect("rotate revoked"),
        "revoked keys do not rotate"
    );
    assert!(
        !store
            .rotate_key("missing", &key("k6", "acct_a"), 9_000)
            .await
            .expect("rotate missing")
    );
    for absent in ["k4", "k5", "k6"] {
        assert!(
            store
                .key_with_account(absent)
                .await
                .expect("lookup")
                .is_none(),
            "{absent} must not be stored"
        );
    }
    // A failing insert rolls the update back.
    assert!(
        store
            .rotate_key("k3", &key("k2", "acct_b"), 9_000)
            .await
            .is_err(),
        "duplicate new key id"
    );
    let (k3_after, _) = store
        .key_with_account("k3")
        .await
        .expect("lookup")
        .expect("found");
    assert_eq!(
        (k3_after.grace_until, k3_after.replaced_by),
        (None, None),
        "rolled back"
    );

    // Deactivation shows through the key lookup.
    assert!(
        store
            .set_account_active("acct_b", false, 7_000)
            .await
            .expect("deactivate")
    );
    assert!(
        !store
            .set_account_active("acct_missing", false, 7_000)
            .await
            .expect("deactivate")
    );
    let (_, owner) = store
        .key_with_account("k3")
        .await
        .expect("lookup")
        .expect("found");
    assert!(!owner.active);

    // Quotas: reservations never overspend; settling records actual use; refunds free it;
    // each reservation has a holder and is settled exactly once.
    let cell = |window_start| QuotaCell {
        subject: "acct_a",
        metric: "characters",
        window_start,
    };
    let tag = |id| HoldTag {
        id,
        instance: "i1",
        lease_secs: 60,
    };
    assert!(
        store
            .reserve_quota(&tag("h1"), &cell(0), 60, 100)
            .await
            .expect("reserve")
    );
    assert!(
        !store
            .reserve_quota(&tag("h2"), &cell(0), 41, 100)
            .await
            .expect("reserve"),
        "60 + 41 > 100"
    );
    assert!(
        store
            .reserve_quota(&tag("h2"), &cell(0), 40, 100)
            .await
            .expect("reserve")
    );
    assert_eq!(
        store
            .quota_usage("acct_a", "characters", 0)
            .await
            .expect("usage"),
        (0, 100)
    );
    let holds = store.quota_holds().await.expect("holds");
    assert_eq!(
        holds
            .iter()
            .map(|h| (h.id.as_str(), h.amount))
            .collect::<Vec<_>>(),
        [("h1", 60), ("h2", 40)],
        "the refused reservation left no holder"
    );
    assert!(
        store
            .settle_quota("h1", &cell(0), 55)
            .await
            .expect("settle")
    );
    assert!(
        !store
            .settle_quota("h1", &cell(0), 55)
            .await
            .expect("settle"),
        "a second settlement of the same hold changes nothing"
    );
    store
        .release_quota("h2", &cell(0), 15)
        .await
        .expect("release");
    assert!(
        store
            .settle_quota("h2", &cell(0), 900)
            .await
            .expect("settle")
    );
    assert_eq!(
        store
            .quota_usage("acct_a", "characters", 0)
            .await
            .expect("usage"),
        (55 + 25, 0),
        "never charged more than was still reserved"
    );
    assert!(store.quota_holds().await.expect("holds").is_empty());
    assert!(
        store
            .reserve_quota(&tag("h3"), &cell(86_400), 100, 100)
            .await
            .expect("reserve"),
        "a new window"
    );
    // A holder that renews keeps its hold; one whose deadline passed (a lease of -5 s: it
    // expired 5 s ago) is settled at what it last reported, by anyone, once.
    store
        .renew_holds(
            60,
            &[HoldProgress {
                id: "h3".into(),
                metric: "characters",
                delivered: 30,
            }],
        )
        .await
        .expect("renew");
    assert!(
        store
            .reconcile_holds(0)
            .await
            .expect("reconcile")
            .is_empty()
    );
    store
        .renew_holds(
            -5,
            &[HoldProgress {
                id: "h3".into(),
                metric: "characters",
                delivered: 40,
            }],
        )
        .await
        .expect("renew");
    assert!(
        store
            .reconcile_holds(60)
            .await
            .expect("reconcile")
            .is_empty(),
        "within the grace period"
    );
    let settled = store.reconcile_holds(0).await.expect("reconcile");
    assert_eq!(settled.len(), 1);
    assert_eq!((settled[0].amount, settled[0].delivered), (100, 40));
    assert_eq!(
        store
            .quota_usage("acct_a", "characters", 86_400)
            .await
            .expect("usage"),
        (40, 0)
    );
    assert!(
        store
            .reconcile_holds(0)
            .await
            .expect("reconcile")
            .is_empty()
    );
    assert!(
        !store
            .settle_quota("h3", &cell(86_400), 100)
            .await
            .expect("settle"),
        "the holder's late settlement finds its hold reconciled"
    );

    // A request's reservations on several quotas are one transaction: all or none, each
    // window's usage after it reported; its settlement takes every row of the hold at once.
    let chars = QuotaCell {
        subject: "acct_b",
        metric: "characters",
        window_start: 0,
    };
    let audio = QuotaCell {
        subject: "acct_b",
        metric: "audio_seconds",
        window_start: 0,
    };
    let ask = |cell, amount, limit| QuotaAsk {
        cell,
        amount,
        limit,
    };
    assert_eq!(
        store
            .reserve_quotas(&tag("m1"), &[ask(chars, 30, 100), ask(audio, 8, 10)])
            .await
            .expect("reserve"),
        Ok(vec![(0, 30), (0, 8)])
    );
    assert_eq!(
        store
            .reserve_quotas(&tag("m5"), &[ask(chars, 5, 100), ask(audio, 1, 10)])
            .await
            .expect("reserve"),
        Ok(vec![(0, 35), (0, 9)]),
        "the windows as they are after this reservation"
    );
    assert_eq!(
        store
            .reserve_quotas(&tag("m2"), &[ask(chars, 30, 100), ask(audio, 3, 10)])
            .await
            .expect("reserve"),
        Err(1),
        "8 + 3 > 10 audio seconds"
    );
    assert_eq!(
        store
            .quota_usage("acct_b", "characters", 0)
            .await
            .expect("usage"),
        (0, 35),
        "the refused request reserved no characters either"
    );
    assert_eq!(
        store
            .reserve_quotas(&tag("m3"), &[ask(chars, 200, 100)])
            .await
            .expect("reserve"),
        Err(0),
        "more than the limit, even in an empty window"
    );
    assert!(
        !store
            .quota_holds()
            .await
            .expect("holds")
            .iter()
            .any(|h| h.id != "m1" && h.id != "m5"),
        "refused requests left no holder"
    );
    let actual = |metric: &str| if metric == "characters" { 25 } else { 900 };
    assert_eq!(store.settle_hold("m1", &actual).await.expect("settle"), 2);
    assert_eq!(
        store.settle_hold("m1", &actual).await.expect("settle"),
        0,
        "a second settlement of the same hold changes nothing"
    );
    assert_eq!(store.settle_hold("m5", &actual).await.expect("settle"), 2);
    assert_eq!(
        (
            store
                .quota_usage("acct_b", "characters", 0)
                .await
                .expect("usage"),
            store
                .quota_usage("acct_b", "audio_seconds", 0)
                .await
                .expect("usage")
        ),
        ((25 + 5, 0), (8 + 1, 0)),
        "charged the actual use, never more than was reserved"
    );
    assert!(store.quota_holds().await.expect("holds").is_empty());
    // Two quotas on one counter (a minute's and a day's window starting at the same
    // second): each counts the request against its own limit; the hold has one row, and
    // its settlement charges at most what that row holds.
    assert_eq!(
        store
            .reserve_quotas(&tag("m4"), &[ask(chars, 10, 100), ask(chars, 10, 60)])
            .await
            .expect("reserve"),
        Ok(vec![(30, 10), (30, 20)])
    );
    assert_eq!(store.settle_hold("m4", &actual).await.expect("settle"), 1);
    assert_eq!(
        store
            .quota_usage("acct_b", "characters", 0)
            .await
            .expect("usage"),
        (30 + 20, 0)
    );

    // Audit events take dense log positions and come back newest first.
    let leaf = |r: &AuditRecord| format!("leaf-{}-{}", r.idx.unwrap_or(-1), r.kind);
    for (position, kind) in ["one", "two", "three"].into_iter().enumerate() {
        let idx = store
            .append_audit(
                &AuditRecord {
                    seq: 0,
                    at: now(),
                    kind: kind.into(),
                    actor: Some("cli".into()),
                    account_id: None,
                    subject: Some("k1".into()),
                    source: None,
                    detail: "{}".into(),
                    idx: None,
                    leaf_hash: None,
                },
                leaf,
            )
            .await
            .expect("audit");
        assert_eq!(idx, position as i64);
    }
    let log = store.audit_log().await.expect("log");
    assert_eq!(
        log.iter()
            .map(|r| (r.idx, r.leaf_hash.clone()))
            .collect::<Vec<_>>(),
        [
            (Some(0), Some("leaf-0-one".into())),
            (Some(1), Some("leaf-1-two".into())),
            (Some(2), Some("leaf-2-three".into()))
        ]
    );
    store
        .add_checkpoint(3, now(), "note 3")
        .await
        .expect("checkpoint");
    store
        .add_checkpoint(3, now(), "another")
        .await
        .expect("duplicate ignored");
    assert_eq!(
        store.checkpoints().await.expect("checkpoints"),
        [(3, "note 3".to_owned())]
    );
    let events = store.audit_events(2).await.expect("events");
    assert_eq!(
        events.iter().map(|e| e.kind.as_str()).collect::<Vec<_>>(),
        ["three", "two"]
    );
    assert!(events[0].seq > events[1].seq);

    // Pages: by account (its own events and its keys'), by kind, by time, both directions.
    store
        .append_audit(
            &AuditRecord {
                seq: 0,
                at: now(),
                kind: "four".into(),
                actor: None,
                account_id: Some("acct_b".into()),
                subject: Some("acct_b".into()),
                source: None,
                detail: "{}".into(),
                idx: None,
                leaf_hash: None,
            },
            leaf,
        )
        .await
        .expect("audit");
    let kinds = |page: &[AuditRecord]| page.iter().map(|e| e.kind.clone()).collect::<Vec<_>>();
    let mut filter = voxgate::data::store::AuditFilter {
        account_id: Some("acct_a".into()),
        limit: 2,
        ..Default::default()
    };
    let first = store.audit_page(&filter).await.expect("page");
    assert_eq!(kinds(&first), ["one", "two"], "acct_a's key k1");
    filter.cursor = first.last().map(|e| e.seq);
    assert_eq!(
        kinds(&store.audit_page(&filter).await.expect("page")),
        ["three"]
    );
    let by_kind = voxgate::data::store::AuditFilter {
        kind: Some("two".into()),
        limit: 10,
        ..Default::default()
    };
    assert_eq!(
        kinds(&store.audit_page(&by_kind).await.expect("page")),
        ["two"]
    );
    let newest = voxgate::data::store::AuditFilter {
        newest_first: true,
        limit: 2,
        ..Default::default()
    };
    assert_eq!(
        kinds(&store.audit_page(&newest).await.expect("page")),
        ["four", "three"]
    );
    let later = voxgate::data::store::AuditFilter {
        since: Some(now() + 3600),
        limit: 10,
        ..Default::default()
    };
    assert!(store.audit_page(&later).await.expect("page").is_empty());

    clone_records(store.as_ref()).await;
    web_sessions(store.as_ref()).await;
    quota_history(store.as_ref()).await;
}

/// Browser sessions: found by digest only, their last use only moves forward, sign-out
/// deletes one, and the purge takes those past their end or idle since the bound.
async fn web_sessions(store: &dyn Store) {
    use voxgate::data::store::WebSessionRecord;
    let session = |digest: u8, expires_at: i64, seen_at: i64| WebSessionRecord {
        digest: vec![digest; 32],
        keyid: "k1".into(),
        surface: "console".into(),
        created_at: 100,
        expires_at,
        seen_at,
    };
    let live = session(1, 10_000, 500);
    store.insert_web_session(&live).await.expect("insert");
    store
        .insert_web_session(&session(2, 400, 390))
        .await
        .expect("insert");
    store
        .insert_web_session(&session(3, 10_000, 200))
        .await
        .expect("insert");
    assert_eq!(
        store.web_session(&[1; 32]).await.expect("read"),
        Some(live.clone())
    );
    assert_eq!(store.web_session(&[9; 32]).await.expect("read"), None);
    store.touch_web_session(&[1; 32], 450).await.expect("touch");
    assert_eq!(
        store
            .web_session(&[1; 32])
            .await
            .expect("read")
            .map(|s| s.seen_at),
        Some(500),
        "a late touch never moves the last use back"
    );
    store.touch_web_session(&[1; 32], 600).await.expect("touch");
    // At 450 with idle sessions cut at 300: 2 is past its end, 3 idle since 200.
    assert_eq!(store.purge_web_sessions(450, 300).await.expect("purge"), 2);
    assert_eq!(
        store
            .web_session(&[1; 32])
            .await
            .expect("read")
            .map(|s| s.seen_at),
        Some(600)
    );
    assert!(store.delete_web_session(&[1; 32]).await.expect("delete"));
    assert!(!store.delete_web_session(&[1; 32]).await.expect("delete"));
    assert_eq!(store.web_session(&[1; 32]).await.expect("read"), None);
    // Erasing an account deletes its keys' sessions, and only those.
    store
        .insert_web_session(&session(4, 10_000, 500))
        .await
        .expect("insert");
    let other = WebSessionRecord {
        keyid: "k2".into(),
        ..session(5, 10_000, 500)
    };
    store.insert_web_session(&other).await.expect("insert");
    assert!(store.erase_account("acct_a", 600).await.expect("erase"));
    assert_eq!(store.web_session(&[4; 32]).await.expect("read"), None);
    assert_eq!(
        store.web_session(&[5; 32]).await.expect("read"),
        Some(other)
    );
}

/// A subject's counters over time, oldest first, from `since` on.
async fn quota_history(store: &dyn Store) {
    let subject = "acct:history";
    for (window, amount) in [(86_400, 5), (0, 3), (172_800, 7)] {
        let asks = [QuotaAsk {
            cell: QuotaCell {
                subject,
                metric: "characters",
                window_start: window,
            },
            amount,
            limit: 100,
        }];
        let id = format!("history{window}");
        let tag = HoldTag {
            id: &id,
            instance: "i",
            lease_secs: 60,
        };
        let granted = store.reserve_quotas(&tag, &asks).await.expect("reserve");
        assert!(granted.is_ok(), "{granted:?}");
    }
    let history = store.quota_history(subject, 86_400).await.expect("history");
    let windows: Vec<(i64, i64)> = history
        .iter()
        .map(|w| (w.window_start, w.reserved))
        .collect();
    assert_eq!(windows, vec![(86_400, 5), (172_800, 7)]);
    assert!(
        store
            .quota_history("acct:nobody", 0)
            .await
            .expect("history")
            .is_empty()
    );
}

/// The clone rows: a claim is a lock one caller holds, a stale one is taken over (naming the
/// token it replaced), only the holder records the clone and only while the voice exists,
/// deletions touch only the row they were read as, and clones of deleted voices are orphans.
/// Ages are the database's clock: a negative bound makes every claim stale.
async fn clone_records(store: &dyn Store) {
    use voxgate::data::store::{CloneClaim, VoiceRecord};
    let voice = VoiceRecord {
        id: "voice_clonestory".into(),
        account_id: "acct_a".into(),
        name: "n".into(),
        duration_ms: 6000,
        created_at: now(),
        sealed: vec![2, 0],
    };
    assert!(store.insert_voice(&voice, 100).await.expect("voice"));
    let claim = |engine: &'static str, token: &'static str, stale_secs: i64| {
        store.claim_clone(&voice.id, engine, "acct_a", token, stale_secs)
    };
    const FRESH: i64 = 3600;
    const ALL_STALE: i64 = -10;
    assert_eq!(
        claim("eleven", "t1", FRESH).await.expect("claim"),
        CloneClaim::Claimed { replaced: None }
    );
    assert_eq!(
        claim("eleven", "t2", FRESH).await.expect("claim"),
        CloneClaim::Busy
    );
    assert!(
        store
            .renew_clone_claim(&voice.id, "eleven", "t1")
            .await
            .expect("renew")
    );
    assert!(
        !store
            .renew_clone_claim(&voice.id, "eleven", "t2")
            .await
            .expect("renew")
    );
    // t1's claim is stale for a caller with a negative bound: t2 takes it over, learns whose
    // it was, and t1 (which finished late) can no longer record its clone.
    assert_eq!(
        claim("eleven", "t2", ALL_STALE).await.expect("claim"),
        CloneClaim::Claimed {
            replaced: Some("t1".into())
        }
    );
    assert!(
        !store
            .seal_clone(&voice.id, "eleven", "t1", b"late")
            .await
            .expect("seal")
    );
    assert!(
        store
            .seal_clone(&voice.id, "eleven", "t2", b"made")
            .await
            .expect("seal")
    );
    assert_eq!(
        claim("eleven", "t3", ALL_STALE).await.expect("claim"),
        CloneClaim::Made(b"made".to_vec()),
        "a recorded clone is never taken over"
    );
    // Another engine's claim, given up after a failure: no row remains.
    assert_eq!(
        claim("other", "t4", FRESH).await.expect("claim"),
        CloneClaim::Claimed { replaced: None }
    );
    store
        .release_clone(&voice.id, "other", "t4")
        .await
        .expect("release");
    // A third engine's claim stays unfinished.
    assert_eq!(
        claim("third", "t5", FRESH).await.expect("claim"),
        CloneClaim::Claimed { replaced: None }
    );
    let rows = store.clones_of(&voice.id, FRESH).await.expect("rows");
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[0].sealed.as_deref(), Some(&b"made"[..]));
    assert_eq!(
        (rows[1].claim.as_deref(), rows[1].stale),
        (Some("t5"), false)
    );
    assert_eq!(
        store
            .clones_of_account("acct_a", FRESH)
            .await
            .expect("rows"),
        rows
    );
    assert!(
        store
            .orphan_clones(ALL_STALE)
            .await
            .expect("orphans")
            .is_empty(),
        "the voice lives"
    );
    // A deletion only removes the row it read.
    assert!(
        !store
            .delete_clone_record(&voice.id, "eleven", Some(b"other"), None)
            .await
            .expect("delete")
    );
    assert!(
        store
            .delete_voice("acct_a", &voice.id)
            .await
            .expect("delete")
    );
    // With the voice gone, a maker can no longer record a clone.
    assert!(
        !store
            .seal_clone(&voice.id, "third", "t5", b"late")
            .await
            .expect("seal")
    );
    let orphans = store.orphan_clones(FRESH).await.expect("orphans");
    assert_eq!(
        orphans.len(),
        1,
        "a made clone is an orphan at once, a young claim is not"
    );
    assert_eq!(orphans[0].engine_id, "eleven");
    assert_eq!(
        store.orphan_clones(ALL_STALE).await.expect("orphans").len(),
        2,
        "a stale claim is"
    );
    assert!(
        store
            .delete_clone_record(&voice.id, "eleven", Some(b"made"), None)
            .await
            .expect("delete")
    );
    assert!(
        store
            .delete_clone_record(&voice.id, "third", None, Some("t5"))
            .await
            .expect("delete")
    );
    assert!(
        store
            .clones_of(&voice.id, FRESH)
            .await
            .expect("rows")
            .is_empty()
    );
}

#[tokio::test]
async fn sqlite_store_keeps_the_contract() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = SqliteStore::open(&dir.path().join("test.db"))
        .await
        .expect("open");
    story(Arc::new(store)).await;
}

/// Instances starting together against one PostgreSQL migrate one after the other.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_postgres_migrations_do_not_collide() {
    let db = PgDatabase::create().await;
    let stores = futures::future::join_all((0..4).map(|_| PostgresStore::connect(&db.url))).await;
    let migrations = stores
        .iter()
        .map(|s| s.as_ref().expect("connect").migrate());
    for result in futures::future::join_all(migrations).await {
        result.expect("every concurrent migration succeeds");
    }
    db.drop_now().await;
}

#[tokio::test]
async fn postgres_store_keeps_the_contract() {
    let db = PgDatabase::create().await;
    let store = PostgresStore::connect(&db.url).await.expect("connect");
    story(Arc::new(store)).await;
    db.drop_now().await;
}

/// A new hold of `instance` reserving (metric, amount, limit) on `subject`'s counters of
/// window 0: its id when granted.
async fn reserve_new(
    store: &dyn Store,
    subject: &str,
    instance: &str,
    asks: &[(&'static str, i64, i64)],
) -> Option<String> {
    let id = uuid::Uuid::new_v4().simple().to_string();
    let tag = HoldTag {
        id: &id,
        instance,
        lease_secs: 60,
    };
    let asks: Vec<QuotaAsk<'_>> = asks
        .iter()
        .map(|&(metric, amount, limit)| QuotaAsk {
            cell: QuotaCell {
                subject,
                metric,
                window_start: 0,
            },
            amount,
            limit,
        })
        .collect();
    let granted = store.reserve_quotas(&tag, &asks).await.expect("reserve");
    granted.is_ok().then_some(id)
}

/// Fifty requests at once, each reserving on two quotas (listed in either order, as two
/// tiers might): the tighter one admits exactly nine, and the other holds exactly theirs.
async fn parallel_reservations(store: Arc<dyn Store>) {
    store.migrate().await.expect("migrate");
    let subject = format!("acct_{}", uuid::Uuid::new_v4().simple());
    let attempts = (0..50).map(|n| {
        let store = Arc::clone(&store);
        let subject = subject.clone();
        tokio::spawn(async move {
            let mut asks = [("characters", 10, 95), ("audio_seconds", 7, 1000)];
            if n % 2 == 1 {
                asks.reverse();
            }
            reserve_new(&*store, &subject, "i1", &asks).await
        })
    });
    let granted: Vec<String> = futures::future::join_all(attempts)
        .await
        .into_iter()
        .filter_map(|r| r.expect("join"))
        .collect();
    assert_eq!(granted.len(), 9, "exactly floor(95 / 10) reservations");
    let usage = |metric| store.quota_usage(&subject, metric, 0);
    assert_eq!(usage("characters").await.expect("usage"), (0, 90));
    assert_eq!(
        usage("audio_seconds").await.expect("usage"),
        (0, 63),
        "refused requests reserved nothing on the looser quota"
    );
    assert_eq!(store.quota_holds().await.expect("holds").len(), 18);
    // Their settlements at once, while refused requests try again: no deadlock, each
    // charged once.
    let settlements = granted.into_iter().map(|id| {
        let store = Arc::clone(&store);
        tokio::spawn(async move {
            let actual = |metric: &str| if metric == "characters" { 4 } else { 5 };
            store.settle_hold(&id, &actual).await.expect("settle")
        })
    });
    let retries = (0..9).map(|_| {
        let store = Arc::clone(&store);
        let subject = subject.clone();
        tokio::spawn(async move {
            let asks = [("audio_seconds", 1, 1000), ("characters", 1, 99)];
            reserve_new(&*store, &subject, "i2", &asks).await.is_some()
        })
    });
    let (settled, retried) = futures::future::join(
        futures::future::join_all(settlements),
        futures::future::join_all(retries),
    )
    .await;
    assert!(settled.into_iter().all(|n| n.expect("join") == 2));
    assert!(
        retried.into_iter().all(|r| r.expect("join")),
        "room for one character each (90 + 9 <= 99), settled or not"
    );
    assert_eq!(usage("characters").await.expect("usage"), (36, 9));
    assert_eq!(usage("audio_seconds").await.expect("usage"), (45, 9));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parallel_quota_reservations_never_overspend_on_sqlite() {
    let dir = tempfile::tempdir().expect("tempdir");
    parallel_reservations(Arc::new(
        SqliteStore::open(&dir.path().join("q.db"))
            .await
            .expect("open"),
    ))
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parallel_quota_reservations_never_overspend_on_postgres() {
    let db = PgDatabase::create().await;
    parallel_reservations(Arc::new(
        PostgresStore::connect(&db.url).await.expect("connect"),
    ))
    .await;
    db.drop_now().await;
}
