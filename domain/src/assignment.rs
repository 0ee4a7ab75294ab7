//! Choosing the agent for a queued ticket: a pure policy over a snapshot of the division's
//! agents. The decision — who was considered, who won and why, and the random draw when the
//! algorithm is RANDOM — is recorded in the ticket's assignment event, so an admin can answer
//! "why did this ticket go to her?" and a replay never has to decide again.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::cmp::Ordering;

use crate::division::AssignmentAlgorithm;

/// An agent as the assignment policy sees it at the moment of choosing.
#[derive(Debug, Clone, PartialEq)]
pub struct Candidate {
    /// The agent.
    pub agent_id: String,
    /// Whether the agent is online.
    pub online: bool,
    /// Whether the agent serves the ticket's division (always true for tickets without one).
    pub serves_division: bool,
    /// Active (assigned or in progress) tickets the agent holds.
    pub active: i64,
    /// The agent's capacity.
    pub max_tickets: i64,
    /// When the agent was last given a ticket.
    pub last_assigned_at: Option<DateTime<Utc>>,
}

impl Candidate {
    /// Online, in the division, and with a free slot.
    pub fn eligible(&self) -> bool {
        self.why_not().is_none()
    }

    fn why_not(&self) -> Option<String> {
        if !self.online {
            Some("offline".into())
        } else if !self.serves_division {
            Some("not in the ticket's division".into())
        } else if self.active >= self.max_tickets {
            Some(format!("full ({}/{})", self.active, self.max_tickets))
        } else {
            None
        }
    }
}

/// One eligible agent as it stood when the choice was made.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConsideredAgent {
    /// The agent.
    pub agent_id: String,
    /// Active tickets at the time.
    pub active: i64,
    /// Capacity at the time.
    pub max_tickets: i64,
    /// When the agent had last been given a ticket.
    pub last_assigned_at: Option<DateTime<Utc>>,
}

/// How many runners-up a decision records (the winner first); the counts cover the rest.
pub const RECORDED_CANDIDATES: usize = 10;

/// Why an automatic assignment went the way it did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AssignmentDecision {
    /// The division's algorithm.
    pub algorithm: AssignmentAlgorithm,
    /// The eligible agents in the algorithm's order of preference (the winner first for
    /// ROUND_ROBIN and LEAST_LOADED; by id for RANDOM), at most [`RECORDED_CANDIDATES`].
    pub considered: Vec<ConsideredAgent>,
    /// How many agents were eligible.
    pub eligible: usize,
    /// Agents of the division passed over because they were offline.
    pub offline: usize,
    /// Agents passed over because every slot was taken.
    pub full: usize,
    /// The chosen agent.
    pub winner: String,
    /// The reason in words.
    pub reason: String,
    /// The random number RANDOM drew (recorded so that nothing is drawn again on replay).
    pub draw: Option<u64>,
}

/// Picks an agent among `candidates` with `algorithm`; `draw` is only used by RANDOM.
/// `None` when nobody is eligible.
pub fn choose(
    algorithm: AssignmentAlgorithm,
    candidates: &[Candidate],
    draw: u64,
) -> Option<AssignmentDecision> {
    let mut eligible: Vec<&Candidate> = candidates.iter().filter(|c| c.eligible()).collect();
    if eligible.is_empty() {
        return None;
    }
    let offline = candidates
        .iter()
        .filter(|c| c.serves_division && !c.online)
        .count();
    let full = candidates
        .iter()
        .filter(|c| c.serves_division && c.online && c.active >= c.max_tickets)
        .count();
    let (winner, reason, draw) = match algorithm {
        AssignmentAlgorithm::RoundRobin => {
            eligible.sort_by(|a, b| least_recent(a, b).then(a.agent_id.cmp(&b.agent_id)));
            let winner = eligible[0];
            let reason = match winner.last_assigned_at {
                None => "round robin: never assigned a ticket before".to_string(),
                Some(at) => format!(
                    "round robin: least recently assigned (last at {})",
                    at.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
                ),
            };
            (winner, reason, None)
        }
        AssignmentAlgorithm::LeastLoaded => {
            eligible.sort_by(|a, b| {
                a.active
                    .cmp(&b.active)
                    .then(least_recent(a, b))
                    .then(a.agent_id.cmp(&b.agent_id))
            });
            let winner = eligible[0];
            let tied = eligible
                .iter()
                .filter(|c| c.active == winner.active)
                .count();
            let mut reason = format!(
                "least loaded: fewest active tickets ({}/{})",
                winner.active, winner.max_tickets
            );
            if tied > 1 {
                reason.push_str(&format!(
                    "; tied with {} other(s), least recently assigned wins",
                    tied - 1
                ));
            }
            (winner, reason, None)
        }
        AssignmentAlgorithm::Random => {
            eligible.sort_by(|a, b| a.agent_id.cmp(&b.agent_id));
            let index = (draw % eligible.len() as u64) as usize;
            let winner = eligible[index];
            let reason = format!(
                "random: drew {} of {} eligible agents",
                index + 1,
                eligible.len()
            );
            (winner, reason, Some(draw))
        }
    };
    let winner_id = winner.agent_id.clone();
    let considered = eligible
        .iter()
        .take(RECORDED_CANDIDATES)
        .map(|candidate| ConsideredAgent {
            agent_id: candidate.agent_id.clone(),
            active: candidate.active,
            max_tickets: candidate.max_tickets,
            last_assigned_at: candidate.last_assigned_at,
        })
        .collect();
    Some(AssignmentDecision {
        algorithm,
        considered,
        eligible: eligible.len(),
        offline,
        full,
        winner: winner_id,
        reason,
        draw,
    })
}

