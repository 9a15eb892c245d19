"""Commit-message generation: a text metric against the reference message, contrasted with
other commits' references so that a message that ignores the diff earns nothing. No execution.

Metrics (CommitMessageConfig.metric):
- "bnorm": sentence-level B-Norm BLEU, the BLEU variant that Tao et al. recommend for
  commit messages (W. Tao, Y. Wang, E. Shi, L. Du, S. Han, H. Zhang, D. Zhang, W. Zhang,
  "On the Evaluation of Commit Message Generation Models: An Experimental Study",
  ICSME 2021, pp. 126-136; script metrics/B-Norm.py of their replication package
  DeepSoftwareAnalytics/CommitMsgEmpirical, itself adapted from the Moses `bleu.py` by
  H. Hoang). Re-implemented here from that description:
    tokenisation: strip, lower-case, split into word runs (`\\w+`) and single
    punctuation characters, then the NIST mteval-v11a normalisation (which also splits
    `_` and other ASCII punctuation);
    score: BLEU-4 with a single reference, clipped n-gram counts, add-one smoothing of
    the 2-, 3- and 4-gram precisions (Lin & Och 2004), unsmoothed unigrams, brevity
    penalty exp(min(0, 1 - (r + 1) / (c + 1))). The corpus score is the mean of the
    sentence scores times 100.
- "rouge_l": ROUGE-L F-measure (LCS-based, Lin 2004) on the same tokens.
- "mix": weight * B-Norm + (1 - weight) * ROUGE-L.

Reward (contrastive): with s the metric against the record's own reference and m the
largest metric against the contrast references (other commits' messages from the same
source and split, bundled in the record's `tests` by `commit_contrast.attach_contrast`
when pools are built), reward = max(0, (s - m) / (1 - m)). A message that does not depend on the diff is
as close to the contrast references as to its own, so it rarely beats all of them; the
reference itself scores 1 (contrast references equal to it are never chosen).
"""

from __future__ import annotations

import math
import re
import sys
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal
from xml.sax.saxutils import unescape

from astor_core.tasks.base import (
    RecordError,
    Reward,
    check_lengths,
    parse_payload,
    parse_tests,
    record_id,
)

if TYPE_CHECKING:
    from astor_core.sandbox import Sandbox

Metric = Literal["bnorm", "rouge_l", "mix"]

_WORD_OR_PUNCT = re.compile(r"\w+|[^\s\w]")
_NIST_LANGUAGE_INDEPENDENT = [
    (re.compile(r"<skipped>"), ""),  # strip "skipped" tags
    (re.compile(r"-\n"), ""),  # join end-of-line hyphenation
    (re.compile(r"\n"), " "),  # join lines
]
_NIST_WESTERN = [
    (re.compile(r"([\{-\~\[-\` -\&\(-\+\:-\@\/])"), r" \1 "),  # punctuation, not apostrophe
    (re.compile(r"([^0-9])([\.,])"), r"\1 \2 "),  # period/comma unless after a digit
    (re.compile(r"([\.,])([^0-9])"), r" \1 \2"),  # period/comma unless before a digit
    (re.compile(r"([0-9])(-)"), r"\1 \2 "),  # dash after a digit
]


@dataclass(frozen=True)
class CommitMessageConfig:
    """Constants of the commit-message reward."""

    metric: Metric = "bnorm"
    """Which text metric is the reward: bnorm, rouge_l, or mix."""
    bnorm_weight: float = 0.5
    """Weight of B-Norm in the mix metric (ROUGE-L gets the rest)."""
    max_order: int = 4
    """Largest n-gram order of BLEU."""
    rouge_beta: float = 1.0
    """Recall weight of the ROUGE-L F-measure (1.0 = F1, as sumeval's alpha=0.5)."""
    first_line_only: bool = False
    """Score only the completion's first non-empty line (the message subject)."""
    pass_threshold: float = 1.0
    """Reward at or above which a message counts as passed (1.0 = token-exact match)."""

    def __post_init__(self) -> None:
        if self.metric not in ("bnorm", "rouge_l", "mix"):
            raise ValueError(f"unknown commit-message metric {self.metric!r}")
        if not 0.0 <= self.bnorm_weight <= 1.0:
            raise ValueError("bnorm_weight must be in [0, 1]")


def bnorm_tokenize(text: str) -> list[str]:
    """B-Norm's tokenisation: lower-case, word runs and single punctuation, NIST rules.

    >>> bnorm_tokenize("Fix NPE in Foo_bar.get() ")
    ['fix', 'npe', 'in', 'foo', '_', 'bar', '.', 'get', '(', ')']
    """
    s = " ".join(_WORD_OR_PUNCT.findall(text.strip().lower()))
    for pattern, replacement in _NIST_LANGUAGE_INDEPENDENT:
        s = pattern.sub(replacement, s)
    s = " " + unescape(s, {"&quot;": '"'}) + " "
    s = s.lower()
    for pattern, replacement in _NIST_WESTERN:
        s = pattern.sub(replacement, s)
    return s.split()


