"""`talksplat view`: an interactive web viewer (viser) for avatars and driven sequences.

`server` holds the config, the GUI and playback; `render_fn` the camera conversion and the
render callback.  Nothing heavy is imported here (the CLI imports the config at start-up).
"""
