"""Run a defense on a victim checkpoint: resumable, monitored, cached."""

from __future__ import annotations

import logging
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from bench import store
from bench.cache import ResultsRoot
from bench.data.base import RetrievalData
from bench.runtime import versions
from bench.steps import STEP_VERSION, checkpoint_key, data_topk, encode_all, encode_key, open_checkpoint
from models.checkpoint import save_checkpoint
from models.training import encode_images

log = logging.getLogger(__name__)

MONITOR_DATABASE = 10000


def defense_key(victim_key: str, defense_config: dict[str, Any]) -> str:
    return store.hash_config({"step": "defend", "version": STEP_VERSION, "victim": victim_key,
                              "defense": defense_config})


def monitor_quality(model, data: RetrievalData, *, queries: int, steps: int, device: torch.device) -> dict[str, float]:
    """Return clean MAP and MAP under a short mainstay attack on held-out queries.

    Uses the first ``queries`` queries against a fixed database subset, so
    each epoch is measured on the same items.
    """
    from attacks import ATTACKS, VictimKnowledge
    from bench.metrics import mean_average_precision

    generator = torch.Generator().manual_seed(0)
    subset = torch.randperm(len(data.database), generator=generator)[:MONITOR_DATABASE]
    database_images = data.database.images(subset)
    database_labels = data.database.labels[subset]
    was_training = model.training
    model.eval()
    with torch.no_grad():
        database_codes = torch.cat([model.encode(database_images[i:i + 1000].to(device)).cpu()
                                    for i in range(0, len(subset), 1000)])
    train_codes = encode_images(model, data.train, device=device)
    count = min(queries, len(data.query))
    query_images = data.query.images(torch.arange(count))
    query_labels = data.query.labels[:count]
    attack = ATTACKS.create("mainstay", steps=steps)
    attack.fit(model, VictimKnowledge(train_codes=train_codes, train_labels=data.train.labels))
    adversarial = attack.run(model, query_images, query_labels).images
    with torch.no_grad():
        clean_codes = model.encode(query_images.to(device)).cpu()
        adversarial_codes = model.encode(adversarial.to(device)).cpu()
    model.train(was_training)
    topk = data_topk(data)
    common = dict(database_codes=database_codes, query_labels=query_labels, database_labels=database_labels, topk=topk)
    return {"clean_map": mean_average_precision(query_codes=clean_codes, **common),
            "attacked_map": mean_average_precision(query_codes=adversarial_codes, **common)}


def _save_state(path: Path, state: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(descriptor)
    try:
        torch.save(state, temporary)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def run_defense(
    root: ResultsRoot,
    data: RetrievalData,
    victim_path: Path,
    defense_name: str,
    options: dict[str, Any],
    *,
    profile: str = "custom",
    monitor: dict[str, int] | None = None,
    device: torch.device = torch.device("cpu"),
    console=None,
) -> Path:
    """Train the defended copy of ``victim_path``; return its checkpoint path.

    After each epoch the full training state is saved, so an interrupted run
    continues from the last finished epoch. A diverged run raises and keeps
    that state.
    """
    from defenses import DEFENSES

    defense = DEFENSES.create(defense_name, **options)
    victim_key = checkpoint_key(victim_path)
    key = defense_key(victim_key, defense.config())
    path = root.checkpoint(key)
    if path.is_file():
        log.info("defend %s: cached checkpoint %s", defense_name, path.name)
        return path
    model, victim_config = open_checkpoint(victim_path, data, device)
    state_path = root.defense_state(key)
    resume = torch.load(state_path, map_location="cpu", weights_only=True) if state_path.is_file() else None
    if resume is not None:
        log.info("defend %s: resuming after epoch %d", defense_name, resume["epoch"])
    monitor = monitor or {"queries": 200, "steps": 20}
    history: list[dict[str, Any]] = list(resume.get("history", [])) if resume else []
    name = f"{victim_config['model']['model']}+{defense_name}"

    def on_epoch(epoch: int, entry: dict[str, Any], state_fn) -> None:
        entry = dict(entry)
        if monitor.get("queries", 0) > 0:
            entry.update(monitor_quality(model, data, queries=monitor["queries"], steps=monitor["steps"], device=device))
        history.append(entry)
        message = (f"{name} epoch {epoch}/{defense.epochs}: loss {entry['loss']:.4f}"
                   + (f", clean MAP {entry['clean_map']:.4f}, MAP under mainstay-{monitor['steps']} "
                      f"{entry['attacked_map']:.4f}" if "clean_map" in entry else "")
                   + f", {entry['seconds']:.1f} s")
        log.info(message)
        if console is not None:
            console.print("  " + message)
        _save_state(state_path, {**state_fn(), "history": history})

    started = time.perf_counter()
    defense.train(model, data.train, device=device, on_epoch=on_epoch, resume=resume)
    seconds = time.perf_counter() - started
    codes = encode_all(model, data, device)
    from bench.metrics import mean_average_precision

    topk = data_topk(data)
    clean_map = mean_average_precision(query_codes=codes["query"], database_codes=codes["database"],
                                       query_labels=data.query.labels, database_labels=data.database.labels, topk=topk)
    config = {
        "kind": "defended",
        "key": key,
        "name": name,
        "dataset": data.name,
        "split": victim_config["split"],
        "defense": defense.config(),
        "victim": {"key": victim_key, "name": victim_config.get("name"), "clean_map": victim_config.get("clean_map")},
        "profile": profile,
        "history": history,
        "train_seconds": seconds,
        "clean_map": clean_map,
        "topk": topk,
        "versions": versions(device),
    }
    save_checkpoint(path, model, config)
    store.save_tensors(root.codes(encode_key(key, data)), codes)
    state_path.unlink(missing_ok=True)
    log.info("defend %s: MAP@%s %.4f (victim %.4f), %.1f s", name, topk, clean_map,
             victim_config.get("clean_map", float("nan")), seconds)
    return path
