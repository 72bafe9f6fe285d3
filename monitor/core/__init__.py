"""The core: everything that decides, and nothing that touches the world.

Booth sessions, stillness and maintenance (`booth`), incidents (`incident`),
escalation (`escalation`), who is on duty (`roster`), device health (`devices`,
on `readings`), which flooding messages may drop (`flood`), the watch on our own
broker link (`selfwatch`), scheduled self-tests of the channels (`selftest`), a
booth's device test (`boothtest`), alarm fatigue (`fatigue`), and the site core
that ties them together (`site`),
with the events that go in and the commands that come out (`events`), the config
types they read (`settings`), durations as people write them (`durations`) and
every sentence a nurse reads (`words`). Every module here imports only this
package and standard modules that do no I/O; `tests/test_core.py` checks each
file in this folder.
"""
