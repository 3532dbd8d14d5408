"""Strict parsing of the project's TOML files: one mechanism for the schema and both configs.

Role: the linkage schema (:mod:`linkage.schema`) and the node and matcher configs
(:mod:`server.common.config`) describe the shape of their tables as pydantic models derived
from :class:`StrictModel` (unknown keys forbidden, no type coercion, frozen) and validate
them with :func:`validate`, which renders pydantic's errors with :func:`render_errors` into
the project's problem messages and collects them in a :class:`Problems`. A rule of one key
that pydantic cannot state as a type is a validator raising :func:`rule` (rendered as
written); a rule across a table's keys is :meth:`StrictModel.rules`, checked on the table as
written so that its problems come with the keys' own.

Invariants and contract:

* Every problem of a document is collected before one error is raised: a parser validates
  everything, then raises once (:meth:`Problems.raise_as`).
* A problem names its position, built from the models' own key names and list indexes
  (``source[0].columns.given_name``, ``field[2].salt``) and the expectation. A key that is
  not one of our own words (``printable``) is named by its position in its table (``peers
  (key 2 of the table)``), and an unknown key gets the nearest allowed word when it looks
  like a misspelling (:func:`did_you_mean`).
* No message ever holds a value, key or name from the document, which may be an identifier
  pasted in by mistake: pydantic's input and its own messages are never rendered (models
  also set ``hide_input_in_errors``); a "got ..." names only the type of the value. The same
  holds for TOML syntax errors (:func:`toml_error_text`).
* A message of :func:`rule` is the project's own text: it must not hold a value either.
"""

from __future__ import annotations

import datetime as dt
import difflib
import re
import tomllib
import types
import typing
from collections.abc import Callable, Collection, Mapping, Sequence
from typing import Any, Literal, TypeVar, get_args, get_origin

from pydantic import (
    BaseModel,
    ConfigDict,
    ModelWrapValidatorHandler,
    ValidationError,
    ValidationInfo,
    model_validator,
)
from pydantic_core import ErrorDetails, InitErrorDetails, PydanticCustomError

__all__ = [
    "Problems",
    "StrictModel",
    "did_you_mean",
    "parse_toml",
    "render_errors",
    "rule",
    "toml_error_text",
    "type_word",
    "validate",
]

M = TypeVar("M", bound=BaseModel)

#: The error type of :func:`rule`: its message is the project's own and is rendered as is.
RULE = "jigsaw_rule"

_TYPE_WORDS: tuple[tuple[type, str], ...] = (
    (bool, "a boolean"),  # before int: bool is an int subclass in Python
    (str, "a string"),
    (int, "an integer"),
    (float, "a number"),
    (list, "an array"),
    (dict, "a table"),
    (dt.datetime, "a date-time"),
    (dt.date, "a date"),
    (dt.time, "a time"),
)
#: pydantic's type errors -> what the value should have been
_EXPECTED = {
    "string_type": "a string",
    "int_type": "an integer",
    "float_type": "an integer or a number",
    "bool_type": "a boolean",
    "list_type": "an array",
    "tuple_type": "an array",
    "set_type": "an array",
    "frozen_set_type": "an array",
}
#: a key the table does not have, or a key that is not a string (only from a decoded mapping)
_UNKNOWN_KEY_TYPES = {"extra_forbidden", "invalid_key"}
_TABLE_TYPES = {"dict_type", "model_type", "model_attributes_type", "dataclass_type"}


