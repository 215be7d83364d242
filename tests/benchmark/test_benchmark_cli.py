"""`python -m benchmarks.run` end to end on a tiny model (smoke test)."""

import json
import math

import pytest

from benchmarks.measure import RUNTIMES
from benchmarks.run import main

TINY_RUN = [
    "--size", "49x85", "--backbone-width", "8", "--head-filters", "16",
    "--output-stride", "16", "--backbone", "resnet50", "--batch", "1",
    "--repeats", "1", "--fit-mode", "graph", "--fit-precision", "float32",
    "--fit-size", "65", "--fit-batch", "2", "--fit-steps", "1",
]  # fmt: skip


# One runtime of each kind (in-process Keras, ONNX Runtime and LiteRT
# without TensorFlow, int8, the torchvision peer): each process imports its
# runtime (~10 s), and every artefact's own runner is checked against Keras
# by the export tests (verify_exports).
SMOKE_RUNTIMES = ("keras", "onnxruntime", "litert_fp32", "litert_int8")
SMOKE_RUNTIMES += ("torchvision",)


@pytest.mark.slow
def test_benchmark_cli_measures_each_kind_of_runtime_and_compares(
    tmp_path, capsys
):
    out = tmp_path / "run"
    runtimes = ["--runtime", *SMOKE_RUNTIMES]
    assert main(["--out", str(out), *TINY_RUN, *runtimes]) == 0
    document = json.loads((out / "results.json").read_text())
    records = {
        (r["runtime"], r["batch"]): r
        for r in document["results"]
        if r["kind"] == "inference"
    }
    assert set(records) == {(runtime, 1) for runtime in SMOKE_RUNTIMES}
    assert set(SMOKE_RUNTIMES) <= set(RUNTIMES)
    # Height x width: every runtime (the fixed-size TFLite files too) ran it.
    assert document["plan"]["size"] == "49x85"
    assert {record["size"] for record in records.values()} == {"49x85"}
    # int8 kernels may exceed the fp32 matmul peak: no upper bound here.
    for record in records.values():
        assert record["efficiency"] > 0 and math.isfinite(record["efficiency"])
    # ONNX Runtime and LiteRT run without TensorFlow in their process.
    assert (
        records["litert_fp32", 1]["peak_rss_mb"]
        < records["keras", 1]["peak_rss_mb"] - 200
    )
    (model,) = [r for r in document["results"] if r["kind"] == "model"]
    # Native atrous convolution: TensorFlow runs the layers' MACs, not the
    # larger SpaceToBatch convolutions (+13.5% at OS8 before AtrousConv2D).
    assert model["graph_gmacs"] == pytest.approx(model["gmacs"], rel=0.01)
    fits = {r["kind"]: r for r in document["results"] if "fit" in r["kind"]}
    assert set(fits) == {"fit", "torch_fit"}
    assert all(fit["images_per_s"] > 0 for fit in fits.values())
    report = (out / "results.md").read_text()
    assert "`litert_int8`" in report and "÷ torchvision" in report
    assert "resnet50, 49x85 (median" in report
    assert (out / "latency.png").stat().st_size > 1000

    # Comparing with itself passes; with a twice-as-fast baseline it fails.
    report_only = ["--out", str(out), "--report-only"]
    baseline = out / "results.json"
    assert main([*report_only, "--compare", str(baseline)]) == 0
    faster = json.loads(baseline.read_text())
    for record in faster["results"]:
        if "images_per_s" in record:
            record["images_per_s"] *= 2
    faster_path = tmp_path / "faster.json"
    faster_path.write_text(json.dumps(faster))
    assert main([*report_only, "--compare", str(faster_path)]) == 1
    assert "REGRESSION" in capsys.readouterr().out


def test_benchmark_cli_rejects_bad_input(tmp_path, capsys):
    out = str(tmp_path / "run")
    assert main(["--out", out, "--repeats", "0"]) == 2
    assert "repeats=0 must be a positive integer" in capsys.readouterr().err
    assert main(["--out", out, "--size", "65x0"]) == 2
    assert "--size '65x0' is invalid" in capsys.readouterr().err
    assert main(["--out", out, "--report-only"]) == 2
    assert "results.json" in capsys.readouterr().err


@pytest.mark.slow
def test_benchmark_measures_deeplabv3plus(tmp_path):
    out = tmp_path / "plus"
    argv = ["--out", str(out), *TINY_RUN, "--architecture", "deeplabv3plus"]
    argv += ["--runtime", "keras", "--fit-mode", "none"]
    assert main(argv) == 0
    document = json.loads((out / "results.json").read_text())
    assert document["plan"]["architecture"] == "deeplabv3plus"
    kinds = {r["kind"] for r in document["results"]}
    assert kinds == {"model", "inference"}
    assert "Model cost of deeplabv3plus" in (out / "results.md").read_text()
