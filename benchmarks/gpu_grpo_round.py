"""One GRPO round of a Qwen2.5-Coder-1.5B-shaped model through PolicyTrainer, on one GPU.

    OUT=out python benchmarks/gpu_grpo_round.py                      # H200: ~2-4 min
    OUT=/tmp/o python benchmarks/gpu_grpo_round.py --tiny --device cpu   # smoke test, ~1 min on 2 cores

Randomly initialised weights (the config is written here, nothing comes from a hub), random
prompt/completion token ids and random advantages: the numbers are throughput, not learning.
For each mode (LoRA, full fine-tuning; optionally with gradient checkpointing) one warm-up
micro-batch, then one timed `PolicyTrainer.step` over the whole round (prompts x group
samples, one optimiser step), under accelerate's bf16 autocast: full fine-tuning keeps fp32
master weights (and AdamW states) and a frozen fp32 reference copy, LoRA keeps a bf16 base
shared with its reference (adapters disabled) and fp32 adapters. Then HF `generate`
throughput of the same architecture in bf16 (sampling, `min_new_tokens` = `max_new_tokens`
so EOS never ends a sequence early).

Reported per mode: update tokens/s (prompt + completion tokens the forward passes cover),
model FLOPs and MFU against the GPU's bf16 dense peak, peak memory
(torch.cuda.max_memory_allocated, reset between modes). FLOPs use the usual 2 N per token
for a forward pass, N the distinct parameters of the base (tied embedding counted once,
adapters not counted, attention-score FLOPs left out): full fine-tuning 6 N (policy forward
+ backward) + 2 N (reference forward) per token; LoRA 4 N (forward + the backward's
activation gradients, no weight gradients for the frozen base) + 2 N (reference forward).

Only torch, transformers, accelerate and peft (plus this checkout) are needed: the trainer
imports nothing else (TRL's log-softmax is used only where TRL is installed). A JSON file
goes to $OUT/gpu_grpo_round.json after every phase (so a late failure keeps the earlier
figures) and a markdown table to stdout at the end. Each mode runs in its own try/except;
a phase that would start after --budget-s seconds is skipped and recorded as such.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import random
import sys
import time
import traceback
from pathlib import Path
from types import SimpleNamespace
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
from transformers import Qwen2Config, Qwen2ForCausalLM  # noqa: E402

from astor_core import TASKS  # noqa: E402
from astor_core.policy.batches import Sample  # noqa: E402
from astor_core.policy.memory import LoRAConfig  # noqa: E402
from astor_core.policy.model import num_parameters  # noqa: E402
from astor_core.policy.trainer import PolicyTrainer, TrainerConfig  # noqa: E402

H200_BF16_DENSE_TFLOPS = 989.0
"""NVIDIA's H200 SXM bf16 dense tensor-core peak (the sparse figure is twice this)."""

MODES: dict[str, dict[str, Any]] = {
    "lora": {"lora": True, "ckpt": False},
    "full": {"lora": False, "ckpt": False},
    "lora+ckpt": {"lora": True, "ckpt": True},
    "full+ckpt": {"lora": False, "ckpt": True},
}
"""Mode name -> LoRA on, gradient checkpointing on."""


def qwen25_coder_15b_config() -> Qwen2Config:
    """The architecture of Qwen2.5-Coder-1.5B (from its published config.json)."""
    return Qwen2Config(
        vocab_size=151936,
        hidden_size=1536,
        intermediate_size=8960,
        num_hidden_layers=28,
        num_attention_heads=12,
        num_key_value_heads=2,
        max_position_embeddings=32768,
        rope_parameters={"rope_type": "default", "rope_theta": 1_000_000.0},
        rms_norm_eps=1e-6,
        tie_word_embeddings=True,
        hidden_act="silu",
        bos_token_id=151643,
        eos_token_id=151643,
        pad_token_id=151643,
    )


def tiny_config() -> Qwen2Config:
    """A few-hundred-thousand-parameter model of the same family for the CPU smoke test."""
    return Qwen2Config(
        vocab_size=512,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=1024,
        rope_parameters={"rope_type": "default", "rope_theta": 1_000_000.0},
        tie_word_embeddings=True,
        bos_token_id=1,
        eos_token_id=1,
        pad_token_id=0,
    )


def build_model(cfg: Qwen2Config, device: torch.device, dtype: torch.dtype) -> Qwen2ForCausalLM:
    """A randomly initialised model created directly on `device` (seeded)."""
    torch.manual_seed(0)
    with torch.device(device):
        model = Qwen2ForCausalLM(cfg)
    return model.to(dtype)


def random_round(args: argparse.Namespace, vocab: int) -> list[Sample]:
    """prompts x group samples of random ids, the prompts dealt over the four tasks."""
    rng = random.Random(0)
    samples = []
    for p in range(args.prompts):
        prompt = [rng.randrange(2, vocab) for _ in range(args.prompt_len)]
        for _ in range(args.group):
            completion = [rng.randrange(2, vocab) for _ in range(args.completion_len)]
            samples.append(Sample(TASKS[p % len(TASKS)], prompt, completion, rng.gauss(0, 1)))
    return samples


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def peak_gib(device: torch.device) -> float | None:
    if device.type != "cuda":
        return None
    return round(torch.cuda.max_memory_allocated(device) / 2**30, 2)


