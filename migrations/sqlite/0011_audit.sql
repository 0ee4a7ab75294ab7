-- Analysts and auditors (issue 7).
--
-- The organization of each event, as a column, so that the `events` query, the export and
-- the audit chain read one organization's events through an index in commit order.
-- Computed by the database from the metadata sqlite-es writes: the event store's own
-- statements never name it.
ALTER TABLE events
    ADD COLUMN organization_id text GENERATED ALWAYS AS (json_extract(metadata, '$.organization')) VIRTUAL;
CREATE INDEX events_by_organization ON events (organization_id, position);

-- The tamper-evidence chain, one per organization: link n of an organization holds
-- SHA-256(hash of link n-1 || canonical encoding of the organization's n-th event in commit
-- order). Written by the "audit_chain" runner after the events commit; never rebuilt from
-- the log (that would bless whatever the log holds now), so `helpdesk replay` leaves it be.
CREATE TABLE audit_chain
(
    organization_id text    NOT NULL,
    link            integer NOT NULL,
    position        integer NOT NULL UNIQUE,
    hash            text    NOT NULL,
    PRIMARY KEY (organization_id, link)
) STRICT;

-- A position, once given, never changes (the insert trigger gives it; 0001's update guard
-- leaves the column out so that the trigger can).
CREATE TRIGGER events_position_fixed BEFORE UPDATE OF position ON events
WHEN OLD.position IS NOT NULL
BEGIN
  SELECT RAISE(ABORT, 'the event log is append-only');
END;
