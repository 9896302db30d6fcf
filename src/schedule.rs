//! When a `cron` entry of a cltab runs: the schedule text and its next run time.
//!
//! Pure: nothing here reads the clock; callers pass the current time in.
//!
//! Two families of text are accepted, case-insensitive, with any amount of
//! whitespace between words:
//!
//! - The time forms of OpenAFS `bos create -type cron`: `now` (run once as
//!   soon as the group reaches the level), `never`, `H:MM` / `HH:MM` (daily),
//!   and a weekday followed by a time (weekly: `sat 03:00`, `saturday 3:00`).
//!   A time may carry `am`/`pm`, separate or attached (`3:00 pm`, `3:00pm`);
//!   with it the hour is 1-12, `12:00 am` is midnight and `12:30 pm` half
//!   past noon.
//! - Standard five-field cron expressions `min hour dom month dow`
//!   (`*/5 * * * *`, `0 9-17 * * mon-fri`, `30 2 1,15 * *`) and the macros
//!   `@hourly`, `@daily`, `@weekly`, `@monthly`, `@yearly` (`@annually`).
//!   Matching is done by the `croner` crate, which also takes its extensions
//!   (`L`, `W`, `#`); six- and seven-field forms (seconds, year) are refused.
//!
//! A BOS form is turned into the equivalent cron expression; [`Schedule::as_str`]
//! still gives the text as written. Run times are computed in a time zone
//! (the local one by default) on the wall clock: a run time that falls into a
//! daylight-saving gap is moved past the gap, and one in a repeated hour runs
//! once.

use std::str::FromStr as _;

use chrono::{DateTime, TimeZone};
use croner::Cron;
use croner::parser::{CronParser, Seconds, Year};

/// The accepted forms, appended to every error message.
const ACCEPTED: &str = "accepted: now, never, [DAY] H:MM [am|pm] (daily, or weekly with a \
     day name: sat 03:00), a five-field cron expression \"min hour dom month dow\" \
     (0 3 * * sat), @hourly, @daily, @weekly, @monthly, @yearly";

/// Day names, Sunday first, so the index is cron's day-of-week number.
const DAYS: [(&str, &str); 7] = [
    ("sun", "sunday"),
    ("mon", "monday"),
    ("tue", "tuesday"),
    ("wed", "wednesday"),
    ("thu", "thursday"),
    ("fri", "friday"),
    ("sat", "saturday"),
];

/// The cron macros and the five-field expressions they stand for.
const MACROS: [(&str, &str); 6] = [
    ("@hourly", "0 * * * *"),
    ("@daily", "0 0 * * *"),
    ("@weekly", "0 0 * * 0"),
    ("@monthly", "0 0 1 * *"),
    ("@yearly", "0 0 1 1 *"),
    ("@annually", "0 0 1 1 *"),
];

/// When a `cron` entry runs.
///
/// Two schedules are equal when they run at the same times by their text:
/// equality compares the normalised form (the equivalent cron expression,
/// lower case, single spaces), so `3:00pm` equals `3:00 PM` and `15:00`.
#[derive(Clone, Debug)]
pub struct Schedule {
    /// The text as written, trimmed.
    text: String,
    /// `now`, `never`, or the equivalent five-field cron expression.
    normal: String,
    /// What the text means.
    when: When,
}

/// The meaning of a schedule.
#[derive(Clone, Debug)]
enum When {
    Now,
    Never,
    Cron(Box<Cron>),
}

impl PartialEq for Schedule {
    fn eq(&self, other: &Self) -> bool {
        self.normal == other.normal
    }
}

impl Eq for Schedule {}

