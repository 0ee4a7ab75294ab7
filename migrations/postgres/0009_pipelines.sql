-- Pipelines (issue 6). Every table here is owned by the "pipelines" projection, which
-- applies Pipelines and Card events in one transaction per batch, so a stage's card count,
-- the board and the stage history always agree.

-- The organization's pipelines.
CREATE TABLE pipelines
(
    id              text PRIMARY KEY,
    organization_id text    NOT NULL,
    name            text    NOT NULL,
    description     text,
    color           text,
    is_default      boolean NOT NULL,
    archived        boolean NOT NULL,
    created_at      text    NOT NULL,
    created_seq     bigint  NOT NULL -- log position of its creation: the listing order
);
CREATE INDEX pipelines_by_org ON pipelines (organization_id, created_seq);

-- Stages, live and removed (a removed stage keeps its row: history names it, and cards
-- that arrived as it was removed are moved on from it).
CREATE TABLE pipeline_stages
(
    id              text PRIMARY KEY,
    pipeline_id     text    NOT NULL,
    organization_id text    NOT NULL,
    name            text    NOT NULL,
    color           text,
    closed          boolean NOT NULL,
    automation      text    NOT NULL, -- JSON array of domain::pipeline::StageAutomation
    position        bigint  NOT NULL, -- 0-based place in the pipeline; -1 once removed
    removed         boolean NOT NULL,
    cards_moved_to  text,
    card_count      bigint  NOT NULL
);
CREATE INDEX pipeline_stages_by_pipeline ON pipeline_stages (pipeline_id, position);

-- One row per card. Within a stage cards are ordered by `rank`: gaps of 2^20 between
-- neighbours, a move between two cards takes the middle, a stage is renumbered when a gap
-- runs out. Ranks follow from the events in log order, so a rebuild gives the same ones.
CREATE TABLE board_cards
(
    id                 text PRIMARY KEY,
    organization_id    text    NOT NULL,
    pipeline_id        text    NOT NULL,
    stage_id           text    NOT NULL,
    conversation_id    text    NOT NULL,
    rank               bigint  NOT NULL,
    entry              bigint  NOT NULL, -- stage entries so far (the placement is 1)
    entered_at         text    NOT NULL, -- when it entered its current stage
    placed_at          text    NOT NULL,
    moved_by           text    NOT NULL, -- who put it where it is
    automation_pending boolean NOT NULL, -- its stage entry still owes automation
    automation         text,             -- JSON outcomes of the latest automation run
    automation_at      text,
    version            bigint  NOT NULL
);
CREATE INDEX board_cards_by_stage ON board_cards (pipeline_id, stage_id, rank);
CREATE INDEX board_cards_by_conversation ON board_cards (conversation_id);
CREATE INDEX board_cards_pending ON board_cards (automation_pending);

CREATE TABLE board_card_labels
(
    card_id     text NOT NULL,
    pipeline_id text NOT NULL,
    label       text NOT NULL,
    PRIMARY KEY (card_id, label)
);
CREATE INDEX board_card_labels_by_label ON board_card_labels (pipeline_id, label);

-- Every stage entry of every card: the placement (no from stage) and each move between
-- stages, with the time spent in the stage it left.
CREATE TABLE card_stage_history
(
    card_id             text   NOT NULL,
    entry               bigint NOT NULL,
    organization_id     text   NOT NULL,
    pipeline_id         text   NOT NULL,
    from_stage_id       text,
    to_stage_id         text   NOT NULL,
    moved_by            text   NOT NULL,
    moved_by_role       text   NOT NULL,
    moved_at            text   NOT NULL,
    seconds_in_previous bigint,
    PRIMARY KEY (card_id, entry)
);
CREATE INDEX card_stage_history_by_pipeline ON card_stage_history (pipeline_id, moved_at);
