"""Paper-ready figures rendered from a run folder's records, without recomputing any attack.

``render_figures(run_dir)`` reads the cell records in ``RUN/records`` and
writes each figure as PNG and PDF into ``RUN/figures``:

* ``heatmap``: models x attacks table of MAP and t-MAP, with the clean score first.
* ``pr_curves`` and ``precision_at_n``: one panel per model, clean and attacked
  curves, one figure for non-targeted and one for targeted attacks.
* ``robustness``: MAP under each non-targeted attack, undefended next to defended.
* ``perturbation``: perturbation size against the change in score.
* ``image_grid``: top-10 retrievals of a few clean and adversarial queries.

Only cells with status "ok" are drawn. Every figure exists once per
(dataset, code length) of the run, except ``image_grid``, which shows one
undefended model of the first (dataset, code length). Figures are drawn on
``matplotlib.figure.Figure`` objects with the Agg canvas, so rendering never
touches pyplot or a display.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NamedTuple

import matplotlib
import numpy as np
import pandas as pd
import seaborn as sns
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch, Rectangle

from bench import store
from bench.cache import ResultsRoot
from bench.leaderboard import load_records
from models.errors import CheckpointError, ConfigError, DataError

log = logging.getLogger(__name__)

FORMATS = ("png", "pdf")
DPI = 200
# Seaborn's "paper" context (seaborn 0.13) sets tick labels to 8.8 pt, so 1.1 lifts the smallest text to 9.7 pt.
FONT_SCALE = 1.1
ANNOTATION_POINTS = 9

CLEAN_COLOUR = "black"
UNDEFENDED_COLOUR = "#b0b0b0"
RELEVANT_COLOUR = "#1a9850"
IRRELEVANT_COLOUR = "#d73027"
DEFENSE_MARKERS = ("o", "^", "s", "D", "v", "P", "X")

GRID_FILE = "image_grid.pt"
GRID_QUERIES = 4
GRID_TOPK = 10
# Grid images are stored as uint8 thumbnails of at most this many pixels a side. One
# image covers about 0.5 inch, or 95 pixels, in the saved PNG.
GRID_MAX_SIDE = 128
GRID_TENSORS = ("clean_queries", "adversarial_queries", "clean_retrievals", "adversarial_retrievals",
                "clean_relevant", "adversarial_relevant", "query_index", "meta")


def render_figures(run_dir: Path, *, root: ResultsRoot | None = None) -> dict[str, list[Path]]:
    """Write every figure the run has data for; return the written paths by figure name.

    A figure without data is left out of the result and logged. ``root`` is
    the results root whose cache contains the codes and images that the
    retrieval grid needs the first time. Later renders read
    ``RUN/figures/image_grid.pt`` instead.
    """
    run_dir = Path(run_dir)
    cells, _ = load_records(run_dir)
    ok = _ok_cells(cells)
    if ok.empty:
        log.warning("no figures rendered because %s has no cell with status 'ok'", run_dir)
        return {}
    records = _ok_records(run_dir)
    folder = run_dir / "figures"
    folder.mkdir(parents=True, exist_ok=True)
    palette = attack_palette(ok["attack"])

    written: dict[str, list[Path]] = {}
    with _paper_style():
        written["heatmap"] = _heatmaps(ok, folder)
        written["pr_curves"] = _curve_figures(records, palette, folder, "pr")
        written["precision_at_n"] = _curve_figures(records, palette, folder, "precision_at_n")
        written["robustness"] = _robustness(ok, folder)
        written["perturbation"] = _perturbation(ok, palette, folder)
        written["image_grid"] = _image_grid(run_dir, records, folder, root)
    return {name: paths for name, paths in written.items() if paths}


# -- records ------------------------------------------------------------------
def _ok_cells(cells: pd.DataFrame) -> pd.DataFrame:
    if cells.empty:
        return cells
    ok = cells[cells["status"] == "ok"].dropna(subset=["score", "clean_score"]).copy()
    ok["targeted"] = ok["targeted"].astype(bool)
    ok["defense"] = ok["defense"].fillna("none")
    ok["n_bits"] = ok["n_bits"].astype(int)
    return ok


def _ok_records(run_dir: Path) -> list[dict[str, Any]]:
    records = (store.read_json(path) for path in sorted((run_dir / "records").glob("*.json")))
    return [record for record in records if record.get("status") == "ok"]


def _model_sort_key(name: str) -> tuple[str, bool, str]:
    """Sort a base model's variants together, the undefended one first."""
    return name.split("+")[0], "+" in name, name


