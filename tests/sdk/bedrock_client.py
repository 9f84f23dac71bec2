"""Drives a sidecar `model:` route with boto3's `bedrock-runtime` client, as an application on
AWS would: `endpoint_url` at the sidecar and placeholder credentials (the sidecar removes the
client's signature and signs again with the row's keys). Calls Converse, ConverseStream,
InvokeModel and InvokeModelWithResponseStream, and prints one JSON object with what boto3
decoded (the stream operations' events as boto3 parsed them from AWS event-stream framing), for
tests/it/bedrock.rs. Run from target/litellm-venv (boto3).

With API_KEY, each request also carries `x-api-key: API_KEY` (a LiteLLM key, beside boto3's
own signature).

Usage: python bedrock_client.py ENDPOINT_URL MODEL_ID [API_KEY]
"""
import json
import sys

import boto3
from botocore.config import Config


def main():
    endpoint_url, model_id = sys.argv[1], sys.argv[2]
    client = boto3.client(
        "bedrock-runtime",
        endpoint_url=endpoint_url,
        region_name="us-east-1",
        aws_access_key_id="AKIDUMMY",
        aws_secret_access_key="dummy-secret",
        aws_session_token="dummy-session-token",
        config=Config(retries={"max_attempts": 1}),
    )
    if len(sys.argv) > 3:
        api_key = sys.argv[3]

        def add_key(request, **_):
            request.headers["x-api-key"] = api_key

        client.meta.events.register("before-send.bedrock-runtime.*", add_key)
    messages = [{"role": "user", "content": [{"text": "hi"}]}]
    out = {}
    converse = client.converse(modelId=model_id, messages=messages)
    out["converse"] = {
        "text": converse["output"]["message"]["content"][0]["text"],
        "usage": converse["usage"],
    }
    stream = client.converse_stream(modelId=model_id, messages=messages)
    out["converse_stream"] = [
        {name: payload for name, payload in e.items()} for e in stream["stream"]
    ]
    body = json.dumps({"anthropic_version": "bedrock-2023-05-31", "max_tokens": 8, "messages": [
        {"role": "user", "content": "hi"}]})
    invoke = client.invoke_model(modelId=model_id, body=body, contentType="application/json",
                                 accept="application/json")
    out["invoke"] = json.loads(invoke["body"].read())
    streamed = client.invoke_model_with_response_stream(modelId=model_id, body=body,
                                                        contentType="application/json")
    out["invoke_stream"] = [json.loads(e["chunk"]["bytes"]) for e in streamed["body"]]
    print(json.dumps(out))


if __name__ == "__main__":
    main()
