"""Benchmark reporting and --compare on hand-made result documents."""

import copy
import json

import pytest

from benchmarks.report import (
    compare,
    format_markdown,
    save_chart,
)
from benchmarks.results import ResultsFile, result_key
from benchmarks.suite import BenchmarkPlan, validate_plan
from keras_deeplab.utils.errors import UserInputError
from keras_deeplab.utils.memory import peak_rss_mb
from keras_deeplab.utils.timing import time_calls


def _inference(runtime, output_stride, median_s, batch=1):
    return {
        "kind": "inference",
        "backbone": "resnet50",
        "output_stride": output_stride,
        "runtime": runtime,
        "batch": batch,
        "size": 513,
        "median_s": median_s,
        "min_s": median_s,
        "images_per_s": batch / median_s,
        "efficiency": 0.5,
        "peak_rss_mb": 700.0,
        "artefact_mb": 160.0,
        "gmacs": 165.8,
    }


def _document(peak_gflops=200.0, scale=1.0):
    results = [
        _inference("keras", 8, 2.0 * scale),
        _inference("keras", 16, 0.7 * scale),
        {
            **_inference("onnxruntime", 8, 2.2 * scale),
            "export_s": 61.4,
            "export_peak_mb": 3150,
        },
        {**_inference("litert_int8", 8, 1.0), "error": "exit 1: boom"},
        {
            "kind": "fit",
            "mode": "graph",
            "precision": "float32",
            "size": 321,
            "batch": 4,
            "images_per_s": 0.4 / scale,
            "efficiency": 0.3,
            "gmacs": 18.0,
        },
    ]
    for record in results:
        record["matmul_gflops"] = peak_gflops
    return {
        "machine": {
            "cpu": "Test CPU",
            "logical_cpus": 2,
            "memory_gib": 24.0,
            "versions": {"keras": "3"},
        },
        "plan": {
            "size": 513,
            "threads": 2,
            "repeats": 3,
            "warmup": 1,
            "fit_size": 321,
            "fit_batch": 4,
        },
        "matmul": {"matmul_gflops": peak_gflops},
        "updated": "2026-11-26T00:00:00",
        "results": results,
    }


def test_compare_flags_a_slowdown_over_the_threshold():
    baseline = _document()
    current = copy.deepcopy(baseline)
    current["results"][1]["images_per_s"] /= 1.2  # keras OS16 20% slower
    rows = compare(current, baseline, threshold=0.10)
    flagged = [row["name"] for row in rows if row["regression"]]
    assert flagged == ["keras resnet50 OS16 b1"]
    assert rows[0]["slowdown"] == pytest.approx(0.2)
    # The failed measurement is not compared, the fit one is.
    assert len(rows) == 4


def test_compare_normalises_by_each_runs_matmul_peak():
    # A machine half as fast takes twice as long: not a regression.
    slower_machine = _document(peak_gflops=100.0, scale=2.0)
    rows = compare(slower_machine, _document(), threshold=0.10)
    assert all(row["slowdown"] == pytest.approx(0.0) for row in rows)
    assert not any(row["regression"] for row in rows)


def test_markdown_has_one_row_per_runtime_and_marks_failures():
    markdown = format_markdown(_document())
    assert "fp32 matmul peak 200 GFLOP/s" in markdown
    keras_row = next(x for x in markdown.splitlines() if "`keras`" in x)
    # OS8 and OS16 batch-1 latency in ms, then efficiency per stride.
    assert keras_row.startswith("| `keras` | 2,000 | 700 |")
    int8_row = next(x for x in markdown.splitlines() if "litert_int8" in x)
    assert "failed" in int8_row
    # Peak RSS, file MB, export seconds and the export's peak memory.
    assert keras_row.endswith("| 700 | 160 | - | - |")
    onnx_row = next(x for x in markdown.splitlines() if "`onnxruntime`" in x)
    assert onnx_row.endswith("| 700 | 160 | 61 | 3,150 |")
    assert "| keras | graph | float32 | 0.40 | - | 30% |" in markdown


def test_chart_is_a_png(tmp_path):
    path = save_chart(_document(), tmp_path / "latency.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_results_file_refuses_to_overwrite_and_resumes(tmp_path):
    path = tmp_path / "results.json"
    plan = BenchmarkPlan()
    results = ResultsFile(path, plan=plan, resume=False)
    results.document["matmul"] = {"matmul_gflops": 150.0}
    record = _inference("keras", 8, 2.0)
    results.add(record)
    with pytest.raises(FileExistsError, match="--resume"):
        ResultsFile(path, plan=plan, resume=False)
    resumed = ResultsFile(path, plan=plan, resume=True)
    assert result_key(record) in resumed.done
    saved = json.loads(path.read_text())["results"]
    assert saved[0]["matmul_gflops"] == 150.0


def test_plan_validation_names_the_bad_field():
    with pytest.raises(UserInputError, match=r"runtimes=\['tensorrt'\]"):
        validate_plan(BenchmarkPlan(runtimes=("tensorrt",)))
    with pytest.raises(UserInputError, match="repeats=0 must be"):
        validate_plan(BenchmarkPlan(repeats=0))


def test_time_calls_excludes_warmup_and_reports_median():
    calls = []
    timing = time_calls(lambda: calls.append(1), warmup=2, repeats=3)
    assert len(calls) == 5
    assert 0 <= timing["min_s"] <= timing["median_s"]
    assert peak_rss_mb() > 10


def test_interleaving_alternates_the_runners_and_times_each_round():
    from benchmarks.interleaved import interleave

    calls = []
    runners = {
        "ours": lambda images: calls.append("ours"),
        "theirs": lambda images: calls.append("theirs"),
    }
    timings = interleave(runners, None, rounds=3, warmup=1)
    assert calls == ["ours", "theirs"] * 4
    assert [len(t["seconds"]) for t in timings.values()] == [3, 3]
    for timing in timings.values():
        assert timing["min_s"] <= timing["median_s"]


def test_every_report_names_the_cpu_flags_and_onednn():
    from benchmarks.results import machine_info

    document = _document()
    document["machine"] = {
        **document["machine"],
        "cpu_flags": ["avx2", "avx512f", "avx512_vnni"],
        "onednn": "on (TF_ENABLE_ONEDNN_OPTS=1)",
    }
    text = format_markdown(document)
    assert "CPU flags: avx2 avx512f avx512_vnni; TensorFlow oneDNN: on" in text
    machine = machine_info()
    assert isinstance(machine["cpu_flags"], list)
    assert machine["onednn"].split()[0] in ("on", "off", "unknown")
