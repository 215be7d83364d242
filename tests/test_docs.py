"""The docs cannot drift from the code.

Every `keras-deeplab ...` and `python -m ...` command in a fenced block of
README.md, docs/, export/*.md and the notebooks' markdown parses with the
real parser, in today's spellings; every `keras_deeplab.*` (or `kd.*`) name
they mention resolves; the paths they say commands write are the paths the
code writes; and statements found wrong once stay out.
"""

import importlib
import json
import re
import shlex
from pathlib import Path

import pytest

from keras_deeplab.cli.parser import build_parser
from keras_deeplab.export.layout import (
    LEGACY_QUANTIZE,
    saved_model_dir,
    serving_model_base,
)

ROOT = Path(__file__).resolve().parents[1]
DOCS = [
    ROOT / "README.md",
    *sorted((ROOT / "docs").glob("*.md")),
    *sorted((ROOT / "export").glob("*.md")),
]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
_FENCE = re.compile(r"^```[^\n]*\n(.*?)^```", re.M | re.S)
_ENV_PREFIX = re.compile(r"^(?:[A-Z_]+=\S+\s+)+")
_PROGRAMS = {
    "keras-deeplab": "cli",
    ".venv/bin/keras-deeplab": "cli",
    "python -m keras_deeplab": "cli",
    "python -m benchmarks.run": "benchmarks",
}
# Spellings of releases <= 0.2 that still parse but are no longer taught.
_RETIRED_FLAGS = ("--weights", "--data")
# Statements that were wrong once (issue 23); each is either false or a
# number that belongs to a benchmark run, not to prose.
_RETIRED_CLAIMS = {
    "models/deeplab/1": "the SavedModel lives under <out>/serving/",
    "$PWD/models/deeplab:": "mount <out>/serving/<model_name>",
    "keras_deeplab.benchmark": "the harness is the repository's benchmarks/",
    "halves latency": "bf16 speed is in the benchmark's results",
    "about 4x": "int8 speed is in the benchmark's results",
    "0.7x PyTorch": "no such row in the benchmark",
    "XLA does not help": "no run measured it for training",
    "trains ~2x faster": "mixed_bfloat16 CPU training is in the results",
    "~6 in mixed_bfloat16": "mixed_bfloat16 CPU training is in the results",
    "~2e-6 of the logit range": "CI asserts 1e-4; measured values in docs",
    "12 minutes": "the demo's time is stated once, in docs/training.md",
    "15 minutes on 2": "the demo's time is stated once, in docs/training.md",
    "target is >= 25%": "an internal target, not a user fact",
    "No GPU was lent": "a development note",
}


def _markdown(path):
    if path.suffix == ".ipynb":
        cells = json.loads(path.read_text())["cells"]
        return "\n".join(
            "".join(cell["source"])
            for cell in cells
            if cell["cell_type"] == "markdown"
        )
    return path.read_text()


def _command_lines():
    """(file, program, argv) of every documented command line."""
    for path in [*DOCS, *NOTEBOOKS]:
        for block in _FENCE.findall(_markdown(path)):
            block = block.replace("\\\n", " ")
            for line in block.splitlines():
                line = _ENV_PREFIX.sub("", line.split(" # ")[0].strip())
                line = line.replace("python3 -m", "python -m")
                for program, kind in _PROGRAMS.items():
                    if line.startswith(program + " "):
                        argv = shlex.split(line[len(program) :], comments=True)
                        yield path.name, kind, argv


def _benchmarks_parser():
    from benchmarks.run import _parser

    return _parser()


def test_the_docs_show_commands():
    kinds = {kind for _, kind, _ in _command_lines()}
    assert kinds == {"cli", "benchmarks"}


@pytest.mark.parametrize(
    ("where", "kind", "argv"),
    list(_command_lines()),
    ids=lambda value: " ".join(value) if isinstance(value, list) else value,
)
def test_every_documented_command_parses_in_todays_spelling(where, kind, argv):
    parser = build_parser() if kind == "cli" else _benchmarks_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as err:
        pytest.fail(f"{where}: {' '.join(argv)} does not parse ({err})")
    if kind == "cli":
        retired = [flag for flag in _RETIRED_FLAGS if flag in argv]
        retired += [
            name
            for name in ("config_positional", "model_positional")
            if getattr(args, name, None) is not None
        ]
        if getattr(args, "quantize", None) in LEGACY_QUANTIZE:
            retired.append(f"--quantize {args.quantize}")
        assert not retired, f"{where}: {' '.join(argv)} uses {retired}"


_NAME = re.compile(r"\b(?:keras_deeplab|kd|benchmarks)(?:\.[A-Za-z_]\w*)+")
# `derived.with_precision`: a name relative to the package, in backticks.
_SUBMODULES = sorted(
    path.stem if path.is_file() else path.name
    for path in (ROOT / "keras_deeplab").iterdir()
    if path.suffix == ".py" or (path / "__init__.py").is_file()
)
_RELATIVE = re.compile(
    rf"`((?:{'|'.join(_SUBMODULES)})(?:\.[A-Za-z_]\w*)+)[`(]"
)


