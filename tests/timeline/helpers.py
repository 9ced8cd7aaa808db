"""Small builders shared by the timeline tests."""

from datetime import date, timedelta

from timeline import TimelineGoal, TimelineInput, TimelineMarker, TimelineStep

TODAY = date(2026, 11, 23)


def step(id, start, end, category="health", status="planned", title=None):
    return TimelineStep(
        id=id, title=title or f"Step {id}", category=category, start=start, end=end, status=status
    )


def goal(id, target, *categories, status="set", title=None):
    return TimelineGoal(
        id=id, title=title or f"Goal {id}", categories=categories or ("health",),
        target=target, status=status,
    )


def plan(steps=(), goals=(), markers=(), today=TODAY, opened_on=None, closed_on=None):
    return TimelineInput(
        today=today,
        opened_on=opened_on or today,
        closed_on=closed_on,
        steps=tuple(steps),
        goals=tuple(goals),
        markers=tuple(markers),
    )


def days(n):
    return timedelta(days=n)


def upper(text):
    """A fake gettext: proves that a word went through gettext."""
    return text.upper()


def marker(kind, on, label=""):
    return TimelineMarker(kind=kind, on=on, label=label)
