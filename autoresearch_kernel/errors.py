"""The project's own exceptions: errors a user can cause, each with a message that says what to do."""


class AutoresearchError(Exception):
    """Base of every error the user can cause; the CLI prints its message as one line and exits 2."""


class DataError(AutoresearchError):
    """Prepared data is missing, partial, corrupt or was prepared with other settings."""


class SourceError(AutoresearchError):
    """A data source cannot be read: unknown name, empty folder, undecodable or corrupt file, failed download."""


class EvaluationError(AutoresearchError):
    """The model cannot be scored honestly (wrong output shape, non-finite loss, peeks at future tokens)."""


class WorkspaceError(AutoresearchError):
    """The git repository or the run tag is not in a state the loop can work with."""


class ProposalError(AutoresearchError):
    """A proposer's reply does not parse or does not apply to the sandbox notebook."""


class IntegrityError(AutoresearchError):
    """The harness or the prepared data changed under the loop, or a candidate left its sandbox."""


class ProposerUnavailable(AutoresearchError):
    """The LLM endpoint keeps failing (network, rate limit, server error) after retries: the loop pauses."""


class IdeaMemoryError(AutoresearchError):
    """The idea memory (runs/memory.sqlite) cannot be written: locked by another process too long, or a full disk."""


class StepRefused(AutoresearchError):
    """An agent's `autoresearch step` cannot go ahead: nothing changed, both sandbox files changed, the tag is
    busy or its baseline is not done. Nothing was committed or run."""
