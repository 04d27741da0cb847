"""The library's error type: messages say what was wrong, where, and what was expected."""


class PrposeError(ValueError):
    """Bad input (file, array, argument) detected by prpose; the message is meant for the user."""
