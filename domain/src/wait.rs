//! The estimated wait of a queued customer (seed cloudchat-ten-features.md, Fitur 4).
//!
//! `wait = place × typical handling time ÷ eligible online agents`, rounded up, where the
//! typical handling time is the median of the queue's latest handling times (last
//! assignment to resolution) — a median, so one ticket left open over a weekend does not
//! triple every estimate — falling back to the division's `avgHandlingMinutes` until
//! [`MIN_SAMPLES`] resolutions exist. No estimate while no eligible agent is online.

/// How many recent resolutions the median is taken over.
pub const RECENT_RESOLUTIONS: i64 = 50;

/// Fewer resolutions than this and the division's configured average is used instead.
pub const MIN_SAMPLES: usize = 5;

/// The typical handling time in seconds: the median of `recent` (seconds), or
/// `fallback_minutes` when there are too few.
pub fn typical_handling_seconds(recent: &[i64], fallback_minutes: i64) -> i64 {
    if recent.len() < MIN_SAMPLES {
        return fallback_minutes.max(0) * 60;
    }
    let mut sorted = recent.to_vec();
    sorted.sort_unstable();
    let middle = sorted.len() / 2;
    if sorted.len() % 2 == 1 {
        sorted[middle]
    } else {
        (sorted[middle - 1] + sorted[middle] + 1) / 2
    }
}

/// The wait of the customer at `place` (1 = next), in seconds; `None` when nobody who
/// could serve them is online.
pub fn estimated_wait_seconds(place: i64, handling_seconds: i64, online: i64) -> Option<i64> {
    if online <= 0 {
        return None;
    }
    let total = place.max(0) * handling_seconds.max(0);
    Some((total + online - 1) / online)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_median_of_enough_recent_resolutions_else_the_configured_average() {
        assert_eq!(typical_handling_seconds(&[], 10), 600);
        assert_eq!(typical_handling_seconds(&[60, 60, 60, 60], 10), 600);
        assert_eq!(
            typical_handling_seconds(&[300, 60, 120, 90_000, 240], 10),
            240
        );
        assert_eq!(
            typical_handling_seconds(&[100, 200, 300, 400, 500, 601], 10),
            350
        );
        // Between two middles, rounded up.
        assert_eq!(
            typical_handling_seconds(&[100, 200, 300, 401, 500, 600], 10),
            351
        );
    }

    #[test]
    fn waits_share_the_queue_among_online_agents() {
        assert_eq!(estimated_wait_seconds(3, 600, 0), None);
        assert_eq!(estimated_wait_seconds(3, 600, 1), Some(1_800));
        assert_eq!(estimated_wait_seconds(3, 600, 2), Some(900));
        assert_eq!(estimated_wait_seconds(1, 600, 7), Some(86));
    }
}
