"""The shared core below every other package: files, output folders, errors, checks, processes.

It imports nothing of talksplat's, so every package (render, rigs, avatar, data_prep, fitting,
driving, viewer, the CLI) may use it.

- :mod:`~talksplat.core.errors`: ``TalksplatError``, the one base of every error the user can fix
  (the CLI prints it as one line); its kinds ``InputError``, ``OptionError``, ``OutputError``.
- :mod:`~talksplat.core.files`: ``atomic_write`` (temp sibling + rename), ``write_json`` (valid JSON,
  never a bare NaN), partial-file names that carry the writer's PID, stale-partial cleanup.
- :mod:`~talksplat.core.outputs`: what each kind of output folder may hold, ``--overwrite`` that
  replaces only talksplat's own files and never an input, the per-output lock.
- :mod:`~talksplat.core.checks`: ``Range`` for numeric options (checked before any work),
  finiteness and shape checks for arrays read from files.
- :mod:`~talksplat.core.process`: SIGTERM handled like Ctrl-C, child processes that die with
  the parent, CPU thread settings.
"""
