-- Dashboard sessions. The cookie carries a random 256-bit id; only its
-- SHA-256 is stored. Each session is bound to the admin token it was
-- created from and dies with it (revocation, expiry, deletion).
CREATE TABLE admin_sessions (
    id_hash     BLOB PRIMARY KEY,
    token_id    TEXT NOT NULL REFERENCES admin_tokens(id) ON DELETE CASCADE,
    created_at  INTEGER NOT NULL,
    expires_at  INTEGER NOT NULL
);
CREATE INDEX admin_sessions_token ON admin_sessions(token_id);
CREATE INDEX admin_sessions_expiry ON admin_sessions(expires_at);
