"""The front page: what Polku is (later: the user's caseload)."""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

from litestar import Controller, get
from litestar.response import Template

FINLAND = ZoneInfo("Europe/Helsinki")


class HomeController(Controller):
    path = "/"

    @get(name="home", sync_to_thread=False)
    def show(self) -> Template:
        return Template(template_name="home.html", context={"today": dt.datetime.now(FINLAND).date()})
