//! Turning the messaging providers' webhook requests into inbound messages: pure functions,
//! no IO, so that every rule here is tested on the providers' documented payloads.
//!
//! - **WhatsApp Cloud API** (Meta): [`parse_whatsapp`] reads a `whatsapp_business_account`
//!   notification into customer messages ([`WhatsAppInbound`]) and delivery receipts
//!   ([`WhatsAppStatus`]), which are never mixed up. [`verify_whatsapp_signature`] checks
//!   `X-Hub-Signature-256`, and [`verify_challenge`] answers the `hub.*` subscription
//!   handshake.
//! - **Telegram Bot API**: [`parse_telegram`] reads one `Update` into at most one
//!   [`TelegramInbound`]; [`verify_telegram_secret`] checks
//!   `X-Telegram-Bot-Api-Secret-Token`.
//! - **Limits**: a body over [`MAX_WEBHOOK_BODY_BYTES`] is refused before it is parsed;
//!   texts are cut to [`MAX_INBOUND_TEXT_CHARS`] and customer names to
//!   [`domain::limits::MAX_NAME_CHARS`] rather than refused, because the customer already
//!   sent them and the provider would only retry a refused request forever.
//!
//! Messages that are not plain text become text too, so that an agent always sees that
//! something arrived:
//!
//! | provider | message | text |
//! | --- | --- | --- |
//! | WhatsApp | `text` | its `body` |
//! | WhatsApp | `interactive` (`button_reply`, `list_reply`) | the reply's `title` |
//! | WhatsApp | `button` (template quick reply) | its `text` |
//! | WhatsApp | `image`, `video`, `document` with a caption | the caption |
//! | WhatsApp | any other known type (`audio`, `sticker`, `location`, `contacts`, `reaction`, `order`, ...) or a media without caption | `[type]`, e.g. `[image]`, `[location]` |
//! | WhatsApp | a type not listed in [`WHATSAPP_PLACEHOLDER_TYPES`] | `[unsupported]` |
//! | Telegram | `text` | the text |
//! | Telegram | a media with a caption | the caption |
//! | Telegram | `photo`, `video`, `animation`, `document`, `audio`, `voice`, `video_note`, `sticker`, `venue`, `location`, `contact`, `poll`, `dice` | `[kind]`, e.g. `[photo]` |
//! | Telegram | anything else (service messages, ...) | `[unsupported]` |
//! | Telegram | `callback_query` (inline keyboard button) | the label of the pressed button, else its `data` |
//!
//! WhatsApp routes by `phone_number_id`: several organizations may each configure a
//! number, each with its own app secret, so the handler has to read the payload before it
//! can know which secret signs it. The expected order is: [`parse_whatsapp`] (bounded,
//! pure), look up the channel of each of [`WhatsAppWebhook::phone_number_ids`], check the
//! signature with that channel's secret, and only then act on the messages of the numbers
//! whose secret verified.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use domain::limits::MAX_NAME_CHARS;
use hmac::{Hmac, Mac};
use serde::de::{DeserializeOwned, IgnoredAny};
use serde::Deserialize;
use serde_json::Value;
use sha2::Sha256;

/// Largest webhook body parsed, in bytes (1 MiB). Real notifications are a few KiB; the
/// bound keeps an unauthenticated request from costing more than that to refuse.
pub const MAX_WEBHOOK_BODY_BYTES: usize = 1024 * 1024;

/// Longest inbound message text kept, in characters. Both providers cap a text message at
/// 4096 characters, so only odd payloads are ever cut.
pub const MAX_INBOUND_TEXT_CHARS: usize = 4096;

// An inbound text must always be acceptable to the domain, which refuses longer texts.
const _: () = assert!(MAX_INBOUND_TEXT_CHARS <= domain::limits::MAX_TEXT_CHARS);

/// The header carrying Meta's HMAC-SHA256 signature of the body.
pub const WHATSAPP_SIGNATURE_HEADER: &str = "X-Hub-Signature-256";

/// The header carrying the `secret_token` given to Telegram's `setWebhook`.
pub const TELEGRAM_SECRET_HEADER: &str = "X-Telegram-Bot-Api-Secret-Token";

/// The WhatsApp message types shown as `[type]` when they carry no text. Any other type is
/// shown as `[unsupported]`, so that a provider-chosen string never becomes message text.
pub const WHATSAPP_PLACEHOLDER_TYPES: &[&str] = &[
    "text",
    "image",
    "video",
    "document",
    "audio",
    "sticker",
    "location",
    "contacts",
    "interactive",
    "button",
    "reaction",
    "order",
    "system",
    "request_welcome",
];

/// The Telegram message contents shown as `[kind]` when they carry no text, in the order
/// they are looked for: an animation also carries a `document`, and a venue a `location`.
const TELEGRAM_PLACEHOLDER_KINDS: &[&str] = &[
    "photo",
    "video",
    "animation",
    "document",
    "audio",
    "voice",
    "video_note",
    "sticker",
    "venue",
    "location",
    "contact",
    "poll",
    "dice",
];

type HmacSha256 = Hmac<Sha256>;

/// Why a webhook body was refused. The HTTP layer answers 400 to all of them.
#[derive(Debug, thiserror::Error)]
pub enum ParseError {
    /// The body is larger than [`MAX_WEBHOOK_BODY_BYTES`].
    #[error("webhook body is {size} bytes, over the limit of {max} bytes")]
    TooLarge {
        /// Size of the refused body, in bytes.
        size: usize,
        /// The limit, in bytes.
        max: usize,
    },
    /// The body is not JSON at all.
    #[error("webhook body is not valid JSON: {0}")]
    NotJson(#[source] serde_json::Error),
    /// The body is JSON, but not shaped like the provider's payload.
    #[error("webhook body is not a {provider} payload: {source}")]
    Shape {
        /// `"WhatsApp"` or `"Telegram"`.
        provider: &'static str,
        /// What did not fit.
        source: serde_json::Error,
    },
    /// A Meta webhook for another product (e.g. `page`, `instagram`) reached the WhatsApp
    /// endpoint: a misconfigured app.
    #[error("webhook is about `{0}`, not `whatsapp_business_account`")]
    UnexpectedObject(String),
}

// ---------------------------------------------------------------------------------------
// WhatsApp
// ---------------------------------------------------------------------------------------

/// A message a customer sent to a business WhatsApp number.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WhatsAppInbound {
    /// The business number it was sent to (`metadata.phone_number_id`): selects the channel.
    pub phone_number_id: String,
    /// The customer's WhatsApp id (`wa_id`, their phone number without `+`).
    pub from: String,
    /// The customer's profile name, from the `contacts[]` entry of the same `wa_id`.
    pub customer_name: Option<String>,
    /// WhatsApp's message id (`wamid....`): unique, so it deduplicates redeliveries.
    pub message_id: String,
    /// The text (see the module's table for non-text messages), at most
    /// [`MAX_INBOUND_TEXT_CHARS`] characters.
    pub text: String,
    /// When WhatsApp received it; `None` if the timestamp was missing or unreadable.
    pub timestamp: Option<DateTime<Utc>>,
}

