"""Route handlers of the web application, one controller per resource.

:data:`BASE_ROUTE_HANDLERS` are the ones every Polku app has; plan pages and the like are
added by passing their controllers to :func:`web.app.create_app`.
"""

from web.controllers.health import health_check
from web.controllers.home import HomeController
from web.controllers.language import LanguageController

__all__ = ("BASE_ROUTE_HANDLERS", "HomeController", "LanguageController", "health_check")

BASE_ROUTE_HANDLERS = (HomeController, LanguageController, health_check)
