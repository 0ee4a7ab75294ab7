-- Read model of the "agents" projection.
CREATE TABLE agents
(
    id              text PRIMARY KEY,
    organization_id text    NOT NULL,
    name            text    NOT NULL,
    max_tickets     integer NOT NULL,
    division_ids    text    NOT NULL, -- JSON array of division ids
    online          integer NOT NULL DEFAULT 0,
    registered_at   text    NOT NULL
);
CREATE INDEX agents_by_org ON agents (organization_id, name);
