"""The velocity monitor's flow control: faust's, except that resuming a flow that runs drops no buffered record.

After table recovery faust resumes the stream partitions, waits for their committed offsets, then resumes its
flow control again; records fetched meanwhile are in the agents' buffers, and faust's resume() cleared them
(a partition with no committed offset was then skipped until the next restart).
"""

from __future__ import annotations

import asyncio

from mode.utils.queues import FlowControlQueue

from ogp.settings import Settings
from projections.velocity.monitor import KeepsBuffersOnResume, VelocityMonitor


def _buffered_after(*steps: str) -> int:
    """Records left in an agent's buffer after the flow's ``steps``, one record put while the flow ran."""

    async def scenario() -> int:
        flow = KeepsBuffersOnResume()
        buffer: FlowControlQueue[str] = FlowControlQueue(maxsize=10, flow_control=flow, clear_on_resume=True)
        flow.resume()  # the app starts its flow
        buffer.put_nowait("a record fetched while faust waited for committed offsets")
        for step in steps:
            getattr(flow, step)()
        return buffer.qsize()

    return asyncio.run(scenario())


def test_resuming_a_flow_that_runs_keeps_the_records_in_the_buffers():
    assert _buffered_after("resume") == 1  # Recovery.on_recovery_completed's resume


def test_resuming_after_a_suspend_clears_the_buffers_as_faust_does():
    assert _buffered_after("suspend", "resume") == 0  # a rebalance


def test_the_monitor_asks_the_broker_for_the_session_timeout_it_is_given():
    # After a kill -9 the restarted monitor reads nothing until the broker drops the dead member: this long.
    settings = Settings(environment="test", jwt_signing_key="k" * 40, velocity_session_timeout_seconds=10)
    assert VelocityMonitor(settings).app.conf.broker_session_timeout == 10
    assert VelocityMonitor(Settings(environment="test", jwt_signing_key="k" * 40)).app.conf.broker_session_timeout == 60