def _ordered_models(names) -> list[str]:
    return sorted(set(names), key=_model_sort_key)


def _groups(frame: pd.DataFrame) -> Iterator[tuple[str, int, pd.DataFrame]]:
    for (dataset, n_bits), group in frame.groupby(["dataset", "n_bits"], sort=True):
        yield str(dataset), int(n_bits), group


def _record_groups(records: list[dict[str, Any]]) -> Iterator[tuple[str, int, list[dict[str, Any]]]]:
    groups: dict[tuple[str, int], list[dict[str, Any]]] = {}
    for record in records:
        groups.setdefault((str(record["dataset"]), int(record["n_bits"])), []).append(record)
    for (dataset, n_bits), group in sorted(groups.items()):
        yield dataset, n_bits, group


def _topk(group: pd.DataFrame) -> int | None:
    values = group["topk"].dropna().unique() if "topk" in group else []
    return int(values[0]) if len(values) else None


def _metric_label(targeted: bool, topk: int | None) -> str:
    """Return a label such as "MAP@1000" or "t-MAP@1000". "@all" means the whole database is ranked."""
    return f"{'t-MAP' if targeted else 'MAP'}@{topk if topk else 'all'}"


def score_table(cells: pd.DataFrame, targeted: bool) -> pd.DataFrame:
    """Return the mean score per model (rows) and attack (columns), with the clean score first.

    ``cells`` contains the "ok" cells of one dataset and code length. Rows follow
    the leaderboard's model order and attack columns are sorted by name.
    """
    frame = cells[cells["targeted"] == targeted]
    if frame.empty:
        return pd.DataFrame()
    table = frame.pivot_table(index="model", columns="attack", values="score", aggfunc="mean")
    table = table[sorted(table.columns)]
    clean = frame.groupby("model")["clean_score"].mean().rename("clean")
    table = pd.concat([clean, table], axis=1)
    table.columns.name = "attack"
    return table.loc[_ordered_models(table.index)]


# -- style and output ---------------------------------------------------------
def attack_palette(attacks) -> dict[str, Any]:
    """Map every attack name to a fixed colour, in sorted name order. The "clean" entry is black.

    Each figure of a run takes its colours from this map, so an attack has
    one colour throughout.
    """
    names = sorted(set(attacks) - {"clean"})
    # tab10 without its grey (index 7), so no attack looks like the clean curve.
    colours = [colour for index, colour in enumerate(sns.color_palette("tab10")) if index != 7]
    if len(names) > len(colours):
        colours = sns.color_palette("husl", len(names))
    return {"clean": CLEAN_COLOUR, **dict(zip(names, colours))}


def _defense_colours(defenses: list[str]) -> dict[str, Any]:
    others = [name for name in defenses if name != "none"]
    return {"none": UNDEFENDED_COLOUR, **dict(zip(others, sns.color_palette("Set2", max(len(others), 1))))}


def _defense_markers(defenses: list[str]) -> dict[str, str]:
    return {name: DEFENSE_MARKERS[index % len(DEFENSE_MARKERS)] for index, name in enumerate(defenses)}


def _defense_order(names) -> list[str]:
    return sorted(set(names), key=lambda name: (name != "none", name))


@contextmanager
def _paper_style() -> Iterator[None]:
    # Type 42 (TrueType) fonts keep PDF text editable, which many publishers require.
    # Matplotlib subsets them with fontTools, which logs dozens of INFO lines per PDF
    # into any INFO handler, such as a matrix run's run.log, unless its logger is raised to WARNING.
    font_logger = logging.getLogger("fontTools")
    previous_level = font_logger.level
    font_logger.setLevel(max(previous_level, logging.WARNING))
    try:
        with sns.axes_style("whitegrid"), sns.plotting_context("paper", font_scale=FONT_SCALE), \
                matplotlib.rc_context({"pdf.fonttype": 42, "ps.fonttype": 42}):
            yield
    finally:
        font_logger.setLevel(previous_level)


def _new_figure(width: float, height: float) -> Figure:
    figure = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def _stem(name: str, dataset: str, n_bits: int, suffix: str = "") -> str:
    safe_dataset = re.sub(r"[^A-Za-z0-9._-]+", "-", dataset)
    return f"{name}_{safe_dataset}_{n_bits}bits" + (f"_{suffix}" if suffix else "")


