"""The loop's settings: one option table for the CLI and the dashboard, the stored copy a resume keeps."""
import json

import pytest

from autoresearch_kernel import cli
from autoresearch_kernel.errors import AutoresearchError
from autoresearch_kernel.gate import GateConfig
from autoresearch_kernel.loop import settings
from autoresearch_kernel.loop.settings import LoopConfig
from autoresearch_kernel.workspace.runfolder import RunFolder


def parse(*argv):
    return cli.build_parser().parse_args(["loop", "--tag", "t", *argv])


def test_options_not_given_are_none_and_given_ones_become_the_config():
    assert settings.given(parse()) == {}
    given = settings.given(parse("--baseline-seeds", "2", "--model", "m", "--no-sandbox", "--budget-tokens", "64"))
    assert given == {"baseline_seeds": (0, 1), "proposer_options": {"model": "m"}, "sandbox": False,
                     "budget_tokens": 64}
    config = LoopConfig(tag="t", **given)
    assert config.baseline_seeds == (0, 1) and config.proposer_options == {"model": "m"} and not config.sandbox


def test_the_command_line_built_from_the_table_parses_back():
    values = {"profile": "gpu", "device": "cuda:0", "budget_seconds": 30, "sandbox": False, "model": "m",
              "max_experiments": None}
    argv = settings.command_line(values)
    assert argv == ["--model", "m", "--budget-seconds", "30.0", "--device", "cuda:0", "--profile", "gpu",
                    "--no-sandbox"]
    parsed = parse(*argv)
    assert (parsed.profile, parsed.device, parsed.budget_seconds, parsed.sandbox) == ("gpu", "cuda:0", 30.0, False)
    with pytest.raises(ValueError, match="budget"):
        settings.command_line({"budget": 30})  # a name the CLI does not know fails at once


def test_a_resume_takes_the_stored_settings_and_refuses_a_new_yardstick(tmp_path):
    folder = RunFolder.of(tmp_path, "t")
    folder.path.mkdir(parents=True)
    first = LoopConfig(repo=tmp_path, tag="t", baseline_seeds=(0, 1), budget_seconds=20, max_experiments=5,
                       proposer_options={"model": "m", "base_url": "http://x", "api_key": "sk-secret"})
    settings.store(folder, first, "/data", [])
    assert "sk-secret" not in folder.config.read_text()  # a key is never written to disk
    resumed = LoopConfig.resumed(tmp_path, "t", proposer_options={"model": "n"}, max_experiments=1)
    assert (resumed.baseline_seeds, resumed.budget_seconds, resumed.resume) == ((0, 1), 20, True)
    assert resumed.proposer_options == {"model": "n", "base_url": "http://x"}  # merged key by key
    resumed.data_dir = "/data"
    changes = settings.check_resume(folder, resumed, "/data")
    assert [(c["setting"], c["was"], c["now"]) for c in changes] == [
        ("max_experiments", 5, 1),
        ("proposer_options", {"model": "m", "base_url": "http://x"}, {"model": "n", "base_url": "http://x"})]
    settings.store(folder, resumed, "/data", changes)
    assert len(json.loads(folder.config.read_text())["changes"]) == 2
    for change in ({"budget_seconds": 30}, {"baseline_seeds": (0, 1, 2)}, {"profile": "gpu"},
                   {"gate": GateConfig(z=3.0)}):
        with pytest.raises(AutoresearchError, match="start a new tag") as refused:
            settings.check_resume(folder, LoopConfig.resumed(tmp_path, "t", **change), "/data")
        assert next(iter(change)) in str(refused.value) and "\n" not in str(refused.value)
    with pytest.raises(AutoresearchError, match="data_dir"):
        settings.check_resume(folder, LoopConfig.resumed(tmp_path, "t"), "/other")


def test_a_tag_stored_before_the_paired_gate_resumes_with_the_rule_it_was_measured_with(tmp_path):
    """config.json of an older tag holds a gate without `rule` and the paired settings: it resumes (no change
    of the yardstick), with the means rule it was started with; asking for the paired rule is a change."""
    folder = RunFolder.of(tmp_path, "t")
    folder.path.mkdir(parents=True)
    settings.store(folder, LoopConfig(repo=tmp_path, tag="t"), "/data", [])
    stored = json.loads(folder.config.read_text())
    older = {k: v for k, v in stored["settings"]["gate"].items() if k in (
        "z", "min_margin", "confirm_band", "confirm_runs", "confirm_floor", "prior_sd", "prior_weight",
        "noise_confidence")}
    stored["settings"]["gate"] = older
    folder.config.write_text(json.dumps(stored))
    resumed = LoopConfig.resumed(tmp_path, "t")
    assert resumed.gate == GateConfig(rule="means", paired_floor_confidence=None)
    assert settings.check_resume(folder, resumed, "/data") == []
    with pytest.raises(AutoresearchError, match="gate"):
        settings.check_resume(folder, LoopConfig.resumed(tmp_path, "t", gate=GateConfig()), "/data")


def test_paired_runs_caps_the_gate_is_kept_on_resume_and_is_part_of_the_yardstick(tmp_path):
    """--paired-runs N sets the paired gate's most runs per candidate (make run's demo passes 3); a resume keeps
    it, and another N is a new yardstick. A number the rule cannot use, or a gate that pairs nothing, is refused
    in one line."""
    given = settings.given(parse("--paired-runs", "3"))
    assert given == {"paired_runs": 3}
    config = LoopConfig(repo=tmp_path, tag="t", **given)
    assert config.gate.paired_runs == 3 and config.gate.rule == "paired"
    assert LoopConfig(repo=tmp_path, tag="t").gate.paired_runs == GateConfig().paired_runs == 8
    folder = RunFolder.of(tmp_path, "t")
    folder.path.mkdir(parents=True)
    settings.store(folder, config, "/data", [])
    resumed = LoopConfig.resumed(tmp_path, "t")
    assert resumed.gate.paired_runs == 3 and settings.check_resume(folder, resumed, "/data") == []
    with pytest.raises(AutoresearchError, match="paired_runs 3 -> 8") as refused:
        settings.check_resume(folder, LoopConfig.resumed(tmp_path, "t", paired_runs=8), "/data")
    assert "start a new tag" in str(refused.value)
    with pytest.raises(AutoresearchError, match="at least 3") as refused:
        LoopConfig(repo=tmp_path, tag="t", paired_runs=2)
    assert "\n" not in str(refused.value)
    with pytest.raises(AutoresearchError, match="leave it out"):
        LoopConfig(repo=tmp_path, tag="t", task="circle-packing", paired_runs=3)
