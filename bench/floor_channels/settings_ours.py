"""The Channels floor on the project's own channel layer (dayone_chat/layers.py: one batched
reader per process, groups joined once per process) instead of channels-redis' stock one."""

from bench.floor_channels.settings import *  # noqa: F403

CHANNEL_LAYERS["default"]["BACKEND"] = "dayone_chat.layers.DayOneChannelLayer"  # noqa: F405
