//! Value validators, one per value syntax, each following the systemd function of the
//! same purpose (named in its doc) so that values copied from real unit files mean the
//! same thing here.
//!
//! They take a non-empty, trimmed value (empty values are resets, handled by the caller)
//! and return a message without the key or value: the caller wraps it into a
//! [`ConfigError`](crate::ConfigError) that shows `Key=value` already.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};

use crate::spec::{BindIpv6Only, Distribute, MAX_DISTRIBUTE};

/// A validator's result: the message says what is wrong with the value.
pub type Result<T> = std::result::Result<T, String>;

/// Like systemd's `parse_boolean()`: `1 yes y true t on` / `0 no n false f off`,
/// case-insensitive.
pub fn parse_bool(s: &str) -> Result<bool> {
    match s.to_ascii_lowercase().as_str() {
        "1" | "yes" | "y" | "true" | "t" | "on" => Ok(true),
        "0" | "no" | "n" | "false" | "f" | "off" => Ok(false),
        _ => Err("not a boolean: use yes/no, true/false, on/off or 1/0".into()),
    }
}

/// A plain unsigned decimal number (systemd's `safe_atou()` minus the leniency about
/// signs and leading whitespace, which only hide mistakes).
pub fn parse_u64(s: &str) -> Result<u64> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err("not a number: use decimal digits only".into());
    }
    s.parse()
        .map_err(|_| format!("too large: at most {}", u64::MAX))
}

/// [`parse_u64`] limited to `max`.
pub fn parse_u64_max(s: &str, max: u64) -> Result<u64> {
    let v = parse_u64(s)?;
    if v > max {
        return Err(format!("too large: at most {max}"));
    }
    Ok(v)
}

/// A `u32` (systemd's `config_parse_unsigned`).
pub fn parse_u32(s: &str) -> Result<u32> {
    // The cast cannot truncate: the value is at most u32::MAX.
    parse_u64_max(s, u32::MAX.into()).map(|v| v as u32)
}

/// Like systemd's `parse_size(s, 1024)`: a number of bytes with an optional `B`, `K`, `M`,
/// `G`, `T`, `P` or `E` suffix (powers of 1024; upper case like systemd), fractions such as
/// `1.5G`, and sums such as `1G 512M`.
pub fn parse_size(s: &str) -> Result<u64> {
    const SUFFIXES: &[(char, u32)] = &[
        ('B', 0),
        ('K', 10),
        ('M', 20),
        ('G', 30),
        ('T', 40),
        ('P', 50),
        ('E', 60),
    ];
    let bad = || {
        "not a size: use bytes with an optional K, M, G or T suffix (base 1024), e.g. 64K"
            .to_string()
    };
    let mut total: u128 = 0;
    let mut rest = s.trim_start();
    if rest.is_empty() {
        return Err(bad());
    }
    while !rest.is_empty() {
        let (number, after) = split_number(rest).ok_or_else(bad)?;
        let after = after.trim_start();
        let (shift, after) = match after.chars().next().and_then(|c| {
            SUFFIXES
                .iter()
                .find(|(s, _)| *s == c)
                .map(|&(_, shift)| shift)
        }) {
            Some(shift) => (shift, &after[1..]),
            None => (0, after),
        };
        let multiplier = 1u128 << shift;
        total = number
            .scale(multiplier)
            .and_then(|v| total.checked_add(v))
            .filter(|&v| v <= u128::from(u64::MAX))
            .ok_or_else(|| "too large".to_string())?;
        rest = after.trim_start();
    }
    // The filter above keeps total within u64.
    Ok(total as u64)
}

/// Like systemd's `parse_sec()`: a time span in microseconds (the instance
/// library's [`distribute_instance::parse_time_span_usec`], the project's one
/// time-span parser). A bare number is seconds; units (`us`, `ms`, `s`, `min`,
/// `h`, `d`, `w`, `M`, `y` and their long forms) may be combined (`1min 30s`)
/// and fractional (`1.5s`); `infinity` is `u64::MAX`.
pub fn parse_time_span(s: &str) -> Result<u64> {
    distribute_instance::parse_time_span_usec(s).map_err(|e| e.to_string())
}

/// A decimal number with an optional fraction, as used by sizes.
struct Decimal {
    int: u128,
    /// Fraction digits as an integer, and 10^(number of digits).
    frac: u128,
    frac_scale: u128,
}

impl Decimal {
    /// `self * multiplier`, truncated to an integer; `None` on overflow.
    fn scale(&self, multiplier: u128) -> Option<u128> {
        let int = self.int.checked_mul(multiplier)?;
        let frac = self.frac.checked_mul(multiplier)? / self.frac_scale;
        int.checked_add(frac)
    }
}

/// Splits a leading `DIGITS[.DIGITS]` off `s`.
fn split_number(s: &str) -> Option<(Decimal, &str)> {
    let int_len = s.bytes().take_while(u8::is_ascii_digit).count();
    if int_len == 0 {
        return None;
    }
    let int = digits_value(&s[..int_len]);
    let rest = &s[int_len..];
    let Some(frac_part) = rest.strip_prefix('.') else {
        return Some((
            Decimal {
                int,
                frac: 0,
                frac_scale: 1,
            },
            rest,
        ));
    };
    let frac_len = frac_part.bytes().take_while(u8::is_ascii_digit).count();
    if frac_len == 0 {
        return None;
    }
    // More than 18 fraction digits cannot change a u64 result noticeably; ignoring them
    // keeps the arithmetic inside u128.
    let kept = &frac_part[..frac_len.min(18)];
    let frac = digits_value(kept);
    let frac_scale = 10u128.pow(kept.len() as u32);
    Some((
        Decimal {
            int,
            frac,
            frac_scale,
        },
        &frac_part[frac_len..],
    ))
}

