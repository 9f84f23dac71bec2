"""What `litellm.completion_cost` says an answer cost, from the real `litellm` package.

Reads cases as JSON on stdin, a list of {"model", "provider", "prompt", "completion",
"cache_read", "cache_creation", "reasoning"} (token counts in LiteLLM's `Usage` terms: the
prompt includes cached tokens), and prints the list of costs, in order, as JSON strings in
Python's shortest round-trip form (`repr`), so the test compares the exact floating-point
values: Rust's `str::parse` reads them back exactly, where serde_json's number parser is not
correctly rounded for every value (1.4990999999999999 came back as 1.4991). Prices come
from the price map LiteLLM ships (`LITELLM_LOCAL_MODEL_COST_MAP`: no network). Used by
tests/it/cost_parity.rs.
"""

import json
import os
import sys

os.environ["LITELLM_LOCAL_MODEL_COST_MAP"] = "True"

import litellm  # noqa: E402
from litellm import ModelResponse  # noqa: E402
from litellm.types.utils import CompletionTokensDetailsWrapper, Usage  # noqa: E402


def usage(case: dict) -> Usage:
    details = None
    if case["reasoning"]:
        details = CompletionTokensDetailsWrapper(reasoning_tokens=case["reasoning"])
    return Usage(
        prompt_tokens=case["prompt"],
        completion_tokens=case["completion"],
        total_tokens=case["prompt"] + case["completion"],
        cache_read_input_tokens=case["cache_read"] or None,
        cache_creation_input_tokens=case["cache_creation"] or None,
        completion_tokens_details=details,
    )


def cost(case: dict) -> float:
    response = ModelResponse(model=case["model"], usage=usage(case))
    return litellm.completion_cost(
        completion_response=response,
        model=case["model"],
        custom_llm_provider=case["provider"],
    )


if __name__ == "__main__":
    print(json.dumps([repr(cost(case)) for case in json.load(sys.stdin)]))
