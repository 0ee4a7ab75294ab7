-- The event log: the columns postgres-es reads and writes, plus a global order.
-- Insert order is not commit order on PostgreSQL, so each row also records the id of the
-- transaction that wrote it; readers only take rows whose transaction is older than every
-- transaction still running in this database (see projections/src/event_log.rs) and read
-- them ordered by (tx_id, position). postgres-es names its columns, so it never sees these.
CREATE TABLE events
(
    aggregate_type text                         NOT NULL,
    aggregate_id   text                         NOT NULL,
    sequence       bigint CHECK (sequence >= 0) NOT NULL,
    event_type     text                         NOT NULL,
    event_version  text                         NOT NULL,
    payload        json                         NOT NULL,
    metadata       json                         NOT NULL,
    position       bigserial                    NOT NULL UNIQUE,
    tx_id          xid8                         NOT NULL DEFAULT pg_current_xact_id(),
    PRIMARY KEY (aggregate_type, aggregate_id, sequence)
);

CREATE INDEX events_commit_order ON events (tx_id, position);

-- Wake projectors in every replica when events commit (NOTIFY is delivered at commit).
CREATE FUNCTION helpdesk_events_notify() RETURNS trigger AS $$
BEGIN
    PERFORM pg_notify('helpdesk_events', '');
    RETURN NULL;
END;
$$ LANGUAGE plpgsql;

CREATE TRIGGER events_notify AFTER INSERT ON events
    FOR EACH STATEMENT EXECUTE FUNCTION helpdesk_events_notify();

-- The log is append-only: history is never rewritten.
CREATE FUNCTION helpdesk_events_append_only() RETURNS trigger AS $$
BEGIN
    RAISE EXCEPTION 'the event log is append-only';
END;
$$ LANGUAGE plpgsql;

CREATE TRIGGER events_append_only BEFORE UPDATE OR DELETE ON events
    FOR EACH ROW EXECUTE FUNCTION helpdesk_events_append_only();

CREATE TABLE projection_checkpoints
(
    name       text PRIMARY KEY,
    tx_id      bigint NOT NULL DEFAULT 0,
    position   bigint NOT NULL DEFAULT 0,
    updated_at text
);

CREATE TABLE ticket_number_counters
(
    organization_id text PRIMARY KEY,
    last_number     bigint NOT NULL
);
