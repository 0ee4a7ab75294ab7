-- Agent presence and workload, requeue at the original place, queue settings.

-- When the ticket last entered its queue (creation or reopen); a requeued ticket returns to
-- this place.
ALTER TABLE tickets ADD COLUMN queued_since text;
UPDATE tickets
   SET queued_since = COALESCE(
       (SELECT waiting_since FROM queue_entries q WHERE q.ticket_id = tickets.id), created_at);
CREATE INDEX tickets_active_by_assignee ON tickets (organization_id, assignee_id, status);

-- Owned by the "tickets" projection: when each agent was last given a ticket (round robin
-- and workload), and how many tickets they were given in all.
CREATE TABLE agent_assignments
(
    agent_id         text PRIMARY KEY,
    organization_id  text   NOT NULL,
    last_assigned_at text   NOT NULL,
    assigned_total   bigint NOT NULL
);

-- Owned by the "agents" projection.
ALTER TABLE agents ADD COLUMN online_since text;

-- Owned by the "agents" projection: the slot ledger of every agent (what the AgentStatus
-- aggregates hold), so the assignment process can find slots whose ticket left the agent.
CREATE TABLE slot_reservations
(
    agent_id        text   NOT NULL,
    ticket_id       text   NOT NULL,
    organization_id text   NOT NULL,
    ticket_version  bigint NOT NULL,
    reserved_at     text   NOT NULL,
    PRIMARY KEY (agent_id, ticket_id)
);
CREATE INDEX slot_reservations_by_org ON slot_reservations (organization_id);

-- Owned by the "queue_settings" projection: the whole settings as JSON, one row per
-- organization that changed them (the others use the defaults).
CREATE TABLE queue_settings
(
    organization_id text PRIMARY KEY,
    settings        text NOT NULL,
    updated_at      text NOT NULL
);

-- Tell every replica where a projection stands whenever its checkpoint moves, so replicas
-- that do not run the projector (another replica holds its lease) still know when a change
-- has become visible (read-your-writes). Payload: "name tx_id position".
CREATE FUNCTION helpdesk_checkpoint_notify() RETURNS trigger AS $$
BEGIN
    PERFORM pg_notify('helpdesk_checkpoints', NEW.name || ' ' || NEW.tx_id || ' ' || NEW.position);
    RETURN NULL;
END;
$$ LANGUAGE plpgsql;

CREATE TRIGGER projection_checkpoints_notify AFTER UPDATE ON projection_checkpoints
    FOR EACH ROW EXECUTE FUNCTION helpdesk_checkpoint_notify();
