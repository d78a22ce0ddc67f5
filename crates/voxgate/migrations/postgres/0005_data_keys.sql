-- Per-account data-key salts: an account's sealed objects need its salt and the master key
-- (which never enters the database); deleting the salt shreds them, backups included.
CREATE TABLE account_data_keys (
    account_id TEXT PRIMARY KEY,
    salt TEXT NOT NULL,
    created_at BIGINT NOT NULL
);
