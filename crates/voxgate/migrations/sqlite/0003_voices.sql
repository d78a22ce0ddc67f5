-- Voice references (cloning inputs). `sealed` is XChaCha20-Poly1305 ciphertext under the
-- owning account's data key; the master key never enters the database.
CREATE TABLE voice_references (
    id TEXT PRIMARY KEY,
    account_id TEXT NOT NULL REFERENCES accounts(id),
    name TEXT NOT NULL,
    duration_ms BIGINT NOT NULL,
    created_at BIGINT NOT NULL,
    sealed BLOB NOT NULL
);
CREATE INDEX voice_references_account ON voice_references (account_id, created_at);