/// Value of an all-digits string. Saturates at `u128::MAX`, far above every caller's
/// limit, so that absurdly long numbers are reported as "too large".
fn digits_value(digits: &str) -> u128 {
    digits.parse::<u128>().unwrap_or(u128::MAX)
}

/// `ListenStream=` / `ListenDatagram=` (systemd's `socket_address_parse()`, restricted to
/// what SO_REUSEPORT can distribute): `PORT` (→ `[::]:PORT`), `IPV4:PORT`, `[IPV6]:PORT`.
pub fn parse_listen(s: &str) -> Result<SocketAddr> {
    if s.starts_with('/') || s.starts_with('@') {
        return Err(
            "AF_UNIX sockets cannot be distributed: the kernel spreads connections \
                    over SO_REUSEPORT sockets only for TCP and UDP; use PORT, ADDR:PORT or \
                    [ADDR]:PORT"
                .into(),
        );
    }
    if s.starts_with("vsock:") {
        return Err(
            "AF_VSOCK sockets cannot be distributed: the kernel spreads connections \
                    over SO_REUSEPORT sockets only for TCP and UDP; use PORT, ADDR:PORT or \
                    [ADDR]:PORT"
                .into(),
        );
    }
    if s.bytes().all(|b| b.is_ascii_digit()) {
        let port = parse_port(s)?;
        return Ok(SocketAddr::V6(SocketAddrV6::new(
            Ipv6Addr::UNSPECIFIED,
            port,
            0,
            0,
        )));
    }
    if let Some(rest) = s.strip_prefix('[') {
        let Some((inside, port)) = rest.split_once("]:") else {
            return Err("expected [IPV6]:PORT, e.g. [::1]:8080".into());
        };
        let (addr, scope) = match inside.split_once('%') {
            Some((addr, scope)) => {
                let scope = scope.parse::<u32>().map_err(|_| {
                    format!(
                        "IPv6 scope \"%{scope}\" must be a numeric interface index; to bind \
                         to an interface by name use BindToDevice="
                    )
                })?;
                (addr, scope)
            }
            None => (inside, 0),
        };
        let addr: Ipv6Addr = addr
            .parse()
            .map_err(|_| format!("\"{addr}\" is not an IPv6 address"))?;
        let port = parse_port(port)?;
        return Ok(SocketAddr::V6(SocketAddrV6::new(addr, port, 0, scope)));
    }
    match s.parse::<std::net::IpAddr>() {
        Ok(std::net::IpAddr::V4(_)) => {
            return Err("missing port: use ADDR:PORT, e.g. 127.0.0.1:8080".into())
        }
        Ok(std::net::IpAddr::V6(_)) => {
            return Err("IPv6 addresses must be in brackets, followed by the port: \
                        [ADDR]:PORT, e.g. [::1]:8080"
                .into())
        }
        Err(_) => {}
    }
    match s.rsplit_once(':') {
        Some((host, _)) if host.contains(':') => {
            Err("IPv6 addresses must be in brackets: [ADDR]:PORT, e.g. [::1]:8080".into())
        }
        Some((host, port)) => {
            let addr: Ipv4Addr = host.parse().map_err(|_| {
                format!(
                    "\"{host}\" is not an IPv4 address (host names are not resolved); use \
                     e.g. 127.0.0.1:8080 or [::1]:8080"
                )
            })?;
            let port = parse_port(port)?;
            Ok(SocketAddr::V4(SocketAddrV4::new(addr, port)))
        }
        None => Err(
            "not a listen address: use PORT, ADDR:PORT or [ADDR]:PORT, e.g. 8080, \
                     127.0.0.1:8080 or [::1]:8080"
                .into(),
        ),
    }
}

/// A port number, 1..=65535 (systemd refuses port 0 too: it would bind a random port).
pub fn parse_port(s: &str) -> Result<u16> {
    let bad = || format!("port \"{s}\" must be a number between 1 and 65535");
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    match s.parse::<u16>() {
        Ok(0) | Err(_) => Err(bad()),
        Ok(port) => Ok(port),
    }
}

/// A character for a message: `"x"` if visible, else its code point (`U+0009`), so that
/// tabs, spaces and control characters are not invisible in the error.
pub fn describe_char(c: char) -> String {
    if c == ' ' {
        "a space".to_string()
    } else if c.is_control() || c.is_whitespace() {
        format!("U+{:04X}", c as u32)
    } else {
        format!("\"{c}\"")
    }
}

/// The range of N, for `Distribute=` and for a run-time change
/// (`SetDistribute()`): `Ok(n)` inside it, otherwise what is wrong
/// ("must be at least 1", "must be at most [`MAX_DISTRIBUTE`]").
pub fn check_distribute(n: u32) -> Result<u32> {
    match n {
        0 => Err("must be at least 1".into()),
        n if n > MAX_DISTRIBUTE => Err(format!("must be at most {MAX_DISTRIBUTE}")),
        n => Ok(n),
    }
}

/// `Distribute=`: a count in the range of [`check_distribute`], or `cpus`.
pub fn parse_distribute(s: &str) -> Result<Distribute> {
    if s == "cpus" {
        return Ok(Distribute::Cpus);
    }
    let valid = format!("valid: 1 to {MAX_DISTRIBUTE}, or \"cpus\"");
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("not a number ({valid})"));
    }
    // Beyond u32: too large as well.
    let n = s.parse::<u32>().unwrap_or(u32::MAX);
    check_distribute(n)
        .map(Distribute::Count)
        .map_err(|e| format!("{e} ({valid})"))
}

