-- The notification center (issue 8). Every table here is owned by the "notifications"
-- projection, which keeps its own map of who holds which ticket and which conversation
-- belongs to which ticket (it never reads another projection's tables, whose runner may be
-- behind or ahead of its own).
CREATE TABLE notifications
(
    id              text PRIMARY KEY, -- UUIDv5 of the causing event's position and the user
    organization_id text    NOT NULL,
    user_id         text    NOT NULL,
    kind            text    NOT NULL, -- TICKET_ASSIGNED, CUSTOMER_MESSAGE, ESCALATED_AWAY, ...
    ticket_id       text,
    ticket_number   bigint,
    conversation_id text,
    created_at      text    NOT NULL,
    position        bigint  NOT NULL, -- the causing event's place in the log: the order
    read_at         text,
    deleted         boolean NOT NULL
);
CREATE INDEX notifications_by_user ON notifications (organization_id, user_id, deleted, position);
CREATE INDEX notifications_by_position ON notifications (position);

CREATE TABLE notification_tickets
(
    ticket_id       text PRIMARY KEY,
    organization_id text   NOT NULL,
    number          bigint NOT NULL,
    holder_id       text              -- the agent holding it while ASSIGNED or IN_PROGRESS
);

CREATE TABLE notification_conversations
(
    conversation_id text PRIMARY KEY,
    ticket_id       text NOT NULL     -- the conversation's latest ticket
);
