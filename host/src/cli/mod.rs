//! The `clusterhost` command's work, one file per command group: main.rs
//! parses the arguments and calls these; each prints text (or the API's
//! JSON with `--json`) and returns the process's exit code.

pub mod cache;
pub mod cluster;
pub mod plugins;
mod render;
pub mod run;
pub mod signing;
pub mod strategy;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use serde_json::Value;

use crate::admin::client::{self, AdminClient, Answer, ClientError};

/// How to reach a node's admin API, from `--admin`, `--token-file` and `--json`.
#[derive(Debug, Clone)]
pub struct AdminTarget {
    /// The node's admin API URL.
    pub url: String,
    /// The token file given; when `None`, [`crate::home::TOKEN_FILE`] in the
    /// current directory is read if it exists.
    pub token_file: Option<PathBuf>,
    /// Print the API's JSON instead of text.
    pub json: bool,
}

impl AdminTarget {
    /// The token: from the file given (which must read), else from the
    /// current directory's `conf/admin.token` when it reads.
    pub fn token(&self) -> Result<Option<String>, ClientError> {
        match &self.token_file {
            Some(file) => Ok(Some(client::read_token_file(file)?)),
            None => Ok(client::read_token_file(Path::new(crate::home::TOKEN_FILE)).ok()),
        }
    }

    fn client(&self) -> Result<AdminClient, ClientError> {
        Ok(AdminClient::new(&self.url, self.token()?))
    }
}

/// Calls the API; prints its JSON with --json, else `text(answer)`. An
/// error (the server's message) goes to stderr with a non-zero exit code.
fn api(
    admin: &AdminTarget,
    call: impl FnOnce(&AdminClient) -> Result<Answer, ClientError>,
    text: impl FnOnce(&Answer) -> Result<(), ClientError>,
) -> ExitCode {
    match admin.client().and_then(|c| call(&c)) {
        Ok(answer) if admin.json => print_json(&answer.body),
        Ok(answer) => match text(&answer) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => fail(e.to_string()),
        },
        Err(e) => {
            if admin.json {
                if let ClientError::Api { body, .. } = &e {
                    print_error_body(body);
                }
            }
            fail(e.to_string())
        }
    }
}

fn print_error_body(body: &Value) {
    if let Ok(s) = serde_json::to_string_pretty(body) {
        println!("{s}");
    }
}

fn print_json<T: serde::Serialize>(value: &T) -> ExitCode {
    match serde_json::to_string_pretty(value) {
        Ok(s) => {
            println!("{s}");
            ExitCode::SUCCESS
        }
        Err(e) => fail(format!("could not encode JSON: {e}")),
    }
}

/// Prints `error: MESSAGE` to stderr; the exit code of a failed command.
pub fn fail(message: String) -> ExitCode {
    eprintln!("error: {message}");
    ExitCode::FAILURE
}
