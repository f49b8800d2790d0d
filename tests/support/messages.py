"""One check that two messages are the same in every way a reader or the wire can tell."""

from __future__ import annotations

from pydantic import BaseModel

from schemas.base import Message, encode


def same(a: BaseModel, b: BaseModel) -> None:
    """Equal values of the same types in the same order (pydantic serialises in dict order), the same fields set,
    no extras or private state, and the same JSON and wire bytes."""
    assert type(a) is type(b)
    assert list(a.__dict__.items()) == list(b.__dict__.items())
    assert [type(v) for v in a.__dict__.values()] == [type(v) for v in b.__dict__.values()]
    assert a.model_fields_set == b.model_fields_set
    assert a.__pydantic_extra__ == b.__pydantic_extra__ and a.__pydantic_private__ == b.__pydantic_private__
    assert a == b
    assert a.model_dump_json() == b.model_dump_json()
    if isinstance(a, Message) and isinstance(b, Message) and hasattr(type(a), "TYPE"):
        assert encode(a) == encode(b)