def _resolves(dotted):
    parts = dotted.replace("kd.", "keras_deeplab.", 1).split(".")
    for split in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:split]))
        except ImportError:
            continue
        try:
            for attribute in parts[split:]:
                obj = getattr(obj, attribute)
        except AttributeError:
            return False
        return True
    return False


def _named(text):
    names = set(_NAME.findall(text))
    names |= {f"keras_deeplab.{name}" for name in _RELATIVE.findall(text)}
    files = (".py", ".md", ".json", ".config", ".sh", ".yaml", ".txt")
    return {n for n in names if not n.endswith(files)}


def test_every_named_module_and_attribute_exists():
    named = {
        name: path.name
        for path in [*DOCS, *NOTEBOOKS]
        for name in _named(_markdown(path))
    }
    assert len(named) >= 30  # the docs do name the API
    missing = sorted(
        f"{where}: {name}"
        for name, where in named.items()
        if not _resolves(name)
    )
    assert not missing, "\n".join(missing)


def test_documented_export_paths_are_the_written_ones():
    guide = (ROOT / "export" / "README.md").read_text()
    assert f"-> {saved_model_dir('models')}/" in guide
    assert f'-v "$PWD/{serving_model_base("models")}:/models/deeplab"' in guide
    export_doc = (ROOT / "docs" / "export.md").read_text()
    assert "<out>/serving/<model_name>/<version>/" in export_doc


def test_documented_demo_outputs_are_the_written_ones():
    from keras_deeplab.cli import demo
    from keras_deeplab.training import workdir

    readme = (ROOT / "README.md").read_text()
    training = (ROOT / "docs" / "training.md").read_text()
    for name in (demo.OVERLAYS, demo.CURVES):
        assert f"`{name}`" in readme and f"`{name}`" in training
    assert f"`{demo.EXPORT_DIR}/`" in training
    assert f"`{demo.METRICS}`" in training
    assert f"`{demo.TRAIN_DIR}/`" in training
    for name in (workdir.BEST_MODEL, workdir.HISTORY_FILE, workdir.BEST_RECORD):
        assert f"`{name}`" in training


def test_no_retired_statement_comes_back():
    found = [
        f"{path.name}: {claim!r} ({reason})"
        for path in [*DOCS, *NOTEBOOKS]
        for claim, reason in _RETIRED_CLAIMS.items()
        if claim in _markdown(path)
    ]
    assert not found, "\n".join(found)


# ---- paths, groups, lists, the layer drawing and quoted numbers -------------

_PATH = re.compile(
    r"\b((?:keras_deeplab|tests|benchmarks|notebooks)/[\w./-]*\w)"
)


def test_every_named_repository_path_exists():
    """Paths in prose and tables (a command's output folder, in a fenced
    block, is made by the command)."""
    missing = sorted(
        f"{path.name}: {named}"
        for path in [*DOCS, *NOTEBOOKS]
        for named in _PATH.findall(_FENCE.sub("", _markdown(path)))
        if "<" not in named and not (ROOT / named).exists()
    )
    assert not missing, "\n".join(missing)


# "`module` (`a`, `b`, ...)": names listed in parentheses after a module.
_GROUP = re.compile(r"`([\w.]+)` \(((?:`[\w.]+`(?:, )?)+)\)")


def _groups(text):
    for module, names in _GROUP.findall(text):
        yield module, re.findall(r"`([\w.]+)`", names)


def test_every_module_group_resolves():
    wrong = []
    for path in [*DOCS, *NOTEBOOKS]:
        for module, names in _groups(_markdown(path)):
            base = module if module.startswith("keras_deeplab") else None
            if base is None and module.split(".")[0] in _SUBMODULES:
                base = f"keras_deeplab.{module}"
            if base is None or not _resolves(base):
                continue  # not a module of ours (a tool, a flag, a file)
            wrong += [
                f"{path.name}: {module} ({name})"
                for name in names
                if not _resolves(f"{base}.{name}")
            ]
    assert not wrong, "\n".join(wrong)


def test_every_preset_and_architecture_is_listed_where_they_are_listed():
    from keras_deeplab.config import PRESETS
    from keras_deeplab.pretrained import MODEL_PRESETS
    from keras_deeplab.spec import ARCHITECTURES

    pages = {
        "README.md": (*PRESETS, *ARCHITECTURES),
        "docs/pretrained.md": tuple(MODEL_PRESETS),
        "docs/training.md": (*PRESETS, *ARCHITECTURES),
    }
    missing = [
        f"{page}: {name}"
        for page, names in pages.items()
        for name in names
        if f"`{name}`" not in (ROOT / page).read_text()
    ]
    assert not missing, "\n".join(missing)


