"""Re-identification attack benchmark: how much an honest-but-curious matcher can learn.

Role: measures the hardening options of :mod:`linkage.harden` (and salting) against the
attacks the literature runs on Bloom-filter encodings, beside the linkage quality they cost,
so that the default hardening is chosen from one table. ``python -m benchmarks.attack`` prints
one JSON object per line and setting; ``--large`` uses 50 000 records; ``--plot PATH``
draws :func:`plot_tradeoff`. Figures: ``benchmarks/RESULTS.md``.

Modules: :mod:`.settings` (the settings, the populations and their encoding),
:mod:`.frequency` (attack 1), :mod:`.graph` (the structural stage), :mod:`.fields` (a
field's two sides), :mod:`.seeding` (value seeding) and :mod:`.decoding` (pattern mining),
:mod:`.cooccurrence`, :mod:`.combined` (attack 2 as the attacker runs it) and :mod:`.driver`
(quality, the run, the plot, the CLI, the report). This package re-exports what other
benchmarks and the tests use.

Threat model: the attacker is the matcher. It sees every published encoding (field filters
and the record-level filter, after hardening) and the published schema, never the linkage
secret. Data: the health agency's records of a seeded synthetic child population, one record
per child, encoded with the real encoder and the shipped child schema, as shipped or
modified per setting (:func:`setting_schema`, :func:`publish_setting`: exactly as a node
publishes them, forms included). The attacker encodes its own population with the same
schema and its own secret.

Attacks:

1. frequency alignment of names (:func:`frequency_attack`), plain, salt-aware and with every
   salt known (an upper bound on what the salt tags could add);
2. graph matching (:func:`graph_attack`: :func:`structural_attack`, then
   :func:`decode_and_match`) at several overlaps between the attacker's plaintext and the
   encoded records, and the group co-occurrence attack (:func:`cooccurrence_attack`), which
   reads only which records share a filter, blocking key or salt tag;
3. insider probing of a real matcher through ``Match`` (:mod:`benchmarks.insider`);
4. the linkage quality of the same settings (``pipeline.cluster_datasets`` on the
   four-agency synthetic population, ``pipeline.link_two`` on FEBRL4-half).
"""

from __future__ import annotations

from benchmarks.attack.combined import (
    attacker_encoder,
    graph_attack,
    graph_attack_by_overlap,
    graph_attack_rate,
)
from benchmarks.attack.cooccurrence import (
    colour_seeds,
    cooccurrence_attack,
    frequency_seeds,
    published_group_fields,
    separated_ranks,
)
from benchmarks.attack.decoding import (
    decode_and_match,
)
from benchmarks.attack.driver import (
    REPORT_COLUMNS,
    main,
    plot_tradeoff,
    quality_febrl4_half,
    quality_synthetic,
    run_attack,
    run_cli,
    write_attack_report,
)
from benchmarks.attack.fields import (
    salt_values,
)
from benchmarks.attack.frequency import (
    frequency_attack,
    frequency_shares,
)
from benchmarks.attack.graph import (
    GraphSide,
    graph_side,
    structural_attack,
)
from benchmarks.attack.settings import (
    AGENCIES_SECRET,
    ATTACKER_SECRET,
    FEBRL_SALTED_FIELDS,
    NAME_FIELDS,
    OVERLAPS,
    SALT,
    SALTED_FIELDS,
    SETTINGS,
    Setting,
    attacker_population,
    encode_setting,
    filter_blocking,
    filter_index,
    normalised_values,
    one_record_per_child,
    publish_setting,
    setting_schema,
    shipped_febrl_schema,
    take_columns,
)

__all__ = [
    "AGENCIES_SECRET",
    "ATTACKER_SECRET",
    "FEBRL_SALTED_FIELDS",
    "NAME_FIELDS",
    "OVERLAPS",
    "REPORT_COLUMNS",
    "SALT",
    "SALTED_FIELDS",
    "SETTINGS",
    "GraphSide",
    "Setting",
    "attacker_encoder",
    "attacker_population",
    "colour_seeds",
    "cooccurrence_attack",
    "decode_and_match",
    "encode_setting",
    "filter_blocking",
    "filter_index",
    "frequency_attack",
    "frequency_seeds",
    "frequency_shares",
    "graph_attack",
    "graph_attack_by_overlap",
    "graph_attack_rate",
    "graph_side",
    "main",
    "normalised_values",
    "one_record_per_child",
    "plot_tradeoff",
    "publish_setting",
    "published_group_fields",
    "quality_febrl4_half",
    "quality_synthetic",
    "run_attack",
    "run_cli",
    "salt_values",
    "separated_ranks",
    "setting_schema",
    "shipped_febrl_schema",
    "structural_attack",
    "take_columns",
    "write_attack_report",
]
