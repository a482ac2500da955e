"""The LLM proposer: one chat completion per proposal through the `openai` client, any compatible endpoint.

The prompt is program.md (as the system message) and, as the user message, the sandbox in percent format,
the results so far (so ideas are not repeated), and for a crash fix the failure excerpt. The reply format is
`edits.py`'s. A reply that does not parse or apply is re-asked once with the error; a second bad reply raises
`ProposalError` carrying the usage spent. Network errors, timeouts, rate limits (429) and server errors (5xx)
are retried here with exponential backoff (Retry-After honoured) and then raise `ProposerUnavailable`; the
client's own retries are off so these are the only ones.

Settings (constructor options first, then the environment):
    model            AUTORESEARCH_MODEL          required
    base_url         OPENAI_BASE_URL             default: the client's (api.openai.com)
    api_key          OPENAI_API_KEY              required for api.openai.com; a placeholder elsewhere
    price_prompt     AUTORESEARCH_PRICE_PROMPT       USD per 1M prompt tokens (cost is recorded when set)
    price_completion AUTORESEARCH_PRICE_COMPLETION   USD per 1M completion tokens
"""

from __future__ import annotations

import email.utils
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import openai

from autoresearch_kernel.errors import ProposalError, ProposerUnavailable
from autoresearch_kernel.proposers.base import HistoryEntry, Proposal, ProposalContext, Usage, proposal_error
from autoresearch_kernel.proposers.edits import REPLY_FORMAT_HINT, apply_reply, notebook_to_text

SANDBOX_PATH = "notebooks/train_template.ipynb"
# HTTP statuses worth retrying: request timeout, conflict, rate limit, and every server-side error.
RETRY_STATUSES = (408, 409, 429)
FAILURE_CHARS = 4000        # the tail of a failure excerpt that goes into a fix prompt
DESCRIPTION_CHARS = 200     # results.tsv keeps one short line per experiment


@dataclass
class LLMSettings:
    """Where and how to ask; `resolve` fills what the caller left out from the environment."""

    model: str
    base_url: str | None = None
    api_key: str | None = field(default=None, repr=False)     # never in a repr, a log or a status line
    timeout_s: float = 600.0            # one request; a long reply from a slow local model can take minutes
    retries: int = 5                    # extra attempts after the first, for retryable failures
    backoff_s: float = 2.0              # first wait; doubles per attempt
    backoff_max_s: float = 120.0        # cap on one wait, Retry-After included
    price_prompt: float | None = None   # USD per 1M prompt tokens
    price_completion: float | None = None
    temperature: float | None = None    # None: the endpoint's default
    max_tokens: int | None = None       # None: the endpoint's default
    history_limit: int = 100            # most recent results shown in the prompt

    @classmethod
    def resolve(cls, model: str | None = None, base_url: str | None = None, api_key: str | None = None,
                price_prompt: float | None = None, price_completion: float | None = None,
                **options) -> LLMSettings:
        env = os.environ
        model = model or env.get("AUTORESEARCH_MODEL")
        if not model:
            raise ProposerUnavailable("no model named for the llm proposer: pass --model or set "
                                      "AUTORESEARCH_MODEL")
        base_url = base_url or env.get("OPENAI_BASE_URL") or None
        api_key = api_key or env.get("OPENAI_API_KEY") or None
        if api_key is None:
            if base_url is None:
                raise ProposerUnavailable("no API key for api.openai.com: set OPENAI_API_KEY, or point "
                                          "--base-url / OPENAI_BASE_URL at a local OpenAI-compatible server")
            api_key = "unused"      # local servers (Ollama, llama.cpp, vLLM) ignore it; the client needs one
        price_prompt = price_prompt if price_prompt is not None else _env_float("AUTORESEARCH_PRICE_PROMPT")
        price_completion = (price_completion if price_completion is not None
                            else _env_float("AUTORESEARCH_PRICE_COMPLETION"))
        return cls(model=model, base_url=base_url, api_key=api_key, price_prompt=price_prompt,
                   price_completion=price_completion, **options)

    def cost(self, prompt_tokens: int, completion_tokens: int) -> float | None:
        if self.price_prompt is None and self.price_completion is None:
            return None
        return (prompt_tokens * (self.price_prompt or 0.0)
                + completion_tokens * (self.price_completion or 0.0)) / 1e6


