//! `credentials check` and `credentials rotate-key`: every stored value of LiteLLM's two tables
//! decrypted with the current salt key and, for `rotate-key`, re-encrypted with the new one in
//! one transaction (nothing changes unless every row decrypts).

use std::path::Path;

use anyhow::{anyhow, bail, Result};
use serde_json::{Map, Value};

use super::{keys_from, with_db, ACTOR};
use crate::cli::database::context;
use crate::credentials::cipher::{decrypt, encrypt, format_of, Format, Keys};
use crate::credentials::models::params_object;
use crate::credentials::values::ENV_REFERENCE_PREFIX;
use crate::credentials::Secret;
use crate::db::{litellm, DbError};

/// `rotate-key`: re-encrypts every row from the current salt key to the one in `new_key_env`.
pub(super) fn rotate_key(conf: &Path, new_key_env: &str, format: Option<Format>) -> Result<()> {
    let ctx = context(conf)?;
    let old = keys_from(&ctx.salt_key_env)?;
    let new = std::env::var(new_key_env)
        .ok()
        .filter(|k| !k.is_empty())
        .map(|k| Keys::derive(&Secret::new(k)))
        .ok_or_else(|| anyhow!("set {new_key_env} to the new salt key"))?;
    with_db(&ctx, |mut client, schema| async move {
        rotate(&mut client, &schema, &old, &new, format).await
    })
}

/// Decrypts every string of every row; prints the failures by row and field.
pub(super) async fn check(
    client: &tokio_postgres::Client,
    schema: &str,
    keys: &Keys,
) -> Result<()> {
    let blocked = litellm::has_blocked_column(client, schema).await?;
    let mut rows = 0;
    let mut failures = Vec::new();
    for row in litellm::fetch_credentials(client, schema).await? {
        rows += 1;
        if let Err(e) = row
            .values
            .as_object()
            .ok_or("credential_values is not an object".to_string())
            .and_then(|v| recrypt_map(v, keys, None))
        {
            failures.push(format!("credential {}: {e}", row.name));
        }
    }
    for row in litellm::fetch_models(client, schema, blocked).await? {
        rows += 1;
        if let Err(e) = params_object(&row.params).and_then(|p| recrypt_map(&p, keys, None)) {
            failures.push(format!("model {} ({}): {e}", row.name, row.id));
        }
    }
    for line in &failures {
        println!("FAIL {line}");
    }
    println!("{rows} rows checked, {} failed", failures.len());
    if failures.is_empty() {
        Ok(())
    } else if failures.len() == rows {
        bail!("every row failed: the salt key is probably wrong")
    } else {
        bail!("{} row(s) cannot be decrypted", failures.len())
    }
}

/// Decrypts every encrypted string of `values` with `from`; with `to`, returns the object
/// re-encrypted. Environment references and non-strings are kept as they are.
fn recrypt_map(
    values: &Map<String, Value>,
    from: &Keys,
    to: Option<(&Keys, Option<Format>)>,
) -> Result<Map<String, Value>, String> {
    let mut out = Map::new();
    for (field, value) in values {
        let new = match value.as_str() {
            Some(stored) if !stored.starts_with(ENV_REFERENCE_PREFIX) => {
                let plain = decrypt(stored, from).map_err(|e| format!("{field}: {e}"))?;
                match to {
                    Some((keys, format)) => {
                        let format = format.unwrap_or_else(|| format_of(stored));
                        Value::String(encrypt(plain.expose(), format, keys))
                    }
                    None => value.clone(),
                }
            }
            _ => value.clone(),
        };
        out.insert(field.clone(), new);
    }
    Ok(out)
}

/// Re-encrypts every row from `old` to `new` in one transaction; nothing changes unless every
/// row decrypts.
async fn rotate(
    client: &mut tokio_postgres::Client,
    schema: &str,
    old: &Keys,
    new: &Keys,
    format: Option<Format>,
) -> Result<()> {
    let tx = client
        .transaction()
        .await
        .map_err(|e| DbError::query("cannot start a transaction", &e))?;
    let lock = format!(
        "LOCK TABLE {}, {} IN SHARE ROW EXCLUSIVE MODE",
        crate::db::sql::table(schema, litellm::CREDENTIALS_TABLE),
        crate::db::sql::table(schema, litellm::MODELS_TABLE)
    );
    tx.batch_execute(&lock)
        .await
        .map_err(|e| DbError::query("cannot lock LiteLLM's tables", &e))?;
    let credentials = litellm::fetch_credentials(&tx, schema).await?;
    // Blocked deployments too: they must still decrypt if they are unblocked later.
    let models = litellm::fetch_models(&tx, schema, false).await?;
    let mut failures = Vec::new();
    let mut credential_updates = Vec::new();
    for row in &credentials {
        match row
            .values
            .as_object()
            .ok_or("credential_values is not an object".to_string())
            .and_then(|v| recrypt_map(v, old, Some((new, format))))
        {
            Ok(values) => credential_updates.push((row.name.clone(), Value::Object(values))),
            Err(e) => failures.push(format!("credential {}: {e}", row.name)),
        }
    }
    let mut model_updates = Vec::new();
    for row in &models {
        let recrypted =
            params_object(&row.params).and_then(|p| recrypt_map(&p, old, Some((new, format))));
        match recrypted {
            // Keep the shape LiteLLM stored: an object stays an object, a string stays a string.
            Ok(params) if row.params.is_string() => model_updates.push((
                row.id.clone(),
                Value::String(Value::Object(params).to_string()),
            )),
            Ok(params) => model_updates.push((row.id.clone(), Value::Object(params))),
            Err(e) => failures.push(format!("model {} ({}): {e}", row.name, row.id)),
        }
    }
    if !failures.is_empty() {
        for line in &failures {
            eprintln!("FAIL {line}");
        }
        bail!(
            "{} row(s) do not decrypt with the current key; nothing was changed",
            failures.len()
        );
    }
    for (name, values) in &credential_updates {
        litellm::update_credential_values(&tx, schema, name, values, ACTOR).await?;
    }
    for (id, params) in &model_updates {
        litellm::update_model_params(&tx, schema, id, params, ACTOR).await?;
    }
    tx.commit()
        .await
        .map_err(|e| DbError::query("cannot commit", &e))?;
    println!(
        "re-encrypted {} credential row(s) and {} model row(s); restart or reconfigure every reader with the new key",
        credential_updates.len(),
        model_updates.len()
    );
    Ok(())
}
