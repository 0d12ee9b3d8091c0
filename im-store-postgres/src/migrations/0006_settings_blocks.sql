-- im-store-postgres schema, version 6: per-user conversation settings
-- (mute, pin) and user-level blocks for direct chats.

-- A user's settings of one conversation (no row: neither muted nor pinned).
CREATE TABLE conversation_settings (
    user_id text COLLATE "C" NOT NULL,
    conv    text COLLATE "C" NOT NULL,
    muted   boolean NOT NULL DEFAULT false,
    pinned  boolean NOT NULL DEFAULT false,
    PRIMARY KEY (user_id, conv)
);

-- "Which of these users muted conversation X" (the offline push filter).
CREATE INDEX conversation_settings_muted
    ON conversation_settings (conv, user_id) WHERE muted;

-- Who blocks whom: `blocker` refuses direct messages from `blocked`.
CREATE TABLE user_blocks (
    blocker text COLLATE "C" NOT NULL,
    blocked text COLLATE "C" NOT NULL,
    PRIMARY KEY (blocker, blocked)
);