/// A delivery receipt for a message the business sent (`statuses[]`): never a customer
/// message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WhatsAppStatus {
    /// The business number that sent the message.
    pub phone_number_id: String,
    /// The id of the business's message (`wamid....`), as returned when it was sent.
    pub message_id: String,
    /// `sent`, `delivered`, `read`, `failed`, ... as WhatsApp spells it.
    pub status: String,
    /// The customer's `wa_id`.
    pub recipient_id: Option<String>,
    /// When the status changed.
    pub timestamp: Option<DateTime<Utc>>,
    /// For `failed`: the first error, as `"<code>: <title>"`.
    pub error: Option<String>,
}

/// Everything one WhatsApp notification says that the helpdesk uses.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WhatsAppWebhook {
    /// Every business number the notification is about, first appearance first, without
    /// repeats: the channels whose secrets may have signed it.
    pub phone_number_ids: Vec<String>,
    /// Customer messages, in payload order.
    pub messages: Vec<WhatsAppInbound>,
    /// Delivery receipts, in payload order.
    pub statuses: Vec<WhatsAppStatus>,
}

#[derive(Deserialize)]
struct WaPayload {
    // Missing is tolerated (the endpoint is WhatsApp's); another product is not.
    object: Option<String>,
    entry: Vec<WaEntry>,
}

#[derive(Deserialize)]
struct WaEntry {
    changes: Vec<WaChange>,
}

#[derive(Deserialize)]
struct WaChange {
    field: String,
    // Kept untyped: other fields (account_update, templates, ...) have other shapes and
    // must not make a `messages` notification in the same body fail.
    value: Value,
}

#[derive(Deserialize)]
struct WaValue {
    metadata: WaMetadata,
    #[serde(default)]
    contacts: Vec<WaContact>,
    #[serde(default)]
    messages: Vec<WaMessage>,
    #[serde(default)]
    statuses: Vec<WaStatus>,
}

#[derive(Deserialize)]
struct WaMetadata {
    phone_number_id: String,
}

#[derive(Deserialize)]
struct WaContact {
    wa_id: Option<String>,
    profile: Option<WaProfile>,
}

#[derive(Deserialize)]
struct WaProfile {
    name: Option<String>,
}

#[derive(Deserialize)]
struct WaMessage {
    from: String,
    id: String,
    timestamp: Option<String>,
    #[serde(rename = "type")]
    kind: Option<String>,
    text: Option<WaText>,
    interactive: Option<WaInteractive>,
    button: Option<WaButton>,
    image: Option<WaMedia>,
    video: Option<WaMedia>,
    document: Option<WaMedia>,
}

#[derive(Deserialize)]
struct WaText {
    body: String,
}

#[derive(Deserialize)]
struct WaInteractive {
    button_reply: Option<WaReply>,
    list_reply: Option<WaReply>,
}

#[derive(Deserialize)]
struct WaReply {
    title: String,
}

#[derive(Deserialize)]
struct WaButton {
    text: Option<String>,
}

#[derive(Deserialize)]
struct WaMedia {
    caption: Option<String>,
}

#[derive(Deserialize)]
struct WaStatus {
    id: String,
    status: String,
    timestamp: Option<String>,
    recipient_id: Option<String>,
    #[serde(default)]
    errors: Vec<WaError>,
}

#[derive(Deserialize)]
struct WaError {
    code: Option<i64>,
    title: Option<String>,
}

/// Reads a WhatsApp Cloud API notification (the raw POST body).
///
/// Changes other than `field: "messages"` are skipped. A well-formed notification with
/// nothing in it gives an empty [`WhatsAppWebhook`].
///
/// # Errors
/// A body over [`MAX_WEBHOOK_BODY_BYTES`], not JSON, for another Meta product, or lacking
/// what every notification has (`entry[].changes[].field`/`value`, a `messages` change's
/// `metadata.phone_number_id`, a message's `from` and `id`, a status's `id` and `status`).
pub fn parse_whatsapp(raw_body: &[u8]) -> Result<WhatsAppWebhook, ParseError> {
    const PROVIDER: &str = "WhatsApp";
    let payload: WaPayload = from_json(raw_body, PROVIDER)?;
    if let Some(object) = payload.object {
        if object != "whatsapp_business_account" {
            return Err(ParseError::UnexpectedObject(cap(object, MAX_NAME_CHARS)));
        }
    }

    let mut webhook = WhatsAppWebhook::default();
    for change in payload.entry.into_iter().flat_map(|entry| entry.changes) {
        if change.field != "messages" {
            continue;
        }
        let value: WaValue =
            serde_json::from_value(change.value).map_err(|source| ParseError::Shape {
                provider: PROVIDER,
                source,
            })?;
        let phone_number_id = value.metadata.phone_number_id;
        if !webhook.phone_number_ids.contains(&phone_number_id) {
            webhook.phone_number_ids.push(phone_number_id.clone());
        }
        for message in value.messages {
            let customer_name = value
                .contacts
                .iter()
                .find(|contact| contact.wa_id.as_deref() == Some(message.from.as_str()))
                .and_then(|contact| contact.profile.as_ref()?.name.clone())
                .and_then(non_blank)
                .map(|name| cap(name, MAX_NAME_CHARS));
            webhook.messages.push(WhatsAppInbound {
                phone_number_id: phone_number_id.clone(),
                customer_name,
                text: cap(whatsapp_text(&message), MAX_INBOUND_TEXT_CHARS),
                timestamp: message.timestamp.as_deref().and_then(unix_time_str),
                from: message.from,
                message_id: message.id,
            });
        }
        for status in value.statuses {
            let error = status.errors.first().map(|error| {
                let code = error
                    .code
                    .map_or_else(|| "?".to_owned(), |code| code.to_string());
                format!("{code}: {}", error.title.as_deref().unwrap_or("no title"))
            });
            webhook.statuses.push(WhatsAppStatus {
                phone_number_id: phone_number_id.clone(),
                message_id: status.id,
                status: status.status,
                recipient_id: status.recipient_id,
                timestamp: status.timestamp.as_deref().and_then(unix_time_str),
                error,
            });
        }
    }
    Ok(webhook)
}

