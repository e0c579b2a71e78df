-- Dashboard sessions of people signed in through single sign-on (OIDC,
-- `admin/oidc/`). Like admin_sessions, only the SHA-256 of the cookie's
-- random id is stored. The person is named by the provider (issuer and
-- `sub`, with a display name); the role was mapped from their groups at
-- sign-in and holds until the session expires or is revoked.
CREATE TABLE person_sessions (
    id_hash     BLOB PRIMARY KEY,
    issuer      TEXT NOT NULL,
    subject     TEXT NOT NULL,
    name        TEXT NOT NULL,
    role        TEXT NOT NULL,
    created_at  INTEGER NOT NULL,
    expires_at  INTEGER NOT NULL
);
CREATE INDEX person_sessions_expiry ON person_sessions(expires_at);