def _save(figure: Figure, folder: Path, stem: str) -> list[Path]:
    """Write ``figure`` as ``stem``.png and .pdf, each to a temporary file renamed into place."""
    paths = []
    for image_format in FORMATS:
        path = folder / f"{stem}.{image_format}"
        descriptor, temporary = tempfile.mkstemp(dir=folder, prefix=f".{path.name}.", suffix=".tmp")
        os.close(descriptor)
        # Without a creation date, the same records give byte-identical PDFs.
        metadata = {"CreationDate": None} if image_format == "pdf" else None
        try:
            figure.savefig(temporary, format=image_format, dpi=DPI, bbox_inches="tight", metadata=metadata)
            os.replace(temporary, path)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise
        paths.append(path)
    log.info("wrote figure %s (%s)", stem, ", ".join(FORMATS))
    return paths


def _grid_shape(count: int, max_columns: int = 3) -> tuple[int, int]:
    columns = min(count, max_columns)
    return math.ceil(count / columns), columns


def _hide_unused(axes: np.ndarray, used: int, xlabel: str) -> None:
    """Hide the empty panels of the last row, and label the x axis of the panels above them."""
    columns = axes.shape[1]
    for position in range(used, axes.size):
        axes.flat[position].set_visible(False)
        if position >= columns:
            above = axes.flat[position - columns]
            above.xaxis.set_tick_params(labelbottom=True)
            above.set_xlabel(xlabel)


# -- heatmap ------------------------------------------------------------------
def _heatmaps(ok: pd.DataFrame, folder: Path) -> list[Path]:
    paths = []
    for dataset, n_bits, group in _groups(ok):
        topk = _topk(group)
        panels = [(targeted, table) for targeted in (False, True)
                  if not (table := score_table(group, targeted)).empty]
        widths = [table.shape[1] for _, table in panels]
        rows = max(table.shape[0] for _, table in panels)
        # The attack names under the columns are rotated by 40 degrees, so long names need extra height.
        longest_name = max(len(str(column)) for _, table in panels for column in table.columns)
        figure = _new_figure(1.6 + sum(0.62 * width + 1.0 for width in widths),
                             1.9 + 0.4 * rows + 0.045 * longest_name)
        axes = figure.subplots(1, len(panels), squeeze=False, gridspec_kw={"width_ratios": widths})[0]
        for ax, (targeted, table) in zip(axes, panels):
            _draw_heatmap(ax, table, targeted, topk)
        metrics = " and ".join(_metric_label(targeted, topk) for targeted, _ in panels)
        figure.suptitle(f"{dataset}, {n_bits} bits: retrieval under attack ({metrics})")
        paths += _save(figure, folder, _stem("heatmap", dataset, n_bits))
    return paths


def _draw_heatmap(ax, table: pd.DataFrame, targeted: bool, topk: int | None) -> None:
    label = _metric_label(targeted, topk)
    # Darker always means a stronger attack, that is a lower MAP or a higher t-MAP.
    sns.heatmap(table, ax=ax, vmin=0.0, vmax=1.0, cmap="rocket_r" if targeted else "rocket", annot=True,
                fmt=".3f", annot_kws={"fontsize": ANNOTATION_POINTS}, linewidths=0.5, cbar_kws={"label": label})
    direction = "higher" if targeted else "lower"
    ax.set_title(f"{'Targeted' if targeted else 'Non-targeted'}: {label}\n({direction} = stronger attack)")
    ax.set_xlabel("attack")
    ax.set_ylabel("model")
    ax.tick_params(axis="y", rotation=0)
    for text in ax.get_xticklabels():
        text.set(rotation=40, horizontalalignment="right", rotation_mode="anchor")


# -- precision-recall and precision@N curves ----------------------------------
class _CurveAxes(NamedTuple):
    """Keys of one curve kind in a record's ``curves`` and the words its figure uses."""

    x_key: str
    y_key: str
    x_label: str
    y_label: str
    title: str


CURVE_AXES = {
    "pr": _CurveAxes("recall", "precision", "recall", "precision", "precision-recall (whole ranking)"),
    "precision_at_n": _CurveAxes("n", "precision", "retrieved items N", "precision@N", "precision@N"),
}


def _curve_figures(records: list[dict[str, Any]], palette: dict[str, Any], folder: Path, kind: str) -> list[Path]:
    name = "pr_curves" if kind == "pr" else kind
    paths = []
    for targeted in (False, True):
        selected = [record for record in records if bool(record.get("targeted")) == targeted and record.get("curves")]
        if not selected:
            log.info("skipped the %s figure because no %s cell has curves", name,
                     "targeted" if targeted else "non-targeted")
            continue
        for dataset, n_bits, group in _record_groups(selected):
            figure = _draw_curves(group, palette, kind, targeted)
            suffix = "targeted" if targeted else "nontargeted"
            attack_kind = "targeted" if targeted else "non-targeted"
            relevance = "shares the target label" if targeted else "shares a label with the query"
            figure.suptitle(f"{dataset}, {n_bits} bits: {CURVE_AXES[kind].title} under {attack_kind} attacks\n"
                            f"(relevant item: {relevance})")
            paths += _save(figure, folder, _stem(name, dataset, n_bits, suffix))
    return paths


