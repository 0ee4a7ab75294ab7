//! `docs/schema.graphql` is the schema clients read: it must never go stale.
//! Regenerate with `UPDATE_SCHEMA=1 cargo test -p api --test schema_sdl`
//! (or `cargo run -- schema > docs/schema.graphql`).

#[test]
fn docs_schema_graphql_matches_the_served_schema() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/schema.graphql");
    let current = api::graphql::sdl();
    if std::env::var("UPDATE_SCHEMA").is_ok_and(|v| v == "1") {
        std::fs::write(path, &current).expect("write docs/schema.graphql");
    }
    let stored = std::fs::read_to_string(path).unwrap_or_default();
    assert!(
        stored == current,
        "docs/schema.graphql is stale: run `UPDATE_SCHEMA=1 cargo test -p api --test schema_sdl`"
    );
}

#[test]
fn the_schema_keeps_the_contract_names() {
    let sdl = api::graphql::sdl();
    for name in [
        "enum TicketStatus",
        "enum Priority",
        "type TicketConnection",
        "type QueueConnection",
        "type PageInfo",
        "totalCount: Int!",
        "queuePosition: Int",
        "claimTicket(id: ID!): Ticket!",
        "assignTicket(id: ID!, agentId: ID!): Ticket!",
        "rateTicket(id: ID!, rating: Int!, feedback: String): Ticket!",
        "bulkAssignTickets(ids: [ID!]!, agentId: ID!): BulkResult!",
        "createTicket(input: CreateTicketInput!): Ticket!",
    ] {
        assert!(sdl.contains(name), "schema lacks `{name}`");
    }
}
