"""Adaptive utility-calibrated KL coefficients (ASTOR section 3).

Per task k the GRPO loss uses its own KL coefficient beta_k (the trainer takes
``calibrator.betas()``, a dict task -> float). In ``adaptive`` mode, once per round:

- the run's KL level ``KL_run``: an EMA over rounds of the sample-weighted mean KL the tasks
  actually reach (targets relative to it, so they mean the same at any scale of run);
- target ``KL*_k = KL_run * clip((max(U_k, 0) / mean U) ** kappa, rel_min, rel_max)``: a task
  worth more than the average may move further than the run does, a saturated or interfering
  task (U_k <= 0 gives rel_min) is held closer; when mean U <= 0 (or is not finite) the
  utilities carry no ranking and every target is KL_run;
- a multiplicative controller whose horizon is in rounds:
  ``e_k = clip(ln(KL_k / KL*_k), -err_clip, err_clip)``, ``beta_k <- beta_k exp(e_k / horizon)``
  clipped to [beta_min, beta_max]. Tasks without a measurement this round keep beta_k; while
  the policy has not moved (KL_run below ``kl_floor``) nothing changes.

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
    "beta_targets",
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
    kappa: float = 2.0
    """Exponent of the utility ratio U_k / mean U in the target KL."""
    rel_min: float = 0.1
    """Lower clip of the target's ratio to the run's KL (saturated / interfering tasks)."""
    rel_max: float = 10.0
    """Upper clip of the target's ratio to the run's KL (the most useful tasks)."""
    kl_ema: float = 0.5
    """Weight of the newest round in the EMA of the run's KL level KL_run."""
    err_clip: float = 1.0
    """Clip of the log error ln(KL_k / KL*_k): at most a factor exp(err_clip / horizon) a round."""
    horizon: float = 2.0
    """Controller horizon in rounds: a log error e moves ln(beta_k) by e / horizon per round."""
    beta_min: float = 1e-3
    """Lower bound of every beta_k."""
    beta_max: float = 1.0
    """Upper bound of every beta_k."""

    def __post_init__(self) -> None:
        if self.mode not in ("adaptive", "fixed"):
            raise ValueError(f"calibration: mode must be 'adaptive' or 'fixed', got {self.mode!r}")
        if not 0 < self.beta_min <= self.beta_init <= self.beta_max:
            raise ValueError("calibration: need 0 < beta_min <= beta_init <= beta_max")
        if not 0 < self.rel_min <= 1.0 <= self.rel_max:
            raise ValueError("calibration: need 0 < rel_min <= 1 <= rel_max")
        if self.horizon <= 0 or self.err_clip <= 0:
            raise ValueError("calibration: horizon and err_clip must be > 0")
        if not 0 < self.kl_ema <= 1:
            raise ValueError("calibration: need 0 < kl_ema <= 1")


def kl_targets(utility: np.ndarray, kl_run: float, config: CalibrationConfig) -> np.ndarray:
    """KL*_k = KL_run clip((max(U_k, 0) / mean U) ** kappa, rel_min, rel_max); KL_run
    everywhere if mean U <= 0 or a utility is not finite.

    >>> cfg = CalibrationConfig(kappa=1.0)
    >>> kl_targets(np.array([1.0, 1.0]), 0.02, cfg).tolist()
    [0.02, 0.02]
    >>> kl_targets(np.array([3.0, -1.0]), 0.02, cfg).round(6).tolist()
    [0.06, 0.002]
    >>> kl_targets(np.array([-1.0, -2.0]), 0.02, cfg).tolist()
    [0.02, 0.02]
    """
    u = np.asarray(utility, dtype=np.float64)
    mean = float(np.mean(u)) if u.size else 0.0
    if not np.isfinite(mean) or mean <= 0.0 or not np.all(np.isfinite(u)):
        return np.full(u.shape, kl_run)
    ratio = np.clip((np.maximum(u, 0.0) / mean) ** config.kappa, config.rel_min, config.rel_max)
    return kl_run * ratio


