"""Seeded synthetic multi-agency child population with ground truth.

Role: the test, demo and benchmark data. Nothing here is real: a population of
children living in England is drawn from a seed, then each agency (police, health, school,
children's social care) receives its own messy copy of the children it "knows", in its own
formats, and the true child behind every record is kept (``AgencyData.child_id``) so that
linkage quality can be measured.

How a population is drawn (all from ``seed``; the output never depends on today's date):

* Households. A share of children (:data:`SIBLING_SHARE`) live with a sibling (groups of 2 or
  3 sharing family name and postcode); some sibling groups contain twins (:data:`TWIN_SHARE`).
  Each household has a cultural background (``namedata.NAME_GROUPS``), a family name drawn
  from that background with a long-tailed Zipf-Mandelbrot frequency, and a postcode: a real
  outward code (district) plus a random inward part "9AA".
* Children. Sex, a given name by sex (some from another background), some with one or two
  middle names, a date of birth giving an age of 0-17 on :data:`REFERENCE_DATE`, a unique NHS
  number valid under modulus 11.
* Addresses (only with ``addresses=True``, from streams of their own so that nothing else
  changes). Each household has an address line (house number and street, a share of them a
  flat), which its children share; an agency writes it with abbreviations, a mistyped or
  missing house number, the flat left out, or not at all, and a child who moved house
  (``moved_house``) has a new address with the new postcode (:mod:`.addresses`).
* Agency records. A child appears in an agency with probability ``coverage``; a held child has
  a second record with probability ``duplicate_rate``. Every record gets independent errors at
  the agency's rates (see ``AgencyProfile``). Records are shuffled before numbering, so a
  record id ("POL-000123") says nothing about the child.

Modules: :mod:`.profiles` (agencies and their error rates), :mod:`.mistakes` (how a value
goes wrong), :mod:`.addresses` (address lines and their errors), :mod:`.generate` (the
generator), :mod:`.records` (the output and its truth).

Invariants: the output depends only on the seed and the profiles (never on today's date);
every per-record choice is drawn in numpy arrays up front, and Python-level string edits run
only over the records flagged for an edit.
"""

from linkage.synthetic.generate import generate_population, zipf_weights
from linkage.synthetic.mistakes import (
    is_valid_nhs_number,
    make_typo,
    nhs_check_digit,
    transliterate,
)
from linkage.synthetic.profiles import (
    ADDRESS_COLUMN,
    ADDRESS_ERROR_CATEGORIES,
    BOY_SHARE,
    COLUMNS,
    DATE_FORMATS,
    DEFAULT_AGENCIES,
    DOUBLE_BARRELLED_SHARE,
    ERROR_CATEGORIES,
    FLAT_SHARE,
    MIDDLE_NAME_SHARE,
    MIXED_NAME_SHARE,
    PROFILES,
    REFERENCE_DATE,
    SEX_STYLES,
    SEX_UNKNOWN_CODES,
    SIBLING_SHARE,
    TWIN_SHARE,
    UNKNOWN_DATE,
    AgencyProfile,
    MissingRates,
)
from linkage.synthetic.records import (
    AgencyData,
    CombinedRecords,
    SyntheticData,
    rows,
    true_pairs_between,
    true_pairs_within,
)

__all__ = [
    "ADDRESS_COLUMN",
    "ADDRESS_ERROR_CATEGORIES",
    "BOY_SHARE",
    "COLUMNS",
    "DATE_FORMATS",
    "DEFAULT_AGENCIES",
    "DOUBLE_BARRELLED_SHARE",
    "ERROR_CATEGORIES",
    "FLAT_SHARE",
    "MIDDLE_NAME_SHARE",
    "MIXED_NAME_SHARE",
    "PROFILES",
    "REFERENCE_DATE",
    "SEX_STYLES",
    "SEX_UNKNOWN_CODES",
    "SIBLING_SHARE",
    "TWIN_SHARE",
    "UNKNOWN_DATE",
    "AgencyData",
    "AgencyProfile",
    "CombinedRecords",
    "MissingRates",
    "SyntheticData",
    "generate_population",
    "is_valid_nhs_number",
    "make_typo",
    "nhs_check_digit",
    "rows",
    "transliterate",
    "true_pairs_between",
    "true_pairs_within",
    "zipf_weights",
]
