"""Which client certificates are revoked: the federation's revocation list, kept current.

Role in the pipeline: gRPC Python cannot check a revocation list during the TLS handshake, so
every server (node and matcher) checks the serial of the caller's verified certificate in its
auth interceptor (``server.common.auth``) against a :class:`RevocationChecker`, on every call.
``jigsaw pki revoke`` re-signs the list (``server.common.pki.revoke_certificate``).

Invariants:

* A server starts only with a good list: the file (``[tls] crl``, by default ``crl.pem``
  beside ``[tls] ca_cert``) must exist, parse, name the federation CA as issuer and carry the
  CA's signature; otherwise :class:`server.common.pki.PkiError` and the server refuses to start.
* The list is reloaded when its file changes (a ``stat`` per call: modification time, size
  and inode), so a revocation takes effect on the next call, without a restart.
* A reload never weakens the list: a file that is missing, unreadable, not signed by the CA
  or older (a lower CRL number) than the list in force is refused with an error in the log,
  and the list in force stays in force until a good newer file replaces it.
* A list past its next-update time fails closed: a server does not start with one, and a
  running server treats every caller as revoked (an error in the log, once) until the
  operator writes a current list (``jigsaw pki revoke`` re-signs it).
"""

from __future__ import annotations

import datetime
import logging
import os
import threading
from collections.abc import Callable
from pathlib import Path

from cryptography import x509

from server.common.pki import PkiError, read_revocation_list
from server.common.tls import TlsFiles

logger = logging.getLogger(__name__)

_Stamp = tuple[int, int, int] | None


def _stamp(path: Path) -> _Stamp:
    try:
        status = os.stat(path)
    except OSError:
        return None
    return (status.st_mtime_ns, status.st_size, status.st_ino)


class RevocationChecker:
    """The revoked serials of one revocation list file, reloaded when the file changes.

    Thread-safe: gRPC calls ask :meth:`is_revoked` from many pool threads at once.
    """

    def __init__(
        self,
        crl_path: Path,
        ca_cert_path: Path,
        *,
        clock: Callable[[], datetime.datetime] = lambda: datetime.datetime.now(datetime.UTC),
    ) -> None:
        self._path = Path(crl_path)
        self._clock = clock
        self._expired_logged = False
        try:
            ca_pem = Path(ca_cert_path).read_bytes()
        except FileNotFoundError:
            raise PkiError(f"TLS CA certificate file not found: {ca_cert_path}") from None
        self._ca = x509.load_pem_x509_certificate(ca_pem)
        self._lock = threading.Lock()
        self._stamp = _stamp(self._path)
        self._list = read_revocation_list(self._path, self._ca)
        if self._expired():
            raise PkiError(
                f"the revocation list {self._path} is past its next update "
                f"({self._list.next_update:%Y-%m-%d %H:%M} UTC): re-sign it with jigsaw pki revoke"
            )

    def _expired(self) -> bool:
        return self._list.next_update is not None and self._clock() >= self._list.next_update

    @classmethod
    def for_tls(cls, tls: TlsFiles) -> RevocationChecker:
        """The checker of a server's TLS files: their CA and revocation list."""
        return cls(tls.revocation_list_path(), tls.ca_cert)

    @property
    def revoked_count(self) -> int:
        """How many certificates the list in force revokes."""
        return len(self._list.serials)

    def is_revoked(self, serial: int) -> bool:
        """Whether the certificate with ``serial`` is on the list (reloaded if it changed);
        every serial is, while the list in force is past its next update."""
        if _stamp(self._path) != self._stamp:
            self._reload()
        if self._expired():
            if not self._expired_logged:
                self._expired_logged = True
                logger.error(
                    "revocation list %s is past its next update: every call is refused until "
                    "a current list is written (jigsaw pki revoke)",
                    self._path,
                )
            return True
        return serial in self._list.serials

    def _reload(self) -> None:
        with self._lock:
            stamp = _stamp(self._path)
            if stamp == self._stamp:
                return  # another thread reloaded it
            self._stamp = stamp
            try:
                candidate = read_revocation_list(self._path, self._ca)
            except PkiError as exc:
                logger.error("revocation list not reloaded, the one in force stays: %s", exc)
                return
            except OSError as exc:
                logger.error(
                    "revocation list %s not reloaded (%s), the one in force stays",
                    self._path,
                    exc.strerror,
                )
                return
            if candidate.number < self._list.number:
                logger.error(
                    "revocation list %s not reloaded: its CRL number %d is older than %d in "
                    "force, which stays",
                    self._path,
                    candidate.number,
                    self._list.number,
                )
                return
            self._list = candidate
            self._expired_logged = False
            logger.info(
                "revocation list %s reloaded: CRL number %d, %d certificates revoked",
                self._path,
                candidate.number,
                len(candidate.serials),
            )
