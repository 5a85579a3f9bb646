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

    /// Where it differs from the float parser the instance library had
    /// before (the table comparing both is in this file's history): the units
    /// systemd knows that it lacked, and truncation to whole microseconds.
    /// The config crate's table (`values::tests::time_spans`) covers the rest.
    #[test]
    fn systemd_units_and_microseconds() {
        let cases: &[(&str, Result<u64, TimeSpanError>)] = &[
            ("1M", Ok(2_629_800_000_000)),
            ("1y", Ok(31_557_600_000_000)),
            ("1 months", Ok(2_629_800_000_000)),
            ("10μs", Ok(10)),
            ("1.0000005s", Ok(1_000_000)),
            (" 2s ", Ok(2_000_000)),
            ("1e3s", Err(TimeSpanError::Unit("e".into()))),
            ("5.s", Err(TimeSpanError::Syntax)),
            ("99999999999y", Err(TimeSpanError::TooLarge)),
        ];
        for (s, want) in cases {
            assert_eq!(&parse_time_span_usec(s), want, "{s:?}");
        }
    }
}
