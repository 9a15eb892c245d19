"""The final policy in MLflow's model registry: logged with the transformers flavour
(model + tokenizer, task text-generation, so `mlflow.transformers.load_model` gives a
pipeline back) into the training run, registered under a model name, and the version
tagged with what produced it (scheduler, pools digest)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import mlflow
from mlflow.entities.model_registry import ModelVersion
from mlflow.tracking import MlflowClient

from flows.tracking import tracking_uri

MODEL_NAME = "policy-model"
"""Name of the logged model inside its run (models:/<registered name>/<version> points at it)."""


SERVING_PACKAGES: tuple[str, ...] = (
    "transformers",
    "torch",
    "accelerate",
    "tokenizers",
    "safetensors",
)
"""What loading the logged model needs (MLflow's default list adds torchvision, which a text
model does not use and the trainer environment does not have)."""


def pip_requirements(packages: tuple[str, ...] = SERVING_PACKAGES) -> list[str]:
    """Exact pins of the installed `packages`, local labels dropped (torch 2.13.0+cpu -> 2.13.0).

    >>> pip_requirements(("pyyaml",))[0].startswith("pyyaml==")
    True
    """
    from importlib.metadata import version

    return [f"{p}=={version(p).split('+', 1)[0]}" for p in packages]


def log_policy_model(
    run_id: str, policy_dir: str | Path, registered_model_name: str, tags: Mapping[str, str]
) -> ModelVersion:
    """Log the save_pretrained policy in `policy_dir` to run `run_id` as a transformers
    text-generation model, register it as a new version of `registered_model_name`, and
    tag that version; the version."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(policy_dir)
    tokenizer = AutoTokenizer.from_pretrained(policy_dir)
    mlflow.set_tracking_uri(tracking_uri())
    with mlflow.start_run(run_id=run_id):
        info = mlflow.transformers.log_model(
            transformers_model={"model": model, "tokenizer": tokenizer},
            name=MODEL_NAME,
            task="text-generation",
            registered_model_name=registered_model_name,
            tags=dict(tags),
            pip_requirements=pip_requirements(),
        )
    version = str(info.registered_model_version)
    client = MlflowClient(tracking_uri())
    for key, value in tags.items():
        client.set_model_version_tag(registered_model_name, version, key, str(value))
    return client.get_model_version(registered_model_name, version)
