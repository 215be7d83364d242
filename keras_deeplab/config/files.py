"""Reading configs: a preset or YAML/JSON file plus `--set` overrides.

Precedence: field defaults < named preset < YAML/JSON file < `--set k=v`.
Values are coerced to the field's declared type; an unknown key is an error
that suggests the closest valid names.
"""

import difflib
import typing
from pathlib import Path

import yaml

from keras_deeplab.config.fields import DeepLabConfig
from keras_deeplab.config.presets import PRESETS
from keras_deeplab.spec import (
    field_type,
    item_type,
    literal_values,
    member_types,
)
from keras_deeplab.utils.atomic import atomic_write_text
from keras_deeplab.utils.errors import UserInputError

_MAX_CONFIG_BYTES = 1_000_000
# Resolved once: field name -> declared type (annotations are real types).
_FIELD_TYPES = typing.get_type_hints(DeepLabConfig)


def _unknown_key_error(key, source):
    close = difflib.get_close_matches(key, _FIELD_TYPES, n=3)
    hint = f" Did you mean {', '.join(close)}?" if close else ""
    return UserInputError(f"unknown config key {key!r} in {source}.{hint}")


class _BoundedLoader(yaml.SafeLoader):
    """SafeLoader without anchors and aliases: a config never needs them,
    and a few nested aliases expand exponentially ("billion laughs")."""

    def compose_node(self, parent, index):
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            raise yaml.composer.ComposerError(
                None,
                None,
                "YAML aliases (*name) are not allowed in a config",
                event.start_mark,
            )
        return super().compose_node(parent, index)


def _yaml(text):
    return yaml.load(text, Loader=_BoundedLoader)  # noqa: S506 - safe subclass


def _parse_text(text, base):
    """A value typed on the command line or in a file as a string."""
    if base in (int, float):
        try:
            # Python's parser: YAML 1.1 would read "3e-3" as a string.
            return base(text)
        except ValueError:
            pass
    try:
        return _yaml(text)  # "true" -> True, "[6, 12]" -> [6, 12]
    except (yaml.YAMLError, RecursionError):
        return text  # left as typed; the type check names the field


def _convert(value, base, *, key, source):
    """`value` as a `base` (int, float, bool, str), or a UserInputError."""
    if isinstance(value, str) and base is not str:
        value = _parse_text(value, base)
    if base is int and isinstance(value, float) and value.is_integer():
        return int(value)
    if base is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, base) and (
        base is bool or not isinstance(value, bool)
    ):
        return value
    raise UserInputError(
        f"{key}={value!r} has the wrong type (in {source}); expected "
        f"{'a list' if base is tuple else base.__name__}."
    )


def _coerce(key, value, source):
    """Converts a YAML/JSON/CLI value to the field's declared type; the
    items of a `tuple[X, ...]` field to X ("1e-9" in a YAML list is a
    string to YAML 1.1, a float here)."""
    annotation = _FIELD_TYPES[key]
    if isinstance(value, str) and value in literal_values(annotation):
        return value  # e.g. class_weights: auto
    base, optional = field_type(annotation)
    if value is None or (optional and value in ("none", "None", "null")):
        if not optional:
            raise UserInputError(f"{key} in {source} cannot be None.")
        return None
    if base is not tuple:
        return _convert(value, base, key=key, source=source)
    if isinstance(value, str):
        parsed = _parse_text(value, tuple)
        if not isinstance(parsed, list) and str in member_types(annotation):
            return value  # e.g. mask_colors: a palette file
        value = parsed
    return _tuple(value, item_type(annotation), key=key, source=source)


def _tuple(value, items, *, key, source):
    """A list as a tuple of `items` (itself maybe `tuple[X, ...]`)."""
    if not isinstance(value, (list, tuple)):
        _convert(value, tuple, key=key, source=source)  # raises
    if items is None:
        return tuple(value)
    if typing.get_origin(items) is tuple:
        inner = typing.get_args(items)[0]
        return tuple(
            _tuple(item, inner, key=key, source=source) for item in value
        )
    return tuple(
        _convert(item, items, key=key, source=source) for item in value
    )


def _merge(values, overrides, source):
    for key, value in overrides.items():
        if key not in _FIELD_TYPES:
            raise _unknown_key_error(key, source)
        values[key] = _coerce(key, value, source)


def parse_overrides(pairs):
    """["a=1", "b=x"] -> {"a": "1", "b": "x"}; values are coerced later."""
    overrides = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise UserInputError(
                f"--set {pair!r} is invalid; expected key=value, e.g. "
                "--set batch_size=8."
            )
        overrides[key.strip()] = value.strip()
    return overrides


def _read_file(path):
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"config file {str(path)!r} does not exist; expected a YAML or "
            f"JSON file or a preset name: {', '.join(PRESETS)}."
        )
    if path.stat().st_size > _MAX_CONFIG_BYTES:
        raise UserInputError(
            f"config file {str(path)!r} is {path.stat().st_size:,} bytes; a "
            f"config is a few hundred (at most {_MAX_CONFIG_BYTES:,})."
        )
    try:
        data = _yaml(path.read_text(encoding="utf-8"))  # YAML covers JSON
    except UnicodeDecodeError as err:
        raise UserInputError(
            f"config file {str(path)!r} is not UTF-8 text; expected a YAML "
            "or JSON file."
        ) from err
    except yaml.YAMLError as err:
        reason = " ".join(str(err).split())
        raise UserInputError(
            f"config file {str(path)!r} is not valid YAML/JSON: {reason}"
        ) from err
    except RecursionError as err:
        raise UserInputError(
            f"config file {str(path)!r} nests its values thousands of levels "
            "deep; a config is one flat mapping of keys to values."
        ) from err
    if not isinstance(data, dict):
        raise UserInputError(
            f"config file {str(path)!r} must hold a mapping of keys to "
            f"values; got {type(data).__name__}."
        )
    return data


def _apply_preset(values, name, source):
    if name not in PRESETS:
        raise UserInputError(
            f"preset={name!r} in {source} is unknown; expected one of "
            f"{tuple(PRESETS)}."
        )
    _merge(values, PRESETS[name], f"preset {name!r}")


def load_config(source: str | None = None, overrides=()) -> DeepLabConfig:
    """Resolves a config from a preset name or file plus `--set` overrides.

    A preset's class names are dropped when a file or `--set` changes
    `num_classes` without naming the classes (they would not fit).

    Args:
        source: None (defaults), a preset name from PRESETS, or a YAML/JSON
            file; a file may name a base preset with the key `preset`.
        overrides: iterable of "key=value" strings, applied last.

    Returns:
        A validated DeepLabConfig.

    Raises:
        FileNotFoundError: if `source` is neither a preset nor a file.
        ValueError: for unknown keys, wrong types or invalid values.
    """
    preset_values, values = {}, {}
    if source is not None and source in PRESETS:
        _apply_preset(preset_values, source, "--config")
    elif source is not None:
        file_values = dict(_read_file(source))
        preset = file_values.pop("preset", None)
        if preset is not None:
            _apply_preset(preset_values, preset, source)
        _merge(values, file_values, f"config file {source}")
    _merge(values, parse_overrides(overrides), "--set")
    if "num_classes" in values and "class_names" not in values:
        preset_values.pop("class_names", None)
    return DeepLabConfig(**{**preset_values, **values})


def save_config(config: DeepLabConfig, path) -> Path:
    """Writes the resolved config as JSON (atomically) and returns the path."""
    return atomic_write_text(Path(path), config.to_json() + "\n")
