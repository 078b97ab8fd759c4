//! A client for HAProxy's runtime API (the stats socket).
//!
//! In non-interactive mode HAProxy answers one command and closes, so each call
//! opens a connection, writes the command and a LF, and reads to EOF.

use crate::error::{HarnessError, Result};
use crate::show_table::{TableDump, TableInfo, parse_table_dump, parse_table_list};
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// How long one runtime API command may take.
pub const CLI_TIMEOUT: Duration = Duration::from_secs(5);

/// A handle on one HAProxy stats socket.
#[derive(Debug, Clone)]
pub struct RuntimeApi {
    path: PathBuf,
}

impl RuntimeApi {
    /// A client for the unix socket at `path`.
    pub fn new(path: impl Into<PathBuf>) -> RuntimeApi {
        RuntimeApi { path: path.into() }
    }

    /// The socket path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Sends one command (without its LF) and returns the whole answer.
    pub fn command(&self, cmd: &str) -> Result<String> {
        let ctx = |what: &str| format!("{what} {} (`{cmd}`)", self.path.display());
        let mut s = UnixStream::connect(&self.path)
            .map_err(|e| HarnessError::io(ctx("connecting to"), e))?;
        s.set_read_timeout(Some(CLI_TIMEOUT))
            .and_then(|()| s.set_write_timeout(Some(CLI_TIMEOUT)))
            .map_err(|e| HarnessError::io(ctx("setting timeouts on"), e))?;
        s.write_all(format!("{cmd}\n").as_bytes())
            .map_err(|e| HarnessError::io(ctx("writing to"), e))?;
        let mut out = Vec::new();
        s.read_to_end(&mut out)
            .map_err(|e| HarnessError::io(ctx("reading from"), e))?;
        Ok(String::from_utf8_lossy(&out).into_owned())
    }

    /// Sends a command that answers nothing on success (`set table`, `clear table`),
    /// and turns any non-empty answer into an error.
    pub fn command_ok(&self, cmd: &str) -> Result<()> {
        let answer = self.command(cmd)?;
        if answer.trim().is_empty() {
            Ok(())
        } else {
            Err(HarnessError::Cli {
                command: cmd.to_owned(),
                answer: answer.trim().to_owned(),
            })
        }
    }

    /// `show table`: every table of the process.
    pub fn show_tables(&self) -> Result<Vec<TableInfo>> {
        parse_table_list(&self.command("show table")?)
    }

    /// `show table <name>`: the table's header and entries.
    pub fn show_table(&self, name: &str) -> Result<TableDump> {
        let cmd = format!("show table {name}");
        let answer = self.command(&cmd)?;
        if !answer.starts_with("# table:") {
            return Err(HarnessError::Cli {
                command: cmd,
                answer: answer.trim().to_owned(),
            });
        }
        parse_table_dump(&answer)
    }

    /// `set table <table> key <key> data.<type> <value> ...`. Values are given as
    /// (`type`, `value`) pairs, e.g. `("http_req_rate", "42")`.
    pub fn set_table(&self, table: &str, key: &str, data: &[(&str, &str)]) -> Result<()> {
        self.command_ok(&set_table_command(table, key, data))
    }
}

/// Builds a `set table` command line.
pub fn set_table_command(table: &str, key: &str, data: &[(&str, &str)]) -> String {
    let mut cmd = format!("set table {table} key {key}");
    for (t, v) in data {
        cmd.push_str(&format!(" data.{t} {v}"));
    }
    cmd
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builds_set_table() {
        assert_eq!(
            set_table_command("p/t", "1.2.3.4", &[("gpc0", "1"), ("http_req_rate", "42")]),
            "set table p/t key 1.2.3.4 data.gpc0 1 data.http_req_rate 42"
        );
    }

    #[test]
    fn missing_socket_is_an_error() {
        let api = RuntimeApi::new("/nonexistent/stktagg.sock");
        let err = api.command("show info").unwrap_err();
        assert!(
            err.to_string().contains("/nonexistent/stktagg.sock"),
            "{err}"
        );
    }
}
