"""Load any causal LM + tokenizer from a local path, and build the tiny default model.

Everything is local: `load_model` reads a directory written by `save_pretrained` (or a hub
name when a hub is reachable); `init_tiny` trains a tokenizer on the pools' own text and
initialises a few-million-parameter Qwen2-style model from a config.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    PreTrainedModel,
    PreTrainedTokenizerBase,
    Qwen2Config,
    Qwen2ForCausalLM,
)

from astor_core.policy.tokenizer import TokenizerConfig, train_tokenizer

DTYPES: dict[str, torch.dtype] = {
    "float32": torch.float32,
    "bfloat16": torch.bfloat16,
    "float16": torch.float16,
}
"""Names accepted for ModelConfig.dtype."""


@dataclass(frozen=True)
class ModelConfig:
    """Which model to load and where it runs."""

    name_or_path: str = "models/sft"
    """Local directory written by save_pretrained (or a hub name when a hub is reachable)."""
    dtype: str = "auto"
    """Weights dtype: auto (bfloat16 on CUDA, float32 on CPU), float32, bfloat16 or float16."""
    device: str = "auto"
    """auto (cuda when available, else cpu), cpu, cuda, cuda:N."""
    attn_implementation: str | None = None
    """transformers attention backend (sdpa, eager, flash_attention_2); None lets transformers pick."""
    trust_remote_code: bool = False
    """Allow model code shipped with the checkpoint (off: only built-in architectures load)."""


def resolve_device(device: str, local_rank: int | None = None) -> torch.device:
    """`auto` becomes cuda when available, else cpu. A bare `cuda` (or `auto` on CUDA) is the
    launched process's own GPU, cuda:LOCAL_RANK (set by torchrun / accelerate launch), so the
    ranks of one node never share GPU 0; an explicit cuda:N is kept.

    >>> resolve_device("cpu", local_rank=1)
    device(type='cpu')
    >>> resolve_device("cuda", local_rank=3)
    device(type='cuda', index=3)
    >>> resolve_device("cuda:0", local_rank=3)
    device(type='cuda', index=0)
    """
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if local_rank is None and "LOCAL_RANK" in os.environ:
        local_rank = int(os.environ["LOCAL_RANK"])
    if device == "cuda" and local_rank is not None:
        return torch.device("cuda", local_rank)
    return torch.device(device)


def resolve_dtype(dtype: str, device: torch.device) -> torch.dtype:
    """`auto` is bfloat16 on CUDA and float32 elsewhere.

    >>> resolve_dtype("auto", torch.device("cpu"))
    torch.float32
    """
    if dtype == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    if dtype not in DTYPES:
        raise ValueError(f"ModelConfig.dtype={dtype!r} is not one of auto, {', '.join(DTYPES)}")
    return DTYPES[dtype]


def load_tokenizer(name_or_path: str, trust_remote_code: bool = False) -> PreTrainedTokenizerBase:
    """Tokenizer with left padding and a pad token (falls back to eos), as generation needs."""
    tok = AutoTokenizer.from_pretrained(name_or_path, trust_remote_code=trust_remote_code)
    tok.padding_side = "left"
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok


def load_model(cfg: ModelConfig) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Load a causal LM and its tokenizer onto cfg.device in cfg.dtype."""
    path = Path(cfg.name_or_path)
    if not path.exists() and (path.is_absolute() or cfg.name_or_path.startswith(".")):
        raise FileNotFoundError(f"model directory {cfg.name_or_path} does not exist")
    device = resolve_device(cfg.device)
    kwargs: dict[str, Any] = {"dtype": resolve_dtype(cfg.dtype, device)}
    if cfg.attn_implementation:
        kwargs["attn_implementation"] = cfg.attn_implementation
    model = AutoModelForCausalLM.from_pretrained(
        cfg.name_or_path, trust_remote_code=cfg.trust_remote_code, **kwargs
    )
    model.to(device)
    tok = load_tokenizer(cfg.name_or_path, cfg.trust_remote_code)
    if model.generation_config.pad_token_id is None:
        model.generation_config.pad_token_id = tok.pad_token_id
    return model, tok


@dataclass(frozen=True)
class TinyModelConfig:
    """Architecture of the tiny default policy (Qwen2-style, a few million parameters)."""

    hidden_size: int = 192
    """Width of the residual stream."""
    num_hidden_layers: int = 4
    """Transformer blocks."""
    num_attention_heads: int = 4
    """Query heads."""
    num_key_value_heads: int = 2
    """Key/value heads (grouped-query attention)."""
    intermediate_size: int = 512
    """Width of the SwiGLU MLP."""
    max_position_embeddings: int = 1024
    """Longest sequence (prompt + completion) the model supports."""
    rope_theta: float = 10000.0
    """RoPE base frequency."""
    tie_word_embeddings: bool = True
    """Share the input embedding and the LM head (saves vocab_size * hidden_size parameters)."""
    seed: int = 0
    """Seed of the weight initialisation."""
    tokenizer: TokenizerConfig = field(default_factory=TokenizerConfig)
    """How the tokenizer is trained."""


def tiny_config(cfg: TinyModelConfig, tokenizer: PreTrainedTokenizerBase) -> Qwen2Config:
    """The transformers config of the tiny model for a given tokenizer."""
    return Qwen2Config(
        vocab_size=len(tokenizer),
        hidden_size=cfg.hidden_size,
        num_hidden_layers=cfg.num_hidden_layers,
        num_attention_heads=cfg.num_attention_heads,
        num_key_value_heads=cfg.num_key_value_heads,
        intermediate_size=cfg.intermediate_size,
        max_position_embeddings=cfg.max_position_embeddings,
        rope_parameters={"rope_type": "default", "rope_theta": cfg.rope_theta},
        tie_word_embeddings=cfg.tie_word_embeddings,
        eos_token_id=tokenizer.eos_token_id,
        bos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )


def pool_texts(records: Iterable[Mapping[str, Any]]) -> Iterable[str]:
    """The text of pool rows the tokenizer learns from: each task's prompt, payload strings, reference."""
    from astor_core.tasks import get_task

    tasks: dict[str, Any] = {}
    for rec in records:
        task = rec.get("task")
        if task is not None:
            verifier = tasks.get(task) or tasks.setdefault(task, get_task(task))
            yield verifier.format_prompt(rec)
        payload = rec["payload"]
        if isinstance(payload, str):
            payload = json.loads(payload)
        for value in payload.values():
            if isinstance(value, str) and value:
                yield value
        yield str(rec["reference"])


def init_tiny(
    texts: Iterable[str], out_dir: str | Path, cfg: TinyModelConfig = TinyModelConfig()
) -> Path:
    """Train a tokenizer on `texts`, initialise the tiny model, save both into out_dir."""
    tokenizer = train_tokenizer(texts, cfg.tokenizer)
    torch.manual_seed(cfg.seed)
    model = Qwen2ForCausalLM(tiny_config(cfg, tokenizer))
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    (out / "astor_tiny.json").write_text(json.dumps(asdict(cfg), indent=2, sort_keys=True))
    return out


def num_parameters(model: torch.nn.Module) -> int:
    """Distinct parameters (tied weights counted once)."""
    return sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())
