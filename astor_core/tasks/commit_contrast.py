"""Contrast sets of the commit-message reward: other commits' references bundled per record.

When pools are built, every commit_message record gets the references of other commits from
the same source and split (never one equal to its own), chosen by token overlap; the reward
(:func:`astor_core.tasks.commit_message.contrast_value`, reading them back with
:func:`~astor_core.tasks.commit_message.contrast_of`) subtracts the best of them.

Public API: :class:`ContrastGroup`, :func:`choose_contrast`, :func:`attach_contrast`.
"""

from __future__ import annotations

import json
import random
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from astor_core.tasks.commit_message import bnorm_tokenize


@dataclass(frozen=True)
class ContrastGroup:
    """The commit_message records of one source and split, indexed for choosing contrasts."""

    ids: tuple[str, ...]
    """prompt_ids, sorted (the order does not depend on how the records came in)."""
    references: tuple[str, ...]
    """Reference messages, in the order of ids."""
    keys: tuple[tuple[str, ...], ...]
    """B-Norm tokens of each reference (equal keys: the same message)."""
    postings: Mapping[str, tuple[int, ...]]
    """Token -> positions of the references that contain it."""

    @classmethod
    def of(cls, records: Sequence[Mapping[str, Any]]) -> ContrastGroup:
        """Index records (one source and split)."""
        rows = sorted(records, key=lambda r: str(r["prompt_id"]))
        keys = tuple(tuple(bnorm_tokenize(str(r["reference"]))) for r in rows)
        postings: dict[str, list[int]] = {}
        for i, key in enumerate(keys):
            for token in set(key):
                postings.setdefault(token, []).append(i)
        return cls(
            tuple(str(r["prompt_id"]) for r in rows),
            tuple(str(r["reference"]) for r in rows),
            keys,
            {t: tuple(p) for t, p in postings.items()},
        )

    def similar(self, key: Sequence[str]) -> list[int]:
        """Positions of the references sharing a token with `key`, most similar first
        (Jaccard similarity of the token sets; ties by position)."""
        own = set(key)
        shared: Counter[int] = Counter()
        for token in own:
            shared.update(self.postings.get(token, ()))
        union = {i: len(own | set(self.keys[i])) for i in shared}
        return sorted(shared, key=lambda i: (-shared[i] / union[i], i))

    def choose(self, prompt_id: str, reference: str, similar: int, size: int) -> list[str]:
        """Up to `size` contrast references for one record of this group: first the
        `similar` most similar references (by `similar()`), then references in an order
        seeded by the prompt_id. The record itself, references that tokenise like its own
        (the same message), and references alike to one already chosen are skipped."""
        key = tuple(bnorm_tokenize(reference))
        seen = {key}
        chosen: list[str] = []

        def take(positions: Iterator[int] | Sequence[int], limit: int) -> None:
            for i in positions:
                if len(chosen) >= limit:
                    return
                if self.ids[i] != prompt_id and self.keys[i] not in seen:
                    seen.add(self.keys[i])
                    chosen.append(self.references[i])

        take(self.similar(key), min(similar, size))
        rng = random.Random(f"astor-commit-contrast:{prompt_id}")
        take(iter(rng.sample(range(len(self.ids)), len(self.ids))), size)
        return chosen


def choose_contrast(
    record: Mapping[str, Any], group: Sequence[Mapping[str, Any]], similar: int, size: int
) -> list[str]:
    """The contrast references of `record` among `group` (its own source and split).

    >>> group = [{"prompt_id": str(i), "reference": m} for i, m in enumerate(
    ...     ["Fix typo", "fix typo.", "Fix TYPO", "Add tests", "Bump version", "Fix typo in docs"])]
    >>> choose_contrast(group[0], group, 2, 2)
    ['fix typo.', 'Fix typo in docs']
    >>> sorted(choose_contrast(group[0], group, 0, 9))
    ['Add tests', 'Bump version', 'Fix typo in docs', 'fix typo.']
    """
    chooser = ContrastGroup.of(group)
    return chooser.choose(str(record["prompt_id"]), str(record["reference"]), similar, size)


def attach_contrast(
    records: Sequence[Mapping[str, Any]], similar: int, size: int
) -> list[dict[str, Any]]:
    """Copies of the records; each commit_message record's `tests` becomes the JSON list of
    its contrast references (ContrastGroup.choose within its source and split: `similar`
    nearest, the rest of `size` drawn by its prompt_id). Other tasks' records are copied
    unchanged. Raises ValueError for a commit_message record that has no other distinct
    reference in its source and split.

    >>> rows = [{"prompt_id": str(i), "task": "commit_message", "source": "nngen",
    ...          "split": "train", "reference": m, "tests": "[]"} for i, m in enumerate(["a", "b"])]
    >>> [r["tests"] for r in attach_contrast(rows, 1, 4)]
    ['["b"]', '["a"]']
    """
    if size < 1 or not 0 <= similar <= size:
        raise ValueError(f"contrast sizes need 0 <= similar <= size >= 1, got {similar}, {size}")
    members: dict[tuple[str, str], list[Mapping[str, Any]]] = {}
    for r in records:
        if r["task"] == "commit_message":
            members.setdefault((str(r["source"]), str(r["split"])), []).append(r)
    groups = {k: ContrastGroup.of(rows) for k, rows in members.items()}
    out = []
    for r in records:
        row = dict(r)
        if r["task"] == "commit_message":
            group = groups[(str(r["source"]), str(r["split"]))]
            contrast = group.choose(str(r["prompt_id"]), str(r["reference"]), similar, size)
            if not contrast:
                raise ValueError(
                    f"record {r['prompt_id']}: no other commit message in source "
                    f"{r['source']} split {r['split']} to contrast it with"
                )
            row["tests"] = json.dumps(contrast, ensure_ascii=False, separators=(",", ":"))
        out.append(row)
    return out
