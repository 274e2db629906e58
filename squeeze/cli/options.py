"""Command-line options generated from a pass's typed config: the dataclass is the one source of the
option names (`--field-name`), types, defaults and help (a field's `metadata["help"]`, else the
comment beside it in the source). A field can add short flags (`metadata["flags"]`), a parser for
text (`metadata["parse"]`), or stay off the command line (`metadata["cli"] = False`)."""

from __future__ import annotations

import dataclasses
import inspect
import io
import tokenize
import types
import typing
from collections.abc import Callable
from typing import Any, Optional

import typer


SIMPLE = (int, float, str, bool)


def field_help(cls: type) -> dict[str, str]:
    """`name: type = default  # help` comments of a dataclass's source, by field name."""
    try:
        source = inspect.getsource(cls)
    except (OSError, TypeError):
        return {}
    helps: dict[str, str] = {}
    current = None
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type == tokenize.NAME and tok.start[1] == 4 and current is None:
            current = tok.string
        elif tok.type == tokenize.COMMENT and current:
            helps.setdefault(current, tok.string.lstrip("# ").strip())
        elif tok.type == tokenize.NEWLINE:
            current = None
    return helps


def _base_type(tp: Any) -> tuple[Any, bool]:
    """(the simple type of a field, whether None is allowed), or (None, _) for types the CLI cannot take."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return (args[0] if len(args) == 1 and args[0] in SIMPLE else None), True
    return (tp if tp in SIMPLE else None), False


def cli_fields(cls: type, skip: tuple[str, ...] = ()) -> list[dataclasses.Field]:
    hints = typing.get_type_hints(cls)
    out = []
    for f in dataclasses.fields(cls):
        if f.name in skip or not f.init or f.metadata.get("cli") is False:
            continue
        if _base_type(hints[f.name])[0] is None and "parse" not in f.metadata:
            continue  # nested configs and structured values are set in a recipe file, not as flags
        out.append(f)
    return out


def parameters(cls: type, skip: tuple[str, ...] = (), prefix: str = "cfg__") -> list[inspect.Parameter]:
    """One typer option per CLI-able field of `cls`, named `prefix + field` in the command's signature."""
    hints = typing.get_type_hints(cls)
    helps = field_help(cls)
    params = []
    for f in cli_fields(cls, skip):
        base, nullable = _base_type(hints[f.name])
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
        flag = "--" + f.name.replace("_", "-")
        help_text = f.metadata.get("help") or helps.get(f.name, "")
        if "parse" in f.metadata:  # structured values are written as text on the command line
            annotation, default, names = Optional[str], None, (flag,)
        elif base is bool:
            annotation, names = bool, (f"{flag}/--no-{flag[2:]}",)
        else:
            annotation, names = (Optional[base] if nullable else base), (flag,)
        names = f.metadata.get("names", names)  # a field may keep an older spelling
        option = typer.Option(default, *names, *f.metadata.get("flags", ()), help=help_text, show_default=default is not None)
        params.append(inspect.Parameter(prefix + f.name, inspect.Parameter.KEYWORD_ONLY, default=option, annotation=annotation))
    return params


def config_values(cls: type, kwargs: dict[str, Any], prefix: str = "cfg__") -> dict[str, Any]:
    """The config fields a command received (text parsed where a field has a parser), without the prefix."""
    fields = {f.name: f for f in dataclasses.fields(cls)}
    values = {}
    for key, value in kwargs.items():
        if not key.startswith(prefix):
            continue
        name = key[len(prefix):]
        parse: Callable[[str], Any] | None = fields[name].metadata.get("parse")
        if parse is not None:
            if value is None:
                continue
            value = parse(value)
        values[name] = value
    return values


def with_signature(fn: Callable[..., Any], params: list[inspect.Parameter]) -> Callable[..., Any]:
    """Give `fn(**kwargs)` the explicit signature typer reads options from."""
    ordered = sorted(params, key=lambda p: p.kind)  # positional arguments first
    fn.__signature__ = inspect.Signature(ordered)  # type: ignore[attr-defined]
    fn.__annotations__ = {p.name: p.annotation for p in ordered}
    return fn