def free(device: torch.device) -> None:
    """Release the previous phase's tensors and reset the peak-memory counter."""
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def grpo_round(
    mode: str, args: argparse.Namespace, cfg: Qwen2Config, device: torch.device
) -> dict[str, Any]:
    """Warm-up micro-batch, then one timed PolicyTrainer.step over the whole round."""
    spec = MODES[mode]
    t0 = time.perf_counter()
    # full FT: fp32 master weights under bf16 autocast; LoRA: bf16 frozen base, fp32 adapters
    model = build_model(cfg, device, torch.bfloat16 if spec["lora"] else torch.float32)
    n_params = num_parameters(model)
    trainer_cfg = TrainerConfig(
        mixed_precision="bf16",
        micro_batch_size=args.micro_batch,
        learning_rate=1e-5,
        lora=LoRAConfig(r=args.lora_r, alpha=2 * args.lora_r) if spec["lora"] else LoRAConfig(),
        gradient_checkpointing=spec["ckpt"],
    )
    trainer = PolicyTrainer(
        model, SimpleNamespace(pad_token_id=0), trainer_cfg, cpu=device.type == "cpu"
    )
    del model
    trainable = sum(p.numel() for p in trainer.unwrapped_model.parameters() if p.requires_grad)
    samples = random_round(args, cfg.vocab_size)
    betas = dict.fromkeys(TASKS, 0.04)
    t_build = time.perf_counter() - t0
    print(f"[{mode}] model + trainer built in {t_build:.1f} s", flush=True)

    t0 = time.perf_counter()
    trainer.step(samples[: args.micro_batch], betas)  # kernels, allocator, optimiser states
    sync(device)
    t_warm = time.perf_counter() - t0
    print(f"[{mode}] warm-up micro-batch {t_warm:.1f} s", flush=True)

    t0 = time.perf_counter()
    result = trainer.step(samples, betas)
    sync(device)
    dt = time.perf_counter() - t0
    tokens = sum(len(s.prompt_ids) + len(s.completion_ids) for s in samples)
    per_token = (4 if spec["lora"] else 6) * n_params + 2 * n_params
    flops = per_token * tokens
    out = {
        "mode": mode,
        "lora_r": args.lora_r if spec["lora"] else 0,
        "gradient_checkpointing": spec["ckpt"],
        "params": n_params,
        "trainable_params": trainable,
        "samples": len(samples),
        "tokens": tokens,
        "completion_tokens": int(result.metrics["tokens"]),
        "micro_batch": args.micro_batch,
        "seconds": round(dt, 3),
        "update_tokens_per_s": round(tokens / dt, 1),
        "flops_per_token": per_token,
        "flops_formula": ("4N+2N" if spec["lora"] else "6N+2N") + " per token, N=params",
        "achieved_tflops": round(flops / dt / 1e12, 2),
        "mfu": round(flops / dt / 1e12 / args.peak_tflops, 4),
        "peak_memory_gib": peak_gib(device),
        "loss": result.metrics["loss"],
        "warmup_s": round(t_warm, 2),
        "build_s": round(t_build, 2),
    }
    print(f"[{mode}] round {dt:.1f} s, {out['update_tokens_per_s']:.0f} tok/s", flush=True)
    del trainer, result
    return out


def generate_throughput(
    args: argparse.Namespace, cfg: Qwen2Config, device: torch.device
) -> dict[str, Any]:
    """HF generate (sampling, no early stop) of the same architecture in bf16."""
    model = build_model(cfg, device, torch.bfloat16).eval()
    gen = torch.Generator(device="cpu").manual_seed(1)
    ids = torch.randint(2, cfg.vocab_size, (args.gen_batch, args.prompt_len), generator=gen)
    ids, mask = ids.to(device), torch.ones_like(ids, device=device)

    def run(new: int) -> float:
        t0 = time.perf_counter()
        with torch.no_grad():
            out = model.generate(
                input_ids=ids,
                attention_mask=mask,
                max_new_tokens=new,
                min_new_tokens=new,
                do_sample=True,
                temperature=1.0,
                top_k=0,
                top_p=1.0,
                pad_token_id=cfg.pad_token_id,
                eos_token_id=cfg.eos_token_id,
            )
        sync(device)
        assert out.shape[1] == args.prompt_len + new, out.shape
        return time.perf_counter() - t0

    run(min(8, args.gen_tokens))  # warm-up
    dt = run(args.gen_tokens)
    new_tokens = args.gen_batch * args.gen_tokens
    print(f"[generate] {dt:.1f} s, {new_tokens / dt:.0f} new tok/s", flush=True)
    out = {
        "batch": args.gen_batch,
        "prompt_len": args.prompt_len,
        "new_tokens_per_sequence": args.gen_tokens,
        "seconds": round(dt, 3),
        "new_tokens_per_s": round(new_tokens / dt, 1),
        "peak_memory_gib": peak_gib(device),
    }
    return out


