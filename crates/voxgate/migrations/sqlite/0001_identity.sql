-- Accounts, API keys (digests only), and the audit events of identity changes.
CREATE TABLE accounts (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    contact TEXT,
    tier TEXT NOT NULL,
    active INTEGER NOT NULL,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL
);

CREATE TABLE api_keys (
    keyid TEXT PRIMARY KEY,
    account_id TEXT NOT NULL REFERENCES accounts(id),
    name TEXT NOT NULL,
    digest_version INTEGER NOT NULL,
    digest BLOB NOT NULL,
    tier TEXT,
    scopes TEXT,
    created_at INTEGER NOT NULL,
    expires_at INTEGER,
    revoked_at INTEGER,
    grace_until INTEGER,
    replaced_by TEXT,
    request_count INTEGER NOT NULL DEFAULT 0,
    last_used_at INTEGER,
    last_ip TEXT
);
CREATE INDEX api_keys_account ON api_keys(account_id);

CREATE TABLE audit_events (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    at INTEGER NOT NULL,
    kind TEXT NOT NULL,
    actor TEXT,
    account_id TEXT,
    subject TEXT,
    source TEXT,
    detail TEXT NOT NULL
);
