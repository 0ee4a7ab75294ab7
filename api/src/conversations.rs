//! Conversations: channel configuration, the inbound flow of a customer's message and the
//! agents' side (replies, reading).
//!
//! The inbound flow (seed whatsapp-auto-ticketing-queue.md and cloudchat Fitur 3/4):
//!
//! 1. The message is recorded on the conversation (started by the first one), its personal
//!    data sealed with the customer's key. A message id the conversation already holds
//!    (a redelivered webhook) is not recorded again; if it is the customer's latest
//!    message, its flow runs again to finish what a crash may have cut short.
//! 2. With an open ticket, the message is for the humans; in queue mode the check keyword
//!    ("#") answers with the customer's place in the queue.
//!
//!    Without one (and unless the customer is answering the division menu), the
//!    conversation's bot takes its turn first ([`crate::bots`]): an answer ends the flow; a
//!    hand-off (low confidence, outside hours) goes on to the humans' flow below.
//! 3. Without one, in queue mode with divisions: the first message gets the division menu
//!    (unless it clearly names a division and detection is on); an answer that picks a
//!    division (number, name or keyword) opens a ticket in that division's queue and tells
//!    the customer their place — or that an agent is ready, when one took it at once; any
//!    other answer repeats the menu.
//! 4. Queue mode off (or no divisions): the message opens a ticket in the queue of tickets
//!    without a division.
//!
//! Every id the flow creates is derived from its cause (the conversation from the channel
//! and the customer's handle, the message from the provider's message id, the ticket from
//! the conversation and how many tickets it had, each automatic reply from the message it
//! answers), so a retried flow finds what an earlier attempt wrote instead of doing it
//! twice.

use cqrs_es::{Aggregate, EventStore as _};
use domain::actor::{Actor, Role};
use domain::channel::ChannelProfile;
use domain::conversation::{Channel, Conversation, ConversationAction, Inbound, Sealed};
use domain::menu::{self, MenuDivision};
use domain::ticket::TicketStatus;
use projections::personal_data::{self, CustomerKey};
use projections::tickets::TicketRecord;
use uuid::Uuid;

use crate::auth::Caller;
use crate::bots::{BotQuestion, BotTurn};
use crate::error::{from_aggregate, ApiError, ApiResult};
use crate::helpdesk::{Helpdesk, NewTicket, Origin, Wait};

/// The namespace of the helpdesk's derived ids (UUID v5).
const ID_NAMESPACE: Uuid = Uuid::from_u128(0x6b1d_5c2e_93a4_4f0b_8e61_2f0c_d4a7_e915);

/// An id derived from `parts`: the same parts always give the same id.
pub fn derived_id(parts: &[&str]) -> String {
    Uuid::new_v5(&ID_NAMESPACE, parts.join("\u{1f}").as_bytes()).to_string()
}

/// The id of an organization's channel of one kind (one per kind and organization).
pub fn channel_id(organization: &str, channel: Channel) -> String {
    derived_id(&["channel", organization, channel.as_str()])
}

/// A customer's message as a channel delivers it.
#[derive(Debug, Clone)]
pub struct InboundMessage {
    /// The channel kind.
    pub channel: Channel,
    /// The configured channel; `None`: the organization's channel of that kind.
    pub channel_id: Option<String>,
    /// The customer's handle (phone number, chat id).
    pub external_id: String,
    /// Their display name, if the channel gives one.
    pub customer_name: Option<String>,
    /// The text.
    pub text: String,
    /// The provider's message id (deduplication); `None`: never deduplicated.
    pub external_message_id: Option<String>,
}

/// What the flow did with a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Received {
    /// The conversation.
    pub conversation_id: String,
    /// Whether the message was new (false: a redelivery, nothing recorded).
    pub recorded: bool,
}

/// The handling time of tickets without a division (they have no configured average).
pub const DEFAULT_HANDLING_MINUTES: i64 = 10;

/// Bounds of what customers send.
const MAX_EXTERNAL_ID_CHARS: usize = 200;

