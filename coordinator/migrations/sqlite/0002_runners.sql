-- Every runner AutoGit creates, with its whole lifecycle. Timestamps are Unix
-- milliseconds (UTC). The runner token is never stored.

CREATE TABLE runners (
    id                 TEXT PRIMARY KEY,       -- UUID; also the container label autogit.runner-id
    pool               TEXT NOT NULL,
    agent_id           TEXT NOT NULL,
    gitlab_runner_id   INTEGER,
    state              TEXT NOT NULL,          -- provisioning | starting | idle | busy | stopping | exited | failed | lost
    container_id       TEXT,
    gpus               TEXT NOT NULL DEFAULT '[]', -- JSON array of GPU uuids held
    cpu                REAL NOT NULL DEFAULT 0,
    memory_bytes       INTEGER NOT NULL DEFAULT 0,
    project_id         INTEGER,
    job_id             INTEGER,
    exit_code          INTEGER,
    reason             TEXT,
    log_tail           TEXT,                   -- JSON array of lines, on failure
    created_at         INTEGER NOT NULL,
    started_at         INTEGER,                -- container running
    busy_at            INTEGER,                -- took a job
    finished_at        INTEGER,                -- container exited / failed / lost
    gitlab_deleted_at  INTEGER                 -- GitLab runner deleted
);
CREATE INDEX runners_by_state ON runners (state);
CREATE INDEX runners_by_agent ON runners (agent_id);
