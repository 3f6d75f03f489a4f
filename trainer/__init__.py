"""The training harness: reference Tacotron2, data pipeline, TTS metrics, segments with
hot reload, and the worker process. Runs unchanged without the tuner.
"""
