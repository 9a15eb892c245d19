"""Task utility: the one signal that ASTOR's scheduler and KL calibration both read.

Implements section 1 of ASTOR_METHOD.md (formulas as implemented, and why they depart from it:
docs/METHOD.md):

- per-prompt Beta(a, b) posteriors of the success rate (fractional updates from rewards in
  [0, 1]; decayed toward the prior by ``decay`` each round), used by Thompson scoring and the
  mean reward;
- informativeness ``I(x)``: the posterior mean of the prompt's within-group reward variance,
  estimated from the variance its groups actually showed (``informativeness: variance``), so
  that partial credit with little spread (a BLEU ~0.5 group) is *not* informative; the
  Beta form ``E[p(1-p)]`` stays available (``informativeness: beta``);
- learning potential ``LP_k = EMA(mean |R - mean R| per rollout) * informative_fraction_k``:
  the unnormalised reward spread, i.e. the size of the policy-gradient signal before GRPO's std
  normalisation, so that a task whose rewards barely differ cannot look maximally learnable;
- synergy ``S``: cosines between per-task policy-gradient vectors *accumulated over rounds*
  (a decayed sum, count-sketched to a fixed length), reported with their noise floor and shrunk
  by it before they enter the utility;
- utility ``U_k = LP_k + eta * sum_{j != k} S_kj LP_j``.

Public API: :class:`UtilityConfig`, :class:`PromptFeedback`, :class:`RoundFeedback`,
:class:`PromptPosteriors`, :class:`SynergyEstimator`, :class:`UtilityTracker`,
:func:`beta_informativeness`, :func:`variance_informativeness`,
:func:`cosine_matrix`, :func:`cosine_noise_floor`, :func:`shrink_to_floor`,
:func:`policy_gradient_only`.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from astor_core.method.advantages import group_advantages

LP_SIGNALS: tuple[str, ...] = ("spread", "normalised")
"""Learning-potential signals: unnormalised |R - mean R| (default) or GRPO's |A| (the paper's)."""
INFORMATIVENESS: tuple[str, ...] = ("variance", "beta")
"""Prompt informativeness: observed within-group variance (default) or Beta E[p(1-p)]."""


@dataclass
class UtilityConfig:
    """Constants of the task-utility estimate (params.yaml section ``scheduler.utility``)."""

    prior_a: float = 1.0
    """Beta prior pseudo-successes of every prompt (unseen prompts keep the prior)."""
    prior_b: float = 1.0
    """Beta prior pseudo-failures of every prompt."""
    decay: float = 0.99
    """gamma: per-round factor pulling each prompt's evidence back toward the prior."""
    informativeness: str = "variance"
    """'variance' (posterior mean of the observed within-group variance) or 'beta' (E[p(1-p)])."""
    informative_rel_threshold: float = 0.75
    """A prompt is informative while I(x) >= this fraction of the prior's I (1/6 for Beta(1,1))."""
    lp_signal: str = "spread"
    """'spread': mean |R - mean R| per rollout (reward units); 'normalised': mean |A| of GRPO."""
    lp_ema: float = 0.3
    """Weight of the newest round in the EMA of the per-rollout learning signal."""
    lp_init: float = 0.5
    """Initial learning signal of a task never trained (optimistic: the maximum of the signal
    for rewards in [0, 1] is 0.5 for 'spread' and 1.0 for 'normalised')."""
    synergy_decay: float = 0.9
    """Per-round factor on the accumulated per-task gradient sums (the past's weight)."""
    synergy_sketch_dim: int = 16384
    """Gradients longer than this are count-sketched to this length (inner products preserved
    in expectation); shorter ones are kept whole."""
    synergy_z: float = 2.0
    """S used in the utility = raw cosine shrunk toward 0 by synergy_z noise floors."""
    synergy_seed: int = 0
    """Seed of the count-sketch hash (fixed per run, so sketches of different rounds add up)."""
    synergy_ema: float = 0.2
    """Weight of the newest round when a ready K x K synergy matrix is given instead."""
    eta: float = 0.5
    """Weight of transferred potential sum_{j != k} S_kj LP_j in the utility U_k."""

    def __post_init__(self) -> None:
        if self.prior_a <= 0 or self.prior_b <= 0:
            raise ValueError(
                f"utility: prior_a and prior_b must be > 0, got {self.prior_a}, {self.prior_b}"
            )
        if not 0.0 <= self.decay <= 1.0:
            raise ValueError(f"utility: decay must be in [0, 1], got {self.decay}")
        if not 0.0 <= self.synergy_decay <= 1.0:
            raise ValueError(f"utility: synergy_decay must be in [0, 1], got {self.synergy_decay}")
        for name in ("lp_ema", "synergy_ema"):
            value = getattr(self, name)
            if not 0.0 < value <= 1.0:
                raise ValueError(f"utility: {name} must be in (0, 1], got {value}")
        if self.lp_signal not in LP_SIGNALS:
            raise ValueError(
                f"utility: lp_signal must be one of {LP_SIGNALS}, got {self.lp_signal!r}"
            )
        if self.informativeness not in INFORMATIVENESS:
            raise ValueError(
                f"utility: informativeness must be one of {INFORMATIVENESS}, got {self.informativeness!r}"
            )
        if self.synergy_sketch_dim < 1 or self.synergy_z < 0:
            raise ValueError("utility: synergy_sketch_dim must be >= 1 and synergy_z >= 0")


