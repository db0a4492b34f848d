"""Plain text from the formats the corpus packages ship: Sphinx HTML pages (stdlib html.parser),
Brown-corpus ``word/tag`` lines, and the normal form that deduplication hashes."""

from __future__ import annotations

import re
from html.parser import HTMLParser

# Elements whose text is never prose: code that runs, styling, page chrome.
SKIP_TAGS = frozenset({"script", "style", "head", "nav", "footer", "noscript", "svg", "form"})
# Sphinx page chrome identified by class or role (sidebars, breadcrumbs, the pilcrow links).
SKIP_CLASSES = frozenset(
    {"sphinxsidebar", "related", "footer", "headerlink", "navigation", "mobile-nav"}
)
SKIP_ROLES = frozenset({"navigation", "search"})
BLOCK_TAGS = frozenset(
    {
        "p", "div", "section", "article", "main", "br", "hr", "li", "ul", "ol", "dl", "dt",
        "dd", "tr", "table", "thead", "tbody", "blockquote", "pre", "figure", "figcaption",
        "h1", "h2", "h3", "h4", "h5", "h6", "body", "html", "title", "caption",
    }
)  # fmt: skip
VOID_TAGS = frozenset({"br", "hr", "img", "input", "meta", "link", "area", "base", "col", "wbr"})


class _TextExtractor(HTMLParser):
    """Collects visible text: blocks become paragraphs, whitespace outside <pre> collapses."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.blocks: list[str] = []
        self._line: list[str] = []
        self._skip_tag: str | None = None
        self._skip_depth = 0
        self._pre = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if self._skip_tag is not None:
            if tag == self._skip_tag and tag not in VOID_TAGS:
                self._skip_depth += 1
            return
        attr = dict(attrs)
        classes = set((attr.get("class") or "").split())
        if tag in SKIP_TAGS or classes & SKIP_CLASSES or attr.get("role") in SKIP_ROLES:
            if tag not in VOID_TAGS:
                self._skip_tag, self._skip_depth = tag, 1
            return
        if tag in BLOCK_TAGS:
            self._flush()
        if tag == "pre":
            self._pre += 1

    def handle_endtag(self, tag: str) -> None:
        if self._skip_tag is not None:
            if tag == self._skip_tag:
                self._skip_depth -= 1
                if self._skip_depth == 0:
                    self._skip_tag = None
            return
        if tag == "pre" and self._pre:
            self._flush()
            self._pre -= 1
        elif tag in BLOCK_TAGS:
            self._flush()

    def handle_data(self, data: str) -> None:
        if self._skip_tag is None:
            self._line.append(data)

    def _flush(self) -> None:
        text = "".join(self._line)
        self._line = []
        if self._pre:
            text = text.strip("\n")
            if text.strip():
                self.blocks.append(text.rstrip())
            return
        text = " ".join(text.split())
        if text:
            self.blocks.append(text)

    def close(self) -> None:
        super().close()
        self._flush()


def html_to_text(html: str) -> str:
    """Visible text of an HTML page, one block (paragraph, heading, list item, <pre>) per
    paragraph; scripts, styles, the head and Sphinx navigation are dropped."""
    parser = _TextExtractor()
    parser.feed(html)
    parser.close()
    return "\n\n".join(parser.blocks)


_SPACE_BEFORE = re.compile(r" ([.,;:!?)\]}'])")
_SPACE_AFTER = re.compile(r"([(\[{]) ")


def untag_brown(text: str) -> str:
    """The Brown corpus's ``word/tag`` tokens back to running text; its paragraphs (separated by
    blank lines) stay paragraphs, the lines of one paragraph become one line."""
    paragraphs = []
    for raw in re.split(r"\n\s*\n", text):
        words: list[str] = []
        opening = False
        for token in raw.split():
            word = token.rsplit("/", 1)[0]
            if word == "``":  # an opening quote sticks to the next word
                opening = True
            elif word == "''" and words:  # a closing one to the previous word
                words[-1] += '"'
            elif word != "''":
                words.append('"' + word if opening else word)
                opening = False
        line = _SPACE_AFTER.sub(r"\1", _SPACE_BEFORE.sub(r"\1", " ".join(words)))
        if line:
            paragraphs.append(line)
    return "\n\n".join(paragraphs)


def normalise(text: str) -> str:
    """The form deduplication compares: whitespace runs collapsed to one space, ends stripped."""
    return " ".join(text.split())


def paragraphs(text: str) -> list[str]:
    """Blank-line separated paragraphs of a document (blank ones dropped)."""
    return [p for p in re.split(r"\n[ \t]*\n", text) if p.strip()]
