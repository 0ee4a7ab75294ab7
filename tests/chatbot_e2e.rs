//! The chatbot end to end through GraphQL, on both backends: a question inside the active
//! hours is answered by the bot; outside them the customer gets the outside-hours message
//! and a queued ticket; a question the bot does not recognise goes to the humans and is
//! recorded as unmatched; answers can be rated; `botStatus` tells when the bot is active.

mod common;

use chrono::{Datelike, Utc};
use common::{admin, count, Server, TestDb};
use serde_json::{json, Value};

fn service() -> String {
    Server::token("acme", "service", "bridge")
}

async fn receive(server: &Server, phone: &str, text: &str, id: &str) -> Value {
    server
        .data(
            &service(),
            "mutation($input: ReceiveMessageInput!) { receiveMessage(input: $input) {
                id mode needsHuman ticket { id status }
                messages(first: 50) { edges { node { direction author text botInteractionId } } } } }",
            json!({ "input": { "channel": "WHATSAPP", "externalId": phone, "text": text,
                "externalMessageId": id } }),
        )
        .await["receiveMessage"]
        .clone()
}

fn outbound(conversation: &Value) -> Vec<Value> {
    conversation["messages"]["edges"]
        .as_array()
        .expect("messages")
        .iter()
        .map(|e| e["node"].clone())
        .filter(|n| n["direction"] == "OUTBOUND")
        .collect()
}

async fn create_bot(server: &Server) -> String {
    let bot = server
        .data(
            &admin(),
            "mutation { createBot(input: { name: \"Tania\" }) { id confidenceThreshold } }",
            json!({}),
        )
        .await["createBot"]
        .clone();
    assert_eq!(bot["confidenceThreshold"], 0.6);
    let id = bot["id"].as_str().expect("bot").to_string();
    let answer = server
        .data(
            &admin(),
            "mutation($b: ID!) { addBotAnswer(botId: $b, question: \"Jam berapa toko buka?\",
                answer: \"Kami buka setiap hari pukul 08:00-17:00.\", keywords: [\"jam buka\"]) {
                id keywords } }",
            json!({ "b": id }),
        )
        .await["addBotAnswer"]
        .clone();
    assert_eq!(answer["keywords"], json!(["jam buka"]));
    id
}

