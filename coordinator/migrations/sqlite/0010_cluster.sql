-- Leadership (ADR 0018): one lease row whose epoch grows at every change of
-- holder, the log of every epoch, and the replicas that run against this
-- store. Timestamps are Unix milliseconds (UTC).

CREATE TABLE leader_lease (
    id           INTEGER PRIMARY KEY CHECK (id = 1),
    holder       TEXT,
    epoch        INTEGER NOT NULL,
    acquired_at  INTEGER NOT NULL,
    expires_at   INTEGER NOT NULL
);
INSERT INTO leader_lease (id, holder, epoch, acquired_at, expires_at) VALUES (1, NULL, 0, 0, 0);

CREATE TABLE leader_epochs (
    epoch        INTEGER PRIMARY KEY,
    holder       TEXT NOT NULL,
    acquired_at  INTEGER NOT NULL,
    -- Until when this epoch's lease ran (or runs): renewals move it, a
    -- release ends it. Consecutive epochs never overlap.
    expires_at   INTEGER NOT NULL
);

CREATE TABLE replicas (
    id          TEXT PRIMARY KEY,
    hostname    TEXT NOT NULL,
    http_addr   TEXT NOT NULL,
    grpc_addr   TEXT NOT NULL,
    started_at  INTEGER NOT NULL,
    last_seen   INTEGER NOT NULL
);

-- Job Hooks a follower accepted (their secret checked, their body parsed)
-- for the leader to take in: none is lost while there is no leader.
CREATE TABLE webhook_inbox (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    received_at  INTEGER NOT NULL,
    body         BLOB NOT NULL
);