def _draw_curves(records: list[dict[str, Any]], palette: dict[str, Any], kind: str, targeted: bool) -> Figure:
    x_label, y_label = CURVE_AXES[kind].x_label, CURVE_AXES[kind].y_label
    models = _ordered_models(record["model"] for record in records)
    rows, columns = _grid_shape(len(models))
    figure = _new_figure(0.4 + 3.0 * columns, 0.9 + 2.5 * rows)
    axes = figure.subplots(rows, columns, squeeze=False, sharex=True, sharey=True)

    for ax, model in zip(axes.flat, models):
        _draw_model_curves(ax, [record for record in records if record["model"] == model], palette, kind)
        ax.set_title(model)
        ax.set_ylim(0.0, 1.02)
        if kind == "pr":
            ax.set_xlim(0.0, 1.0)
    for ax in axes[-1]:
        ax.set_xlabel(x_label)
    for ax in axes[:, 0]:
        ax.set_ylabel(f"{y_label} (target label)" if targeted else y_label)
    _hide_unused(axes, len(models), x_label)

    handles = [Line2D([], [], color=palette["clean"], linestyle="--", label="clean")]
    attacks = sorted({record["attack"] for record in records})
    handles += [Line2D([], [], color=palette[attack], label=attack) for attack in attacks]
    figure.legend(handles=handles, loc="outside lower center", ncols=min(len(handles), 6))
    return figure


def _draw_model_curves(ax, records: list[dict[str, Any]], palette: dict[str, Any], kind: str) -> None:
    """Plot the clean curve and every attack's attacked curve of one model's cells."""
    x_key, y_key = CURVE_AXES[kind].x_key, CURVE_AXES[kind].y_key
    by_attack: dict[str, list[dict[str, Any]]] = {}
    for record in records:
        by_attack.setdefault(record["attack"], []).append(record)
    attacks = sorted(by_attack)

    # Every cell of one model scores the same clean queries, so one clean curve represents all of them.
    x, y = _mean_curve([record["curves"]["clean"][kind] for record in by_attack[attacks[0]]], x_key, y_key)
    ax.plot(x, y, color=palette["clean"], linestyle="--", label="clean")
    for attack in attacks:
        x, y = _mean_curve([record["curves"]["attacked"][kind] for record in by_attack[attack]], x_key, y_key)
        ax.plot(x, y, color=palette[attack], label=attack)


def _mean_curve(curves: list[dict[str, list[float]]], x_key: str, y_key: str) -> tuple[np.ndarray, np.ndarray]:
    """Return the curve averaged over seeds, or the first seed's when their x grids differ."""
    x = np.asarray(curves[0][x_key], dtype=float)
    same_grid = [curve for curve in curves if np.array_equal(np.asarray(curve[x_key], dtype=float), x)]
    if len(same_grid) < len(curves):
        log.info("curves of %d seeds have different %s grids, so only the first seed is drawn", len(curves), x_key)
    return x, np.mean([np.asarray(curve[y_key], dtype=float) for curve in same_grid], axis=0)


# -- defended vs undefended ---------------------------------------------------
def _robustness(ok: pd.DataFrame, folder: Path) -> list[Path]:
    nontargeted = ok[~ok["targeted"]]
    defended_bases = set(nontargeted.loc[nontargeted["defense"] != "none", "base_model"])
    if not defended_bases:
        log.info("skipped the robustness figure because no defended model has a non-targeted attack")
        return []
    paths = []
    for dataset, n_bits, group in _groups(nontargeted[nontargeted["base_model"].isin(defended_bases)]):
        if (group["defense"] == "none").all():
            log.info("skipped the robustness figure of %s, %d bits because it has no defended model", dataset, n_bits)
            continue
        figure = _draw_robustness(group, _metric_label(False, _topk(group)))
        figure.suptitle(f"{dataset}, {n_bits} bits: {_metric_label(False, _topk(group))} of undefended and "
                        "defended models under non-targeted attacks")
        paths += _save(figure, folder, _stem("robustness", dataset, n_bits))
    return paths


