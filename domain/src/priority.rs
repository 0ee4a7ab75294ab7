//! Ticket priorities, their order in a queue, and detection from the customer's words
//! (seed whatsapp-auto-ticketing-queue.md).

use serde::{Deserialize, Serialize};
use std::str::FromStr;

/// How urgently a ticket must be handled. Queues serve higher priorities first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Priority {
    /// Served before everything else.
    Urgent,
    /// Served before medium and low.
    High,
    /// The default.
    Medium,
    /// Served last.
    Low,
}

impl Priority {
    /// Place in queue order: 0 is served first.
    pub fn queue_rank(self) -> i64 {
        match self {
            Priority::Urgent => 0,
            Priority::High => 1,
            Priority::Medium => 2,
            Priority::Low => 3,
        }
    }

    /// The contract's name of the priority.
    pub fn as_str(self) -> &'static str {
        match self {
            Priority::Urgent => "URGENT",
            Priority::High => "HIGH",
            Priority::Medium => "MEDIUM",
            Priority::Low => "LOW",
        }
    }
}

impl FromStr for Priority {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "URGENT" => Ok(Priority::Urgent),
            "HIGH" => Ok(Priority::High),
            "MEDIUM" => Ok(Priority::Medium),
            "LOW" => Ok(Priority::Low),
            other => Err(format!("unknown priority '{other}'")),
        }
    }
}

/// Where a ticket's priority came from, recorded so an admin can see why a ticket jumped
/// the queue.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum PrioritySource {
    /// Chosen by whoever created the ticket.
    Explicit,
    /// Detected from this keyword in the subject or description.
    Keyword { keyword: String },
    /// No priority given and no keyword found.
    Default,
}

/// The word lists that raise or lower a ticket's priority when none is given.
/// Phrases match whole words, ignoring case; urgent words win over low words.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PriorityKeywords {
    /// Words that make a ticket URGENT.
    pub urgent: Vec<String>,
    /// Words that make a ticket LOW.
    pub low: Vec<String>,
}

impl Default for PriorityKeywords {
    /// The seed's lists: `urgent`, `gawat` -> URGENT; `besok`, `nanti`, `tidak penting` -> LOW.
    fn default() -> Self {
        Self {
            urgent: vec!["urgent".into(), "gawat".into()],
            low: vec!["besok".into(), "nanti".into(), "tidak penting".into()],
        }
    }
}

impl PriorityKeywords {
    /// Builds lists from comma-separated phrases (as given in configuration); blank
    /// entries are dropped.
    pub fn from_lists(urgent: &str, low: &str) -> Self {
        let split = |list: &str| {
            list.split(',')
                .map(|w| normalize(w).join(" "))
                .filter(|w| !w.is_empty())
                .collect()
        };
        Self {
            urgent: split(urgent),
            low: split(low),
        }
    }

    /// The priority the text asks for, and the keyword that decided it.
    pub fn detect(&self, text: &str) -> Option<(Priority, String)> {
        let words = normalize(text);
        let found = |list: &[String]| {
            list.iter()
                .find(|phrase| contains_phrase(&words, phrase))
                .cloned()
        };
        if let Some(keyword) = found(&self.urgent) {
            return Some((Priority::Urgent, keyword));
        }
        found(&self.low).map(|keyword| (Priority::Low, keyword))
    }

    /// The priority for a new ticket: the explicit one, else the detected one, else MEDIUM.
    pub fn resolve(&self, explicit: Option<Priority>, text: &str) -> (Priority, PrioritySource) {
        if let Some(priority) = explicit {
            return (priority, PrioritySource::Explicit);
        }
        match self.detect(text) {
            Some((priority, keyword)) => (priority, PrioritySource::Keyword { keyword }),
            None => (Priority::Medium, PrioritySource::Default),
        }
    }
}

/// Lower-cased alphanumeric words of `text`.
fn normalize(text: &str) -> Vec<String> {
    text.split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(|w| w.to_lowercase())
        .collect()
}

fn contains_phrase(words: &[String], phrase: &str) -> bool {
    let phrase: Vec<&str> = phrase.split(' ').collect();
    !phrase.is_empty()
        && words
            .windows(phrase.len())
            .any(|window| window.iter().zip(&phrase).all(|(w, p)| w == p))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seed_keywords_are_detected_as_whole_words() {
        let keywords = PriorityKeywords::default();
        assert_eq!(
            keywords.detect("Server GAWAT, tolong!"),
            Some((Priority::Urgent, "gawat".into()))
        );
        assert_eq!(
            keywords.detect("this is urgent"),
            Some((Priority::Urgent, "urgent".into()))
        );
        assert_eq!(
            keywords.detect("bisa besok saja"),
            Some((Priority::Low, "besok".into()))
        );
        assert_eq!(
            keywords.detect("ini tidak penting"),
            Some((Priority::Low, "tidak penting".into()))
        );
        // "penting" alone, or "nanti" inside another word, is not a match.
        assert_eq!(keywords.detect("sangat penting"), None);
        assert_eq!(keywords.detect("menantikan"), None);
        assert_eq!(keywords.detect("urgently"), None);
    }

    #[test]
    fn urgent_words_win_over_low_words() {
        let keywords = PriorityKeywords::default();
        assert_eq!(
            keywords
                .detect("nanti saja, eh ternyata gawat")
                .map(|(p, _)| p),
            Some(Priority::Urgent)
        );
    }

    #[test]
    fn configured_lists_replace_the_defaults() {
        let keywords = PriorityKeywords::from_lists(" ASAP, Right Now ", "whenever,");
        assert_eq!(keywords.urgent, vec!["asap", "right now"]);
        assert_eq!(keywords.low, vec!["whenever"]);
        assert_eq!(
            keywords.detect("need it right now!"),
            Some((Priority::Urgent, "right now".into()))
        );
        assert_eq!(keywords.detect("gawat"), None);
    }

    #[test]
    fn explicit_priority_beats_keywords_and_medium_is_the_fallback() {
        let keywords = PriorityKeywords::default();
        assert_eq!(
            keywords.resolve(Some(Priority::High), "gawat"),
            (Priority::High, PrioritySource::Explicit)
        );
        assert_eq!(
            keywords.resolve(None, "printer jammed"),
            (Priority::Medium, PrioritySource::Default)
        );
    }

    #[test]
    fn queue_rank_orders_urgent_first() {
        let mut all = [
            Priority::Low,
            Priority::Urgent,
            Priority::Medium,
            Priority::High,
        ];
        all.sort_by_key(|p| p.queue_rank());
        assert_eq!(
            all,
            [
                Priority::Urgent,
                Priority::High,
                Priority::Medium,
                Priority::Low
            ]
        );
    }
}
