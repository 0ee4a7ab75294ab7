//! End to end: presence, capacity and automatic assignment, on every backend.

mod common;

use common::{admin, error_code, Server, TestDb};
use serde_json::{json, Value};
use std::time::Duration;

const TICKET: &str = "id number status priority assigneeId queuePosition";

/// Polls `probe` until it returns `Some`, at most 15 s.
async fn eventually<T, F, Fut>(what: &str, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        if let Some(value) = probe().await {
            return value;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn register(server: &Server, id: &str, max: i64, divisions: &[&str]) {
    server
        .data(
            &admin(),
            "mutation($id: ID!, $m: Int!, $d: [ID!]) { registerAgent(input: {id: $id, name: $id, maxTickets: $m, divisionIds: $d}) { id } }",
            json!({"id": id, "m": max, "d": divisions}),
        )
        .await;
}

async fn online(server: &Server, id: &str) {
    let agent = Server::token("acme", "agent", id);
    let answer = server
        .data(&agent, "mutation { goOnline { id online } }", json!({}))
        .await;
    assert_eq!(answer["goOnline"], json!({"id": id, "online": true}));
}

async fn offline(server: &Server, id: &str) {
    let agent = Server::token("acme", "agent", id);
    server
        .data(&agent, "mutation { goOffline { id } }", json!({}))
        .await;
}

async fn create(server: &Server, subject: &str, division: Option<&str>, priority: &str) -> Value {
    server
        .create_ticket(
            &admin(),
            json!({"subject": subject, "divisionId": division, "priority": priority}),
            TICKET,
        )
        .await
}

async fn ticket(server: &Server, id: &str) -> Value {
    server.ticket(&admin(), id, TICKET).await
}

async fn workload(server: &Server) -> Value {
    server
        .data(
            &admin(),
            "{ workload { agent { id } online activeTickets maxTickets eligible slotsAvailable lastAssignedAt } }",
            json!({}),
        )
        .await["workload"]
        .clone()
}

fn active_of(workload: &Value, agent: &str) -> i64 {
    workload
        .as_array()
        .unwrap()
        .iter()
        .find(|w| w["agent"]["id"] == agent)
        .unwrap_or_else(|| panic!("{agent} not in {workload}"))["activeTickets"]
        .as_i64()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn the_seed_picture_free_slot_full_offline_then_a_slot_frees() {
    for db in TestDb::all().await {
        let server = Server::start(&db).await;
        let billing = server.create_division(&admin(), "Billing").await;
        for id in ["ann", "ben", "cid"] {
            register(&server, id, 5, &[&billing]).await;
        }
        // Ben fills his five slots first (he is the only one online), then Ann takes three.
        online(&server, "ben").await;
        for i in 0..5 {
            let t = create(&server, &format!("ben {i}"), Some(&billing), "MEDIUM").await;
            assert_eq!(t["assigneeId"], "ben", "{:?} {t}", db.backend);
        }
        online(&server, "ann").await;
        for i in 0..3 {
            let t = create(&server, &format!("ann {i}"), Some(&billing), "MEDIUM").await;
            assert_eq!(t["assigneeId"], "ann", "{t}");
        }
        // A 3/5, B 5/5, C offline: the new ticket goes to A at once.
        let t = create(&server, "new", Some(&billing), "MEDIUM").await;
        assert_eq!(t["status"], "ASSIGNED");
        assert_eq!(t["assigneeId"], "ann");
        let t = create(&server, "new 2", Some(&billing), "MEDIUM").await;
        assert_eq!(t["assigneeId"], "ann");
        // Everyone online is full: tickets queue, in priority then age order.
        let low = create(&server, "low", Some(&billing), "LOW").await;
        let old_high = create(&server, "old high", Some(&billing), "HIGH").await;
        let new_high = create(&server, "new high", Some(&billing), "HIGH").await;
        assert_eq!(low["status"], "QUEUED");
        assert_eq!(low["assigneeId"], Value::Null);
        assert_eq!(old_high["queuePosition"], 1);
        assert_eq!(new_high["queuePosition"], 2);
        assert_eq!(
            ticket(&server, low["id"].as_str().unwrap()).await["queuePosition"],
            3
        );
        let w = workload(&server).await;
        assert_eq!(
            (
                active_of(&w, "ann"),
                active_of(&w, "ben"),
                active_of(&w, "cid")
            ),
            (5, 5, 0)
        );

        // Ann resolves one: the oldest highest-priority queued ticket goes to her.
        let ann = Server::token("acme", "agent", "ann");
        let mine = server
            .data(
                &ann,
                "{ myQueue { tickets { id } activeCount maxTickets slotsAvailable } }",
                json!({}),
            )
            .await["myQueue"]
            .clone();
        assert_eq!(
            (
                mine["activeCount"].as_i64(),
                mine["slotsAvailable"].as_i64()
            ),
            (Some(5), Some(0))
        );
        let first = mine["tickets"][0]["id"].as_str().unwrap().to_string();
        server.resolve_ticket(&ann, &first).await;
        let old_high_id = old_high["id"].as_str().unwrap();
        let got = eventually("the old HIGH ticket to reach ann", || async {
            let t = ticket(&server, old_high_id).await;
            (t["status"] == "ASSIGNED").then_some(t)
        })
        .await;
        assert_eq!(got["assigneeId"], "ann");
        let new_high_id = new_high["id"].as_str().unwrap();
        assert_eq!(ticket(&server, new_high_id).await["queuePosition"], 1);
        assert_eq!(active_of(&workload(&server).await, "ann"), 5);

        // Cid comes online: the remaining queue flows to him, still in order.
        online(&server, "cid").await;
        for id in [new_high_id, low["id"].as_str().unwrap()] {
            let t = eventually("cid to get the queue", || async {
                let t = ticket(&server, id).await;
                (t["status"] == "ASSIGNED").then_some(t)
            })
            .await;
            assert_eq!(t["assigneeId"], "cid");
        }
        server.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn round_robin_deals_thirty_tickets_ten_each_in_rotation() {
    for db in TestDb::all().await {
        let server = Server::start(&db).await;
        let support = server.create_division(&admin(), "Support").await;
        for id in ["ann", "ben", "cid"] {
            register(&server, id, 10, &[&support]).await;
            online(&server, id).await;
        }
        let mut owners = Vec::new();
        for i in 0..30 {
            let t = create(&server, &format!("t{i}"), Some(&support), "MEDIUM").await;
            owners.push(t["assigneeId"].as_str().unwrap_or("none").to_string());
        }
        // Never assigned ones first (by id), then the least recently assigned: a rotation.
        let first_three: Vec<&str> = owners[..3].iter().map(String::as_str).collect();
        assert_eq!(first_three, ["ann", "ben", "cid"], "{:?}", db.backend);
        for (i, owner) in owners.iter().enumerate() {
            assert_eq!(owner, &owners[i % 3], "ticket {i}: {owners:?}");
        }
        let w = workload(&server).await;
        for id in ["ann", "ben", "cid"] {
            assert_eq!(active_of(&w, id), 10);
        }
        // The 31st waits: everyone is full.
        let t = create(&server, "t30", Some(&support), "MEDIUM").await;
        assert_eq!(t["status"], "QUEUED");

        // Every automatic assignment records who was considered and why the winner won.
        let db = db.connect().await;
        let events =
            projections::event_log::read_after(&db, projections::Checkpoint::START, 10_000)
                .await
                .unwrap();
        let decisions: Vec<serde_json::Value> = events
            .iter()
            .filter(|e| e.event_type == "TicketAssigned")
            .map(|e| e.value().expect("stored payload")["TicketAssigned"].clone())
            .collect();
        assert_eq!(decisions.len(), 30);
        let fourth = &decisions[3];
        assert_eq!(fourth["via"], "auto");
        assert_eq!(fourth["agent_id"], "ann");
        let decision = &fourth["decision"];
        assert_eq!(decision["algorithm"], "ROUND_ROBIN");
        assert_eq!(decision["winner"], "ann");
        assert_eq!(decision["eligible"], 3);
        let considered: Vec<&str> = decision["considered"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["agent_id"].as_str().unwrap())
            .collect();
        assert_eq!(considered, ["ann", "ben", "cid"]);
        assert!(
            decision["reason"]
                .as_str()
                .unwrap()
                .starts_with("round robin: least recently assigned"),
            "{decision}"
        );
        assert_eq!(
            events
                .iter()
                .filter(|e| e.metadata.actor.id == "system:assignment"
                    && e.event_type == "TicketAssigned")
                .count(),
            30
        );
        db.close().await;
        server.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn claim_mode_divisions_wait_for_agents_within_their_divisions_and_capacity() {
    for db in TestDb::all().await {
        let server = Server::start(&db).await;
        let admin = admin();
        let sales = server
            .data(
                &admin,
                "mutation { createDivision(input: {name: \"Sales\", assignmentMode: CLAIM}) { id assignmentMode } }",
                json!({}),
            )
            .await["createDivision"]["id"]
            .as_str()
            .unwrap()
            .to_string();
        let other = server.create_division(&admin, "Other").await;
        register(&server, "ann", 2, &[&sales]).await;
        register(&server, "ben", 2, &[&other]).await;
        online(&server, "ann").await;
        let tickets: Vec<String> = {
            let mut ids = Vec::new();
            for i in 0..3 {
                let t = create(&server, &format!("s{i}"), Some(&sales), "MEDIUM").await;
                assert_eq!(t["status"], "QUEUED", "CLAIM mode never auto-assigns");
                ids.push(t["id"].as_str().unwrap().to_string());
            }
            ids
        };
        let ann = Server::token("acme", "agent", "ann");
        let ben = Server::token("acme", "agent", "ben");
        let claim = "mutation($id: ID!) { claimTicket(id: $id) { status assigneeId } }";
        let response = server
            .graphql(Some(&ben), claim, json!({"id": tickets[0]}))
            .await;
        assert_eq!(error_code(&response), Some("FORBIDDEN"), "{response}");
        for id in &tickets[..2] {
            let claimed = server.data(&ann, claim, json!({"id": id})).await;
            assert_eq!(
                claimed["claimTicket"],
                json!({"status": "ASSIGNED", "assigneeId": "ann"})
            );
        }
        let response = server
            .graphql(Some(&ann), claim, json!({"id": tickets[2]}))
            .await;
        assert_eq!(
            error_code(&response),
            Some("CAPACITY_REACHED"),
            "{response}"
        );
        assert_eq!(ticket(&server, &tickets[2]).await["status"], "QUEUED");
        // An admin may not bypass capacity either.
        let assign =
            "mutation($id: ID!, $a: ID!) { assignTicket(id: $id, agentId: $a) { assigneeId } }";
        let response = server
            .graphql(Some(&admin), assign, json!({"id": tickets[2], "a": "ann"}))
            .await;
        assert_eq!(
            error_code(&response),
            Some("CAPACITY_REACHED"),
            "{response}"
        );
        // Raising capacity does not push CLAIM work; the agent claims it.
        server
            .data(
                &admin,
                "mutation { setAgentCapacity(agentId: \"ann\", maxTickets: 3) { maxTickets } }",
                json!({}),
            )
            .await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(ticket(&server, &tickets[2]).await["status"], "QUEUED");
        server.data(&ann, claim, json!({"id": tickets[2]})).await;
        server.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn raising_capacity_and_reassigning_free_slots_for_the_queue() {
    for db in TestDb::all().await {
        let server = Server::start(&db).await;
        let admin = admin();
        register(&server, "ann", 1, &[]).await;
        register(&server, "ben", 1, &[]).await;
        online(&server, "ann").await;
        // Tickets without a division are served by every agent.
        let first = create(&server, "first", None, "MEDIUM").await;
        assert_eq!(first["assigneeId"], "ann");
        let second = create(&server, "second", None, "MEDIUM").await;
        assert_eq!(second["status"], "QUEUED");
        server
            .data(
                &admin,
                "mutation { setAgentCapacity(agentId: \"ann\", maxTickets: 2) { maxTickets } }",
                json!({}),
            )
            .await;
        let second_id = second["id"].as_str().unwrap();
        let t = eventually("capacity raise to pull the queue", || async {
            let t = ticket(&server, second_id).await;
            (t["status"] == "ASSIGNED").then_some(t)
        })
        .await;
        assert_eq!(t["assigneeId"], "ann");
        let third = create(&server, "third", None, "MEDIUM").await;
        assert_eq!(third["status"], "QUEUED");
        // Reassigning one of Ann's tickets to Ben (offline; admins may) frees her slot.
        let assign =
            "mutation($id: ID!, $a: ID!) { assignTicket(id: $id, agentId: $a) { assigneeId } }";
        server
            .data(&admin, assign, json!({"id": first["id"], "a": "ben"}))
            .await;
        let third_id = third["id"].as_str().unwrap();
        let t = eventually("the freed slot to take the queue", || async {
            let t = ticket(&server, third_id).await;
            (t["status"] == "ASSIGNED").then_some(t)
        })
        .await;
        assert_eq!(t["assigneeId"], "ann");
        // Ben (capacity 1) holds the reassigned ticket: a second one is refused.
        let response = server
            .graphql(Some(&admin), assign, json!({"id": second_id, "a": "ben"}))
            .await;
        assert_eq!(
            error_code(&response),
            Some("CAPACITY_REACHED"),
            "{response}"
        );
        server.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn offline_policy_keep_and_requeue_at_the_original_place() {
    for db in TestDb::all().await {
        let server = Server::start(&db).await;
        let admin = admin();
        register(&server, "ann", 5, &[]).await;
        online(&server, "ann").await;
        let kept = create(&server, "kept", None, "MEDIUM").await;
        let started = create(&server, "started", None, "MEDIUM").await;
        let ann = Server::token("acme", "agent", "ann");
        server
            .data(
                &ann,
                "mutation($id: ID!) { startTicket(id: $id) { status } }",
                json!({"id": started["id"]}),
            )
            .await;
        // KEEP (the default): going offline changes nothing.
        offline(&server, "ann").await;
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert_eq!(
            ticket(&server, kept["id"].as_str().unwrap()).await["assigneeId"],
            "ann"
        );

        let settings = server
            .data(&admin, "mutation { updateQueueSettings(input: {offlinePolicy: REQUEUE}) { offlinePolicy escalationAfterSeconds checkQueueKeyword } }", json!({}))
            .await;
        assert_eq!(
            settings["updateQueueSettings"],
            json!({"offlinePolicy": "REQUEUE", "escalationAfterSeconds": 300, "checkQueueKeyword": "#"})
        );
        // REQUEUE: the assigned, not started ticket goes back, ahead of tickets queued after
        // it was created; the started one stays.
        let later = create(&server, "later", None, "MEDIUM").await;
        assert_eq!(later["status"], "QUEUED");
        let kept_id = kept["id"].as_str().unwrap();
        let t = eventually("the requeue", || async {
            let t = ticket(&server, kept_id).await;
            (t["status"] == "QUEUED").then_some(t)
        })
        .await;
        assert_eq!(t["queuePosition"], 1);
        assert_eq!(
            ticket(&server, later["id"].as_str().unwrap()).await["queuePosition"],
            2
        );
        assert_eq!(
            ticket(&server, started["id"].as_str().unwrap()).await["status"],
            "IN_PROGRESS"
        );
        server.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn presence_is_the_agents_own_and_the_workload_is_for_admins() {
    for db in TestDb::all().await {
        let server = Server::start(&db).await;
        let admin = admin();
        register(&server, "ann", 5, &[]).await;
        register(&server, "ben", 5, &[]).await;
        online(&server, "ann").await;
        let agents = server
            .data(&admin, "{ agents { id online } }", json!({}))
            .await;
        assert_eq!(
            agents["agents"],
            json!([{"id": "ann", "online": true}, {"id": "ben", "online": false}])
        );
        let response = server
            .graphql(Some(&admin), "mutation { goOnline { id } }", json!({}))
            .await;
        assert_eq!(error_code(&response), Some("FORBIDDEN"));
        let ann = Server::token("acme", "agent", "ann");
        for query in [
            "{ workload { online } }",
            "mutation { setAgentCapacity(agentId: \"ben\", maxTickets: 9) { id } }",
            "mutation { updateQueueSettings(input: {enabled: true}) { enabled } }",
        ] {
            let response = server.graphql(Some(&ann), query, json!({})).await;
            assert_eq!(
                error_code(&response),
                Some("FORBIDDEN"),
                "{query}: {response}"
            );
        }
        let response = server
            .graphql(Some(&admin), "{ myQueue { activeCount } }", json!({}))
            .await;
        assert_eq!(error_code(&response), Some("FORBIDDEN"));
        // An unregistered agent has no queue and cannot claim.
        let stranger = Server::token("acme", "agent", "nobody");
        let response = server
            .graphql(Some(&stranger), "{ myQueue { activeCount } }", json!({}))
            .await;
        assert_eq!(error_code(&response), Some("NOT_FOUND"));
        offline(&server, "ann").await;
        let id = server.create_ticket_id(&admin, "waiting").await;
        let response = server
            .graphql(
                Some(&stranger),
                "mutation($id: ID!) { claimTicket(id: $id) { id } }",
                json!({"id": id}),
            )
            .await;
        assert_eq!(error_code(&response), Some("NOT_FOUND"), "{response}");
        // Bad settings are refused.
        let response = server
            .graphql(
                Some(&admin),
                "mutation { updateQueueSettings(input: {escalationAfterSeconds: -5}) { enabled } }",
                json!({}),
            )
            .await;
        assert_eq!(error_code(&response), Some("BAD_USER_INPUT"));
        let response = server
            .graphql(
                Some(&admin),
                "mutation { setAgentCapacity(agentId: \"ann\", maxTickets: 0) { id } }",
                json!({}),
            )
            .await;
        assert_eq!(error_code(&response), Some("BAD_USER_INPUT"));
        // Another organization sees nothing of acme's workload.
        let other = Server::token("globex", "admin", "root");
        assert_eq!(
            server
                .data(&other, "{ workload { online } }", json!({}))
                .await["workload"],
            json!([])
        );
        server.stop().await;
    }
}
