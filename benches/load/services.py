"""The processes under test: the benchmark provider, the sidecar, nginx and a bare Pingora proxy.

Each is started with a config written into the run's work directory, waited for until it
answers, and stopped (SIGTERM, then SIGKILL) when the run ends. Ports are fixed per run and
taken from 127.0.0.1 only.
"""

import json
import os
import random
import signal
import socket
import subprocess
import time
import urllib.request

PROVIDER_KEY = "sk-bench-provider-key"
ROUTE_PREFIX = "/openai"
# The sidecar's `dispatch: model` route: clients POST `{prefix}/chat/completions` with
# `"model": MODEL_ALIAS`; the sidecar rewrites it to DEPLOYMENT_MODEL (same length) and sends it
# to the provider's "sidecar-model" port, which answers 400 to a body without it.
MODEL_ROUTE_PREFIX = "/v1"
MODEL_ALIAS = "bench-alias"
DEPLOYMENT_MODEL = "bench-model"


# Ports handed out by `free_port`: below Linux's ephemeral range (32768 up), so that no outgoing
# connection (the benchmark opens thousands) takes one as its source port before its server binds it.
PORT_RANGE = (12_000, 32_000)
_next_port = [random.randrange(*PORT_RANGE)]


def free_port():
    """A TCP port on 127.0.0.1 that was free a moment ago and that this process has not handed
    out before: ports are taken in turn from a random start, each checked by binding it.
    (Binding port 0 could hand the same port out twice, and took it from the ephemeral range.)"""
    low, high = PORT_RANGE
    for _ in range(high - low):
        port = _next_port[0]
        _next_port[0] = low + (port + 1 - low) % (high - low)
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        return port
    raise RuntimeError(f"no free port in {PORT_RANGE} on 127.0.0.1")


