"""The one exception the lab raises for problems an operator must fix."""


class LabError(Exception):
    """A lab operation cannot proceed; the message says what to do."""