def _env_float(name: str) -> float | None:
    value = os.environ.get(name, "").strip()
    if not value:
        return None
    try:
        return float(value)
    except ValueError:
        raise ProposerUnavailable(f"{name}={value!r} is not a number: set it to USD per 1M tokens, "
                                  "e.g. 0.15") from None


# ---------------------------------------------------------------------------------------------------------
# the prompt

def format_history(history: list[HistoryEntry], limit: int) -> str:
    if not history:
        return "No experiments yet: the first run measures the unmodified notebook (the baseline)."
    shown = history[-limit:]
    lines = ["| # | status | val_bpb | description |", "|---|---|---|---|"]
    for entry in shown:
        bpb = "-" if entry.val_bpb is None else f"{entry.val_bpb:.6f}"
        lines.append(f"| {entry.number} | {entry.status} | {bpb} | {entry.description} |")
    if len(shown) < len(history):
        lines.append(f"({len(history) - len(shown)} earlier experiments are not shown.)")
    return "\n".join(lines)


def build_prompt(context: ProposalContext, history_limit: int = 100) -> str:
    """The user message: the sandbox as code, the results so far, and the task (a new idea or a fix)."""
    best = ("" if context.best_val_bpb is None
            else f"Best val_bpb so far: {context.best_val_bpb:.6f} (lower is better).\n\n")
    # The profile picks which branch of `if run.profile.name == ...:` runs: an edit to the other one is lost.
    runs_as = ""
    if context.profile is not None:
        on_device = "" if context.device is None else f' on DEVICE = "{context.device}"'
        runs_as = (f' The experiments run with PROFILE = "{context.profile}" '
                   f'(so `run.profile.name == "{context.profile}"`){on_device}.')
    parts = [
        f"## The sandbox: {SANDBOX_PATH}\n"
        "Percent format: each `# %%` line starts a cell. Cells marked harness-owned belong to the harness; "
        f"a change to them is rejected.{runs_as}\n\n"
        f"```python\n{notebook_to_text(context.notebook)}```",
        f"## Results so far\n{best}{format_history(context.history, history_limit)}",
    ]
    if context.failure:
        excerpt = context.failure[-FAILURE_CHARS:]
        parts.append(
            "## The last experiment crashed\n"
            "The notebook above is the version that crashed. The end of its failure:\n\n"
            f"```\n{excerpt.rstrip()}\n```\n\n"
            "Fix the bug with the smallest edit that keeps the idea. Start the description with `fix:`.")
    else:
        parts.append(
            "## Your task\n"
            "Propose the next experiment: one idea, not already tried above, that may lower val_bpb within "
            "the same budget.")
    parts.append(REPLY_FORMAT_HINT)
    return "\n\n".join(parts) + "\n"


# ---------------------------------------------------------------------------------------------------------
# the proposer

