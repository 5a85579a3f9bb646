//! The one time-span parser of the project (systemd's `parse_sec()`, exact to
//! the microsecond): the instances' flags use it through
//! [`crate::parse_timespan`], the config crate for `…Sec=` keys.

/// Why a string is not a time span; the message says what to write instead.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TimeSpanError {
    /// Not `NUMBER[UNIT]…` at all.
    #[error(
        "not a time span: use e.g. 5s, 100ms, 1min 30s, or infinity (a bare number is seconds)"
    )]
    Syntax,
    /// A unit systemd does not know.
    #[error("unknown time unit \"{0}\": use us, ms, s, min, h, d, w, M or y")]
    Unit(String),
    /// Beyond `u64` microseconds.
    #[error("too large: use infinity for no limit")]
    TooLarge,
}

/// Microseconds in each time unit that systemd's `parse_sec()` knows.
const TIME_UNITS: &[(&[&str], u64)] = &[
    (&["us", "usec", "µs", "μs"], 1),
    (&["ms", "msec"], 1_000),
    (&["s", "sec", "second", "seconds"], 1_000_000),
    (&["m", "min", "minute", "minutes"], 60_000_000),
    (&["h", "hr", "hour", "hours"], 3_600_000_000),
    (&["d", "day", "days"], 86_400_000_000),
    (&["w", "week", "weeks"], 604_800_000_000),
    // systemd's month and year are averages: 30.44 days and 365.25 days.
    (&["M", "month", "months"], 2_629_800_000_000),
    (&["y", "year", "years"], 31_557_600_000_000),
];

/// Like systemd's `parse_sec()`: a time span in microseconds. A bare number
/// is seconds; units (`us`, `ms`, `s`, `min`, `h`, `d`, `w`, `M`, `y` and
/// their long forms) may be combined (`1min 30s`) and fractional (`1.5s`,
/// truncated to whole microseconds); `infinity` is `u64::MAX`.
pub fn parse_time_span_usec(s: &str) -> Result<u64, TimeSpanError> {
    if s == "infinity" {
        return Ok(u64::MAX);
    }
    let mut total: u128 = 0;
    let mut rest = s.trim_start();
    if rest.is_empty() {
        return Err(TimeSpanError::Syntax);
    }
    while !rest.is_empty() {
        let (int, frac, frac_scale, after) = split_number(rest).ok_or(TimeSpanError::Syntax)?;
        let after = after.trim_start();
        let unit_len = after
            .char_indices()
            .find(|&(_, c)| !(c.is_ascii_alphabetic() || c == 'µ' || c == 'μ'))
            .map_or(after.len(), |(i, _)| i);
        let (unit, after) = after.split_at(unit_len);
        let usec = if unit.is_empty() {
            1_000_000
        } else {
            TIME_UNITS
                .iter()
                .find(|(names, _)| names.contains(&unit))
                .map(|&(_, usec)| u128::from(usec))
                .ok_or_else(|| TimeSpanError::Unit(unit.to_string()))?
        };
        total = int
            .checked_mul(usec)
            .and_then(|i| Some(i + frac.checked_mul(usec)? / frac_scale))
            .and_then(|v| total.checked_add(v))
            // u64::MAX itself means infinity: a finite span must stay below it.
            .filter(|&v| v < u128::from(u64::MAX))
            .ok_or(TimeSpanError::TooLarge)?;
        rest = after.trim_start();
    }
    Ok(total as u64)
}

