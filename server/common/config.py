"""Strict TOML config parsing shared by the node and matcher config files.

Role in the pipeline: the building blocks that :mod:`server.node.config` and
:mod:`server.matcher.config` parse their files with, so that both files follow one set of
rules: an unknown key, a missing required key or a value of the wrong type is a problem; every
problem in a file is collected by :class:`Problems` and reported at once in one
:class:`ConfigError`; relative paths resolve against the config file's directory; the ``[tls]``
section (``ca_cert``, ``cert``, ``key``, all required, and ``crl``, the revocation list a
server checks callers against) has one spelling everywhere.

Problem messages name the key (``section.key``) and the expectation, never the value that
failed validation. Values here are operator settings rather than identifiers, but a config
file may still be pasted into a ticket and a message has no need of the value.
"""

from __future__ import annotations

import difflib
import tomllib
from collections.abc import Mapping, Sequence, Set
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from linkage.errors import JigsawError, SchemaError
from linkage.schema import (
    Schema,
    load_schema,
    parse_schema,
    shipped_schema_names,
    toml_error_text,
)
from server.common.tls import TlsFiles

#: The keys of the ``[tls]`` section: all required but ``crl`` (default: ``crl.pem`` beside
#: ``ca_cert``; see ``server.common.tls.TlsFiles``).
TLS_KEYS = frozenset({"ca_cert", "cert", "key", "crl"})

_TYPE_WORDS: Mapping[type, str] = {
    str: "a string",
    int: "an integer",
    float: "a number",
    bool: "a boolean",
    list: "an array",
    dict: "a table",
}


class ConfigError(JigsawError):
    """A node or matcher config file is malformed. ``problems`` lists every problem found."""

    def __init__(self, problems: Sequence[str]) -> None:
        self.problems = tuple(problems)
        # The "node" in this prefix is historical: the matcher config raises the same class
        # with the same prefix, and the CLI prints the message as it is.
        super().__init__("invalid node config: " + "; ".join(self.problems))


def type_word(kind: type) -> str:
    """How a problem message names a TOML value type ("a string", "an integer", ...)."""
    return _TYPE_WORDS.get(kind, kind.__name__)


def address_ok(text: str) -> bool:
    """Whether ``text`` has the form ``host:port`` with a port from 0 to 65535."""
    host, sep, port = text.rpartition(":")
    return bool(sep and host and port.isdigit() and 0 <= int(port) <= 65535)


def resolve_path(base_dir: Path, text: str) -> Path:
    """``text`` as a path: ``~`` expanded, and a relative path resolved against ``base_dir``."""
    path = Path(text).expanduser()
    return path if path.is_absolute() else (base_dir / path).resolve()


class Problems:
    """Collects problems so the whole file is reported at once.

    The getters return ``None`` (after recording a problem) for a missing required key or a
    value of the wrong type, so a parser reads every key before it calls :meth:`raise_if_any`.
    """

    def __init__(self) -> None:
        self.items: list[str] = []

    def add(self, message: str) -> None:
        self.items.append(message)

    def raise_if_any(self) -> None:
        """Raise one :class:`ConfigError` listing every problem, if there is any."""
        if self.items:
            raise ConfigError(self.items)

    def unknown(self, where: str, got: Mapping[str, Any], allowed: Set[str]) -> None:
        """A problem for each key of ``got`` that is not ``allowed``, in table order.

        The key itself is never echoed (an operator who pastes a record into a config must not
        see it in a log): the problem names its position in the table, the allowed keys and,
        when one is close, the allowed key it was probably meant to be — our own word.
        """
        expected = ", ".join(sorted(allowed))
        for position, key in enumerate(got, start=1):
            if key in allowed:
                continue
            close = difflib.get_close_matches(str(key), sorted(allowed), n=1)
            hint = f' (did you mean "{close[0]}"?)' if close else ""
            self.add(
                f"{where}: unknown key (key {position} of the table), allowed: {expected}{hint}"
            )

    def table(self, where: str, value: Any) -> Mapping[str, Any]:
        """An optional table: ``value`` itself, or empty when absent (``None``) or not a table."""
        if value is None:
            return {}
        if not isinstance(value, dict):
            self.add(f"{where}: expected a table")
            return {}
        return value

    def required_table(
        self, data: Mapping[str, Any], name: str, allowed: Set[str]
    ) -> Mapping[str, Any]:
        """The required table ``data[name]`` with its keys checked against ``allowed``.

        Empty (after recording a problem) when the table is missing or not a table.
        """
        if name not in data:
            self.add(f"{name}: required table is missing")
            return {}
        section = self.table(name, data[name])
        self.unknown(name, section, allowed)
        return section

    def get(
        self,
        where: str,
        data: Mapping[str, Any],
        key: str,
        kind: type | tuple[type, ...],
        default: Any = ...,
    ) -> Any:
        """``data[key]`` checked against ``kind``; a problem and ``None`` when wrong.

        Without a ``default`` the key is required.
        """
        if key not in data:
            if default is ...:
                self.add(f"{where}.{key}: required key is missing")
                return None
            return default
        value = data[key]
        kinds = kind if isinstance(kind, tuple) else (kind,)
        # bool is an int subclass in Python: never accept it where a number is expected
        ok = isinstance(value, kinds) and not (isinstance(value, bool) and bool not in kinds)
        if not ok:
            expected = " or ".join(type_word(k) for k in kinds)
            self.add(f"{where}.{key}: expected {expected}, got {type_word(type(value))}")
            return None
        return value

    def get_int(
        self,
        where: str,
        data: Mapping[str, Any],
        key: str,
        default: Any = ...,
        *,
        minimum: int = 1,
        maximum: int | None = None,
    ) -> int | None:
        """An integer from ``minimum`` (to ``maximum`` when given); out of range is a problem.

        An out-of-range value is returned as it is (its problem is already recorded).
        """
        value: int | None = self.get(where, data, key, int, default)
        if value is None:
            return None
        if maximum is None and value < minimum:
            self.add(f"{where}.{key}: expected an integer >= {minimum}")
        elif maximum is not None and not minimum <= value <= maximum:
            self.add(f"{where}.{key}: expected an integer from {minimum} to {maximum}")
        return value

    def get_address(
        self, where: str, data: Mapping[str, Any], key: str, default: Any = ...
    ) -> str | None:
        """A ``host:port`` string; another form is a problem (the text is still returned)."""
        value: str | None = self.get(where, data, key, str, default)
        if value is not None and not address_ok(value):
            self.add(f"{where}.{key}: expected host:port")
        return value


