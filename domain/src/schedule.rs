//! The chatbot's active hours (seed cloudchat-ten-features.md, Fitur 1): windows of local
//! time per weekday in the business's own IANA timezone (default Asia/Jakarta).
//!
//! Everything is decided in local time, so a 09:00-17:00 window stays 09:00-17:00 on both
//! daylight-saving change days. A window whose end is before its start runs past midnight
//! into the next day (22:00-06:00 on Saturday is active until Sunday 06:00), which Chatwoot
//! cannot express. A window ends at its end minute (exclusive).

use chrono::{DateTime, Datelike, Duration, LocalResult, NaiveDate, NaiveTime, TimeZone, Utc};
use chrono_tz::Tz;
use serde::{Deserialize, Serialize};

use crate::command::DomainError;

/// The timezone of a schedule that names none.
pub const DEFAULT_TIMEZONE: &str = "Asia/Jakarta";

/// Most windows one schedule may hold.
pub const MAX_WINDOWS: usize = 100;

/// One window of active time, in local time.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Window {
    /// 0 = Sunday ... 6 = Saturday: the day the window starts on.
    pub day_of_week: u8,
    /// Start, local "HH:MM".
    pub start: NaiveTime,
    /// End, local "HH:MM" (before `start`: the next day).
    pub end: NaiveTime,
}

impl Window {
    fn overnight(&self) -> bool {
        self.end < self.start
    }
}

/// When a bot answers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Schedule {
    /// Off: the bot answers at any time.
    pub enabled: bool,
    /// IANA name ("Asia/Jakarta", "America/New_York").
    pub timezone: String,
    /// The active windows.
    pub windows: Vec<Window>,
    /// Sent to a customer who writes outside the windows (none: silence).
    pub outside_hours_message: Option<String>,
}

impl Default for Schedule {
    fn default() -> Self {
        Self {
            enabled: false,
            timezone: DEFAULT_TIMEZONE.into(),
            windows: Vec::new(),
            outside_hours_message: None,
        }
    }
}

/// A window as a client writes it: day and "HH:MM" texts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WindowInput {
    /// 0 = Sunday ... 6 = Saturday.
    pub day_of_week: i64,
    /// "HH:MM".
    pub start: String,
    /// "HH:MM".
    pub end: String,
}

fn bad(why: String) -> DomainError {
    DomainError::InvalidInput(why)
}

/// Parses a local "HH:MM" (00:00 to 23:59).
pub fn parse_time(text: &str) -> Result<NaiveTime, DomainError> {
    let text = text.trim();
    let malformed = || bad(format!("time {text:?} is not HH:MM (00:00 to 23:59)"));
    let (hours, minutes) = text.split_once(':').ok_or_else(malformed)?;
    if hours.len() != 2 || minutes.len() != 2 {
        return Err(malformed());
    }
    let hours: u32 = hours.parse().map_err(|_| malformed())?;
    let minutes: u32 = minutes.parse().map_err(|_| malformed())?;
    NaiveTime::from_hms_opt(hours, minutes, 0).ok_or_else(malformed)
}

/// The timezone named `name`.
pub fn parse_timezone(name: &str) -> Result<Tz, DomainError> {
    name.trim().parse::<Tz>().map_err(|_| {
        bad(format!(
            "unknown timezone {name:?} (use an IANA name such as Asia/Jakarta)"
        ))
    })
}

