"""Command-line flags generated from the config dataclasses: one flag per field, its help from the
field's docstring, its bounds from the field's "range", its name from the field (or "flag" in the
field's metadata), an environment variable from "envvar". Every flag defaults to None (or to the
command's own default), so that a YAML file, a preset or the dataclass default applies unless the flag
is given.

    @dataclass_flags(ServeConfig)
    def serve(**values):
        cfg = take(ServeConfig, values)
"""

from __future__ import annotations

import dataclasses
from typing import get_type_hints

import click

from chatgentitle.config import field_docs

_KINDS = {int: int, float: float, int | None: int, float | None: float}


def dataclass_flags(cls, skip: tuple[str, ...] = (), only: tuple[str, ...] | None = None,
                    defaults: dict | None = None):
    """A decorator adding one flag per field of `cls` (all but `skip`, or only `only`); `defaults`
    replaces the dataclass's default for this command."""
    types, docs, defaults = get_type_hints(cls), field_docs(cls), defaults or {}

    def add(func):
        for option in reversed(dataclasses.fields(cls)):
            if option.name in skip or (only is not None and option.name not in only):
                continue
            flag = option.metadata.get("flag") or "--" + option.name.replace("_", "-")
            default = option.default if option.default is not dataclasses.MISSING else option.default_factory()
            default = defaults.get(option.name, default)
            shown = ",".join(default) if isinstance(default, list | tuple) else default
            extra = {"help": f"{docs[option.name]} [default: {shown}]", "default": defaults.get(option.name),
                     "envvar": option.metadata.get("envvar")}
            if types[option.name] is bool:
                func = click.option(f"{flag}/--no-{flag[2:]}", option.name, **extra)(func)
                continue
            if "phrases" in option.metadata:  # repeatable: --include A --include "B C"
                func = click.option(flag, option.name, multiple=True, help=extra["help"])(func)
                continue
            kind = _KINDS.get(types[option.name], str)  # str, lists (comma-separated), optional paths: text
            if "range" in option.metadata:
                low, high = option.metadata["range"]
                kind = click.IntRange(low, high) if kind is int else click.FloatRange(low, high)
            func = click.option(flag, option.name, type=kind, **extra)(func)
        return func

    return add


def given(cls, values: dict) -> dict:
    """The flags of `cls` that were given, popped from a command's keyword arguments."""
    names = {f.name for f in dataclasses.fields(cls)}
    return {name: value for name in list(values) if name in names and (value := values.pop(name)) is not None}


def take_given(cls, values: dict, **fixed) -> dict:
    """The given flags of `cls` (popped from `values`) and `fixed`, checked as `take` checks them: what a
    request gives over a source's own defaults (titling.generator.options_for)."""
    chosen = given(cls, values) | fixed
    take(cls, dict(chosen))
    return chosen


def take(cls, values: dict, **fixed):
    """`cls` from the given flags (popped from `values`) and `fixed`; a bad value is a one-line error."""
    try:
        return cls(**given(cls, values) | fixed)
    except (TypeError, ValueError) as err:
        raise click.ClickException(str(err)) from None
