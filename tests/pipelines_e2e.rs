//! Pipelines (issue 6) end to end, on every backend: building a pipeline and ordering its
//! stages, placing and moving cards (positions, pagination, history), removing a stage
//! that holds cards, two users moving the same cards at once, stage automation, board
//! filters, and tenancy and roles.

mod common;

use common::{admin, agent, error_code, Server, TestDb};
use futures::future::join_all;
use serde_json::{json, Value};
use std::time::Duration;

const PIPELINE: &str = "id name isDefault archived stages { id name position cardCount }";
const CARD: &str = "id pipelineId stageId conversationId position customerName lastMessage
    labels automationPending automation { type value ok detail } automationRanAt assignee { id }
    history { fromStageId toStageId movedBy movedByRole secondsInPreviousStage }";

fn service() -> String {
    Server::token("acme", "service", "whatsapp-bridge")
}

fn analyst() -> String {
    Server::token("acme", "analyst", "ana")
}

fn foreign_admin() -> String {
    Server::token("globex", "admin", "gina")
}

fn id_of(value: &Value) -> String {
    value["id"]
        .as_str()
        .unwrap_or_else(|| panic!("no id in {value}"))
        .to_string()
}

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

/// A customer message on WhatsApp (queue mode is off: the conversation gets a ticket at
/// once); returns the conversation with its ticket.
async fn say(server: &Server, phone: &str, name: &str, text: &str) -> Value {
    let input = json!({ "channel": "WHATSAPP", "externalId": phone, "customerName": name,
                        "text": text, "externalMessageId": uuid::Uuid::new_v4().to_string() });
    server
        .data(
            &service(),
            "mutation($input: ReceiveMessageInput!) { receiveMessage(input: $input) {
                id customerName ticket { id status priority assigneeId } } }",
            json!({ "input": input }),
        )
        .await["receiveMessage"]
        .clone()
}

async fn create_pipeline(server: &Server, token: &str, name: &str) -> Value {
    let query = format!(
        "mutation($n: String!) {{ createPipeline(input: {{ name: $n }}) {{ {PIPELINE} }} }}"
    );
    server.data(token, &query, json!({ "n": name })).await["createPipeline"].clone()
}

const ADD_STAGE: &str = "mutation($p: ID!, $input: AddStageInput!) {
    addStage(pipelineId: $p, input: $input) { id pipelineId name color isClosedStage position
    cardCount automation { type value } } }";

/// `addStage` as the admin, the raw response.
async fn add_stage_raw(server: &Server, pipeline: &str, input: Value) -> Value {
    server
        .graphql(
            Some(&admin()),
            ADD_STAGE,
            json!({ "p": pipeline, "input": input }),
        )
        .await
}

/// Adds a stage as the admin and returns it.
async fn add_stage(server: &Server, pipeline: &str, input: Value) -> Value {
    let response = add_stage_raw(server, pipeline, input).await;
    assert!(response.get("errors").is_none(), "addStage: {response}");
    response["data"]["addStage"].clone()
}

/// Adds a plain stage at the end and returns its id.
async fn stage(server: &Server, pipeline: &str, name: &str) -> String {
    id_of(&add_stage(server, pipeline, json!({ "name": name })).await)
}

async fn pipeline(server: &Server, token: &str, id: &str) -> Value {
    let query = format!("query($id: ID!) {{ pipeline(id: $id) {{ {PIPELINE} }} }}");
    server.data(token, &query, json!({ "id": id })).await["pipeline"].clone()
}

/// The names of a pipeline's stages, in order; checks their positions are 0, 1, 2, ...
async fn stage_names(server: &Server, id: &str) -> Vec<String> {
    let p = pipeline(server, &admin(), id).await;
    let stages = p["stages"].as_array().expect("stages");
    for (i, s) in stages.iter().enumerate() {
        assert_eq!(s["position"], i as i64, "{p}");
    }
    stages
        .iter()
        .map(|s| s["name"].as_str().expect("name").to_string())
        .collect()
}

const PLACE: &str = "mutation($p: ID!, $c: ID!, $s: ID, $at: Int) {
    placeCard(pipelineId: $p, conversationId: $c, stageId: $s, position: $at) {
    id pipelineId stageId conversationId position labels automationPending
    history { fromStageId toStageId movedBy movedByRole secondsInPreviousStage } } }";

async fn place_raw(
    server: &Server,
    token: &str,
    pipeline: &str,
    conversation: &str,
    stage: Option<&str>,
    position: Option<i64>,
) -> Value {
    server
        .graphql(
            Some(token),
            PLACE,
            json!({ "p": pipeline, "c": conversation, "s": stage, "at": position }),
        )
        .await
}

/// Places a conversation as the admin; returns the card.
async fn place(
    server: &Server,
    pipeline: &str,
    conversation: &str,
    stage: Option<&str>,
    position: Option<i64>,
) -> Value {
    let response = place_raw(server, &admin(), pipeline, conversation, stage, position).await;
    assert!(response.get("errors").is_none(), "placeCard: {response}");
    response["data"]["placeCard"].clone()
}

const MOVE: &str = "mutation($c: ID!, $s: ID!, $at: Int) {
    moveCard(cardId: $c, toStageId: $s, position: $at) { id stageId position } }";

async fn move_raw(
    server: &Server,
    token: &str,
    card: &str,
    stage: &str,
    position: Option<i64>,
) -> Value {
    server
        .graphql(
            Some(token),
            MOVE,
            json!({ "c": card, "s": stage, "at": position }),
        )
        .await
}

/// Moves a card; panics on errors and returns it.
async fn move_card(
    server: &Server,
    token: &str,
    card: &str,
    stage: &str,
    position: Option<i64>,
) -> Value {
    let response = move_raw(server, token, card, stage, position).await;
    assert!(response.get("errors").is_none(), "moveCard: {response}");
    response["data"]["moveCard"].clone()
}

/// The card `id` as `token` sees it (null when it cannot).
async fn card(server: &Server, token: &str, id: &str) -> Value {
    let query = format!("query($id: ID!) {{ card(id: $id) {{ {CARD} }} }}");
    server.data(token, &query, json!({ "id": id })).await["card"].clone()
}

const BOARD: &str = "query($p: ID!, $f: BoardFilterInput, $n: Int) {
    board(pipelineId: $p, filter: $f, first: $n) { pipeline { id name }
    stages { stage { id name position cardCount } count hasMore endCursor
             cards { id stageId position customerName lastMessage labels assignee { id } } } } }";

async fn board_raw(
    server: &Server,
    token: &str,
    pipeline: &str,
    filter: Value,
    first: Option<i64>,
) -> Value {
    server
        .graphql(
            Some(token),
            BOARD,
            json!({ "p": pipeline, "f": filter, "n": first }),
        )
        .await
}

async fn board(
    server: &Server,
    token: &str,
    pipeline: &str,
    filter: Value,
    first: Option<i64>,
) -> Value {
    let response = board_raw(server, token, pipeline, filter, first).await;
    assert!(response.get("errors").is_none(), "board: {response}");
    response["data"]["board"].clone()
}

/// A board column: its stage's name, its count and its cards' ids in order.
type Column = (String, i64, Vec<String>);

/// The board's columns; checks each card sits in its column's stage at its index.
fn columns(board: &Value) -> Vec<Column> {
    board["stages"]
        .as_array()
        .expect("stages")
        .iter()
        .map(|column| {
            let stage_id = &column["stage"]["id"];
            let cards = column["cards"].as_array().expect("cards");
            // `position` is the place among all the stage's cards: in order, and the index
            // itself when the column shows every card of the stage.
            let whole = column["stage"]["cardCount"] == cards.len() as i64;
            let mut previous = -1;
            for (i, c) in cards.iter().enumerate() {
                assert_eq!(&c["stageId"], stage_id, "{board}");
                let position = c["position"].as_i64().expect("position");
                assert!(position > previous, "{board}");
                if whole {
                    assert_eq!(position, i as i64, "{board}");
                }
                previous = position;
            }
            (
                column["stage"]["name"].as_str().expect("name").to_string(),
                column["count"].as_i64().expect("count"),
                cards.iter().map(id_of).collect(),
            )
        })
        .collect()
}