def _draw_robustness(group: pd.DataFrame, label: str) -> Figure:
    attacks = sorted(group["attack"].unique())
    bases = sorted(group["base_model"].unique())
    defenses = _defense_order(group["defense"])
    colours = _defense_colours(defenses)
    bars = len(bases) * len(defenses)
    rows, columns = _grid_shape(len(attacks), max_columns=2 if bars > 8 else 3)
    panel_width = max(2.8, 0.6 + 0.2 * bars)
    figure = _new_figure(0.4 + panel_width * columns, 0.9 + 2.6 * rows)
    axes = figure.subplots(rows, columns, squeeze=False, sharey=True)

    for ax, attack in zip(axes.flat, attacks):
        _draw_defense_bars(ax, group[group["attack"] == attack], bases, defenses, colours)
        ax.set_title(f"attack: {attack}")
    for ax in axes[:, 0]:
        ax.set_ylabel(f"{label} under attack")
    for ax in axes[-1]:
        ax.set_xlabel("base model")
    _hide_unused(axes, len(attacks), "base model")

    handles = [Patch(color=colours[name], label=f"defense: {name}") for name in defenses]
    handles.append(Line2D([], [], color=CLEAN_COLOUR, linewidth=1.5, label=f"clean {label}"))
    figure.legend(handles=handles, loc="outside lower center", ncols=min(len(handles), 5))
    return figure


def _draw_defense_bars(ax, cells: pd.DataFrame, bases: list[str], defenses: list[str],
                       colours: dict[str, Any]) -> None:
    """Draw one bar group per base model, one bar per defense, with the clean score as a black line on each bar.

    A defense keeps its slot in every group, so a missing (base model, defense) pair leaves a gap.
    """
    scores = cells.groupby(["base_model", "defense"])["score"].mean()
    clean = cells.groupby(["base_model", "defense"])["clean_score"].mean()
    width = 0.8 / len(defenses)
    for index, defense in enumerate(defenses):
        present = [(position, base) for position, base in enumerate(bases) if (base, defense) in scores]
        if not present:
            continue
        xs = np.array([position for position, _ in present]) + (index - (len(defenses) - 1) / 2) * width
        ax.bar(xs, [scores[(base, defense)] for _, base in present], width,
               color=colours[defense], edgecolor="white", linewidth=0.5)
        ax.hlines([clean[(base, defense)] for _, base in present], xs - width / 2, xs + width / 2,
                  color=CLEAN_COLOUR, linewidth=1.5)
    ax.set_xticks(range(len(bases)), bases)
    ax.set_ylim(0.0, 1.0)
    ax.grid(axis="x", visible=False)


# -- perturbation vs effectiveness --------------------------------------------
# (metric column, axis label, factor from the [0, 1] pixel scale to the axis unit)
NORM_AXES = (("linf", "mean L∞ perturbation (/255)", 255.0),
             ("l2", "mean L2 perturbation (pixels in [0, 1])", 1.0))


def _perturbation(ok: pd.DataFrame, palette: dict[str, Any], folder: Path) -> list[Path]:
    norms = [axis for axis in NORM_AXES if axis[0] in ok and ok[axis[0]].notna().any()]
    if not norms:
        log.info("skipped the perturbation figure because no cell records linf or l2")
        return []
    paths = []
    for dataset, n_bits, group in _groups(ok):
        topk = _topk(group)
        figure = _draw_perturbation(group, norms, palette, topk)
        metrics = " and ".join(_metric_label(targeted, topk) for targeted in (False, True)
                               if (group["targeted"] == targeted).any())
        figure.suptitle(f"{dataset}, {n_bits} bits: perturbation size against change in {metrics}\n"
                        "(one point per model and attack)")
        paths += _save(figure, folder, _stem("perturbation", dataset, n_bits))
    return paths


