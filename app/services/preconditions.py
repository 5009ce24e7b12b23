"""If-Match on a task's changes: which revisions a request allows it to change, and the 412s."""

from __future__ import annotations

from app.core.errors import PreconditionFailed
from app.schemas import etag


def if_match_holds(if_match: str | None, revision: int) -> bool:
    """Whether an ``If-Match`` header allows changing the task at ``revision``: absent, ``*``,
    or a list naming its ETag (strong comparison: a weak tag never matches)."""
    if if_match is None:
        return True
    tags = [tag.strip() for tag in if_match.split(",")]
    return "*" in tags or etag(revision) in tags


def check_if_match(if_match: str | None, revision: int) -> None:
    if not if_match_holds(if_match, revision):
        raise PreconditionFailed(
            f"If-Match {if_match} does not name the task's current revision, {etag(revision)}: "
            "it changed since you read it; GET it again and retry"
        )


def names_revisions(if_match: str | None) -> bool:
    """Whether ``If-Match`` asks for particular revisions (absent or ``*``: any current one)."""
    return if_match is not None and "*" not in [tag.strip() for tag in if_match.split(",")]


def changed_meanwhile(if_match: str | None) -> PreconditionFailed:
    """The 412 for a conditional write that found the task changed after it was read."""
    return PreconditionFailed(
        f"If-Match {if_match} named the task's revision when this request read it, but the task "
        "changed while it was being processed; GET it again and retry"
    )