/// `BindIPv6Only=`: `default`, `both`, `ipv6-only`, or a boolean (yes = `ipv6-only`,
/// no = `both`), like systemd's `config_parse_socket_bind()`.
pub fn parse_bind_ipv6_only(s: &str) -> Result<BindIpv6Only> {
    match s {
        "default" => Ok(BindIpv6Only::Default),
        "both" => Ok(BindIpv6Only::Both),
        "ipv6-only" => Ok(BindIpv6Only::Ipv6Only),
        _ => match parse_bool(s) {
            Ok(true) => Ok(BindIpv6Only::Ipv6Only),
            Ok(false) => Ok(BindIpv6Only::Both),
            Err(_) => Err("must be default, both, ipv6-only, or a boolean".into()),
        },
    }
}

/// Characters systemd allows in a unit name prefix (`unit_prefix_is_valid()`).
fn is_unit_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, ':' | '_' | '.' | '-' | '\\')
}

/// Longest prefix that still leaves room for `@1023.service` in systemd's 255-byte unit
/// names.
pub const MAX_PREFIX_LEN: usize = 255 - "@1023.service".len();

/// Checks a unit-name prefix: the config name or the `Service=` template name.
pub fn check_unit_prefix(s: &str) -> Result<()> {
    if s.is_empty() {
        return Err("must not be empty".into());
    }
    if let Some(c) = s.chars().find(|&c| !is_unit_name_char(c)) {
        return Err(format!(
            "contains {}; unit names may contain only ASCII letters, digits, \":\", \"_\", \
             \".\", \"-\" and \"\\\"",
            describe_char(c)
        ));
    }
    if s.len() > MAX_PREFIX_LEN {
        return Err(format!(
            "is too long: at most {MAX_PREFIX_LEN} characters, so that instance names fit \
             systemd's limit of 255"
        ));
    }
    Ok(())
}

/// The instance string of `Service=web@.service` (and of `Service=web`): the index.
pub const DEFAULT_INSTANCE: &str = "%i";

/// `Service=`: the template and how an index forms its instance string.
///
/// `web` and `web@.service` give (`web`, `%i`): instances `web@0.service`, …;
/// `app@shop-%i.service` gives (`app`, `shop-%i`): `app@shop-0.service`, …, for
/// templates whose `%i` already means something (an app name, a data directory).
pub fn parse_service(s: &str) -> Result<(String, String)> {
    let (prefix, instance) = match s.strip_suffix(".service") {
        Some(stem) => match stem.split_once('@') {
            Some((prefix, "")) => (prefix, DEFAULT_INSTANCE),
            Some((prefix, instance)) => (prefix, check_instance_pattern(prefix, instance)?),
            None => {
                return Err(format!(
                    "is not a template: instances are started as {stem}@0.service, \
                     {stem}@1.service, …; write \"{stem}@.service\" or just \"{stem}\""
                ))
            }
        },
        None if s.contains('@') => {
            return Err(
                "use the template name, e.g. \"web@.service\", or just the prefix \
                        \"web\""
                    .into(),
            )
        }
        None => (s, DEFAULT_INSTANCE),
    };
    check_unit_prefix(prefix)?;
    Ok((prefix.to_string(), instance.to_string()))
}

/// The instance part of `Service=PREFIX@INSTANCE.service`: exactly one `%i`, which
/// becomes the index, in otherwise valid unit-name characters.
fn check_instance_pattern<'a>(prefix: &str, instance: &'a str) -> Result<&'a str> {
    match instance.matches("%i").count() {
        1 => {}
        0 => {
            return Err(format!(
                "names an instance; give the template, \"{prefix}@.service\", or say where \
                 the instance index goes with %i, e.g. \"{prefix}@{instance}-%i.service\""
            ))
        }
        _ => return Err("has %i more than once in the instance name; use it once".into()),
    }
    let rest = instance.replacen("%i", "", 1);
    if let Some(c) = rest.chars().find(|&c| !is_unit_name_char(c) || c == '@') {
        return Err(format!(
            "the instance name contains {}; besides %i (the index) it may contain only ASCII \
             letters, digits, \":\", \"_\", \".\", \"-\" and \"\\\"",
            describe_char(c)
        ));
    }
    if prefix.len() + rest.len() > MAX_PREFIX_LEN {
        return Err(format!(
            "is too long: template and instance name together may have at most \
             {MAX_PREFIX_LEN} characters besides %i, so that instance names fit systemd's \
             limit of 255"
        ));
    }
    Ok(instance)
}

/// `FileDescriptorName=`, like systemd's `fdname_is_valid()`: 1 to 255 printable ASCII
/// characters except `:`, which separates names in `$LISTEN_FDNAMES`.
pub fn check_fd_name(s: &str) -> Result<()> {
    if s.is_empty() {
        return Err("must not be empty".into());
    }
    if let Some(c) = s.chars().find(|&c| c == ':' || !(' '..='~').contains(&c)) {
        return Err(format!(
            "contains {}: names must be printable ASCII without \":\" (it separates names \
             in $LISTEN_FDNAMES)",
            describe_char(c)
        ));
    }
    if s.len() > 255 {
        return Err("is too long: at most 255 characters".into());
    }
    Ok(())
}

/// `BindToDevice=`: a network interface name, like systemd's `ifname_valid()`.
pub fn check_ifname(s: &str) -> Result<()> {
    if s.len() > 15 {
        return Err("is too long: interface names have at most 15 characters".into());
    }
    if s.is_empty() || s == "." || s == ".." || s == "all" || s == "default" {
        return Err("is not a valid interface name".into());
    }
    if let Some(c) = s
        .chars()
        .find(|&c| !c.is_ascii_graphic() || c == ':' || c == '/')
    {
        return Err(format!(
            "contains {}, which interface names cannot contain",
            describe_char(c)
        ));
    }
    if s.bytes().all(|b| b.is_ascii_digit()) {
        return Err("is not a valid interface name: it must not be all digits".into());
    }
    Ok(())
}

/// Upper bound of CPU indices: systemd's `CPU_SET_MAX`-style limit of 8192 CPUs.
pub const MAX_CPUS: u32 = 8192;

