"""The ``dial data`` tools that shape records into the paper's domain shifts.

One module per tool: :mod:`~dial.data.tools.translate` (cross-lingual), :mod:`~.noise`
(clean -> noisy), :mod:`~.sample` (few-shot -> full), :mod:`~.split_length` (simple -> complex),
:mod:`~.odd_one_out` (the MCQ task, with :mod:`~.food_categories`), :mod:`~.cipher` (an unseen
"language") and :mod:`~.split` (disjoint halves); :mod:`~.common` holds what they share and
:mod:`~.cli` their command lines.
"""
