-- The event log: the columns sqlite-es reads and writes, plus a global position.
-- SQLite has a single writer, so the order rows are inserted in is the order they commit in;
-- the trigger numbers each row under that write lock. An explicit column (not the rowid)
-- because VACUUM may renumber rowids.
CREATE TABLE events
(
  aggregate_type text                          NOT NULL,
  aggregate_id   text                          NOT NULL,
  sequence       integer CHECK (sequence >= 0) NOT NULL,
  event_type     text                          NOT NULL,
  event_version  text                          NOT NULL,
  payload        text                          NOT NULL,
  metadata       text                          NOT NULL,
  position       integer,
  PRIMARY KEY (aggregate_type, aggregate_id, sequence)
) STRICT;

CREATE UNIQUE INDEX events_position ON events (position);

CREATE TRIGGER events_assign_position AFTER INSERT ON events
FOR EACH ROW WHEN NEW.position IS NULL
BEGIN
  UPDATE events
     SET position = (SELECT COALESCE(MAX(position), 0) + 1 FROM events)
   WHERE rowid = NEW.rowid;
END;

-- The log is append-only: history is never rewritten.
CREATE TRIGGER events_no_update BEFORE UPDATE OF aggregate_type, aggregate_id, sequence,
  event_type, event_version, payload, metadata ON events
BEGIN
  SELECT RAISE(ABORT, 'the event log is append-only');
END;

CREATE TRIGGER events_no_delete BEFORE DELETE ON events
BEGIN
  SELECT RAISE(ABORT, 'the event log is append-only');
END;

-- One row per projection: how far into the log it has applied.
CREATE TABLE projection_checkpoints
(
  name       text PRIMARY KEY,
  tx_id      integer NOT NULL DEFAULT 0,
  position   integer NOT NULL DEFAULT 0,
  updated_at text
) STRICT;

-- Ticket numbers: unique and increasing per organization, allocated before the
-- TicketCreated event that records them.
CREATE TABLE ticket_number_counters
(
  organization_id text PRIMARY KEY,
  last_number     integer NOT NULL
) STRICT;
