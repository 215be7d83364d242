"""Benchmark results as markdown tables, a bar chart and a regression check."""

from pathlib import Path

from benchmarks.results import result_key
from keras_deeplab.utils.atomic import atomic_file, atomic_write_text
from keras_deeplab.utils.image_size import height_width

MARKDOWN_FILE = "results.md"
CHART_FILE = "latency.png"
DEFAULT_THRESHOLD = 0.10  # slowdowns above 10% are regressions
PEER = "torchvision"  # the runtime every other one is compared with


def _size_label(size) -> str:
    """Height x width of a plan's input size, e.g. 513x513 or 512x1024."""
    return "x".join(map(str, height_width(size)))


def _records(document, kind):
    return [r for r in document["results"] if r.get("kind") == kind]


def _ok(records):
    return [r for r in records if "error" not in r]


def _row(cells):
    return "| " + " | ".join(str(cell) for cell in cells) + " |"


def _table(header, rows):
    lines = [_row(header), _row(["---"] * len(header))]
    return "\n".join(lines + [_row(row) for row in rows])


def _find(records, **fields):
    matches = [
        r for r in records if all(r.get(k) == v for k, v in fields.items())
    ]
    return matches[0] if matches else None


def _ratio(record, records, peer):
    """This record's batch-1 latency over the peer's, same model and stride."""
    reference = _find(
        _ok(records),
        runtime=peer,
        output_stride=record["output_stride"],
        batch=record["batch"],
    )
    if reference is None:
        return "-"
    return f"{record['median_s'] / reference['median_s']:.2f}x"


def _inference_table(records, backbone):
    records = [r for r in records if r["backbone"] == backbone]
    runtimes = list(dict.fromkeys(r["runtime"] for r in records))
    strides = sorted({r["output_stride"] for r in records})
    batches = sorted({r["batch"] for r in records})
    header = ["runtime"]
    header += [f"OS{s} b1 ms" for s in strides if 1 in batches]
    header += [f"OS{s} b{b} img/s" for b in batches if b > 1 for s in strides]
    header += [f"OS{s} b1 % peak" for s in strides if 1 in batches]
    peer = PEER if any(r["runtime"] == PEER for r in records) else None
    if peer and 1 in batches:
        header += [f"OS{s} b1 ÷ {peer}" for s in strides]
    header += ["peak RSS MB", "file MB", "export s", "export peak MB"]
    rows = []
    for runtime in runtimes:
        mine = [r for r in records if r["runtime"] == runtime]

        def cell(stride, batch, value, mine=mine):
            record = _find(mine, output_stride=stride, batch=batch)
            if record is None:
                return "-"
            if "error" in record:
                return "failed"
            return value(record)

        row = [f"`{runtime}`"]
        if 1 in batches:
            row += [
                cell(s, 1, lambda r: f"{r['median_s'] * 1e3:,.0f}")
                for s in strides
            ]
        row += [
            cell(s, b, lambda r: f"{r['images_per_s']:.2f}")
            for b in batches
            if b > 1
            for s in strides
        ]
        if 1 in batches:
            row += [
                cell(s, 1, lambda r: f"{r['efficiency']:.0%}") for s in strides
            ]
        if peer and 1 in batches:
            row += [
                cell(s, 1, lambda r: _ratio(r, records, peer)) for s in strides
            ]
        measured = _ok(mine)
        row += [
            _largest(measured, field)
            for field in (
                "peak_rss_mb",
                "artefact_mb",
                "export_s",
                "export_peak_mb",
            )
        ]
        rows.append(row)
    return _table(header, rows)


def _largest(records, field) -> str:
    """The largest `field` over one runtime's records (each output stride
    and batch), or "-" where none was recorded."""
    values = [r[field] for r in records if r.get(field)]
    return f"{max(values):,.0f}" if values else "-"


