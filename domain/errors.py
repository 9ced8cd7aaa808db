"""Domain errors: why a command was refused.

Each error carries a message template in plain English with named
placeholders and the values for them, so that the web layer can translate
the template through gettext and fill it in, while `str(error)` gives the
English sentence for logs and the command line. `code` is stable and
machine-readable for the JSON API; `field` names the input at fault, if any.
"""

from __future__ import annotations

from typing import Any


class DomainError(Exception):
    code = "domain_error"

    def __init__(self, template: str, *, field: str | None = None, **params: Any):
        self.template = template
        self.field = field
        self.params = {"field": field, **params} if field is not None else params
        super().__init__(template % self.params if "%(" in template else template)

    @property
    def message(self) -> str:
        return str(self)


class InvalidValue(DomainError):
    """An input is malformed or out of range; `%(field)s` in the template names it."""

    code = "invalid_value"

    def __init__(self, field: str, template: str, **params: Any):
        super().__init__(template, field=field, **params)


class RuleViolation(DomainError):
    """The input is well-formed but the plan's rules forbid the command."""

    code = "rule_violation"


class NotFound(DomainError):
    code = "not_found"


class PlanNotFound(NotFound):
    code = "plan_not_found"

    def __init__(self, plan_id: object):
        super().__init__("There is no plan %(plan_id)s.", plan_id=str(plan_id))


class PlanClosed(RuleViolation):
    code = "plan_closed"

    def __init__(self) -> None:
        super().__init__("The plan is closed: reopen it before changing it.")


class NotYours(RuleViolation):
    """The command is reserved for someone else (e.g. a handover's recipient)."""

    code = "not_permitted"


class EditConflict(DomainError):
    """The item changed after the editor last saw it.

    `changes` lists what happened to the item since the revision the editor
    saw: who, from which organisation, when, and which fields.
    """

    code = "edit_conflict"

    def __init__(
        self,
        *,
        item_kind: str,
        item_id: str,
        seen_revision: int,
        current_revision: int,
        changes: list[dict[str, Any]],
    ):
        self.item_kind = item_kind
        self.item_id = item_id
        self.seen_revision = seen_revision
        self.current_revision = current_revision
        self.changes = changes
        names = ", ".join(sorted({c["by_name"] for c in changes})) or "someone"
        super().__init__(
            "This %(item_kind)s was changed by %(names)s after you opened it.",
            item_kind=item_kind,
            names=names,
        )


class PlanErased(DomainError):
    code = "plan_erased"

    def __init__(self, plan_id: object):
        super().__init__(
            "The plan %(plan_id)s has been erased at the end of its retention period.",
            plan_id=str(plan_id),
        )


class StoreBusy(DomainError):
    """Too many concurrent writers on one plan (a lock held past the lock timeout, the race
    to save lost again and again); the command may be retried."""

    code = "store_busy"

    def __init__(self) -> None:
        super().__init__("The plan is busy with other edits; please try again.")


class ConfigurationError(ValueError):
    """A setting (an environment variable) has a value the service cannot use; the message
    names the setting. The command line says it in one line instead of a traceback."""


class Repeated(Exception):
    """A command recorded already, given again (a double click, a retry): it is answered
    like the first time, from its receipt, and records nothing. Not a refusal."""

    def __init__(self, receipt: Any):
        super().__init__(receipt)
        self.receipt = receipt


class StoreUnavailable(RuntimeError):
    """A store could not be reached: no connection to the database (refused, none free in
    time, too many clients), or the connection dropped again when tried once more; or the
    account store (``web.accounts``, whose tables are no plan's) stayed locked past its timeout.

    Retryable, like :class:`StoreBusy`, but not a refusal of the command (nothing is wrong
    with it or with the plan), so not a :class:`DomainError`: the web layer answers it 503
    with ``Retry-After`` ("could not reach its database"), the command line with a one-line
    error. :class:`StoreBusy` stays for other writers holding the plan or its table longer
    than the lock timeout, or winning the race to save it again and again.
    """
