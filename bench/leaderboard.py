"""Leaderboard CSVs rendered from a run folder's records; never recomputes anything.

A pure function of ``RUN/records/*.json`` and ``RUN/models/*.json``: the same
records always give byte-identical CSVs.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from bench import store
from models.errors import ConfigError

INDEX = ["dataset", "n_bits", "model"]
CSV_FILES = ("nontargeted.csv", "targeted.csv", "defenses.csv", "perceptibility.csv", "timing.csv", "cells.csv")


def _read(folder: Path) -> list[dict]:
    return [json.loads(path.read_text(encoding="utf-8")) for path in sorted(folder.glob("*.json"))]


def load_records(run_dir: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Return (cells, models) as flat tables, one row per record."""
    run_dir = Path(run_dir)
    if not (run_dir / "records").is_dir():
        raise ConfigError(f"{run_dir} is not a run folder (no records/); run 'bench run --matrix' first")
    cells = []
    for record in _read(run_dir / "records"):
        row = {key: record.get(key) for key in ("dataset", "n_bits", "model", "base_model", "defense", "attack",
                                                   "targeted", "metric", "status", "error", "seed", "profile",
                                                   "queries", "skipped_queries", "topk", "score", "clean_score")}
        for key, value in (record.get("metrics") or {}).items():
            row[key] = value
        row["wall_seconds"] = record.get("wall_seconds")
        cells.append(row)
    models = [{key: value for key, value in record.items() if key not in ("history", "versions")}
              for record in _read(run_dir / "models")]
    return pd.DataFrame(cells), pd.DataFrame(models)


def _model_order(frame: pd.DataFrame) -> list[str]:
    return sorted(frame["model"].unique(), key=lambda name: (name.split("+")[0], "+" in name, name))


def _pivot(cells: pd.DataFrame, models: pd.DataFrame, targeted: bool) -> pd.DataFrame:
    ok = cells[(cells["status"] == "ok") & (cells["targeted"] == targeted)]
    if ok.empty:
        return pd.DataFrame()
    table = ok.pivot_table(index=INDEX, columns="attack", values="score", aggfunc="mean")
    clean_column = "clean_tmap" if targeted else "clean_map"
    clean = ok.groupby(INDEX)["clean_score"].mean().rename(clean_column)
    table = pd.concat([clean, table], axis=1)
    if targeted and "unbounded_score" in ok:
        unbounded = ok.dropna(subset=["unbounded_score"])
        for attack, group in unbounded.groupby("attack"):
            table[f"{attack}_unbounded"] = group.groupby(INDEX)["unbounded_score"].mean()
    table = table.reset_index()
    table["model"] = pd.Categorical(table["model"], _model_order(table), ordered=True)
    return table.sort_values(INDEX).reset_index(drop=True)


def build_tables(run_dir: Path) -> dict[str, pd.DataFrame]:
    cells, models = load_records(run_dir)
    tables: dict[str, pd.DataFrame] = {}
    tables["nontargeted.csv"] = _pivot(cells, models, targeted=False)
    tables["targeted.csv"] = _pivot(cells, models, targeted=True)
    nontargeted = cells[(cells["status"] == "ok") & (cells["targeted"] == False)]  # noqa: E712
    if not nontargeted.empty:
        grouped = nontargeted.groupby(["dataset", "n_bits", "base_model", "defense"])
        defenses = grouped["clean_score"].mean().rename("clean_map").to_frame()
        defenses["mean_attacked_map"] = grouped["score"].mean()
        defenses["worst_attacked_map"] = grouped["score"].min()
        per_attack = nontargeted.pivot_table(index=["dataset", "n_bits", "base_model", "defense"],
                                             columns="attack", values="score", aggfunc="mean")
        tables["defenses.csv"] = pd.concat([defenses, per_attack], axis=1).reset_index()
    else:
        tables["defenses.csv"] = pd.DataFrame()
    ok = cells[cells["status"] == "ok"]
    columns = [c for c in ("linf", "l2", "mse", "psnr") if c in ok]
    tables["perceptibility.csv"] = (ok.groupby(INDEX + ["attack"])[columns].mean().reset_index()
                                    if not ok.empty else pd.DataFrame())
    timing = (ok.groupby(INDEX + ["attack"])[["seconds_per_query", "wall_seconds"]].mean().reset_index()
              if not ok.empty else pd.DataFrame())
    if not models.empty and "train_seconds" in models:
        model_time = models[models["status"] == "ok"][INDEX + ["train_seconds"]]
        model_time = model_time.assign(attack="(training)").rename(columns={"train_seconds": "wall_seconds"})
        timing = pd.concat([model_time, timing], ignore_index=True)
    tables["timing.csv"] = timing
    keep = [c for c in ("dataset", "n_bits", "model", "attack", "status", "metric", "clean_score", "score",
                        "theory", "unbounded_score", "queries", "skipped_queries", "topk", "seed", "profile", "error")
            if c in cells]
    tables["cells.csv"] = cells[keep].sort_values(["dataset", "n_bits", "model", "attack"]).reset_index(drop=True)
    return tables


def write_leaderboards(run_dir: Path) -> dict[str, Path]:
    """Write every leaderboard CSV into ``RUN/leaderboards``; return their paths."""
    out = Path(run_dir) / "leaderboards"
    paths = {}
    for name, table in build_tables(Path(run_dir)).items():
        paths[name] = store.write_text(out / name, table.to_csv(index=False, float_format="%.4f"))
    return paths
