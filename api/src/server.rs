//! The HTTP server: GraphQL (`POST /graphql`, GraphiQL on `GET /graphql`), `/healthz`,
//! `/readyz`, `/metrics`, subscriptions over graphql-transport-ws (`/graphql/ws`), the
//! providers' webhooks (`/webhooks/...`), the chatbot CSV report
//! (`/reports/chatbot/...`); graceful shutdown that drains requests before stopping the
//! projection runners and closing the database.

use async_graphql::http::GraphiQLSource;
use async_graphql::Data;
use async_graphql_axum::{GraphQLProtocol, GraphQLRequest, GraphQLResponse, GraphQLWebSocket};
use axum::extract::ws::WebSocketUpgrade;
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use std::fmt::Write;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::auth::TokenKeys;
use crate::config::Config;
use crate::graphql::{build_schema, HelpdeskSchema, RequestContext};
use crate::helpdesk::Helpdesk;
use projections::event_log;

/// How long the server waits at start for its projections to catch up with the log.
const STARTUP_CATCH_UP: std::time::Duration = std::time::Duration::from_secs(30);

/// What every handler needs.
#[derive(Clone)]
pub struct AppState {
    helpdesk: Arc<Helpdesk>,
    schema: HelpdeskSchema,
    keys: TokenKeys,
    ready_max_behind: i64,
    /// Ends open subscriptions when the server stops.
    shutdown: CancellationToken,
}

/// Runs the server until `shutdown` is cancelled, then drains and stops.
/// Prints `helpdesk listening on http://ADDR` once the port is bound (tests read it).
pub async fn serve(config: Config, shutdown: CancellationToken) -> anyhow::Result<()> {
    // Refuse to start before touching the database when tokens could not be checked.
    let keys = TokenKeys::from_config(&config)?;
    let runners_stop = CancellationToken::new();
    let (helpdesk, tasks) = Helpdesk::start(&config, runners_stop.clone()).await?;
    // Serve only once the read models show everything committed before the start, so a
    // restart never answers from a stale view (bounded: a long backlog is served while it
    // drains, and /readyz tells).
    let head = projections::event_log::log_head(&helpdesk.db).await?;
    if let Err(lagging) = helpdesk.progress.wait_for_all(head, STARTUP_CATCH_UP).await {
        tracing::warn!(
            projection = lagging.projection,
            "still catching up; serving anyway"
        );
    }
    let listener = TcpListener::bind(config.addr).await?;
    let addr: SocketAddr = listener.local_addr()?;
    let state = AppState {
        schema: build_schema(Some(helpdesk.clone())),
        helpdesk: helpdesk.clone(),
        keys,
        ready_max_behind: config.ready_max_behind,
        shutdown: shutdown.clone(),
    };
    tracing::info!(%addr, backend = helpdesk.db.backend_name(), "helpdesk listening");
    println!("helpdesk listening on http://{addr}");
    axum::serve(listener, router(state))
        .with_graceful_shutdown(shutdown.cancelled_owned())
        .await?;
    tracing::info!("requests drained; stopping projection runners");
    runners_stop.cancel();
    for task in tasks {
        let _ = task.await;
    }
    helpdesk.db.close().await;
    tracing::info!("helpdesk stopped");
    Ok(())
}

/// The routes.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/graphql", get(graphiql).post(graphql))
        .route("/graphql/ws", get(graphql_ws))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(state.clone())
        .merge(crate::reports::routes(
            state.helpdesk.clone(),
            state.keys.clone(),
        ))
        .merge(crate::webhooks::routes(state.helpdesk))
}

async fn graphiql() -> Html<String> {
    Html(
        GraphiQLSource::build()
            .endpoint("/graphql")
            .subscription_endpoint("/graphql/ws")
            .finish(),
    )
}

/// Subscriptions. The caller is whoever the `authorization` of the `connection_init`
/// payload names; a missing or bad token closes the connection, the close frame's reason
/// starting with "unauthenticated".
async fn graphql_ws(
    State(state): State<AppState>,
    protocol: GraphQLProtocol,
    upgrade: WebSocketUpgrade,
) -> Response {
    upgrade
        .protocols(async_graphql::http::ALL_WEBSOCKET_PROTOCOLS)
        .on_upgrade(move |socket| async move {
            let keys = state.keys.clone();
            let connection = GraphQLWebSocket::new(socket, state.schema.clone(), protocol)
                .on_connection_init(move |payload| async move {
                    let authorization = payload
                        .get("authorization")
                        .or_else(|| payload.get("Authorization"))
                        .and_then(|v| v.as_str());
                    let caller = keys
                        .authenticate(authorization)
                        .map_err(|e| async_graphql::Error::new(format!("unauthenticated: {e}")))?;
                    let mut data = Data::default();
                    data.insert(RequestContext {
                        caller: Ok(caller),
                        request_id: uuid::Uuid::new_v4().to_string(),
                    });
                    Ok(data)
                })
                .serve();
            tokio::select! {
                _ = connection => {}
                _ = state.shutdown.cancelled() => {}
            }
        })
}

