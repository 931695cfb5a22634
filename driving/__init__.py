"""Speech -> rig parameters -> MP4 (`talksplat drive`, and the audio predictor of `talksplat fit`).

`audio` (decoding, TTS), `features` (encoders), `predictor` (the network), `train` (its training and
evaluation on a dataset), `motion` (head motion, blinks), `predict` (a fit folder + speech -> the sequence),
`drive` (the command).  docs/architecture.md says where each step lives.
"""
