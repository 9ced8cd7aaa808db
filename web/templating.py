"""Jinja2 templates in the user's language.

One Jinja ``Environment`` per language, each with ``jinja2.ext.i18n`` installed with that
language's catalogue: ``_()``, ``gettext()``, ``ngettext()`` and ``{% trans %}`` work in every
template, macro and include, and no state is shared between requests (thread-safe).

Each render picks the environment from ``lang`` in its context; a route handler need not
pass it: :class:`LocalisedJinjaEngine` fills in ``lang`` from the request (see
:func:`web.i18n.language_of`). Outside a request (the live hub rendering a fragment once
per language) call :meth:`LocalisedJinjaEngine.render` with ``lang=``.

Every template gets, besides Litestar's ``request``, ``csrf_input`` and ``url_for``:

``lang``
    ``"fi"``, ``"sv"`` or ``"en"``.
``languages``
    ``[(code, name in that language), ...]`` for the language switch.
``csrf_token()``
    the CSRF token of the request (for ``<meta name="csrf-token">`` and forms).
``csrf_header_name``
    the header htmx sends it in (``x-csrftoken``).
``|date`` filter
    ``{{ step.planned | date }}`` -> ``23.11.2026`` in Finnish; ``|date("long")``.
``step_overdue(status, planned_end, today)``
    whether a step is overdue: still planned or going on after its planned end.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable
from functools import lru_cache, partial
from pathlib import Path
from typing import Any, Mapping

from jinja2 import Environment, FileSystemLoader, StrictUndefined, pass_context, pass_eval_context, select_autoescape
from jinja2 import TemplateNotFound as JinjaTemplateNotFound
from jinja2.nodes import EvalContext
from markupsafe import Markup, escape
from litestar.exceptions import TemplateNotFoundException
from litestar.plugins.jinja import JinjaTemplateEngine

from domain.values import StepStatus
from web.i18n import DEFAULT_LANGUAGE, LANGUAGE_NAMES, LANGUAGES, format_date, language_of, translations
from web.security import CSRF_HEADER_NAME, csrf_token_of

__all__ = ("HTMX_CONFIG", "TEMPLATE_DIR", "LocalisedJinjaEngine", "LocalisedTemplate", "step_overdue")

TEMPLATE_DIR = Path(__file__).resolve().parent / "templates"

#: htmx settings, given to htmx by ``<meta name="htmx-config">`` in ``base.html``:
#: no inline styles (CSP), no eval or scripts in swapped content, requests to this site
#: only, and no copies of pages (personal data) in localStorage. ``attributesToSettle``
#: leaves out htmx's default "style": settling copies the old element's style attribute
#: with ``setAttribute``, which the CSP's style-src refuses (a console error every swap).
HTMX_CONFIG = {
    "includeIndicatorStyles": False,
    "attributesToSettle": ["class", "width", "height"],
    "allowEval": False,
    "allowScriptTags": False,
    "selfRequestsOnly": True,
    "historyCacheSize": 0,
}


def step_overdue(status: str, planned_end: dt.date, today: dt.date) -> bool:
    """Whether a step is overdue: its planned end has passed while it is still planned or
    going on (a step done or cancelled is not; one ending today is not yet)."""
    return status in (StepStatus.PLANNED, StepStatus.STARTED) and planned_end < today


class LocalisedJinjaEngine(JinjaTemplateEngine):
    """Litestar's Jinja engine with one environment per interface language."""

    def __init__(
        self, directory: Path | list[Path] | None = None, engine_instance: Any = None, *, auto_reload: bool = True
    ) -> None:
        """``auto_reload=False``: templates are read once (no ``stat`` of every template at
        every render; the running server then does not see edited templates)."""
        if engine_instance is not None:
            raise TypeError("LocalisedJinjaEngine builds its own environments; pass a directory")
        directories = directory or TEMPLATE_DIR
        self.environments = {language: _environment(directories, language) for language in LANGUAGES}
        for environment in self.environments.values():
            environment.auto_reload = auto_reload
        # Litestar registers its template callables (url_for, csrf_token...) through here.
        super().__init__(directory=None, engine_instance=self.environments[DEFAULT_LANGUAGE])
        # Our csrf_token also works on error pages rendered outside the CSRF middleware.
        self.register_template_callable("csrf_token", _csrf_token)

    def register_template_callable(self, key: str, template_callable: Any) -> None:
        for environment in self.environments.values():
            environment.globals[key] = pass_context(template_callable)

    def get_template(self, template_name: str) -> LocalisedTemplate:
        try:
            self.environments[DEFAULT_LANGUAGE].get_template(template_name)
        except JinjaTemplateNotFound as exc:
            raise TemplateNotFoundException(template_name=template_name) from exc
        return LocalisedTemplate(self, template_name)

    def render_string(self, template_string: str, context: Mapping[str, Any]) -> str:
        context = _with_language(context)
        return self.environments[context["lang"]].from_string(template_string).render(context)

    def render(self, template_name: str, /, **context: Any) -> str:
        """Render ``template_name`` with ``context`` (give ``lang``, or a ``request``)."""
        context = _with_language(context)
        return self.environments[context["lang"]].get_template(template_name).render(context)

    def module(self, template_name: str, /, **context: Any) -> Any:
        """``template_name``'s macros bound to ``context``, as ``{% import ... with context %}``
        gives them: made once for renders that share one context (each import makes them anew)."""
        context = _with_language(context)
        return self.environments[context["lang"]].get_template(template_name).make_module(context)


