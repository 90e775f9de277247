//! Byte sizes on the command line: `262144`, `256K`, `256KiB`, `4MB`.
//!
//! The rules, chosen to keep what the examples documented so far (`K`, `M`
//! and `G` are powers of 1024) while reading the SI spelling as SI:
//!
//! | suffix (any case)       | factor |
//! |-------------------------|--------|
//! | none, `B`               | 1      |
//! | `K`, `Ki`, `KiB`        | 1024   |
//! | `M`, `Mi`, `MiB`        | 1024²  |
//! | `G`, `Gi`, `GiB`        | 1024³  |
//! | `KB`                    | 1000   |
//! | `MB`                    | 1000²  |
//! | `GB`                    | 1000³  |
//!
//! The number is a whole one (no fractions, no sign); spaces around it and
//! between it and the suffix are allowed. Neither `parse-size` nor
//! `bytesize` fits: both read a bare `K` as 1000, and `parse-size`'s binary
//! mode reads `KB` as 1024 too.

/// Parses a byte size by the rules above.
pub fn parse_size(s: &str) -> Result<usize, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    if num.is_empty() {
        return Err(format!("bad size {s:?}: expected a number of bytes"));
    }
    let n: u64 = num
        .parse()
        .map_err(|_| format!("size {s:?} is too large"))?;
    let factor: u64 = match unit.trim_start().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "ki" | "kib" => 1 << 10,
        "m" | "mi" | "mib" => 1 << 20,
        "g" | "gi" | "gib" => 1 << 30,
        "kb" => 1_000,
        "mb" => 1_000_000,
        "gb" => 1_000_000_000,
        _ => {
            return Err(format!(
                "bad size unit in {s:?} (K, M, G or KiB, MiB, GiB: powers of 1024; KB, MB, GB: of 1000)"
            ))
        }
    };
    n.checked_mul(factor)
        .and_then(|b| usize::try_from(b).ok())
        .ok_or_else(|| format!("size {s:?} is too large"))
}

#[cfg(test)]
mod tests {
    use super::parse_size;

    #[test]
    fn bare_numbers_are_bytes() {
        assert_eq!(parse_size("0"), Ok(0));
        assert_eq!(parse_size("262144"), Ok(262_144));
        assert_eq!(parse_size(" 1000B "), Ok(1000));
        assert_eq!(parse_size("7 b"), Ok(7));
    }

    #[test]
    fn k_m_g_and_kib_are_binary() {
        for (s, want) in [
            ("256K", 256 << 10),
            ("256k", 256 << 10),
            ("256KiB", 256 << 10),
            ("256 kib", 256 << 10),
            ("4Ki", 4 << 10),
            ("16M", 16 << 20),
            ("16MiB", 16 << 20),
            ("1G", 1 << 30),
            ("1GiB", 1 << 30),
        ] {
            assert_eq!(parse_size(s), Ok(want), "{s}");
        }
    }

    #[test]
    fn kb_mb_gb_are_decimal() {
        assert_eq!(parse_size("1KB"), Ok(1_000));
        assert_eq!(parse_size("4kb"), Ok(4_000));
        assert_eq!(parse_size("5MB"), Ok(5_000_000));
        assert_eq!(parse_size("2 GB"), Ok(2_000_000_000));
    }

    #[test]
    fn rejects_what_it_cannot_read() {
        for s in [
            "", "K", "-1", "+1", "1.5M", "12T", "1 KB B", "1KIBB", "0x10", "M1",
        ] {
            assert!(parse_size(s).is_err(), "{s:?} parsed");
        }
        assert!(parse_size("99999999999999999999").is_err());
        assert!(parse_size("18446744073709551615G").is_err());
    }
}
