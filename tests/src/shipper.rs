//! Running the real `walvault` binary: built once per test binary, copied
//! where the `postgres` user can execute it, configured through a TOML file
//! (as on a database host, where PostgreSQL gives commands a bare environment).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use tempfile::TempDir;

use crate::postgres::hand_to_postgres_user;
use crate::workspace_root;

/// The `walvault` binary, copied where every user can read it. `make test`
/// builds it first (`cargo build --bins`); `WALVAULT_BIN` points elsewhere.
/// Cargo cannot be run from here: the `cargo test` running us holds its lock.
pub fn walvault_binary() -> &'static Path {
    static BINARY: OnceLock<(TempDir, PathBuf)> = OnceLock::new();
    let (_, path) = BINARY.get_or_init(|| {
        let built = std::env::var_os("WALVAULT_BIN")
            .map(PathBuf::from)
            .unwrap_or_else(|| {
                std::env::var_os("CARGO_TARGET_DIR")
                    .map(PathBuf::from)
                    .unwrap_or_else(|| workspace_root().join("target"))
                    .join("debug/walvault")
            });
        assert!(
            built.exists(),
            "{} is missing: run `cargo build --bins` first (make test does)",
            built.display()
        );
        let dir = public_tempdir("walvault-bin-");
        let path = dir.path().join("walvault");
        std::fs::copy(&built, &path).expect("copying the walvault binary");
        (dir, path)
    });
    path
}

/// A temporary directory the `postgres` user can enter and read.
pub fn public_tempdir(prefix: &str) -> TempDir {
    let dir = tempfile::Builder::new()
        .prefix(prefix)
        .tempdir()
        .expect("temp dir");
    set_mode(dir.path(), 0o755);
    dir
}

fn set_mode(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).expect("chmod");
}

pub struct Shipper {
    dir: TempDir,
    config: PathBuf,
    aws_env: BTreeMap<String, String>,
}

#[derive(Debug)]
pub struct Run {
    pub code: i32,
    pub stderr: String,
}

impl Run {
    fn of(out: &std::process::Output) -> Run {
        Run {
            code: out.status.code().unwrap_or(-1),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }
}

impl Shipper {
    /// A shipper configured by `env` (a stack's `env(cluster)`, perhaps
    /// changed): `WALVAULT_*` settings go to the config file, `AWS_*` to
    /// the command's environment. The spool lives in the shipper's directory.
    pub fn new(env: &BTreeMap<String, String>) -> Shipper {
        let dir = public_tempdir("walvault-shipper-");
        let spool = dir.path().join("spool");
        std::fs::create_dir(&spool).expect("spool dir");
        hand_to_postgres_user(&spool);
        let mut toml = String::new();
        let mut aws_env = BTreeMap::new();
        for (key, value) in env {
            if let Some(setting) = key.strip_prefix("WALVAULT_") {
                toml.push_str(&format!("{} = {:?}\n", setting.to_ascii_lowercase(), value));
            } else {
                aws_env.insert(key.clone(), value.clone());
            }
        }
        if !env.contains_key("WALVAULT_SPOOL_DIR") {
            toml.push_str(&format!("spool_dir = {:?}\n", spool.display().to_string()));
        }
        let config = dir.path().join("walvault.toml");
        std::fs::write(&config, toml).expect("writing walvault.toml");
        set_mode(&config, 0o644);
        Shipper {
            dir,
            config,
            aws_env,
        }
    }

    pub fn spool_dir(&self) -> PathBuf {
        self.dir.path().join("spool")
    }

    /// Runs `walvault --config <file> <args…>` and waits for it.
    pub fn run(&self, args: &[&str]) -> Run {
        let out = self.command(args).output().expect("running walvault");
        Run::of(&out)
    }

    /// [`Shipper::run`] as the `postgres` user (what starts a server: the
    /// recovery drill), with stdout.
    pub fn run_as_postgres(&self, args: &[&str]) -> (Run, String) {
        let mut command = crate::postgres::as_pg_user(&walvault_binary().display().to_string());
        command
            .arg("--config")
            .arg(&self.config)
            .args(args)
            .env_clear()
            .envs(&self.aws_env)
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin");
        let out = command.output().expect("running walvault");
        (
            Run::of(&out),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    }

    /// `walvault --config <file> <args…>`, not started.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(walvault_binary());
        command
            .arg("--config")
            .arg(&self.config)
            .args(args)
            .env_clear()
            .envs(&self.aws_env);
        command
    }

    /// The shell command line for archive_command or restore_command, e.g.
    /// `command_line("push %p")`.
    pub fn command_line(&self, subcommand: &str) -> String {
        let env: Vec<String> = self
            .aws_env
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        format!(
            "env {} {} --config {} {subcommand}",
            env.join(" "),
            walvault_binary().display(),
            self.config.display()
        )
    }
}
