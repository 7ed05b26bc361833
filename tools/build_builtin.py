"""Build the shipped multilingual corpus (`langmoe/data/builtin/`) from Debian packages of translated text.

Why Debian: it ships real, human-translated text (man pages, fortunes, manuals) under free licences, in 40+
languages, with exact versions, so the corpus can be rebuilt bit for bit. The builder needs the `.deb` files in a
cache folder (`apt-get download`, never installed) and `mandoc` to render man pages.

    python tools/build_builtin.py --cache ~/.cache/langmoe-debs --out src/langmoe/data/builtin [--download]

It lives outside the runtime package (it is a build tool, not something `import langmoe` needs); it imports
langmoe only for the language table and the atomic writers.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import html
import io
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import unicodedata
from collections.abc import Iterator
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path

from langmoe.data.languages import get_language, script_share
from langmoe.errors import LangmoeError

BUILDER_VERSION = "2.0"

# Man page language folders (under /usr/share/man/) -> ISO 639-1. zh_TW is left out so "zh" is one script form.
_MAN_DIRS = {
    "cs": "cs", "da": "da", "de": "de", "el": "el", "es": "es", "fi": "fi", "fr": "fr", "hu": "hu", "id": "id",
    "it": "it", "ja": "ja", "mk": "mk", "nb": "nb", "nl": "nl", "pl": "pl", "pt_BR": "pt", "ro": "ro", "ru": "ru",
    "sr": "sr", "sv": "sv", "tr": "tr", "uk": "uk", "vi": "vi", "zh_CN": "zh",
}
_MAN_PACKAGES = ["manpages"] + [
    f"manpages-{x}" for x in ["cs", "da", "de", "el", "es", "fi", "fr", "hu", "id", "it", "ja", "mk", "nb", "nl", "pl", "pt-br", "ro", "ru", "sr", "sv", "tr", "uk", "vi", "zh"]
]
# fortunes package -> language (fortunes-br is Brazilian Portuguese, fortunes-min is English).
_FORTUNE_PACKAGES = {
    "fortunes-bg": "bg", "fortunes-cs": "cs", "fortunes-de": "de", "fortunes-eo": "eo", "fortunes-es": "es",
    "fortunes-ga": "ga", "fortunes-it": "it", "fortunes-pl": "pl", "fortunes-ru": "ru", "fortunes-zh": "zh",
    "fortunes-br": "pt", "fortunes-min": "en",
}
# gnome-user-docs /usr/share/help/<dir>/gnome-help/*.page (Mallard XML). lt is left out: its pages are mostly
# untranslated English UI strings that the English filter cannot tell apart.
_GNOME_DIRS = {
    "C": "en", "as": "as", "ca": "ca", "cs": "cs", "da": "da", "de": "de", "el": "el", "es": "es", "fa": "fa",
    "fi": "fi", "fr": "fr", "gl": "gl", "gu": "gu", "he": "he", "hi": "hi", "hr": "hr", "hu": "hu", "id": "id",
    "it": "it", "ja": "ja", "kn": "kn", "ko": "ko", "lv": "lv", "mr": "mr", "nl": "nl", "pa": "pa",
    "pl": "pl", "pt_BR": "pt", "ro": "ro", "ru": "ru", "sl": "sl", "sr": "sr", "sv": "sv", "ta": "ta",
    "te": "te", "tr": "tr", "uk": "uk", "vi": "vi", "zh_CN": "zh",
}
# libreoffice-help-<x>: the languages no other source has (and a few thin ones).
_LIBREOFFICE = {"hi": "hi", "km": "km", "dz": "dz", "et": "et", "eu": "eu", "om": "om", "ko": "ko", "sk": "sk",
                "sl": "sl", "gl": "gl", "ca": "ca", "el": "el"}

OTHER_PACKAGES = ["debian-handbook", "gnome-user-docs", "installation-guide-amd64", "debian-faq-ko",
                  "debian-reference-id"]
PACKAGES: list[str] = (_MAN_PACKAGES + list(_FORTUNE_PACKAGES) + OTHER_PACKAGES
                       + [f"libreoffice-help-{x}" for x in _LIBREOFFICE])
TOOLS = {"mandoc": "mandoc", "dpkg-deb": "dpkg"}  # executable -> apt package providing it

MAX_BYTES_PER_LANG = 1_200_000  # UTF-8 text per language before compression; keeps the folder ~10 MB
MAX_DOC_CHARS = 40_000
MIN_DOC_CHARS = 200
MIN_LANG_DOCS = 3  # a language needs a train, a valid and a test document
MIN_TEST_CHARS = 5_000  # test splits are topped up from valid to this size where the split rule allows
# Languages the benchmarks and the demo use: they get only the builder-1.0 paragraph filters (no label-list, hole
# or English-sentence filter), so their text stays byte for byte what the shipped bases and the benchmark
# results saw. What the new filters would remove in them is small and listed in docs/corpus.md.
STABLE_LANGS = frozenset(["en", "de", "nl", "fr", "es", "it", "ru", "uk", "pl", "ga", "ca", "gl"])
FORTUNES_PER_DOC = 40


@dataclass(frozen=True)
class Item:
    """One candidate document: where it comes from and the language-neutral key that decides its split."""

    lang: str
    source: str  # Debian package
    key: str  # language-neutral (parallel pages share it, so they share a split)
    path: Path
    kind: str  # "man" | "html" | "fortune"
    chunk: int = 0

    @property
    def id(self) -> str:
        return f"{self.lang}:{self.source}:{self.key}"


# --------------------------------------------------------------------------------------------------------
# text cleaning


_OVERSTRIKE = re.compile(r".\x08", re.DOTALL)
_TAG_PREFIX = re.compile(r"^(?:-{1,2}[\w@?#][^\s]*(?:,\s+-{1,2}[\w@?#]\S*)*)\s{2,}")
_CODE_CHARS = set("{}();=<>$\\|*#[]`~^")
# Frequent English words that are not also frequent words of the other shipped Latin-script languages
# ("a", "in", "is", "do", "no", "to", "for", "on", "die", "also" ... are left out on purpose).
_EN_WORDS = """
the and of with that this which you your are from have has had will would should could can cannot when
what how where who why there their they them these those then than other only any such used using use
each into about been was were does did not but its it's or if by be we our us all some more most many
must may might want need make like just way because after before between both same following example
click select choose open press type enter show shows shown file files folder window button menu settings
set sets new one two first also see here own able allows allow lets let get gets even well very much
over under through while without within however therefore instead often usually available default
"""
_EN_MARKERS = frozenset(_EN_WORDS.split())
_WORD_RE = re.compile(r"\w+", re.UNICODE)
# Leftover markup anywhere means the converter missed something: drop the paragraph rather than ship it.
_MARKUP = re.compile(r"<[A-Za-z/!?]|\\f[A-Z1-4(\[]|\\\(|^\.[A-Z]{2}\b|&[a-z]+;|&#\d+;", re.M)
_REPEAT = re.compile(r"(\S)\1{5,}")  # ASCII art, rulers, dot leaders
_CJK_SCRIPTS = {"Han", "Japanese", "Thai", "Lao", "Khmer", "Myanmar", "Tibetan"}


def _letters(s: str) -> int:
    return sum(1 for c in s if unicodedata.category(c)[0] in "LM")


def normalise_for_dedup(par: str) -> str:
    """Case-, digit-, punctuation- and space-insensitive form: near-duplicates hash equal."""
    s = unicodedata.normalize("NFKC", par).casefold()
    return "".join(c for c in s if unicodedata.category(c)[0] in "LM")


def english_share(par: str) -> float:
    """Share of words that are frequent English words: catches paragraphs left untranslated."""
    words = _WORD_RE.findall(par.lower())
    return sum(1 for w in words if w in _EN_MARKERS) / len(words) if words else 0.0


def looks_english(par: str) -> bool:
    """More than a fifth of the words are frequent English words (two at least, or half of a short line)."""
    words = _WORD_RE.findall(par.lower())
    hits = sum(1 for w in words if w in _EN_MARKERS)
    return bool(words) and hits / len(words) > 0.2 and (hits >= 2 or hits / len(words) >= 0.5)


def keep_paragraph(par: str, lang: str) -> bool:
    """Prose test: enough letters, few code characters, the right script, not left in English."""
    language = get_language(lang)
    nonspace = [c for c in par if not c.isspace()]
    if not nonspace:
        return False
    letters = _letters(par)
    min_letters = 6 if language.script in _CJK_SCRIPTS or language.script == "Hangul" else 15
    if letters < min_letters:
        return False
    if letters / len(nonspace) < 0.7:
        return False
    if sum(1 for c in nonspace if c in _CODE_CHARS) / len(nonspace) > 0.05:
        return False
    if "://" in par or "www." in par or _MARKUP.search(par) or _REPEAT.search(par):
        return False
    threshold = 0.9 if language.script == "Latin" else 0.7
    if script_share(par, language.script) < threshold:
        return False
    if lang != "en" and language.script == "Latin" and looks_english(par):
        return False
    return not par.startswith("Title is:")  # LibreOffice help boilerplate


# Characters of CJK writing (Han, kana, CJK punctuation, full-width forms): Chinese and Japanese put no space
# between them, so a space there is a line join of the source (mandoc and the HTML converter turn a source line
# break into a space).
_CJK_CLASS = ("\u2e80-\u2fdf\u3000-\u303f\u3040-\u30ff\u31f0-\u31ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff"
              "\ufe30-\ufe4f\uff00-\uffef")
_CJK_GAP = re.compile(f"(?<=[{_CJK_CLASS}]) +(?=[{_CJK_CLASS}])")
CJK_JOIN_LANGS = frozenset({"ja", "zh"})


def join_cjk_spaces(par: str) -> str:
    """Remove the spaces that line joins left between two CJK characters ("オリジ ナル" -> "オリジナル").

    Spaces next to anything else (Latin words, digits: "使用 する Linux" -> "使用する Linux", "第 4 章") stay.
    Measured on builder 1.0's ja/zh train+test: 157 such gaps per 10k characters in manpages-ja, 254 in
    manpages-zh, 35-166 in the installation guide; builder 2.0 leaves none in the rendered sources.
    """
    return _CJK_GAP.sub("", par)


# Sentence-final punctuation of the shipped scripts (Latin, Greek ";", CJK, Devanagari danda, Khmer, Tibetan
# shad, Arabic), optionally followed by closing quotes or brackets.
_SENTENCE_END = re.compile(r"[.!?:;…。！？：；।॥។៕།༎؟۔;][\"')\]»”’」』）]*$")
MAX_LABEL_CHARS = 80
MIN_LABEL_RUN = 3
LABEL_LIST_SOURCES = ("libreoffice-help-", "gnome-user-docs")


def is_label(par: str) -> bool:
    """A bare UI label / link title: one line, at most 80 characters, no sentence-final punctuation."""
    par = par.strip()
    return "\n" not in par and len(par) <= MAX_LABEL_CHARS and not _SENTENCE_END.search(par)


def drop_label_runs(pars: list[str], min_run: int = MIN_LABEL_RUN) -> list[str]:
    """Drop runs of `min_run` or more consecutive label paragraphs (menus, link lists, option tables).

    Measured on builder 1.0's text: 23-45% of the paragraphs of every libreoffice-help-* language are bare labels
    (7-28% of the characters), mostly in runs: index pages ("main.html") and "related topics" blocks are lists of
    link titles, option pages list UI labels. GNOME help has 6-19% label paragraphs, mostly single headings. A
    single heading or an option name before its description is kept: only runs go.
    """
    out: list[str] = []
    i = 0
    while i < len(pars):
        j = i
        while j < len(pars) and is_label(pars[j]):
            j += 1
        if j - i >= min_run:
            i = j
            continue
        out.extend(pars[i:max(j, i + 1)])
        i = max(j, i + 1)
    return out


# Holes where the converter had nothing to print: GNOME's <link xref="..."/> takes its text from the target page
# at display time ("See .", "Смотрите .", "请参阅下面的 和 。"), LibreOffice help drops embedded links and
# icons ("Klicken Sie auf das Symbol , um"). Calls like msgbox() are not holes (a word precedes the "()").
_HOLE = re.compile(
    r"(?<!\w)\(\s*\)|\[\s*\]|「\s*」|“\s*”|«\s*»|„\s*“"  # empty brackets or quotes
    r"|(?<=\S) ,(?=\s|$)"  # a comma after a space: the word before it is missing
    r"|(?<=\S) \.(?=\s*$|\s+(?![a-zà-ÿα-ωа-яё]))"  # the same for a full stop ("egy . legyen" is a dot)
    r"|(?<=\w) (?=[。，、])"  # the same in CJK text
    r"|(?:^|\s)[을를](?=\s|$)|@@"  # a Korean object particle without its noun; placeholder residue
)


def has_hole(par: str) -> bool:
    """The paragraph has a hole where a link, icon or UI name was.

    Only checked on LibreOffice and GNOME help (LABEL_LIST_SOURCES), whose converters leave these holes; in the
    handbook and the installation guide the same patterns are mostly deliberate spacing ("众筹活动 ，").
    Measured on builder 1.0's text: 0.3-3% of those paragraphs (most in el, ko, om, sl, et LibreOffice help).
    """
    return _HOLE.search(par) is not None


def _latin_share(s: str) -> float:
    letters = [c for c in s if c.isalpha()]
    return sum(1 for c in letters if c < "\u0250") / len(letters) if letters else 0.0


def english_sentence(par: str) -> str | None:
    """The first sentence of 4+ words that looks English (Latin letters, looks_english), or None.

    builder 1.0's paragraph test misses English sentences inside a translated paragraph; measured share of such
    sentences: 1-2% of the characters in da, hr, ro, vi, pl (untranslated debian-handbook passages), 0.5-0.7% in
    et, om, sv, tr, nl (LibreOffice help on Python/Basic, handbook), 0.00% in ru, uk and the other non-Latin
    languages (their script test already removes English paragraphs).
    """
    for line in par.split("\n"):
        for sent in re.split(r"(?<=[.!?])\s+", line):
            if len(_WORD_RE.findall(sent)) >= 4 and _latin_share(sent) > 0.8 and looks_english(sent):
                return sent
    return None


def render_man(path: Path) -> list[str]:
    """Render one man page with mandoc and keep prose lines (bold/underlined lines are synopsis/options)."""
    proc = subprocess.run(["mandoc", "-T", "utf8", "-O", "width=1000", str(path)], capture_output=True,
                          timeout=60)
    out = proc.stdout.decode("utf-8", errors="replace")
    paragraphs: list[str] = []
    block: list[str] = []
    for raw in out.split("\n"):
        if not raw.strip():
            if block:
                paragraphs.append("\n".join(block))
                block = []
            continue
        if not raw.startswith(" "):  # header, footer, section headings
            continue
        emphasised = len(re.findall(r".\x08", raw))
        line = _OVERSTRIKE.sub("", raw).strip()
        line = _TAG_PREFIX.sub("", line)
        letters = _letters(line)
        if letters == 0 or emphasised / max(letters, 1) > 0.4:
            continue
        line = re.sub(r"\s+", " ", line)
        block.append(line)
    if block:
        paragraphs.append("\n".join(block))
    return paragraphs


class _ProseExtractor(HTMLParser):
    """HTML / Mallard / DocBook to paragraphs: block tags end a paragraph, code-like blocks are skipped."""

    SKIP = {"script", "style", "pre", "screen", "programlisting", "synopsis", "info", "head", "nav", "title",
            "cmdsynopsis", "literallayout", "code", "kbd", "tt", "samp", "var", "option", "filename", "command",
            "userinput", "computeroutput", "media", "figure", "img", "svg", "math", "noscript", "object",
            "button", "select", "input", "textarea", "table-of-contents", "links", "credit", "license", "desc"}
    BLOCK = {"p", "li", "dd", "dt", "td", "th", "h1", "h2", "h3", "h4", "h5", "h6", "div", "item", "section",
             "note", "tr", "table", "ul", "ol", "dl", "blockquote", "br", "body", "terms", "tree", "list",
             "steps", "caption", "legend", "header", "footer", "article", "main", "span_block"}
    INLINE_CODE = {"code", "kbd", "tt", "samp", "var", "option", "filename", "command", "userinput",
                   "computeroutput", "cmd", "file", "sys", "key", "keyseq", "input", "output", "gui", "guiseq",
                   "app", "em", "link"}

    TEXT_CONTAINERS = {"p", "li", "dd", "dt", "td", "th"}

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.paragraphs: list[str] = []
        self._buf: list[str] = []
        self._skip = 0
        self._in_para = 0
        self._stack: list[str] = []

    def _flush(self) -> None:
        text = re.sub(r"\s+", " ", "".join(self._buf)).strip()
        if text:
            self.paragraphs.append(text)
        self._buf = []

    SKIP_CLASSES = {"navheader", "navfooter", "docnav", "toc", "breadcrumb", "breadcrumbs", "screen",
                    "programlisting", "synopsis", "cmdsynopsis", "legalnotice", "indexterm", "banner"}

    def handle_starttag(self, tag, attrs):
        tag = tag.split(":")[-1]
        if tag in ("br", "img", "input", "hr", "meta"):
            if tag == "br":
                self._buf.append(" ")
            return
        attrs = dict(attrs)
        classes = set((attrs.get("class") or "").split())
        container = tag in self.TEXT_CONTAINERS or (tag == "div" and "para" in classes)
        inline_ok = tag in self.INLINE_CODE and self._in_para > 0
        skip = (tag in self.SKIP and not inline_ok) or bool(classes & self.SKIP_CLASSES)
        skip = skip or attrs.get("id") in ("banner", "title")
        self._stack.append(("\0" if skip else "") + tag + ("\1" if container else ""))
        if skip:
            self._skip += 1
            return
        if tag in self.BLOCK or container:
            self._flush()
        if container:
            self._in_para += 1

    def handle_startendtag(self, tag, attrs):
        if tag.split(":")[-1] == "br":
            self._buf.append(" ")

    def handle_endtag(self, tag):
        tag = tag.split(":")[-1]
        # pop to the matching open tag (tolerant of unclosed HTML tags)
        for i in range(len(self._stack) - 1, -1, -1):
            if self._stack[i].strip("\0\1") == tag:
                container = False
                for t in self._stack[i:]:
                    if t.startswith("\0"):
                        self._skip -= 1
                    elif t.endswith("\1"):
                        self._in_para -= 1
                        container = True
                del self._stack[i:]
                break
        else:
            return
        if (tag in self.BLOCK or container) and not self._skip:
            self._flush()

    def handle_data(self, data):
        if not self._skip:
            self._buf.append(data)

    def close(self):
        super().close()
        self._flush()


def html_paragraphs(raw: str) -> list[str]:
    parser = _ProseExtractor()
    parser.feed(raw)
    parser.close()
    return [html.unescape(p) for p in parser.paragraphs]


def fortune_chunks(raw: str) -> list[list[str]]:
    """Split a fortune file on '%' lines into chunks of FORTUNES_PER_DOC fortunes (one chunk = one document)."""
    fortunes = [f.strip("\n") for f in re.split(r"^%\s*$", raw, flags=re.M)]
    fortunes = ["\n".join(line.rstrip() for line in f.split("\n")).strip() for f in fortunes]
    fortunes = [f for f in fortunes if f]
    return [fortunes[i:i + FORTUNES_PER_DOC] for i in range(0, len(fortunes), FORTUNES_PER_DOC)]


# --------------------------------------------------------------------------------------------------------
# sources


def _is_so_link(path: Path) -> bool:
    try:
        with gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb") as f:
            head = f.read(4096)
    except OSError:
        return True
    return head.lstrip().startswith(b".so ") and len(head) < 400


def list_items(pkg: str, root: Path) -> Iterator[Item]:
    """Candidate documents of one extracted package (only its own files: no dpkg -L mixing)."""
    if pkg in _MAN_PACKAGES:
        man = root / "usr/share/man"
        dirs = {"": "en"} if pkg == "manpages" else _MAN_DIRS
        for d, lang in sorted(dirs.items()):
            base = man / d if d else man
            for sec in sorted(base.glob("man[0-9]*")):
                for p in sorted(sec.iterdir()):
                    if p.is_symlink() or not p.is_file() or _is_so_link(p):
                        continue
                    name = p.name.removesuffix(".gz")
                    yield Item(lang, pkg, f"man/{name}", p, "man")
    elif pkg in _FORTUNE_PACKAGES:
        lang = _FORTUNE_PACKAGES[pkg]
        for p in sorted((root / "usr/share/games/fortunes").rglob("*")):
            if p.is_symlink() or not p.is_file() or p.suffix in (".dat", ".u8") or p.name.endswith(".dat"):
                continue
            try:
                raw = p.read_bytes().decode("utf-8")
            except UnicodeDecodeError:
                continue  # legacy-encoded file: skipped rather than guessed
            rel = p.relative_to(root / "usr/share/games/fortunes").as_posix()
            for i in range(len(fortune_chunks(raw))):
                yield Item(lang, pkg, f"fortune/{pkg}/{rel}#{i}", p, "fortune", i)
    elif pkg == "debian-handbook":
        for d in sorted((root / "usr/share/doc/debian-handbook/html").iterdir()):
            lang = d.name.split("-")[0]
            if d.name in ("zh-TW",) or not d.is_dir():
                continue
            for p in sorted(d.glob("*.html")):
                yield Item(lang, pkg, f"debian-handbook/{p.name}", p, "html")
    elif pkg == "gnome-user-docs":
        for d, lang in sorted(_GNOME_DIRS.items()):
            for p in sorted((root / "usr/share/help" / d / "gnome-help").glob("*.page")):
                yield Item(lang, pkg, f"gnome-help/{p.name}", p, "html")
    elif pkg.startswith("installation-guide-"):
        base = root / "usr/share/doc" / pkg
        for d in sorted(base.iterdir()):
            lang = {"zh_CN": "zh", "pt": "pt"}.get(d.name, d.name)
            if not d.is_dir() or len(lang) != 2:
                continue
            for p in sorted(d.glob("*.html")):
                yield Item(lang, pkg, f"installation-guide/{p.name}", p, "html")
    elif pkg in ("debian-faq-ko", "debian-reference-id"):
        lang = pkg.rsplit("-", 1)[1]
        for p in sorted((root / "usr/share/doc").rglob("*.html")):
            if p.is_symlink():
                continue
            stem = p.name.replace(f".{lang}.html", ".html")
            yield Item(lang, pkg, f"{pkg.rsplit('-', 1)[0]}/{stem}", p, "html")
    elif pkg.startswith("libreoffice-help-"):
        code = pkg.removeprefix("libreoffice-help-")
        base = root / "usr/share/libreoffice/help" / code / "text"
        for p in sorted(base.rglob("*.html")):
            yield Item(_LIBREOFFICE[code], pkg, f"libreoffice-help/{p.relative_to(base).as_posix()}", p, "html")
    else:
        raise LangmoeError(f"no extractor for package {pkg!r}")


_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")


def extract_paragraphs(item: Item) -> list[str]:
    """Raw paragraphs of one document, without terminal escapes or control characters."""
    return [_CONTROL.sub("", _ANSI.sub("", p)) for p in _raw_paragraphs(item)]


def _raw_paragraphs(item: Item) -> list[str]:
    if item.kind == "man":
        pars = render_man(item.path)
    elif item.kind == "fortune":
        pars = fortune_chunks(item.path.read_bytes().decode("utf-8"))[item.chunk]
    else:
        pars = html_paragraphs(item.path.read_bytes().decode("utf-8", errors="replace"))
    return pars


# --------------------------------------------------------------------------------------------------------
# build


def _h(s: str) -> int:
    return int.from_bytes(hashlib.sha256(s.encode("utf-8")).digest()[:8], "big")


def split_of(key: str) -> str:
    """~90/5/5 by a hash of the language-neutral key, so a page and its translations share a split."""
    r = _h("split:" + key) % 1000
    return "train" if r < 900 else ("valid" if r < 950 else "test")


def _ensure_splits(docs: list[dict], frozen: frozenset[str] = frozenset()) -> None:
    """Every language gets >= 1 valid and >= 1 test document (thin languages would otherwise miss one).

    Documents whose id is in `frozen` (the previous release's train split) are never moved.
    """
    for split in ("valid", "test"):
        if any(d["split"] == split for d in docs):
            continue
        train = [d for d in docs if d["split"] == "train"]
        if len(train) < 2:
            raise LangmoeError(f"language has too few documents ({len(docs)}) to split; drop it from the build")
        movable = [d for d in train if d["id"] not in frozen]
        if not movable:
            raise LangmoeError(f"no {split} document: every candidate was in the previous release's train split")
        pick = min(movable, key=lambda d: _h(split + ":" + d["id"]))
        pick["split"] = split


def top_up_test(docs: list[dict], frozen: frozenset[str] = frozenset(),
                min_chars: int = MIN_TEST_CHARS) -> str | None:
    """Move valid documents to test (in a hash order) until test has `min_chars`, keeping >= 1 valid document.

    Only valid documents move: a document of the previous release's train split (`frozen`) is never held out,
    since the shipped bases were trained on it. Returns why the test split stays under `min_chars`, or None.
    """
    def chars(split: str) -> int:
        return sum(len(d["text"]) for d in docs if d["split"] == split)

    valid = sorted((d for d in docs if d["split"] == "valid" and d["id"] not in frozen),
                   key=lambda d: (_h("top-up:" + d["id"]), d["id"]))
    n_valid = sum(d["split"] == "valid" for d in docs)
    while chars("test") < min_chars and valid and n_valid > 1:
        valid.pop(0)["split"] = "test"
        n_valid -= 1
    if chars("test") >= min_chars:
        return None
    return (f"test {chars('test'):,} chars in {sum(d['split'] == 'test' for d in docs)} docs; "
            f"{n_valid} valid doc(s) left ({chars('valid'):,} chars), the other documents were train in the "
            f"previous release")


V1_TRAIN_IDS = Path(__file__).resolve().parent / "builtin_v1_train_ids.txt.gz"


def v1_train_digest(path: Path = V1_TRAIN_IDS) -> dict:
    """Count and sha256 of the sorted train ids of release 1.0 (the split the shipped bases were trained on)."""
    ids = sorted(read_previous_splits([path]))
    return {"file": f"tools/{path.name}", "count": len(ids),
            "sha256": hashlib.sha256("\n".join(ids).encode("utf-8")).hexdigest()}


def read_previous_splits(paths: list[Path]) -> dict[str, str]:
    """id -> split of a previous release: a corpus folder (`<lang>.jsonl.gz`) or a list of train ids (one a line,
    `.txt` or `.txt.gz`). Train wins when the inputs disagree."""
    prev: dict[str, str] = {}

    def put(doc_id: str, split: str) -> None:
        if prev.get(doc_id) != "train":
            prev[doc_id] = split

    for path in paths:
        path = Path(path)
        if path.is_dir():
            for f in sorted(path.glob("*.jsonl.gz")):
                with gzip.open(f, "rt", encoding="utf-8") as fh:
                    for line in fh:
                        d = json.loads(line)
                        put(d["id"], d["split"])
        elif path.is_file():
            opener = gzip.open if path.suffix == ".gz" else open
            with opener(path, "rt", encoding="utf-8") as fh:
                for line in fh:
                    if line.strip():
                        put(line.strip(), "train")
        else:
            raise LangmoeError(f"--keep-train-of {path}: no such corpus folder or id list")
    return prev


@dataclass
class FilterLog:
    """What the builder-2.0 filters removed, per (filter, language, source): paragraphs, characters, examples."""

    removed: dict = None

    def __post_init__(self):
        self.removed = {}

    def add(self, name: str, lang: str, source: str, par: str) -> None:
        e = self.removed.setdefault((name, lang, source), [0, 0, []])
        e[0] += 1
        e[1] += len(par)
        if len(e[2]) < 3:
            e[2].append(par[:160])


def clean_item(item: Item, lang: str, stable: bool, flog: FilterLog | None = None) -> list[str]:
    """Kept paragraphs of one document, in order, before de-duplication."""
    language = get_language(lang)
    new_filters = not stable
    pars: list[str] = []
    for par in extract_paragraphs(item):
        # one paragraph never spans a blank line: documents are paragraphs joined by "\n\n"
        par = re.sub(r"\n\s*\n", "\n", unicodedata.normalize("NFC", par).strip())
        if not keep_paragraph(par, lang):
            continue
        if new_filters and item.source.startswith(LABEL_LIST_SOURCES) and has_hole(par):
            if flog:
                flog.add("hole", lang, item.source, par)
            continue
        if new_filters and lang != "en" and language.script == "Latin" and english_sentence(par):
            if flog:
                flog.add("english", lang, item.source, par)
            continue
        pars.append(par)
    if new_filters and item.source.startswith(LABEL_LIST_SOURCES):
        kept = drop_label_runs(pars)
        if flog and len(kept) < len(pars):
            left = list(kept)
            for par in pars:  # kept is an ordered sub-list of pars
                if left and par == left[0]:
                    left.pop(0)
                else:
                    flog.add("labels", lang, item.source, par)
        pars = kept
    if lang in CJK_JOIN_LANGS and item.kind in ("man", "html"):
        joined = [join_cjk_spaces(p) for p in pars]
        if flog:
            for a, b in zip(pars, joined, strict=True):
                if a != b:
                    flog.add("cjk-join", lang, item.source, a)
        pars = joined
    return pars


def build_language(lang: str, items: list[Item], max_bytes: int = MAX_BYTES_PER_LANG,
                   previous: dict[str, str] | None = None, stable: bool = False,
                   flog: FilterLog | None = None) -> tuple[list[dict], str | None]:
    """Documents of one language: items in hash order, cleaned, de-duplicated, up to `max_bytes` of text.

    `previous` (id -> split of the previous release) keeps every earlier document in its split; a document of the
    previous train split never becomes valid or test. Returns the documents and why the test split is thin (or None).
    """
    previous = previous or {}
    seen: set[bytes] = set()
    docs: list[dict] = []
    total = 0
    for item in sorted(items, key=lambda it: (_h("order:" + it.id), it.id)):
        if total >= max_bytes:
            break
        kept: list[str] = []
        size = 0
        for par in clean_item(item, lang, stable, flog):
            key = hashlib.sha256(normalise_for_dedup(par).encode("utf-8")).digest()[:16]
            if key in seen:
                continue
            seen.add(key)
            if size + len(par) > MAX_DOC_CHARS:
                break
            kept.append(par)
            size += len(par) + 2
        text = "\n\n".join(kept)
        if len(text) < MIN_DOC_CHARS:
            continue
        split = previous.get(item.id) or split_of(item.key)
        docs.append({"id": item.id, "source": item.source, "split": split, "text": text})
        total += len(text.encode("utf-8"))
    if len(docs) < MIN_LANG_DOCS:
        return [], None
    frozen = frozenset(i for i, s in previous.items() if s == "train")
    _ensure_splits(docs, frozen)
    thin = top_up_test(docs, frozen)
    docs.sort(key=lambda d: d["id"])
    return docs, thin


def gzip_jsonl(docs: list[dict]) -> bytes:
    """Deterministic gzip (mtime 0, no file name) so rebuilds are bit identical."""
    buf = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=buf, mtime=0, compresslevel=9) as gz:
        for d in docs:
            gz.write((json.dumps(d, ensure_ascii=False, sort_keys=False) + "\n").encode("utf-8"))
    return buf.getvalue()


def check_tools() -> None:
    missing = [f"{exe} (apt package {pkg})" for exe, pkg in TOOLS.items() if shutil.which(exe) is None]
    if missing:
        raise LangmoeError(f"missing tools: {', '.join(missing)}; install them, e.g. `apt-get install mandoc`")


def find_debs(cache: Path, packages: list[str], download: bool) -> dict[str, Path]:
    """Map package -> .deb in `cache` (one version each); optionally `apt-get download` the missing ones."""
    def scan() -> dict[str, Path]:
        found: dict[str, Path] = {}
        for p in sorted(cache.glob("*.deb")):
            found.setdefault(p.name.split("_", 1)[0], p)
        return found

    cache.mkdir(parents=True, exist_ok=True)
    found = scan()
    missing = [p for p in packages if p not in found]
    if missing and download:
        proc = subprocess.run(["apt-get", "download", *missing], cwd=cache, capture_output=True, text=True)
        if proc.returncode != 0:
            raise LangmoeError(f"apt-get download failed: {proc.stderr.strip().splitlines()[-1:]}; "
                               f"run `apt-get update` or fetch the .debs into {cache} by hand")
        found = scan()
        missing = [p for p in packages if p not in found]
    if missing:
        raise LangmoeError(f"missing .deb files in {cache}: {' '.join(missing)}; "
                           f"run `cd {cache} && apt-get download {' '.join(missing)}` (or pass --download)")
    return {p: found[p] for p in packages}


def _deb_field(deb: Path, field: str) -> str:
    return subprocess.run(["dpkg-deb", "-f", str(deb), field], capture_output=True, text=True,
                          check=True).stdout.strip()


_LICENCE_HINTS = [
    (r"GNU General Public License|GNU GPL|\bGPL\b", "GPL"),
    (r"GNU Lesser General Public|\bLGPL\b", "LGPL"),
    (r"Free Documentation License|\bGFDL\b", "GFDL"),
    (r"\bBSD\b|Regents of the University of California", "BSD"),
    (r"Creative Commons|CC-BY", "Creative Commons"),
    (r"Mozilla Public License|\bMPL\b", "MPL"),
    (r"\bMIT\b|Permission is hereby granted, free of charge", "MIT/Expat"),
    (r"public domain", "public domain"),
    (r"DFSG free", "DFSG-free (per page)"),
]


def _licence_summary(copyright_text: str) -> tuple[list[str], list[str]]:
    """Licence names and copyright lines from a debian/copyright file (DEP-5 fields, else keyword hints)."""
    stanzas = re.split(r"\n\s*\n", copyright_text)
    main = next((st for st in stanzas if re.search(r"^Files:\s*\*\s*$", st, flags=re.M)), None)
    if main is not None:  # DEP-5: the `Files: *` stanza covers the documentation text itself
        copyright_text = main
    licences = sorted({m.strip() for m in re.findall(r"^License:\s*(.+)$", copyright_text, flags=re.M)})
    if not licences:
        licences = [f"{name} (free-form copyright file)" for rx, name in _LICENCE_HINTS
                    if re.search(rx, copyright_text, flags=re.I)]
    holders: list[str] = []
    for m in re.finditer(r"^Copyright:\s*(.+(?:\n [^\n.].*)*)", copyright_text, flags=re.M):
        for line in m.group(1).split("\n"):
            line = line.strip()
            if line and line not in holders:
                holders.append(line)
    if not holders:
        holders = [ln.strip() for ln in copyright_text.splitlines()
                   if re.match(r"\s*Copyright\s*(\(c\)|©|\d{4})", ln, flags=re.I)
                   and not re.search(r"Free Software Foundation|NAME OF AUTHOR|19yy", ln, flags=re.I)][:5]
    return licences, holders


def build(cache: Path, out: Path, download: bool = False, max_bytes: int = MAX_BYTES_PER_LANG,
          packages: list[str] | None = None, log=print, keep_train_of: list[Path] | None = None,
          stable_langs: frozenset[str] = STABLE_LANGS, filter_log: FilterLog | None = None) -> dict:
    """Extract every package into a temp folder, build each language, write files + manifest + SOURCES.md.

    `keep_train_of`: previous releases (corpus folders or train-id lists) whose splits are kept; their train
    documents never become valid or test. Read before anything is written, so it may be `out` itself.
    """
    check_tools()
    previous = read_previous_splits(list(keep_train_of or []))
    packages = packages or PACKAGES
    debs = find_debs(Path(cache), packages, download)
    sources: dict[str, dict] = {}
    items_by_lang: dict[str, list[Item]] = {}
    seen_ids: set[str] = set()
    # Extracted trees hold ~100k small files: a RAM disk makes unpacking and cleanup fast when available.
    shm = Path("/dev/shm")
    tmp_root = str(shm) if shm.is_dir() and os.access(shm, os.W_OK) else None
    with tempfile.TemporaryDirectory(prefix="langmoe-debs-", dir=tmp_root) as tmp:
        for pkg, deb in debs.items():
            root = Path(tmp) / pkg
            subprocess.run(["dpkg-deb", "-x", str(deb), str(root)], check=True)
            copyright_path = root / "usr/share/doc" / pkg / "copyright"
            text = copyright_path.read_text("utf-8", errors="replace") if copyright_path.exists() else ""
            licences, holders = _licence_summary(text)
            sources[pkg] = {"version": _deb_field(deb, "Version"), "homepage": _deb_field(deb, "Homepage"),
                            "licences": licences, "copyright": holders[:8], "languages": set()}
            for it in list_items(pkg, root):
                get_language(it.lang)
                if it.id not in seen_ids:  # first wins: one variant per language and page
                    seen_ids.add(it.id)
                    items_by_lang.setdefault(it.lang, []).append(it)
        out.mkdir(parents=True, exist_ok=True)
        manifest_langs = {}
        thin_test: dict[str, str] = {}
        for lang in sorted(items_by_lang):
            docs, thin = build_language(lang, items_by_lang[lang], max_bytes, previous,
                                        stable=lang in stable_langs, flog=filter_log)
            if not docs:
                log(f"{lang}: skipped (fewer than {MIN_LANG_DOCS} clean documents)")
                continue
            data = gzip_jsonl(docs)
            from langmoe.io import write_bytes
            write_bytes(out / f"{lang}.jsonl.gz", data)
            splits = {s: {"docs": 0, "chars": 0, "bytes": 0} for s in ("train", "valid", "test")}
            for d in docs:
                st = splits[d["split"]]
                st["docs"] += 1
                st["chars"] += len(d["text"])
                st["bytes"] += len(d["text"].encode("utf-8"))
                sources[d["source"]]["languages"].add(lang)
            language = get_language(lang)
            manifest_langs[lang] = {
                "code": lang, "name": language.name, "family": language.family, "genus": language.genus,
                "script": language.script, "file": f"{lang}.jsonl.gz",
                "sha256": hashlib.sha256(data).hexdigest(), "compressed_bytes": len(data),
                "docs": len(docs), "chars": sum(s["chars"] for s in splits.values()),
                "sources": sorted({d["source"] for d in docs}), "splits": splits,
            }
            if thin:
                thin_test[lang] = thin
            log(f"{lang}: {len(docs)} docs, {manifest_langs[lang]['chars']} chars, {len(data)} bytes gz")
    manifest = {
        "builder_version": BUILDER_VERSION,
        "max_bytes_per_language": max_bytes,
        "languages": manifest_langs,
        "packages": {p: sources[p]["version"] for p in sorted(sources)},
        "min_test_chars": MIN_TEST_CHARS,
        "stable_languages": sorted(stable_langs),
        "thin_test": thin_test,
    }
    manifest["v1_train_ids"] = v1_train_digest()
    from langmoe.io import write_json, write_text
    write_json(out / "manifest.json", manifest)
    write_text(out / "SOURCES.md", _sources_md(sources))
    stale = [p for p in out.glob("*.jsonl.gz") if p.name.split(".")[0] not in manifest_langs]
    for p in stale:
        p.unlink()
    return manifest


def _sources_md(sources: dict[str, dict]) -> str:
    lines = [
        "# Sources of the built-in corpus",
        "",
        "Every text in this folder is extracted from a Debian package (bookworm) of translated documentation.",
        "The texts keep the licences of their sources (listed below, read from each package's",
        "`/usr/share/doc/<package>/copyright`); they are not covered by the code's licence. The full licence",
        "texts and complete author lists are in those copyright files (`apt-get download <package>`).",
        "Only prose paragraphs were kept; the text was re-flowed, filtered and de-duplicated (see docs/corpus.md).",
        "",
    ]
    for pkg in sorted(sources):
        s = sources[pkg]
        if not s["languages"]:
            continue
        lines += [
            f"## {pkg} {s['version']}",
            "",
            f"- Languages: {', '.join(sorted(s['languages']))}",
            f"- Licences: {', '.join(s['licences']) or 'see the package copyright file'}",
            f"- Homepage: {s['homepage'] or 'https://packages.debian.org/' + pkg}",
            "- Copyright: " + ("; ".join(s["copyright"]) or "see the package copyright file"),
            "",
        ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python tools/build_builtin.py", description=__doc__.split("\n")[0])
    ap.add_argument("--cache", type=Path, help="folder with the .deb files (apt-get download)")
    ap.add_argument("--out", type=Path, help="output folder, e.g. src/langmoe/data/builtin")
    ap.add_argument("--download", action="store_true", help="apt-get download missing packages into --cache")
    ap.add_argument("--max-bytes", type=int, default=MAX_BYTES_PER_LANG, help="UTF-8 text cap per language")
    ap.add_argument("--list-packages", action="store_true", help="print the apt packages needed and exit")
    ap.add_argument("--keep-train-of", type=Path, action="append", default=[], metavar="PATH",
                    help="previous release (corpus folder or train-id list; repeatable): its splits are kept, its "
                         "train documents never become valid/test")
    ap.add_argument("--stable-langs", default=",".join(sorted(STABLE_LANGS)),
                    help="comma-separated languages built with the builder-1.0 filters only ('' = none)")
    ap.add_argument("--filter-report", type=Path, help="write what the 2.0 filters removed (JSON) to this file")
    args = ap.parse_args(argv)
    if args.list_packages:
        print(" ".join(PACKAGES))
        return 0
    if args.cache is None or args.out is None:
        ap.error("--cache and --out are required (or pass --list-packages)")
    print(f"needs tools: {', '.join(f'{e} (apt: {p})' for e, p in TOOLS.items())}")
    print(f"needs packages: {' '.join(PACKAGES)}")
    try:
        flog = FilterLog() if args.filter_report else None
        stable = frozenset(x for x in args.stable_langs.split(",") if x)
        build(args.cache, args.out, download=args.download, max_bytes=args.max_bytes,
              keep_train_of=args.keep_train_of, stable_langs=stable, filter_log=flog)
        if flog:
            rows = [{"filter": f, "lang": lang, "source": src, "paragraphs": n, "chars": c, "examples": ex}
                    for (f, lang, src), (n, c, ex) in sorted(flog.removed.items())]
            args.filter_report.write_text(json.dumps(rows, ensure_ascii=False, indent=1), "utf-8")
    except LangmoeError as e:
        print(f"build_builtin: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
