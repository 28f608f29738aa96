"""Interop with the tools teams already use: MLflow and TensorBoard out; mmsegmentation work directories and
TensorBoard event folders in.

Pure conversion code: it never reads the store. The command line (``mapsage export-runs`` / ``mapsage import-runs``,
``runners/commands/interop_cmd.py``) gathers a run from the store into a :class:`~mapsage.interop.bundle.RunBundle`
and hands it to an exporter; an import reads a foreign folder into an :class:`~mapsage.interop.foreign.ForeignRun`
and writes a normal run folder (``config.yaml`` + ``events.jsonl`` in the workbench's own event format), so the
store's ingest stays the one path numbers take into the store.

Modules: ``names`` (workbench <-> mmsegmentation scalar names and units), ``bundle`` (a run's numbers, and the
points every exporter writes), ``tensorboard_io`` (writer and reader through the tensorboard package),
``mlflow_export`` (through MLflow's own client), ``mmseg`` (mmsegmentation 1.x work directories and 0.x
``*.log.json``), ``foreign`` (the imported run and its run folder).
"""
