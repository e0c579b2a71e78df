//! Byte quantities in config (`mem_limit`, `gpu.min_memory`): a plain integer
//! of bytes or a string such as `"16GiB"`, `"512 MiB"`, `"2g"`, `"1.5GB"`.
//!
//! Units: IEC suffixes (`KiB`, `MiB`, `GiB`, `TiB`) and Docker-style single
//! letters (`k`, `m`, `g`, `t`) are powers of 1024; SI suffixes (`kB`, `MB`,
//! `GB`, `TB`) are powers of 1000; `B` or no suffix is bytes. Suffixes are
//! case-insensitive, so `2gib` works. Displayed as `24.0 GiB`.

use std::fmt;
use std::str::FromStr;

/// A number of bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct ByteSize(pub u64);

pub const KIB: u64 = 1024;
pub const MIB: u64 = 1024 * KIB;
pub const GIB: u64 = 1024 * MIB;
pub const TIB: u64 = 1024 * GIB;

impl ByteSize {
    pub const fn b(n: u64) -> Self {
        ByteSize(n)
    }
    pub const fn mib(n: u64) -> Self {
        ByteSize(n * MIB)
    }
    pub const fn gib(n: u64) -> Self {
        ByteSize(n * GIB)
    }
    pub const fn bytes(self) -> u64 {
        self.0
    }
}

impl From<u64> for ByteSize {
    fn from(n: u64) -> Self {
        ByteSize(n)
    }
}

/// Why a byte quantity could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ByteSizeError {
    input: String,
    problem: &'static str,
}

impl fmt::Display for ByteSizeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "invalid byte size {:?}: {} (examples: 1073741824, \"512MiB\", \"16GiB\", \"2g\")",
            self.input, self.problem
        )
    }
}

impl std::error::Error for ByteSizeError {}

impl FromStr for ByteSize {
    type Err = ByteSizeError;

    fn from_str(input: &str) -> Result<Self, Self::Err> {
        let err = |problem| ByteSizeError {
            input: input.to_owned(),
            problem,
        };
        let s = input.trim();
        let split = s
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(s.len());
        let (number, unit) = s.split_at(split);
        if number.is_empty() {
            return Err(err("missing number"));
        }
        let multiplier: u64 = match unit.trim().to_ascii_lowercase().as_str() {
            "" | "b" => 1,
            "k" | "kib" => KIB,
            "m" | "mib" => MIB,
            "g" | "gib" => GIB,
            "t" | "tib" => TIB,
            "kb" => 1_000,
            "mb" => 1_000_000,
            "gb" => 1_000_000_000,
            "tb" => 1_000_000_000_000,
            _ => return Err(err("unknown unit")),
        };
        if let Ok(whole) = number.parse::<u64>() {
            return whole
                .checked_mul(multiplier)
                .map(ByteSize)
                .ok_or_else(|| err("too large"));
        }
        let value: f64 = number.parse().map_err(|_| err("not a number"))?;
        let bytes = value * multiplier as f64;
        if !bytes.is_finite() || bytes >= u64::MAX as f64 {
            return Err(err("too large"));
        }
        if bytes.fract() != 0.0 {
            return Err(err("not a whole number of bytes"));
        }
        Ok(ByteSize(bytes as u64))
    }
}

impl fmt::Display for ByteSize {
    /// One decimal in the largest binary unit that keeps the value >= 1:
    /// `512 B`, `1.5 KiB`, `24.0 GiB`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.0;
        let (div, unit) = if n >= TIB {
            (TIB, "TiB")
        } else if n >= GIB {
            (GIB, "GiB")
        } else if n >= MIB {
            (MIB, "MiB")
        } else if n >= KIB {
            (KIB, "KiB")
        } else {
            return write!(f, "{n} B");
        };
        write!(f, "{:.1} {unit}", n as f64 / div as f64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_units() {
        let cases = [
            ("0", 0),
            ("1024", 1024),
            ("16GiB", 16 * GIB),
            ("16 GiB", 16 * GIB),
            ("2g", 2 * GIB),
            ("2G", 2 * GIB),
            ("512MiB", 512 * MIB),
            ("1.5GiB", 3 * GIB / 2),
            ("4kB", 4_000),
            ("1GB", 1_000_000_000),
            ("3b", 3),
        ];
        for (input, want) in cases {
            assert_eq!(input.parse::<ByteSize>(), Ok(ByteSize(want)), "{input}");
        }
    }

    #[test]
    fn rejects_garbage() {
        for input in [
            "",
            "GiB",
            "12 parsecs",
            "1.2.3G",
            "-1G",
            "0.3B",
            "99999999999TiB",
        ] {
            assert!(input.parse::<ByteSize>().is_err(), "{input} should fail");
        }
        let err = "12 parsecs".parse::<ByteSize>().unwrap_err().to_string();
        assert!(err.contains("unknown unit"), "{err}");
    }

    #[test]
    fn displays_human_units() {
        assert_eq!(ByteSize(512).to_string(), "512 B");
        assert_eq!(ByteSize::gib(24).to_string(), "24.0 GiB");
        assert_eq!(ByteSize(3 * GIB / 2).to_string(), "1.5 GiB");
        assert_eq!(ByteSize::mib(512).to_string(), "512.0 MiB");
    }
}
