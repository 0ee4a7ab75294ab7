//! Input bounds. A helpdesk is fed by customers on public channels, so every text has a
//! ceiling: an oversized field is refused before it reaches the log, which is kept forever.

/// Longest ticket subject, in characters.
pub const MAX_SUBJECT_CHARS: usize = 250;
/// Longest ticket description, comment, resolution or reason, in characters.
pub const MAX_TEXT_CHARS: usize = 20_000;
/// Longest name (division, agent), in characters.
pub const MAX_NAME_CHARS: usize = 120;

/// Checks that `value` has at most `max` characters.
pub fn within(value: &str, max: usize) -> bool {
    // Counting bytes first avoids walking a huge string char by char.
    value.len() <= max || value.chars().count() <= max
}