def _draw_perturbation(group: pd.DataFrame, norms: list[tuple[str, str, float]], palette: dict[str, Any],
                       topk: int | None) -> Figure:
    """Draw one row per attack kind (non-targeted, targeted) and one column per norm."""
    rows = [targeted for targeted in (False, True) if (group["targeted"] == targeted).any()]
    defenses = _defense_order(group["defense"])
    markers = _defense_markers(defenses)
    legend_height = 0.9 + 0.22 * (group["attack"].nunique() + len(defenses))
    figure = _new_figure(2.4 + 3.2 * len(norms), max(1.2 + 2.7 * len(rows), legend_height))
    axes = figure.subplots(len(rows), len(norms), squeeze=False, sharex="col")
    for row, targeted in enumerate(rows):
        points = _score_changes(group[group["targeted"] == targeted], targeted)
        for column, (norm, _, factor) in enumerate(norms):
            _scatter(axes[row, column], points, norm, factor, palette, markers)
        axes[row, 0].set_ylabel(f"{_metric_label(True, topk)} gain\n(attacked − clean)" if targeted
                                else f"{_metric_label(False, topk)} drop\n(clean − attacked)")
    for column, (_, label, _) in enumerate(norms):
        axes[-1, column].set_xlabel(label)
    attack_handles = [Line2D([], [], marker="o", linestyle="", color=palette[attack], label=attack)
                      for attack in sorted(group["attack"].unique())]
    defense_handles = [Line2D([], [], marker=markers[name], linestyle="", color="dimgray", label=name)
                       for name in defenses]
    # Axes legends, unlike figure legends, leave the suptitle's space alone in the constrained layout.
    top, bottom = axes[0, -1], axes[-1, -1]
    attack_legend = top.legend(handles=attack_handles, title="attack (colour)", loc="upper left",
                               bbox_to_anchor=(1.03, 1.0))
    if bottom is top:
        top.add_artist(attack_legend)
    bottom.legend(handles=defense_handles, title="defense (marker)", loc="lower left", bbox_to_anchor=(1.03, 0.0))
    return figure


def _score_changes(cells: pd.DataFrame, targeted: bool) -> pd.DataFrame:
    """Return one row per model and attack: mean norms and the score change (positive = effective attack)."""
    columns = [column for column, _, _ in NORM_AXES if column in cells]
    points = cells.groupby(["model", "defense", "attack"])[["score", "clean_score", *columns]].mean().reset_index()
    points["change"] = points["score"] - points["clean_score"] if targeted else points["clean_score"] - points["score"]
    return points


def _scatter(ax, points: pd.DataFrame, norm: str, factor: float, palette: dict[str, Any],
             markers: dict[str, str]) -> None:
    for row in points.dropna(subset=[norm]).itertuples(index=False):
        ax.scatter(getattr(row, norm) * factor, row.change, color=palette[row.attack], marker=markers[row.defense],
                   s=42, edgecolors="black", linewidths=0.4, zorder=3)
    ax.axhline(0.0, color="gray", linewidth=0.8, zorder=1)


# -- retrieval image grid -----------------------------------------------------
def save_image_grid(path: Path, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> Path:
    """Atomically save the retrieval grid's tensors, with ``meta`` stored as UTF-8 JSON bytes.

    ``tensors`` contains uint8 images "clean_queries" and "adversarial_queries"
    (queries, C, H, W), uint8 "clean_retrievals" and "adversarial_retrievals"
    (queries, k, C, H, W), bool "clean_relevant" and "adversarial_relevant"
    (queries, k) and int64 "query_index" (queries,). ``meta`` names the
    dataset, n_bits, model, attack and the cell's cache key.
    """
    encoded = torch.tensor(list(json.dumps(meta, sort_keys=True).encode("utf-8")), dtype=torch.uint8)
    return store.save_tensors(path, {**tensors, "meta": encoded})


def load_image_grid(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]] | None:
    """Return the tensors and metadata saved by ``save_image_grid``, or None when an entry is missing."""
    tensors = store.load_tensors(path)
    missing = [name for name in GRID_TENSORS if name not in tensors]
    if missing:
        log.warning("%s is missing %s, so it is ignored and rebuilt when the cache allows", path, ", ".join(missing))
        return None
    meta = json.loads(bytes(tensors.pop("meta").tolist()).decode("utf-8"))
    return tensors, meta


def _image_grid(run_dir: Path, records: list[dict[str, Any]], folder: Path, root: ResultsRoot | None) -> list[Path]:
    path = folder / GRID_FILE
    choice = _grid_choice(records)
    stored = load_image_grid(path) if path.is_file() else None
    grid = stored
    if choice is not None and root is not None and (stored is None or stored[1].get("key") != choice.get("key")):
        built = _build_grid(run_dir, root, choice)
        if built is not None:
            save_image_grid(path, *built)
            grid = built
    if grid is None:
        log.warning("skipped the image_grid figure because %s has no %s and %s", folder, GRID_FILE,
                    _grid_skip_reason(choice, root))
        return []
    if choice is not None and grid[1].get("key") != choice.get("key"):
        log.info("image_grid: drawing the stored grid of %s x %s, not the current cell %s x %s",
                 grid[1].get("model"), grid[1].get("attack"), choice["model"], choice["attack"])
    return _draw_image_grid(*grid, folder)


