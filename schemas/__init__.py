"""The contracts between stages: versioned, frozen command and event models with stable wire names."""

from schemas.base import Message, decode, encode, registered_types  # noqa: F401
from schemas.commands import *  # noqa: F403
from schemas.events import *  # noqa: F403
