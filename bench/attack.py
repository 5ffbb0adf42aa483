"""Run one attack against one checkpoint and score it: the cell of the matrix.

Codes and metrics are always recomputed from the adversarial images in eval
mode with tanh scale 1, never taken from the attack's internal state.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import torch

from bench import store
from bench.cache import ResultsRoot
from bench.data.base import RetrievalData
from bench.evaluation import retrieval_report
from bench.metrics import perturbation_norms
from bench.runtime import versions
from bench.steps import STEP_VERSION, checkpoint_key, data_topk, encode_step, open_checkpoint, targets_step
from models.checkpoint import read_checkpoint_config

log = logging.getLogger(__name__)

GRID_IMAGES = 8


def build_attack(name: str, options: dict[str, Any], seed: int):
    from attacks import ATTACKS

    return ATTACKS.create(name, seed=seed, **options)


def cell_key(checkpoint: str, attack_config: dict[str, Any], split_hash: str, queries: int, targets_key: str | None) -> str:
    return store.hash_config({"step": "attack", "version": STEP_VERSION, "checkpoint": checkpoint,
                              "attack": attack_config, "split": split_hash, "queries": queries,
                              "targets": targets_key})


def _model_name(config: dict[str, Any]) -> str:
    return config.get("name") or config["model"]["model"]


def _encode(model, images: torch.Tensor, device: torch.device) -> torch.Tensor:
    with torch.no_grad():
        return torch.cat([model.encode(images[i:i + 500].to(device)).cpu() for i in range(0, len(images), 500)])


def attack_cell(
    root: ResultsRoot,
    data: RetrievalData,
    checkpoint: Path,
    attack_name: str,
    options: dict[str, Any],
    *,
    queries: int | None = None,
    seed: int = 0,
    profile: str = "custom",
    device: torch.device = torch.device("cpu"),
) -> dict[str, Any]:
    """Attack the first ``queries`` queries with ``attack_name``; return the cell record (cached)."""
    attack = build_attack(attack_name, options, seed)
    caps = attack.capabilities
    n_queries = min(queries or len(data.query), len(data.query))
    ckpt_key = checkpoint_key(checkpoint)
    targets = targets_step(root, data, seed=seed) if caps.targeted else None
    key = cell_key(ckpt_key, attack.config(), data.split_hash, n_queries, "shared" if targets is not None else None)
    record_path = root.record(key)
    if record_path.is_file():
        log.info("cell %s x %s: cached record", _model_name(read_checkpoint_config(checkpoint)), attack_name)
        return {**store.read_json(record_path), "_cached": True}

    started = time.perf_counter()
    model, config = open_checkpoint(checkpoint, data, device)
    codes = encode_step(root, data, checkpoint, device)
    query_index = torch.arange(n_queries)
    labels = data.query.labels[:n_queries]
    target_labels = None
    skipped = 0
    if targets is not None:
        valid = targets["valid"][:n_queries]
        skipped = int((~valid).sum())
        query_index = query_index[valid]
        target_labels = targets["targets"][:n_queries][valid]
        labels = labels[valid]
    images = data.query.images(query_index)

    from attacks import VictimKnowledge

    knowledge = VictimKnowledge(
        train_codes=codes["train"], train_labels=data.train.labels,
        database_codes=codes["database"], database_labels=data.database.labels,
        train_images=data.train if caps.needs_train_images else None,
    )
    _fit(root, attack, model, knowledge, ckpt_key)
    attack_started = time.perf_counter()
    output = attack.run(model, images, labels, target_labels)
    attack_seconds = time.perf_counter() - attack_started

    adversarial_codes = _encode(model, output.images, device)
    clean_codes = codes["query"][query_index]
    topk = data_topk(data)
    base = dict(database_codes=codes["database"], database_labels=data.database.labels, topk=topk)
    clean = _clean_report(ckpt_key, data.split_hash, "labels", query_index, clean_codes, labels, base)
    attacked = retrieval_report(query_codes=adversarial_codes, query_labels=labels, **base)
    metrics: dict[str, Any] = {
        "clean_map": clean["map"],
        "attacked_map": attacked["map"],
        "seconds_per_query": attack_seconds / max(len(query_index), 1),
        **_perceptibility(images, output.images),
    }
    curves = {"clean": _curves(clean), "attacked": _curves(attacked)}
    if target_labels is not None:
        clean_t = _clean_report(ckpt_key, data.split_hash, "targets", query_index, clean_codes, target_labels, base)
        attacked_t = retrieval_report(query_codes=adversarial_codes, query_labels=target_labels, **base)
        metrics.update(clean_tmap=clean_t["map"], attacked_tmap=attacked_t["map"])
        curves = {"clean": _curves(clean_t), "attacked": _curves(attacked_t)}
    query_labels_for_score = target_labels if target_labels is not None else labels
    if output.theory_codes is not None:
        metrics["theory"] = retrieval_report(query_codes=output.theory_codes, query_labels=query_labels_for_score,
                                             curves=False, **base)["map"]
    unbounded = output.extra_images.get("unbounded")
    if unbounded is not None:
        unbounded_codes = _encode(model, unbounded, device)
        metrics["unbounded_score"] = retrieval_report(query_codes=unbounded_codes, query_labels=query_labels_for_score,
                                                      curves=False, **base)["map"]
        metrics["unbounded_linf"] = _perceptibility(images, unbounded)["linf"]

    store.save_tensors(root.adversarial(key), {
        "query_index": query_index, "codes": adversarial_codes,
        "images": output.images[:GRID_IMAGES], "clean_images": images[:GRID_IMAGES],
    })
    record = {
        "status": "ok",
        "key": key,
        "dataset": data.name,
        "split_hash": data.split_hash,
        "profile": profile,
        "n_bits": config["model"]["n_bits"],
        "model": _model_name(config),
        "base_model": config["model"]["model"],
        "defense": (config.get("defense") or {}).get("defense", "none"),
        "attack": attack_name,
        "targeted": caps.targeted,
        "metric": "t-map" if caps.targeted else "map",
        "score": metrics["attacked_tmap"] if caps.targeted else metrics["attacked_map"],
        "clean_score": metrics["clean_tmap"] if caps.targeted else metrics["clean_map"],
        "topk": topk,
        "queries": int(len(query_index)),
        "skipped_queries": skipped,
        "seed": seed,
        "checkpoint": ckpt_key,
        "attack_config": attack.config(),
        "metrics": metrics,
        "curves": curves,
        "versions": versions(device),
        "wall_seconds": time.perf_counter() - started,
    }
    store.write_json(record_path, record)
    return record


_CLEAN_REPORTS: dict[tuple, dict[str, Any]] = {}


def _clean_report(checkpoint: str, split_hash: str, relevance: str, query_index: torch.Tensor,
                  codes: torch.Tensor, labels: torch.Tensor, base: dict[str, Any]) -> dict[str, Any]:
    """Return the clean queries' report, computed once per model and query set in this process."""
    key = (checkpoint, split_hash, relevance, tuple(query_index.tolist()))
    if key not in _CLEAN_REPORTS:
        while len(_CLEAN_REPORTS) >= 4:  # a few models' reports keep memory bounded
            _CLEAN_REPORTS.pop(next(iter(_CLEAN_REPORTS)))
        _CLEAN_REPORTS[key] = retrieval_report(query_codes=codes, query_labels=labels, **base)
    return _CLEAN_REPORTS[key]


