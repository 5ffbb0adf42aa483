"""Tests of the figures rendered from a run folder's records.

The run folders are written by hand: DPH undefended and defended by SAAT,
two non-targeted attacks (hag, mainstay), one targeted attack (dhta), and
error records that every figure must ignore.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
import torch
from PIL import Image

from bench import steps, store
from bench.cache import ResultsRoot
from bench.data.base import RetrievalData
from bench.leaderboard import load_records
from bench.plots import (
    CLEAN_COLOUR,
    GRID_FILE,
    GRID_MAX_SIDE,
    _thumbnails,
    attack_palette,
    load_image_grid,
    render_figures,
    save_image_grid,
    score_table,
)
from models.errors import ConfigError
from models.imageset import TensorImageSet

DATASET = "fashion-mnist"
BITS = 16
SCORES = {  # (model, attack): (targeted, attacked score, clean score)
    ("dph", "hag"): (False, 0.20, 0.80),
    ("dph", "mainstay"): (False, 0.10, 0.80),
    ("dph", "dhta"): (True, 0.70, 0.05),
    ("dph+saat", "hag"): (False, 0.55, 0.75),
    ("dph+saat", "mainstay"): (False, 0.45, 0.75),
    ("dph+saat", "dhta"): (True, 0.20, 0.04),
}
# A smaller run for the tests that only need one cell or the image grid, because rendering dominates test time.
GRID_SCORES = {key: SCORES[key] for key in (("dph", "hag"), ("dph", "mainstay"), ("dph+saat", "mainstay"))}
STEMS = {
    "heatmap": [f"heatmap_{DATASET}_{BITS}bits"],
    "pr_curves": [f"pr_curves_{DATASET}_{BITS}bits_nontargeted", f"pr_curves_{DATASET}_{BITS}bits_targeted"],
    "precision_at_n": [f"precision_at_n_{DATASET}_{BITS}bits_nontargeted",
                       f"precision_at_n_{DATASET}_{BITS}bits_targeted"],
    "robustness": [f"robustness_{DATASET}_{BITS}bits"],
    "perturbation": [f"perturbation_{DATASET}_{BITS}bits"],
}


def curves(scale: float) -> dict:
    recall = [0.0, 0.25, 0.5, 0.75, 1.0]
    return {
        "pr": {"recall": recall, "precision": [scale * (1.0 - 0.5 * value) for value in recall]},
        "precision_at_n": {"n": [1, 10, 100, 1000], "precision": [scale, 0.9 * scale, 0.8 * scale, 0.6 * scale]},
    }


def cell_record(model: str, attack: str, targeted: bool, score: float, clean_score: float) -> dict:
    base, _, defense = model.partition("+")
    metrics = {"clean_map": clean_score if not targeted else 0.8, "attacked_map": score if not targeted else 0.3,
               "linf": 8 / 255 if attack != "hag" else 6 / 255, "l2": 1.2 if attack != "hag" else 0.9,
               "mse": 1e-3, "psnr": 30.0, "seconds_per_query": 0.5}
    if targeted:
        metrics.update(clean_tmap=clean_score, attacked_tmap=score)
    return {"status": "ok", "key": f"key-{model}-{attack}", "dataset": DATASET, "n_bits": BITS, "model": model,
            "base_model": base, "defense": defense or "none", "attack": attack, "targeted": targeted,
            "metric": "t-map" if targeted else "map", "score": score, "clean_score": clean_score, "topk": 1000,
            "queries": 8, "skipped_queries": 0, "seed": 0, "checkpoint": f"checkpoint-{model}",
            "metrics": metrics, "curves": {"clean": curves(clean_score), "attacked": curves(score)}}


def error_record(model: str, attack: str) -> dict:
    base, _, defense = model.partition("+")
    return {"status": "error", "error": "RuntimeError: out of memory", "dataset": DATASET, "n_bits": BITS,
            "model": model, "base_model": base, "defense": defense or "none", "attack": attack,
            "targeted": False, "metric": "map", "seed": 0}


def write_run(folder: Path, scores: dict = SCORES) -> Path:
    for (model, attack), (targeted, score, clean_score) in scores.items():
        record = cell_record(model, attack, targeted, score, clean_score)
        store.write_json(folder / "records" / f"{model}__{attack}.json", record)
    store.write_json(folder / "records" / "dph__tha.json", error_record("dph", "tha"))
    store.write_json(folder / "records" / "dpsh__hag.json", error_record("dpsh", "hag"))
    for model in sorted({model for model, _ in scores}):
        store.write_json(folder / "models" / f"{model}.json",
                         {"status": "ok", "dataset": DATASET, "n_bits": BITS, "model": model, "clean_map": 0.8,
                          "train_seconds": 12.0})
    return folder


def grid_tensors(queries: int = 2, topk: int = 10, channels: int = 1, side: int = 8) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)

    def images(*shape: int) -> torch.Tensor:
        return torch.randint(0, 256, shape, generator=generator, dtype=torch.uint8)

    relevant = torch.zeros(queries, topk, dtype=torch.bool)
    relevant[:, : topk // 2] = True
    return {"clean_queries": images(queries, channels, side, side),
            "adversarial_queries": images(queries, channels, side, side),
            "clean_retrievals": images(queries, topk, channels, side, side),
            "adversarial_retrievals": images(queries, topk, channels, side, side),
            "clean_relevant": relevant, "adversarial_relevant": ~relevant,
            "query_index": torch.arange(queries)}


def check_figure(path: Path) -> None:
    assert path.is_file(), f"{path.name} was not written"
    assert path.stat().st_size > 0, f"{path.name} is empty"
    if path.suffix == ".png":
        with Image.open(path) as image:
            image.verify()
        with Image.open(path) as image:
            width, height = image.size
        assert 600 <= width <= 4000, f"{path.name} is {width} px wide"
        assert 300 <= height <= 4000, f"{path.name} is {height} px high"
    else:
        assert path.read_bytes().startswith(b"%PDF"), f"{path.name} is not a PDF"


class RecordingHandler(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture(scope="module")
def rendered(tmp_path_factory) -> tuple[Path, dict[str, list[Path]], list[logging.LogRecord]]:
    """Render the full synthetic run once for the module, logging into a handler because caplog is per test."""
    run_dir = write_run(tmp_path_factory.mktemp("results") / "default")
    handler = RecordingHandler()
    logger = logging.getLogger("bench.plots")
    logger.addHandler(handler)
    previous = logger.level
    logger.setLevel(logging.INFO)
    try:
        written = render_figures(run_dir)
    finally:
        logger.removeHandler(handler)
        logger.setLevel(previous)
    return run_dir, written, handler.records


def test_render_writes_every_figure(rendered):
    run_dir, written, _ = rendered
    for stems in STEMS.values():
        for stem in stems:
            for suffix in (".png", ".pdf"):
                check_figure(run_dir / "figures" / f"{stem}{suffix}")


def test_render_returns_written_paths(rendered):
    run_dir, written, _ = rendered
    expected = {name: sorted(run_dir / "figures" / f"{stem}{suffix}" for stem in stems for suffix in (".png", ".pdf"))
                for name, stems in STEMS.items()}
    assert {name: sorted(paths) for name, paths in written.items()} == expected


def test_render_leaves_no_temporary_files(rendered):
    run_dir, written, _ = rendered
    on_disk = {path for path in (run_dir / "figures").iterdir()}
    assert on_disk == {path for paths in written.values() for path in paths}


def test_image_grid_skipped_without_cache(rendered):
    run_dir, written, messages = rendered
    assert "image_grid" not in written
    assert not (run_dir / "figures" / "image_grid.png").exists()
    warnings = [record.getMessage() for record in messages if record.levelno == logging.WARNING]
    assert any("skipped the image_grid figure" in message for message in warnings), warnings


def test_score_table_ignores_error_records(rendered):
    run_dir, _, _ = rendered
    cells, _ = load_records(run_dir)
    ok = cells[cells["status"] == "ok"]
    nontargeted = score_table(ok, targeted=False)
    assert list(nontargeted.columns) == ["clean", "hag", "mainstay"]
    assert list(nontargeted.index) == ["dph", "dph+saat"]
    assert nontargeted.loc["dph", "mainstay"] == pytest.approx(0.10)
    assert nontargeted.loc["dph+saat", "clean"] == pytest.approx(0.75)
    targeted = score_table(ok, targeted=True)
    assert list(targeted.columns) == ["clean", "dhta"]
    assert targeted.loc["dph", "dhta"] == pytest.approx(0.70)


def test_attack_palette_fixed_by_name():
    palette = attack_palette(["mainstay", "hag", "dhta", "hag"])
    assert palette == attack_palette(["dhta", "mainstay", "hag"])
    assert list(palette) == ["clean", "dhta", "hag", "mainstay"]
    assert palette["clean"] == CLEAN_COLOUR
    assert len({tuple(palette[name]) for name in ("dhta", "hag", "mainstay")}) == 3


def test_attack_palette_many_attacks_distinct():
    names = [f"attack{index:02d}" for index in range(14)]
    palette = attack_palette(names)
    assert len({tuple(palette[name]) for name in names}) == 14


def test_render_skips_figures_without_data(tmp_path, caplog):
    undefended_only = {key: value for key, value in SCORES.items() if key[0] == "dph" and not value[0]}
    run_dir = write_run(tmp_path / "run", undefended_only)
    with caplog.at_level(logging.INFO, logger="bench.plots"):
        written = render_figures(run_dir)
    assert set(written) == {"heatmap", "pr_curves", "precision_at_n", "perturbation"}
    assert [path.name for path in written["pr_curves"]] == [
        f"pr_curves_{DATASET}_{BITS}bits_nontargeted.png", f"pr_curves_{DATASET}_{BITS}bits_nontargeted.pdf"]
    assert not list((run_dir / "figures").glob("robustness*"))
    assert "skipped the robustness figure" in caplog.text
    assert "no targeted cell has curves" in caplog.text


def test_render_without_ok_cells(tmp_path, caplog):
    run_dir = tmp_path / "run"
    store.write_json(run_dir / "records" / "dph__tha.json", error_record("dph", "tha"))
    with caplog.at_level(logging.WARNING, logger="bench.plots"):
        assert render_figures(run_dir) == {}
    assert "has no cell with status 'ok'" in caplog.text


def test_render_rejects_folder_without_records(tmp_path):
    with pytest.raises(ConfigError, match="not a run folder"):
        render_figures(tmp_path)


def test_render_twice_same_pdf(tmp_path):
    run_dir = write_run(tmp_path / "run", {("dph", "hag"): SCORES[("dph", "hag")]})
    first = render_figures(run_dir)["heatmap"]
    pdf = next(path for path in first if path.suffix == ".pdf")
    before = pdf.read_bytes()
    render_figures(run_dir)
    assert pdf.read_bytes() == before


def test_image_grid_renders_from_saved_file(tmp_path):
    run_dir = write_run(tmp_path / "run", GRID_SCORES)
    meta = {"dataset": DATASET, "n_bits": BITS, "model": "dph", "attack": "mainstay", "key": "key-dph-mainstay"}
    save_image_grid(run_dir / "figures" / GRID_FILE, grid_tensors(channels=3), meta)
    written = render_figures(run_dir)
    assert [path.name for path in written["image_grid"]] == ["image_grid.png", "image_grid.pdf"]
    for path in written["image_grid"]:
        check_figure(path)


def test_image_grid_file_round_trip(tmp_path):
    tensors = grid_tensors()
    meta = {"dataset": DATASET, "n_bits": BITS, "model": "dph", "attack": "hag", "key": "k"}
    loaded = load_image_grid(save_image_grid(tmp_path / GRID_FILE, tensors, meta))
    assert loaded is not None
    loaded_tensors, loaded_meta = loaded
    assert loaded_meta == meta
    assert set(loaded_tensors) == set(tensors)
    assert torch.equal(loaded_tensors["clean_retrievals"], tensors["clean_retrievals"])


def test_image_grid_file_missing_entry(tmp_path):
    path = store.save_tensors(tmp_path / GRID_FILE, {"clean_queries": torch.zeros(1, 1, 2, 2, dtype=torch.uint8)})
    assert load_image_grid(path) is None


# Database of the cache test: items 0-3 have code A and class 0, items 4-7
# code B and class 1, items 8-11 code C and class 2. Hamming distances:
# A-B 4, A-C 2, B-C 2.
CODE_A = [1.0, 1.0, 1.0, 1.0]
CODE_B = [-1.0, -1.0, -1.0, -1.0]
CODE_C = [1.0, 1.0, -1.0, -1.0]


def write_cache(root: ResultsRoot) -> tuple[RetrievalData, dict[str, torch.Tensor]]:
    database_codes = torch.tensor([CODE_A] * 4 + [CODE_B] * 4 + [CODE_C] * 4)
    database_labels = torch.nn.functional.one_hot(torch.tensor([0] * 4 + [1] * 4 + [2] * 4), 3)
    query_labels = torch.nn.functional.one_hot(torch.tensor([0, 1]), 3)
    # 160-pixel images, so the stored thumbnails are shrunk to GRID_MAX_SIDE.
    pixels = torch.arange(12, dtype=torch.uint8).mul(20).view(12, 1, 1, 1).expand(12, 1, 160, 160).contiguous()
    query_pixels = torch.full((2, 1, 160, 160), 128, dtype=torch.uint8)
    database = TensorImageSet(pixels, database_labels)
    data = RetrievalData(DATASET, 3, TensorImageSet(query_pixels, query_labels), database, database,
                         {"hash": "split"})
    codes = {"query": torch.tensor([CODE_A, CODE_B]), "train": database_codes, "database": database_codes}
    images = torch.rand(2, 1, 160, 160, generator=torch.Generator().manual_seed(1))
    store.save_tensors(root.adversarial("key-dph-mainstay"), {
        "query_index": torch.tensor([0, 1]), "codes": torch.tensor([CODE_B, CODE_A]),
        "images": images, "clean_images": query_pixels.float() / 255})
    root.checkpoint("checkpoint-dph").parent.mkdir(parents=True, exist_ok=True)
    config = {"dataset": DATASET, "split": {"spec": {"n_query": 2, "n_train": 12, "n_database": 12, "seed": 0}}}
    torch.save({"format": "hashbench-checkpoint", "format_version": 1, "config_json": json.dumps(config),
                "state_dict": {}}, root.checkpoint("checkpoint-dph"))
    return data, codes


def test_image_grid_built_from_cache(tmp_path, monkeypatch):
    root = ResultsRoot.at(tmp_path / "results")
    run_dir = write_run(root.run("default"), GRID_SCORES)
    data, codes = write_cache(root)
    requested = []
    monkeypatch.setattr(steps, "load_data", lambda spec, _root: requested.append(spec) or data)
    monkeypatch.setattr(steps, "encode_step", lambda _root, _data, _checkpoint: codes)

    written = render_figures(run_dir, root=root)

    assert [path.name for path in written["image_grid"]] == ["image_grid.png", "image_grid.pdf"]
    assert [spec.dataset for spec in requested] == [DATASET]
    loaded = load_image_grid(run_dir / "figures" / GRID_FILE)
    assert loaded is not None
    tensors, meta = loaded
    assert meta == {"dataset": DATASET, "n_bits": BITS, "model": "dph", "attack": "mainstay",
                    "key": "key-dph-mainstay"}
    # Query 0 (class 0) ranks A items first, then C, then B. Its adversarial code B reverses that.
    assert tensors["clean_relevant"][0].tolist() == [True] * 4 + [False] * 6
    assert tensors["adversarial_relevant"][0].tolist() == [False] * 8 + [True] * 2
    assert tensors["clean_relevant"][1].tolist() == [True] * 4 + [False] * 6
    assert tensors["adversarial_relevant"][1].tolist() == [False] * 8 + [True] * 2
    assert tensors["clean_retrievals"][0, :, 0, 0, 0].tolist() == [0, 20, 40, 60, 160, 180, 200, 220, 80, 100]
    assert tensors["clean_retrievals"].dtype == torch.uint8
    assert tuple(tensors["adversarial_queries"].shape) == (2, 1, GRID_MAX_SIDE, GRID_MAX_SIDE)
    assert tuple(tensors["adversarial_retrievals"].shape) == (2, 10, 1, GRID_MAX_SIDE, GRID_MAX_SIDE)


def test_image_grid_rerendered_without_cache(tmp_path, monkeypatch):
    root = ResultsRoot.at(tmp_path / "results")
    run_dir = write_run(root.run("default"), GRID_SCORES)
    data, codes = write_cache(root)
    monkeypatch.setattr(steps, "load_data", lambda spec, _root: data)
    monkeypatch.setattr(steps, "encode_step", lambda _root, _data, _checkpoint: codes)
    render_figures(run_dir, root=root)
    monkeypatch.undo()
    for path in root.cache.rglob("*.pt"):
        path.unlink()

    written = render_figures(run_dir, root=root)

    assert [path.name for path in written["image_grid"]] == ["image_grid.png", "image_grid.pdf"]


def test_image_grid_thumbnails_large_images():
    thumbnails = _thumbnails(torch.ones(3, 3, 224, 160))
    assert tuple(thumbnails.shape) == (3, 3, GRID_MAX_SIDE, round(160 * GRID_MAX_SIDE / 224))
    assert thumbnails.dtype == torch.uint8
    assert int(thumbnails.min()) == 255