/// Why a schedule text was refused. Every message quotes the text, says what
/// is wrong and lists the accepted forms.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ScheduleError {
    /// The text is empty or only whitespace.
    #[error("empty schedule; {accepted}", accepted = ACCEPTED)]
    Empty,
    /// The hour of a 24-hour time is not 0-23.
    #[error("schedule {text:?}: hour {hour} is out of range 0-23; {accepted}", accepted = ACCEPTED)]
    Hour {
        /// The schedule text.
        text: String,
        /// The hour as written.
        hour: u32,
    },
    /// The hour of a time with am/pm is not 1-12.
    #[error("schedule {text:?}: hour {hour} with am/pm is out of range 1-12; {accepted}", accepted = ACCEPTED)]
    Hour12 {
        /// The schedule text.
        text: String,
        /// The hour as written.
        hour: u32,
    },
    /// The minute is not 0-59.
    #[error("schedule {text:?}: minute {minute} is out of range 0-59; {accepted}", accepted = ACCEPTED)]
    Minute {
        /// The schedule text.
        text: String,
        /// The minute as written.
        minute: u32,
    },
    /// A word in the place of the time is not `H:MM` or `HH:MM`.
    #[error("schedule {text:?}: {word:?} is not a time of day (H:MM or HH:MM); {accepted}", accepted = ACCEPTED)]
    Time {
        /// The schedule text.
        text: String,
        /// The offending word.
        word: String,
    },
    /// A weekday is given but no time of day.
    #[error("schedule {text:?}: no time of day after the weekday; {accepted}", accepted = ACCEPTED)]
    MissingTime {
        /// The schedule text.
        text: String,
    },
    /// A word in the place of the weekday is not a day name.
    #[error("schedule {text:?}: {word:?} is not a day of the week (sun-sat or sunday-saturday); {accepted}", accepted = ACCEPTED)]
    Day {
        /// The schedule text.
        text: String,
        /// The offending word.
        word: String,
    },
    /// A cron expression with six or seven fields (seconds, year).
    #[error("schedule {text:?} has {count} fields: only five-field cron expressions (min hour dom month dow) are accepted, without seconds or year; {accepted}", accepted = ACCEPTED)]
    Fields {
        /// The schedule text.
        text: String,
        /// How many fields it has.
        count: usize,
    },
    /// The cron matcher refused the expression.
    #[error("schedule {text:?} is not a valid cron expression: {reason}; {accepted}", accepted = ACCEPTED)]
    Cron {
        /// The schedule text.
        text: String,
        /// What the matcher said.
        reason: String,
    },
    /// A valid cron expression that matches no date (e.g. `0 0 30 2 *`).
    #[error("schedule {text:?} matches no date, so it would never run (write never for that); {accepted}", accepted = ACCEPTED)]
    NoDate {
        /// The schedule text.
        text: String,
    },
    /// The text fits none of the accepted forms.
    #[error("schedule {text:?} is neither a BOS time nor a five-field cron expression; {accepted}", accepted = ACCEPTED)]
    Unrecognised {
        /// The schedule text.
        text: String,
    },
}

impl Schedule {
    /// Parses a schedule text (see the module documentation for the forms).
    pub fn parse(text: &str) -> Result<Schedule, ScheduleError> {
        let text = text.trim();
        let lower = text.to_ascii_lowercase();
        let words: Vec<&str> = lower.split_whitespace().collect();
        let (normal, when) = match words.as_slice() {
            [] => return Err(ScheduleError::Empty),
            ["now"] => ("now".to_string(), When::Now),
            ["never"] => ("never".to_string(), When::Never),
            [first, ..] if first.starts_with('@') => {
                let Some((_, expr)) = MACROS.iter().find(|(name, _)| words == [*name]) else {
                    return Err(ScheduleError::Cron {
                        text: text.to_string(),
                        reason: format!(
                            "unknown macro {:?} (known: @hourly, @daily, @weekly, @monthly, @yearly, @annually)",
                            words.join(" ")
                        ),
                    });
                };
                cron(text, expr.to_string())?
            }
            _ if looks_bos(&words) => cron(text, bos_to_cron(text, &words)?)?,
            [_, _, _, _, _] => cron(text, words.join(" "))?,
            [_, _, _, _, _, _] | [_, _, _, _, _, _, _] => {
                return Err(ScheduleError::Fields {
                    text: text.to_string(),
                    count: words.len(),
                });
            }
            _ => {
                return Err(ScheduleError::Unrecognised {
                    text: text.to_string(),
                });
            }
        };
        Ok(Schedule {
            text: text.to_string(),
            normal,
            when,
        })
    }

