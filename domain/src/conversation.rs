//! The Conversation aggregate: one customer on one channel (a WhatsApp number, a Telegram
//! chat), the messages both ways, the division menu's state and the link to the ticket
//! that humans work on.
//!
//! Customers' personal data (their handle, name and every message text) arrives here
//! already [`Sealed`] with the customer's own key (brief rule 11): the domain records it
//! and never opens it, so erasing the key erases the data without rewriting the log.
//! Decisions that need the plain text (which division "1" or "tagihan" means, whether the
//! text is the check keyword) are taken by the caller with the pure policies of
//! [`crate::menu`] and arrive as commands.
//!
//! Every message has an id chosen by the caller (derived from the provider's message id
//! for inbound ones, from the cause for automatic replies), and a message id the
//! conversation already holds is accepted without a new event: redelivered webhooks and
//! retried flows never duplicate a message.

use std::collections::HashSet;

use cqrs_es::event_sink::EventSink;
use cqrs_es::{Aggregate, DomainEvent};
use serde::{Deserialize, Serialize};

use crate::actor::Role;
use crate::command::{Command, DomainError};

/// Where a conversation takes place.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Channel {
    /// WhatsApp Cloud API.
    Whatsapp,
    /// Telegram Bot API.
    Telegram,
    /// A web chat widget.
    Web,
    /// Any other integration through the API.
    Api,
}

impl Channel {
    /// The contract's name of the channel.
    pub fn as_str(self) -> &'static str {
        match self {
            Channel::Whatsapp => "WHATSAPP",
            Channel::Telegram => "TELEGRAM",
            Channel::Web => "WEB",
            Channel::Api => "API",
        }
    }
}

impl std::str::FromStr for Channel {
    type Err = String;

    fn from_str(name: &str) -> Result<Self, String> {
        match name {
            "WHATSAPP" => Ok(Channel::Whatsapp),
            "TELEGRAM" => Ok(Channel::Telegram),
            "WEB" => Ok(Channel::Web),
            "API" => Ok(Channel::Api),
            other => Err(format!("unknown channel {other:?}")),
        }
    }
}

/// Who answers the customer: the bot (and the division menu) or the humans.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ConversationMode {
    /// Automatic answers; no ticket yet.
    #[default]
    Bot,
    /// Handed to the agents: the conversation has a ticket.
    Agent,
}

impl ConversationMode {
    /// The contract's name.
    pub fn as_str(self) -> &'static str {
        match self {
            ConversationMode::Bot => "BOT",
            ConversationMode::Agent => "AGENT",
        }
    }
}

/// What an outbound message is, which sets its delivery priority.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum OutboundKind {
    /// Written by the helpdesk itself (menu, queue number, "an agent is ready"): first.
    System,
    /// An agent's reply: next.
    Reply,
    /// Campaigns and broadcasts: last.
    Bulk,
}

impl OutboundKind {
    /// The delivery priority: lower goes first.
    pub fn delivery_priority(self) -> i64 {
        match self {
            OutboundKind::System => 0,
            OutboundKind::Reply => 1,
            OutboundKind::Bulk => 2,
        }
    }

    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            OutboundKind::System => "SYSTEM",
            OutboundKind::Reply => "REPLY",
            OutboundKind::Bulk => "BULK",
        }
    }
}

/// Personal data sealed with its customer's key (an opaque, versioned text). Only the
/// storage layer can open it, and only while the customer's key exists.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Sealed(pub String);

/// How a conversation begins: the customer and the channel, with the first message.
#[derive(Debug, Clone, PartialEq)]
pub struct Inbound {
    /// The channel kind.
    pub channel: Channel,
    /// The configured channel the message came through.
    pub channel_id: String,
    /// The customer (one per person and channel).
    pub customer_id: String,
    /// The customer's handle on the channel (phone number, chat id).
    pub external_id: Sealed,
    /// The customer's display name, when the channel gives one.
    pub customer_name: Option<Sealed>,
    /// The message's id.
    pub message_id: String,
    /// The message.
    pub text: Sealed,
}

/// Commands of a conversation.
pub type ConversationCommand = Command<ConversationAction>;

