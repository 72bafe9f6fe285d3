"""The core: everything that decides, and nothing that touches the world.

Booth sessions and stillness (`booth`), incidents (`incident`), escalation
(`escalation`), who is on duty (`roster`), device health (`devices`), the
watch on our own broker link (`selfwatch`), and the site core that ties them
together (`site`), with the events that go in and the commands that come out
(`events`), the config types they read (`settings`) and the words a nurse
reads (`durations`). Every module here imports only this package and standard
modules that do no I/O; `tests/test_core.py` checks each file in this folder.
"""