def _grid_skip_reason(choice: dict[str, Any] | None, root: ResultsRoot | None) -> str:
    if choice is None:
        return "the run has no non-targeted cell of an undefended model"
    if root is None:
        return "no results root was given (pass the one that ran the matrix: bench plot --results-root)"
    return "the results cache cannot provide it (see the warning above)"


def _grid_choice(records: list[dict[str, Any]]) -> dict[str, Any] | None:
    """Pick the first undefended model's mainstay cell, or its first non-targeted cell by attack name."""
    candidates = [record for record in records
                  if not record.get("targeted") and (record.get("defense") or "none") == "none"]
    if not candidates:
        return None
    dataset, n_bits = min((record["dataset"], record["n_bits"]) for record in candidates)
    candidates = [record for record in candidates if (record["dataset"], record["n_bits"]) == (dataset, n_bits)]
    model = _ordered_models(record["model"] for record in candidates)[0]
    cells = sorted((record for record in candidates if record["model"] == model), key=lambda r: r["attack"])
    return next((record for record in cells if record["attack"] == "mainstay"), cells[0])


def _run_data_root(run_dir: Path) -> str | None:
    """Return the ``data_root`` of the run's copied matrix.toml, if it sets one."""
    from bench.matrix.config import tomllib

    path = run_dir / "matrix.toml"
    if not path.is_file():
        return None
    try:
        return tomllib.loads(path.read_text(encoding="utf-8")).get("data_root")
    except (tomllib.TOMLDecodeError, UnicodeDecodeError):
        return None


def _build_grid(run_dir: Path, root: ResultsRoot, record: dict[str, Any]
                ) -> tuple[dict[str, torch.Tensor], dict[str, Any]] | None:
    """Rank the database for a few clean and adversarial queries of ``record`` from the results cache."""
    from bench import steps
    from bench.metrics.ranking import rank_database
    from models.checkpoint import read_checkpoint_config

    adversarial_path = root.adversarial(str(record.get("key")))
    checkpoint = root.checkpoint(str(record.get("checkpoint")))
    missing = [str(path) for path in (adversarial_path, checkpoint) if not path.is_file()]
    if missing:
        log.warning("image_grid cache files not found: %s", ", ".join(missing))
        return None
    try:
        adversarial = store.load_tensors(adversarial_path)
        # NOTE: the run folder does not record a --data-root given on the command line, so only
        # matrix.toml's data_root is used here.
        spec = steps.data_spec_from_checkpoint(read_checkpoint_config(checkpoint), _run_data_root(run_dir))
        data = steps.load_data(spec, root)
        codes = steps.encode_step(root, data, checkpoint)
    except (CheckpointError, ConfigError, DataError, OSError) as error:
        log.warning("image_grid failed to load the data of cell %s x %s: %s", record["model"], record["attack"], error)
        return None

    count = min(GRID_QUERIES, len(adversarial["images"]))
    if count == 0:
        log.warning("image_grid: the adversarial artefact of cell %s x %s contains no images",
                    record["model"], record["attack"])
        return None
    query_index = adversarial["query_index"][:count]
    query_labels = data.query.labels[query_index]
    tensors: dict[str, torch.Tensor] = {"query_index": query_index,
                                        "clean_queries": _thumbnails(adversarial["clean_images"][:count]),
                                        "adversarial_queries": _thumbnails(adversarial["images"][:count])}
    for part, query_codes in (("clean", codes["query"][query_index]), ("adversarial", adversarial["codes"][:count])):
        ranked = rank_database(query_codes=query_codes, database_codes=codes["database"], topk=GRID_TOPK)
        thumbnails = _thumbnails(data.database.images(ranked.reshape(-1)))
        tensors[f"{part}_retrievals"] = thumbnails.reshape(count, ranked.shape[1], *thumbnails.shape[1:])
        # Relevant means sharing at least one label, as in bench.metrics.
        shared = torch.einsum("qkc,qc->qk", data.database.labels[ranked], query_labels)
        tensors[f"{part}_relevant"] = shared > 0
    meta = {key: record.get(key) for key in ("dataset", "n_bits", "model", "attack", "key")}
    return tensors, meta


