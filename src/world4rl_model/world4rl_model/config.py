"""Settings: each one is declared once, as a typed field of a config dataclass with its help.

The CLIs and the presets are generated from those declarations:

- help is the field's `# comment` on its line, or the docstring under it (tyro reads both);
- `cli(Config, argv)` builds the command line with tyro: one flag per field, underscores as hyphens
  (`num_envs` -> `--num-envs`), booleans as `--x/--no-x`, `None` as the word None, lists as
  space-separated values (`--tasks push drawer`), nested dataclasses as groups (`--group.field`);
  `--preset FILE.yaml` first loads a preset, and the flags given with it override it;
- a preset is a YAML mapping of field names to values (a nested mapping for a nested dataclass):
  `load_preset(path, Config)` reads one into the dataclass, `read_preset` returns the checked
  mapping, and `check_settings` checks any mapping of settings (coverage's `--bc-set KEY=VALUE`s)
  the same way: unknown names, values of the wrong type and settings the program derives itself
  are refused with the file and the name.

The modules that declare settings do not import tyro (the policy runtime on the robot imports
PolicyConfig): what a CLI should do with a field beyond the defaults is said in its metadata,
`field(..., metadata=meta(...))`:

    positional   a positional argument (`metavar` names it in the usage line)
    aliases      other flag spellings (the ones users and docs already use)
    derived      why the program sets it itself (e.g. "taken from the dataset"): no flag, refused in presets
    cli=False    a setting for presets and Python only (no flag), e.g. free-form dicts
    flat         a nested dataclass whose flags carry no "name." prefix
    overrides    "module:Class": a (partial) mapping of that class's settings, checked against it
    overrides_by_key  a mapping of names (e.g. tasks) to such mappings
    append       a list given by repeating its flag (`--task a --task b`), as well as `--tasks a b`
    preset=False a setting of the command line only (e.g. which tasks to run): refused in presets

In a preset, a nested group (a nested dataclass or an `overrides` mapping) may also be the name of
another YAML file, relative to the file that names it: one recipe, several presets.

Plain Python + PyYAML + tyro, no ROS; yaml, typeguard and tyro are imported only when used.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import types
import typing
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")
_MISSING: Any = dataclasses.MISSING


class SettingsError(ValueError):
    """A preset or a set of settings that does not fit its config dataclass."""


def meta(
    *,
    positional: bool = False,
    metavar: str | None = None,
    aliases: Sequence[str] = (),
    derived: str | None = None,
    cli: bool = True,
    flat: bool = False,
    overrides: str | None = None,
    overrides_by_key: str | None = None,
    append: bool = False,
    preset: bool = True,
) -> dict[str, Any]:
    """A field's CLI and preset metadata (see the module's docstring):
    `x: int = field(default=1, metadata=meta(aliases=("--old-x",)))`."""
    metadata: dict[str, Any] = {}
    if positional:
        metadata["positional"] = True
    if metavar:
        metadata["metavar"] = metavar
    if aliases:
        metadata["aliases"] = tuple(aliases)
    if derived:
        metadata["derived"] = derived
    if not cli:
        metadata["cli"] = False
    if flat:
        metadata["flat"] = True
    if overrides:
        metadata["overrides"] = overrides
    if overrides_by_key:
        metadata["overrides_by_key"] = overrides_by_key
    if append:
        metadata["append"] = True
    if not preset:
        metadata["preset"] = False
    return metadata


def on_cli(f: dataclasses.Field) -> bool:
    """Whether a field is a command-line flag (or positional) of the generated CLIs."""
    return f.init and f.metadata.get("cli", True) and not f.metadata.get("derived")


# ---------------------------------------------------------------------------------- checking


def _hints(config_cls: type) -> dict[str, Any]:
    return typing.get_type_hints(config_cls)


def _settings_class(path: str) -> type:
    module, _, name = path.partition(":")
    return getattr(importlib.import_module(module), name)


def _nested_class(hint: Any) -> type | None:
    return hint if isinstance(hint, type) and dataclasses.is_dataclass(hint) else None


def setting_names(config_cls: type, prefix: str = "") -> list[str]:
    """Every setting a preset may hold, nested ones dotted (policy.hidden_dim)."""
    hints, names = _hints(config_cls), []
    for f in dataclasses.fields(config_cls):
        if not f.init or f.metadata.get("derived"):
            continue
        nested = _nested_class(hints[f.name])
        if nested is not None:
            names += setting_names(nested, f"{prefix}{f.name}.")
        else:
            names.append(prefix + f.name)
    return names


def _unknown(config_cls: type, key: str, name: str, source: str) -> SettingsError:
    hints = _hints(config_cls)
    near = [
        f"{f.name}.{key}"
        for f in dataclasses.fields(config_cls)
        if (nested := _nested_class(hints[f.name])) is not None and key in setting_names(nested)
    ]
    hint = f" (did you mean {near[0]!r}?)" if near else ""
    valid = ", ".join(setting_names(config_cls))
    return SettingsError(f"{source}: {config_cls.__name__} has no setting {name!r}{hint}; valid: {valid}")


def _type_name(hint: Any) -> str:
    return getattr(hint, "__name__", None) or str(hint).replace("typing.", "")


def _check_value(value: Any, hint: Any, name: str, source: str) -> Any:
    from typeguard import TypeCheckError, check_type

    args = [a for a in typing.get_args(hint) if a is not type(None)] or [hint]
    if isinstance(value, list) and any(typing.get_origin(a) is tuple for a in [hint, *args]):
        value = tuple(value)  # YAML and JSON have lists only
    try:
        check_type(value, hint)
    except TypeCheckError:
        note = ""
        if isinstance(value, str) and any(a in (float, int) for a in [hint, *args]):
            note = " (YAML reads 1e-3 as text: write 0.001 or 1.0e-3)"
        raise SettingsError(f"{source}: {name} = {value!r}: expected {_type_name(hint)}{note}") from None
    return value


def _resolve_file(value: Any, source: str, base_dir: Path | None) -> tuple[Any, str, Path | None]:
    """A nested group given as the name of another YAML file: (its mapping, its path, its folder)."""
    if isinstance(value, str) and base_dir is not None:
        path = (base_dir / value).resolve()
        return _read_yaml(path), str(path), path.parent
    return value, source, base_dir


def check_settings(
    config_cls: type, data: Any, source: str = "settings", base_dir: Path | None = None, prefix: str = ""
) -> dict[str, Any]:
    """A mapping of (some of) a config dataclass's settings, checked: known names, not derived, the
    field's type (lists become tuples where the field is a tuple), nested groups recursively. Returns
    the checked mapping (nested groups given as file names replaced by their content)."""
    if not isinstance(data, Mapping):
        what = f"{prefix.rstrip('.')!r}" if prefix else config_cls.__name__
        raise SettingsError(f"{source}: {what} must be a mapping of settings, not {type(data).__name__}")
    fields = {f.name: f for f in dataclasses.fields(config_cls) if f.init}
    hints = _hints(config_cls)
    out: dict[str, Any] = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        f = fields.get(key)
        if f is None:
            raise _unknown(config_cls, str(key), name, source)
        if f.metadata.get("derived"):
            raise SettingsError(f"{source}: {name!r} cannot be set: it is {f.metadata['derived']}")
        if f.metadata.get("preset") is False:
            raise SettingsError(f"{source}: {name!r} is given on the command line, not in a preset")
        nested = _nested_class(hints[key])
        if nested is not None or "overrides" in f.metadata:
            value, src, base = _resolve_file(value, source, base_dir)
            cls = nested or _settings_class(f.metadata["overrides"])
            out[key] = check_settings(cls, value, src, base, f"{name}.")
        elif "overrides_by_key" in f.metadata:
            cls = _settings_class(f.metadata["overrides_by_key"])
            if not isinstance(value, Mapping):
                raise SettingsError(f"{source}: {name!r} must be a mapping, not {type(value).__name__}")
            out[key] = {}
            for k, v in value.items():
                v, src, base = _resolve_file(v, source, base_dir)
                out[key][k] = check_settings(cls, v, src, base, f"{name}.{k}.")
        else:
            out[key] = _check_value(value, hints[key], name, source)
    return out


# ---------------------------------------------------------------------------------- building


def _field_default(f: dataclasses.Field, cls: type) -> Any:
    if f.default is not _MISSING:
        return f.default
    if f.default_factory is not _MISSING:
        return f.default_factory()
    return cls()


def _merge(instance: T, values: Mapping[str, Any]) -> T:
    hints = _hints(type(instance))
    changes = {}
    for key, value in values.items():
        current = getattr(instance, key)
        nested = dataclasses.is_dataclass(current) and _nested_class(hints[key]) is not None
        changes[key] = _merge(current, value) if nested and isinstance(value, Mapping) else value
    return dataclasses.replace(instance, **changes)  # type: ignore[type-var]


def build(config_cls: type[T], values: Mapping[str, Any], *, fill_missing: Any = _MISSING) -> T:
    """The config from (checked) settings; a nested dataclass given as a mapping starts from the field's
    default and takes the mapping's settings. Required fields not given get `fill_missing` if set."""
    hints = _hints(config_cls)
    kwargs: dict[str, Any] = {}
    for f in dataclasses.fields(config_cls):
        if not f.init:
            continue
        if f.name in values:
            value = values[f.name]
            nested = _nested_class(hints[f.name])
            if nested is not None and isinstance(value, Mapping):
                value = _merge(_field_default(f, nested), value)
            kwargs[f.name] = value
        elif f.default is _MISSING and f.default_factory is _MISSING and fill_missing is not _MISSING:
            kwargs[f.name] = fill_missing
    return config_cls(**kwargs)


