//! Maintenance windows such as `Sun 03:00-04:00 Europe/Berlin` or
//! `Mon-Fri 22:30-01:00 UTC` (crossing midnight): when alerts are muted, when
//! a reboot is allowed, and when the next window opens.

use chrono::{DateTime, Datelike, Duration, NaiveTime, TimeZone, Utc, Weekday};
use chrono_tz::Tz;
use std::fmt;
use std::str::FromStr;

/// A weekly window in a time zone.
#[derive(Debug, Clone, PartialEq)]
pub struct Window {
    days: [bool; 7],
    start: NaiveTime,
    end: NaiveTime,
    tz: Tz,
    text: String,
}

const DAYS: [(&str, Weekday); 7] = [
    ("mon", Weekday::Mon),
    ("tue", Weekday::Tue),
    ("wed", Weekday::Wed),
    ("thu", Weekday::Thu),
    ("fri", Weekday::Fri),
    ("sat", Weekday::Sat),
    ("sun", Weekday::Sun),
];

fn day(s: &str) -> Option<usize> {
    let s = s.trim().to_ascii_lowercase();
    DAYS.iter()
        .position(|(n, _)| s.starts_with(n) && s.len() >= 3)
}

impl FromStr for Window {
    type Err = String;

    /// `DAYS HH:MM-HH:MM [TZ]`; DAYS is `daily`, `*`, or a comma list of days
    /// and ranges (`Mon-Fri,Sun`); TZ is an IANA name (default UTC).
    fn from_str(s: &str) -> Result<Window, String> {
        let usage = || {
            format!("{s:?} is not a window; write it like \"Sun 03:00-04:00 Europe/Berlin\" or \"Mon-Fri 22:30-01:00 UTC\"")
        };
        let parts: Vec<&str> = s.split_whitespace().collect();
        if !(2..=3).contains(&parts.len()) {
            return Err(usage());
        }
        let mut days = [false; 7];
        if parts[0] == "*" || parts[0].eq_ignore_ascii_case("daily") {
            days = [true; 7];
        } else {
            for item in parts[0].split(',') {
                match item.split_once('-') {
                    Some((a, b)) => {
                        let (a, b) = (day(a).ok_or_else(usage)?, day(b).ok_or_else(usage)?);
                        let mut i = a;
                        loop {
                            days[i] = true;
                            if i == b {
                                break;
                            }
                            i = (i + 1) % 7;
                        }
                    }
                    None => days[day(item).ok_or_else(usage)?] = true,
                }
            }
        }
        let (a, b) = parts[1].split_once('-').ok_or_else(usage)?;
        let time = |t: &str| NaiveTime::parse_from_str(t, "%H:%M").map_err(|_| usage());
        let (start, end) = (time(a)?, time(b)?);
        if start == end {
            return Err(format!("{s:?}: the window is empty (start equals end)"));
        }
        let tz = match parts.get(2) {
            Some(z) => z.parse::<Tz>().map_err(|_| {
                format!("{s:?}: unknown time zone {z:?} (use an IANA name such as Europe/Berlin)")
            })?,
            None => Tz::UTC,
        };
        Ok(Window {
            days,
            start,
            end,
            tz,
            text: s.to_string(),
        })
    }
}

impl fmt::Display for Window {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl Window {
    /// A window on no day (never open).
    pub fn never() -> Window {
        Window {
            days: [false; 7],
            start: NaiveTime::MIN,
            end: NaiveTime::MIN + Duration::hours(1),
            tz: Tz::UTC,
            text: "never".into(),
        }
    }

    fn day_on(&self, w: Weekday) -> bool {
        self.days[w.num_days_from_monday() as usize]
    }

    /// True when `now` falls inside the window.
    pub fn contains(&self, now: DateTime<Utc>) -> bool {
        let local = now.with_timezone(&self.tz);
        let t = local.time();
        let today = local.weekday();
        if self.start < self.end {
            self.day_on(today) && t >= self.start && t < self.end
        } else {
            // Crosses midnight: the evening part belongs to today, the
            // morning part to the window that started yesterday.
            (self.day_on(today) && t >= self.start) || (self.day_on(today.pred()) && t < self.end)
        }
    }

