"""``jigsaw config check``: everything a node or matcher config needs, checked without
starting anything.

Role: an operator's first step after writing a config. :func:`check_config` parses the file
strictly (every problem :class:`~server.common.config.ConfigError` lists), and then checks
what the parse cannot: the TLS files exist, are PEM, the certificate was issued by the CA
file and fits the key, and names the role (and, for a node, the agency) of the config; the
linkage secret file of a node reads as a secret; each source opens and its header (or
table) has every column the mapping names.

Contract: returns the list of every problem found (empty = the config is sound), each naming
the key, file or column and the expectation; never a value read from a source. The kind of
config is told by its top-level table (``[node]`` or ``[matcher]``).
"""

from __future__ import annotations

import tomllib
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from linkage.errors import JigsawError
from linkage.strict import toml_error_text
from server.common.auth import identity_from_certificate
from server.common.config import ConfigError
from server.common.tls import TlsFiles

__all__ = ["check_config"]


def _check_tls(tls: TlsFiles, role: str, agency: str | None) -> list[str]:
    problems = []
    loaded: dict[str, bytes] = {}
    for what, path in (("ca_cert", tls.ca_cert), ("cert", tls.cert), ("key", tls.key)):
        try:
            loaded[what] = Path(path).read_bytes()
        except OSError as exc:
            problems.append(f"tls.{what}: cannot read {path} ({exc.strerror})")
    if problems:
        return problems
    try:
        ca = x509.load_pem_x509_certificate(loaded["ca_cert"])
        cert = x509.load_pem_x509_certificate(loaded["cert"])
    except ValueError:
        return ["tls: ca_cert and cert must be PEM certificates"]
    try:
        key = serialization.load_pem_private_key(loaded["key"], password=None)
    except (ValueError, TypeError):
        return [f"tls.key: {tls.key} is not an unencrypted PEM private key"]
    if cert.public_key().public_numbers() != key.public_key().public_numbers():  # type: ignore[union-attr]
        problems.append(f"tls.key: {tls.key} is not the key of the certificate {tls.cert}")
    try:
        cert.verify_directly_issued_by(ca)
    except Exception:  # any failed signature check, whatever its kind
        problems.append(f"tls.cert: {tls.cert} was not issued by the CA in {tls.ca_cert}")
    identity = identity_from_certificate(loaded["cert"])
    if identity is None:
        problems.append(f"tls.cert: {tls.cert} carries no Jigsaw identity (CN, O, OU)")
    elif identity.role != role or (agency is not None and identity.agency != agency):
        expected = f"role {role}" + (f", agency {agency}" if agency else "")
        problems.append(
            f"tls.cert: {tls.cert} is for role {identity.role}, agency {identity.agency}; "
            f"this config needs {expected}"
        )
    crl = tls.revocation_list_path()
    if not Path(crl).is_file():
        problems.append(f"tls.crl: revocation list {crl} not found (servers refuse to start)")
    return problems


def check_config(path: Path) -> list[str]:
    """Every problem of the node or matcher config at ``path`` (see the module docstring)."""
    try:
        kind = "matcher" if "matcher" in tomllib.loads(path.read_text("utf-8")) else "node"
    except (OSError, UnicodeDecodeError) as exc:
        return [f"{path}: cannot read ({getattr(exc, 'strerror', None) or 'not UTF-8'})"]
    except tomllib.TOMLDecodeError as exc:
        return [f"{path}: not valid TOML ({toml_error_text(exc)})"]
    if kind == "matcher":
        from server.matcher.config import load_matcher_config

        try:
            matcher = load_matcher_config(path)
        except ConfigError as exc:
            return list(exc.problems)
        return _check_tls(matcher.tls, "matcher", None)

    from server.node.config import load_node_config, read_linkage_keys
    from server.node.sources import check_source_header

    try:
        node = load_node_config(path)
    except ConfigError as exc:
        return list(exc.problems)
    problems = _check_tls(node.tls, "node", node.agency)
    try:
        read_linkage_keys(node)
    except JigsawError as exc:
        problems.append(f"node.secret_file: {exc}")
    for index, source in enumerate(node.sources):
        try:
            check_source_header(source)
        except JigsawError as exc:
            problems.append(f"source[{index}]: {exc}")
    return problems
