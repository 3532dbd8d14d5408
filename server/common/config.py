"""What the node and matcher config files share: their error, rules, ``[tls]`` and reading.

Role in the pipeline: :mod:`server.node.config` and :mod:`server.matcher.config` describe
their files as :class:`~linkage.strict.StrictModel` tables and parse them with
:func:`parse_config`, so both follow the rules the schema follows (:mod:`linkage.strict`):
an unknown key, a missing required key, a value of the wrong type or out of range is a
problem; every problem in a file is reported at once in one :class:`ConfigError`, which names
the file; relative paths resolve against the config file's directory; the ``[tls]`` table
(``ca_cert``, ``cert``, ``key``, all required, and ``crl``, the revocation list a server
checks callers against) has one spelling everywhere (:class:`TlsSection`).

Problem messages name the table and key and the expectation, never a value from the file.
The value types here (:data:`Address`, :func:`int_from`, ...) carry their rule's message.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Collection, Mapping, Sequence
from pathlib import Path
from typing import Annotated, Any, TypeVar

from pydantic import AfterValidator

from linkage.errors import JigsawError, SchemaError
from linkage.schema import Schema, load_schema, parse_schema, shipped_schema_names
from linkage.strict import Problems, StrictModel, parse_toml, rule, validate
from server.common.tls import TlsFiles

M = TypeVar("M", bound=StrictModel)


class ConfigError(JigsawError):
    """A node or matcher config file is malformed. ``problems`` lists every problem found;
    ``path`` is the file (None for text parsed without one)."""

    def __init__(self, problems: Sequence[str], path: Path | None = None) -> None:
        self.problems = tuple(problems)
        self.path = path
        where = f"invalid config file {path}" if path is not None else "invalid config"
        super().__init__(f"{where}: " + "; ".join(self.problems))


def address_ok(text: str) -> bool:
    """Whether ``text`` has the form ``host:port`` with a port from 0 to 65535."""
    host, sep, port = text.rpartition(":")
    return bool(sep and host and port.isdigit() and 0 <= int(port) <= 65535)


def _address(text: str) -> str:
    if not address_ok(text):
        raise rule("expected host:port")
    return text


#: A ``host:port`` string.
Address = Annotated[str, AfterValidator(_address)]


def int_from(low: int, high: int | None = None) -> Callable[[int], int]:
    """The rule of an integer from ``low`` (to ``high`` when given)."""
    expected = f"from {low} to {high}" if high is not None else f">= {low}"

    def check(value: int) -> int:
        if value < low or (high is not None and value > high):
            raise rule(f"expected an integer {expected}")
        return value

    return check


def positive_number(*, finite: bool = False, most: float | None = None) -> Callable[[float], float]:
    """The rule of a number > 0 (finite, at most ``most``, when asked)."""
    if most is not None:
        expected = f"a number > 0 and <= {most:g}"
    else:
        expected = "a finite number > 0" if finite else "a number > 0"

    def check(value: float) -> float:
        ok = value > 0 and (not finite or math.isfinite(value))
        if not ok or (most is not None and not value <= most):
            raise rule(f"expected {expected}")
        return float(value)

    return check


#: An integer >= 1 (a key version, a bucket size, a threshold).
PositiveInt = Annotated[int, AfterValidator(int_from(1))]


def resolve_path(base_dir: Path, text: str) -> Path:
    """``text`` as a path: ``~`` expanded, and a relative path resolved against ``base_dir``.

    A ``~user`` whose home is unknown is left unexpanded (a relative path), so that it fails
    as a missing file rather than as an error of another kind.
    """
    path = Path(text)
    with contextlib.suppress(RuntimeError):
        path = path.expanduser()
    return path if path.is_absolute() else (base_dir / path).resolve()


class TlsSection(StrictModel):
    """The ``[tls]`` table as written: PEM file paths, not yet resolved."""

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


def read_config_file(path: Path | str) -> tuple[str, Path]:
    """The text of the config file at ``path`` and its resolved path."""
    config_path = Path(path).resolve()
    try:
        text = config_path.read_text("utf-8")
    except OSError as exc:
        raise ConfigError([f"cannot read config file: {exc.strerror}"], config_path) from None
    except UnicodeDecodeError:
        raise ConfigError(["config file: not valid UTF-8"], config_path) from None
    return text, config_path


def load_schema_ref(where: str, ref: object, base_dir: Path, problems: Problems) -> Schema | None:
    """The schema ``ref`` names: a shipped schema name, or a schema TOML path.

    ``None`` without a problem when ``ref`` is not a string (the model reports its type); a
    path that is not a file, or a schema file with problems, adds problems under ``where``
    (the schema's own problems prefixed) and gives ``None``.
    """
    if not isinstance(ref, str):
        return None
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
    except (OSError, UnicodeDecodeError):
        problems.add(f"{where}: the schema file cannot be read as UTF-8 text")
    except SchemaError as exc:
        for item in exc.problems:
            problems.add(f"{where}: {item}")
    return None


def read_ahead(data: Mapping[str, Any], name: str) -> Mapping[str, Any]:
    """``data[name]`` when it is a table, else empty: for reading ahead what a rule of another
    table needs (the model reports the table's own problems)."""
    value = data.get(name)
    return value if isinstance(value, dict) else {}


def parse_config(
    model: type[M],
    data: Mapping[str, Any],
    problems: Problems,
    *,
    path: Path | None,
    printable: Collection[str] = (),
    context: Mapping[str, Any] | None = None,
) -> M:
    """``data`` validated as ``model``; one :class:`ConfigError` with ``problems`` and the
    model's own problems when there is any."""
    parsed = validate(model, data, problems, top="config", printable=printable, context=context)
    if parsed is None or problems:
        raise ConfigError(problems.items, path)
    return parsed


def read_toml(text: str, path: Path | None) -> dict[str, Any]:
    """The TOML document of a config file; invalid TOML is a :class:`ConfigError` on its own."""
    return parse_toml(text, lambda items: ConfigError(items, path))
