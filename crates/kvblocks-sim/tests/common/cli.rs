//! Running the `kvsim` binary as a user would, and checking what it says.

use std::process::{Command, Output};

/// Runs `kvsim` with `args`.
pub fn kvsim(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_kvsim"))
        .args(args)
        .output()
        .expect("run kvsim")
}

/// What the run printed on stderr.
pub fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// Bad input: exit code 1 and exactly one error line, which contains `needle`.
pub fn assert_one_error_line(output: &Output, needle: &str) {
    assert_eq!(output.status.code(), Some(1), "{}", stderr(output));
    let text = stderr(output);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 1, "expected one error line, got: {text}");
    assert!(lines[0].starts_with("kvsim: error: "), "{text}");
    assert!(lines[0].contains(needle), "{needle:?} not in {text}");
}
