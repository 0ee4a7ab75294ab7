//! The end-to-end harness: a fresh database per backend and the real `helpdesk` binary
//! started on port 0 against it.
//!
//! Every storage test runs on SQLite, and on PostgreSQL when `TEST_DATABASE_URL` is set
//! (each test gets its own database, dropped afterwards). With `REQUIRE_POSTGRES=1` a
//! missing or unreachable PostgreSQL is a failure, not a skip.
#![allow(dead_code)]

pub mod ws;

use serde_json::{json, Value};
use std::process::Stdio;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::mpsc;

/// The secret every test server signs tokens with.
pub const SECRET: &str = "end-to-end-test-secret";

/// Which storage a test database lives in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// A fresh SQLite file.
    Sqlite,
    /// A fresh PostgreSQL database.
    Postgres,
}

/// A fresh, empty database; dropped (PostgreSQL) or deleted (SQLite) afterwards.
pub struct TestDb {
    /// Which backend.
    pub backend: Backend,
    /// `DATABASE_URL` for the server.
    pub url: String,
    admin_url: Option<String>,
    name: String,
    dir: std::path::PathBuf,
}

impl TestDb {
    /// The fresh databases every storage test must run on.
    pub async fn all() -> Vec<TestDb> {
        let mut dbs = vec![TestDb::sqlite()];
        if let Some(pg) = TestDb::postgres().await {
            dbs.push(pg);
        }
        dbs
    }

    /// A fresh SQLite file in a temporary folder.
    pub fn sqlite() -> TestDb {
        let name = format!("helpdesk-test-{}", uuid::Uuid::new_v4().simple());
        let dir = std::env::temp_dir().join(&name);
        std::fs::create_dir_all(&dir).expect("temp dir");
        TestDb {
            backend: Backend::Sqlite,
            url: format!("sqlite://{}", dir.join("helpdesk.db").display()),
            admin_url: None,
            name,
            dir,
        }
    }

    /// A fresh PostgreSQL database, or `None` when `TEST_DATABASE_URL` is unset (a failure
    /// with `REQUIRE_POSTGRES=1`).
    pub async fn postgres() -> Option<TestDb> {
        let required = std::env::var("REQUIRE_POSTGRES").is_ok_and(|v| v == "1");
        let Some(admin_url) = std::env::var("TEST_DATABASE_URL")
            .ok()
            .filter(|u| !u.is_empty())
        else {
            assert!(
                !required,
                "REQUIRE_POSTGRES=1 but TEST_DATABASE_URL is not set"
            );
            eprintln!("TEST_DATABASE_URL unset: skipping PostgreSQL");
            return None;
        };
        let name = format!("helpdesk_test_{}", uuid::Uuid::new_v4().simple());
        let admin = match sqlx::PgPool::connect(&admin_url).await {
            Ok(pool) => pool,
            Err(e) => panic!("cannot reach PostgreSQL at TEST_DATABASE_URL: {e}"),
        };
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&admin)
            .await
            .expect("create test database");
        admin.close().await;
        let base = admin_url
            .rsplit_once('/')
            .map(|(b, _)| b)
            .unwrap_or(&admin_url);
        Some(TestDb {
            backend: Backend::Postgres,
            url: format!("{base}/{name}"),
            admin_url: Some(admin_url.clone()),
            name,
            dir: std::env::temp_dir(),
        })
    }

    /// Connects to this database directly (for checks and fault injection).
    pub async fn connect(&self) -> projections::Database {
        let db = projections::Database::connect(Some(&self.url))
            .await
            .expect("connect to test database");
        db.migrate().await.expect("migrate test database");
        db
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        match &self.admin_url {
            None => {
                let _ = std::fs::remove_dir_all(&self.dir);
            }
            Some(admin_url) => {
                let admin_url = admin_url.clone();
                let name = self.name.clone();
                // Drop cannot await: use a short-lived runtime on its own thread.
                let _ = std::thread::spawn(move || {
                    let runtime = tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                        .expect("runtime");
                    runtime.block_on(async move {
                        if let Ok(pool) = sqlx::PgPool::connect(&admin_url).await {
                            let _ = sqlx::query(&format!(
                                "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
                            ))
                            .execute(&pool)
                            .await;
                            pool.close().await;
                        }
                    });
                })
                .join();
            }
        }
    }
}

