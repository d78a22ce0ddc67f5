-- Browser sessions of the web console and the playground: a key was presented once at
-- sign-in and exchanged for a random session id held in an HttpOnly cookie. Only the id's
-- keyed digest is kept. A session works while it is within its absolute and idle lifetimes
-- and its key works (the key is resolved again on every request).
CREATE TABLE web_sessions (
    digest BYTEA PRIMARY KEY,
    keyid TEXT NOT NULL,
    surface TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    seen_at BIGINT NOT NULL
);
CREATE INDEX web_sessions_expiry ON web_sessions(expires_at);
CREATE INDEX web_sessions_key ON web_sessions(keyid);