/// What can be done to a conversation.
#[derive(Debug, Clone, PartialEq)]
pub enum ConversationAction {
    /// A customer's message (starts the conversation when it is the first). Service role.
    Receive(Inbound),
    /// The customer picked a division from the menu (or it was detected). Service role.
    ChooseDivision {
        /// The division.
        division_id: String,
    },
    /// The conversation's work now happens in this ticket; the humans answer. Service role.
    LinkTicket {
        /// The ticket opened for it.
        ticket_id: String,
    },
    /// A message to the customer written by the helpdesk (menu, queue place, notices).
    /// Service role.
    SendSystemMessage {
        /// Its id.
        message_id: String,
        /// The text.
        text: Sealed,
        /// The assignment this message announces (the ticket id and when it was assigned,
        /// in microseconds since the epoch), so that each assignment is announced once.
        announces: Option<(String, i64)>,
        /// Whether it is the division menu: the customer's next message answers it.
        offers_menu: bool,
    },
    /// An agent's (or admin's) reply. The caller has checked that the agent holds the
    /// conversation's ticket.
    Reply {
        /// Its id.
        message_id: String,
        /// The text.
        text: Sealed,
    },
    /// Everything the customer wrote so far has been read.
    MarkRead,
    /// The bot answered the customer's message (service role): the interaction is recorded
    /// and the answer queued for delivery.
    BotAnswer {
        /// The interaction (derived from the answered message).
        interaction_id: String,
        /// The bot.
        bot_id: String,
        /// The answer chosen.
        answer_id: String,
        /// How sure the bot was, in [0, 1].
        confidence: f64,
        /// From the message's arrival to the answer, in milliseconds.
        response_ms: i64,
        /// The customer's question.
        question: Sealed,
        /// The outbound message's id.
        message_id: String,
        /// The answer's text.
        text: Sealed,
    },
    /// The bot passed the customer's message to the humans (service role).
    BotHandOff {
        /// The interaction (derived from the message).
        interaction_id: String,
        /// The bot.
        bot_id: String,
        /// Why.
        reason: HandOffReason,
        /// The best answer's confidence (none outside hours: nothing was scored).
        confidence: Option<f64>,
        /// The customer's question.
        question: Sealed,
    },
    /// A rating of one of the bot's answers, 1..5 (a later rating replaces it).
    RateBotInteraction {
        /// The interaction.
        interaction_id: String,
        /// 1..5.
        rating: i32,
    },
}

/// Why the bot did not answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum HandOffReason {
    /// No answer reached the bot's confidence threshold: an unmatched question.
    LowConfidence,
    /// The message came outside the bot's active hours.
    OutsideHours,
}

/// What happened to a conversation. Who and when are in the metadata.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum ConversationEvent {
    /// The customer's first message opened the conversation.
    ConversationStarted {
        organization: String,
        channel: Channel,
        channel_id: String,
        customer_id: String,
        external_id: Sealed,
        customer_name: Option<Sealed>,
    },
    /// A message from the customer.
    MessageReceived { message_id: String, text: Sealed },
    /// The customer's division.
    DivisionChosen { division_id: String },
    /// A ticket was opened for the conversation; the humans answer from now on.
    TicketLinked { ticket_id: String },
    /// A message to the customer, waiting in the outbox.
    OutboundMessageQueued {
        message_id: String,
        kind: OutboundKind,
        /// The agent or admin who wrote it (replies); `None` for the helpdesk's own.
        author_id: Option<String>,
        text: Sealed,
        /// For "an agent is ready" notices: the ticket and when it was assigned (µs).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        announces: Option<(String, i64)>,
        /// The division menu: the customer's next message answers it.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        offers_menu: bool,
    },
    /// The customer's messages so far were read (unread count back to zero).
    ConversationRead { reader_id: String },
    /// The bot answered a question (the answer follows as an OutboundMessageQueued).
    BotAnswered {
        interaction_id: String,
        bot_id: String,
        answer_id: String,
        confidence: f64,
        response_ms: i64,
        question: Sealed,
        /// The outbound message carrying the answer.
        message_id: String,
    },
    /// The bot passed a question to the humans.
    BotHandedOff {
        interaction_id: String,
        bot_id: String,
        reason: HandOffReason,
        confidence: Option<f64>,
        question: Sealed,
    },
    /// A bot answer was rated.
    BotInteractionRated { interaction_id: String, rating: i32 },
}

