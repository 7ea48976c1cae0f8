-- MiniChat schema, version 3: chat semantics.
--  - messages.kind gains 'system' (joins, leaves: a message with a seq whose
--    body is JSON such as {"event":"leave","user":"43"});
--  - room_members.left_seq: the seq of a member's leave (0 while a member);
--    a former member may page history up to it and no further;
--  - room_requests: the Idempotency-Key of a room creation, so that a retry
--    returns the room the first request made;
--  - every member row gets a last_message_at (the room's creation when it has
--    no message yet) so the "my rooms" index orders every room without NULLs.
ALTER TABLE messages MODIFY kind ENUM('text', 'system') NOT NULL DEFAULT 'text';

ALTER TABLE room_members ADD COLUMN left_seq BIGINT UNSIGNED NOT NULL DEFAULT 0 AFTER left_at;

CREATE TABLE IF NOT EXISTS room_requests (
    creator_id   BIGINT UNSIGNED NOT NULL,
    idem_key     VARBINARY(64) NOT NULL,
    room_id      BIGINT UNSIGNED NOT NULL,
    created_at   TIMESTAMP(3) NOT NULL DEFAULT CURRENT_TIMESTAMP(3),
    PRIMARY KEY (creator_id, idem_key)
) ENGINE=InnoDB;

UPDATE room_members m JOIN rooms r ON r.id = m.room_id
   SET m.last_message_at = COALESCE(r.last_message_at, r.created_at)
 WHERE m.last_message_at IS NULL;

INSERT IGNORE INTO schema_migrations (version) VALUES (3);
