-- The tamper-evident audit log: each event's dense position in the Merkle tree (from 0) and
-- its leaf hash, and the signed checkpoints of the tree (copies also go to a witness
-- directory outside the database). Events recorded before this migration get positions in
-- the order they were written; their leaf hashes are computed when read.
ALTER TABLE audit_events ADD COLUMN idx INTEGER;
ALTER TABLE audit_events ADD COLUMN leaf_hash TEXT;
UPDATE audit_events SET idx = (SELECT COUNT(*) FROM audit_events AS e2 WHERE e2.seq < audit_events.seq);
CREATE UNIQUE INDEX audit_events_idx ON audit_events(idx);
CREATE TABLE audit_checkpoints (
    size INTEGER PRIMARY KEY,
    at INTEGER NOT NULL,
    note TEXT NOT NULL
);
