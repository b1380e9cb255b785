from lcplugin.progress import Progress


def test_interactive_rewrites_one_line_and_clears_it():
    out = []
    p = Progress("t", 4, lambda text, newline: out.append((text, newline)), interactive=True, tokens=lambda: 1000)
    p.advance(1)
    p.advance(1)  # within half a second of the first update: not redrawn
    assert len(out) == 1 and out[0][0].startswith("\r[lcplugin] t: 1/4 items") and out[0][1] is False
    p.close()
    assert out[-1][0].startswith("\r ") and out[-1][0].endswith("\r")


def test_non_interactive_prints_plain_lines_rarely():
    out = []
    p = Progress("t", 10, lambda text, newline: out.append((text, newline)), interactive=False, every_s=0.0)
    p.advance(5)
    assert out == [(p.line(), True)] and "5/10 items" in out[0][0] and "left" in out[0][0]
    quiet = Progress("t", 10, lambda text, newline: out.append(text), interactive=False, every_s=3600)
    quiet.advance(5)
    quiet.close()
    assert len(out) == 1  # nothing within the hour, nothing to clear
