//! The integration tests: one crate, one link step, a module per concern (as linkerd2-proxy
//! does). Each module starts the real `sidecar` binary (or the parts it tests) on 127.0.0.1
//! against the harness in [`support`]: a TLS mock provider, generated certificates, a real
//! PostgreSQL (a schema per test) and a relay that can cut or freeze it.
//!
//! Run one concern with `cargo test --test it proxy::`, one test by name as usual.

mod support;

mod access;
mod admin;
mod bedrock;
mod bedrock_spend;
mod bedrock_sts;
mod cipher_vectors;
mod cli;
mod client_connections;
mod connection_cap;
mod cost_parity;
mod dashboard;
mod entra_id;
mod fanout;
mod fanout_failover;
mod fanout_keys;
mod fanout_listener;
mod fanout_spend;
mod fanout_watch;
mod faults;
mod framing;
mod harness_selftest;
mod hostile_input;
mod http2_heads;
mod litellm_keys;
mod litellm_parity;
mod log_floods;
mod managed_identity;
mod messages_dispatch;
mod model_pinning;
mod no_secrets;
mod normalization;
mod openai_sdk;
mod otlp;
mod overload;
mod postgres;
mod postgres_cli;
mod postgres_refresh;
mod process_hardening;
mod properties;
mod proxy;
mod reload;
mod request_ids;
mod signals;
mod soak;
mod spend_rows;
mod spend_through_sidecar;
mod spend_writer;
mod stalled_database;
mod tls_listener;
mod unified;
mod unified_router;
mod upstream_tls;
mod url_secrets;
mod vertex;
