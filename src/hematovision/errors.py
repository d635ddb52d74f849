"""The exceptions that reach users as a one-line message (and, on the web, a status code)."""

import sys
from collections.abc import Callable


class HematoVisionError(Exception):
    """A problem with the user's input or environment, reported without a traceback."""

    exit_code = 2
    code = "bad_input"  # a stable name for the kind of problem (APIs, per-image results)


class TrainingInterrupted(HematoVisionError):
    """Training was stopped (Ctrl-C); a resumable checkpoint was written."""

    exit_code = 130
    code = "interrupted"


class ImageNotFound(HematoVisionError):
    """The path names no file."""

    code = "not_found"


class UnreadableImage(HematoVisionError):
    """The bytes are not a decodable image (or one too small to classify)."""

    code = "unreadable_image"


class ImageTooLarge(HematoVisionError):
    """The image has more pixels than is safe to decode."""

    code = "image_too_large"


def exit_on_error(main: Callable[[], object]) -> None:
    """Run a script's ``main``; a HematoVisionError (a failed export check, a missing run)
    ends it with one line and the error's exit code instead of a traceback."""
    try:
        main()
    except HematoVisionError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(exc.exit_code)
