//! The command line: `sidecar [-c FILE] [-t] [-d] [-u]` runs (or tests) the proxy; subcommands
//! manage credentials (`sidecar credentials …`) and the database triggers (`sidecar db …`).
//!
//! Secrets are never taken from argv (it is visible in `ps` and shell history): values come from
//! stdin or a named environment variable, keys from the environment.

mod credentials;
mod database;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::anyhow;
use clap::{Parser, Subcommand, ValueEnum};

use crate::config::Config;
use crate::credentials::cipher::Format;
use crate::server::{self, RunOptions};

/// The config file used when neither `-c` nor [`CONFIG_ENV`] is given.
pub const DEFAULT_CONFIG_PATH: &str = "conf/gateway.yaml";
/// The environment variable naming the config file when `-c` is not given.
pub const CONFIG_ENV: &str = "SIDECAR_CONFIG";
/// Exit code when the database cannot be reached (the `db` and `credentials` commands).
pub const EXIT_DATABASE_UNREACHABLE: u8 = 3;
/// Where `rotate-key` reads the new salt key by default.
pub const DEFAULT_NEW_SALT_KEY_ENV: &str = "LITELLM_NEW_SALT_KEY";

/// Egress proxy for LLM providers: applications call it without a provider key, and it injects
/// the right credential for each route.
#[derive(Debug, Parser)]
#[command(name = "sidecar", version, about, after_help = AFTER_HELP)]
pub struct Cli {
    /// Configuration file (YAML). Relative paths inside it are resolved against its folder.
    /// Database subcommands use its `credentials.postgres` (else `DATABASE_URL`).
    #[arg(short = 'c', long = "conf", value_name = "FILE", env = CONFIG_ENV, default_value = DEFAULT_CONFIG_PATH, global = true)]
    pub conf: PathBuf,

    /// Test the configuration (local store, database, CA bundle) and exit: 0 when valid, 1 with
    /// every error listed when not.
    #[arg(short = 't', long = "test")]
    pub test: bool,

    /// Run in the background.
    #[arg(short = 'd', long = "daemon")]
    pub daemon: bool,

    /// Zero-downtime upgrade: take over the listening sockets of the running sidecar (send it
    /// SIGQUIT after this one starts).
    #[arg(short = 'u', long = "upgrade")]
    pub upgrade: bool,

    /// A subcommand instead of running the proxy.
    #[command(subcommand)]
    pub command: Option<Command>,
}

const AFTER_HELP: &str = "\
Environment:
  SIDECAR_CONFIG      the configuration file when -c is not given (default conf/gateway.yaml)
  LITELLM_SALT_KEY    key for LiteLLM-encrypted credentials (falls back to LITELLM_MASTER_KEY;
                      the variable name can be changed with credentials.salt_key_env)
  DATABASE_URL        LiteLLM's database when credentials.postgres.url is not set
  SSL_CERT_FILE       CA bundle for upstream TLS when upstream.ca_file is not set
  RUST_LOG            log filter; overrides log.level

Signals: SIGTERM graceful stop; SIGQUIT graceful stop handing listeners to a new process (-u);
SIGINT immediate stop.

Exit codes: 0 success; 1 failure (an invalid configuration, with every error listed, or any
other error); 2 wrong command-line usage; 3 the database cannot be reached (db and credentials
commands).";

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Work with stored credentials.
    #[command(subcommand)]
    Credentials(CredentialsCommand),
    /// Manage the database side of live refresh.
    #[command(subcommand)]
    Db(DbCommand),
}

/// `sidecar credentials …`
#[derive(Debug, Subcommand)]
pub enum CredentialsCommand {
    /// Encrypt a secret read from stdin (one trailing newline is dropped) and print its stored
    /// form, readable by LiteLLM and by the sidecar. The key comes from LITELLM_SALT_KEY (else
    /// LITELLM_MASTER_KEY).
    Encrypt {
        /// Stored format: nacl (what released LiteLLM writes; every release reads it), v2
        /// (read by LiteLLM 1.106.2 and 1.110.2), or v3 (no released LiteLLM reads it).
        #[arg(long, value_enum, default_value_t = FormatArg::Nacl)]
        format: FormatArg,
    },
    /// Write a credential row to LiteLLM_CredentialsTable (created or replaced), encrypted as
    /// LiteLLM does. The key is read from stdin, or from the variable named by --key-env.
    Put {
        /// Credential name.
        name: String,
        /// LiteLLM provider name (openai, anthropic, azure, gemini, …).
        #[arg(long)]
        provider: String,
        /// The provider's API base URL.
        #[arg(long)]
        api_base: Option<String>,
        /// API version (Azure).
        #[arg(long)]
        api_version: Option<String>,
        /// Read the key from this environment variable instead of stdin.
        #[arg(long, value_name = "VAR")]
        key_env: Option<String>,
        /// Stored format (see `encrypt`). By default the one the table's rows already use
        /// (the most common), and nacl, LiteLLM's own default, for an empty table.
        #[arg(long, value_enum)]
        format: Option<FormatArg>,
    },
    /// List credentials: name, provider, last update. Never values.
    List,
    /// Delete a credential row.
    Delete {
        /// Credential name.
        name: String,
    },
    /// Decrypt every credential and model row; list the ones that fail (exit 1 if any).
    Check,
    /// Re-encrypt every row from the current salt key to a new one, in one transaction. The new
    /// key is read from the variable named by --new-key-env.
    RotateKey {
        /// Environment variable holding the new salt key.
        #[arg(long, value_name = "VAR", default_value = DEFAULT_NEW_SALT_KEY_ENV)]
        new_key_env: String,
        /// Stored format of the re-encrypted values (see `encrypt`). By default each value
        /// keeps its own.
        #[arg(long, value_enum)]
        format: Option<FormatArg>,
    },
}