/// The business numbers a WhatsApp notification is about, so that the handler can find
/// the channel, and so the app secret, before trusting the body. Same errors as
/// [`parse_whatsapp`], whose [`WhatsAppWebhook::phone_number_ids`] it returns; a handler
/// that goes on to use the messages should call [`parse_whatsapp`] once instead.
pub fn whatsapp_phone_number_ids(raw_body: &[u8]) -> Result<Vec<String>, ParseError> {
    parse_whatsapp(raw_body).map(|webhook| webhook.phone_number_ids)
}

fn whatsapp_text(message: &WaMessage) -> String {
    let kind = message.kind.as_deref().unwrap_or_default();
    let caption = |media: &Option<WaMedia>| media.as_ref()?.caption.clone().and_then(non_blank);
    let text = match kind {
        "text" => message.text.as_ref().map(|text| text.body.clone()),
        "interactive" => message
            .interactive
            .as_ref()
            .and_then(|reply| reply.button_reply.as_ref().or(reply.list_reply.as_ref()))
            .map(|reply| reply.title.clone()),
        "button" => message
            .button
            .as_ref()
            .and_then(|button| button.text.clone()),
        "image" => caption(&message.image),
        "video" => caption(&message.video),
        "document" => caption(&message.document),
        _ => None,
    };
    text.unwrap_or_else(|| {
        if WHATSAPP_PLACEHOLDER_TYPES.contains(&kind) {
            format!("[{kind}]")
        } else {
            "[unsupported]".to_owned()
        }
    })
}

/// Checks Meta's `X-Hub-Signature-256` header (`sha256=<hex>`): the HMAC-SHA256 of the raw
/// body, keyed with the app secret as it appears in the App Dashboard (its text's bytes,
/// not hex-decoded). The comparison takes the same time wherever the first difference is.
///
/// `false` for a missing or garbled header, and for an empty secret (anyone can compute an
/// HMAC with an empty key).
pub fn verify_whatsapp_signature(app_secret: &[u8], raw_body: &[u8], header: Option<&str>) -> bool {
    if app_secret.is_empty() {
        return false;
    }
    let Some(hex_signature) = header.and_then(|header| header.trim().strip_prefix("sha256="))
    else {
        return false;
    };
    let Ok(signature) = hex::decode(hex_signature) else {
        return false;
    };
    let Ok(mut mac) = HmacSha256::new_from_slice(app_secret) else {
        return false;
    };
    mac.update(raw_body);
    mac.verify_slice(&signature).is_ok()
}

/// Answers Meta's subscription handshake (`GET ?hub.mode=subscribe&hub.verify_token=...
/// &hub.challenge=...`): the challenge to send back as the `text/plain` body with 200, or
/// `None` for 403.
///
/// `None` also for an empty configured token, and for a challenge that is empty, longer
/// than 256 characters or not made of ASCII letters, digits, `-`, `_` and `.` (Meta sends
/// a number): the handler echoes it, so it must not be arbitrary text.
pub fn verify_challenge(query: &HashMap<String, String>, verify_token: &str) -> Option<String> {
    if verify_token.is_empty() || query.get("hub.mode").map(String::as_str) != Some("subscribe") {
        return None;
    }
    if !constant_time_eq(
        verify_token.as_bytes(),
        query.get("hub.verify_token")?.as_bytes(),
    ) {
        return None;
    }
    let challenge = query.get("hub.challenge")?;
    let plain = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.');
    (!challenge.is_empty() && challenge.len() <= 256 && challenge.chars().all(plain))
        .then(|| challenge.clone())
}

// ---------------------------------------------------------------------------------------
// Telegram
// ---------------------------------------------------------------------------------------

/// A message a customer sent to the helpdesk's Telegram bot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TelegramInbound {
    /// The chat the bot answers in (`chat.id`; negative for groups).
    pub chat_id: String,
    /// Unique per bot: `"{chat_id}:{message_id}"` (Telegram numbers messages per chat), or
    /// `"{chat_id}:callback:{callback_query.id}"` for a pressed inline button.
    pub message_id: String,
    /// The sender's first and last name, else their `@username` without the `@`.
    pub customer_name: Option<String>,
    /// The text (see the module's table for the rest), at most [`MAX_INBOUND_TEXT_CHARS`]
    /// characters.
    pub text: String,
    /// When Telegram received the message; `None` for a pressed inline button, which
    /// carries no time.
    pub timestamp: Option<DateTime<Utc>>,
}

#[derive(Deserialize)]
struct TgUpdate {
    // Unused, but what makes a body an Update rather than any JSON object.
    #[allow(dead_code)]
    update_id: i64,
    message: Option<TgMessage>,
    callback_query: Option<TgCallbackQuery>,
}

#[derive(Deserialize)]
struct TgMessage {
    message_id: i64,
    from: Option<TgUser>,
    chat: TgChat,
    date: i64,
    text: Option<String>,
    caption: Option<String>,
    // Only which content keys are present matters (photo, sticker, ...), not their shape.
    #[serde(flatten)]
    content: HashMap<String, IgnoredAny>,
}

#[derive(Deserialize)]
struct TgUser {
    first_name: Option<String>,
    last_name: Option<String>,
    username: Option<String>,
}

#[derive(Deserialize)]
struct TgChat {
    id: i64,
    first_name: Option<String>,
    last_name: Option<String>,
    username: Option<String>,
}

#[derive(Deserialize)]
struct TgCallbackQuery {
    id: String,
    from: TgUser,
    message: Option<TgCallbackMessage>,
    data: Option<String>,
}

