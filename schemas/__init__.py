"""The contracts between stages: versioned, frozen command and event models with stable wire names."""

from schemas.base import Message, decode, encode, registered_types  # noqa: F401 - re-exported: the package names its public API
from schemas.commands import *  # noqa: F403 - every command, re-exported as the public API
from schemas.events import *  # noqa: F403 - every event, re-exported as the public API
