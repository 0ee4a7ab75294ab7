//! The storage and read side of the helpdesk.
//!
//! - [`db`]: the database handle (embedded SQLite or PostgreSQL), chosen from the URL, and
//!   the migrations under `migrations/` that run at start.
//! - [`event_store`]: the cqrs-es event repository over either backend, so the write side has
//!   one code path.
//! - [`event_log`]: the event log read in its global commit order (SQLite: explicit position;
//!   PostgreSQL: the xid8 fence of brief rule 5), and the [`event_log::Checkpoint`] that
//!   marks a place in it.
//! - [`runner`]: the projection runner — reads the log from a per-projection checkpoint and
//!   writes rows and the new checkpoint in one transaction (no event skipped, none applied
//!   twice), wakes on new events, and lets commands wait until their events are visible.
//! - [`bulk`]: set-based reads and writes (one statement per table for a whole batch) for
//!   projections that fold a batch in memory instead of one statement per event.
//! - [`tickets`], [`queue`], [`divisions`], [`agents`], [`queue_settings`]: the read models
//!   and their queries (the workload view and an agent's own queue among them).
//! - [`conversations`]: conversations, their messages, the configured channels and the
//!   outbox of messages to deliver.
//! - [`bots`]: the chatbots with their answers and active hours.
//! - [`chatbot`]: chatbot analytics bucketed in each bot's local time (DST-correct) and
//!   its report: rates, averages, confidence histogram, top answers, unmatched questions.
//! - [`notifications`]: each user's notification center (assignments, escalations, reopened
//!   tickets, customer messages) with what they read or deleted.
//! - [`pipelines`]: pipelines, stages, the kanban board of cards (ordered by gapped ranks),
//!   every card's stage history and the pipeline analytics.
//! - [`personal_data`]: customers' personal data sealed with a key per customer, so that it
//!   can be erased without rewriting the log.
//! - [`lease`]: which replica runs each projector and the assignment process (PostgreSQL
//!   advisory locks held on a dedicated connection; released the moment a replica dies).
//! - [`rebuild`]: rebuilding a projection into shadow tables while the live ones keep
//!   serving, then swapping them in in one transaction (`helpdesk replay`).
//! - [`audit`]: the tamper-evidence chain (SHA-256, one per organization, over the log in
//!   commit order) and its verification.
//! - [`telemetry`]: counters and histograms exported at `/metrics`.

pub mod agents;
pub mod audit;
pub mod bots;
pub mod bulk;
pub mod chatbot;
pub mod conversations;
pub mod db;
pub mod divisions;
pub mod event_log;
pub mod event_store;
pub mod lease;
pub mod notifications;
pub mod personal_data;
pub mod pipelines;
pub mod queue;
pub mod queue_settings;
pub mod rebuild;
pub mod runner;
pub mod telemetry;
pub mod tickets;

pub use db::{Database, DbError};
pub use event_log::{Checkpoint, StoredEvent};