#[derive(Deserialize)]
struct TgCallbackMessage {
    chat: TgChat,
    reply_markup: Option<TgReplyMarkup>,
}

#[derive(Deserialize)]
struct TgReplyMarkup {
    #[serde(default)]
    inline_keyboard: Vec<Vec<TgInlineButton>>,
}

#[derive(Deserialize)]
struct TgInlineButton {
    text: String,
    callback_data: Option<String>,
}

/// Reads a Telegram `Update` (the raw POST body).
///
/// `Ok(None)` for updates that are not a new customer message: `edited_message` (the
/// original was already taken; an edit is not a new message), `channel_post`,
/// `my_chat_member` and the other kinds, and a `callback_query` without `data` or without
/// its message (too old, or sent inline). A `callback_query` with both becomes a message
/// from the user who pressed the button, in the chat of the message holding the keyboard,
/// whose text is the button's label (what the customer saw and chose), else its `data`.
///
/// # Errors
/// A body over [`MAX_WEBHOOK_BODY_BYTES`], not JSON, without `update_id`, or whose
/// `message` lacks `message_id`, `chat.id` or `date`.
pub fn parse_telegram(raw_body: &[u8]) -> Result<Option<TelegramInbound>, ParseError> {
    let update: TgUpdate = from_json(raw_body, "Telegram")?;
    if let Some(message) = update.message {
        let text = message
            .text
            .clone()
            .or_else(|| message.caption.clone().and_then(non_blank))
            .unwrap_or_else(|| telegram_placeholder(&message));
        let customer_name = message
            .from
            .as_ref()
            .and_then(|user| display_name(&user.first_name, &user.last_name, &user.username))
            .or_else(|| {
                let chat = &message.chat;
                display_name(&chat.first_name, &chat.last_name, &chat.username)
            });
        return Ok(Some(TelegramInbound {
            chat_id: message.chat.id.to_string(),
            message_id: format!("{}:{}", message.chat.id, message.message_id),
            customer_name,
            text: cap(text, MAX_INBOUND_TEXT_CHARS),
            timestamp: DateTime::from_timestamp(message.date, 0),
        }));
    }
    if let Some(query) = update.callback_query {
        let (Some(data), Some(message)) = (query.data, query.message) else {
            return Ok(None);
        };
        let label = message.reply_markup.and_then(|markup| {
            markup
                .inline_keyboard
                .into_iter()
                .flatten()
                .find(|button| button.callback_data.as_deref() == Some(data.as_str()))
                .map(|button| button.text)
        });
        let from = &query.from;
        return Ok(Some(TelegramInbound {
            chat_id: message.chat.id.to_string(),
            message_id: format!("{}:callback:{}", message.chat.id, query.id),
            customer_name: display_name(&from.first_name, &from.last_name, &from.username),
            text: cap(label.unwrap_or(data), MAX_INBOUND_TEXT_CHARS),
            timestamp: None,
        }));
    }
    Ok(None)
}

fn telegram_placeholder(message: &TgMessage) -> String {
    TELEGRAM_PLACEHOLDER_KINDS
        .iter()
        .find(|kind| message.content.contains_key(**kind))
        .map_or_else(|| "[unsupported]".to_owned(), |kind| format!("[{kind}]"))
}

fn display_name(
    first: &Option<String>,
    last: &Option<String>,
    username: &Option<String>,
) -> Option<String> {
    let full = [first, last]
        .into_iter()
        .filter_map(|part| part.as_deref().map(str::trim))
        .filter(|part| !part.is_empty())
        .collect::<Vec<_>>()
        .join(" ");
    non_blank(full)
        .or_else(|| username.clone().and_then(non_blank))
        .map(|name| cap(name, MAX_NAME_CHARS))
}

/// Checks Telegram's `X-Telegram-Bot-Api-Secret-Token` header against the `secret_token`
/// the bot's webhook was set with, in constant time. `false` for a missing header and for
/// an empty expected secret (a channel without a secret must not accept everything).
pub fn verify_telegram_secret(expected: &str, header: Option<&str>) -> bool {
    match header {
        Some(given) if !expected.is_empty() => {
            constant_time_eq(expected.as_bytes(), given.as_bytes())
        }
        _ => false,
    }
}

// ---------------------------------------------------------------------------------------
// Shared
// ---------------------------------------------------------------------------------------

fn from_json<T: DeserializeOwned>(
    raw_body: &[u8],
    provider: &'static str,
) -> Result<T, ParseError> {
    if raw_body.len() > MAX_WEBHOOK_BODY_BYTES {
        return Err(ParseError::TooLarge {
            size: raw_body.len(),
            max: MAX_WEBHOOK_BODY_BYTES,
        });
    }
    serde_json::from_slice(raw_body).map_err(|error| match error.classify() {
        serde_json::error::Category::Data => ParseError::Shape {
            provider,
            source: error,
        },
        _ => ParseError::NotJson(error),
    })
}

/// Compares two secrets in time that depends on neither where they differ nor the length of
/// `given`: both are reduced to HMACs and those compared with `verify_slice`, which is
/// constant-time, instead of hand-rolling a comparison the optimizer might shortcut.
fn constant_time_eq(expected: &[u8], given: &[u8]) -> bool {
    const KEY: &[u8] = b"helpdesk webhook secret comparison";
    let tag = |bytes: &[u8]| {
        let mut mac = HmacSha256::new_from_slice(KEY).expect("HMAC accepts keys of any length");
        mac.update(bytes);
        mac
    };
    let expected_tag = tag(expected).finalize().into_bytes();
    tag(given).verify_slice(&expected_tag).is_ok()
}

fn unix_time_str(seconds: &str) -> Option<DateTime<Utc>> {
    DateTime::from_timestamp(seconds.trim().parse().ok()?, 0)
}

fn non_blank(text: String) -> Option<String> {
    (!text.trim().is_empty()).then_some(text)
}

