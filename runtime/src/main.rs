//! The `tenet` binary: parse arguments, run, map the outcome to an exit code.
//! Exit codes: 0 success, 1 error, 2 changes present (`plan --detailed-exitcode`).

use std::process::ExitCode;

fn main() -> ExitCode {
    tenet::cli::main()
}
