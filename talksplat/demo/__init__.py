"""`talksplat demo`: the whole pipeline on a synthetic talking subject, generated with no input and no network."""