fn col(name: &str, count: i64, cards: &[&String]) -> Column {
    (
        name.to_string(),
        count,
        cards.iter().map(|c| c.to_string()).collect(),
    )
}

const STAGE_CARDS: &str = "query($s: ID!, $f: BoardFilterInput, $n: Int, $after: String) {
    stageCards(stageId: $s, filter: $f, first: $n, after: $after) {
    totalCount pageInfo { hasNextPage endCursor } edges { cursor node { id stageId } } } }";

/// One page of `stageCards`: the card ids, whether more follow, the end cursor, the total.
async fn stage_cards(
    server: &Server,
    stage: &str,
    filter: Value,
    first: i64,
    after: Option<&str>,
) -> (Vec<String>, bool, Option<String>, i64) {
    let page = server
        .data(
            &admin(),
            STAGE_CARDS,
            json!({ "s": stage, "f": filter, "n": first, "after": after }),
        )
        .await["stageCards"]
        .clone();
    let ids: Vec<String> = page["edges"]
        .as_array()
        .expect("edges")
        .iter()
        .map(|e| {
            assert_eq!(e["node"]["stageId"], stage);
            id_of(&e["node"])
        })
        .collect();
    (
        ids,
        page["pageInfo"]["hasNextPage"].as_bool().expect("hasNext"),
        page["pageInfo"]["endCursor"].as_str().map(str::to_string),
        page["totalCount"].as_i64().expect("totalCount"),
    )
}

/// Waits until the card's stage automation has run; returns the card.
async fn automated(server: &Server, id: &str) -> Value {
    eventually("the stage automation to run", || async {
        let c = card(server, &admin(), id).await;
        (c["automationPending"] == false && !c["automation"].as_array()?.is_empty()).then_some(c)
    })
    .await
}

async fn ticket(server: &Server, id: &str) -> Value {
    server
        .ticket(&admin(), id, "id status priority assigneeId")
        .await
}

async fn register(server: &Server, token: &str, id: &str, max: i64) {
    server
        .data(
            token,
            "mutation($id: ID!, $m: Int!) { registerAgent(input: {id: $id, name: $id, maxTickets: $m}) { id } }",
            json!({ "id": id, "m": max }),
        )
        .await;
}

