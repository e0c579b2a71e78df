//! The Debian packages the tests and the dev fleet need, from the one list
//! `xtask/debian-packages.txt` (which `.ci/run` installs too).
//!
//! [`ensure`] asks `dpkg-query` which packages of a section are missing.
//! When some are: run as root on Debian or Ubuntu, it installs them with
//! `apt-get` and says so; otherwise it fails with the one command that
//! would. On a system without `dpkg-query` it names the packages and goes
//! on (the tests then say what they lack).

use std::process::Command;

use anyhow::{Context, bail};

use crate::root;

/// The list, relative to the workspace root.
pub const LIST: &str = "xtask/debian-packages.txt";

/// The entries of `section` in the list's text: one per line, `#`
/// comments, `[section]` headers; an entry may name alternatives
/// (`docker.io | docker-ce`).
pub fn parse(text: &str, section: &str) -> Vec<String> {
    let mut current = String::new();
    let mut out = Vec::new();
    for line in text.lines() {
        let line = line.split('#').next().unwrap_or_default().trim();
        if line.is_empty() {
            continue;
        }
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            current = name.trim().to_owned();
        } else if current == section {
            out.push(line.to_owned());
        }
    }
    out
}

/// What to do about missing packages.
#[derive(Debug, PartialEq, Eq)]
pub enum Action {
    /// Nothing is missing.
    Nothing,
    /// Root on Debian/Ubuntu: install these.
    Install(Vec<String>),
    /// Anyone else: this command would install them.
    Tell(String),
}

/// The command that installs `missing` (with `sudo` when not root).
pub fn install_command(missing: &[String], root: bool) -> String {
    format!(
        "{}apt-get install -y --no-install-recommends {}",
        if root { "" } else { "sudo " },
        missing.join(" ")
    )
}

/// Decide from what is missing, who we are and `/etc/os-release`.
pub fn plan(missing: Vec<String>, is_root: bool, os_release: &str) -> Action {
    if missing.is_empty() {
        Action::Nothing
    } else if is_root && debian_like(os_release) {
        Action::Install(missing)
    } else {
        Action::Tell(install_command(&missing, is_root))
    }
}

/// True when `/etc/os-release` says Debian, Ubuntu or a derivative.
pub fn debian_like(os_release: &str) -> bool {
    os_release.lines().any(|l| {
        let (key, value) = l.split_once('=').unwrap_or_default();
        matches!(key, "ID" | "ID_LIKE")
            && value
                .trim_matches('"')
                .split_whitespace()
                .any(|id| id == "debian" || id == "ubuntu")
    })
}

/// The alternatives of one list entry: `docker.io | docker-ce` is met by
/// either; the first is the one installed.
fn alternatives(entry: &str) -> Vec<&str> {
    entry
        .split('|')
        .map(str::trim)
        .filter(|a| !a.is_empty())
        .collect()
}

