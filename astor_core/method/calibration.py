"""Adaptive utility-calibrated KL coefficients (ASTOR section 3).

Per task k the GRPO loss uses its own KL coefficient beta_k (the trainer takes
``calibrator.betas()``, a dict task -> float). In ``adaptive`` mode:

- target ``KL*_k = KL_0 * (max(U_k, 0) / mean U) ** kappa`` clipped to [target_min, target_max];
  when mean U <= 0 (or is not finite) every target is KL_0: no task is worth more than another,
  so the utility says nothing and the base target applies. A task with U_k <= 0 (saturated or
  interfering) gets ratio 0, hence target_min: it is held closest to the reference;
- the controller of Ziegler et al. (2019): ``e = clip(KL_k / KL*_k - 1, -err_clip, err_clip)``,
  ``beta_k <- beta_k (1 + e n_k / horizon)`` clipped to [beta_min, beta_max], where n_k is the
  number of samples of task k behind the measured KL_k. Tasks without a measurement keep beta_k.

In ``fixed`` mode beta_k = beta_init for every task (uniform MTRL and the ``astor_fixed_beta``
ablation). Usage::

    cal = make_calibrator(scheduler_name, tasks, CalibrationConfig())
    cal.update(measured_kl={"code_generation": 0.03}, utility={...}, n_samples={...})
    betas = cal.betas()
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = [
    "ADAPTIVE_SCHEDULERS",
    "CalibrationConfig",
    "Calibrator",
    "kl_targets",
    "make_calibrator",
]

ADAPTIVE_SCHEDULERS: tuple[str, ...] = ("astor", "astor_no_synergy", "astor_no_prio")
"""Schedulers whose runs calibrate beta per task; every other one uses one fixed beta."""


@dataclass
class CalibrationConfig:
    """Constants of the per-task KL calibration (params.yaml section ``calibration``)."""

    mode: str = "adaptive"
    """'adaptive' (per-task controller toward utility-scaled targets) or 'fixed' (beta_init)."""
    beta_init: float = 0.04
    """Initial (and, in fixed mode, the only) KL coefficient of every task."""
    kl_base: float = 0.05
    """KL_0: the target KL of a task whose utility equals the mean utility."""
    kappa: float = 1.0
    """Exponent of the utility ratio in the target KL."""
    target_min: float = 0.005
    """Lower clip of the per-task target KL (saturated / interfering tasks)."""
    target_max: float = 0.2
    """Upper clip of the per-task target KL (the most useful tasks)."""
    err_clip: float = 0.2
    """Clip of the proportional error KL/KL* - 1 (Ziegler et al. 2019)."""
    horizon: float = 10000.0
    """Controller horizon in samples: how many samples a full-error step takes to act."""
    beta_min: float = 1e-4
    """Lower bound of every beta_k."""
    beta_max: float = 1.0
    """Upper bound of every beta_k."""

    def __post_init__(self) -> None:
        if self.mode not in ("adaptive", "fixed"):
            raise ValueError(f"calibration: mode must be 'adaptive' or 'fixed', got {self.mode!r}")
        if not 0 < self.beta_min <= self.beta_init <= self.beta_max:
            raise ValueError("calibration: need 0 < beta_min <= beta_init <= beta_max")
        if not 0 < self.target_min <= self.kl_base <= self.target_max:
            raise ValueError("calibration: need 0 < target_min <= kl_base <= target_max")
        if self.horizon <= 0 or self.err_clip <= 0:
            raise ValueError("calibration: horizon and err_clip must be > 0")


def kl_targets(utility: np.ndarray, config: CalibrationConfig) -> np.ndarray:
    """KL*_k = KL_0 (max(U_k, 0) / mean U) ** kappa, clipped; KL_0 everywhere if mean U <= 0.

    >>> cfg = CalibrationConfig()
    >>> kl_targets(np.array([1.0, 1.0]), cfg).tolist()
    [0.05, 0.05]
    >>> kl_targets(np.array([3.0, -1.0]), cfg).round(6).tolist()
    [0.15, 0.005]
    >>> kl_targets(np.array([-1.0, -2.0]), cfg).tolist()
    [0.05, 0.05]
    """
    u = np.asarray(utility, dtype=np.float64)
    mean = float(np.mean(u)) if u.size else 0.0
    if not np.isfinite(mean) or mean <= 0.0 or not np.all(np.isfinite(u)):
        return np.full(u.shape, config.kl_base)
    ratio = np.maximum(u, 0.0) / mean
    return np.clip(config.kl_base * ratio**config.kappa, config.target_min, config.target_max)


class Calibrator:
    """Per-task KL coefficients: adaptive controllers toward utility-scaled targets, or fixed."""

    def __init__(self, tasks: Sequence[str], config: CalibrationConfig | None = None) -> None:
        self.tasks = list(tasks)
        if not self.tasks:
            raise ValueError("calibration: no tasks given")
        self.config = config or CalibrationConfig()
        self.beta = np.full(len(self.tasks), self.config.beta_init)
        self.targets = np.full(len(self.tasks), self.config.kl_base)

    def betas(self) -> dict[str, float]:
        return {t: float(b) for t, b in zip(self.tasks, self.beta, strict=True)}

    def target_kls(self) -> dict[str, float]:
        return {t: float(k) for t, k in zip(self.tasks, self.targets, strict=True)}

    def update(
        self,
        measured_kl: Mapping[str, float],
        utility: Mapping[str, float],
        n_samples: Mapping[str, int] | int,
    ) -> dict[str, float]:
        """One controller step per task with a KL measurement; returns the new betas."""
        if self.config.mode == "fixed":
            return self.betas()
        missing = [t for t in self.tasks if t not in utility]
        if missing:
            raise ValueError(f"calibration: utility missing for tasks {missing}")
        u = np.array([float(utility[t]) for t in self.tasks])
        self.targets = kl_targets(u, self.config)
        cfg = self.config
        for task, kl in measured_kl.items():
            if task not in self.tasks:
                raise ValueError(f"calibration: KL for unknown task {task!r} (tasks: {self.tasks})")
            kl = float(kl)
            if not np.isfinite(kl) or kl < 0:
                raise ValueError(
                    f"calibration: measured KL of task {task!r} must be finite and >= 0, got {kl}"
                )
            n = n_samples if isinstance(n_samples, int) else int(n_samples.get(task, 0))
            if n <= 0:
                continue
            t = self.tasks.index(task)
            err = float(np.clip(kl / self.targets[t] - 1.0, -cfg.err_clip, cfg.err_clip))
            self.beta[t] = float(
                np.clip(self.beta[t] * (1.0 + err * n / cfg.horizon), cfg.beta_min, cfg.beta_max)
            )
        return self.betas()

    def state_dict(self) -> dict[str, Any]:
        return {
            "tasks": list(self.tasks),
            "beta": self.beta.tolist(),
            "targets": self.targets.tolist(),
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        if list(state["tasks"]) != self.tasks:
            raise ValueError(f"calibration state is over {state['tasks']}, not {self.tasks}")
        self.beta = np.asarray(state["beta"], dtype=np.float64)
        self.targets = np.asarray(state["targets"], dtype=np.float64)


def make_calibrator(
    scheduler_name: str, tasks: Sequence[str], config: CalibrationConfig | None = None
) -> Calibrator:
    """The calibrator that goes with ``scheduler_name``: adaptive for ASTOR and its scheduling
    ablations (unless the config says fixed), fixed beta for every baseline and astor_fixed_beta."""
    config = copy.deepcopy(config) if config is not None else CalibrationConfig()
    if scheduler_name not in ADAPTIVE_SCHEDULERS:
        config.mode = "fixed"
    return Calibrator(tasks, config)
