import pytest

from lcplugin.config.contexts import ctx_label, parse_ctx, parse_ctx_list
from lcplugin.errors import LcError


@pytest.mark.parametrize(("text", "tokens"), [("32k", 32768), ("128K", 131072), ("8192", 8192), (" 1k ", 1024),
                                            ("256k", 262144), ("512k", 524288), ("1m", 1048576), ("2M", 2097152)])
def test_parse(text, tokens):
    assert parse_ctx(text) == tokens


@pytest.mark.parametrize(("tokens", "label"), [(32768, "32k"), (131072, "128k"), (4096, "4k"), (5000, "5000"),
                                             (524288, "512k"), (1048576, "1m"), (1048576 + 1024, "1025k")])
def test_label(tokens, label):
    assert ctx_label(tokens) == label


def test_label_roundtrips():
    for k in (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048):
        assert parse_ctx(ctx_label(k * 1024)) == k * 1024


@pytest.mark.parametrize("bad", ["32g", "k", "m", "", "-4k", "3.5k", "1.5m", "0"])
def test_bad_labels_name_the_value(bad):
    with pytest.raises(LcError, match="context length"):
        parse_ctx(bad)


def test_list_keeps_order_and_drops_repeats():
    assert parse_ctx_list("32k,8k,32768") == [32768, 8192]
