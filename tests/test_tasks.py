"""The task contract without kernels: bundled tasks, the metric's direction through the gate, the settings,
the rows and the report, and the circle-packing scorer's geometry."""
import dataclasses
import json

import pytest
from loop_fixture import make_repo

from autoresearch_kernel import gate, report, tasks
from autoresearch_kernel.errors import AutoresearchError
from autoresearch_kernel.gate import GateConfig, NoiseEstimate, decide_by_means, estimate_noise
from autoresearch_kernel.journal import results
from autoresearch_kernel.loop import settings
from autoresearch_kernel.loop.settings import LoopConfig
from autoresearch_kernel.tasks.circle_packing import scorer as packing
from autoresearch_kernel.workspace.runfolder import RunFolder


def test_bundled_tasks_name_their_metric_and_direction():
    gpt, circles = tasks.load("gpt"), tasks.load("circle-packing")
    assert (gpt.metric.name, gpt.metric.lower_is_better, gpt.scored) == ("val_bpb", True, "outside")
    assert gpt.sandbox == "notebooks/train_template.ipynb" and not gpt.deterministic
    assert (circles.metric.name, circles.metric.direction, circles.artifact) == ("sum_radii", "higher", "file")
    assert circles.deterministic and circles.baseline_seeds == 1 and circles.budget.kind == "evaluations"
    assert tasks.load(None) == gpt


def test_an_unknown_task_says_how_to_create_one(tmp_path):
    with pytest.raises(AutoresearchError, match="autoresearch init --task mine"):
        tasks.load("mine", tmp_path)


def test_improvement_is_the_one_place_that_knows_the_direction():
    assert gate.improvement(1.0, 0.9) == pytest.approx(0.1)  # lower is better by default (val_bpb)
    assert gate.improvement(2.0, 2.1, lower_is_better=False) == pytest.approx(0.1)
    assert tasks.load("circle-packing").metric.improvement(2.0, 1.9) == pytest.approx(-0.1)


def test_the_gate_keeps_a_higher_value_when_higher_is_better_and_discards_a_lower_one():
    higher = GateConfig(lower_is_better=False)
    noise = NoiseEstimate.known(0.01)
    assert decide_by_means([2.0, 2.0], [2.2], noise, higher).status == "keep"
    assert decide_by_means([2.0, 2.0], [1.8], noise, higher).status == "discard"
    # the same numbers the other way round: the GPT task's direction is unchanged
    assert decide_by_means([2.0, 2.0], [1.8], noise).status == "keep"
    assert decide_by_means([2.0, 2.0], [2.2], noise).status == "discard"


def test_a_deterministic_task_keeps_any_gain_above_the_minimum_margin_without_re_runs():
    config = settings.task_gate(tasks.load("circle-packing"))
    config = dataclasses.replace(config, lower_is_better=False)
    noise = estimate_noise([], "cpu", config)
    assert noise.upper == 0.0
    kept = decide_by_means([2.24], [2.24 + 2 * config.min_margin], noise, config)
    assert (kept.status, kept.margin) == ("keep", config.min_margin)  # at once: no confirmation run
    assert decide_by_means([2.24], [2.24 + config.min_margin / 2], noise, config).status == "discard"


def test_the_loop_config_takes_seeds_gate_and_direction_from_the_task(tmp_path):
    circles = LoopConfig(repo=tmp_path, tag="t", task="circle-packing")
    assert circles.baseline_seeds == (0,) and circles.gate.deterministic and not circles.gate.lower_is_better
    assert circles.budget_amount() == 4000 and circles.stored()["task"] == "circle-packing"
    gpt = LoopConfig(repo=tmp_path, tag="t")
    assert gpt.baseline_seeds == (0, 1, 2) and gpt.gate == GateConfig()  # as before tasks existed
    assert LoopConfig(repo=tmp_path, tag="t", task="circle-packing", budget_evaluations=50).budget_amount() == 50


def test_a_resumed_run_keeps_its_task_and_refuses_another(tmp_path):
    repo = make_repo(tmp_path / "project")
    folder = RunFolder.of(repo, "t")
    folder.path.mkdir(parents=True)
    config = LoopConfig(repo=repo, tag="t", task="circle-packing")
    settings.store(folder, config, "/data", [])
    assert LoopConfig.resumed(repo, "t").task == "circle-packing"
    with pytest.raises(AutoresearchError, match="task 'circle-packing' -> 'gpt'"):
        settings.check_resume(folder, LoopConfig.resumed(repo, "t", task="gpt"), "/data")


def test_a_gate_stored_before_the_direction_existed_resumes_unchanged(tmp_path):
    repo = make_repo(tmp_path / "project")
    folder = RunFolder.of(repo, "t")
    folder.path.mkdir(parents=True)
    old_gate = {k: v for k, v in dataclasses.asdict(GateConfig()).items() if k not in ("lower_is_better", "deterministic")}
    folder.config.write_text(json.dumps({"settings": {"profile": "cpu", "data_dir": "/data", "gate": old_gate,
                                                      "baseline_seeds": [0, 1, 2]}, "changes": []}))
    assert settings.check_resume(folder, LoopConfig.resumed(repo, "t"), "/data") == []