async fn graphql(
    State(state): State<AppState>,
    headers: HeaderMap,
    request: GraphQLRequest,
) -> GraphQLResponse {
    let authorization = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    let request_id = headers
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty() && v.len() <= 128)
        .map(str::to_string)
        .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
    let context = RequestContext {
        caller: state.keys.authenticate(authorization),
        request_id,
    };
    let mut response = state
        .schema
        .execute(request.into_inner().data(context))
        .await;
    // Parse, validation, depth and complexity errors come from async-graphql without a
    // code: they are all the client's malformed input.
    for error in &mut response.errors {
        let extensions = error.extensions.get_or_insert_with(Default::default);
        if extensions.get("code").is_none() {
            extensions.set("code", "BAD_USER_INPUT");
        }
    }
    response.into()
}

async fn readyz(State(state): State<AppState>) -> Response {
    if let Err(error) = state.helpdesk.db.ping().await {
        tracing::warn!(%error, "readiness: database unreachable");
        return (StatusCode::SERVICE_UNAVAILABLE, "database unreachable\n").into_response();
    }
    let mut report = String::new();
    let mut ready = true;
    for (name, checkpoint) in state.helpdesk.progress.checkpoints() {
        let cap = state.ready_max_behind + 1;
        match event_log::count_after(&state.helpdesk.db, checkpoint, cap).await {
            Ok(behind) => {
                ready &= behind <= state.ready_max_behind;
                let _ = writeln!(report, "{name}: {behind} events behind");
            }
            Err(error) => {
                tracing::warn!(%error, "readiness: cannot measure projection lag");
                ready = false;
            }
        }
    }
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, report).into_response()
}

async fn metrics(State(state): State<AppState>) -> Response {
    let helpdesk = &state.helpdesk;
    let m = &helpdesk.metrics;
    let mut out = String::new();
    m.commands.render(
        "helpdesk_command_duration_seconds",
        "Command latency including the read-your-writes wait, by command and outcome.",
        &mut out,
    );
    m.conflict_retries.render(
        "helpdesk_command_conflict_retries_total",
        "Commands retried after a concurrent change to the same aggregate.",
        &mut out,
    );
    m.consistency_timeouts.render(
        "helpdesk_consistency_timeouts_total",
        "Mutations whose projections did not catch up within the bound.",
        &mut out,
    );
    m.projections.lag.render(
        "helpdesk_projection_lag_seconds",
        "Time from an event's occurrence to the commit of its projection.",
        &mut out,
    );
    m.projections.applied.render(
        "helpdesk_projection_events_applied_total",
        "Events applied by each projection in this process.",
        &mut out,
    );
    m.projections.failures.render(
        "helpdesk_projection_failures_total",
        "Projection batches that failed and were retried.",
        &mut out,
    );
    let _ = writeln!(
        out,
        "# HELP helpdesk_projection_events_behind Events committed but not yet applied (capped at 100000).\n# TYPE helpdesk_projection_events_behind gauge"
    );
    for (name, checkpoint) in helpdesk.progress.checkpoints() {
        if let Ok(behind) = event_log::count_after(&helpdesk.db, checkpoint, 100_000).await {
            let _ = writeln!(
                out,
                "helpdesk_projection_events_behind{{projection=\"{name}\"}} {behind}"
            );
        }
    }
    let _ = writeln!(
        out,
        "# HELP helpdesk_lease_held Whether this replica runs the role (a projector or the assignment process).\n# TYPE helpdesk_lease_held gauge"
    );
    let held = helpdesk.leases.held();
    for role in helpdesk.leases.roles() {
        let _ = writeln!(
            out,
            "helpdesk_lease_held{{role=\"{role}\"}} {}",
            u8::from(held.contains(&role))
        );
    }
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], out).into_response()
}
