"""Schemas for tests beside the default ones."""

from __future__ import annotations

from linkage.schema import Schema, load_schema

#: The child schema with the names and postcode salted with the full date of birth (one
#: filter each) and blocking on single filters: the salt of few records per value that the
#: salted-u, forms and published-filter salt-tag machinery serves.
DATE_SALTED: Schema = load_schema("child_date_salted")