impl DomainEvent for ConversationEvent {
    fn event_type(&self) -> String {
        match self {
            ConversationEvent::ConversationStarted { .. } => "ConversationStarted",
            ConversationEvent::MessageReceived { .. } => "MessageReceived",
            ConversationEvent::DivisionChosen { .. } => "DivisionChosen",
            ConversationEvent::TicketLinked { .. } => "TicketLinked",
            ConversationEvent::OutboundMessageQueued { .. } => "OutboundMessageQueued",
            ConversationEvent::ConversationRead { .. } => "ConversationRead",
            ConversationEvent::BotAnswered { .. } => "BotAnswered",
            ConversationEvent::BotHandedOff { .. } => "BotHandedOff",
            ConversationEvent::BotInteractionRated { .. } => "BotInteractionRated",
        }
        .into()
    }

    fn event_version(&self) -> String {
        crate::upcast::current_version(&self.event_type()).to_string()
    }
}

/// A conversation as its events leave it.
#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
pub struct Conversation {
    organization: Option<String>,
    channel: Option<Channel>,
    channel_id: String,
    customer_id: String,
    mode: ConversationMode,
    division_id: Option<String>,
    ticket_id: Option<String>,
    tickets_opened: u32,
    unread: u64,
    messages: HashSet<String>,
    announced: HashSet<(String, i64)>,
    /// The ticket round (`tickets_opened`) in which the menu was last offered.
    menu_round: Option<u32>,
    last_inbound: Option<String>,
    /// The interactions the bot answered (the ones that can be rated).
    answered: HashSet<String>,
    /// Interactions recorded either way.
    interactions: HashSet<String>,
}

impl Conversation {
    /// The organization, once started.
    pub fn organization(&self) -> Option<&str> {
        self.organization.as_deref()
    }

    /// Whether the first message has arrived.
    pub fn started(&self) -> bool {
        self.organization.is_some()
    }

    /// BOT until a ticket is linked.
    pub fn mode(&self) -> ConversationMode {
        self.mode
    }

    /// The division the customer chose.
    pub fn division_id(&self) -> Option<&str> {
        self.division_id.as_deref()
    }

    /// The last ticket linked (it may have been resolved since).
    pub fn ticket_id(&self) -> Option<&str> {
        self.ticket_id.as_deref()
    }

    /// How many tickets were opened for the conversation (names the next one).
    pub fn tickets_opened(&self) -> u32 {
        self.tickets_opened
    }

    /// The channel, once started.
    pub fn channel(&self) -> Option<Channel> {
        self.channel
    }

    /// The configured channel.
    pub fn channel_id(&self) -> &str {
        &self.channel_id
    }

    /// The customer.
    pub fn customer_id(&self) -> &str {
        &self.customer_id
    }

    /// Whether the conversation holds this message (either direction).
    pub fn has_message(&self, message_id: &str) -> bool {
        self.messages.contains(message_id)
    }

    /// Customer messages not read yet.
    pub fn unread(&self) -> u64 {
        self.unread
    }

    /// Whether the division menu went out since the last ticket: the customer's message
    /// answers it.
    pub fn awaiting_division(&self) -> bool {
        self.menu_round == Some(self.tickets_opened)
    }

    /// The customer's latest message.
    pub fn last_inbound(&self) -> Option<&str> {
        self.last_inbound.as_deref()
    }

    /// Whether this bot interaction is recorded (answered or handed off).
    pub fn has_interaction(&self, interaction_id: &str) -> bool {
        self.interactions.contains(interaction_id)
    }

    /// Whether the bot answered this interaction (rather than handing it off).
    pub fn bot_answered(&self, interaction_id: &str) -> bool {
        self.answered.contains(interaction_id)
    }

    fn require(&self, organization: &str) -> Result<(), DomainError> {
        match &self.organization {
            Some(owner) if owner == organization => Ok(()),
            _ => Err(DomainError::NotFound),
        }
    }
}

fn require_service(role: Role, what: &str) -> Result<(), DomainError> {
    if role == Role::Service || role == Role::Admin {
        Ok(())
    } else {
        Err(DomainError::NotPermitted(format!(
            "only channel integrations {what}"
        )))
    }
}

fn check_confidence(confidence: f64) -> Result<(), DomainError> {
    if (0.0..=1.0).contains(&confidence) {
        Ok(())
    } else {
        Err(DomainError::InvalidInput(
            "a confidence is between 0 and 1".into(),
        ))
    }
}

fn require_id(id: &str, what: &str) -> Result<(), DomainError> {
    if id.trim().is_empty() || id.len() > 200 {
        return Err(DomainError::InvalidInput(format!(
            "{what} must be 1 to 200 characters"
        )));
    }
    Ok(())
}