def _perceptibility(clean: torch.Tensor, adversarial: torch.Tensor) -> dict[str, float]:
    """Return mean per-image L-infinity, L2, MSE and PSNR on the [0, 1] pixel scale."""
    summary = perturbation_norms(clean, adversarial).summary()
    return {"linf": summary["linf_mean"], "l2": summary["l2_mean"], "mse": summary["mse_mean"],
            "psnr": summary["psnr_mean"], "unchanged_images": summary["identical_images"]}


def _curves(report: dict[str, Any]) -> dict[str, Any]:
    return {"pr": report["pr_curve"], "precision_at_n": report["precision_at_n"]}


def _fit(root: ResultsRoot, attack, model, knowledge, ckpt_key: str) -> None:
    """Fit the attack to the victim, reusing a cached prepared state when one exists."""
    fit_config = attack.fit_config()
    if not fit_config:
        attack.fit(model, knowledge)
        return
    key = store.hash_config({"step": "fit", "version": STEP_VERSION, "checkpoint": ckpt_key,
                             "attack": attack.name, "fit": fit_config})
    path = root.prepared(key)
    if path.is_file():
        attack.fit_from_state(knowledge, store.load_tensors(path))
        return
    attack.fit(model, knowledge)
    store.save_tensors(path, attack.prepared_state())
