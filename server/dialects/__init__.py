"""Other vendors' streaming TTS dialects (ElevenLabs, Deepgram, Cartesia) as codecs
over the conversation core: sans-I/O, one per dialect; server/ws/dialect.py is the
WebSocket edge that runs them."""
