"""Asterisk ExternalMedia example (ari_tts.py); see README.md here."""
