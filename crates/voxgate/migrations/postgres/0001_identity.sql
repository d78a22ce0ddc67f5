-- Accounts, API keys (digests only), and the audit events of identity changes.
CREATE TABLE accounts (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    contact TEXT,
    tier TEXT NOT NULL,
    active BOOLEAN NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);

CREATE TABLE api_keys (
    keyid TEXT PRIMARY KEY,
    account_id TEXT NOT NULL REFERENCES accounts(id),
    name TEXT NOT NULL,
    digest_version SMALLINT NOT NULL,
    digest BYTEA NOT NULL,
    tier TEXT,
    scopes TEXT,
    created_at BIGINT NOT NULL,
    expires_at BIGINT,
    revoked_at BIGINT,
    grace_until BIGINT,
    replaced_by TEXT,
    request_count BIGINT NOT NULL DEFAULT 0,
    last_used_at BIGINT,
    last_ip TEXT
);
CREATE INDEX api_keys_account ON api_keys(account_id);

CREATE TABLE audit_events (
    seq BIGSERIAL PRIMARY KEY,
    at BIGINT NOT NULL,
    kind TEXT NOT NULL,
    actor TEXT,
    account_id TEXT,
    subject TEXT,
    source TEXT,
    detail TEXT NOT NULL
);