#[tokio::test]
async fn the_bot_answers_inside_hours_hands_off_outside_and_below_its_threshold() {
    for db in TestDb::all().await {
        let server = Server::start(&db).await;
        let bot = create_bot(&server).await;

        // Inside hours (no schedule: always): a recognised question is answered by the bot.
        let answered = receive(&server, "+6201", "jam berapa toko buka?", "q-1").await;
        assert_eq!(answered["mode"], "BOT");
        assert_eq!(answered["ticket"], Value::Null);
        let replies = outbound(&answered);
        assert_eq!(replies.len(), 1);
        assert_eq!(
            replies[0]["text"],
            "Kami buka setiap hari pukul 08:00-17:00."
        );
        assert_eq!(replies[0]["author"], format!("bot:{bot}"));
        let interaction = replies[0]["botInteractionId"]
            .as_str()
            .expect("interaction")
            .to_string();
        let rated = server
            .data(
                &service(),
                "mutation($i: ID!) { rateBotInteraction(interactionId: $i, rating: 5) { rating botId } }",
                json!({ "i": interaction }),
            )
            .await["rateBotInteraction"]
            .clone();
        assert_eq!(rated, json!({ "rating": 5, "botId": bot }));
        let refused = server
            .graphql(
                Some(&service()),
                "mutation($i: ID!) { rateBotInteraction(interactionId: $i, rating: 9) { rating } }",
                json!({ "i": interaction }),
            )
            .await;
        assert_eq!(common::error_code(&refused), Some("BAD_USER_INPUT"));

        // Below the threshold: to the humans (a queued ticket), recorded as unmatched.
        let unmatched = receive(&server, "+6202", "bisa kirim ke luar negeri?", "q-2").await;
        assert_eq!(unmatched["mode"], "AGENT");
        assert_eq!(unmatched["ticket"]["status"], "QUEUED");
        assert!(outbound(&unmatched).is_empty());
        let direct = db.connect().await;
        let low = count(
            &direct,
            "SELECT COUNT(*) FROM events WHERE event_type = 'BotHandedOff'
               AND CAST(payload AS TEXT) LIKE '%LOW_CONFIDENCE%'",
        )
        .await;
        assert_eq!(low, 1, "{}", db.url);
        let from = (Utc::now() - chrono::Duration::hours(2)).to_rfc3339();
        let to = (Utc::now() + chrono::Duration::hours(2)).to_rfc3339();
        let report = server
            .data(
                &admin(),
                "query($b: ID!, $f: DateTime!, $t: DateTime!) { chatbotReport(botId: $b, from: $f,
                    to: $t, granularity: HOUR) { totals { interactions successful escalated avgRating }
                    unmatchedQuestions { text count } topAnswers { question count } } }",
                json!({ "b": bot, "f": from, "t": to }),
            )
            .await["chatbotReport"]
            .clone();
        assert_eq!(report["totals"]["interactions"], 2);
        assert_eq!(report["totals"]["successful"], 1);
        assert_eq!(report["totals"]["escalated"], 1);
        assert_eq!(report["totals"]["avgRating"], 5.0);
        assert_eq!(
            report["unmatchedQuestions"],
            json!([{ "text": "bisa kirim ke luar negeri", "count": 1 }])
        );
        assert_eq!(
            report["topAnswers"],
            json!([{ "question": "Jam berapa toko buka?", "count": 1 }])
        );

        // Outside hours: the outside-hours message and a queued ticket. The only window is
        // three days from now, so now is outside it.
        let day = (Utc::now().weekday().num_days_from_sunday() + 3) % 7;
        let scheduled = server
            .data(
                &admin(),
                "mutation($b: ID!, $d: Int!) { setBotSchedule(botId: $b, input: { enabled: true,
                    timezone: \"Asia/Jakarta\", windows: [{ dayOfWeek: $d, start: \"09:00\", end: \"10:00\" }],
                    outsideHoursMessage: \"Maaf, kami sedang tutup. Agen kami akan membalas.\" }) {
                    schedule { enabled timezone windows { dayOfWeek start end } } } }",
                json!({ "b": bot, "d": day }),
            )
            .await["setBotSchedule"]
            .clone();
        assert_eq!(
            scheduled["schedule"]["windows"][0],
            json!({ "dayOfWeek": day, "start": "09:00", "end": "10:00" })
        );
        let status = server
            .data(
                &admin(),
                "query($b: ID!) { botStatus(botId: $b) { active nextChange } }",
                json!({ "b": bot }),
            )
            .await["botStatus"]
            .clone();
        assert_eq!(status["active"], false);
        assert!(status["nextChange"].is_string());
        let outside = receive(&server, "+6203", "jam berapa toko buka?", "q-3").await;
        assert_eq!(outside["needsHuman"], true);
        assert_eq!(outside["ticket"]["status"], "QUEUED");
        let replies = outbound(&outside);
        assert_eq!(replies.len(), 1);
        assert_eq!(
            replies[0]["text"],
            "Maaf, kami sedang tutup. Agen kami akan membalas."
        );

        // Bad schedules are refused with BAD_USER_INPUT.
        for (timezone, start, end) in [
            ("Mars/Olympus", "09:00", "10:00"),
            ("Asia/Jakarta", "09:00", "09:00"),
            ("Asia/Jakarta", "9am", "10:00"),
        ] {
            let refused = server
                .graphql(
                    Some(&admin()),
                    "mutation($b: ID!, $tz: String!, $s: String!, $e: String!) {
                        setBotSchedule(botId: $b, input: { enabled: true, timezone: $tz,
                        windows: [{ dayOfWeek: 1, start: $s, end: $e }] }) { id } }",
                    json!({ "b": bot, "tz": timezone, "s": start, "e": end }),
                )
                .await;
            assert_eq!(
                common::error_code(&refused),
                Some("BAD_USER_INPUT"),
                "{timezone} {start}-{end}"
            );
        }
        server.stop().await;
    }
}
