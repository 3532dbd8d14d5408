"""The matcher: compares published encodings, never names, dates of birth or keys.

Contents: ``service`` (the Matcher gRPC servicer), ``config`` (matcher.toml), ``store`` (the
published encodings and link results in SQLite), ``wire`` (matcher-side proto conversions).
"""
