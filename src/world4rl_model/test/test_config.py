"""world4rl_model.config: YAML presets read into config dataclasses (checked: names, nesting, types,
derived settings), and the tyro CLI generated from a dataclass, with --preset and flags over it."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from world4rl_model.config import SettingsError, build, check_settings, cli, load_preset, meta, read_preset


@dataclass
class Inner:
    width: int = 8  # layer width
    depth: int = 2  # layers
    size: int = field(default=64, metadata=meta(derived="taken from the data"))  # input size


@dataclass
class Outer:
    data: str  # where the data is
    steps: int = 10  # optimiser steps
    lr: float = 1e-3  # learning rate
    widths: tuple[int, ...] = (1, 2)  # widths
    tasks: list[str] | None = None  # tasks (None: all)
    fast: bool = False  # go fast
    mode: str = field(default="a", metadata=meta(aliases=("--old-mode",)))  # a or b
    inner: Inner = field(default_factory=Inner)  # the inner part
    extra: dict = field(default_factory=dict, metadata=meta(cli=False))  # free-form, presets only


def _write(path, text):
    path.write_text(text)
    return path


def test_a_preset_loads_into_the_dataclass_with_nested_groups(tmp_path):
    path = _write(tmp_path / "p.yaml", "steps: 20\nlr: 0.01\nwidths: [3, 4]\ninner: {depth: 5}\nextra: {a: 1}\n")
    cfg = load_preset(path, Outer, data="d")
    assert cfg == Outer(data="d", steps=20, lr=0.01, widths=(3, 4), inner=Inner(width=8, depth=5), extra={"a": 1})
    assert read_preset(path, Outer) == {
        "steps": 20,
        "lr": 0.01,
        "widths": (3, 4),
        "inner": {"depth": 5},
        "extra": {"a": 1},
    }
    assert load_preset(_write(tmp_path / "empty.yaml", ""), Outer, data="d") == Outer(data="d")


def test_an_unknown_key_names_the_file_the_key_and_the_valid_ones(tmp_path):
    path = _write(tmp_path / "bad.yaml", "steps: 20\nstpes: 3\n")
    with pytest.raises(SettingsError) as e:
        read_preset(path, Outer)
    text = str(e.value)
    assert str(path) in text
    assert "'stpes'" in text
    assert "valid: data, steps, lr, widths, tasks, fast, mode, inner.width, inner.depth, extra" in text
    with pytest.raises(SettingsError, match=r"bad2.yaml: Inner has no setting 'inner.wdth'; valid: width, depth"):
        read_preset(_write(tmp_path / "bad2.yaml", "inner: {wdth: 3}\n"), Outer)
    with pytest.raises(SettingsError, match=r"no setting 'depth' \(did you mean 'inner.depth'\?\)"):
        read_preset(_write(tmp_path / "bad3.yaml", "depth: 3\n"), Outer)


def test_wrong_types_and_derived_settings_are_refused(tmp_path):
    with pytest.raises(SettingsError, match=r"lr = '1e-3': expected float \(YAML reads 1e-3 as text"):
        read_preset(_write(tmp_path / "a.yaml", "lr: 1e-3\n"), Outer)  # YAML 1.1: a string
    with pytest.raises(SettingsError, match=r"steps = 'many': expected int"):
        read_preset(_write(tmp_path / "b.yaml", "steps: many\n"), Outer)
    with pytest.raises(SettingsError, match=r"'inner.size' cannot be set: it is taken from the data"):
        read_preset(_write(tmp_path / "c.yaml", "inner: {size: 32}\n"), Outer)
    with pytest.raises(SettingsError, match=r"'inner' must be a mapping of settings, not int"):
        read_preset(_write(tmp_path / "d.yaml", "inner: 3\n"), Outer)
    with pytest.raises(SettingsError, match="a preset is a mapping of settings, not list"):
        read_preset(_write(tmp_path / "e.yaml", "- 1\n"), Outer)
    with pytest.raises(SettingsError, match="no such preset file"):
        read_preset(tmp_path / "missing.yaml", Outer)
    assert check_settings(Outer, {"lr": 1, "widths": [5]}) == {"lr": 1, "widths": (5,)}  # an int is a float


def test_a_nested_group_can_be_another_yaml_file(tmp_path):
    (tmp_path / "parts").mkdir()
    _write(tmp_path / "parts" / "inner.yaml", "width: 32\n")
    path = _write(tmp_path / "p.yaml", "inner: parts/inner.yaml\n")
    assert load_preset(path, Outer, data="d").inner == Inner(width=32)
    _write(tmp_path / "parts" / "bad.yaml", "wide: 32\n")
    with pytest.raises(SettingsError, match=r"parts/bad.yaml: Inner has no setting 'inner.wide'"):
        read_preset(_write(tmp_path / "q.yaml", "inner: parts/bad.yaml\n"), Outer)


def test_cli_flags_override_the_preset_which_overrides_the_defaults(tmp_path, capsys):
    path = _write(tmp_path / "p.yaml", "steps: 20\nlr: 0.01\ninner: {depth: 5}\nfast: true\n")
    assert cli(Outer, ["--data", "d"]) == Outer(data="d")
    cfg = cli(Outer, ["--data", "d", "--preset", str(path), "--steps", "30", "--inner.depth", "6", "--old-mode", "b"])
    assert cfg == Outer(data="d", steps=30, lr=0.01, fast=True, mode="b", inner=Inner(depth=6))
    assert cli(Outer, [f"--preset={path}", "--data", "d", "--no-fast", "--tasks", "x", "y"]).fast is False
    with pytest.raises(SystemExit) as e:
        cli(Outer, ["--preset", str(path)])  # the required field is still required
    assert e.value.code == 2
    with pytest.raises(SystemExit) as e:
        cli(Outer, ["--data", "d", "--preset", str(_write(tmp_path / "bad.yaml", "stpes: 1\n"))], prog="t")
    assert e.value.code == 2
    assert "no setting 'stpes'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli(Outer, ["--help"], prog="t", description="A test.")
    out = capsys.readouterr().out
    assert "--preset FILE.yaml" in out
    assert "--size" not in out  # derived: no flag
    assert "--extra" not in out  # presets only


def test_build_merges_a_nested_mapping_onto_the_fields_default():
    cfg = build(Outer, {"data": "d", "inner": {"width": 1}})
    assert cfg.inner == Inner(width=1, depth=2)
    assert build(Outer, {"data": "d", "inner": Inner(depth=9)}).inner == Inner(depth=9)


@pytest.mark.parametrize(
    "argv",
    [
        ["--data", "d", "--tasks", "x", "--tasks=y"],  # would keep only y
        ["--data", "d", "--widths", "1", "--widths", "2"],
    ],
)
def test_a_list_given_with_two_flags_is_refused_not_silently_cut(argv, capsys):
    with pytest.raises(SystemExit) as e:
        cli(Outer, argv, prog="t")
    assert e.value.code == 2
    assert "a list takes all its values after one flag" in capsys.readouterr().err


def test_a_repeated_single_valued_flag_keeps_the_last_as_argparse_does():
    assert cli(Outer, ["--data", "d", "--old-mode", "a", "--mode", "b", "--steps", "1", "--steps", "2"]) == Outer(
        data="d", mode="b", steps=2
    )
