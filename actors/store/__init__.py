"""The store: metric series folded from the committed events, for the guards and the view.

``series`` is the pure core (EMA, windowed median, slope, spike ratio); ``metric_store``
keeps one series per segment and the champion lineage's curve.
"""