def wait_until(what, check, timeout=30.0):
    """Polls `check()` until it is true; raises naming `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except OSError:
            pass
        time.sleep(0.05)
    raise RuntimeError(f"{what} did not come up within {timeout:.0f} s")


def port_open(port):
    with socket.create_connection(("127.0.0.1", port), timeout=1):
        return True


class Service:
    """A started process; `pids()` lists it and its children (nginx's workers)."""

    def __init__(self, name, argv, log_path, env=None):
        self.name = name
        self.log_path = log_path
        self._log = open(log_path, "wb")
        self.proc = subprocess.Popen(
            argv, stdout=self._log, stderr=subprocess.STDOUT, env=env, start_new_session=True
        )

    def pids(self):
        children = []
        try:
            with open(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children") as f:
                children = [int(p) for p in f.read().split()]
        except OSError:
            pass
        return [self.proc.pid] + children

    def check_alive(self):
        if self.proc.poll() is not None:
            raise RuntimeError(
                f"{self.name} exited with {self.proc.returncode}; see {self.log_path}"
            )

    def stop(self):
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self._log.close()


class Provider(Service):
    """The TLS benchmark provider (`examples/bench_provider.rs`), with one port per client
    (`CLIENTS`; "litellm" for the LLM benchmark's LiteLLM proxy) so that connections and
    handshakes are counted per path."""

    CLIENTS = ("direct", "sidecar", "sidecar-model", "nginx", "bare", "litellm")

    def __init__(self, binary, workdir, response_bytes, latency_ms, stream_events, stream_ms):
        self.ports = {client: free_port() for client in self.CLIENTS}
        self.stats_port = free_port()
        self.ca_file = os.path.join(workdir, "provider-ca.pem")
        listen = []
        for client, port in self.ports.items():
            listen += ["--listen", f"{client}=127.0.0.1:{port}"]
        argv = [
            binary,
            *listen,
            "--stats", f"127.0.0.1:{self.stats_port}",
            "--ca-out", self.ca_file,
            "--key", PROVIDER_KEY,
            "--expect-model", f"sidecar-model={DEPLOYMENT_MODEL}",
            "--response-bytes", str(response_bytes),
            "--latency-ms", str(latency_ms),
            "--stream-events", str(stream_events),
            "--stream-ms", str(stream_ms),
        ]
        super().__init__("bench_provider", argv, os.path.join(workdir, "provider.log"))
        wait_until("bench_provider", lambda: self.check_alive() or port_open(self.stats_port))

    def set_stream(self, events, ms):
        """From now on a streamed answer is `events` events over `ms` milliseconds."""
        request = urllib.request.Request(
            f"http://127.0.0.1:{self.stats_port}/stream?events={events}&ms={ms}", method="POST")
        with urllib.request.urlopen(request, timeout=5):
            pass

    def stats(self, reset_peak=False):
        """Counters by client name (see `CLIENTS`)."""
        path = "/reset-peak" if reset_peak else "/"
        request = urllib.request.Request(
            f"http://127.0.0.1:{self.stats_port}{path}", method="POST" if reset_peak else "GET"
        )
        with urllib.request.urlopen(request, timeout=5) as response:
            return json.load(response)


SIDECAR_CONFIG = """\
server:
  threads: {threads}
  grace_period: 1s
  graceful_shutdown_timeout: 1s
  pid_file: {workdir}/sidecar.pid
  upgrade_sock: {workdir}/sidecar-upgrade.sock
listeners:
  - address: "127.0.0.1:{port}"
upstream:
  ca_file: {ca_file}
  max_connections: {max_connections}
  keepalive_pool_size: {max_connections}
  pool_wait_timeout: {pool_wait}s
credentials:
  local: {workdir}/credentials.yaml
{postgres}routes:
  - name: openai
    path_prefix: {prefix}
    strip_prefix: true
    upstream: "https://localhost:{provider_port}"
    provider: openai
    credential: openai
  - name: unified
    path_prefix: {model_prefix}
    dispatch: model
limits:
  # Above the 1,500 concurrent streams of the overflow run (the default, 1,024, would refuse
  # the rest at accept: that is the client cap's job, not what this run measures).
  max_client_connections: 4096
{access}admin:
  address: "127.0.0.1:{admin_port}"
log:
  level: {log_level}
"""

# With LiteLLM virtual keys (`compare.py --litellm-keys`): the key and team tables come from the
# database; its credential and model tables are empty, so the routes' credential and deployment
# are still the local store's.
KEYS_POSTGRES = """\
  postgres:
    url: "{url}"
    schema: {schema}
"""
KEYS_ACCESS = """\
access:
  litellm_keys: true
"""


def spend_section(enabled, flush_interval):
    """The `spend:` section: off (`compare.py --spend-off`), a flush interval
    (`budget.py`), or nothing (the defaults)."""
    if not enabled:
        return "spend:\n  enabled: false\n"
    if flush_interval:
        return f"spend:\n  flush_interval: {flush_interval}\n"
    return ""

CREDENTIALS = """\
credential_list:
  - credential_name: openai
    credential_values:
      api_key: os.environ/BENCH_PROVIDER_KEY
    credential_info:
      custom_llm_provider: openai
model_list:
  - model_name: {alias}
    litellm_params:
      model: openai/{model}
      api_base: "https://localhost:{provider_port}/v1"
      api_key: os.environ/BENCH_PROVIDER_KEY
      input_cost_per_token: 0.0000025
      output_cost_per_token: 0.00001
"""


class Sidecar(Service):
    """The sidecar under test, plain HTTP in, verified TLS keepalive out. Two routes to the same
    provider: `ROUTE_PREFIX` with a credential (its "sidecar" port) and `MODEL_ROUTE_PREFIX`,
    `dispatch: model` over a local `model_list` deployment (its "sidecar-model" port).
    `litellm_keys=(url, schema)` adds `access.litellm_keys: true` with that database (spend
    written back unless `spend=False`, every `flush_interval` when given; `listen=True` for
    the NOTIFY triggers `sidecar db install-notify` installs)."""

    def __init__(self, binary, workdir, provider, threads, max_connections, pool_wait,
                 log_level, name="sidecar", litellm_keys=None, spend=True, listen=False,
                 flush_interval=None):
        self.port = free_port()
        self.admin_port = free_port()
        config = os.path.join(workdir, f"{name}.yaml")
        with open(os.path.join(workdir, "credentials.yaml"), "w") as f:
            f.write(CREDENTIALS.format(alias=MODEL_ALIAS, model=DEPLOYMENT_MODEL,
                                       provider_port=provider.ports["sidecar-model"]))
        with open(config, "w") as f:
            f.write(SIDECAR_CONFIG.format(
                threads=threads, workdir=workdir, port=self.port, ca_file=provider.ca_file,
                max_connections=max_connections, pool_wait=pool_wait, prefix=ROUTE_PREFIX,
                model_prefix=MODEL_ROUTE_PREFIX,
                provider_port=provider.ports["sidecar"], admin_port=self.admin_port, log_level=log_level,
                postgres=KEYS_POSTGRES.format(url=litellm_keys[0], schema=litellm_keys[1])
                + ("    listen: true\n" if listen else "") if litellm_keys else "",
                access=(KEYS_ACCESS + spend_section(spend, flush_interval)) if litellm_keys
                else "",
            ))
        env = dict(os.environ, BENCH_PROVIDER_KEY=PROVIDER_KEY)
        super().__init__(name, [binary, "-c", config], os.path.join(workdir, f"{name}.log"), env)
        wait_until(name, lambda: self.check_alive() or self._ready())

    def _ready(self):
        url = f"http://127.0.0.1:{self.admin_port}/readyz"
        try:
            with urllib.request.urlopen(url, timeout=1) as response:
                return response.status == 200
        except urllib.error.HTTPError:
            return False

    def metric(self, series):
        """The value of one `/metrics` series (exact name with labels), or 0 when absent."""
        url = f"http://127.0.0.1:{self.admin_port}/metrics"
        with urllib.request.urlopen(url, timeout=5) as response:
            for line in response.read().decode().splitlines():
                name, _, value = line.rpartition(" ")
                if name == series:
                    return float(value)
        return 0.0


NGINX_CONFIG = """\
worker_processes {threads};
worker_rlimit_nofile 65536;
pid {workdir}/nginx.pid;
error_log {workdir}/nginx-error.log warn;
daemon off;
events {{ worker_connections 8192; }}
http {{
  access_log {access_log};
  keepalive_requests 1000000;
  upstream provider {{
    server 127.0.0.1:{provider_port};
    keepalive {keepalive};
    keepalive_requests 1000000;
  }}
  server {{
    listen 127.0.0.1:{port};
    location {prefix}/ {{
      proxy_pass https://provider/;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header Host localhost:{provider_port};
      proxy_set_header Authorization "Bearer {key}";
      proxy_ssl_verify on;
      proxy_ssl_trusted_certificate {ca_file};
      proxy_ssl_name localhost;
      proxy_ssl_server_name on;
      proxy_ssl_protocols TLSv1.2 TLSv1.3;
      proxy_buffering off;
      proxy_request_buffering off;
    }}
  }}
}}
"""


class Nginx(Service):
    """Debian's nginx with the equivalent reverse-proxy config."""

    def __init__(self, workdir, provider, threads, keepalive, access_log):
        self.port = free_port()
        config = os.path.join(workdir, "nginx.conf")
        with open(config, "w") as f:
            f.write(NGINX_CONFIG.format(
                threads=threads, workdir=workdir, provider_port=provider.ports["nginx"],
                keepalive=keepalive, port=self.port, prefix=ROUTE_PREFIX, key=PROVIDER_KEY,
                ca_file=provider.ca_file,
                access_log=os.path.join(workdir, "nginx-access.log") if access_log else "off",
            ))
        argv = ["nginx", "-c", config, "-p", workdir, "-e", os.path.join(workdir, "nginx-error.log")]
        super().__init__("nginx", argv, os.path.join(workdir, "nginx.log"))
        wait_until("nginx", lambda: self.check_alive() or port_open(self.port))


class BarePingora(Service):
    """The baseline (`examples/bare_pingora.rs`): one Pingora `ProxyHttp`, same TLS verification
    and keepalive pool, setting `Authorization`; no routing, logging, metrics or cap. With
    `h2_streams`, HTTP/2 to the provider with up to that many streams per connection; with
    `timeouts`, the sidecar's default upstream timeouts; with `client_read_buffer`, that read
    buffer under each client connection instead of Pingora's 64 KiB."""

    def __init__(self, binary, workdir, provider, threads, h2_streams=0, name="bare_pingora",
                 timeouts=False, client_read_buffer=None):
        self.port = free_port()
        argv = [
            binary,
            "--listen", f"127.0.0.1:{self.port}",
            "--upstream", f"127.0.0.1:{provider.ports['bare']}",
            "--sni", "localhost",
            "--ca", provider.ca_file,
            "--key", PROVIDER_KEY,
            "--strip-prefix", ROUTE_PREFIX,
            "--threads", str(threads),
        ]
        if h2_streams:
            argv += ["--h2", str(h2_streams)]
        if timeouts:
            argv += ["--timeouts"]
        if client_read_buffer is not None:
            argv += ["--client-read-buffer", str(client_read_buffer)]
        super().__init__(name, argv, os.path.join(workdir, f"{name}.log"))
        wait_until(name, lambda: self.check_alive() or port_open(self.port))
