//! Real-time feeds for GraphQL subscriptions, across replicas.
//!
//! A [`Feed`] follows one projection's checkpoint as this process sees it — moved by the
//! local runner when this replica holds the projection's lease, or by the checkpoint
//! notifications of the replica that does (PostgreSQL LISTEN/NOTIFY; in-process on SQLite).
//! Each time it moves, the feed reads the log's new events of the projection's aggregate
//! types, turns each into a message (once per replica, not once per subscriber) and
//! broadcasts it. So a message is published only after the projection that reflects it has
//! committed: a client that refetches on a message sees the new state, whichever replica it
//! is connected to.
//!
//! Subscribers hold a bounded buffer ([`BUFFER`] messages). A subscriber that falls behind
//! loses the oldest messages and is told so ([`Delivery::Lagged`]) — it should refetch —
//! while everyone else goes on unhindered: a slow client never holds up the feed.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use projections::event_log::{self, Checkpoint, StoredEvent};
use projections::tickets::TicketRecord;
use projections::Database;
use tokio::sync::{broadcast, watch};
use tokio_util::sync::CancellationToken;

/// Messages a subscriber may fall behind by before it is told to refetch.
pub const BUFFER: usize = 1024;

/// How many log events a feed reads per statement.
const READ_BATCH: i64 = 500;

/// A message of a feed, with the organization it belongs to (subscribers of other
/// organizations never see it).
#[derive(Debug, Clone)]
pub struct Published<T> {
    /// The organization.
    pub organization: String,
    /// The message.
    pub message: T,
}

/// What a subscriber receives.
#[derive(Debug, Clone)]
pub enum Delivery<T> {
    /// The next message.
    Message(Arc<Published<T>>),
    /// Messages were dropped because this subscriber read too slowly: refetch.
    Lagged,
}

/// Turns a log event into the feed's message (`None`: nothing to tell).
pub type Translate<T> = Arc<
    dyn Fn(Database, StoredEvent) -> Pin<Box<dyn Future<Output = Option<Published<T>>> + Send>>
        + Send
        + Sync,
>;

/// One feed: a log follower per process, broadcasting to any number of subscribers.
pub struct Feed<T> {
    sender: broadcast::Sender<Arc<Published<T>>>,
}

impl<T: Send + Sync + 'static> Feed<T> {
    /// Starts following `checkpoints` (of the projections whose tables `translate` and the
    /// subscribers read) from where the slowest stands now, publishing what `translate`
    /// makes of each new event of `aggregate_types` once every one of them has passed it.
    pub fn start(
        db: Database,
        mut checkpoints: Vec<watch::Receiver<Checkpoint>>,
        aggregate_types: &'static [&'static str],
        translate: Translate<T>,
        shutdown: CancellationToken,
    ) -> (Self, tokio::task::JoinHandle<()>) {
        let (sender, _) = broadcast::channel(BUFFER);
        let publisher = sender.clone();
        let task = tokio::spawn(async move {
            let mut seen = slowest(&mut checkpoints);
            loop {
                let moved = futures::future::select_all(
                    checkpoints.iter_mut().map(|c| Box::pin(c.changed())),
                );
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    (changed, _, _) = moved => if changed.is_err() { return },
                }
                let target = slowest(&mut checkpoints);
                if target <= seen {
                    continue;
                }
                if publisher.receiver_count() == 0 {
                    // Nobody listens: nothing to read.
                    seen = target;
                    continue;
                }
                match publish(&db, seen, target, aggregate_types, &translate, &publisher).await {
                    Ok(()) => seen = target,
                    Err(error) => {
                        // Read again on the next move; subscribers lose nothing meanwhile.
                        tracing::warn!(%error, "a real-time feed could not read the log");
                    }
                }
            }
        });
        (Self { sender }, task)
    }

    /// A new subscriber's receiver: messages from now on.
    pub fn subscribe(&self) -> Subscriber<T> {
        Subscriber {
            receiver: self.sender.subscribe(),
        }
    }
}

/// The checkpoint every followed projection has passed.
fn slowest(checkpoints: &mut [watch::Receiver<Checkpoint>]) -> Checkpoint {
    checkpoints
        .iter_mut()
        .map(|c| *c.borrow_and_update())
        .min()
        .unwrap_or(Checkpoint::START)
}

async fn publish<T>(
    db: &Database,
    mut after: Checkpoint,
    target: Checkpoint,
    aggregate_types: &[&str],
    translate: &Translate<T>,
    publisher: &broadcast::Sender<Arc<Published<T>>>,
) -> Result<(), projections::DbError> {
    loop {
        let events = event_log::read_after(db, after, READ_BATCH).await?;
        let fetched = events.len() as i64;
        for event in events {
            if event.checkpoint > target {
                return Ok(());
            }
            after = event.checkpoint;
            if !aggregate_types.contains(&event.aggregate_type.as_str()) {
                continue;
            }
            if let Some(message) = translate(db.clone(), event).await {
                // No receiver left is not an error: the message had nobody to reach.
                let _ = publisher.send(Arc::new(message));
            }
        }
        if fetched < READ_BATCH || after >= target {
            return Ok(());
        }
    }
}

/// One subscriber's end of a feed.
pub struct Subscriber<T> {
    receiver: broadcast::Receiver<Arc<Published<T>>>,
}

