"""report.py on our results.tsv, on the reference project's five-column file, and on the marks rows are
gaining (a `sandbox` column, the "noop" status): counts of ideas with the baseline's runs apart, the chart,
the CLI's report."""
import matplotlib
import pandas as pd
import pytest

from autoresearch_kernel import cli, report
from autoresearch_kernel.journal import results
from autoresearch_kernel.journal.results import Row

matplotlib.use("Agg")

REFERENCE = (
    "commit\tval_bpb\tmemory_gb\tstatus\tdescription\n"
    "a1b2c3d\t0.997900\t44.0\tkeep\tbaseline\n"
    "b2c3d4e\t0.993200\t44.2\tkeep\tincrease LR to 0.04\n"
    "c3d4e5f\t1.005000\t44.0\tdiscard\tswitch to GeLU activation\n"
    "d4e5f6g\t0.000000\t0.0\tcrash\tdouble model width (OOM)\n"
    "e5f6g7h\t0.990000\t44.1\tkeep\tdepth 9\n"
)
BASE = dict(memory_gb=1.0, margin=0.002, noise_std=0.001)
FIRST_ROWS = (  # two baseline seeds, then a kept idea: how the runs below begin
    Row("aaaaaaa", 1.000, status="keep", description="baseline (seed 0)", experiment=1, kind="baseline", **BASE),
    Row("aaaaaaa", 1.002, status="keep", description="baseline (seed 1)", experiment=2, kind="baseline",
        best=1.001, **BASE),
    Row("bbbbbbb", 0.990, status="keep", description="MATRIX_LR 0.04 -> 0.05", experiment=3, best=0.990, **BASE),
)


@pytest.fixture
def ours(tmp_path):
    path = tmp_path / "results.tsv"
    results.append(
        path, *FIRST_ROWS,
        Row("ccccccc", 1.100, status="discard", description="DEPTH 4 -> 2", experiment=4, best=0.990, **BASE),
        Row("ddddddd", None, status="crash", description="boom", experiment=5, best=0.990, **BASE),
        Row("eeeeeee", 0.9799, status="keep", description="WARMDOWN 0.5 -> 0.6", experiment=6, best=0.980, **BASE),
        Row("eeeeeee", 0.9801, status="keep", description="WARMDOWN 0.5 -> 0.6", experiment=7, kind="confirm",
            best=0.980, **BASE),
    )
    return path


@pytest.fixture
def nothing_kept(tmp_path):
    """What `make run` leaves: two baseline seeds, then three discarded ideas."""
    path = tmp_path / "results.tsv"
    seeds = [Row("aaaaaaa", value, status="keep", description=f"baseline (seed {n})", experiment=n + 1,
                 kind="baseline", best=1.683143 if n else None, **BASE) for n, value in enumerate([1.679961, 1.686325])]
    ideas = [Row(f"b{n:06d}", 1.69 + n / 100, status="discard", description=f"idea {n}", experiment=n + 3,
                 best=1.683143, **BASE) for n in range(3)]
    results.append(path, *seeds, *ideas)
    return path


def with_marks(path, statuses: dict[int, str], sandbox: dict[int, str]):
    """Rewrite a results.tsv as the loop will once rows carry a `sandbox` column and "noop" statuses
    (`results.append` does not know them yet)."""
    frame = results.load(path)
    for number, status in statuses.items():
        frame.loc[frame["experiment"] == number, "status"] = status
    frame["sandbox"] = [sandbox.get(number, "bwrap") for number in frame["experiment"]]
    frame.to_csv(path, sep="\t", index=False, float_format="%.6f")
    return path


def test_summary_counts_ideas_with_the_baseline_runs_apart(ours):
    summary = report.summary(results.load(ours))
    assert (summary.baseline_runs, summary.experiments, summary.runs) == (2, 4, 7)  # the confirm re-run is no idea
    assert (summary.keep, summary.discard, summary.crash, summary.noop) == (2, 1, 1, 0)
    assert summary.keep_rate == pytest.approx(2 / 4)
    assert summary.baseline_noise.mean == pytest.approx(1.001) and summary.baseline_noise.std == pytest.approx(0.001414, abs=1e-6)
    assert summary.baseline == pytest.approx(1.001) and summary.best == pytest.approx(0.980)
    assert summary.change_percent == pytest.approx((0.980 - 1.001) / 1.001 * 100)
    assert summary.lines() == [
        "2 baseline runs (mean 1.001000 ± 0.001414), 4 experiments: keep 2, discard 1, crash 1, keep rate 50%",
        "baseline 1.001000 -> best 0.980000 (-2.10%)",
    ]


