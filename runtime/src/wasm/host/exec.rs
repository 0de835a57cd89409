//! `tenet:host/exec`: run a granted program directly (no shell), with arguments, working
//! directory and environment checked against the provider's grants, standard input from
//! the guest, output capped at the provider's `output` limit, and a timeout that never
//! outlasts the call's deadline. During `read` and `diff` only `mode: probe` grants run.

use super::HostState;
use crate::wasm::bindings::tenet::host::exec::{Command, ExecError, Host, Output};
use crate::wasm::grants::Denied;
use std::process::Stdio;
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};

/// Most arguments (plus environment entries) in one command: far above any real command
/// line, and it bounds the work of matching patterns.
pub const MAX_EXEC_ARGS: usize = 4096;
/// Most bytes of arguments and environment in one command (Linux's own limit is 2 MiB).
pub const MAX_EXEC_ARG_BYTES: usize = 1024 * 1024;
/// A program may run until the call's deadline less this share of the time left, which
/// the provider keeps to handle the timeout (one tenth: 200 ms of a 2 s deadline).
const EXEC_LEAVES_TO_THE_GUEST: u32 = 10;
/// Most bytes of standard input passed to a child: it is held in host memory.
pub const MAX_EXEC_STDIN_BYTES: usize = 16 * 1024 * 1024;

/// Read `stream` keeping at most `limit` bytes; the rest is read and discarded so the
/// child never blocks on a full pipe. Returns the bytes and whether any were dropped.
async fn capped(mut stream: impl AsyncRead + Unpin, limit: u64) -> (Vec<u8>, bool) {
    let mut kept = Vec::new();
    let _ = (&mut stream).take(limit).read_to_end(&mut kept).await;
    let dropped = tokio::io::copy(&mut stream, &mut tokio::io::sink())
        .await
        .unwrap_or(0);
    (kept, dropped > 0)
}

/// A child's process group, killed when dropped unless disarmed (`.0 = None`): a call
/// that times out or is abandoned takes the child's own children with it.
struct ProcessGroup(Option<u32>);

impl Drop for ProcessGroup {
    fn drop(&mut self) {
        if let Some(pid) = self
            .0
            .take()
            .and_then(|p| rustix::process::Pid::from_raw(p as i32))
        {
            let _ = rustix::process::kill_process_group(pid, rustix::process::Signal::KILL);
        }
    }
}

impl HostState {
    fn exec_denied(&mut self, program: &str, denied: &Denied) -> ExecError {
        // Running any program during a plan is treated as an attempt to change the
        // system unless the operator marked it as a probe.
        let mutation = matches!(denied, Denied::NotAProbe { .. });
        ExecError::Denied(self.deny(&format!("exec {program}"), denied, "exec", mutation))
    }

    async fn exec(&mut self, cmd: Command) -> Result<Output, ExecError> {
        let arg_bytes: usize = cmd.args.iter().map(String::len).sum::<usize>()
            + cmd
                .env
                .iter()
                .map(|(k, v)| k.len() + v.len())
                .sum::<usize>();
        if cmd.args.len() + cmd.env.len() > MAX_EXEC_ARGS || arg_bytes > MAX_EXEC_ARG_BYTES {
            return Err(ExecError::Io(format!(
                "command line too large: {} arguments and variables, {arg_bytes} bytes (limits {MAX_EXEC_ARGS}, {MAX_EXEC_ARG_BYTES})",
                cmd.args.len() + cmd.env.len()
            )));
        }
        if cmd
            .stdin
            .as_ref()
            .is_some_and(|s| s.len() > MAX_EXEC_STDIN_BYTES)
        {
            return Err(ExecError::Io(format!(
                "standard input over the {MAX_EXEC_STDIN_BYTES}-byte limit"
            )));
        }
        if cmd.program.len() > super::MAX_PATH_BYTES
            || cmd
                .cwd
                .as_ref()
                .is_some_and(|c| c.len() > super::MAX_PATH_BYTES)
        {
            return Err(ExecError::Io(format!(
                "program or working directory longer than {} bytes",
                super::MAX_PATH_BYTES
            )));
        }
        let program = match self.grants.check_exec(&cmd.program, &cmd.args, self.mode) {
            Ok(p) => p,
            Err(denied) => return Err(self.exec_denied(&cmd.program, &denied)),
        };
        for (name, _) in &cmd.env {
            if let Err(denied) = self.grants.check_env(name) {
                return Err(self.exec_denied(&cmd.program, &denied));
            }
        }
        let cwd = match &cmd.cwd {
            None => std::path::PathBuf::from("/"),
            Some(dir) => match self.grants.resolve_dir(dir, self.mode) {
                Ok(p) => p,
                Err(denied) => {
                    return Err(ExecError::Denied(self.deny(
                        &format!("exec {} in {dir}", cmd.program),
                        &denied,
                        "fs read",
                        false,
                    )));
                }
            },
        };

        if !cwd.is_dir() {
            return Err(ExecError::NotFound(format!(
                "working directory {} does not exist",
                cwd.display()
            )));
        }
        let mut child = tokio::process::Command::new(&program);
        child
            .args(&cmd.args)
            .env_clear()
            .envs(self.grants.child_env())
            .envs(cmd.env.iter().map(|(k, v)| (k, v)))
            .current_dir(&cwd)
            .stdin(if cmd.stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            // Its own process group, so what it starts in the background can be stopped
            // with it.
            .process_group(0)
            // A child left behind by a timed-out or abandoned call is killed.
            .kill_on_drop(true);
        let mut child = child.spawn().map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => {
                ExecError::NotFound(format!("{}: {e}", program.display()))
            }
            _ => ExecError::Io(format!("cannot start {}: {e}", program.display())),
        })?;
        let mut group = ProcessGroup(child.id());

