"""The one exception type that reaches users as a one-line message."""


class HematoVisionError(Exception):
    """A problem with the user's input or environment, reported without a traceback."""

    exit_code = 2


class TrainingInterrupted(HematoVisionError):
    """Training was stopped (Ctrl-C); a resumable checkpoint was written."""

    exit_code = 130


class UnreadableImage(HematoVisionError):
    """The bytes are not a decodable image."""


class ImageTooLarge(HematoVisionError):
    """The image has more pixels than is safe to decode."""