def test_a_run_that_kept_nothing_says_so_without_contradiction(nothing_kept, capsys):
    """The first impression of `make run`: the seeds are baseline runs, not keeps; the console says the same."""
    expected = "2 baseline runs (mean 1.683143 ± 0.004500), 3 experiments: keep 0, discard 3, crash 0, keep rate 0%"
    assert report.summary(results.load(nothing_kept)).lines()[0] == expected
    assert cli.main(["report", "--results", str(nothing_kept)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[:2] == [expected, "baseline 1.683143 -> best 1.683143 (+0.00%)"]
    assert out[2] == f"chart: {nothing_kept.with_name('progress.png')}"  # no "kept changes" without a kept idea


def test_the_chart_draws_baseline_seeds_as_baseline_not_as_keeps(nothing_kept):
    ax = report.progress_chart(results.load(nothing_kept), band=True)
    drawn = {c.get_label(): len(c.get_offsets()) for c in ax.collections if c.get_label() != "gate margin (noise)"}
    assert drawn == {"baseline seeds": 2, "discarded": 3}  # no "kept" dots: nothing was kept
    assert any(c.get_label() == "gate margin (noise)" for c in ax.collections)
    assert ax.get_title() == "2 baseline runs, 3 experiments: 0 kept, 0 crashed"
    assert len(ax.texts) == 0  # no kept idea, no label


def test_kept_changes_ranked_by_gain(ours):
    table = report.kept_changes(results.load(ours))
    assert table["description"].tolist() == ["MATRIX_LR 0.04 -> 0.05", "WARMDOWN 0.5 -> 0.6"]
    assert table["gain"].tolist() == pytest.approx([0.011, 0.010])


def test_reference_file(tmp_path):
    path = tmp_path / "results.tsv"
    path.write_text(REFERENCE)
    frame = results.load(path)
    summary = report.summary(frame)
    assert (summary.baseline_runs, summary.experiments) == (1, 4)  # its first row is its baseline
    assert (summary.keep, summary.discard, summary.crash) == (2, 1, 1)
    assert summary.keep_rate == pytest.approx(2 / 4)
    assert summary.baseline == pytest.approx(0.9979) and summary.best == pytest.approx(0.99)
    assert summary.lines()[0] == "1 baseline run (0.997900), 4 experiments: keep 2, discard 1, crash 1, keep rate 50%"
    table = report.kept_changes(frame)
    assert table["description"].tolist() == ["increase LR to 0.04", "depth 9"]
    assert table["gain"].iloc[0] == pytest.approx(0.0047) and table["gain"].iloc[1] == pytest.approx(0.0032)
    ax = report.progress_chart(frame)
    assert {c.get_label(): len(c.get_offsets()) for c in ax.collections}["baseline seeds"] == 1


def test_chart_draws_the_reference_elements(ours):
    frame = results.load(ours)
    ax = report.progress_chart(frame, band=True)
    labels = [text.get_text() for text in ax.texts]
    assert labels == ["MATRIX_LR 0.04 -> 0.05", "WARMDOWN 0.5 -> 0.6"]  # kept ideas only, once each
    drawn = {c.get_label(): len(c.get_offsets()) for c in ax.collections if c.get_label() != "gate margin (noise)"}
    assert drawn["kept"] == 3 and drawn["baseline seeds"] == 2 and drawn["discarded"] == 1  # the crash is not drawn
    assert [line.get_label() for line in ax.lines] == ["running best"]
    assert any(c.get_label() == "gate margin (noise)" for c in ax.collections)
    low, high = ax.get_ylim()
    assert low < 0.98 and high > 1.002


def test_every_baseline_seed_stays_in_view(tmp_path):
    path = tmp_path / "results.tsv"
    seeds = [2.987, 2.877, 2.887]  # the first seed lies far above the mean, the first best
    results.append(path, *[
        Row("aaaaaaa", value, 1.0, status="keep", description=f"baseline (seed {n})", experiment=n + 1, kind="baseline",
            best=sum(seeds) / 3 if n == 2 else None)
        for n, value in enumerate(seeds)
    ])
    ax = report.progress_chart(results.load(path))
    low, high = ax.get_ylim()
    assert low < min(seeds) and high > max(seeds)
    assert all(float(tick).is_integer() for tick in ax.get_xticks())


def test_noop_and_unsandboxed_rows_are_counted_apart(nothing_kept):
    """A noop is no discard (nothing was measured) and stays out of the keep rate; runs without the jail warn."""
    path = with_marks(nothing_kept, statuses={4: "noop"}, sandbox={5: "none"})
    frame = results.load(path)
    summary = report.summary(frame)
    assert (summary.keep, summary.discard, summary.noop, summary.unsandboxed) == (0, 2, 1, 1)
    lines = summary.lines()
    assert lines[0].endswith("3 experiments: keep 0, discard 2, crash 0, noop 1, keep rate 0%")
    assert lines[2].startswith("warning: 1 of 5 runs ran without the sandbox")
    ax = report.progress_chart(frame)
    assert {c.get_label(): len(c.get_offsets()) for c in ax.collections}["no-op (same as parent)"] == 1
    bwrap_only = report.summary(results.load(with_marks(path, statuses={}, sandbox={})))
    assert bwrap_only.unsandboxed == 0 and len(bwrap_only.lines()) == 2


@pytest.fixture
def with_lanes(tmp_path):
    """Two lanes: idea 4 beat the best after idea 3 had moved it, and was re-applied as 6 (kept); idea 7 beat
    a moved best too, and its change did not apply there."""
    path = tmp_path / "results.tsv"
    moved = "stale: the best moved on from aaaaaaa to bbbbbbb while it ran"
    results.append(
        path, *FIRST_ROWS,
        Row("ccccccc", 0.985, status="stale", description="DEPTH 4 -> 5", experiment=4, best=0.990,
            failure=f"{moved}; re-applied there as experiment 6", **BASE),
        Row("ddddddd", 1.100, status="discard", description="WARMDOWN 0.5 -> 0.6", experiment=5, best=0.990, **BASE),
        Row("eeeeeee", 0.982, status="keep", description="DEPTH 4 -> 5", experiment=6, kind="rebase", best=0.982,
            **BASE),
        Row("fffffff", 0.984, status="stale", description="HEADS 4 -> 8", experiment=7, best=0.982,
            failure=f"{moved}, and its change does not apply there", **BASE),
    )
    return path


def test_stale_candidates_are_counted_apart_and_rebases_as_candidates(with_lanes):
    """A stale row is neither a keep nor a discard (its change was decided again, or could not be): it stays out
    of the keep rate like a noop, and the counts still add up to the experiments."""
    frame = results.load(with_lanes)
    summary = report.summary(frame)
    assert (summary.experiments, summary.keep, summary.discard, summary.crash, summary.stale) == (5, 2, 1, 0, 2)
    assert summary.keep + summary.discard + summary.crash + summary.noop + summary.stale == summary.experiments
    assert summary.keep_rate == pytest.approx(2 / 3)
    assert summary.lines()[0].endswith("5 experiments: keep 2, discard 1, crash 0, stale 2, keep rate 67%")
    assert report.chart_title(summary) == "2 baseline runs, 5 experiments: 2 kept, 0 crashed, 2 stale"
    assert report.kept_changes(frame)["description"].tolist() == ["MATRIX_LR 0.04 -> 0.05", "DEPTH 4 -> 5"]
    assert [report.rebased_as(failure) for failure in frame["failure"].fillna("").iloc[3:7:3]] == [6, None]
    assert ", stale" not in report.summary(results.load(with_marks(with_lanes, {4: "discard", 7: "discard"}, {}))
                                            ).lines()[0]


def test_the_chart_marks_stale_candidates_and_kept_rebases(with_lanes):
    ax = report.progress_chart(results.load(with_lanes), band=True)
    drawn = {c.get_label(): len(c.get_offsets()) for c in ax.collections if c.get_label() != "gate margin (noise)"}
    assert drawn == {"baseline seeds": 2, "kept": 1, "kept after re-applying": 1, "stale (best moved on)": 2,
                     "discarded": 1}
    legend = [text.get_text() for text in ax.get_legend().get_texts()]
    assert "stale (best moved on)" in legend and "kept after re-applying" in legend
    assert [text.get_text() for text in ax.texts] == ["MATRIX_LR 0.04 -> 0.05", "DEPTH 4 -> 5"]  # kept ideas labelled
    assert ax.get_ylim()[0] < 0.982


def test_report_writes_the_png_and_lines(ours):
    png, lines = report.write_report(ours)
    assert png == ours.with_name("progress.png") and png.stat().st_size > 10_000
    assert lines[0].startswith("2 baseline runs (mean 1.001000 ± 0.001414), 4 experiments: keep 2, discard 1, crash 1")
    assert lines[2] == "kept changes, ranked by gain:"
    assert lines[3].split()[:3] == ["+0.011000", "(+1.10%)", "bbbbbbb"]


def test_empty_file_still_charts(tmp_path):
    path = results.ensure_file(tmp_path / "results.tsv")
    png, lines = report.write_report(path)
    assert png.exists() and lines == ["0 experiments: keep 0, discard 0, crash 0"]
    assert report.summary(pd.DataFrame(columns=list(results.COLUMNS))).baseline_runs == 0