def from_known_fields(config_cls: type[T], values: Mapping[str, Any], unknown_message: str) -> T:
    """`config_cls(**values)`, refusing keys that name no field (a typo must not be silently ignored):
    ValueError(unknown_message.format(unknown=<sorted unknown keys>, known=<sorted field names>))."""
    known = {f.name for f in dataclasses.fields(config_cls)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ValueError(unknown_message.format(unknown=unknown, known=sorted(known)))
    return config_cls(**values)


# ---------------------------------------------------------------------------------- presets


def _read_yaml(path: Path) -> dict[str, Any]:
    import yaml

    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise SettingsError(f"{path}: no such preset file") from None
    except yaml.YAMLError as e:
        raise SettingsError(f"{path}: not valid YAML: {e}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise SettingsError(f"{path}: a preset is a mapping of settings, not {type(data).__name__}")
    return data


def read_preset(path: str | Path, config_cls: type) -> dict[str, Any]:
    """A YAML preset's settings for `config_cls`, checked (see check_settings)."""
    path = Path(path)
    return check_settings(config_cls, _read_yaml(path), str(path), base_dir=path.resolve().parent)


def load_preset(path: str | Path, config_cls: type[T], **values: Any) -> T:
    """The config a YAML preset describes; `values` (e.g. the required paths) are set on top of it."""
    return build(config_cls, {**read_preset(path, config_cls), **values})


# ---------------------------------------------------------------------------------- CLIs


def _markers(f: dataclasses.Field) -> tuple[Any, ...]:
    import tyro

    meta, markers = f.metadata, []
    if not on_cli(f):
        markers.append(tyro.conf.Suppress)
    if meta.get("positional"):
        markers.append(tyro.conf.Positional)
    if meta.get("flat"):
        markers.append(tyro.conf.OmitArgPrefixes)
    if meta.get("append"):
        markers.append(tyro.conf.UseAppendAction)  # (tyro mishandles it on optional lists: required ones only)
    if meta.get("aliases") or meta.get("metavar"):
        markers.append(tyro.conf.arg(aliases=meta.get("aliases"), metavar=meta.get("metavar")))
    return tuple(markers)


def _registry():
    """tyro's dataclass handling, plus what the fields' metadata say (see the module's docstring)."""
    from typing import Annotated

    from tyro.constructors import ConstructorRegistry
    from tyro.constructors._struct_spec_dataclass import dataclass_rule

    registry = ConstructorRegistry()

    @registry.struct_rule
    def _with_metadata(info):
        if not (isinstance(info.type, type) and dataclasses.is_dataclass(info.type)):
            return None
        markers = {f.name: _markers(f) for f in dataclasses.fields(info.type)}
        if not any(markers.values()):
            return None
        spec = dataclass_rule(info)
        fields = tuple(
            dataclasses.replace(s, type=Annotated[(s.type, *markers[s.name])]) if markers.get(s.name) else s
            for s in spec.fields
        )
        return dataclasses.replace(spec, fields=fields)

    return registry


def _is_list(hint: Any) -> bool:
    """list[...] / tuple[...], optional or not."""
    args = typing.get_args(hint) if typing.get_origin(hint) in (typing.Union, types.UnionType) else (hint,)
    return any(typing.get_origin(a) in (list, tuple) or a in (list, tuple) for a in args)


def _list_flags(config_cls: type, prefix: str = "") -> dict[str, str]:
    """Every spelling (aliases too) of every list-valued flag of `config_cls` -> the field's own flag."""
    hints, names = _hints(config_cls), {}
    for f in dataclasses.fields(config_cls):
        if not on_cli(f):
            continue
        nested = _nested_class(hints[f.name])
        if nested is not None:
            names.update(_list_flags(nested, prefix if f.metadata.get("flat") else f"{prefix}{f.name}."))
        elif _is_list(hints[f.name]) and not f.metadata.get("append"):
            own = "--" + (prefix + f.name).replace("_", "-")
            names.update(dict.fromkeys((own, *f.metadata.get("aliases", ())), own))
    return names


def _refuse_repeated_flags(config_cls: type, argv: Sequence[str], parser: argparse.ArgumentParser) -> None:
    """A list given with two flags (`--task a --task b`) would silently keep only the last values.
    (A repeated single-valued flag keeps the last, as argparse does: scripts append overrides.)"""
    names, seen = _list_flags(config_cls), {}
    for token in argv:
        if token == "--":
            break
        own = names.get(token.split("=", 1)[0])
        if own is None:
            continue
        if own in seen:
            parser.error(
                f"{token.split('=', 1)[0]} repeats {seen[own]}: a list takes all its values after one flag "
                "(e.g. --tasks push drawer)"
            )
        seen[own] = token.split("=", 1)[0]


PRESET_HELP = (
    "--preset FILE.yaml starts from a preset: a YAML mapping of these settings (field names with "
    "underscores); the flags given with it override it."
)


def cli(config_cls: type[T], argv: Sequence[str] | None = None, prog: str | None = None, description: str = "") -> T:
    """Parse `argv` into `config_cls` with the CLI tyro generates from it (`--help` lists every field
    with its help and default), after loading `--preset FILE.yaml` if given. Exits like argparse on
    a bad command line (status 2) and on --help (0); a bad preset is a usage error too."""
    import sys

    import tyro

    argv = list(sys.argv[1:] if argv is None else argv)
    pre = argparse.ArgumentParser(prog=prog, add_help=False, allow_abbrev=False)
    pre.add_argument("--preset", type=Path, default=None)
    known, rest = pre.parse_known_args(argv)
    default = None
    if known.preset is not None:
        try:
            default = build(config_cls, read_preset(known.preset, config_cls), fill_missing=tyro.MISSING)
        except (SettingsError, TypeError, ValueError) as e:
            pre.error(f"--preset {known.preset}: {e}")
    _refuse_repeated_flags(config_cls, rest, pre)
    text = f"{description}\n\n{PRESET_HELP}" if description else PRESET_HELP
    return tyro.cli(
        config_cls, args=rest, prog=prog, description=text, default=default, registry=_registry()
    )  # fmt: skip