/// A running `helpdesk serve` process.
pub struct Server {
    child: Child,
    /// `http://127.0.0.1:PORT`.
    pub base_url: String,
    stdout: mpsc::UnboundedReceiver<String>,
    http: reqwest::Client,
}

impl Server {
    /// Starts the real binary on port 0 against `db`.
    pub async fn start(db: &TestDb) -> Server {
        Server::start_with(db, &[]).await
    }

    /// Starts the real binary with extra environment variables.
    pub async fn start_with(db: &TestDb, env: &[(&str, &str)]) -> Server {
        let mut command = Command::new(env!("CARGO_BIN_EXE_helpdesk"));
        command
            .arg("serve")
            .env("DATABASE_URL", &db.url)
            .env("HELPDESK_ADDR", "127.0.0.1:0")
            .env("HELPDESK_JWT_SECRET", SECRET)
            .env("RUST_LOG", "warn")
            .env_remove("HELPDESK_FAILPOINT")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true);
        for (key, value) in env {
            command.env(key, value);
        }
        let mut child = command.spawn().expect("spawn helpdesk");
        let stdout = child.stdout.take().expect("stdout");
        let (sender, mut receiver) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            let mut lines = BufReader::new(stdout).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                if sender.send(line).is_err() {
                    break;
                }
            }
        });
        let base_url = tokio::time::timeout(Duration::from_secs(60), async {
            while let Some(line) = receiver.recv().await {
                if let Some(url) = line.strip_prefix("helpdesk listening on ") {
                    return url.trim().to_string();
                }
            }
            panic!("helpdesk exited before listening");
        })
        .await
        .expect("helpdesk did not start listening within 60 s");
        Server {
            child,
            base_url,
            stdout: receiver,
            http: reqwest::Client::new(),
        }
    }

    /// Waits until the server prints a line starting with `prefix`.
    pub async fn wait_for_line(&mut self, prefix: &str, timeout: Duration) -> String {
        tokio::time::timeout(timeout, async {
            while let Some(line) = self.stdout.recv().await {
                if line.starts_with(prefix) {
                    return line;
                }
            }
            panic!("helpdesk exited before printing '{prefix}'");
        })
        .await
        .unwrap_or_else(|_| panic!("no line '{prefix}' within {timeout:?}"))
    }

    /// A bearer token signed with the test secret.
    pub fn token(org: &str, role: &str, sub: &str) -> String {
        let role: domain::Role = role.parse().expect("role");
        api::auth::TokenKeys::new(SECRET.as_bytes()).issue(
            sub,
            org,
            role,
            Duration::from_secs(3600),
        )
    }

    /// Posts a GraphQL request with an optional token and returns the JSON response.
    pub async fn graphql(&self, token: Option<&str>, query: &str, variables: Value) -> Value {
        let mut request = self
            .http
            .post(format!("{}/graphql", self.base_url))
            .json(&json!({ "query": query, "variables": variables }));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        let response = request.send().await.expect("POST /graphql");
        response.json().await.expect("GraphQL JSON response")
    }

    /// Like [`Server::graphql`] but panics on errors and returns `data`.
    pub async fn data(&self, token: &str, query: &str, variables: Value) -> Value {
        let response = self.graphql(Some(token), query, variables).await;
        assert!(
            response.get("errors").is_none(),
            "unexpected errors: {response}"
        );
        response["data"].clone()
    }

    /// Creates a ticket from a `CreateTicketInput`, selects `fields` of it and returns them;
    /// panics on errors.
    pub async fn create_ticket(&self, token: &str, input: Value, fields: &str) -> Value {
        let query = format!(
            "mutation($input: CreateTicketInput!) {{ createTicket(input: $input) {{ {fields} }} }}"
        );
        self.data(token, &query, json!({ "input": input })).await["createTicket"].clone()
    }

    /// Creates a ticket from a `CreateTicketInput` and returns its id; panics on errors.
    pub async fn create_ticket_id_with(&self, token: &str, input: Value) -> String {
        self.create_ticket(token, input, "id").await["id"]
            .as_str()
            .expect("ticket id")
            .to_string()
    }

    /// Creates a ticket with only a subject and returns its id; panics on errors.
    pub async fn create_ticket_id(&self, token: &str, subject: &str) -> String {
        self.create_ticket_id_with(token, json!({ "subject": subject }))
            .await
    }

    /// The ticket `id` with the selection `fields` (`null` when the token cannot see it);
    /// panics on errors.
    pub async fn ticket(&self, token: &str, id: &str, fields: &str) -> Value {
        let query = format!("query($id: ID!) {{ ticket(id: $id) {{ {fields} }} }}");
        self.data(token, &query, json!({ "id": id })).await["ticket"].clone()
    }

    /// `tickets.totalCount`: how many tickets the token's organization has.
    pub async fn ticket_total(&self, token: &str) -> i64 {
        self.data(token, "{ tickets { totalCount } }", json!({}))
            .await["tickets"]["totalCount"]
            .as_i64()
            .expect("totalCount")
    }

    /// Claims ticket `id` for the token's agent; panics on errors.
    pub async fn claim_ticket(&self, token: &str, id: &str) {
        self.data(
            token,
            "mutation($id: ID!) { claimTicket(id: $id) { id } }",
            json!({ "id": id }),
        )
        .await;
    }

    /// Resolves ticket `id` (no resolution text); panics on errors.
    pub async fn resolve_ticket(&self, token: &str, id: &str) {
        self.data(
            token,
            "mutation($id: ID!) { resolveTicket(id: $id) { id } }",
            json!({ "id": id }),
        )
        .await;
    }

    /// Registers agents with the given ids (their names are the ids too) in the organization
    /// of the admin `token`; panics on errors. Claims and assignments need registered agents
    /// (their capacity lives in the agent's slot ledger).
    pub async fn register_agents(&self, token: &str, ids: &[&str]) {
        for id in ids {
            self.data(
                token,
                "mutation($id: ID!) { registerAgent(input: {id: $id, name: $id}) { id } }",
                json!({ "id": id }),
            )
            .await;
        }
    }

    /// Creates a division named `name` and returns its id; panics on errors.
    pub async fn create_division(&self, token: &str, name: &str) -> String {
        self.data(
            token,
            "mutation($n: String!) { createDivision(input: {name: $n}) { id name } }",
            json!({ "n": name }),
        )
        .await["createDivision"]["id"]
            .as_str()
            .expect("division id")
            .to_string()
    }

    /// A plain GET, returning status and body.
    pub async fn get(&self, path: &str) -> (u16, String) {
        let response = self
            .http
            .get(format!("{}{path}", self.base_url))
            .send()
            .await
            .expect("GET");
        let status = response.status().as_u16();
        (status, response.text().await.unwrap_or_default())
    }

    /// Stops gracefully (SIGTERM) and waits for the exit.
    pub async fn stop(mut self) {
        if let Some(pid) = self.child.id() {
            // The `kill` command avoids a libc dependency for one signal.
            let _ = std::process::Command::new("kill")
                .args(["-TERM", &pid.to_string()])
                .status();
        }
        let status = tokio::time::timeout(Duration::from_secs(30), self.child.wait())
            .await
            .expect("helpdesk did not stop within 30 s after SIGTERM")
            .expect("wait");
        assert!(status.success(), "helpdesk exited with {status}");
    }

    /// Kills the process at once (SIGKILL), as a crash would.
    pub async fn kill(mut self) {
        self.child.kill().await.expect("SIGKILL");
    }
}

/// The `extensions.code` of the first error of a response.
pub fn error_code(response: &Value) -> Option<&str> {
    response["errors"][0]["extensions"]["code"].as_str()
}

/// Whether a response carries no data: `data` is null or all its fields are.
pub fn has_no_data(response: &Value) -> bool {
    response["data"].is_null()
        || response["data"]
            .as_object()
            .is_some_and(|d| d.values().all(Value::is_null))
}

/// A token for the admin `boss` of organization `acme`, the usual test actor.
pub fn admin() -> String {
    Server::token("acme", "admin", "boss")
}

/// A token for the agent `name` of organization `acme`.
pub fn agent(name: &str) -> String {
    Server::token("acme", "agent", name)
}

/// The single `BIGINT` a query such as `SELECT COUNT(*) ...` returns; panics on errors.
pub async fn count(db: &projections::Database, sql: &str) -> i64 {
    projections::on_backend!(db, |pool| sqlx::query_scalar::<_, i64>(sql)
        .fetch_one(pool)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}")))
}
