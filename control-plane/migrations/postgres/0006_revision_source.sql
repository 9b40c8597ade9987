-- A revision keeps the document as its author wrote it (YAML comments and order included),
-- when it came as text, and the change message they gave.
ALTER TABLE pipeline_revisions ADD COLUMN source TEXT;
ALTER TABLE pipeline_revisions ADD COLUMN message TEXT;
