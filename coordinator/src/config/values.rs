//! The config (and JSON) spelling of the scheduler's value types: the
//! scheduler's types are plain Rust, and their serde forms live here, next to
//! the rest of the config schema.
//!
//! * [`ByteSize`]: a number of bytes or a string such as `"16GiB"`.
//! * [`Arch`]: `x86_64`/`amd64`, `aarch64`/`arm64`, `riscv64` (written
//!   normalised).
//! * [`GpuVendor`]: `nvidia`, `amd`, `intel`.
//! * [`Strategy`]: `spread`, `bin-pack` (also `binpack`).

use std::fmt;

use serde::de::{self, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::scheduler::{Arch, ByteSize, GpuVendor, Strategy};

impl Serialize for ByteSize {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(self.0)
    }
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = ByteSize;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a number of bytes or a string such as \"16GiB\"")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<ByteSize, E> {
                Ok(ByteSize(v))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<ByteSize, E> {
                u64::try_from(v)
                    .map(ByteSize)
                    .map_err(|_| E::custom(format!("byte size must not be negative, got {v}")))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<ByteSize, E> {
                v.parse().map_err(E::custom)
            }
        }
        d.deserialize_any(V)
    }
}

impl Serialize for Arch {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for Arch {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(de::Error::custom)
    }
}

const VENDORS: &[&str] = &["nvidia", "amd", "intel"];

impl Serialize for GpuVendor {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for GpuVendor {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        GpuVendor::ALL
            .into_iter()
            .find(|v| v.as_str() == s)
            .ok_or_else(|| de::Error::unknown_variant(&s, VENDORS))
    }
}

const STRATEGIES: &[&str] = &["spread", "bin-pack"];

impl Serialize for Strategy {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(match self {
            Strategy::Spread => "spread",
            Strategy::BinPack => "bin-pack",
        })
    }
}

impl<'de> Deserialize<'de> for Strategy {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        match s.as_str() {
            "spread" => Ok(Strategy::Spread),
            "bin-pack" | "binpack" => Ok(Strategy::BinPack),
            _ => Err(de::Error::unknown_variant(&s, STRATEGIES)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spellings_round_trip_and_unknown_ones_are_named() {
        for v in GpuVendor::ALL {
            let json = serde_json::to_string(&v).unwrap();
            assert_eq!(serde_json::from_str::<GpuVendor>(&json).unwrap(), v);
        }
        assert_eq!(serde_json::to_string(&GpuVendor::Amd).unwrap(), "\"amd\"");
        let err = serde_json::from_str::<GpuVendor>("\"AMD\"")
            .unwrap_err()
            .to_string();
        assert!(err.contains("AMD") && err.contains("nvidia"), "{err}");
        for (text, s) in [
            ("spread", Strategy::Spread),
            ("bin-pack", Strategy::BinPack),
        ] {
            assert_eq!(serde_json::to_string(&s).unwrap(), format!("\"{text}\""));
            assert_eq!(
                serde_json::from_str::<Strategy>(&format!("\"{text}\"")).unwrap(),
                s
            );
        }
        assert_eq!(
            serde_json::from_str::<Strategy>("\"binpack\"").unwrap(),
            Strategy::BinPack
        );
        assert!(serde_json::from_str::<Strategy>("\"random\"").is_err());
        assert_eq!(
            serde_json::to_string(&Arch::Aarch64).unwrap(),
            "\"aarch64\""
        );
        assert_eq!(
            serde_json::from_str::<Arch>("\"arm64\"").unwrap(),
            Arch::Aarch64
        );
        assert_eq!(
            serde_json::to_string(&ByteSize::gib(2)).unwrap(),
            "2147483648"
        );
        assert_eq!(
            serde_json::from_str::<ByteSize>("\"2GiB\"").unwrap(),
            ByteSize::gib(2)
        );
    }
}
