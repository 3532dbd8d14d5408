"""An agency's node: its records, their encoding, and its staff's lookups and disclosures.

Contents: ``service`` (the AgencyNode gRPC servicer), ``config`` (node.toml), ``store`` (the
node's SQLite store), ``ingest`` (CSV rows into the store, every bad row reported by line and
field), ``publish`` (encoding the store's records and sending them to the matcher), ``quality``
(data-quality counts, never values), ``linked`` (which of the agency's records a batch link
joined to other agencies').

The node is the only part that holds identifiers and the linkage secret; nothing it sends
carries either.
"""