/// Entries of `wanted` none of whose alternatives dpkg lists as installed
/// (as the first alternative, the one to install); `None` when there is no
/// `dpkg-query`.
fn missing(wanted: &[String]) -> Option<Vec<String>> {
    let names: Vec<&str> = wanted.iter().flat_map(|w| alternatives(w)).collect();
    // Exits 1 when some package is unknown; its stdout still lists the rest.
    let out = Command::new("dpkg-query")
        .arg("-W")
        .arg("-f=${Package} ${db:Status-Status}\n")
        .args(&names)
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let installed: Vec<&str> = text
        .lines()
        .filter_map(|l| l.split_once(' '))
        .filter(|(_, status)| status.trim() == "installed")
        .map(|(name, _)| name.split(':').next().unwrap_or(name))
        .collect();
    Some(
        wanted
            .iter()
            .filter(|w| !alternatives(w).iter().any(|a| installed.contains(a)))
            .filter_map(|w| alternatives(w).first().map(|a| (*a).to_owned()))
            .collect(),
    )
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

/// Make sure the packages of `section` are installed (see the module docs).
pub fn ensure(section: &str) -> anyhow::Result<()> {
    let path = root().join(LIST);
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("read {}", path.display()))?;
    let wanted = parse(&text, section);
    let Some(missing) = missing(&wanted) else {
        eprintln!(
            "xtask: no dpkg-query here (not Debian or Ubuntu?); make sure these are installed: {}",
            wanted.join(" ")
        );
        return Ok(());
    };
    let os_release = std::fs::read_to_string("/etc/os-release").unwrap_or_default();
    match plan(missing, is_root(), &os_release) {
        Action::Nothing => Ok(()),
        Action::Tell(cmd) => bail!(
            "Debian packages from {LIST} [{section}] are missing; install them with:\n    {cmd}"
        ),
        Action::Install(pkgs) => {
            eprintln!(
                "xtask: installing missing Debian packages from {LIST} [{section}] (running as root): {}",
                pkgs.join(" ")
            );
            let apt = |args: &[&str]| -> anyhow::Result<()> {
                let mut c = Command::new("apt-get");
                c.env("DEBIAN_FRONTEND", "noninteractive").args(args);
                crate::run(c)
            };
            apt(&["update", "-qq"])?;
            let mut install = vec!["install", "-y", "-qq", "--no-install-recommends"];
            install.extend(pkgs.iter().map(String::as_str));
            apt(&install)?;
            match self::missing(&pkgs) {
                Some(still) if !still.is_empty() => {
                    bail!(
                        "apt-get ran but these are still missing: {}",
                        still.join(" ")
                    )
                }
                _ => Ok(()),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_list_parses_by_section_without_comments() {
        let text = "# head\n[tests]\ndocker.io   # engine\n\n  faketime\n[dist]\nrustc-web\n";
        assert_eq!(parse(text, "tests"), vec!["docker.io", "faketime"]);
        assert_eq!(parse(text, "dist"), vec!["rustc-web"]);
        assert!(parse(text, "other").is_empty());
    }

    #[test]
    fn the_real_list_has_the_registry_and_the_engine() {
        let text = std::fs::read_to_string(root().join(LIST)).unwrap();
        let tests = parse(&text, "tests");
        for p in ["docker.io", "docker-registry", "busybox-static"] {
            assert!(
                tests.iter().any(|t| alternatives(t).first() == Some(&p)),
                "{p} missing from [tests]"
            );
        }
        assert!(
            tests
                .iter()
                .flat_map(|t| alternatives(t))
                .all(|p| !p.contains(char::is_whitespace))
        );
    }

    #[test]
    fn dpkg_query_tells_installed_from_missing() {
        let wanted = vec!["dpkg".to_string(), "autogit-no-such-package".to_string()];
        match missing(&wanted) {
            // Every Debian system has dpkg itself.
            Some(m) => assert_eq!(m, vec!["autogit-no-such-package".to_string()]),
            None => eprintln!("SKIPPED: no dpkg-query on this system"),
        }
        // An entry is met by any of its alternatives; the first is installed.
        let wanted = vec![
            "autogit-no-such-package | dpkg".to_string(),
            "autogit-missing-a | autogit-missing-b".to_string(),
        ];
        match missing(&wanted) {
            Some(m) => assert_eq!(m, vec!["autogit-missing-a".to_string()]),
            None => eprintln!("SKIPPED: no dpkg-query on this system"),
        }
    }

    #[test]
    fn root_on_debian_installs_everyone_else_is_told_the_command() {
        let debian = "PRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\nID=debian\n";
        let mint = "ID=linuxmint\nID_LIKE=\"ubuntu debian\"\n";
        let fedora = "ID=fedora\n";
        let m = || vec!["docker-registry".to_string()];
        assert_eq!(plan(vec![], true, debian), Action::Nothing);
        assert_eq!(plan(m(), true, debian), Action::Install(m()));
        assert_eq!(plan(m(), true, mint), Action::Install(m()));
        assert_eq!(
            plan(m(), false, debian),
            Action::Tell("sudo apt-get install -y --no-install-recommends docker-registry".into())
        );
        assert_eq!(
            plan(m(), true, fedora),
            Action::Tell("apt-get install -y --no-install-recommends docker-registry".into())
        );
    }
}
