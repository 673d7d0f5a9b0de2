"""What a tear sheet adds for a trained model file: the expert-by-regime table of a mixture of experts and the
before/after numbers of an adapted (MAML) model, read through the one model loader (`policies.load_model`)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping

def model_extras(model_path, market, env_params, split: str) -> dict[str, Any]:
    """The optional sections for a trained model file: `expert_regimes` for a mixture of experts, `adaptation`
    for a MAML-adapted model (an `experiments.adapt` output, or a run's MAML / final model whose run has a
    MAML stage record). Missing pieces (no torch for a .pth, no record) are left out."""
    from jaxtrade import export
    from jaxtrade.errors import InputError
    from jaxtrade.evaluation import regimes
    from jaxtrade.policies import load_model

    p = Path(model_path)
    out: dict[str, Any] = {}
    try:
        model = load_model(p)
    except InputError:
        return out
    config = model.config
    if (config.get("network") or {}).get("architecture") == export.ARCH_MOE:
        table = regimes.expert_regime_table(model.network, model.params, market, split=split, env_params=env_params)
        table["stage"] = str(config.get("stage", p.name))
        out["expert_regimes"] = table
    adaptation = find_adaptation(p, config)
    if adaptation:
        out["adaptation"] = adaptation
    return out


def find_adaptation(model_path, config: Mapping[str, Any]) -> dict | None:
    """The before/after record of an adapted model: an `experiments.adapt` checkpoint's meta record (or the
    `orbax` directory beside its .pth), else the MAML stage's held-out evaluation in the run's summary.json for
    a run's `*_maml_stage3_final.pth` / `*_final_model.pth` chosen from the MAML stage."""
    p = Path(model_path)
    record = config.get("record") if isinstance(config.get("record"), Mapping) else None
    if record and "before" in record and "after" in record:
        return dict(record)
    if record and record.get("adaptation"):
        return dict(record["adaptation"])
    if p.is_file() and (p.parent / "orbax").is_dir():
        try:
            from jaxtrade import checkpoints
            _, meta = checkpoints.restore_params(p.parent / "orbax")
            rec = meta.get("record") or {}
            if "before" in rec and "after" in rec:
                return dict(rec)
        except Exception:  # noqa: BLE001 - an unreadable neighbour just means no section
            pass
    extra = config.get("extra") or {}
    if config.get("stage") == "maml" or extra.get("selected_stage") == "maml":
        summary = p.parent.parent / str(config.get("symbol", "")) / "summary.json"
        try:
            return dict(json.loads(summary.read_text())["stages"]["maml"]["adaptation"])
        except (OSError, KeyError, TypeError, ValueError):
            return None
    return None


def summary_adaptation(summary_path) -> dict | None:
    """The MAML stage's held-out evaluation recorded in a run's summary.json, or None."""
    try:
        ad = json.loads(Path(summary_path).read_text())["stages"]["maml"].get("adaptation")
    except (OSError, KeyError, TypeError, ValueError):
        return None
    return dict(ad) if isinstance(ad, Mapping) else None
