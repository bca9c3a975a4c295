"""Reading an HTML report the way a test needs it: elements by id and by data attributes."""

from __future__ import annotations

from html.parser import HTMLParser


class ReportPage(HTMLParser):
    """Collects every element's attributes: `ids` by id, `data` a list of data-* elements."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.ids: dict[str, dict[str, str]] = {}
        self.data: list[tuple[str, dict[str, str]]] = []
        self.feed(text)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = {k: v or "" for k, v in attrs}
        if "id" in values:
            self.ids[values["id"]] = values
        if any(k.startswith("data-") for k in values):
            self.data.append((tag, values))

    def elements(self, tag: str, attr: str) -> list[dict[str, str]]:
        return [v for t, v in self.data if t == tag and attr in v]
