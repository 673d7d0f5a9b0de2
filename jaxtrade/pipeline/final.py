"""The final model: the best stage on validation by `--final_metric` (default Sharpe; DESIGN section 4), among the
stages this command trained and those an earlier command finished in the same run directory with the same
settings."""

from __future__ import annotations

import math

from absl import logging

from jaxtrade.config import SequenceConfig
from jaxtrade.pipeline.stages import STAGE_FILES, fmt, stage_dir, stage_settings


def finished_stage(cfg: SequenceConfig, symbol: str, stage: str):
    """(record, network, params) of a stage an earlier command finished in this run directory, else None."""
    from jaxtrade.policies import load_model

    directory = stage_dir(cfg, symbol, stage)
    if not directory.is_dir() or not any(directory.iterdir()):
        return None
    try:
        model = load_model(directory)
        meta = model.config
        if not meta.get("complete") or not meta.get("record"):
            return None
        if meta.get("settings") is not None and meta["settings"] != stage_settings(cfg, stage):
            logging.info("%s %s: the finished stage in %s was trained with other settings; it is not considered "
                         "for the final model", symbol, stage, directory)
            return None
        return dict(meta["record"]), model.network, model.params
    except Exception as e:  # noqa: BLE001 - an unreadable old checkpoint must not stop this run; it just does not compete
        logging.warning("%s %s: cannot read the earlier checkpoint in %s (%s); it is not considered for the "
                        "final model", symbol, stage, directory, e)
        return None


def select_final(records: dict[str, dict], metric: str) -> tuple[str, str]:
    """The best stage on validation by `metric` (higher is better; null ranks last). Returns (stage, why)."""
    def value(stage):
        v = records[stage]["validation"].get(metric)
        return -math.inf if v is None or (isinstance(v, float) and math.isnan(v)) else float(v)

    ranked = sorted(records, key=lambda s: (value(s), list(STAGE_FILES).index(s)), reverse=True)
    parts = [f"{s} {fmt(records[s]['validation'].get(metric))}" for s in ranked]
    return ranked[0], f"highest validation {metric} ({', '.join(parts)})"