/// Never-assigned agents first, then the earliest last assignment.
fn least_recent(a: &Candidate, b: &Candidate) -> Ordering {
    match (a.last_assigned_at, b.last_assigned_at) {
        (None, None) => Ordering::Equal,
        (None, Some(_)) => Ordering::Less,
        (Some(_), None) => Ordering::Greater,
        (Some(x), Some(y)) => x.cmp(&y),
    }
}

/// Why a candidate was not eligible, in words (for workload views and logs).
pub fn ineligibility(candidate: &Candidate) -> Option<String> {
    candidate.why_not()
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn at(minute: u32) -> Option<DateTime<Utc>> {
        Some(Utc.with_ymd_and_hms(2026, 1, 5, 9, minute, 0).unwrap())
    }

    fn candidate(id: &str, active: i64, last: Option<DateTime<Utc>>) -> Candidate {
        Candidate {
            agent_id: id.into(),
            online: true,
            serves_division: true,
            active,
            max_tickets: 5,
            last_assigned_at: last,
        }
    }

    #[test]
    fn the_seed_picture_a_has_room_b_is_full_c_is_offline() {
        let mut c = candidate("c", 0, None);
        c.online = false;
        let candidates = [candidate("a", 3, at(1)), candidate("b", 5, None), c];
        for algorithm in [
            AssignmentAlgorithm::RoundRobin,
            AssignmentAlgorithm::LeastLoaded,
            AssignmentAlgorithm::Random,
        ] {
            let decision = choose(algorithm, &candidates, 7).unwrap();
            assert_eq!(decision.winner, "a");
            assert_eq!(
                (decision.eligible, decision.full, decision.offline),
                (1, 1, 1)
            );
        }
    }

    #[test]
    fn nobody_eligible_means_no_decision() {
        let mut other = candidate("x", 0, None);
        other.serves_division = false;
        let candidates = [candidate("b", 5, None), other];
        assert_eq!(
            choose(AssignmentAlgorithm::RoundRobin, &candidates, 0),
            None
        );
    }

    #[test]
    fn round_robin_prefers_never_assigned_then_least_recent() {
        let candidates = [
            candidate("a", 0, at(5)),
            candidate("b", 4, at(1)),
            candidate("c", 0, at(3)),
        ];
        let decision = choose(AssignmentAlgorithm::RoundRobin, &candidates, 0).unwrap();
        assert_eq!(decision.winner, "b");
        let order: Vec<_> = decision
            .considered
            .iter()
            .map(|c| c.agent_id.as_str())
            .collect();
        assert_eq!(order, ["b", "c", "a"]);
        let fresh = [candidate("z", 0, at(0)), candidate("y", 0, None)];
        let decision = choose(AssignmentAlgorithm::RoundRobin, &fresh, 0).unwrap();
        assert_eq!(decision.winner, "y");
        assert_eq!(
            decision.reason,
            "round robin: never assigned a ticket before"
        );
    }

    #[test]
    fn least_loaded_breaks_ties_by_least_recent_assignment() {
        let candidates = [
            candidate("a", 2, at(1)),
            candidate("b", 1, at(9)),
            candidate("c", 1, at(4)),
        ];
        let decision = choose(AssignmentAlgorithm::LeastLoaded, &candidates, 0).unwrap();
        assert_eq!(decision.winner, "c");
        assert_eq!(
            decision.reason,
            "least loaded: fewest active tickets (1/5); tied with 1 other(s), least recently assigned wins"
        );
    }

    #[test]
    fn random_uses_the_recorded_draw_and_is_uniform_over_eligible_agents() {
        let candidates = [
            candidate("c", 0, None),
            candidate("a", 0, None),
            candidate("b", 5, None),
        ];
        let winners: Vec<String> = (0..4)
            .map(|draw| {
                choose(AssignmentAlgorithm::Random, &candidates, draw)
                    .unwrap()
                    .winner
            })
            .collect();
        assert_eq!(winners, ["a", "c", "a", "c"]);
        let decision = choose(AssignmentAlgorithm::Random, &candidates, 41).unwrap();
        assert_eq!(decision.draw, Some(41));
        assert_eq!(decision.reason, "random: drew 2 of 2 eligible agents");
    }

    #[test]
    fn decisions_record_at_most_ten_candidates_but_count_them_all() {
        let candidates: Vec<Candidate> = (0..25)
            .map(|i| candidate(&format!("agent-{i:02}"), 0, None))
            .collect();
        let decision = choose(AssignmentAlgorithm::RoundRobin, &candidates, 0).unwrap();
        assert_eq!(decision.considered.len(), RECORDED_CANDIDATES);
        assert_eq!(decision.eligible, 25);
        assert_eq!(decision.winner, "agent-00");
    }
}
