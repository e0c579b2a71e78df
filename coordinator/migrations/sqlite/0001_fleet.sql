-- Fleet state: agents, their GPUs, join tokens (hashed), revocations and the
-- audit log. Timestamps are Unix milliseconds (UTC).

CREATE TABLE agents (
    id              TEXT PRIMARY KEY,          -- UUID, also in the cert URI SAN
    hostname        TEXT NOT NULL,
    arch            TEXT NOT NULL DEFAULT '',
    state           TEXT NOT NULL,             -- enrolled | ready | unreachable | lost | revoked
    cordoned        INTEGER NOT NULL DEFAULT 0,
    labels          TEXT NOT NULL DEFAULT '{}', -- JSON object
    inventory       TEXT,                      -- JSON, last reported inventory
    load            TEXT,                      -- JSON, last heartbeat (persisted coarsely)
    cert_serial     TEXT NOT NULL,
    cert_not_after  INTEGER NOT NULL,
    token_id        TEXT,
    enrolled_at     INTEGER NOT NULL,
    last_seen       INTEGER,
    revoked_at      INTEGER
);

CREATE TABLE gpus (
    agent_id      TEXT NOT NULL REFERENCES agents(id) ON DELETE CASCADE,
    uuid          TEXT NOT NULL,
    idx           INTEGER NOT NULL,
    vendor        TEXT NOT NULL,
    name          TEXT NOT NULL,
    memory_bytes  INTEGER,
    PRIMARY KEY (agent_id, uuid)
);

CREATE TABLE join_tokens (
    id           TEXT PRIMARY KEY,
    secret_hash  BLOB NOT NULL,               -- SHA-256 of the secret; the secret is never stored
    description  TEXT NOT NULL DEFAULT '',
    labels       TEXT NOT NULL DEFAULT '{}',  -- JSON object, copied onto agents that enroll with it
    created_at   INTEGER NOT NULL,
    expires_at   INTEGER NOT NULL,
    max_uses     INTEGER NOT NULL,
    uses         INTEGER NOT NULL DEFAULT 0,
    revoked_at   INTEGER
);

CREATE TABLE revocations (
    agent_id    TEXT PRIMARY KEY,
    revoked_at  INTEGER NOT NULL,
    actor       TEXT NOT NULL,
    reason      TEXT NOT NULL DEFAULT ''
);

CREATE TABLE events (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    at         INTEGER NOT NULL,
    kind       TEXT NOT NULL,
    actor      TEXT NOT NULL,
    agent_id   TEXT,
    runner_id  TEXT,
    detail     TEXT NOT NULL DEFAULT '{}'
);
CREATE INDEX events_by_agent ON events (agent_id, id);
CREATE INDEX events_by_runner ON events (runner_id, id);