    /// The text as written (trimmed).
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// `now`: run once as soon as the group reaches the level.
    pub fn is_now(&self) -> bool {
        matches!(self.when, When::Now)
    }

    /// First run time strictly after `after` (Unix seconds), in the local time
    /// zone. None for `now` and `never`.
    pub fn next_after(&self, after: i64) -> Option<i64> {
        self.next_after_in(after, &chrono::Local)
    }

    /// First run time strictly after `after` (Unix seconds), on the wall clock
    /// of `tz`. None for `now` and `never` (and past the year 5000).
    pub fn next_after_in<Tz: TimeZone>(&self, after: i64, tz: &Tz) -> Option<i64> {
        let When::Cron(cron) = &self.when else {
            return None;
        };
        let start = DateTime::from_timestamp(after, 0)?.with_timezone(tz);
        cron.find_next_occurrence(&start, false)
            .ok()
            .map(|t| t.timestamp())
    }
}

/// Parses a five-field cron expression (already lower case, single spaces)
/// with the matcher and checks that it matches some date.
fn cron(text: &str, expr: String) -> Result<(String, When), ScheduleError> {
    // An empty list item (`,`, `1,,2`, `5,`) is refused here: croner takes
    // a field of nothing but commas as one that matches nothing, and the
    // search for a matching date below then walks minute by minute to the
    // year 5000 (a minute, found by fuzzing).
    // The same for a day-of-week field of a lone `+` (croner's AND
    // modifier before nothing), found by fuzzing too.
    if let Some(field) = expr.split_whitespace().find(|f| {
        let f = f.strip_prefix('+').unwrap_or(f);
        f.is_empty() || f.split(',').any(str::is_empty)
    }) {
        return Err(ScheduleError::Cron {
            text: text.to_string(),
            reason: format!("the field {field:?} has an empty list item"),
        });
    }
    let parser = CronParser::builder()
        .seconds(Seconds::Disallowed)
        .year(Year::Disallowed)
        .build();
    let cron = parser.parse(&expr).map_err(|e| ScheduleError::Cron {
        text: text.to_string(),
        reason: e.to_string().trim_end_matches('.').to_string(),
    })?;
    if cron.find_next_occurrence(&no_date_window(), false).is_err() {
        return Err(ScheduleError::NoDate {
            text: text.to_string(),
        });
    }
    Ok((expr, When::Cron(Box::new(cron))))
}

/// Where the check that a pattern matches some date starts: 40 years
/// before the last year croner searches (5000), so that an impossible
/// pattern (`0 0 30 2 *`) costs a walk of 40 years, not 3,000 (the fuzzer
/// measured 17 ms each from 1970).
///
/// Any pattern that matches some date matches one in 4960-4999: every
/// month and day (and each day's minutes) come every year; 29 February
/// comes in the 10 leap years 4960, 4964, ... 4996 (no century year among
/// them); a day of the week comes every week; and a date that must fall
/// on a given weekday (croner's `+` AND) does so within those years, each
/// date's weekday moving by 1 or 2 a year, and 29 February's by 5 (mod 7)
/// from one leap year to the next, so 7 leap years give every weekday.
/// `the_window_finds_what_a_full_search_finds` checks it on a table.
fn no_date_window() -> DateTime<chrono::Utc> {
    chrono::NaiveDate::from_ymd_opt(croner::YEAR_UPPER_LIMIT - 40, 1, 1)
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .map_or(DateTime::<chrono::Utc>::UNIX_EPOCH, |t| t.and_utc())
}

