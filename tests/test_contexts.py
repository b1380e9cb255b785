import pytest

from lcplugin.config.contexts import ctx_label, parse_ctx, parse_ctx_list
from lcplugin.errors import LcError


@pytest.mark.parametrize(("text", "tokens"), [("32k", 32768), ("128K", 131072), ("8192", 8192), (" 1k ", 1024)])
def test_parse(text, tokens):
    assert parse_ctx(text) == tokens


@pytest.mark.parametrize(("tokens", "label"), [(32768, "32k"), (131072, "128k"), (4096, "4k"), (5000, "5000")])
def test_label(tokens, label):
    assert ctx_label(tokens) == label


def test_label_roundtrips():
    for k in (1, 2, 4, 8, 16, 32, 64, 128):
        assert parse_ctx(ctx_label(k * 1024)) == k * 1024


@pytest.mark.parametrize("bad", ["32m", "k", "", "-4k", "3.5k", "0"])
def test_bad_labels_name_the_value(bad):
    with pytest.raises(LcError, match="context length"):
        parse_ctx(bad)


def test_list_keeps_order_and_drops_repeats():
    assert parse_ctx_list("32k,8k,32768") == [32768, 8192]
