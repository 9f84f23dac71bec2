//! The load benchmark's baseline: a bare Pingora proxy doing the least the sidecar does. One
//! `ProxyHttp` sends every request to one upstream over verified TLS with Pingora's keepalive
//! pool, removes the route prefix and sets `Authorization`. No routing, access checks, logging,
//! metrics, connection cap or credential store: what is left is Pingora's own cost, so
//! "sidecar minus bare" is the sidecar's.
//!
//! ```text
//! cargo run --release --example bare_pingora -- --listen 127.0.0.1:18446 \
//!     --upstream 127.0.0.1:18447 --sni localhost --ca /tmp/bench-ca.pem --key sk-bench \
//!     [--strip-prefix /openai] [--threads 2] [--h2 STREAMS] [--timeouts] \
//!     [--client-read-buffer BYTES]
//! ```
//!
//! `--timeouts` sets the sidecar's default upstream timeouts (connect 5 s, connect and TLS 10 s,
//! read 600 s, write 60 s, idle 90 s), so that their cost can be told apart from the sidecar's
//! own.
//!
//! It allocates with jemalloc, as the sidecar does (`src/main.rs`): with glibc's malloc bare
//! Pingora spent ~21k instructions per request in the allocator against the sidecar's ~8k, so a
//! baseline on another allocator hid part of the sidecar's own cost.
//!
//! `--client-read-buffer BYTES` sets the read buffer Pingora puts under each client connection
//! (default: Pingora's, 64 KiB; the sidecar's plain listeners use 0), to measure what it costs a
//! held stream.
//!
//! `--h2 STREAMS` offers HTTP/2 to the upstream (ALPN `h2`, falling back to HTTP/1.1) with up to
//! STREAMS requests at once on one connection: the measurement of HTTP/2 upstream in
//! benches/README.md.

use std::net::SocketAddr;
use std::sync::Arc;

use async_trait::async_trait;
use boring::x509::X509;
use pingora::http::RequestHeader;
use pingora::listeners::{L4BufferSettings, ListenerConfig};
use pingora::proxy::{ProxyHttp, Session};
use pingora::server::configuration::ServerConf;
use pingora::server::Server;
use pingora::upstreams::peer::HttpPeer;

#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// The proxy: where to send requests and the key to present.
struct Bare {
    upstream: SocketAddr,
    sni: String,
    ca: Arc<Box<[X509]>>,
    authorization: String,
    strip_prefix: String,
    /// With HTTP/2 upstream: the most streams on one connection (0: HTTP/1.1 only).
    h2_streams: usize,
    /// Set the sidecar's default upstream timeouts.
    timeouts: bool,
}

#[async_trait]
impl ProxyHttp for Bare {
    type CTX = ();

    fn new_ctx(&self) {}

    async fn upstream_peer(
        &self,
        _session: &mut Session,
        _ctx: &mut (),
    ) -> pingora::Result<Box<HttpPeer>> {
        let mut peer = HttpPeer::new(self.upstream, true, self.sni.clone());
        peer.options.verify_cert = true;
        peer.options.verify_hostname = true;
        peer.options.ca = Some(self.ca.clone());
        if self.timeouts {
            let secs = std::time::Duration::from_secs;
            peer.options.connection_timeout = Some(secs(5));
            peer.options.total_connection_timeout = Some(secs(10));
            peer.options.read_timeout = Some(secs(600));
            peer.options.write_timeout = Some(secs(60));
            peer.options.idle_timeout = Some(secs(90));
        }
        if self.h2_streams > 0 {
            peer.options.set_http_version(2, 1);
            peer.options.max_h2_streams = self.h2_streams;
        }
        Ok(Box::new(peer))
    }

    async fn upstream_request_filter(
        &self,
        _session: &mut Session,
        request: &mut RequestHeader,
        _ctx: &mut (),
    ) -> pingora::Result<()> {
        let path = request.uri.path();
        if let Some(rest) = path.strip_prefix(self.strip_prefix.as_str()) {
            let rest = rest.to_string();
            request.set_uri(rest.parse().expect("a path"));
        }
        request.insert_header("authorization", self.authorization.as_str())?;
        Ok(())
    }
}

fn main() {
    let mut args = std::env::args().skip(1);
    let (mut listen, mut upstream, mut sni, mut ca, mut key) = (None, None, None, None, None);
    let (mut strip_prefix, mut threads, mut h2_streams) = (String::new(), 2usize, 0usize);
    let mut timeouts = false;
    let mut client_read_buffer = None;
    while let Some(flag) = args.next() {
        if flag == "--timeouts" {
            timeouts = true;
            continue;
        }
        let value = args
            .next()
            .unwrap_or_else(|| panic!("{flag} needs a value"));
        match flag.as_str() {
            "--listen" => listen = Some(value),
            "--upstream" => {
                upstream = Some(value.parse::<SocketAddr>().expect("--upstream IP:PORT"))
            }
            "--sni" => sni = Some(value),
            "--ca" => ca = Some(value),
            "--key" => key = Some(value),
            "--strip-prefix" => strip_prefix = value,
            "--threads" => threads = value.parse().expect("--threads N"),
            "--h2" => h2_streams = value.parse().expect("--h2 STREAMS"),
            "--client-read-buffer" => {
                client_read_buffer = Some(value.parse().expect("--client-read-buffer BYTES"))
            }
            other => panic!("unknown flag {other}"),
        }
    }
    let pem = std::fs::read(ca.expect("--ca FILE")).expect("read the CA file");
    let ca = X509::stack_from_pem(&pem).expect("a PEM bundle");
    let bare = Bare {
        upstream: upstream.expect("--upstream IP:PORT"),
        sni: sni.unwrap_or_else(|| "localhost".to_string()),
        ca: Arc::new(ca.into_boxed_slice()),
        authorization: format!("Bearer {}", key.expect("--key KEY")),
        strip_prefix,
        h2_streams,
        timeouts,
    };
    let conf = ServerConf {
        threads,
        grace_period_seconds: Some(1),
        graceful_shutdown_timeout_seconds: Some(1),
        ..ServerConf::default()
    };
    let mut server = Server::new_with_opt_and_conf(None, conf);
    server.bootstrap();
    let mut proxy = pingora::proxy::http_proxy_service(&server.configuration, bare);
    let buffers = L4BufferSettings {
        read: client_read_buffer,
        ..Default::default()
    };
    proxy.add_listener(ListenerConfig::tcp(listen.expect("--listen IP:PORT")).l4_buffer(buffers));
    server.add_service(proxy);
    server.run_forever();
}
