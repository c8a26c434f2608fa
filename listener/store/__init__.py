"""The only layer that runs queue SQL; every query is named in sql/queries/*.sql.

One module per side of the flow: ``enqueue`` (producers), ``status`` (CLI views),
``engine`` (claim, acknowledge, lease, rescue), ``wake`` (the wake-up protocol).
"""
