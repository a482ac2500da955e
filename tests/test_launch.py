"""Where bubblewrap cannot run: the offline proposer runs unsandboxed with a warning, a model's code does not
run at all unless the user says --no-sandbox, and the rows of such a run say so."""
import pytest

from autoresearch_kernel.errors import AutoresearchError
from autoresearch_kernel.execution.launch import choose_sandbox
from autoresearch_kernel.integrity import jail


@pytest.fixture
def no_bubblewrap(monkeypatch):
    monkeypatch.setenv("PATH", "/nonexistent")
    jail.unavailable_reason.cache_clear()
    yield
    jail.unavailable_reason.cache_clear()


def test_the_jail_is_used_where_it_can_be_made():
    if jail.unavailable_reason() is not None:
        pytest.skip("bubblewrap cannot run here")
    assert choose_sandbox(True, "llm") == (True, "")


def test_without_bubblewrap_mutate_runs_unsandboxed_with_a_warning(no_bubblewrap):
    jailed, warning = choose_sandbox(True, "mutate")
    assert not jailed and "WITHOUT the sandbox" in warning and "apt-get install bubblewrap" in warning


def test_without_bubblewrap_a_models_code_is_refused_with_what_to_do(no_bubblewrap):
    with pytest.raises(AutoresearchError) as refused:
        choose_sandbox(True, "llm")
    message = str(refused.value)
    assert "needs the sandbox" in message and "apt-get install bubblewrap" in message and "--no-sandbox" in message
    assert "\n" not in message


def test_no_sandbox_is_the_users_explicit_choice(no_bubblewrap):
    jailed, warning = choose_sandbox(False, "llm")
    assert not jailed and "--no-sandbox" in warning
