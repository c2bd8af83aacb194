"""The Django documentation (reStructuredText in the django sdist) rendered to prose.

docutils/Sphinx would need Django's own Sphinx extensions and a full build to render these
files, and would still keep code and tables; what pretraining wants is only the prose, and
what the code-entities task wants is where each role (``:class:`...` ``) lands in it. A small
line-based cleaner does both:

- block level: drop literal blocks (after ``::``), non-prose directives (code-block, toctree,
  tables, images...) with their bodies, comments/targets, tables, doctests, headings (titles,
  not sentences); keep the body of prose directives (note, versionadded, method, class...);
- inline: render roles as Sphinx shows them (``:class:`~a.b.C` `` -> ``C``,
  ``:meth:`text <target>` `` -> ``text``), strip literal/emphasis/reference markup, and
  record the character span and role of each rendered role.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

# Directives whose body is prose: the directive line (a signature or title) is dropped,
# the body kept. Every other directive is dropped with its body.
PROSE_DIRECTIVES = {
    "note", "warning", "admonition", "seealso", "versionadded", "versionchanged", "deprecated",
    "tip", "important", "hint", "caution", "attention", "danger", "error", "topic", "sidebar",
    "attribute", "method", "classmethod", "staticmethod", "class", "function", "exception",
    "data", "decorator", "describe", "object", "envvar", "option", "django-admin",
    "django-admin-option", "templatetag", "templatefilter", "fieldlookup", "setting",
    "module", "currentmodule", "program",
}

# Sphinx role -> entity type of the code-entities task; other roles render as plain text.
ROLE_ENTITY = {
    "class": "class", "meth": "method", "attr": "attribute", "func": "function",
    "mod": "module", "exc": "exception", "setting": "setting",
}

_ADORNMENT = re.compile(r"""([=\-~^"'`#*+:.<>_])\1{2,}\s*""")
_DIRECTIVE = re.compile(r"\.\.\s+([\w:-]+)::")
_OPTION = re.compile(r":[\w-]+:(\s|$)")
_ITEM = re.compile(r"([*+-]|#\.|\d+\.|\(?[a-zA-Z0-9]\))\s+")
_GRID_TABLE = re.compile(r"[+|]")
_SIMPLE_TABLE_BORDER = re.compile(r"=+(\s+=+)+\s*$")

# One pass over inline markup. Order matters: roles and literals before emphasis/references.
_INLINE = re.compile(
    r"(?P<role>(?::[\w-]+)?:(?P<rname>[\w-]+):`(?P<rbody>[^`]+)`)"
    r"|(?P<lit>``(?P<lbody>.+?)``)"
    r"|(?P<ref>`(?P<fbody>[^`]+)`_{0,2})"
    r"|(?P<strong>\*\*(?P<sbody>[^*]+?)\*\*)"
    r"|(?P<em>(?<![\w*])\*(?P<ebody>[^\s*][^*]*?)\*(?![\w*]))"
    r"|(?P<wref>(?<=\w)__?(?=[\s.,;:!?)]|$))"
    r"|(?P<sub>\|(?P<subbody>[\w -]+)\|)"
    r"|(?P<esc>\\(?P<escbody>.?))"
    r"|(?P<fn>\s?\[[#*\w.-]*\]_)"
)


@dataclass
class Paragraph:
    text: str
    entities: list[tuple[int, int, str]] = field(default_factory=list)  # (start, end, type)


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip())


