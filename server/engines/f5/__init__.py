"""The F5-TTS engine: voice cloning on a GPU, with a worker that batches sessions.

Modules, in the order audio flows: ``voices`` (reference preparation), ``policy``
(text → pieces, durations, cross-fade, silence trim), ``registry`` and ``checkpoints``
(which model speaks a language; loading it), ``engine`` (one padded batch through
``CFM.sample`` and Vocos), ``batch_worker`` (scheduling, batching, faults) and
``breaker`` (the circuit breaker). Importing this package needs neither torch nor
f5-tts; they are imported when the engine loads (the ``voxwire[f5]`` extra).
"""
