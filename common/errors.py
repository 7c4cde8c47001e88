"""The one exception type for mistakes a user can make (bad flags, missing data, corrupted files)."""


class UserError(Exception):
    """Raised for user-caused problems; the CLIs print its message on one line and exit non-zero."""
