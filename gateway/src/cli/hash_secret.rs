//! `odf-gateway hash-secret`: the forms of a secret the configuration holds, so that no
//! secret is ever written there in clear.

use std::io::Read;

use anyhow::{Context as _, bail};

use super::{Context, output};
use crate::access::{hash_password, token_digest};

/// Read a password or token from standard input (one line) and print its argon2 hash (for
/// `password_hash`) and its SHA-256 digest (for `token_sha256`).
#[derive(Debug, clap::Args)]
pub struct Args {}

pub fn run(_ctx: &Context, _args: Args) -> anyhow::Result<()> {
    let mut secret = String::new();
    std::io::stdin().read_to_string(&mut secret).context("read the secret from stdin")?;
    let secret = secret.trim_end_matches(['\r', '\n']);
    if secret.is_empty() {
        bail!("no secret on standard input (e.g. `echo -n 's3cret' | odf-gateway hash-secret`)");
    }
    let hash = hash_password(secret.as_bytes()).map_err(anyhow::Error::msg)?;
    output::line(format!("password_hash = \"{hash}\""))?;
    output::line(format!("token_sha256 = [\"{}\"]", token_digest(secret)))
}
