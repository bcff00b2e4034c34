"""The docs cannot drift from the code: every params key written in README.md and docs/ (YAML
blocks of params, `-S key=value` overrides) exists in the schema, every `tvts ...` command in
them parses with the CLI, every relative link resolves, and the site builds with
`mkdocs build --strict` and works offline (no remote request; navigation and search in
headless Chromium)."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import BaseModel

from tvts.cli import build_parser
from tvts.config import Params
from tvts.provenance import ROOT

from .browser import dump_dom, remote_references

PAGES = sorted([ROOT / "README.md", ROOT / "bench" / "README.md", *(ROOT / "docs").rglob("*.md")])
FENCE = re.compile(r"^```(\w*)[^\n]*\n(.*?)^```", re.M | re.S)
OVERRIDE = re.compile(r"-S\s+['\"]?\+?([A-Za-z_][\w.]*)=")
LINK = re.compile(r"\[[^\]\n]*\]\(([^)\s]+)\)")
INLINE_TVTS = re.compile(r"`(tvts [^`]+)`")


def _fields(model: type[BaseModel]) -> dict[str, Any]:
    return {(f.alias or n): f.annotation for n, f in model.model_fields.items()}


def unknown_key(path: list[str]) -> str | None:
    """The first part of a dotted params path the schema does not have; None when it has it.
    Below a mapping-valued key (downstream.sets, evaluate.tasks...) any name is allowed."""
    model: Any = Params
    for i, part in enumerate(path):
        fields = _fields(model)
        if part not in fields:
            return ".".join(path[:i + 1])
        annotation = fields[part]
        if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
            return None
        model = annotation
    return None


def _keys(tree: Any, prefix: list[str]) -> list[list[str]]:
    out = []
    for key, value in tree.items():
        out.append([*prefix, str(key)])
        if isinstance(value, dict):
            out += _keys(value, [*prefix, str(key)])
    return out


def params_keys(text: str) -> list[str]:
    """Dotted keys of the params written in a page: its YAML blocks whose top level names a
    params section, and its `-S key=value` overrides."""
    sections = set(_fields(Params))
    found = []
    for lang, body in FENCE.findall(text):
        if lang not in ("yaml", "yml"):
            continue
        try:
            tree = yaml.safe_load(body)
        except yaml.YAMLError:
            continue
        if isinstance(tree, dict) and sections & set(map(str, tree)):
            found += [".".join(k) for k in _keys(tree, [])]
    return found + OVERRIDE.findall(text)


def bad_params_keys(text: str) -> list[str]:
    return sorted({bad for key in params_keys(text)
                   if (bad := unknown_key(key.split("."))) is not None})


def tvts_commands(text: str) -> list[str]:
    """`tvts ...` commands: lines of shell blocks and inline code spans."""
    found = []
    for lang, body in FENCE.findall(text):
        if lang in ("bash", "sh", "shell", "console", ""):
            for line in body.splitlines():
                line = line.strip().removeprefix("$ ")
                if line.startswith("tvts "):
                    found.append(line.split(" #", 1)[0].strip())
    return found + [c.split(" #", 1)[0].strip() for c in INLINE_TVTS.findall(text)]


def unparsable(command: str) -> str | None:
    """None when the CLI accepts the command's arguments, else why not."""
    try:
        args = shlex.split(command)[1:]
    except ValueError as e:
        return str(e)
    try:
        build_parser().parse_args(args)
    except SystemExit as e:
        return f"exit {e.code}"
    return None


def broken_links(page: Path, text: str) -> list[str]:
    out = []
    for target in LINK.findall(text):
        if re.match(r"[a-z]+:", target) or target.startswith("#"):
            continue
        if not (page.parent / target.split("#", 1)[0]).exists():
            out.append(target)
    return out


def _rel(page: Path) -> str:
    return str(page.relative_to(ROOT))


@pytest.mark.parametrize("page", PAGES, ids=_rel)
def test_every_params_key_in_the_docs_exists(page):
    assert bad_params_keys(page.read_text()) == []


@pytest.mark.parametrize("page", PAGES, ids=_rel)
def test_every_tvts_command_in_the_docs_parses(page, capsys):
    bad = {c: why for c in tvts_commands(page.read_text()) if (why := unparsable(c))}
    assert bad == {}


@pytest.mark.parametrize("page", PAGES, ids=_rel)
def test_every_relative_link_resolves(page):
    assert broken_links(page, page.read_text()) == []


def test_the_checks_cover_the_docs():
    """How much the checks above read (printed with -s; the closing note quotes it)."""
    texts = [p.read_text() for p in PAGES]
    keys = sum(len(params_keys(t)) for t in texts)
    commands = sum(len(tvts_commands(t)) for t in texts)
    links = sum(len(LINK.findall(t)) for t in texts)
    print(f"\n{len(PAGES)} pages: {keys} params keys, {commands} tvts commands, {links} links")
    assert keys >= 20 and commands >= 5 and links >= 20


def test_the_checks_fail_on_drift(tmp_path, capsys):
    assert bad_params_keys("```yaml\nsort:\n  lamda: 2\n```\n") == ["sort.lamda"]
    assert bad_params_keys("run `dvc exp run -S pretrain.epoch=3`") == ["pretrain.epoch"]
    assert bad_params_keys("`dvc exp run -S +evaluate.tasks.ssv2=[v2v]`") == []
    assert unparsable("tvts stage pretrian") is not None
    assert unparsable("tvts stage pack --verify") is None
    page = tmp_path / "page.md"
    assert broken_links(page, "see [the stage](stages/evaluat.md)") == ["stages/evaluat.md"]


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    if shutil.which("mkdocs") is None and subprocess.run(
            [sys.executable, "-c", "import mkdocs"], capture_output=True).returncode:
        pytest.fail("mkdocs is not installed: `bash scripts/install.sh --test` installs the "
                    "docs extra")
    out = tmp_path_factory.mktemp("site")
    done = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-q", "-d",
                           str(out)], cwd=ROOT, capture_output=True, text=True, timeout=300,
                          env={"NO_MKDOCS_2_WARNING": "1", **os.environ})
    assert done.returncode == 0, done.stdout + done.stderr
    return out


def test_the_site_builds_strict_and_references_nothing_remote(site):
    pages = sorted(site.rglob("*.html"))
    assert len(pages) >= 20
    remote = {str(p.relative_to(site)): r for p in pages if (r := remote_references(p.read_text()))}
    assert remote == {}
    css = [p for p in site.rglob("*.css") if remote_references(p.read_text())]
    assert css == []


@pytest.mark.slow
def test_the_site_navigates_and_searches_offline(site):
    home = dump_dom(site / "index.html")
    assert 'href="stages/evaluate.html"' in home and "md-nav" in home
    # Material opens its search with ?q=; the offline plugin inlines the index, and the
    # search worker runs through the vendored iframe-worker shim (hosts resolve to nothing)
    dom = dump_dom(site / "index.html", 10000, "?q=registry")
    assert "md-search-result__item" in dom
    assert re.search(r'md-search-result__meta">\d+ matching document', dom)