@dataclass
class PromptFeedback:
    """What one scheduled prompt produced this round: its G rewards and advantages."""

    task: str
    """Task of the prompt."""
    prompt_id: str
    """Pool id of the prompt."""
    rewards: list[float]
    """The G rewards in [0, 1]."""
    advantages: list[float] | None = None
    """The G advantages the trainer used; None computes GRPO advantages from the rewards."""

    def to_dict(self) -> dict[str, Any]:
        return {
            "task": self.task,
            "prompt_id": self.prompt_id,
            "rewards": [float(r) for r in self.rewards],
            "advantages": None if self.advantages is None else [float(a) for a in self.advantages],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> PromptFeedback:
        return cls(
            task=str(data["task"]),
            prompt_id=str(data["prompt_id"]),
            rewards=list(data["rewards"]),
            advantages=None if data.get("advantages") is None else list(data["advantages"]),
        )


@dataclass
class RoundFeedback:
    """Everything the scheduler learns from one round (the trainer fills it).

    ``pg_gradients`` (dict task -> 1-D torch tensor or numpy array, on a shared parameter subset;
    ``gradients`` when only whole-loss vectors exist) feed the accumulated synergy estimate, or
    ``synergy`` (a ready K x K matrix in the scheduler's task order, NaN = not measured) its EMA;
    ``kl`` is the measured KL to the reference per task.
    """

    round_idx: int
    """The round this feedback belongs to."""
    prompts: list[PromptFeedback]
    """One entry per scheduled prompt."""
    gradients: Mapping[str, Any] | None = None
    """Optional per-task gradient vectors of the whole loss (KL term included); used for
    synergy only when ``pg_gradients`` is absent."""
    pg_gradients: Mapping[str, Any] | None = None
    """Optional per-task gradient vectors of the policy-gradient term alone (no KL term):
    what synergy should measure (same length for every task)."""
    synergy: Any | None = None
    """Optional ready K x K cosine matrix (rows/cols in the scheduler's task order)."""
    kl: dict[str, float] = field(default_factory=dict)
    """Measured KL(policy || reference) per task on this round's samples."""


def beta_informativeness(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Expected within-group reward variance E[p(1-p)] under p ~ Beta(a, b).

    >>> float(beta_informativeness(np.array([1.0]), np.array([1.0]))[0])  # 1/6
    0.16666666666666666
    >>> float(beta_informativeness(np.array([9.0]), np.array([1.0]))[0]) < 0.1
    True
    """
    s = a + b
    return a * b / (s * (s + 1.0))


def variance_informativeness(
    v_sum: np.ndarray, v_n: np.ndarray, prior_info: float, prior_n: float
) -> np.ndarray:
    """Posterior mean of a prompt's within-group reward variance: the prior's E[p(1-p)] with
    weight ``prior_n`` samples, plus the observed unbiased variances weighted by their samples
    (``v_sum`` = decayed sum of G * s^2 over the prompt's groups, ``v_n`` = decayed sum of G).

    An unseen prompt scores the prior (1/6); a group of 8 BLEU scores 0.5 +- 0.1 drops it far
    below (partial credit with little spread gives GRPO little signal); a 4/8 binary group
    raises it above the prior.

    >>> prior = 1 / 6
    >>> unseen = variance_informativeness(np.array([0.0]), np.array([0.0]), prior, 2.0)[0]
    >>> bleu = np.full(8, 0.5) + 0.1 * np.array([1, -1, 1, -1, 1, -1, 1, -1])
    >>> flat = variance_informativeness(np.array([8 * bleu.var(ddof=1)]), np.array([8.0]), prior, 2.0)[0]
    >>> mixed = np.array([1.0, 0, 1, 0, 1, 0, 1, 0])
    >>> half = variance_informativeness(np.array([8 * mixed.var(ddof=1)]), np.array([8.0]), prior, 2.0)[0]
    >>> bool(flat < unseen < half), round(float(unseen), 4)
    (True, 0.1667)
    """
    return (prior_n * prior_info + v_sum) / (prior_n + v_n)


def _as_vector(value: Any, task: str) -> np.ndarray:
    if hasattr(value, "detach"):  # a torch tensor; astor_core does not need torch imported here
        value = value.detach().to("cpu").double().numpy()
    vec = np.asarray(value, dtype=np.float64).reshape(-1)
    if not np.all(np.isfinite(vec)):
        raise ValueError(f"synergy: gradient vector of task {task!r} has non-finite entries")
    return vec


def cosine_matrix(vectors: Mapping[str, Any], tasks: Sequence[str]) -> np.ndarray:
    """K x K cosines between per-task gradient vectors; NaN where a task has none (or zero norm).

    >>> m = cosine_matrix({"a": [1.0, 0.0], "b": [1.0, 1.0]}, ["a", "b", "c"])
    >>> round(float(m[0, 1]), 4), bool(np.isnan(m[0, 2]))
    (0.7071, True)
    """
    k = len(tasks)
    out = np.full((k, k), np.nan)
    unit: dict[int, np.ndarray] = {}
    length = None
    for name, value in vectors.items():
        if name not in tasks:
            raise ValueError(f"synergy: gradient for unknown task {name!r} (tasks: {list(tasks)})")
        vec = _as_vector(value, name)
        if length is not None and vec.size != length:
            raise ValueError(
                f"synergy: gradient of task {name!r} has length {vec.size}, others {length}"
            )
        length = vec.size
        norm = float(np.linalg.norm(vec))
        if norm > 0.0:
            unit[tasks.index(name)] = vec / norm
    for i, ui in unit.items():
        for j, uj in unit.items():
            out[i, j] = float(np.clip(ui @ uj, -1.0, 1.0))
    return out


def cosine_noise_floor(u: np.ndarray, v: np.ndarray) -> float:
    """Noise floor of ``cos(u, v)``: the standard deviation of ``sum_i u_i v_i s_i / (|u||v|)``
    over independent random signs s_i (a coordinate sign-flip null: what the cosine would be
    if the two vectors agreed on magnitudes only by chance). It is 1/sqrt(d) for vectors
    spread evenly over d coordinates and grows when a few coordinates dominate.

    >>> round(cosine_noise_floor(np.ones(400), np.ones(400)), 4)
    0.05
    >>> cosine_noise_floor(np.array([1.0, 0.0]), np.array([1.0, 1e-9]))
    1.0
    """
    nu, nv = float(np.linalg.norm(u)), float(np.linalg.norm(v))
    if nu == 0.0 or nv == 0.0:
        return float("nan")
    return float(np.sqrt(np.sum((u / nu) ** 2 * (v / nv) ** 2)))


def shrink_to_floor(raw: np.ndarray, floor: np.ndarray, z: float) -> np.ndarray:
    """Soft-threshold each cosine toward 0 by ``z`` noise floors: sign(c) max(|c| - z f, 0);
    NaN where either is NaN. An estimate inside its noise band contributes nothing.

    >>> shrink_to_floor(np.array([0.3, -0.05, 0.5]), np.array([0.05, 0.05, np.nan]), 2.0).round(6).tolist()
    [0.2, -0.0, nan]
    """
    with np.errstate(invalid="ignore"):
        out = np.sign(raw) * np.maximum(np.abs(raw) - z * floor, 0.0)
    return np.where(np.isfinite(raw) & np.isfinite(floor), out, np.nan)


def count_sketch(vec: np.ndarray, dim: int, seed: int) -> np.ndarray:
    """Project ``vec`` to ``dim`` coordinates with a count sketch (each coordinate added, with a
    hashed random sign, to one hashed bucket); the identity when ``vec`` is not longer than dim.
    Inner products are preserved in expectation, and the hash depends only on (len, dim, seed),
    so sketches of different rounds add up.

    >>> x = np.arange(6.0)
    >>> bool(np.array_equal(count_sketch(x, 8, 0), x))
    True
    >>> count_sketch(x, 3, 0).shape
    (3,)
    """
    if vec.size <= dim:
        return vec
    rng = np.random.default_rng([seed, vec.size, dim])
    bucket = rng.integers(0, dim, size=vec.size)
    sign = rng.integers(0, 2, size=vec.size) * 2.0 - 1.0
    return np.bincount(bucket, weights=sign * vec, minlength=dim)


def policy_gradient_only(
    gradients: Mapping[str, Any], kl_gradients: Mapping[str, Any] | None = None
) -> dict[str, np.ndarray]:
    """Per-task policy-gradient vectors: the whole-loss gradient minus its KL part, when the
    trainer reports the KL part separately (``kl_gradients``; a task without one keeps its
    vector). Synergy must compare what the tasks *teach*, not the pull back to the reference.

    >>> policy_gradient_only({"a": [1.0, 2.0]}, {"a": [0.5, 0.5]})["a"].tolist()
    [0.5, 1.5]
    """
    out: dict[str, np.ndarray] = {}
    for task, value in gradients.items():
        vec = _as_vector(value, task)
        if kl_gradients is not None and task in kl_gradients:
            kl = _as_vector(kl_gradients[task], task)
            if kl.shape != vec.shape:
                raise ValueError(f"synergy: KL gradient of task {task!r} has the wrong length")
            vec = vec - kl
        out[task] = vec
    return out


class SynergyEstimator:
    """Cosines between per-task policy-gradient vectors accumulated over rounds.

    Per round, every task with signal adds its (sketched) vector to a sum that decays by
    ``synergy_decay``: consistent directions add up while round-to-round noise averages out,
    so the cosine of the sums clears the noise floor that one round's cosine sits at. Each
    estimate comes with :func:`cosine_noise_floor` of the two sums.
    """

    def __init__(self, tasks: Sequence[str], config: UtilityConfig) -> None:
        self.tasks = list(tasks)
        self.config = config
        self.sums: np.ndarray | None = None
        """K x dim decayed sums of sketched gradient vectors (None until the first vector)."""
        self.length: int | None = None
        """Length of the raw gradient vectors (every round must give the same)."""
        self.rounds = np.zeros(len(self.tasks), dtype=np.int64)
        """Rounds that contributed a vector, per task."""

    def update(self, vectors: Mapping[str, Any], with_signal: Sequence[str] | None = None) -> None:
        """Decay the sums, then add each task's vector; tasks not in ``with_signal`` (no group
        with reward spread this round) are skipped: their vector is noise or pure KL."""
        keep = None if with_signal is None else set(with_signal)
        sketched: dict[int, np.ndarray] = {}
        for name, value in vectors.items():
            if name not in self.tasks:
                raise ValueError(
                    f"synergy: gradient for unknown task {name!r} (tasks: {self.tasks})"
                )
            vec = _as_vector(value, name)
            if self.length is not None and vec.size != self.length:
                raise ValueError(
                    f"synergy: gradient of task {name!r} has length {vec.size}, others {self.length}"
                )
            self.length = vec.size
            if keep is not None and name not in keep:
                continue
            if not np.any(vec):
                continue
            sketched[self.tasks.index(name)] = count_sketch(
                vec, self.config.synergy_sketch_dim, self.config.synergy_seed
            )
        if self.sums is not None:
            self.sums *= self.config.synergy_decay
        for t, vec in sketched.items():
            if self.sums is None:
                self.sums = np.zeros((len(self.tasks), vec.size))
            self.sums[t] += vec
            self.rounds[t] += 1

    def estimate(self) -> tuple[np.ndarray, np.ndarray]:
        """(raw cosines, noise floors), K x K, NaN where a task has no accumulated vector;
        the diagonal is 1 (raw) and 0 (floor)."""
        k = len(self.tasks)
        raw = np.full((k, k), np.nan)
        floor = np.full((k, k), np.nan)
        np.fill_diagonal(raw, 1.0)
        np.fill_diagonal(floor, 0.0)
        if self.sums is None:
            return raw, floor
        norms = np.linalg.norm(self.sums, axis=1)
        for i in range(k):
            for j in range(i + 1, k):
                if norms[i] > 0 and norms[j] > 0:
                    c = float(np.clip(self.sums[i] @ self.sums[j] / (norms[i] * norms[j]), -1, 1))
                    f = cosine_noise_floor(self.sums[i], self.sums[j])
                    raw[i, j] = raw[j, i] = c
                    floor[i, j] = floor[j, i] = f
        return raw, floor

    def state_dict(self) -> dict[str, Any]:
        sums = None
        if self.sums is not None:
            data = np.ascontiguousarray(self.sums, dtype="<f8").tobytes()
            sums = {"shape": list(self.sums.shape), "f8": base64.b64encode(data).decode()}
        return {"sums": sums, "length": self.length, "rounds": self.rounds.tolist()}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        sums = state.get("sums")
        self.sums = (
            None
            if sums is None
            else np.frombuffer(base64.b64decode(sums["f8"]), dtype="<f8")
            .reshape(sums["shape"])
            .copy()
        )
        self.length = state.get("length")
        self.rounds = np.asarray(state.get("rounds", [0] * len(self.tasks)), dtype=np.int64)


NEVER: int = -(2**40)
"""last_round of a prompt never scheduled."""


class PromptPosteriors:
    """Beta posteriors of every prompt's success rate, one pair of float arrays per task.

    Memory is linear in the pool (two float64 per prompt plus the id index); every operation
    on a pool of N prompts is one vectorised O(N) pass.
    """

    def __init__(self, pools: Mapping[str, Sequence[str]], config: UtilityConfig) -> None:
        self.config = config
        self.ids: dict[str, list[str]] = {}
        self.index: dict[str, dict[str, int]] = {}
        self.a: dict[str, np.ndarray] = {}
        self.b: dict[str, np.ndarray] = {}
        self.v_sum: dict[str, np.ndarray] = {}
        """Decayed sum over the prompt's groups of G * (unbiased within-group reward variance)."""
        self.v_n: dict[str, np.ndarray] = {}
        """Decayed sum of the group sizes behind v_sum."""
        self.last_round: dict[str, np.ndarray] = {}
        """The last round each prompt was scheduled in (NEVER if not yet)."""
        for task, ids in pools.items():
            id_list = [str(i) for i in ids]
            index = {pid: n for n, pid in enumerate(id_list)}
            if len(index) != len(id_list):
                seen: set[str] = set()
                dup = next(p for p in id_list if p in seen or seen.add(p))  # type: ignore[func-returns-value]
                raise ValueError(
                    f"pool of task {task!r}: prompt id {dup!r} appears twice (ids must be unique)"
                )
            self.ids[task] = id_list
            self.index[task] = index
            self.a[task] = np.full(len(id_list), config.prior_a)
            self.b[task] = np.full(len(id_list), config.prior_b)
            self.v_sum[task] = np.zeros(len(id_list))
            self.v_n[task] = np.zeros(len(id_list))
            self.last_round[task] = np.full(len(id_list), NEVER, dtype=np.int64)
        self._info: dict[str, np.ndarray] = {}
        self.prior_informativeness = float(
            beta_informativeness(np.array([config.prior_a]), np.array([config.prior_b]))[0]
        )

    def size(self, task: str) -> int:
        return len(self.ids[task])

    def lookup(self, task: str, prompt_id: str) -> int:
        try:
            return self.index[task][prompt_id]
        except KeyError:
            raise ValueError(
                f"feedback: prompt {prompt_id!r} is not in the pool of task {task!r}"
            ) from None

    def decay(self) -> None:
        """Pull every posterior toward the prior: a <- a0 + gamma (a - a0) (same for b), and
        the observed-variance evidence v_sum, v_n <- gamma v_sum, gamma v_n."""
        g, a0, b0 = self.config.decay, self.config.prior_a, self.config.prior_b
        self._info.clear()
        for task in self.a:
            a, b = self.a[task], self.b[task]
            a -= a0
            a *= g
            a += a0
            b -= b0
            b *= g
            b += b0
            self.v_sum[task] *= g
            self.v_n[task] *= g

    def observe(
        self,
        task: str,
        idx: np.ndarray,
        successes: np.ndarray,
        failures: np.ndarray,
        var_sum: np.ndarray | None = None,
        var_n: np.ndarray | None = None,
        round_idx: int | None = None,
    ) -> None:
        """Add fractional evidence: a += sum of rewards, b += sum of (1 - rewards); the
        groups' G * s^2 and G (var_sum, var_n); mark the prompts scheduled in round_idx."""
        self._info.pop(task, None)
        np.add.at(self.a[task], idx, successes)
        np.add.at(self.b[task], idx, failures)
        if var_sum is not None and var_n is not None:
            np.add.at(self.v_sum[task], idx, var_sum)
            np.add.at(self.v_n[task], idx, var_n)
        if round_idx is not None:
            self.last_round[task][idx] = round_idx

    def informativeness(self, task: str) -> np.ndarray:
        """I(x) of every prompt of the task (cached until the posteriors change; read-only)."""
        if task not in self._info:
            if self.config.informativeness == "beta":
                info = beta_informativeness(self.a[task], self.b[task])
            else:
                info = variance_informativeness(
                    self.v_sum[task],
                    self.v_n[task],
                    self.prior_informativeness,
                    self.config.prior_a + self.config.prior_b,
                )
            info.flags.writeable = False
            self._info[task] = info
        return self._info[task]

    def informative_fraction(self, task: str) -> float:
        if self.size(task) == 0:
            return 0.0
        threshold = self.config.informative_rel_threshold * self.prior_informativeness
        return float(np.count_nonzero(self.informativeness(task) >= threshold)) / self.size(task)

    def thompson_scores(self, task: str, rng: np.random.Generator) -> np.ndarray:
        """Sample p ~ Beta(a, b) per prompt and score p (1 - p)."""
        p = rng.beta(self.a[task], self.b[task])
        return p * (1.0 - p)

    def state_dict(self) -> dict[str, Any]:
        return {
            task: {
                "a": self.a[task].tolist(),
                "b": self.b[task].tolist(),
                "v_sum": self.v_sum[task].tolist(),
                "v_n": self.v_n[task].tolist(),
                "last_round": self.last_round[task].tolist(),
            }
            for task in self.a
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self._info.clear()
        for task in self.a:
            a = np.asarray(state[task]["a"], dtype=np.float64)
            b = np.asarray(state[task]["b"], dtype=np.float64)
            if a.shape != self.a[task].shape or b.shape != self.b[task].shape:
                raise ValueError(f"posterior state of task {task!r} does not match its pool size")
            self.a[task] = a
            self.b[task] = b
            self.v_sum[task] = np.asarray(state[task]["v_sum"], dtype=np.float64)
            self.v_n[task] = np.asarray(state[task]["v_n"], dtype=np.float64)
            self.last_round[task] = np.asarray(state[task]["last_round"], dtype=np.int64)


class UtilityTracker:
    """Per-task learning potential, synergy and utility, updated from :class:`RoundFeedback`."""

    def __init__(
        self, pools: Mapping[str, Sequence[str]], config: UtilityConfig | None = None
    ) -> None:
        self.config = config or UtilityConfig()
        self.tasks: list[str] = list(pools)
        if not self.tasks:
            raise ValueError("scheduler: no task pools given")
        k = len(self.tasks)
        self.posteriors = PromptPosteriors(pools, self.config)
        self.abs_adv = np.full(k, self.config.lp_init)
        """EMA of the per-rollout learning signal (|R - mean R|, or |A| when 'normalised');
        lp_init until the task's first measurement, which then replaces it."""
        self.measured = np.zeros(k, dtype=bool)
        """Whether the task's learning signal has been measured at least once."""
        self.synergy = np.eye(k)
        """The S the utility uses: accumulated cosines shrunk by their noise floors."""
        self.synergy_raw = np.full((k, k), np.nan)
        """Accumulated gradient cosines before shrinkage (NaN: not measured yet)."""
        self.synergy_floor = np.full((k, k), np.nan)
        """Noise floor of each raw cosine (cosine_noise_floor of the accumulated sums)."""
        np.fill_diagonal(self.synergy_raw, 1.0)
        np.fill_diagonal(self.synergy_floor, 0.0)
        self.synergy_estimator = SynergyEstimator(self.tasks, self.config)
        self.rollouts = np.zeros(k, dtype=np.int64)
        self.mean_reward = np.full(k, np.nan)
        self.zero_variance_fraction = np.full(k, np.nan)
        self.kl = np.full(k, np.nan)

    # --- reading --------------------------------------------------------------------------
    def informative_fractions(self) -> np.ndarray:
        return np.array([self.posteriors.informative_fraction(t) for t in self.tasks])

    def learning_potential(self) -> np.ndarray:
        """LP_k = EMA(per-rollout learning signal) * fraction of pool still informative."""
        return self.abs_adv * self.informative_fractions()

    def utilities(self, eta: float | None = None) -> np.ndarray:
        """U_k = LP_k + eta * sum_{j != k} S_kj LP_j."""
        eta = self.config.eta if eta is None else eta
        lp = self.learning_potential()
        off = np.nan_to_num(self.synergy - np.diag(np.diag(self.synergy)))
        return lp + eta * off @ lp

    # --- writing --------------------------------------------------------------------------
    def update(self, feedback: RoundFeedback) -> None:
        """Decay posteriors, add this round's evidence, update the EMAs (one call per round)."""
        k = len(self.tasks)
        pos = {t: n for n, t in enumerate(self.tasks)}
        items = feedback.prompts
        task_of = np.empty(len(items), dtype=np.int64)
        prompt_of = np.empty(len(items), dtype=np.int64)
        for n, item in enumerate(items):
            if item.task not in pos:
                raise ValueError(
                    f"feedback record {n}: unknown task {item.task!r} (tasks: {self.tasks})"
                )
            task_of[n] = pos[item.task]
            prompt_of[n] = self.posteriors.lookup(item.task, item.prompt_id)
        sizes = np.array([len(item.rewards) for item in items], dtype=np.int64)
        flat = np.fromiter(
            (float(x) for item in items for x in item.rewards),
            dtype=np.float64,
            count=int(sizes.sum()),
        )
        group = np.repeat(np.arange(len(items)), sizes)
        bad = (~np.isfinite(flat)) | (flat < 0.0) | (flat > 1.0)
        if np.any(sizes == 0) or bad.any():
            n = (
                int(np.flatnonzero(sizes == 0)[0])
                if np.any(sizes == 0)
                else int(group[np.argmax(bad)])
            )
            raise ValueError(
                f"feedback record {n} ({items[n].task}/{items[n].prompt_id}): rewards must be a non-empty "
                f"list of finite numbers in [0, 1], got {items[n].rewards!r}"
            )
        starts = (
            np.concatenate([[0], np.cumsum(sizes)[:-1]])
            if len(items)
            else np.zeros(0, dtype=np.int64)
        )
        sums = np.add.reduceat(flat, starts) if len(items) else np.zeros(0)
        spread = (
            (np.maximum.reduceat(flat, starts) - np.minimum.reduceat(flat, starts))
            if len(items)
            else sums
        )
        centred = flat - (sums / np.maximum(sizes, 1))[group] if len(items) else flat
        sq_dev = np.bincount(group, weights=centred**2, minlength=len(items))
        # G * s^2 with s^2 the unbiased (ddof 1) variance; a group of one carries no evidence
        var_n = np.where(sizes > 1, sizes, 0).astype(np.float64)
        var_sum = np.where(sizes > 1, sizes * sq_dev / np.maximum(sizes - 1, 1), 0.0)
        advantages = self._advantages(items, flat, group, sums, sizes)  # validates given ones
        signal = np.abs(centred if self.config.lp_signal == "spread" else advantages)
        signal_per_group = np.add.reduceat(signal, starts) if len(items) else sums
        count = np.bincount(task_of, weights=sizes, minlength=k).astype(np.int64)
        signal_sum = np.bincount(task_of, weights=signal_per_group, minlength=k)
        reward_sum = np.bincount(task_of, weights=sums, minlength=k)
        zero_var = np.bincount(task_of, weights=(spread == 0.0).astype(np.float64), minlength=k)
        groups = np.bincount(task_of, minlength=k)
        self.posteriors.decay()
        for t, task in enumerate(self.tasks):
            mask = task_of == t
            if mask.any():
                self.posteriors.observe(
                    task,
                    prompt_of[mask],
                    sums[mask],
                    sizes[mask] - sums[mask],
                    var_sum[mask],
                    var_n[mask],
                    feedback.round_idx,
                )
        seen = count > 0
        lam = self.config.lp_ema
        now = np.divide(signal_sum, count, out=np.zeros(k), where=seen)
        # optimistic only until measured: the first measurement replaces lp_init (an EMA that
        # kept mixing in the prior would hide for rounds that a task gives no signal at all)
        first = seen & ~self.measured
        again = seen & self.measured
        self.abs_adv[first] = now[first]
        self.abs_adv[again] = (1 - lam) * self.abs_adv[again] + lam * now[again]
        self.measured |= seen
        self.mean_reward[seen] = reward_sum[seen] / count[seen]
        self.zero_variance_fraction[seen] = zero_var[seen] / groups[seen]
        self.rollouts += count
        # a task whose every group this round had equal rewards got no policy gradient: its
        # vector is the KL pull or numerical noise (tasks not scheduled have no groups at all)
        with_signal = [self.tasks[t] for t in range(k) if groups[t] == 0 or groups[t] > zero_var[t]]
        vectors = feedback.pg_gradients if feedback.pg_gradients is not None else feedback.gradients
        if vectors is not None:
            self.observe_gradients(vectors, with_signal)
        if feedback.synergy is not None:
            self.observe_synergy(feedback.synergy)
        for task, value in (feedback.kl or {}).items():
            if task not in pos:
                raise ValueError(f"feedback: KL for unknown task {task!r}")
            self.kl[pos[task]] = float(value)

    def _advantages(
        self,
        items: Sequence[PromptFeedback],
        flat: np.ndarray,
        group: np.ndarray,
        sums: np.ndarray,
        sizes: np.ndarray,
    ) -> np.ndarray:
        """The trainer's advantages where given, GRPO's std-normalised ones otherwise (flat)."""
        if not items:
            return flat
        adv = group_advantages(flat, sizes)
        offset = 0
        for n, item in enumerate(items):
            size = int(sizes[n])
            if item.advantages is not None:
                given = np.asarray(item.advantages, dtype=np.float64)
                if given.shape != (size,) or not np.all(np.isfinite(given)):
                    raise ValueError(
                        f"feedback record {n} ({item.task}/{item.prompt_id}): advantages must be "
                        f"{size} finite numbers, got {item.advantages!r}"
                    )
                adv[offset : offset + size] = given
            offset += size
        return adv

    def observe_gradients(
        self, vectors: Mapping[str, Any], with_signal: Sequence[str] | None = None
    ) -> None:
        """Accumulate per-task policy-gradient vectors; S = accumulated cosines shrunk by
        ``synergy_z`` noise floors (pairs never measured keep their S)."""
        self.synergy_estimator.update(vectors, with_signal)
        raw, floor = self.synergy_estimator.estimate()
        measured = np.isfinite(raw)
        self.synergy_raw[measured] = raw[measured]
        self.synergy_floor[measured] = floor[measured]
        shrunk = shrink_to_floor(raw, floor, self.config.synergy_z)
        upd = measured & ~np.eye(len(self.tasks), dtype=bool)
        self.synergy[upd] = shrunk[upd]

    def observe_synergy(self, matrix: Any) -> None:
        """EMA-update S with a ready K x K cosine matrix; NaN entries (pairs not measured) keep S."""
        m = np.asarray(matrix, dtype=np.float64)
        k = len(self.tasks)
        if m.shape != (k, k):
            raise ValueError(
                f"synergy: matrix must be {k}x{k} (tasks {self.tasks}), got shape {m.shape}"
            )
        finite = np.isfinite(m)
        if np.any(np.abs(m[finite]) > 1.0 + 1e-9):
            raise ValueError("synergy: cosines must lie in [-1, 1]")
        lam = self.config.synergy_ema
        upd = finite & ~np.eye(k, dtype=bool)
        self.synergy[upd] = (1 - lam) * self.synergy[upd] + lam * np.clip(m[upd], -1.0, 1.0)
        self.synergy_raw[upd] = self.synergy[upd]

    # --- persistence ----------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {
            "posteriors": self.posteriors.state_dict(),
            "abs_adv": self.abs_adv.tolist(),
            "measured": self.measured.tolist(),
            "synergy": self.synergy.tolist(),
            "synergy_raw": _matrix_to_json(self.synergy_raw),
            "synergy_floor": _matrix_to_json(self.synergy_floor),
            "synergy_estimator": self.synergy_estimator.state_dict(),
            "rollouts": self.rollouts.tolist(),
            "mean_reward": _nan_to_none(self.mean_reward),
            "zero_variance_fraction": _nan_to_none(self.zero_variance_fraction),
            "kl": _nan_to_none(self.kl),
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.posteriors.load_state_dict(state["posteriors"])
        self.abs_adv = np.asarray(state["abs_adv"], dtype=np.float64)
        self.measured = np.asarray(state["measured"], dtype=bool)
        self.synergy = np.asarray(state["synergy"], dtype=np.float64)
        self.synergy_raw = _matrix_from_json(state["synergy_raw"])
        self.synergy_floor = _matrix_from_json(state["synergy_floor"])
        self.synergy_estimator.load_state_dict(state["synergy_estimator"])
        self.rollouts = np.asarray(state["rollouts"], dtype=np.int64)
        self.mean_reward = _none_to_nan(state["mean_reward"])
        self.zero_variance_fraction = _none_to_nan(state["zero_variance_fraction"])
        self.kl = _none_to_nan(state["kl"])


def _matrix_to_json(m: np.ndarray) -> list[list[float | None]]:
    return [_nan_to_none(row) for row in m]


def _matrix_from_json(rows: Sequence[Sequence[float | None]]) -> np.ndarray:
    return np.array([_none_to_nan(r) for r in rows], dtype=np.float64)


def _nan_to_none(values: np.ndarray) -> list[float | None]:
    return [None if np.isnan(v) else float(v) for v in values]


def _none_to_nan(values: Sequence[float | None]) -> np.ndarray:
    return np.array([np.nan if v is None else float(v) for v in values], dtype=np.float64)
