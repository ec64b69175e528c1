//! Durations as people write them on the command line: `90s`, `30m`, `24h`, `90d`.

use std::time::Duration;

pub fn parse(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("{s:?}: expected a number followed by s, m, h or d (e.g. 24h)"))?;
    let mult = match unit {
        "ms" => return Ok(Duration::from_millis(n)),
        "s" | "" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86400,
        _ => return Err(format!("{s:?}: unknown unit {unit:?} (use s, m, h or d)")),
    };
    n.checked_mul(mult)
        .map(Duration::from_secs)
        .ok_or_else(|| format!("{s:?}: too large"))
}

pub fn format(d: Duration) -> String {
    let s = d.as_secs();
    for (unit, size) in [("d", 86400), ("h", 3600), ("m", 60)] {
        let (q, r) = (s / size, s % size);
        if q > 0 && r == 0 {
            return format!("{q}{unit}");
        }
    }
    format!("{s}s")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_formats() {
        assert_eq!(parse("24h").unwrap(), Duration::from_secs(86400));
        assert_eq!(parse("90d").unwrap(), Duration::from_secs(90 * 86400));
        assert_eq!(parse("150ms").unwrap(), Duration::from_millis(150));
        assert!(parse("1w").is_err());
        assert!(parse("h").is_err());
        assert_eq!(format(Duration::from_secs(90 * 86400)), "90d");
        assert_eq!(format(Duration::from_secs(90)), "90s");
    }
}