def parse_toml(text: str) -> dict[str, Any]:
    """The TOML document in ``text``; invalid TOML is a :class:`ConfigError` on its own."""
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError([f"not valid TOML: {toml_error_text(exc)}"]) from None


def read_config_file(path: Path | str) -> tuple[str, Path]:
    """The text of the config file at ``path`` and its resolved path."""
    config_path = Path(path).resolve()
    try:
        text = config_path.read_text("utf-8")
    except OSError as exc:
        raise ConfigError([f"cannot read config file: {exc.strerror}"]) from None
    except UnicodeDecodeError:
        raise ConfigError(["config file: not valid UTF-8"]) from None
    return text, config_path


def load_schema_ref(where: str, ref: str, base_dir: Path, problems: Problems) -> Schema | None:
    """The schema ``ref`` names: a shipped schema name, or a schema TOML path.

    A path that is not a file, or a schema file with problems, adds problems under ``where``
    (the schema's own problems prefixed) and gives ``None``.
    """
    try:
        if ref in shipped_schema_names():
            return load_schema(ref)
        path = resolve_path(base_dir, ref)
        if not path.is_file():
            problems.add(
                f"{where}: expected a shipped schema name "
                f"({', '.join(shipped_schema_names())}) or an existing schema file"
            )
            return None
        return parse_schema(path.read_text("utf-8"))
    except SchemaError as exc:
        for item in exc.problems:
            problems.add(f"{where}: {item}")
        return None


@dataclass(frozen=True)
class TlsPaths:
    """The ``[tls]`` section as written: PEM file paths, not yet resolved."""

    ca_cert: str
    cert: str
    key: str
    crl: str | None = None

    def resolve(self, base_dir: Path) -> TlsFiles:
        """The certificate files, relative paths resolved against ``base_dir``."""
        return TlsFiles(
            ca_cert=resolve_path(base_dir, self.ca_cert),
            cert=resolve_path(base_dir, self.cert),
            key=resolve_path(base_dir, self.key),
            crl=None if self.crl is None else resolve_path(base_dir, self.crl),
        )


def read_tls_section(
    data: Mapping[str, Any], problems: Problems, *, check_keys: bool
) -> TlsPaths | None:
    """The required ``[tls]`` section of ``data``; ``None`` when it has a problem.

    ``check_keys`` says whether a missing or mistyped key is reported: the node config
    reports them whenever a ``tls`` key exists, the matcher config only when it is a table.
    """
    section = problems.required_table(data, "tls", TLS_KEYS)
    if not check_keys:
        return None
    ca_cert = problems.get("tls", section, "ca_cert", str)
    cert = problems.get("tls", section, "cert", str)
    key = problems.get("tls", section, "key", str)
    crl = problems.get("tls", section, "crl", str, None)
    if ca_cert is None or cert is None or key is None:
        return None
    return TlsPaths(ca_cert=ca_cert, cert=cert, key=key, crl=crl)
