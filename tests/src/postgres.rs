//! A private PostgreSQL cluster for tests: `initdb` in a temporary
//! directory, a server on a loopback port with its socket in that
//! directory, stopped (immediate mode) and removed on drop. The server
//! refuses to run as root, so as root it runs as the `postgres` user that
//! Debian's package creates.
//!
//! Debian's `postgresql` package provides the binaries
//! (`/usr/lib/postgresql/<version>/bin`). Without them [`Postgres::start`]
//! answers `None` and the caller skips, unless `AUTOGIT_REQUIRE_POSTGRES`
//! is set (as `cargo xtask test` does), when it panics instead.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// The user every test database belongs to (trust auth on loopback only).
pub const USER: &str = "autogit";

pub struct Postgres {
    dir: tempfile::TempDir,
    bin: PathBuf,
    run_as: Option<String>,
    port: u16,
}

impl Postgres {
    /// Start a fresh cluster, or `None` when PostgreSQL is not installed
    /// and not required.
    pub fn start() -> Option<Postgres> {
        let Some(bin) = find_bin() else {
            if std::env::var_os("AUTOGIT_REQUIRE_POSTGRES").is_some() {
                panic!(
                    "AUTOGIT_REQUIRE_POSTGRES is set but no PostgreSQL server is installed \
                     (apt-get install postgresql)"
                );
            }
            eprintln!("skipping: no PostgreSQL server installed (apt-get install postgresql)");
            return None;
        };
        let run_as = nix::unistd::geteuid()
            .is_root()
            .then(|| "postgres".to_string());
        // As root, under /tmp: a TMPDIR in root's home is closed to `postgres`.
        let parent = match run_as {
            Some(_) => PathBuf::from("/tmp"),
            None => std::env::temp_dir(),
        };
        let dir = tempfile::Builder::new()
            .prefix("autogit-pg-")
            .tempdir_in(parent)
            .expect("temp dir for PostgreSQL");
        if let Some(user) = &run_as {
            let u = nix::unistd::User::from_name(user)
                .expect("look up the postgres user")
                .unwrap_or_else(|| {
                    panic!("running as root needs a {user:?} user to run PostgreSQL")
                });
            nix::unistd::chown(dir.path(), Some(u.uid), Some(u.gid))
                .expect("chown the cluster dir");
        }
        let mut pg = Postgres {
            dir,
            bin,
            run_as,
            port: 0,
        };
        let data = pg.data_dir();
        pg.run(
            "initdb",
            &[
                "-D",
                path_str(&data),
                "-U",
                USER,
                "--auth=trust",
                "-E",
                "UTF8",
                "--locale=C",
                "--no-sync",
            ],
        );
        pg.port = crate::harness::free_port("127.0.0.1");
        pg.start_server();
        Some(pg)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The URL of database `db` (which [`Postgres::create_db`] makes).
    pub fn url(&self, db: &str) -> String {
        format!("postgres://{USER}@127.0.0.1:{}/{db}", self.port)
    }

    /// Create an empty database and return its URL.
    pub fn create_db(&self, db: &str) -> String {
        assert!(
            db.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'),
            "database name {db:?}"
        );
        self.psql("postgres", &format!("CREATE DATABASE {db}"));
        self.url(db)
    }

    /// Run one SQL command through `psql` and return its unaligned output.
    pub fn psql(&self, db: &str, sql: &str) -> String {
        let port = self.port.to_string();
        let out = Command::new(self.bin.join("psql"))
            .args(["-h", "127.0.0.1", "-p", &port, "-U", USER, "-d", db])
            .args(["-v", "ON_ERROR_STOP=1", "-X", "-A", "-t", "-c", sql])
            .stdin(Stdio::null())
            .output()
            .expect("run psql");
        assert!(
            out.status.success(),
            "psql {sql:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// Stop the server at once, as a crash would (`pg_ctl stop -m immediate`).
    pub fn stop(&self) {
        let data = self.data_dir();
        self.try_run(
            "pg_ctl",
            &["-D", path_str(&data), "-m", "immediate", "-w", "stop"],
        );
    }

    /// Start the server (again) on its port; durability is traded for speed.
    pub fn start_server(&self) {
        let data = self.data_dir();
        let log = self.dir.path().join("server.log");
        let opts = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=off \
             -c full_page_writes=off -c max_connections=200",
            self.port,
            path_str(self.dir.path())
        );
        self.run(
            "pg_ctl",
            &[
                "-D",
                path_str(&data),
                "-l",
                path_str(&log),
                "-o",
                &opts,
                "-w",
                "-t",
                "60",
                "start",
            ],
        );
    }

    /// The server's (postmaster's) pid, from `postmaster.pid`; its
    /// workers are its children.
    pub fn server_pid(&self) -> Option<u32> {
        std::fs::read_to_string(self.data_dir().join("postmaster.pid"))
            .ok()?
            .lines()
            .next()?
            .trim()
            .parse()
            .ok()
    }

    fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn command(&self, tool: &str) -> Command {
        let exe = self.bin.join(tool);
        match &self.run_as {
            Some(user) => {
                let mut c = Command::new("runuser");
                c.args(["-u", user, "--"]).arg(exe);
                c
            }
            None => Command::new(exe),
        }
    }

    fn try_run(&self, tool: &str, args: &[&str]) -> std::process::Output {
        self.command(tool)
            .args(args)
            .current_dir(self.dir.path())
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("run {tool}: {e}"))
    }

    fn run(&self, tool: &str, args: &[&str]) {
        let out = self.try_run(tool, args);
        if !out.status.success() {
            let log =
                std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default();
            panic!(
                "{tool} {args:?} failed: {}{}\nserver log:\n{log}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        if self.port != 0 {
            self.stop();
        }
    }
}

fn path_str(p: &Path) -> &str {
    p.to_str().expect("UTF-8 temp path")
}

/// The newest installed server's bin dir (Debian keeps each major version
/// apart), or the one `pg_ctl` on PATH belongs to.
fn find_bin() -> Option<PathBuf> {
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let v: u32 = e.file_name().to_str()?.parse().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").exists().then_some((v, bin))
        })
        .collect();
    versions.sort();
    if let Some((_, bin)) = versions.pop() {
        return Some(bin);
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).find(|d| d.join("initdb").exists() && d.join("pg_ctl").exists())
}
