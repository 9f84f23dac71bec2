"""A mock AWS Bedrock runtime and STS for tests, verifying every SigV4 signature with botocore.

Serves HTTPS on 127.0.0.1 (certificate and key from the command line). Each request's
`Authorization` is checked as AWS checks it: the access key id names a key this server knows
(the real keys from CONFIG_JSON, or temporary keys it issued through AssumeRole), and botocore's
own `SigV4Auth` recomputes the signature over the request as received (method, path, query, the
headers the signature names, the body) with that key's secret; any mismatch, a key it does not
know or a session token that is not the key's gets 403 `InvalidSignatureException`. A Bedrock
API key (`Authorization: Bearer`) must be one of CONFIG_JSON's `api_keys`.

Paths (service `bedrock` unless said otherwise):
- `POST /model/{id}/converse`, `/converse-stream`, `/invoke`, `/invoke-with-response-stream`:
  Bedrock's native API; the stream operations answer in AWS event-stream framing (prelude,
  headers, payload, both CRCs), as Bedrock does. Token counts (input/output): Converse 3/2,
  ConverseStream 11/7, InvokeModel 3/2, InvokeModelWithResponseStream 13/9 (in `message_start`,
  `message_delta` and Bedrock's `amazon-bedrock-invocationMetrics`). An Anthropic body (one
  with `anthropic_version`) holding a key Claude on Bedrock does not take (`model`, `stream`, …)
  gets 400 `ValidationException`, as Bedrock answers it; each request records its body's keys.
- `POST /anthropic/v1/messages`: Bedrock's Mantle endpoint (Anthropic's Messages API; SSE when
  `"stream": true`); 400 without an `anthropic-version` header. Tokens 5/4.
- `POST /openai/v1/chat/completions` (SSE when `"stream": true`, `x-mock-sse-events` events)
  and `/openai/v1/embeddings`: Bedrock's OpenAI-compatible API.
- `POST /` with `Action=AssumeRole` (service `sts`): temporary keys `ASIATEMP{n}` living
  CONFIG_JSON's `sts_lifetime` seconds, as STS's XML; while a file STATS_JSON + `.refuse-sts`
  exists, 403 `AccessDenied`.

What was seen (each request's path, key id, whether it verified, whether any client placeholder
credential reached it; AssumeRole calls) is kept in STATS_JSON. Prints `{"port": N}` on stdout
when listening. Run from target/litellm-venv (botocore). Used by tests/it/bedrock.rs.

Usage: python bedrock_mock.py CERT_PEM KEY_PEM STATS_JSON CONFIG_JSON
"""
import base64
import datetime
import hmac
import json
import os
import re
import ssl
import struct
import sys
import threading
import urllib.parse
import zlib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

AUTH = re.compile(
    r"^AWS4-HMAC-SHA256 Credential=([^/]+)/(\d{8})/([^/]+)/([^/]+)/aws4_request, "
    r"SignedHeaders=([a-z0-9;-]+), Signature=([0-9a-f]{64})$"
)
# Placeholders the test's clients send; none may reach this server.
CLIENT_PLACEHOLDERS = ("AKIDUMMY", "dummy-", "sk-app-placeholder")
# The top-level fields Bedrock's Claude models take in an InvokeModel body.
CLAUDE_FIELDS = {"anthropic_version", "max_tokens", "messages", "anthropic_beta", "system", "stop_sequences",
                 "temperature", "top_p", "top_k", "tools", "tool_choice", "thinking", "metadata",
                 "output_config", "safeguards", "context_management"}


class State:
    lock = threading.Lock()
    keys = {}  # access key id -> (secret, session token or None)
    api_keys = []
    region = ""
    lifetime = 3600
    assumed = []
    requests = []
    stats_file = ""

    @classmethod
    def save(cls):
        with open(cls.stats_file + ".tmp", "w") as f:
            json.dump({"assumed": cls.assumed, "requests": cls.requests}, f)
        os.replace(cls.stats_file + ".tmp", cls.stats_file)


