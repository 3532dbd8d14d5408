"""Jigsaw's linkage library: privacy-preserving record linkage on keyed Bloom filters.

The pipeline, in the order data flows through it::

    schema      -> what the fields are and how each is encoded (versioned TOML, fingerprinted)
    normalise   -> raw strings to canonical values (Unicode-aware, versioned)
    keys        -> per-field, per-purpose keys derived with HKDF-SHA256 from the shared secret
    encode      -> tokens -> keyed hash positions -> packed Bloom filters + blocking tokens
    harden      -> optional hardening transforms applied to filters (salting, BLIP, ...)
    similarity  -> Dice coefficient on packed filters (fast C kernel + plain reference)
    blocking    -> candidate pairs from keyed blocking tokens and LSH on filters
    scoring     -> unsupervised Fellegi-Sunter (EM) over per-field Dice comparison levels
    solve       -> ranked candidates, one-to-one assignment, clusters
    evaluate    -> precision / recall / F1, pair completeness, reduction ratio, cluster measures
    synthetic   -> seeded multi-agency child population with ground truth
    pipeline    -> the whole batch linkage wired together

The library imports no gRPC and does no network or storage I/O.
"""

__version__ = "0.1.0"
