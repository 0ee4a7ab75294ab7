//! End to end: commands racing on the same ticket or organization, on every backend.

mod common;

use common::{admin, agent, error_code, Server, TestDb};
use futures::future::join_all;
use serde_json::{json, Value};

/// How many events of `event_type` the log holds for ticket `id`.
async fn ticket_events(database: &projections::Database, id: &str, event_type: &str) -> i64 {
    projections::on_backend!(database, |pool| sqlx::query_scalar(
        "SELECT COUNT(*) FROM events
          WHERE aggregate_type = 'Ticket' AND aggregate_id = $1 AND event_type = $2"
    )
    .bind(id)
    .bind(event_type)
    .fetch_one(pool)
    .await
    .expect("count events"))
}

/// How many comments race on one ticket.
const COMMENTS: usize = 10;
/// How many tickets get such a burst (races are probabilistic: several bursts per run).
const BURSTS: usize = 3;
/// How many claim races are run (each winner keeps its ticket).
const ROUNDS: usize = 20;

const CLAIM: &str = "mutation($id: ID!) { claimTicket(id: $id) { id status assigneeId } }";

#[tokio::test(flavor = "multi_thread")]
async fn simultaneous_claims_have_exactly_one_winner() {
    for db in TestDb::all().await {
        let b = db.backend;
        let server = Server::start(&db).await;
        let database = db.connect().await;
        let admin = admin();
        let agents = [("ann", agent("ann")), ("bob", agent("bob"))];
        // Room for every ticket of the run, so that neither agent ever reaches its capacity
        // and every round is a real race between the two.
        for (id, _) in &agents {
            server
                .data(
                    &admin,
                    "mutation($id: ID!, $max: Int!) { registerAgent(input: {id: $id, name: $id, maxTickets: $max}) { id } }",
                    json!({ "id": id, "max": ROUNDS }),
                )
                .await;
        }
        let mut wins = [0, 0];
        for round in 0..ROUNDS {
            let id = server
                .create_ticket_id(&admin, &format!("Race {round}"))
                .await;
            let (first, second) = tokio::join!(
                server.graphql(Some(&agents[0].1), CLAIM, json!({ "id": id })),
                server.graphql(Some(&agents[1].1), CLAIM, json!({ "id": id })),
            );
            let outcomes = [&first, &second];
            let winners: Vec<usize> = (0..2)
                .filter(|&i| outcomes[i].get("errors").is_none())
                .collect();
            assert_eq!(
                winners.len(),
                1,
                "{b:?}: round {round}: exactly one claim wins: {first} / {second}"
            );
            let winner = winners[0];
            let loser = 1 - winner;
            wins[winner] += 1;
            let won = &outcomes[winner]["data"]["claimTicket"];
            assert_eq!(won["status"], "ASSIGNED", "{b:?}: {won}");
            assert_eq!(won["assigneeId"], agents[winner].0, "{b:?}: {won}");
            let code = error_code(outcomes[loser]);
            assert!(
                matches!(code, Some("CONFLICT") | Some("INVALID_TRANSITION")),
                "{b:?}: round {round}: the loser gets CONFLICT or INVALID_TRANSITION: {}",
                outcomes[loser]
            );
            let now = server
                .data(
                    &admin,
                    "query($id: ID!) { ticket(id: $id) { status assigneeId queuePosition } }",
                    json!({ "id": id }),
                )
                .await;
            assert_eq!(
                now["ticket"],
                json!({"status": "ASSIGNED", "assigneeId": agents[winner].0, "queuePosition": null}),
                "{b:?}: round {round}"
            );
            assert_eq!(
                ticket_events(&database, &id, "TicketAssigned").await,
                1,
                "{b:?}: round {round}: the log holds one TicketAssigned"
            );
        }
        eprintln!("{b:?}: claim races won: ann {}, bob {}", wins[0], wins[1]);
        let queue = server
            .data(&admin, "{ queue { totalCount } }", json!({}))
            .await;
        assert_eq!(queue["queue"]["totalCount"], 0, "{b:?}");
        database.close().await;
        server.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn concurrent_creations_get_distinct_consecutive_numbers() {
    for db in TestDb::all().await {
        let b = db.backend;
        let server = Server::start(&db).await;
        let admin = admin();
        let service = Server::token("acme", "service", "bot");
        let responses: Vec<Value> = join_all((0..8).map(|i| {
            let token = if i % 2 == 0 { &admin } else { &service };
            server.graphql(
                Some(token),
                "mutation($s: String!) { createTicket(input: {subject: $s}) { id number queuePosition } }",
                json!({ "s": format!("Burst {i}") }),
            )
        }))
        .await;
        let mut numbers = Vec::new();
        let mut ids = Vec::new();
        let mut positions = Vec::new();
        for response in &responses {
            assert!(response.get("errors").is_none(), "{b:?}: {response}");
            let ticket = &response["data"]["createTicket"];
            numbers.push(ticket["number"].as_i64().unwrap());
            ids.push(ticket["id"].as_str().unwrap().to_string());
            positions.push(ticket["queuePosition"].as_i64().unwrap());
        }
        numbers.sort();
        assert_eq!(numbers, (1..=8).collect::<Vec<i64>>(), "{b:?}");
        ids.sort();
        ids.dedup();
        assert_eq!(ids.len(), 8, "{b:?}");
        assert!(
            positions.iter().all(|p| (1..=8).contains(p)),
            "{b:?}: {positions:?}"
        );
        let list = server
            .data(
                &admin,
                "{ tickets(first: 20) { totalCount edges { node { number } } }
                   queue(first: 20) { totalCount edges { node { position ticket { number } } } } }",
                json!({}),
            )
            .await;
        assert_eq!(list["tickets"]["totalCount"], 8, "{b:?}");
        let listed: Vec<i64> = list["tickets"]["edges"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["node"]["number"].as_i64().unwrap())
            .collect();
        assert_eq!(listed, (1..=8).rev().collect::<Vec<i64>>(), "{b:?}");
        let queue_positions: Vec<i64> = list["queue"]["edges"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["node"]["position"].as_i64().unwrap())
            .collect();
        assert_eq!(queue_positions, (1..=8).collect::<Vec<i64>>(), "{b:?}");
        // The next one continues the sequence.
        let next = server
            .data(
                &admin,
                "mutation { createTicket(input: {subject: \"after\"}) { number } }",
                json!({}),
            )
            .await;
        assert_eq!(next["createTicket"]["number"], 9, "{b:?}");
        server.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn concurrent_comments_all_land_exactly_once() {
    for db in TestDb::all().await {
        let b = db.backend;
        let server = Server::start(&db).await;
        let admin = admin();
        let ann = agent("ann");
        let service = Server::token("acme", "service", "bot");
        server.register_agents(&admin, &["ann"]).await;
        let database = db.connect().await;
        for burst in 0..BURSTS {
            let id = server
                .create_ticket_id(&admin, &format!("Busy ticket {burst}"))
                .await;
            server.claim_ticket(&ann, &id).await;
            let writers = [&admin, &ann, &service];
            let responses: Vec<Value> = join_all((0..COMMENTS).map(|i| {
                server.graphql(
                    Some(writers[i % 3]),
                    "mutation($id: ID!, $t: String!) { addComment(ticketId: $id, text: $t) { id text } }",
                    json!({ "id": id, "t": format!("comment {i}") }),
                )
            }))
            .await;
            let failures: Vec<&str> = responses
                .iter()
                .filter(|r| r.get("errors").is_some())
                .map(|r| error_code(r).unwrap_or("no code"))
                .collect();
            assert!(
                failures.is_empty(),
                "{b:?}: burst {burst}: every concurrent comment succeeds (the conflict retry absorbs \
                 the races), but {} of {COMMENTS} failed with {failures:?}",
                failures.len()
            );
            let mut returned = Vec::new();
            for response in &responses {
                returned.push(
                    response["data"]["addComment"]["text"]
                        .as_str()
                        .unwrap()
                        .to_string(),
                );
            }
            returned.sort();
            let mut expected: Vec<String> = (0..COMMENTS).map(|i| format!("comment {i}")).collect();
            expected.sort();
            assert_eq!(returned, expected, "{b:?}");

            let ticket = server
                .data(
                    &admin,
                    "query($id: ID!) { ticket(id: $id) { status assigneeId comments { id text authorId } } }",
                    json!({ "id": id }),
                )
                .await;
            assert_eq!(ticket["ticket"]["status"], "ASSIGNED", "{b:?}");
            assert_eq!(ticket["ticket"]["assigneeId"], "ann", "{b:?}");
            let comments = ticket["ticket"]["comments"].as_array().unwrap();
            let mut texts: Vec<String> = comments
                .iter()
                .map(|c| c["text"].as_str().unwrap().to_string())
                .collect();
            texts.sort();
            assert_eq!(texts, expected, "{b:?}: each comment appears exactly once");
            let mut comment_ids: Vec<&str> =
                comments.iter().map(|c| c["id"].as_str().unwrap()).collect();
            comment_ids.sort();
            comment_ids.dedup();
            assert_eq!(comment_ids.len(), COMMENTS, "{b:?}");
            for (i, comment) in comments.iter().enumerate() {
                let n: usize = comment["text"].as_str().unwrap()["comment ".len()..]
                    .parse()
                    .unwrap();
                let author = ["boss", "ann", "bot"][n % 3];
                assert_eq!(comment["authorId"], author, "{b:?}: comment {i}");
            }
            assert_eq!(
                ticket_events(&database, &id, "CommentAdded").await,
                COMMENTS as i64,
                "{b:?}"
            );
        }
        database.close().await;
        server.stop().await;
    }
}
