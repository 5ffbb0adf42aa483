"""The bench commands on real Fashion-MNIST at the quick profile."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from bench.cli import main
from tests.bench.conftest import requires_fashion_mnist

pytestmark = [pytest.mark.slow, requires_fashion_mnist]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli")
    output = root / "dph.pt"
    result = CliRunner().invoke(main, ["train", "--model", "dph", "--bits", "16", "--profile", "quick",
                                       "--epochs", "1", "--device", "cpu", "--results-root", str(root),
                                       "--output", str(output)])
    assert result.exit_code == 0, result.output
    return root, output, result.output


def test_train_reports_map_and_epochs(trained):
    _, output, text = trained
    assert output.is_file()
    assert "epoch   1/1" in text
    assert "MAP@1000:" in text


def test_eval_prints_map_and_curves(trained):
    root, output, _ = trained
    result = CliRunner().invoke(main, ["eval", str(output), "--results-root", str(root), "--device", "cpu"])
    assert result.exit_code == 0, result.output
    assert "MAP@1000 =" in result.output
    assert "P@100 =" in result.output


def test_attack_writes_record(trained):
    root, output, _ = trained
    result = CliRunner().invoke(main, ["attack", str(output), "--attack", "mainstay", "--targeted", "--steps", "3",
                                       "--queries", "12", "--eps", "8/255", "--profile", "quick",
                                       "--results-root", str(root), "--device", "cpu"])
    assert result.exit_code == 0, result.output
    assert "mainstay-targeted" in result.output
    assert "attacked t-MAP@1000" in result.output
    assert "theory T-MAP" in result.output
    records = list((root / "cache" / "records").glob("*.json"))
    assert len(records) == 1
    record = json.loads(records[0].read_text())
    assert record["attack_config"]["steps"] == 3
    assert record["metrics"]["linf"] <= 8 / 255 + 1e-6


def test_attack_without_targeted_variant(trained):
    root, output, _ = trained
    result = CliRunner().invoke(main, ["attack", str(output), "--attack", "hag", "--targeted",
                                       "--results-root", str(root)])
    assert result.exit_code == 2
    assert "no targeted variant" in result.output


def test_defend_then_attack_defended_copy(trained):
    root, output, _ = trained
    defended = root / "dph-saat.pt"
    result = CliRunner().invoke(main, ["defend", str(output), "--defense", "saat", "--epochs", "1", "--profile",
                                       "quick", "--results-root", str(root), "--device", "cpu",
                                       "--output", str(defended)])
    assert result.exit_code == 0, result.output
    assert "dph+saat epoch 1/1" in result.output
    assert defended.is_file()
    attacked = CliRunner().invoke(main, ["attack", str(defended), "--steps", "2", "--queries", "8", "--profile",
                                         "quick", "--results-root", str(root), "--device", "cpu"])
    assert attacked.exit_code == 0, attacked.output
    assert "against dph+saat" in attacked.output


def test_corrupt_checkpoint_clear_error(tmp_path):
    path = tmp_path / "broken.pt"
    path.write_bytes(b"not a checkpoint")
    result = CliRunner().invoke(main, ["eval", str(path), "--results-root", str(tmp_path)])
    assert result.exit_code == 2
    assert "cannot read checkpoint" in result.output


def test_unknown_model_clear_error(tmp_path):
    result = CliRunner().invoke(main, ["train", "--model", "dhp", "--results-root", str(tmp_path)])
    assert result.exit_code == 2
    assert "valid names" in result.output


def test_list_shows_registries():
    result = CliRunner().invoke(main, ["list"])
    assert result.exit_code == 0
    for name in ("dph", "csq", "saat", "atrdh", "cgat", "mainstay-targeted", "prosgan", "fashion-mnist"):
        assert name in result.output
