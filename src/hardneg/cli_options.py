"""Command-line options made from a pydantic model's fields: one definition (name, type, default,
help) per option, in the model; the ``hardneg`` commands only add what is their own."""

from __future__ import annotations

import inspect
import types
from collections.abc import Callable, Iterable, Mapping
from typing import Annotated, Any, TypeVar, Union, get_args, get_origin

import typer
from pydantic import BaseModel
from pydantic.fields import FieldInfo
from rich.markup import escape

F = TypeVar("F", bound=Callable[..., Any])


def field_help(model: type[BaseModel], name: str) -> str:
    """A field's description as option help (escaped: rich must not read ``[x]`` as markup)."""
    return escape(model.model_fields[name].description or "")


def _cli_type(annotation: Any) -> type:
    """int, float or bool as they are (None stripped); every spec, path and string as text."""
    if get_origin(annotation) in (Union, types.UnionType):
        annotation = next(a for a in get_args(annotation) if a is not type(None))
    if get_origin(annotation) is Annotated:
        annotation = get_args(annotation)[0]
    return annotation if annotation in (bool, int, float) else str


def field_option(name: str, field: FieldInfo, model: type[BaseModel], panel: str | None = None,
                 required: bool = False) -> inspect.Parameter:
    """The keyword parameter typer reads as ``--kebab-name`` (a ``--x/--no-x`` flag for a bool).
    Its default is None, so an option not given leaves the model's default (or a config file's
    value) in place; the model's default is shown in the help."""
    kebab = name.replace("_", "-")
    kind = _cli_type(field.annotation)
    text = field_help(model, name)
    if field.default is not None and not field.is_required() and kind is not bool:
        text += escape(f" [default: {field.default}]")
    decls = [f"--{kebab}/--no-{kebab}"] if kind is bool else [f"--{kebab}"]
    option = typer.Option(*decls, help=text, show_default=False, rich_help_panel=panel)
    return inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY,
                             default=inspect.Parameter.empty if required else None,
                             annotation=Annotated[kind if required else kind | None, option])


def options_from(model: type[BaseModel], *, panel: str | None = None, skip: Iterable[str] = (),
                 optional: Iterable[str] = (), replace: Mapping[str, Any] | None = None) -> Callable[[F], F]:
    """Give a command an option for each field of ``model``, in field order, under ``panel`` in
    its help. The command takes them as ``**options`` (only those given are not None).

    Its own parameters come first and replace fields of the same name; ``skip`` leaves fields out;
    a required field is a required option unless it is in ``optional``; ``replace`` maps a field to
    another ``Annotated[type, typer.Option(...)]`` (default None).

    Example:
        ::

            @app.command()
            @options_from(TrainConfig, panel="Training options")
            def train(quiet: bool = False, **options: Any) -> None: ...
    """
    skipped, loose, other = set(skip), set(optional), dict(replace or {})

    def attach(command: F) -> F:
        own = inspect.signature(command, eval_str=True)
        params = [p for p in own.parameters.values() if p.kind is not inspect.Parameter.VAR_KEYWORD]
        taken = skipped | {p.name for p in params}
        for name, field in model.model_fields.items():
            if name in taken:
                continue
            if name in other:
                params.append(inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=None,
                                                annotation=other[name]))
            else:
                params.append(field_option(name, field, model, panel, field.is_required() and name not in loose))
        setattr(command, "__signature__", own.replace(parameters=params))  # noqa: B010 (read by typer)
        return command

    return attach
