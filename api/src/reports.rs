//! Reports over plain HTTP, for spreadsheets and scripts:
//! `GET /reports/chatbot/{botId}.csv?from=&to=&granularity=` — the buckets of
//! `chatbotReport` (`CONTRACT.md`, "Chatbot"), one CSV row per bucket.
//!
//! The request carries the same bearer token as GraphQL (`Authorization: Bearer ...`);
//! admins and analysts may read reports. Answers: 401 without a token or with a bad one,
//! 403 for other roles, 400 for a malformed or empty range or an unknown granularity,
//! 404 for a bot that is not the caller's organization's, 500 (details in the log only) when
//! storage fails. `from` and `to` are RFC 3339 instants; buckets whose start is in
//! `[from, to)` are listed. `granularity` is HOUR, DAY or WEEK (default DAY).
//!
//! [`chatbot_report`] is the one checked entry point, shared with the GraphQL resolver.

use std::collections::HashMap;
use std::fmt::Write;
use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use chrono::{DateTime, SecondsFormat, Utc};
use domain::Role;
use projections::chatbot::{self, ChatbotReport, Granularity};
use projections::Database;

use crate::auth::{Caller, TokenKeys};
use crate::error::{ApiError, ApiResult};
use crate::helpdesk::Helpdesk;

/// The roles that may read reports.
pub const REPORT_ROLES: &[Role] = &[Role::Admin, Role::Analyst];

/// The granularity when a request names none.
pub const DEFAULT_GRANULARITY: Granularity = Granularity::Day;

/// The CSV header, in the order of [`csv`]'s columns.
pub const CSV_HEADER: &str = "start,interactions,successful,escalated,successRate,\
escalationRate,avgResponseMs,avgConfidence,avgRating";

/// The report of bot `bot_id` for `caller`: `FORBIDDEN` for roles other than admin and
/// analyst, `BAD_USER_INPUT` unless `from < to`, `NOT_FOUND` for a bot outside the caller's
/// organization.
pub async fn chatbot_report(
    db: &Database,
    caller: &Caller,
    bot_id: &str,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    granularity: Granularity,
) -> ApiResult<ChatbotReport> {
    if !REPORT_ROLES.contains(&caller.actor.role) {
        return Err(ApiError::Forbidden(format!(
            "the {} role may not read chatbot reports",
            caller.actor.role
        )));
    }
    if from >= to {
        return Err(ApiError::bad_input("from must be before to"));
    }
    chatbot::report(
        db,
        &caller.organization,
        bot_id.trim(),
        from,
        to,
        granularity,
    )
    .await?
    .ok_or_else(|| ApiError::NotFound("bot not found".into()))
}

/// The report's buckets as CSV: [`CSV_HEADER`], then one row per bucket, oldest first.
/// Starts are RFC 3339 UTC; an average without anything to average is an empty cell.
pub fn csv(report: &ChatbotReport) -> String {
    let mut out = String::with_capacity(64 * (report.buckets.len() + 1));
    out.push_str(CSV_HEADER);
    out.push('\n');
    let optional = |value: Option<f64>| value.map(|v| v.to_string()).unwrap_or_default();
    for bucket in &report.buckets {
        let f = &bucket.figures;
        let _ = writeln!(
            out,
            "{},{},{},{},{},{},{},{},{}",
            bucket.start.to_rfc3339_opts(SecondsFormat::Secs, true),
            f.interactions,
            f.successful,
            f.escalated,
            f.success_rate,
            f.escalation_rate,
            optional(f.avg_response_ms),
            optional(f.avg_confidence),
            optional(f.avg_rating),
        );
    }
    out
}

#[derive(Clone)]
struct ReportsState {
    helpdesk: Arc<Helpdesk>,
    keys: TokenKeys,
}

/// The report routes.
pub fn routes(helpdesk: Arc<Helpdesk>, keys: TokenKeys) -> Router {
    Router::new()
        // The `.csv` suffix is checked in the handler: a path parameter is a whole segment.
        .route("/reports/chatbot/{file}", get(chatbot_csv))
        .with_state(ReportsState { helpdesk, keys })
}

fn refuse(status: StatusCode, message: &str) -> Response {
    (status, format!("{message}\n")).into_response()
}

fn refusal(error: ApiError) -> Response {
    let status = match &error {
        ApiError::Unauthenticated(_) => {
            return (
                StatusCode::UNAUTHORIZED,
                [(header::WWW_AUTHENTICATE, "Bearer")],
                format!("{}\n", error.message()),
            )
                .into_response()
        }
        ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
        ApiError::NotFound(_) => StatusCode::NOT_FOUND,
        ApiError::BadUserInput(_) => StatusCode::BAD_REQUEST,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    };
    refuse(status, error.message())
}

/// An RFC 3339 instant from a query parameter. An unescaped `+` of an offset arrives as a
/// space; it is read as the `+` it was.
fn instant(query: &HashMap<String, String>, name: &str) -> Result<DateTime<Utc>, ApiError> {
    let text = query
        .get(name)
        .map(|v| v.trim())
        .filter(|v| !v.is_empty())
        .ok_or_else(|| ApiError::bad_input(format!("{name} is required (RFC 3339)")))?;
    DateTime::parse_from_rfc3339(text)
        .or_else(|_| DateTime::parse_from_rfc3339(&text.replace(' ', "+")))
        .map(|t| t.with_timezone(&Utc))
        .map_err(|_| {
            let shown: String = text.chars().take(64).collect();
            ApiError::bad_input(format!("{name} {shown:?} is not an RFC 3339 instant"))
        })
}

async fn chatbot_csv(
    State(state): State<ReportsState>,
    Path(file): Path<String>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    let authorization = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    let caller = match state.keys.authenticate(authorization) {
        Ok(caller) => caller,
        Err(error) => return refusal(error.into()),
    };
    let Some(bot_id) = file.strip_suffix(".csv").filter(|id| !id.is_empty()) else {
        return refuse(
            StatusCode::NOT_FOUND,
            "not found: use /reports/chatbot/{botId}.csv",
        );
    };
    let parsed = (|| {
        let from = instant(&query, "from")?;
        let to = instant(&query, "to")?;
        let granularity = match query.get("granularity").map(|g| g.trim()) {
            None | Some("") => DEFAULT_GRANULARITY,
            Some(name) => name.parse().map_err(ApiError::bad_input)?,
        };
        Ok::<_, ApiError>((from, to, granularity))
    })();
    let (from, to, granularity) = match parsed {
        Ok(parsed) => parsed,
        Err(error) if REPORT_ROLES.contains(&caller.actor.role) => return refusal(error),
        // Roles that may not read reports learn that first, whatever they asked.
        Err(_) => {
            return refusal(ApiError::Forbidden(format!(
                "the {} role may not read chatbot reports",
                caller.actor.role
            )))
        }
    };
    let report =
        match chatbot_report(&state.helpdesk.db, &caller, bot_id, from, to, granularity).await {
            Ok(report) => report,
            Err(error) => return refusal(error),
        };
    // The file name shows the bot id with only characters that need no quoting.
    let name: String = bot_id
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_')
        .take(64)
        .collect();
    (
        [
            (header::CONTENT_TYPE, "text/csv; charset=utf-8".to_string()),
            (
                header::CONTENT_DISPOSITION,
                format!(
                    "attachment; filename=\"chatbot-{name}-{}.csv\"",
                    granularity.as_str().to_ascii_lowercase()
                ),
            ),
        ],
        csv(&report),
    )
        .into_response()
}
