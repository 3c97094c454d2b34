"""The error detail carried by REST error bodies, result events and stored outcomes."""

from __future__ import annotations

from dataclasses import dataclass

from domain.errors import (
    CATALOGUE,
    MAX_DECLINE_CODE_LENGTH,
    MAX_PARAM_LENGTH,
    ErrorCode,
    PaygateError,
    bounded_text,
    storable_text,
)


@dataclass(frozen=True, slots=True)
class ErrorInfo:
    code: ErrorCode
    message: str
    param: str | None = None
    decline_code: str | None = None

    def __post_init__(self) -> None:
        # Storable and bounded as PaygateError's, for one made directly (domain.errors).
        object.__setattr__(self, "message", storable_text(self.message))
        object.__setattr__(self, "param", bounded_text(self.param, MAX_PARAM_LENGTH))
        object.__setattr__(
            self, "decline_code", bounded_text(self.decline_code, MAX_DECLINE_CODE_LENGTH)
        )

    @classmethod
    def from_error(cls, error: PaygateError) -> ErrorInfo:
        return cls(error.code, error.message, error.param, error.decline_code)

    @property
    def category(self) -> str:
        return CATALOGUE[self.code].category.value

    @property
    def retryable(self) -> bool:
        return CATALOGUE[self.code].retryable

    def to_dict(self) -> dict[str, object]:
        """``{code, message, category, retryable, param?, decline_code?}``."""
        body: dict[str, object] = {
            "code": self.code.value,
            "message": self.message,
            "category": self.category,
            "retryable": self.retryable,
        }
        if self.param is not None:
            body["param"] = self.param
        if self.decline_code is not None:
            body["decline_code"] = self.decline_code
        return body
