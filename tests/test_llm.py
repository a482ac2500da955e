"""The LLM proposer through the real openai client against the scripted server on 127.0.0.1."""

import pytest
from llm_server import Reply, ScriptedLLM, scripted_llm  # noqa: F401  (scripted_llm is a fixture)
from sandbox_fixture import sandbox_notebook

from autoresearch_kernel.errors import ProposalError, ProposerUnavailable
from autoresearch_kernel.proposers import HistoryEntry, ProposalContext, Usage, make_proposer, usage_of
from autoresearch_kernel.proposers.llm import LLMProposer, build_prompt

PROGRAM = "# program.md\nLower val_bpb. Edit only the agent's cells."
GOOD = """Description: raise the matrix learning rate
<<<<<<< SEARCH
MATRIX_LR = 0.04        # learning rate of the block matrices
=======
MATRIX_LR = 0.06        # learning rate of the block matrices
>>>>>>> REPLACE
"""
BAD = "Description: no edit here, just talk"


def proposer(llm, **options):
    """A proposer on the scripted server."""
    return LLMProposer(base_url=llm.base_url, api_key="sk-test-secret", model="scripted", **options)


def context(**overrides):
    values = dict(program=PROGRAM, notebook=sandbox_notebook(), best_val_bpb=1.234567, history=[
        HistoryEntry(0, "baseline", "keep", 1.234567),
        HistoryEntry(1, "DEPTH 4 -> 6", "discard", 1.25),
        HistoryEntry(2, "swap in a GELU", "crash", None),
    ])
    values.update(overrides)
    return ProposalContext(**values)


def test_valid_reply_becomes_a_proposal_with_usage_and_cost(scripted_llm):
    scripted_llm.push(Reply(GOOD, prompt_tokens=1000, completion_tokens=50))
    result = proposer(scripted_llm, price_prompt=2.0, price_completion=10.0).propose(context())
    assert result.description == "raise the matrix learning rate"
    assert "MATRIX_LR = 0.06" in result.notebook.cells[3].source
    assert result.usage == Usage(1000, 50, pytest.approx((1000 * 2.0 + 50 * 10.0) / 1e6))
    request = scripted_llm.requests[0]
    assert request["model"] == "scripted"
    assert request["messages"][0] == {"role": "system", "content": PROGRAM}
    prompt = request["messages"][1]["content"]
    # The sandbox as code, the results so far, the task and the reply format; never the key.
    assert '# %% (harness-owned: do not edit) tags=["harness"]\nharness.finish(run, model)' in prompt
    assert "| 1 | discard | 1.250000 | DEPTH 4 -> 6 |" in prompt and "| 2 | crash | - | swap in a GELU |" in prompt
    assert "Best val_bpb so far: 1.234567" in prompt and "not already tried" in prompt
    assert "<<<<<<< SEARCH" in prompt and "crashed" not in prompt
    assert "sk-test-secret" not in scripted_llm.prompt()
    assert "sk-test-secret" not in repr(proposer(scripted_llm).settings)
    assert "PROFILE" not in prompt.split("```python")[0]        # no profile given: none claimed


def test_the_profile_and_device_are_named_in_the_prompt(scripted_llm):
    scripted_llm.push(GOOD)
    proposer(scripted_llm).propose(context(profile="gpu", device="cuda:1"))
    assert 'The experiments run with PROFILE = "gpu" (so `run.profile.name == "gpu"`) on DEVICE = "cuda:1".' \
        in scripted_llm.prompt()


def test_on_a_plateau_the_prompt_asks_for_a_structurally_different_idea(scripted_llm):
    stuck = [HistoryEntry(0, "baseline", "keep", 1.2)] + [
        HistoryEntry(n, f"MATRIX_LR step {n}", "discard", 1.25) for n in range(1, 4)] + [
        HistoryEntry(4, "not an edit", "invalid", None)]                # an invalid reply ran nothing
    scripted_llm.push(GOOD, GOOD, GOOD)
    proposer(scripted_llm, plateau_after=3).propose(context(history=stuck))
    assert "You are on a plateau: the last 3 experiments were not kept" in scripted_llm.prompt()
    assert "structurally different idea" in scripted_llm.prompt()
    proposer(scripted_llm, plateau_after=4).propose(context(history=stuck))
    assert "plateau" not in scripted_llm.prompt()
    proposer(scripted_llm, plateau_after=3).propose(context(history=stuck, failure="Traceback ..."))
    assert "plateau" not in scripted_llm.prompt()                       # a fix keeps to the idea


