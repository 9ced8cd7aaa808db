"""The front page: what Polku is, and the way in (or, signed in, to where one works)."""

from __future__ import annotations

import datetime as dt
from typing import Any

from litestar import Controller, Request, get
from litestar.response import Template

from domain.values import FINLAND
from web.identity import account_of



class HomeController(Controller):
    path = "/"

    @get(name="home", sync_to_thread=False)
    def show(self, request: Request[Any, Any, Any]) -> Template:
        """What Polku is; for a signed-out visitor the way in, for a signed-in person the way
        to where they work (the front page is public, so ``account_of`` may be None)."""
        context = {"today": dt.datetime.now(FINLAND).date(), "account": account_of(request)}
        return Template(template_name="home.html", context=context)
