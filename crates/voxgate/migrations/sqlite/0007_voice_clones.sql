-- The voices remote engines made from stored references (instant voice cloning), one per
-- (stored voice, engine). `sealed` is the engine's voice id, sealed under a key derived from
-- the master key (not the account's: a clone must stay deletable after its account's data
-- key is shredded). While one instance makes the clone, `sealed` is NULL and `claim` holds
-- that instance's random token (the row is its per-voice lock; a claim older than the clone
-- timeout may be taken over). The account id lets an erasure find its clones.
CREATE TABLE voice_clones (
    voice_id TEXT NOT NULL,
    engine_id TEXT NOT NULL,
    account_id TEXT NOT NULL,
    sealed BLOB,
    claim TEXT,
    claimed_at INTEGER NOT NULL,
    PRIMARY KEY (voice_id, engine_id)
);
CREATE INDEX voice_clones_account ON voice_clones (account_id);