def _thumbnails(images: torch.Tensor) -> torch.Tensor:
    """Convert float [0, 1] (n, C, H, W) images to uint8, shrunk to at most GRID_MAX_SIDE pixels a side."""
    images = images.detach().float().cpu()
    height, width = images.shape[-2:]
    scale = GRID_MAX_SIDE / max(height, width)
    if scale < 1.0:
        size = (max(1, round(height * scale)), max(1, round(width * scale)))
        images = torch.nn.functional.interpolate(images, size=size, mode="bilinear", antialias=True,
                                                 align_corners=False)
    return (images.clamp(0.0, 1.0) * 255.0).round().to(torch.uint8)


def _draw_image_grid(tensors: dict[str, torch.Tensor], meta: dict[str, Any], folder: Path) -> list[Path]:
    """Draw all images as one mosaic on a single Axes, because one Axes per image makes the constrained layout slow."""
    count, topk = tensors["clean_relevant"].shape
    height, width = tensors["clean_queries"].shape[-2:]
    pad = max(2, round(height / 6))
    layout = _MosaicLayout(height, width, pad, rows=2 * count, columns=topk + 1, rows_per_group=2)
    canvas = np.full((layout.total_height, layout.total_width, 3), 255, dtype=np.uint8)
    frames: list[tuple[int, int, str, float]] = []
    row_labels = []
    for query in range(count):
        for offset, part in enumerate(("clean", "adversarial")):
            row = 2 * query + offset
            relevant = tensors[f"{part}_relevant"][query]
            images = [tensors[f"{part}_queries"][query], *tensors[f"{part}_retrievals"][query]]
            for column, image in enumerate(images):
                top, left = layout.origin(row, column)
                canvas[top:top + height, left:left + width] = _rgb(image)
                colour = CLEAN_COLOUR if column == 0 else \
                    RELEVANT_COLOUR if bool(relevant[column - 1]) else IRRELEVANT_COLOUR
                frames.append((top, left, colour, 1.0 if column == 0 else 2.0))
            row_labels.append(f"query {int(tensors['query_index'][query])}, {part}\n"
                              f"{int(relevant.sum())}/{topk} relevant")

    # One image plus its padding is 0.55 inch wide in the saved figure.
    scale = 0.55 / (width + pad)
    figure = _new_figure(2.6 + layout.total_width * scale, 1.3 + layout.total_height * scale)
    ax = figure.add_subplot()
    ax.imshow(canvas, interpolation="nearest")
    for top, left, colour, line_width in frames:
        ax.add_patch(Rectangle((left - pad / 3 - 0.5, top - pad / 3 - 0.5), width + 2 * pad / 3, height + 2 * pad / 3,
                               fill=False, edgecolor=colour, linewidth=line_width))
    ax.set_xticks([layout.origin(0, column)[1] + width / 2 - 0.5 for column in range(topk + 1)],
                  ["query", *(str(rank) for rank in range(1, topk + 1))])
    ax.xaxis.tick_top()
    ax.set_yticks([layout.origin(row, 0)[0] + height / 2 - 0.5 for row in range(2 * count)], row_labels)
    ax.tick_params(length=0)
    for spine in ax.spines.values():
        spine.set_visible(False)
    ax.grid(False)
    figure.suptitle(f"{meta.get('dataset')}, {meta.get('n_bits')} bits, {meta.get('model')}: top-{topk} retrievals "
                    f"(Hamming ranking)\nof clean and {meta.get('attack')} adversarial queries; "
                    "green frame: shares a label with the query, red: shares none")
    return _save(figure, folder, "image_grid")


class _MosaicLayout:
    """Pixel positions of the images in the grid mosaic: ``pad`` between images, more between groups of rows."""

    def __init__(self, height: int, width: int, pad: int, *, rows: int, columns: int, rows_per_group: int) -> None:
        self.height, self.width, self.pad, self.rows_per_group = height, width, pad, rows_per_group
        self.gap = 2 * pad  # extra space after the query column and between queries
        self.total_width = pad + columns * (width + pad) + self.gap
        self.total_height = pad + rows * (height + pad) + (rows // rows_per_group - 1) * self.gap

    def origin(self, row: int, column: int) -> tuple[int, int]:
        """Return the (top, left) pixel of the image at ``row``, ``column``."""
        top = self.pad + row * (self.height + self.pad) + (row // self.rows_per_group) * self.gap
        left = self.pad + column * (self.width + self.pad) + (self.gap if column > 0 else 0)
        return top, left


def _rgb(image: torch.Tensor) -> np.ndarray:
    """Return a uint8 (C, H, W) image as (H, W, 3), repeating a single channel."""
    pixels = image.permute(1, 2, 0).numpy()
    return np.repeat(pixels, 3, axis=2) if pixels.shape[2] == 1 else pixels[:, :, :3]
