//! `sidecar credentials encrypt | put | list | delete | check | rotate-key`; `check` and
//! `rotate-key`, which read every stored value, are `recrypt`'s.

mod recrypt;

use std::io::{IsTerminal, Read};
use std::path::Path;

use anyhow::{anyhow, bail, Result};
use serde_json::{json, Map, Value};

use crate::config::DEFAULT_SALT_KEY_ENV;
use crate::credentials::cipher::{encrypt, format_of, Format, Keys};
use crate::credentials::values::ENV_REFERENCE_PREFIX;
use crate::credentials::{salt_key_from_env, Secret};
use crate::db::litellm;

use super::database::{context, DbContext};
use super::{runtime, CredentialsCommand};
use recrypt::{check, rotate_key};

/// `created_by` / `updated_by` on rows the CLI writes.
const ACTOR: &str = "sidecar-cli";

/// Runs a `credentials` subcommand.
pub fn run(conf: &Path, command: CredentialsCommand) -> Result<()> {
    match command {
        CredentialsCommand::Encrypt { format } => encrypt_stdin(format.into()),
        CredentialsCommand::Put {
            name,
            provider,
            api_base,
            api_version,
            key_env,
            format,
        } => {
            let fields = [("api_base", api_base), ("api_version", api_version)];
            put(
                conf,
                &name,
                &provider,
                &fields,
                key_env.as_deref(),
                format.map(Format::from),
            )
        }
        CredentialsCommand::List => list(conf),
        CredentialsCommand::Delete { name } => delete(conf, &name),
        CredentialsCommand::Check => {
            let ctx = context(conf)?;
            let keys = keys_from(&ctx.salt_key_env)?;
            with_db(&ctx, |client, schema| async move {
                check(&client, &schema, &keys).await
            })
        }
        CredentialsCommand::RotateKey {
            new_key_env,
            format,
        } => rotate_key(conf, &new_key_env, format.map(Format::from)),
    }
}

/// `encrypt`: prints the stored form of a secret read from stdin.
fn encrypt_stdin(format: Format) -> Result<()> {
    let keys = keys_from(DEFAULT_SALT_KEY_ENV)?;
    let secret = read_secret(None)?;
    println!("{}", encrypt(secret.expose(), format, &keys));
    Ok(())
}

/// `put`: writes credential `name` (key from `key_env` or stdin, and the optional plain
/// `fields`), each value encrypted in `format`, else in the table's format ([`table_format`]).
fn put(
    conf: &Path,
    name: &str,
    provider: &str,
    fields: &[(&str, Option<String>)],
    key_env: Option<&str>,
    format: Option<Format>,
) -> Result<()> {
    let ctx = context(conf)?;
    let keys = keys_from(&ctx.salt_key_env)?;
    let key = read_secret(key_env)?;
    let format = match format {
        Some(format) => format,
        None => {
            let (format, why) = with_db(&ctx, |client, schema| async move {
                let rows = litellm::fetch_credentials(&client, &schema).await?;
                Ok(table_format(&rows))
            })?;
            eprintln!(
                "format: {} ({why}; --format chooses another)",
                format.name()
            );
            format
        }
    };
    let mut values = Map::new();
    values.insert(
        "api_key".into(),
        encrypt(key.expose(), format, &keys).into(),
    );
    for (field, value) in fields {
        if let Some(v) = value {
            values.insert((*field).into(), encrypt(v, format, &keys).into());
        }
    }
    let info = json!({ "custom_llm_provider": provider });
    with_db(&ctx, |client, schema| async move {
        let values = Value::Object(values);
        litellm::upsert_credential(&client, &schema, name, &values, &info, ACTOR).await?;
        println!("credential {name} written");
        Ok(())
    })
}

/// The format most of the table's stored values use (ties go to the one more LiteLLM releases
/// read), else NaCl, LiteLLM's own default; with the reason, for the operator.
#[allow(
    clippy::expect_used,
    reason = "the counts list is a non-empty constant"
)]
fn table_format(rows: &[litellm::CredentialRow]) -> (Format, String) {
    let mut counts = [(Format::Nacl, 0usize), (Format::V2, 0), (Format::V3, 0)];
    let stored = rows
        .iter()
        .filter_map(|row| row.values.as_object())
        .flat_map(|values| values.values().filter_map(Value::as_str))
        .filter(|v| !v.starts_with(ENV_REFERENCE_PREFIX));
    for value in stored {
        let format = format_of(value);
        if let Some(count) = counts.iter_mut().find(|(f, _)| *f == format) {
            count.1 += 1;
        }
    }
    let total: usize = counts.iter().map(|(_, n)| n).sum();
    if total == 0 {
        return (
            Format::Nacl,
            "LiteLLM's default; the table has no encrypted values".into(),
        );
    }
    // `max_by_key` keeps the last of equals: reversed, that is the most widely read format.
    let (format, count) = counts
        .into_iter()
        .rev()
        .max_by_key(|(_, n)| *n)
        .expect("three formats");
    (
        format,
        format!("as {count} of the table's {total} encrypted values"),
    )
}

