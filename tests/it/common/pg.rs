//! A real PostgreSQL server for the tests: Debian's `postgresql` package, `initdb` on a
//! temporary directory, `postgres` on a loopback port, no system service. One server for
//! the whole test binary, one fresh database per test.
//!
//! The server is started by a small shell that then reads its standard input: when the test
//! binary exits (however it exits), the pipe closes, the shell stops the server and removes
//! the directory. Under root (as in CI), the server runs as the `postgres` user the package
//! creates, since `initdb` refuses root.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

const HOW_TO_INSTALL: &str = "PostgreSQL is needed by this test and was not found. Install \
     Debian's package (`apt-get update && apt-get install -y postgresql`), or set \
     READERD_PG_BIN to a directory holding initdb, postgres, pg_ctl, pg_isready and psql.";

pub struct PgServer {
    bin: PathBuf,
    pub port: u16,
    dir: PathBuf,
    /// The server's options, for a restart.
    options: String,
    as_postgres_user: bool,
    /// The shell that owns the server; its stdin is the lifeline.
    child: Mutex<Child>,
}

/// The directory of PostgreSQL's server binaries: `READERD_PG_BIN`, or the newest
/// `/usr/lib/postgresql/<version>/bin`.
fn find_bin() -> Option<PathBuf> {
    if let Ok(dir) = std::env::var("READERD_PG_BIN") {
        return Some(PathBuf::from(dir));
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|e| {
            let e = e.ok()?;
            let v = e.file_name().to_str()?.parse::<u32>().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").exists().then_some((v, bin))
        })
        .collect();
    versions.sort();
    versions.pop().map(|(_, b)| b)
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The shared server, started on first use. Panics, saying how to install PostgreSQL,
/// when it is missing: a test that needs it never passes without it.
pub fn pg() -> &'static PgServer {
    static SERVER: OnceLock<PgServer> = OnceLock::new();
    SERVER.get_or_init(|| PgServer::start().unwrap_or_else(|e| panic!("{e}")))
}

impl PgServer {
    /// A server of one's own (for a test that stops it); stopped when the binary exits.
    pub fn private() -> PgServer {
        PgServer::start().unwrap_or_else(|e| panic!("{e}"))
    }

