//! The credential sources a config asks for, built the same way at start, on SIGHUP and by
//! `sidecar -t`: the local store, LiteLLM's database (over one session), a fan-out server. Also
//! the start-up and reload report of routes that cannot be served yet.

use std::sync::Arc;

use arc_swap::ArcSwapOption;

use tracing::warn;

use crate::config::{Backend, Config};
use crate::credentials::cipher::Keys;
use crate::credentials::local::LocalStore;
use crate::credentials::postgres::PostgresSource;
use crate::credentials::rows::RowsSink;
use crate::credentials::source::{CredentialSource, LoadError};
use crate::credentials::{salt_key_from_env, Snapshot};
use crate::db::session::{ListenSettings, Session};
use crate::db::{Database, DbError};
use crate::fanout::watch::{WatchError, WatchSource};
use crate::fanout::FanoutHub;
use crate::router::{bind, Router};
use crate::routes::RouteTable;
use crate::upstream::Targets;

/// Why the credential sources cannot be built.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// The database settings (connection string, TLS options).
    #[error(transparent)]
    Database(#[from] DbError),
    /// The local store cannot be read or parsed.
    #[error(transparent)]
    Local(LoadError),
    /// The `credentials.watch` settings (token, certificates).
    #[error(transparent)]
    Watch(WatchError),
}

/// The database configured in `config`, if any.
pub fn database(config: &Config) -> Result<Option<Database>, DbError> {
    config
        .credentials
        .postgres
        .as_ref()
        .map(|pg| Database::new(&pg.url, &pg.schema, pg.ca_file.as_ref(), pg.connect_timeout))
        .transpose()
}

/// What credential sources are built with; lives as long as the process (reloads reuse it).
#[derive(Clone)]
pub struct SourceContext {
    /// Upstream endpoints; deployments register theirs here.
    pub targets: Arc<Targets>,
    /// Wakes the refresher (NOTIFY, a lost connection, a new fan-out snapshot).
    pub wake: Arc<tokio::sync::Notify>,
    /// Where the database rows go when this instance serves other sidecars.
    pub hub: Option<Arc<FanoutHub>>,
    /// The database session of the Postgres source last built (the spend writer writes on it,
    /// so that a sidecar holds one connection, not two).
    pub database: Arc<ArcSwapOption<Session>>,
}

/// The salt-key-derived keys, when a salt key is set.
pub fn keys(config: &Config) -> Option<Keys> {
    salt_key_from_env(&config.credentials.salt_key_env).map(|k| Keys::derive(&k))
}

/// The configured credential sources, in precedence order (the database or fan-out server wins
/// on a name clash). The local store is read once here so that a malformed file stops the start.
pub async fn credential_sources(
    config: &Config,
    ctx: &SourceContext,
) -> Result<Vec<Box<dyn CredentialSource>>, SourceError> {
    let mut sources: Vec<Box<dyn CredentialSource>> = Vec::new();
    if let Some(path) = &config.credentials.local {
        let local = LocalStore::new(path, keys(config), ctx.targets.clone());
        local.load().await.map_err(SourceError::Local)?;
        sources.push(Box::new(local));
    }
    if let (Some(db), Some(pg)) = (database(config)?, &config.credentials.postgres) {
        let listen = pg.listen.then(|| ListenSettings {
            channel: pg.channel.clone(),
            jitter: pg.notify_jitter,
        });
        let session = Arc::new(Session::new(db, listen, pg.query_timeout, ctx.wake.clone()));
        ctx.database.store(Some(session.clone()));
        let source = PostgresSource::new(
            session,
            keys(config),
            ctx.targets.clone(),
            pg.full_check_interval,
            ctx.hub.clone().map(|hub| hub as Arc<dyn RowsSink>),
        );
        let serve_keys = config
            .fanout
            .as_ref()
            .is_some_and(|f| f.watchers.iter().any(|w| w.litellm_keys.is_some()));
        sources.push(Box::new(
            source.with_litellm_keys(config.access.litellm_keys, serve_keys),
        ));
    }
    if let Some(watch) = &config.credentials.watch {
        let (credentials, models) = route_backends(config);
        sources.push(Box::new(
            WatchSource::new(
                watch,
                config.upstream.ca_file.as_ref(),
                &credentials,
                &models,
                config.access.litellm_keys.then_some(&watch.litellm_keys),
                keys(config),
                ctx.targets.clone(),
                ctx.wake.clone(),
            )
            .map_err(SourceError::Watch)?,
        ));
    }
    Ok(sources)
}

/// The credential names and model aliases the routes use (what a watcher asks for).
fn route_backends(config: &Config) -> (Vec<String>, Vec<String>) {
    let (mut credentials, mut models) = (Vec::new(), Vec::new());
    for route in &config.routes {
        let (list, name) = match &route.backend {
            Backend::Credential(name) => (&mut credentials, name),
            Backend::Model(name) => (&mut models, name),
            // Refused with a watcher by the config check: it needs every alias.
            Backend::RequestModel => continue,
        };
        if !list.contains(name) {
            list.push(name.clone());
        }
    }
    (credentials, models)
}

/// Warns about routes that cannot be served now, so the operator sees it at start rather than
/// at the first 503 (a `model:` route's deployment picked by `router`). Returns how many.
pub fn report_unserved_routes(routes: &RouteTable, snapshot: &Snapshot, router: &Router) -> usize {
    let mut unserved = 0;
    for route in routes.iter() {
        if let Err(unbound) = bind(route, snapshot, router) {
            unserved += 1;
            warn!("route {}: {}; requests answer 503", route.name, unbound);
        }
    }
    unserved
}