class LLMProposer:
    """Proposals from a chat model. Options: see `LLMSettings` (and the module docstring for the env vars);
    `sleep` is the wait between retries (tests pass a recorder)."""

    name = "llm"
    fixes_crashes = True        # it can read a traceback and repair the notebook

    def __init__(self, sleep: Callable[[float], None] = time.sleep, **options):
        self.settings = LLMSettings.resolve(**options)
        self.sleep = sleep
        # max_retries=0: the retries (and their backoff) are ours, counted and bounded in one place.
        self.client = openai.OpenAI(api_key=self.settings.api_key, base_url=self.settings.base_url,
                                    timeout=self.settings.timeout_s, max_retries=0)

    def propose(self, context: ProposalContext) -> Proposal:
        messages = [{"role": "system", "content": context.program},
                    {"role": "user", "content": build_prompt(context, self.settings.history_limit)}]
        usage = Usage()
        first_error = None
        for attempt in range(2):        # the reply, and one re-ask with the error
            try:
                text, finish_reason, spent = self._chat(messages)
            except ProposerUnavailable as error:
                error.usage = usage + getattr(error, "usage", Usage())
                raise
            usage = usage + spent
            try:
                description, notebook = apply_reply(context.notebook, text)
            except ProposalError as error:
                problem = str(error)
                if finish_reason == "length":
                    problem += (" (the reply was cut off at the token limit: use SEARCH/REPLACE blocks, "
                                "which are short)")
                if attempt == 1:
                    raise proposal_error(f"the reply still does not apply after one re-ask: {problem} "
                                         f"(first reply: {first_error})", usage) from None
                first_error = problem
                messages += [{"role": "assistant", "content": text},
                             {"role": "user", "content": f"Your reply could not be applied: {problem}\n\n"
                                                         f"Send the whole corrected reply. {REPLY_FORMAT_HINT}"}]
                continue
            description = " ".join(description.split())[:DESCRIPTION_CHARS]
            return Proposal(description=description, notebook=notebook, usage=usage)
        raise AssertionError("unreachable")

    def feedback(self, proposal: Proposal, status: str) -> None:
        """Nothing to adapt: the results table in the next prompt carries the outcome."""

    # -- one request, with retries -------------------------------------------------------------------------
    def _chat(self, messages: list[dict]) -> tuple[str, str | None, Usage]:
        settings = self.settings
        extra = {key: value for key, value in (("temperature", settings.temperature),
                                               ("max_tokens", settings.max_tokens)) if value is not None}
        where = settings.base_url or "api.openai.com"
        last = ""
        for attempt in range(settings.retries + 1):
            try:
                response = self.client.chat.completions.create(model=settings.model, messages=messages,
                                                               **extra)
            except openai.APIStatusError as error:
                status = error.status_code
                last = f"HTTP {status}: {_error_text(error)}"
                if status not in RETRY_STATUSES and status < 500:
                    raise ProposerUnavailable(f"the LLM endpoint {where} refused the request ({last}); "
                                              f"{_advice(status)}") from None
                delay = _retry_after(error.response)
            except openai.APIConnectionError as error:          # includes timeouts
                last = f"{type(error).__name__}: {error}"
                delay = None
            except openai.OpenAIError as error:                 # e.g. a response that is not a completion
                raise ProposerUnavailable(f"the LLM endpoint {where} answered with something unusable "
                                          f"({type(error).__name__}: {error}); check --base-url") from None
            else:
                return _read(response, settings)
            if attempt < settings.retries:
                backoff = settings.backoff_s * 2 ** attempt
                self.sleep(min(delay if delay is not None else backoff, settings.backoff_max_s))
        raise ProposerUnavailable(f"the LLM endpoint {where} still fails after {settings.retries + 1} "
                                  f"attempts (last: {last}); check that it is up, then resume the loop")


def _read(response, settings: LLMSettings) -> tuple[str, str | None, Usage]:
    usage = response.usage
    prompt_tokens = (usage.prompt_tokens or 0) if usage else 0
    completion_tokens = (usage.completion_tokens or 0) if usage else 0
    spent = Usage(prompt_tokens, completion_tokens, settings.cost(prompt_tokens, completion_tokens))
    if not response.choices:
        return "", None, spent
    choice = response.choices[0]
    return choice.message.content or "", choice.finish_reason, spent


def _retry_after(response) -> float | None:
    """Seconds from Retry-After (seconds or an HTTP date) or retry-after-ms; None when absent or unreadable."""
    headers = response.headers if response is not None else {}
    if headers.get("retry-after-ms"):
        try:
            return max(0.0, float(headers["retry-after-ms"]) / 1000)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        try:
            return max(0.0, email.utils.parsedate_to_datetime(value).timestamp() - time.time())
        except (TypeError, ValueError):
            return None


def _error_text(error: openai.APIStatusError) -> str:
    """The server's own message (the client parses the `error` object of the body), shortened."""
    body = error.body if isinstance(error.body, dict) else {}
    return str(body.get("message") or error.message)[:300]


def _advice(status: int) -> str:
    return {401: "check OPENAI_API_KEY",
            403: "check that the key may use this model",
            404: "check --model / AUTORESEARCH_MODEL and --base-url / OPENAI_BASE_URL (it usually ends in /v1)",
            }.get(status, "check the model name and the endpoint's limits (context length, request size)")
