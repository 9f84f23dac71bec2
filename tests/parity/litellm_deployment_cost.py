"""What LiteLLM's proxy bills for an answer from a deployment with its own prices or a
`base_model`: the deployment goes into a real `litellm.Router` (which registers its prices as
the proxy's router does), the answer is LiteLLM's own mock (`mock_response`, so nothing leaves
the machine) carrying the given usage and answering model, and the cost is the
`response_cost` LiteLLM's logging computed for it: the number the proxy writes as spend.

Reads cases as JSON on stdin, a list of {"litellm_params", "model_info", "answered_by",
"prompt", "completion", "cache_read", "cache_creation"}, and prints the list of costs, in
order, as JSON strings in Python's shortest round-trip form (`repr`), so the test reads back
the exact floating-point value (a JSON number would go through the reader's own float parser,
which need not round the last digit the same way). Prices come from the price map LiteLLM
ships (`LITELLM_LOCAL_MODEL_COST_MAP`: no network). Used by tests/it/cost_parity.rs.
"""

import asyncio
import json
import os
import sys

os.environ["LITELLM_LOCAL_MODEL_COST_MAP"] = "True"

from litellm import ModelResponse, Router  # noqa: E402
from litellm.types.utils import Usage  # noqa: E402


def answer(case: dict) -> ModelResponse:
    usage = Usage(
        prompt_tokens=case["prompt"],
        completion_tokens=case["completion"],
        total_tokens=case["prompt"] + case["completion"],
        cache_read_input_tokens=case["cache_read"] or None,
        cache_creation_input_tokens=case["cache_creation"] or None,
    )
    return ModelResponse(model=case["answered_by"], usage=usage)


async def cost(index: int, case: dict) -> float:
    alias = f"alias-{index}"
    params = dict(case["litellm_params"], api_key="not-used")
    info = dict(case["model_info"], id=f"deployment-{index}")
    router = Router(model_list=[{"model_name": alias, "litellm_params": params, "model_info": info}])
    response = await router.acompletion(
        model=alias,
        messages=[{"role": "user", "content": "hi"}],
        mock_response=answer(case),
    )
    return response._hidden_params["response_cost"]


async def main() -> None:
    cases = json.load(sys.stdin)
    print(json.dumps([repr(await cost(i, case)) for i, case in enumerate(cases)]))


if __name__ == "__main__":
    asyncio.run(main())
