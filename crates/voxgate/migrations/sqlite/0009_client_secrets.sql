-- Ephemeral client secrets for realtime sessions (POST /v1/realtime/client_secrets): only
-- the secret's keyed digest is kept. A secret works while it is unexpired and its minting
-- key works; `session` is the validated session configuration it opens (JSON).
CREATE TABLE client_secrets (
    id TEXT PRIMARY KEY,
    digest BLOB NOT NULL,
    keyid TEXT NOT NULL REFERENCES api_keys(keyid),
    session TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL
);
CREATE INDEX client_secrets_expiry ON client_secrets(expires_at);
