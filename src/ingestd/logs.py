"""Structured logs: JSON lines for `docker logs`, readable console output on a TTY.

Every event names the file it concerns and its outcome. Values that look like secrets are
masked by a processor, so no code path can leak an API key by logging a setting or an error.
"""

from __future__ import annotations

import logging
import re
import sys
import warnings
from collections.abc import MutableMapping
from contextlib import AbstractContextManager
from typing import Any

import structlog

_SECRET_KEYS = re.compile(r"(api[_-]?key|token|password|secret|authorization)", re.IGNORECASE)
_SECRET_VALUES = re.compile(
    r"(sk-[A-Za-z0-9_\-]{12,}|pa-[A-Za-z0-9_\-]{12,}|(?i:bearer)\s+[A-Za-z0-9._\-]{12,}"
    r"|(?i:api[_-]?key)[=:]\s*[^\s,&'\"]{6,})"
)
_known_secrets: set[str] = set()


def register_secret(value: str | None) -> None:
    """Remember a configured secret so that any log line containing it is masked."""
    if value and len(value) >= 6:
        _known_secrets.add(value)


def mask(text: str) -> str:
    for secret in _known_secrets:
        text = text.replace(secret, "[REDACTED]")
    return _SECRET_VALUES.sub("[REDACTED]", text)


def _redact(_: Any, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    for key, value in list(event.items()):
        if _SECRET_KEYS.search(key) and key not in {"tokens", "chunk_tokens"}:
            if value not in (None, "", 0) and not isinstance(value, bool | int | float):
                event[key] = "[REDACTED]"
        elif isinstance(value, str):
            event[key] = mask(value)
    return event


def _name_the_file(_: Any, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """Every line has a `path`: the file (or files) it concerns, bound by the caller, else "-"."""
    event.setdefault("path", "-")
    return event


def _library_outcome(_: Any, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """A library's own line (pypdf's "Ignoring wrong pointing object") reports, and work goes on."""
    event.setdefault("outcome", "continued")
    return event


class _ToStdout(logging.Handler):
    """The current sys.stdout, looked up per record like structlog's loggers (tests replace it)."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            print(self.format(record), file=sys.stdout, flush=True)
        except Exception:  # a log line must never take the daemon down
            self.handleError(record)


def _warning_as_event(
    message: Warning | str, category: type[Warning], filename: str, lineno: int, *_: Any, **__: Any
) -> None:
    structlog.get_logger("py.warnings").warning(
        "library.warning",
        category=category.__name__,
        message=str(message),
        source=f"{filename}:{lineno}",
        outcome="continued",
    )


def configure_logging(level: str = "INFO", fmt: str = "auto") -> None:
    """Configure structlog once per process; safe to call again (tests, CLI subcommands).

    Libraries' `logging` records and Python warnings become the same structured lines, naming the
    file bound with `concerning`: bare text in `docker logs` would name neither file nor outcome.
    """
    use_json = fmt == "json" or (fmt == "auto" and not sys.stdout.isatty())
    renderer: Any = (
        structlog.processors.JSONRenderer()
        if use_json
        else structlog.dev.ConsoleRenderer(colors=sys.stdout.isatty())
    )
    first: list[Any] = [
        structlog.contextvars.merge_contextvars,
        _name_the_file,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    last: list[Any] = [structlog.processors.format_exc_info, _redact, renderer]
    handler = _ToStdout()
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, *last],
            foreign_pre_chain=[*first, structlog.stdlib.add_logger_name, _library_outcome],
        )
    )
    root = logging.getLogger()
    root.handlers = [handler]
    root.setLevel(max(logging.WARNING, logging.getLevelName(level)))  # libraries: warnings and up
    warnings.showwarning = _warning_as_event
    structlog.configure(
        processors=[*first, *last],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level)),
        # Looked up per logger, so a replaced sys.stdout (tests, daemonisation) is honoured.
        logger_factory=lambda *_: structlog.PrintLogger(sys.stdout),
        cache_logger_on_first_use=False,
    )


def get_logger(name: str) -> Any:
    return structlog.get_logger(name)


def concerning(path: str) -> AbstractContextManager[None]:
    """Lines logged inside (by any module, a provider say) name `path` unless they name their own."""
    return structlog.contextvars.bound_contextvars(path=path)
