"""The one exception type for mistakes a user can make (bad flags, missing data, corrupted files)."""


class UserError(Exception):
    """Raised for user-caused problems; the CLIs print its message on one line and exit non-zero."""


def describe_os_error(error: OSError) -> str:
    """One line for a file-system error: the path and the cause ("Permission denied", ...)."""
    cause = error.strerror or str(error) or type(error).__name__
    names = [str(name) for name in (error.filename, error.filename2) if name is not None]
    return f"{' -> '.join(names)}: {cause}" if names else cause
