"""Links in a campaign that point at our own recipient pages' host but at no page there.

A template that writes ``{{ base_url }}/new`` where it meant the company's site
(``{{ site_url }}/new``) sends every recipient to the dispatcher's 404 page. Before a
campaign is scheduled its sample message is read for links under ``base_url``, and each is
matched against the web app's own routes (no request is made, nothing is recorded).
"""

from __future__ import annotations

import re
from html.parser import HTMLParser
from urllib.parse import urlsplit

from flask import Flask
from werkzeug.exceptions import MethodNotAllowed, NotFound

from dispatcher.sending.rendering import SAMPLE_RECIPIENTS, CampaignView, prepare_campaign
from dispatcher.sending.sandbox import Recipient
from dispatcher.settings import Settings

_URL_IN_TEXT = re.compile(r"https?://[^\s<>\"']+")


class _Hrefs(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.found: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.found += [v for k, v in attrs if k in ("href", "src") and v]


def _routes(settings: Settings) -> Flask:
    """The recipient pages' routes, without a database behind them."""
    from dispatcher.web import affiliates, public

    web = settings.templates_dir / "web"
    app = Flask("dispatcher.web", static_folder=str(web / "static"), static_url_path="/static")
    app.register_blueprint(public.bp)
    app.register_blueprint(affiliates.bp)
    return app


def _answers(app: Flask, settings: Settings, path: str) -> bool:
    adapter = app.url_map.bind("localhost")
    try:
        endpoint, values = adapter.match(path, method="GET")
    except MethodNotAllowed:
        return True
    except NotFound:
        return False
    if endpoint == "static":
        return (settings.templates_dir / "web" / "static" / str(values["filename"])).is_file()
    return True


def dead_own_links(settings: Settings, campaign: CampaignView) -> list[str]:
    """Links of the campaign's sample message under ``base_url`` that our pages answer 404."""
    prepared = prepare_campaign(settings, campaign)
    sample = SAMPLE_RECIPIENTS[0]
    base = settings.base_url
    message = prepared.render_full(
        Recipient(
            sample.first_name,
            sample.last_name,
            f"{base}/u/SAMPLE.tok",
            f"{base}/preferences/SAMPLE.tok",
        )
    )
    parser = _Hrefs()
    parser.feed(message.html)
    links = parser.found + _URL_IN_TEXT.findall(message.text)
    own = urlsplit(base)
    app = _routes(settings)
    dead: list[str] = []
    for link in dict.fromkeys(links):
        parts = urlsplit(link)
        if (parts.scheme, parts.netloc) != (own.scheme, own.netloc):
            continue
        if not parts.path.startswith(own.path) or not _answers(
            app, settings, parts.path[len(own.path) :] or "/"
        ):
            dead.append(link)
    return dead