NgramCounts = list[Counter[tuple[str, ...]]]


def ngram_counts(tokens: Sequence[str], max_order: int = 4) -> NgramCounts:
    """The 1- to max_order-gram counts of a token list (reusable across comparisons).

    >>> [sorted(c.values()) for c in ngram_counts(["a", "b", "a"], 2)]
    [[1, 2], [1, 1]]
    """
    shifted = [tokens[i:] for i in range(max_order)]
    return [Counter(zip(*shifted[:n], strict=False)) for n in range(1, max_order + 1)]


def bleu_from_counts(
    ref: NgramCounts, ref_len: int, hyp: NgramCounts, hyp_len: int, max_order: int = 4
) -> float:
    """Sentence-level B-Norm BLEU from n-gram counts (see the module doc for the formula)."""
    tiny = sys.float_info.min
    log_precision = 0.0
    for n in range(1, max_order + 1):
        ref_counts = ref[n - 1]
        correct = sum(min(count, ref_counts.get(g, 0)) for g, count in hyp[n - 1].items())
        guess = max(hyp_len - n + 1, 0)
        add = 1 if n > 1 else 0
        log_precision += math.log(correct + add + tiny) - math.log(guess + add + tiny)
    brevity = min(0.0, 1.0 - (ref_len + 1) / (hyp_len + 1))
    return min(1.0, math.exp(log_precision / max_order + brevity))


def bleu_tokens(ref: Sequence[str], hyp: Sequence[str], max_order: int = 4) -> float:
    """Sentence-level B-Norm BLEU of already tokenised (bnorm_tokenize) texts.

    >>> bleu_tokens(["fix", "typo"], ["fix", "typo"])
    1.0
    """
    return bleu_from_counts(
        ngram_counts(ref, max_order), len(ref), ngram_counts(hyp, max_order), len(hyp), max_order
    )


def bnorm_bleu(reference: str, hypothesis: str, max_order: int = 4) -> float:
    """Sentence-level B-Norm BLEU in [0, 1] (smoothed BLEU-4, lower-cased).

    >>> bnorm_bleu("Fix typo in README", "fix typo in readme")
    1.0
    >>> round(bnorm_bleu("update changelog for release", "update changelog"), 4)  # exp(1 - 5/3)
    0.5134
    >>> bnorm_bleu("add tests", "remove docs") < 1e-50
    True
    """
    return bleu_tokens(bnorm_tokenize(reference), bnorm_tokenize(hypothesis), max_order)


def rouge_tokens(ref: Sequence[str], hyp: Sequence[str], beta: float = 1.0) -> float:
    """ROUGE-L F-measure of already tokenised texts.

    >>> rouge_tokens(["a"], [])
    0.0
    """
    lcs = _lcs_length(ref, hyp)
    if lcs == 0:
        return 0.0
    precision, recall = lcs / len(hyp), lcs / len(ref)
    return (1 + beta**2) * precision * recall / (recall + beta**2 * precision)


def rouge_l(reference: str, hypothesis: str, beta: float = 1.0) -> float:
    """ROUGE-L F-measure on B-Norm tokens.

    >>> round(rouge_l("fix bug in parser", "fix parser bug"), 4)
    0.5714
    >>> rouge_l("a", "")
    0.0
    """
    return rouge_tokens(bnorm_tokenize(reference), bnorm_tokenize(hypothesis), beta)


def _lcs_length(a: Sequence[str], b: Sequence[str]) -> int:
    previous = [0] * (len(b) + 1)
    for x in a:
        current = [0]
        for j, y in enumerate(b):
            current.append(previous[j] + 1 if x == y else max(previous[j + 1], current[j]))
        previous = current
    return previous[-1]


def bnorm_corpus(references: Sequence[str], hypotheses: Sequence[str], max_order: int = 4) -> float:
    """Corpus B-Norm as Tao et al. report it: mean sentence score times 100.

    >>> bnorm_corpus(["fix typo", "add tests"], ["fix typo", "add tests"])
    100.0
    """
    check_lengths(references, hypotheses)
    scores = [bnorm_bleu(r, h, max_order) for r, h in zip(references, hypotheses, strict=True)]
    return 100.0 * sum(scores) / len(scores) if scores else 0.0


