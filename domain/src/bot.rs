//! The Bot aggregate (seed cloudchat-ten-features.md, Fitur 1 and 2): a chatbot's name, the
//! confidence it needs before it answers, the channels it serves, its answers and its
//! active hours; and the policy that scores a customer's message against the answers.
//!
//! Scoring is deterministic: the same message and answers always give the same confidence
//! in [0, 1]. Words are normalised (case, accents, punctuation), a word matches another
//! exactly or with a small typo (one edit for words of 4 to 7 letters, two from 8), and:
//!
//! - the *question score* is the F1 of the message's words against the answer's question
//!   words (both directions matter: "ongkir ke bandung berapa" matches "berapa ongkir ke
//!   bandung" fully; a long message that merely contains the question's words scores less);
//! - a *keyword* (a word or phrase the admin gave) found in the message lifts the
//!   confidence to at least 0.75, plus a quarter of the question score.
//!
//! The best answer wins; ties go to the answer added first.

use cqrs_es::event_sink::EventSink;
use cqrs_es::{Aggregate, DomainEvent};
use serde::{Deserialize, Serialize};

use crate::actor::Role;
use crate::command::{Command, DomainError};
use crate::limits::{within, MAX_NAME_CHARS, MAX_TEXT_CHARS};
use crate::menu::normalise;
use crate::schedule::Schedule;

/// The confidence a bot needs before it answers, when its admin sets none.
pub const DEFAULT_CONFIDENCE_THRESHOLD: f64 = 0.6;

/// Most answers one bot may hold.
pub const MAX_ANSWERS: usize = 2_000;

/// One answer a bot can give.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BotAnswer {
    /// Its id.
    pub answer_id: String,
    /// The question it answers, as the admin wrote it.
    pub question: String,
    /// The answer sent to the customer.
    pub answer: String,
    /// Words or phrases that point to it.
    pub keywords: Vec<String>,
}

/// Commands of a bot.
pub type BotCommand = Command<BotAction>;

/// What admins do to a bot.
#[derive(Debug, Clone, PartialEq)]
pub enum BotAction {
    /// Creates the bot.
    Create {
        /// Its name.
        name: String,
        /// `None`: [`DEFAULT_CONFIDENCE_THRESHOLD`].
        confidence_threshold: Option<f64>,
        /// The channels it serves; empty: all the organization's.
        channel_ids: Vec<String>,
    },
    /// Adds an answer.
    AddAnswer(BotAnswer),
    /// Replaces the active hours.
    SetSchedule(Schedule),
}

/// What happened to a bot.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum BotEvent {
    /// The bot was created.
    BotCreated {
        organization: String,
        name: String,
        confidence_threshold: f64,
        channel_ids: Vec<String>,
    },
    /// An answer was added.
    BotAnswerAdded { answer: BotAnswer },
    /// The active hours were set.
    BotScheduleSet { schedule: Schedule },
}

impl DomainEvent for BotEvent {
    fn event_type(&self) -> String {
        match self {
            BotEvent::BotCreated { .. } => "BotCreated",
            BotEvent::BotAnswerAdded { .. } => "BotAnswerAdded",
            BotEvent::BotScheduleSet { .. } => "BotScheduleSet",
        }
        .into()
    }

    fn event_version(&self) -> String {
        crate::upcast::current_version(&self.event_type()).to_string()
    }
}

/// A bot as its events leave it.
#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
pub struct Bot {
    organization: Option<String>,
    name: String,
    confidence_threshold: f64,
    channel_ids: Vec<String>,
    answers: Vec<BotAnswer>,
    schedule: Schedule,
}

impl Bot {
    /// The organization, once created.
    pub fn organization(&self) -> Option<&str> {
        self.organization.as_deref()
    }

    /// The bot's answers, in the order they were added.
    pub fn answers(&self) -> &[BotAnswer] {
        &self.answers
    }

    /// The active hours.
    pub fn schedule(&self) -> &Schedule {
        &self.schedule
    }

    /// The confidence it needs before it answers.
    pub fn confidence_threshold(&self) -> f64 {
        self.confidence_threshold
    }

