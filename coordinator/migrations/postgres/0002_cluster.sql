-- Leadership (ADR 0018): as coordinator/migrations/sqlite/0010_cluster.sql.

CREATE TABLE leader_lease (
    id           BIGINT PRIMARY KEY CHECK (id = 1),
    holder       TEXT COLLATE "C",
    epoch        BIGINT NOT NULL,
    acquired_at  BIGINT NOT NULL,
    expires_at   BIGINT NOT NULL
);
INSERT INTO leader_lease (id, holder, epoch, acquired_at, expires_at) VALUES (1, NULL, 0, 0, 0);

CREATE TABLE leader_epochs (
    epoch        BIGINT PRIMARY KEY,
    holder       TEXT COLLATE "C" NOT NULL,
    acquired_at  BIGINT NOT NULL,
    -- Until when this epoch's lease ran (or runs): renewals move it, a
    -- release ends it. Consecutive epochs never overlap.
    expires_at   BIGINT NOT NULL
);

CREATE TABLE replicas (
    id          TEXT COLLATE "C" PRIMARY KEY,
    hostname    TEXT COLLATE "C" NOT NULL,
    http_addr   TEXT COLLATE "C" NOT NULL,
    grpc_addr   TEXT COLLATE "C" NOT NULL,
    started_at  BIGINT NOT NULL,
    last_seen   BIGINT NOT NULL
);

-- As in coordinator/migrations/sqlite/0010_cluster.sql.
CREATE TABLE webhook_inbox (
    id           BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    received_at  BIGINT NOT NULL,
    body         BYTEA NOT NULL
);
