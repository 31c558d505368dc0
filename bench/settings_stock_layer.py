"""A same-run baseline (``system@stock_layer``): the project with channels-redis' stock
``RedisChannelLayer`` instead of dayone_chat/layers.py, to measure what that layer buys."""

from bench.settings import *  # noqa: F403

CHANNEL_LAYERS["default"]["BACKEND"] = "channels_redis.core.RedisChannelLayer"  # noqa: F405