/// Whether lower-case words are meant as a BOS time form: a cron field never
/// holds a colon, a leading day name or a trailing am/pm.
fn looks_bos(words: &[&str]) -> bool {
    words.iter().any(|w| w.contains(':'))
        || words.first().is_some_and(|w| day_number(w).is_some())
        || words.last().is_some_and(|w| {
            split_meridiem(w).1.is_some() && w.starts_with(|c: char| c.is_ascii_digit())
                || matches!(*w, "am" | "pm")
        })
}

/// Cron's day-of-week number for a 3-letter or full English day name.
fn day_number(word: &str) -> Option<u32> {
    DAYS.iter()
        .position(|(short, long)| word == *short || word == *long)
        .and_then(|i| u32::try_from(i).ok())
}

/// Turns a BOS time form (lower-case words) into a five-field cron expression.
fn bos_to_cron(text: &str, words: &[&str]) -> Result<String, ScheduleError> {
    let (day, rest) = match day_number(words[0]) {
        Some(day) => (Some(day), &words[1..]),
        None if words.len() > 1 && words[0].chars().all(|c| c.is_ascii_alphabetic()) => {
            return Err(ScheduleError::Day {
                text: text.to_string(),
                word: words[0].to_string(),
            });
        }
        None => (None, words),
    };
    let (word, (time, meridiem)) = match rest {
        [] => {
            return Err(ScheduleError::MissingTime {
                text: text.to_string(),
            });
        }
        [word] => (*word, split_meridiem(word)),
        [word, m @ ("am" | "pm")] if split_meridiem(word).1.is_none() => {
            (*word, (*word, Some(*m == "pm")))
        }
        _ => {
            return Err(ScheduleError::Unrecognised {
                text: text.to_string(),
            });
        }
    };
    let (hour, minute) = clock_time(time).ok_or_else(|| ScheduleError::Time {
        text: text.to_string(),
        word: word.to_string(),
    })?;
    let hour = match meridiem {
        None if hour > 23 => {
            return Err(ScheduleError::Hour {
                text: text.to_string(),
                hour,
            });
        }
        None => hour,
        Some(_) if !(1..=12).contains(&hour) => {
            return Err(ScheduleError::Hour12 {
                text: text.to_string(),
                hour,
            });
        }
        Some(pm) => hour % 12 + if pm { 12 } else { 0 },
    };
    if minute > 59 {
        return Err(ScheduleError::Minute {
            text: text.to_string(),
            minute,
        });
    }
    Ok(match day {
        Some(day) => format!("{minute} {hour} * * {day}"),
        None => format!("{minute} {hour} * * *"),
    })
}

/// Splits an attached `am`/`pm` off a time word: `Some(true)` for pm.
fn split_meridiem(word: &str) -> (&str, Option<bool>) {
    if let Some(time) = word.strip_suffix("am") {
        (time, Some(false))
    } else if let Some(time) = word.strip_suffix("pm") {
        (time, Some(true))
    } else {
        (word, None)
    }
}

/// Reads `H:MM` or `HH:MM` into hour and minute, without range checks.
fn clock_time(word: &str) -> Option<(u32, u32)> {
    let (h, m) = word.split_once(':')?;
    let digits = |s: &str, len: std::ops::RangeInclusive<usize>| {
        len.contains(&s.len()) && s.bytes().all(|b| b.is_ascii_digit())
    };
    if !digits(h, 1..=2) || !digits(m, 2..=2) {
        return None;
    }
    Some((u32::from_str(h).ok()?, u32::from_str(m).ok()?))
}

/// C `ctime()` format in the local zone without the newline, e.g.
/// `Sat Nov 21 16:07:21 2026`, the day of month space-padded
/// (`Sun Nov  1 03:00:00 2026`), as OpenAFS `bos status` prints times.
pub fn ctime(unix: i64) -> String {
    ctime_in(unix, &chrono::Local)
}

