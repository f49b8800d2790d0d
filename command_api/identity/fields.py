"""API field types for identities, documented as they are checked."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

# The request models check only the shape (422 ``validation_error``); whether mail could reach the address
# is policy (422 ``invalid_email``, see normalise_email), as for phone numbers.
EMAIL_SHAPE = r"^[^@\s]+@[^@\s]+$"
Email = Annotated[str, Field(max_length=254, pattern=EMAIL_SHAPE, json_schema_extra={"format": "email"})]
