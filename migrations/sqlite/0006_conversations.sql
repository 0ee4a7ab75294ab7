-- Conversations from WhatsApp and Telegram (issue 4).

-- Secrets of the configured channels (access tokens, app secrets, bot tokens). Kept here,
-- never in the event log (brief rule 8), and never returned by a query. Written by the
-- `configureChannel` command before its event; not a projection (a rebuild keeps them).
CREATE TABLE channel_secrets
(
    channel_id      text PRIMARY KEY,
    organization_id text NOT NULL,
    settings        text NOT NULL, -- JSON object, as given to configureChannel
    updated_at      text NOT NULL
);

-- Per-customer keys of the customers' personal data (brief rule 11): names, handles and
-- message texts are stored in events sealed with the customer's key; deleting the key
-- erases them without rewriting the log. Not a projection.
CREATE TABLE customer_keys
(
    customer_id     text PRIMARY KEY,
    organization_id text NOT NULL,
    secret_key      text NOT NULL, -- base64, 32 bytes
    created_at      text NOT NULL
);

-- Owned by the "channels" projection: what configureChannel set, without the secrets.
CREATE TABLE channels
(
    id              text PRIMARY KEY,
    organization_id text NOT NULL,
    channel         text NOT NULL, -- WHATSAPP, TELEGRAM, ...
    api_base_url    text,
    phone_number_id text,          -- WhatsApp: routes webhook payloads to the organization
    configured_at   text NOT NULL
);
CREATE INDEX channels_by_phone_number ON channels (phone_number_id);

-- Owned by the "conversations" projection. Personal data stays sealed here too: it is
-- opened when read, with the customer's key.
CREATE TABLE conversations
(
    id                  text PRIMARY KEY,
    organization_id     text    NOT NULL,
    channel             text    NOT NULL,
    channel_id          text    NOT NULL,
    customer_id         text    NOT NULL,
    external_id         text    NOT NULL, -- sealed
    customer_name       text,             -- sealed
    mode                text    NOT NULL, -- BOT or AGENT
    division_id         text,
    ticket_id           text,
    needs_human         integer NOT NULL,
    unread_count        bigint  NOT NULL,
    last_message_at     text    NOT NULL,
    last_agent_reply_at text,
    last_agent_reply_by text,
    announced_ticket_id   text,           -- the last assignment announced to the customer:
    announced_assigned_at text,           -- its ticket and when it was assigned
    created_at          text    NOT NULL,
    version             bigint  NOT NULL
);
CREATE INDEX conversations_by_org ON conversations (organization_id, last_message_at);
CREATE INDEX conversations_by_ticket ON conversations (ticket_id);

CREATE TABLE conversation_messages
(
    id              text PRIMARY KEY,
    conversation_id text   NOT NULL,
    organization_id text   NOT NULL,
    direction       text   NOT NULL, -- INBOUND or OUTBOUND
    kind            text   NOT NULL, -- CUSTOMER, REPLY, SYSTEM, BULK
    author_id       text,
    text            text   NOT NULL, -- sealed
    created_at      text   NOT NULL,
    position        bigint NOT NULL
);
CREATE INDEX conversation_messages_order ON conversation_messages (conversation_id, position);

-- The outbound queue. Filled by the "outbox" projection from OutboundMessageQueued events
-- (INSERT ... ON CONFLICT DO NOTHING: a rebuild never queues a message twice) and worked
-- by the delivery worker, which owns every column but the first seven. Never emptied by a
-- rebuild: it is the delivery record.
CREATE TABLE outbox_jobs
(
    message_id      text PRIMARY KEY,
    organization_id text   NOT NULL,
    conversation_id text   NOT NULL,
    channel_id      text   NOT NULL,
    priority        bigint NOT NULL, -- 0 system, 1 reply, 2 bulk
    queued_at       text   NOT NULL,
    idempotency_key text   NOT NULL,
    status          text   NOT NULL, -- PENDING, SENDING, DELIVERED, DEAD
    attempts        bigint NOT NULL,
    next_attempt_at text   NOT NULL,
    last_error      text,
    provider_message_id text,
    delivered_at    text,
    updated_at      text   NOT NULL
);
-- The outbox projection's own map of conversations to organization and channel, written
-- from ConversationStarted: the outbox never reads another projection's tables, whose
-- runner may be behind its own. Never emptied by a rebuild (see outbox_jobs).
CREATE TABLE outbox_routes
(
    conversation_id text PRIMARY KEY,
    organization_id text NOT NULL,
    channel_id      text NOT NULL
);

CREATE INDEX outbox_jobs_due ON outbox_jobs (status, next_attempt_at, priority);
CREATE INDEX outbox_jobs_by_org ON outbox_jobs (organization_id, status, queued_at);

-- Typical handling time of a division (estimated waits): its latest resolutions.
CREATE INDEX tickets_resolved_by_division ON tickets (organization_id, division_id, resolved_at);
