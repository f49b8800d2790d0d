"""Message base class, registry, wire encoding and upcasting.

On the wire a message is JSON: ``{"type": "RequestPayment", "version": 1, "data": {...}}``. The type name
and version are declared on the class and never derived from its Python path, so classes can move.
Older versions stay readable: an upcaster turns version N's ``data`` into version N+1's.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any, ClassVar, Literal, Self

from pydantic import BaseModel, ConfigDict, ValidationError
from pydantic.fields import FieldInfo
from pydantic_core import from_json

_REGISTRY: dict[str, type[Message]] = {}
_UPCASTERS: dict[tuple[str, int], Callable[[dict], dict]] = {}


class UnknownMessage(ValueError):
    """The bytes are not JSON, or name a type or version we cannot read."""


class Message(BaseModel):
    """A frozen, strictly validated message with a stable wire type name and a schema version."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    TYPE: ClassVar[str]
    VERSION: ClassVar[int] = 1

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        name = cls.__dict__.get("TYPE")
        if name:
            if name in _REGISTRY and _REGISTRY[name] is not cls:
                raise TypeError(f"message type {name!r} registered twice")
            _REGISTRY[name] = cls

    @classmethod
    def trusted(cls, **values: Any) -> Self:
        """What ``model_construct(**values)`` gives, at a fraction of its cost: for values that were validated on
        their way into the ledger (the processor's outcome events, built per command on its hot path).

        No validation; the same instance (its fields in declaration order, defaults filled in, the fields
        given as its fields set), without model_construct's per-field alias handling, which messages never
        need (a message class with aliases gets model_construct itself). tests/unit/test_message_trusted.py
        holds the two equal."""
        plan = _PLANS.get(cls)
        if plan is None:
            plan = _PLANS[cls] = _plan(cls)
        if plan is False:
            return cls.model_construct(**values)
        fields: dict[str, Any] = {}
        for name, field in plan:
            if name in values:
                fields[name] = values[name]
            elif field is not None:
                fields[name] = field.get_default(call_default_factory=True, validated_data=fields)
        m = cls.__new__(cls)
        _setattr(m, "__dict__", fields)
        _setattr(m, "__pydantic_fields_set__", values.keys() & fields.keys())
        _setattr(m, "__pydantic_extra__", None)
        _setattr(m, "__pydantic_private__", None)
        return m


# Per message class: (field name, its FieldInfo when it has a default, else None) in declaration order; False
# where model_construct must do the work (aliases, extra fields kept, a post-init hook).
_PLANS: dict[type[Message], list[tuple[str, FieldInfo | None]] | Literal[False]] = {}
_setattr = object.__setattr__


def _plan(cls: type[Message]) -> list[tuple[str, FieldInfo | None]] | Literal[False]:
    fields = cls.__pydantic_fields__
    if (
        any(f.alias is not None or f.validation_alias is not None for f in fields.values())
        or cls.model_config.get("extra") == "allow"
        or cls.__pydantic_post_init__
        or cls.__pydantic_root_model__
    ):
        return False
    return [(name, None if f.is_required() else f) for name, f in fields.items()]


def upcaster(type_name: str, from_version: int):
    """Register a pure function turning ``type_name`` v``from_version`` data into v``from_version + 1``."""

    def register(fn: Callable[[dict], dict]) -> Callable[[dict], dict]:
        _UPCASTERS[(type_name, from_version)] = fn
        return fn

    return register


def registered_types() -> dict[str, type[Message]]:
    return dict(_REGISTRY)


def to_wire(message: Message) -> dict:
    return {"type": message.TYPE, "version": message.VERSION, "data": message.model_dump(mode="json")}


def encode(message: Message) -> bytes:
    """Wire bytes: the envelope around pydantic's own (Rust) JSON of the message.

    The model's serializer is called directly: ``model_dump_json()`` is the same call with every option at its
    default, behind a Python wrapper that costs more than the serialisation and returns text to encode again."""
    cls = message.__class__
    head = _HEADS.get(cls)
    if head is None:
        head = _HEADS[cls] = b'{"type":%s,"version":%d,"data":' % (json.dumps(cls.TYPE).encode(), cls.VERSION)
    return head + cls.__pydantic_serializer__.to_json(message) + b"}"


# Each class's envelope up to its data: the same bytes for every message of the class.
_HEADS: dict[type[Message], bytes] = {}


def from_wire(envelope: dict) -> Message:
    try:
        type_name, version, data = envelope["type"], int(envelope["version"]), envelope["data"]
    except (KeyError, TypeError, ValueError):
        raise UnknownMessage("not a message envelope") from None
    cls = _REGISTRY.get(type_name)
    if cls is None:
        raise UnknownMessage(f"unknown message type {type_name!r}")
    if version > cls.VERSION:
        raise UnknownMessage(f"{type_name} v{version} is newer than this reader (v{cls.VERSION})")
    while version < cls.VERSION:
        step = _UPCASTERS.get((type_name, version))
        if step is None:
            raise UnknownMessage(f"no upcaster for {type_name} v{version}")
        data = step(dict(data))
        version += 1
    try:
        # model_validate(data) without its Python wrapper (every option at its default: the same call).
        return cls.__pydantic_validator__.validate_python(data)
    except ValidationError as exc:
        raise UnknownMessage(
            f"invalid {type_name}: {exc.error_count()} error(s): {exc.errors(include_url=False, include_input=False)}"
        ) from None


def decode(raw: bytes) -> Message:
    try:
        envelope = from_json(raw)
    except (ValueError, TypeError):
        raise UnknownMessage("not JSON") from None
    if not isinstance(envelope, dict):
        raise UnknownMessage("not a message envelope")
    return from_wire(envelope)
