-- A message body may be as long as minichat_max_message_size (up to 1 MiB);
-- TEXT holds 64 KiB and INSERT IGNORE would cut longer bodies silently.
ALTER TABLE messages MODIFY body MEDIUMTEXT NOT NULL;
INSERT IGNORE INTO schema_migrations (version) VALUES (2);
