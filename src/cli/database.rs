//! Which database the CLI talks to, and `sidecar db install-notify | uninstall-notify`.

use std::path::Path;

use anyhow::{anyhow, Result};

use crate::config::{
    Config, DATABASE_URL_ENV, DEFAULT_DB_CONNECT_TIMEOUT, DEFAULT_DB_SCHEMA,
    DEFAULT_NOTIFY_CHANNEL, DEFAULT_SALT_KEY_ENV,
};
use crate::credentials::Secret;
use crate::db::{litellm, Database};

use super::{runtime, DbCommand};

/// The database, channel and salt-key variable the CLI works with.
pub struct DbContext {
    /// The database.
    pub db: Database,
    /// The NOTIFY channel.
    pub channel: String,
    /// The variable holding the salt key.
    pub salt_key_env: String,
}

/// From the config file's `credentials.postgres` when the file exists and has one; else from
/// `DATABASE_URL` (schema `public`).
pub fn context(conf: &Path) -> Result<DbContext> {
    if conf.exists() {
        let config =
            Config::load(conf).map_err(|e| anyhow!(e.to_string().trim_end().to_string()))?;
        if let Some(pg) = &config.credentials.postgres {
            return Ok(DbContext {
                db: Database::new(&pg.url, &pg.schema, pg.ca_file.as_ref(), pg.connect_timeout)?,
                channel: pg.channel.clone(),
                salt_key_env: config.credentials.salt_key_env.clone(),
            });
        }
    }
    let url = std::env::var(DATABASE_URL_ENV)
        .ok()
        .filter(|u| !u.is_empty())
        .ok_or_else(|| {
            anyhow!(
                "no database: {} has no credentials.postgres section and {DATABASE_URL_ENV} is not set",
                conf.display()
            )
        })?;
    Ok(DbContext {
        db: Database::new(
            &Secret::new(url),
            DEFAULT_DB_SCHEMA,
            None,
            DEFAULT_DB_CONNECT_TIMEOUT,
        )?,
        channel: DEFAULT_NOTIFY_CHANNEL.to_string(),
        salt_key_env: DEFAULT_SALT_KEY_ENV.to_string(),
    })
}

/// Runs a `db` subcommand.
pub fn run(conf: &Path, command: DbCommand) -> Result<()> {
    let ctx = context(conf)?;
    runtime()?.block_on(async {
        let client = ctx.db.connect().await?;
        let schema = &ctx.db.schema;
        match command {
            DbCommand::InstallNotify => {
                litellm::install_notify(&client, schema, &ctx.channel).await?;
                println!(
                    "installed NOTIFY triggers on {schema}.{} and {schema}.{} (channel {})",
                    litellm::CREDENTIALS_TABLE,
                    litellm::MODELS_TABLE,
                    ctx.channel
                );
            }
            DbCommand::UninstallNotify => {
                litellm::uninstall_notify(&client, schema).await?;
                println!("removed the NOTIFY triggers from schema {schema}");
            }
        }
        Ok::<_, anyhow::Error>(())
    })
}
