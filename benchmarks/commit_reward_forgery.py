"""Can a policy farm the commit-message reward without reading the diff? Measured on NNGen.

One command: ``.venv/bin/python benchmarks/commit_reward_forgery.py`` (``--help`` for options;
about 3 minutes on 2 cores). NNGen's records are built exactly as the pools build them
(`astor_core.data.build.real_records`: NNGen's valid file is the train split, its test file
the eval split, each commit message with its contrast references from its own split), and
every figure on the test split comes from `CommitMessageTask.score_batch`, the reward the
training loop calls.

1. Fit the best diff-independent constant on TRAIN: a beam search over the frequent train
   message tokens (appending one token per step), seeded with the frequent whole train
   messages and n-grams and with the red-team's ". add fix to -", maximising the mean
   reward on the train split. The same search under plain B-Norm (the reward before the
   contrast) is reported too.
2. Retrieval baseline (NNGen, Liu et al. ASE 2018): bag-of-words cosine of the test diff
   against every train diff, the 5 nearest re-ranked by B-Norm BLEU between the diffs,
   that train commit's message.
3. On TEST, mean reward with a bootstrap 95% interval (scipy.stats.bootstrap, BCa) of: the
   fitted constants, diff copies (the whole diff, its first line, its first changed line),
   retrieval, an unrelated real message (another test commit's reference, a fixed
   derangement), the reference itself and near-copies of it; plus the constant/retrieval
   ratio with a paired bootstrap interval.
`--tune` instead chooses the contrast size on TRAIN alone: the train split is halved by
prompt_id, retrieval and the constant are fitted on one half and scored on the other.
`--write-doc` puts the table into docs/REWARDS.md between the commit_reward_forgery markers.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import re
import statistics
import sys
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from astor_core.data.build import real_records  # noqa: E402
from astor_core.data.config import DataConfig  # noqa: E402
from astor_core.tasks.commit_contrast import attach_contrast  # noqa: E402
from astor_core.tasks.commit_message import (  # noqa: E402
    CommitMessageConfig,
    CommitMessageTask,
    bleu_from_counts,
    bleu_tokens,
    bnorm_tokenize,
    contrast_value,
    metric_parts,
    ngram_counts,
)

DOC = ROOT / "docs" / "REWARDS.md"
BEGIN, END = "<!-- commit_reward_forgery:begin -->", "<!-- commit_reward_forgery:end -->"
RED_TEAM_CONSTANT = ". add fix to -"


@dataclass(frozen=True)
class ForgeryBenchConfig:
    """Settings of the commit-reward forgery benchmark."""

    raw_dir: str = "data/raw"
    """Folder with nngen/ (the pools' raw sources)."""
    contrast: int = DataConfig().commit_contrast
    """Contrast references per record (the pools' data.commit_contrast)."""
    similar: int = DataConfig().commit_contrast_similar
    """How many of them are the most similar messages (data.commit_contrast_similar)."""
    vocabulary: int = 40
    """Most frequent train message tokens the constant search appends from."""
    seeds: int = 50
    """Most frequent whole train messages, 2-grams and 3-grams (each) seeding the search."""
    beam: int = 4
    """Beam width of the constant search."""
    max_tokens: int = 8
    """Longest constant tried, in B-Norm tokens."""
    retrieval_k: int = 5
    """Nearest train diffs re-ranked by BLEU (NNGen's k)."""
    resamples: int = 2000
    """Bootstrap resamples per interval."""
    seed: int = 0
    """Seed of the bootstrap and of the unrelated-message derangement."""
    tune_grid: tuple[tuple[int, int], ...] = ((0, 8), (0, 16), (4, 16), (8, 16), (16, 16))
    """(similar, size) pairs compared by --tune; it picks the one whose fitted constant
    scores the smallest share of retrieval on the held-out train half."""


Scorer = Callable[[Sequence[str]], float]


def load_splits(cfg: ForgeryBenchConfig) -> tuple[list[dict], list[dict]]:
    """NNGen's (train, eval) records exactly as the pools hold them."""
    data = DataConfig(
        raw_dir=cfg.raw_dir, commit_contrast=cfg.contrast, commit_contrast_similar=cfg.similar
    )
    records = real_records("nngen", data)
    return [r for r in records if r["split"] == "train"], [
        r for r in records if r["split"] == "eval"
    ]


def diff_of(record: Mapping[str, Any]) -> str:
    return str(json.loads(record["payload"])["diff"])


def retrieve(train: Sequence[Mapping[str, Any]], queries: Sequence[Mapping[str, Any]], k: int):
    """NNGen: cosine of bag-of-words diff vectors, the k nearest re-ranked by diff BLEU."""
    from sklearn.feature_extraction.text import CountVectorizer
    from sklearn.metrics.pairwise import cosine_similarity

    vec = CountVectorizer(tokenizer=bnorm_tokenize, lowercase=False, token_pattern=None)
    train_x = vec.fit_transform([diff_of(r) for r in train])
    sims = cosine_similarity(vec.transform([diff_of(r) for r in queries]), train_x)
    train_tokens = [bnorm_tokenize(diff_of(r)) for r in train]
    out = []
    for q, row in zip(queries, sims, strict=True):
        q_tokens = bnorm_tokenize(diff_of(q))
        top = np.argsort(-row, kind="stable")[:k]
        best = max(top, key=lambda j: bleu_tokens(train_tokens[j], q_tokens))
        out.append(str(train[best]["reference"]))
    return out


def metric_against(refs: Sequence[Sequence[str]], reward: CommitMessageConfig):
    """A function hyp -> [metric(ref, hyp) for ref in refs] for the search. With plain
    B-Norm the references' n-gram counts are computed once, and a reference sharing no
    token with hyp gets 0.0 (its B-Norm is below 1e-70); the winner is re-scored exactly."""
    if reward.metric != "bnorm":
        return lambda hyp: [metric_parts(t, hyp, reward)[0] for t in refs]
    order = reward.max_order
    counts = [(ngram_counts(t, order), len(t)) for t in refs]
    postings: dict[str, set[int]] = {}
    for i, t in enumerate(refs):
        for token in t:
            postings.setdefault(token, set()).add(i)

    def scores(hyp: Sequence[str]) -> list[float]:
        h = ngram_counts(hyp, order)
        out = [0.0] * len(refs)
        for i in set().union(*(postings.get(t, set()) for t in hyp)):
            c, n = counts[i]
            out[i] = bleu_from_counts(c, n, h, len(hyp), order)
        return out

    return scores


def constant_scorer(records: Sequence[Mapping[str, Any]], reward: CommitMessageConfig) -> Scorer:
    """Mean reward of one message used for every record, for the search: the metric is
    computed once per distinct reference (own and contrast references all come from these
    records' split), then each record's contrastive value. Equal to score_batch's mean
    (checked for the winner)."""
    refs = sorted(
        {str(r["reference"]) for r in records}
        | {c for r in records for c in json.loads(r["tests"])}
    )
    index = {m: i for i, m in enumerate(refs)}
    metric = metric_against([bnorm_tokenize(m) for m in refs], reward)
    own = [index[str(r["reference"])] for r in records]
    contrast = [[index[c] for c in json.loads(r["tests"])] for r in records]

    def mean_reward(hyp: Sequence[str]) -> float:
        if not hyp:
            return 0.0
        s = metric(hyp)
        vals = [
            contrast_value(s[o], max(s[c] for c in cs)) for o, cs in zip(own, contrast, strict=True)
        ]
        return sum(vals) / len(vals)

    return mean_reward


def plain_scorer(records: Sequence[Mapping[str, Any]], reward: CommitMessageConfig) -> Scorer:
    """Mean plain metric (no contrast: the reward before this change) of one message."""
    refs = Counter(tuple(bnorm_tokenize(str(r["reference"]))) for r in records)
    metric = metric_against(list(refs), reward)
    weights = list(refs.values())

    def mean_metric(hyp: Sequence[str]) -> float:
        if not hyp:
            return 0.0
        return sum(w * v for w, v in zip(weights, metric(hyp), strict=True)) / len(records)

    return mean_metric


def search_constant(
    records: Sequence[Mapping[str, Any]], score: Scorer, cfg: ForgeryBenchConfig
) -> tuple[str, float, int]:
    """Beam search for the diff-independent message with the highest mean `score`:
    (message, its mean, candidates tried)."""
    messages = [bnorm_tokenize(str(r["reference"])) for r in records]
    tokens = Counter(t for m in messages for t in m)
    vocab = [t for t, _ in tokens.most_common(cfg.vocabulary)]
    seeds: list[tuple[str, ...]] = [tuple(bnorm_tokenize(RED_TEAM_CONSTANT))]
    seeds += [m for m, _ in Counter(tuple(m) for m in messages).most_common(cfg.seeds)]
    for n in (2, 3):
        grams = Counter(tuple(m[i : i + n]) for m in messages for i in range(len(m) - n + 1))
        seeds += [g for g, _ in grams.most_common(cfg.seeds)]
    seeds += [(t,) for t in vocab]
    cache: dict[tuple[str, ...], float] = {}

    def value(c: tuple[str, ...]) -> float:
        if c not in cache:
            cache[c] = score(c)
        return cache[c]

    beam = sorted(set(seeds), key=lambda c: (-value(c), c))[: cfg.beam]
    for _ in range(cfg.max_tokens - 1):
        grown = {b + (t,) for b in beam for t in vocab if len(b) < cfg.max_tokens}
        grown |= {(t,) + b for b in beam for t in vocab if len(b) < cfg.max_tokens}
        if not grown:
            break
        beam = sorted(grown, key=lambda c: (-value(c), c))[: cfg.beam]
    best = max(cache, key=lambda c: (cache[c], c))
    return " ".join(best), cache[best], len(cache)


def derangement(n: int, seed: int) -> list[int]:
    """A fixed permutation of range(n) with no fixed point (n >= 2)."""
    order = list(range(n))
    random.Random(seed).shuffle(order)
    return [order[(order.index(i) + 1) % n] for i in range(n)]


def first_changed_line(diff: str) -> str:
    """The first added or removed line of a unified diff, without its marker."""
    for line in diff.splitlines():
        if line[:1] in "+-" and not line.startswith(("+++", "---")) and line[1:].strip():
            return line[1:].strip()
    return diff.splitlines()[0]


def quoted_share(record: Mapping[str, Any]) -> float:
    """Share of the reference's B-Norm tokens that occur in the diff (1.0: all quoted)."""
    ref = bnorm_tokenize(str(record["reference"]))
    diff = set(bnorm_tokenize(diff_of(record)))
    return sum(t in diff for t in ref) / len(ref) if ref else 0.0


def drop_last_word(message: str) -> str:
    words = message.split()
    return " ".join(words[:-1]) if len(words) > 1 else message


def systems(
    train: Sequence[Mapping[str, Any]],
    test: Sequence[Mapping[str, Any]],
    constants: Mapping[str, str],
    cfg: ForgeryBenchConfig,
) -> dict[str, list[str]]:
    """Every message set scored on the test split, by name."""
    refs = [str(r["reference"]) for r in test]
    perm = derangement(len(test), cfg.seed)
    out = {name: [c] * len(test) for name, c in constants.items()}
    out["diff copy: the whole diff"] = [diff_of(r) for r in test]
    out["diff copy: its first line"] = [diff_of(r).splitlines()[0] for r in test]
    out["diff copy: first changed line"] = [first_changed_line(diff_of(r)) for r in test]
    out["retrieval (NNGen)"] = retrieve(train, test, cfg.retrieval_k)
    out["unrelated real message"] = [refs[j] for j in perm]
    out["reference"] = refs
    out["reference minus last word"] = [drop_last_word(m) for m in refs]
    return out


def bootstrap_mean(values: Sequence[float], cfg: ForgeryBenchConfig) -> tuple[float, float]:
    from scipy.stats import bootstrap

    data = np.asarray(values, dtype=float)
    if np.ptp(data) == 0:
        return float(data[0]), float(data[0])
    res = bootstrap(
        (data,), np.mean, n_resamples=cfg.resamples, rng=np.random.default_rng(cfg.seed)
    )
    return float(res.confidence_interval.low), float(res.confidence_interval.high)


def bootstrap_ratio(a: Sequence[float], b: Sequence[float], cfg: ForgeryBenchConfig):
    """Paired bootstrap (percentile) interval of mean(a) / mean(b)."""
    from scipy.stats import bootstrap

    res = bootstrap(
        (np.asarray(a), np.asarray(b)),
        lambda x, y, axis=-1: np.mean(x, axis=axis) / np.mean(y, axis=axis),
        paired=True,
        vectorized=True,
        method="percentile",
        n_resamples=cfg.resamples,
        rng=np.random.default_rng(cfg.seed),
    )
    return float(res.confidence_interval.low), float(res.confidence_interval.high)


def evaluate(cfg: ForgeryBenchConfig) -> dict[str, Any]:
    """Fit on train, score every system on test; the figures as a dict."""
    t0 = time.time()
    reward = CommitMessageConfig()
    train, test = load_splits(cfg)
    fitted, fit_train, tried = search_constant(train, constant_scorer(train, reward), cfg)
    plain_fit, plain_train, _ = search_constant(train, plain_scorer(train, reward), cfg)
    constants = {
        "constant fitted to this reward on train": fitted,
        "constant fitted to plain B-Norm on train": plain_fit,
        f"red-team constant {RED_TEAM_CONSTANT!r}": RED_TEAM_CONSTANT,
    }
    task = CommitMessageTask(reward)
    quoting = [quoted_share(r) >= 0.5 for r in test]
    rows = {}
    per_item = {}
    for name, messages in systems(train, test, constants, cfg).items():
        rewards = task.score_batch(test, messages)
        values = [r.value for r in rewards]
        plain = [r.info.get("metric", 0.0) for r in rewards]
        per_item[name] = values
        rows[name] = {
            "mean": statistics.fmean(values),
            "ci95": bootstrap_mean(values, cfg),
            "plain_bnorm": statistics.fmean(plain),
            "from_quoting_commits": sum(v for v, q in zip(values, quoting, strict=True) if q)
            / max(sum(values), 1e-12),
        }
    score = constant_scorer(test, reward)
    fast = score(bnorm_tokenize(fitted))
    exact = rows["constant fitted to this reward on train"]["mean"]
    if abs(fast - exact) > 1e-6:
        raise AssertionError(f"search scorer {fast} != score_batch {exact}")
    retrieval = per_item["retrieval (NNGen)"]
    best_const = max(
        (n for n in constants), key=lambda n: rows[n]["mean"]
    )  # the strongest constant on test, whichever it is
    return {
        "contrast": cfg.contrast,
        "similar": cfg.similar,
        "train": len(train),
        "test": len(test),
        "fitted": {"this reward": [fitted, fit_train], "plain B-Norm": [plain_fit, plain_train]},
        "candidates_tried": tried,
        "rows": rows,
        "strongest_constant": best_const,
        "constant_over_retrieval": rows[best_const]["mean"] / rows["retrieval (NNGen)"]["mean"],
        "constant_over_retrieval_ci95": bootstrap_ratio(per_item[best_const], retrieval, cfg),
        "quoting_commits": sum(quoting) / len(test),
        "retrieval_over_unrelated": rows["retrieval (NNGen)"]["mean"]
        / max(rows["unrelated real message"]["mean"], 1e-12),
        "seconds": time.time() - t0,
    }


def tune(cfg: ForgeryBenchConfig) -> dict[str, Any]:
    """Contrast size chosen on TRAIN only: fit on one half, measure on the other."""
    train, _ = load_splits(cfg)
    reward = CommitMessageConfig()
    half = [hashlib.sha256(str(r["prompt_id"]).encode()).digest()[0] % 2 for r in train]
    fit_part = [r for r, h in zip(train, half, strict=True) if h == 0]
    held_raw = [r for r, h in zip(train, half, strict=True) if h == 1]
    retrieved = retrieve(fit_part, held_raw, cfg.retrieval_k)
    perm = derangement(len(held_raw), cfg.seed)
    unrelated = [str(held_raw[j]["reference"]) for j in perm]
    out: dict[str, Any] = {"fit": len(fit_part), "held_out": len(held_raw), "grid": {}}
    for similar, size in cfg.tune_grid:
        fit = attach_contrast(fit_part, similar, size)
        held = attach_contrast(held_raw, similar, size)
        constant, _, _ = search_constant(fit, constant_scorer(fit, reward), cfg)
        task = CommitMessageTask(reward)
        mean = {
            name: statistics.fmean(r.value for r in task.score_batch(held, msgs))
            for name, msgs in (
                ("constant", [constant] * len(held)),
                ("retrieval", retrieved),
                ("unrelated", unrelated),
            )
        }
        mean["constant_over_retrieval"] = mean["constant"] / mean["retrieval"]
        out["grid"][f"{similar}/{size}"] = {"fitted": constant, **mean}
        print(f"similar {similar}, size {size}: {out['grid'][f'{similar}/{size}']}", flush=True)
    best = min(
        cfg.tune_grid, key=lambda p: out["grid"][f"{p[0]}/{p[1]}"]["constant_over_retrieval"]
    )
    out["chosen"] = list(best)
    return out


def table(res: Mapping[str, Any]) -> str:
    """The figures as a markdown block for docs/REWARDS.md."""
    lines = [
        f"NNGen, train {res['train']} / test {res['test']} commits, {res['contrast']} contrast "
        f"references ({res['similar']} most similar); `python benchmarks/commit_reward_forgery.py --write-doc` "
        f"({res['seconds']:.0f} s on 2 cores).",
        "",
        "| test split, messages | reward (mean, 95% CI) | plain B-Norm (old reward) "
        "| share of the reward from quoting commits |",
        "|---|---|---|---|",
    ]
    for name, row in res["rows"].items():
        label = name
        if name.startswith("constant fitted to this"):
            label = f"{name}: `{res['fitted']['this reward'][0]}`"
        elif name.startswith("constant fitted to plain"):
            label = f"{name}: `{res['fitted']['plain B-Norm'][0]}`"
        lo, hi = row["ci95"]
        share = f"{row['from_quoting_commits']:.0%}" if row["mean"] >= 1e-3 else "-"
        lines.append(
            f"| {label} | {row['mean']:.4f} [{lo:.4f}, {hi:.4f}] | {row['plain_bnorm']:.4f} "
            f"| {share} |"
        )
    lo, hi = res["constant_over_retrieval_ci95"]
    lines += [
        "",
        f"Strongest constant ({res['strongest_constant']}) / retrieval: "
        f"**{res['constant_over_retrieval']:.1%}** (paired bootstrap 95% CI {lo:.1%} to "
        f"{hi:.1%}); retrieval / unrelated real message: "
        f"**{res['retrieval_over_unrelated']:.1f}x**. The constant search tried "
        f"{res['candidates_tried']} candidates on train. Quoting commits: the "
        f"{res['quoting_commits']:.0%} of test commits whose reference has at least half of "
        "its tokens in the diff.",
    ]
    return "\n".join(lines)


def write_doc(block: str) -> None:
    text = DOC.read_text(encoding="utf-8")
    pattern = re.compile(re.escape(BEGIN) + r".*?" + re.escape(END), re.S)
    if not pattern.search(text):
        raise SystemExit(f"error: {DOC}: markers {BEGIN} ... {END} not found")
    DOC.write_text(pattern.sub(lambda _: f"{BEGIN}\n{block}\n{END}", text), encoding="utf-8")


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--raw-dir", default=ForgeryBenchConfig.raw_dir)
    parser.add_argument("--contrast", type=int, default=ForgeryBenchConfig.contrast)
    parser.add_argument("--similar", type=int, default=ForgeryBenchConfig.similar)
    parser.add_argument("--tune", action="store_true", help="choose the contrast sizes on train")
    parser.add_argument("--write-doc", action="store_true", help="update docs/REWARDS.md")
    parser.add_argument("--json", type=Path, help="also write the figures as JSON here")
    args = parser.parse_args(argv)
    cfg = replace(
        ForgeryBenchConfig(), raw_dir=args.raw_dir, contrast=args.contrast, similar=args.similar
    )
    res = tune(cfg) if args.tune else evaluate(cfg)
    if args.json:
        args.json.write_text(json.dumps(res, indent=2) + "\n", encoding="utf-8")
    if args.tune:
        print(f"chosen (similar, size): {res['chosen']}")
        return
    block = table(res)
    print(block)
    if args.write_doc:
        write_doc(block)


if __name__ == "__main__":
    main()
