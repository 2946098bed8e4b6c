"""Reading the text files the CLI loads: UTF-8 only, and an error that names the line that is not."""

from pathlib import Path


class TextFileError(Exception):
    """The file cannot be read as UTF-8 text; the message is one line."""


def read_utf8(path):
    """Return the text of the file at ``path`` (UTF-8, a leading BOM dropped), or raise ``TextFileError``."""
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise TextFileError(f"cannot read {path}: {exc.strerror or exc}") from None
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        column = exc.start - (data.rfind(b"\n", 0, exc.start) + 1) + 1
        raise TextFileError(
            f"{path}: line {line} is not UTF-8 (byte 0x{data[exc.start]:02x} at column {column});"
            " save the file as UTF-8"
        ) from None
