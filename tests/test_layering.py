"""Dependencies point one way: no module imports one from a higher layer.

Every `import` and `from ... import` in the package is checked, including
the ones inside functions (a lazy import is still a dependency).
"""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "keras_deeplab"
# Bottom to top, as docs/development.md draws it; a module may import from
# its own layer and the layers below.
LAYERS = [
    ("utils",),
    ("labels", "spec"),
    ("layers", "visualize"),
    ("backbones", "heads"),
    ("models", "config"),
    ("convert",),
    ("pretrained",),
    ("loading",),
    ("data",),
    ("inference",),
    ("evaluation",),
    ("training",),
    ("export",),
    ("cli", "__main__"),
]
RANK = {name: rank for rank, names in enumerate(LAYERS) for name in names}


def _top(module: str) -> str:
    """keras_deeplab.data.pipeline -> data."""
    return module.split(".")[1]


def _imports(path):
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            yield node.module
        elif isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)


def _project_modules():
    for path in sorted(PACKAGE.rglob("*.py")):
        relative = path.relative_to(PACKAGE.parent).with_suffix("")
        module = ".".join(relative.parts)
        if module != "keras_deeplab.__init__":
            yield module.removesuffix(".__init__"), path


def test_every_module_has_a_layer():
    tops = {_top(module) for module, _ in _project_modules()}
    assert tops <= set(RANK), tops - set(RANK)


def test_no_import_points_up():
    backward = []
    for module, path in _project_modules():
        for imported in _imports(path):
            if not imported.startswith("keras_deeplab."):
                continue
            if RANK[_top(imported)] > RANK[_top(module)]:
                backward.append(f"{module} imports {imported}")
    assert not backward, "\n".join(backward)
