"""The cloud tier: merges the fogs' partials into city-wide answers (docs/design.md "City scale")."""


class RoutingError(Exception):
    """A command the cloud cannot route: HTTP status, code, message, the field at fault."""

    def __init__(self, status: int, code: str, message: str, field: str | None = None):
        super().__init__(message)
        self.status, self.code, self.message, self.field = status, code, message, field
