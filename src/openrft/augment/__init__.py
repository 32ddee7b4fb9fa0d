"""Data augmentation (OpenRFT section 2.1, the "DA" rows): LLM question rewrites + option shuffling.

>>> from openrft.augment import AugmentConfig
>>> AugmentConfig().k, AugmentConfig().expansion
(5, 6)
"""

from openrft.augment.rewrite import (
    RULES,
    SEP,
    ValidationRules,
    Verdict,
    parse_variants,
    rewrite_messages,
    similarity,
    validate_variant,
)
from openrft.augment.tokens import Token, missing_tokens, protected_tokens
from openrft.augment.shuffle import (
    apply_permutation,
    balanced_targets,
    check_remap,
    option_permutation,
    pinned_positions,
    rng_for,
    shuffle_options,
    shuffle_skip_reason,
)
from openrft.augment.config import AugmentConfig, config_help
from openrft.augment.stats import augment_stats, shortfall
from openrft.augment.stage import (
    AUGMENTED,
    METHODS,
    REWRITES,
    AugmentResult,
    expand,
    generator_label,
    run_augment,
)

__all__ = [
    "AUGMENTED",
    "METHODS",
    "REWRITES",
    "RULES",
    "SEP",
    "AugmentConfig",
    "AugmentResult",
    "Token",
    "ValidationRules",
    "Verdict",
    "apply_permutation",
    "augment_stats",
    "balanced_targets",
    "check_remap",
    "config_help",
    "expand",
    "generator_label",
    "missing_tokens",
    "option_permutation",
    "parse_variants",
    "pinned_positions",
    "protected_tokens",
    "rewrite_messages",
    "rng_for",
    "run_augment",
    "shortfall",
    "shuffle_options",
    "shuffle_skip_reason",
    "similarity",
    "validate_variant",
]
