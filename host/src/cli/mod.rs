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

use std::path::PathBuf;
use std::process::ExitCode;

use serde_json::Value;

use crate::admin::client::{AdminClient, Answer, ClientError};
use crate::admin::tokens::Tokens;

/// How to reach a node's admin API, from `--admin`, `--token-file`,
/// `--tokens` and `--json`.
#[derive(Debug, Clone)]
pub struct AdminTarget {
    /// The node's admin API URL.
    pub url: String,
    /// `--token-file`: one token for every node not in the token map.
    pub token_file: Option<PathBuf>,
    /// `--tokens`: a map of admin URLs to their tokens.
    pub tokens_file: Option<PathBuf>,
    /// Print the API's JSON instead of text.
    pub json: bool,
}

impl AdminTarget {
    /// Which token goes to which node (see [`crate::admin::tokens`]):
    /// the files given must read.
    pub fn tokens(&self) -> Result<Tokens, ClientError> {
        Tokens::load(self.token_file.as_deref(), self.tokens_file.as_deref())
    }

    /// The token for the node at `--admin`, if any.
    pub fn token(&self) -> Result<Option<String>, ClientError> {
        Ok(self.tokens()?.for_url(&self.url))
    }

    pub(crate) fn client(&self) -> Result<AdminClient, ClientError> {
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
