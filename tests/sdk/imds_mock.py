"""A mock of Azure's instance metadata service (IMDS) token endpoint, for tests: plain HTTP on
127.0.0.1 (IMDS itself answers on http://169.254.169.254), checking each request as IMDS does.

`GET /metadata/identity/oauth2/token?api-version=…&resource=…[&client_id=…]`:
- 400 `invalid_request` without the `Metadata: true` header, or with `X-Forwarded-For` (IMDS
  refuses requests that came through a proxy), or without `api-version`;
- 400 `invalid_request` ("Identity not found") when `client_id` is not CONFIG_JSON's
  `client_id` or the resource is not CONFIG_JSON's `resource`;
- else 200 with IMDS's answer: `access_token` `mi-token-N` (N counts tokens from 1),
  `expires_in` as a string, `expires_on`, `resource`, `token_type`.

Every request is recorded in STATS_JSON (`requests`: path, query, whether the header was
there). Prints `{"port": N}` when listening. Used by tests/it/managed_identity.rs.

Usage: python imds_mock.py STATS_JSON CONFIG_JSON
"""
import json
import os
import sys
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class State:
    lock = threading.Lock()
    requests = []
    issued = 0
    stats_file = ""
    config = {}


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def answer(self, status, body):
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        parts = urllib.parse.urlsplit(self.path)
        query = urllib.parse.parse_qs(parts.query)
        one = lambda name: query.get(name, [None])[0]
        with State.lock:
            State.requests.append({"path": parts.path, "query": parts.query,
                                   "metadata": self.headers.get("metadata"),
                                   "forwarded": self.headers.get("x-forwarded-for") is not None})
            with open(State.stats_file + ".tmp", "w") as f:
                json.dump({"requests": State.requests}, f)
            os.replace(State.stats_file + ".tmp", State.stats_file)
        refuse = lambda why: self.answer(400, {"error": "invalid_request", "error_description": why})
        if parts.path != "/metadata/identity/oauth2/token":
            return self.answer(404, {"error": "not_found"})
        if self.headers.get("metadata") != "true":
            return refuse("Required metadata header not specified")
        if self.headers.get("x-forwarded-for") is not None:
            return refuse("Request contains X-Forwarded-For header")
        if not one("api-version"):
            return refuse("Required query variable 'api-version' is missing")
        if one("client_id") != State.config.get("client_id") or one("resource") != State.config["resource"]:
            return refuse("Identity not found")
        with State.lock:
            State.issued += 1
            n = State.issued
        lifetime = State.config.get("lifetime", 3600)
        self.answer(200, {"access_token": f"mi-token-{n}", "refresh_token": "",
                          "expires_in": str(lifetime), "expires_on": str(int(time.time()) + lifetime),
                          "not_before": str(int(time.time())), "resource": one("resource"),
                          "token_type": "Bearer"})


def main():
    State.stats_file, config = sys.argv[1], sys.argv[2]
    State.config = json.loads(config)
    with open(State.stats_file, "w") as f:
        json.dump({"requests": []}, f)
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    print(json.dumps({"port": server.server_address[1]}), flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
