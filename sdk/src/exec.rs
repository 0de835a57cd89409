//! Run programs through the host's `tenet:host/exec` interface.
//!
//! The host runs only programs the operator granted, with arguments matching the grant's
//! patterns, never through a shell (unless a shell itself is granted), and during plans
//! only programs granted with `mode: probe`. Output is capped by the provider's `output`
//! limit. Built natively (unit tests) the same calls run the program directly.
//!
//! ```no_run
//! use tenet_sdk::exec::Command;
//! let out = Command::new("/usr/bin/systemctl").args(["is-active", "nginx"]).run()?;
//! let active = out.status == Some(0);
//! # Ok::<(), tenet_sdk::Error>(())
//! ```

use std::time::Duration;

/// A program to run.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Command {
    program: String,
    args: Vec<String>,
    cwd: Option<String>,
    env: Vec<(String, String)>,
    stdin: Option<Vec<u8>>,
    timeout: Option<Duration>,
}

/// What the program did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Output {
    /// Exit code; `None` when killed by a signal or stopped at its timeout.
    pub status: Option<i32>,
    /// Standard output, cut at the provider's `output` limit.
    pub stdout: Vec<u8>,
    /// Standard error, cut at the provider's `output` limit.
    pub stderr: Vec<u8>,
    /// Whether output was cut.
    pub truncated: bool,
    /// Whether the program was stopped at its timeout or the call's deadline.
    pub timed_out: bool,
}

impl Output {
    /// Whether the program exited with status 0.
    pub fn success(&self) -> bool {
        self.status == Some(0)
    }

    /// How it ended, for messages: `exit 3`, or `killed` (a signal or a timeout).
    pub fn status_text(&self) -> String {
        self.status
            .map_or_else(|| "killed".to_owned(), |s| format!("exit {s}"))
    }

    /// Standard output as text (lossy).
    pub fn stdout_text(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }
}

/// Why a program could not run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExecError {
    /// Not granted (program, arguments, directory, environment, or a non-probe during a plan).
    Denied(String),
    /// The program does not exist.
    NotFound(String),
    /// Any other failure to start it.
    Io(String),
}

impl std::fmt::Display for ExecError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ExecError::Denied(m) => write!(f, "denied: {m}"),
            ExecError::NotFound(m) => write!(f, "not found: {m}"),
            ExecError::Io(m) => write!(f, "{m}"),
        }
    }
}

impl std::error::Error for ExecError {}

impl From<ExecError> for crate::Error {
    fn from(e: ExecError) -> Self {
        match e {
            ExecError::Denied(m) => crate::Error::CapabilityDenied(m),
            ExecError::NotFound(m) => crate::Error::NotFound(m),
            ExecError::Io(m) => crate::Error::Internal(m),
        }
    }
}

impl Command {
    /// `program`: an absolute path, or the file name of a granted program.
    pub fn new(program: &str) -> Self {
        Command {
            program: program.to_owned(),
            ..Command::default()
        }
    }

    /// Add one argument.
    pub fn arg(mut self, arg: impl Into<String>) -> Self {
        self.args.push(arg.into());
        self
    }

    /// Add arguments.
    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.args.extend(args.into_iter().map(Into::into));
        self
    }

    /// Working directory (inside a directory granted to the provider).
    pub fn cwd(mut self, dir: &str) -> Self {
        self.cwd = Some(dir.to_owned());
        self
    }

    /// Set an environment variable (the name must be granted to the provider).
    pub fn env(mut self, name: &str, value: &str) -> Self {
        self.env.push((name.to_owned(), value.to_owned()));
        self
    }

    /// Bytes for the program's standard input.
    pub fn stdin(mut self, input: impl Into<Vec<u8>>) -> Self {
        self.stdin = Some(input.into());
        self
    }

    /// Stop the program after `timeout` (the host also stops it at the call's deadline).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// Run it and wait for it.
    pub fn run(&self) -> Result<Output, ExecError> {
        imp::run(self)
    }
}

#[cfg(target_family = "wasm")]
mod imp {
    use super::{Command, ExecError, Output};
    use crate::__bindings::tenet::host::exec as wit;

    pub fn run(c: &Command) -> Result<Output, ExecError> {
        let cmd = wit::Command {
            program: c.program.clone(),
            args: c.args.clone(),
            cwd: c.cwd.clone(),
            env: c.env.clone(),
            stdin: c.stdin.clone(),
            timeout_ms: c
                .timeout
                .map(|t| u32::try_from(t.as_millis()).unwrap_or(u32::MAX)),
        };
        match wit::run(&cmd) {
            Ok(o) => Ok(Output {
                status: o.status,
                stdout: o.stdout,
                stderr: o.stderr,
                truncated: o.truncated,
                timed_out: o.timed_out,
            }),
            Err(wit::ExecError::Denied(m)) => Err(ExecError::Denied(m)),
            Err(wit::ExecError::NotFound(m)) => Err(ExecError::NotFound(m)),
            Err(wit::ExecError::Io(m)) => Err(ExecError::Io(m)),
        }
    }
}

#[cfg(not(target_family = "wasm"))]
mod imp {
    use super::{Command, ExecError, Output};
    use std::io::Write;
    use std::process::Stdio;

    /// Native stand-in for unit tests: runs the program directly (no grants, no timeout).
    pub fn run(c: &Command) -> Result<Output, ExecError> {
        let mut cmd = std::process::Command::new(&c.program);
        cmd.args(&c.args)
            .env_clear()
            .envs(c.env.iter().map(|(k, v)| (k, v)))
            .current_dir(c.cwd.as_deref().unwrap_or("/"))
            .stdin(if c.stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => ExecError::NotFound(format!("{}: {e}", c.program)),
            _ => ExecError::Io(format!("{}: {e}", c.program)),
        })?;
        if let (Some(input), Some(mut pipe)) = (&c.stdin, child.stdin.take()) {
            let _ = pipe.write_all(input);
        }
        let out = child
            .wait_with_output()
            .map_err(|e| ExecError::Io(format!("{}: {e}", c.program)))?;
        Ok(Output {
            status: out.status.code(),
            stdout: out.stdout,
            stderr: out.stderr,
            truncated: false,
            timed_out: false,
        })
    }

    #[cfg(test)]
    mod tests {
        use super::super::Command;

        #[test]
        fn runs_natively_with_input_and_status() {
            let out = Command::new("/bin/cat").stdin("hi").run().expect("cat");
            assert!(out.success());
            assert_eq!(out.stdout_text(), "hi");
            let out = Command::new("/bin/sh")
                .args(["-c", "exit 3"])
                .run()
                .expect("sh");
            assert_eq!(out.status, Some(3));
            assert!(Command::new("/nonexistent/x").run().is_err());
        }
    }
}