/// Cuts `text` to `max` characters, on a character boundary.
fn cap(mut text: String, max: usize) -> String {
    if let Some((end, _)) = text.char_indices().nth(max) {
        text.truncate(end);
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> Vec<u8> {
        let path = format!(
            "{}/../tests/fixtures/webhooks/{name}",
            env!("CARGO_MANIFEST_DIR")
        );
        std::fs::read(&path).unwrap_or_else(|error| panic!("fixture {path}: {error}"))
    }

    fn at(seconds: i64) -> Option<DateTime<Utc>> {
        DateTime::from_timestamp(seconds, 0)
    }

    fn sign(secret: &[u8], body: &[u8]) -> String {
        let mut mac = HmacSha256::new_from_slice(secret).unwrap();
        mac.update(body);
        format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
    }

    fn only_message(body: &[u8]) -> WhatsAppInbound {
        let webhook = parse_whatsapp(body).unwrap();
        assert_eq!(webhook.messages.len(), 1, "{webhook:?}");
        webhook.messages.into_iter().next().unwrap()
    }

    fn query(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    /// One `messages` change holding `messages` (a JSON array), sent to number `PNID`.
    fn whatsapp_body(contacts: &str, messages: &str) -> Vec<u8> {
        format!(
            r#"{{"object":"whatsapp_business_account","entry":[{{"id":"1","changes":[{{"field":"messages",
            "value":{{"messaging_product":"whatsapp","metadata":{{"display_phone_number":"15550001111",
            "phone_number_id":"PNID"}},"contacts":{contacts},"messages":{messages}}}}}]}}]}}"#
        )
        .into_bytes()
    }

    // --- WhatsApp payloads ---

    #[test]
    fn whatsapp_text_fixture_gives_the_message() {
        let webhook = parse_whatsapp(&fixture("whatsapp_text.json")).unwrap();
        assert_eq!(webhook.phone_number_ids, vec!["106540352242922"]);
        assert!(webhook.statuses.is_empty());
        assert_eq!(
            webhook.messages,
            vec![WhatsAppInbound {
                phone_number_id: "106540352242922".into(),
                from: "5511987654321".into(),
                customer_name: Some("Ana Souza".into()),
                message_id: "wamid.HBgNNTUxMTk4NzY1NDMyMRUCABIYFDNBMDFGN0I2QzNEOEU5RjBBMTIzAA=="
                    .into(),
                text: "Hello, my order #1042 has not arrived yet.".into(),
                timestamp: at(1_700_000_000),
            }]
        );
        assert_eq!(
            whatsapp_phone_number_ids(&fixture("whatsapp_text.json")).unwrap(),
            vec!["106540352242922"]
        );
    }

    #[test]
    fn whatsapp_statuses_are_receipts_not_messages() {
        let webhook = parse_whatsapp(&fixture("whatsapp_statuses.json")).unwrap();
        assert!(webhook.messages.is_empty());
        assert_eq!(webhook.phone_number_ids, vec!["106540352242922"]);
        assert_eq!(
            webhook.statuses,
            vec![
                WhatsAppStatus {
                    phone_number_id: "106540352242922".into(),
                    message_id: "wamid.HBgNNTUxMTk4NzY1NDMyMRUCABEYEjQ0QjdGMkE5QzFEMEU4NjM1MQA="
                        .into(),
                    status: "delivered".into(),
                    recipient_id: Some("5511987654321".into()),
                    timestamp: at(1_700_000_060),
                    error: None,
                },
                WhatsAppStatus {
                    phone_number_id: "106540352242922".into(),
                    message_id: "wamid.HBgNNTUxMTk4NzY1NDMyMRUCABEYEjVFMEI5RDNDNEE3RjI2MTg4MAA="
                        .into(),
                    status: "failed".into(),
                    recipient_id: Some("5511987654321".into()),
                    timestamp: at(1_700_000_061),
                    error: Some("131047: Re-engagement message".into()),
                },
            ]
        );
    }

    #[test]
    fn whatsapp_replies_give_the_title_or_text_the_customer_chose() {
        let button_reply = only_message(&fixture("whatsapp_interactive_button_reply.json"));
        assert_eq!(button_reply.text, "Talk to an agent");
        assert_eq!(button_reply.customer_name.as_deref(), Some("Ana Souza"));
        assert_eq!(button_reply.timestamp, at(1_700_000_120));

        assert_eq!(
            only_message(&fixture("whatsapp_interactive_list_reply.json")).text,
            "Billing"
        );
        assert_eq!(
            only_message(&fixture("whatsapp_button.json")).text,
            "Yes, solved"
        );
    }

    #[test]
    fn whatsapp_media_give_their_caption_else_a_placeholder() {
        let webhook = parse_whatsapp(&fixture("whatsapp_image.json")).unwrap();
        let texts: Vec<_> = webhook.messages.iter().map(|m| m.text.as_str()).collect();
        assert_eq!(texts, vec!["The box arrived damaged", "[audio]"]);
        assert!(webhook
            .messages
            .iter()
            .all(|m| m.customer_name.as_deref() == Some("Ana Souza")));
    }

    #[test]
    fn whatsapp_other_types_give_placeholders() {
        let body = whatsapp_body(
            "[]",
            r#"[
              {"from":"1","id":"wamid.1","timestamp":"1700000000","type":"location",
               "location":{"latitude":-23.55,"longitude":-46.63}},
              {"from":"1","id":"wamid.2","timestamp":"1700000000","type":"image",
               "image":{"mime_type":"image/jpeg","sha256":"ab","id":"9"}},
              {"from":"1","id":"wamid.3","timestamp":"1700000000","type":"reaction",
               "reaction":{"message_id":"wamid.0","emoji":"👍"}},
              {"from":"1","id":"wamid.4","timestamp":"1700000000","type":"unknown",
               "errors":[{"code":131051,"title":"Message type unknown"}]},
              {"from":"1","id":"wamid.5","timestamp":"1700000000","type":"<b>brand new</b>"},
              {"from":"1","id":"wamid.6","type":"interactive",
               "interactive":{"type":"nfm_reply","nfm_reply":{"name":"flow","body":"Sent","response_json":"{}"}}}
            ]"#,
        );
        let webhook = parse_whatsapp(&body).unwrap();
        let texts: Vec<_> = webhook.messages.iter().map(|m| m.text.as_str()).collect();
        assert_eq!(
            texts,
            vec![
                "[location]",
                "[image]",
                "[reaction]",
                "[unsupported]",
                "[unsupported]",
                "[interactive]"
            ]
        );
        assert_eq!(webhook.messages[5].timestamp, None);
    }

    #[test]
    fn whatsapp_names_come_from_the_contact_with_the_same_wa_id() {
        let body = whatsapp_body(
            r#"[{"profile":{"name":"Bea"},"wa_id":"222"},{"profile":{"name":"Al"},"wa_id":"111"},
                {"profile":{"name":"  "},"wa_id":"333"}]"#,
            r#"[{"from":"111","id":"wamid.a","timestamp":"1","type":"text","text":{"body":"a"}},
                {"from":"222","id":"wamid.b","timestamp":"2","type":"text","text":{"body":"b"}},
                {"from":"333","id":"wamid.c","timestamp":"3","type":"text","text":{"body":"c"}},
                {"from":"444","id":"wamid.d","timestamp":"4","type":"text","text":{"body":"d"}}]"#,
        );
        let names: Vec<_> = parse_whatsapp(&body)
            .unwrap()
            .messages
            .into_iter()
            .map(|m| (m.from, m.customer_name))
            .collect();
        assert_eq!(
            names,
            vec![
                ("111".to_owned(), Some("Al".to_owned())),
                ("222".to_owned(), Some("Bea".to_owned())),
                ("333".to_owned(), None),
                ("444".to_owned(), None),
            ]
        );
    }

    #[test]
    fn whatsapp_numbers_are_listed_once_and_other_fields_are_skipped() {
        let body = br#"{"object":"whatsapp_business_account","entry":[
          {"id":"1","changes":[
            {"field":"messages","value":{"messaging_product":"whatsapp",
              "metadata":{"display_phone_number":"1","phone_number_id":"A"},
              "statuses":[{"id":"wamid.s","status":"read","timestamp":"5","recipient_id":"9"}]}},
            {"field":"account_update","value":{"phone_number":"15550001111","event":"VERIFIED_ACCOUNT"}}]},
          {"id":"2","changes":[
            {"field":"messages","value":{"messaging_product":"whatsapp",
              "metadata":{"display_phone_number":"2","phone_number_id":"B"},
              "messages":[{"from":"9","id":"wamid.m","timestamp":"6","type":"text","text":{"body":"hi"}}]}},
            {"field":"messages","value":{"messaging_product":"whatsapp",
              "metadata":{"display_phone_number":"1","phone_number_id":"A"},
              "messages":[{"from":"9","id":"wamid.n","timestamp":"7","type":"text","text":{"body":"yo"}}]}}]}]}"#;
        let webhook = parse_whatsapp(body).unwrap();
        assert_eq!(webhook.phone_number_ids, vec!["A", "B"]);
        let routed: Vec<_> = webhook
            .messages
            .iter()
            .map(|m| (m.phone_number_id.as_str(), m.text.as_str()))
            .collect();
        assert_eq!(routed, vec![("B", "hi"), ("A", "yo")]);
        assert_eq!(webhook.statuses.len(), 1);
    }

    #[test]
    fn whatsapp_empty_but_well_formed_payloads_give_nothing() {
        for body in [
            r#"{"object":"whatsapp_business_account","entry":[]}"#,
            r#"{"entry":[{"id":"1","changes":[]}]}"#,
            r#"{"object":"whatsapp_business_account","entry":[{"id":"1","changes":[{"field":"messages",
               "value":{"messaging_product":"whatsapp","metadata":{"phone_number_id":"A"}}}]}]}"#,
        ] {
            let webhook = parse_whatsapp(body.as_bytes()).unwrap();
            assert!(
                webhook.messages.is_empty() && webhook.statuses.is_empty(),
                "{body}"
            );
        }
    }

    #[test]
    fn whatsapp_malformed_payloads_are_refused() {
        let not_json = [&b""[..], b"hello", b"{\"entry\":", b"\xff\xfe"];
        for body in not_json {
            assert!(
                matches!(parse_whatsapp(body), Err(ParseError::NotJson(_))),
                "{body:?}"
            );
        }
        let wrong_shape = [
            "{}",
            "[]",
            "42",
            r#"{"object":"whatsapp_business_account"}"#,
            r#"{"entry":{}}"#,
            r#"{"entry":[{"id":"1"}]}"#,
            r#"{"entry":[{"changes":[{"value":{}}]}]}"#,
            // A messages change without metadata cannot be routed.
            r#"{"entry":[{"changes":[{"field":"messages","value":{"messages":[]}}]}]}"#,
            // A message without id cannot be deduplicated.
            r#"{"entry":[{"changes":[{"field":"messages","value":{"metadata":{"phone_number_id":"A"},
               "messages":[{"from":"1","type":"text","text":{"body":"x"}}]}}]}]}"#,
            r#"{"entry":[{"changes":[{"field":"messages","value":{"metadata":{"phone_number_id":"A"},
               "messages":[{"from":"1","id":"w","type":"text","text":"x"}]}}]}]}"#,
        ];
        for body in wrong_shape {
            let result = parse_whatsapp(body.as_bytes());
            assert!(
                matches!(
                    result,
                    Err(ParseError::Shape {
                        provider: "WhatsApp",
                        ..
                    })
                ),
                "{body}: {result:?}"
            );
        }
        assert!(matches!(
            parse_whatsapp(br#"{"object":"page","entry":[]}"#),
            Err(ParseError::UnexpectedObject(object)) if object == "page"
        ));
    }

    #[test]
    fn oversized_bodies_are_refused_before_parsing() {
        let mut body = fixture("whatsapp_text.json");
        body.resize(MAX_WEBHOOK_BODY_BYTES + 1, b' ');
        let error = parse_whatsapp(&body).unwrap_err();
        assert!(
            matches!(error, ParseError::TooLarge { size, max: MAX_WEBHOOK_BODY_BYTES } if size == body.len())
        );
        assert!(error.to_string().contains("1048577 bytes"), "{error}");

        let mut body = fixture("telegram_text.json");
        body.resize(MAX_WEBHOOK_BODY_BYTES + 1, b' ');
        assert!(matches!(
            parse_telegram(&body),
            Err(ParseError::TooLarge { .. })
        ));

        // Exactly at the limit is fine: trailing whitespace is valid JSON.
        body.truncate(MAX_WEBHOOK_BODY_BYTES);
        assert!(parse_telegram(&body).unwrap().is_some());
    }

    #[test]
    fn long_texts_and_names_are_cut_not_refused() {
        let long = "é".repeat(MAX_INBOUND_TEXT_CHARS + 10);
        let name = "N".repeat(MAX_NAME_CHARS * 2);
        let body = whatsapp_body(
            &format!(r#"[{{"profile":{{"name":"{name}"}},"wa_id":"1"}}]"#),
            &format!(
                r#"[{{"from":"1","id":"w","timestamp":"1","type":"text","text":{{"body":"{long}"}}}}]"#
            ),
        );
        let message = only_message(&body);
        assert_eq!(message.text.chars().count(), MAX_INBOUND_TEXT_CHARS);
        assert!(message.text.chars().all(|c| c == 'é'));
        assert_eq!(
            message.customer_name.unwrap().chars().count(),
            MAX_NAME_CHARS
        );

        let update = format!(
            r#"{{"update_id":1,"message":{{"message_id":2,"chat":{{"id":3,"type":"private"}},"date":4,"text":"{long}"}}}}"#
        );
        let inbound = parse_telegram(update.as_bytes()).unwrap().unwrap();
        assert_eq!(inbound.text.chars().count(), MAX_INBOUND_TEXT_CHARS);

        assert_eq!(cap("abc".into(), 3), "abc");
        assert_eq!(cap("abcd".into(), 3), "abc");
        assert_eq!(cap(String::new(), 0), "");
    }

    // --- WhatsApp signature and handshake ---

    #[test]
    fn whatsapp_signature_over_the_raw_bytes_verifies() {
        let secret = b"8b2f7a1c9d4e6f30a5b7c9d1e3f50617";
        let body = fixture("whatsapp_text.json");
        let header = sign(secret, &body);
        assert!(verify_whatsapp_signature(secret, &body, Some(&header)));
        assert!(verify_whatsapp_signature(
            secret,
            &body,
            Some(&header.to_uppercase().replace("SHA256=", "sha256="))
        ));

        let mut changed = body.clone();
        let at = changed.iter().position(|&b| b == b'#').unwrap();
        changed[at + 1] ^= 0x01;
        assert!(!verify_whatsapp_signature(secret, &changed, Some(&header)));
        // Re-serializing the JSON would change the bytes too: the raw body is what is signed.
        let reserialized =
            serde_json::to_vec(&serde_json::from_slice::<Value>(&body).unwrap()).unwrap();
        assert!(!verify_whatsapp_signature(
            secret,
            &reserialized,
            Some(&header)
        ));

        assert!(!verify_whatsapp_signature(
            b"another app secret",
            &body,
            Some(&header)
        ));
        assert!(!verify_whatsapp_signature(
            b"",
            &body,
            Some(&sign(b"", &body))
        ));
    }

    #[test]
    fn missing_or_garbled_whatsapp_signatures_fail() {
        let secret = b"app-secret";
        let body = fixture("whatsapp_text.json");
        let good = sign(secret, &body);
        let hex_only = good.trim_start_matches("sha256=").to_owned();
        for header in [
            None,
            Some(""),
            Some("sha256="),
            Some(hex_only.as_str()),
            Some(&*format!("sha1={hex_only}")),
            Some(&*format!("sha256={}", &hex_only[..62])),
            Some(&*format!("sha256={hex_only}00")),
            Some(&*format!("sha256={}zz", &hex_only[..62])),
        ] {
            assert!(
                !verify_whatsapp_signature(secret, &body, header),
                "{header:?}"
            );
        }
    }

    #[test]
    fn challenge_needs_subscribe_and_the_right_token() {
        let good = query(&[
            ("hub.mode", "subscribe"),
            ("hub.verify_token", "tok-123"),
            ("hub.challenge", "1158201444"),
        ]);
        assert_eq!(
            verify_challenge(&good, "tok-123").as_deref(),
            Some("1158201444")
        );

        assert_eq!(verify_challenge(&good, "tok-124"), None);
        assert_eq!(verify_challenge(&good, ""), None);
        let unsubscribe = query(&[
            ("hub.mode", "unsubscribe"),
            ("hub.verify_token", "tok-123"),
            ("hub.challenge", "1"),
        ]);
        assert_eq!(verify_challenge(&unsubscribe, "tok-123"), None);
        let no_token = query(&[("hub.mode", "subscribe"), ("hub.challenge", "1")]);
        assert_eq!(verify_challenge(&no_token, "tok-123"), None);
        let no_challenge = query(&[("hub.mode", "subscribe"), ("hub.verify_token", "tok-123")]);
        assert_eq!(verify_challenge(&no_challenge, "tok-123"), None);
        let markup = query(&[
            ("hub.mode", "subscribe"),
            ("hub.verify_token", "tok-123"),
            ("hub.challenge", "<script>"),
        ]);
        assert_eq!(verify_challenge(&markup, "tok-123"), None);
    }

    // --- Telegram ---

    #[test]
    fn telegram_text_fixture_gives_the_message() {
        assert_eq!(
            parse_telegram(&fixture("telegram_text.json")).unwrap(),
            Some(TelegramInbound {
                chat_id: "123456789".into(),
                message_id: "123456789:1365".into(),
                customer_name: Some("Ana Souza".into()),
                text: "Hello, my order #1042 has not arrived yet.".into(),
                timestamp: at(1_700_000_000),
            })
        );
    }

    #[test]
    fn telegram_edited_message_is_not_a_new_message() {
        assert_eq!(
            parse_telegram(&fixture("telegram_edited_message.json")).unwrap(),
            None
        );
    }

    #[test]
    fn telegram_photo_with_caption_gives_the_caption() {
        let inbound = parse_telegram(&fixture("telegram_photo_caption.json"))
            .unwrap()
            .unwrap();
        assert_eq!(inbound.text, "The box arrived damaged");
        assert_eq!(inbound.message_id, "123456789:1366");
        assert_eq!(inbound.customer_name.as_deref(), Some("Ana"));
        assert_eq!(inbound.timestamp, at(1_700_000_300));
    }

    #[test]
    fn telegram_contents_without_text_give_placeholders() {
        let cases = [
            (
                r#""photo":[{"file_id":"a","file_unique_id":"b","width":1,"height":1}]"#,
                "[photo]",
            ),
            (r#""photo":[],"caption":"   ""#, "[photo]"),
            (
                r#""sticker":{"file_id":"a","file_unique_id":"b","type":"regular","width":1,"height":1}"#,
                "[sticker]",
            ),
            (
                r#""animation":{"file_id":"a"},"document":{"file_id":"a"}"#,
                "[animation]",
            ),
            (
                r#""venue":{"title":"t","address":"a"},"location":{"latitude":1,"longitude":2}"#,
                "[venue]",
            ),
            (r#""voice":{"file_id":"a","duration":3}"#, "[voice]"),
            (
                r#""document":{"file_id":"a"},"caption":"invoice attached""#,
                "invoice attached",
            ),
            (
                r#""pinned_message":{"message_id":1,"date":0,"chat":{"id":5,"type":"private"}}"#,
                "[unsupported]",
            ),
        ];
        for (content, expected) in cases {
            let body = format!(
                r#"{{"update_id":1,"message":{{"message_id":2,"from":{{"id":5,"is_bot":false,"first_name":"Ana"}},
                "chat":{{"id":5,"type":"private"}},"date":4,{content}}}}}"#
            );
            let inbound = parse_telegram(body.as_bytes()).unwrap().unwrap();
            assert_eq!(inbound.text, expected, "{content}");
        }
    }

    #[test]
    fn telegram_names_fall_back_to_username_then_the_chat() {
        let name = |from: &str, chat: &str| {
            let body = format!(
                r#"{{"update_id":1,"message":{{"message_id":2,{from}"chat":{{"id":-100,"type":"private"{chat}}},"date":4,"text":"x"}}}}"#
            );
            parse_telegram(body.as_bytes())
                .unwrap()
                .unwrap()
                .customer_name
        };
        assert_eq!(
            name(
                r#""from":{"id":1,"is_bot":false,"first_name":"Ana","last_name":"Souza"},"#,
                ""
            ),
            Some("Ana Souza".into())
        );
        assert_eq!(
            name(
                r#""from":{"id":1,"is_bot":false,"first_name":" ","username":"ana"},"#,
                ""
            ),
            Some("ana".into())
        );
        assert_eq!(name("", r#","first_name":"Bea""#), Some("Bea".into()));
        assert_eq!(name("", ""), None);
        let body = br#"{"update_id":1,"message":{"message_id":2,"chat":{"id":-100,"type":"group","title":"G"},"date":4,"text":"x"}}"#;
        assert_eq!(parse_telegram(body).unwrap().unwrap().chat_id, "-100");
    }

    #[test]
    fn telegram_callback_query_gives_the_pressed_button_label() {
        assert_eq!(
            parse_telegram(&fixture("telegram_callback_query.json")).unwrap(),
            Some(TelegramInbound {
                chat_id: "123456789".into(),
                message_id: "123456789:callback:4382bfdwdsb323b2d9".into(),
                customer_name: Some("Ana Souza".into()),
                text: "Shipping".into(),
                timestamp: None,
            })
        );
        let unknown_data = br#"{"update_id":1,"callback_query":{"id":"q","from":{"id":1,"is_bot":false,"first_name":"Ana"},
            "message":{"message_id":2,"chat":{"id":1,"type":"private"},"date":3},"chat_instance":"c","data":"raw-data"}}"#;
        assert_eq!(
            parse_telegram(unknown_data).unwrap().unwrap().text,
            "raw-data"
        );
        let inline = br#"{"update_id":1,"callback_query":{"id":"q","from":{"id":1,"is_bot":false,"first_name":"Ana"},
            "inline_message_id":"i","chat_instance":"c","data":"d"}}"#;
        assert_eq!(parse_telegram(inline).unwrap(), None);
        let game = br#"{"update_id":1,"callback_query":{"id":"q","from":{"id":1,"is_bot":false,"first_name":"Ana"},
            "message":{"message_id":2,"chat":{"id":1,"type":"private"},"date":3},"chat_instance":"c","game_short_name":"g"}}"#;
        assert_eq!(parse_telegram(game).unwrap(), None);
    }

    #[test]
    fn telegram_updates_without_a_message_are_ignored() {
        for body in [
            r#"{"update_id":1}"#,
            r#"{"update_id":1,"channel_post":{"message_id":2,"chat":{"id":-1,"type":"channel"},"date":3,"text":"x"}}"#,
            r#"{"update_id":1,"my_chat_member":{"chat":{"id":1,"type":"private"},"from":{"id":1,"is_bot":false,"first_name":"A"},
               "date":3,"old_chat_member":{"status":"member"},"new_chat_member":{"status":"kicked"}}}"#,
        ] {
            assert_eq!(parse_telegram(body.as_bytes()).unwrap(), None, "{body}");
        }
    }

    #[test]
    fn telegram_malformed_updates_are_refused() {
        for body in [&b""[..], b"not json", b"{\"update_id\":"] {
            assert!(
                matches!(parse_telegram(body), Err(ParseError::NotJson(_))),
                "{body:?}"
            );
        }
        for body in [
            "{}",
            "[]",
            r#"{"message":{"message_id":2,"chat":{"id":3},"date":4,"text":"x"}}"#,
            r#"{"update_id":"1"}"#,
            r#"{"update_id":1,"message":{"chat":{"id":3},"date":4,"text":"x"}}"#,
            r#"{"update_id":1,"message":{"message_id":2,"date":4,"text":"x"}}"#,
            r#"{"update_id":1,"message":{"message_id":2,"chat":{"id":3},"date":4,"text":7}}"#,
        ] {
            let result = parse_telegram(body.as_bytes());
            assert!(
                matches!(
                    result,
                    Err(ParseError::Shape {
                        provider: "Telegram",
                        ..
                    })
                ),
                "{body}: {result:?}"
            );
        }
    }

    #[test]
    fn telegram_secret_is_compared_exactly() {
        let secret = "Zx9_k2-Lq81mWv";
        assert!(verify_telegram_secret(secret, Some(secret)));
        assert!(!verify_telegram_secret(secret, Some("Zx9_k2-Lq81mWw")));
        assert!(!verify_telegram_secret(secret, Some("Zx9_k2-Lq81mW")));
        assert!(!verify_telegram_secret(secret, Some("")));
        assert!(!verify_telegram_secret(secret, None));
        assert!(!verify_telegram_secret("", Some("")));
        assert!(!verify_telegram_secret("", None));
    }
}