class StrictModel(BaseModel):
    """The shape of one TOML table: unknown keys are problems, types are never coerced (an
    integer is accepted for a number, nothing else), and error input is never kept.

    A rule across the table's keys is stated by :meth:`rules`, which is checked whether or
    not the keys themselves are valid, so its problems are reported with theirs.
    """

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True, hide_input_in_errors=True)

    @classmethod
    def rules(cls, data: Mapping[str, Any], context: Mapping[str, Any]) -> list[tuple[str, str]]:
        """``(key, message)`` for each rule across keys that ``data`` (the table as written)
        breaks; ``key`` is where the problem is reported (``""``: the table). A rule reads a
        key only when its value has the right type (the key's own problem is reported
        otherwise) and its message holds no value (:func:`rule`)."""
        return []

    @model_validator(mode="wrap")
    @classmethod
    def _with_rules(
        cls, data: Any, handler: ModelWrapValidatorHandler[Any], info: ValidationInfo
    ) -> Any:
        broken = cls.rules(data, info.context or {}) if isinstance(data, dict) else []
        try:
            parsed = handler(data)
        except ValidationError as error:
            if not broken:
                raise
            errors = error.errors(include_url=False)
        else:
            if not broken:
                return parsed
            errors = []
        details: list[InitErrorDetails] = [
            InitErrorDetails(
                type=PydanticCustomError(RULE, e["msg"], e.get("ctx"))
                if e["type"] == RULE
                else e["type"],
                loc=e["loc"],
                input=None,
                ctx=e.get("ctx", {}),
            )
            for e in errors
        ]
        details += [
            InitErrorDetails(type=rule(message), loc=(key,) if key else (), input=None)
            for key, message in broken
        ]
        raise ValidationError.from_exception_data(cls.__name__, details, hide_input=True)


class Problems:
    """Every problem of one document, in the order found; raised at once by the parser."""

    def __init__(self) -> None:
        self.items: list[str] = []

    def __bool__(self) -> bool:
        return bool(self.items)

    def add(self, message: str) -> None:
        self.items.append(message)

    def raise_as(self, error: Callable[[list[str]], Exception]) -> None:
        """Raise ``error(items)`` when any problem was found."""
        if self.items:
            raise error(self.items)


def rule(message: str, *, at: str = "") -> PydanticCustomError:
    """The error a validator raises for a rule of ours: ``message`` is rendered as written
    (so it must hold no value from the document), under the validated position, or under its
    key ``at`` when a model-level rule is about one key."""
    return PydanticCustomError(RULE, message.replace("{", "(").replace("}", ")"), {"at": at})


def did_you_mean(word: object, choices: Collection[str]) -> str:
    """``' (did you mean "x"?)'`` for the closest of our own ``choices``, or ``""``.

    Only a word from ``choices`` is ever printed, never ``word``.
    """
    if not isinstance(word, str):
        return ""
    close = difflib.get_close_matches(word, sorted(choices), n=1)
    return f' (did you mean "{close[0]}"?)' if close else ""


def type_word(value: object) -> str:
    """How a message names the TOML type of ``value`` ("a string", "an integer", ...)."""
    for kind, word in _TYPE_WORDS:
        if isinstance(value, kind):
            return word
    return "a value of another type"


def validate(
    model: type[M],
    data: Any,
    problems: Problems,
    *,
    where: Sequence[str | int] = (),
    top: str = "top level",
    brackets: Collection[str] = (),
    printable: Collection[str] = (),
    context: Mapping[str, Any] | None = None,
) -> M | None:
    """``data`` validated as ``model``, or ``None`` after adding every problem to ``problems``.

    ``where`` is the position of ``data`` in its document (``("field", 2)``); the other
    options are those of :func:`render_errors`.
    """
    try:
        return model.model_validate(data, context=dict(context or {}))
    except ValidationError as error:
        for message in render_errors(
            error, model, data, where=where, top=top, brackets=brackets, printable=printable
        ):
            problems.add(message)
        return None


