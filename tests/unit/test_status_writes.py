"""Status writes are paced: at most one per policy every --status-interval seconds; the newest
status is written when the interval ends (a pass is scheduled for then), the first at once."""

import asyncio

from memory_hygiene.shell import operator as op


class FakeSession:
    def __init__(self):
        self.writes = []

    async def patch_json(self, path, body):
        assert path == "/apis/memoryhygiene.io/v1alpha1/memorypolicies/p/status"
        self.writes.append(body["status"]["n"])
        return 200, {}


def test_writes_are_paced_and_the_newest_goes_out_when_the_interval_ends():
    async def go():
        rt = op.Runtime()
        rt.options.status_interval = 0.3
        rt.session = FakeSession()
        state = op.PolicyState(name="p", uid="u", generation=1, engine=None)
        await op.write_status(rt, state, {"n": 1})
        assert rt.session.writes == [1], "the first status goes at once"
        rt.changed.clear()
        await op.write_status(rt, state, {"n": 2})
        await op.write_status(rt, state, {"n": 3})
        assert rt.session.writes == [1], "within the interval: held back"
        await asyncio.wait_for(rt.changed.wait(), 2)  # the scheduled pass
        await op.write_status(rt, state, {"n": 3})
        assert rt.session.writes == [1, 3], "the newest, once"
        await op.write_status(rt, state, {"n": 3})
        assert rt.session.writes == [1, 3], "unchanged: nothing to write"

    asyncio.run(go())


def test_the_writer_writes_the_newest_status_of_each_policy_apart_from_the_passes():
    class Slow(FakeSession):
        async def patch_json(self, path, body):
            await asyncio.sleep(0.05)
            self.writes.append((path.split("/")[-2], body["status"]["n"]))
            return 200, {}

    async def go():
        rt = op.Runtime()
        rt.options.status_interval = 0  # (pacing: the test above)
        rt.session = Slow()
        writer = asyncio.create_task(op.status_writer(rt))
        states = {n: op.PolicyState(name=n, uid=n, generation=1, engine=None) for n in ("p", "q", "gone")}
        rt.policies.update(states)
        for n, v in (("p", 1), ("q", 1), ("gone", 1)):
            rt.pending_status[n] = (states[n], {"n": v})
        del rt.policies["gone"]  # deleted before its write
        rt.status_wakeup.set()
        await asyncio.sleep(0.01)
        rt.pending_status["p"] = (states["p"], {"n": 2})  # a newer one while p's first is in flight
        rt.status_wakeup.set()

        def done():
            return len(rt.session.writes) >= 3 and not rt.pending_status

        deadline = asyncio.get_running_loop().time() + 5
        while not done() and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.01)
        writer.cancel()
        assert sorted(rt.session.writes) == [("p", 1), ("p", 2), ("q", 1)]
        assert rt.session.writes.index(("p", 1)) < rt.session.writes.index(("p", 2))

    asyncio.run(go())