        let limit = self.config.output_bytes;
        let stdin = child.stdin.take();
        let input = cmd.stdin.unwrap_or_default();
        let feed = async move {
            if let Some(mut pipe) = stdin {
                // A child that exits without reading its input is not an error.
                let _ = pipe.write_all(&input).await;
            }
        };
        let stdout = child.stdout.take();
        let stderr = child.stderr.take();
        let read_out = async move {
            match stdout {
                Some(s) => capped(s, limit).await,
                None => (Vec::new(), false),
            }
        };
        let read_err = async move {
            match stderr {
                Some(s) => capped(s, limit).await,
                None => (Vec::new(), false),
            }
        };
        let requested = cmd
            .timeout_ms
            .map(|ms| Duration::from_millis(u64::from(ms)));
        // A program stopped at the very deadline would leave the provider no time to
        // say so: it gets the last part of what is left.
        let left = self.call.deadline.saturating_duration_since(Instant::now());
        let left = left - left / EXEC_LEAVES_TO_THE_GUEST;
        let timeout = requested.map_or(left, |r| r.min(left));
        let started = Instant::now();
        let waited = tokio::time::timeout(timeout, async {
            let (_, out, err, status) = tokio::join!(feed, read_out, read_err, child.wait());
            (out, err, status)
        })
        .await;
        match waited {
            Ok((out, err, status)) => {
                // It exited and was reaped: its pid may be reused, so the group is left
                // alone (a daemon it started on purpose keeps running).
                group.0 = None;
                let status = status.map_err(|e| {
                    ExecError::Io(format!("waiting for {}: {e}", program.display()))
                })?;
                tracing::debug!(
                    provider = %self.provider(),
                    resource = %self.call.resource,
                    program = %program.display(),
                    ?status,
                    elapsed_ms = started.elapsed().as_millis() as u64,
                    "exec finished"
                );
                Ok(Output {
                    status: status.code(),
                    stdout: out.0,
                    stderr: err.0,
                    truncated: out.1 || err.1,
                    timed_out: false,
                })
            }
            Err(_) => {
                // The output read so far is lost with the futures; what matters is that
                // the child and everything it started are stopped before the call's
                // deadline. The group first: the child is not reaped yet, so its pid
                // (the group's id) cannot have been reused.
                drop(group);
                let _ = child.kill().await;
                tracing::warn!(
                    provider = %self.provider(),
                    resource = %self.call.resource,
                    program = %program.display(),
                    "exec stopped after {}",
                    humantime::format_duration(timeout)
                );
                Ok(Output {
                    status: None,
                    stdout: Vec::new(),
                    stderr: Vec::new(),
                    truncated: false,
                    timed_out: true,
                })
            }
        }
    }
}

impl Host for HostState {
    async fn run(&mut self, command: Command) -> wasmtime::Result<Result<Output, ExecError>> {
        Ok(self.exec(command).await)
    }
}