/// `list`: names, providers and update times; never values.
fn list(conf: &Path) -> Result<()> {
    let ctx = context(conf)?;
    with_db(&ctx, |client, schema| async move {
        let rows = litellm::list_credentials(&client, &schema).await?;
        println!("{:<32} {:<16} UPDATED", "NAME", "PROVIDER");
        for (name, provider, updated) in &rows {
            println!("{name:<32} {provider:<16} {updated}");
        }
        eprintln!("{} credential(s)", rows.len());
        Ok(())
    })
}

/// `delete`: removes credential `name`; an error when there is none.
fn delete(conf: &Path, name: &str) -> Result<()> {
    let ctx = context(conf)?;
    with_db(&ctx, |client, schema| async move {
        if !litellm::delete_credential(&client, &schema, name).await? {
            bail!("no credential named {name:?}");
        }
        println!("credential {name} deleted");
        Ok(())
    })
}

/// The keys derived from the salt key in `salt_key_env` (else `LITELLM_MASTER_KEY`), or an error
/// saying which variable to set.
fn keys_from(salt_key_env: &str) -> Result<Keys> {
    salt_key_from_env(salt_key_env)
        .map(|k| Keys::derive(&k))
        .ok_or_else(|| {
            anyhow!("set {salt_key_env} (or LITELLM_MASTER_KEY) to the key LiteLLM uses; it is read from the environment only")
        })
}

/// Runs `work` on a runtime of its own with one connection to the configured database and the
/// schema its tables are in.
fn with_db<F, Fut, T>(ctx: &DbContext, work: F) -> Result<T>
where
    F: FnOnce(tokio_postgres::Client, String) -> Fut,
    Fut: std::future::Future<Output = Result<T>>,
{
    runtime()?.block_on(async {
        let client = ctx.db.connect().await?;
        work(client, ctx.db.schema.clone()).await
    })
}

/// A secret from the variable `env_var`, else from stdin (one trailing newline dropped).
fn read_secret(env_var: Option<&str>) -> Result<Secret> {
    let raw = match env_var {
        Some(var) => {
            std::env::var(var).map_err(|_| anyhow!("environment variable {var} is not set"))?
        }
        None => {
            let stdin = std::io::stdin();
            if stdin.is_terminal() {
                eprintln!("Paste the secret, then press Enter and Ctrl-D:");
            }
            let mut raw = String::new();
            stdin
                .lock()
                .read_to_string(&mut raw)
                .map_err(|e| anyhow!("cannot read the secret from stdin: {e}"))?;
            raw
        }
    };
    let raw = Secret::new(raw);
    let value = raw.expose();
    let value = value
        .strip_suffix("\r\n")
        .or_else(|| value.strip_suffix('\n'))
        .unwrap_or(value);
    if value.is_empty() {
        bail!("the secret is empty");
    }
    if value.chars().any(char::is_control) {
        bail!("the secret contains control characters (CR, LF, tab, …); refusing it");
    }
    Ok(Secret::new(value.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(values: Value) -> litellm::CredentialRow {
        litellm::CredentialRow {
            name: "c".into(),
            values,
            info: None,
        }
    }

    #[test]
    fn the_table_format_is_the_most_common_and_ties_go_to_the_most_widely_read() {
        assert_eq!(table_format(&[]).0, Format::Nacl);
        let env_only = row(json!({ "api_key": "os.environ/KEY" }));
        assert_eq!(table_format(&[env_only]).0, Format::Nacl);
        let v2 = row(json!({ "api_key": "v2:gcm:AAAA", "api_base": "v2:gcm:BBBB" }));
        let nacl = row(json!({ "api_key": "c2VjcmV0" }));
        assert_eq!(table_format(&[v2, nacl.clone()]).0, Format::V2);
        let v3 = row(json!({ "api_key": "v3:gcm:AAAA" }));
        assert_eq!(table_format(&[v3, nacl]).0, Format::Nacl);
    }
}
