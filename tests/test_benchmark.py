"""The benchmark command (issue 17): suite groups, the Markdown it writes from results/benchmark.json,
and (slow, in CI) ``python -m scripts benchmark quick`` end to end."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from scripts import benchmark as bench
from scripts import results_tables as tables

ROOT = Path(__file__).resolve().parents[1]


def _quality(met: bool) -> dict:
    family = {
        "headline": {"metric": "mean |error|", "unit": "%", "model": 2.0, "baseline": 4.0},
        "targets": {"organ": {"value": 2.0, "target": "<= 2.5", "met": True}, "bone": {"value": 0.7, "target": "<= 0.5", "met": met},
                    "speed": {"value": 0.2, "target": "<= 5", "met": None}},
        "n_subjects": 3, "held_out_seed": 2000, "wall_s": 1.0, "figure": "results/benchmark/x_training.png",
    }  # fmt: skip
    return {"x": {"version": "0.1.0", "task": "a task", "families": {"training": family, "shifted": family}}}


def test_groups_expand_to_known_suites():
    known = bench.available_suites()
    assert bench._expand((), known) == (known, False)
    assert bench._expand(("all",), known) == (known, False)
    assert bench._expand(("quick",), known) == (known, True)
    assert bench._expand(("physics",), known) == (["physics"], False)
    suites, quick = bench._expand(("bundles", "quick"), known)
    assert quick and "quality" in suites and "physics" not in suites
    for group in bench.GROUPS.values():
        assert set(group) <= set(known)
    with pytest.raises(SystemExit, match="unknown benchmark suite"):
        bench._expand(("nonsense",), known)


def test_a_missed_target_is_shown_as_a_miss():
    text = tables.targets_text(_quality(met=False)["x"]["families"]["training"]["targets"])
    assert "bone 0.7, target <= 0.5: **NOT met**" in text and "organ 2, target <= 2.5: met" in text
    assert "speed" not in text  # not judged (met is None): not claimed either way
    row = tables.readme_table(_quality(met=False)).splitlines()[-1]
    assert "training: **NOT met**: bone" in row and "2 / 4 % (n=3)" in row
    assert "training: all met" in tables.readme_table(_quality(met=True))


def test_replace_section_keeps_the_rest_and_refuses_missing_markers(tmp_path):
    start, end = tables.markers("k")
    doc = tmp_path / "doc.md"
    doc.write_text(f"head\n{start}\nold\n{end}\ntail\n")
    tables.replace_section(doc, "k", "new | table")
    assert doc.read_text() == f"head\n{start}\nnew | table\n{end}\ntail\n"
    doc.write_text("no markers here\n")
    with pytest.raises(ValueError, match="doc.md: needs exactly one pair of markers"):
        tables.replace_section(doc, "k", "x")
    assert doc.read_text() == "no markers here\n"


def test_readme_and_bundle_docs_hold_what_the_committed_results_say():
    """The README table and each bundle's generated section are the committed benchmark.json's
    (nobody edited them by hand, nobody forgot to re-run the writer)."""
    results = json.loads((ROOT / "results" / "benchmark.json").read_text())
    quality = results["quality"]["result"]
    assert set(quality) == {p.name for p in (ROOT / "bundles").iterdir() if (p / "configs" / "metadata.json").exists()}
    readme = (ROOT / "README.md").read_text()
    assert tables.readme_table(quality) in readme
    for name, entry in quality.items():
        doc = ROOT / "bundles" / name / "docs" / "README.md"
        assert tables.bundle_section(name, entry, results, doc.parent) in doc.read_text(), name
        meta = json.loads((ROOT / "bundles" / name / "configs" / "metadata.json").read_text())
        assert entry["version"] == meta["version"], f"{name}: benchmark of {entry['version']}, bundle is {meta['version']}: re-run it"
        for family in entry["families"].values():
            assert (ROOT / family["figure"]).is_file()
    assert (ROOT / "results" / "benchmark.md").read_text() == tables.benchmark_markdown(results)


@pytest.mark.slow
def test_quick_benchmark_end_to_end(tmp_path):
    """``python -m scripts benchmark quick`` (CI's run): every suite, figures and tables written to
    ``--out``, the committed README untouched."""
    readme = (ROOT / "README.md").read_text()
    proc = subprocess.run(
        [sys.executable, "-m", "scripts", "benchmark", "quick", "--out", str(tmp_path)],
        cwd=ROOT, capture_output=True, text=True, timeout=900, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    print(proc.stdout[-6000:])
    results = json.loads((tmp_path / "benchmark.json").read_text())
    assert set(results) == set(bench.available_suites())
    assert all(r["quick"] for r in results.values())
    quality = results["quality"]["result"]
    for name, entry in quality.items():
        for family in ("training", "shifted"):
            assert (tmp_path / "benchmark" / f"{name}_{family}.png").stat().st_size > 10_000, (name, family)
            assert entry["families"][family]["targets"], (name, family)
    assert (tmp_path / "benchmark" / "pet_lowdose_denoising_drf_curves.png").is_file()
    md = (tmp_path / "benchmark.md").read_text()
    assert "## Quality on fresh held-out phantoms" in md and "Networks on cpu" in md and "Data generation" in md
    assert (ROOT / "README.md").read_text() == readme


def test_only_merges_one_bundle_into_the_recorded_results():
    old = {"threads": 2, "cpu": {"a": {"s": 1}, "b": {"s": 2, "stale": 0}}}
    merged = bench._merge(old, {"threads": 1, "cpu": {"b": {"s": 3}}}, depth=2)
    assert merged == {"threads": 1, "cpu": {"a": {"s": 1}, "b": {"s": 3}}}  # a re-run bundle's entry is replaced whole
    assert bench._merge({"a": {"x": 1}, "b": {"y": 1}}, {"b": {"z": 2}}) == {"a": {"x": 1}, "b": {"z": 2}}
    with pytest.raises(SystemExit, match="unknown bundle"):
        bench.benchmark("bundles", only="no_such_bundle")


@pytest.mark.slow
def test_main_job_runs_its_evaluations_as_parallel_one_thread_jobs(tmp_path):
    # the main job's parallel path end to end on one bundle: two jobs (one per family) at once
    run = subprocess.run(
        [sys.executable, "-m", "scripts", "main", "--out", str(tmp_path), "--n_test", "1", "--jobs", "2",
         "--bundles", "dose_rate_prediction", "--skip_training"],
        capture_output=True, text=True, cwd=ROOT, timeout=900,
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert set(summary) == {"dose_rate_prediction"} and set(summary["dose_rate_prediction"]) == {"training", "shifted"}
    for family in ("training", "shifted"):
        s = summary["dose_rate_prediction"][family]
        assert s["n_subjects"] == 1 and s["headline"]["model"] > 0 and (tmp_path / "dose_rate_prediction" / family / "evaluating.log").exists()
    assert "dose_rate_prediction | shifted" in (tmp_path / "results.md").read_text()


def test_main_job_refuses_an_unknown_bundle_and_zero_jobs():
    from scripts.main import main

    with pytest.raises(SystemExit, match="unknown bundle"):
        main(bundles="no_such_bundle")
    with pytest.raises(SystemExit, match="--jobs"):
        main(jobs=0)
