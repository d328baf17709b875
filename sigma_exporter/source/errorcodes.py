"""The job error codes Sigma documents, each with its class(es).

Sigma Media Live's monitoring page lists the codes a job's error lines carry
(`[05-26 02:32:55] Input timeout (code: INPUT_TIMEOUT)`) and sorts each into
classes: `input` (the feed reaching Sigma), `output` (what Sigma pushes or
writes: CDN, origin, disk, network), `processing` (the Sigma host itself:
GPU, memory, its own timeouts) and `config` (the job's settings). A code can
be in several classes (`IO_ERROR` is input and output: Sigma cannot say
which side failed). A code not in this table, and a line without a code, is
class `unknown`.

`seen` says when Sigma reports the code: `running` (mostly after the job ran
fine), `creation` (only when the job is created: it needs a restart of the
job once fixed) or `any`.

This table is Sigma's `error-codes.csv` written as Python, so that it ships
inside the package whatever packs it (wheel, .deb, PyInstaller);
tests/unit/source/test_errorcodes.py checks that it agrees with the copy of
the CSV in tests/fixtures/, row by row.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

INPUT: Final = "input"
OUTPUT: Final = "output"
PROCESSING: Final = "processing"
CONFIG: Final = "config"
UNKNOWN: Final = "unknown"
# The documented classes, in Sigma's order; then `unknown`, for everything else.
# Every job's `sigma_job_errors_by_class_total` has exactly these label values.
CLASSES: Final[tuple[str, ...]] = (INPUT, OUTPUT, PROCESSING, CONFIG)
CLASSES_AND_UNKNOWN: Final[tuple[str, ...]] = (*CLASSES, UNKNOWN)


@dataclass(frozen=True, slots=True)
class ErrorCode:
    code: str
    classes: tuple[str, ...]  # one or more of CLASSES
    seen: str  # running, creation or any
    meaning: str


IN, OUT, PROC, CONF = INPUT, OUTPUT, PROCESSING, CONFIG  # short names for the table


ERROR_CODES: Final[tuple[ErrorCode, ...]] = (
    ErrorCode("TIMEOUT", (IN,), "any", "job timed out: the input source lost its signal"),
    ErrorCode("PACKET_QUEUE_IS_FULL", (IN, OUT, PROC), "running",
              "packets could not be processed in time (not enough resources)"),
    ErrorCode("MEMORY_IS_FULL", (PROC,), "any", "out of RAM"),
    ErrorCode("INPUT_TIMEOUT", (IN,), "running", "input timed out (input signal lost)"),
    ErrorCode("OUTPUT_TIMEOUT", (OUT,), "running", "an output timed out (depends on that output)"),
    ErrorCode("TRANSCODE_TIMEOUT", (PROC,), "running", "the processing server had a problem"),
    ErrorCode("GOP_INVALID", (IN,), "any", "GOP cache error on the input"),
    ErrorCode("ASYNC_STREAM", (IN,), "any", "input streams out of sync (ABR)"),
    ErrorCode("ASYNC_PROFILE", (IN,), "running", "ABR profiles out of sync"),
    ErrorCode("INPUT_OUTPUT_ERROR", (IN, OUT), "any", "input and output streams failed"),
    ErrorCode("IO_ERROR", (IN, OUT), "any", "read or write error"),
    ErrorCode("CONNECTION_REFUSED", (IN, OUT), "running",
              "input or output connection refused (often: the manifest service is unreachable)"),
    ErrorCode("CONNECTION_TIMEOUT", (IN, OUT), "any", "input or output connection timed out"),
    ErrorCode("CANNOT_OPEN_CONNECTION", (IN, OUT), "any", "could not create a connection"),
    ErrorCode("URL_READ_ERROR", (IN, OUT), "any", "error reading data from a URL"),
    ErrorCode("OPTION_NOTFOUND", (CONF,), "creation", "wrong configuration option"),
    ErrorCode("PROTOCOL_NOTFOUND", (CONF,), "creation", "protocol not found"),
    ErrorCode("STREAM_NOT_FOUND", (IN,), "creation", "input stream not found"),
    ErrorCode("UNABLE_TO_OPEN_RESOURCE", (OUT,), "any", "could not initialise a resource"),
    ErrorCode("NO_ROUTE_TO_HOST", (IN, OUT), "creation", "could not open a connection (no route)"),
    ErrorCode("INVALID_ARGUMENT", (CONF,), "creation", "wrong parameter"),
    ErrorCode("INITIALIZING_OUTPUT_STREAM", (OUT,), "creation",
              "error initialising an output stream"),
    ErrorCode("CONNECTION_RESET_BY_PEER", (IN, OUT), "any", "connection reset"),
    ErrorCode("BROKEN_PIPE", (IN, OUT), "any", "broken pipe"),
    ErrorCode("NO_AUDIO_DATA", (IN,), "creation", "stream started without audio data"),
    ErrorCode("NO_VIDEO_DATA", (IN,), "creation", "stream started without video data"),
    ErrorCode("FEATURE_NOT_ENABLED", (CONF,), "any", "feature not supported or not enabled"),
    ErrorCode("CANT_START_OVERLAY", (CONF,), "any", "overlay could not be started"),
    ErrorCode("NO_SUCH_FILE_OR_DIRECTORY", (IN, OUT), "any", "file or folder could not be opened"),
    ErrorCode("END_OF_FILE", (OUT,), "any", "end of file"),
    ErrorCode("FAILED_TO_RESOLVE_HOSTNAME", (OUT,), "any", "host name could not be resolved"),
    ErrorCode("INVALID_INPUT_DATA", (IN,), "any", "invalid input data"),
    ErrorCode("CANT_SYNC_INPUT", (IN,), "any", "input could not be synchronised"),
    ErrorCode("STREAM_MISSING", (IN,), "any", "an input stream is missing"),
    ErrorCode("OPEN_ERROR", (IN, OUT), "any", "error opening an input or output"),
    ErrorCode("CLOSE_ERROR", (IN, OUT), "any", "error closing an input or output"),
    ErrorCode("SYNC_SEQUENCE", (PROC,), "any", "(no description documented)"),
    ErrorCode("INPUT_PACKET_TOO_SMALL", (IN,), "any", "malformed (too small) input packet"),
    ErrorCode("AAC_PACKET_TOO_SHORT", (IN,), "any", "AAC input packet too short"),
    ErrorCode("PPS_ID_NOT_FOUND", (IN,), "any", "H.264 PPS id not found in the input"),
)

BY_CODE: Final[dict[str, ErrorCode]] = {c.code: c for c in ERROR_CODES}
_UNKNOWN_ONLY: Final = (UNKNOWN,)


def classes_of(code: str) -> tuple[str, ...]:
    """The documented classes of `code`, or (`unknown`,) for a code Sigma does not document."""
    entry = BY_CODE.get(code)
    return entry.classes if entry is not None else _UNKNOWN_ONLY
