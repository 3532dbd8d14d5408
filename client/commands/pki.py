"""``jigsaw pki`` and ``jigsaw secret``: the federation's certificates and the agencies'
shared linkage secret.

Contract: a CA passphrase or PKCS#12 password is read from a file or an environment variable,
never from a command-line value (a command line is visible to every user of the machine);
the secret file is written whole (temporary file, mode 0600, rename) or not at all.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

from client.commands.common import (
    EXIT_INPUT,
    EXIT_OK,
    EXIT_USAGE,
    err,
    out,
)

#: Environment variable that may hold the CA key's passphrase (instead of a file).
CA_PASSPHRASE_ENV = "JIGSAW_CA_PASSPHRASE"
P12_PASSWORD_ENV = "JIGSAW_P12_PASSWORD"


def cmd_pki_init(args: argparse.Namespace) -> int:
    from server.common.pki import init_pki

    staff = []
    for item in args.staff:
        name, sep, agency = item.partition(":")
        if not sep or not name or not agency:
            err.print(f"--staff {item!r}: expected NAME:AGENCY")
            return EXIT_USAGE
        staff.append((name, agency))
    passphrase = _ca_passphrase(args)
    layout = init_pki(
        Path(args.dir),
        agencies=args.agency,
        staff=staff,
        operators=args.operator,
        passphrase=passphrase,
        days=args.days,
        force=args.force,
    )
    encrypted = "encrypted" if passphrase is not None else "NOT encrypted (no passphrase given)"
    out.print(
        f"certificate authority: {layout.ca_cert.parent} (key {encrypted}; keep this "
        "directory apart: it is needed only to issue and revoke)"
    )
    out.print("bundles (hand each directory to its identity only):")
    for name in layout.names():
        out.print(f"  {name}: {layout[name][0].parent}")
    return EXIT_OK


def _ca_passphrase(args: argparse.Namespace) -> Any:
    """The CA passphrase from ``--ca-passphrase-file`` or :data:`CA_PASSPHRASE_ENV`, or None.

    Never from a command-line value: a command line is visible to every user of the machine.
    """
    from server.common.pki import CaPassphrase, PkiError

    if args.ca_passphrase_file is not None:
        try:
            data = Path(args.ca_passphrase_file).read_bytes()
        except OSError as exc:
            raise PkiError(f"cannot read the CA passphrase file: {exc.strerror}") from None
        return CaPassphrase(data.rstrip(b"\r\n"))
    value = os.environ.get(CA_PASSPHRASE_ENV)
    return None if value is None else CaPassphrase(value.encode("utf-8"))


def cmd_pki_issue(args: argparse.Namespace) -> int:
    from server.common.pki import issue_certificate

    cert_path, _key_path = issue_certificate(
        Path(args.dir),
        args.name,
        args.agency,
        args.role,
        passphrase=_ca_passphrase(args),
        days=args.days,
        extra_hosts=args.host,
        force=args.force,
    )
    out.print(f"{args.name}: bundle {cert_path.parent} (hand it to that identity only)")
    return EXIT_OK


def cmd_pki_revoke(args: argparse.Namespace) -> int:
    from server.common.pki import CRL_FILE, ca_dir, revoke_certificate

    serial = None
    if args.serial is not None:
        try:
            serial = int(args.serial, 16)
        except ValueError:
            err.print("--serial: expected the certificate serial in hexadecimal")
            return EXIT_USAGE
    revoked = revoke_certificate(
        Path(args.dir), name=args.name, serial=serial, passphrase=_ca_passphrase(args)
    )
    out.print(
        f"certificate serial {revoked:x} revoked in {ca_dir(Path(args.dir)) / CRL_FILE} and "
        f"the server bundles' copies; servers refuse it from their next call (copy {CRL_FILE} "
        "to servers on other machines)"
    )
    return EXIT_OK


def cmd_pki_p12(args: argparse.Namespace) -> int:
    from server.common.pki import PkiError, export_pkcs12

    if args.password_file is not None:
        try:
            password = Path(args.password_file).read_bytes().rstrip(b"\r\n")
        except OSError as exc:
            raise PkiError(f"cannot read the PKCS#12 password file: {exc.strerror}") from None
    else:
        value = os.environ.get(P12_PASSWORD_ENV)
        if value is None:
            err.print(f"give the bundle's password with --password-file or {P12_PASSWORD_ENV}")
            return EXIT_USAGE
        password = value.encode("utf-8")
    path = export_pkcs12(Path(args.dir), args.name, password)
    out.print(f"{args.name}: PKCS#12 bundle {path} (import it into that person's browser only)")
    return EXIT_OK


def cmd_secret_init(args: argparse.Namespace) -> int:
    from linkage.keys import LinkageSecret

    path = Path(args.out)
    if path.exists() and not args.force:
        err.print(f"{path} exists; use --force to replace it (every agency must then re-encode)")
        return EXIT_INPUT
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(LinkageSecret.generate().to_hex() + "\n", "ascii")
    tmp.chmod(0o600)
    tmp.replace(path)
    out.print(f"linkage secret written to {path} (share it only with the agencies)")
    return EXIT_OK


def add_pki(sub: Any) -> None:
    """``pki init|issue|revoke|p12``."""
    pki = sub.add_parser("pki", help="certificates").add_subparsers(
        dest="pki_command", required=True
    )
    pi = pki.add_parser("init", help="create a CA and certificates for every identity")
    pi.add_argument("--dir", required=True, help="output directory")
    pi.add_argument("--agency", action="append", default=[], help="agency id (repeat)")
    pi.add_argument("--staff", action="append", default=[], help="NAME:AGENCY (repeat)")
    pi.add_argument("--operator", action="append", default=[], help="operator name (repeat)")
    pi.add_argument("--days", type=int, default=365)
    pi.add_argument("--force", action="store_true", help="replace an existing CA")
    passphrase_help = (
        f"file holding the CA key's passphrase (or set {CA_PASSPHRASE_ENV}); init encrypts "
        "the key with it, issue and revoke need it"
    )
    pi.add_argument("--ca-passphrase-file", help=passphrase_help)
    pi.set_defaults(func=cmd_pki_init)
    pis = pki.add_parser("issue", help="issue one more identity's bundle")
    pis.add_argument("--dir", required=True, help="the PKI directory")
    pis.add_argument("--name", required=True, help="identity name")
    pis.add_argument("--agency", required=True, help='agency id ("unit" for operators)')
    pis.add_argument(
        "--role",
        required=True,
        choices=["node", "staff", "operator", "matcher", "probe", "console"],
        help="probe: a load balancer's health checks only; console: an agency's staff console",
    )
    pis.add_argument("--host", action="append", default=[], help="extra DNS name (repeat)")
    pis.add_argument("--days", type=int, default=365)
    pis.add_argument("--force", action="store_true", help="replace an existing bundle")
    pis.add_argument("--ca-passphrase-file", help=passphrase_help)
    pis.set_defaults(func=cmd_pki_issue)
    pr = pki.add_parser("revoke", help="add a certificate to the revocation list")
    pr.add_argument("--dir", required=True, help="the PKI directory")
    pr.add_argument("--ca-passphrase-file", help=passphrase_help)
    which = pr.add_mutually_exclusive_group(required=True)
    which.add_argument("--name", help="identity whose certificate to revoke")
    which.add_argument("--serial", help="serial (hexadecimal) of the certificate to revoke")
    pr.set_defaults(func=cmd_pki_revoke)
    p12 = pki.add_parser("p12", help="write an identity's PKCS#12 bundle for a browser")
    p12.add_argument("--dir", required=True, help="the PKI directory, or the identity's bundle")
    p12.add_argument("--name", required=True, help="identity name")
    p12.add_argument(
        "--password-file", help=f"file holding the bundle's password (or set {P12_PASSWORD_ENV})"
    )
    p12.set_defaults(func=cmd_pki_p12)


def add_secret(sub: Any) -> None:
    """``secret init``."""
    secret = sub.add_parser("secret", help="linkage secret").add_subparsers(
        dest="secret_command", required=True
    )
    si = secret.add_parser("init", help="create a new shared linkage secret")
    si.add_argument("--out", required=True)
    si.add_argument("--force", action="store_true")
    si.set_defaults(func=cmd_secret_init)
