"""Drives a sidecar `model:` route with the Anthropic SDK's Bedrock client (`AnthropicBedrock`,
which signs with botocore), `base_url` at the sidecar and placeholder AWS keys: one message and
one streamed message (InvokeModel and InvokeModelWithResponseStream, the stream's AWS
event-stream framing decoded by the SDK). Prints one JSON object with what the SDK returned, for
tests/it/bedrock.rs. Run from target/google-venv (anthropic, boto3).

Usage: python anthropic_bedrock_client.py BASE_URL MODEL
"""
import json
import sys

from anthropic import AnthropicBedrock


def main():
    base_url, model = sys.argv[1], sys.argv[2]
    client = AnthropicBedrock(
        base_url=base_url,
        aws_region="us-east-1",
        aws_access_key="AKIDUMMY",
        aws_secret_key="dummy-secret",
        max_retries=0,
    )
    messages = [{"role": "user", "content": "hi"}]
    message = client.messages.create(model=model, max_tokens=8, messages=messages)
    out = {"text": message.content[0].text, "stream": []}
    with client.messages.stream(model=model, max_tokens=8, messages=messages) as stream:
        out["stream"] = [event.type for event in stream]
        out["streamed_text"] = stream.get_final_message().content[0].text
    print(json.dumps(out))


if __name__ == "__main__":
    main()