    fn require(&self, organization: &str) -> Result<(), DomainError> {
        match &self.organization {
            Some(owner) if owner == organization => Ok(()),
            _ => Err(DomainError::NotFound),
        }
    }
}

fn text(value: &str, field: &str, max: usize) -> Result<String, DomainError> {
    let value = value.trim();
    if value.is_empty() || !within(value, max) {
        return Err(DomainError::InvalidInput(format!(
            "{field} must be 1 to {max} characters"
        )));
    }
    Ok(value.to_string())
}

impl Aggregate for Bot {
    const TYPE: &'static str = "Bot";
    type Command = BotCommand;
    type Event = BotEvent;
    type Error = DomainError;
    type Services = ();

    async fn handle(
        &mut self,
        command: BotCommand,
        _services: &(),
        sink: &EventSink<Self>,
    ) -> Result<(), DomainError> {
        if command.actor.role != Role::Admin {
            return Err(DomainError::NotPermitted("only admins manage bots".into()));
        }
        match command.action {
            BotAction::Create {
                name,
                confidence_threshold,
                channel_ids,
            } => {
                if self.organization.is_some() {
                    return Err(DomainError::AlreadyExists);
                }
                let threshold = confidence_threshold.unwrap_or(DEFAULT_CONFIDENCE_THRESHOLD);
                if !(0.0..=1.0).contains(&threshold) {
                    return Err(DomainError::InvalidInput(
                        "confidenceThreshold must be between 0 and 1".into(),
                    ));
                }
                let mut channel_ids: Vec<String> = channel_ids
                    .into_iter()
                    .map(|c| c.trim().to_string())
                    .collect();
                channel_ids.sort();
                channel_ids.dedup();
                sink.write(
                    BotEvent::BotCreated {
                        organization: command.organization,
                        name: text(&name, "name", MAX_NAME_CHARS)?,
                        confidence_threshold: threshold,
                        channel_ids,
                    },
                    self,
                )
                .await;
            }
            BotAction::AddAnswer(answer) => {
                self.require(&command.organization)?;
                if self.answers.len() >= MAX_ANSWERS {
                    return Err(DomainError::InvalidInput(format!(
                        "a bot holds at most {MAX_ANSWERS} answers"
                    )));
                }
                if self.answers.iter().any(|a| a.answer_id == answer.answer_id) {
                    return Err(DomainError::AlreadyExists);
                }
                let keywords: Vec<String> = answer
                    .keywords
                    .iter()
                    .map(|k| normalise(k))
                    .filter(|k| !k.is_empty())
                    .collect();
                let answer = BotAnswer {
                    answer_id: answer.answer_id,
                    question: text(&answer.question, "question", MAX_TEXT_CHARS)?,
                    answer: text(&answer.answer, "answer", MAX_TEXT_CHARS)?,
                    keywords,
                };
                sink.write(BotEvent::BotAnswerAdded { answer }, self).await;
            }
            BotAction::SetSchedule(schedule) => {
                self.require(&command.organization)?;
                if self.schedule != schedule {
                    sink.write(BotEvent::BotScheduleSet { schedule }, self)
                        .await;
                }
            }
        }
        Ok(())
    }

    fn apply(&mut self, event: BotEvent) {
        match event {
            BotEvent::BotCreated {
                organization,
                name,
                confidence_threshold,
                channel_ids,
            } => {
                self.organization = Some(organization);
                self.name = name;
                self.confidence_threshold = confidence_threshold;
                self.channel_ids = channel_ids;
            }
            BotEvent::BotAnswerAdded { answer } => self.answers.push(answer),
            BotEvent::BotScheduleSet { schedule } => self.schedule = schedule,
        }
    }
}

/// The answer that fits `message` best, with its confidence; `None` without answers.
pub fn best_answer<'a>(message: &str, answers: &'a [BotAnswer]) -> Option<(&'a BotAnswer, f64)> {
    let words = words(message);
    let normalised = normalise(message);
    let mut best: Option<(&BotAnswer, f64)> = None;
    for answer in answers {
        let confidence = confidence(&words, &normalised, answer);
        if best.is_none_or(|(_, top)| confidence > top) {
            best = Some((answer, confidence));
        }
    }
    best
}

