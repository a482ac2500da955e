"""Profiles: the gpu profile is the reference's yardstick; the cpu one is consistent and small."""
import pytest

from autoresearch_kernel.errors import DataError
from autoresearch_kernel.harness.profiles import PROFILES, get_profile


def test_gpu_profile_matches_the_reference_constants():
    gpu = get_profile("gpu")
    assert (gpu.seq_len, gpu.vocab_size, gpu.eval_tokens, gpu.budget_seconds) == (2048, 8192, 20_971_520, 300.0)


@pytest.mark.parametrize("name", sorted(PROFILES))
def test_profiles_are_consistent(name):
    profile = PROFILES[name]
    assert profile.name == name
    assert profile.eval_tokens % profile.seq_len == 0  # whole evaluation rows
    assert profile.vocab_size >= 256 + 4
    assert profile.vocab_size <= 2**16  # token arrays are stored as uint16


def test_cpu_profile_is_smaller_than_gpu():
    cpu, gpu = PROFILES["cpu"], PROFILES["gpu"]
    assert cpu.seq_len < gpu.seq_len and cpu.eval_tokens < gpu.eval_tokens and cpu.budget_seconds < gpu.budget_seconds


def test_unknown_profile_names_the_known_ones():
    with pytest.raises(DataError, match="choose one of gpu \\| cpu"):
        get_profile("tpu")
    assert get_profile(PROFILES["cpu"]) is PROFILES["cpu"]
