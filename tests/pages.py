"""Reading the status page back: its text as a person sees it, and what it loads from
elsewhere (nothing may be external). Shared by the page's unit and browser tests."""

from __future__ import annotations

from html.parser import HTMLParser


class _Page(HTMLParser):
    """The text a reader sees, and every tag and attribute (for the no-external check)."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.text: list[str] = []
        self.tags: list[tuple[str, list[tuple[str, str | None]]]] = []
        self._in_style = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, attrs))
        self._in_style = tag == "style"
        if tag in ("br", "div", "p", "tr", "h1"):
            self.text.append("\n")

    def handle_endtag(self, tag: str) -> None:
        self._in_style = False
        if tag in ("td", "th"):
            self.text.append(" | ")

    def handle_data(self, data: str) -> None:
        if not self._in_style:
            self.text.append(data)


def read(page: str) -> _Page:
    parser = _Page()
    parser.feed(page)
    parser.close()
    return parser


def text_of(page: str) -> str:
    return " ".join("".join(read(page).text).split())


def externals(page: str) -> list[str]:
    """Anything that would make a browser load or link outside this exporter."""
    found = []
    for tag, attrs in read(page).tags:
        if tag in ("script", "link", "img", "iframe", "object", "embed", "base", "form"):
            found.append(f"<{tag}>")
        for name, val in attrs:
            if name in ("src", "srcset", "action", "formaction", "style"):
                found.append(f"{tag} {name}={val}")
            if name.startswith("on"):
                found.append(f"{tag} {name}")
            if name == "href" and val is not None and (
                    val.startswith(("/", "\\")) or ":" in val.split("?")[0]):
                found.append(f"{tag} href={val}")  # absolute: breaks behind a path prefix
    style = page[page.find("<style>"):page.find("</style>")]
    found += [token for token in ("url(", "@import", "//") if token in style]
    return found