/// `CPUAffinity=` (systemd's `parse_cpu_set()`): CPU indices and ranges separated by
/// whitespace or commas, e.g. `0-3`, `0 2 4`, `1,3`. Returns the sorted, de-duplicated set.
pub fn parse_cpu_set(s: &str) -> Result<Vec<u32>> {
    let mut cpus = Vec::new();
    let cpu = |word: &str| -> Result<u32> {
        let n = parse_u64(word).map_err(|_| {
            format!("\"{word}\" is not a CPU index: use e.g. 0-3, \"0 2 4\" or 1,3")
        })?;
        if n >= u64::from(MAX_CPUS) {
            return Err(format!("CPU {n} is too large: at most {}", MAX_CPUS - 1));
        }
        // Checked just above.
        Ok(n as u32)
    };
    for word in s.split([' ', '\t', ',']).filter(|w| !w.is_empty()) {
        match word.split_once('-') {
            Some((lo, hi)) => {
                let (lo, hi) = (cpu(lo)?, cpu(hi)?);
                if lo > hi {
                    return Err(format!("range \"{word}\" is reversed"));
                }
                cpus.extend(lo..=hi);
            }
            None => cpus.push(cpu(word)?),
        }
    }
    if cpus.is_empty() {
        return Err("no CPUs given: use e.g. 0-3, \"0 2 4\" or 1,3".into());
    }
    cpus.sort_unstable();
    cpus.dedup();
    Ok(cpus)
}

/// `Nice=`: -20..=19.
pub fn parse_nice(s: &str) -> Result<i32> {
    let bad = || "must be a number between -20 and 19".to_string();
    let digits = s.strip_prefix(['-', '+']).unwrap_or(s);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    match s.parse::<i32>() {
        Ok(n) if (-20..=19).contains(&n) => Ok(n),
        _ => Err(bad()),
    }
}

/// An rlimit value, like systemd's `rlimit_parse_u64()`: a number or `infinity`
/// (`u64::MAX`, i.e. RLIM_INFINITY).
pub fn parse_rlimit(s: &str) -> Result<u64> {
    if s == "infinity" {
        return Ok(u64::MAX);
    }
    parse_u64(s).map_err(|_| "not a number or \"infinity\"".into())
}

/// `LimitNOFILE=`: `N` (soft = hard) or `SOFT:HARD`, each a number or `infinity`.
/// Returns `(soft, hard)`.
pub fn parse_limit_nofile(s: &str) -> Result<(u64, u64)> {
    let bad = |_| "must be a number, \"infinity\", or SOFT:HARD".to_string();
    match s.split_once(':') {
        None => {
            let v = parse_rlimit(s).map_err(bad)?;
            Ok((v, v))
        }
        Some((soft, hard)) => {
            let soft = parse_rlimit(soft).map_err(bad)?;
            let hard = parse_rlimit(hard).map_err(bad)?;
            if soft > hard {
                return Err("the soft limit is above the hard limit".into());
            }
            Ok((soft, hard))
        }
    }
}

/// `MemoryMax=`: a size (see [`parse_size`]) or `infinity`.
pub fn parse_memory_limit(s: &str) -> Result<u64> {
    if s == "infinity" {
        return Ok(u64::MAX);
    }
    if s.ends_with('%') {
        return Err("percentages are not supported here: use a size like 512M, or infinity".into());
    }
    match parse_size(s)? {
        0 => Err("must be at least 1 byte (use infinity for no limit)".into()),
        v => Ok(v),
    }
}

/// A value from a fixed list, for string-typed properties (`KillMode=` etc.).
pub fn parse_choice(s: &str, choices: &[&str]) -> Result<String> {
    if choices.contains(&s) {
        Ok(s.to_string())
    } else {
        Err(format!("must be one of: {}", choices.join(", ")))
    }
}

/// A value from `choices`, or a boolean normalised to `yes`/`no` (for `ProtectSystem=` and
/// `ProtectHome=`, which systemd parses the same way).
pub fn parse_bool_or_choice(s: &str, choices: &[&str]) -> Result<String> {
    if choices.contains(&s) {
        return Ok(s.to_string());
    }
    match parse_bool(s) {
        Ok(b) => Ok(if b { "yes" } else { "no" }.to_string()),
        Err(_) => Err(format!(
            "must be a boolean or one of: {}",
            choices.join(", ")
        )),
    }
}

/// Checks an absolute path like systemd's `path_is_absolute()` + `path_is_normalized()`:
/// no `.` or `..` components, no `//`.
pub fn check_absolute_path(s: &str) -> Result<()> {
    if !s.starts_with('/') {
        return Err(format!("\"{s}\" is not an absolute path"));
    }
    if s.len() >= 4096 {
        return Err("path is too long".into());
    }
    if s.contains("//") {
        return Err(format!("\"{s}\" is not normalized: it contains \"//\""));
    }
    if s.split('/').any(|c| c == "." || c == "..") {
        return Err(format!(
            "\"{s}\" is not normalized: it contains \".\" or \"..\""
        ));
    }
    if let Some(c) = s.chars().find(|c| c.is_control()) {
        return Err(format!("path contains {}", describe_char(c)));
    }
    Ok(())
}

/// `User=` / `Group=`: a user or group name or a numeric ID, like systemd's relaxed
/// `valid_user_group_name()`.
pub fn check_user_group(s: &str) -> Result<()> {
    if s.bytes().all(|b| b.is_ascii_digit()) {
        return match s.parse::<u32>() {
            // systemd refuses these IDs: (uid_t) -1 and the 16-bit -1.
            Ok(65535) | Ok(u32::MAX) | Err(_) => Err("is not a valid user or group ID".into()),
            Ok(_) => Ok(()),
        };
    }
    if s.is_empty() || s == "." || s == ".." || s.starts_with(['-', '+', '~']) {
        return Err("is not a valid user or group name".into());
    }
    if let Some(c) = s
        .chars()
        .find(|&c| !c.is_ascii_graphic() || c == ':' || c == '/' || c == ',')
    {
        return Err(format!(
            "contains {}, which user and group names cannot contain",
            describe_char(c)
        ));
    }
    if s.len() > 256 {
        return Err("is too long".into());
    }
    Ok(())
}

