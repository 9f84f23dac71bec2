"""The LiteLLM proxy as a path of the LLM benchmark (`llm.py`): `litellm[proxy]` from the venv
`scripts/bootstrap.sh` makes (`target/litellm-venv`), one worker, its own `model_list` (the same
alias as the sidecar's `dispatch: model` route, on the provider's "litellm" port), no database
whose master key is the key every path's requests carry (`keys_db.LITELLM_KEY`; LiteLLM 1.106
refuses to start without one), so it does the least a LiteLLM proxy does: check the key, route,
call, answer.
"""

import os

import keys_db
import services

VENV = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "target",
                    "litellm-venv")

CONFIG = """\
model_list:
  - model_name: {alias}
    litellm_params:
      model: openai/{model}
      api_base: "https://localhost:{provider_port}/v1"
      api_key: {key}
litellm_settings:
  telemetry: false
  drop_params: true
general_settings:
  master_key: {master_key}
"""


def missing_reason():
    """Why the LiteLLM proxy cannot run here, or None when it can."""
    binary = os.path.join(VENV, "bin", "litellm")
    if not os.path.exists(binary):
        return f"no {os.path.normpath(binary)} (scripts/bootstrap.sh makes the venv)"
    return None


class LiteLlm(services.Service):
    """`litellm --config … --num_workers 1` on a port of its own, the provider's CA trusted
    through `SSL_CERT_FILE`; the model cost map is the packaged one (no network)."""

    def __init__(self, workdir, provider, name="litellm"):
        self.port = services.free_port()
        config = os.path.join(workdir, f"{name}.yaml")
        with open(config, "w") as f:
            f.write(CONFIG.format(alias=services.MODEL_ALIAS, model=services.DEPLOYMENT_MODEL,
                                  provider_port=provider.ports["litellm"],
                                  key=services.PROVIDER_KEY, master_key=keys_db.LITELLM_KEY))
        env = dict(os.environ, SSL_CERT_FILE=provider.ca_file, LITELLM_LOG="ERROR",
                   LITELLM_LOCAL_MODEL_COST_MAP="True", NO_DOCS="True",
                   PATH=os.path.join(VENV, "bin") + os.pathsep + os.environ.get("PATH", ""))
        argv = [os.path.join(VENV, "bin", "litellm"), "--config", config, "--host", "127.0.0.1",
                "--port", str(self.port), "--num_workers", "1"]
        super().__init__(name, argv, os.path.join(workdir, f"{name}.log"), env)
        services.wait_until(name, lambda: self.check_alive() or services.port_open(self.port),
                            timeout=120)
