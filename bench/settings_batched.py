"""The project with the batched receive path of bench.layers (a measured proposal); with the
pooled database connections of bench.settings_pooled, so both proposals are measured together.
"""

from bench.settings_pooled import *  # noqa: F403

CHANNEL_LAYERS["default"]["BACKEND"] = "bench.layers.BatchedRedisChannelLayer"  # noqa: F405
