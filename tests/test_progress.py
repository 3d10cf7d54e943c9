"""Long jobs report progress: a line with rate and ETA every few percent in a log."""

import io

from chatgentitle.progress import Progress, duration


def test_log_lines_every_few_percent_with_eta():
    ticks = iter(range(0, 10_000, 5))  # 5 s per reading of the clock

    def clock():
        return next(ticks)

    log = io.StringIO()
    with Progress(100, "titles", "val", stream=log, every=0.25, clock=clock) as progress:
        for _ in range(100):
            progress.update()
    with Progress(10, "titles", "val", stream=log, every=0.5, min_interval_s=0, clock=clock) as progress:
        progress.update(7)  # a line at 70%, and the last one at close
        progress.update(1)
    lines = log.getvalue().splitlines()
    assert lines[0].startswith("val: 25/100 titles (25%), 0.20 titles/s, elapsed 2m05s, ETA 6m15s")
    assert [line.split()[1] for line in lines] == ["25/100", "50/100", "75/100", "100/100", "7/10", "8/10"]


def test_a_short_job_writes_nothing():
    log = io.StringIO()
    with Progress(10, "titles", stream=log) as progress:
        progress.update(10)
    assert log.getvalue() == ""


def test_duration():
    assert [duration(s) for s in (12, 250, 7500)] == ["12s", "4m10s", "2h05m"]