def event(event_type, payload):
    """One AWS event-stream message: prelude (lengths, CRC), headers, payload, message CRC."""
    headers = b""
    for name, value in ((":event-type", event_type), (":content-type", "application/json"),
                        (":message-type", "event")):
        name, value = name.encode(), value.encode()
        headers += bytes([len(name)]) + name + bytes([7]) + struct.pack(">H", len(value)) + value
    prelude = struct.pack(">II", 12 + len(headers) + len(payload) + 4, len(headers))
    message = prelude + struct.pack(">I", zlib.crc32(prelude)) + headers + payload
    return message + struct.pack(">I", zlib.crc32(message))


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def send(self, status, body, content_type="application/json", extra=()):
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        self.send_response(status)
        self.send_header("content-type", content_type)
        self.send_header("content-length", str(len(data)))
        for name, value in extra:
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)

    def send_chunks(self, content_type, chunks):
        self.send_response(200)
        self.send_header("content-type", content_type)
        self.send_header("transfer-encoding", "chunked")
        self.end_headers()
        for chunk in chunks:
            self.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
            self.wfile.flush()
        self.wfile.write(b"0\r\n\r\n")

    def verify(self, body, service):
        """The key id that signed this request, or why the signature does not hold."""
        header = self.headers.get("authorization", "")
        if header.startswith("Bearer "):
            if service == "bedrock" and header[7:] in State.api_keys:
                return "bearer", None
            return None, "unknown API key"
        match = AUTH.match(header)
        if not match:
            return None, "no SigV4 Authorization"
        key_id, date, region, signed_service, signed, signature = match.groups()
        if key_id not in State.keys:
            return None, f"unknown access key {key_id}"
        if (region, signed_service) != (State.region, service):
            return None, f"scope {region}/{signed_service}"
        names = signed.split(";")
        if "host" not in names or "x-amz-date" not in names:
            return None, "host and x-amz-date must be signed"
        secret, token = State.keys[key_id]
        if token is not None and (
            "x-amz-security-token" not in names or self.headers.get("x-amz-security-token") != token
        ):
            return None, "the session token is missing or not the key's"
        amz_date = self.headers.get("x-amz-date", "")
        if not amz_date.startswith(date):
            return None, "x-amz-date is not the scope's date"
        headers = {name: self.headers.get(name, "") for name in names}
        request = AWSRequest(method=self.command, url=f"https://{self.headers['host']}{self.path}",
                             headers=headers, data=body)
        request.context["timestamp"] = amz_date
        auth = SigV4Auth(Credentials(key_id, secret, token), service, region)
        expected = auth.signature(auth.string_to_sign(request, auth.canonical_request(request)), request)
        if not hmac.compare_digest(expected, signature):
            return None, "signature mismatch"
        return key_id, None

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("content-length", "0")))
        sts = self.path.split("?")[0] in ("/", "/sts") and b"Action=AssumeRole" in body
        key_id, failure = self.verify(body, "sts" if sts else "bedrock")
        seen = "\n".join(f"{k}: {v}" for k, v in self.headers.items())
        record = {
            "path": self.path,
            "key_id": key_id,
            "failure": failure,
            "token": self.headers.get("x-amz-security-token"),
            "client_placeholder_seen": any(p in seen for p in CLIENT_PLACEHOLDERS),
        }
        with State.lock:
            State.requests.append(record)
            State.save()
        if failure:
            if sts:
                return self.sts_error("SignatureDoesNotMatch")
            return self.send(403, {"message": f"The request signature we calculated does not match: {failure}"},
                             extra=[("x-amzn-ErrorType", "InvalidSignatureException")])
        if sts:
            return self.assume_role(body)
        path = urllib.parse.urlsplit(self.path).path
        if path == "/anthropic/v1/messages":
            return self.mantle(record, json.loads(body or b"{}"))
        if path.startswith("/openai/v1/"):
            return self.openai(path[len("/openai/v1"):], json.loads(body or b"{}"))
        parts = path.split("/")
        if len(parts) == 4 and parts[1] == "model":
            payload = json.loads(body or b"{}")
            record["body_keys"] = sorted(payload)
            record["accept"] = self.headers.get("accept")
            with State.lock:
                State.save()
            # As Bedrock refuses an Anthropic body with keys its Claude models do not take.
            extra = sorted(set(payload) - CLAUDE_FIELDS) if "anthropic_version" in payload else []
            if extra:
                return self.send(400, {"message": f"Malformed input request: extraneous key [{extra[0]}] is not permitted"},
                                 extra=[("x-amzn-ErrorType", "ValidationException")])
            return self.native(parts[3], payload)
        self.send(404, {"message": f"no operation at {path}"})

    def sts_error(self, code):
        xml = (f"<ErrorResponse><Error><Type>Sender</Type><Code>{code}</Code>"
               f"<Message>refused</Message></Error><RequestId>1</RequestId></ErrorResponse>")
        self.send(403, xml.encode(), "text/xml")

    def assume_role(self, body):
        form = urllib.parse.parse_qs(body.decode())
        if os.path.exists(State.stats_file + ".refuse-sts"):
            return self.sts_error("AccessDenied")
        with State.lock:
            n = len(State.assumed) + 1
            State.assumed.append({"role": form.get("RoleArn", [""])[0],
                                  "session": form.get("RoleSessionName", [""])[0],
                                  "version": form.get("Version", [""])[0]})
            State.keys[f"ASIATEMP{n}"] = (f"temp-secret-{n}", f"temp-token-{n}")
            State.save()
        expires = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(seconds=State.lifetime)
        xml = ("<AssumeRoleResponse xmlns=\"https://sts.amazonaws.com/doc/2011-06-15/\"><AssumeRoleResult>"
               f"<Credentials><AccessKeyId>ASIATEMP{n}</AccessKeyId><SecretAccessKey>temp-secret-{n}"
               f"</SecretAccessKey><SessionToken>temp-token-{n}</SessionToken><Expiration>"
               f"{expires.strftime('%Y-%m-%dT%H:%M:%SZ')}</Expiration></Credentials>"
               "</AssumeRoleResult></AssumeRoleResponse>")
        self.send(200, xml.encode(), "text/xml")

    def native(self, operation, body):
        # Each operation reports other token counts, so a test can tell which were counted.
        usage = {"inputTokens": 3, "outputTokens": 2, "totalTokens": 5}
        stream_usage = {"inputTokens": 11, "outputTokens": 7, "totalTokens": 18}
        if operation == "converse":
            return self.send(200, {"output": {"message": {"role": "assistant", "content": [{"text": "hello"}]}},
                                   "stopReason": "end_turn", "usage": usage, "metrics": {"latencyMs": 1}})
        if operation == "converse-stream":
            events = [("messageStart", {"role": "assistant"})]
            events += [("contentBlockDelta", {"contentBlockIndex": 0, "delta": {"text": t}}) for t in ("hel", "lo")]
            events += [("contentBlockStop", {"contentBlockIndex": 0}), ("messageStop", {"stopReason": "end_turn"}),
                       ("metadata", {"usage": stream_usage, "metrics": {"latencyMs": 1}})]
            return self.send_chunks("application/vnd.amazon.eventstream",
                                    [event(t, json.dumps(p).encode()) for t, p in events])
        # InvokeModel answers as Anthropic's models on Bedrock do (a Message; its stream events,
        # each in a `chunk` event's base64 `bytes`, Bedrock's invocation metrics in the last).
        message = {"id": "msg_1", "type": "message", "role": "assistant", "model": "claude",
                   "content": [{"type": "text", "text": "hello"}], "stop_reason": "end_turn",
                   "stop_sequence": None, "usage": {"input_tokens": 3, "output_tokens": 2},
                   "echo": body.get("anthropic_version")}
        if operation == "invoke":
            return self.send(200, message)
        if operation == "invoke-with-response-stream":
            started = {**message, "content": [], "usage": {"input_tokens": 13, "output_tokens": 1}}
            parts = [{"type": "message_start", "message": started},
                     {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}]
            parts += [{"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": t}}
                      for t in ("hel", "lo")]
            parts += [{"type": "content_block_stop", "index": 0},
                      {"type": "message_delta", "delta": {"stop_reason": "end_turn"}, "usage": {"output_tokens": 9}},
                      {"type": "message_stop", "amazon-bedrock-invocationMetrics": {
                          "inputTokenCount": 13, "outputTokenCount": 9, "invocationLatency": 5,
                          "firstByteLatency": 2}}]
            chunks = [event("chunk", json.dumps({"bytes": base64.b64encode(json.dumps(p).encode()).decode()}).encode())
                      for p in parts]
            return self.send_chunks("application/vnd.amazon.eventstream", chunks)
        self.send(404, {"message": f"no operation {operation}"})

    def mantle(self, record, body):
        # Bedrock's Mantle endpoint: Anthropic's Messages API, `model` in the body, the version
        # and betas in headers (as the Anthropic API takes them).
        record["body_keys"] = sorted(body)
        record["model"] = body.get("model")
        record["anthropic_version"] = self.headers.get("anthropic-version")
        with State.lock:
            State.save()
        if not self.headers.get("anthropic-version") or "anthropic_version" in body:
            return self.send(400, {"type": "error", "error": {"type": "invalid_request_error",
                                                              "message": "anthropic-version header required"}})
        message = {"id": "msg_m", "type": "message", "role": "assistant", "model": body.get("model"),
                   "content": [{"type": "text", "text": "mantle"}], "stop_reason": "end_turn",
                   "stop_sequence": None, "usage": {"input_tokens": 5, "output_tokens": 4}}
        if not body.get("stream"):
            return self.send(200, message)
        started = {**message, "content": [], "usage": {"input_tokens": 5, "output_tokens": 1}}
        parts = [("message_start", {"type": "message_start", "message": started}),
                 ("content_block_start", {"type": "content_block_start", "index": 0,
                                          "content_block": {"type": "text", "text": ""}}),
                 ("content_block_delta", {"type": "content_block_delta", "index": 0,
                                          "delta": {"type": "text_delta", "text": "mantle"}}),
                 ("content_block_stop", {"type": "content_block_stop", "index": 0}),
                 ("message_delta", {"type": "message_delta", "delta": {"stop_reason": "end_turn"},
                                    "usage": {"output_tokens": 4}}),
                 ("message_stop", {"type": "message_stop"})]
        self.send_chunks("text/event-stream",
                         [f"event: {t}\ndata: {json.dumps(p)}\n\n".encode() for t, p in parts])

    def openai(self, rest, body):
        model = body.get("model")
        if rest == "/embeddings":
            return self.send(200, {"object": "list", "model": model, "usage": {"prompt_tokens": 1, "total_tokens": 1},
                                   "data": [{"object": "embedding", "index": 0, "embedding": [0.5, 0.25]}]})
        if rest != "/chat/completions":
            return self.send(404, {"error": {"message": f"no endpoint {rest}"}})
        if body.get("stream"):
            n = int(self.headers.get("x-mock-sse-events", "1"))
            chunk = {"id": "c", "object": "chat.completion.chunk", "created": 0, "model": model,
                     "choices": [{"index": 0, "delta": {"content": "x"}, "finish_reason": None}]}
            events = [b"data: " + json.dumps(chunk).encode() + b"\n\n" for _ in range(n)] + [b"data: [DONE]\n\n"]
            return self.send_chunks("text/event-stream", events)
        self.send(200, {"id": "c", "object": "chat.completion", "created": 0, "model": model,
                        "choices": [{"index": 0, "message": {"role": "assistant", "content": "hello"},
                                     "finish_reason": "stop"}],
                        "usage": {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}})


def main():
    cert_file, key_file, State.stats_file, config = sys.argv[1:5]
    config = json.loads(config)
    State.keys = {k: (v["secret"], v.get("token")) for k, v in config["keys"].items()}
    State.api_keys = config.get("api_keys", [])
    State.region = config["region"]
    State.lifetime = config.get("sts_lifetime", 3600)
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert_file, key_file)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    State.save()
    print(json.dumps({"port": server.server_address[1]}), flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
