"""Model and credential rows as the real LiteLLM proxy stores them, from the `litellm` package.

Reads `{"salt_key": KEY, "models": {model_id: litellm_params}, "credentials": {name:
credential_values}}` on stdin (plain values) and prints the same shape with every value as LiteLLM writes it to
PostgreSQL: model params through its `LiteLLM_Params` type (`exclude_none`, as its `/model/new` and
`/model/update` do, so an unknown field name fails here) and each string through
`encrypt_value_helper`; credential values through `CredentialHelperUtils.encrypt_credential_values`
(its `/credentials` endpoint), with `salt_key` as `LITELLM_SALT_KEY`.
Used by tests/it/entra_id.rs and tests/it/vertex.rs.
"""
import json
import os
import sys

# The package's bundled price map: no network fetch at import.
os.environ["LITELLM_LOCAL_MODEL_COST_MAP"] = "True"

from litellm.proxy.common_utils.encrypt_decrypt_utils import encrypt_value_helper
from litellm.proxy.credential_endpoints.endpoints import CredentialHelperUtils
from litellm.types.router import LiteLLM_Params
from litellm.types.utils import CredentialItem


def main():
    cases = json.load(sys.stdin)
    os.environ["LITELLM_SALT_KEY"] = cases["salt_key"]
    out = {"models": {}, "credentials": {}}
    for model_id, params in cases.get("models", {}).items():
        typed = LiteLLM_Params(**params).model_dump(exclude_none=True)
        for field in params:
            assert field in typed, f"LiteLLM_Params dropped {field}"
        out["models"][model_id] = {
            k: encrypt_value_helper(value=v) if isinstance(v, str) else v for k, v in typed.items()
        }
    for name, values in cases.get("credentials", {}).items():
        item = CredentialItem(credential_name=name, credential_values=values, credential_info={})
        out["credentials"][name] = CredentialHelperUtils.encrypt_credential_values(item).credential_values
    print(json.dumps(out))


if __name__ == "__main__":
    main()
