"""The eventpipe benchmark: ``python -m bench [--quick]`` (or ``make bench``).

Each stage measures the project's real components against a ceiling made of the same library
used bare, on the same machine, and reports figure, ceiling and ratio:

* ``bench.edge``   - HTTP edge (``eventpipe edge``) vs one confluent-kafka producer process;
* ``bench.agents`` - the Faust worker (``eventpipe worker``) vs a bare Faust agent
  (``bench.bare_faust``), and vs its peer, the same job written with quixstreams
  (``bench.peer_quix``, run from its own venv: ``bench.peer_venv``);
* ``bench.sink``   - ``sinks.sink.Sink`` vs a bare clickhouse-connect insert (``bench.sink_child``);
* ``bench.e2e``    - ``eventpipe dev``: HTTP to queryable rows, and 2xx -> row latency at half load.

Every stage gets its own embedded broker (or stack) and chDB directory, so none sees another's
topics. Load is generated over loopback by separate processes (``bench.loadgen``).
"""
