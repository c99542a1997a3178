"""Progress where stderr is not a terminal: a plain line every ``every`` seconds and one at the end."""

from __future__ import annotations

import re

from hardneg.progress import Reporter

LINE = re.compile(r"^encode: (\d+)/10 \((\d+)%\), \d+:\d\d:\d\d elapsed(, \d+:\d\d:\d\d left)?$")


def lines(text: str) -> list[str]:
    return [x for x in text.splitlines() if x]


def test_a_line_per_interval_and_one_at_the_end(capsys):
    with Reporter(every=0).task("encode", 10) as advance:
        for _ in range(4):
            advance(2)
    out = capsys.readouterr()
    assert out.out == ""  # stdout is the command's own output
    got = lines(out.err)
    assert [int(LINE.match(x).group(1)) for x in got] == [2, 4, 6, 8]  # the end adds no repeat of the last line
    assert "left" in got[0]


def test_a_long_interval_prints_only_the_last_line(capsys):
    with Reporter(every=3600).task("encode", 10) as advance:
        for _ in range(10):
            advance(1)
    got = lines(capsys.readouterr().err)
    assert len(got) == 1 and LINE.match(got[0]).group(1, 2) == ("10", "100")
    assert "left" not in got[0]


def test_a_rate_task_shows_its_rate_and_an_interrupted_step_its_count(capsys):
    try:
        with Reporter(every=3600).rate_task("generate", 8, "tok/s") as advance:
            advance(3, 120)
            raise KeyboardInterrupt
    except KeyboardInterrupt:
        pass
    (got,) = lines(capsys.readouterr().err)
    assert re.fullmatch(r"generate: 3/8 \(38%\), 0:00:00 elapsed, 0:00:00 left, [\d,]+\.\d tok/s", got), got


def test_off_prints_nothing(capsys):
    with Reporter(enabled=False, every=0).rate_task("generate", 8, "tok/s") as advance:
        advance(8, 100)
    assert capsys.readouterr() == ("", "")


def test_a_resumed_run_estimates_the_time_left_from_the_items_that_cost_time(capsys, monkeypatch):
    """680 of 1,000 generations come back from the cache at once, then 20 are asked in 60 s: 300 are left
    at 3 s each, so 15 minutes (not the 26 s that 700 items in 60 s would suggest)."""
    clock = [1000.0]
    monkeypatch.setattr("hardneg.progress.time.perf_counter", lambda: clock[0])
    with Reporter(every=3600).rate_task("generate", 1000, "tok/s", replays=680) as advance:
        for _ in range(680):
            advance(1, 0, True)
        for _ in range(20):
            clock[0] += 3.0
            advance(1, 50, False)
        before_the_end = lines(capsys.readouterr().err)
    assert before_the_end == []  # nothing before the interval
    (got,) = lines(capsys.readouterr().err)
    assert got.startswith("generate: 700/1,000 (70%), 0:01:00 elapsed, 0:15:00 left"), got
