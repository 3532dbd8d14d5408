"""What both services share: identity and transport, audit, limits, serving, config rules.

Contents: ``pki`` (making the federation's keys and certificates), ``tls`` (loading them,
channels that check the server they reach), ``auth`` (the caller's role and agency from its
certificate, on every call), ``revocation`` (the CA's revocation list), ``audit`` (the hash-chained
audit log), ``anchor`` (audit heads signed and held by another party), ``ratelimit`` (per-caller
limits and the alert they raise), ``serving`` (building and running a gRPC server), ``status``
(the errors the services raise and the status codes they map to), ``purposes`` (the sharing
agreement's purpose codes), ``config`` (strict TOML parsing rules for every config file) and
``wire`` (the one place protobuf messages and ``linkage`` objects are converted).

Nothing here imports :mod:`server.node` or :mod:`server.matcher`.
"""