impl Schedule {
    /// A checked schedule from a client's input.
    pub fn new(
        enabled: bool,
        timezone: &str,
        windows: &[WindowInput],
        outside_hours_message: Option<String>,
    ) -> Result<Self, DomainError> {
        let tz = parse_timezone(timezone)?;
        if windows.len() > MAX_WINDOWS {
            return Err(bad(format!("at most {MAX_WINDOWS} windows")));
        }
        let mut checked = Vec::with_capacity(windows.len());
        for window in windows {
            if !(0..=6).contains(&window.day_of_week) {
                return Err(bad(format!(
                    "dayOfWeek {} is not 0 (Sunday) to 6 (Saturday)",
                    window.day_of_week
                )));
            }
            let start = parse_time(&window.start)?;
            let end = parse_time(&window.end)?;
            if start == end {
                return Err(bad(format!(
                    "a window cannot start and end at the same time ({})",
                    window.start.trim()
                )));
            }
            checked.push(Window {
                day_of_week: window.day_of_week as u8,
                start,
                end,
            });
        }
        let outside_hours_message = outside_hours_message
            .map(|m| m.trim().to_string())
            .filter(|m| !m.is_empty());
        if let Some(message) = &outside_hours_message {
            if !crate::limits::within(message, crate::limits::MAX_TEXT_CHARS) {
                return Err(bad(format!(
                    "outsideHoursMessage must be at most {} characters",
                    crate::limits::MAX_TEXT_CHARS
                )));
            }
        }
        Ok(Self {
            enabled,
            timezone: tz.name().to_string(),
            windows: checked,
            outside_hours_message,
        })
    }

    fn tz(&self) -> Tz {
        self.timezone.parse().unwrap_or(chrono_tz::Asia::Jakarta)
    }

    /// Whether the bot answers at `at`.
    pub fn is_active(&self, at: DateTime<Utc>) -> bool {
        if !self.enabled {
            return true;
        }
        let local = at.with_timezone(&self.tz()).naive_local();
        let day = local.weekday().num_days_from_sunday() as u8;
        let yesterday = (day + 6) % 7;
        let time = local.time();
        self.windows.iter().any(|w| {
            if w.overnight() {
                (w.day_of_week == day && time >= w.start)
                    || (w.day_of_week == yesterday && time < w.end)
            } else {
                w.day_of_week == day && w.start <= time && time < w.end
            }
        })
    }

    /// The first instant after `at` when [`Schedule::is_active`] changes, within the next
    /// eight days; `None` when it never changes (disabled, no windows, or always on).
    pub fn next_change(&self, at: DateTime<Utc>) -> Option<DateTime<Utc>> {
        if !self.enabled || self.windows.is_empty() {
            return None;
        }
        let tz = self.tz();
        let now = self.is_active(at);
        let today = at.with_timezone(&tz).date_naive();
        let mut boundaries: Vec<DateTime<Utc>> = Vec::new();
        for offset in -1..=8 {
            let date = today + Duration::days(offset);
            let day = date.weekday().num_days_from_sunday() as u8;
            for window in self.windows.iter().filter(|w| w.day_of_week == day) {
                boundaries.push(local_instant(&tz, date, window.start));
                let end_date = if window.overnight() {
                    date + Duration::days(1)
                } else {
                    date
                };
                boundaries.push(local_instant(&tz, end_date, window.end));
            }
        }
        boundaries.sort();
        boundaries
            .into_iter()
            .filter(|b| *b > at)
            .find(|b| self.is_active(*b) != now)
    }
}