def beta_targets(utility: np.ndarray, config: CalibrationConfig) -> np.ndarray:
    """beta*_k = beta_init / r_k with r_k = clip((max(U_k, 0) / mean U) ** kappa, rel_min,
    rel_max), rescaled so that their geometric mean is beta_init: calibration moves the
    regularisation between tasks (less on the tasks worth training, more on saturated or
    interfering ones) without changing its overall level. beta_init everywhere if mean U <= 0.

    >>> cfg = CalibrationConfig(beta_init=0.04, kappa=1.0)
    >>> beta_targets(np.array([1.0, 1.0]), cfg).tolist()
    [0.04, 0.04]
    >>> b = beta_targets(np.array([3.0, 1.0]), cfg)
    >>> round(float(b[1] / b[0]), 6), round(float(np.sqrt(b[0] * b[1])), 6)
    (3.0, 0.04)
    """
    u = np.asarray(utility, dtype=np.float64)
    mean = float(np.mean(u)) if u.size else 0.0
    if not np.isfinite(mean) or mean <= 0.0 or not np.all(np.isfinite(u)):
        return np.full(u.shape, config.beta_init)
    ratio = np.clip((np.maximum(u, 0.0) / mean) ** config.kappa, config.rel_min, config.rel_max)
    raw = 1.0 / ratio
    raw /= np.exp(np.mean(np.log(raw)))
    return np.clip(config.beta_init * raw, config.beta_min, config.beta_max)


class Calibrator:
    """Per-task KL coefficients: adaptive controllers toward utility-scaled targets, or fixed."""

    def __init__(self, tasks: Sequence[str], config: CalibrationConfig | None = None) -> None:
        self.tasks = list(tasks)
        if not self.tasks:
            raise ValueError("calibration: no tasks given")
        self.config = config or CalibrationConfig()
        self.beta = np.full(len(self.tasks), self.config.beta_init)
        self.targets = np.full(len(self.tasks), np.nan)
        self.kl_run = float("nan")
        """EMA of the sample-weighted mean measured KL (NaN until the first measurement)."""

    def betas(self) -> dict[str, float]:
        return {t: float(b) for t, b in zip(self.tasks, self.beta, strict=True)}

    def target_kls(self) -> dict[str, float | None]:
        return {
            t: None if np.isnan(k) else float(k)
            for t, k in zip(self.tasks, self.targets, strict=True)
        }

    def update(
        self,
        measured_kl: Mapping[str, float],
        utility: Mapping[str, float],
        n_samples: Mapping[str, int] | int,
    ) -> dict[str, float]:
        """One step toward the utility-scaled betas; the KL level and targets are tracked.

        Returns the new betas."""
        if self.config.mode == "fixed":
            return self.betas()
        missing = [t for t in self.tasks if t not in utility]
        if missing:
            raise ValueError(f"calibration: utility missing for tasks {missing}")
        cfg = self.config
        level, weight = 0.0, 0.0
        for task, kl in measured_kl.items():
            if task not in self.tasks:
                raise ValueError(f"calibration: KL for unknown task {task!r} (tasks: {self.tasks})")
            kl = float(kl)
            if not np.isfinite(kl) or kl < 0:
                raise ValueError(
                    f"calibration: measured KL of task {task!r} must be finite and >= 0, got {kl}"
                )
            n = n_samples if isinstance(n_samples, int) else int(n_samples.get(task, 0))
            level += kl * max(n, 0)
            weight += max(n, 0)
        u = np.array([float(utility[t]) for t in self.tasks])
        if weight > 0:
            level /= weight
            self.kl_run = (
                level
                if np.isnan(self.kl_run)
                else (1 - cfg.kl_ema) * self.kl_run + cfg.kl_ema * level
            )
            self.targets = kl_targets(u, self.kl_run, cfg)
        step = np.clip(np.log(beta_targets(u, cfg) / self.beta), -cfg.err_clip, cfg.err_clip)
        self.beta = np.clip(self.beta * np.exp(step / cfg.horizon), cfg.beta_min, cfg.beta_max)
        return self.betas()

    def state_dict(self) -> dict[str, Any]:
        return {
            "tasks": list(self.tasks),
            "beta": self.beta.tolist(),
            "targets": [None if np.isnan(k) else float(k) for k in self.targets],
            "kl_run": None if np.isnan(self.kl_run) else self.kl_run,
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        if list(state["tasks"]) != self.tasks:
            raise ValueError(f"calibration state is over {state['tasks']}, not {self.tasks}")
        self.beta = np.asarray(state["beta"], dtype=np.float64)
        self.targets = np.array(
            [np.nan if k is None else float(k) for k in state["targets"]], dtype=np.float64
        )
        kl_run = state.get("kl_run")
        self.kl_run = float("nan") if kl_run is None else float(kl_run)


def make_calibrator(
    scheduler_name: str, tasks: Sequence[str], config: CalibrationConfig | None = None
) -> Calibrator:
    """The calibrator that goes with ``scheduler_name``: adaptive for ASTOR and its scheduling
    ablations (unless the config says fixed), fixed beta for every baseline and astor_fixed_beta."""
    config = copy.deepcopy(config) if config is not None else CalibrationConfig()
    if scheduler_name not in ADAPTIVE_SCHEDULERS:
        config.mode = "fixed"
    return Calibrator(tasks, config)