def _drawn_layers(text):
    block = text.split("## Layering", 1)[1]
    drawing = _FENCE.search(block).group(1)
    return [
        tuple(name.strip() for name in line[:26].split(","))
        for line in drawing.splitlines()
        if line.strip()
    ]


def test_the_layer_drawing_is_the_checked_one():
    from tests.test_layering import LAYERS

    text = (ROOT / "docs" / "development.md").read_text()
    assert _drawn_layers(text) == [tuple(names) for names in LAYERS]


_LINKED_RUN = re.compile(r"\(\.\./(benchmarks/results/[\w.-]+)/results\.md\)")
_NUMBER_CELL = re.compile(r"^\**([\d,]+)\**$")


def _numbers(cells):
    found = set()
    for cell in cells:
        cell = re.sub(r"\[[^\]]*\]\([^)]*\)", "", cell).strip()
        match = _NUMBER_CELL.match(cell)
        if match:
            found.add(match.group(1).replace(",", ""))
        found |= set(re.findall(r"(\d+) ms\b", cell))
        found |= set(re.findall(r"(\d+) / \d+ ms", cell))
    return found


def _quoted_runs(text):
    """(row, results dir, the milliseconds it quotes) of each table row that
    links a benchmark run's results.md."""
    for line in text.splitlines():
        runs = _LINKED_RUN.findall(line)
        if line.startswith("|") and len(set(runs)) == 1:
            yield line, runs[0], _numbers(line.strip("|").split("|"))


def test_quoted_benchmark_numbers_come_from_their_run():
    """Every millisecond figure a table row of docs/performance.md quotes
    appears in the results.md of the run that row links."""
    text = (ROOT / "docs" / "performance.md").read_text()
    rows = list(_quoted_runs(text))
    assert len(rows) >= 10
    wrong = []
    for line, run, numbers in rows:
        results = (ROOT / run / "results.md").read_text()
        cells = {
            cell.strip().replace(",", "")
            for row in results.splitlines()
            for cell in row.split("|")
        }
        wrong += [f"{n} ({run}): {line[:60]}" for n in numbers - cells]
    assert not wrong, "\n".join(wrong)


def test_quoted_interleaved_ratios_come_from_their_run():
    text = (ROOT / "docs" / "performance.md").read_text()
    linked = re.findall(
        r"\| ([\d.]+)x \| \[json\]\(\.\./(benchmarks/results/[\w./-]+\.json)\)",
        text,
    )
    assert len(linked) >= 4
    for ratio, run in linked:
        timings = json.loads((ROOT / run).read_text())["timings"]
        ours = timings["keras"]["median_s"] / timings["torchvision"]["median_s"]
        assert f"{ours:.2f}" == ratio, (run, ours, ratio)


def test_quoted_raster_numbers_come_from_their_run():
    """docs/rasters.md's benchmark rows: megapixels per second, memory
    added by the run, and seconds per km² at 0.3 m per pixel, each as the
    linked run measured it."""
    text = (ROOT / "docs" / "rasters.md").read_text()
    rows = re.findall(
        r"\| ([\d.]+) \| ([\d,]+) MB \| ([\d,]+) s \| "
        r"\[json\]\(\.\./(benchmarks/results/[\w./-]+\.json)\)",
        text,
    )
    assert len(rows) >= 4
    for rate, added, per_km2, run in rows:
        result = json.loads((ROOT / run).read_text())
        growth = result["peak_rss_mb"] - result["peak_rss_before_mb"]
        megapixels_per_km2 = (1000 / 0.3) ** 2 / 1e6
        assert f"{result['megapixels_per_s']:.2f}" == rate, run
        assert f"{growth:,.0f}" == added, run
        assert f"{megapixels_per_km2 / result['megapixels_per_s']:,.0f}" == (
            per_km2
        ), run


def test_quoted_engine_numbers_come_from_their_run():
    """docs/scale.md's benchmark rows: images per second (whole run and
    once running), time against one process and peak memory, each as the
    linked run measured it."""
    text = (ROOT / "docs" / "scale.md").read_text()
    rows = re.findall(
        r"\| (\w+) \| ([\d.]+) \| ([\d.]+) \| ([\d.]+)x \| ([\d,]+) MB \| "
        r"([\d, ]+ MB|-) \| "
        r"\[json\]\(\.\./(benchmarks/results/[\w./-]+\.json)\)",
        text,
    )
    assert len(rows) >= 6
    for way, rate, steady, ratio, driver, workers, run in rows:
        result = json.loads((ROOT / run).read_text())["results"][way]
        assert f"{result['images_per_s']:.2f}" == rate, (run, way)
        assert f"{result['steady_images_per_s']:.2f}" == steady, (run, way)
        assert f"{result['time_vs_one_process']:.2f}" == ratio, (run, way)
        assert f"{result['driver_peak_mb']:,}" == driver, (run, way)
        peaks = ", ".join(f"{mb:,}" for mb in result["worker_peak_mb"])
        assert (f"{peaks} MB" if peaks else "-") == workers, (run, way)
