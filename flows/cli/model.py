"""`astor model ...` commands (init-tiny, eval) and the top-level `astor sft`.

Every default comes from params.yaml (sections `tiny`, `sft`, `bootstrap`, `model`, `data`):
the same values the demo and the DVC stages use. Options override single values.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer

app = typer.Typer(help="model commands.", no_args_is_help=True)

SECTIONS = ["data", "tiny", "sft", "bootstrap", "model"]
"""params.yaml sections these commands read."""


def _config(path: Path) -> Any:
    from astor_core.config import ConfigError, load_config

    try:
        return load_config(path, sections=SECTIONS)
    except ConfigError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc


def _train_records(pools: Path, split: str = "train") -> list[dict]:
    from astor_core.data.pools import PoolsMissing, read_records

    try:
        return read_records(pools, split)
    except PoolsMissing as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None


ConfigOpt = typer.Option(
    Path("params.yaml"),
    "--config",
    "-c",
    help="params file (sections tiny, sft, bootstrap, model).",
)


@app.command("init-tiny")
def init_tiny_cmd(
    config: Path = ConfigOpt,
    out: Path = typer.Option(None, help="Model directory (default: bootstrap.tiny_dir)."),
    pools: Path = typer.Option(None, help="Pools directory (default: data.pools_dir)."),
    vocab_size: int = typer.Option(None, help="Target BPE vocabulary (default: tiny.tokenizer)."),
    seed: int = typer.Option(None, help="Seed of the weight initialisation (default: tiny.seed)."),
) -> None:
    """Train a byte-level BPE tokenizer on the train pools and save a freshly initialised tiny model."""
    from dataclasses import replace

    from astor_core.policy.model import (
        ModelConfig,
        init_tiny,
        load_model,
        num_parameters,
        pool_texts,
    )

    cfg = _config(config)
    tiny = cfg.tiny
    if seed is not None:
        tiny = replace(tiny, seed=seed)
    if vocab_size is not None:
        tiny = replace(tiny, tokenizer=replace(tiny.tokenizer, vocab_size=vocab_size))
    records = _train_records(pools or Path(cfg.data.pools_dir))
    path = init_tiny(pool_texts(records), out or Path(cfg.bootstrap.tiny_dir), tiny)
    model, tok = load_model(ModelConfig(str(path), device="cpu"))
    typer.echo(
        json.dumps({"out": str(path), "parameters": num_parameters(model), "vocab": len(tok)})
    )


@app.command("eval")
def eval_cmd(
    config: Path = ConfigOpt,
    model: Path = typer.Option(None, help="Model directory (default: model.name_or_path)."),
    pools: Path = typer.Option(
        None, help="Pools directory, eval.parquet (default: data.pools_dir)."
    ),
    per_task: int = typer.Option(48, help="Held-out items per task."),
    max_new_tokens: int = typer.Option(96, help="Completion budget in tokens."),
    threads: int = typer.Option(0, help="torch CPU threads (0: torch's default)."),
) -> None:
    """Greedy held-out mean reward per task of a model directory (JSON on stdout)."""
    import torch

    from astor_core.policy.model import ModelConfig, load_model
    from astor_core.policy.rollout import RolloutConfig, SamplingParams
    from astor_core.policy.stages import evaluate

    cfg = _config(config)
    if threads:
        torch.set_num_threads(threads)
    records = _train_records(pools or Path(cfg.data.pools_dir), "eval")
    m, tok = load_model(ModelConfig(str(model or cfg.model.name_or_path)))
    table = evaluate(
        m,
        tok,
        records,
        per_task=per_task,
        params=SamplingParams(max_new_tokens=max_new_tokens, temperature=0.0),
        rollout=RolloutConfig(),
    )
    typer.echo(json.dumps(table, indent=2))


def register(root: typer.Typer) -> None:
    """Add top-level commands of this group (`astor sft`) to the root app."""

    @root.command("sft")
    def sft_cmd(
        config: Path = ConfigOpt,
        model: Path = typer.Option(
            None, help="Model to fine-tune (default: bootstrap.tiny_dir, init-tiny's output)."
        ),
        out: Path = typer.Option(None, help="Output directory (default: model.name_or_path)."),
        pools: Path = typer.Option(None, help="Pools directory (default: data.pools_dir)."),
        profile: str = typer.Option(
            None, help="A named profile (default, fast, full) instead of params.yaml's `sft:`."
        ),
        epochs: float = typer.Option(None, help="Override the epochs."),
        max_per_task: int = typer.Option(None, help="Override the records per task (0: all)."),
        threads: int = typer.Option(None, help="torch CPU threads (0: torch's default)."),
    ) -> None:
        """Warm-start a model with TRL's SFTTrainer on the train pools' references (all four tasks)."""
        from dataclasses import replace

        from astor_core.policy.sft import SFT_PROFILES, run_sft

        if profile is not None and profile not in SFT_PROFILES:
            typer.echo(
                f"error: unknown profile {profile!r}; known: {sorted(SFT_PROFILES)}", err=True
            )
            raise typer.Exit(2)
        cfg = _config(config)
        sft = SFT_PROFILES[profile] if profile is not None else cfg.sft
        if epochs is not None:
            sft = replace(sft, epochs=epochs)
        if max_per_task is not None:
            sft = replace(sft, max_records_per_task=max_per_task)
        if threads is not None:
            sft = replace(sft, num_threads=threads)
        model = model or Path(cfg.bootstrap.tiny_dir)
        if not (model / "config.json").exists():
            typer.echo(
                f"error: {model} holds no model (config.json missing): run `astor model init-tiny`",
                err=True,
            )
            raise typer.Exit(2)
        out = out or Path(cfg.model.name_or_path)
        records = _train_records(pools or Path(cfg.data.pools_dir))
        metrics = run_sft(model, records, out, sft, log=lambda line: typer.echo(line, err=True))
        typer.echo(json.dumps({"out": str(out), **metrics}))
