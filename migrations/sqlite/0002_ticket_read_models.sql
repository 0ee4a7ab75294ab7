-- Read models of the "tickets", "queue" and "divisions" projections. Timestamps are
-- RFC 3339 UTC text with fixed width (microseconds, 'Z'), so text order is time order on
-- both backends.
CREATE TABLE tickets
(
    id              text PRIMARY KEY,
    organization_id text    NOT NULL,
    number          integer NOT NULL,
    subject         text    NOT NULL,
    description     text,
    status          text    NOT NULL,
    priority        text    NOT NULL,
    division_id     text,
    assignee_id     text,
    created_by      text    NOT NULL,
    created_at      text    NOT NULL,
    updated_at      text    NOT NULL,
    assigned_at     text,
    resolved_at     text,
    closed_at       text,
    resolution      text,
    rating          integer,
    feedback        text,
    -- subject and description lower-cased by the projection (Unicode-aware, unlike SQLite's
    -- LOWER), matched by the `search` filter
    search_text     text    NOT NULL,
    version         integer NOT NULL,
    UNIQUE (organization_id, number)
);
CREATE INDEX tickets_by_status ON tickets (organization_id, status, number);
CREATE INDEX tickets_by_assignee ON tickets (organization_id, assignee_id, number);
CREATE INDEX tickets_by_division ON tickets (organization_id, division_id, number);

CREATE TABLE ticket_comments
(
    id              text PRIMARY KEY,
    ticket_id       text    NOT NULL,
    organization_id text    NOT NULL,
    author_id       text    NOT NULL,
    text            text    NOT NULL,
    created_at      text    NOT NULL,
    position        integer NOT NULL
);
CREATE INDEX ticket_comments_by_ticket ON ticket_comments (ticket_id, position);

-- One row per queued ticket. A ticket's place is the number of rows ahead of it in
-- (priority_rank, waiting_since, number) order within its organization and division.
CREATE TABLE queue_entries
(
    ticket_id       text PRIMARY KEY,
    organization_id text    NOT NULL,
    division_key    text    NOT NULL, -- the division id, or '' for tickets without one
    priority_rank   integer NOT NULL,
    waiting_since   text    NOT NULL,
    number          integer NOT NULL
);
CREATE INDEX queue_entries_order ON queue_entries
    (organization_id, division_key, priority_rank, waiting_since, number);

CREATE TABLE divisions
(
    id                   text PRIMARY KEY,
    organization_id      text    NOT NULL,
    name                 text    NOT NULL,
    description          text,
    keywords             text    NOT NULL, -- JSON array of lower-case words
    menu_position        integer,
    assignment_mode      text    NOT NULL,
    algorithm            text    NOT NULL,
    avg_handling_minutes integer NOT NULL,
    created_at           text    NOT NULL
);
CREATE INDEX divisions_by_org ON divisions (organization_id, menu_position, created_at);