/// `sidecar db …`
#[derive(Debug, Subcommand)]
pub enum DbCommand {
    /// Install (idempotently) triggers that NOTIFY the sidecar's channel on any change to
    /// LiteLLM's credential and model tables. The payload is the table name, never a row.
    InstallNotify,
    /// Remove the triggers install-notify created.
    UninstallNotify,
}

/// `--format` values.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum FormatArg {
    /// `v3:gcm:` AES-256-GCM, HKDF-derived key.
    V3,
    /// `v2:gcm:` AES-256-GCM, SHA-256 key.
    V2,
    /// NaCl secretbox, url-safe base64.
    Nacl,
}

impl From<FormatArg> for Format {
    fn from(f: FormatArg) -> Format {
        match f {
            FormatArg::V3 => Format::V3,
            FormatArg::V2 => Format::V2,
            FormatArg::Nacl => Format::Nacl,
        }
    }
}

/// Hardens the process, parses the command line and runs what it asks for.
pub fn main() -> ExitCode {
    // First of all, before the config, the salt key or any credential is read.
    let hardening = crate::hardening::apply();
    let cli = Cli::parse();
    let result = match cli.command {
        Some(Command::Credentials(command)) => {
            crate::hardening::print_failures(&hardening);
            credentials::run(&cli.conf, command)
        }
        Some(Command::Db(command)) => {
            crate::hardening::print_failures(&hardening);
            database::run(&cli.conf, command)
        }
        None if cli.test => test_config(&cli.conf, &hardening),
        None => {
            let config = match Config::load(&cli.conf) {
                Ok(c) => c,
                Err(errors) => {
                    crate::hardening::print_failures(&hardening);
                    eprint!("{errors}");
                    return ExitCode::FAILURE;
                }
            };
            crate::logging::init(config.log.level, config.log.format, !cli.daemon);
            crate::otel::init(cli.daemon);
            crate::hardening::log_failures(&hardening);
            let options = RunOptions {
                upgrade: cli.upgrade,
                daemon: cli.daemon,
            };
            server::run(config, &cli.conf, options).map_err(anyhow::Error::from)
        }
    };
    // Whatever the logger still holds goes out before the last word.
    crate::logging::flush();
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("sidecar: {error:#}");
            let unreachable = error
                .chain()
                .filter_map(|cause| cause.downcast_ref::<crate::db::DbError>())
                .any(crate::db::DbError::is_unreachable);
            if unreachable {
                ExitCode::from(EXIT_DATABASE_UNREACHABLE)
            } else {
                ExitCode::FAILURE
            }
        }
    }
}

/// `-t`: validate the config, the local store and the CA bundle; try the database; report
/// (the start-up `hardening` failures among the warnings).
fn test_config(path: &std::path::Path, hardening: &[String]) -> anyhow::Result<()> {
    let config = Config::load(path).map_err(|errors| {
        crate::hardening::print_failures(hardening);
        anyhow!(errors.to_string().trim_end().to_string())
    })?;
    crate::logging::init(
        config.log.level.min(log::LevelFilter::Warn),
        config.log.format,
        false,
    );
    crate::hardening::log_failures(hardening);
    let targets = crate::upstream::Targets::standalone(&config.upstream)?;
    let targets = std::sync::Arc::new(targets);
    let routes = crate::routes::RouteTable::new(&config.routes, &targets, None);
    let cache = std::sync::Arc::new(crate::credentials::CredentialCache::default());
    runtime()?.block_on(async {
        let ctx = crate::sources::SourceContext {
            targets: targets.clone(),
            wake: std::sync::Arc::default(),
            hub: None,
            database: Default::default(),
        };
        let sources = crate::sources::credential_sources(&config, &ctx).await?;
        let refresher = crate::credentials::refresh::Refresher::new(
            cache.clone(),
            sources,
            crate::config::DEFAULT_REFRESH_INTERVAL,
            ctx.wake.clone(),
        );
        refresher.refresh().await;
        Ok::<_, anyhow::Error>(())
    })?;
    let snapshot = cache.snapshot();
    let router = crate::router::Router::default();
    let unserved = crate::sources::report_unserved_routes(&routes, &snapshot, &router);
    println!(
        "{}: configuration is valid ({} routes, {} credentials and {} models loaded, {unserved} \
         routes cannot be served now)",
        path.display(),
        config.routes.len(),
        snapshot.credentials.len(),
        snapshot.models.len(),
    );
    Ok(())
}

/// A runtime for one-shot work.
fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| anyhow!("cannot start runtime: {e}"))
}
