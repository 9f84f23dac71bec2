"""Drives a sidecar `dispatch: model` route with the real OpenAI Python SDK, as an application
would: one base URL, the alias in `model`, no provider key (the SDK's api_key is a placeholder
the sidecar strips). Prints one JSON object with what the SDK returned, for the Rust test
(tests/it/openai_sdk.rs) to check.

Usage: python openai_client.py BASE_URL ALIAS [ALIAS ...]
"""
import json
import sys

from openai import OpenAI


def main():
    base_url, aliases = sys.argv[1], sys.argv[2:]
    client = OpenAI(base_url=base_url, api_key="sk-app-placeholder-never-forwarded", max_retries=0)
    out = {"chat": {}, "stream": {}, "embeddings": {}, "models": []}
    for alias in aliases:
        chat = client.chat.completions.create(
            model=alias, messages=[{"role": "user", "content": "hi"}]
        )
        out["chat"][alias] = {"model": chat.model, "content": chat.choices[0].message.content}
        stream = client.chat.completions.create(
            model=alias,
            messages=[{"role": "user", "content": "hi"}],
            stream=True,
            extra_headers={"x-mock-sse-events": "3"},
        )
        out["stream"][alias] = sum(1 for _ in stream)
        embedding = client.embeddings.create(model=alias, input="hi")
        out["embeddings"][alias] = {
            "model": embedding.model,
            "vector": embedding.data[0].embedding,
        }
    out["models"] = sorted(m.id for m in client.models.list())
    print(json.dumps(out))


if __name__ == "__main__":
    main()
