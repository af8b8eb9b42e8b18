"""The errors whose message says what to fix (a bad input, a run that failed): the command line prints them as
one `error:` line with their exit status, and Prefect's logs show them without a traceback."""
from __future__ import annotations

import logging
import sys

# Errors whose message names the file or setting and what to fix, by (module, class), with the exit status:
# 2 for a bad input, 1 for a run that failed. They are printed as one `error:` line; any other error is a bug
# and keeps its traceback. Looked up among the loaded modules: an error was raised by a module already loaded,
# and `ask` need not import the flows to report a folder without a model.
KNOWN_ERRORS = {
    ("memorize.checks", "InputError"): 2,
    ("memorize.evaluation", "QuestionFileError"): 2,
    ("memorize.extract", "ExtractionError"): 2,
    ("memorize.models", "ModelLoadError"): 2,
    ("memorize.training", "TrainingInputError"): 2,
    ("memorize.llm", "EndpointError"): 1,
    ("memorize.hub", "HubError"): 1,
    ("memorize.local_model", "ModelSetupError"): 1,
    ("memorize.local_server", "ServerError"): 1,
    ("flows.finetune", "SharedStorageError"): 1,
    ("flows.pipeline", "PoolTimeoutError"): 1,
}


def known_error_status(exc: BaseException) -> int | None:
    for (module, name), status in KNOWN_ERRORS.items():
        cls = getattr(sys.modules.get(module), name, None)
        if cls is not None and isinstance(exc, cls):
            return status
    return None


class _KnownErrorsWithoutTraceback(logging.Filter):
    """Prefect logs a failed flow or task run's exception with its traceback: for a known error the message
    says it all."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and known_error_status(record.exc_info[1]) is not None:
            record.exc_info = record.exc_text = None
        return True


QUIET_KNOWN_ERRORS = _KnownErrorsWithoutTraceback()
