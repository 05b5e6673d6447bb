"""The reconcile loop's pacing (issue 13): after a pass that evaluated for d seconds it rests
min(d, --status-interval) (at least --debounce-seconds), so a long pass is never followed by a
pause longer than the pacing interval."""

import asyncio

from memory_hygiene.shell import reconciler
from memory_hygiene.shell.runtime import Runtime


def test_a_long_pass_is_never_followed_by_a_pause_longer_than_the_status_interval(monkeypatch):
    async def go():
        rt = Runtime()
        rt.config.status_interval, rt.config.debounce_seconds = 0.3, 0.05
        rt.orphans_checked = True
        loop = asyncio.get_running_loop()
        ends: list[float] = []
        starts: list[float] = []
        busy = [0.0, 0.2, 30.0, 30.0, 0.0, 0.0]  # what each pass says it evaluated

        async def fake_pass(rt_, dirty, now):
            starts.append(loop.time())
            took = busy[len(starts) - 1]
            ends.append(loop.time())
            rt_.changed.set()  # news keeps coming: the next pass waits for the pacing alone
            return took

        monkeypatch.setattr(reconciler, "reconcile_once", fake_pass)
        rt.ready.set()
        rt.changed.set()
        task = asyncio.create_task(reconciler.reconcile_loop(rt))
        deadline = loop.time() + 10
        while len(starts) < len(busy):
            assert loop.time() < deadline, f"passes began at {starts}: a pause past the pacing interval"
            await asyncio.sleep(0.01)
        for _ in range(50):  # Python 3.11's wait_for may swallow a cancel that meets a set Event
            task.cancel()
            done, _ = await asyncio.wait({task}, timeout=0.1)
            if done:
                break
        assert task.done()
        pauses = [round(b - a, 2) for a, b in zip(ends, starts[1:])]
        want = [max(0.05, min(d, 0.3)) for d in busy[:-1]]
        for got, bound in zip(pauses, want):
            assert bound - 0.02 <= got <= bound + 0.15, (pauses, want)
        assert max(pauses) <= 0.3 + 0.15, "never longer than the pacing interval"

    asyncio.run(go())