/// The instant a local date and time names: the earlier one when the clock goes back,
/// and the first instant after the gap when the clock jumps over it.
fn local_instant(tz: &Tz, date: NaiveDate, time: NaiveTime) -> DateTime<Utc> {
    let mut naive = date.and_time(time);
    loop {
        match tz.from_local_datetime(&naive) {
            LocalResult::Single(t) => return t.with_timezone(&Utc),
            LocalResult::Ambiguous(first, _) => return first.with_timezone(&Utc),
            // Inside a daylight-saving gap: the wall clock shows this time next at the
            // end of the gap.
            LocalResult::None => naive += Duration::minutes(1),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn window(day: i64, start: &str, end: &str) -> WindowInput {
        WindowInput {
            day_of_week: day,
            start: start.into(),
            end: end.into(),
        }
    }

    fn schedule(timezone: &str, windows: &[WindowInput]) -> Schedule {
        Schedule::new(true, timezone, windows, None).expect("valid schedule")
    }

    fn utc(text: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(text)
            .expect("instant")
            .with_timezone(&Utc)
    }

    #[test]
    fn jakarta_office_hours() {
        // Monday 08:00-17:00 in Jakarta (UTC+7, no daylight saving).
        let office = schedule("Asia/Jakarta", &[window(1, "08:00", "17:00")]);
        // 2026-11-23 is a Monday.
        assert!(!office.is_active(utc("2026-11-23T00:59:00Z"))); // 07:59
        assert!(office.is_active(utc("2026-11-23T01:00:00Z"))); // 08:00
        assert!(office.is_active(utc("2026-11-23T09:59:00Z"))); // 16:59
        assert!(!office.is_active(utc("2026-11-23T10:00:00Z"))); // 17:00
        assert!(!office.is_active(utc("2026-11-24T02:00:00Z"))); // Tuesday 09:00
        assert_eq!(
            office.next_change(utc("2026-11-23T00:00:00Z")),
            Some(utc("2026-11-23T01:00:00Z"))
        );
        assert_eq!(
            office.next_change(utc("2026-11-23T05:00:00Z")),
            Some(utc("2026-11-23T10:00:00Z"))
        );
        // After Monday's window the next change is next Monday.
        assert_eq!(
            office.next_change(utc("2026-11-23T10:00:00Z")),
            Some(utc("2026-11-30T01:00:00Z"))
        );
    }

    #[test]
    fn new_york_windows_stay_local_on_both_daylight_saving_days() {
        // 2026-03-08 (Sunday, clocks go 02:00 -> 03:00) and 2026-11-01 (Sunday, 02:00 -> 01:00).
        let weekend = schedule("America/New_York", &[window(0, "09:00", "17:00")]);
        // Spring forward: 09:00 EDT = 13:00 UTC; the day before it was 14:00 UTC.
        assert!(!weekend.is_active(utc("2026-03-08T12:59:00Z")));
        assert!(weekend.is_active(utc("2026-03-08T13:00:00Z")));
        assert!(weekend.is_active(utc("2026-03-08T20:59:00Z")));
        assert!(!weekend.is_active(utc("2026-03-08T21:00:00Z")));
        assert!(weekend.is_active(utc("2026-03-01T14:00:00Z")));
        assert!(!weekend.is_active(utc("2026-03-01T13:30:00Z")));
        // Fall back: 09:00 EST = 14:00 UTC.
        assert!(!weekend.is_active(utc("2026-11-01T13:59:00Z")));
        assert!(weekend.is_active(utc("2026-11-01T14:00:00Z")));
        assert!(!weekend.is_active(utc("2026-11-01T22:00:00Z")));
        assert_eq!(
            weekend.next_change(utc("2026-11-01T05:00:00Z")),
            Some(utc("2026-11-01T14:00:00Z"))
        );
        assert_eq!(
            weekend.next_change(utc("2026-03-08T05:00:00Z")),
            Some(utc("2026-03-08T13:00:00Z"))
        );
    }

    #[test]
    fn a_window_in_the_skipped_hour_starts_when_the_clock_shows_it_again() {
        let early = schedule("America/New_York", &[window(0, "02:30", "04:00")]);
        // 2026-03-08 02:30 does not exist; the window opens at 03:00 EDT (07:00 UTC).
        assert_eq!(
            early.next_change(utc("2026-03-08T05:00:00Z")),
            Some(utc("2026-03-08T07:00:00Z"))
        );
        assert!(early.is_active(utc("2026-03-08T07:30:00Z"))); // 03:30 EDT
    }

    #[test]
    fn overnight_windows_run_past_midnight() {
        // Monday 22:00 to Tuesday 06:00, Jakarta.
        let night = schedule("Asia/Jakarta", &[window(1, "22:00", "06:00")]);
        assert!(!night.is_active(utc("2026-11-23T14:59:00Z"))); // Mon 21:59
        assert!(night.is_active(utc("2026-11-23T15:00:00Z"))); // Mon 22:00
        assert!(night.is_active(utc("2026-11-23T17:00:00Z"))); // Tue 00:00
        assert!(night.is_active(utc("2026-11-23T22:59:00Z"))); // Tue 05:59
        assert!(!night.is_active(utc("2026-11-23T23:00:00Z"))); // Tue 06:00
                                                                // Tuesday night is not Monday's window.
        assert!(!night.is_active(utc("2026-11-24T15:30:00Z"))); // Tue 22:30
        assert_eq!(
            night.next_change(utc("2026-11-23T16:00:00Z")),
            Some(utc("2026-11-23T23:00:00Z"))
        );
    }

    #[test]
    fn saturday_into_sunday_across_midnight() {
        let weekend = schedule("Asia/Jakarta", &[window(6, "20:00", "02:00")]);
        // 2026-11-28 is a Saturday.
        assert!(weekend.is_active(utc("2026-11-28T13:00:00Z"))); // Sat 20:00
        assert!(weekend.is_active(utc("2026-11-28T18:30:00Z"))); // Sun 01:30
        assert!(!weekend.is_active(utc("2026-11-28T19:00:00Z"))); // Sun 02:00
        assert!(!weekend.is_active(utc("2026-11-22T18:30:00Z"))); // Mon 01:30
        assert!(!weekend.is_active(utc("2026-11-29T13:00:00Z"))); // Sun 20:00
        assert_eq!(
            weekend.next_change(utc("2026-11-28T14:00:00Z")),
            Some(utc("2026-11-28T19:00:00Z"))
        );
    }

    #[test]
    fn several_windows_a_day() {
        let split = schedule(
            "Asia/Jakarta",
            &[window(2, "08:00", "12:00"), window(2, "13:00", "17:00")],
        );
        // 2026-11-24 is a Tuesday.
        assert!(split.is_active(utc("2026-11-24T02:00:00Z"))); // 09:00
        assert!(!split.is_active(utc("2026-11-24T05:30:00Z"))); // 12:30 lunch
        assert!(split.is_active(utc("2026-11-24T06:00:00Z"))); // 13:00
        assert_eq!(
            split.next_change(utc("2026-11-24T02:00:00Z")),
            Some(utc("2026-11-24T05:00:00Z"))
        );
        assert_eq!(
            split.next_change(utc("2026-11-24T05:00:00Z")),
            Some(utc("2026-11-24T06:00:00Z"))
        );
    }

    #[test]
    fn disabled_or_empty_schedules() {
        let off = Schedule::new(false, "Asia/Jakarta", &[window(1, "08:00", "09:00")], None)
            .expect("valid");
        assert!(off.is_active(utc("2026-11-24T20:00:00Z")));
        assert_eq!(off.next_change(utc("2026-11-24T20:00:00Z")), None);
        let never = schedule("Asia/Jakarta", &[]);
        assert!(!never.is_active(utc("2026-11-24T02:00:00Z")));
        assert_eq!(never.next_change(utc("2026-11-24T02:00:00Z")), None);
    }

    #[test]
    fn bad_schedules_are_refused() {
        let refused = |timezone: &str, windows: &[WindowInput]| {
            matches!(
                Schedule::new(true, timezone, windows, None),
                Err(DomainError::InvalidInput(_))
            )
        };
        assert!(refused("Mars/Olympus", &[]));
        assert!(refused("Asia/Jakarta", &[window(1, "09:00", "09:00")]));
        assert!(refused("Asia/Jakarta", &[window(1, "9:00", "17:00")]));
        assert!(refused("Asia/Jakarta", &[window(1, "24:00", "17:00")]));
        assert!(refused("Asia/Jakarta", &[window(1, "09:60", "17:00")]));
        assert!(refused("Asia/Jakarta", &[window(1, "nine", "17:00")]));
        assert!(refused("Asia/Jakarta", &[window(7, "09:00", "17:00")]));
        assert!(refused("Asia/Jakarta", &[window(-1, "09:00", "17:00")]));
        assert_eq!(
            Schedule::new(true, " Asia/Jakarta ", &[], Some("  ".into()))
                .expect("valid")
                .outside_hours_message,
            None
        );
    }
}
