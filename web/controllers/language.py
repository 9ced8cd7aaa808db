"""The language switch: remembers the chosen language in a cookie and goes back."""

from __future__ import annotations

from typing import Literal

import msgspec
from litestar import Controller, post
from litestar.datastructures import Cookie
from litestar.di import NamedDependency
from litestar.params import URLEncodedBody
from litestar.response import Redirect
from litestar.status_codes import HTTP_303_SEE_OTHER

from web.i18n import LANGUAGE_COOKIE
from web.security import safe_redirect_target
from web.settings import Settings

_ONE_YEAR = 365 * 24 * 60 * 60


class LanguageChoice(msgspec.Struct):
    """The language switch form (its ``_csrf_token`` is checked by the CSRF middleware)."""

    lang: Literal["fi", "sv", "en"]
    next: str = "/"


class LanguageController(Controller):
    path = "/language"

    @post(name="language:choose", sync_to_thread=False, status_code=HTTP_303_SEE_OTHER)
    def choose(
        self,
        data: URLEncodedBody[LanguageChoice],
        settings: NamedDependency[Settings],
    ) -> Redirect:
        """Set the ``lang`` cookie and go back to ``next`` if it is a path on this site, else ``/``."""
        cookie = Cookie(
            key=LANGUAGE_COOKIE,
            value=data.lang,
            max_age=_ONE_YEAR,
            path="/",
            samesite="lax",
            httponly=True,
            secure=settings.secure_cookies,
        )
        return Redirect(
            path=safe_redirect_target(data.next),
            status_code=HTTP_303_SEE_OTHER,
            cookies=[cookie],
        )