/// An access mode in octal (systemd's `parse_mode()`): at most `07777`, e.g. `0660`.
pub fn parse_mode(s: &str) -> Result<u32> {
    let bad = || "not an access mode: use octal digits, e.g. 0660".to_string();
    if s.is_empty() || !s.bytes().all(|b| (b'0'..=b'7').contains(&b)) {
        return Err(bad());
    }
    match u32::from_str_radix(s, 8) {
        Ok(m) if m <= 0o7777 => Ok(m),
        _ => Err("too large: an access mode is at most 07777".into()),
    }
}

/// `IPTOS=` (systemd's `ip_tos_from_string()`): `low-delay`, `throughput`,
/// `reliability`, `low-cost`, or a number 0..=255.
pub fn parse_ip_tos(s: &str) -> Result<u8> {
    Ok(match s {
        "low-delay" => 0x10,
        "throughput" => 0x08,
        "reliability" => 0x04,
        "low-cost" => 0x02,
        _ => parse_u64_max(s, 255).map_err(|_| {
            "must be a number 0..255 or one of low-delay, throughput, reliability, low-cost"
                .to_string()
        })? as u8,
    })
}

/// `IPTTL=`: 1..=255 (what IP_TTL and IPV6_UNICAST_HOPS accept besides "default").
pub fn parse_ip_ttl(s: &str) -> Result<u8> {
    match parse_u64_max(s, 255) {
        Ok(v) if v >= 1 => Ok(v as u8),
        _ => Err("must be a number between 1 and 255".into()),
    }
}

/// A non-negative C `int` in decimal, or in hex with `0x` (firewall marks are often
/// written that way), for `Mark=` and `Priority=` (systemd's `config_parse_int`).
pub fn parse_nonneg_int(s: &str) -> Result<u32> {
    let v = match s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        Some(hex) if !hex.is_empty() && hex.bytes().all(|b| b.is_ascii_hexdigit()) => {
            u64::from_str_radix(hex, 16).map_err(|_| "too large".to_string())?
        }
        Some(_) => return Err("not a number: use decimal digits, or hex after 0x".into()),
        None => parse_u64(s).map_err(|_| "not a number: use decimal digits, or hex after 0x")?,
    };
    if v > i32::MAX as u64 {
        return Err(format!(
            "too large: at most {} (the kernel takes an int)",
            i32::MAX
        ));
    }
    Ok(v as u32)
}

/// `Timestamping=`: `off`, `us`/`usec`/`µs`/`μs`, `ns`/`nsec`.
pub fn parse_timestamping(s: &str) -> Result<crate::spec::Timestamping> {
    use crate::spec::Timestamping;
    match s {
        "off" => Ok(Timestamping::Off),
        "us" | "usec" | "µs" | "μs" => Ok(Timestamping::Us),
        "ns" | "nsec" => Ok(Timestamping::Ns),
        _ => Err("must be off, us (usec) or ns (nsec)".into()),
    }
}

/// `TCPCongestion=`: an algorithm name as the kernel knows them (at most 15
/// characters, no spaces); whether this kernel has it is found out at bind time.
pub fn check_tcp_congestion(s: &str) -> Result<()> {
    if s.len() > 15 {
        return Err("is too long: congestion control names have at most 15 characters".into());
    }
    if let Some(c) = s.chars().find(|c| !c.is_ascii_graphic()) {
        return Err(format!(
            "contains {}: use a name such as cubic, reno or bbr",
            describe_char(c)
        ));
    }
    Ok(())
}

/// `Documentation=` URIs, like systemd's `documentation_url_is_valid()`: `http:`,
/// `https:`, `file:`, `info:` or `man:`.
pub fn check_documentation_uri(s: &str) -> Result<()> {
    const SCHEMES: &[&str] = &["http://", "https://", "file:/", "info:", "man:"];
    if !SCHEMES
        .iter()
        .any(|p| s.starts_with(p) && s.len() > p.len())
    {
        return Err(format!(
            "\"{s}\" is not a documentation URI: use http://, https://, file:/, info: or man:"
        ));
    }
    if let Some(c) = s.chars().find(|c| !c.is_ascii_graphic()) {
        return Err(format!("\"{s}\" contains {}", describe_char(c)));
    }
    Ok(())
}

/// Longest AF_UNIX path: `sun_path` holds 108 bytes including the NUL.
pub const MAX_UNIX_PATH: usize = 107;

/// An AF_UNIX address of a companion listener: an absolute, normalized path, or
/// `@name` in the abstract namespace; at most [`MAX_UNIX_PATH`] bytes.
pub fn check_unix_path(s: &str) -> Result<()> {
    if let Some(name) = s.strip_prefix('@') {
        if name.is_empty() {
            return Err("empty abstract socket name: write @NAME".into());
        }
    } else {
        check_absolute_path(s)?;
        if s.ends_with('/') {
            return Err(format!("\"{s}\" is a directory, not a socket path"));
        }
    }
    if s.len() > MAX_UNIX_PATH {
        return Err(format!(
            "is too long: AF_UNIX socket paths have at most {MAX_UNIX_PATH} bytes"
        ));
    }
    Ok(())
}

