//! End to end: several `helpdesk serve` replicas on one PostgreSQL database.
//!
//! Each projector and the assignment process run in exactly one replica at a time (a lease
//! per role, exported as `helpdesk_lease_held{role="..."}` on `/metrics`); when the holder
//! dies another replica takes over within seconds. Under load, with a replica killed
//! midway, the invariants (capacity, single ownership) hold and nothing is lost — checked
//! against the event log itself. PostgreSQL only (skipped without `TEST_DATABASE_URL`).

mod common;

use common::{admin, Server, TestDb};
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Every role a replica contends for: the projections, then the assignment process.
/// Every role a lease decides.
fn roles() -> Vec<&'static str> {
    api::helpdesk::lease_roles()
}

/// Three replicas per test is about a third of PostgreSQL's default 100 connections (each
/// pool opens up to 20, plus the lease and listener connections): the tests of this file
/// take turns, which also keeps their timings meaningful on small machines.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

const TICKET: &str = "id status assigneeId";

/// Which roles a replica holds, from its `/metrics`; `None` when it does not answer.
async fn held_roles(http: &reqwest::Client, base_url: &str) -> Option<BTreeSet<String>> {
    let response = http
        .get(format!("{base_url}/metrics"))
        .timeout(Duration::from_secs(5))
        .send()
        .await
        .ok()?;
    let body = response.text().await.ok()?;
    let mut held = BTreeSet::new();
    let mut seen = 0;
    for line in body.lines() {
        let Some(rest) = line.strip_prefix("helpdesk_lease_held{role=\"") else {
            continue;
        };
        let (role, value) = rest.split_once("\"}").expect("lease gauge line");
        seen += 1;
        match value.trim() {
            "1" => {
                held.insert(role.to_string());
            }
            "0" => {}
            other => panic!("lease gauge {role} = {other}"),
        }
    }
    assert_eq!(seen, roles().len(), "one lease gauge per role:\n{body}");
    Some(held)
}

/// Who holds each role among `replicas` (index, base URL): role -> replica indexes.
async fn lease_table(
    http: &reqwest::Client,
    replicas: &[(usize, String)],
) -> BTreeMap<&'static str, Vec<usize>> {
    let mut table: BTreeMap<&'static str, Vec<usize>> =
        roles().iter().map(|role| (*role, Vec::new())).collect();
    for (index, url) in replicas {
        if let Some(held) = held_roles(http, url).await {
            for role in held {
                table
                    .get_mut(role.as_str())
                    .unwrap_or_else(|| panic!("unknown role {role}"))
                    .push(*index);
            }
        }
    }
    table
}