impl<T: Send + Sync + 'static> Subscriber<T> {
    /// The next delivery; `None` once the feed stopped.
    pub async fn next(&mut self) -> Option<Delivery<T>> {
        match self.receiver.recv().await {
            Ok(message) => Some(Delivery::Message(message)),
            Err(broadcast::error::RecvError::Lagged(_)) => Some(Delivery::Lagged),
            Err(broadcast::error::RecvError::Closed) => None,
        }
    }
}

/// A ticket's queue position read at most once, by the first of many subscribers that asks.
pub type SharedQueuePosition = Arc<tokio::sync::OnceCell<Option<i64>>>;

/// A change of a ticket, as the ticket feeds (`queueUpdated`, `myTickets`) tell it.
#[derive(Debug, Clone, PartialEq)]
pub struct TicketChange {
    /// The ticket.
    pub ticket_id: String,
    /// Its division (`None`: the queue of tickets without one).
    pub division_id: Option<String>,
    /// The event (`TicketAssigned`, ...).
    pub event_type: String,
    /// The agents it concerns: the holder after it and, for a change of holder, the one
    /// before.
    pub agents: Vec<String>,
    /// Whether the division's queue changed (a ticket joined, left or changed priority
    /// while waiting).
    pub queue_changed: bool,
    /// When it happened.
    pub at: chrono::DateTime<chrono::Utc>,
    /// The event's position in the log.
    pub log_position: i64,
    /// The ticket's row as the feed read it once the projection had applied the change
    /// (it may show later changes too): every subscriber resolving `ticket` shares it
    /// instead of reading the row again.
    pub ticket: Arc<TicketRecord>,
    /// The ticket's queue position, read at most once for all subscribers (by the first
    /// that asks).
    pub queue_position: SharedQueuePosition,
}

/// The ticket change an event of the log means (the ticket feed's translation).
pub async fn ticket_change(db: Database, event: StoredEvent) -> Option<Published<TicketChange>> {
    use domain::ticket::TicketEvent;
    let organization = event.metadata.organization.clone();
    let decoded: TicketEvent = event.decode().ok()?;
    // The division and the current holder come from the row the projection committed.
    let row = projections::tickets::ticket(&db, &organization, &event.aggregate_id)
        .await
        .ok()??;
    let queued = row.status == domain::ticket::TicketStatus::Queued.as_str();
    let (agents, queue_changed) = match &decoded {
        TicketEvent::TicketCreated { .. } => (vec![], true),
        TicketEvent::TicketAssigned {
            agent_id,
            previous_agent_id,
            ..
        } => (
            std::iter::once(agent_id.clone())
                .chain(previous_agent_id.clone())
                .collect(),
            // Taken from the queue (a reassignment leaves the queue as it was).
            previous_agent_id.is_none(),
        ),
        TicketEvent::TicketRequeued { agent_id } => (vec![agent_id.clone()], true),
        TicketEvent::TicketStarted { agent_id } => (vec![agent_id.clone()], false),
        TicketEvent::TicketResolved { agent_id, .. } => (agent_id.iter().cloned().collect(), false),
        TicketEvent::TicketReopened {
            previous_agent_id, ..
        } => (previous_agent_id.iter().cloned().collect(), true),
        TicketEvent::TicketPriorityChanged { .. } => {
            (row.assignee_id.iter().cloned().collect(), queued)
        }
        TicketEvent::TicketClosed
        | TicketEvent::CommentAdded { .. }
        | TicketEvent::TicketRated { .. } => (row.assignee_id.iter().cloned().collect(), false),
    };
    Some(Published {
        organization,
        message: TicketChange {
            ticket_id: event.aggregate_id.clone(),
            division_id: row.division_id.clone(),
            event_type: event.event_type.clone(),
            agents,
            queue_changed,
            at: event.occurred_at(),
            log_position: event.position(),
            ticket: Arc::new(row),
            queue_position: Arc::default(),
        },
    })
}

/// The notifications an event of the log caused (the notification feed's translation).
pub async fn notifications_added(
    db: Database,
    event: StoredEvent,
) -> Option<Published<Vec<projections::notifications::NotificationRecord>>> {
    let rows = projections::notifications::caused_by(&db, event.position())
        .await
        .ok()?;
    (!rows.is_empty()).then(|| Published {
        organization: event.metadata.organization.clone(),
        message: rows,
    })
}

/// A message added to a conversation (the conversation feed's message).
#[derive(Debug, Clone, PartialEq)]
pub struct ConversationMessage {
    /// The conversation.
    pub conversation_id: String,
    /// The message.
    pub message_id: String,
}

/// The conversation message an event of the log added, if any.
pub async fn conversation_message(
    _db: Database,
    event: StoredEvent,
) -> Option<Published<ConversationMessage>> {
    use domain::conversation::ConversationEvent;
    let message_id = match event.decode::<ConversationEvent>().ok()? {
        ConversationEvent::MessageReceived { message_id, .. }
        | ConversationEvent::OutboundMessageQueued { message_id, .. } => message_id,
        _ => return None,
    };
    Some(Published {
        organization: event.metadata.organization.clone(),
        message: ConversationMessage {
            conversation_id: event.aggregate_id.clone(),
            message_id,
        },
    })
}
