"""Status writes are paced: at most one per policy every --status-interval seconds; the newest
status is written when the interval ends (a pass is scheduled for then), the first at once."""

import asyncio

from memory_hygiene.shell import status
from memory_hygiene.shell.reconciler import PolicyState
from memory_hygiene.shell.runtime import Runtime


class FakeSession:
    def __init__(self):
        self.writes = []

    async def patch_json(self, path, body, **_):
        assert path == "/apis/memoryhygiene.io/v1alpha1/memorypolicies/p/status"
        self.writes.append(body["status"]["n"])
        return 200, {}


def test_writes_are_paced_and_the_newest_goes_out_when_the_interval_ends():
    async def go():
        rt = Runtime()
        rt.config.status_interval = 0.3
        rt.session = FakeSession()
        state = PolicyState(name="p", uid="u", generation=1, engine=None)
        await status.write_status(rt, state, {"n": 1})
        assert rt.session.writes == [1], "the first status goes at once"
        rt.changed.clear()
        await status.write_status(rt, state, {"n": 2})
        await status.write_status(rt, state, {"n": 3})
        assert rt.session.writes == [1], "within the interval: held back"
        await asyncio.wait_for(rt.changed.wait(), 2)  # the scheduled pass
        await status.write_status(rt, state, {"n": 3})
        assert rt.session.writes == [1, 3], "the newest, once"
        await status.write_status(rt, state, {"n": 3})
        assert rt.session.writes == [1, 3], "unchanged: nothing to write"

    asyncio.run(go())


def test_the_writer_builds_and_writes_when_due_apart_from_the_passes(monkeypatch):
    class Slow(FakeSession):
        async def patch_json(self, path, body, **_):
            await asyncio.sleep(0.05)
            self.writes.append((path.split("/")[-2], body["status"]["n"]))
            return 200, {}

    async def go():
        rt = Runtime()
        rt.config.status_interval = 0.3
        rt.session = Slow()
        version = {"p": 1, "q": 1, "gone": 1}
        monkeypatch.setattr(status, "policy_status", lambda rt, state, now: {"n": version[state.name]})
        writer = asyncio.create_task(status.writer(rt))
        states = {n: PolicyState(name=n, uid=n, generation=1, engine=None) for n in ("p", "q", "gone")}
        rt.policies.update(states)
        rt.pending_status.update(states)
        del rt.policies["gone"]  # deleted before its write
        rt.status_wakeup.set()
        loop = asyncio.get_running_loop()

        async def until(check, seconds=5.0):
            deadline = loop.time() + seconds
            while not check() and loop.time() < deadline:
                await asyncio.sleep(0.01)
            return check()

        assert await until(lambda: len(rt.session.writes) == 2)
        started = loop.time()
        version["p"] = 2  # changed by a pass within p's interval: written when it ends
        rt.pending_status["p"] = states["p"]
        rt.status_wakeup.set()
        assert await until(lambda: len(rt.session.writes) == 3)
        assert loop.time() - started >= 0.2, "paced: not before the interval ends"
        writer.cancel()
        assert sorted(rt.session.writes) == [("p", 1), ("p", 2), ("q", 1)]

    asyncio.run(go())


def test_a_status_asked_for_while_an_older_one_is_written_is_written_too():
    """The Enforcing condition came while the first status (without it) was on its way: that
    write must not clear the need, or a pass skips the unchanged policy and the condition is
    never written."""
    class Slow(FakeSession):
        async def patch_json(self, path, body, **_):
            await asyncio.sleep(0.05)
            self.writes.append(body["status"]["n"])
            return 200, {}

    async def go():
        rt = Runtime()
        rt.session = Slow()
        state = PolicyState(name="p", uid="u", generation=1, engine=None)
        writing = asyncio.create_task(status.write_status(rt, state, {"n": 1}))
        await asyncio.sleep(0.01)
        state.needs_write, state.asked = True, state.asked + 1  # as admission.run does
        await writing
        assert state.needs_write, "still to be written"
        await status.write_status(rt, state, {"n": 2})
        assert rt.session.writes == [1, 2] and not state.needs_write

    asyncio.run(go())


def test_status_writes_keep_to_the_budget_over_all_policies_first_writes_first(monkeypatch):
    """--status-qps: 30 policies changed at once are written at most Q a second (after a second's
    burst), and a new policy's first status overtakes the refreshes waiting for their turn."""
    class Timed(FakeSession):
        async def patch_json(self, path, body, **_):
            self.writes.append((asyncio.get_running_loop().time(), path.split("/")[-2]))
            return 200, {}

    async def go():
        rt = Runtime()
        rt.config.status_interval = 0.0
        rt.config.status_qps = 20.0
        rt.session = Timed()
        monkeypatch.setattr(status, "policy_status", lambda rt, state, now: {"n": state.asked})
        states = {f"p{i:02}": PolicyState(name=f"p{i:02}", uid=str(i), generation=1, engine=None)
                  for i in range(30)}
        for s in states.values():
            s.needs_write = False  # refreshes, not first writes
        rt.policies.update(states)
        rt.pending_status.update(states)
        loop = asyncio.get_running_loop()
        writer = asyncio.create_task(status.writer(rt))
        rt.status_wakeup.set()
        deadline = loop.time() + 5
        while len(rt.session.writes) < 20 and loop.time() < deadline:
            await asyncio.sleep(0.01)
        assert len(rt.session.writes) >= 20, rt.session.writes
        new = PolicyState(name="new", uid="n", generation=1, engine=None)  # needs_write: a first write
        rt.policies["new"] = new
        rt.pending_status["new"] = new
        rt.status_wakeup.set()
        while len(rt.session.writes) < 31 and loop.time() < deadline:
            await asyncio.sleep(0.01)
        writer.cancel()
        times = [t for t, _ in rt.session.writes]
        names = [n for _, n in rt.session.writes]
        assert sorted(names) == sorted([*states, "new"]), "each written once"
        assert names.index("new") < 30, "the first write overtook the refreshes still waiting"
        span = times[-1] - times[0]
        # a burst of 20, then 11 more at 20 a second: at least 0.5 s; without the budget, all at once
        assert span >= 0.45, f"31 writes in {span:.2f} s: over the budget"
        assert span < 3.0, f"31 writes took {span:.2f} s: far below the budget"

    asyncio.run(go())


def test_no_status_budget_when_the_qps_is_zero(monkeypatch):
    async def go():
        rt = Runtime()
        rt.config.status_interval = 0.0
        rt.config.status_qps = 0.0
        rt.session = FakeSession()
        monkeypatch.setattr(status, "policy_status", lambda rt, state, now: {"n": 1})
        states = {f"q{i}": PolicyState(name=f"q{i}", uid=str(i), generation=1, engine=None) for i in range(50)}
        rt.policies.update(states)
        rt.pending_status.update(states)
        written = []

        async def patch(path, body, **_):
            written.append(path)
            return 200, {}

        rt.session.patch_json = patch
        writer = asyncio.create_task(status.writer(rt))
        rt.status_wakeup.set()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 2
        while len(written) < 50 and loop.time() < deadline:
            await asyncio.sleep(0.01)
        writer.cancel()
        assert len(written) == 50

    asyncio.run(go())