/// Splits a leading `DIGITS[.DIGITS]` off `s`: (integer part, fraction
/// digits as an integer, 10^their count, the rest). Saturates at
/// `u128::MAX`, so absurdly long numbers are "too large".
fn split_number(s: &str) -> Option<(u128, u128, u128, &str)> {
    let int_len = s.bytes().take_while(u8::is_ascii_digit).count();
    if int_len == 0 {
        return None;
    }
    let int = s[..int_len].parse::<u128>().unwrap_or(u128::MAX);
    let rest = &s[int_len..];
    let Some(frac_part) = rest.strip_prefix('.') else {
        return Some((int, 0, 1, rest));
    };
    let frac_len = frac_part.bytes().take_while(u8::is_ascii_digit).count();
    if frac_len == 0 {
        return None;
    }
    // More than 18 fraction digits cannot change a u64 result noticeably.
    let kept = &frac_part[..frac_len.min(18)];
    let frac = kept.parse::<u128>().unwrap_or(u128::MAX);
    Some((
        int,
        frac,
        10u128.pow(kept.len() as u32),
        &frac_part[frac_len..],
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// The two parsers the project had, on one table: the instance
    /// library's float one (`crate::parse_timespan` before) and the config
    /// crate's exact one (now [`parse_time_span_usec`]). `Same` rows: both
    /// accept with the same value, or both reject. The other rows are every
    /// difference found: systemd's units the float one lacked, and its
    /// rounding below a microsecond.
    #[test]
    fn both_parsers_agree_but_where_listed() {
        enum Want {
            Same,
            /// Only the exact parser accepts it (systemd does too).
            OnlyExact(u64),
            /// Both accept; the float one rounded to the nanosecond.
            Finer,
        }
        use Want::*;
        let cases: &[(&str, Want)] = &[
            ("5", Same),
            ("5s", Same),
            ("100ms", Same),
            ("1min", Same),
            ("1min 30s", Same),
            ("1min30s", Same),
            ("1.5s", Same),
            ("2 h", Same),
            ("10us", Same),
            ("10µs", Same),
            ("1d", Same),
            ("1w", Same),
            ("0", Same),
            ("infinity", Same),
            ("5 sec", Same),
            ("3 hours 2 minutes", Same),
            ("1hr", Same),
            ("5m", Same),
            ("5x", Same),
            ("5sx", Same),
            ("s", Same),
            ("-5s", Same),
            ("", Same),
            ("1.", Same),
            (".5s", Same),
            ("1..5s", Same),
            ("5.s", Same),
            ("1e3s", Same),
            ("10 20", Same),
            (" 2s ", Same),
            ("99999999999y", Same),
            ("1M", OnlyExact(2_629_800_000_000)),
            ("1y", OnlyExact(31_557_600_000_000)),
            ("1 months", OnlyExact(2_629_800_000_000)),
            ("10μs", OnlyExact(10)),
            ("1.0000005s", Finer),
        ];
        for (s, want) in cases {
            let float = old_float_parser(s);
            let exact = parse_time_span_usec(s);
            match want {
                Same => match (&float, &exact) {
                    (Some(d), Ok(u)) if *u == u64::MAX => assert_eq!(*d, Duration::MAX, "{s:?}"),
                    (Some(d), Ok(u)) => assert_eq!(*d, Duration::from_micros(*u), "{s:?}"),
                    (None, Err(_)) => {}
                    _ => panic!("{s:?}: {float:?} vs {exact:?}"),
                },
                OnlyExact(u) => {
                    assert_eq!(float, None, "{s:?}");
                    assert_eq!(exact, Ok(*u), "{s:?}");
                }
                Finer => {
                    let (d, u) = (float.unwrap(), exact.unwrap());
                    assert_ne!(d, Duration::from_micros(u), "{s:?}");
                    assert_eq!(d.as_micros(), u128::from(u), "{s:?}");
                }
            }
        }
    }

    /// The instance library's parser as it was, kept only for the table above.
    fn old_float_parser(s: &str) -> Option<Duration> {
        let t = s.trim();
        if t == "infinity" {
            return Some(Duration::MAX);
        }
        if t.is_empty() {
            return None;
        }
        let mut rest = t;
        let mut total = Duration::ZERO;
        while !rest.is_empty() {
            let num_len = rest
                .find(|c: char| !(c.is_ascii_digit() || c == '.'))
                .unwrap_or(rest.len());
            let num = &rest[..num_len];
            if num.is_empty() || num.starts_with('.') || num.ends_with('.') {
                return None;
            }
            let value: f64 = num.parse().ok()?;
            rest = rest[num_len..].trim_start();
            let unit_len = rest
                .find(|c: char| !c.is_alphabetic())
                .unwrap_or(rest.len());
            let unit = &rest[..unit_len];
            rest = rest[unit_len..].trim_start();
            let nanos_per: f64 = match unit {
                "" => 1e9,
                "usec" | "us" | "µs" => 1e3,
                "msec" | "ms" => 1e6,
                "seconds" | "second" | "sec" | "s" => 1e9,
                "minutes" | "minute" | "min" | "m" => 60e9,
                "hours" | "hour" | "hr" | "h" => 3600e9,
                "days" | "day" | "d" => 86400e9,
                "weeks" | "week" | "w" => 7.0 * 86400e9,
                _ => return None,
            };
            let nanos = value * nanos_per;
            if !nanos.is_finite() || nanos >= u64::MAX as f64 {
                return None;
            }
            total = total.checked_add(Duration::from_nanos(nanos.round() as u64))?;
        }
        Some(total)
    }
}
