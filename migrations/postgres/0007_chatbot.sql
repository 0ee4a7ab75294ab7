-- Chatbot analytics (issue 5). Owned by the "chatbot_analytics" projection
-- (`projections::chatbot`); a rebuild empties every table below.
--
-- Interactions are counted in hourly buckets of the bot's own timezone, chosen when the
-- interaction is applied: `hour_start` is the UTC instant at which the bot's local hour
-- began, so the fall-back day of a DST change has 25 hourly rows (two labelled 01:00, with
-- different UTC starts) and the spring-forward day 23. Every bucketed row also carries the
-- UTC instants of its local day's first moment (`day_start`) and, where needed, of the next
-- day's (`day_end`) and of its local week's Monday (`week_start`), so the DAY and WEEK
-- reports are a GROUP BY over these rows, never a time-zone computation.
--
-- The confidence bins, answer uses and unmatched questions are kept per hour and rolled up
-- per local day (`*_days`): a report reads the day rows of the days it covers whole and the
-- hour rows of at most the two days cut by its range, so a year costs ~365 rows per key,
-- not ~8,760. Keys start with (bot_id, day_start) so every report query is a range scan of
-- the primary key.
--
-- Times are fixed-width RFC 3339 UTC texts (`projections::db::timestamp`): text order is
-- time order.

-- The bots, their organization and the timezone their interactions are bucketed in.
CREATE TABLE chatbot_bots
(
    bot_id          text PRIMARY KEY,
    organization_id text NOT NULL,
    timezone        text NOT NULL -- IANA name; Asia/Jakarta until a schedule names another
);

-- The question of each answer, for the report's top answers.
CREATE TABLE chatbot_answers
(
    bot_id    text NOT NULL,
    answer_id text NOT NULL,
    question  text NOT NULL,
    PRIMARY KEY (bot_id, answer_id)
);

-- Whose key opens a conversation's sealed questions.
CREATE TABLE chatbot_customers
(
    conversation_id text PRIMARY KEY,
    customer_id     text NOT NULL
);

-- One row per interaction: where it was counted, and its rating (a new rating replaces it).
CREATE TABLE chatbot_interactions
(
    interaction_id  text PRIMARY KEY,
    bot_id          text   NOT NULL,
    organization_id text   NOT NULL,
    day_start       text   NOT NULL,
    hour_start      text   NOT NULL,
    rating          bigint           -- none until rated
);

-- The figures of each local hour.
CREATE TABLE chatbot_hours
(
    bot_id               text   NOT NULL,
    day_start            text   NOT NULL, -- UTC instant its local day began
    hour_start           text   NOT NULL, -- UTC instant the local hour began
    week_start           text   NOT NULL, -- UTC instant its local week (Monday) began
    local_date           text   NOT NULL, -- 'YYYY-MM-DD'
    local_hour           bigint NOT NULL, -- 0..23
    interactions         bigint NOT NULL,
    successful           bigint NOT NULL, -- answered by the bot
    escalated            bigint NOT NULL, -- handed off (low confidence or outside hours)
    response_ms_sum      bigint NOT NULL, -- over the answered ones
    confidence_milli_sum bigint NOT NULL, -- confidences in thousandths
    confidence_count     bigint NOT NULL, -- interactions that have a confidence
    rating_sum           bigint NOT NULL,
    rating_count         bigint NOT NULL,
    PRIMARY KEY (bot_id, day_start, hour_start)
);

-- Confidences in ten bins of 0.1 (bin 9 holds 0.9 to 1.0 inclusive), per hour and per day.
CREATE TABLE chatbot_confidence
(
    bot_id     text   NOT NULL,
    day_start  text   NOT NULL,
    hour_start text   NOT NULL,
    day_end    text   NOT NULL, -- UTC instant the next local day begins
    bin        bigint NOT NULL,
    entries    bigint NOT NULL,
    PRIMARY KEY (bot_id, day_start, hour_start, bin)
);
CREATE TABLE chatbot_confidence_days
(
    bot_id     text   NOT NULL,
    day_start  text   NOT NULL,
    day_end    text   NOT NULL,
    week_start text   NOT NULL,
    bin        bigint NOT NULL,
    entries    bigint NOT NULL,
    PRIMARY KEY (bot_id, day_start, bin)
);

-- How often each answer was given, per hour and per day.
CREATE TABLE chatbot_answer_uses
(
    bot_id     text   NOT NULL,
    day_start  text   NOT NULL,
    hour_start text   NOT NULL,
    day_end    text   NOT NULL,
    answer_id  text   NOT NULL,
    entries    bigint NOT NULL,
    PRIMARY KEY (bot_id, day_start, hour_start, answer_id)
);
CREATE TABLE chatbot_answer_days
(
    bot_id     text   NOT NULL,
    day_start  text   NOT NULL,
    day_end    text   NOT NULL,
    week_start text   NOT NULL,
    answer_id  text   NOT NULL,
    entries    bigint NOT NULL,
    PRIMARY KEY (bot_id, day_start, answer_id)
);

-- The questions the bot could not match (low-confidence hand-offs), opened with the
-- customer's key and normalised: one row per interaction (whose customer it was), and the
-- count per day. Erasing a customer deletes their rows and their share of the day counts;
-- a rebuild after the erasure skips them (the key is gone).
CREATE TABLE chatbot_unmatched
(
    interaction_id  text PRIMARY KEY,
    bot_id          text NOT NULL,
    organization_id text NOT NULL,
    customer_id     text NOT NULL,
    day_start       text NOT NULL,
    hour_start      text NOT NULL,
    day_end         text NOT NULL,
    question        text NOT NULL
);
CREATE INDEX chatbot_unmatched_by_day ON chatbot_unmatched (bot_id, day_start, hour_start);
CREATE INDEX chatbot_unmatched_by_customer ON chatbot_unmatched (customer_id);
CREATE TABLE chatbot_unmatched_days
(
    bot_id     text   NOT NULL,
    day_start  text   NOT NULL,
    day_end    text   NOT NULL,
    week_start text   NOT NULL,
    question   text   NOT NULL,
    entries    bigint NOT NULL,
    PRIMARY KEY (bot_id, day_start, question)
);
