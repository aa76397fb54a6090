"""Speech: audio codecs (PyAV, SILK), speech to text (faster-whisper) and text to speech
(piper, espeak-ng, coqui-tts). Engines work on `Pcm`; codecs turn platform bytes into
`Pcm` and back."""
