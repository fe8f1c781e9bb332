"""The run's console log: an expected NO-GO reads as a verdict, not as a crash.

A failed blocking check makes Dagster raise DagsterAssetCheckFailedError in the check's step; that is
how it stops everything downstream (promoted_model), and the run's event log keeps it with its stack
trace. On the console the same event would print as an ERROR with a stack trace, three more times
over (the step, each step it holds back, the run). This logger prints them as one WARNING line each,
naming the failed checks; a step that fails for any other reason prints as Dagster prints it,
traceback included.
"""

from __future__ import annotations

import logging
import re

import dagster as dg

CHECK_FAILED = "DagsterAssetCheckFailedError"
# Dagster's line for a step it does not start: upstream steps that failed and/or were not started themselves
HELD_BACK = re.compile(r"Dependencies for step (?P<step>\S+)(?: failed: \[(?P<failed>[^\]]*)\])?"
                       r"(?: were not executed: \[(?P<skipped>[^\]]*)\])?\. Not executing\.")
RUN_FAILED = re.compile(r"Steps failed: \[(?P<steps>[^\]]*)\]")


def _keys(listed: str) -> set[str]:
    return {key.strip(" '\"") for key in listed.split(",") if key.strip()}


def failed_checks(error_message: str) -> list[str]:
    """``asset.check`` names from DagsterAssetCheckFailedError's message (a header line, then one
    ``asset: check`` line per failed check)."""
    return [line.strip().replace(": ", ".", 1) for line in error_message.splitlines()[1:] if ": " in line]


class NoGoRun:
    """What one run's console has seen of its NO-GO: the steps whose blocking checks failed and the steps
    held back by them (Dagster builds a run's loggers more than once, so this lives per run, not per logger)."""

    def __init__(self) -> None:
        self.checks: dict[str, list[str]] = {}  # step key -> the checks that failed in it
        self.held_back: set[str] = set()

    def explained(self, steps: set[str]) -> bool:
        return bool(self.checks) and steps <= self.checks.keys() | self.held_back

    def names(self) -> str:
        return ", ".join(sorted({c for checks in self.checks.values() for c in checks}))


class VerdictFilter(logging.Filter):
    """Rewrites, on the console only, the records an expected blocking-check failure produces."""

    runs: dict[str, NoGoRun] = {}  # run id -> what its console has seen

    def filter(self, record: logging.LogRecord) -> bool:
        event = getattr(record, "dagster_event", None)
        run = self.runs.setdefault(getattr(record, "dagster_meta", {}).get("run_id") or "", NoGoRun())
        head = str(record.msg).split("\n\n", 1)[0]  # the line before Dagster's error string and stack trace
        if event is not None and event.is_step_failure and event.step_failure_data.error.cls_name == CHECK_FAILED:
            checks = failed_checks(event.step_failure_data.error.message)
            run.checks[event.step_key] = checks
            return _warn(record, f"{head} NO-GO: blocking check {', '.join(checks)} failed (its values: the "
                                 "check's metadata); steps that depend on it do not start")
        if event is not None and event.event_type == dg.DagsterEventType.RUN_FAILURE:
            steps = RUN_FAILED.search(head)
            if steps and run.explained(_keys(steps["steps"])):
                return _warn(record, f"{head.split(' - Execution of run')[0]} - NO-GO: the run stopped at its "
                                     f"blocking checks ({run.names()}); no step crashed")
        held = HELD_BACK.search(head)
        if held and run.explained(_keys(held["failed"] or "") | _keys(held["skipped"] or "")):
            run.held_back.add(held["step"])
            return _warn(record, f"{head[:held.start()]}{held['step']} not started: NO-GO ({run.names()} failed)")
        return True


def _warn(record: logging.LogRecord, message: str) -> bool:
    record.levelno, record.levelname = logging.WARNING, "WARNING"
    record.msg, record.args = message, ()
    return True


@dg.logger(dg.colored_console_logger.config_schema,
           description="Dagster's colored console logger; a failed blocking check prints as a NO-GO line, "
                       "without a stack trace (the event log keeps it).")
def verdict_console_logger(init_context: dg.InitLoggerContext) -> logging.Logger:
    logger = dg.colored_console_logger.logger_fn(init_context)
    logger.addFilter(VerdictFilter())
    return logger