def test_no_prices_means_unknown_cost(scripted_llm, monkeypatch):
    monkeypatch.delenv("AUTORESEARCH_PRICE_PROMPT", raising=False)
    monkeypatch.delenv("AUTORESEARCH_PRICE_COMPLETION", raising=False)
    scripted_llm.push(Reply(GOOD, prompt_tokens=10, completion_tokens=5))
    assert proposer(scripted_llm).propose(context()).usage == Usage(10, 5, None)


def test_fix_prompt_holds_the_failure_excerpt(scripted_llm):
    scripted_llm.push(GOOD)
    failure = "Traceback (most recent call last):\n" + "x" * 10000 + "\nRuntimeError: shape mismatch [4, 8] vs [4, 9]"
    proposer(scripted_llm).propose(context(failure=failure))
    prompt = scripted_llm.prompt()
    assert "The last experiment crashed" in prompt and "RuntimeError: shape mismatch [4, 8] vs [4, 9]" in prompt
    assert "x" * 5000 not in prompt         # only the tail of a long traceback
    assert "Start the description with `fix:`" in prompt


def test_malformed_reply_is_re_asked_once_with_the_error(scripted_llm):
    scripted_llm.push(Reply(BAD, prompt_tokens=100, completion_tokens=10), Reply(GOOD, prompt_tokens=150,
                                                                                   completion_tokens=20))
    result = proposer(scripted_llm).propose(context())
    assert result.description == "raise the matrix learning rate"
    assert result.usage == Usage(250, 30, None)
    retry = scripted_llm.requests[1]["messages"]
    assert retry[2] == {"role": "assistant", "content": BAD}
    assert retry[3]["role"] == "user" and "could not be applied: the reply holds no edit" in retry[3]["content"]


def test_two_malformed_replies_raise_proposal_error_with_usage(scripted_llm):
    no_match = GOOD.replace("MATRIX_LR = 0.04 ", "MATRIX_LR = 0.03 ")
    scripted_llm.push(Reply(BAD, prompt_tokens=100, completion_tokens=10),
                      Reply(no_match, prompt_tokens=120, completion_tokens=30))
    with pytest.raises(ProposalError) as caught:
        proposer(scripted_llm).propose(context())
    assert "still does not apply after one re-ask" in str(caught.value)
    assert "block 1 (SEARCH starting `MATRIX_LR = 0.03" in str(caught.value)
    assert usage_of(caught.value) == Usage(220, 40, None)
    assert len(scripted_llm.requests) == 2


def test_truncated_reply_says_it_was_cut_off(scripted_llm):
    scripted_llm.push(Reply(GOOD[:60], finish_reason="length"), Reply(GOOD[:60], finish_reason="length"))
    with pytest.raises(ProposalError, match="cut off at the token limit"):
        proposer(scripted_llm).propose(context())


def test_rate_limits_and_server_errors_are_retried_by_the_client(scripted_llm):
    scripted_llm.push(Reply(status=429, retry_after=0.05), Reply(status=500, retry_after=0.01),
                      Reply(status=503, retry_after=0.01), GOOD)
    result = proposer(scripted_llm).propose(context())
    assert result.description == "raise the matrix learning rate"
    assert len(scripted_llm.requests) == 4
    # Retry-After honoured: the client's own first backoff would be 0.375 s or more.
    first_wait = scripted_llm.times[1] - scripted_llm.times[0]
    assert 0.05 <= first_wait < 0.3


def test_an_endpoint_that_stays_down_is_unavailable_so_the_loop_pauses(scripted_llm):
    scripted_llm.push(*[Reply(status=503, retry_after=0.01, text="overloaded")] * 3)
    with pytest.raises(ProposerUnavailable) as caught:
        proposer(scripted_llm, retries=2).propose(context())
    message = str(caught.value)
    assert "still fails after up to 3 attempts (last: HTTP 503: overloaded)" in message
    assert "sk-test-secret" not in message and len(scripted_llm.requests) == 3
    # A wait longer than the client will sleep is not retried at all: the loop's pause is the long wait.
    scripted_llm.push(Reply(status=429, retry_after=3600, text="come back in an hour"))
    with pytest.raises(ProposerUnavailable, match="HTTP 429: come back in an hour"):
        proposer(scripted_llm).propose(context())
    assert len(scripted_llm.requests) == 4