    /// The next time the window opens after `now` (now itself if inside).
    pub fn next_open(&self, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        if self.contains(now) {
            return Some(now);
        }
        let local_date = now.with_timezone(&self.tz).date_naive();
        for offset in 0..9 {
            let d = local_date + Duration::days(offset);
            if !self.day_on(d.weekday()) {
                continue;
            }
            let Some(open) = self
                .tz
                .from_local_datetime(&d.and_time(self.start))
                .earliest()
            else {
                continue;
            };
            let open = open.with_timezone(&Utc);
            if open > now {
                return Some(open);
            }
        }
        None
    }

    /// When the window containing `now` closes.
    pub fn closes(&self, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        if !self.contains(now) {
            return None;
        }
        let local = now.with_timezone(&self.tz);
        let mut d = local.date_naive();
        if local.time() >= self.end || self.start > self.end && local.time() >= self.start {
            d += Duration::days(1);
        }
        self.tz
            .from_local_datetime(&d.and_time(self.end))
            .earliest()
            .map(|t| t.with_timezone(&Utc))
    }
}

/// Serde for a list of windows as strings.
pub mod serde_list {
    use super::Window;
    use serde::{Deserialize, Deserializer, Serializer};

    /// Serializes as strings.
    pub fn serialize<S: Serializer>(w: &[Window], s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(w.iter().map(|w| w.to_string()))
    }

    /// Parses strings.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Window>, D::Error> {
        Vec::<String>::deserialize(d)?
            .iter()
            .map(|s| s.parse().map_err(serde::de::Error::custom))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn utc(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn berlin_sunday_window_respects_the_zone() {
        let w: Window = "Sun 03:00-04:00 Europe/Berlin".parse().unwrap();
        // 2026-11-29 is a Sunday; Berlin is UTC+1 in winter.
        assert!(w.contains(utc("2026-11-29T02:30:00Z")));
        assert!(!w.contains(utc("2026-11-29T03:30:00Z")));
        assert!(!w.contains(utc("2026-11-30T02:30:00Z")));
        assert_eq!(
            w.next_open(utc("2026-11-29T03:30:00Z")),
            Some(utc("2026-12-06T02:00:00Z"))
        );
        assert_eq!(
            w.closes(utc("2026-11-29T02:30:00Z")),
            Some(utc("2026-11-29T03:00:00Z"))
        );
    }

    #[test]
    fn window_crossing_midnight() {
        let w: Window = "Fri 23:00-01:00".parse().unwrap();
        // 2026-12-04 is a Friday.
        assert!(w.contains(utc("2026-12-04T23:30:00Z")));
        assert!(w.contains(utc("2026-12-05T00:30:00Z")));
        assert!(!w.contains(utc("2026-12-05T01:00:00Z")));
        assert!(!w.contains(utc("2026-12-04T00:30:00Z")));
        assert_eq!(
            w.closes(utc("2026-12-04T23:30:00Z")),
            Some(utc("2026-12-05T01:00:00Z"))
        );
    }

    #[test]
    fn daylight_saving_change_keeps_local_time() {
        // Berlin leaves DST on 2026-10-25: the Sunday window opens at 02:00 UTC
        // afterwards and at 01:00 UTC before.
        let w: Window = "Sun 03:00-04:00 Europe/Berlin".parse().unwrap();
        assert!(w.contains(utc("2026-10-18T01:30:00Z")));
        assert!(!w.contains(utc("2026-10-18T02:30:00Z")));
        assert!(w.contains(utc("2026-10-25T02:30:00Z")));
        assert_eq!(
            w.next_open(utc("2026-10-19T00:00:00Z")),
            Some(utc("2026-10-25T02:00:00Z"))
        );
        assert!(!Window::never().contains(utc("2026-10-25T00:30:00Z")));
    }

    #[test]
    fn day_lists_and_ranges() {
        let w: Window = "Sat-Mon,Wed 10:00-11:00".parse().unwrap();
        assert!(w.day_on(Weekday::Sun) && w.day_on(Weekday::Mon) && w.day_on(Weekday::Wed));
        assert!(!w.day_on(Weekday::Tue) && !w.day_on(Weekday::Fri));
        let d: Window = "daily 00:00-23:59".parse().unwrap();
        assert!((0..7).all(|i| d.days[i]));
    }

    #[test]
    fn bad_windows_say_how_to_write_one() {
        for bad in [
            "Sun",
            "Sun 3-4",
            "Funday 03:00-04:00",
            "Sun 03:00-03:00",
            "Sun 03:00-04:00 Mars/Olympus",
        ] {
            let e = bad.parse::<Window>().unwrap_err();
            assert!(e.contains(bad) || e.contains("Mars"), "{bad}: {e}");
        }
    }
}