async fn online(server: &Server, id: &str) {
    server
        .data(&agent(id), "mutation { goOnline { online } }", json!({}))
        .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn building_a_pipeline_places_and_reorders_its_stages() {
    for db in TestDb::all().await {
        let server = Server::start(&db).await;
        let admin = admin();
        let sales = create_pipeline(&server, &admin, "Sales").await;
        assert_eq!(
            sales["isDefault"], true,
            "the first pipeline is the default"
        );
        assert_eq!(sales["archived"], false);
        assert_eq!(sales["stages"], json!([]));
        let sales = id_of(&sales);
        let support = create_pipeline(&server, &admin, "Support").await;
        assert_eq!(support["isDefault"], false);
        let support = id_of(&support);

        // Without a position a stage goes last; with one it goes there.
        let lead = add_stage(&server, &sales, json!({ "name": "Lead" })).await;
        assert_eq!(lead["position"], 0);
        assert_eq!(lead["pipelineId"], sales.as_str());
        assert_eq!(lead["cardCount"], 0);
        let won = add_stage(
            &server,
            &sales,
            json!({ "name": "Won", "isClosedStage": true, "color": "#00aa00" }),
        )
        .await;
        assert_eq!(won["position"], 1);
        assert_eq!(won["isClosedStage"], true);
        assert_eq!(won["color"], "#00AA00");
        let qualified = add_stage(
            &server,
            &sales,
            json!({ "name": "Qualified", "position": 1 }),
        )
        .await;
        assert_eq!(qualified["position"], 1);
        let inbox = add_stage(&server, &sales, json!({ "name": "Inbox", "position": 0 })).await;
        assert_eq!(inbox["position"], 0);
        let lost = add_stage(&server, &sales, json!({ "name": "Lost", "position": 99 })).await;
        assert_eq!(lost["position"], 4, "past the end: last");
        let order = ["Inbox", "Lead", "Qualified", "Won", "Lost"];
        assert_eq!(stage_names(&server, &sales).await, order);
        let ids: Vec<String> = [&inbox, &lead, &qualified, &won, &lost]
            .iter()
            .map(|s| id_of(s))
            .collect();
        let other = stage(&server, &support, "Triage").await;

        // A reorder naming a stranger, a stage twice, too few stages, a stage of another
        // pipeline or too many stages is refused, and nothing moves.
        let reorder =
            "mutation($p: ID!, $s: [ID!]!) { reorderStages(pipelineId: $p, stageIds: $s) {
            stages { name position } } }";
        let unknown = uuid::Uuid::new_v4().to_string();
        let bad_orders = [
            vec![&ids[4], &ids[3], &ids[2], &ids[1], &unknown],
            vec![&ids[4], &ids[3], &ids[2], &ids[1], &ids[1]],
            vec![&ids[4], &ids[3], &ids[2], &ids[1]],
            vec![&ids[4], &ids[3], &ids[2], &ids[1], &other],
            vec![&ids[4], &ids[3], &ids[2], &ids[1], &ids[0], &ids[0]],
            vec![],
        ];
        for bad in bad_orders {
            let response = server
                .graphql(Some(&admin), reorder, json!({ "p": sales, "s": bad }))
                .await;
            assert_eq!(
                error_code(&response),
                Some("BAD_USER_INPUT"),
                "{bad:?}: {response} ({:?})",
                db.backend
            );
            assert_eq!(stage_names(&server, &sales).await, order);
        }

        // A valid reorder changes the board's columns.
        let reversed: Vec<&String> = ids.iter().rev().collect();
        let answer = server
            .data(&admin, reorder, json!({ "p": sales, "s": reversed }))
            .await;
        assert_eq!(
            answer["reorderStages"]["stages"],
            json!([{"name": "Lost", "position": 0}, {"name": "Won", "position": 1},
                   {"name": "Qualified", "position": 2}, {"name": "Lead", "position": 3},
                   {"name": "Inbox", "position": 4}])
        );
        let b = board(&server, &admin, &sales, json!(null), None).await;
        assert_eq!(b["pipeline"]["name"], "Sales");
        let names: Vec<&str> = b["stages"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["stage"]["name"].as_str().unwrap())
            .collect();
        assert_eq!(names, ["Lost", "Won", "Qualified", "Lead", "Inbox"]);
        for (i, c) in b["stages"].as_array().unwrap().iter().enumerate() {
            assert_eq!(c["stage"]["position"], i as i64);
            assert_eq!(c["stage"]["id"], ids[4 - i].as_str());
        }

        // One default at a time; archiving the default hands it to the oldest active one.
        let listed = |token: String| {
            let server = &server;
            async move {
                server
                    .data(&token, "{ pipelines { name isDefault } }", json!({}))
                    .await["pipelines"]
                    .clone()
            }
        };
        assert_eq!(
            listed(admin.clone()).await,
            json!([{"name": "Sales", "isDefault": true}, {"name": "Support", "isDefault": false}])
        );
        let set = server
            .data(
                &admin,
                "mutation($id: ID!) { setDefaultPipeline(id: $id) { isDefault } }",
                json!({ "id": support }),
            )
            .await;
        assert_eq!(set["setDefaultPipeline"]["isDefault"], true);
        assert_eq!(
            listed(admin.clone()).await,
            json!([{"name": "Sales", "isDefault": false}, {"name": "Support", "isDefault": true}])
        );
        let archived = server
            .data(
                &admin,
                "mutation($id: ID!) { archivePipeline(id: $id) { archived isDefault } }",
                json!({ "id": support }),
            )
            .await;
        assert_eq!(
            archived["archivePipeline"],
            json!({"archived": true, "isDefault": false})
        );
        assert_eq!(
            listed(admin.clone()).await,
            json!([{"name": "Sales", "isDefault": true}])
        );
        server.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn cards_are_placed_moved_paged_and_remember_their_moves() {
    for db in TestDb::all().await {
        let server = Server::start(&db).await;
        let admin = admin();
        let sales = id_of(&create_pipeline(&server, &admin, "Sales").await);
        let s1 = stage(&server, &sales, "New").await;
        let s2 = stage(&server, &sales, "Talking").await;
        let s3 = stage(&server, &sales, "Won").await;
        let other = id_of(&create_pipeline(&server, &admin, "Other").await);
        let t1 = stage(&server, &other, "Elsewhere").await;
        let mut conversations = Vec::new();
        for i in 0..5 {
            let c = say(
                &server,
                &format!("+62810{i}"),
                &format!("Customer {i}"),
                "halo",
            )
            .await;
            conversations.push(id_of(&c));
        }

        // Without a stage a card lands in the first stage; its placement is its history.
        let first = place(&server, &sales, &conversations[0], None, None).await;
        assert_eq!(first["stageId"], s1.as_str());
        assert_eq!(first["pipelineId"], sales.as_str());
        assert_eq!(first["conversationId"], conversations[0].as_str());
        assert_eq!(first["position"], 0);
        assert_eq!(
            first["history"],
            json!([{ "fromStageId": null, "toStageId": s1, "movedBy": "boss",
                     "movedByRole": "admin", "secondsInPreviousStage": null }])
        );
        let c1 = id_of(&first);
        // Once per conversation and pipeline; another pipeline is another card.
        let again = place_raw(&server, &admin, &sales, &conversations[0], Some(&s2), None).await;
        assert_eq!(error_code(&again), Some("CONFLICT"), "{again}");
        assert_eq!(card(&server, &admin, &c1).await["stageId"], s1.as_str());
        let elsewhere = place(&server, &other, &conversations[0], None, None).await;
        assert_ne!(id_of(&elsewhere), c1);
        assert_eq!(elsewhere["stageId"], t1.as_str());
        // Placing into a stage of another pipeline is refused.
        let wrong = place_raw(&server, &admin, &sales, &conversations[1], Some(&t1), None).await;
        assert_eq!(error_code(&wrong), Some("BAD_USER_INPUT"), "{wrong}");

        // Positions: none = last, 0 = top, past the end = last.
        let c2 = id_of(&place(&server, &sales, &conversations[1], Some(&s2), None).await);
        let c3 = id_of(&place(&server, &sales, &conversations[2], Some(&s2), Some(0)).await);
        let c4 = id_of(&place(&server, &sales, &conversations[3], Some(&s2), Some(1)).await);
        let placed = place(&server, &sales, &conversations[4], Some(&s2), Some(99)).await;
        assert_eq!(placed["position"], 3);
        let c5 = id_of(&placed);
        let b = board(&server, &admin, &sales, json!(null), None).await;
        assert_eq!(
            columns(&b),
            vec![
                col("New", 1, &[&c1]),
                col("Talking", 4, &[&c3, &c4, &c2, &c5]),
                col("Won", 0, &[]),
            ]
        );
        let moved = move_card(&server, &admin, &c1, &s2, Some(0)).await;
        assert_eq!(moved, json!({ "id": c1, "stageId": s2, "position": 0 }));
        // Within a stage: a new place only.
        let moved = move_card(&server, &admin, &c5, &s2, Some(1)).await;
        assert_eq!(moved["position"], 1);
        let moved = move_card(&server, &admin, &c1, &s2, Some(100)).await;
        assert_eq!(moved["position"], 4);
        let b = board(&server, &admin, &sales, json!(null), None).await;
        assert_eq!(
            columns(&b),
            vec![
                col("New", 0, &[]),
                col("Talking", 5, &[&c5, &c3, &c4, &c2, &c1]),
                col("Won", 0, &[]),
            ]
        );
        assert_eq!(b["stages"][0]["stage"]["cardCount"], 0);
        assert_eq!(b["stages"][1]["stage"]["cardCount"], 5);

        // The board shows a page per column; stageCards continues after its end cursor.
        let b = board(&server, &admin, &sales, json!(null), Some(2)).await;
        assert_eq!(
            columns(&b),
            vec![
                col("New", 0, &[]),
                col("Talking", 5, &[&c5, &c3]),
                col("Won", 0, &[]),
            ]
        );
        assert_eq!(b["stages"][0]["hasMore"], false);
        assert_eq!(b["stages"][0]["endCursor"], Value::Null);
        assert_eq!(b["stages"][1]["hasMore"], true);
        let cursor = b["stages"][1]["endCursor"].as_str().expect("cursor");
        let (ids, more, cursor, total) =
            stage_cards(&server, &s2, json!(null), 2, Some(cursor)).await;
        assert_eq!((ids, more, total), (vec![c4.clone(), c2.clone()], true, 5));
        let (ids, more, end, total) =
            stage_cards(&server, &s2, json!(null), 2, cursor.as_deref()).await;
        assert_eq!((ids, more, total), (vec![c1.clone()], false, 5));
        let (ids, more, _, _) = stage_cards(&server, &s2, json!(null), 2, end.as_deref()).await;
        assert_eq!((ids, more), (vec![], false));
        let (ids, more, _, total) = stage_cards(&server, &s2, json!(null), 100, None).await;
        assert_eq!(
            (ids, more, total),
            (
                vec![c5.clone(), c3.clone(), c4.clone(), c2.clone(), c1.clone()],
                false,
                5
            )
        );
        let (ids, more, _, total) = stage_cards(&server, &s3, json!(null), 10, None).await;
        assert_eq!((ids, more, total), (vec![], false, 0));
        for first in [0, 101] {
            let response = board_raw(&server, &admin, &sales, json!(null), Some(first)).await;
            assert_eq!(error_code(&response), Some("BAD_USER_INPUT"), "{response}");
        }

        // A stage of another pipeline is refused; the card stays where it was.
        let response = move_raw(&server, &admin, &c1, &t1, Some(0)).await;
        assert_eq!(error_code(&response), Some("BAD_USER_INPUT"), "{response}");
        let unmoved = card(&server, &admin, &c1).await;
        assert_eq!(unmoved["stageId"], s2.as_str());
        assert_eq!(unmoved["position"], 4);
        assert_eq!(unmoved["history"].as_array().unwrap().len(), 2);
        let response = move_raw(
            &server,
            &admin,
            &c1,
            &uuid::Uuid::new_v4().to_string(),
            None,
        )
        .await;
        assert_eq!(error_code(&response), Some("NOT_FOUND"), "{response}");
        let response = move_raw(&server, &admin, &c1, &s3, Some(-1)).await;
        assert_eq!(error_code(&response), Some("BAD_USER_INPUT"), "{response}");
        assert_eq!(
            columns(&board(&server, &admin, &sales, json!(null), None).await),
            vec![
                col("New", 0, &[]),
                col("Talking", 5, &[&c5, &c3, &c4, &c2, &c1]),
                col("Won", 0, &[]),
            ]
        );

        // History: the placement, then each move between stages with who and how long.
        let moved = move_card(&server, &agent("sari"), &c2, &s3, None).await;
        assert_eq!(moved["stageId"], s3.as_str());
        let history = card(&server, &admin, &c2).await["history"].clone();
        let entries = history.as_array().expect("history");
        assert_eq!(entries.len(), 2, "{history}");
        assert_eq!(
            entries[0],
            json!({ "fromStageId": null, "toStageId": s2, "movedBy": "boss",
                    "movedByRole": "admin", "secondsInPreviousStage": null })
        );
        assert_eq!(entries[1]["fromStageId"], s2.as_str());
        assert_eq!(entries[1]["toStageId"], s3.as_str());
        assert_eq!(entries[1]["movedBy"], "sari");
        assert_eq!(entries[1]["movedByRole"], "agent");
        assert!(
            entries[1]["secondsInPreviousStage"]
                .as_i64()
                .is_some_and(|s| s >= 0),
            "{history}"
        );
        let history = card(&server, &admin, &c1).await["history"].clone();
        let entries = history.as_array().expect("history");
        assert_eq!(
            entries.len(),
            2,
            "moves within a stage add no entry: {history}"
        );
        assert_eq!(entries[0]["toStageId"], s1.as_str());
        assert_eq!(entries[1]["fromStageId"], s1.as_str());
        assert_eq!(entries[1]["toStageId"], s2.as_str());
        assert!(entries[1]["secondsInPreviousStage"].is_i64(), "{history}");

        // Two cards taking turns at place 1 halve the gap between ranks each time, until the
        // stage is renumbered: the order stays exactly what the moves asked for.
        move_card(&server, &admin, &c5, &s3, None).await;
        for turn in 0..24 {
            let mover = if turn % 2 == 0 { &c3 } else { &c4 };
            let moved = move_card(&server, &admin, mover, &s3, Some(1)).await;
            assert_eq!(moved["position"], 1, "turn {turn}");
            assert_eq!(moved["stageId"], s3.as_str());
        }
        let b = board(&server, &admin, &sales, json!(null), None).await;
        assert_eq!(
            columns(&b),
            vec![
                col("New", 0, &[]),
                col("Talking", 1, &[&c1]),
                col("Won", 4, &[&c2, &c4, &c3, &c5]),
            ]
        );
        let (ids, more, cursor, _) = stage_cards(&server, &s3, json!(null), 3, None).await;
        assert_eq!(
            (ids, more),
            (vec![c2.clone(), c4.clone(), c3.clone()], true)
        );
        let (ids, more, _, _) = stage_cards(&server, &s3, json!(null), 3, cursor.as_deref()).await;
        assert_eq!((ids, more), (vec![c5.clone()], false));
        server.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn removing_a_stage_moves_its_cards_to_the_named_stage() {
    for db in TestDb::all().await {
        let server = Server::start(&db).await;
        let admin = admin();
        let sales = id_of(&create_pipeline(&server, &admin, "Sales").await);
        let s1 = stage(&server, &sales, "New").await;
        let s2 = stage(&server, &sales, "Doomed").await;
        let s3 = stage(&server, &sales, "Kept").await;
        let mut cards = Vec::new();
        for (i, target) in [&s1, &s2, &s2, &s2, &s3].iter().enumerate() {
            let c = say(&server, &format!("+62820{i}"), "Pelanggan", "halo").await;
            cards.push(id_of(
                &place(&server, &sales, &id_of(&c), Some(target), None).await,
            ));
        }
        let remove = "mutation($s: ID!, $to: ID) { removeStage(stageId: $s, moveCardsTo: $to) {
            stages { id name position cardCount } } }";

        // A stage holding cards needs somewhere to send them.
        let response = server
            .graphql(Some(&admin), remove, json!({ "s": s2 }))
            .await;
        assert_eq!(
            error_code(&response),
            Some("INVALID_TRANSITION"),
            "{response}"
        );
        let response = server
            .graphql(Some(&admin), remove, json!({ "s": s2, "to": s2 }))
            .await;
        assert_eq!(error_code(&response), Some("BAD_USER_INPUT"), "{response}");
        let unchanged = board(&server, &admin, &sales, json!(null), None).await;
        assert_eq!(
            columns(&unchanged),
            vec![
                col("New", 1, &[&cards[0]]),
                col("Doomed", 3, &[&cards[1], &cards[2], &cards[3]]),
                col("Kept", 1, &[&cards[4]]),
            ]
        );
        // An empty stage goes without one.
        let empty = stage(&server, &sales, "Empty").await;
        let after = server.data(&admin, remove, json!({ "s": empty })).await;
        assert_eq!(
            after["removeStage"]["stages"].as_array().unwrap().len(),
            3,
            "{after}"
        );

        let after = server
            .data(&admin, remove, json!({ "s": s2, "to": s3 }))
            .await;
        let stages = after["removeStage"]["stages"].clone();
        assert_eq!(stages[0]["name"], "New");
        assert_eq!(stages[0]["position"], 0);
        assert_eq!(stages[1]["name"], "Kept");
        assert_eq!(stages[1]["position"], 1);
        assert_eq!(stages.as_array().unwrap().len(), 2);

        // The pipeline process moves the cards on.
        let b = eventually("the removed stage's cards to reach Kept", || async {
            let b = board(&server, &admin, &sales, json!(null), None).await;
            (b["stages"][1]["count"] == 4).then_some(b)
        })
        .await;
        let cols = columns(&b);
        assert_eq!(cols.len(), 2);
        assert_eq!(cols[0], col("New", 1, &[&cards[0]]));
        assert_eq!(cols[1].0, "Kept");
        assert_eq!(cols[1].1, 4);
        assert_eq!(cols[1].2[0], cards[4], "the card already there stays first");
        let mut moved: Vec<String> = cols[1].2[1..].to_vec();
        moved.sort();
        let mut expected: Vec<String> = cards[1..4].to_vec();
        expected.sort();
        assert_eq!(moved, expected);
        let counts: i64 = b["stages"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["count"].as_i64().unwrap())
            .sum();
        assert_eq!(counts, 5);
        assert_eq!(b["stages"][1]["stage"]["cardCount"], 4);
        for id in &cards[1..4] {
            let c = card(&server, &admin, id).await;
            assert_eq!(c["stageId"], s3.as_str());
            let history = c["history"].as_array().expect("history");
            assert_eq!(history.len(), 2, "{c}");
            let last = &history[1];
            assert_eq!(last["fromStageId"], s2.as_str());
            assert_eq!(last["toStageId"], s3.as_str());
            assert_eq!(last["movedBy"], "system:pipelines");
            assert_eq!(last["movedByRole"], "service");
            assert!(last["secondsInPreviousStage"].is_i64(), "{c}");
        }
        // The removed stage takes no cards any more.
        let response = move_raw(&server, &admin, &cards[0], &s2, None).await;
        assert_eq!(
            error_code(&response),
            Some("INVALID_TRANSITION"),
            "{response}"
        );
        assert_eq!(
            card(&server, &admin, &cards[0]).await["stageId"],
            s1.as_str()
        );
        let response = server
            .graphql(
                Some(&admin),
                "query($s: ID!) { stageCards(stageId: $s) { totalCount } }",
                json!({ "s": s2 }),
            )
            .await;
        assert_eq!(error_code(&response), Some("NOT_FOUND"), "{response}");

        // Cards moved into a stage while it is being removed: a move either is refused
        // (the stage is gone) and the card stays, or succeeds and the card ends up where
        // the removed stage's cards go. None is lost in the removed stage.
        let racing = stage(&server, &sales, "Racing").await;
        let before: Vec<String> = {
            let mut at = Vec::new();
            for id in &cards {
                at.push(
                    card(&server, &admin, id).await["stageId"]
                        .as_str()
                        .unwrap()
                        .to_string(),
                );
            }
            at
        };
        let tokens = [admin.clone(), agent("sari")];
        let moves = cards.iter().enumerate().map(|(i, id)| {
            let (server, tokens, racing) = (&server, &tokens, &racing);
            async move { move_raw(server, &tokens[i % 2], id, racing, None).await }
        });
        let removal = async {
            tokio::time::sleep(Duration::from_millis(20)).await;
            server
                .graphql(Some(&admin), remove, json!({ "s": racing, "to": s1 }))
                .await
        };
        let (moved, removed) = tokio::join!(join_all(moves), removal);
        assert!(removed.get("errors").is_none(), "{removed}");
        let mut expected = Vec::new();
        for (i, response) in moved.iter().enumerate() {
            match error_code(response) {
                None => expected.push(s1.clone()),
                Some("INVALID_TRANSITION") => expected.push(before[i].clone()),
                Some(_) => panic!("move during removal: {response} ({:?})", db.backend),
            }
        }
        let settled = eventually("every card out of the removed stage", || async {
            let mut now = Vec::new();
            for id in &cards {
                now.push(
                    card(&server, &admin, id).await["stageId"]
                        .as_str()
                        .unwrap()
                        .to_string(),
                );
            }
            (now == expected).then_some(now)
        })
        .await;
        let b = board(&server, &admin, &sales, json!(null), None).await;
        let cols = columns(&b);
        assert_eq!(cols.len(), 2, "{b}");
        let in_new = settled.iter().filter(|s| **s == s1).count() as i64;
        assert_eq!(cols[0].1, in_new, "{b}");
        assert_eq!(cols[1].1, 5 - in_new, "{b}");
        for (id, here) in cards.iter().zip(&settled) {
            let c = card(&server, &admin, id).await;
            let history = c["history"].as_array().unwrap();
            assert_eq!(history.last().unwrap()["toStageId"], here.as_str(), "{c}");
        }
        server.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn two_users_moving_the_same_cards_at_once_leave_each_in_exactly_one_stage() {
    for db in TestDb::all().await {
        let server = Server::start(&db).await;
        let admin = admin();
        let sales = id_of(&create_pipeline(&server, &admin, "Sales").await);
        let stages = vec![
            stage(&server, &sales, "A").await,
            stage(&server, &sales, "B").await,
            id_of(
                &add_stage(
                    &server,
                    &sales,
                    json!({ "name": "C", "automation": [{ "type": "ADD_LABEL", "value": "touched" }] }),
                )
                .await,
            ),
        ];
        let mut cards = Vec::new();
        for i in 0..4 {
            let c = say(&server, &format!("+62830{i}"), "Pelanggan", "halo").await;
            cards.push(id_of(&place(&server, &sales, &id_of(&c), None, None).await));
        }
        // Two users put the same conversation on the pipeline at once: one card.
        let contested = id_of(&say(&server, "+6283099", "Pelanggan", "halo").await);
        let sari = agent("sari");
        let (a, b) = tokio::join!(
            place_raw(&server, &admin, &sales, &contested, Some(&stages[1]), None),
            place_raw(&server, &sari, &sales, &contested, None, None)
        );
        let codes = [error_code(&a), error_code(&b)];
        assert!(
            codes == [None, Some("CONFLICT")] || codes == [Some("CONFLICT"), None],
            "{a} {b}"
        );
        let winner = if codes[0].is_none() { &a } else { &b };
        let contested_card = id_of(&winner["data"]["placeCard"]);
        cards.push(contested_card.clone());

        let tokens = [admin.clone(), sari];
        let work = cards.iter().enumerate().map(|(k, card)| {
            let (server, tokens, stages) = (&server, &tokens, &stages);
            async move {
                let mut responses = Vec::new();
                for round in 0..10 {
                    let first = &stages[(round + k) % 3];
                    let second = &stages[(round + k + 1) % 3];
                    let (a, b) = tokio::join!(
                        move_raw(server, &tokens[0], card, first, Some(0)),
                        move_raw(server, &tokens[1], card, second, None)
                    );
                    responses.push(a);
                    responses.push(b);
                }
                responses
            }
        });
        let responses: Vec<Value> = join_all(work).await.into_iter().flatten().collect();
        assert_eq!(responses.len(), 100);
        for response in &responses {
            assert!(
                response.get("errors").is_none(),
                "a concurrent move failed: {response} ({:?})",
                db.backend
            );
        }

        // Each card is on the board once, where the card says it is, and its history ends
        // there with an unbroken chain of moves.
        let b = board(&server, &admin, &sales, json!(null), Some(100)).await;
        let cols = columns(&b);
        let total: i64 = cols.iter().map(|c| c.1).sum();
        assert_eq!(total, 5, "{b}");
        for (i, column) in cols.iter().enumerate() {
            assert_eq!(column.1, column.2.len() as i64, "{b}");
            assert_eq!(b["stages"][i]["stage"]["cardCount"], column.1, "{b}");
        }
        for id in &cards {
            let c = card(&server, &admin, id).await;
            let here = c["stageId"].as_str().expect("stageId").to_string();
            let holding: Vec<&str> = cols
                .iter()
                .zip(b["stages"].as_array().unwrap())
                .flat_map(|(column, raw)| {
                    let stage_id = raw["stage"]["id"].as_str().unwrap();
                    column.2.iter().filter(|x| *x == id).map(move |_| stage_id)
                })
                .collect();
            assert_eq!(holding, [here.as_str()], "card {id}: {b}");
            let history = c["history"].as_array().expect("history");
            assert_eq!(history.last().unwrap()["toStageId"], here.as_str(), "{c}");
            assert_eq!(history[0]["fromStageId"], Value::Null);
            for pair in history.windows(2) {
                assert_eq!(pair[1]["fromStageId"], pair[0]["toStageId"], "{c}");
                assert_ne!(pair[1]["fromStageId"], pair[1]["toStageId"], "{c}");
            }
        }
        // The automation of the last entries runs; nothing stays owed.
        for id in &cards {
            let c = eventually("no automation left owed", || async {
                let c = card(&server, &admin, id).await;
                (c["automationPending"] == false).then_some(c)
            })
            .await;
            if c["stageId"] == stages[2].as_str() {
                let c = automated(&server, id).await;
                assert_eq!(
                    c["automation"],
                    json!([{ "type": "ADD_LABEL", "value": "touched", "ok": true, "detail": null }])
                );
                assert_eq!(c["labels"], json!(["touched"]));
            }
        }
        server.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn stage_automation_assigns_labels_and_prioritises_and_says_why_it_could_not() {
    for db in TestDb::all().await {
        let server = Server::start(&db).await;
        let admin = admin();
        register(&server, &admin, "ann", 5).await;
        register(&server, &admin, "bob", 1).await;
        register(&server, &foreign_admin(), "gina", 5).await;
        online(&server, "ann").await;
        let first = say(&server, "+6284001", "Ani", "halo").await;
        assert_eq!(first["ticket"]["assigneeId"], "ann");
        online(&server, "bob").await;

        let flow = id_of(&create_pipeline(&server, &admin, "Support").await);
        let new = stage(&server, &flow, "New").await;
        // ASSIGN_AGENT must name an agent of the organization; values are checked.
        for automation in [
            json!([{ "type": "ASSIGN_AGENT", "value": "ghost" }]),
            json!([{ "type": "ASSIGN_AGENT", "value": "gina" }]),
            json!([{ "type": "ASSIGN_AGENT", "value": " " }]),
            json!([{ "type": "SET_PRIORITY", "value": "SOMETIMES" }]),
            json!([{ "type": "ADD_LABEL", "value": "" }]),
        ] {
            let response = add_stage_raw(
                &server,
                &flow,
                json!({ "name": "Bad", "automation": automation }),
            )
            .await;
            assert_eq!(
                error_code(&response),
                Some("BAD_USER_INPUT"),
                "{automation}: {response}"
            );
        }
        assert_eq!(stage_names(&server, &flow).await, ["New"]);
        let escalate = add_stage(
            &server,
            &flow,
            json!({ "name": "Escalate", "automation": [{ "type": "ASSIGN_AGENT", "value": "bob" }] }),
        )
        .await;
        assert_eq!(
            escalate["automation"],
            json!([{ "type": "ASSIGN_AGENT", "value": "bob" }])
        );
        let escalate = id_of(&escalate);
        let hot = add_stage(
            &server,
            &flow,
            json!({ "name": "Hot", "automation": [{ "type": "ADD_LABEL", "value": "hot" },
                                                  { "type": "SET_PRIORITY", "value": "high" }] }),
        )
        .await;
        assert_eq!(
            hot["automation"],
            json!([{ "type": "ADD_LABEL", "value": "hot" }, { "type": "SET_PRIORITY", "value": "HIGH" }])
        );
        let hot = id_of(&hot);

        // A card entering Escalate gives its conversation's ticket to bob.
        let card1 = place(&server, &flow, &id_of(&first), None, None).await;
        assert_eq!(card1["automationPending"], false, "New does nothing");
        let card1 = id_of(&card1);
        move_card(&server, &admin, &card1, &escalate, None).await;
        let c = automated(&server, &card1).await;
        assert_eq!(
            c["automation"],
            json!([{ "type": "ASSIGN_AGENT", "value": "bob", "ok": true, "detail": null }])
        );
        let ticket1 = first["ticket"]["id"].as_str().unwrap().to_string();
        eventually("the ticket to reach bob", || async {
            (ticket(&server, &ticket1).await["assigneeId"] == "bob").then_some(())
        })
        .await;
        eventually("the card to show bob", || async {
            (card(&server, &admin, &card1).await["assignee"]["id"] == "bob").then_some(())
        })
        .await;

        // Bob is at capacity (1): the step fails and says why; the card is fine.
        let second = say(&server, "+6284002", "Budi", "halo").await;
        assert_eq!(second["ticket"]["assigneeId"], "ann");
        let ticket2 = second["ticket"]["id"].as_str().unwrap().to_string();
        let card2 = id_of(&place(&server, &flow, &id_of(&second), None, None).await);
        move_card(&server, &admin, &card2, &escalate, None).await;
        let c = automated(&server, &card2).await;
        let outcome = &c["automation"][0];
        assert_eq!(c["automation"].as_array().unwrap().len(), 1, "{c}");
        assert_eq!(outcome["type"], "ASSIGN_AGENT");
        assert_eq!(outcome["value"], "bob");
        assert_eq!(outcome["ok"], false, "{c}");
        assert!(
            outcome["detail"]
                .as_str()
                .is_some_and(|d| !d.trim().is_empty()),
            "{c}"
        );
        assert_eq!(c["automationPending"], false);
        assert_eq!(c["stageId"], escalate.as_str());
        assert_eq!(c["assignee"]["id"], "ann");
        assert_eq!(ticket(&server, &ticket2).await["assigneeId"], "ann");
        // With room again, entering the stage anew assigns.
        server
            .data(
                &admin,
                "mutation { setAgentCapacity(agentId: \"bob\", maxTickets: 2) { maxTickets } }",
                json!({}),
            )
            .await;
        move_card(&server, &admin, &card2, &new, None).await;
        move_card(&server, &admin, &card2, &escalate, None).await;
        let c = eventually("the second entry's automation", || async {
            let c = card(&server, &admin, &card2).await;
            (c["automationPending"] == false && c["automation"][0]["ok"] == true).then_some(c)
        })
        .await;
        assert_eq!(
            c["automation"],
            json!([{ "type": "ASSIGN_AGENT", "value": "bob", "ok": true, "detail": null }])
        );
        eventually("the second ticket to reach bob", || async {
            (ticket(&server, &ticket2).await["assigneeId"] == "bob").then_some(())
        })
        .await;

        // ADD_LABEL and SET_PRIORITY, run on placement into Hot.
        let third = say(&server, "+6284003", "Citra", "halo").await;
        let ticket3 = third["ticket"]["id"].as_str().unwrap().to_string();
        assert_eq!(ticket(&server, &ticket3).await["priority"], "MEDIUM");
        let card3 = place(&server, &flow, &id_of(&third), Some(&hot), None).await;
        assert_eq!(card3["automationPending"], true);
        let c = automated(&server, &id_of(&card3)).await;
        assert_eq!(
            c["automation"],
            json!([{ "type": "ADD_LABEL", "value": "hot", "ok": true, "detail": null },
                   { "type": "SET_PRIORITY", "value": "HIGH", "ok": true, "detail": null }])
        );
        assert_eq!(c["labels"], json!(["hot"]));
        eventually("the ticket's priority to be HIGH", || async {
            (ticket(&server, &ticket3).await["priority"] == "HIGH").then_some(())
        })
        .await;
        // Entering again finds both done already: they count as done, nothing doubles.
        let card3 = id_of(&card3);
        let ran_at = c["automationRanAt"].as_str().expect("ran at").to_string();
        move_card(&server, &admin, &card3, &new, None).await;
        move_card(&server, &admin, &card3, &hot, None).await;
        let c = eventually("the second Hot entry's automation", || async {
            let c = card(&server, &admin, &card3).await;
            (c["automationPending"] == false && c["automationRanAt"] != ran_at.as_str())
                .then_some(c)
        })
        .await;
        assert_eq!(
            c["automation"],
            json!([{ "type": "ADD_LABEL", "value": "hot", "ok": true, "detail": null },
                   { "type": "SET_PRIORITY", "value": "HIGH", "ok": true, "detail": null }])
        );
        assert_eq!(c["labels"], json!(["hot"]));
        assert_eq!(ticket(&server, &ticket3).await["priority"], "HIGH");

        // A conversation whose ticket is resolved has no open ticket.
        let fourth = say(&server, "+6284004", "Dewi", "halo").await;
        assert_eq!(fourth["ticket"]["assigneeId"], "ann");
        let ticket4 = fourth["ticket"]["id"].as_str().unwrap().to_string();
        server.resolve_ticket(&agent("ann"), &ticket4).await;
        let card4 = id_of(&place(&server, &flow, &id_of(&fourth), Some(&hot), None).await);
        let c = automated(&server, &card4).await;
        assert_eq!(c["automation"][0]["ok"], true, "{c}");
        assert_eq!(c["automation"][1]["type"], "SET_PRIORITY");
        assert_eq!(c["automation"][1]["ok"], false, "{c}");
        assert!(
            c["automation"][1]["detail"]
                .as_str()
                .is_some_and(|d| d.contains("no open ticket")),
            "{c}"
        );
        assert_eq!(c["labels"], json!(["hot"]));
        move_card(&server, &admin, &card4, &escalate, None).await;
        let c = eventually("the Escalate entry's automation", || async {
            let c = card(&server, &admin, &card4).await;
            (c["automationPending"] == false && c["automation"][0]["type"] == "ASSIGN_AGENT")
                .then_some(c)
        })
        .await;
        assert_eq!(c["automation"][0]["ok"], false, "{c}");
        assert!(
            c["automation"][0]["detail"]
                .as_str()
                .is_some_and(|d| d.contains("no open ticket")),
            "{c}"
        );
        assert_eq!(ticket(&server, &ticket4).await["status"], "RESOLVED");

        // updateStage checks the agent too.
        let response = server
            .graphql(
                Some(&admin),
                "mutation($s: ID!) { updateStage(stageId: $s, input: { automation: [{ type: ASSIGN_AGENT, value: \"ghost\" }] }) { id } }",
                json!({ "s": escalate }),
            )
            .await;
        assert_eq!(error_code(&response), Some("BAD_USER_INPUT"), "{response}");
        server.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_board_filters_by_label_assignee_and_text() {
    for db in TestDb::all().await {
        let server = Server::start(&db).await;
        let admin = admin();
        // Ann takes the first two conversations, then she is full.
        register(&server, &admin, "ann", 2).await;
        online(&server, "ann").await;
        let budi = say(&server, "+6285001", "Budi Santoso", "Printer rusak").await;
        let rina = say(&server, "+6285004", "Rina", "tolong hubungi pak BUDI").await;
        let siti = say(
            &server,
            "+6285002",
            "Siti Aminah",
            "Tagihan bulan ini salah",
        )
        .await;
        let andi = say(&server, "+6285003", "Andi Budiman", "halo").await;
        assert_eq!(budi["ticket"]["assigneeId"], "ann");
        assert_eq!(rina["ticket"]["assigneeId"], "ann");
        assert_eq!(siti["ticket"]["assigneeId"], Value::Null);
        assert_eq!(andi["ticket"]["assigneeId"], Value::Null);

        let sales = id_of(&create_pipeline(&server, &admin, "Sales").await);
        let s1 = stage(&server, &sales, "One").await;
        let s2 = stage(&server, &sales, "Two").await;
        let c1 = id_of(&place(&server, &sales, &id_of(&budi), Some(&s1), None).await);
        let c2 = id_of(&place(&server, &sales, &id_of(&siti), Some(&s1), None).await);
        let c3 = id_of(&place(&server, &sales, &id_of(&andi), Some(&s2), None).await);
        let c4 = id_of(&place(&server, &sales, &id_of(&rina), Some(&s2), None).await);
        let label =
            "mutation($c: ID!, $l: String!) { labelCard(cardId: $c, label: $l) { labels } }";
        let unlabel =
            "mutation($c: ID!, $l: String!) { unlabelCard(cardId: $c, label: $l) { labels } }";
        for (c, l) in [(&c1, "vip"), (&c3, " vip "), (&c2, "cold"), (&c4, "temp")] {
            server
                .data(&agent("ann"), label, json!({ "c": c, "l": l }))
                .await;
        }
        let labels = server
            .data(&admin, label, json!({ "c": c1, "l": "asap" }))
            .await;
        assert_eq!(labels["labelCard"]["labels"], json!(["asap", "vip"]));
        let labels = server
            .data(&admin, unlabel, json!({ "c": c4, "l": "temp" }))
            .await;
        assert_eq!(labels["unlabelCard"]["labels"], json!([]));

        let view = |filter: Value| {
            let (server, admin, sales) = (&server, &admin, &sales);
            async move { columns(&board(server, admin, sales, filter, None).await) }
        };
        assert_eq!(
            view(json!(null)).await,
            vec![col("One", 2, &[&c1, &c2]), col("Two", 2, &[&c3, &c4])]
        );
        assert_eq!(
            view(json!({ "label": "vip" })).await,
            vec![col("One", 1, &[&c1]), col("Two", 1, &[&c3])]
        );
        assert_eq!(
            view(json!({ "label": "cold" })).await,
            vec![col("One", 1, &[&c2]), col("Two", 0, &[])]
        );
        assert_eq!(
            view(json!({ "label": "temp" })).await,
            vec![col("One", 0, &[]), col("Two", 0, &[])]
        );
        assert_eq!(
            view(json!({ "assigneeId": "ann" })).await,
            vec![col("One", 1, &[&c1]), col("Two", 1, &[&c4])]
        );
        assert_eq!(
            view(json!({ "assigneeId": "nobody" })).await,
            vec![col("One", 0, &[]), col("Two", 0, &[])]
        );
        // Search: customer name or last message, any case.
        assert_eq!(
            view(json!({ "search": "budi" })).await,
            vec![col("One", 1, &[&c1]), col("Two", 2, &[&c3, &c4])]
        );
        assert_eq!(
            view(json!({ "search": "  TAGIHAN " })).await,
            vec![col("One", 1, &[&c2]), col("Two", 0, &[])]
        );
        assert_eq!(
            view(json!({ "search": "printer RUSAK" })).await,
            vec![col("One", 1, &[&c1]), col("Two", 0, &[])]
        );
        assert_eq!(
            view(json!({ "search": "budi", "label": "vip" })).await,
            vec![col("One", 1, &[&c1]), col("Two", 1, &[&c3])]
        );
        assert_eq!(
            view(json!({ "search": "budi", "assigneeId": "ann" })).await,
            vec![col("One", 1, &[&c1]), col("Two", 1, &[&c4])]
        );
        assert_eq!(
            view(json!({ "search": "zzz" })).await,
            vec![col("One", 0, &[]), col("Two", 0, &[])]
        );
        let (ids, more, cursor, total) =
            stage_cards(&server, &s2, json!({ "search": "BUDI" }), 1, None).await;
        assert_eq!((ids, more, total), (vec![c3.clone()], true, 2));
        let (ids, more, _, total) = stage_cards(
            &server,
            &s2,
            json!({ "search": "BUDI" }),
            1,
            cursor.as_deref(),
        )
        .await;
        assert_eq!((ids, more, total), (vec![c4.clone()], false, 2));
        let (ids, more, _, total) =
            stage_cards(&server, &s1, json!({ "label": "vip" }), 10, None).await;
        assert_eq!((ids, more, total), (vec![c1.clone()], false, 1));

        // The cards show the customer and the last message; a newer message replaces it.
        let b = board(&server, &admin, &sales, json!(null), None).await;
        let shown = &b["stages"][0]["cards"][1];
        assert_eq!(shown["customerName"], "Siti Aminah");
        assert_eq!(shown["lastMessage"], "Tagihan bulan ini salah");
        assert_eq!(shown["labels"], json!(["cold"]));
        assert_eq!(shown["assignee"], Value::Null);
        assert_eq!(b["stages"][0]["cards"][0]["assignee"]["id"], "ann");
        say(&server, "+6285002", "Siti Aminah", "Sudah dibayar").await;
        let c = card(&server, &admin, &c2).await;
        assert_eq!(c["lastMessage"], "Sudah dibayar");
        assert_eq!(c["customerName"], "Siti Aminah");
        assert_eq!(
            view(json!({ "search": "tagihan" })).await,
            vec![col("One", 0, &[]), col("Two", 0, &[])]
        );
        assert_eq!(
            view(json!({ "search": "DIBAYAR" })).await,
            vec![col("One", 1, &[&c2]), col("Two", 0, &[])]
        );
        server.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn other_organizations_see_nothing_and_roles_are_enforced() {
    for db in TestDb::all().await {
        let server = Server::start(&db).await;
        let admin = admin();
        let sales = id_of(&create_pipeline(&server, &admin, "Sales").await);
        let s1 = stage(&server, &sales, "New").await;
        let s2 = stage(&server, &sales, "Won").await;
        let conversation = id_of(&say(&server, "+6286001", "Eko", "halo").await);
        let second = id_of(&say(&server, "+6286002", "Fajar", "halo").await);
        let c1 = id_of(&place(&server, &sales, &conversation, None, None).await);

        // Another organization: no pipeline, no board, no card, nothing to change.
        let globex = foreign_admin();
        assert_eq!(pipeline(&server, &globex, &sales).await, Value::Null);
        assert_eq!(card(&server, &globex, &c1).await, Value::Null);
        let response = board_raw(&server, &globex, &sales, json!(null), None).await;
        assert_eq!(error_code(&response), Some("NOT_FOUND"), "{response}");
        let response = server
            .graphql(
                Some(&globex),
                "query($s: ID!) { stageCards(stageId: $s) { totalCount } }",
                json!({ "s": s1 }),
            )
            .await;
        assert_eq!(error_code(&response), Some("NOT_FOUND"), "{response}");
        let response = server
            .graphql(
                Some(&globex),
                "query($p: ID!) { pipelineAnalytics(pipelineId: $p) { entered } }",
                json!({ "p": sales }),
            )
            .await;
        assert_eq!(error_code(&response), Some("NOT_FOUND"), "{response}");
        assert_eq!(
            server
                .data(&globex, "{ pipelines { id } }", json!({}))
                .await["pipelines"],
            json!([])
        );
        let response = move_raw(&server, &globex, &c1, &s2, None).await;
        assert_eq!(error_code(&response), Some("NOT_FOUND"), "{response}");
        let response = place_raw(&server, &globex, &sales, &second, None, None).await;
        assert_eq!(error_code(&response), Some("NOT_FOUND"), "{response}");
        let response = server
            .graphql(
                Some(&globex),
                ADD_STAGE,
                json!({ "p": sales, "input": { "name": "Sneaky" } }),
            )
            .await;
        assert_eq!(error_code(&response), Some("NOT_FOUND"), "{response}");
        let response = server
            .graphql(
                Some(&globex),
                "mutation($c: ID!) { labelCard(cardId: $c, label: \"x\") { id } }",
                json!({ "c": c1 }),
            )
            .await;
        assert_eq!(error_code(&response), Some("NOT_FOUND"), "{response}");
        // Globex's own first pipeline is its default; acme's is untouched.
        let own = create_pipeline(&server, &globex, "Globex").await;
        assert_eq!(own["isDefault"], true);
        assert_eq!(pipeline(&server, &admin, &sales).await["isDefault"], true);
        assert_eq!(pipeline(&server, &admin, &id_of(&own)).await, Value::Null);
        assert_eq!(stage_names(&server, &sales).await, ["New", "Won"]);
        assert_eq!(card(&server, &admin, &c1).await["stageId"], s1.as_str());

        // Analysts read but do not move; agents move but do not shape pipelines.
        let analyst = analyst();
        let seen = board(&server, &analyst, &sales, json!(null), None).await;
        assert_eq!(seen["stages"][0]["count"], 1);
        assert_eq!(card(&server, &analyst, &c1).await["stageId"], s1.as_str());
        let response = move_raw(&server, &analyst, &c1, &s2, None).await;
        assert_eq!(error_code(&response), Some("FORBIDDEN"), "{response}");
        let response = place_raw(&server, &analyst, &sales, &second, None, None).await;
        assert_eq!(error_code(&response), Some("FORBIDDEN"), "{response}");
        let response = server
            .graphql(
                Some(&analyst),
                "mutation($c: ID!) { labelCard(cardId: $c, label: \"x\") { id } }",
                json!({ "c": c1 }),
            )
            .await;
        assert_eq!(error_code(&response), Some("FORBIDDEN"), "{response}");
        let sari = agent("sari");
        let response = server
            .graphql(
                Some(&sari),
                "mutation { createPipeline(input: { name: \"Mine\" }) { id } }",
                json!({}),
            )
            .await;
        assert_eq!(error_code(&response), Some("FORBIDDEN"), "{response}");
        let response = server
            .graphql(
                Some(&sari),
                ADD_STAGE,
                json!({ "p": sales, "input": { "name": "Mine" } }),
            )
            .await;
        assert_eq!(error_code(&response), Some("FORBIDDEN"), "{response}");
        for (query, vars) in [
            (
                "mutation($p: ID!, $s: [ID!]!) { reorderStages(pipelineId: $p, stageIds: $s) { id } }",
                json!({ "p": sales, "s": [s2, s1] }),
            ),
            (
                "mutation($s: ID!) { removeStage(stageId: $s) { id } }",
                json!({ "s": s2 }),
            ),
            (
                "mutation($p: ID!) { archivePipeline(id: $p) { id } }",
                json!({ "p": sales }),
            ),
        ] {
            let response = server.graphql(Some(&sari), query, vars).await;
            assert_eq!(error_code(&response), Some("FORBIDDEN"), "{query}: {response}");
        }
        let response = server
            .graphql(Some(&service()), BOARD, json!({ "p": sales }))
            .await;
        assert_eq!(error_code(&response), Some("FORBIDDEN"), "{response}");
        assert_eq!(stage_names(&server, &sales).await, ["New", "Won"]);
        let moved = move_card(&server, &sari, &c1, &s2, None).await;
        assert_eq!(moved["stageId"], s2.as_str());

        // An archived pipeline stays readable; nothing moves on it.
        server
            .data(
                &admin,
                "mutation($p: ID!) { archivePipeline(id: $p) { archived } }",
                json!({ "p": sales }),
            )
            .await;
        let response = move_raw(&server, &admin, &c1, &s1, None).await;
        assert_eq!(
            error_code(&response),
            Some("INVALID_TRANSITION"),
            "{response}"
        );
        let response = place_raw(&server, &sari, &sales, &second, None, None).await;
        assert_eq!(
            error_code(&response),
            Some("INVALID_TRANSITION"),
            "{response}"
        );
        let response = server
            .graphql(
                Some(&admin),
                ADD_STAGE,
                json!({ "p": sales, "input": { "name": "Late" } }),
            )
            .await;
        assert_eq!(
            error_code(&response),
            Some("INVALID_TRANSITION"),
            "{response}"
        );
        let b = board(&server, &admin, &sales, json!(null), None).await;
        assert_eq!(b["pipeline"]["name"], "Sales");
        assert_eq!(columns(&b), vec![col("New", 0, &[]), col("Won", 1, &[&c1])]);
        assert_eq!(card(&server, &admin, &c1).await["stageId"], s2.as_str());
        server.stop().await;
    }
}

/// Users move cards out of a stage just removed while the pipeline process moves that
/// stage's cards on: a user's move always stands (the process's move is conditional on the
/// card still being in the removed stage).
#[tokio::test(flavor = "multi_thread")]
async fn moving_cards_out_of_a_removed_stage_is_never_undone_by_the_process() {
    for db in TestDb::all().await {
        let server = Server::start(&db).await;
        let admin = admin();
        let sales = id_of(&create_pipeline(&server, &admin, "Sales").await);
        let a = stage(&server, &sales, "A").await;
        let removed = stage(&server, &sales, "R").await;
        let b = stage(&server, &sales, "B").await;
        let mut cards = Vec::new();
        for i in 0..40 {
            let conversation = say(&server, &format!("+6289{i:04}"), "P", "halo").await;
            cards.push(id_of(
                &place(&server, &sales, &id_of(&conversation), Some(&removed), None).await,
            ));
        }
        let response = server
            .graphql(
                Some(&admin),
                "mutation($s: ID!, $to: ID) { removeStage(stageId: $s, moveCardsTo: $to) { id } }",
                json!({ "s": removed, "to": a }),
            )
            .await;
        assert!(response.get("errors").is_none(), "{response}");
        let tokens = [admin.clone(), agent("sari")];
        let moves = cards.iter().enumerate().map(|(i, id)| {
            let (server, tokens, b) = (&server, &tokens, &b);
            async move { move_raw(server, &tokens[i % 2], id, b, None).await }
        });
        for response in join_all(moves).await {
            assert!(
                response.get("errors").is_none(),
                "{:?}: {response}",
                db.backend
            );
        }
        // Wait until the process has nothing left in the removed stage, then look.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let board = server
                .data(&admin, BOARD, json!({ "p": sales, "f": null, "n": 100 }))
                .await;
            let live: i64 = board["board"]["stages"]
                .as_array()
                .expect("stages")
                .iter()
                .map(|s| s["count"].as_i64().unwrap_or(0))
                .sum();
            if live == 40 {
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{:?}: cards still in the removed stage",
                db.backend
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        for id in &cards {
            let card = card(&server, &admin, id).await;
            assert_eq!(
                card["stageId"],
                b.as_str(),
                "{:?}: a user's move was undone: {}",
                db.backend,
                card["history"]
            );
        }
        server.stop().await;
    }
}
