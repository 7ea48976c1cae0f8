-- MiniChat schema, version 1.
CREATE TABLE IF NOT EXISTS users (
    id          BIGINT UNSIGNED NOT NULL PRIMARY KEY,
    name        VARCHAR(191) NOT NULL DEFAULT '',
    status      ENUM('active', 'banned') NOT NULL DEFAULT 'active',
    created_at  TIMESTAMP(3) NOT NULL DEFAULT CURRENT_TIMESTAMP(3)
) ENGINE=InnoDB;

CREATE TABLE IF NOT EXISTS rooms (
    id               BIGINT UNSIGNED NOT NULL AUTO_INCREMENT PRIMARY KEY,
    kind             ENUM('direct', 'group') NOT NULL,
    title            VARCHAR(191) NOT NULL DEFAULT '',
    created_by       BIGINT UNSIGNED NOT NULL,
    last_seq         BIGINT UNSIGNED NOT NULL DEFAULT 0,
    last_message_at  TIMESTAMP(3) NULL,
    last_preview     VARCHAR(191) NOT NULL DEFAULT '',
    created_at       TIMESTAMP(3) NOT NULL DEFAULT CURRENT_TIMESTAMP(3)
) ENGINE=InnoDB;

CREATE TABLE IF NOT EXISTS room_members (
    room_id          BIGINT UNSIGNED NOT NULL,
    user_id          BIGINT UNSIGNED NOT NULL,
    last_read_seq    BIGINT UNSIGNED NOT NULL DEFAULT 0,
    last_message_at  TIMESTAMP(3) NULL,
    joined_seq       BIGINT UNSIGNED NOT NULL DEFAULT 0,
    left_at          TIMESTAMP(3) NULL,
    PRIMARY KEY (room_id, user_id),
    KEY my_rooms (user_id, left_at, last_message_at, room_id)
) ENGINE=InnoDB;

CREATE TABLE IF NOT EXISTS messages (
    room_id        BIGINT UNSIGNED NOT NULL,
    seq            BIGINT UNSIGNED NOT NULL,
    sender_id      BIGINT UNSIGNED NOT NULL,
    kind           ENUM('text') NOT NULL DEFAULT 'text',
    body           TEXT NOT NULL,
    client_msg_id  VARCHAR(64) NOT NULL,
    created_at     TIMESTAMP(3) NOT NULL,
    PRIMARY KEY (room_id, seq)
) ENGINE=InnoDB;

CREATE TABLE IF NOT EXISTS schema_migrations (
    version     INT NOT NULL PRIMARY KEY,
    applied_at  TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP
) ENGINE=InnoDB;
INSERT IGNORE INTO schema_migrations (version) VALUES (1);