def _packing_rows(tmp_path, values):
    """A circle-packing results.tsv: a baseline, then candidates kept when higher."""
    path = tmp_path / "results.tsv"
    best, rows = values[0], []
    for number, value in enumerate(values, 1):
        kept = number == 1 or value > best
        best = value if kept else best
        rows.append(results.Row(f"abcdef{number}", value, 0.0, "keep" if kept else "discard", f"idea {number}",
                                experiment=number, kind="baseline" if number == 1 else "candidate", best=best,
                                margin=0.001, metric="sum_radii", direction="higher", scored="outside"))
    results.append(path, *rows)
    return path


def test_a_higher_is_better_run_is_reported_and_charted_the_right_way_up(tmp_path):
    path = _packing_rows(tmp_path, [2.24, 2.30, 2.10, 2.45])
    frame = results.load(path)
    assert report.metric_of(frame) == tasks.Metric("sum_radii", lower_is_better=False)
    frame_without_best = frame.assign(best=float("nan"))
    assert list(report.running_best(frame_without_best)) == [2.24, 2.30, 2.30, 2.45]  # a running maximum
    ranked = report.kept_changes(frame)
    assert list(ranked["description"]) == ["idea 4", "idea 2"] and (ranked["gain"] > 0).all()
    lines = report.summary(frame).lines()
    assert lines[1] == "sum_radii (higher is better): baseline 2.240000 -> best 2.450000 (+9.37%)"
    ax = report.progress_chart(frame, band=True)
    low, high = ax.get_ylim()
    assert low < 2.24 < 2.45 < high  # the best is up: the baseline near the bottom
    assert 2.45 - low > high - 2.45  # the baseline's side, below, gets the room
    assert ax.get_ylabel() == "sum_radii (higher is better)"


def test_old_files_read_as_val_bpb_lower_is_better(tmp_path):
    path = tmp_path / "results.tsv"
    path.write_text("commit\tval_bpb\tmemory_gb\tstatus\tdescription\n"
                    "aaaaaaa\t1.000000\t1.0\tkeep\tbaseline\nbbbbbbb\t0.990000\t1.0\tkeep\tbetter\n")
    frame = results.load(path)
    assert report.metric_of(frame) == tasks.Metric()
    assert list(report.running_best(frame)) == [1.0, 0.99]


def test_rows_scored_by_the_kernel_are_marked_in_the_report(tmp_path):
    path = tmp_path / "results.tsv"
    results.append(path, results.Row("aaaaaaa", 0.5, 0.0, "keep", "baseline", experiment=1, kind="baseline",
                                     best=0.5, metric="accuracy", direction="higher", scored="kernel"))
    assert results.read_rows(path)[0].scored == "kernel"
    lines = report.summary(results.load(path)).lines()
    assert any("scored by the experiment's own kernel" in line for line in lines)


# -- the circle-packing scorer ------------------------------------------------------------------------------
def _grid(radius=0.1):
    """25 circles on a 5 x 5 grid, touching, and a 26th of radius 0 in a corner: a valid packing, sum 2.5."""
    centers = [[0.1 + 0.2 * i, 0.1 + 0.2 * j] for i in range(5) for j in range(5)] + [[0.0, 0.0]]
    return centers, [radius] * 25 + [0.0]


def _write(tmp_path, centers, radii):
    path = tmp_path / "packing.json"
    path.write_text(json.dumps({"centers": centers, "radii": radii}))
    return path


def test_the_scorer_sums_a_valid_packing(tmp_path):
    assert packing.score(_write(tmp_path, *_grid())) == pytest.approx(2.5)


@pytest.mark.parametrize("change, reason", [
    (lambda c, r: (c[:1] + [[0.1, 0.29]] + c[2:], r), "overlap"),
    (lambda c, r: ([[0.05, 0.5]] + c[1:], r), "leaves the unit square"),
    (lambda c, r: (c[:-1], r[:-1]), "expected 26 circles"),
    (lambda c, r: (c, r[:-1] + [-0.01]), "negative radius"),
    (lambda c, r: (c, r[:-1] + [float("nan")]), "not a finite number"),
])
def test_the_scorer_refuses_an_invalid_packing(tmp_path, change, reason):
    with pytest.raises(ValueError, match=reason):
        packing.score(_write(tmp_path, *change(*_grid())))


def test_the_scorers_child_runs_the_checks_before_the_score(tmp_path, capsys):
    from autoresearch_kernel.tasks import scoring

    (tmp_path / "rules.py").write_text("def small(artifact, data):\n"
                                       "    return 'too large' if artifact.stat().st_size > 10 else None\n\n"
                                       "def size(artifact, data):\n    return artifact.stat().st_size\n")
    artifact = tmp_path / "out.txt"
    spec = {"scorer": "rules.py:size", "checks": ["rules.py:small"], "folder": str(tmp_path)}
    argv = ["--spec", json.dumps(spec), "--artifact", str(artifact), "--public", str(tmp_path), "--private",
            str(tmp_path)]
    artifact.write_text("12345")
    scoring.main(argv)
    assert json.loads(capsys.readouterr().out) == {"value": 5.0, "failure": None}
    artifact.write_text("x" * 20)
    scoring.main(argv)
    assert json.loads(capsys.readouterr().out) == {"value": None, "failure": "ValueError: check small failed: too large"}
