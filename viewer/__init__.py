"""`talksplat view`: an interactive web viewer (viser) for avatars and driven sequences.

`config` the options, `inputs` the avatar and the sequences, `renderer` the camera conversion, the
renderer and the per-browser render thread, `playback` the clock and the browser's audio, `gui` the
widgets, `server` the viewer that wires them.  Nothing heavy is imported here (the CLI imports
`config` at start-up).
"""
