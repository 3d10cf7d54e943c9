"""The one error class of everything a user can cause (a missing file, a bad option, an endpoint that
does not answer): the CLI prints it as one line and exits 1, the server answers it with a 4xx. Anything
else is a bug and keeps its traceback."""


class ChatGenTitleError(Exception):
    """A problem the user can fix, said in one line."""


class OptionError(ChatGenTitleError, ValueError):
    """An option or config value out of its bounds, of the wrong kind, or unknown."""


class UnknownModel(ChatGenTitleError, LookupError):
    """A model name that the server (or a run list) does not have."""


class MissingExtra(ChatGenTitleError, ImportError):
    """An optional dependency that this command needs is not installed."""


def one_line(err: Exception) -> str:
    """A user error as the CLI shows it: its message on one line (a file error: the file and why)."""
    if isinstance(err, OSError):
        return f"{err.filename}: {err.strerror or err}"
    return " ".join(str(err).split()) or type(err).__name__


def require_extra(extra: str, *modules: str) -> None:
    """MissingExtra, naming the pip command, unless every module is installed."""
    import importlib.util

    missing = [m for m in modules if importlib.util.find_spec(m) is None]
    if missing:
        raise MissingExtra(f"this needs the {extra} extra ({', '.join(missing)} not installed): "
                           f"pip install 'chatgentitle[{extra}]'")
