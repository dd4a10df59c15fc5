//! Reading a password on the command line (`vigil user add`): typed at a terminal after a
//! prompt, without echo and twice; or the first line of a pipe or file, for scripts.
//!
//! Echo is turned off before the prompt is written, so nothing typed after the prompt appears,
//! and back on when the reading ends, on every path. This module must never write a password
//! anywhere.

use std::io::{BufRead, IsTerminal as _, Write as _};
use std::os::fd::AsFd;

use nix::sys::termios::{LocalFlags, SetArg, Termios, tcgetattr, tcsetattr};

/// Why no password was read.
#[derive(Debug, thiserror::Error)]
pub enum PasswordError {
    #[error("cannot read the password from standard input: {0}")]
    Io(#[from] std::io::Error),
    #[error("no password on standard input (give it on the first line)")]
    Missing,
    #[error("the two passwords typed differ; nothing was changed")]
    Mismatch,
}

/// Reads a password from standard input. At a terminal: `prompt`, then `Again: `, on standard
/// error, echo off, and both answers must match. Otherwise: the first line (without its line
/// ending).
pub fn read_password(prompt: &str) -> Result<String, PasswordError> {
    let stdin = std::io::stdin();
    if !stdin.is_terminal() {
        return first_line(&mut stdin.lock());
    }
    let _quiet = Quiet::on(stdin.as_fd())?;
    let first = ask(prompt)?;
    let again = ask("Again: ")?;
    if first != again {
        return Err(PasswordError::Mismatch);
    }
    Ok(first)
}

fn ask(prompt: &str) -> Result<String, PasswordError> {
    let mut err = std::io::stderr().lock();
    err.write_all(prompt.as_bytes())?;
    err.flush()?;
    first_line(&mut std::io::stdin().lock())
}

fn first_line(input: &mut impl BufRead) -> Result<String, PasswordError> {
    let mut line = String::new();
    if input.read_line(&mut line)? == 0 {
        return Err(PasswordError::Missing);
    }
    Ok(line.trim_end_matches(['\r', '\n']).to_owned())
}

/// The terminal without echo (the Enter key still shows as a new line) until dropped.
struct Quiet {
    saved: Termios,
}

impl Quiet {
    fn on(fd: impl AsFd) -> std::io::Result<Quiet> {
        let saved = tcgetattr(&fd)?;
        let mut quiet = saved.clone();
        quiet.local_flags.remove(LocalFlags::ECHO);
        quiet.local_flags.insert(LocalFlags::ECHONL);
        // Flush: what was typed before the prompt (and echoed) is not taken as the password.
        tcsetattr(&fd, SetArg::TCSAFLUSH, &quiet)?;
        Ok(Quiet { saved })
    }
}

impl Drop for Quiet {
    fn drop(&mut self) {
        let _ = tcsetattr(std::io::stdin(), SetArg::TCSANOW, &self.saved);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pipe_gives_its_first_line() {
        let mut input = &b"a long enough password\r\nnext line\n"[..];
        assert_eq!(first_line(&mut input).unwrap(), "a long enough password");
        let mut input = &b"no line ending"[..];
        assert_eq!(first_line(&mut input).unwrap(), "no line ending");
        let mut input = &b""[..];
        assert!(matches!(
            first_line(&mut input),
            Err(PasswordError::Missing)
        ));
    }
}
