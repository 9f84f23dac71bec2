"""Drives a sidecar `model:` route with the real Anthropic Python SDK's Vertex client, as an
application would: `AnthropicVertex` with its `base_url` at the sidecar and a placeholder access
token (the sidecar strips it and injects the one it mints from the service account). Sends one
message and one stream (`:rawPredict`, `:streamRawPredict`) and prints what the SDK returned as
JSON, for tests/it/vertex.rs. Run from target/google-venv.

Usage: python anthropic_vertex_client.py BASE_URL
"""
import json
import sys

from anthropic import AnthropicVertex


def main():
    client = AnthropicVertex(
        region="us-east5",
        project_id="proj-1",
        access_token="ya29.client-placeholder-never-forwarded",
        base_url=sys.argv[1],
        max_retries=0,
    )
    message = client.messages.with_raw_response.create(
        model="claude-client-name", max_tokens=5, messages=[{"role": "user", "content": "hi"}]
    )
    stream = client.messages.with_raw_response.create(
        model="claude-client-name",
        max_tokens=5,
        messages=[{"role": "user", "content": "hi"}],
        stream=True,
        extra_headers={"x-mock-sse-events": "3"},
    )
    lines = [line for line in stream.http_response.iter_lines() if line.startswith("data:")]
    print(json.dumps({"status": message.status_code, "body": json.loads(message.http_response.text),
                      "stream_status": stream.status_code, "stream_events": len(lines)}))


if __name__ == "__main__":
    main()
