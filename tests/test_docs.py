"""The Markdown documentation: every relative link resolves inside the repository (a clone has
nothing beside it), and docs/METHODS.md is the design notes it copies."""

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *(ROOT / "data").glob("*.md"), *(ROOT / "benchmarks").glob("*.md"), *(ROOT / "docs").glob("*.md")]
LINK = re.compile(r"\]\(([^)\s]+)\)")


CODE = re.compile(r"```.*?```|`[^`\n]*`", re.S)  # examples such as Rasa's `[paris](city)` are not links


def relative_links(path: Path) -> list:
    targets = [m.group(1) for m in LINK.finditer(CODE.sub("", path.read_text(encoding="utf-8")))]
    return [t.split("#")[0] for t in targets if not re.match(r"[a-z]+:", t) and not t.startswith("#")]


def test_the_pattern_finds_links():
    (found,) = [t for t in relative_links(ROOT / "README.md") if t.endswith("METHODS.md")][:1]
    assert found == "docs/METHODS.md"


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_resolve_inside_the_repository(doc):
    for target in relative_links(doc):
        resolved = (doc.parent / target).resolve()
        assert resolved.is_relative_to(ROOT), f"{doc.name} links outside the repository: {target}"
        assert resolved.exists(), f"{doc.name} links to a missing file: {target}"


def test_methods_copy_matches_the_design_notes():
    original = ROOT.parent / "shared" / "design" / "METHODS.md"
    if not original.exists():
        pytest.skip("the design notes are not beside this checkout")
    copy = (ROOT / "docs" / "METHODS.md").read_text(encoding="utf-8")
    assert copy.split("\n", 2)[2] == original.read_text(encoding="utf-8"), "docs/METHODS.md is stale: copy it again"


def test_formats_states_the_tokeniser_the_reader_uses():
    """data/FORMATS.md spells out the tokeniser's regular expression; it must be the reader's."""
    from slu_feedback.data.readers import _MYANMAR_SYLLABLE, _NOT_SPACE, _TOKEN_RE, _UNSPACED, _WORD

    text = (ROOT / "data" / "FORMATS.md").read_text(encoding="utf-8")
    pattern, unspaced, word, syllable = re.search(
        r"\n`(W\+.*?)` with\n`U` = `(.*?)` and `W` =\n`(.*?)` and the Myanmar syllable `S` =\n`(.*?)`", text).groups()
    assert unspaced == _UNSPACED and word == _WORD.replace(_UNSPACED, "U") and syllable == _MYANMAR_SYLLABLE
    assert (pattern.replace("S", _MYANMAR_SYLLABLE).replace("U", _UNSPACED).replace("W", _WORD)
            == _TOKEN_RE.pattern.replace(_NOT_SPACE, "[^<whitespace>]"))
