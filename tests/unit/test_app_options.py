"""The brain's faust settings (streams.app.app_options): how many results records its
consumers hold as Python objects at most."""
from __future__ import annotations

import faust

from kmta.config import Config
from kmta.pipeline.kafkaio import FETCH_PARTITION_BYTES
from streams.app import POLL_RECORDS, STREAM_BUFFER, app_options, faust_credentials
from streams.decide import BATCH


def test_a_poll_turns_a_bounded_number_of_records_into_objects(tmp_path) -> None:
    config = Config()
    app = faust.App("u.brain", broker_credentials=faust_credentials(config),
                    **app_options(config, str(tmp_path)))
    # faust's default (None) returns everything fetched in one poll: 12,000-20,000 records
    # while the brain lagged behind a drain (docs/benchmark.md)
    assert app.conf.broker_max_poll_records == POLL_RECORDS
    assert app.conf.stream_buffer_maxsize == STREAM_BUFFER
    assert app.conf.consumer_max_fetch_size == FETCH_PARTITION_BYTES
    # one of decide's batches fits in a poll, and the agent's buffer holds a few of them
    assert BATCH <= POLL_RECORDS <= STREAM_BUFFER <= 4096
