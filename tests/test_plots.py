"""plots.py on our results.tsv and on the reference project's five-column file."""
import matplotlib
import pytest

from autoresearch_kernel import plots, results
from autoresearch_kernel.results import Row

matplotlib.use("Agg")

REFERENCE = (
    "commit\tval_bpb\tmemory_gb\tstatus\tdescription\n"
    "a1b2c3d\t0.997900\t44.0\tkeep\tbaseline\n"
    "b2c3d4e\t0.993200\t44.2\tkeep\tincrease LR to 0.04\n"
    "c3d4e5f\t1.005000\t44.0\tdiscard\tswitch to GeLU activation\n"
    "d4e5f6g\t0.000000\t0.0\tcrash\tdouble model width (OOM)\n"
    "e5f6g7h\t0.990000\t44.1\tkeep\tdepth 9\n"
)


@pytest.fixture
def ours(tmp_path):
    path = tmp_path / "results.tsv"
    base = dict(memory_gb=1.0, margin=0.002, noise_std=0.001)
    results.append(
        path,
        Row("aaaaaaa", 1.000, status="keep", description="baseline (seed 0)", experiment=1, kind="baseline", **base),
        Row("aaaaaaa", 1.002, status="keep", description="baseline (seed 1)", experiment=2, kind="baseline",
            best=1.001, **base),
        Row("bbbbbbb", 0.990, status="keep", description="MATRIX_LR 0.04 -> 0.05", experiment=3, best=0.990, **base),
        Row("ccccccc", 1.100, status="discard", description="DEPTH 4 -> 2", experiment=4, best=0.990, **base),
        Row("ddddddd", None, status="crash", description="boom", experiment=5, best=0.990, **base),
        Row("eeeeeee", 0.9799, status="keep", description="WARMDOWN 0.5 -> 0.6", experiment=6, best=0.980, **base),
        Row("eeeeeee", 0.9801, status="keep", description="WARMDOWN 0.5 -> 0.6", experiment=7, kind="confirm",
            best=0.980, **base),
    )
    return path


def test_summary_of_our_file(ours):
    summary = plots.summary(results.load(ours))
    assert (summary.experiments, summary.keep, summary.discard, summary.crash) == (7, 5, 1, 1)
    assert summary.keep_rate == pytest.approx(2 / 4)  # baseline and confirmation rows are not ideas
    assert summary.baseline == pytest.approx(1.001) and summary.best == pytest.approx(0.980)
    assert summary.change_percent == pytest.approx((0.980 - 1.001) / 1.001 * 100)
    assert "baseline 1.001000 -> best 0.980000 (-2.10%)" in summary.lines()[1]


def test_kept_changes_ranked_by_gain(ours):
    table = plots.kept_changes(results.load(ours))
    assert table["description"].tolist() == ["MATRIX_LR 0.04 -> 0.05", "WARMDOWN 0.5 -> 0.6"]
    assert table["gain"].tolist() == pytest.approx([0.011, 0.010])


def test_reference_file(tmp_path):
    path = tmp_path / "results.tsv"
    path.write_text(REFERENCE)
    frame = results.load(path)
    summary = plots.summary(frame)
    assert (summary.keep, summary.discard, summary.crash) == (3, 1, 1)
    assert summary.keep_rate == pytest.approx(2 / 4)
    assert summary.baseline == pytest.approx(0.9979) and summary.best == pytest.approx(0.99)
    table = plots.kept_changes(frame)
    assert table["description"].tolist() == ["increase LR to 0.04", "depth 9"]
    assert table["gain"].iloc[0] == pytest.approx(0.0047) and table["gain"].iloc[1] == pytest.approx(0.0032)


def test_chart_draws_the_reference_elements(ours):
    frame = results.load(ours)
    ax = plots.progress_chart(frame, band=True)
    labels = [text.get_text() for text in ax.texts]
    assert labels == ["MATRIX_LR 0.04 -> 0.05", "WARMDOWN 0.5 -> 0.6"]  # kept ideas only, once each
    kept, discarded = ax.collections[1], ax.collections[0]
    assert len(kept.get_offsets()) == 5 and len(discarded.get_offsets()) == 1  # the crash is not drawn
    assert [line.get_label() for line in ax.lines] == ["running best"]
    assert any(c.get_label() == "gate margin (noise)" for c in ax.collections)
    low, high = ax.get_ylim()
    assert low < 0.98 and high > 1.001


def test_every_baseline_seed_stays_in_view(tmp_path):
    path = tmp_path / "results.tsv"
    seeds = [2.987, 2.877, 2.887]  # the first seed lies far above the mean, the first best
    results.append(path, *[
        Row("aaaaaaa", value, 1.0, status="keep", description=f"baseline (seed {n})", experiment=n + 1, kind="baseline",
            best=sum(seeds) / 3 if n == 2 else None)
        for n, value in enumerate(seeds)
    ])
    ax = plots.progress_chart(results.load(path))
    low, high = ax.get_ylim()
    assert low < min(seeds) and high > max(seeds)
    assert all(float(tick).is_integer() for tick in ax.get_xticks())


def test_report_writes_the_png_and_lines(ours):
    png, lines = plots.write_report(ours)
    assert png == ours.with_name("progress.png") and png.stat().st_size > 10_000
    assert lines[0].startswith("7 experiments: keep 5, discard 1, crash 1")
    assert lines[2] == "kept changes, ranked by gain:"
    assert lines[3].split()[:3] == ["+0.011000", "(+1.10%)", "bbbbbbb"]


def test_empty_file_still_charts(tmp_path):
    path = results.ensure_file(tmp_path / "results.tsv")
    png, lines = plots.write_report(path)
    assert png.exists() and lines == ["0 experiments: keep 0, discard 0, crash 0"]
