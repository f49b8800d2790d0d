"""Message base class, registry, wire encoding and upcasting.

On the wire a message is JSON: ``{"type": "RequestPayment", "version": 1, "data": {...}}``. The type name
and version are declared on the class and never derived from its Python path, so classes can move.
Older versions stay readable: an upcaster turns version N's ``data`` into version N+1's.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from types import UnionType
from typing import Annotated, Any, ClassVar, Literal, Self, TypeVar, Union, get_args, get_origin

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    PlainValidator,
    ValidationError,
    WrapValidator,
)
from pydantic.fields import FieldInfo
from pydantic_core import from_json

from schemas.money import MAX_AMOUNT, any_money, positive_amount

_REGISTRY: dict[str, type[Message]] = {}
M = TypeVar("M", bound="Message")
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
        return _instance(cls, fields, values.keys() & fields.keys())


# Per message class: (field name, its FieldInfo when it has a default, else None) in declaration order; False
# where model_construct must do the work (aliases, extra fields kept, a post-init hook).
_PLANS: dict[type[Message], list[tuple[str, FieldInfo | None]] | Literal[False]] = {}
_setattr = object.__setattr__


def _instance(cls: type[M], fields: dict[str, Any], fields_set: Iterable[str]) -> M:
    """An instance of ``cls`` holding ``fields`` (all of them, in declaration order), unvalidated."""
    m = cls.__new__(cls)
    _setattr(m, "__dict__", fields)
    _setattr(m, "__pydantic_fields_set__", set(fields_set))
    _setattr(m, "__pydantic_extra__", None)
    _setattr(m, "__pydantic_private__", None)
    return m


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
    cls, data = _current(envelope)
    return _validated(cls, data)


def _current(envelope: dict) -> tuple[type[Message], dict]:
    """The envelope's message class and its data at the class's version (upcast); refuses what it cannot read."""
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
    return cls, data


def _validated(cls: type[Message], data: Any) -> Message:
    try:
        # model_validate(data) without its Python wrapper (every option at its default: the same call).
        return cls.__pydantic_validator__.validate_python(data)
    except ValidationError as exc:
        raise UnknownMessage(
            f"invalid {cls.TYPE}: {exc.error_count()} error(s): {exc.errors(include_url=False, include_input=False)}"
        ) from None


def _envelope(raw: bytes) -> dict:
    try:
        envelope = from_json(raw)
    except (ValueError, TypeError):
        raise UnknownMessage("not JSON") from None
    if not isinstance(envelope, dict):
        raise UnknownMessage("not a message envelope")
    return envelope


def decode(raw: bytes) -> Message:
    return from_wire(_envelope(raw))


def decode_trusted(raw: bytes) -> Message:
    """:func:`decode` without validating the data, for bytes this system's own :func:`encode` wrote from a valid
    message (the ledger's events: only the processor writes their topic). A rebuild reads millions of them.

    The envelope is read as by :func:`decode`: a type or version this reader does not know is refused, an older
    version upcast. The data becomes the message's fields as ``Message.trusted`` builds them, each value taken
    only if it is what ``encode`` writes: a str, int or bool of exactly that type, one of a literal's values,
    money as a string with two places (an ``Amount`` above zero), a time as a string with its offset; lengths and
    patterns are not checked. Data that does not fit (a required field missing, a field the class does not have,
    any other value) and classes with fields this cannot read (nested models, validators of their own) go
    through :func:`decode`'s validation instead, which refuses or converts as it does.
    tests/unit/test_decode_trusted.py holds the two equal."""
    cls, data = _current(_envelope(raw))
    reader = _READERS.get(cls)
    if reader is None:
        reader = _READERS[cls] = _reader(cls)
    if reader is not False and isinstance(data, dict):
        message = _read(cls, reader, data)
        if message is not None:
            return message
    return _validated(cls, data)


@dataclass(frozen=True)
class _Reader:
    """How decode_trusted reads one message class's data."""

    fields: list[tuple[str, FieldInfo | None, Callable[[Any], Any] | None]]  # declaration order: name, its
    # FieldInfo when it has a default, the conversion of its JSON value (None: as JSON gives it)
    names: tuple[str, ...]  # every field, in declaration order: what encode writes
    conversions: list[tuple[str, Callable[[Any], Any]]]  # the fields whose JSON value is converted


_READERS: dict[type[Message], _Reader | Literal[False]] = {}  # False: only validation will do


def _read(cls: type[Message], reader: _Reader, data: dict) -> Message | None:
    """The message of ``data`` built without validation, or None where the data does not fit the class."""
    try:
        if tuple(data) == reader.names:
            # What encode wrote (every field, in order): the data becomes the fields, a few values converted.
            for name, conversion in reader.conversions:
                value = data[name]
                if value is not None:
                    data[name] = conversion(value)
            return _instance(cls, data, data)
        fields: dict[str, Any] = {}
        present = 0
        for name, default, convert in reader.fields:
            if name in data:
                value = data[name]
                fields[name] = value if convert is None or value is None else convert(value)
                present += 1
            elif default is None:
                return None  # a required field is missing
            else:
                fields[name] = default.get_default(call_default_factory=True, validated_data=fields)
    except (ValueError, TypeError, ArithmeticError):
        return None
    if present != len(data):
        return None  # a field the class does not have
    return _instance(cls, fields, data)


def _decimal(value: Any) -> Decimal:
    """Money as encode writes it (``money_str``): a string of a finite number with exactly two places."""
    if type(value) is not str:
        raise TypeError("money is written as a string")  # never from a float
    d = Decimal(value)
    if not d.is_finite() or d.as_tuple().exponent != -2:
        raise ValueError("not money as encode writes it")
    return d


def _amount(value: Any) -> Decimal:
    """An ``Amount`` as encode writes it: money above zero, within numeric(15,2)."""
    d = _decimal(value)
    if not 0 < d <= MAX_AMOUNT:
        raise ValueError("not an amount")
    return d


def _datetime(value: Any) -> datetime:
    if type(value) is not str:
        raise TypeError("a time is written as a string")
    moment = datetime.fromisoformat(value)
    if moment.tzinfo is None:
        raise ValueError("encode writes every time with its offset")
    return moment


def _exactly(kind: type) -> Callable[[Any], Any]:
    """A JSON value taken as it is, only if it is of exactly this type (no "false" for False, no 3.0 for 3)."""

    def check(value: Any) -> Any:
        if type(value) is not kind:
            raise TypeError(f"not a {kind.__name__}")
        return value

    return check


def _one_of(allowed: tuple[Any, ...]) -> Callable[[Any], Any]:
    """A literal's JSON value, only if it is one of the literal's values (of the same type)."""
    known = {(type(a), a) for a in allowed}

    def check(value: Any) -> Any:
        if (type(value), value) not in known:
            raise ValueError("not one of the literal's values")
        return value

    return check


_EXACT = {str: _exactly(str), int: _exactly(int), bool: _exactly(bool)}
_AS_JSON_GIVES = (type(None), dict, list)
# The money validators decode_trusted replaces by its own checks of what encode writes.
_MONEY_CHECKS: dict[Callable[..., Any], Callable[[Any], Decimal]] = {positive_amount: _amount, any_money: _decimal}
_VALIDATORS = (AfterValidator, BeforeValidator, PlainValidator, WrapValidator)


def _reader(cls: type[Message]) -> _Reader | Literal[False]:
    plan = _plan(cls)
    decorators = cls.__pydantic_decorators__
    if plan is False or decorators.field_validators or decorators.model_validators or decorators.validators:
        return False
    fields: list[tuple[str, FieldInfo | None, Callable[[Any], Any] | None]] = []
    for name, default in plan:
        field = cls.__pydantic_fields__[name]
        convert = _conversion(field.annotation)
        if convert is False:
            return False
        validators = [m for m in field.metadata if isinstance(m, _VALIDATORS)]
        if validators:
            # Money's validator becomes the check of what encode writes; any other might change the value.
            money = _MONEY_CHECKS.get(validators[0].func) if len(validators) == 1 else None
            if convert is not _decimal or money is None:
                return False
            convert = money
        fields.append((name, default, convert))
    return _Reader(fields, tuple(name for name, _, _ in fields), [(name, c) for name, _, c in fields if c is not None])


def _conversion(annotation: Any) -> Callable[[Any], Any] | None | Literal[False]:
    """How a JSON value of this type becomes the field's value: None as it is, False when it cannot be read
    without validation."""
    if get_origin(annotation) is Annotated:
        if any(isinstance(m, _VALIDATORS) for m in get_args(annotation)[1:]):
            return False
        return _conversion(get_args(annotation)[0])
    if annotation is Decimal:
        return _decimal
    if annotation is datetime:
        return _datetime
    if annotation in _EXACT:
        return _EXACT[annotation]
    if annotation in _AS_JSON_GIVES:
        return None
    origin = get_origin(annotation)
    if origin is Literal:
        allowed = get_args(annotation)
        return _one_of(allowed) if all(type(a) in (str, int, bool) for a in allowed) else False
    if origin in (Union, UnionType):
        kinds = [a for a in get_args(annotation) if a is not type(None)]
        if len(kinds) == 1:
            return _conversion(kinds[0])
        return None if all(_conversion(k) is None for k in kinds) else False
    if origin in (dict, list):
        return None if all(_conversion(a) is None for a in get_args(annotation)) else False
    return False
