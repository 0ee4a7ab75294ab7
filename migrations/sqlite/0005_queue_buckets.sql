-- Queue places without counting everything ahead (issue 3: a place at 100,000 queued in
-- under 5 ms). Owned by the "tickets" projection.
--
-- Within a priority, a queue is served in join order: `seq` is taken from the queue's
-- counter when a ticket joins it (creation or reopen) and kept on the ticket, so a requeued
-- ticket returns to its original place. `queue_buckets` counts the entries of each run of
-- 1,024 sequence numbers (bucket = seq / 1024; the width is
-- `projections::queue::BUCKET_WIDTH`), so a place is the sum of at most one row per 1,024
-- entries ahead plus a count of at most 1,024 entries.

CREATE TABLE queue_counters
(
    organization_id text   NOT NULL,
    division_key    text   NOT NULL,
    last_seq        bigint NOT NULL,
    PRIMARY KEY (organization_id, division_key)
);

CREATE TABLE queue_buckets
(
    organization_id text   NOT NULL,
    division_key    text   NOT NULL,
    priority_rank   bigint NOT NULL,
    bucket          bigint NOT NULL,
    entries         bigint NOT NULL,
    PRIMARY KEY (organization_id, division_key, priority_rank, bucket)
);

-- Existing tickets are numbered in the order their queues had: oldest first, then number.
ALTER TABLE tickets ADD COLUMN queue_seq bigint;
UPDATE tickets
   SET queue_seq = ordered.seq
  FROM (SELECT id,
               ROW_NUMBER() OVER (PARTITION BY organization_id, COALESCE(division_id, '')
                                  ORDER BY COALESCE(queued_since, created_at), number) AS seq
          FROM tickets) AS ordered
 WHERE ordered.id = tickets.id;

INSERT INTO queue_counters (organization_id, division_key, last_seq)
SELECT organization_id, COALESCE(division_id, ''), MAX(queue_seq)
  FROM tickets
 GROUP BY organization_id, COALESCE(division_id, '');

ALTER TABLE queue_entries ADD COLUMN seq bigint NOT NULL DEFAULT 0;
UPDATE queue_entries
   SET seq = (SELECT t.queue_seq FROM tickets t WHERE t.id = queue_entries.ticket_id);

INSERT INTO queue_buckets (organization_id, division_key, priority_rank, bucket, entries)
SELECT organization_id, division_key, priority_rank, seq / 1024, COUNT(*)
  FROM queue_entries
 GROUP BY organization_id, division_key, priority_rank, seq / 1024;

DROP INDEX queue_entries_order;
CREATE INDEX queue_entries_order ON queue_entries (organization_id, division_key, priority_rank, seq);
