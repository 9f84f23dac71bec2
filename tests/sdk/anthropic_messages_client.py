"""Drives a sidecar `dispatch: model` route with the real Anthropic Python SDK, as an application
(or Claude Code) would: `Anthropic` with its `base_url` at the sidecar and a placeholder key (the
sidecar strips it). For the alias given, sends one message and one streamed message with a beta
header, and prints what the SDK returned as JSON, for tests/it/messages_dispatch.rs. Run from
target/google-venv (anthropic).

Usage: python anthropic_messages_client.py BASE_URL ALIAS [API_KEY]
(API_KEY: the key the client sends, a LiteLLM key; default a placeholder)
"""
import json
import sys

from anthropic import Anthropic


def main():
    base_url, alias = sys.argv[1], sys.argv[2]
    api_key = sys.argv[3] if len(sys.argv) > 3 else "dummy-client-anthropic-key"
    client = Anthropic(base_url=base_url, api_key=api_key, max_retries=0)
    messages = [{"role": "user", "content": "hi"}]
    message = client.messages.create(model=alias, max_tokens=8, messages=messages)
    out = {"text": message.content[0].text, "usage": message.usage.model_dump(), "echo": message.model_extra.get("echo")}
    with client.messages.stream(model=alias, max_tokens=8, messages=messages,
                                extra_headers={"anthropic-beta": "context-1m-2025-08-07"}) as stream:
        out["stream"] = [event.type for event in stream]
        final = stream.get_final_message()
        out["streamed_text"] = final.content[0].text
        out["streamed_usage"] = final.usage.model_dump()
    print(json.dumps(out))


if __name__ == "__main__":
    main()