impl Aggregate for Conversation {
    const TYPE: &'static str = "Conversation";
    type Command = ConversationCommand;
    type Event = ConversationEvent;
    type Error = DomainError;
    type Services = ();

    async fn handle(
        &mut self,
        command: ConversationCommand,
        _services: &(),
        sink: &EventSink<Self>,
    ) -> Result<(), DomainError> {
        let role = command.actor.role;
        match command.action {
            ConversationAction::Receive(inbound) => {
                require_service(role, "deliver customer messages")?;
                require_id(&inbound.message_id, "the message id")?;
                require_id(&inbound.channel_id, "the channel id")?;
                if self.started() {
                    self.require(&command.organization)?;
                    if self.has_message(&inbound.message_id) {
                        return Ok(());
                    }
                } else {
                    sink.write(
                        ConversationEvent::ConversationStarted {
                            organization: command.organization,
                            channel: inbound.channel,
                            channel_id: inbound.channel_id,
                            customer_id: inbound.customer_id,
                            external_id: inbound.external_id,
                            customer_name: inbound.customer_name,
                        },
                        self,
                    )
                    .await;
                }
                sink.write(
                    ConversationEvent::MessageReceived {
                        message_id: inbound.message_id,
                        text: inbound.text,
                    },
                    self,
                )
                .await;
            }
            ConversationAction::ChooseDivision { division_id } => {
                require_service(role, "choose divisions for customers")?;
                self.require(&command.organization)?;
                require_id(&division_id, "the division id")?;
                if self.division_id.as_deref() != Some(division_id.as_str()) {
                    sink.write(ConversationEvent::DivisionChosen { division_id }, self)
                        .await;
                }
            }
            ConversationAction::LinkTicket { ticket_id } => {
                require_service(role, "open tickets for conversations")?;
                self.require(&command.organization)?;
                require_id(&ticket_id, "the ticket id")?;
                if self.ticket_id.as_deref() != Some(ticket_id.as_str()) {
                    sink.write(ConversationEvent::TicketLinked { ticket_id }, self)
                        .await;
                }
            }
            ConversationAction::SendSystemMessage {
                message_id,
                text,
                announces,
                offers_menu,
            } => {
                require_service(role, "send the helpdesk's own messages")?;
                self.require(&command.organization)?;
                require_id(&message_id, "the message id")?;
                let announced = announces
                    .as_ref()
                    .is_some_and(|key| self.announced.contains(key));
                if self.has_message(&message_id) || announced {
                    return Ok(());
                }
                sink.write(
                    ConversationEvent::OutboundMessageQueued {
                        message_id,
                        kind: OutboundKind::System,
                        author_id: None,
                        text,
                        announces,
                        offers_menu,
                    },
                    self,
                )
                .await;
            }
            ConversationAction::Reply { message_id, text } => {
                if !matches!(role, Role::Agent | Role::Admin) {
                    return Err(DomainError::NotPermitted(
                        "only agents and admins reply to customers".into(),
                    ));
                }
                self.require(&command.organization)?;
                require_id(&message_id, "the message id")?;
                if self.has_message(&message_id) {
                    return Ok(());
                }
                sink.write(
                    ConversationEvent::OutboundMessageQueued {
                        message_id,
                        kind: OutboundKind::Reply,
                        author_id: Some(command.actor.id),
                        text,
                        announces: None,
                        offers_menu: false,
                    },
                    self,
                )
                .await;
            }
            ConversationAction::BotAnswer {
                interaction_id,
                bot_id,
                answer_id,
                confidence,
                response_ms,
                question,
                message_id,
                text,
            } => {
                require_service(role, "record bot answers")?;
                self.require(&command.organization)?;
                require_id(&interaction_id, "the interaction id")?;
                require_id(&message_id, "the message id")?;
                if self.interactions.contains(&interaction_id) {
                    return Ok(());
                }
                check_confidence(confidence)?;
                sink.write(
                    ConversationEvent::BotAnswered {
                        interaction_id,
                        bot_id: bot_id.clone(),
                        answer_id,
                        confidence,
                        response_ms: response_ms.max(0),
                        question,
                        message_id: message_id.clone(),
                    },
                    self,
                )
                .await;
                sink.write(
                    ConversationEvent::OutboundMessageQueued {
                        message_id,
                        kind: OutboundKind::System,
                        author_id: Some(format!("bot:{bot_id}")),
                        text,
                        announces: None,
                        offers_menu: false,
                    },
                    self,
                )
                .await;
            }
            ConversationAction::BotHandOff {
                interaction_id,
                bot_id,
                reason,
                confidence,
                question,
            } => {
                require_service(role, "record bot hand-offs")?;
                self.require(&command.organization)?;
                require_id(&interaction_id, "the interaction id")?;
                if self.interactions.contains(&interaction_id) {
                    return Ok(());
                }
                if let Some(confidence) = confidence {
                    check_confidence(confidence)?;
                }
                sink.write(
                    ConversationEvent::BotHandedOff {
                        interaction_id,
                        bot_id,
                        reason,
                        confidence,
                        question,
                    },
                    self,
                )
                .await;
            }
            ConversationAction::RateBotInteraction {
                interaction_id,
                rating,
            } => {
                if role == Role::Analyst {
                    return Err(DomainError::NotPermitted("analysts never write".into()));
                }
                self.require(&command.organization)?;
                if !(1..=5).contains(&rating) {
                    return Err(DomainError::InvalidInput(
                        "rating must be between 1 and 5".into(),
                    ));
                }
                if !self.answered.contains(&interaction_id) {
                    return Err(DomainError::NotFound);
                }
                sink.write(
                    ConversationEvent::BotInteractionRated {
                        interaction_id,
                        rating,
                    },
                    self,
                )
                .await;
            }
            ConversationAction::MarkRead => {
                if !matches!(role, Role::Agent | Role::Admin) {
                    return Err(DomainError::NotPermitted(
                        "only agents and admins read conversations".into(),
                    ));
                }
                self.require(&command.organization)?;
                if self.unread > 0 {
                    sink.write(
                        ConversationEvent::ConversationRead {
                            reader_id: command.actor.id,
                        },
                        self,
                    )
                    .await;
                }
            }
        }
        Ok(())
    }

