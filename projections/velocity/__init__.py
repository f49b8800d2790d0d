"""Live monitoring: velocity rules over the ledger events (``rules``: pure), a faust-streaming app keeping
windowed tables and sending alerts (``monitor``; run with ``python -m projections.velocity``), and the alerts'
read model (``alerts``; run with ``python -m projections.velocity.alerts``). It only observes: no money moves."""