/// Polls until every role is held by exactly one of `replicas`, at most `within`; returns
/// role -> holder and how long it took.
async fn single_holders(
    http: &reqwest::Client,
    replicas: &[(usize, String)],
    within: Duration,
) -> (BTreeMap<&'static str, usize>, Duration) {
    let started = Instant::now();
    loop {
        let table = lease_table(http, replicas).await;
        if table.values().all(|holders| holders.len() == 1) {
            let holders = table.into_iter().map(|(role, h)| (role, h[0])).collect();
            return (holders, started.elapsed());
        }
        assert!(
            started.elapsed() < within,
            "roles not held exactly once within {within:?}: {table:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn live(servers: &[Option<Server>]) -> Vec<(usize, String)> {
    servers
        .iter()
        .enumerate()
        .filter_map(|(i, s)| s.as_ref().map(|s| (i, s.base_url.clone())))
        .collect()
}

async fn register(server: &Server, id: &str, max: i64) {
    let answer = server
        .data(
            &admin(),
            "mutation($id: ID!, $m: Int!) { registerAgent(input: {id: $id, name: $id, maxTickets: $m}) { id maxTickets } }",
            json!({"id": id, "m": max}),
        )
        .await;
    assert_eq!(
        answer["registerAgent"],
        json!({"id": id, "maxTickets": max})
    );
}

async fn online(server: &Server, id: &str) {
    let agent = Server::token("acme", "agent", id);
    let answer = server
        .data(&agent, "mutation { goOnline { id online } }", json!({}))
        .await;
    assert_eq!(answer["goOnline"], json!({"id": id, "online": true}));
}

/// Polls `probe` until it returns `Some`, at most `within`.
async fn eventually<T, F, Fut>(what: &str, within: Duration, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + within;
    loop {
        if let Some(value) = probe().await {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn leases_are_held_by_exactly_one_replica_and_move_when_it_dies() {
    let _turn = SERIAL.lock().await;
    let Some(db) = TestDb::postgres().await else {
        eprintln!("TEST_DATABASE_URL unset: skipping the replica test");
        return;
    };
    let http = reqwest::Client::new();
    let mut servers: Vec<Option<Server>> = Vec::new();
    for _ in 0..3 {
        servers.push(Some(Server::start(&db).await));
    }
    let (holders, settled) = single_holders(&http, &live(&servers), Duration::from_secs(15)).await;
    eprintln!("leases settled {settled:?} after the third start: {holders:?}");
    // Stable: a second look finds the same holders.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let (again, _) = single_holders(&http, &live(&servers), Duration::from_secs(1)).await;
    assert_eq!(again, holders, "leases moved without a failure");

    // Some work before the failure: ann (capacity 2) gets a ticket at once.
    let admin = admin();
    let first = servers[0].as_ref().unwrap();
    register(first, "ann", 2).await;
    online(first, "ann").await;
    let before = first
        .create_ticket(&admin, json!({"subject": "before the crash"}), TICKET)
        .await;
    assert_eq!(before["assigneeId"], "ann", "{before}");

    // The replica running the assignment process dies.
    let victim = holders["assignment"];
    let lost: Vec<&str> = holders
        .iter()
        .filter(|(_, h)| **h == victim)
        .map(|(role, _)| *role)
        .collect();
    servers[victim].take().unwrap().kill().await;
    let killed_at = Instant::now();
    let survivors = live(&servers);
    let (after, _) = single_holders(&http, &survivors, Duration::from_secs(10)).await;
    let takeover = killed_at.elapsed();
    eprintln!(
        "replica {victim} (held {lost:?}) killed; survivors hold every role once after {takeover:?}: {after:?}"
    );
    assert!(
        takeover <= Duration::from_secs(10),
        "takeover took {takeover:?}"
    );
    assert!(after.values().all(|h| *h != victim));

    // Work goes on through the survivor that runs the fewest roles (ideally none of the
    // projectors): its mutations must still see their own writes.
    let (index, _) = survivors
        .iter()
        .min_by_key(|(i, _)| after.values().filter(|h| *h == i).count())
        .unwrap();
    let server = servers[*index].as_ref().unwrap();
    let runs_here: Vec<&str> = after
        .iter()
        .filter(|(_, h)| *h == index)
        .map(|(role, _)| *role)
        .collect();
    eprintln!("continuing on replica {index}, which runs {runs_here:?}");

    // Registration and presence answer with the change, and a query right after sees it.
    register(server, "ben", 1).await;
    let agents = server
        .data(&admin, "{ agents { id online maxTickets } }", json!({}))
        .await;
    assert_eq!(
        agents["agents"],
        json!([
            {"id": "ann", "online": true, "maxTickets": 2},
            {"id": "ben", "online": false, "maxTickets": 1}
        ])
    );
    // Ann has a free slot: a new ticket is hers at once.
    let second = server
        .create_ticket(&admin, json!({"subject": "after the crash"}), TICKET)
        .await;
    assert_eq!(second["assigneeId"], "ann", "{second}");
    assert_eq!(second["status"], "ASSIGNED");
    // Ann is full and ben offline: the next one waits.
    let third = server
        .create_ticket(&admin, json!({"subject": "waits"}), TICKET)
        .await;
    assert_eq!(third["status"], "QUEUED", "{third}");
    let third_id = third["id"].as_str().unwrap().to_string();
    // Ben comes online: the assignment process (now in a survivor) gives it to him.
    online(server, "ben").await;
    let t = eventually(
        "the queued ticket to reach ben",
        Duration::from_secs(15),
        || async {
            let t = server.ticket(&admin, &third_id, TICKET).await;
            (t["status"] == "ASSIGNED").then_some(t)
        },
    )
    .await;
    assert_eq!(t["assigneeId"], "ben");

    // Ann resolves: the answer and her queue show it at once; her freed slot (released by
    // the process) takes the next ticket.
    let ann = Server::token("acme", "agent", "ann");
    let resolved = server
        .data(
            &ann,
            "mutation($id: ID!) { resolveTicket(id: $id) { id status } }",
            json!({"id": before["id"]}),
        )
        .await;
    assert_eq!(resolved["resolveTicket"]["status"], "RESOLVED");
    let mine = server
        .data(
            &ann,
            "{ myQueue { tickets { id } activeCount } }",
            json!({}),
        )
        .await;
    assert_eq!(
        mine["myQueue"],
        json!({"tickets": [{"id": second["id"]}], "activeCount": 1})
    );
    let fourth = server
        .create_ticket(&admin, json!({"subject": "for the freed slot"}), TICKET)
        .await;
    let fourth_id = fourth["id"].as_str().unwrap().to_string();
    let t = eventually(
        "the freed slot to take a ticket",
        Duration::from_secs(15),
        || async {
            let t = server.ticket(&admin, &fourth_id, TICKET).await;
            (t["status"] == "ASSIGNED").then_some(t)
        },
    )
    .await;
    assert_eq!(t["assigneeId"], "ann");

    // Every other survivor sees the same picture.
    for (i, _) in &survivors {
        let other = servers[*i].as_ref().unwrap();
        let total = other.ticket_total(&admin).await;
        assert_eq!(total, 4, "replica {i}");
    }
    // The resolved ticket's slot is released by the process in its new replica: ann holds
    // two slots, ben one.
    let check = db.connect().await;
    eventually(
        "the resolved ticket's slot to be released",
        Duration::from_secs(15),
        || async {
            let slots = common::count(&check, "SELECT COUNT(*) FROM slot_reservations").await;
            (slots == 3).then_some(())
        },
    )
    .await;

    for server in servers.into_iter().flatten() {
        server.stop().await;
    }
}

/// The live replicas as the load's clients see them.
struct Cluster {
    urls: Vec<String>,
    alive: Vec<AtomicBool>,
    next: AtomicUsize,
    http: reqwest::Client,
    transport_errors: AtomicUsize,
    /// `extensions.code` (or message) of every error answer, counted.
    error_answers: Mutex<BTreeMap<String, usize>>,
    /// Creates without an answer that turned out to have happened.
    lost_creates_found: AtomicUsize,
    /// Creates answered with an error that happened all the same (must not be: the client
    /// would create the ticket twice).
    refused_creates_found: AtomicUsize,
    /// Creates sent again after the log showed they had not happened.
    create_retries: AtomicUsize,
}

impl Cluster {
    fn new(urls: Vec<String>) -> Self {
        Self {
            alive: urls.iter().map(|_| AtomicBool::new(true)).collect(),
            urls,
            next: AtomicUsize::new(0),
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(60))
                .build()
                .expect("http client"),
            transport_errors: AtomicUsize::new(0),
            error_answers: Mutex::new(BTreeMap::new()),
            lost_creates_found: AtomicUsize::new(0),
            refused_creates_found: AtomicUsize::new(0),
            create_retries: AtomicUsize::new(0),
        }
    }

    /// The next live replica, round robin.
    fn pick(&self) -> usize {
        for _ in 0..self.urls.len() {
            let i = self.next.fetch_add(1, Ordering::Relaxed) % self.urls.len();
            if self.alive[i].load(Ordering::Relaxed) {
                return i;
            }
        }
        panic!("every replica refused connections");
    }

    async fn post(
        &self,
        index: usize,
        token: &str,
        query: &str,
        variables: &Value,
    ) -> Result<Value, reqwest::Error> {
        self.http
            .post(format!("{}/graphql", self.urls[index]))
            .bearer_auth(token)
            .json(&json!({ "query": query, "variables": variables }))
            .send()
            .await?
            .json()
            .await
    }

    fn note_error(&self, response: &Value) {
        let code = common::error_code(response)
            .map(str::to_string)
            .unwrap_or_else(|| response["errors"][0]["message"].to_string());
        *self.error_answers.lock().unwrap().entry(code).or_default() += 1;
    }

    /// A request failed without an answer; a refused connection means the replica is gone
    /// and the clients stop sending it anything.
    fn note_failure(&self, index: usize, error: &reqwest::Error) {
        self.transport_errors.fetch_add(1, Ordering::Relaxed);
        if error.is_connect() {
            self.alive[index].store(false, Ordering::Relaxed);
        }
    }

    /// Sends to live replicas until one answers: a connection error moves to the next.
    async fn request(&self, token: &str, query: &str, variables: Value) -> Value {
        let started = Instant::now();
        loop {
            let index = self.pick();
            match self.post(index, token, query, &variables).await {
                Ok(response) => {
                    if response.get("errors").is_some() {
                        self.note_error(&response);
                    }
                    return response;
                }
                Err(error) => {
                    self.note_failure(index, &error);
                    assert!(
                        started.elapsed() < Duration::from_secs(60),
                        "no replica answered within 60 s: {error}"
                    );
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    }

    /// Creates the ticket `subject` exactly once and returns its id. An answer lost with a
    /// dying replica (or an error) may hide a creation: the event log tells, once the dead
    /// replica can no longer commit anything; only a ticket that is not there is sent again.
    async fn create(&self, db: &projections::Database, subject: &str) -> String {
        let admin = admin();
        let query = "mutation($s: String!) { createTicket(input: {subject: $s}) { id } }";
        let variables = json!({ "s": subject });
        let started = Instant::now();
        loop {
            assert!(
                started.elapsed() < Duration::from_secs(90),
                "ticket '{subject}' could not be created within 90 s"
            );
            let index = self.pick();
            let refused = match self.post(index, &admin, query, &variables).await {
                Ok(response) if response.get("errors").is_none() => {
                    return response["data"]["createTicket"]["id"]
                        .as_str()
                        .expect("ticket id")
                        .to_string();
                }
                Ok(response) => {
                    self.note_error(&response);
                    true
                }
                Err(error) => {
                    self.note_failure(index, &error);
                    if error.is_connect() {
                        // Never sent: nothing can have happened.
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                    false
                }
            };
            tokio::time::sleep(Duration::from_secs(1)).await;
            if let Some(id) = created_in_log(db, subject).await {
                let found = if refused {
                    &self.refused_creates_found
                } else {
                    &self.lost_creates_found
                };
                found.fetch_add(1, Ordering::Relaxed);
                return id;
            }
            self.create_retries.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// The ticket created with `subject`, from the event log.
async fn created_in_log(db: &projections::Database, subject: &str) -> Option<String> {
    let projections::db::Backend::Postgres(pool) = db else {
        panic!("PostgreSQL only");
    };
    let ids: Vec<String> = sqlx::query_scalar(
        "SELECT aggregate_id FROM events
          WHERE aggregate_type = 'Ticket' AND event_type = 'TicketCreated'
            AND payload -> 'TicketCreated' ->> 'subject' = $1",
    )
    .bind(subject)
    .fetch_all(pool)
    .await
    .expect("look for a created ticket");
    assert!(ids.len() <= 1, "'{subject}' created {} times", ids.len());
    ids.into_iter().next()
}

/// How long an agent works on a ticket before resolving it, unless it is full: agents
/// reach their capacity now and then, so the capacity check has something to check.
const HANDLING: Duration = Duration::from_secs(10);

/// An agent at work: polls its queue on some live replica and resolves what it is given
/// (the ticket it has held longest, once held for [`HANDLING`] or at once when full), until
/// `done`. Returns how many tickets its resolutions answered for.
async fn agent_at_work(
    cluster: Arc<Cluster>,
    agent_id: String,
    capacity: usize,
    done: Arc<AtomicBool>,
) -> usize {
    let token = Server::token("acme", "agent", &agent_id);
    let mut resolved = 0;
    let mut held: HashMap<String, Instant> = HashMap::new();
    let mut idle = Duration::from_millis(100);
    // Spread the polls of the fifty agents.
    let offset = agent_id.bytes().map(u64::from).sum::<u64>() % 100;
    tokio::time::sleep(Duration::from_millis(offset)).await;
    while !done.load(Ordering::Relaxed) {
        let queue = cluster
            .request(&token, "{ myQueue { tickets { id } } }", json!({}))
            .await;
        let ids: BTreeSet<String> = queue["data"]["myQueue"]["tickets"]
            .as_array()
            .map(|tickets| {
                tickets
                    .iter()
                    .filter_map(|t| t["id"].as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default();
        held.retain(|id, _| ids.contains(id));
        for id in &ids {
            held.entry(id.clone()).or_insert_with(Instant::now);
        }
        let Some((oldest, since)) = held.iter().min_by_key(|(_, since)| **since) else {
            // Nothing given: look again soon, less often the longer nothing comes.
            tokio::time::sleep(idle).await;
            idle = (idle * 2).min(Duration::from_millis(800));
            continue;
        };
        idle = Duration::from_millis(100);
        if held.len() >= capacity || since.elapsed() >= HANDLING {
            let oldest = oldest.clone();
            let answer = cluster
                .request(
                    &token,
                    "mutation($id: ID!) { resolveTicket(id: $id) { id status } }",
                    json!({ "id": oldest }),
                )
                .await;
            if answer["data"]["resolveTicket"]["status"] == "RESOLVED" {
                resolved += 1;
            }
            held.remove(&oldest);
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    resolved
}

/// Replays the event log in global commit order and returns every violation of capacity
/// and single ownership, plus the created tickets (subject -> id) and the final holders.
struct LogCheck {
    violations: Vec<String>,
    created: BTreeMap<String, String>,
    duplicated_subjects: Vec<String>,
    assignments: usize,
    /// Assignments that filled the agent's last free slot.
    filled_up: usize,
    reassignments: usize,
    resolutions: usize,
    slots_reserved: usize,
    slots_released: usize,
    events: usize,
    still_active: usize,
}

async fn check_the_log(db: &projections::Database) -> LogCheck {
    let projections::db::Backend::Postgres(pool) = db else {
        panic!("PostgreSQL only");
    };
    let rows: Vec<(String, String, i64, String, String)> = sqlx::query_as(
        "SELECT aggregate_type, aggregate_id, sequence, event_type, payload::text
           FROM events ORDER BY tx_id, position",
    )
    .fetch_all(pool)
    .await
    .expect("read the event log");
    let mut check = LogCheck {
        violations: Vec::new(),
        created: BTreeMap::new(),
        duplicated_subjects: Vec::new(),
        assignments: 0,
        filled_up: 0,
        reassignments: 0,
        resolutions: 0,
        slots_reserved: 0,
        slots_released: 0,
        events: rows.len(),
        still_active: 0,
    };
    let mut sequences: HashMap<(String, String), i64> = HashMap::new();
    let mut holder: HashMap<String, String> = HashMap::new();
    let mut active: HashMap<String, i64> = HashMap::new();
    let mut max: HashMap<String, i64> = HashMap::new();
    for (aggregate_type, aggregate_id, sequence, event_type, payload) in rows {
        let payload: Value = serde_json::from_str(&payload).expect("payload JSON");
        let body = &payload[event_type.as_str()];
        // The global order keeps every aggregate's own order.
        let last = sequences
            .insert((aggregate_type.clone(), aggregate_id.clone()), sequence)
            .unwrap_or(0);
        if sequence <= last {
            check.violations.push(format!(
                "{aggregate_type} {aggregate_id}: sequence {sequence} after {last} in commit order"
            ));
        }
        let ticket = aggregate_id.as_str();
        match (aggregate_type.as_str(), event_type.as_str()) {
            ("AgentStatus", "AgentRegistered") => {
                max.insert(aggregate_id.clone(), body["max_tickets"].as_i64().unwrap());
            }
            ("AgentStatus", "SlotReserved") => check.slots_reserved += 1,
            ("AgentStatus", "SlotReleased") => check.slots_released += 1,
            ("AgentStatus", "AgentCapacityChanged") => {
                max.insert(aggregate_id.clone(), body["to"].as_i64().unwrap());
            }
            ("Ticket", "TicketCreated") => {
                let subject = body["subject"].as_str().unwrap().to_string();
                if check
                    .created
                    .insert(subject.clone(), aggregate_id.clone())
                    .is_some()
                {
                    check.duplicated_subjects.push(subject);
                }
            }
            ("Ticket", "TicketAssigned") => {
                check.assignments += 1;
                let agent = body["agent_id"].as_str().unwrap().to_string();
                let previous = body["previous_agent_id"].as_str();
                if let Some(owner) = holder.get(ticket).cloned() {
                    if owner == agent || previous != Some(owner.as_str()) {
                        check.violations.push(format!(
                            "ticket {ticket} assigned to {agent} while active with {owner} (previous_agent_id {previous:?})"
                        ));
                    } else {
                        check.reassignments += 1;
                    }
                    *active.entry(owner).or_default() -= 1;
                }
                let count = active.entry(agent.clone()).or_default();
                *count += 1;
                let limit = max.get(&agent).copied();
                if limit == Some(*count) {
                    check.filled_up += 1;
                }
                if limit.is_none_or(|limit| *count > limit) {
                    check.violations.push(format!(
                        "{agent} holds {count} active tickets (max {limit:?}) after ticket {ticket}"
                    ));
                }
                holder.insert(ticket.to_string(), agent);
            }
            ("Ticket", "TicketResolved" | "TicketClosed" | "TicketRequeued" | "TicketReopened") => {
                if event_type == "TicketResolved" {
                    check.resolutions += 1;
                }
                if let Some(owner) = holder.remove(ticket) {
                    *active.entry(owner).or_default() -= 1;
                }
            }
            _ => {}
        }
    }
    check.still_active = holder.len();
    check
}

/// `command ok-count/mean-seconds` of every command a replica ran, and its conflict
/// retries and consistency timeouts, from its `/metrics`.
async fn command_figures(http: &reqwest::Client, base_url: &str) -> String {
    let Ok(response) = http.get(format!("{base_url}/metrics")).send().await else {
        return "no answer".into();
    };
    let body = response.text().await.unwrap_or_default();
    let value = |line: &str| line.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok());
    let mut figures: BTreeMap<String, (f64, f64)> = BTreeMap::new();
    let mut others = Vec::new();
    for line in body.lines() {
        for (prefix, is_sum) in [
            ("helpdesk_command_duration_seconds_sum{", true),
            ("helpdesk_command_duration_seconds_count{", false),
        ] {
            if let Some(labels) = line.strip_prefix(prefix) {
                let labels = labels.split('}').next().unwrap_or_default();
                let labels = labels
                    .replace("command=", "")
                    .replace(",outcome=", ":")
                    .replace('"', "");
                let entry = figures.entry(labels).or_default();
                let v = value(line).unwrap_or_default();
                if is_sum {
                    entry.0 = v;
                } else {
                    entry.1 = v;
                }
            }
        }
        if (line.starts_with("helpdesk_command_conflict_retries_total{")
            || line.starts_with("helpdesk_consistency_timeouts_total{")
            || line.starts_with("helpdesk_projection_failures_total{"))
            && value(line).is_some_and(|v| v > 0.0)
        {
            others.push(line.trim_start_matches("helpdesk_").to_string());
        }
    }
    let commands: Vec<String> = figures
        .iter()
        .filter(|(_, (_, count))| *count > 0.0)
        .map(|(name, (sum, count))| format!("{name} {count}/{:.3}s", sum / count))
        .collect();
    format!("{}; {}", commands.join(", "), others.join(", "))
}

/// Fails when a figure that should keep growing (tickets created, minus tickets open)
/// stands still for [`Progress::STALL`]: slow machines get all the time they need, a stuck
/// system does not.
struct Progress {
    what: &'static str,
    best: i64,
    since: Instant,
}

impl Progress {
    const STALL: Duration = Duration::from_secs(60);

    fn new(what: &'static str) -> Self {
        Self {
            what,
            best: i64::MIN,
            since: Instant::now(),
        }
    }

    fn check(&mut self, figure: i64) {
        if figure > self.best {
            self.best = figure;
            self.since = Instant::now();
        }
        assert!(
            self.since.elapsed() < Self::STALL,
            "{} made no progress for {:?} (stuck at {figure})",
            self.what,
            Self::STALL
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn three_replicas_fifty_agents_two_thousand_tickets_with_a_kill_midway() {
    const AGENTS: usize = 50;
    const CAPACITY: i64 = 3;
    const CREATORS: usize = 8;

    let _turn = SERIAL.lock().await;
    let Some(db) = TestDb::postgres().await else {
        eprintln!("TEST_DATABASE_URL unset: skipping the replica stress test");
        return;
    };
    let tickets: usize = std::env::var("REPLICA_STRESS_TICKETS")
        .ok()
        .map(|n| n.parse().expect("REPLICA_STRESS_TICKETS: a number"))
        .unwrap_or(2_000);
    let test_started = Instant::now();
    let mut servers: Vec<Option<Server>> = Vec::new();
    for _ in 0..3 {
        servers.push(Some(Server::start(&db).await));
    }
    let metrics_http = reqwest::Client::new();
    single_holders(&metrics_http, &live(&servers), Duration::from_secs(15)).await;

    // Fifty agents, registered and brought online through every replica in turn.
    let agent_ids: Vec<String> = (0..AGENTS).map(|i| format!("agent-{i:02}")).collect();
    for (i, id) in agent_ids.iter().enumerate() {
        let server = servers[i % 3].as_ref().unwrap();
        register(server, id, CAPACITY).await;
        online(server, id).await;
    }
    eprintln!("{AGENTS} agents online after {:?}", test_started.elapsed());

    let check_db = db.connect().await;
    let cluster = Arc::new(Cluster::new(
        servers
            .iter()
            .flatten()
            .map(|s| s.base_url.clone())
            .collect(),
    ));
    let done = Arc::new(AtomicBool::new(false));
    let workers: Vec<_> = agent_ids
        .iter()
        .map(|id| {
            let worker =
                agent_at_work(cluster.clone(), id.clone(), CAPACITY as usize, done.clone());
            tokio::spawn(worker)
        })
        .collect();

    // Creators take the next subject until all are created.
    let load_started = Instant::now();
    let next_subject = Arc::new(AtomicUsize::new(0));
    let created = Arc::new(AtomicUsize::new(0));
    let creators: Vec<_> = (0..CREATORS)
        .map(|_| {
            let (cluster, next, created, db) = (
                cluster.clone(),
                next_subject.clone(),
                created.clone(),
                check_db.clone(),
            );
            tokio::spawn(async move {
                let mut ids = Vec::new();
                loop {
                    let n = next.fetch_add(1, Ordering::Relaxed);
                    if n >= tickets {
                        return ids;
                    }
                    let subject = format!("stress ticket {n:04}");
                    ids.push((subject.clone(), cluster.create(&db, &subject).await));
                    created.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();

    // Progress, every 5 s.
    let reporter = {
        let (created, db, done) = (created.clone(), check_db.clone(), done.clone());
        tokio::spawn(async move {
            while !done.load(Ordering::Relaxed) {
                tokio::time::sleep(Duration::from_secs(5)).await;
                let count = |status: &'static str| {
                    let db = db.clone();
                    async move {
                        common::count(
                            &db,
                            &format!("SELECT COUNT(*) FROM tickets WHERE status = '{status}'"),
                        )
                        .await
                    }
                };
                eprintln!(
                    "{:>6.1?}: {} created; {} queued, {} assigned, {} resolved in the read model",
                    load_started.elapsed(),
                    created.load(Ordering::Relaxed),
                    count("QUEUED").await,
                    count("ASSIGNED").await,
                    count("RESOLVED").await,
                );
            }
        })
    };

    // Midway, the replica running the assignment process is killed.
    let mut progress = Progress::new("ticket creation");
    while created.load(Ordering::Relaxed) < tickets / 2 {
        progress.check(created.load(Ordering::Relaxed) as i64);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (holders, _) = single_holders(&metrics_http, &live(&servers), Duration::from_secs(5)).await;
    let victim = holders["assignment"];
    let lost: Vec<&str> = holders
        .iter()
        .filter(|(_, h)| **h == victim)
        .map(|(role, _)| *role)
        .collect();
    servers[victim].take().unwrap().kill().await;
    let killed_at = Instant::now();
    let at_kill = created.load(Ordering::Relaxed);
    cluster.alive[victim].store(false, Ordering::Relaxed);
    let (after, takeover) =
        single_holders(&metrics_http, &live(&servers), Duration::from_secs(10)).await;
    eprintln!(
        "replica {victim} (held {lost:?}) killed at {at_kill} created tickets, {:?} into the load; \
         every role held once again after {takeover:?}: {after:?}",
        load_started.elapsed()
    );
    assert!(
        takeover <= Duration::from_secs(10),
        "takeover took {takeover:?}"
    );

    let mut subjects: BTreeMap<String, String> = BTreeMap::new();
    for creator in creators {
        for (subject, id) in creator.await.expect("creator") {
            assert!(subjects.insert(subject, id).is_none());
        }
    }
    let creation = load_started.elapsed();
    eprintln!(
        "{} tickets created in {creation:?} ({:?} after the kill)",
        subjects.len(),
        killed_at.elapsed()
    );
    assert_eq!(subjects.len(), tickets);

    // Everything gets resolved.
    let mut progress = Progress::new("ticket resolution");
    let resolved_at = loop {
        let open = common::count(
            &check_db,
            "SELECT COUNT(*) FROM tickets WHERE status <> 'RESOLVED'",
        )
        .await;
        if open == 0 {
            break load_started.elapsed();
        }
        progress.check(-open);
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    done.store(true, Ordering::Relaxed);
    reporter.abort();
    let mut resolved_answers = 0;
    for worker in workers {
        resolved_answers += worker.await.expect("agent");
    }
    eprintln!(
        "all resolved {resolved_at:?} into the load; {resolved_answers} resolveTicket answers said RESOLVED"
    );

    // The read model: every created ticket, resolved.
    let projections::db::Backend::Postgres(pool) = &check_db else {
        unreachable!()
    };
    let statuses: Vec<(String, i64)> =
        sqlx::query_as("SELECT status, COUNT(*) FROM tickets GROUP BY status")
            .fetch_all(pool)
            .await
            .expect("statuses");
    assert_eq!(statuses, vec![("RESOLVED".to_string(), tickets as i64)]);
    let in_model: Vec<String> = sqlx::query_scalar("SELECT id FROM tickets")
        .fetch_all(pool)
        .await
        .expect("ids");
    let in_model: BTreeSet<String> = in_model.into_iter().collect();
    let answered: BTreeSet<String> = subjects.values().cloned().collect();
    assert_eq!(
        in_model, answered,
        "the read model holds exactly the created tickets"
    );

    // Every surviving replica answers the same through GraphQL.
    for server in servers.iter().flatten() {
        let resolved = server
            .data(
                &admin(),
                "{ all: tickets { totalCount } resolved: tickets(filter: {status: [RESOLVED]}) { totalCount } }",
                json!({}),
            )
            .await;
        assert_eq!(
            resolved,
            json!({"all": {"totalCount": tickets}, "resolved": {"totalCount": tickets}})
        );
    }

    // The log: nothing lost or duplicated, never over capacity, never two owners.
    let log = check_the_log(&check_db).await;
    eprintln!(
        "log: {} events, {} tickets created, {} assignments ({} filled the agent's last slot, {} reassignments), {} resolutions, {} slots reserved and {} released",
        log.events,
        log.created.len(),
        log.assignments,
        log.filled_up,
        log.reassignments,
        log.resolutions,
        log.slots_reserved,
        log.slots_released
    );
    assert!(
        log.duplicated_subjects.is_empty(),
        "created twice: {:?}",
        log.duplicated_subjects
    );
    assert_eq!(
        log.created, subjects,
        "the log holds exactly the tickets created"
    );
    assert_eq!(log.resolutions, tickets, "one resolution per ticket");
    assert_eq!(log.still_active, 0);
    assert!(
        log.violations.is_empty(),
        "{} violations, first ones: {:#?}",
        log.violations.len(),
        &log.violations[..log.violations.len().min(20)]
    );

    // The slot ledger empties once the assignment process has released every slot (a
    // reservation orphaned by the killed replica is released after its grace period).
    let emptied = eventually(
        "the slot ledger to empty",
        Duration::from_secs(120),
        || async {
            let slots = common::count(&check_db, "SELECT COUNT(*) FROM slot_reservations").await;
            (slots == 0).then(|| load_started.elapsed())
        },
    )
    .await;
    eprintln!("slot ledger empty {emptied:?} into the load");

    let errors = cluster.error_answers.lock().unwrap().clone();
    eprintln!(
        "clients: {} requests without an answer, {} lost creates found in the log, {} creates sent again, error answers {errors:?}",
        cluster.transport_errors.load(Ordering::Relaxed),
        cluster.lost_creates_found.load(Ordering::Relaxed),
        cluster.create_retries.load(Ordering::Relaxed),
    );
    assert_eq!(
        cluster.refused_creates_found.load(Ordering::Relaxed),
        0,
        "a create answered with an error happened all the same"
    );
    for (index, url) in live(&servers) {
        eprintln!(
            "replica {index}: {}",
            command_figures(&metrics_http, &url).await
        );
    }
    for server in servers.into_iter().flatten() {
        server.stop().await;
    }
    eprintln!("stress test done in {:?}", test_started.elapsed());
}