def table(report: dict[str, Any]) -> str:
    """The report as markdown."""
    lines = [
        "| mode | trainable params | tokens | s | update tok/s | TFLOP/s | MFU | peak GiB |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, r in report["modes"].items():
        if "error" in r or "skipped" in r:
            lines.append(f"| {name} | {r.get('error') or r.get('skipped')} |||||||")
            continue
        lines.append(
            f"| {name} | {r['trainable_params'] / 1e6:.2f} M | {r['tokens']} | {r['seconds']} "
            f"| {r['update_tokens_per_s']:.0f} | {r['achieved_tflops']} | {100 * r['mfu']:.1f} % "
            f"| {r['peak_memory_gib']} |"
        )
    g = report.get("generate", {})
    if "new_tokens_per_s" in g:
        lines += [
            "",
            "| generate | batch | new tokens/seq | s | new tok/s | peak GiB |",
            "|---|---|---|---|---|---|",
            f"| HF generate bf16 | {g['batch']} | {g['new_tokens_per_sequence']} | {g['seconds']} "
            f"| {g['new_tokens_per_s']:.0f} | {g['peak_memory_gib']} |",
        ]
    elif g:
        lines.append(f"\ngenerate: {g.get('error') or g.get('skipped')}")
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--tiny", action="store_true", help="tiny model and round (CPU smoke test)")
    ap.add_argument("--device", default="cuda")
    ap.add_argument(
        "--modes", default="lora,full,full+ckpt", help=f"comma list of {', '.join(MODES)}"
    )
    ap.add_argument("--prompts", type=int, default=32)
    ap.add_argument("--group", type=int, default=8)
    ap.add_argument("--prompt-len", type=int, default=256)
    ap.add_argument("--completion-len", type=int, default=256)
    ap.add_argument("--micro-batch", type=int, default=16)
    ap.add_argument("--lora-r", type=int, default=16)
    ap.add_argument("--gen-batch", type=int, default=64)
    ap.add_argument("--gen-tokens", type=int, default=256)
    ap.add_argument("--peak-tflops", type=float, default=H200_BF16_DENSE_TFLOPS)
    ap.add_argument("--budget-s", type=float, default=300.0, help="start no phase after this")
    args = ap.parse_args(argv)
    if args.tiny:
        args.prompts, args.group, args.prompt_len, args.completion_len = 4, 4, 16, 16
        args.micro_batch, args.gen_batch, args.gen_tokens, args.lora_r = 4, 4, 8, 4
    unknown = [m for m in args.modes.split(",") if m not in MODES]
    if unknown:
        ap.error(f"--modes: unknown mode(s) {unknown}; choose from {list(MODES)}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    start = time.perf_counter()
    device = torch.device(args.device)
    cfg = tiny_config() if args.tiny else qwen25_coder_15b_config()
    out_dir = Path(os.environ.get("OUT", "out"))
    out_dir.mkdir(parents=True, exist_ok=True)
    report: dict[str, Any] = {
        "config": "tiny" if args.tiny else "Qwen2.5-Coder-1.5B shape (random init)",
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "peak_tflops_bf16_dense": args.peak_tflops,
        "versions": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "transformers": __import__("transformers").__version__,
            "accelerate": __import__("accelerate").__version__,
            "peft": __import__("peft").__version__,
            "cuda": torch.version.cuda,
        },
        "round": {
            k: getattr(args, k)
            for k in ("prompts", "group", "prompt_len", "completion_len", "micro_batch")
        },
        "modes": {},
    }
    path = out_dir / "gpu_grpo_round.json"

    def save() -> None:
        report["elapsed_s"] = round(time.perf_counter() - start, 1)
        path.write_text(json.dumps(report, indent=2))

    def phase(name: str, fn: Any) -> dict[str, Any]:
        if time.perf_counter() - start > args.budget_s:
            print(f"[{name}] skipped: past the {args.budget_s:.0f} s budget", flush=True)
            return {"skipped": f"past the {args.budget_s:.0f} s budget"}
        free(device)
        try:
            return fn()
        except Exception as exc:  # one failing mode must not lose the others' figures
            traceback.print_exc()
            return {"error": f"{type(exc).__name__}: {exc}"[:300]}
        finally:
            free(device)

    # generate first: it is short, and a late mode is the one the budget should drop
    report["generate"] = phase("generate", lambda: generate_throughput(args, cfg, device))
    save()
    for mode in args.modes.split(","):
        report["modes"][mode] = phase(mode, lambda m=mode: grpo_round(m, args, cfg, device))
        save()
    print(table(report))
    print(f"\nwrote {path} ({report['elapsed_s']} s)")
    failed = [m for m, r in report["modes"].items() if "error" in r] + (
        ["generate"] if "error" in report["generate"] else []
    )
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