def block_paragraphs(rst: str) -> list[str]:
    """Prose paragraphs of an rST file, inline markup still in them, each on one line."""
    paras: list[str] = []
    cur: list[str] = []
    cur_indent = 0
    skip_above: int | None = None  # skip blank lines and lines indented deeper than this
    in_options = False  # just after a kept directive: its `:option:` lines
    in_table = after_border = False  # inside a simple table (`=== ===` borders)

    def flush():
        nonlocal cur
        if cur:
            text = " ".join(cur)
            if text.endswith("::"):  # "Example::" introduces a literal block
                nonlocal skip_above
                skip_above = cur_indent
                text = text[:-2].rstrip()
                text = text + ":" if text and not text.endswith(":") else text
            if text:
                paras.append(text)
        cur = []

    for line in rst.expandtabs(8).splitlines():
        stripped, ind = line.strip(), _indent(line)
        if skip_above is not None:
            if not stripped or ind > skip_above:
                continue
            skip_above = None
        if in_table:  # a simple table ends at a border followed by a blank line
            if after_border and not stripped:
                in_table = False
            after_border = bool(_SIMPLE_TABLE_BORDER.match(stripped))
            continue
        if not stripped:
            flush()
            in_options = False
            continue
        if in_options and _OPTION.match(stripped):
            continue
        in_options = False
        if _ADORNMENT.fullmatch(stripped):  # heading under/overline: the title is not prose
            cur = []
            continue
        m = _DIRECTIVE.match(stripped)
        if m or stripped in ("..", "__") or stripped.startswith((".. ", "__ ")):
            flush()
            name = m.group(1).split(":")[-1] if m else None
            if name in PROSE_DIRECTIVES:
                in_options = True
            else:  # code, toctree, tables, images, comments, link targets
                skip_above = ind
            continue
        if _SIMPLE_TABLE_BORDER.match(stripped):
            flush()
            in_table, after_border = True, True
            continue
        if _GRID_TABLE.match(stripped) or stripped.startswith(">>>"):
            flush()
            skip_above = ind
            continue
        item = _ITEM.match(stripped)
        if item and (not cur or stripped[0] in "*+-#0123456789"):
            flush()
            stripped = stripped[item.end():]
            cur_indent = ind + item.end()  # continuation lines align with the item's text
        elif cur and ind > cur_indent and len(cur) == 1:
            cur = []  # a definition-list term ("``NAME``") followed by its definition
            cur_indent = ind
        elif not cur:
            cur_indent = ind
        cur.append(stripped)
    flush()
    return paras


def render_role(name: str, body: str) -> str:
    """What Sphinx shows for a role: the explicit title, else the target (last part if `~`)."""
    body = " ".join(body.split())
    m = re.fullmatch(r"(.*?)\s*<([^>]*)>", body)
    if m and m.group(1):
        return m.group(1)
    target = m.group(2) if m else body
    if target.startswith("!"):
        return target[1:]
    if target.startswith("~"):
        return target[1:].rsplit(".", 1)[-1]
    if name in ("ref", "term"):
        return target.replace("-", " ")
    if name == "doc":
        return target.rstrip("/").rsplit("/", 1)[-1].replace("-", " ").replace("_", " ")
    return target


def render_inline(text: str) -> Paragraph:
    """Render inline markup to plain text; record entity spans of the task's roles."""
    out: list[str] = []
    entities = []
    pos = length = 0
    for m in _INLINE.finditer(text):
        out.append(text[pos:m.start()])
        length += m.start() - pos
        pos = m.end()
        if m.group("role"):
            rendered = render_role(m.group("rname"), m.group("rbody"))
            entity = ROLE_ENTITY.get(m.group("rname"))
            if entity and rendered.strip():
                entities.append((length, length + len(rendered), entity))
        elif m.group("lit"):
            rendered = m.group("lbody")
        elif m.group("ref"):
            rendered = re.sub(r"\s*<[^>]*>$", "", m.group("fbody")) or m.group("fbody")
        elif m.group("strong"):
            rendered = m.group("sbody")
        elif m.group("em"):
            rendered = m.group("ebody")
        elif m.group("sub"):
            rendered = m.group("subbody")
        elif m.group("esc"):
            rendered = m.group("escbody").strip()
        elif m.group("fn"):  # footnote/citation reference "[#]_"
            rendered = ""
        else:  # wref: `word_` reference
            rendered = ""
        out.append(rendered)
        length += len(rendered)
    out.append(text[pos:])
    return Paragraph("".join(out), entities)


def paragraphs(rst: str) -> list[Paragraph]:
    """Rendered prose paragraphs of one rST file."""
    return [p for p in (render_inline(t) for t in block_paragraphs(rst)) if p.text.strip()]


def read_sdist(sdist) -> list[tuple[str, list[Paragraph]]]:
    """(doc id, paragraphs) for every `docs/**/*.txt` of the Django sdist, sorted by path.

    Ids are "django-docs/<path under docs/ without .txt>", e.g. "django-docs/topics/db/models".
    """
    import tarfile

    out = []
    with tarfile.open(sdist) as tar:
        for member in tar:  # one pass over the gzip stream
            m = re.fullmatch(r"[^/]+/docs/(.+)\.txt", member.name)
            if m and member.isfile():
                text = tar.extractfile(member).read().decode("utf-8")
                out.append((f"django-docs/{m.group(1)}", paragraphs(text)))
    return sorted(out, key=lambda d: d[0])