def test_auth_errors_are_not_retried(scripted_llm):
    scripted_llm.push(Reply(status=401, text="invalid api key"))
    with pytest.raises(ProposerUnavailable, match=r"refused the request \(HTTP 401.*check OPENAI_API_KEY"):
        proposer(scripted_llm).propose(context())
    assert len(scripted_llm.requests) == 1


def test_timeouts_and_a_dead_endpoint_are_retried_then_unavailable(scripted_llm):
    scripted_llm.push(Reply(GOOD, delay=1.0), GOOD)
    result = proposer(scripted_llm, timeout_s=0.2).propose(context())
    assert result.description == "raise the matrix learning rate" and len(scripted_llm.requests) == 2

    with ScriptedLLM() as gone:
        url = gone.base_url
    dead = LLMProposer(base_url=url, api_key="k", model="m", retries=1)
    with pytest.raises(ProposerUnavailable, match="still fails after up to 2 attempts.*APIConnectionError"):
        dead.propose(context())


def test_a_model_that_refuses_max_tokens_gets_max_completion_tokens_from_then_on(scripted_llm):
    scripted_llm.rejects_max_tokens = True          # as OpenAI's o-series and gpt-5 do
    scripted_llm.push(GOOD, GOOD)
    made = proposer(scripted_llm, max_tokens=4000)
    assert made.propose(context()).description == "raise the matrix learning rate"
    made.propose(context())
    sent = [{key: body.get(key) for key in ("max_tokens", "max_completion_tokens")} for body in scripted_llm.requests]
    assert sent == [{"max_tokens": 4000, "max_completion_tokens": None},
                    {"max_tokens": None, "max_completion_tokens": 4000},
                    {"max_tokens": None, "max_completion_tokens": 4000}]


def test_other_models_get_max_tokens(scripted_llm):
    scripted_llm.push(GOOD)
    proposer(scripted_llm, max_tokens=4000).propose(context())
    assert scripted_llm.requests[0]["max_tokens"] == 4000 and "max_completion_tokens" not in scripted_llm.requests[0]


def test_reasoning_is_not_read_as_the_reply(scripted_llm):
    draft = "Description: a draft\n<<<<<<< SEARCH\nNOT_IN_THE_NOTEBOOK = 1\n=======\nx\n>>>>>>> REPLACE\n"
    scripted_llm.push(Reply(f"<think>\n{draft}</think>\n{GOOD}", reasoning=draft))
    result = proposer(scripted_llm).propose(context())
    assert result.description == "raise the matrix learning rate" and len(scripted_llm.requests) == 1


def test_settings_come_from_the_environment(scripted_llm, monkeypatch):
    monkeypatch.setenv("OPENAI_BASE_URL", scripted_llm.base_url)
    monkeypatch.setenv("AUTORESEARCH_MODEL", "env-model")
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.setenv("AUTORESEARCH_PRICE_PROMPT", "1.5")
    monkeypatch.setenv("AUTORESEARCH_PRICE_COMPLETION", "3")
    made = make_proposer("llm")
    assert made.name == "llm" and made.settings.model == "env-model" and made.settings.api_key == "unused"
    assert made.settings.cost(1_000_000, 1_000_000) == 4.5
    scripted_llm.push(GOOD)
    made.propose(context())
    assert scripted_llm.requests[0]["model"] == "env-model"


def test_missing_model_or_key_is_a_clear_error(monkeypatch):
    for name in ("AUTORESEARCH_MODEL", "OPENAI_BASE_URL", "OPENAI_API_KEY"):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(ProposerUnavailable, match="AUTORESEARCH_MODEL"):
        LLMProposer()
    with pytest.raises(ProposerUnavailable, match="set OPENAI_API_KEY"):
        LLMProposer(model="gpt")


def test_the_prompt_lists_what_runs_on_other_lanes():
    prompt = build_prompt(context(running=["DEPTH 4 -> 8", "add a warmup"]))
    assert "## Running now" in prompt and "- DEPTH 4 -> 8\n- add a warmup" in prompt
    assert "## Running now" not in build_prompt(context())
