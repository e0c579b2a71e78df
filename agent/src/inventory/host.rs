//! Host identity: hostname, operating system, kernel, machine architecture
//! and total memory.

use std::fs;
use std::path::Path;

use super::notes::Notes;

/// What `uname(2)` and friends say about the host.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct HostFacts {
    pub hostname: String,
    pub kernel: String,
    pub arch: String,
}

/// Reads hostname, kernel release and machine architecture from the running
/// kernel. Under qemu-user `machine` is the emulated architecture, which is
/// what we want to report.
pub(crate) fn host_facts() -> HostFacts {
    let uts = nix::sys::utsname::uname().ok();
    let hostname = nix::unistd::gethostname()
        .ok()
        .map(|h| h.to_string_lossy().into_owned())
        .filter(|h| !h.is_empty())
        .or_else(|| {
            uts.as_ref()
                .map(|u| u.nodename().to_string_lossy().into_owned())
        })
        .unwrap_or_default();
    let (kernel, arch) = match &uts {
        Some(u) => (
            u.release().to_string_lossy().into_owned(),
            u.machine().to_string_lossy().into_owned(),
        ),
        None => (String::new(), String::new()),
    };
    HostFacts {
        hostname,
        kernel,
        arch,
    }
}

/// The OS name: `PRETTY_NAME` from `<etc_root>/os-release`, else
/// `NAME VERSION`, else sysinfo's guess, else "Linux".
pub(crate) fn os_name(etc_root: &Path, notes: &Notes) -> String {
    let path = etc_root.join("os-release");
    match fs::read_to_string(&path) {
        Ok(text) => {
            notes.clear("os-release");
            if let Some(name) = parse_os_release(&text) {
                return name;
            }
        }
        Err(err) => notes.info(
            "os-release",
            format!(
                "cannot read {}: {err}; OS name falls back to sysinfo",
                path.display()
            ),
        ),
    }
    sysinfo::System::long_os_version().unwrap_or_else(|| "Linux".to_owned())
}

/// Extracts a display name from os-release(5) text.
pub(crate) fn parse_os_release(text: &str) -> Option<String> {
    let mut pretty = None;
    let mut name = None;
    let mut version = None;
    for line in text.lines() {
        let Some((key, value)) = line.trim().split_once('=') else {
            continue;
        };
        let value = unquote(value);
        if value.is_empty() {
            continue;
        }
        match key {
            "PRETTY_NAME" => pretty = Some(value),
            "NAME" => name = Some(value),
            "VERSION" => version = Some(value),
            _ => {}
        }
    }
    pretty.or_else(|| match (name, version) {
        (Some(n), Some(v)) => Some(format!("{n} {v}")),
        (n, _) => n,
    })
}

/// Strips os-release quoting: `"a \"b\""` → `a "b"`.
fn unquote(value: &str) -> String {
    let value = value.trim();
    let inner = match value.as_bytes() {
        [b'"', .., b'"'] | [b'\'', .., b'\''] if value.len() >= 2 => &value[1..value.len() - 1],
        _ => value,
    };
    let mut out = String::with_capacity(inner.len());
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            if let Some(next) = chars.next() {
                out.push(next);
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// Total memory: `MemTotal` from `<proc_root>/meminfo`, else sysinfo.
pub(crate) fn mem_total_bytes(proc_root: &Path, notes: &Notes) -> u64 {
    let path = proc_root.join("meminfo");
    let parsed = fs::read_to_string(&path)
        .map_err(|e| e.to_string())
        .and_then(|text| parse_meminfo_total(&text).ok_or_else(|| "no MemTotal line".to_owned()));
    match parsed {
        Ok(bytes) => {
            notes.clear("meminfo");
            bytes
        }
        Err(why) => {
            notes.warn(
                "meminfo",
                format!(
                    "cannot read total memory from {}: {why}; asking sysinfo",
                    path.display()
                ),
            );
            let mut sys = sysinfo::System::new();
            sys.refresh_memory();
            sys.total_memory()
        }
    }
}

/// `MemTotal:       24585368 kB` → bytes.
pub(crate) fn parse_meminfo_total(text: &str) -> Option<u64> {
    let line = text.lines().find(|l| l.starts_with("MemTotal:"))?;
    let mut fields = line["MemTotal:".len()..].split_whitespace();
    let value: u64 = fields.next()?.parse().ok()?;
    let factor = match fields.next() {
        Some("kB") | Some("KB") | Some("kb") => 1024,
        None => 1,
        Some(_) => return None,
    };
    value.checked_mul(factor)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn os_release_prefers_pretty_name_and_unquotes() {
        let text = "NAME=\"Debian GNU/Linux\"\nVERSION=\"12 (bookworm)\"\n\
                    PRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\nID=debian\n";
        assert_eq!(
            parse_os_release(text).as_deref(),
            Some("Debian GNU/Linux 12 (bookworm)")
        );
    }

    #[test]
    fn os_release_without_pretty_name_uses_name_and_version() {
        let text = "# comment\nNAME='Alpine Linux'\nVERSION=3.20\n";
        assert_eq!(parse_os_release(text).as_deref(), Some("Alpine Linux 3.20"));
        assert_eq!(parse_os_release("NAME=Foo\n").as_deref(), Some("Foo"));
        assert_eq!(parse_os_release("ID=foo\n"), None);
    }

    #[test]
    fn os_release_handles_escapes() {
        let text = r#"PRETTY_NAME="My \"Quoted\" OS""#;
        assert_eq!(parse_os_release(text).as_deref(), Some(r#"My "Quoted" OS"#));
    }

    #[test]
    fn meminfo_total_is_converted_to_bytes() {
        let text = "MemTotal:       24585368 kB\nMemFree:         1000 kB\n";
        assert_eq!(parse_meminfo_total(text), Some(24_585_368 * 1024));
        assert_eq!(parse_meminfo_total("MemFree: 1 kB\n"), None);
        assert_eq!(parse_meminfo_total("MemTotal: lots kB\n"), None);
        assert_eq!(parse_meminfo_total("MemTotal: 5 MB\n"), None);
    }
}
