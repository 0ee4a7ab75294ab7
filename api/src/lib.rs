//! The helpdesk's front door: configuration, authentication, the command side, GraphQL over
//! axum, and the `helpdesk` command line.
//!
//! - [`config`]: settings from the environment (`DATABASE_URL`, `HELPDESK_ADDR`, ...).
//! - [`auth`]: HS256 bearer tokens (`sub`, `org`, `role`, `exp`) and the JWT secret.
//! - [`error`]: the one client-facing error enum, mapped to GraphQL `extensions.code`.
//! - [`helpdesk`]: the command side — runs commands against aggregates with bounded retry on
//!   conflicts, stamps metadata on every event, and waits until projections show the change.
//! - [`assignment`]: the reserve-then-assign saga (claims, admin and automatic assignment)
//!   and the assignment process manager that releases slots, requeues for offline agents
//!   and fills AUTO queues, running in the replica that holds its lease.
//! - [`conversations`]: channel configuration and the inbound flow of a customer's message
//!   (division menu, tickets from chats, the queue-place answers), replies and reading.
//! - [`bots`]: chatbots — answers, active hours, and the bot's turn on a customer message.
//! - [`conversation_process`]: tells customers when an agent takes their ticket.
//! - [`outbox`]: the durable delivery of outbound messages to WhatsApp and Telegram.
//! - [`webhooks`]: the providers' webhooks (signatures checked, payloads parsed).
//! - [`graphql`]: the schema (queries and mutations of `CONTRACT.md`).
//! - [`reports`]: `GET /reports/chatbot/{botId}.csv` (bearer token).
//! - [`server`]: the HTTP server: `/graphql`, `/healthz`, `/readyz`, `/metrics`, graceful
//!   shutdown.
//! - [`audit`]: a ticket's history in plain words and the ticket as it was at an instant.
//! - [`export`]: the log as NDJSON or CSV, streamed.
//! - [`cli`]: `helpdesk serve | migrate | token | schema | replay | export | audit verify`.

pub mod assignment;
pub mod audit;
pub mod auth;
pub mod bots;
pub mod cli;
pub mod config;
pub mod conversation_process;
pub mod conversations;
pub mod error;
pub mod export;
pub mod graphql;
pub mod helpdesk;
pub mod notifications;
pub mod outbox;
pub mod pipeline_process;
pub mod pipelines;
pub mod realtime;
pub mod reports;
pub mod server;
pub mod webhooks;
