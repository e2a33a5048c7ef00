"""Check a built site for broken internal links and anchors, and console blocks' copy text.

    mkdocs build --strict --site-dir SITE
    python docs/scripts/check_links.py SITE [--site-url URL]

Every ``href`` and ``src`` of every HTML page that points inside the site (relative, absolute
from the site's path, or starting with ``site_url``) must name an existing file, and its
``#fragment`` an ``id`` (or ``name``) on the target page. External links are not fetched.

Console blocks show ``$ command`` lines and their output; the copy button copies the commands
only, because docs/stylesheets/extra.css hides prompts (``.gp``) and output (``.go``) while
copying. So every line of a console block must be a command (it has a prompt) or lie wholly
in one output span; the check reports lines that would be copied as commands but are not.

Exit status 1 when anything is broken; each problem is printed as ``page: link``.
Needs only the standard library (it runs in the docs env after the build, see tox.ini).
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urljoin, urlsplit

ROOT = Path(__file__).resolve().parents[2]
_SITE_URL = re.compile(r"^site_url:\s*(\S+)\s*$", re.M)


class Page(HTMLParser):
    """The ids, the links and the console-block lines of one HTML page."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.ids: set[str] = set()
        self.links: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = dict(attrs)
        for key in ("id", "name") if tag == "a" else ("id",):
            if values.get(key):
                self.ids.add(values[key] or "")
        for key in ("href", "src"):
            if values.get(key) and not (tag == "link" and values.get("rel") in ("preconnect", "dns-prefetch")):
                self.links.append(values[key] or "")


def parse(path: Path) -> Page:
    page = Page()
    page.feed(path.read_text(encoding="utf-8"))
    return page


def target_file(site: Path, url_path: str) -> Path:
    """The file a site path names (a folder means its index.html)."""
    path = site / unquote(url_path).lstrip("/")
    return path / "index.html" if url_path.endswith("/") or path.is_dir() else path


def internal(link: str, page_url: str, site_url: str) -> tuple[str, str] | None:
    """(site path, fragment) of a link inside the site, or None for an external one."""
    if link.startswith(("mailto:", "javascript:", "data:", "tel:")):
        return None
    base = urlsplit(site_url)
    absolute = urljoin(urljoin(site_url, page_url), link)
    parts = urlsplit(absolute)
    if (parts.scheme, parts.netloc) != (base.scheme, base.netloc) or not parts.path.startswith(base.path):
        return None
    return parts.path[len(base.path) :], parts.fragment


def broken_links(site: Path, site_url: str) -> Iterator[str]:
    pages = {p: parse(p) for p in sorted(site.rglob("*.html"))}
    for path, page in pages.items():
        page_url = path.relative_to(site).as_posix()
        if path.name == "404.html":  # served at any depth: its links are absolute from site_url
            page_url = "404.html"
        for link in page.links:
            place = internal(link, page_url, site_url)
            if place is None:
                continue
            url_path, fragment = place
            target = target_file(site, url_path)
            if not target.is_file():
                yield f"{page_url}: {link} (no file {target.relative_to(site)})"
                continue
            if fragment and target.suffix == ".html":
                ids = pages[target].ids if target in pages else parse(target).ids
                if unquote(fragment) not in ids:
                    yield f"{page_url}: {link} (no anchor #{fragment} in {target.relative_to(site)})"


_CODE = re.compile(r"<code>(.*?)</code>", re.S)
_TAG = re.compile(r"<[^>]+>")


def console_lines_copied_wrongly(site: Path) -> Iterator[str]:
    """Lines of console blocks (code with a prompt span) that are neither a command nor output."""
    for path in sorted(site.rglob("*.html")):
        for code in _CODE.findall(path.read_text(encoding="utf-8")):
            if 'class="gp"' not in code:
                continue
            for line in code.split("\n"):
                text = _TAG.sub("", line).strip()
                if not text or 'class="gp"' in line:
                    continue
                if not (line.startswith('<span class="go">') and line.endswith("</span>") and line.count("<span") == 1):
                    yield f"{path.relative_to(site).as_posix()}: console line copied as a command: {text[:80]!r}"


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("site", type=Path, help="the folder mkdocs built")
    parser.add_argument("--site-url", help="the site's address (default: site_url of mkdocs.yml)")
    args = parser.parse_args(argv)
    site_url = args.site_url
    if site_url is None:
        match = _SITE_URL.search((ROOT / "mkdocs.yml").read_text())
        site_url = match[1] if match else "http://localhost/"
    site_url = site_url.rstrip("/") + "/"
    pages = list(args.site.rglob("*.html"))
    if not pages:
        print(f"no HTML pages in {args.site}: build the site first", file=sys.stderr)
        return 1
    problems = [*broken_links(args.site, site_url), *console_lines_copied_wrongly(args.site)]
    for problem in problems:
        print(problem)
    links = sum(len(parse(p).links) for p in pages)
    print(f"{len(pages)} pages, {links} links and sources checked: {len(problems)} problem(s)")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
