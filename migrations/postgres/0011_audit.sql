-- Analysts and auditors (issue 7).
--
-- The organization of each event, as a column, so that the `events` query, the export and
-- the audit chain read one organization's events through an index in commit order.
-- Computed by the database from the metadata postgres-es writes: the event store's own
-- statements never name it.
ALTER TABLE events
    ADD COLUMN organization_id text GENERATED ALWAYS AS (metadata ->> 'organization') STORED;
CREATE INDEX events_by_organization ON events (organization_id, tx_id, position);

-- The tamper-evidence chain, one per organization: link n of an organization holds
-- SHA-256(hash of link n-1 || canonical encoding of the organization's n-th event in commit
-- order). Written by the "audit_chain" runner after the events commit; never rebuilt from
-- the log (that would bless whatever the log holds now), so `helpdesk replay` leaves it be.
CREATE TABLE audit_chain
(
    organization_id text   NOT NULL,
    link            bigint NOT NULL,
    position        bigint NOT NULL UNIQUE,
    hash            text   NOT NULL,
    PRIMARY KEY (organization_id, link)
);