    fn pg_ctl(&self, args: &[&str]) {
        let data = self.dir.join("data");
        let out = user_command(self.as_postgres_user, &self.bin.join("pg_ctl"))
            .args(args)
            .arg("-D")
            .arg(&data)
            .output()
            .expect("pg_ctl runs");
        assert!(
            out.status.success(),
            "pg_ctl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Stops the server at once, as a crash or a cut would (connections drop).
    pub fn stop(&self) {
        self.pg_ctl(&["stop", "-m", "immediate", "-w"]);
    }

    /// Starts it again after [`PgServer::stop`], on the same port.
    pub fn restart(&self) {
        let log = self.dir.join("log");
        self.pg_ctl(&[
            "start",
            "-w",
            "-l",
            log.to_str().unwrap(),
            "-o",
            &self.options,
        ]);
    }

    fn start() -> Result<PgServer, String> {
        let bin = find_bin().ok_or_else(|| HOW_TO_INSTALL.to_string())?;
        for tool in ["initdb", "postgres", "pg_ctl", "pg_isready", "psql"] {
            if !bin.join(tool).exists() {
                return Err(format!("{} lacks {tool}. {HOW_TO_INSTALL}", bin.display()));
            }
        }
        let as_postgres_user = is_root();
        let dir = tempfile::Builder::new()
            .prefix("readerd-pg-")
            .tempdir()
            .map_err(|e| e.to_string())?
            .keep();
        if as_postgres_user {
            let ok = Command::new("chown")
                .args(["postgres:postgres"])
                .arg(&dir)
                .status()
                .map(|s| s.success())
                .unwrap_or(false);
            if !ok {
                return Err(format!(
                    "running as root, the server must run as the `postgres` user, which \
                     could not own {}. {HOW_TO_INSTALL}",
                    dir.display()
                ));
            }
        }
        let data = dir.join("data");
        let out = user_command(as_postgres_user, &bin.join("initdb"))
            .arg("-D")
            .arg(&data)
            .args([
                "-A",
                "trust",
                "-U",
                "postgres",
                "-E",
                "UTF8",
                "--locale=C",
                "--no-sync",
            ])
            .output()
            .map_err(|e| format!("initdb: {e}. {HOW_TO_INSTALL}"))?;
        if !out.status.success() {
            return Err(format!(
                "initdb failed: {}",
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        let port = free_port();
        let options = format!(
            "-p {port} -k {dir} -c listen_addresses=127.0.0.1 -c fsync=off \
             -c full_page_writes=off -c max_connections=300 \
             -c shared_buffers=32MB",
            dir = dir.display(),
        );
        let pg_ctl = bin.join("pg_ctl");
        let script = format!(
            "{pg_ctl} start -w -D {data} -l {log} -o '{options}' >/dev/null 2>&1; read _; \
             {pg_ctl} stop -m immediate -D {data} >/dev/null 2>&1; rm -rf {dir}",
            pg_ctl = pg_ctl.display(),
            data = data.display(),
            log = dir.join("log").display(),
            dir = dir.display(),
        );
        let child = user_command(as_postgres_user, Path::new("sh"))
            .arg("-c")
            .arg(&script)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("cannot start postgres: {e}"))?;
        let s = PgServer {
            bin,
            port,
            dir,
            options,
            as_postgres_user,
            child: Mutex::new(child),
        };
        s.wait_ready(Duration::from_secs(30))?;
        Ok(s)
    }

    fn wait_ready(&self, within: Duration) -> Result<(), String> {
        let deadline = Instant::now() + within;
        loop {
            let ok = Command::new(self.bin.join("pg_isready"))
                .args(["-q", "-h", "127.0.0.1", "-p", &self.port.to_string()])
                .status()
                .map(|s| s.success())
                .unwrap_or(false);
            if ok {
                return Ok(());
            }
            if Instant::now() > deadline {
                let log = std::fs::read_to_string(self.dir.join("log")).unwrap_or_default();
                return Err(format!("PostgreSQL did not start: {log}"));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Turns TLS on with this certificate and key (PEM), by a configuration reload.
    pub fn enable_tls(&self, cert_pem: &str, key_pem: &str) {
        let cert = self.dir.join("server.crt");
        let key = self.dir.join("server.key");
        std::fs::write(&cert, cert_pem).unwrap();
        std::fs::write(&key, key_pem).unwrap();
        for f in [&cert, &key] {
            if self.as_postgres_user {
                assert!(Command::new("chown")
                    .arg("postgres:postgres")
                    .arg(f)
                    .status()
                    .unwrap()
                    .success());
            }
            assert!(Command::new("chmod")
                .arg("600")
                .arg(f)
                .status()
                .unwrap()
                .success());
        }
        self.psql(
            "postgres",
            &format!("ALTER SYSTEM SET ssl_cert_file = '{}'", cert.display()),
        );
        self.psql(
            "postgres",
            &format!("ALTER SYSTEM SET ssl_key_file = '{}'", key.display()),
        );
        self.psql("postgres", "ALTER SYSTEM SET ssl = on");
        self.psql("postgres", "SELECT pg_reload_conf()");
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.psql("postgres", "SHOW ssl") != "on" {
            assert!(Instant::now() < deadline, "the server never turned TLS on");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Runs one SQL statement as the superuser on database `db`.
    pub fn psql(&self, db: &str, sql: &str) -> String {
        let out = Command::new(self.bin.join("psql"))
            .args(["-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1"])
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string()])
            .args(["-U", "postgres", "-d", db, "-c", sql])
            .output()
            .expect("psql runs");
        assert!(
            out.status.success(),
            "psql {sql}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// A new, empty database; returns its URL.
    pub fn fresh_db(&self) -> String {
        static N: AtomicU32 = AtomicU32::new(0);
        let name = format!(
            "t{}_{}",
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst)
        );
        self.psql("postgres", &format!("CREATE DATABASE {name}"));
        self.url(&name)
    }

    pub fn url(&self, db: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{db}", self.port)
    }
}

impl Drop for PgServer {
    fn drop(&mut self) {
        // Statics are not dropped; this is for completeness. The lifeline does the work.
        if let Ok(mut c) = self.child.lock() {
            if let Some(mut stdin) = c.stdin.take() {
                let _ = stdin.write_all(b"\n");
            }
        }
    }
}

/// `program` as the `postgres` user when running as root, else as ourselves.
fn user_command(as_postgres_user: bool, program: &Path) -> Command {
    if as_postgres_user {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(program);
        c
    } else {
        Command::new(program)
    }
}