fn words(text: &str) -> Vec<String> {
    normalise(text)
        .split(' ')
        .filter(|w| !w.is_empty() && *w != "#")
        .map(str::to_string)
        .collect()
}

/// How well `answer` fits a message (its words and its normalised text).
fn confidence(message: &[String], normalised: &str, answer: &BotAnswer) -> f64 {
    let question = words(&answer.question);
    let question_score = f1(message, &question);
    let keyword_hit = answer.keywords.iter().any(|keyword| {
        let wanted: Vec<String> = keyword.split(' ').map(str::to_string).collect();
        !wanted.is_empty()
            && (contains_words(normalised, keyword)
                || wanted
                    .iter()
                    .all(|w| message.iter().any(|m| similarity(m, w) > 0.0)))
    });
    let score = if keyword_hit {
        0.75 + 0.25 * question_score
    } else {
        question_score
    };
    (score.clamp(0.0, 1.0) * 1000.0).round() / 1000.0
}

fn contains_words(text: &str, phrase: &str) -> bool {
    format!(" {text} ").contains(&format!(" {phrase} "))
}

/// The F1 of two word lists, each word counting its best match in the other list.
fn f1(message: &[String], question: &[String]) -> f64 {
    if message.is_empty() || question.is_empty() {
        return 0.0;
    }
    let best = |word: &String, others: &[String]| {
        others
            .iter()
            .map(|o| similarity(word, o))
            .fold(0.0, f64::max)
    };
    let recall = question.iter().map(|q| best(q, message)).sum::<f64>() / question.len() as f64;
    let precision = message.iter().map(|m| best(m, question)).sum::<f64>() / message.len() as f64;
    if recall + precision == 0.0 {
        0.0
    } else {
        2.0 * recall * precision / (recall + precision)
    }
}

/// 1 for the same word, 0.8 for a small typo, else 0.
fn similarity(a: &str, b: &str) -> f64 {
    if a == b {
        return 1.0;
    }
    let shorter = a.chars().count().min(b.chars().count());
    let tolerance = match shorter {
        0..=3 => 0,
        4..=7 => 1,
        _ => 2,
    };
    if tolerance > 0 && edit_distance(a, b, tolerance) <= tolerance {
        0.8
    } else {
        0.0
    }
}

