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
