"""The web dashboard (`listener ui`): overview, tasks, task detail, retry and cancel.

Needs the ``ui`` extra (``pip install 'listener[ui]'``); listener.cli_ui checks
for it before importing anything here.
"""
