"""Matrix files: every mistake fails before any work starts, naming the value and the choices."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from bench.cli import main
from bench.matrix.config import load_matrix, parse_matrix
from bench.matrix.graph import build_graph
from models.base import MODELS
from models.dph import DPH
from models.errors import ConfigError

BASE = {"name": "t", "profile": "quick", "models": ["dph"], "bits": [16], "attacks": ["all"]}


def test_builtin_matrices_parse():
    for name in ("default", "quick", "paper"):
        config = load_matrix(name)
        assert config.name == name
        assert config.attacks


def test_default_matrix_content():
    config = load_matrix("default")
    names = [variant.name for variant in config.variants()]
    assert config.datasets == ["fashion-mnist"]
    assert config.bits == [32]
    for model in ("dph", "dpsh", "hashnet", "csq"):
        assert model in names
        assert f"{model}+saat" in names
    assert "dph+atrdh" in names
    assert "dph+cgat" in names


def test_unknown_model_lists_valid_names():
    with pytest.raises(ConfigError) as error:
        parse_matrix({**BASE, "models": ["dhp"]})
    assert "'dhp'" in str(error.value)
    assert "dph" in str(error.value)
    assert "Did you mean 'dph'" in str(error.value)


def test_unknown_attack_lists_valid_names():
    with pytest.raises(ConfigError) as error:
        parse_matrix({**BASE, "attacks": ["mainstai"]})
    assert "mainstay" in str(error.value)


def test_unknown_defense_and_key():
    with pytest.raises(ConfigError, match="unknown defense 'saatt'"):
        parse_matrix({**BASE, "defenses": {"every_model": ["saatt"]}})
    with pytest.raises(ConfigError, match="unknown matrix keys"):
        parse_matrix({**BASE, "modles": ["dph"]})


def test_wrong_types_rejected():
    with pytest.raises(ConfigError, match="bits"):
        parse_matrix({**BASE, "bits": "32"})
    with pytest.raises(ConfigError, match="norm"):
        parse_matrix({**BASE, "threat": {"norm": "l2"}})
    with pytest.raises(ConfigError, match="eps"):
        parse_matrix({**BASE, "threat": {"eps": "eight"}})
    with pytest.raises(ConfigError, match="unknown override"):
        parse_matrix({**BASE, "overrides": {"atacks": {}}})


def test_invalid_attack_setting_rejected():
    with pytest.raises(ConfigError, match="mainstay"):
        parse_matrix({**BASE, "overrides": {"attacks": {"mainstay": {"stepz": 3}}}})


class _FrozenDPH(DPH):
    name = "frozen-dph"
    differentiable = False


def test_impossible_pairing_fails_early():
    if "frozen-dph" not in MODELS:
        MODELS.register("frozen-dph")(_FrozenDPH)
    with pytest.raises(ConfigError, match="impossible pairings"):
        parse_matrix({**BASE, "models": ["frozen-dph"], "attacks": ["mainstay"]})
    config = parse_matrix({**BASE, "models": ["frozen-dph"], "attacks": ["all"]})
    cells = [node for node in build_graph(config) if node.kind == "cell"]
    assert all(node.params["skip"] for node in cells)


def test_graph_dependencies():
    config = parse_matrix({**BASE, "defenses": {"every_model": ["saat"]}})
    nodes = build_graph(config)
    position = {node.id: index for index, node in enumerate(nodes)}
    for node in nodes:
        for dependency in node.depends_on:
            assert position[dependency] < position[node.id]
    defended_cells = [node for node in nodes if node.kind == "cell" and node.params["defense"] == "saat"]
    assert defended_cells
    assert all(node.depends_on == ["fashion-mnist/16bit/seed0/dph+saat"] for node in defended_cells)


def test_malformed_toml_cli_exit(tmp_path):
    path = tmp_path / "broken.toml"
    path.write_text("models = [dph\n")
    result = CliRunner().invoke(main, ["run", "--matrix", str(path), "--results-root", str(tmp_path / "r")])
    assert result.exit_code == 2
    assert "not valid TOML" in result.output
    assert not (tmp_path / "r").exists()


def test_missing_matrix_file_cli_exit(tmp_path):
    result = CliRunner().invoke(main, ["run", "--matrix", str(tmp_path / "nope.toml")])
    assert result.exit_code == 2
    assert "not found" in result.output
