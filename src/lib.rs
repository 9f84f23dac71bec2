//! `sidecar`: a Pingora-based egress proxy that lets applications call LLM providers without
//! holding a provider key.
//!
//! Data path for one request: [`proxy`] (Pingora phases) → [`routes`] (which route) →
//! [`router`] (what serves it: the route's key or a model's deployment, from the lock-free
//! [`credentials`] snapshot of decrypted keys) → [`proxy::rewrite`] (strip the client's
//! credentials, inject the route's, per [`providers`]) → [`upstream`] (pooled, verified TLS to
//! the provider). Control path, off the request path: [`config`] at start, credential
//! loading into the snapshot, DNS refresh.

#![forbid(unsafe_code)]
#![deny(clippy::unwrap_used, clippy::expect_used)]

pub mod access;
pub mod admin;
pub mod aws;
pub mod cli;
pub mod config;
pub mod credentials;
pub mod db;
pub mod downstream;
pub mod fanout;
pub mod hardening;
pub mod identity;
pub mod jitter;
pub mod live_config;
pub mod logging;
pub mod metrics;
pub mod minted;
pub mod named_state;
pub mod otel;
pub mod percent;
pub mod providers;
pub mod proxy;
pub mod router;
pub mod routes;
pub mod secret;
pub mod server;
pub mod sources;
pub mod spend;
pub mod upstream;
