//! Child processes that cannot outlive the test binary that started them.
//!
//! Each runs under a small `sh` guard that holds the read end of a pipe from
//! the test process: when the test process exits for any reason (a panic, a
//! `static` whose destructor never runs, a killed `cargo test`) the pipe
//! closes and the guard stops its child.

use std::fs::File;
use std::io::Write;
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::{Duration, Instant};

/// Stops the child with `signal` when stdin closes, then waits for it.
const GUARD: &str = r#"sig="$1"; shift; "$@" & pid=$!; read -r _ignored; kill -"$sig" "$pid" 2>/dev/null; wait "$pid""#;

pub struct GuardedProcess {
    name: String,
    child: Child,
    stdin: Option<ChildStdin>,
    log: PathBuf,
}

impl GuardedProcess {
    /// Starts `program args…` under the guard, output to `log`. With
    /// `run_as`, the guard and the program run as that user (`runuser`).
    pub fn spawn(
        name: &str,
        program: &Path,
        args: &[String],
        log: &Path,
        run_as: Option<&str>,
        stop_signal: &str,
    ) -> Self {
        let log_file =
            File::create(log).unwrap_or_else(|e| panic!("creating {}: {e}", log.display()));
        let mut command = match run_as {
            Some(user) => {
                let mut c = Command::new("runuser");
                c.args(["-u", user, "--", "sh"]);
                c
            }
            None => Command::new("sh"),
        };
        command
            .arg("-c")
            .arg(GUARD)
            .arg("guard")
            .arg(stop_signal)
            .arg(program)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(log_file.try_clone().expect("dup log"))
            .stderr(log_file);
        let mut child = command
            .spawn()
            .unwrap_or_else(|e| panic!("starting {name} ({}): {e}", program.display()));
        let stdin = child.stdin.take();
        GuardedProcess {
            name: name.to_owned(),
            child,
            stdin,
            log: log.to_owned(),
        }
    }

    /// Whether the process has exited already (it failed to start, say).
    pub fn has_exited(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(Some(_)))
    }

    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let start = text.len().saturating_sub(4000);
        text[text.floor_char_boundary(start)..].to_owned()
    }

    /// Stops the process and waits for it to exit.
    pub fn stop(&mut self) {
        if let Some(mut stdin) = self.stdin.take() {
            let _ = stdin.write_all(b"stop\n");
        }
        let _ = self.child.wait();
    }

    pub fn name(&self) -> &str {
        &self.name
    }
}

impl Drop for GuardedProcess {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A loopback port that was free a moment ago. Callers retry on the rare
/// race where another process takes it first.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("binding an ephemeral loopback port")
}

/// Waits until something accepts connections on `port`, or the process
/// exits, or `timeout` passes. Returns whether the port is up.
pub fn wait_for_port(process: &mut GuardedProcess, port: u16, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return true;
        }
        if process.has_exited() {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

/// Runs a command to completion and returns its stdout, panicking with its
/// output if it fails: harness steps are not what a test is about.
pub fn run_checked(command: &mut Command) -> String {
    let out = command
        .output()
        .unwrap_or_else(|e| panic!("running {command:?}: {e}"));
    assert!(
        out.status.success(),
        "{command:?} failed with {}\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Whether this process runs as root (PostgreSQL then runs as `postgres`).
pub fn running_as_root() -> bool {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self")
        .map(|m| m.uid() == 0)
        .unwrap_or(false)
}
