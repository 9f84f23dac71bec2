"""A Google OAuth2 token endpoint for tests, checking each JWT-bearer grant with google-auth.

Makes two service accounts as Google issues them (an RSA key, a self-signed X.509 certificate
for it, the JSON key file with `token_uri` pointing here): `account`, whose certificate this
server trusts, and `rogue`, with the same `client_email` and `private_key_id` but a key of its
own. Serves HTTPS on 127.0.0.1 (certificate and key from the command line) and answers
`POST /token` only for an assertion that `google.auth.jwt.decode` accepts with the account's
certificate and the endpoint's own URL as audience, whose `iss` is the account and whose
`scope` is cloud-platform: `{"access_token": "vertex-token-N", "expires_in": 3599}`. Anything
else gets 400 `invalid_grant`. The mints and the refusals so far are kept in STATS_JSON.

Prints one JSON line on stdout when listening: `{"port", "account", "rogue"}` (the key files as
JSON strings). Used by tests/it/vertex.rs, run from target/google-venv.

Usage: python google_token_server.py CERT_PEM KEY_PEM STATS_JSON
"""
import datetime
import json
import os
import ssl
import sys
import threading
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import google.auth.jwt
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

EMAIL = "sidecar-test@proj-1.iam.gserviceaccount.com"
KEY_ID = "0123456789abcdef"
SCOPE = "https://www.googleapis.com/auth/cloud-platform"
GRANT = "urn:ietf:params:oauth:grant-type:jwt-bearer"


def make_account(token_uri):
    """A key, its certificate (PEM) and the JSON key file, as Google's IAM issues them."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, EMAIL)])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    account = {
        "type": "service_account",
        "project_id": "proj-1",
        "private_key_id": KEY_ID,
        "private_key": pem,
        "client_email": EMAIL,
        "client_id": "1234567890",
        "auth_uri": "https://accounts.google.com/o/oauth2/auth",
        "token_uri": token_uri,
    }
    return cert.public_bytes(serialization.Encoding.PEM).decode(), json.dumps(account)


class State:
    lock = threading.Lock()
    mints = 0
    refusals = []
    certs = {}
    token_uri = ""
    stats_file = ""

    @classmethod
    def save(cls):
        with open(cls.stats_file + ".tmp", "w") as f:
            json.dump({"mints": cls.mints, "refusals": cls.refusals}, f)
        os.replace(cls.stats_file + ".tmp", cls.stats_file)


class Handler(BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def answer(self, status, body):
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_POST(self):
        length = int(self.headers.get("content-length", "0"))
        form = urllib.parse.parse_qs(self.rfile.read(length).decode())
        try:
            if self.path != "/token":
                raise ValueError(f"no endpoint {self.path}")
            if form.get("grant_type") != [GRANT]:
                raise ValueError(f"grant_type {form.get('grant_type')}")
            claims = google.auth.jwt.decode(
                form["assertion"][0], certs=State.certs, audience=State.token_uri
            )
            if claims.get("iss") != EMAIL or claims.get("scope") != SCOPE:
                raise ValueError(f"claims {claims}")
            if claims["exp"] - claims["iat"] > 3600:
                raise ValueError("assertion lives longer than an hour")
        except Exception as e:  # noqa: BLE001 - every failure is a refused grant
            with State.lock:
                State.refusals.append(str(e))
                State.save()
            self.answer(400, {"error": "invalid_grant", "error_description": "Invalid JWT Signature."})
            return
        with State.lock:
            State.mints += 1
            n = State.mints
            State.save()
        self.answer(200, {"access_token": f"vertex-token-{n}", "expires_in": 3599, "token_type": "Bearer"})


def main():
    cert_file, key_file, State.stats_file = sys.argv[1], sys.argv[2], sys.argv[3]
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert_file, key_file)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    port = server.server_address[1]
    State.token_uri = f"https://localhost:{port}/token"
    cert, account = make_account(State.token_uri)
    _, rogue = make_account(State.token_uri)
    State.certs = {KEY_ID: cert}
    State.save()
    print(json.dumps({"port": port, "account": account, "rogue": rogue}), flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