def render_errors(
    error: ValidationError,
    model: type[BaseModel],
    data: Any,
    *,
    where: Sequence[str | int] = (),
    top: str = "top level",
    brackets: Collection[str] = (),
    printable: Collection[str] = (),
) -> list[str]:
    """The problem messages of ``error``, raised validating ``data`` as ``model``, in
    document order (a table's unknown keys first, then its keys in the model's order).

    ``top`` names the document itself; a first position segment in ``brackets`` is written
    as a table header (``[schema].name``); a key of a free table (a mapping the model does
    not spell out) is written only when it is one of ``printable``, else by its position.
    """
    located = [
        _Located(details, model, data, where, top, frozenset(brackets), frozenset(printable))
        for details in error.errors(include_url=False, include_input=False)
    ]
    located.sort(key=lambda item: item.order)
    return list(dict.fromkeys(item.message() for item in located))


class _Located:
    """One pydantic error, walked along its location through the model and the data."""

    def __init__(
        self,
        details: ErrorDetails,
        model: type[BaseModel],
        data: Any,
        where: Sequence[str | int],
        top: str,
        brackets: frozenset[str],
        printable: frozenset[str],
    ) -> None:
        self.details = details
        self.top = top
        self.segments = [_segment(step, i == 0, brackets) for i, step in enumerate(where)]
        self.order: list[int] = []
        self.kind = details["type"]
        # a key that failed its own check: its position, then the key's place in the table
        loc = [step for step in details["loc"] if step != "[key]"]
        self.unknown_position = 0
        self.allowed: tuple[str, ...] = ()
        self.unknown_word: object = None
        annotation: Any = model
        value: Any = data
        for index, step in enumerate(loc):
            last = index == len(loc) - 1
            first = not self.segments
            table = _model_of(annotation)
            if table is not None and last and self.kind in _UNKNOWN_KEY_TYPES:
                self.unknown_position = _position(value, step)
                self.allowed = _keys(table)
                self.unknown_word = step
                self.order.append(-1)
                break
            if isinstance(step, int):
                self.segments.append(f"[{step}]")
                self.order.append(step)
                annotation = _item_type(annotation)
                value = value[step] if isinstance(value, list) and step < len(value) else None
                continue
            position = _position(value, step)
            if table is not None and step in _keys(table):
                self.segments.append(_segment(step, first, brackets))
                self.order.append(_keys(table).index(step))
                annotation = _field_type(table, step)
            else:
                shown = step in printable
                self.segments.append(
                    _segment(step, first, brackets) if shown else f" (key {position} of the table)"
                )
                self.order.append(position)
                annotation = _value_type(annotation)
            value = value.get(step) if isinstance(value, dict) else None
        self.annotation = annotation
        self.value = value

    @property
    def path(self) -> str:
        text = "".join(
            s if i == 0 or s.startswith(("[", " ")) else "." + s
            for i, s in enumerate(self.segments)
        )
        return text or self.top

    def message(self) -> str:
        kind, path = self.kind, self.path
        if kind in _UNKNOWN_KEY_TYPES:
            container = "the document" if not self.segments else "the table"
            return (
                f"{path}: unknown key (key {self.unknown_position} of {container}), expected "
                f"one of: {', '.join(sorted(self.allowed))}"
                f"{did_you_mean(self.unknown_word, self.allowed)}"
            )
        if kind == RULE:
            at = (self.details.get("ctx") or {}).get("at")
            return f"{path}.{at}: {self.details['msg']}" if at else f"{path}: {self.details['msg']}"
        if kind == "missing":
            table = _model_of(self.annotation) or get_origin(_unwrap(self.annotation)) is dict
            what = "table" if table else "key"
            return f"{path}: required {what} is missing"
        if kind in _TABLE_TYPES:
            return f"{path}: expected a table"
        if kind in _EXPECTED:
            return f"{path}: expected {_EXPECTED[kind]}, got {type_word(self.value)}"
        if kind == "literal_error":
            return f"{path}: expected one of {', '.join(map(str, _literals(self.annotation)))}"
        return f"{path}: invalid value"


def _segment(step: str | int, first: bool, brackets: Collection[str] = ()) -> str:
    if isinstance(step, int):
        return f"[{step}]"
    return f"[{step}]" if first and step in brackets else step