/// An environment variable name: letters, digits and `_`, not starting with a digit
/// (systemd's `env_name_is_valid()`).
pub fn check_env_name(s: &str) -> Result<()> {
    let valid = !s.is_empty()
        && !s.starts_with(|c: char| c.is_ascii_digit())
        && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    if valid {
        Ok(())
    } else {
        Err(format!(
            "\"{s}\" is not a valid variable name: use letters, digits and \"_\", not \
             starting with a digit"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs `f` on every input and compares with the expected result; the error case
    /// compares the message.
    fn table<T: PartialEq + std::fmt::Debug>(
        f: impl Fn(&str) -> Result<T>,
        cases: &[(&str, std::result::Result<T, &str>)],
    ) {
        for (input, want) in cases {
            let got = f(input);
            match want {
                Ok(v) => assert_eq!(got.as_ref(), Ok(v), "input {input:?}"),
                Err(msg) => match got {
                    Err(e) => assert!(e.contains(msg), "input {input:?}: {e:?} lacks {msg:?}"),
                    Ok(v) => panic!("input {input:?}: expected an error, got {v:?}"),
                },
            }
        }
    }

    #[test]
    fn bools() {
        table(
            parse_bool,
            &[
                ("yes", Ok(true)),
                ("YES", Ok(true)),
                ("true", Ok(true)),
                ("on", Ok(true)),
                ("1", Ok(true)),
                ("y", Ok(true)),
                ("t", Ok(true)),
                ("no", Ok(false)),
                ("false", Ok(false)),
                ("off", Ok(false)),
                ("0", Ok(false)),
                ("n", Ok(false)),
                ("Off", Ok(false)),
                ("2", Err("not a boolean")),
                ("yess", Err("not a boolean")),
                (" yes", Err("not a boolean")),
            ],
        );
    }

    #[test]
    fn numbers() {
        table(
            parse_u32,
            &[
                ("0", Ok(0)),
                ("4096", Ok(4096)),
                ("4294967295", Ok(u32::MAX)),
                ("4294967296", Err("too large")),
                ("99999999999999999999999", Err("too large")),
                ("-1", Err("not a number")),
                ("+1", Err("not a number")),
                ("1k", Err("not a number")),
                ("", Err("not a number")),
            ],
        );
    }

    #[test]
    fn sizes() {
        table(
            parse_size,
            &[
                ("0", Ok(0)),
                ("123", Ok(123)),
                ("123B", Ok(123)),
                ("1K", Ok(1024)),
                ("64K", Ok(65536)),
                ("1M", Ok(1 << 20)),
                ("2G", Ok(2 << 30)),
                ("1T", Ok(1 << 40)),
                ("1.5K", Ok(1536)),
                ("1.5 G", Ok(3 << 29)),
                ("1G 512M", Ok((1 << 30) + (512 << 20))),
                ("15E", Ok(15 << 60)),
                ("16E", Err("too large")),
                ("18446744073709551615", Ok(u64::MAX)),
                ("18446744073709551616", Err("too large")),
                (
                    "1000000000000000000000000000000000000000000",
                    Err("too large"),
                ),
                ("1k", Err("not a size")),
                ("K", Err("not a size")),
                ("-1", Err("not a size")),
                ("1.K", Err("not a size")),
                ("1 2", Ok(3)),
                ("", Err("not a size")),
            ],
        );
    }

    #[test]
    fn time_spans() {
        table(
            parse_time_span,
            &[
                ("5", Ok(5_000_000)),
                ("5s", Ok(5_000_000)),
                ("100ms", Ok(100_000)),
                ("1min", Ok(60_000_000)),
                ("1min 30s", Ok(90_000_000)),
                ("1min30s", Ok(90_000_000)),
                ("1.5s", Ok(1_500_000)),
                ("2 h", Ok(7_200_000_000)),
                ("10us", Ok(10)),
                ("10µs", Ok(10)),
                ("1d", Ok(86_400_000_000)),
                ("1w", Ok(604_800_000_000)),
                ("1M", Ok(2_629_800_000_000)),
                ("1y", Ok(31_557_600_000_000)),
                ("0", Ok(0)),
                ("infinity", Ok(u64::MAX)),
                ("5 sec", Ok(5_000_000)),
                ("5x", Err("unknown time unit \"x\"")),
                ("5sx", Err("unknown time unit \"sx\"")),
                ("s", Err("not a time span")),
                ("-5s", Err("not a time span")),
                ("99999999999y", Err("too large")),
                ("", Err("not a time span")),
            ],
        );
    }

    #[test]
    fn listen() {
        let ok = |s: &str| Ok(s.parse::<SocketAddr>().unwrap());
        table(
            parse_listen,
            &[
                ("80", ok("[::]:80")),
                ("65535", ok("[::]:65535")),
                ("127.0.0.1:8080", ok("127.0.0.1:8080")),
                ("0.0.0.0:53", ok("0.0.0.0:53")),
                ("[::1]:8080", ok("[::1]:8080")),
                ("[::]:80", ok("[::]:80")),
                ("[fe80::1%2]:80", ok("[fe80::1%2]:80")),
                ("0", Err("between 1 and 65535")),
                ("65536", Err("between 1 and 65535")),
                ("127.0.0.1:0", Err("between 1 and 65535")),
                ("127.0.0.1:", Err("between 1 and 65535")),
                ("127.0.0.1:http", Err("between 1 and 65535")),
                (
                    "/run/web.sock",
                    Err("AF_UNIX sockets cannot be distributed"),
                ),
                ("@abstract", Err("AF_UNIX sockets cannot be distributed")),
                (
                    "vsock:2:1234",
                    Err("AF_VSOCK sockets cannot be distributed"),
                ),
                ("::1:80", Err("must be in brackets")),
                ("[::1]80", Err("expected [IPV6]:PORT")),
                ("[::1]", Err("expected [IPV6]:PORT")),
                ("[1.2.3.4]:80", Err("not an IPv6 address")),
                ("[fe80::1%eth0]:80", Err("numeric interface index")),
                ("localhost:80", Err("host names are not resolved")),
                ("256.0.0.1:80", Err("not an IPv4 address")),
                ("127.0.0.1", Err("missing port")),
                ("::1", Err("must be in brackets")),
                ("fe80::1:80", Err("must be in brackets")),
                ("1::2::3:80", Err("must be in brackets")),
                ("eighty", Err("not a listen address")),
            ],
        );
    }

    #[test]
    fn distribute() {
        table(
            parse_distribute,
            &[
                ("1", Ok(Distribute::Count(1))),
                ("4", Ok(Distribute::Count(4))),
                ("1024", Ok(Distribute::Count(1024))),
                ("cpus", Ok(Distribute::Cpus)),
                (
                    "0",
                    Err("must be at least 1 (valid: 1 to 1024, or \"cpus\")"),
                ),
                ("1025", Err("must be at most 1024")),
                ("99999999999", Err("must be at most 1024")),
                ("-1", Err("not a number")),
                ("CPUs", Err("not a number")),
                ("4 ", Err("not a number")),
            ],
        );
    }

    #[test]
    fn distribute_range() {
        table(
            |s| check_distribute(s.parse().unwrap()),
            &[
                ("0", Err("must be at least 1")),
                ("1", Ok(1)),
                ("1024", Ok(1024)),
                ("1025", Err("must be at most 1024")),
                ("4294967295", Err("must be at most 1024")),
            ],
        );
    }

    #[test]
    fn bind_ipv6_only() {
        table(
            parse_bind_ipv6_only,
            &[
                ("default", Ok(BindIpv6Only::Default)),
                ("both", Ok(BindIpv6Only::Both)),
                ("ipv6-only", Ok(BindIpv6Only::Ipv6Only)),
                ("yes", Ok(BindIpv6Only::Ipv6Only)),
                ("no", Ok(BindIpv6Only::Both)),
                ("ipv4", Err("must be default, both, ipv6-only")),
            ],
        );
    }

    #[test]
    fn service() {
        table(
            parse_service,
            &[
                ("web", Ok(("web".to_string(), "%i".to_string()))),
                ("web@.service", Ok(("web".to_string(), "%i".to_string()))),
                (
                    "my-app.v2@.service",
                    Ok(("my-app.v2".to_string(), "%i".to_string())),
                ),
                (
                    "app@shop-%i.service",
                    Ok(("app".to_string(), "shop-%i".to_string())),
                ),
                ("app@%i.service", Ok(("app".to_string(), "%i".to_string()))),
                ("app@%i-%i.service", Err("more than once")),
                ("app@a b%i.service", Err("the instance name contains")),
                (
                    "a:b_c\\x2d",
                    Ok(("a:b_c\\x2d".to_string(), "%i".to_string())),
                ),
                ("web.service", Err("is not a template")),
                ("web@3.service", Err("names an instance")),
                ("web@shop.service", Err("say where the instance index goes")),
                ("web@", Err("use the template name")),
                ("@.service", Err("must not be empty")),
                ("web app", Err("contains a space")),
                ("wéb", Err("contains \"é\"")),
            ],
        );
        assert!(parse_service(&"a".repeat(MAX_PREFIX_LEN)).is_ok());
        assert!(parse_service(&"a".repeat(MAX_PREFIX_LEN + 1))
            .unwrap_err()
            .contains("too long"));
    }

    #[test]
    fn fd_names() {
        table(
            check_fd_name,
            &[
                ("web", Ok(())),
                ("web http", Ok(())),
                ("a~!", Ok(())),
                ("a:b", Err("contains \":\"")),
                ("a\tb", Err("contains U+0009")),
                ("é", Err("contains \"é\"")),
            ],
        );
        assert!(check_fd_name(&"a".repeat(255)).is_ok());
        assert!(check_fd_name(&"a".repeat(256)).is_err());
    }

    #[test]
    fn ifnames() {
        table(
            check_ifname,
            &[
                ("eth0", Ok(())),
                ("enp0s31f6", Ok(())),
                ("lo", Ok(())),
                ("0123456789abcde", Ok(())),
                ("0123456789abcdef", Err("too long")),
                ("eth 0", Err("contains a space")),
                ("a/b", Err("contains \"/\"")),
                ("a:b", Err("contains \":\"")),
                ("..", Err("not a valid interface name")),
                ("all", Err("not a valid interface name")),
                ("123", Err("all digits")),
            ],
        );
    }

    #[test]
    fn cpu_sets() {
        table(
            parse_cpu_set,
            &[
                ("0", Ok(vec![0])),
                ("0-3", Ok(vec![0, 1, 2, 3])),
                ("0 2 4", Ok(vec![0, 2, 4])),
                ("1,3", Ok(vec![1, 3])),
                ("3, 1 1-2", Ok(vec![1, 2, 3])),
                ("8191", Ok(vec![8191])),
                ("8192", Err("too large")),
                ("3-1", Err("reversed")),
                ("1-", Err("not a CPU index")),
                ("-1", Err("not a CPU index")),
                ("a", Err("not a CPU index")),
                (",", Err("no CPUs given")),
                ("%i", Err("not a CPU index")),
            ],
        );
    }

    #[test]
    fn nice() {
        table(
            parse_nice,
            &[
                ("0", Ok(0)),
                ("-20", Ok(-20)),
                ("19", Ok(19)),
                ("+5", Ok(5)),
                ("20", Err("between -20 and 19")),
                ("-21", Err("between -20 and 19")),
                ("--1", Err("between -20 and 19")),
                ("", Err("between -20 and 19")),
                ("99999999999999", Err("between -20 and 19")),
            ],
        );
    }

    #[test]
    fn limits() {
        table(
            parse_limit_nofile,
            &[
                ("1024", Ok((1024, 1024))),
                ("infinity", Ok((u64::MAX, u64::MAX))),
                ("1024:4096", Ok((1024, 4096))),
                ("1024:infinity", Ok((1024, u64::MAX))),
                ("4096:1024", Err("soft limit is above")),
                ("1K", Err("must be a number")),
                (":", Err("must be a number")),
            ],
        );
        table(
            parse_memory_limit,
            &[
                ("512M", Ok(512 << 20)),
                ("1G", Ok(1 << 30)),
                ("infinity", Ok(u64::MAX)),
                ("0", Err("at least 1 byte")),
                ("50%", Err("percentages are not supported")),
                ("lots", Err("not a size")),
            ],
        );
    }

    #[test]
    fn choices() {
        let protect_system = |s: &str| parse_bool_or_choice(s, &["full", "strict"]);
        table(
            protect_system,
            &[
                ("strict", Ok("strict".to_string())),
                ("full", Ok("full".to_string())),
                ("true", Ok("yes".to_string())),
                ("on", Ok("yes".to_string())),
                ("0", Ok("no".to_string())),
                ("Strict", Err("must be a boolean or one of: full, strict")),
            ],
        );
        let kill_mode = |s: &str| parse_choice(s, &["control-group", "mixed"]);
        table(
            kill_mode,
            &[
                ("mixed", Ok("mixed".to_string())),
                ("yes", Err("must be one of: control-group, mixed")),
            ],
        );
    }

    #[test]
    fn paths() {
        table(
            check_absolute_path,
            &[
                ("/", Ok(())),
                ("/srv/web", Ok(())),
                ("/srv/web/", Ok(())),
                ("srv/web", Err("not an absolute path")),
                ("~/web", Err("not an absolute path")),
                ("/srv/../etc", Err("not normalized")),
                ("/srv/./web", Err("not normalized")),
                ("/srv//web", Err("not normalized")),
            ],
        );
    }

    #[test]
    fn users() {
        table(
            check_user_group,
            &[
                ("www-data", Ok(())),
                ("_web", Ok(())),
                ("web.user", Ok(())),
                ("1000", Ok(())),
                ("0", Ok(())),
                ("65535", Err("not a valid user or group ID")),
                ("4294967295", Err("not a valid user or group ID")),
                ("99999999999", Err("not a valid user or group ID")),
                ("-web", Err("not a valid user or group name")),
                ("web user", Err("contains a space")),
                ("a:b", Err("contains \":\"")),
                ("", Err("not a valid")),
            ],
        );
    }

    #[test]
    fn modes_and_ip_values() {
        table(
            parse_mode,
            &[
                ("0660", Ok(0o660)),
                ("660", Ok(0o660)),
                ("0", Ok(0)),
                ("7777", Ok(0o7777)),
                ("17777", Err("at most 07777")),
                ("0668", Err("octal digits")),
                ("rw", Err("octal digits")),
            ],
        );
        table(
            parse_ip_tos,
            &[
                ("low-delay", Ok(0x10)),
                ("throughput", Ok(0x08)),
                ("reliability", Ok(0x04)),
                ("low-cost", Ok(0x02)),
                ("184", Ok(184)),
                ("256", Err("0..255")),
                ("fast", Err("0..255")),
            ],
        );
        table(
            parse_ip_ttl,
            &[
                ("64", Ok(64)),
                ("255", Ok(255)),
                ("0", Err("1 and 255")),
                ("256", Err("1 and 255")),
            ],
        );
        table(
            parse_nonneg_int,
            &[
                ("0", Ok(0)),
                ("42", Ok(42)),
                ("0x2a", Ok(42)),
                ("0XFF", Ok(255)),
                ("2147483647", Ok(i32::MAX as u32)),
                ("2147483648", Err("too large")),
                ("-1", Err("not a number")),
                ("0x", Err("not a number")),
                ("0xg", Err("not a number")),
            ],
        );
        use crate::spec::Timestamping;
        table(
            parse_timestamping,
            &[
                ("off", Ok(Timestamping::Off)),
                ("us", Ok(Timestamping::Us)),
                ("usec", Ok(Timestamping::Us)),
                ("µs", Ok(Timestamping::Us)),
                ("ns", Ok(Timestamping::Ns)),
                ("nsec", Ok(Timestamping::Ns)),
                ("ms", Err("off, us")),
                ("yes", Err("off, us")),
            ],
        );
        table(
            check_tcp_congestion,
            &[
                ("cubic", Ok(())),
                ("bbr", Ok(())),
                ("0123456789abcde", Ok(())),
                ("0123456789abcdef", Err("too long")),
                ("cu bic", Err("contains a space")),
            ],
        );
    }

    #[test]
    fn uris_and_unix_paths() {
        table(
            check_documentation_uri,
            &[
                ("man:sshd(8)", Ok(())),
                ("https://example.org/doc", Ok(())),
                ("http://x", Ok(())),
                ("file:/usr/share/doc/x", Ok(())),
                ("info:cups", Ok(())),
                ("man:", Err("not a documentation URI")),
                ("ftp://x", Err("not a documentation URI")),
                ("/usr/share/doc", Err("not a documentation URI")),
            ],
        );
        table(
            check_unix_path,
            &[
                ("/run/web.sock", Ok(())),
                ("@web", Ok(())),
                ("@", Err("empty abstract socket name")),
                ("run/web.sock", Err("not an absolute path")),
                ("/run/../web.sock", Err("not normalized")),
                ("/run/", Err("is a directory")),
            ],
        );
        assert!(check_unix_path(&format!("/{}", "a".repeat(106))).is_ok());
        assert!(check_unix_path(&format!("/{}", "a".repeat(107)))
            .unwrap_err()
            .contains("at most 107 bytes"));
    }

    #[test]
    fn env_names() {
        table(
            check_env_name,
            &[
                ("PATH", Ok(())),
                ("_x1", Ok(())),
                ("1X", Err("not a valid variable name")),
                ("A-B", Err("not a valid variable name")),
                ("", Err("not a valid variable name")),
            ],
        );
    }
}
