//! Just enough ELF reading to check what `dist` produced: the machine it is
//! for, whether it is static or needs a dynamic loader, whether it is
//! stripped, and the newest glibc symbol version it needs.

use anyhow::{Context, bail};

/// `e_machine` values of the architectures we ship.
pub const EM_X86_64: u16 = 62;
pub const EM_AARCH64: u16 = 183;
pub const EM_RISCV: u16 = 243;

const PT_INTERP: u32 = 3;
const SHT_SYMTAB: u32 = 2;

/// Facts about one 64-bit little-endian ELF executable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ElfFacts {
    pub machine: u16,
    /// The dynamic loader (`PT_INTERP`), absent for static executables.
    pub interpreter: Option<String>,
    /// True when there is no `.symtab` (the static symbol table).
    pub stripped: bool,
    /// The newest `GLIBC_2.N` version the binary references, as `(2, N)`.
    pub max_glibc: Option<(u32, u32)>,
}

impl ElfFacts {
    /// "static" or "dynamic, glibc >= 2.17".
    pub fn linkage(&self) -> String {
        match (&self.interpreter, self.max_glibc) {
            (None, _) => "static".to_string(),
            (Some(_), Some((a, b))) => format!("dynamic, glibc >= {a}.{b}"),
            (Some(i), None) => format!("dynamic ({i})"),
        }
    }
}

fn u16_at(b: &[u8], off: usize) -> anyhow::Result<u16> {
    let s = b.get(off..off + 2).context("ELF truncated")?;
    Ok(u16::from_le_bytes([s[0], s[1]]))
}

fn u32_at(b: &[u8], off: usize) -> anyhow::Result<u32> {
    let s = b.get(off..off + 4).context("ELF truncated")?;
    Ok(u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
}

fn u64_at(b: &[u8], off: usize) -> anyhow::Result<usize> {
    let s = b.get(off..off + 8).context("ELF truncated")?;
    let mut a = [0u8; 8];
    a.copy_from_slice(s);
    usize::try_from(u64::from_le_bytes(a)).context("ELF offset overflows usize")
}

/// Reads the facts from the bytes of an ELF file.
pub fn read(b: &[u8]) -> anyhow::Result<ElfFacts> {
    if b.get(..4) != Some(b"\x7fELF") {
        bail!("not an ELF file");
    }
    if b.get(4) != Some(&2) || b.get(5) != Some(&1) {
        bail!("not a 64-bit little-endian ELF file");
    }
    let machine = u16_at(b, 18)?;
    let (phoff, shoff) = (u64_at(b, 32)?, u64_at(b, 40)?);
    let (phentsize, phnum) = (usize::from(u16_at(b, 54)?), usize::from(u16_at(b, 56)?));
    let (shentsize, shnum) = (usize::from(u16_at(b, 58)?), usize::from(u16_at(b, 60)?));

    let mut interpreter = None;
    for i in 0..phnum {
        let ph = phoff + i * phentsize;
        if u32_at(b, ph)? == PT_INTERP {
            let (off, size) = (u64_at(b, ph + 8)?, u64_at(b, ph + 32)?);
            let raw = b.get(off..off + size).context("PT_INTERP out of bounds")?;
            let path = raw.split(|&c| c == 0).next().unwrap_or_default();
            interpreter = Some(String::from_utf8_lossy(path).into_owned());
        }
    }
    let mut stripped = true;
    for i in 0..shnum {
        if u32_at(b, shoff + i * shentsize + 4)? == SHT_SYMTAB {
            stripped = false;
        }
    }
    Ok(ElfFacts {
        machine,
        interpreter,
        stripped,
        max_glibc: max_glibc(b),
    })
}

/// The newest `GLIBC_2.N` string in the file (version names live in
/// `.dynstr`; scanning the bytes is enough and needs no section walk).
fn max_glibc(b: &[u8]) -> Option<(u32, u32)> {
    const NEEDLE: &[u8] = b"GLIBC_2.";
    let mut best = None;
    let mut i = 0;
    while let Some(pos) = b[i..].windows(NEEDLE.len()).position(|w| w == NEEDLE) {
        let start = i + pos + NEEDLE.len();
        let digits: Vec<u8> = b[start..]
            .iter()
            .copied()
            .take_while(u8::is_ascii_digit)
            .collect();
        if let Some(minor) = std::str::from_utf8(&digits)
            .ok()
            .and_then(|s| s.parse::<u32>().ok())
        {
            best = best.max(Some((2, minor)));
        }
        i = start;
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(machine: u16) -> Vec<u8> {
        let mut b = vec![0u8; 64];
        b[..4].copy_from_slice(b"\x7fELF");
        b[4] = 2;
        b[5] = 1;
        b[18..20].copy_from_slice(&machine.to_le_bytes());
        b
    }

    #[test]
    fn reads_machine_of_a_bare_header() {
        let f = read(&header(EM_RISCV)).expect("valid header");
        assert_eq!(f.machine, EM_RISCV);
        assert_eq!(f.interpreter, None);
        assert_eq!(f.linkage(), "static");
    }

    #[test]
    fn rejects_non_elf_and_32_bit() {
        assert!(read(b"#!/bin/sh\n").is_err());
        let mut b = header(EM_X86_64);
        b[4] = 1;
        assert!(read(&b).is_err());
    }

    #[test]
    fn finds_the_newest_glibc_version() {
        let mut b = header(EM_X86_64);
        b.extend_from_slice(b"\0GLIBC_2.3.4\0GLIBC_2.17\0GLIBC_2.2.5\0GLIBC_PRIVATE\0");
        assert_eq!(max_glibc(&b), Some((2, 17)));
        assert_eq!(max_glibc(&header(EM_X86_64)), None);
    }

    #[test]
    fn reads_this_test_binary() {
        let exe = std::env::current_exe().expect("current exe");
        let f = read(&std::fs::read(exe).expect("read self")).expect("parse self");
        #[cfg(target_arch = "x86_64")]
        assert_eq!(f.machine, EM_X86_64);
        assert!(f.interpreter.is_some(), "test binaries are dynamic");
        assert!(!f.stripped, "debug test binaries keep .symtab");
    }
}
