"""The hand-written manifest encoder is byte for byte the canonical JSON."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from runyard.snapshot import manifest as mf

names = st.characters(blacklist_categories=("Cs",), blacklist_characters="/\x00")
paths = st.text(names, min_size=1, max_size=20).filter(lambda p: p not in (".", ".."))
digests = st.text("0123456789abcdef", min_size=64, max_size=64)
entries = st.one_of(
    st.builds(lambda p, s, x, h: mf.Entry(p, mf.FILE, s, x, h), paths, st.integers(0, 2**53), st.booleans(), digests),
    st.builds(lambda p, t: mf.Entry(p, mf.LINK, target=t), paths, paths),
    st.builds(lambda p: mf.Entry(p, mf.DIR), paths),
)


@settings(max_examples=300, deadline=None)
@given(st.lists(entries, max_size=12, unique_by=lambda e: e.path))
def test_encode_equals_canonical_json(items: list[mf.Entry]) -> None:
    m = mf.build(items)
    assert m.encode() == m.encode_reference()
    assert mf.parse(m.encode()).entries == m.entries


def test_known_bytes() -> None:
    m = mf.build([mf.Entry("b\"\n\\é", mf.LINK, target="../x"), mf.Entry("a", mf.FILE, 3, True, "0" * 64)])
    assert m.encode() == (
        '{"entries":[{"exec":true,"hash":"' + "0" * 64 + '","path":"a","size":3,"type":"file"},'
        '{"path":"b\\"\\n\\\\é","target":"../x","type":"link"}],"format":"runyard-manifest/1","hash":"blake3"}'
    ).encode()
