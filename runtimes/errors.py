"""Errors the command line reports as one line (no traceback). numpy-free, torch-free."""


class UserError(Exception):
    """Bad input from the user: a clear one-line message, non-zero exit."""


class MissingExtraError(UserError):
    """An optional dependency is not installed; the message names the pip extra."""

    def __init__(self, module: str, extra: str) -> None:
        super().__init__(f"{module} is not installed: pip install 'rdsrn[{extra}]'")
        self.module = module
        self.extra = extra
