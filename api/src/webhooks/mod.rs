//! Inbound webhooks of the messaging providers.
//!
//! - `GET /webhooks/whatsapp`: the `hub.challenge` handshake, answered for the WhatsApp
//!   channel whose `verifyToken` matches.
//! - `POST /webhooks/whatsapp`: a WhatsApp Cloud API notification, routed by
//!   `metadata.phone_number_id` to the organization that configured that number; the
//!   `X-Hub-Signature-256` of the raw body must verify with that channel's `appSecret`.
//! - `POST /webhooks/telegram/{channelId}`: a Telegram `Update`; the
//!   `X-Telegram-Bot-Api-Secret-Token` must equal the channel's `secretToken`.
//!
//! Answers: 401 for a signature or secret that does not verify, 400 for a payload that
//! does not parse, 404 for an unknown channel — in all of these nothing is stored. 200
//! once every message is recorded (a redelivery is recorded once); 500 when storing failed,
//! so that the provider delivers again.
//!
//! [`parse`] holds the pure part (payload shapes, signatures).

pub mod parse;

use std::collections::HashMap;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use domain::conversation::Channel;

use crate::conversations::{channel_caller, InboundMessage};
use crate::helpdesk::Helpdesk;

/// The webhook routes.
pub fn routes(helpdesk: Arc<Helpdesk>) -> Router {
    Router::new()
        .route(
            "/webhooks/whatsapp",
            get(whatsapp_challenge).post(whatsapp_notification),
        )
        .route("/webhooks/telegram/{channel_id}", post(telegram_update))
        .with_state(helpdesk)
}

/// A setting of a channel's stored secrets.
fn secret(settings: &serde_json::Value, name: &str) -> Option<String> {
    settings
        .get(name)
        .and_then(|v| v.as_str())
        .map(str::to_string)
}

fn failed(error: impl std::fmt::Display) -> Response {
    tracing::error!(%error, "webhook could not be stored");
    (
        StatusCode::INTERNAL_SERVER_ERROR,
        "not stored; deliver again",
    )
        .into_response()
}

async fn whatsapp_challenge(
    State(helpdesk): State<Arc<Helpdesk>>,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    let channels =
        match projections::conversations::channels_of_kind(&helpdesk.db, "WHATSAPP").await {
            Ok(channels) => channels,
            Err(error) => return failed(error),
        };
    for channel_id in channels {
        let settings =
            match projections::conversations::channel_secrets(&helpdesk.db, &channel_id).await {
                Ok(Some(settings)) => settings,
                Ok(None) => continue,
                Err(error) => return failed(error),
            };
        let Some(token) = secret(&settings, "verifyToken") else {
            continue;
        };
        if let Some(challenge) = parse::verify_challenge(&query, &token) {
            return (StatusCode::OK, challenge).into_response();
        }
    }
    (StatusCode::FORBIDDEN, "verification failed").into_response()
}

async fn whatsapp_notification(
    State(helpdesk): State<Arc<Helpdesk>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let webhook = match parse::parse_whatsapp(&body) {
        Ok(webhook) => webhook,
        Err(error) => {
            tracing::warn!(kind = error_kind(&error), "malformed WhatsApp webhook");
            return (StatusCode::BAD_REQUEST, "malformed payload").into_response();
        }
    };
    let signature = headers
        .get(parse::WHATSAPP_SIGNATURE_HEADER)
        .and_then(|v| v.to_str().ok());
    // Every number in the payload must be ours and sign it, before anything is stored.
    let mut routes: HashMap<String, (String, String)> = HashMap::new();
    for number in &webhook.phone_number_ids {
        let channel = match projections::conversations::whatsapp_channel(&helpdesk.db, number).await
        {
            Ok(Some(channel)) => channel,
            Ok(None) => return (StatusCode::UNAUTHORIZED, "unknown number").into_response(),
            Err(error) => return failed(error),
        };
        let settings =
            match projections::conversations::channel_secrets(&helpdesk.db, &channel.0).await {
                Ok(settings) => settings.unwrap_or_default(),
                Err(error) => return failed(error),
            };
        let verified = secret(&settings, "appSecret").is_some_and(|app_secret| {
            parse::verify_whatsapp_signature(app_secret.as_bytes(), &body, signature)
        });
        if !verified {
            return (StatusCode::UNAUTHORIZED, "bad signature").into_response();
        }
        routes.insert(number.clone(), channel);
    }
    for message in webhook.messages {
        let Some((channel_id, organization)) = routes.get(&message.phone_number_id) else {
            return (StatusCode::UNAUTHORIZED, "unknown number").into_response();
        };
        let caller = channel_caller(organization, channel_id);
        let received = helpdesk
            .receive_message(
                &caller,
                &uuid::Uuid::new_v4().to_string(),
                InboundMessage {
                    channel: Channel::Whatsapp,
                    channel_id: Some(channel_id.clone()),
                    external_id: message.from,
                    customer_name: message.customer_name,
                    text: message.text,
                    external_message_id: Some(message.message_id),
                },
            )
            .await;
        match received {
            Ok(_) => {}
            // The provider would deliver a refused message forever; it is dropped, loudly.
            Err(crate::error::ApiError::BadUserInput(why)) => {
                tracing::warn!(why, "WhatsApp message refused")
            }
            Err(error) => return failed(error.code()),
        }
    }
    StatusCode::OK.into_response()
}

async fn telegram_update(
    State(helpdesk): State<Arc<Helpdesk>>,
    Path(channel_id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let channel = match projections::conversations::channel(&helpdesk.db, &channel_id).await {
        Ok(Some((organization, kind, _))) if kind == "TELEGRAM" => organization,
        Ok(_) => return (StatusCode::NOT_FOUND, "unknown channel").into_response(),
        Err(error) => return failed(error),
    };
    let settings =
        match projections::conversations::channel_secrets(&helpdesk.db, &channel_id).await {
            Ok(settings) => settings.unwrap_or_default(),
            Err(error) => return failed(error),
        };
    let header = headers
        .get(parse::TELEGRAM_SECRET_HEADER)
        .and_then(|v| v.to_str().ok());
    let verified = secret(&settings, "secretToken")
        .is_some_and(|expected| parse::verify_telegram_secret(&expected, header));
    if !verified {
        return (StatusCode::UNAUTHORIZED, "bad secret token").into_response();
    }
    let message = match parse::parse_telegram(&body) {
        Ok(Some(message)) => message,
        Ok(None) => return StatusCode::OK.into_response(),
        Err(error) => {
            tracing::warn!(kind = error_kind(&error), "malformed Telegram webhook");
            return (StatusCode::BAD_REQUEST, "malformed payload").into_response();
        }
    };
    let caller = channel_caller(&channel, &channel_id);
    let received = helpdesk
        .receive_message(
            &caller,
            &uuid::Uuid::new_v4().to_string(),
            InboundMessage {
                channel: Channel::Telegram,
                channel_id: Some(channel_id.clone()),
                external_id: message.chat_id,
                customer_name: message.customer_name,
                text: message.text,
                external_message_id: Some(message.message_id),
            },
        )
        .await;
    match received {
        Ok(_) => StatusCode::OK.into_response(),
        Err(error) => failed(error.code()),
    }
}

/// What kind of parse error it was, without the payload's words (they may be a customer's).
fn error_kind(error: &parse::ParseError) -> &'static str {
    match error {
        parse::ParseError::TooLarge { .. } => "too large",
        parse::ParseError::NotJson(_) => "not JSON",
        parse::ParseError::Shape { .. } => "unexpected shape",
        parse::ParseError::UnexpectedObject(_) => "unexpected object",
    }
}