impl Helpdesk {
    /// Configures the organization's channel of `profile.channel`: its secrets are stored
    /// outside the log first, then the public part is recorded. Returns the channel id.
    pub async fn configure_channel(
        &self,
        caller: &Caller,
        request_id: &str,
        profile: ChannelProfile,
        secrets: serde_json::Map<String, serde_json::Value>,
    ) -> ApiResult<String> {
        if caller.actor.role != Role::Admin {
            return Err(ApiError::Forbidden("only admins configure channels".into()));
        }
        let id = channel_id(&caller.organization, profile.channel);
        // Webhooks are routed by the number: one number belongs to one organization.
        if let Some(number) = profile.phone_number_id.as_deref().map(str::trim) {
            if let Some((owner, _)) =
                projections::conversations::whatsapp_channel(&self.db, number).await?
            {
                if owner != id {
                    return Err(ApiError::Conflict(
                        "this WhatsApp phoneNumberId is configured by another organization".into(),
                    ));
                }
            }
        }
        let secrets = serde_json::Value::Object(secrets).to_string();
        if secrets.len() > 10_000 {
            return Err(ApiError::bad_input("settings are larger than 10,000 bytes"));
        }
        projections::conversations::store_channel_secrets(
            &self.db,
            &id,
            &caller.organization,
            &secrets,
        )
        .await?;
        self.execute(
            &self.channels,
            &id,
            profile,
            &Origin::of(caller, request_id),
            "configureChannel",
            Wait::ForProjections,
        )
        .await?;
        Ok(id)
    }

    /// Records a customer's message and runs the flow of the module documentation.
    pub async fn receive_message(
        &self,
        caller: &Caller,
        request_id: &str,
        message: InboundMessage,
    ) -> ApiResult<Received> {
        if !matches!(caller.actor.role, Role::Service | Role::Admin) {
            return Err(ApiError::Forbidden(
                "only channel integrations deliver customer messages".into(),
            ));
        }
        let external_id = message.external_id.trim().to_string();
        if external_id.is_empty() || external_id.chars().count() > MAX_EXTERNAL_ID_CHARS {
            return Err(ApiError::bad_input(format!(
                "externalId must be 1 to {MAX_EXTERNAL_ID_CHARS} characters"
            )));
        }
        if message.text.trim().is_empty() {
            return Err(ApiError::bad_input("text must not be empty"));
        }
        if !domain::limits::within(&message.text, domain::limits::MAX_TEXT_CHARS) {
            return Err(ApiError::bad_input(format!(
                "text must be at most {} characters",
                domain::limits::MAX_TEXT_CHARS
            )));
        }
        let received = std::time::Instant::now();
        let organization = caller.organization.clone();
        let channel_id = message
            .channel_id
            .clone()
            .unwrap_or_else(|| channel_id(&organization, message.channel));
        let conversation_id = derived_id(&["conversation", &channel_id, &external_id]);
        let customer_id = derived_id(&[
            "customer",
            &organization,
            message.channel.as_str(),
            &external_id,
        ]);
        let message_id = match &message.external_message_id {
            Some(provider_id) => derived_id(&["message", &conversation_id, provider_id]),
            None => Uuid::new_v4().to_string(),
        };
        let before = self.load_conversation(&conversation_id).await?;
        if before.started() && before.organization() != Some(organization.as_str()) {
            return Err(ApiError::NotFound("conversation not found".into()));
        }
        let recorded = !before.has_message(&message_id);
        // A redelivery of the customer's latest message may find its flow cut short (a
        // crash between steps): the flow runs again — every step it takes is keyed by this
        // message, so what an earlier run did is found, not repeated. Older redeliveries
        // change nothing.
        if !recorded && before.last_inbound() != Some(message_id.as_str()) {
            return Ok(Received {
                conversation_id,
                recorded,
            });
        }
        let key = personal_data::key_for(&self.db, &organization, &customer_id).await?;
        let origin = Origin::of(caller, request_id);
        if recorded {
            let inbound = Inbound {
                channel: message.channel,
                channel_id,
                customer_id,
                external_id: key.seal(&external_id),
                customer_name: message
                    .customer_name
                    .as_deref()
                    .map(str::trim)
                    .filter(|n| !n.is_empty())
                    .map(|n| key.seal(n)),
                message_id: message_id.clone(),
                text: key.seal(&message.text),
            };
            self.on_conversation(
                &conversation_id,
                ConversationAction::Receive(inbound),
                &origin,
                "receiveMessage",
            )
            .await?;
        }
        let flow = Flow {
            helpdesk: self,
            received,
            caller,
            origin: &origin,
            conversation_id: &conversation_id,
            message_id: &message_id,
            key: &key,
        };
        flow.run(&message.text).await?;
        self.wait_for_projections(Conversation::TYPE, &conversation_id)
            .await?;
        Ok(Received {
            conversation_id,
            recorded,
        })
    }

