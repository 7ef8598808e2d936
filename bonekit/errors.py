"""The one exception type BoneKit raises for bad input."""


class BoneKitError(Exception):
    """Bad input or an impossible request, with a message the user can act on.

    The message says what is wrong and what to do about it; the command line
    prints it on one line without a traceback and exits with status 2.
    """
