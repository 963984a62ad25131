//! The record envelope: one event with who, when, where and in which run.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Datelike, SubsecRound, Timelike, Utc};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::bytes::Digest;
use crate::event::Event;

/// A UTC instant with microsecond precision, written as
/// `YYYY-MM-DDTHH:MM:SS.ffffffZ` everywhere (always six fraction digits), so
/// that its text form is fixed and hashes the same in every language.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(DateTime<Utc>);

impl Timestamp {
    /// Truncates to whole microseconds.
    pub fn new(instant: DateTime<Utc>) -> Timestamp {
        Timestamp(instant.trunc_subsecs(6))
    }

    /// The current time.
    pub fn now() -> Timestamp {
        Timestamp::new(Utc::now())
    }

    pub fn as_datetime(&self) -> DateTime<Utc> {
        self.0
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.canonical_bytes() {
            Some(bytes) => f.write_str(std::str::from_utf8(&bytes).expect("ASCII digits")),
            None => self.write_general(f),
        }
    }
}

impl Timestamp {
    /// The canonical form through the formatter, for any year.
    fn write_general(&self, out: &mut impl fmt::Write) -> fmt::Result {
        let (date, time) = (self.0.date_naive(), self.0.time());
        write!(
            out,
            "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:06}Z",
            date.year(),
            date.month(),
            date.day(),
            time.hour(),
            time.minute(),
            time.second(),
            time.nanosecond() / 1000
        )
    }

    /// The canonical form written digit by digit, for years 0 to 9999 (any
    /// other year, and a leap second, take the formatter). Every record
    /// written and every record verified formats one, so this avoids the
    /// formatting machinery.
    fn canonical_bytes(&self) -> Option<[u8; 27]> {
        let (date, time) = (self.0.date_naive(), self.0.time());
        let year = u32::try_from(date.year())
            .ok()
            .filter(|year| *year <= 9999)?;
        // chrono keeps a leap second in the fraction (≥ 1e9 ns): the formatter's case.
        let micros = Some(time.nanosecond() / 1000).filter(|micros| *micros < 1_000_000)?;
        let mut out = *b"0000-00-00T00:00:00.000000Z";
        let mut put = |at: usize, width: usize, mut value: u32| {
            for place in (at..at + width).rev() {
                out[place] = b'0' + (value % 10) as u8;
                value /= 10;
            }
        };
        put(0, 4, year);
        put(5, 2, date.month());
        put(8, 2, date.day());
        put(11, 2, time.hour());
        put(14, 2, time.minute());
        put(17, 2, time.second());
        put(20, 6, micros);
        Some(out)
    }

    /// Parses exactly the canonical form `YYYY-MM-DDTHH:MM:SS.ffffffZ`.
    pub fn parse_canonical(text: &str) -> Option<Timestamp> {
        let bytes = text.as_bytes();
        if bytes.len() != 27 {
            return None;
        }
        let separators = [
            (4, b'-'),
            (7, b'-'),
            (10, b'T'),
            (13, b':'),
            (16, b':'),
            (19, b'.'),
            (26, b'Z'),
        ];
        if separators.iter().any(|&(at, byte)| bytes[at] != byte) {
            return None;
        }
        let number = |range: std::ops::Range<usize>| -> Option<u32> {
            bytes[range].iter().try_fold(0u32, |acc, &b| {
                b.is_ascii_digit().then(|| acc * 10 + u32::from(b - b'0'))
            })
        };
        let date =
            chrono::NaiveDate::from_ymd_opt(number(0..4)? as i32, number(5..7)?, number(8..10)?)?;
        let time = chrono::NaiveTime::from_hms_micro_opt(
            number(11..13)?,
            number(14..16)?,
            number(17..19)?,
            number(20..26)?,
        )?;
        Some(Timestamp(date.and_time(time).and_utc()))
    }
}

impl FromStr for Timestamp {
    type Err = chrono::ParseError;
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Ok(Timestamp::new(
            DateTime::parse_from_rfc3339(text)?.with_timezone(&Utc),
        ))
    }
}

impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self.canonical_bytes() {
            Some(bytes) => {
                serializer.serialize_str(std::str::from_utf8(&bytes).expect("ASCII digits"))
            }
            None => serializer.collect_str(self),
        }
    }
}

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        Timestamp::parse_canonical(&text).ok_or_else(|| {
            serde::de::Error::custom(format!(
                "timestamp {text:?} is not in the form YYYY-MM-DDTHH:MM:SS.ffffffZ"
            ))
        })
    }
}

/// One stored fact: the event and its envelope. Fields are in sorted order
/// (see `canonical`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    /// Who did it: `--actor`, `REWIND_ACTOR`, or user@host.
    pub actor: String,
    pub event: Event,
    /// The machine it was recorded on.
    pub host: String,
    /// The ledger this record belongs to; the genesis hash is derived from it.
    pub ledger_id: String,
    pub recorded_at: Timestamp,
    /// The run the event belongs to, if any.
    pub run: Option<String>,
    /// Position in the ledger, gap-free from 1.
    pub seq: u64,
}

/// A record as stored: with its place in the chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// `hash_n = sha256(prev ‖ canonical_json(record))`.
    pub hash: Digest,
    /// `hash_{n-1}`, or the genesis hash for seq 1.
    pub prev: Digest,
    pub record: Record,
}

impl Entry {
    pub fn seq(&self) -> u64 {
        self.record.seq
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_canonical_form_round_trips_and_nothing_else_parses_as_it() {
        let text = "2026-01-02T03:04:05.000042Z";
        let parsed = Timestamp::parse_canonical(text).unwrap();
        assert_eq!(parsed.to_string(), text);
        assert_eq!(text.parse::<Timestamp>().unwrap(), parsed);
        for other in [
            "2026-01-02T03:04:05Z",
            "2026-01-02T03:04:05.000042+00:00",
            "2026-01-02 03:04:05.000042Z",
            "2026-13-02T03:04:05.000042Z",
            "2026-01-02T03:04:05.00004xZ",
            "+2026-01-02T03:04:05.00004Z",
        ] {
            assert_eq!(Timestamp::parse_canonical(other), None, "{other}");
            assert!(
                serde_json::from_value::<Timestamp>(serde_json::json!(other)).is_err(),
                "{other}"
            );
        }
        let now = Timestamp::now();
        assert_eq!(Timestamp::parse_canonical(&now.to_string()), Some(now));
    }

    #[test]
    fn the_digit_by_digit_form_is_what_the_formatter_writes() {
        let formatted = |stamp: &Timestamp| {
            let mut text = String::new();
            stamp.write_general(&mut text).unwrap();
            text
        };
        for text in [
            "0000-01-01T00:00:00.000000Z",
            "0042-02-28T09:08:07.000001Z",
            "1999-12-31T23:59:59.999999Z",
            "2026-01-02T03:04:05.000042Z",
            "9999-12-31T23:59:59.999999Z",
        ] {
            let stamp = Timestamp::parse_canonical(text).unwrap();
            assert_eq!(stamp.to_string(), text);
            assert_eq!(stamp.to_string(), formatted(&stamp));
            assert_eq!(
                serde_json::to_string(&stamp).unwrap(),
                format!("\"{text}\"")
            );
        }
        let far = Timestamp::new(
            chrono::NaiveDate::from_ymd_opt(12345, 6, 7)
                .unwrap()
                .and_hms_micro_opt(8, 9, 10, 11)
                .unwrap()
                .and_utc(),
        );
        assert_eq!(far.canonical_bytes(), None);
        assert_eq!(far.to_string(), formatted(&far));
    }
}
