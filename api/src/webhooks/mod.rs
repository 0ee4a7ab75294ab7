//! Inbound webhooks of the messaging providers.
pub mod parse;