def _position(value: Any, key: object) -> int:
    """1-based position of ``key`` in the table ``value`` (0 when it is not there)."""
    if isinstance(value, dict):
        for position, name in enumerate(value, start=1):
            if name == key:
                return position
    return 0


def _unwrap(annotation: Any) -> Any:
    """``annotation`` without ``Annotated`` and ``| None``."""
    while True:
        origin = get_origin(annotation)
        if origin is typing.Annotated:
            annotation = get_args(annotation)[0]
        elif origin in (typing.Union, types.UnionType):
            options = [a for a in get_args(annotation) if a is not type(None)]
            if len(options) != 1:
                return annotation
            annotation = options[0]
        else:
            return annotation


def _model_of(annotation: Any) -> type[BaseModel] | None:
    annotation = _unwrap(annotation)
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    return None


def _keys(model: type[BaseModel]) -> tuple[str, ...]:
    """The keys of ``model``'s table as written in the file (aliases), in model order."""
    return tuple(info.alias or name for name, info in model.model_fields.items())


def _field_type(model: type[BaseModel], key: str) -> Any:
    for name, info in model.model_fields.items():
        if (info.alias or name) == key:
            return info.annotation
    return Any


def _item_type(annotation: Any) -> Any:
    args = get_args(_unwrap(annotation))
    return args[0] if args else Any


def _value_type(annotation: Any) -> Any:
    args = get_args(_unwrap(annotation))
    return args[-1] if args else Any


def _literals(annotation: Any) -> tuple[Any, ...]:
    annotation = _unwrap(annotation)
    return get_args(annotation) if get_origin(annotation) is Literal else ()


#: tomllib messages that quote the document (a key, a table name, a character), which may be an
#: identifier pasted into the file, and what to say instead.
_TOML_REASONS_QUOTING_THE_TEXT = {
    "Cannot declare": "a table is declared twice",
    "Cannot mutate immutable namespace": "a key extends an inline table or a static array",
    "Cannot redefine namespace": "a dotted key redefines a table",
    "Duplicate inline table key": "a key is repeated in an inline table",
    "Found invalid character": "invalid character in a comment or literal string",
    "Illegal character": "illegal character in a string",
}
#: tomllib messages made of the parser's own words only; they are passed on as they are.
_TOML_OWN_REASONS = re.compile(
    r"Invalid statement|Expected newline or end of document after a statement"
    r"|Cannot overwrite a value|Expected '\]' at the end of a table declaration"
    r"|Expected '\]\]' at the end of an array declaration"
    r"|Expected '=' after a key in a key/value pair|Invalid initial character for a key part"
    r"|Unclosed array|Unclosed inline table|Unescaped '\\' in a string|Invalid hex value"
    r"|Escaped character is not a Unicode scalar value|Unterminated string"
    r"|Invalid date or datetime|Invalid value|Expected \"'{1,3}\""
)
_TOML_POSITION = re.compile(r" \(at (line \d+, column \d+|end of document)\)\Z")


def toml_error_text(error: tomllib.TOMLDecodeError) -> str:
    """tomllib's reason and position, without any text quoted from the document.

    A schema or config path may point at a data file by mistake: the message keeps the line and
    column and the parser's own reason, and replaces a reason that quotes the text.
    """
    message = str(error)
    position = _TOML_POSITION.search(message)
    reason = message[: position.start()] if position else message
    where = f" ({position.group(1)})" if position else ""
    if _TOML_OWN_REASONS.fullmatch(reason):
        return reason + where
    for prefix, safe in _TOML_REASONS_QUOTING_THE_TEXT.items():
        if reason.startswith(prefix):
            return safe + where
    return "syntax error" + where


def parse_toml(text: str, error: Callable[[list[str]], Exception]) -> dict[str, Any]:
    """The TOML document in ``text``; invalid TOML raises ``error`` with its one problem."""
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise error([f"not valid TOML: {toml_error_text(exc)}"]) from None
