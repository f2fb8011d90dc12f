"""Load generator and benchmarks for voxwire (``voxwire bench …``, ``make bench``).

``loadgen`` drives N concurrent LLM-paced sessions and models a real-time player;
``bench`` holds one entry per benchmark; ``report`` writes JSON, Markdown and plots.
"""
