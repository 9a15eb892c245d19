"""Rollout engines: sample G completions per prompt with token ids and log-probabilities.

One interface (`RolloutEngine.generate`), two engines:
- `TransformersEngine`: `model.generate` batched with left padding, on CPU or GPU, in the
  trainer's process (the weights are the trainer's, so no sync is needed);
- `VLLMEngine`: a vLLM server's OpenAI-compatible `/v1/completions` endpoint (with
  `logprobs` and vLLM's `return_token_ids`), weights pushed each round through TRL's
  `VLLMClient` (NCCL weight transfer; needs vLLM importable and a CUDA device).

Log-probabilities are those of the sampled token under softmax(logits / temperature), the
quantity the GRPO trainer recomputes (TRL does the same).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal, Protocol, runtime_checkable

import torch

FinishReason = Literal["stop", "length"]


@dataclass(frozen=True)
class SamplingParams:
    """How completions are sampled."""

    max_new_tokens: int = 128
    """Completion length budget in tokens."""
    temperature: float = 1.0
    """Softmax temperature; 0 means greedy decoding."""
    top_p: float = 1.0
    """Nucleus sampling mass (1.0 disables it)."""
    top_k: int = 0
    """Keep only the k most likely tokens (0 disables it)."""
    stop: tuple[str, ...] = ()
    """Strings that end a completion; the completion text excludes them, its tokens keep them."""
    seed: int | None = None
    """Seed for this call (TransformersEngine reseeds torch's global RNG; None keeps the current stream)."""


@dataclass(frozen=True)
class RolloutConfig:
    """Which engine samples rollouts and how it batches."""

    engine: Literal["transformers", "vllm"] = "transformers"
    """transformers (in-process model.generate) or vllm (a vLLM server)."""
    batch_size: int = 64
    """Sequences per model.generate call (TransformersEngine)."""
    max_prompt_tokens: int = 768
    """Longer prompts are cut from the left (their start) to this many tokens."""
    vllm_base_url: str = "http://localhost:8000"
    """Base URL of the vLLM server (VLLMEngine)."""
    vllm_weight_sync: Literal["nccl", "none"] = "nccl"
    """nccl: push the policy's weights (shards gathered, LoRA merged, from rank 0) before each sampling call with TRL's VLLMClient; none: the server's model is fixed, for evaluation only (training refuses it)."""
    vllm_timeout_s: float = 600.0
    """HTTP timeout of one completions request, in seconds."""
    vllm_group_port: int = 51216
    """Port of the NCCL weight-update group (TRL VLLMClient)."""
    sampling: SamplingParams = field(default_factory=SamplingParams)
    """Sampling of training rollouts (evaluation uses the same with temperature 0)."""


@dataclass(frozen=True)
class Rollout:
    """One sampled completion of one prompt."""

    prompt_index: int
    """Index of the prompt in the list given to generate (rollouts are grouped by it)."""
    prompt: str
    completion: str
    """Decoded completion, special tokens and any stop string removed."""
    prompt_ids: list[int]
    completion_ids: list[int]
    """Sampled token ids, including a final eos or the tokens of the stop string."""
    logprobs: list[float]
    """Log-probability of each completion token under softmax(logits / temperature)."""
    finish_reason: FinishReason

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@runtime_checkable
class RolloutEngine(Protocol):
    """Samples `n` completions for each prompt; result is prompt-major (prompt 0's n first)."""

    def generate(self, prompts: list[str], n: int, params: SamplingParams) -> list[Rollout]: ...

    def sync_weights(self, model: torch.nn.Module) -> None:
        """Make the engine sample from `model`'s current weights."""
        ...


def group_rollouts(rollouts: Sequence[Rollout]) -> list[list[Rollout]]:
    """Rollouts grouped by prompt_index, in prompt order."""
    groups: dict[int, list[Rollout]] = {}
    for r in rollouts:
        groups.setdefault(r.prompt_index, []).append(r)
    return [groups[i] for i in sorted(groups)]


def _cut_at_stop(
    tokenizer: Any, ids: list[int], text: str, stop: Sequence[str]
) -> tuple[list[int], str, bool]:
    """Cut text before the first stop string and ids after the token that completes it."""
    hits = [(text.find(s), s) for s in stop if s and s in text]
    if not hits:
        return ids, text, False
    pos, s = min(hits)
    lo, hi = 1, len(ids)  # smallest prefix whose decoding contains the stop string
    while lo < hi:
        mid = (lo + hi) // 2
        if s in tokenizer.decode(ids[:mid], skip_special_tokens=True):
            hi = mid
        else:
            lo = mid + 1
    return ids[:lo], text[:pos], True


def finish_completion(
    tokenizer: Any, ids: list[int], eos_ids: set[int], stop: Sequence[str]
) -> tuple[list[int], str, FinishReason]:
    """Trim raw generated ids at the first eos (kept) or stop string, decode, give the reason."""
    finish: FinishReason = "length"
    for k, tid in enumerate(ids):
        if tid in eos_ids:
            ids, finish = ids[: k + 1], "stop"
            break
    text = tokenizer.decode(ids, skip_special_tokens=True)
    ids, text, hit = _cut_at_stop(tokenizer, ids, text, stop)
    return ids, text, "stop" if hit else finish


def _eos_ids(model: Any, tokenizer: Any) -> set[int]:
    eos = model.generation_config.eos_token_id
    ids = set(eos if isinstance(eos, list) else [eos] if eos is not None else [])
    if tokenizer.eos_token_id is not None:
        ids.add(tokenizer.eos_token_id)
    return ids


class TransformersEngine:
    """Batched `model.generate` with left padding (CPU or GPU), in the trainer's process.

    `synced_ranks`: the weights are sharded across ranks (FSDP2, ZeRO-3), so every forward
    is a collective: generate runs with HF's `synced_gpus` (a rank that is done keeps
    forwarding until every rank is), and every rank makes the same number of generate calls
    (a rank with fewer batches runs dummy ones whose output is dropped)."""

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        cfg: RolloutConfig = RolloutConfig(),
        synced_ranks: bool = False,
    ) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.cfg = cfg
        self.synced_ranks = synced_ranks
        self.tokenizer.padding_side = "left"
        if self.tokenizer.pad_token_id is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token

    def sync_weights(self, model: torch.nn.Module) -> None:
        """Sample from `model` from now on (the trainer's own module: nothing to copy)."""
        self.model = model

    def _encode(self, prompts: Sequence[str]) -> list[list[int]]:
        enc = self.tokenizer(list(prompts), add_special_tokens=False)["input_ids"]
        return [ids[-self.cfg.max_prompt_tokens :] for ids in enc]

    def _missing_calls(self, jobs: int) -> int:
        """Generate calls this rank must add so every rank makes as many as the busiest one
        (0 unless synced_ranks; a collective then)."""
        calls = -(-jobs // self.cfg.batch_size)
        if not self.synced_ranks:
            return 0
        import torch.distributed as dist

        most = torch.tensor([calls], dtype=torch.int64)
        dist.all_reduce(most, op=dist.ReduceOp.MAX)
        return int(most.item()) - calls

    def _dummy_prompt(self) -> list[int]:
        """A one-token prompt for a generate call whose output is dropped."""
        tid = self.tokenizer.eos_token_id
        return [int(tid if tid is not None else self.tokenizer.pad_token_id)]

    @torch.no_grad()
    def _generate_batch(
        self, prompt_ids: list[list[int]], params: SamplingParams
    ) -> list[tuple[list[int], list[float]]]:
        device = next(self.model.parameters()).device
        width = max(len(p) for p in prompt_ids)
        pad = self.tokenizer.pad_token_id
        input_ids = torch.tensor([[pad] * (width - len(p)) + p for p in prompt_ids], device=device)
        attention = torch.tensor(
            [[0] * (width - len(p)) + [1] * len(p) for p in prompt_ids], device=device
        )
        greedy = params.temperature <= 0
        gen_kwargs: dict[str, Any] = {
            "max_new_tokens": params.max_new_tokens,
            "do_sample": not greedy,
            "pad_token_id": pad,
            "return_dict_in_generate": True,
            "output_logits": True,
            # transformers detects FSDP2 by a flag its own sharding sets, not accelerate's
            "synced_gpus": self.synced_ranks,
        }
        if not greedy:
            gen_kwargs.update(
                temperature=params.temperature, top_p=params.top_p, top_k=params.top_k
            )
        else:
            gen_kwargs.update(temperature=None, top_p=None, top_k=None)
        if params.stop:
            gen_kwargs.update(stop_strings=list(params.stop), tokenizer=self.tokenizer)
        was_training = self.model.training
        self.model.eval()
        try:
            out = self.model.generate(input_ids=input_ids, attention_mask=attention, **gen_kwargs)
        finally:
            self.model.train(was_training)
        new = out.sequences[:, width:]
        logits = torch.stack(out.logits, dim=1).float()  # (B, T, V), raw logits
        temp = params.temperature if not greedy else 1.0
        logps = torch.log_softmax(logits / temp, dim=-1).gather(-1, new.unsqueeze(-1)).squeeze(-1)
        return [(new[i].tolist(), logps[i].tolist()) for i in range(new.size(0))]

    def generate(self, prompts: list[str], n: int, params: SamplingParams) -> list[Rollout]:
        """n completions per prompt, prompt-major; batches sorted by prompt length to pad little."""
        if n < 1:
            raise ValueError(f"n must be >= 1, got {n}")
        if params.seed is not None:
            torch.manual_seed(params.seed)
        encoded = self._encode(prompts) if prompts else []  # a rank's share may be empty
        jobs = [(i, j) for i in range(len(prompts)) for j in range(n)]
        order = sorted(range(len(jobs)), key=lambda k: len(encoded[jobs[k][0]]))
        raw: dict[int, tuple[list[int], list[float]]] = {}
        missing = self._missing_calls(len(order))  # agreed before any rank generates
        for start in range(0, len(order), self.cfg.batch_size):
            chunk = order[start : start + self.cfg.batch_size]
            results = self._generate_batch([encoded[jobs[k][0]] for k in chunk], params)
            raw.update(zip(chunk, results, strict=True))
        for _ in range(missing):
            self._generate_batch([self._dummy_prompt()], params)  # keeps the ranks paired
        eos = _eos_ids(self.model, self.tokenizer)
        rollouts = []
        for k, (i, _) in enumerate(jobs):
            ids, lps = raw[k]
            ids, text, finish = finish_completion(self.tokenizer, ids, eos, params.stop)
            rollouts.append(
                Rollout(
                    prompt_index=i,
                    prompt=prompts[i],
                    completion=text,
                    prompt_ids=list(encoded[i]),
                    completion_ids=ids,
                    logprobs=lps[: len(ids)],
                    finish_reason=finish,
                )
            )
        return rollouts


class VLLMEngine:
    """A vLLM server: sampling over its OpenAI-compatible /v1/completions, weights via TRL's VLLMClient.

    Start the server with weight transfer enabled, e.g.
    `VLLM_SERVER_DEV_MODE=1 vllm serve models/sft --weight-transfer-config '{"backend": "nccl"}'
    --logprobs-mode processed_logprobs --max-logprobs -1` (TRL 1.16's documented command).
    """

    def __init__(self, tokenizer: Any, cfg: RolloutConfig = RolloutConfig()) -> None:
        import requests

        self.tokenizer = tokenizer
        self.cfg = cfg
        self.base_url = cfg.vllm_base_url.rstrip("/")
        self.session = requests.Session()
        models = self.session.get(f"{self.base_url}/v1/models", timeout=30)
        models.raise_for_status()
        self.model_name = models.json()["data"][0]["id"]
        self._client: Any = None

    def sync_weights(self, model: torch.nn.Module) -> None:
        """Push `model`'s weights to the server: every rank gathers (a collective), rank 0
        merges LoRA and broadcasts over NCCL (no-op with vllm_weight_sync='none')."""
        if self.cfg.vllm_weight_sync == "none":
            return
        from astor_core.policy.weight_sync import is_main_rank, push_weights

        device = next(model.parameters()).device
        if self._client is None and is_main_rank():
            from trl.generation.vllm_client import VLLMClient

            self._client = VLLMClient(base_url=self.base_url, group_port=self.cfg.vllm_group_port)
            self._client.init_communicator(device=device)
        push_weights(model, self._client, device)

    def generate(self, prompts: list[str], n: int, params: SamplingParams) -> list[Rollout]:
        """n completions per prompt from the server, prompt-major, with sampled-token logprobs."""
        payload: dict[str, Any] = {
            "model": self.model_name,
            "prompt": prompts,
            "n": n,
            "max_tokens": params.max_new_tokens,
            "temperature": params.temperature,
            "top_p": params.top_p,
            "top_k": params.top_k if params.top_k > 0 else -1,
            "logprobs": 0,
            "return_token_ids": True,
            "return_tokens_as_token_ids": True,
            "skip_special_tokens": True,
        }
        if params.stop:
            payload["stop"] = list(params.stop)
            payload["include_stop_str_in_output"] = False
        if params.seed is not None:
            payload["seed"] = params.seed
        resp = self.session.post(
            f"{self.base_url}/v1/completions", json=payload, timeout=self.cfg.vllm_timeout_s
        )
        if resp.status_code != 200:
            raise RuntimeError(f"vLLM /v1/completions failed: {resp.status_code} {resp.text[:500]}")
        choices = sorted(resp.json()["choices"], key=lambda c: c["index"])
        if len(choices) != len(prompts) * n:
            raise RuntimeError(
                f"vLLM returned {len(choices)} choices for {len(prompts)} prompts x n={n}"
            )
        return [self._rollout(k // n, prompts[k // n], c) for k, c in enumerate(choices)]

    @staticmethod
    def _rollout(index: int, prompt: str, choice: dict[str, Any]) -> Rollout:
        token_logprobs = (choice.get("logprobs") or {}).get("token_logprobs") or []
        ids = list(choice.get("token_ids") or [])
        lps = [float(x) if x is not None else -math.inf for x in token_logprobs]
        return Rollout(
            prompt_index=index,
            prompt=prompt,
            completion=choice["text"],
            prompt_ids=list(choice.get("prompt_token_ids") or []),
            completion_ids=ids,
            logprobs=lps[: len(ids)],
            finish_reason="length" if choice.get("finish_reason") == "length" else "stop",
        )


def check_training_sync(cfg: RolloutConfig) -> None:
    """Refuse training rollouts from a server whose weights are never updated: every round
    would sample the initial policy while the update assumes the current one.

    >>> check_training_sync(RolloutConfig(engine="vllm", vllm_weight_sync="nccl"))
    >>> check_training_sync(RolloutConfig(engine="vllm", vllm_weight_sync="none"))
    Traceback (most recent call last):
    ...
    astor_core.config.ConfigError: rollout.vllm_weight_sync='none' serves stale weights: training needs 'nccl' ('none' is for evaluation only)
    """
    from astor_core.config import ConfigError

    if cfg.engine == "vllm" and cfg.vllm_weight_sync == "none":
        raise ConfigError(
            "rollout.vllm_weight_sync='none' serves stale weights: training needs 'nccl' "
            "('none' is for evaluation only)"
        )


def make_engine(
    cfg: RolloutConfig, model: Any, tokenizer: Any, synced_ranks: bool = False
) -> RolloutEngine:
    """The engine cfg.engine names, sampling from `model` (`synced_ranks`: its weights are
    sharded across ranks, see TransformersEngine)."""
    if cfg.engine == "transformers":
        return TransformersEngine(model, tokenizer, cfg, synced_ranks)
    if cfg.engine == "vllm":
        engine = VLLMEngine(tokenizer, cfg)
        engine.sync_weights(model)
        return engine
    raise ValueError(f"RolloutConfig.engine={cfg.engine!r}; expected transformers or vllm")