def _model_table(records):
    header = ["backbone", "OS", "params", "GMACs (layers)", "GMACs (TF graph)"]
    rows = [
        [
            r["backbone"],
            r["output_stride"],
            f"{r['params']:,}",
            f"{r['gmacs']:.2f}",
            f"{r['graph_gmacs']:.2f}",
        ]
        for r in records
    ]
    return _table(header, rows)


def _fit_table(records):
    """Keras `model.fit` modes and torchvision's step, with the ratio of
    images/s to torchvision's at the same precision."""
    header = ["trainer", "mode", "precision", "images/s", "× torchvision"]
    header.append("% of fp32 matmul peak")
    peers = {
        r["precision"]: r for r in _ok(records) if r["kind"] == "torch_fit"
    }
    rows = []
    for r in records:
        trainer = "torchvision" if r["kind"] == "torch_fit" else "keras"
        if "error" in r:
            rows.append(
                [trainer, r["mode"], r["precision"], "failed", "-", "-"]
            )
            continue
        peer = peers.get(r["precision"])
        ratio = (
            f"{r['images_per_s'] / peer['images_per_s']:.2f}x" if peer else "-"
        )
        efficiency = f"{r['efficiency']:.0%}" if "efficiency" in r else "-"
        rows.append(
            [
                trainer,
                r["mode"],
                r["precision"],
                f"{r['images_per_s']:.2f}",
                ratio,
                efficiency,
            ]
        )
    return _table(header, rows)


def format_markdown(document) -> str:
    """Machine, model, inference and training tables of one run."""
    machine, plan = document["machine"], document["plan"]
    versions = ", ".join(f"{k} {v}" for k, v in machine["versions"].items())
    parts = [
        f"Machine: {machine['cpu']}, {machine['logical_cpus']} logical CPUs, "
        f"{machine['memory_gib']} GiB; {plan['threads']} threads per runtime; "
        f"fp32 matmul peak {document['matmul']['matmul_gflops']:.0f} GFLOP/s "
        f"(measured in the run). {versions}. Updated {document['updated']}.",
    ]
    if "cpu_flags" in machine:  # runs before 2026-12-07 did not record them
        parts.append(
            f"CPU flags: {' '.join(machine['cpu_flags']) or 'none listed'}; "
            f"TensorFlow oneDNN: {machine['onednn']}."
        )
    models = sorted(
        _records(document, "model"),
        key=lambda r: (r["backbone"], r["output_stride"]),
    )
    # Runs from before DeepLabV3+ measured DeepLabV3 and have no field.
    model = plan.get("architecture", "deeplabv3")
    if models:
        parts.append(
            f"Model cost of {model} ({plan['variant']} layout) at "
            f"{_size_label(plan['size'])}:"
        )
        parts.append(_model_table(models))
    inference = _records(document, "inference")
    for backbone in dict.fromkeys(r["backbone"] for r in inference):
        parts.append(
            f"Inference, {model} {backbone}, {_size_label(plan['size'])} "
            f"(median of {plan['repeats']} after {plan['warmup']} warm-up):"
        )
        parts.append(_inference_table(inference, backbone))
    parts.append(
        "`export s` and `export peak MB`: writing the runtime's artefact in "
        "the harness process (peak resident memory of the whole process "
        "while it ran; not measured for torchvision's peers)."
    )
    if any(r["runtime"] == "litert_int8" for r in inference):
        parts.append(
            "`% peak` is achieved FLOP/s over the fp32 matmul peak; int8 "
            "kernels (AVX-512 VNNI) do up to 4x the operations per "
            "instruction, so `litert_int8` can exceed 100%."
        )
    fits = _records(document, "fit") + _records(document, "torch_fit")
    if fits:
        parts.append(
            f"`model.fit`, OS16, {plan['fit_size']}x{plan['fit_size']}, "
            f"batch {plan['fit_batch']} (efficiency counts 6 FLOPs/MAC):"
        )
        parts.append(_fit_table(fits))
    return "\n\n".join(parts) + "\n"


