"""The great-expectations half of the pool validation suite (GX 1.x, ephemeral context):
one expectation per rule over each pool frame, its derived rule columns included
(astor_core.data.validation.derive_columns); failures come back as
:class:`astor_core.data.validation.Failure` records. GX is imported inside :func:`run_suite`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from astor_core import TASKS
from astor_core.data.schema import COLUMNS, DIFFICULTIES, SOURCES, SPLITS
from astor_core.data.validation import Failure, ValidationConfig


def _expectations(gx: Any, columns: Sequence[str], cfg: ValidationConfig) -> list[tuple[str, Any]]:
    """(rule, expectation) pairs for a frame with these columns."""
    E = gx.expectations
    present = set(columns)
    out: list[tuple[str, Any]] = [
        ("required_columns", E.ExpectColumnToExist(column=c)) for c in COLUMNS
    ]
    for c in COLUMNS:
        if c in present:
            out.append(("not_null", E.ExpectColumnValuesToNotBeNull(column=c)))
    sets = {
        "task": ("task_known", list(TASKS)),
        "source": ("source_known", list(SOURCES)),
        "split": ("split_known", list(SPLITS)),
        "difficulty": ("difficulty_range", list(DIFFICULTIES)),
    }
    for c, (rule, values) in sets.items():
        if c in present:
            out.append((rule, E.ExpectColumnValuesToBeInSet(column=c, value_set=values)))
    if "prompt_id" in present:
        out.append(("unique_prompt_id", E.ExpectColumnValuesToBeUnique(column="prompt_id")))
    bounds = {
        "payload": cfg.max_payload_chars,
        "reference": cfg.max_reference_chars,
        "tests": cfg.max_tests_chars,
    }
    for c, high in bounds.items():
        if c in present:
            out.append(
                ("bounded_lengths", E.ExpectColumnValueLengthsToBeBetween(column=c, max_value=high))
            )
    derived = {
        "_payload_ok": "payload_json_keys",
        "_tests_ok": "tests_present",
        "_id_ok": "prompt_id_hash",
        "_utf8_ok": "utf8",
        "_ref_ok": "non_empty_reference",
    }
    for c, rule in derived.items():
        out.append((rule, E.ExpectColumnValuesToBeInSet(column=c, value_set=[True])))
    out.append(
        ("no_train_eval_leak", E.ExpectColumnValuesToBeInSet(column="_leak", value_set=[False]))
    )
    return out


def run_suite(
    frames: Mapping[str, Any], cfg: ValidationConfig, docs_dir: Path | None
) -> list[Failure]:
    """Run the GX suite over each named frame (derived columns included); write data docs."""
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig

    ctx = gx.get_context(mode="ephemeral")
    ctx.variables.progress_bars = ProgressBarsConfig(globally=False)
    if docs_dir is not None:
        docs_dir.mkdir(parents=True, exist_ok=True)
        for site in list(ctx.list_data_docs_sites()):
            ctx.delete_data_docs_site(site)
        ctx.add_data_docs_site(
            site_name="astor_pools",
            site_config={
                "class_name": "SiteBuilder",
                "store_backend": {
                    "class_name": "TupleFilesystemStoreBackend",
                    "base_directory": str(docs_dir.resolve()),
                },
                "site_index_builder": {"class_name": "DefaultSiteIndexBuilder"},
            },
        )
    source = ctx.data_sources.add_pandas("pools")
    failures: list[Failure] = []
    for name, frame in frames.items():
        pairs = _expectations(gx, list(frame.columns), cfg)
        suite = ctx.suites.add(gx.ExpectationSuite(name=f"pool_{name}"))
        for rule, exp in pairs:
            exp.meta = {"rule": rule}
            suite.add_expectation(exp)
        batch = source.add_dataframe_asset(name).add_batch_definition_whole_dataframe("all")
        definition = ctx.validation_definitions.add(
            gx.ValidationDefinition(data=batch, suite=suite, name=name)
        )
        index_cols = ["prompt_id"] if "prompt_id" in frame.columns else []
        checkpoint = ctx.checkpoints.add(
            gx.Checkpoint(
                name=f"check_{name}",
                validation_definitions=[definition],
                actions=[gx.checkpoint.UpdateDataDocsAction(name="docs")]
                if docs_dir is not None
                else [],
                result_format={
                    "result_format": "COMPLETE",
                    "unexpected_index_column_names": index_cols,
                },
            )
        )
        result = checkpoint.run(batch_parameters={"dataframe": frame})
        for vr in result.run_results.values():
            for r in vr.results:
                if r.success:
                    continue
                cfg_ = r.expectation_config
                column = str(cfg_.kwargs.get("column", ""))
                res = r.result or {}
                ids = [
                    str(row.get("prompt_id", "?")) if isinstance(row, Mapping) else f"row {row}"
                    for row in res.get("unexpected_index_list") or []
                ]
                detail = ""
                if r.exception_info and r.exception_info.get("raised_exception"):
                    detail = str(r.exception_info.get("exception_message", ""))[:200]
                if cfg_.type == "expect_column_to_exist":
                    detail = f"column '{column}' is missing"
                failures.append(
                    Failure(
                        pool=name,
                        rule=str((cfg_.meta or {}).get("rule", cfg_.type)),
                        expectation=cfg_.type,
                        column=column,
                        count=int(res.get("unexpected_count") or (1 if not ids else len(ids))),
                        examples=list(dict.fromkeys(ids))[: cfg.example_rows],
                        detail=detail,
                    )
                )
    return failures