class LocalisedTemplate:
    """What :meth:`LocalisedJinjaEngine.get_template` returns: rendered in the context's language."""

    def __init__(self, engine: LocalisedJinjaEngine, name: str) -> None:
        self.engine = engine
        self.name = name

    def render(self, *args: Any, **kwargs: Any) -> str:
        return self.engine.render(self.name, **dict(*args, **kwargs))


def _environment(directories: Path | list[Path], language: str) -> Environment:
    environment = Environment(
        loader=FileSystemLoader(directories),
        autoescape=select_autoescape(default=True, default_for_string=True),
        undefined=StrictUndefined,
        extensions=["jinja2.ext.i18n"],
        trim_blocks=True,
        lstrip_blocks=True,
    )
    catalogue = translations(language)
    environment.install_gettext_translations(catalogue, newstyle=True)  # type: ignore[attr-defined]
    gettext = _newstyle_gettext(catalogue.gettext)
    environment.globals.update(_=gettext, gettext=gettext)
    environment.globals.update(
        languages=[(code, LANGUAGE_NAMES[code]) for code in LANGUAGES],
        csrf_header_name=CSRF_HEADER_NAME,
        htmx_config=HTMX_CONFIG,
        step_overdue=step_overdue,
    )
    environment.filters["date"] = partial(_date_filter, language=language)
    return environment


#: What a translation may hold for :func:`_newstyle_gettext`'s quick way: ``%%`` and ``%(name)s``.
_PLAIN_FIELD = re.compile(r"%(?:%|\([^)]*\)s)")


def _newstyle_gettext(translate: Callable[[str], str]) -> Callable[..., str]:
    """``_()``/``gettext()`` for the templates: Jinja's newstyle gettext, quicker, same output.

    Jinja's own does ``Markup(translation) % variables`` on every call (even without
    variables), and ``Markup.__mod__`` wraps the mapping and each value in a helper object
    that escapes it. Here each message's translation is looked at once (cached): without
    variables the answer is the cached ``Markup``; when its only fields are ``%(name)s``
    (and ``%%``), the values are escaped with :func:`markupsafe.escape` and formatted into
    it, which is what ``Markup.__mod__`` does for such fields. Anything else (``%(n)d``,
    flags, ...) and non-autoescaped output go Jinja's way. ``_`` resolves to this directly,
    not through Jinja's alias that looks ``gettext`` up at every call.
    """

    @lru_cache(maxsize=4096)
    def prepared(message: str) -> tuple[str, Markup | None, bool]:
        text = str(translate(message))  # a str, also when an untranslated message is Markup
        try:
            alone: Markup | None = Markup(text) % {}
        except (KeyError, ValueError, TypeError):
            alone = None  # it needs variables: formatting it without says why, each time
        return text, alone, "%" not in _PLAIN_FIELD.sub("", text)

    @pass_eval_context
    def gettext(eval_context: EvalContext, message: str, /, **variables: Any) -> str:
        if not eval_context.autoescape:
            return translate(message) % variables
        text, alone, plain = prepared(message)
        if not variables and alone is not None:
            return alone
        if plain:
            return Markup(text % {name: escape(value) for name, value in variables.items()})
        return Markup(text) % variables

    return gettext


def _with_language(context: Mapping[str, Any]) -> dict[str, Any]:
    context = dict(context)
    if context.get("lang") not in LANGUAGES:
        request = context.get("request")
        context["lang"] = language_of(request) if request is not None else DEFAULT_LANGUAGE
    return context


def _date_filter(value: dt.date | None, format: str = "medium", *, language: str) -> str:  # noqa: A002
    return "" if value is None else format_date(value, language, format)


def _csrf_token(context: Mapping[str, Any], /) -> str:
    request = context.get("request")
    return csrf_token_of(request) if request is not None else ""