    fn apply(&mut self, event: ConversationEvent) {
        match event {
            ConversationEvent::ConversationStarted {
                organization,
                channel,
                channel_id,
                customer_id,
                ..
            } => {
                self.organization = Some(organization);
                self.channel = Some(channel);
                self.channel_id = channel_id;
                self.customer_id = customer_id;
            }
            ConversationEvent::MessageReceived { message_id, .. } => {
                self.messages.insert(message_id.clone());
                self.last_inbound = Some(message_id);
                self.unread += 1;
            }
            ConversationEvent::DivisionChosen { division_id } => {
                self.division_id = Some(division_id);
            }
            ConversationEvent::TicketLinked { ticket_id } => {
                self.ticket_id = Some(ticket_id);
                self.tickets_opened += 1;
                self.mode = ConversationMode::Agent;
            }
            ConversationEvent::OutboundMessageQueued {
                message_id,
                announces,
                offers_menu,
                ..
            } => {
                self.messages.insert(message_id);
                if let Some(key) = announces {
                    self.announced.insert(key);
                }
                if offers_menu {
                    self.menu_round = Some(self.tickets_opened);
                }
            }
            ConversationEvent::ConversationRead { .. } => self.unread = 0,
            ConversationEvent::BotAnswered { interaction_id, .. } => {
                self.answered.insert(interaction_id.clone());
                self.interactions.insert(interaction_id);
            }
            ConversationEvent::BotHandedOff { interaction_id, .. } => {
                self.interactions.insert(interaction_id);
            }
            ConversationEvent::BotInteractionRated { .. } => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::actor::Actor;
    use cqrs_es::test::TestFramework;

    fn command(role: Role, action: ConversationAction) -> ConversationCommand {
        ConversationCommand {
            organization: "acme".into(),
            actor: Actor::new("whatsapp-bridge", role),
            action,
        }
    }

    fn inbound(message_id: &str) -> Inbound {
        Inbound {
            channel: Channel::Whatsapp,
            channel_id: "wa-1".into(),
            customer_id: "cust-1".into(),
            external_id: Sealed("sealed-phone".into()),
            customer_name: Some(Sealed("sealed-name".into())),
            message_id: message_id.into(),
            text: Sealed(format!("sealed-{message_id}")),
        }
    }

    fn started() -> Vec<ConversationEvent> {
        vec![
            ConversationEvent::ConversationStarted {
                organization: "acme".into(),
                channel: Channel::Whatsapp,
                channel_id: "wa-1".into(),
                customer_id: "cust-1".into(),
                external_id: Sealed("sealed-phone".into()),
                customer_name: Some(Sealed("sealed-name".into())),
            },
            ConversationEvent::MessageReceived {
                message_id: "m1".into(),
                text: Sealed("sealed-m1".into()),
            },
        ]
    }

    #[test]
    fn the_first_message_starts_the_conversation() {
        TestFramework::<Conversation>::with(())
            .given_no_previous_events()
            .when(command(
                Role::Service,
                ConversationAction::Receive(inbound("m1")),
            ))
            .then_expect_events(started());
    }

    #[test]
    fn a_redelivered_message_is_accepted_without_an_event() {
        TestFramework::<Conversation>::with(())
            .given(started())
            .when(command(
                Role::Service,
                ConversationAction::Receive(inbound("m1")),
            ))
            .then_expect_events(vec![]);
    }

    #[test]
    fn a_second_message_is_only_a_message() {
        TestFramework::<Conversation>::with(())
            .given(started())
            .when(command(
                Role::Service,
                ConversationAction::Receive(inbound("m2")),
            ))
            .then_expect_events(vec![ConversationEvent::MessageReceived {
                message_id: "m2".into(),
                text: Sealed("sealed-m2".into()),
            }]);
    }

    #[test]
    fn agents_cannot_pose_as_customers() {
        TestFramework::<Conversation>::with(())
            .given_no_previous_events()
            .when(command(
                Role::Agent,
                ConversationAction::Receive(inbound("m1")),
            ))
            .then_expect_error(DomainError::NotPermitted(
                "only channel integrations deliver customer messages".into(),
            ));
    }

    #[test]
    fn another_organization_does_not_see_the_conversation() {
        let mut foreign = command(
            Role::Service,
            ConversationAction::LinkTicket {
                ticket_id: "t1".into(),
            },
        );
        foreign.organization = "globex".into();
        TestFramework::<Conversation>::with(())
            .given(started())
            .when(foreign)
            .then_expect_error(DomainError::NotFound);
    }

    #[test]
    fn linking_a_ticket_hands_the_conversation_to_agents_once() {
        let mut given = started();
        given.push(ConversationEvent::TicketLinked {
            ticket_id: "t1".into(),
        });
        TestFramework::<Conversation>::with(())
            .given(given)
            .when(command(
                Role::Service,
                ConversationAction::LinkTicket {
                    ticket_id: "t1".into(),
                },
            ))
            .then_expect_events(vec![]);
    }

    #[test]
    fn each_assignment_is_announced_once() {
        let mut given = started();
        given.push(ConversationEvent::OutboundMessageQueued {
            message_id: "notice-1".into(),
            kind: OutboundKind::System,
            author_id: None,
            text: Sealed("sealed".into()),
            announces: Some(("t1".into(), 2)),
            offers_menu: false,
        });
        let again = |message_id: &str, version: i64| {
            command(
                Role::Service,
                ConversationAction::SendSystemMessage {
                    message_id: message_id.into(),
                    text: Sealed("sealed".into()),
                    announces: Some(("t1".into(), version)),
                    offers_menu: false,
                },
            )
        };
        TestFramework::<Conversation>::with(())
            .given(given.clone())
            .when(again("notice-2", 2))
            .then_expect_events(vec![]);
        TestFramework::<Conversation>::with(())
            .given(given)
            .when(again("notice-3", 5))
            .then_expect_events(vec![ConversationEvent::OutboundMessageQueued {
                message_id: "notice-3".into(),
                kind: OutboundKind::System,
                author_id: None,
                text: Sealed("sealed".into()),
                announces: Some(("t1".into(), 5)),
                offers_menu: false,
            }]);
    }

    #[test]
    fn replies_carry_their_author_and_customers_services_cannot_reply() {
        let reply = |role| {
            let mut c = command(
                role,
                ConversationAction::Reply {
                    message_id: "r1".into(),
                    text: Sealed("sealed-r1".into()),
                },
            );
            c.actor.id = "agent-7".into();
            c
        };
        TestFramework::<Conversation>::with(())
            .given(started())
            .when(reply(Role::Agent))
            .then_expect_events(vec![ConversationEvent::OutboundMessageQueued {
                message_id: "r1".into(),
                kind: OutboundKind::Reply,
                author_id: Some("agent-7".into()),
                text: Sealed("sealed-r1".into()),
                announces: None,
                offers_menu: false,
            }]);
        TestFramework::<Conversation>::with(())
            .given(started())
            .when(reply(Role::Service))
            .then_expect_error(DomainError::NotPermitted(
                "only agents and admins reply to customers".into(),
            ));
    }

    fn bot_answer() -> ConversationAction {
        ConversationAction::BotAnswer {
            interaction_id: "i1".into(),
            bot_id: "b1".into(),
            answer_id: "hours".into(),
            confidence: 0.9,
            response_ms: 12,
            question: Sealed("sealed-q".into()),
            message_id: "bot-reply-1".into(),
            text: Sealed("sealed-a".into()),
        }
    }

    fn answered() -> Vec<ConversationEvent> {
        vec![
            ConversationEvent::BotAnswered {
                interaction_id: "i1".into(),
                bot_id: "b1".into(),
                answer_id: "hours".into(),
                confidence: 0.9,
                response_ms: 12,
                question: Sealed("sealed-q".into()),
                message_id: "bot-reply-1".into(),
            },
            ConversationEvent::OutboundMessageQueued {
                message_id: "bot-reply-1".into(),
                kind: OutboundKind::System,
                author_id: Some("bot:b1".into()),
                text: Sealed("sealed-a".into()),
                announces: None,
                offers_menu: false,
            },
        ]
    }

    #[test]
    fn a_bot_answer_is_recorded_once_and_queued() {
        TestFramework::<Conversation>::with(())
            .given(started())
            .when(command(Role::Service, bot_answer()))
            .then_expect_events(answered());
        let mut given = started();
        given.extend(answered());
        TestFramework::<Conversation>::with(())
            .given(given)
            .when(command(Role::Service, bot_answer()))
            .then_expect_events(vec![]);
    }

    #[test]
    fn only_answered_interactions_are_rated_from_one_to_five() {
        let rate = |interaction: &str, rating| {
            command(
                Role::Service,
                ConversationAction::RateBotInteraction {
                    interaction_id: interaction.into(),
                    rating,
                },
            )
        };
        let mut given = started();
        given.extend(answered());
        TestFramework::<Conversation>::with(())
            .given(given.clone())
            .when(rate("i1", 5))
            .then_expect_events(vec![ConversationEvent::BotInteractionRated {
                interaction_id: "i1".into(),
                rating: 5,
            }]);
        TestFramework::<Conversation>::with(())
            .given(given.clone())
            .when(rate("i1", 6))
            .then_expect_error(DomainError::InvalidInput(
                "rating must be between 1 and 5".into(),
            ));
        TestFramework::<Conversation>::with(())
            .given(given)
            .when(rate("i9", 4))
            .then_expect_error(DomainError::NotFound);
    }

    #[test]
    fn the_menu_awaits_an_answer_until_a_ticket_is_linked() {
        let mut conversation = Conversation::default();
        for event in started() {
            conversation.apply(event);
        }
        assert!(!conversation.awaiting_division());
        assert_eq!(conversation.last_inbound(), Some("m1"));
        let menu = |id: &str| ConversationEvent::OutboundMessageQueued {
            message_id: id.into(),
            kind: OutboundKind::System,
            author_id: None,
            text: Sealed("sealed-menu".into()),
            announces: None,
            offers_menu: true,
        };
        conversation.apply(menu("menu-1"));
        assert!(conversation.awaiting_division());
        conversation.apply(ConversationEvent::TicketLinked {
            ticket_id: "t1".into(),
        });
        assert!(!conversation.awaiting_division());
        // After the ticket, a new round: the menu is offered again and awaited again.
        conversation.apply(menu("menu-2"));
        assert!(conversation.awaiting_division());
    }

    #[test]
    fn reading_resets_the_unread_count_and_reading_nothing_writes_nothing() {
        let mut c = command(Role::Agent, ConversationAction::MarkRead);
        c.actor.id = "agent-7".into();
        TestFramework::<Conversation>::with(())
            .given(started())
            .when(c.clone())
            .then_expect_events(vec![ConversationEvent::ConversationRead {
                reader_id: "agent-7".into(),
            }]);
        let mut read = started();
        read.push(ConversationEvent::ConversationRead {
            reader_id: "agent-7".into(),
        });
        TestFramework::<Conversation>::with(())
            .given(read)
            .when(c)
            .then_expect_events(vec![]);
    }
}
