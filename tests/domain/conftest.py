"""Shared fixtures of the domain tests: the people who work on a client's plan.

Three organisations take part, so that the rules about organisations (consents, the
counterpart working elsewhere) can be seen at work:

- the health centre (``org-hc``): Anna, the nurse who opens plans and is their named
  expert, and Aino, a physiotherapist of the same health centre;
- Kela (``org-kela``): Bert, a benefits officer, the usual counterpart;
- the employment services (``org-te``): Carla, an employment adviser.

A person's ``Actor`` is who gives a command; the same person's details are also what
``add_member`` takes to bring them into the network.
"""

from __future__ import annotations

import pytest

from domain.values import Actor

HEALTH_CENTRE = ("org-hc", "Oulu Health Centre")
KELA = ("org-kela", "Kela Oulu")
EMPLOYMENT_SERVICES = ("org-te", "Oulu Employment Services")


def _actor(person_id: str, name: str, organisation: tuple[str, str]) -> Actor:
    return Actor(person_id=person_id, name=name, organisation_id=organisation[0], organisation_name=organisation[1])


@pytest.fixture
def anna() -> Actor:
    """Nurse at the health centre; opens the plans, so she is their named expert."""
    return _actor("p-anna", "Anna Aalto", HEALTH_CENTRE)


@pytest.fixture
def aino() -> Actor:
    """Physiotherapist at the same health centre as Anna."""
    return _actor("p-aino", "Aino Virta", HEALTH_CENTRE)


@pytest.fixture
def bert() -> Actor:
    """Benefits officer at Kela; the counterpart in most scenarios."""
    return _actor("p-bert", "Bert Berg", KELA)


@pytest.fixture
def carla() -> Actor:
    """Employment adviser at the employment services."""
    return _actor("p-carla", "Carla Koski", EMPLOYMENT_SERVICES)