/// [`ctime`] in a given zone. A time chrono cannot represent is printed as
/// its Unix seconds.
pub fn ctime_in<Tz: TimeZone>(unix: i64, tz: &Tz) -> String
where
    Tz::Offset: std::fmt::Display,
{
    match DateTime::from_timestamp(unix, 0) {
        Some(t) => t
            .with_timezone(tz)
            .format("%a %b %e %H:%M:%S %Y")
            .to_string(),
        None => unix.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{FixedOffset, NaiveDateTime, Utc};

    /// Unix seconds of a UTC wall-clock time written `YYYY-MM-DD HH:MM:SS`.
    fn utc(s: &str) -> i64 {
        NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M:%S")
            .unwrap()
            .and_utc()
            .timestamp()
    }

    /// A UTC time back to text, for readable failures.
    fn show(t: Option<i64>) -> String {
        t.map_or("None".to_string(), |t| {
            DateTime::from_timestamp(t, 0)
                .unwrap()
                .format("%Y-%m-%d %H:%M:%S %a")
                .to_string()
        })
    }

    #[test]
    fn parse_ok_normalises_to_cron() {
        let cases = [
            ("now", "now"),
            ("  NEVER ", "never"),
            ("3:00", "0 3 * * *"),
            ("03:00", "0 3 * * *"),
            ("0:00", "0 0 * * *"),
            ("23:59", "59 23 * * *"),
            ("sat 03:00", "0 3 * * 6"),
            ("Saturday   3:00", "0 3 * * 6"),
            ("sun 0:05", "5 0 * * 0"),
            ("WEDNESDAY 12:00", "0 12 * * 3"),
            ("3:00 pm", "0 15 * * *"),
            ("3:00pm", "0 15 * * *"),
            ("11:30 AM", "30 11 * * *"),
            ("12:00 am", "0 0 * * *"),
            ("12:30 pm", "30 12 * * *"),
            ("12:30PM", "30 12 * * *"),
            ("fri 9:15 pm", "15 21 * * 5"),
            ("*/5 * * * *", "*/5 * * * *"),
            ("0  3 * *  SAT", "0 3 * * sat"),
            ("30 2 1,15 * *", "30 2 1,15 * *"),
            ("0 9-17 * * mon-fri", "0 9-17 * * mon-fri"),
            ("0 0 1 jan-mar *", "0 0 1 jan-mar *"),
            ("@hourly", "0 * * * *"),
            ("@Daily", "0 0 * * *"),
            ("@weekly", "0 0 * * 0"),
            ("@monthly", "0 0 1 * *"),
            ("@yearly", "0 0 1 1 *"),
            ("@annually", "0 0 1 1 *"),
        ];
        for (text, normal) in cases {
            let s = Schedule::parse(text).unwrap_or_else(|e| panic!("{text:?}: {e}"));
            assert_eq!(s.normal, normal, "{text:?}");
            assert_eq!(s.as_str(), text.trim(), "{text:?}");
            assert_eq!(s.is_now(), normal == "now", "{text:?}");
        }
    }

    #[test]
    fn equality_is_on_the_normalised_text() {
        let p = |t| Schedule::parse(t).unwrap();
        assert_eq!(p("3:00pm"), p("3:00 PM"));
        assert_eq!(p("3:00pm"), p("15:00"));
        assert_eq!(p("sat 3:00"), p("0 3 * * 6"));
        assert_eq!(p("@daily"), p("0 0 * * *"));
        assert_ne!(p("now"), p("never"));
        assert_ne!(p("3:00"), p("sat 3:00"));
    }

    #[test]
    fn parse_errors() {
        use ScheduleError as E;
        // Each error but Empty quotes the text; the table fills it in.
        type Want = fn(String) -> E;
        let cases: &[(&str, Want)] = &[
            ("", |_| E::Empty),
            ("   ", |_| E::Empty),
            ("24:00", |text| E::Hour { text, hour: 24 }),
            ("sat 25:10", |text| E::Hour { text, hour: 25 }),
            ("3:60", |text| E::Minute { text, minute: 60 }),
            ("13:00 pm", |text| E::Hour12 { text, hour: 13 }),
            ("0:30am", |text| E::Hour12 { text, hour: 0 }),
            ("3:5", |text| E::Time {
                text,
                word: "3:5".into(),
            }),
            ("sat 3", |text| E::Time {
                text,
                word: "3".into(),
            }),
            ("3pm", |text| E::Time {
                text,
                word: "3pm".into(),
            }),
            ("x:00", |text| E::Time {
                text,
                word: "x:00".into(),
            }),
            ("sat", |text| E::MissingTime { text }),
            ("satx 3:00", |text| E::Day {
                text,
                word: "satx".into(),
            }),
            ("daily 3:00", |text| E::Day {
                text,
                word: "daily".into(),
            }),
            ("3:00 pm pm", |text| E::Unrecognised { text }),
            ("3:00pm pm", |text| E::Unrecognised { text }),
            ("sat sun 3:00", |text| E::Unrecognised { text }),
            ("0 0 3 * * *", |text| E::Fields { text, count: 6 }),
            ("0 0 3 * * * 2026", |text| E::Fields { text, count: 7 }),
            ("0 3 * *", |text| E::Unrecognised { text }),
            ("sometimes", |text| E::Unrecognised { text }),
            ("0 0 30 2 *", |text| E::NoDate { text }),
            ("0 0 31 4,6,9,11 *", |text| E::NoDate { text }),
        ];
        for (text, want) in cases {
            let want = want(text.trim().to_string());
            assert_eq!(Schedule::parse(text), Err(want), "{text:?}");
        }
        for text in [
            "60 * * * *",
            "0 24 * * *",
            "0 0 * * funday",
            "@reboot",
            "@daily 3",
            // Empty list items: ", * * * *" made the search for a date walk
            // to the year 5000 (found by fuzzing; seed in fuzz/seeds).
            ", * * * *",
            "0 ,, * * *",
            "1,,2 * * * *",
            "0 0 1, * *",
            "* * , * *",
            // A lone AND modifier: nothing to AND with (fuzzing).
            "* * * * +",
            "0 0 1 * +,1",
        ] {
            assert!(
                matches!(Schedule::parse(text), Err(E::Cron { .. })),
                "{text:?}: {:?}",
                Schedule::parse(text)
            );
        }
    }

    /// The no-date check's 40-year window answers as a search of every
    /// year croner knows would, on the patterns most likely to differ.
    #[test]
    fn the_window_finds_what_a_full_search_finds() {
        let parser = CronParser::builder()
            .seconds(Seconds::Disallowed)
            .year(Year::Disallowed)
            .build();
        let rows = [
            ("0 0 29 2 *", true),
            ("0 0 29 2 +1", true),
            ("0 0 29 2 +0", true),
            ("59 23 29 2 +6", true),
            ("0 0 31 12 +5", true),
            ("0 0 13 * +5", true),
            ("0 0 1 1 +1", true),
            ("0 0 L 2 *", true),
            ("0 0 * * 5#5", true),
            ("0 0 29 2 5#5", true),
            ("0 0 30 2 *", false),
            ("0 0 31 4,6,9,11 *", false),
            ("0 0 30,31 2 +1", false),
            ("*/7 3-5 29-31 2 *", true),
        ];
        for (expr, possible) in rows {
            let cron = parser.parse(expr).unwrap();
            let full = cron
                .find_next_occurrence(&DateTime::<chrono::Utc>::UNIX_EPOCH, false)
                .is_ok();
            let window = cron.find_next_occurrence(&no_date_window(), false).is_ok();
            assert_eq!((full, window), (possible, possible), "{expr}");
        }
    }

    #[test]
    fn error_messages_say_what_and_list_the_forms() {
        let cases = [
            ("24:00", "hour 24 is out of range 0-23"),
            ("3:60", "minute 60 is out of range 0-59"),
            ("13:00pm", "hour 13 with am/pm is out of range 1-12"),
            (
                "0 0 3 * * *",
                "has 6 fields: only five-field cron expressions",
            ),
            ("funday 3:00", "\"funday\" is not a day of the week"),
            ("60 * * * *", "is not a valid cron expression"),
        ];
        for (text, what) in cases {
            let msg = Schedule::parse(text).unwrap_err().to_string();
            assert!(msg.contains(&format!("{text:?}")), "{msg}");
            assert!(msg.contains(what), "{msg}");
            assert!(msg.contains("accepted: now, never, [DAY] H:MM"), "{msg}");
            assert!(msg.contains("five-field cron expression"), "{msg}");
        }
    }

    #[test]
    fn next_after_in_utc() {
        // 2026-11-21 is a Saturday.
        let cases = [
            ("3:00", "2026-11-21 16:07:21", "2026-11-22 03:00:00"),
            ("3:00", "2026-11-21 02:59:59", "2026-11-21 03:00:00"),
            // Strictly after: exactly on a run time gives the next one.
            ("3:00", "2026-11-21 03:00:00", "2026-11-22 03:00:00"),
            ("sat 03:00", "2026-11-21 03:00:00", "2026-11-28 03:00:00"),
            ("sat 03:00", "2026-11-21 02:00:00", "2026-11-21 03:00:00"),
            ("sunday 3:00", "2026-11-21 16:07:21", "2026-11-22 03:00:00"),
            ("mon 0:00", "2026-11-21 16:07:21", "2026-11-23 00:00:00"),
            ("3:00 pm", "2026-11-21 16:07:21", "2026-11-22 15:00:00"),
            ("3:00pm", "2026-11-21 14:07:21", "2026-11-21 15:00:00"),
            ("12:00 am", "2026-11-21 16:07:21", "2026-11-22 00:00:00"),
            ("12:30 pm", "2026-11-21 09:00:00", "2026-11-21 12:30:00"),
            ("11:30 AM", "2026-11-21 11:30:00", "2026-11-22 11:30:00"),
            // Month and year roll over.
            ("0:00", "2026-12-31 23:59:59", "2027-01-01 00:00:00"),
            ("*/5 * * * *", "2026-11-21 16:07:21", "2026-11-21 16:10:00"),
            ("*/5 * * * *", "2026-11-21 16:10:00", "2026-11-21 16:15:00"),
            ("*/5 * * * *", "2026-11-21 23:59:00", "2026-11-22 00:00:00"),
            ("0 3 * * sat", "2026-11-21 03:00:00", "2026-11-28 03:00:00"),
            (
                "30 2 1,15 * *",
                "2026-11-21 16:07:21",
                "2026-12-01 02:30:00",
            ),
            (
                "30 2 1,15 * *",
                "2026-12-01 02:30:00",
                "2026-12-15 02:30:00",
            ),
            (
                "0 9-17 * * mon-fri",
                "2026-11-21 16:07:21",
                "2026-11-23 09:00:00",
            ),
            (
                "0 9-17 * * mon-fri",
                "2026-11-23 17:00:00",
                "2026-11-24 09:00:00",
            ),
            (
                "0 9-17 * * mon-fri",
                "2026-11-23 09:30:00",
                "2026-11-23 10:00:00",
            ),
            ("15 */6 * * *", "2026-11-21 16:07:21", "2026-11-21 18:15:00"),
            ("0 0 29 2 *", "2026-11-21 16:07:21", "2028-02-29 00:00:00"),
            ("@hourly", "2026-11-21 16:07:21", "2026-11-21 17:00:00"),
            ("@weekly", "2026-11-21 16:07:21", "2026-11-22 00:00:00"),
            ("@monthly", "2026-11-21 16:07:21", "2026-12-01 00:00:00"),
            ("@yearly", "2026-11-21 16:07:21", "2027-01-01 00:00:00"),
        ];
        for (text, after, want) in cases {
            let s = Schedule::parse(text).unwrap();
            let got = s.next_after_in(utc(after), &Utc);
            assert_eq!(show(got), show(Some(utc(want))), "{text:?} after {after}");
        }
    }

    #[test]
    fn next_after_in_fixed_offsets() {
        let east2 = FixedOffset::east_opt(2 * 3600).unwrap();
        let west5 = FixedOffset::west_opt(5 * 3600).unwrap();
        let cases = [
            // 03:00 at +02:00 is 01:00 UTC.
            ("3:00", east2, "2026-11-21 00:30:00", "2026-11-21 01:00:00"),
            ("3:00", east2, "2026-11-21 01:00:00", "2026-11-22 01:00:00"),
            // Saturday 01:00 at +02:00 is Friday 23:00 UTC.
            (
                "sat 1:00",
                east2,
                "2026-11-20 12:00:00",
                "2026-11-20 23:00:00",
            ),
            // 11:30 pm at -05:00 is 04:30 UTC the next day.
            (
                "11:30 pm",
                west5,
                "2026-11-21 16:07:21",
                "2026-11-22 04:30:00",
            ),
            // Midnight at -05:00 is 05:00 UTC.
            (
                "0 0 * * *",
                west5,
                "2026-11-21 04:59:59",
                "2026-11-21 05:00:00",
            ),
            (
                "0 0 1 * *",
                west5,
                "2026-11-21 16:07:21",
                "2026-12-01 05:00:00",
            ),
        ];
        for (text, tz, after, want) in cases {
            let s = Schedule::parse(text).unwrap();
            let got = s.next_after_in(utc(after), &tz);
            assert_eq!(
                show(got),
                show(Some(utc(want))),
                "{text:?} at {tz} after {after}"
            );
        }
    }

    #[test]
    fn now_and_never_have_no_next_run() {
        let t = utc("2026-11-21 16:07:21");
        for text in ["now", "never", "NOW"] {
            let s = Schedule::parse(text).unwrap();
            assert_eq!(s.next_after_in(t, &Utc), None, "{text:?}");
            assert_eq!(s.next_after(t), None, "{text:?}");
        }
        assert!(Schedule::parse("now").unwrap().is_now());
        assert!(!Schedule::parse("never").unwrap().is_now());
        assert!(!Schedule::parse("3:00").unwrap().is_now());
    }

    #[test]
    fn next_after_local_is_strictly_later() {
        // Whatever the machine's zone, the next run is after the given time
        // and at most a week later for a weekly schedule.
        let t = utc("2026-11-21 16:07:21");
        let next = Schedule::parse("sat 3:00").unwrap().next_after(t).unwrap();
        assert!(
            next > t && next <= t + 7 * 86400 + 3600,
            "{}",
            show(Some(next))
        );
    }

    #[test]
    fn ctime_formats() {
        let east2 = FixedOffset::east_opt(2 * 3600).unwrap();
        let west5 = FixedOffset::west_opt(5 * 3600).unwrap();
        let t = utc("2026-11-21 16:07:21");
        assert_eq!(ctime_in(t, &Utc), "Sat Nov 21 16:07:21 2026");
        assert_eq!(ctime_in(t, &east2), "Sat Nov 21 18:07:21 2026");
        assert_eq!(ctime_in(t, &west5), "Sat Nov 21 11:07:21 2026");
        let t = utc("2026-11-01 03:00:00");
        assert_eq!(ctime_in(t, &Utc), "Sun Nov  1 03:00:00 2026");
        assert_eq!(ctime_in(t, &west5), "Sat Oct 31 22:00:00 2026");
        assert_eq!(ctime_in(0, &Utc), "Thu Jan  1 00:00:00 1970");
        assert_eq!(ctime_in(i64::MAX, &Utc), i64::MAX.to_string());
        // The local form has the same shape whatever the zone.
        assert_eq!(ctime(t).len(), "Sun Nov  1 03:00:00 2026".len());
    }
}
