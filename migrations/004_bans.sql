-- MiniChat schema, version 4: bans from rate-limit strikes.
--  - users.banned_until: the end of the current ban (NULL while active, and
--    for a permanent ban: status says which);
--  - users.strikes: strikes so far (Redis's {u:<user>}:strikes is the live
--    count; this is the record).
-- Idempotent (IF NOT EXISTS), like every migration.
ALTER TABLE users ADD COLUMN IF NOT EXISTS banned_until TIMESTAMP(3) NULL DEFAULT NULL AFTER status;
ALTER TABLE users ADD COLUMN IF NOT EXISTS strikes INT UNSIGNED NOT NULL DEFAULT 0 AFTER banned_until;

INSERT IGNORE INTO schema_migrations (version) VALUES (4);
