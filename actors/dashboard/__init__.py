"""The web dashboard (aiohttp): a run as Smart Tuner sees it, live or after the fact."""
