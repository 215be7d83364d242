"""Package attributes imported on first use, so importing a package (and
the CLI's `--help`) does not load TensorFlow."""

import importlib


def lazy_attributes(package: str, sources: dict):
    """A module-level `__getattr__` for `package`: each name in `sources`
    is imported from the module `sources[name]` when first asked for."""

    def __getattr__(name):  # noqa: N807 - the module hook's name
        if name in sources:
            return getattr(importlib.import_module(sources[name]), name)
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    return __getattr__
