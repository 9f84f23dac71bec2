"""LiteLLM's own answer to a virtual-key request, from the real `litellm` package.

Reads cases as JSON on stdin and prints, for each, what LiteLLM's proxy answers: `{"status":
200, "models": [...]}` when it lets the request through (with the model names its `GET
/v1/models` lists for the key), else the status and the error's fields as its proxy sends them
(`ProxyException.to_dict()`). Used by tests/it/litellm_parity.rs, which sends the
same cases through the sidecar and compares.

The checks are LiteLLM's own functions, run as its proxy runs them for `/chat/completions`:
`validate_resolved_virtual_key` (blocked, model access, expiry, key budget) and then
`run_centralized_common_checks` (team blocked, team model access, team budget), with the
failure turned into the client's answer by `_as_proxy_exception`. The key and team objects are
built from the same values the test writes into PostgreSQL for the sidecar, and handed to
LiteLLM the way its proxy hands them over after a lookup: the key as the `UserAPIKeyAuth` its
lookup returns, the team through LiteLLM's own object cache. LiteLLM's Prisma client is
replaced by an object that fails on any use, so no answer can come from a database LiteLLM
cannot reach here (LiteLLM logs that its spend counter could not be re-seeded from it, and
falls back to the spend on the object, which is the row's).

Two cases are decided before those checks, where LiteLLM's code raises in line: a request with
no key (`Exception("No api key passed in.")`) and a key not in the table (`KeyNotFoundError`,
the class its lookup raises); for those the harness raises the same exception and LiteLLM maps it.

The model list is LiteLLM's `/v1/models` rule for a key: `get_key_models` and `get_team_models`
combined by `get_complete_model_list`, over the proxy's model names (`served`).

Case format: {"name", "model", "served": [names], "key": null | {UserAPIKeyAuth fields},
"absent": bool, "team": null | {LiteLLM_TeamTable fields}}.
"""

import asyncio
import json
import os
import sys
from datetime import datetime

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

import litellm.proxy.proxy_server as proxy_server  # noqa: E402
from litellm.proxy._types import LiteLLM_TeamTable, UserAPIKeyAuth  # noqa: E402
from litellm.proxy.auth.auth_exception_handler import _as_proxy_exception  # noqa: E402
from litellm.proxy.auth.model_checks import (  # noqa: E402
    get_complete_model_list,
    get_key_models,
    get_team_models,
)
from litellm.proxy.auth.resolvers.exceptions import KeyNotFoundError  # noqa: E402
from litellm.proxy.auth.user_api_key_auth import (  # noqa: E402
    run_centralized_common_checks,
    validate_resolved_virtual_key,
)
from starlette.requests import Request  # noqa: E402

ROUTE = "/chat/completions"


class NoDatabase:
    """Stands where LiteLLM's Prisma client would be: any use is an error, never an answer."""

    def __getattr__(self, name):
        raise RuntimeError(f"LiteLLM reached for its database ({name})")


def request() -> Request:
    return Request({"type": "http", "method": "POST", "path": ROUTE, "headers": [], "query_string": b""})


async def decide(case: dict) -> UserAPIKeyAuth:
    model = case["model"]
    if case.get("key") is None:
        raise Exception("No api key passed in.")
    if case.get("absent"):
        raise KeyNotFoundError("0" * 64)
    if case.get("team") is not None:
        team = LiteLLM_TeamTable(**case["team"])
        await proxy_server.user_api_key_cache.async_set_cache(key=f"team_id:{team.team_id}", value=team)
    token = UserAPIKeyAuth(**case["key"])
    data = {"model": model}
    token = await validate_resolved_virtual_key(
        request=request(),
        request_data=data,
        valid_token=token,
        api_key="sk-parity",
        route=ROUTE,
        start_time=datetime.now(),
        parent_otel_span=None,
        end_user_id=None,
        end_user_params={},
        _end_user_object=None,
    )
    await run_centralized_common_checks(
        user_api_key_auth_obj=token,
        request=request(),
        request_data=data,
        route=ROUTE,
        force_virtual_key_checks=True,
    )
    return token


def models(case: dict, token: UserAPIKeyAuth) -> list:
    served = case["served"]
    team = case.get("team") or {}
    return get_complete_model_list(
        key_models=get_key_models(token, served, {}),
        team_models=get_team_models(team.get("models") or [], served, {}),
        proxy_model_list=served,
        user_model=None,
        infer_model_from_keys=False,
    )


async def answer(case: dict) -> dict:
    try:
        token = await decide(case)
    except Exception as e:  # LiteLLM's checks raise plain exceptions too
        refusal = _as_proxy_exception(e)
        body = refusal.to_dict()
        body["type"] = str(getattr(refusal.type, "value", refusal.type))
        return {"status": int(refusal.code), "error": body}
    return {"status": 200, "models": models(case, token)}


async def main() -> None:
    proxy_server.prisma_client = NoDatabase()
    cases = json.load(sys.stdin)
    answers = {case["name"]: await answer(case) for case in cases}
    print(json.dumps(answers))


if __name__ == "__main__":
    asyncio.run(main())
