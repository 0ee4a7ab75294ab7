-- Owned by the "bots" projection: each chatbot with its answers and active hours (JSON),
-- read by the inbound flow on every message and by `bots` / `botStatus`.
CREATE TABLE bots
(
    id                   text PRIMARY KEY,
    organization_id      text   NOT NULL,
    name                 text   NOT NULL,
    confidence_threshold real NOT NULL,
    channel_ids          text   NOT NULL, -- JSON array; empty: every channel
    answers              text   NOT NULL, -- JSON array of domain::bot::BotAnswer
    schedule             text   NOT NULL, -- JSON of domain::schedule::Schedule
    created_at           text   NOT NULL,
    version              bigint NOT NULL
);
CREATE INDEX bots_by_org ON bots (organization_id, created_at);

-- Owned by the "conversations" projection: which conversation each bot interaction
-- happened in (ratings name only the interaction).
CREATE TABLE bot_interactions
(
    interaction_id  text PRIMARY KEY,
    conversation_id text NOT NULL,
    organization_id text NOT NULL,
    bot_id          text NOT NULL,
    message_id      text             -- the answer's message; none for hand-offs
);
CREATE INDEX bot_interactions_by_message ON bot_interactions (message_id);