    /// An agent's or admin's reply; an agent must hold the conversation's ticket. Returns
    /// the message id.
    pub async fn send_reply(
        &self,
        caller: &Caller,
        request_id: &str,
        conversation_id: &str,
        text: &str,
    ) -> ApiResult<String> {
        if text.trim().is_empty() {
            return Err(ApiError::bad_input("text must not be empty"));
        }
        if !domain::limits::within(text, domain::limits::MAX_TEXT_CHARS) {
            return Err(ApiError::bad_input(format!(
                "text must be at most {} characters",
                domain::limits::MAX_TEXT_CHARS
            )));
        }
        let conversation = self.load_conversation(conversation_id).await?;
        if conversation.organization() != Some(caller.organization.as_str()) {
            return Err(ApiError::NotFound("conversation not found".into()));
        }
        if caller.actor.role == Role::Agent {
            let holds = match conversation.ticket_id() {
                Some(ticket) => {
                    let ticket = self.load_ticket(&caller.organization, ticket).await?;
                    ticket.active_holder() == Some(caller.actor.id.as_str())
                }
                None => false,
            };
            if !holds {
                return Err(ApiError::Forbidden(
                    "agents reply only to conversations whose ticket they hold".into(),
                ));
            }
        }
        let key =
            personal_data::key_for(&self.db, &caller.organization, conversation.customer_id())
                .await?;
        let message_id = Uuid::new_v4().to_string();
        self.execute(
            &self.conversations,
            conversation_id,
            ConversationAction::Reply {
                message_id: message_id.clone(),
                text: key.seal(text),
            },
            &Origin::of(caller, request_id),
            "sendReply",
            Wait::ForProjections,
        )
        .await?;
        Ok(message_id)
    }

    /// Marks the customer's messages read.
    pub async fn mark_conversation_read(
        &self,
        caller: &Caller,
        request_id: &str,
        conversation_id: &str,
    ) -> ApiResult<()> {
        self.execute(
            &self.conversations,
            conversation_id,
            ConversationAction::MarkRead,
            &Origin::of(caller, request_id),
            "markConversationRead",
            Wait::ForProjections,
        )
        .await?;
        Ok(())
    }

    /// A conversation as its events leave it now (the write side's view).
    pub async fn load_conversation(&self, id: &str) -> ApiResult<Conversation> {
        let context = self
            .conversation_history
            .load_aggregate(id)
            .await
            .map_err(|e| from_aggregate("conversation", e))?;
        Ok(context.aggregate)
    }

    /// One step of a flow: a command on a conversation, not yet waiting for projections.
    async fn on_conversation(
        &self,
        id: &str,
        action: ConversationAction,
        origin: &Origin,
        name: &'static str,
    ) -> ApiResult<()> {
        self.execute(&self.conversations, id, action, origin, name, Wait::No)
            .await?;
        Ok(())
    }
}

/// One run of the inbound flow for one recorded message.
struct Flow<'a> {
    helpdesk: &'a Helpdesk,
    received: std::time::Instant,
    caller: &'a Caller,
    origin: &'a Origin,
    conversation_id: &'a str,
    message_id: &'a str,
    key: &'a CustomerKey,
}

