"""The Channels floor with the batched receive path of bench.layers (a measured proposal)."""

from bench.floor_channels.settings import *  # noqa: F403

CHANNEL_LAYERS["default"]["BACKEND"] = "bench.layers.BatchedRedisChannelLayer"  # noqa: F405
