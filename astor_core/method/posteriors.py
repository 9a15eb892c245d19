"""Prompt posteriors and informativeness: the per-prompt half of ASTOR's task utility.

Per-prompt Beta(a, b) posteriors of the success rate (fractional updates from rewards in
[0, 1]; decayed toward the prior by ``decay`` each round), used by Thompson scoring and the
mean reward, and the two informativeness forms ``I(x)``: the posterior mean of the observed
within-group reward variance (``informativeness: variance``) and the Beta ``E[p(1-p)]``
(``informativeness: beta``). Section 1 of ASTOR_METHOD.md; departures: docs/METHOD.md.

Public API: :class:`PromptPosteriors`, :func:`beta_informativeness`,
:func:`variance_informativeness`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from astor_core.method.utility import UtilityConfig


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
