"""The API's flat error envelope: `{"error": code, "message": text}` with an HTTP status."""

from __future__ import annotations


class ApiError(Exception):
    """A request error answered as `{"error": code, "message": message}` with `status`."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message

    def body(self) -> dict[str, object]:
        return {"error": self.code, "message": self.message}
