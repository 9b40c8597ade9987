-- Data planes now verify service and api keys too (the DLQ and query APIs), not only ingest
-- keys: every key keeps the SHA-256 of its text, under a name that says so. Keys created
-- before this have none and work only against the control plane until replaced.
ALTER TABLE api_keys RENAME COLUMN ingest_sha256 TO sha256;