def metric_parts(
    ref: Sequence[str], hyp: Sequence[str], config: CommitMessageConfig
) -> tuple[float, float, float]:
    """(configured metric, B-Norm, ROUGE-L) of tokenised texts; ROUGE-L is 0.0 when unused.

    >>> metric_parts(["fix", "typo"], ["fix", "typo"], CommitMessageConfig())
    (1.0, 1.0, 0.0)
    """
    bleu = bleu_tokens(ref, hyp, config.max_order) if config.metric != "rouge_l" else 0.0
    rouge = rouge_tokens(ref, hyp, config.rouge_beta) if config.metric != "bnorm" else 0.0
    value = {
        "bnorm": bleu,
        "rouge_l": rouge,
        "mix": config.bnorm_weight * bleu + (1 - config.bnorm_weight) * rouge,
    }[config.metric]
    return min(1.0, max(0.0, value)), bleu, rouge


def contrast_value(own: float, best_contrast: float) -> float:
    """How far the own-reference score beats the best contrast score, rescaled to [0, 1].

    (own - best) / (1 - best), 0 when negative or when a contrast reference is matched
    exactly (best = 1): an exact match of the own reference (own = 1) always gives 1.

    >>> contrast_value(1.0, 0.3), contrast_value(0.2, 0.2), contrast_value(0.625, 0.25)
    (1.0, 0.0, 0.5)
    """
    if best_contrast >= 1.0:
        return 0.0
    return min(1.0, max(0.0, (own - best_contrast) / (1.0 - best_contrast)))


def commit_message_reward(
    reference: str,
    completion: str,
    contrast: Sequence[str],
    config: CommitMessageConfig | None = None,
) -> Reward:
    """The contrastive reward of the completion: own reference against the contrast ones.

    >>> commit_message_reward("Fix typo", "fix typo\\n", ["Add tests"]).value
    1.0
    >>> commit_message_reward("Fix typo", "update", ["Add tests"]).value
    0.0
    >>> commit_message_reward("Fix typo", "  ", ["Add tests"]).reason
    'invalid_format'
    """
    if not contrast:
        raise ValueError("commit_message_reward needs at least one contrast reference")
    tokens = [bnorm_tokenize(c) for c in contrast]
    return reward_tokens(bnorm_tokenize(reference), tokens, completion, config)


def reward_tokens(
    reference: Sequence[str],
    contrast: Sequence[Sequence[str]],
    completion: str,
    config: CommitMessageConfig | None = None,
) -> Reward:
    """commit_message_reward with the reference and contrast references already tokenised
    (a GRPO group scores many completions against one record)."""
    cfg = config or CommitMessageConfig()
    message = completion.strip()
    if cfg.first_line_only:
        message = message.splitlines()[0].strip() if message else ""
    hyp = bnorm_tokenize(message)
    if not hyp:
        return Reward(0.0, "invalid_format", False, {"detail": "empty message"})
    own, bleu, rouge = metric_parts(reference, hyp, cfg)
    best = max(metric_parts(c, hyp, cfg)[0] for c in contrast)
    value = contrast_value(own, best)
    info = {"metric": own, "bnorm": bleu, "rouge_l": rouge, "contrast_max": best}
    return Reward(value, "scored", value >= cfg.pass_threshold, info)


def contrast_of(record: Mapping[str, Any]) -> list[str]:
    """The record's contrast references (its `tests`); RecordError when there are none."""
    contrast = parse_tests(record)
    if not contrast:
        raise RecordError(
            f"record {record_id(record)}: commit_message needs contrast references in tests "
            "(pools get them from attach_contrast); found none"
        )
    return contrast


@dataclass
class CommitMessageTask:
    """Commit messages scored by B-Norm BLEU and/or ROUGE-L against the reference,
    contrasted with the references of other commits bundled in the record."""

    config: CommitMessageConfig = field(default_factory=CommitMessageConfig)
    """The reward's constants."""
    name: str = "commit_message"
    """Task name (one of astor_core.TASKS)."""

    def format_prompt(self, record: Mapping[str, Any]) -> str:
        """The text the model continues: payload.prompt (which shows the diff)."""
        return str(parse_payload(record, ["diff", "prompt"])["prompt"])

    def score_batch(
        self,
        records: Sequence[Mapping[str, Any]],
        completions: Sequence[str],
        sandbox: Sandbox | None = None,
    ) -> list[Reward]:
        """Score each message; `sandbox` is unused (nothing runs)."""
        check_lengths(records, completions)
        tokenised: dict[tuple[str, str, str], tuple[list[str], list[list[str]]]] = {}
        keys = []
        for record in records:
            parse_payload(record, ["diff", "prompt"])
            key = (record_id(record), str(record["reference"]), str(record.get("tests")))
            if key not in tokenised:
                contrast = [bnorm_tokenize(c) for c in contrast_of(record)]
                tokenised[key] = (bnorm_tokenize(key[1]), contrast)
            keys.append(key)
        return [
            reward_tokens(*tokenised[k], c, self.config)
            for k, c in zip(keys, completions, strict=True)
        ]
