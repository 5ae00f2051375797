"""User-facing errors and the exit codes the CLI maps them to.

Every error a user can act on is an `NvsError` subclass carrying one clear sentence; the CLI prints
that sentence (no traceback unless `--verbose`) and exits with the class's code. The codes are
stable and documented in the README, so scripts can branch on them.
"""

from __future__ import annotations


class NvsError(Exception):
    """Base class: a problem the user can fix, reported as one sentence."""

    exit_code: int = 1


class UsageError(NvsError):
    """Options that contradict each other or values out of range."""

    exit_code = 2


class InputError(NvsError):
    """A missing, unreadable, corrupt or unsupported input file."""

    exit_code = 3


class OutputError(InputError):
    """An output or cache location that cannot be written: read-only, not ours, or a full disk."""


class NoFaceError(NvsError):
    """No face could be found where one is required."""

    exit_code = 4


class WeightsError(NvsError):
    """A model file is missing, of the wrong kind, or refused as unsafe."""

    exit_code = 5


class UnsafeCheckpointError(WeightsError):
    """A model file asks to load code or objects outside what is allowed; nothing from it was run."""


class DeviceError(NvsError):
    """The requested compute device is not available."""

    exit_code = 6


class PartialFailure(NvsError):
    """Some items of a batch failed while others succeeded."""

    exit_code = 7


class Terminated(KeyboardInterrupt):
    """SIGTERM (sent by `timeout`, containers, service managers) raised as an interruption.

    A `KeyboardInterrupt` subclass so every clean-up that handles Ctrl-C handles it too.
    """


#: Exit code used when the user interrupts a run (Ctrl-C), as shells do for SIGINT.
EXIT_INTERRUPTED = 130
#: Exit code after SIGTERM, as shells report it (128 + 15).
EXIT_TERMINATED = 143

EXIT_CODES: dict[int, str] = {
    0: "success",
    1: "internal error (a bug: please report it with the output of --verbose)",
    2: "usage error: bad option or option combination",
    3: "input error: missing, unreadable, corrupt or unsupported input; an output folder that cannot be written; a full disk",
    4: "no face found where one is required",
    5: "weights error: model file missing, wrong kind or unsafe",
    6: "device error: the requested device is not available, or too little memory for the run's settings",
    7: "batch finished with some failed items",
    130: "interrupted (Ctrl-C)",
    143: "terminated (SIGTERM, e.g. from timeout or a container stop)",
}


def exit_code_summary() -> str:
    """One line listing every exit code with its short meaning (the part before any colon or bracket)."""
    short = {code: text.split(":")[0].split(" (")[0] for code, text in EXIT_CODES.items()}
    return "Exit codes: " + "; ".join(f"{code} {text}" for code, text in short.items()) + "."