impl Flow<'_> {
    async fn run(&self, text: &str) -> ApiResult<()> {
        let helpdesk = self.helpdesk;
        let organization = self.caller.organization.as_str();
        let conversation = helpdesk.load_conversation(self.conversation_id).await?;
        let settings = projections::queue_settings::settings(&helpdesk.db, organization).await?;
        if let Some(ticket) = self.open_ticket(&conversation).await? {
            if settings.enabled
                && menu::is_check_keyword(text, &settings.check_queue_keyword)
                && ticket.status == TicketStatus::Queued.as_str()
            {
                let place =
                    projections::queue::position(&helpdesk.db, organization, &ticket.id).await?;
                if let Some(place) = place {
                    let division = self.division_name(ticket.division_id.as_deref()).await?;
                    let wait = self
                        .wait_minutes(ticket.division_id.as_deref(), place)
                        .await?;
                    let reply = menu::fill(
                        &settings.queue_position_message,
                        &[
                            ("queue_number", place.to_string()),
                            ("division", division),
                            ("wait_minutes", wait),
                        ],
                    );
                    self.say("position", &reply, None).await?;
                }
            }
            return Ok(());
        }
        if !conversation.awaiting_division() {
            let turn = helpdesk
                .bot_turn(
                    &conversation,
                    BotQuestion {
                        conversation_id: self.conversation_id,
                        message_id: self.message_id,
                        text,
                        received: self.received,
                        key: self.key,
                    },
                    self.origin,
                    chrono::Utc::now(),
                )
                .await?;
            if turn == BotTurn::Answered {
                return Ok(());
            }
        }
        let divisions = if settings.enabled {
            self.menu_divisions(settings.show_wait_time).await?
        } else {
            Vec::new()
        };
        if divisions.is_empty() {
            self.open_ticket_in(None, text).await?;
            return Ok(());
        }
        let chosen = if conversation.awaiting_division() {
            menu::choose_division(text, &divisions)
        } else if settings.detect_division {
            menu::detect_division(text, &divisions)
        } else {
            None
        };
        let Some(division) = chosen else {
            let text = menu::render_menu(&settings.welcome_message, &divisions);
            self.say(MENU, &text, None).await?;
            return Ok(());
        };
        helpdesk
            .on_conversation(
                self.conversation_id,
                ConversationAction::ChooseDivision {
                    division_id: division.id.clone(),
                },
                self.origin,
                "chooseDivision",
            )
            .await?;
        let ticket = self.open_ticket_in(Some(&division.id), text).await?;
        let place = projections::queue::position(&helpdesk.db, organization, &ticket.id).await?;
        match place {
            Some(place) => {
                let wait = self.wait_minutes(Some(&division.id), place).await?;
                let reply = menu::fill(
                    &settings.queue_message_template,
                    &[
                        ("division", division.name.clone()),
                        ("queue_number", place.to_string()),
                        ("wait_minutes", wait),
                    ],
                );
                self.say("queued", &reply, None).await?;
            }
            None => {
                crate::conversation_process::announce_assignment(
                    helpdesk,
                    organization,
                    self.conversation_id,
                    &ticket.id,
                    self.origin,
                )
                .await?;
            }
        }
        Ok(())
    }

    /// The conversation's ticket while it is not resolved or closed.
    async fn open_ticket(&self, conversation: &Conversation) -> ApiResult<Option<TicketRecord>> {
        let Some(ticket_id) = conversation.ticket_id() else {
            return Ok(None);
        };
        let ticket =
            projections::tickets::ticket(&self.helpdesk.db, &self.caller.organization, ticket_id)
                .await?;
        Ok(ticket.filter(|t| {
            t.status != TicketStatus::Resolved.as_str() && t.status != TicketStatus::Closed.as_str()
        }))
    }

    /// Opens the conversation's next ticket (in `division`, `None`: the queue of tickets
    /// without one) and links it. The priority comes from the customer's words; the ticket's
    /// texts carry no personal data.
    async fn open_ticket_in(&self, division: Option<&str>, text: &str) -> ApiResult<TicketRecord> {
        let helpdesk = self.helpdesk;
        let conversation = helpdesk.load_conversation(self.conversation_id).await?;
        let number = conversation.tickets_opened() + 1;
        let ticket_id = derived_id(&["ticket", self.conversation_id, &number.to_string()]);
        let channel = conversation.channel().map_or("Chat", |c| match c {
            Channel::Whatsapp => "WhatsApp",
            Channel::Telegram => "Telegram",
            Channel::Web => "Web chat",
            Channel::Api => "API",
        });
        let (priority, _) = helpdesk.keywords.resolve(None, text);
        let input = NewTicket {
            subject: format!("{channel} conversation"),
            description: None,
            priority: Some(priority),
            division_id: division.map(str::to_string),
        };
        let created = helpdesk
            .create_ticket_with_id(
                self.caller,
                &self.origin.request_id,
                input,
                ticket_id.clone(),
            )
            .await;
        match created {
            Ok(_) | Err(ApiError::Conflict(_)) => {}
            Err(other) => return Err(other),
        }
        helpdesk
            .on_conversation(
                self.conversation_id,
                ConversationAction::LinkTicket {
                    ticket_id: ticket_id.clone(),
                },
                self.origin,
                "linkTicket",
            )
            .await?;
        helpdesk
            .wait_for_projections(domain::ticket::Ticket::TYPE, &ticket_id)
            .await?;
        projections::tickets::ticket(&helpdesk.db, &self.caller.organization, &ticket_id)
            .await?
            .ok_or_else(|| ApiError::internal(format!("ticket {ticket_id} not in the read model")))
    }

    /// The divisions of the menu, in menu order, with their waits when shown.
    async fn menu_divisions(&self, show_wait: bool) -> ApiResult<Vec<MenuDivision>> {
        let helpdesk = self.helpdesk;
        let organization = &self.caller.organization;
        let mut divisions = Vec::new();
        for record in projections::divisions::divisions(&helpdesk.db, organization).await? {
            let wait = if show_wait {
                let waiting =
                    projections::queue::page(&helpdesk.db, organization, &record.id, 0, None)
                        .await?
                        .total_count;
                let online = projections::agents::online_serving(
                    &helpdesk.db,
                    organization,
                    Some(&record.id),
                )
                .await?;
                let handling = helpdesk
                    .typical_handling_seconds(organization, &record.id, record.avg_handling_minutes)
                    .await?;
                let seconds = domain::wait::estimated_wait_seconds(waiting + 1, handling, online);
                seconds.map(|s| (waiting, (s + 59) / 60))
            } else {
                None
            };
            divisions.push(MenuDivision {
                keywords: record.keywords(),
                id: record.id,
                name: record.name,
                description: record.description,
                wait,
            });
        }
        Ok(divisions)
    }

    /// The estimated wait at `place` in whole minutes (rounded up) for templates, "?" while
    /// nobody who could serve the queue is online.
    async fn wait_minutes(&self, division: Option<&str>, place: i64) -> ApiResult<String> {
        let helpdesk = self.helpdesk;
        let organization = &self.caller.organization;
        let fallback = match division {
            Some(id) => projections::divisions::division(&helpdesk.db, organization, id)
                .await?
                .map_or(DEFAULT_HANDLING_MINUTES, |d| d.avg_handling_minutes),
            None => DEFAULT_HANDLING_MINUTES,
        };
        let handling = helpdesk
            .typical_handling_seconds(organization, division.unwrap_or_default(), fallback)
            .await?;
        let online =
            projections::agents::online_serving(&helpdesk.db, organization, division).await?;
        Ok(
            domain::wait::estimated_wait_seconds(place, handling, online)
                .map_or_else(|| "?".to_string(), |s| ((s + 59) / 60).to_string()),
        )
    }

    async fn division_name(&self, division: Option<&str>) -> ApiResult<String> {
        Ok(match division {
            Some(id) => {
                projections::divisions::division(&self.helpdesk.db, &self.caller.organization, id)
                    .await?
                    .map(|d| d.name)
                    .unwrap_or_default()
            }
            None => String::new(),
        })
    }

    /// Queues a message from the helpdesk to the customer, its id derived from the message
    /// it answers (`purpose` tells the replies to one message apart), so a flow run again
    /// for the same message finds it instead of sending it twice.
    async fn say(
        &self,
        purpose: &str,
        text: &str,
        announces: Option<(String, i64)>,
    ) -> ApiResult<()> {
        self.helpdesk
            .on_conversation(
                self.conversation_id,
                ConversationAction::SendSystemMessage {
                    message_id: derived_id(&["reply", self.message_id, purpose]),
                    text: self.key.seal(text),
                    announces,
                    offers_menu: purpose == MENU,
                },
                self.origin,
                "sendSystemMessage",
            )
            .await
    }
}

/// The purpose of the division menu among a message's replies.
const MENU: &str = "menu";

/// The service actor the webhooks act as for a channel.
pub fn channel_caller(organization: &str, channel_id: &str) -> Caller {
    Caller {
        organization: organization.to_string(),
        actor: Actor::new(format!("channel:{channel_id}"), Role::Service),
    }
}

/// Opens a sealed value of `customer_id` (or [`personal_data::ERASED`]).
pub fn open_sealed(
    keys: &std::collections::HashMap<String, CustomerKey>,
    customer_id: &str,
    sealed: &str,
) -> ApiResult<String> {
    Ok(personal_data::open_or_erased(
        keys,
        customer_id,
        &Sealed(sealed.to_string()),
    )?)
}
