-- Pipelines with immutable revisions, ingest keys bound to a pipeline source, and the fleet of
-- data-plane nodes. Every change to what a data plane receives bumps tenants.config_version.
CREATE TABLE pipelines (
    id         TEXT PRIMARY KEY,
    tenant_id  TEXT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    name       TEXT NOT NULL,
    revision   BIGINT NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    UNIQUE (tenant_id, name)
);

CREATE TABLE pipeline_revisions (
    pipeline_id    TEXT NOT NULL REFERENCES pipelines(id) ON DELETE CASCADE,
    revision       BIGINT NOT NULL,
    spec           TEXT NOT NULL,
    config_version BIGINT NOT NULL,
    created_at     BIGINT NOT NULL,
    created_by     TEXT NOT NULL,
    PRIMARY KEY (pipeline_id, revision)
);

-- Ingest keys: the source they write to, and the SHA-256 a data plane verifies them with
-- (the pepper never leaves the control plane).
ALTER TABLE api_keys ADD COLUMN pipeline_id TEXT;
ALTER TABLE api_keys ADD COLUMN source TEXT;
ALTER TABLE api_keys ADD COLUMN ingest_sha256 BLOB;

CREATE TABLE nodes (
    tenant_id      TEXT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    id             TEXT NOT NULL,
    key_id         TEXT NOT NULL,
    name           TEXT NOT NULL,
    agent_version  TEXT NOT NULL,
    roles          TEXT NOT NULL,
    connected      BIGINT NOT NULL,
    applied_version BIGINT NOT NULL,
    nacked_version BIGINT,
    last_error     TEXT,
    counters       TEXT NOT NULL,
    first_seen_at  BIGINT NOT NULL,
    last_seen_at   BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, id)
);