def save_chart(document, path) -> Path:
    """Batch-1 latency per runtime and output stride, one panel a backbone."""
    import matplotlib

    matplotlib.use("Agg")  # no display needed
    from matplotlib import pyplot

    records = [
        r for r in _ok(_records(document, "inference")) if r["batch"] == 1
    ]
    backbones = list(dict.fromkeys(r["backbone"] for r in records))
    figure, axes = pyplot.subplots(
        1, len(backbones), figsize=(6 * len(backbones), 4), squeeze=False
    )
    for axis, backbone in zip(axes[0], backbones, strict=True):
        mine = [r for r in records if r["backbone"] == backbone]
        runtimes = list(dict.fromkeys(r["runtime"] for r in mine))
        strides = sorted({r["output_stride"] for r in mine})
        width = 0.8 / len(strides)
        for index, stride in enumerate(strides):
            positions, heights = [], []
            for x, runtime in enumerate(runtimes):
                record = _find(mine, runtime=runtime, output_stride=stride)
                if record is not None:
                    positions.append(x + index * width)
                    heights.append(record["median_s"] * 1e3)
            axis.bar(positions, heights, width, label=f"OS{stride}")
        axis.set_xticks(
            [x + 0.4 - width / 2 for x in range(len(runtimes))],
            runtimes,
            rotation=30,
            ha="right",
        )
        size = _size_label(document["plan"]["size"])
        axis.set(ylabel="ms (batch 1, median)", title=f"{backbone} {size}")
        axis.legend()
    figure.suptitle(document["machine"]["cpu"], fontsize=9)
    figure.tight_layout()
    with atomic_file(path) as temporary:
        figure.savefig(temporary, dpi=100, format="png")
    pyplot.close(figure)
    return Path(path)


def write_report(document, out_dir) -> dict:
    """Writes results.md and latency.png beside results.json."""
    out_dir = Path(out_dir)
    markdown = atomic_write_text(
        out_dir / MARKDOWN_FILE, format_markdown(document)
    )
    return {
        "markdown": markdown,
        "chart": save_chart(document, out_dir / CHART_FILE),
    }


def _normalised_cost(record, document):
    """Seconds per image in units of this run's matmul peak (less is better).

    Multiplying by the run's own peak makes runs on a busier or a faster
    machine comparable: a real regression changes the ratio, noise in the
    machine's speed changes both terms.
    """
    peak = record.get("matmul_gflops", document["matmul"]["matmul_gflops"])
    return peak / record["images_per_s"]


def _describe_key(record):
    if record["kind"] in ("fit", "torch_fit"):
        return f"{record['kind']} {record['mode']} {record['precision']}"
    return (
        f"{record['runtime']} {record['backbone']} OS{record['output_stride']}"
        f" b{record['batch']}"
    )


def compare(document, baseline, *, threshold=DEFAULT_THRESHOLD) -> list:
    """Matching measurements of two runs, slowest change first.

    Returns:
        List of dicts: name, baseline and current images/s, slowdown (0.25
        means 25% slower after normalising by each run's matmul peak) and
        regression (slowdown > threshold).
    """
    base = {
        result_key(r): r
        for r in _ok(baseline["results"])
        if "images_per_s" in r
    }
    rows = []
    for record in _ok(document["results"]):
        previous = base.get(result_key(record))
        if previous is None or "images_per_s" not in record:
            continue
        slowdown = (
            _normalised_cost(record, document)
            / _normalised_cost(previous, baseline)
            - 1
        )
        rows.append(
            {
                "name": _describe_key(record),
                "baseline_images_per_s": previous["images_per_s"],
                "images_per_s": record["images_per_s"],
                "slowdown": slowdown,
                "regression": slowdown > threshold,
            }
        )
    return sorted(rows, key=lambda row: -row["slowdown"])


def format_comparison(rows) -> str:
    return "\n".join(
        f"{'REGRESSION' if row['regression'] else 'ok':>10}  "
        f"{row['name']:<40} {row['baseline_images_per_s']:8.3f} -> "
        f"{row['images_per_s']:8.3f} images/s ({row['slowdown']:+.1%} "
        "normalised cost)"
        for row in rows
    )
