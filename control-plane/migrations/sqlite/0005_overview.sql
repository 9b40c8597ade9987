-- Where clients reach each node, by role (JSON object role -> URL), from its hello.
ALTER TABLE nodes ADD COLUMN urls TEXT NOT NULL DEFAULT '{}';

-- One sample of a node's cumulative counters per minute (JSON object name -> value, with
-- per-source counts under "source:<pipeline id>/<source>"); the overview's charts are the
-- differences between consecutive samples. Kept for a little over a day.
CREATE TABLE node_samples (
    tenant_id TEXT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    node_id   TEXT NOT NULL,
    minute    BIGINT NOT NULL,
    counters  TEXT NOT NULL,
    PRIMARY KEY (tenant_id, node_id, minute)
);
CREATE INDEX node_samples_by_minute ON node_samples (minute);

-- Onboarding steps a tenant reached, each once: snippet_copied, first_event, first_delivery.
CREATE TABLE tenant_milestones (
    tenant_id TEXT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    name      TEXT NOT NULL,
    at        BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, name)
);
