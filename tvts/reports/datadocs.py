"""great-expectations' Data Docs, made to work with no network: the pages load Bootstrap,
bootstrap-table, jQuery, Font Awesome, the datepicker and Vega from CDNs, so offline the index
shows two links and two buttons. Each remote `<script>` / stylesheet `<link>` is replaced by a
local copy from a pinned package (`tvts.reports.assets`), written under `static/vendor/` of
the docs, with a path relative to each page; an unknown remote reference is an error, so a
great-expectations upgrade that adds one fails the tests instead of going online.

Left out: the dark colour scheme GX adds for browsers set to dark mode
(`@forevolve/bootstrap-dark`, on no Python index); pages render in the light scheme.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from tvts.reports.assets import copy_assets

VENDOR_DIR = Path("static/vendor")

# remote reference (matched on the URL) -> the local file, or None to drop the tag because
# another local file already provides it
RULES: list[tuple[re.Pattern[str], str | None]] = [(re.compile(p), f) for p, f in (
    (r"/jquery-3[\d.]*(\.min)?\.js$", "jquery/jquery.min.js"),
    (r"/popper\.js/.*popper(\.min)?\.js$", None),  # in Bootstrap's bundle
    (r"/bootstrap/4[\d.]*/js/bootstrap(\.min)?\.js$", "bootstrap/js/bootstrap.bundle.min.js"),
    (r"/bootstrap/4[\d.]*/css/bootstrap(\.min)?\.css$", "bootstrap/css/bootstrap.min.css"),
    (r"/bootstrap-table@1[\d.]*/dist/bootstrap-table\.min\.(css|js)$",
     "bootstrap-table/bootstrap-table.min.{ext}"),
    (r"/bootstrap-table@1[\d.]*/dist/extensions/filter-control/"
     r"bootstrap-table-filter-control(\.min)?\.(css|js)$",
     "bootstrap-table/bootstrap-table-filter-control.min.{ext}"),
    (r"/bootstrap-datepicker/1[\d.]*/js/bootstrap-datepicker(\.min)?\.js$",
     "datepicker/bootstrap-datepicker.js"),
    (r"/bootstrap-datepicker/1[\d.]*/css/bootstrap-datepicker(\.min)?\.css$",
     "datepicker/bootstrap-datepicker3.standalone.css"),
    (r"/font-awesome/6[\d.]*/css/all(\.min)?\.css$", "fontawesome/css/all.min.css"),
    (r"/@forevolve/bootstrap-dark@", None),  # dark scheme: left out (module docstring)
    (r"/npm/vega@\d", "vega/vega-embed.js"),  # the bundle holds Vega-Lite and Vega-Embed
    (r"/npm/vega-lite@\d", None),
    (r"/npm/vega-embed@\d", None),
)]
# The logos GX's pages and styles fetch from its own bucket: the logo it ships beside them.
REMOTE_IMAGES = {"logo-long.png": Path("static/images/logo-long.png"),
                 "full_logo_dark.png": Path("static/images/logo-long.png")}

_SCRIPT = re.compile(r"<script\b[^>]*?\bsrc\s*=\s*[\"'](https?:)?//[^\"']+[\"'][^>]*>\s*</script>",
                     re.I | re.S)
_LINK = re.compile(r"<link\b[^>]*?\bhref\s*=\s*[\"'](https?:)?//[^\"']+[\"'][^>]*>", re.I | re.S)
_IMG = re.compile(r"(<img\b[^>]*?\bsrc\s*=\s*)[\"']((?:https?:)?//[^\"']+)[\"']", re.I | re.S)
_URL = re.compile(r"[\"']((?:https?:)?//[^\"']+)[\"']")
_CSS_URL = re.compile(r"url\(\s*[\"']?((?:https?:)?//[^\"')]+)[\"']?\s*\)", re.I)


class RemoteAsset(RuntimeError):
    """A page references a remote script, stylesheet or image with no local copy."""


def _local_for(url: str) -> str | None:
    for pattern, target in RULES:
        if m := pattern.search(url):
            return target.format(ext=m.groups()[-1]) if target and "{ext}" in target else target
    raise RemoteAsset(f"Data Docs reference {url}, which has no local copy: add a rule to "
                      "tvts/reports/datadocs.py (a great-expectations upgrade added an asset)")


def _rel(target: Path, page_dir: Path) -> str:
    return Path(os.path.relpath(target, page_dir)).as_posix()


def rewrite_page(html: str, page_dir: Path, vendor: Path, docs_root: Path) -> str:
    """`html` with every remote script, stylesheet and image replaced by a local one."""
    seen: set[str] = set()

    def tag(m: re.Match[str], kind: str) -> str:
        url = _URL.search(m.group(0)).group(1)
        local = _local_for(url)
        if local is None or local in seen:
            return ""
        seen.add(local)
        src = _rel(vendor / local, page_dir)
        if kind == "script":
            return f'<script src="{src}"></script>'
        return f'<link rel="stylesheet" href="{src}">'

    def local_image(url: str) -> str:
        name = url.split("?", 1)[0].rsplit("/", 1)[-1]
        if name not in REMOTE_IMAGES:
            raise RemoteAsset(f"Data Docs load the image {url}, which has no local copy: "
                              "add it to REMOTE_IMAGES in tvts/reports/datadocs.py")
        return _rel(docs_root / REMOTE_IMAGES[name], page_dir)

    html = _SCRIPT.sub(lambda m: tag(m, "script"), html)
    html = _LINK.sub(lambda m: tag(m, "link"), html)
    html = _IMG.sub(lambda m: f'{m.group(1)}"{local_image(m.group(2))}"', html)
    return _CSS_URL.sub(lambda m: f"url('{local_image(m.group(1))}')", html)


def make_offline(docs_dir: str | Path) -> list[Path]:
    """Rewrite every page and stylesheet of the Data Docs under `docs_dir` to local assets.
    Returns the files rewritten."""
    docs = Path(docs_dir)
    vendor = docs / VENDOR_DIR
    copy_assets(vendor)
    changed = []
    for path in sorted([*docs.rglob("*.html"), *(docs / "static" / "styles").rglob("*.css")]):
        text = path.read_text(encoding="utf-8")
        new = rewrite_page(text, path.parent, vendor, docs)
        if new != text:
            path.write_text(new, encoding="utf-8")
            changed.append(path)
    return changed
