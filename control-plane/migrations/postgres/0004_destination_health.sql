-- Each node reports how its destinations are doing (state, the vendor's last error message,
-- counts over the last 5 minutes and 24 hours): a JSON array, metadata only.
ALTER TABLE nodes ADD COLUMN destinations TEXT NOT NULL DEFAULT '[]';