/// Levenshtein distance, stopping once it exceeds `limit`.
fn edit_distance(a: &str, b: &str, limit: usize) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    if a.len().abs_diff(b.len()) > limit {
        return limit + 1;
    }
    let mut previous: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.iter().enumerate() {
        let mut current = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            let substitution = previous[j] + usize::from(ca != cb);
            current[j + 1] = substitution.min(previous[j + 1] + 1).min(current[j] + 1);
        }
        if current.iter().min().copied().unwrap_or(0) > limit {
            return limit + 1;
        }
        previous = current;
    }
    previous[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::actor::Actor;
    use cqrs_es::test::TestFramework;

    fn answer(id: &str, question: &str, keywords: &[&str]) -> BotAnswer {
        BotAnswer {
            answer_id: id.into(),
            question: question.into(),
            answer: format!("answer {id}"),
            keywords: keywords.iter().map(|k| k.to_string()).collect(),
        }
    }

    fn answers() -> Vec<BotAnswer> {
        vec![
            answer("hours", "Jam berapa toko buka?", &["jam buka"]),
            answer(
                "shipping",
                "Berapa ongkir ke Bandung?",
                &["ongkir", "ongkos kirim"],
            ),
            answer(
                "refund",
                "Bagaimana cara refund pesanan?",
                &["refund", "uang kembali"],
            ),
        ]
    }

    fn pick(message: &str) -> (String, f64) {
        let list = answers();
        let (answer, confidence) = best_answer(message, &list).expect("answers exist");
        (answer.answer_id.clone(), confidence)
    }

    #[test]
    fn the_same_question_is_certain_and_word_order_does_not_matter() {
        assert_eq!(pick("Berapa ongkir ke Bandung?"), ("shipping".into(), 1.0));
        assert_eq!(pick("ongkir ke bandung berapa"), ("shipping".into(), 1.0));
        assert_eq!(pick("JAM BERAPA TOKO BUKA"), ("hours".into(), 1.0));
    }

    #[test]
    fn keywords_lift_the_confidence() {
        let (id, confidence) = pick("mau tanya soal refund dong");
        assert_eq!(id, "refund");
        assert!((0.75..1.0).contains(&confidence), "{confidence}");
        let (id, confidence) = pick("ongkos kirim ke surabaya?");
        assert_eq!(id, "shipping");
        assert!(confidence >= 0.75, "{confidence}");
    }

    #[test]
    fn small_typos_are_tolerated_and_nonsense_is_not() {
        let (id, confidence) = pick("bagaimana cara refnd pesanan");
        assert_eq!(id, "refund");
        assert!(confidence > 0.75, "{confidence}");
        let (_, confidence) = pick("halo selamat pagi");
        assert!(confidence < DEFAULT_CONFIDENCE_THRESHOLD, "{confidence}");
        assert_eq!(edit_distance("kirim", "krim", 1), 1);
        assert_eq!(edit_distance("abc", "xyz", 1), 2);
    }

    #[test]
    fn scoring_is_deterministic_and_ties_go_to_the_first_answer() {
        let twins = vec![answer("a", "halo", &[]), answer("b", "halo", &[])];
        for _ in 0..3 {
            let (winner, confidence) = best_answer("halo", &twins).expect("answers");
            assert_eq!((winner.answer_id.as_str(), confidence), ("a", 1.0));
        }
        assert!(best_answer("halo", &[]).is_none());
    }

    fn admin(action: BotAction) -> BotCommand {
        BotCommand {
            organization: "acme".into(),
            actor: Actor::new("boss", Role::Admin),
            action,
        }
    }

    fn created() -> BotEvent {
        BotEvent::BotCreated {
            organization: "acme".into(),
            name: "Tania".into(),
            confidence_threshold: DEFAULT_CONFIDENCE_THRESHOLD,
            channel_ids: vec![],
        }
    }

    #[test]
    fn admins_create_bots_with_a_threshold_in_range() {
        TestFramework::<Bot>::with(())
            .given_no_previous_events()
            .when(admin(BotAction::Create {
                name: " Tania ".into(),
                confidence_threshold: None,
                channel_ids: vec![],
            }))
            .then_expect_events(vec![created()]);
        TestFramework::<Bot>::with(())
            .given_no_previous_events()
            .when(admin(BotAction::Create {
                name: "Tania".into(),
                confidence_threshold: Some(1.5),
                channel_ids: vec![],
            }))
            .then_expect_error(DomainError::InvalidInput(
                "confidenceThreshold must be between 0 and 1".into(),
            ));
        let mut agent = admin(BotAction::AddAnswer(answer("x", "q", &[])));
        agent.actor.role = Role::Agent;
        TestFramework::<Bot>::with(())
            .given(vec![created()])
            .when(agent)
            .then_expect_error(DomainError::NotPermitted("only admins manage bots".into()));
    }

    #[test]
    fn answers_keep_normalised_keywords_and_refuse_empty_texts() {
        TestFramework::<Bot>::with(())
            .given(vec![created()])
            .when(admin(BotAction::AddAnswer(answer(
                "x",
                " Jam buka? ",
                &[" Jam Buka ", ""],
            ))))
            .then_expect_events(vec![BotEvent::BotAnswerAdded {
                answer: BotAnswer {
                    answer_id: "x".into(),
                    question: "Jam buka?".into(),
                    answer: "answer x".into(),
                    keywords: vec!["jam buka".into()],
                },
            }]);
        TestFramework::<Bot>::with(())
            .given(vec![created()])
            .when(admin(BotAction::AddAnswer(answer("x", "  ", &[]))))
            .then_expect_error(DomainError::InvalidInput(format!(
                "question must be 1 to {MAX_TEXT_CHARS} characters"
            )));
    }
}
