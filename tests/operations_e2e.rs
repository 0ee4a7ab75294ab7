//! End to end: what operators see — health, readiness, metrics, GraphiQL, shutdown and
//! configuration refusals — on every backend.

mod common;

use common::{admin, agent, Backend, Server, TestDb};
use serde_json::json;
use std::process::Stdio;
use std::time::Duration;

/// The value of the sample `name{labels}` in a Prometheus text body.
fn sample(body: &str, name_and_labels: &str) -> Option<f64> {
    body.lines()
        .find_map(|line| line.strip_prefix(name_and_labels)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
}

#[tokio::test(flavor = "multi_thread")]
async fn health_readiness_and_metrics() {
    for db in TestDb::all().await {
        let b = db.backend;
        let server = Server::start(&db).await;
        let (status, body) = server.get("/healthz").await;
        assert_eq!(status, 200, "{b:?}: {body}");

        let (status, body) = server.get("/readyz").await;
        assert_eq!(status, 200, "{b:?}: {body}");
        for projection in api::helpdesk::all_projections() {
            assert!(
                body.contains(projection.name()),
                "{b:?}: /readyz names projection {}: {body}",
                projection.name()
            );
        }

        let admin = admin();
        let ann = agent("ann");
        server.register_agents(&admin, &["ann"]).await;
        let id = server.create_ticket_id(&admin, "Measured").await;
        server.claim_ticket(&ann, &id).await;
        // A refused command is measured under its code.
        let refused = server
            .graphql(
                Some(&ann),
                "mutation($id: ID!) { claimTicket(id: $id) { id } }",
                json!({ "id": id }),
            )
            .await;
        assert_eq!(
            common::error_code(&refused),
            Some("INVALID_TRANSITION"),
            "{b:?}"
        );

        let (status, metrics) = server.get("/metrics").await;
        assert_eq!(status, 200, "{b:?}");
        assert!(
            metrics.contains("# TYPE helpdesk_command_duration_seconds histogram"),
            "{b:?}: {metrics}"
        );
        assert_eq!(
            sample(
                &metrics,
                "helpdesk_command_duration_seconds_count{command=\"createTicket\",outcome=\"ok\"}"
            ),
            Some(1.0),
            "{b:?}: {metrics}"
        );
        assert_eq!(
            sample(
                &metrics,
                "helpdesk_command_duration_seconds_count{command=\"claimTicket\",outcome=\"ok\"}"
            ),
            Some(1.0),
            "{b:?}: {metrics}"
        );
        assert_eq!(
            sample(
                &metrics,
                "helpdesk_command_duration_seconds_count{command=\"claimTicket\",outcome=\"INVALID_TRANSITION\"}"
            ),
            Some(1.0),
            "{b:?}: {metrics}"
        );
        assert!(
            metrics.contains("# TYPE helpdesk_projection_lag_seconds histogram"),
            "{b:?}: {metrics}"
        );
        // Both events went through the tickets projection.
        let lag_count = sample(
            &metrics,
            "helpdesk_projection_lag_seconds_count{projection=\"tickets\"}",
        );
        assert_eq!(lag_count, Some(2.0), "{b:?}: {metrics}");
        assert_eq!(
            sample(
                &metrics,
                "helpdesk_projection_events_behind{projection=\"tickets\"}"
            ),
            Some(0.0),
            "{b:?}: {metrics}"
        );
        server.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn graphiql_is_served_and_sigterm_stops_cleanly() {
    for db in TestDb::all().await {
        let b = db.backend;
        let server = Server::start(&db).await;
        let (status, body) = server.get("/graphql").await;
        assert_eq!(status, 200, "{b:?}");
        let lower = body.to_lowercase();
        assert!(
            lower.contains("<html") && lower.contains("graphiql"),
            "{b:?}: GET /graphql serves GraphiQL: {body}"
        );
        let admin = admin();
        server.create_ticket_id(&admin, "Before the stop").await;
        // SIGTERM: Server::stop asserts exit status 0 within 30 s.
        server.stop().await;

        let server = Server::start(&db).await;
        assert_eq!(server.ticket_total(&admin).await, 1, "{b:?}");
        server.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn postgres_without_a_jwt_secret_refuses_to_start() {
    for db in TestDb::all().await {
        if db.backend != Backend::Postgres {
            continue;
        }
        let b = db.backend;
        let output = tokio::time::timeout(
            Duration::from_secs(30),
            tokio::process::Command::new(env!("CARGO_BIN_EXE_helpdesk"))
                .arg("serve")
                .env("DATABASE_URL", &db.url)
                .env("HELPDESK_ADDR", "127.0.0.1:0")
                .env_remove("HELPDESK_JWT_SECRET")
                .env("RUST_LOG", "warn")
                .stdin(Stdio::null())
                .kill_on_drop(true)
                .output(),
        )
        .await
        .expect("the server should exit at once without a secret")
        .expect("run helpdesk");
        let stdout = String::from_utf8_lossy(&output.stdout);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{b:?}: {stdout} {stderr}");
        assert!(
            stderr.contains("HELPDESK_JWT_SECRET"),
            "{b:?}: the refusal names HELPDESK_JWT_SECRET: {stderr}"
        );
        assert!(
            !stdout.contains("helpdesk listening"),
            "{b:?}: it must not listen: {stdout}"
        );
        // An empty value is no secret either.
        let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_helpdesk"))
            .arg("serve")
            .env("DATABASE_URL", &db.url)
            .env("HELPDESK_ADDR", "127.0.0.1:0")
            .env("HELPDESK_JWT_SECRET", "")
            .kill_on_drop(true)
            .output()
            .await
            .expect("run helpdesk");
        assert!(!output.status.success(), "{b:?}");
        assert!(
            String::from_utf8_lossy(&output.stderr).contains("HELPDESK_JWT_SECRET"),
            "{b:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn sqlite_without_a_jwt_secret_creates_one_that_the_token_command_uses() {
    for db in TestDb::all().await {
        if db.backend != Backend::Sqlite {
            continue;
        }
        let b = db.backend;
        // An empty HELPDESK_JWT_SECRET counts as unset.
        let server = Server::start_with(&db, &[("HELPDESK_JWT_SECRET", "")]).await;
        let folder = std::path::PathBuf::from(db.url.trim_start_matches("sqlite://"))
            .parent()
            .unwrap()
            .to_path_buf();
        let secret = std::fs::read_to_string(folder.join("jwt-secret")).expect("jwt-secret file");
        assert!(
            secret.trim().len() >= 32,
            "{b:?}: a strong secret: {secret}"
        );

        let issue = || async {
            let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_helpdesk"))
                .args(["token", "--org", "acme", "--role", "admin", "--sub", "boss"])
                .env("DATABASE_URL", &db.url)
                .env_remove("HELPDESK_JWT_SECRET")
                .output()
                .await
                .expect("run helpdesk token");
            assert!(output.status.success(), "{b:?}");
            String::from_utf8(output.stdout).unwrap().trim().to_string()
        };
        let token = issue().await;
        assert_eq!(server.ticket_total(&token).await, 0, "{b:?}");
        // The test secret is not the generated one.
        let response = server
            .graphql(Some(&admin()), "{ tickets { totalCount } }", json!({}))
            .await;
        assert_eq!(
            common::error_code(&response),
            Some("UNAUTHENTICATED"),
            "{b:?}"
        );
        server.stop().await;

        // Reused after a restart.
        let server = Server::start_with(&db, &[("HELPDESK_JWT_SECRET", "")]).await;
        assert_eq!(
            std::fs::read_to_string(folder.join("jwt-secret")).unwrap(),
            secret,
            "{b:?}"
        );
        server.ticket_total(&token).await;
        server.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn readiness_fails_while_a_projection_is_behind() {
    for db in TestDb::all().await {
        let b = db.backend;
        let mut server = Server::start_with(
            &db,
            &[
                ("HELPDESK_FAILPOINT", "projection-before-commit:tickets"),
                ("HELPDESK_READY_MAX_BEHIND", "0"),
                ("HELPDESK_CONSISTENCY_TIMEOUT_MS", "200"),
            ],
        )
        .await;
        let (status, body) = server.get("/readyz").await;
        assert_eq!(status, 200, "{b:?}: nothing to apply yet: {body}");
        let admin = admin();
        // The event commits; its projection is held before commit.
        let _ = server
            .graphql(
                Some(&admin),
                "mutation { createTicket(input: {subject: \"stuck\"}) { id } }",
                json!({}),
            )
            .await;
        server
            .wait_for_line("FAILPOINT", Duration::from_secs(30))
            .await;
        let (status, body) = server.get("/readyz").await;
        assert_eq!(status, 503, "{b:?}: a projection is behind: {body}");
        assert!(
            body.contains("tickets: 1 events behind"),
            "{b:?}: /readyz says which projection lags: {body}"
        );
        let (_, metrics) = server.get("/metrics").await;
        assert_eq!(
            sample(
                &metrics,
                "helpdesk_projection_events_behind{projection=\"tickets\"}"
            ),
            Some(1.0),
            "{b:?}: {metrics}"
        );
        // One mutation timed out waiting (labelled with the first projection found behind).
        let timeouts: f64 = metrics
            .lines()
            .filter(|l| l.starts_with("helpdesk_consistency_timeouts_total{"))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum();
        assert_eq!(timeouts, 1.0, "{b:?}: {metrics}");
        // The runner is parked forever: stop it the hard way.
        server.kill().await;

        // A normal start catches up (in the background: poll) and is ready again.
        let server = Server::start(&db).await;
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        loop {
            let (status, body) = server.get("/readyz").await;
            if status == 200 && body.contains("tickets: 0 events behind") {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "{b:?}: never caught up: {status} {body}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(server.ticket_total(&admin).await, 1, "{b:?}");
        let (status, body) = server.get("/readyz").await;
        assert_eq!(status, 200, "{b:?}: {body}");
        server.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_transaction_in_another_database_does_not_stall_mutations() {
    for db in TestDb::all().await {
        if db.backend != Backend::Postgres {
            continue;
        }
        let b = db.backend;
        let server = Server::start(&db).await;
        let admin = admin();
        let create = "mutation($s: String!) { createTicket(input: {subject: $s}) { number } }";
        server.data(&admin, create, json!({ "s": "warm-up" })).await;

        // Another database on the same PostgreSQL server runs a long writing transaction.
        let other_url = std::env::var("TEST_DATABASE_URL").expect("TEST_DATABASE_URL");
        let other = sqlx::PgPool::connect(&other_url).await.expect("connect");
        let mut long = other.begin().await.expect("begin");
        sqlx::query("SELECT pg_current_xact_id()")
            .execute(&mut *long)
            .await
            .expect("take a transaction id");
        let hold = Duration::from_secs(3);
        let holder = tokio::spawn(async move {
            tokio::time::sleep(hold).await;
            long.rollback().await.expect("rollback");
            other.close().await;
        });

        let started = std::time::Instant::now();
        let response = server
            .graphql(Some(&admin), create, json!({ "s": "during" }))
            .await;
        let elapsed = started.elapsed();
        holder.await.expect("holder");
        assert!(
            response.get("errors").is_none() && elapsed < Duration::from_millis(1500),
            "{b:?}: a transaction in another database held createTicket for {elapsed:?}: {response}"
        );
        assert_eq!(response["data"]["createTicket"]["number"], 2, "{b:?}");
        server.stop().await;
    }
}
